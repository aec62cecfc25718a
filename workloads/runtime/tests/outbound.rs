//! The outbound client over real HTTP, against a stand-in on 127.0.0.1 only: refused
//! destinations (literal, resolved, redirected, dressed up), the allow list, redirects,
//! bounded bodies and deadlines, the refusal counter and the log line. Names resolve through
//! a fixed lookup, never real DNS; a refused address is never connected to, so no test
//! traffic leaves the loopback interface.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use xin_runtime::HttpMetrics;
use xin_runtime::outbound::{
    DestinationPolicy, Limits, Outbound, OutboundError, Reason, StaticLookup,
};

/// A request the stand-in received: `(path, authorization, x-api-key, method, body)`.
type Request = (String, Option<String>, Option<String>, String, String);
type Seen = Arc<Mutex<Vec<Request>>>;

struct StandIn {
    port: u16,
    seen: Seen,
}

impl StandIn {
    async fn start() -> StandIn {
        let seen = Seen::default();
        let app = Router::new()
            .route("/ok", any(record))
            .route("/echo", any(record))
            .route("/redirect", any(redirect))
            .route("/loop", get(|| async { redirect_to(302, "/loop") }))
            .route(
                "/big",
                get(|| async { vec![b'x'; 2 << 20].into_response() }),
            )
            .route("/big-chunked", get(big_chunked))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "late"
                }),
            )
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        StandIn { port, seen }
    }

    fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.port)
    }

    fn seen(&self) -> Vec<Request> {
        self.seen.lock().unwrap().clone()
    }
}

async fn record(
    State(seen): State<Seen>,
    uri: axum::http::Uri,
    method: axum::http::Method,
    headers: HeaderMap,
    body: String,
) -> String {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    seen.lock().unwrap().push((
        uri.path().to_string(),
        h("authorization"),
        h("x-api-key"),
        method.to_string(),
        body.clone(),
    ));
    format!("{method} {body}")
}

fn redirect_to(status: u16, to: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        [(header::LOCATION, to.to_string())],
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct To {
    to: String,
    status: Option<u16>,
}

async fn redirect(Query(q): Query<To>) -> Response {
    redirect_to(q.status.unwrap_or(302), &q.to)
}

/// 2 MiB in 64 KiB chunks, without a Content-Length.
async fn big_chunked() -> Response {
    let chunks = (0..32).map(|_| Ok::<_, std::io::Error>(vec![b'y'; 64 << 10]));
    Body::from_stream(futures::stream::iter(chunks)).into_response()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Names the tests use; none is looked up in real DNS.
fn lookup() -> Arc<StaticLookup> {
    Arc::new(
        StaticLookup::new()
            .with("standin.test", &[ip("127.0.0.1")])
            .with("other.test", &[ip("127.0.0.1")])
            .with("internal.test", &[ip("10.0.0.1")])
            .with("loopback-only.test", &[ip("127.0.0.2"), ip("::1")]),
    )
}

fn client(allow: &str) -> (Outbound, HttpMetrics) {
    let metrics = HttpMetrics::default();
    let policy = DestinationPolicy {
        allow: allow.parse().unwrap(),
        service_ranges: "10.96.0.0/12".parse().unwrap(),
        ..DestinationPolicy::default()
    };
    let c = Outbound::with_lookup(policy, lookup(), &metrics).unwrap();
    (c, metrics)
}

fn refused_total(metrics: &HttpMetrics, reason: Reason) -> u64 {
    let needle = format!(
        "xin_outbound_refused_total{{reason=\"{}\"}} ",
        reason.as_str()
    );
    metrics
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix(&needle))
        .unwrap_or_else(|| panic!("no {needle} in {}", metrics.encode()))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn refused_destinations_are_never_connected_to_and_are_counted() {
    let s = StandIn::start().await;
    let (c, metrics) = client("standin.test");
    let p = s.port;
    use Reason::*;
    let cases = [
        (s.url("127.0.0.1", "/ok"), Loopback),
        (
            "http://169.254.169.254/latest/meta-data".to_string(),
            Metadata,
        ),
        ("http://10.0.0.1/".to_string(), Private),
        (s.url("[::1]", "/ok"), Loopback),
        (s.url("[::ffff:127.0.0.1]", "/ok"), Loopback),
        (s.url("0x7f.1", "/ok"), Loopback),
        (s.url("2130706433", "/ok"), Loopback),
        (s.url("0177.0.0.1", "/ok"), Loopback),
        (s.url("localhost", "/ok"), InternalName),
        ("http://10.96.0.1/".to_string(), ServiceRange),
        // A name resolving (through the lookup) to a private address.
        ("http://internal.test/".to_string(), Private),
        (s.url("loopback-only.test", "/ok"), Loopback),
        // Userinfo is not the host.
        (format!("http://standin.test@127.0.0.1:{p}/ok"), Loopback),
        (format!("http://127.0.0.1:{p}#@standin.test/ok"), Loopback),
        // Redirects from the allowed stand-in to refused places.
        (
            s.url(
                "standin.test",
                &format!("/redirect?to=http://127.0.0.1:{p}/ok"),
            ),
            Loopback,
        ),
        (
            s.url("standin.test", "/redirect?to=http://169.254.169.254/"),
            Metadata,
        ),
        (
            s.url("standin.test", "/redirect?to=http://internal.test/"),
            Private,
        ),
        (
            s.url("standin.test", "/redirect?to=http://0x7f.1/ok"),
            Loopback,
        ),
        (
            s.url("standin.test", "/redirect?to=file:///etc/passwd"),
            InvalidUrl,
        ),
    ];
    for (url, reason) in cases {
        let before = refused_total(&metrics, reason);
        let err = c.send(c.get(&url)).await.unwrap_err();
        match &err {
            OutboundError::DestinationNotAllowed {
                reason: got,
                url_redacted,
            } => {
                assert_eq!(*got, reason, "{url}");
                assert!(!url_redacted.contains('@'), "{url}: {url_redacted}");
            }
            other => panic!("{url}: {other:?}"),
        }
        assert_eq!(refused_total(&metrics, reason), before + 1, "{url}");
    }
    let reached: Vec<String> = s.seen().into_iter().map(|r| r.0).collect();
    assert!(reached.is_empty(), "refused, yet reached: {reached:?}");
}

#[tokio::test]
async fn the_loopback_stand_in_is_reached_only_when_allowed() {
    let s = StandIn::start().await;
    let url = s.url("127.0.0.1", "/ok");

    let (none, m) = client("");
    let e = none.send(none.get(&url)).await.unwrap_err();
    assert_eq!(e.kind(), "destination_not_allowed", "{e}");
    assert_eq!(refused_total(&m, Reason::Loopback), 1);
    assert!(s.seen().is_empty());

    let (by_range, _) = client("127.0.0.1/32");
    let r = by_range.send(by_range.get(&url)).await.unwrap();
    assert_eq!(
        (r.status, r.body.as_slice()),
        (StatusCode::OK, b"GET ".as_slice())
    );
    // The same address written another way is the same address.
    let r = by_range.send(by_range.get(&s.url("0x7f.1", "/ok"))).await;
    assert_eq!(r.unwrap().status, StatusCode::OK);
    // Allowing 127.0.0.1 does not allow the rest of 127/8.
    let e = by_range
        .send(by_range.get(&s.url("loopback-only.test", "/ok")))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            OutboundError::DestinationNotAllowed {
                reason: Reason::Loopback,
                ..
            }
        ),
        "{e}"
    );

    let (by_name, _) = client("standin.test");
    let r = by_name
        .send(by_name.get(&s.url("standin.test", "/ok")))
        .await;
    assert_eq!(r.unwrap().status, StatusCode::OK);
    let e = by_name.send(by_name.get(&url)).await.unwrap_err();
    assert_eq!(
        e.kind(),
        "destination_not_allowed",
        "the name, not the address"
    );
    assert_eq!(s.seen().len(), 3);
}

#[tokio::test]
async fn redirects_are_followed_within_the_bound_without_credentials_across_origins() {
    let s = StandIn::start().await;
    let (c, _) = client("standin.test, other.test");
    let authed = |url: &str| {
        c.post(url)
            .bearer_auth("sk-secret")
            .header("x-api-key", "k-secret")
            .body("hello")
    };
    // Same origin: credentials kept; a 302 turns the POST into a GET without its body.
    let r = c
        .send(authed(&s.url("standin.test", "/redirect?to=/echo")))
        .await
        .unwrap();
    assert_eq!(r.body, b"GET ");
    // Another origin (host): credentials dropped; a 307 keeps the method and the body.
    let to = s.url("other.test", "/echo");
    let r =
        c.send(authed(
            &s.url("standin.test", &format!("/redirect?status=307&to={to}")),
        ))
        .await
        .unwrap();
    assert_eq!(r.body, b"POST hello");
    let seen = s.seen();
    assert_eq!(seen[0].1.as_deref(), Some("Bearer sk-secret"), "{seen:?}");
    assert_eq!(seen[0].2.as_deref(), Some("k-secret"));
    assert_eq!(
        (seen[1].1.as_deref(), seen[1].2.as_deref()),
        (None, None),
        "{seen:?}"
    );

    let e = c
        .send(c.get(&s.url("standin.test", "/loop")))
        .await
        .unwrap_err();
    assert!(
        matches!(e, OutboundError::TooManyRedirects { limit: 5, .. }),
        "{e}"
    );
    let none = c.with_limits(Limits {
        max_redirects: 0,
        ..Limits::default()
    });
    let e = none
        .send(none.get(&s.url("standin.test", "/redirect?to=/ok")))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), "too_many_redirects");
}

#[tokio::test]
async fn bodies_and_time_are_bounded() {
    let s = StandIn::start().await;
    let (c, _) = client("127.0.0.1/32");
    for path in ["/big", "/big-chunked"] {
        let e = c.send(c.get(&s.url("127.0.0.1", path))).await.unwrap_err();
        assert_eq!(
            e,
            OutboundError::ResponseTooLarge { limit: 1 << 20 },
            "{path}"
        );
    }
    let small = |n| {
        c.with_limits(Limits {
            max_response_bytes: n,
            ..Limits::default()
        })
    };
    let ok = s.url("127.0.0.1", "/ok");
    assert_eq!(small(4).send(c.get(&ok)).await.unwrap().body, b"GET ");
    assert_eq!(
        small(3).send(c.get(&ok)).await.unwrap_err(),
        OutboundError::ResponseTooLarge { limit: 3 }
    );
    let slow = s.url("127.0.0.1", "/slow");
    let quick = c.with_limits(Limits {
        timeout: Duration::from_millis(200),
        ..Limits::default()
    });
    assert_eq!(
        quick.send(c.get(&slow)).await.unwrap_err(),
        OutboundError::Timeout
    );
    // A request's own timeout is the deadline.
    let e = c
        .send(c.get(&slow).timeout(Duration::from_millis(200)))
        .await
        .unwrap_err();
    assert_eq!(e, OutboundError::Timeout);
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_refusal_is_logged_once_without_userinfo_or_query() {
    let buf = Buffer::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let (c, _) = client("");
    let e = c
        .send(c.get("http://user:pa55word@127.0.0.1:9/v1/x?token=t0ken#frag"))
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "destination not allowed (a loopback address): http://127.0.0.1:9/v1/x"
    );
    let logs = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert_eq!(logs.lines().count(), 1, "{logs}");
    assert!(logs.contains("\"level\":\"WARN\""), "{logs}");
    assert!(logs.contains("\"reason\":\"loopback\""), "{logs}");
    assert!(logs.contains("http://127.0.0.1:9/v1/x"), "{logs}");
    for secret in ["user", "pa55word", "t0ken", "frag"] {
        assert!(!logs.contains(secret), "{secret} in {logs}");
    }
}

/// The destination check parses URLs itself (the operator has no URL crate); it must see
/// the same host as the client that connects.
#[test]
fn the_policy_and_the_client_agree_on_every_host() {
    for url in [
        "http://127.0.0.1/",
        "http://0x7f.1/",
        "http://2130706433/",
        "http://0177.0.0.1/",
        "http://127.1/",
        "http://127.0.0.1./",
        "http://%31%32%37.0.0.1/",
        "http://１２７．０．０．１/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::127.0.0.1]/",
        "http://good.example@127.0.0.1/",
        "http://a@b@127.0.0.1/",
        "http://127.0.0.1#@good.example/",
        "http://127.0.0.1\\@good.example/",
        "http:\\\\127.0.0.1\\x",
        "http:127.0.0.1/",
        " http://12\t7.0.0.1/ ",
        "HTTP://LocalHost./",
        "https://llm.example.com:8443/v1",
        "http://1.0x7g/",
    ] {
        let ours = xin_api::destination::parse_url(url).map(|p| p.host);
        let theirs = reqwest::Url::parse(url).unwrap();
        let theirs = xin_api::destination::parse_host(theirs.host_str().unwrap());
        assert_eq!(ours, theirs, "{url}");
    }
    for url in [
        "http://256.0.0.1/",
        "http://09.0.0.1/",
        "http://1.2.3.4.5/",
        "http://[::1/",
    ] {
        assert!(xin_api::destination::parse_url(url).is_err(), "{url}");
        assert!(reqwest::Url::parse(url).is_err(), "{url}");
    }
}
