//! Which destinations a tenant-supplied URL (LLM, embeddings, webhooks, CRM, ingestion
//! sources) may reach. A pure check, shared by the operator (literal addresses and internal
//! names, when it validates a spec) and the workloads' outbound HTTP client (which also checks
//! every address a name resolves to, and every redirect).
//!
//! Refused by default: loopback, private (RFC 1918), link-local, carrier-grade NAT,
//! unique-local IPv6, cloud metadata addresses and names, unspecified, multicast, broadcast
//! and reserved addresses, the cluster's service range, and names that can only be internal
//! (`localhost`, `*.localhost`, `*.svc`, `*.cluster.local`, `*.local`, `*.internal`,
//! `*.home.arpa`, `kubernetes.default*`, and names without a dot, which the cluster's DNS
//! search path turns into service names). IPv6 addresses that carry an IPv4 address
//! (`::ffff:127.0.0.1`, `::127.0.0.1`, `64:ff9b::…`) are judged by it.
//!
//! The platform team widens or narrows this with two lists of CIDRs and exact host names:
//! - the **deny** list always wins;
//! - the **allow** list lifts a default refusal: an address in an allowed range is allowed;
//!   a host name on it is trusted whatever it resolves to. Two exceptions keep a broad range
//!   (`10.0.0.0/8`) from opening more than meant: a metadata address is lifted only by an
//!   entry for that one address, the service range only by an entry inside it. The
//!   unspecified address (`0.0.0.0`, `::`) is never allowed.

mod net;
mod url;

use std::net::IpAddr;

pub use net::{Cidr, CidrList, DestinationList, Entry, classify, embedded_ipv4, normalize_name};
pub use url::{Host, UrlError, UrlParts, parse_host, parse_ipv4, parse_url, redact_url};

/// Why a destination is refused. A bounded set: [`Reason::as_str`] is a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    Loopback,
    Private,
    LinkLocal,
    Cgnat,
    UniqueLocal,
    Metadata,
    Unspecified,
    Multicast,
    Broadcast,
    Reserved,
    ServiceRange,
    InternalName,
    Denied,
    InvalidUrl,
}

impl Reason {
    pub const ALL: [Reason; 14] = [
        Reason::Loopback,
        Reason::Private,
        Reason::LinkLocal,
        Reason::Cgnat,
        Reason::UniqueLocal,
        Reason::Metadata,
        Reason::Unspecified,
        Reason::Multicast,
        Reason::Broadcast,
        Reason::Reserved,
        Reason::ServiceRange,
        Reason::InternalName,
        Reason::Denied,
        Reason::InvalidUrl,
    ];

    /// A short, stable, snake_case name (metric label, log field).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Loopback => "loopback",
            Reason::Private => "private",
            Reason::LinkLocal => "link_local",
            Reason::Cgnat => "cgnat",
            Reason::UniqueLocal => "unique_local",
            Reason::Metadata => "metadata",
            Reason::Unspecified => "unspecified",
            Reason::Multicast => "multicast",
            Reason::Broadcast => "broadcast",
            Reason::Reserved => "reserved",
            Reason::ServiceRange => "service_range",
            Reason::InternalName => "internal_name",
            Reason::Denied => "denied",
            Reason::InvalidUrl => "invalid_url",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Reason::Loopback => "a loopback address",
            Reason::Private => "a private address",
            Reason::LinkLocal => "a link-local address",
            Reason::Cgnat => "a carrier-grade NAT address (100.64.0.0/10)",
            Reason::UniqueLocal => "a unique-local IPv6 address",
            Reason::Metadata => "a cloud metadata address",
            Reason::Unspecified => "the unspecified address",
            Reason::Multicast => "a multicast address",
            Reason::Broadcast => "the broadcast address",
            Reason::Reserved => "a reserved address",
            Reason::ServiceRange => "in the cluster's service range",
            Reason::InternalName => "a cluster-internal host name",
            Reason::Denied => "on the outbound deny list",
            Reason::InvalidUrl => "not a valid http(s) URL",
        })
    }
}

/// The answer for one destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Refused(Reason),
}

impl Verdict {
    pub fn refusal(self) -> Option<Reason> {
        match self {
            Verdict::Allowed => None,
            Verdict::Refused(r) => Some(r),
        }
    }
}

/// Names of cloud metadata services (GCP, AWS).
const METADATA_NAMES: &[&str] = &[
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "instance-data",
    "instance-data.ec2.internal",
];

/// Suffixes of names that only resolve inside a cluster, a cloud network or a site.
const INTERNAL_SUFFIXES: &[&str] = &[
    ".localhost",
    ".svc",
    ".cluster.local",
    ".local",
    ".internal",
    ".home.arpa",
];

/// The configured policy: the default refusals plus the platform team's lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DestinationPolicy {
    pub allow: DestinationList,
    pub deny: DestinationList,
    /// The cluster's Service ranges (`XIN_SERVICE_CIDR`).
    pub service_ranges: CidrList,
}

impl DestinationPolicy {
    /// Whether an http(s) URL's host may be reached before any name is resolved: a literal
    /// address is judged fully, a name only by what it says (the client checks what it
    /// resolves to). A URL that does not parse is refused.
    pub fn check_url(&self, url: &str) -> Verdict {
        match parse_url(url) {
            Ok(p) => self.check_host(&p.host),
            Err(_) => Verdict::Refused(Reason::InvalidUrl),
        }
    }

    pub fn check_host(&self, host: &Host) -> Verdict {
        match host {
            Host::Ip(ip) => self.check_ip(*ip),
            Host::Name(n) => self.check_name(n),
        }
    }

    /// Whether a name may be looked up: denied, allowed by name, a metadata name, or an
    /// internal name — else allowed, pending the check of its addresses.
    pub fn check_name(&self, name: &str) -> Verdict {
        let name = normalize_name(name);
        if self.deny.has_host(&name) {
            return Verdict::Refused(Reason::Denied);
        }
        if self.allow.has_host(&name) {
            return Verdict::Allowed;
        }
        if METADATA_NAMES.contains(&name.as_str()) {
            return Verdict::Refused(Reason::Metadata);
        }
        let internal = name == "localhost"
            || name == "cluster.local"
            || name == "kubernetes"
            || name.starts_with("kubernetes.default")
            || !name.contains('.')
            || INTERNAL_SUFFIXES.iter().any(|s| name.ends_with(s));
        if internal {
            return Verdict::Refused(Reason::InternalName);
        }
        Verdict::Allowed
    }

    /// Whether an address may be connected to.
    pub fn check_ip(&self, ip: IpAddr) -> Verdict {
        let ips = candidates(ip);
        if self.denied(&ips) {
            return Verdict::Refused(Reason::Denied);
        }
        match self.default_refusal(&ips) {
            None => Verdict::Allowed,
            Some(r) if self.lifts(r, &ips) => Verdict::Allowed,
            Some(r) => Verdict::Refused(r),
        }
    }

    /// Whether an address that `name` resolved to may be connected to: a name on the allow
    /// list is trusted (an in-cluster LLM by its Service name), but the deny list and the
    /// unspecified address still apply.
    pub fn check_resolved(&self, name: &str, ip: IpAddr) -> Verdict {
        if !self.allow.has_host(&normalize_name(name)) {
            return self.check_ip(ip);
        }
        let ips = candidates(ip);
        if self.denied(&ips) {
            Verdict::Refused(Reason::Denied)
        } else if ips
            .iter()
            .any(|i| classify(*i) == Some(Reason::Unspecified))
        {
            Verdict::Refused(Reason::Unspecified)
        } else {
            Verdict::Allowed
        }
    }

    fn denied(&self, ips: &[IpAddr]) -> bool {
        self.deny.nets().any(|n| ips.iter().any(|i| n.contains(*i)))
    }

    fn default_refusal(&self, ips: &[IpAddr]) -> Option<Reason> {
        let builtin = classify(ips[0]);
        // Metadata and unspecified say more than "in the service range" and are stricter.
        if matches!(builtin, Some(Reason::Metadata | Reason::Unspecified)) {
            return builtin;
        }
        let in_service_range = self
            .service_ranges
            .0
            .iter()
            .any(|s| ips.iter().any(|i| s.contains(*i)));
        if in_service_range {
            return Some(Reason::ServiceRange);
        }
        builtin
    }

    fn lifts(&self, reason: Reason, ips: &[IpAddr]) -> bool {
        self.allow.nets().any(|n| {
            ips.iter().any(|i| n.contains(*i))
                && match reason {
                    Reason::Unspecified => false,
                    Reason::Metadata => n.is_single(),
                    Reason::ServiceRange => self.service_ranges.0.iter().any(|s| s.covers(n)),
                    _ => true,
                }
        })
    }
}

/// The address, and the IPv4 address it carries if it is an IPv6 address that carries one,
/// so that lists written for IPv4 apply to `::ffff:10.0.0.1` too.
fn candidates(ip: IpAddr) -> Vec<IpAddr> {
    let mut out = vec![ip];
    if let IpAddr::V6(a) = ip
        && let Some(v4) = embedded_ipv4(a)
    {
        out.push(IpAddr::V4(v4));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use Reason::*;

    fn policy(allow: &str, deny: &str, service: &str) -> DestinationPolicy {
        DestinationPolicy {
            allow: allow.parse().unwrap(),
            deny: deny.parse().unwrap(),
            service_ranges: service.parse().unwrap(),
        }
    }

    fn refused(r: Reason) -> Verdict {
        Verdict::Refused(r)
    }

    #[test]
    fn urls_are_judged_by_where_they_really_go() {
        let p = policy("", "", "10.96.0.0/12");
        for (url, want) in [
            ("http://127.0.0.1/", refused(Loopback)),
            ("http://0x7f.1/", refused(Loopback)),
            ("http://2130706433/", refused(Loopback)),
            ("http://0177.0.0.1/", refused(Loopback)),
            ("http://127.1/", refused(Loopback)),
            ("http://[::1]/", refused(Loopback)),
            ("http://[::ffff:127.0.0.1]/", refused(Loopback)),
            ("http://[::127.0.0.1]/", refused(Loopback)),
            ("http://good.example@127.0.0.1/", refused(Loopback)),
            ("http://127.0.0.1#@good.example/", refused(Loopback)),
            ("http://169.254.169.254/latest/meta-data", refused(Metadata)),
            ("http://[fd00:ec2::254]/", refused(Metadata)),
            ("http://metadata.google.internal/", refused(Metadata)),
            ("http://metadata/computeMetadata/v1/", refused(Metadata)),
            ("http://10.0.0.1/", refused(Private)),
            ("http://10.96.0.1/", refused(ServiceRange)),
            ("http://172.16.5.4:8080/", refused(Private)),
            ("http://192.168.0.1/", refused(Private)),
            ("http://169.254.0.1/", refused(LinkLocal)),
            ("http://[fe80::1]/", refused(LinkLocal)),
            ("http://100.64.0.1/", refused(Cgnat)),
            ("http://[fd00::1]/", refused(UniqueLocal)),
            ("http://0.0.0.0:8080/", refused(Unspecified)),
            ("http://0/", refused(Unspecified)),
            ("http://[::]/", refused(Unspecified)),
            ("http://224.0.0.1/", refused(Multicast)),
            ("http://255.255.255.255/", refused(Broadcast)),
            ("http://localhost:8080/", refused(InternalName)),
            ("http://LOCALHOST./", refused(InternalName)),
            ("http://api.localhost/", refused(InternalName)),
            ("http://xin-orchestrator:8080/", refused(InternalName)),
            ("http://postgres.xin-acme.svc/", refused(InternalName)),
            (
                "http://postgres.xin-acme.svc.cluster.local/",
                refused(InternalName),
            ),
            ("http://kubernetes.default/", refused(InternalName)),
            ("https://kubernetes.default.svc/api", refused(InternalName)),
            ("http://ip-10-0-0-1.ec2.internal/", refused(InternalName)),
            ("http://printer.local/", refused(InternalName)),
            ("http://256.1.1.1/", refused(InvalidUrl)),
            ("ftp://llm.example.com/", refused(InvalidUrl)),
            ("https://llm.example.com/v1", Verdict::Allowed),
            ("https://203.0.113.7/v1", Verdict::Allowed),
            ("https://[2001:db8::7]/v1", Verdict::Allowed),
            ("http://localhost.example.com/", Verdict::Allowed),
        ] {
            assert_eq!(p.check_url(url), want, "{url}");
        }
    }

    #[test]
    fn the_allow_list_lifts_refusals_and_the_deny_list_always_wins() {
        let p = policy(
            "127.0.0.1/32, 10.0.0.0/8, 169.254.169.254, vllm.serving.svc, 10.96.0.10",
            "10.9.0.0/16, 203.0.113.0/24, evil.example",
            "10.96.0.0/12",
        );
        for (url, want) in [
            ("http://127.0.0.1:8000/", Verdict::Allowed),
            ("http://[::ffff:127.0.0.1]/", Verdict::Allowed),
            ("http://127.0.0.2/", refused(Loopback)),
            ("http://10.1.2.3/", Verdict::Allowed),
            ("http://10.9.0.1/", refused(Denied)),
            ("http://[::ffff:10.9.0.1]/", refused(Denied)),
            ("http://203.0.113.7/", refused(Denied)),
            ("http://evil.example/", refused(Denied)),
            ("http://EVIL.example./", refused(Denied)),
            // A broad range does not open the service range; an entry inside it does.
            ("http://10.96.0.1/", refused(ServiceRange)),
            ("http://10.96.0.10/", Verdict::Allowed),
            // A metadata address needs its own entry...
            ("http://169.254.169.254/", Verdict::Allowed),
            ("http://vllm.serving.svc:8000/v1", Verdict::Allowed),
            ("http://other.serving.svc/", refused(InternalName)),
        ] {
            assert_eq!(p.check_url(url), want, "{url}");
        }
        // ...a range around it is not enough.
        let broad = policy("169.254.0.0/16, 0.0.0.0/0", "", "");
        assert_eq!(
            broad.check_url("http://169.254.169.254/"),
            refused(Metadata)
        );
        assert_eq!(broad.check_url("http://169.254.1.1/"), Verdict::Allowed);
        assert_eq!(broad.check_url("http://0.0.0.0/"), refused(Unspecified));
        assert_eq!(
            policy("0.0.0.0/32", "", "").check_url("http://0.0.0.0/"),
            refused(Unspecified)
        );
    }

    #[test]
    fn an_allowed_name_is_trusted_whatever_it_resolves_to_but_not_past_the_deny_list() {
        let p = policy("vllm.serving.svc", "10.9.0.0/16", "10.96.0.0/12");
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            p.check_resolved("vllm.serving.svc.", ip("10.96.4.5")),
            Verdict::Allowed
        );
        assert_eq!(
            p.check_resolved("vllm.serving.svc", ip("10.9.0.1")),
            refused(Denied)
        );
        assert_eq!(
            p.check_resolved("vllm.serving.svc", ip("0.0.0.0")),
            refused(Unspecified)
        );
        assert_eq!(
            p.check_resolved("llm.example.com", ip("10.96.4.5")),
            refused(ServiceRange)
        );
        assert_eq!(
            p.check_resolved("llm.example.com", ip("192.168.1.1")),
            refused(Private)
        );
        assert_eq!(
            p.check_resolved("llm.example.com", ip("203.0.113.7")),
            Verdict::Allowed
        );
    }

    #[test]
    fn reasons_are_a_bounded_set_of_labels() {
        let labels: std::collections::BTreeSet<&str> =
            Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), Reason::ALL.len());
        assert!(
            labels
                .iter()
                .all(|l| l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        );
        assert_eq!(Loopback.to_string(), "a loopback address");
        assert_eq!(refused(Private).refusal(), Some(Private));
        assert_eq!(Verdict::Allowed.refusal(), None);
    }
}
