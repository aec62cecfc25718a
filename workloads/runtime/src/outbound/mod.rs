//! The one HTTP client for tenant-supplied URLs (LLM, embeddings, webhooks, CRM, ingestion
//! sources). A tenant who can write a URL could otherwise point it at the pod's loopback,
//! the cloud metadata service or another tenant's Service; this client refuses such
//! destinations ([`xin_api::destination`] says which):
//!
//! - a URL whose literal host is refused, before any connection;
//! - a host name: through [`Lookup`] (the system resolver by default), keeping only the
//!   allowed addresses (refused when none remain) and connecting to exactly those — no
//!   second lookup, so no DNS rebinding;
//! - redirects: at most [`Limits::max_redirects`], every hop checked the same way, and no
//!   credentials carried to another origin;
//! - the response: at most [`Limits::max_response_bytes`], everything (every hop and the
//!   body) within one deadline.
//!
//! A refusal is [`OutboundError::DestinationNotAllowed`], counted in
//! `xin_outbound_refused_total{reason}` and logged once at warn with the URL redacted
//! (`scheme://host[:port]/path`: never userinfo, query or fragment). Proxy variables
//! (`HTTP_PROXY`, …) are ignored: through a proxy, the address connected to would be the
//! proxy's, and the destination could not be checked.

mod config;
mod redirect;
mod resolve;

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder, StatusCode, Url};
use xin_api::destination::parse_host;

pub use config::{DEFAULT_SERVICE_CIDR, OutboundArgs};
pub use resolve::{Lookup, LookupFuture, StaticLookup, SystemLookup};
pub use xin_api::destination::{DestinationPolicy, Reason, Verdict, redact_url};

use crate::HttpMetrics;
use resolve::{CheckedResolver, Refusal};

/// Bounds of one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Deadline of the whole call (every redirect hop and the body), unless the request
    /// sets its own timeout (`RequestBuilder::timeout`), which then is the deadline.
    pub timeout: Duration,
    pub max_response_bytes: usize,
    pub max_redirects: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(30),
            max_response_bytes: 1 << 20,
            max_redirects: 5,
        }
    }
}

/// A complete response: the body was read within the limits.
#[derive(Clone, Debug)]
pub struct OutboundResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// Why a call failed. Messages carry at most a redacted URL, never a header or a body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboundError {
    #[error("destination not allowed ({reason}): {url_redacted}")]
    DestinationNotAllowed {
        reason: Reason,
        url_redacted: String,
    },
    #[error("more than {limit} redirects (the next to {url_redacted})")]
    TooManyRedirects { limit: usize, url_redacted: String },
    #[error("response larger than {limit} bytes")]
    ResponseTooLarge { limit: usize },
    #[error("timed out")]
    Timeout,
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("request failed: {0}")]
    Request(String),
}

impl OutboundError {
    /// A short, stable name of the kind of failure (a metric label).
    pub fn kind(&self) -> &'static str {
        match self {
            OutboundError::DestinationNotAllowed { .. } => "destination_not_allowed",
            OutboundError::TooManyRedirects { .. } => "too_many_redirects",
            OutboundError::ResponseTooLarge { .. } => "response_too_large",
            OutboundError::Timeout => "timeout",
            OutboundError::Connect(_) => "connect_error",
            OutboundError::Request(_) => "error",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    reason: String,
}

/// The outbound client. Build one per process ([`Outbound::new`] registers its metric) and
/// clone it; [`Outbound::with_limits`] gives a copy with other bounds.
#[derive(Clone)]
pub struct Outbound {
    client: reqwest::Client,
    lookup: Arc<dyn Lookup>,
    policy: Arc<DestinationPolicy>,
    refused: Family<RefusedLabels, Counter>,
    limits: Limits,
}

impl Outbound {
    /// A client resolving names with the system resolver; registers
    /// `xin_outbound_refused_total` into `metrics`' registry.
    pub fn new(policy: DestinationPolicy, metrics: &HttpMetrics) -> Result<Self, String> {
        Self::with_lookup(policy, Arc::new(SystemLookup), metrics)
    }

    /// [`Outbound::new`] resolving names through `lookup`.
    pub fn with_lookup(
        policy: DestinationPolicy,
        lookup: Arc<dyn Lookup>,
        metrics: &HttpMetrics,
    ) -> Result<Self, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let policy = Arc::new(policy);
        let client = reqwest::Client::builder()
            // Followed by `send`, which checks each hop before requesting it.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(CheckedResolver {
                lookup: lookup.clone(),
                policy: policy.clone(),
            })
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| format!("cannot build the outbound HTTP client: {e}"))?;
        let refused = Family::<RefusedLabels, Counter>::default();
        // Every reason from the start, so that a rate or an alert sees 0 rather than nothing.
        for r in Reason::ALL {
            let _ = refused.get_or_create(&RefusedLabels {
                reason: r.as_str().into(),
            });
        }
        metrics
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .register(
                "xin_outbound_refused",
                "Calls to tenant-supplied URLs refused because of their destination, by reason",
                refused.clone(),
            );
        Ok(Outbound {
            client,
            lookup,
            policy,
            refused,
            limits: Limits::default(),
        })
    }

    /// A plain client for a library that makes its own requests (an object-store client):
    /// host names resolve through the same checks, no proxy, no redirects followed. Its
    /// caller checks each URL's literal host first with [`Outbound::check_url`], and bounds
    /// what it reads itself.
    pub fn checked_client(&self, timeout: Duration) -> Result<reqwest::Client, String> {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(CheckedResolver {
                lookup: self.lookup.clone(),
                policy: self.policy.clone(),
            })
            .connect_timeout(Duration::from_secs(5))
            .timeout(timeout)
            .build()
            .map_err(|e| format!("cannot build the outbound HTTP client: {e}"))
    }

    /// Refuses a URL whose literal host the policy refuses (counted and logged like any
    /// refusal); host names are checked again, with their addresses, when connecting.
    pub fn check_url(&self, url: &str) -> Result<(), OutboundError> {
        let parsed = Url::parse(url).map_err(|_| OutboundError::DestinationNotAllowed {
            reason: Reason::InvalidUrl,
            url_redacted: redact_url(url),
        })?;
        let result = self.check(&parsed);
        if let Err(e) = &result {
            self.count_refusal(e);
        }
        result
    }

    /// The addresses of `host` that may be connected to, for a protocol the HTTP client does
    /// not speak (SMTP): the host's literal check, then its resolved addresses', exactly as an
    /// HTTP request would get (refusals counted and logged). `what` names the destination in
    /// errors (for example `smtp://mail.example:587`), never a secret.
    pub async fn resolve_checked(
        &self,
        host: &str,
        what: &str,
    ) -> Result<Vec<std::net::IpAddr>, OutboundError> {
        let refused = |reason| OutboundError::DestinationNotAllowed {
            reason,
            url_redacted: what.to_string(),
        };
        let result = match parse_host(host) {
            Err(_) => Err(refused(Reason::InvalidUrl)),
            Ok(h) => match self.policy.check_host(&h) {
                Verdict::Refused(r) => Err(refused(r)),
                Verdict::Allowed => match h {
                    xin_api::destination::Host::Ip(ip) => Ok(vec![ip]),
                    xin_api::destination::Host::Name(name) => {
                        let resolver = CheckedResolver {
                            lookup: self.lookup.clone(),
                            policy: self.policy.clone(),
                        };
                        resolver.checked(&name).await.map_err(|e| {
                            match e.downcast_ref::<Refusal>() {
                                Some(Refusal(r)) => refused(*r),
                                None => OutboundError::Connect(format!("{what}: {e}")),
                            }
                        })
                    }
                },
            },
        };
        if let Err(e) = &result {
            self.count_refusal(e);
        }
        result
    }

    fn count_refusal(&self, e: &OutboundError) {
        if let OutboundError::DestinationNotAllowed {
            reason,
            url_redacted,
        } = e
        {
            self.refused
                .get_or_create(&RefusedLabels {
                    reason: reason.as_str().into(),
                })
                .inc();
            tracing::warn!(
                reason = reason.as_str(),
                url = %url_redacted,
                "outbound request refused: destination not allowed"
            );
        }
    }

    /// A copy of this client (same connections, policy and metric) with other bounds.
    pub fn with_limits(&self, limits: Limits) -> Self {
        Outbound {
            limits,
            ..self.clone()
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn policy(&self) -> &DestinationPolicy {
        &self.policy
    }

    /// A request to build (headers, body, timeout) and pass to [`Outbound::send`].
    pub fn request(&self, method: Method, url: &str) -> RequestBuilder {
        self.client.request(method, url)
    }

    pub fn get(&self, url: &str) -> RequestBuilder {
        self.request(Method::GET, url)
    }

    pub fn post(&self, url: &str) -> RequestBuilder {
        self.request(Method::POST, url)
    }

    /// Sends the request through this client (whichever client built it), following
    /// redirects, and reads the whole body within the limits.
    pub async fn send(&self, request: RequestBuilder) -> Result<OutboundResponse, OutboundError> {
        let (_, req) = request.build_split();
        let req = req.map_err(|e| OutboundError::Request(describe(&e)))?;
        let deadline = req.timeout().copied().unwrap_or(self.limits.timeout);
        let result = tokio::time::timeout(deadline, self.follow(req))
            .await
            .unwrap_or(Err(OutboundError::Timeout));
        if let Err(e) = &result {
            self.count_refusal(e);
        }
        result
    }

    async fn follow(&self, mut req: reqwest::Request) -> Result<OutboundResponse, OutboundError> {
        let mut redirects = 0;
        loop {
            let url = req.url().clone();
            self.check(&url)?;
            let replay = req.try_clone();
            let resp = self
                .client
                .execute(req)
                .await
                .map_err(|e| error_of(&e, &url))?;
            let Some(next) = redirect::next_request(&resp, replay) else {
                return self.read(resp, &url).await;
            };
            redirects += 1;
            if redirects > self.limits.max_redirects {
                return Err(OutboundError::TooManyRedirects {
                    limit: self.limits.max_redirects,
                    url_redacted: redact_url(next.url().as_str()),
                });
            }
            req = next;
        }
    }

    /// The literal check of a URL about to be requested (names are checked again, with their
    /// addresses, by the resolver). The host comes from the URL as the client parsed it.
    fn check(&self, url: &Url) -> Result<(), OutboundError> {
        let verdict = match (url.scheme(), url.host_str().map(parse_host)) {
            ("http" | "https", Some(Ok(host))) => self.policy.check_host(&host),
            _ => Verdict::Refused(Reason::InvalidUrl),
        };
        match verdict {
            Verdict::Allowed => Ok(()),
            Verdict::Refused(reason) => Err(OutboundError::DestinationNotAllowed {
                reason,
                url_redacted: redact_url(url.as_str()),
            }),
        }
    }

    async fn read(
        &self,
        mut resp: reqwest::Response,
        url: &Url,
    ) -> Result<OutboundResponse, OutboundError> {
        let limit = self.limits.max_response_bytes;
        let too_large = OutboundError::ResponseTooLarge { limit };
        if resp.content_length().is_some_and(|n| n > limit as u64) {
            return Err(too_large);
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| error_of(&e, url))? {
            if body.len() + chunk.len() > limit {
                return Err(too_large);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(OutboundResponse {
            status: resp.status(),
            headers: resp.headers().clone(),
            body,
        })
    }
}

/// A client error as an [`OutboundError`]: a refusal by the resolver is found in the error's
/// causes.
fn error_of(e: &reqwest::Error, url: &Url) -> OutboundError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(Refusal(reason)) = c.downcast_ref::<Refusal>() {
            return OutboundError::DestinationNotAllowed {
                reason: *reason,
                url_redacted: redact_url(url.as_str()),
            };
        }
        cause = c.source();
    }
    if e.is_timeout() {
        OutboundError::Timeout
    } else if e.is_connect() {
        OutboundError::Connect(describe(e))
    } else {
        OutboundError::Request(describe(e))
    }
}

/// A client error without its URL, with its innermost cause (e.g. "connection refused").
pub fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "reading the response failed"
    } else {
        "request failed"
    };
    let mut inner: &dyn std::error::Error = e;
    while let Some(s) = inner.source() {
        inner = s;
    }
    if std::ptr::addr_eq(inner, e as &dyn std::error::Error) {
        kind.to_string()
    } else {
        format!("{kind}: {inner}")
    }
}
