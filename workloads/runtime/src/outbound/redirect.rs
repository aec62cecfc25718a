//! Following one redirect the way browsers do, without carrying credentials to another
//! origin. The outbound client checks the new URL's destination before it is requested.

use http::header::{self, HeaderName};
use reqwest::{Method, Request, Response, StatusCode, Url};

/// Headers kept when a redirect leads to another origin (scheme, host or port). Everything
/// else — `Authorization`, cookies, and the custom headers a tenant's Secret adds (API keys)
/// — was meant for the first origin only.
const CROSS_ORIGIN_HEADERS: &[HeaderName] = &[
    header::ACCEPT,
    header::ACCEPT_ENCODING,
    header::ACCEPT_LANGUAGE,
    header::CONTENT_TYPE,
    header::USER_AGENT,
];
/// Tracing headers, also kept across origins (they carry no credentials).
const TRACE_HEADERS: &[&str] = &["traceparent", "tracestate", "x-request-id"];

/// The request that follows `resp`, when `resp` is a redirect to follow; `replay` is a copy
/// of the request that got it. A redirect without a usable `Location`, or one that would
/// have to resend a body that cannot be copied, is not followed: it is the answer.
pub(crate) fn next_request(resp: &Response, replay: Option<Request>) -> Option<Request> {
    let status = resp.status();
    let keeps_method = match status {
        StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND | StatusCode::SEE_OTHER => false,
        StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT => true,
        _ => return None,
    };
    let location = resp.headers().get(header::LOCATION)?.to_str().ok()?;
    let from = resp.url().clone();
    let to = from.join(location).ok()?;
    let mut req = replay?;
    // 303 turns anything but HEAD into GET; 301 and 302 turn POST into GET (as browsers do).
    let to_get = !keeps_method
        && ((status == StatusCode::SEE_OTHER && req.method() != Method::HEAD)
            || req.method() == Method::POST);
    if to_get {
        *req.method_mut() = Method::GET;
        *req.body_mut() = None;
        for h in [
            header::CONTENT_TYPE,
            header::CONTENT_LENGTH,
            header::CONTENT_ENCODING,
        ] {
            req.headers_mut().remove(h);
        }
    }
    if !same_origin(&from, &to) {
        let kept = req
            .headers()
            .iter()
            .filter(|(name, _)| {
                CROSS_ORIGIN_HEADERS.contains(name) || TRACE_HEADERS.contains(&name.as_str())
            })
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        *req.headers_mut() = kept;
    }
    *req.url_mut() = to;
    // The caller's deadline covers every hop; no hop gets a fresh one.
    *req.timeout_mut() = None;
    Some(req)
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_differ_by_scheme_host_or_port() {
        let u = |s: &str| Url::parse(s).unwrap();
        assert!(same_origin(&u("http://a.test/x"), &u("http://A.test:80/y")));
        assert!(!same_origin(&u("http://a.test/"), &u("https://a.test/")));
        assert!(!same_origin(&u("http://a.test/"), &u("http://b.test/")));
        assert!(!same_origin(
            &u("http://a.test/"),
            &u("http://a.test:8080/")
        ));
    }
}
