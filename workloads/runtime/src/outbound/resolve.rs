//! Name resolution for the outbound client: look the name up once, keep only the addresses
//! the policy allows, and hand exactly those to the connector. The connection therefore goes
//! to an address that was checked, and a second lookup that could answer differently (DNS
//! rebinding) never happens.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use xin_api::destination::{DestinationPolicy, Reason, Verdict, normalize_name};

pub type LookupFuture = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>>;

/// Turns a host name into addresses. The default is [`SystemLookup`]; tests inject
/// [`StaticLookup`].
pub trait Lookup: Send + Sync + 'static {
    fn lookup(&self, name: &str) -> LookupFuture;
}

/// The system resolver (`getaddrinfo`, through tokio), as the process resolves any name.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(&self, name: &str) -> LookupFuture {
        let name = name.to_string();
        Box::pin(async move {
            Ok(tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .map(|a| a.ip())
                .collect())
        })
    }
}

/// Fixed answers; a name it does not know does not resolve.
#[derive(Clone, Debug, Default)]
pub struct StaticLookup(HashMap<String, Vec<IpAddr>>);

impl StaticLookup {
    pub fn new() -> Self {
        Self::default()
    }

    /// Answers `addrs` for `name` (any case, with or without the trailing dot).
    pub fn with(mut self, name: &str, addrs: &[IpAddr]) -> Self {
        self.0.insert(normalize_name(name), addrs.to_vec());
        self
    }
}

impl Lookup for StaticLookup {
    fn lookup(&self, name: &str) -> LookupFuture {
        let found = self.0.get(&normalize_name(name)).cloned();
        let name = name.to_string();
        Box::pin(async move {
            found.ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, format!("{name} does not resolve"))
            })
        })
    }
}

/// A refused destination, travelling from the resolver through the HTTP client's error
/// chain to [`super::Outbound`], which reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Refusal(pub Reason);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "destination not allowed: {}", self.0)
    }
}

impl std::error::Error for Refusal {}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The resolver the outbound client's connector uses.
pub(crate) struct CheckedResolver {
    pub lookup: Arc<dyn Lookup>,
    pub policy: Arc<DestinationPolicy>,
}

impl CheckedResolver {
    /// The addresses `name` resolves to that may be connected to; a refusal when there are
    /// none. Only the allowed ones are kept, rather than refusing the name for any refused
    /// one: a dual-stack name whose other family is internal still works, and nothing
    /// refused is ever connected to.
    pub async fn checked(&self, name: &str) -> Result<Vec<IpAddr>, BoxError> {
        if let Verdict::Refused(r) = self.policy.check_name(name) {
            return Err(Box::new(Refusal(r)));
        }
        let found = self.lookup.lookup(name).await?;
        let mut refused = None;
        let allowed: Vec<IpAddr> = found
            .into_iter()
            .filter(|ip| match self.policy.check_resolved(name, *ip) {
                Verdict::Allowed => true,
                Verdict::Refused(r) => {
                    refused.get_or_insert(r);
                    false
                }
            })
            .collect();
        match (allowed.is_empty(), refused) {
            (false, refused) => {
                if let Some(r) = refused {
                    tracing::debug!(
                        host = name,
                        reason = r.as_str(),
                        "some addresses of the host are refused; connecting to the others"
                    );
                }
                Ok(allowed)
            }
            (true, Some(r)) => Err(Box::new(Refusal(r))),
            (true, None) => Err(Box::new(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{name} has no addresses"),
            ))),
        }
    }
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let me = CheckedResolver {
            lookup: self.lookup.clone(),
            policy: self.policy.clone(),
        };
        let name = name.as_str().to_string();
        Box::pin(async move {
            let addrs = me.checked(&name).await?;
            // Port 0: the connector puts in the URL's port.
            Ok(Box::new(addrs.into_iter().map(|ip| SocketAddr::new(ip, 0))) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn resolver(allow: &str) -> CheckedResolver {
        CheckedResolver {
            lookup: Arc::new(
                StaticLookup::new()
                    .with(
                        "mixed.test",
                        &[ip("10.0.0.1"), ip("203.0.113.7"), ip("::1")],
                    )
                    .with("internal.test", &[ip("10.0.0.1"), ip("169.254.169.254")])
                    .with("empty.test", &[])
                    .with("vllm.serving.svc", &[ip("10.96.0.9")]),
            ),
            policy: Arc::new(DestinationPolicy {
                allow: allow.parse().unwrap(),
                service_ranges: "10.96.0.0/12".parse().unwrap(),
                ..DestinationPolicy::default()
            }),
        }
    }

    fn refusal(e: BoxError) -> Option<Reason> {
        e.downcast_ref::<Refusal>().map(|r| r.0)
    }

    #[tokio::test]
    async fn only_allowed_addresses_are_handed_to_the_connector() {
        let r = resolver("");
        assert_eq!(r.checked("MIXED.test.").await.unwrap(), [ip("203.0.113.7")]);
        let e = r.checked("internal.test").await.unwrap_err();
        assert_eq!(
            refusal(e),
            Some(Reason::Private),
            "the first refusal is reported"
        );
        let e = r.checked("localhost").await.unwrap_err();
        assert_eq!(refusal(e), Some(Reason::InternalName));
        let e = r.checked("vllm.serving.svc").await.unwrap_err();
        assert_eq!(refusal(e), Some(Reason::InternalName));
        let e = r.checked("empty.test").await.unwrap_err();
        assert_eq!(refusal(e), None, "no address is not a refusal");
        let e = r.checked("unknown.test").await.unwrap_err();
        assert!(e.to_string().contains("does not resolve"), "{e}");

        let r = resolver("10.0.0.0/8, ::1, vllm.serving.svc");
        assert_eq!(
            r.checked("mixed.test").await.unwrap(),
            [ip("10.0.0.1"), ip("203.0.113.7"), ip("::1")]
        );
        assert_eq!(
            r.checked("vllm.serving.svc").await.unwrap(),
            [ip("10.96.0.9")],
            "an allowed name is trusted in the service range"
        );
        let e = r.checked("internal.test").await;
        assert_eq!(e.unwrap(), [ip("10.0.0.1")], "metadata stays refused");
    }
}
