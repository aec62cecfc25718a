//! The NetworkPolicies of a tenant namespace: a default deny for every pod, and one policy per
//! component that opens exactly the paths the component needs. Every workload reaches DNS,
//! the platform database and the OTLP collector, and is scraped on its metrics port by the
//! monitoring and the operator's namespaces; the gateway is the public edge and the only way
//! to the orchestrator; each component reaches the public addresses it calls on the ports it
//! calls them on; the workers reach the API server; and the tenant's `spec.network.egress`
//! adds its own (on-premises) destinations. Nothing opens a path to another tenant.

use std::collections::BTreeMap;

use ipnet::IpNet;
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use serde::Serialize;
use xin_api::tenant::Tenant;

use super::*;
use crate::component::{Component, HTTP_PORT};

pub const DEFAULT_DENY: &str = "xin-default-deny";

/// Ranges no public-egress rule may reach: private (RFC 1918), shared (CGNAT, RFC 6598) and
/// unique-local (RFC 4193) networks hold the cluster's pods, Services and nodes and the
/// company network; link-local holds the cloud metadata endpoints, which hand out the node's
/// credentials. `true` marks the private ones, which `allowPrivateDestinations` opens.
const CLOSED: [(&str, bool); 9] = [
    ("10.0.0.0/8", true),
    ("100.64.0.0/10", true),
    ("172.16.0.0/12", true),
    ("192.168.0.0/16", true),
    ("169.254.0.0/16", false),
    ("169.254.169.254/32", false),
    ("fc00::/7", true),
    ("fe80::/10", false),
    // AWS's IPv6 metadata endpoint: inside fc00::/7, so it stays closed when that opens.
    ("fd00:ec2::254/128", false),
];

/// Where a platform endpoint given neither CIDRs nor a namespace is looked for.
const PRIVATE_NETWORKS: [&str; 5] = [
    "10.0.0.0/8",
    "100.64.0.0/10",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fc00::/7",
];

/// The public ports each component calls: the gateway the providers' APIs (HTTPS), ingestion
/// its sources and object store (HTTP(S)) and the embeddings endpoint, automation its webhooks,
/// CRMs (HTTP(S)) and SMTP servers (25, 465, 587). The orchestrator's depend on the tenant
/// ([`model_ports`]).
fn public_ports(tenant: &Tenant, component: Component) -> Vec<i32> {
    let mut ports = match component {
        Component::Gateway => vec![443],
        Component::Orchestrator => model_ports(tenant),
        Component::Ingestion => [vec![443, 80], embedding_port(tenant)].concat(),
        Component::Automation => vec![443, 80, 25, 465, 587],
    };
    let mut seen = std::collections::BTreeSet::new();
    ports.retain(|p| seen.insert(*p));
    ports
}

/// The ports of the endpoints the orchestrator calls: the LLM's and the embeddings endpoint's.
/// None with neither: answers are then extractive, over lexical retrieval.
fn model_ports(tenant: &Tenant) -> Vec<i32> {
    let llm = tenant.spec.llm.iter().map(|llm| url_port(&llm.endpoint));
    llm.chain(embedding_port(tenant)).collect()
}

/// The embeddings endpoint's port, when the Tenant has one (the orchestrator embeds questions,
/// the ingestion Job chunks).
fn embedding_port(tenant: &Tenant) -> Vec<i32> {
    tenant
        .spec
        .embeddings
        .iter()
        .map(|e| url_port(&e.endpoint))
        .collect()
}

/// The TCP port a URL is called on: its explicit port, else its scheme's (80 for `http`, 443
/// otherwise: the schema only admits `http` and `https`).
pub fn url_port(url: &str) -> i32 {
    match url.parse::<http::Uri>() {
        Ok(uri) => match (uri.port_u16(), uri.scheme_str()) {
            (Some(p), _) => i32::from(p),
            (None, Some("http")) => 80,
            _ => 443,
        },
        Err(_) => 443,
    }
}

/// Every NetworkPolicy of a tenant namespace. Applied by destructuring without `..`: a policy
/// built here but never applied does not compile.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TenantNetworkPolicies {
    pub default_deny: NetworkPolicy,
    pub gateway: NetworkPolicy,
    pub orchestrator: NetworkPolicy,
    pub ingestion: NetworkPolicy,
    pub automation: NetworkPolicy,
}

/// The default deny and the four components' policies. Each component's exists whether its
/// workload runs or not (it then selects no pod), so the set is the same for every Tenant.
pub fn build_tenant_network_policies(
    tenant: &Tenant,
    ns: &str,
    config: &Config,
) -> TenantNetworkPolicies {
    let build = |c| build_network_policy(tenant, ns, config, c);
    TenantNetworkPolicies {
        default_deny: build_default_deny(tenant, ns),
        gateway: build(Component::Gateway),
        orchestrator: build(Component::Orchestrator),
        ingestion: build(Component::Ingestion),
        automation: build(Component::Automation),
    }
}

/// Default deny in both directions for every pod of the namespace, so a pod that is none of
/// the components (one a team starts by hand) gets no path at all.
pub fn build_default_deny(tenant: &Tenant, ns: &str) -> NetworkPolicy {
    NetworkPolicy {
        metadata: meta(tenant, DEFAULT_DENY, ns, &tenant.name_any(), "tenant"),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector::default()),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ..NetworkPolicySpec::default()
        }),
    }
}

/// What `component`'s pods may receive and send, on top of the default deny.
pub fn build_network_policy(
    tenant: &Tenant,
    ns: &str,
    config: &Config,
    component: Component,
) -> NetworkPolicy {
    let t = tenant.name_any();
    let net = &config.network;
    let private_ok = net.allow_private_destinations;

    // Scraped by the monitoring namespace's Prometheus and by the operator's namespace.
    let mut scrapers = vec![config.operator_namespace.as_str()];
    if !net.monitoring_namespace.is_empty() && net.monitoring_namespace != config.operator_namespace
    {
        scrapers.insert(0, net.monitoring_namespace.as_str());
    }
    let mut ingress = vec![NetworkPolicyIngressRule {
        from: Some(
            scrapers
                .into_iter()
                .map(|n| namespace_peer(n, None))
                .collect(),
        ),
        ports: Some(vec![tcp(component.metrics_port())]),
    }];
    match component {
        // The public edge: providers and widgets reach it through the ingress controller or a
        // load balancer, from addresses nobody can list.
        Component::Gateway => ingress.push(NetworkPolicyIngressRule {
            from: None,
            ports: Some(vec![tcp(HTTP_PORT)]),
        }),
        // Only the tenant's own gateway calls the conversation API; the automation worker does
        // not (events reach it through the database), so it gets no path here.
        Component::Orchestrator => ingress.push(NetworkPolicyIngressRule {
            from: Some(vec![NetworkPolicyPeer {
                pod_selector: Some(match_labels(Component::Gateway.selector(&t))),
                ..NetworkPolicyPeer::default()
            }]),
            ports: Some(vec![tcp(HTTP_PORT)]),
        }),
        // Nothing calls them: their HTTP port serves only the kubelet's probes, which
        // NetworkPolicies do not govern.
        Component::Ingestion | Component::Automation => {}
    }

    let mut egress = vec![
        NetworkPolicyEgressRule {
            to: Some(vec![namespace_peer("kube-system", None)]),
            ports: Some(vec![udp(53), tcp(53)]),
        },
        NetworkPolicyEgressRule {
            to: Some(endpoint_peers(
                &net.database_cidrs,
                net.database_namespace.as_deref(),
                net.database_pod_labels.as_ref(),
                private_ok,
            )),
            ports: Some(vec![tcp(net.database_port.into())]),
        },
    ];
    // Workloads export traces only when the operator renders an OTLP endpoint into them.
    if config.otel_exporter_endpoint.is_some() {
        egress.push(NetworkPolicyEgressRule {
            to: Some(endpoint_peers(
                &net.otel_collector_cidrs,
                net.otel_collector_namespace.as_deref(),
                net.otel_collector_pod_labels.as_ref(),
                private_ok,
            )),
            ports: Some(
                net.otel_collector_ports
                    .iter()
                    .map(|p| tcp((*p).into()))
                    .collect(),
            ),
        });
    }
    // Exactly the components with API rights get a path to the API server.
    if component.talks_to_api() {
        egress.push(NetworkPolicyEgressRule {
            to: Some(endpoint_peers(
                &net.api_server_cidrs,
                None,
                None,
                private_ok,
            )),
            ports: Some(
                net.api_server_ports
                    .iter()
                    .map(|p| tcp((*p).into()))
                    .collect(),
            ),
        });
    }
    match component {
        // The gateway forwards to its tenant's orchestrator (through its Service, which a
        // policy sees resolved to the pods).
        Component::Gateway => egress.push(NetworkPolicyEgressRule {
            to: Some(vec![NetworkPolicyPeer {
                pod_selector: Some(match_labels(Component::Orchestrator.selector(&t))),
                ..NetworkPolicyPeer::default()
            }]),
            ports: Some(vec![tcp(HTTP_PORT)]),
        }),
        // No workload calls another one besides.
        Component::Orchestrator | Component::Ingestion | Component::Automation => {}
    }
    let public = public_ports(tenant, component);
    if !public.is_empty() {
        egress.push(NetworkPolicyEgressRule {
            to: Some(
                ["0.0.0.0/0", "::/0"]
                    .into_iter()
                    .map(|c| ip_peer(guarded_block(c, private_ok)))
                    .collect(),
            ),
            ports: Some(public.into_iter().map(tcp).collect()),
        });
    }
    for rule in &tenant.spec.network.egress {
        egress.push(NetworkPolicyEgressRule {
            to: Some(vec![ip_peer(guarded_block(&rule.cidr, private_ok))]),
            ports: (!rule.ports.is_empty()).then(|| rule.ports.iter().map(|p| tcp(*p)).collect()),
        });
    }

    let name = component.workload_name();
    NetworkPolicy {
        metadata: meta(tenant, &name, ns, &t, component.as_str()),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(match_labels(component.selector(&t))),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(ingress),
            egress: Some(egress),
        }),
    }
}

/// `cidr` as an ipBlock, except the closed ranges it strictly contains (the API server
/// refuses an except equal to its CIDR): link-local and metadata always, private ranges
/// unless `private_ok`. A range inside another excepted one is left out. A CIDR that does not
/// parse is kept as it is, for the API server to refuse.
pub fn guarded_block(cidr: &str, private_ok: bool) -> IPBlock {
    let except = cidr.parse::<IpNet>().ok().map(|net| {
        let inside: Vec<IpNet> = CLOSED
            .iter()
            .filter(|(_, private)| !(private_ok && *private))
            .map(|(c, _)| {
                c.parse::<IpNet>()
                    .expect("the closed ranges are valid CIDRs")
            })
            .filter(|c| net.trunc() != *c && net.contains(c))
            .collect();
        inside
            .iter()
            .filter(|c| !inside.iter().any(|o| o != *c && o.contains(*c)))
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
    });
    IPBlock {
        cidr: cidr.into(),
        except: except.filter(|e| !e.is_empty()),
    }
}

/// The peers of a platform endpoint: its CIDRs and its namespace (narrowed to its pods'
/// labels); the private networks when neither is given, so a default install works wherever
/// the endpoint is in the cluster or the company network, on its ports only.
fn endpoint_peers(
    cidrs: &[IpNet],
    namespace: Option<&str>,
    pod_labels: Option<&BTreeMap<String, String>>,
    private_ok: bool,
) -> Vec<NetworkPolicyPeer> {
    let mut peers: Vec<NetworkPolicyPeer> = cidrs
        .iter()
        .map(|c| ip_peer(guarded_block(&c.trunc().to_string(), private_ok)))
        .collect();
    if let Some(ns) = namespace.filter(|n| !n.is_empty()) {
        peers.push(namespace_peer(ns, pod_labels));
    }
    if peers.is_empty() {
        peers = PRIVATE_NETWORKS
            .iter()
            .map(|c| ip_peer(guarded_block(c, private_ok)))
            .collect();
    }
    peers
}

fn ip_peer(block: IPBlock) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        ip_block: Some(block),
        ..NetworkPolicyPeer::default()
    }
}

/// Pods of namespace `name` (by the label the API server sets on every namespace), all of
/// them or those with `pod_labels`.
fn namespace_peer(name: &str, pod_labels: Option<&BTreeMap<String, String>>) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(match_labels(BTreeMap::from([(
            "kubernetes.io/metadata.name".into(),
            name.into(),
        )]))),
        pod_selector: pod_labels
            .filter(|l| !l.is_empty())
            .map(|l| match_labels(l.clone())),
        ..NetworkPolicyPeer::default()
    }
}

fn match_labels(labels: BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels),
        ..LabelSelector::default()
    }
}

fn tcp(port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".into()),
        ..NetworkPolicyPort::default()
    }
}

fn udp(port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some("UDP".into()),
        ..tcp(port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::tenant::tests::tenant;
    use xin_api::tenant::{EgressRule, LlmSpec};

    fn policy(t: &Tenant, config: &Config, c: Component) -> NetworkPolicySpec {
        build_network_policy(t, "xin-acme", config, c).spec.unwrap()
    }

    fn egress_ports(spec: &NetworkPolicySpec) -> Vec<i32> {
        let mut ports: Vec<i32> = spec
            .egress
            .iter()
            .flatten()
            .flat_map(|r| r.ports.iter().flatten())
            .filter_map(|p| match p.port {
                Some(IntOrString::Int(p)) => Some(p),
                _ => None,
            })
            .collect();
        ports.sort();
        ports.dedup();
        ports
    }

    fn with_llm(endpoint: &str) -> Tenant {
        let mut t = tenant("acme");
        t.spec.llm = Some(LlmSpec {
            endpoint: endpoint.into(),
            model: "m".into(),
            fallback_model: None,
            timeout_seconds: 5,
            api_key_secret_ref: None,
        });
        t
    }

    #[test]
    fn public_blocks_close_private_link_local_and_metadata_ranges() {
        let except = |cidr, private_ok| guarded_block(cidr, private_ok).except.unwrap_or_default();
        assert_eq!(
            except("0.0.0.0/0", false),
            [
                "10.0.0.0/8",
                "100.64.0.0/10",
                "172.16.0.0/12",
                "192.168.0.0/16",
                "169.254.0.0/16"
            ]
        );
        assert_eq!(except("::/0", false), ["fc00::/7", "fe80::/10"]);
        // Private destinations allowed: metadata and link-local stay closed.
        assert_eq!(except("0.0.0.0/0", true), ["169.254.0.0/16"]);
        assert_eq!(except("::/0", true), ["fe80::/10", "fd00:ec2::254/128"]);
    }

    #[test]
    fn a_range_inside_the_closed_ones_is_opened_as_given() {
        assert_eq!(guarded_block("10.50.0.0/24", false).except, None);
        assert_eq!(guarded_block("10.0.0.0/8", false).except, None);
        assert_eq!(
            guarded_block("fc00::/7", false).except.unwrap(),
            ["fd00:ec2::254/128"]
        );
        // A wide tenant range does not open what the public rules keep closed.
        assert_eq!(
            guarded_block("169.0.0.0/8", false).except.unwrap(),
            ["169.254.0.0/16"]
        );
        assert_eq!(guarded_block("not-a-cidr", false).except, None);
    }

    #[test]
    fn every_except_is_strictly_inside_its_cidr() {
        // The API server refuses a policy whose except is not strictly inside its CIDR.
        let mut t = with_llm("https://llm.example.com");
        t.spec.network.egress = vec![
            EgressRule {
                cidr: "0.0.0.0/0".into(),
                ports: vec![8443],
            },
            EgressRule {
                cidr: "10.50.0.0/24".into(),
                ports: vec![],
            },
        ];
        for private_ok in [false, true] {
            let mut config = Config::for_tests();
            config.network.allow_private_destinations = private_ok;
            config.otel_exporter_endpoint = Some("http://otel:4318".into());
            let all = build_tenant_network_policies(&t, "xin-acme", &config);
            let mut blocks = 0;
            for np in [all.gateway, all.orchestrator, all.ingestion, all.automation] {
                for peer in np
                    .spec
                    .unwrap()
                    .egress
                    .into_iter()
                    .flatten()
                    .flat_map(|r| r.to.unwrap_or_default())
                {
                    let Some(b) = peer.ip_block else { continue };
                    blocks += 1;
                    let cidr: IpNet = b.cidr.parse().unwrap();
                    for e in b.except.unwrap_or_default() {
                        let e: IpNet = e.parse().unwrap();
                        assert!(cidr.contains(&e) && cidr.trunc() != e, "{e} in {cidr}");
                    }
                }
            }
            assert!(blocks > 20, "{blocks} ip blocks");
        }
    }

    #[test]
    fn the_orchestrator_is_reached_only_from_its_gateway_and_scrapers() {
        let spec = policy(
            &tenant("acme"),
            &Config::for_tests(),
            Component::Orchestrator,
        );
        assert_eq!(
            spec.pod_selector.unwrap().match_labels.unwrap(),
            Component::Orchestrator.selector("acme")
        );
        let ingress = spec.ingress.unwrap();
        assert!(
            ingress.iter().all(|r| r.from.is_some()),
            "no rule from anywhere"
        );
        let http: Vec<_> = ingress
            .iter()
            .filter(|r| r.ports.as_ref().unwrap()[0].port == Some(IntOrString::Int(HTTP_PORT)))
            .collect();
        assert_eq!(http.len(), 1);
        assert_eq!(
            http[0].from.as_ref().unwrap()[0]
                .pod_selector
                .as_ref()
                .unwrap()
                .match_labels,
            Some(Component::Gateway.selector("acme"))
        );
        assert!(
            http[0].from.as_ref().unwrap()[0]
                .namespace_selector
                .is_none()
        );
        // The gateway is the public edge.
        let gw = policy(&tenant("acme"), &Config::for_tests(), Component::Gateway);
        assert!(gw.ingress.unwrap().iter().any(|r| r.from.is_none()
            && r.ports.as_ref().unwrap()[0].port == Some(IntOrString::Int(HTTP_PORT))));
    }

    #[test]
    fn metrics_are_scraped_from_the_monitoring_and_operator_namespaces() {
        let scrapers = |config: &Config| -> Vec<String> {
            let spec = policy(&tenant("acme"), config, Component::Automation);
            let rule = &spec.ingress.unwrap()[0];
            assert_eq!(
                rule.ports.as_ref().unwrap()[0].port,
                Some(IntOrString::Int(9104))
            );
            rule.from
                .iter()
                .flatten()
                .map(|p| {
                    p.namespace_selector
                        .as_ref()
                        .unwrap()
                        .match_labels
                        .as_ref()
                        .unwrap()["kubernetes.io/metadata.name"]
                        .clone()
                })
                .collect()
        };
        let mut config = Config::for_tests();
        assert_eq!(scrapers(&config), ["monitoring", "xin-system"]);
        config.network.monitoring_namespace = String::new();
        assert_eq!(scrapers(&config), ["xin-system"]);
        config.network.monitoring_namespace = "xin-system".into();
        assert_eq!(scrapers(&config), ["xin-system"]);
    }

    #[test]
    fn the_orchestrator_calls_its_llm_and_embeddings_on_the_ports_of_their_urls() {
        assert_eq!(url_port("https://llm.example.com"), 443);
        assert_eq!(url_port("http://llm.example.com/v1"), 80);
        assert_eq!(url_port("http://10.1.2.3:8000"), 8000);
        assert_eq!(url_port("https://[2001:db8::1]:8443/x"), 8443);
        let config = Config::for_tests();
        // Without an LLM answers are extractive: no public egress at all.
        assert_eq!(
            egress_ports(&policy(&tenant("acme"), &config, Component::Orchestrator)),
            [53, 5432]
        );
        assert_eq!(
            egress_ports(&policy(
                &with_llm("http://llm.example.com:8000"),
                &config,
                Component::Orchestrator
            )),
            [53, 5432, 8000]
        );
        // The embeddings endpoint is called by the orchestrator (questions) and the ingestion
        // Job (chunks), on its own port; with or without an LLM.
        let embeddings = |t: &mut Tenant| {
            t.spec.embeddings = Some(
                serde_json::from_value(serde_json::json!({
                    "endpoint": "http://embed.example.com:8081", "model": "e5"}))
                .unwrap(),
            );
        };
        let mut only_embeddings = tenant("acme");
        embeddings(&mut only_embeddings);
        let mut both = with_llm("http://llm.example.com:8000");
        embeddings(&mut both);
        assert_eq!(
            egress_ports(&policy(&only_embeddings, &config, Component::Orchestrator)),
            [53, 5432, 8081]
        );
        assert_eq!(
            egress_ports(&policy(&both, &config, Component::Orchestrator)),
            [53, 5432, 8000, 8081]
        );
        assert_eq!(
            egress_ports(&policy(&both, &config, Component::Ingestion)),
            [53, 80, 443, 5432, 6443, 8081]
        );
    }

    #[test]
    fn each_component_reaches_only_its_own_public_ports_and_the_workers_the_api_server() {
        let config = Config::for_tests();
        let t = with_llm("https://llm.example.com");
        let ports = |c| egress_ports(&policy(&t, &config, c));
        assert_eq!(ports(Component::Gateway), [53, 443, 5432, HTTP_PORT]);
        assert_eq!(ports(Component::Orchestrator), [53, 443, 5432]);
        assert_eq!(ports(Component::Ingestion), [53, 80, 443, 5432, 6443]);
        assert_eq!(
            ports(Component::Automation),
            [25, 53, 80, 443, 465, 587, 5432, 6443]
        );
    }

    #[test]
    fn the_collector_is_reached_only_when_traces_are_exported() {
        let mut config = Config::for_tests();
        let has_otlp = |config: &Config| {
            egress_ports(&policy(&tenant("acme"), config, Component::Gateway)).contains(&4317)
        };
        assert!(!has_otlp(&config));
        config.otel_exporter_endpoint = Some("http://otel.observability:4317".into());
        assert!(has_otlp(&config));
    }

    #[test]
    fn platform_endpoints_are_their_cidrs_and_namespace_or_else_the_private_networks() {
        let mut config = Config::for_tests();
        let database = |config: &Config| {
            policy(&tenant("acme"), config, Component::Gateway)
                .egress
                .unwrap()[1]
                .to
                .clone()
                .unwrap()
        };
        let default = database(&config);
        let cidrs: Vec<&str> = default
            .iter()
            .map(|p| p.ip_block.as_ref().unwrap().cidr.as_str())
            .collect();
        assert_eq!(cidrs, PRIVATE_NETWORKS);
        config.network.database_cidrs = vec!["10.20.30.40/16".parse().unwrap()];
        config.network.database_namespace = Some("postgres".into());
        config.network.database_pod_labels = Some(BTreeMap::from([("app".into(), "pg".into())]));
        let given = database(&config);
        assert_eq!(given.len(), 2);
        // Host bits are cleared: the API server warns about a CIDR that has them.
        assert_eq!(given[0].ip_block.as_ref().unwrap().cidr, "10.20.0.0/16");
        assert_eq!(
            given[1]
                .namespace_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap()["kubernetes.io/metadata.name"],
            "postgres"
        );
        assert_eq!(
            given[1]
                .pod_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap()["app"],
            "pg"
        );
    }

    #[test]
    fn tenant_egress_rules_open_to_every_component() {
        let mut t = tenant("acme");
        t.spec.network.egress = vec![EgressRule {
            cidr: "10.50.0.0/24".into(),
            ports: vec![8443],
        }];
        for c in Component::ALL {
            let egress = policy(&t, &Config::for_tests(), c).egress.unwrap();
            let last = egress.last().unwrap();
            assert_eq!(
                last.to.as_ref().unwrap()[0].ip_block,
                Some(IPBlock {
                    cidr: "10.50.0.0/24".into(),
                    except: None
                }),
                "{c}"
            );
            assert_eq!(
                last.ports.as_ref().unwrap()[0].port,
                Some(IntOrString::Int(8443))
            );
        }
    }

    #[test]
    fn the_default_deny_selects_every_pod_both_ways() {
        let np = build_default_deny(&tenant("acme"), "xin-acme");
        let spec = np.spec.unwrap();
        assert_eq!(spec.pod_selector, Some(LabelSelector::default()));
        assert_eq!(spec.policy_types.unwrap(), ["Ingress", "Egress"]);
        assert!(spec.ingress.is_none() && spec.egress.is_none());
    }
}
