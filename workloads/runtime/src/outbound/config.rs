//! The outbound policy's settings, as every binary that calls tenant-supplied URLs takes
//! them (`#[command(flatten)]` into its arguments). The operator renders them from its own
//! flags of the same names.

use xin_api::destination::{CidrList, DestinationList, DestinationPolicy};

/// `XIN_SERVICE_CIDR` when unset: kubeadm's default Service range.
pub const DEFAULT_SERVICE_CIDR: &str = "10.96.0.0/12";

/// Where tenant-supplied URLs may go.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct OutboundArgs {
    /// Comma-separated CIDRs and exact host names that tenant-supplied URLs (LLM, embeddings,
    /// webhooks, CRM, ingestion sources) may reach although they are refused by default
    /// (loopback, private, link-local, metadata, cluster-internal), e.g. an on-premises LLM.
    /// A host name on the list is trusted whatever it resolves to. A broad range does not
    /// open a metadata address or the service range: list those exactly.
    #[arg(long = "outbound-allow", env = "XIN_OUTBOUND_ALLOW", default_value = "",
          hide_default_value = true, value_parser = list("XIN_OUTBOUND_ALLOW"))]
    pub allow: DestinationList,
    /// Comma-separated CIDRs and exact host names that are never reached, even when allowed.
    #[arg(long = "outbound-deny", env = "XIN_OUTBOUND_DENY", default_value = "",
          hide_default_value = true, value_parser = list("XIN_OUTBOUND_DENY"))]
    pub deny: DestinationList,
    /// The cluster's Service range(s), comma-separated (one per IP family): refused like
    /// other cluster-internal destinations.
    #[arg(long = "service-cidr", env = "XIN_SERVICE_CIDR", default_value = DEFAULT_SERVICE_CIDR,
          value_parser = cidrs("XIN_SERVICE_CIDR"))]
    pub service_cidr: CidrList,
}

impl OutboundArgs {
    pub fn policy(&self) -> DestinationPolicy {
        DestinationPolicy {
            allow: self.allow.clone(),
            deny: self.deny.clone(),
            service_ranges: self.service_cidr.clone(),
        }
    }
}

fn list(var: &'static str) -> impl Fn(&str) -> Result<DestinationList, String> + Clone {
    move |s| s.parse().map_err(|e| format!("{var}: {e}"))
}

fn cidrs(var: &'static str) -> impl Fn(&str) -> Result<CidrList, String> + Clone {
    move |s| s.parse().map_err(|e| format!("{var}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        outbound: OutboundArgs,
    }

    fn parse(args: &[&str]) -> Result<OutboundArgs, String> {
        let mut argv = vec!["x"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv)
            .map(|c| c.outbound)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_refuse_the_usual_service_range_and_allow_nothing_extra() {
        let p = parse(&[]).unwrap().policy();
        assert!(p.allow.is_empty() && p.deny.is_empty());
        assert_eq!(p.service_ranges.to_string(), "10.96.0.0/12");
    }

    #[test]
    fn lists_are_parsed_and_bad_entries_name_the_variable() {
        let p = parse(&[
            "--outbound-allow",
            "127.0.0.1/32,llm.corp.example",
            "--outbound-deny",
            "203.0.113.0/24",
            "--service-cidr",
            "10.100.0.0/16,fd00:10:96::/108",
        ])
        .unwrap()
        .policy();
        assert_eq!(p.allow.to_string(), "127.0.0.1/32,llm.corp.example");
        assert_eq!(p.deny.to_string(), "203.0.113.0/24");
        assert_eq!(p.service_ranges.0.len(), 2);
        for (flag, value, var) in [
            ("--outbound-allow", "10.0.0.0/33", "XIN_OUTBOUND_ALLOW"),
            ("--outbound-deny", "http://x", "XIN_OUTBOUND_DENY"),
            ("--service-cidr", "svc", "XIN_SERVICE_CIDR"),
        ] {
            let e = parse(&[flag, value]).unwrap_err();
            assert!(e.contains(var), "{flag} {value}: {e}");
        }
    }
}
