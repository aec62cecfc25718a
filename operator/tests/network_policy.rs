//! The tenants' NetworkPolicies as the operator's builders render them, judged by an offline
//! NetworkPolicy engine: cyclonus, built from the Go module proxy by
//! `e2e/controlplane/cluster.sh build-tools` (`make test` does it). Two tenants, the platform's
//! endpoints and addresses outside the cluster are laid out as a CNI would see them, and a
//! table of connections says which must be allowed and which denied.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use clap::Parser;
use serde_json::{Value, json};
use xin_api::ingestion::IngestionJob;
use xin_api::tenant::Tenant;
use xin_operator::builders::automation::build_automation_deployment;
use xin_operator::builders::gateway::build_gateway_deployment;
use xin_operator::builders::ingestion::build_ingestion_job;
use xin_operator::builders::network::{TenantNetworkPolicies, build_tenant_network_policies};
use xin_operator::builders::tenant::build_namespace;
use xin_operator::builders::workload::{WorkloadParts, build_workload_deployment};
use xin_operator::component::{Component, HTTP_PORT};
use xin_operator::config::Config;

/// Where `build-tools` puts the engine: `${XDG_CACHE_HOME:-~/.cache}/xin/cyclonus-<version>/bin`,
/// the version pinned in `e2e/controlplane/versions.env`. `XIN_CYCLONUS` overrides it.
fn cyclonus() -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let versions = std::fs::read_to_string(repo.join("e2e/controlplane/versions.env"))
        .expect("e2e/controlplane/versions.env is readable");
    let version = versions
        .lines()
        .find_map(|l| l.strip_prefix("CYCLONUS_VERSION="))
        .expect("versions.env pins CYCLONUS_VERSION")
        .trim();
    let bin = match std::env::var_os("XIN_CYCLONUS") {
        Some(p) => PathBuf::from(p),
        None => std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache")
            })
            .join(format!("xin/cyclonus-{version}/bin/cyclonus")),
    };
    assert!(
        bin.is_file(),
        "the NetworkPolicy engine cyclonus {version} is not at {}: build it with \
         `e2e/controlplane/cluster.sh build-tools` (about a minute; `make test` does it), or \
         point XIN_CYCLONUS at a cyclonus binary",
        bin.display()
    );
    bin
}

type Labels = BTreeMap<String, String>;

/// One end of a connection: a pod or an address outside the cluster.
#[derive(Clone, Debug)]
struct Peer {
    name: String,
    ip: String,
    /// The pod's namespace, its namespace's labels and its own labels.
    pod: Option<(String, Labels, Labels)>,
}

impl Peer {
    fn external(name: &str, ip: &str) -> Self {
        Peer {
            name: name.into(),
            ip: ip.into(),
            pod: None,
        }
    }

    /// A pod of namespace `ns` (labelled as the API server labels every namespace, plus
    /// `ns_labels`).
    fn pod(
        name: &str,
        ns: &str,
        ns_labels: &BTreeMap<String, String>,
        labels: &BTreeMap<String, String>,
        ip: &str,
    ) -> Self {
        let mut ns_labels = ns_labels.clone();
        ns_labels.insert("kubernetes.io/metadata.name".into(), ns.into());
        Peer {
            name: name.into(),
            ip: ip.into(),
            pod: Some((ns.into(), ns_labels, labels.clone())),
        }
    }

    fn plain(name: &str, ns: &str, labels: &[(&str, &str)], ip: &str) -> Self {
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Peer::pod(name, ns, &BTreeMap::new(), &labels, ip)
    }

    fn json(&self) -> Value {
        match &self.pod {
            None => json!({"IP": self.ip}),
            Some((ns, ns_labels, labels)) => json!({
                "IP": self.ip,
                "Internal": {"Namespace": ns, "NamespaceLabels": ns_labels, "PodLabels": labels},
            }),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Verdict {
    Allowed,
    Denied,
}
use Verdict::*;

/// A connection and the verdict the design wants.
#[derive(Clone, Debug)]
struct Row {
    from: Peer,
    to: Peer,
    port: i32,
    protocol: &'static str,
    want: Verdict,
}

impl Row {
    fn label(&self) -> String {
        format!(
            "{} → {}:{}/{}",
            self.from.name, self.to.name, self.port, self.protocol
        )
    }
}

/// A tenant's workload pods, labelled by the operator's own builders.
struct TenantPods {
    gateway: Peer,
    orchestrator: Peer,
    ingest: Peer,
    automation: Peer,
    /// A pod that is none of the components (started by hand in the namespace): only the
    /// default deny governs it.
    stray: Peer,
}

impl TenantPods {
    fn workloads(&self) -> [&Peer; 4] {
        [
            &self.gateway,
            &self.orchestrator,
            &self.ingest,
            &self.automation,
        ]
    }
}

fn tenant(name: &str, llm: &str, egress: Value) -> Tenant {
    let mut t = Tenant::new(
        name,
        serde_json::from_value(json!({
            "displayName": name,
            "llm": {"endpoint": llm, "model": "m"},
            "network": {"egress": egress},
        }))
        .expect("a valid Tenant spec"),
    );
    t.metadata.uid = Some(format!("uid-{name}"));
    t
}

fn tenant_pods(t: &Tenant, config: &Config, subnet: u8) -> TenantPods {
    let name = t.metadata.name.clone().unwrap();
    let ns = format!("xin-{name}");
    let ns_labels = build_namespace(t, &ns).metadata.labels.unwrap();
    let template_labels = |d: k8s_openapi::api::apps::v1::Deployment| {
        d.spec.template.metadata.unwrap().labels.unwrap()
    };
    let gateway = template_labels(build_gateway_deployment(t, &ns, config, "h".into()));
    let orchestrator = template_labels(build_workload_deployment(
        t,
        &ns,
        config,
        WorkloadParts {
            component: Component::Orchestrator,
            image: "img".into(),
            env: vec![],
            resources: None,
            config_hash: "h".into(),
            volumes: vec![],
            mounts: vec![],
            replicas: None,
            probe_path: Some("/ready"),
        },
    ));
    let automation = template_labels(build_automation_deployment(t, &ns, config, "h".into()));
    let mut ij = IngestionJob::new(
        "faq",
        serde_json::from_value(
            json!({"source": {"url": {"urls": ["https://docs.example/faq.md"]}}}),
        )
        .unwrap(),
    );
    ij.metadata.namespace = Some(ns.clone());
    ij.metadata.uid = Some("uid-ij".into());
    let job = build_ingestion_job(&ij, t, config).unwrap();
    let ingest = job.spec.unwrap().template.metadata.unwrap().labels.unwrap();
    let pod = |what: &str, labels: &BTreeMap<String, String>, host: u8| {
        Peer::pod(
            &format!("{name}/{what}"),
            &ns,
            &ns_labels,
            labels,
            &format!("10.244.{subnet}.{host}"),
        )
    };
    TenantPods {
        gateway: pod("gateway", &gateway, 10),
        orchestrator: pod("orchestrator", &orchestrator, 11),
        ingest: pod("ingest", &ingest, 12),
        automation: pod("automation", &automation, 13),
        stray: pod(
            "stray",
            &BTreeMap::from([("app".to_string(), "debug".to_string())]),
            14,
        ),
    }
}

/// The engine's verdict for every row, in order, with its explanation.
fn judge(
    policies: &[&TenantNetworkPolicies],
    drop_default_deny: bool,
    rows: &[Row],
) -> Vec<(Verdict, String)> {
    let items: Vec<Value> = policies
        .iter()
        .flat_map(|p| {
            let mut v = vec![&p.gateway, &p.orchestrator, &p.ingestion, &p.automation];
            if !drop_default_deny {
                v.push(&p.default_deny);
            }
            v
        })
        .map(|np| serde_json::to_value(np).unwrap())
        .collect();
    // The tests run in parallel threads of one process: one directory per call.
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "xin-netpol-{}-{}",
        std::process::id(),
        CALLS.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    let list =
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicyList", "items": items});
    std::fs::write(dir.join("policies/list.json"), list.to_string()).unwrap();
    let traffic: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "Source": r.from.json(),
                "Destination": r.to.json(),
                "ResolvedPort": r.port,
                "Protocol": r.protocol,
            })
        })
        .collect();
    std::fs::write(dir.join("traffic.json"), Value::Array(traffic).to_string()).unwrap();
    let out = Command::new(cyclonus())
        .args(["analyze", "--mode", "query-traffic", "--policy-path"])
        .arg(dir.join("policies"))
        .arg("--traffic-path")
        .arg(dir.join("traffic.json"))
        .output()
        .expect("cyclonus runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "cyclonus failed ({}):\n{}\n{stdout}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).ok();
    // One "Traffic:" section per row, in order, ending with the table's "IS ALLOWED?" footer.
    let sections: Vec<&str> = stdout.split("\nTraffic:\n").skip(1).collect();
    assert_eq!(sections.len(), rows.len(), "one verdict per row:\n{stdout}");
    sections
        .iter()
        .map(|s| {
            let footer = s
                .lines()
                .find(|l| l.contains("IS ALLOWED?"))
                .unwrap_or_else(|| panic!("no verdict in:\n{s}"));
            let verdict = match footer.split('|').nth(2).map(str::trim) {
                Some("TRUE") => Allowed,
                Some("FALSE") => Denied,
                other => panic!("verdict {other:?} in:\n{s}"),
            };
            (verdict, s.to_string())
        })
        .collect()
}

/// Every row whose verdict differs from the wanted one, with the engine's explanation.
fn mismatches(rows: &[Row], got: &[(Verdict, String)]) -> Vec<String> {
    rows.iter()
        .zip(got)
        .filter(|(r, (v, _))| r.want != *v)
        .map(|(r, (v, why))| format!("{}: want {:?}, engine says {v:?}\n{why}", r.label(), r.want))
        .collect()
}

struct World {
    a: TenantPods,
    b: TenantPods,
    database: Peer,
    database_admin: Peer,
    collector: Peer,
    api_server: Peer,
    prometheus: Peer,
    operator: Peer,
    ingress_controller: Peer,
    kube_dns: Peer,
    intruder: Peer,
    internet_client: Peer,
    public: Peer,
    public_v6: Peer,
    metadata: Peer,
    metadata_v6: Peer,
    private: Peer,
    a_on_premises: Peer,
}

fn world(config: &Config, a: &Tenant, b: &Tenant) -> World {
    World {
        a: tenant_pods(a, config, 1),
        b: tenant_pods(b, config, 2),
        database: Peer::plain(
            "postgres/postgresql",
            "postgres",
            &[("app.kubernetes.io/name", "postgresql")],
            "10.244.3.10",
        ),
        database_admin: Peer::plain(
            "postgres/pgadmin",
            "postgres",
            &[("app.kubernetes.io/name", "pgadmin")],
            "10.244.3.11",
        ),
        collector: Peer::external("collector 10.30.0.7", "10.30.0.7"),
        api_server: Peer::external("API server 172.18.0.2", "172.18.0.2"),
        prometheus: Peer::plain(
            "monitoring/prometheus",
            "monitoring",
            &[("app.kubernetes.io/name", "prometheus")],
            "10.244.4.10",
        ),
        operator: Peer::plain(
            "xin-system/operator",
            "xin-system",
            &[("app.kubernetes.io/name", "xin-operator")],
            "10.244.5.10",
        ),
        ingress_controller: Peer::plain(
            "ingress-nginx/controller",
            "ingress-nginx",
            &[("app.kubernetes.io/name", "ingress-nginx")],
            "10.244.6.10",
        ),
        kube_dns: Peer::plain(
            "kube-system/coredns",
            "kube-system",
            &[("k8s-app", "kube-dns")],
            "10.244.0.10",
        ),
        intruder: Peer::plain(
            "default/intruder",
            "default",
            &[("app", "intruder")],
            "10.244.7.10",
        ),
        internet_client: Peer::external("internet 198.51.100.7", "198.51.100.7"),
        public: Peer::external("public 203.0.113.10", "203.0.113.10"),
        public_v6: Peer::external("public 2001:db8::10", "2001:db8::10"),
        metadata: Peer::external("metadata 169.254.169.254", "169.254.169.254"),
        metadata_v6: Peer::external("metadata fd00:ec2::254", "fd00:ec2::254"),
        private: Peer::external("private 10.0.0.8", "10.0.0.8"),
        a_on_premises: Peer::external("a's CRM 10.50.0.9", "10.50.0.9"),
    }
}

/// How a hardened install is configured: the database in-cluster by namespace and pod labels,
/// the collector and the API server by address.
fn config(extra: &[&str]) -> Config {
    let mut args = vec![
        "xin-operator",
        "--otel-exporter-endpoint=http://10.30.0.7:4318",
        "--netpol-database-namespace=postgres",
        "--netpol-database-pod-labels=app.kubernetes.io/name=postgresql",
        "--netpol-otel-collector-cidrs=10.30.0.0/24",
        "--netpol-api-server-cidrs=172.18.0.2/32",
    ];
    args.extend(extra);
    Config::parse_from(args)
}

fn tenants() -> (Tenant, Tenant) {
    (
        tenant(
            "a",
            "https://llm.a.example",
            json!([{"cidr": "10.50.0.0/24", "ports": [8443]}]),
        ),
        {
            // b also embeds, on a port of its own: its orchestrator and ingestion Job call it.
            let mut b = tenant("b", "http://llm.b.example:8000", json!([]));
            b.spec.embeddings = Some(
                serde_json::from_value(
                    json!({"endpoint": "http://embed.b.example:8081", "model": "e5"}),
                )
                .expect("a valid embeddings spec"),
            );
            b
        },
    )
}

fn tcp(from: &Peer, to: &Peer, port: i32, want: Verdict) -> Row {
    Row {
        from: from.clone(),
        to: to.clone(),
        port,
        protocol: "TCP",
        want,
    }
}

fn udp(from: &Peer, to: &Peer, port: i32, want: Verdict) -> Row {
    Row {
        protocol: "UDP",
        ..tcp(from, to, port, want)
    }
}

/// The design's table, for the default configuration (private destinations closed).
fn table(w: &World) -> Vec<Row> {
    let mut rows = vec![];
    for (t, other) in [(&w.a, &w.b), (&w.b, &w.a)] {
        // Only the tenant's own gateway reaches its orchestrator.
        rows.push(tcp(&t.gateway, &t.orchestrator, HTTP_PORT, Allowed));
        for p in [
            &other.gateway,
            &t.ingest,
            &t.automation,
            &t.stray,
            &w.ingress_controller,
            &w.internet_client,
            &w.intruder,
            &w.operator,
        ] {
            rows.push(tcp(p, &t.orchestrator, HTTP_PORT, Denied));
        }
        // The gateway is the public edge.
        rows.push(tcp(&w.ingress_controller, &t.gateway, HTTP_PORT, Allowed));
        rows.push(tcp(&w.internet_client, &t.gateway, HTTP_PORT, Allowed));
        rows.push(tcp(&w.internet_client, &t.gateway, 9102, Denied));
        // Nothing crosses tenants, on any workload port.
        for from in t.workloads().into_iter().chain([&t.stray]) {
            for to in other.workloads().into_iter().chain([&other.stray]) {
                rows.push(tcp(from, to, HTTP_PORT, Denied));
                for c in Component::ALL {
                    rows.push(tcp(from, to, c.metrics_port(), Denied));
                }
            }
        }
        for p in t.workloads() {
            rows.push(udp(p, &w.kube_dns, 53, Allowed));
            rows.push(tcp(p, &w.kube_dns, 53, Allowed));
            rows.push(tcp(p, &w.kube_dns, 8080, Denied));
            rows.push(tcp(p, &w.database, 5432, Allowed));
            rows.push(tcp(p, &w.database, 5433, Denied));
            rows.push(tcp(p, &w.database_admin, 5432, Denied));
            rows.push(tcp(p, &w.private, 5432, Denied));
            rows.push(tcp(p, &w.collector, 4317, Allowed));
            rows.push(tcp(p, &w.collector, 4318, Allowed));
            rows.push(tcp(p, &w.collector, 443, Denied));
            rows.push(tcp(p, &w.private, 443, Denied));
            rows.push(tcp(p, &w.metadata, 80, Denied));
            rows.push(tcp(p, &w.metadata, 443, Denied));
            rows.push(tcp(p, &w.metadata_v6, 80, Denied));
            rows.push(tcp(p, &w.public, 22, Denied));
            // Only the workers, which hold API rights, reach the API server.
            let worker = p.name.ends_with("/ingest") || p.name.ends_with("/automation");
            let api = if worker { Allowed } else { Denied };
            rows.push(tcp(p, &w.api_server, 6443, api));
            rows.push(tcp(p, &w.api_server, 443, api));
            rows.push(tcp(p, &w.api_server, 8080, Denied));
        }
        // Scraping: the monitoring and operator namespaces, on the metrics port only.
        for (p, c) in t.workloads().into_iter().zip([
            Component::Gateway,
            Component::Orchestrator,
            Component::Ingestion,
            Component::Automation,
        ]) {
            rows.push(tcp(&w.prometheus, p, c.metrics_port(), Allowed));
            rows.push(tcp(&w.operator, p, c.metrics_port(), Allowed));
            rows.push(tcp(&w.intruder, p, c.metrics_port(), Denied));
            rows.push(tcp(&w.ingress_controller, p, c.metrics_port(), Denied));
            rows.push(tcp(
                &w.prometheus,
                p,
                if c == Component::Gateway { 9101 } else { 9102 },
                Denied,
            ));
        }
        rows.push(tcp(&w.prometheus, &t.orchestrator, HTTP_PORT, Denied));
        // Public egress: each component on the ports it calls, IPv4 and IPv6.
        for (p, open, closed) in [
            (&t.gateway, vec![443], vec![80, 25, 8000]),
            (&t.ingest, vec![443, 80], vec![25, 587, 8000]),
            (&t.automation, vec![443, 80, 25, 465, 587], vec![8000, 5432]),
        ] {
            for port in open {
                rows.push(tcp(p, &w.public, port, Allowed));
                rows.push(tcp(p, &w.public_v6, port, Allowed));
                rows.push(tcp(p, &w.private, port, Denied));
            }
            for port in closed {
                rows.push(tcp(p, &w.public, port, Denied));
            }
        }
    }
    // The orchestrator calls its LLM on the port of the tenant's URL.
    rows.push(tcp(&w.a.orchestrator, &w.public, 443, Allowed));
    rows.push(tcp(&w.a.orchestrator, &w.public_v6, 443, Allowed));
    rows.push(tcp(&w.a.orchestrator, &w.public, 8000, Denied));
    rows.push(tcp(&w.a.orchestrator, &w.public, 587, Denied));
    rows.push(tcp(&w.b.orchestrator, &w.public, 8000, Allowed));
    rows.push(tcp(&w.b.orchestrator, &w.public, 443, Denied));
    // b's embeddings endpoint, on its own port, for its orchestrator and ingestion Job only.
    for (p, want) in [
        (&w.b.orchestrator, Allowed),
        (&w.b.ingest, Allowed),
        (&w.b.gateway, Denied),
        (&w.a.orchestrator, Denied),
        (&w.a.ingest, Denied),
    ] {
        rows.push(tcp(p, &w.public, 8081, want));
    }
    rows.push(tcp(&w.b.orchestrator, &w.private, 8081, Denied));
    // Tenant a's own destination, for all its components and none of b's.
    for p in w.a.workloads() {
        rows.push(tcp(p, &w.a_on_premises, 8443, Allowed));
        rows.push(tcp(p, &w.a_on_premises, 22, Denied));
    }
    for p in w.b.workloads() {
        rows.push(tcp(p, &w.a_on_premises, 8443, Denied));
    }
    // Denied only by the default deny: the pod no component policy selects.
    rows.extend(default_deny_rows(w));
    rows
}

/// The rows the default deny alone decides: a pod that is none of the components may neither
/// send nor receive anything.
fn default_deny_rows(w: &World) -> Vec<Row> {
    vec![
        tcp(&w.a.stray, &w.public, 443, Denied),
        tcp(&w.a.stray, &w.database, 5432, Denied),
        udp(&w.a.stray, &w.kube_dns, 53, Denied),
        tcp(&w.a.stray, &w.api_server, 6443, Denied),
        tcp(&w.intruder, &w.a.stray, HTTP_PORT, Denied),
        tcp(&w.internet_client, &w.a.stray, HTTP_PORT, Denied),
        tcp(&w.prometheus, &w.a.stray, 9101, Denied),
    ]
}

#[test]
fn the_engine_allows_exactly_the_paths_of_the_design() {
    let config = config(&[]);
    let (a, b) = tenants();
    let w = world(&config, &a, &b);
    let pa = build_tenant_network_policies(&a, "xin-a", &config);
    let pb = build_tenant_network_policies(&b, "xin-b", &config);
    let rows = table(&w);
    let got = judge(&[&pa, &pb], false, &rows);
    let wrong = mismatches(&rows, &got);
    println!(
        "{} verdicts of cyclonus, {} as expected",
        rows.len(),
        rows.len() - wrong.len()
    );
    assert!(
        wrong.is_empty(),
        "{} of {} rows differ:\n{}",
        wrong.len(),
        rows.len(),
        wrong.join("\n")
    );
}

#[test]
fn without_the_default_deny_the_stray_pod_opens_and_nothing_else_changes() {
    let config = config(&[]);
    let (a, b) = tenants();
    let w = world(&config, &a, &b);
    let pa = build_tenant_network_policies(&a, "xin-a", &config);
    let pb = build_tenant_network_policies(&b, "xin-b", &config);
    let rows = table(&w);
    // The same table judged without the default deny.
    let got = judge(&[&pa, &pb], true, &rows);
    let stray = |r: &Row| r.from.name.ends_with("/stray") || r.to.name.ends_with("/stray");
    let flips: Vec<String> = default_deny_rows(&w).iter().map(Row::label).collect();
    let mut wrong = vec![];
    for (r, (v, why)) in rows.iter().zip(&got) {
        let want = if flips.contains(&r.label()) {
            // The default deny alone closed it.
            Allowed
        } else if stray(r) && *v == Allowed {
            // The stray pod may open elsewhere too (another tenant's gateway port is public).
            Allowed
        } else {
            // Every component's policy stands on its own.
            r.want
        };
        if *v != want {
            wrong.push(format!(
                "{}: want {want:?}, engine says {v:?}\n{why}",
                r.label()
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} rows differ:\n{}",
        wrong.len(),
        rows.len(),
        wrong.join("\n")
    );
    assert_eq!(flips.len(), 7, "the default deny decides rows of its own");
}

#[test]
fn allowing_private_destinations_opens_them_but_never_metadata_or_other_tenants() {
    let config = config(&["--netpol-allow-private-destinations=true"]);
    let (a, b) = tenants();
    let w = world(&config, &a, &b);
    let pa = build_tenant_network_policies(&a, "xin-a", &config);
    let pb = build_tenant_network_policies(&b, "xin-b", &config);
    let mut rows = vec![
        tcp(&w.a.orchestrator, &w.private, 443, Allowed),
        tcp(&w.a.automation, &w.private, 587, Allowed),
        tcp(&w.a.gateway, &w.private, 80, Denied),
        tcp(&w.a.orchestrator, &w.metadata, 443, Denied),
        tcp(&w.a.ingest, &w.metadata, 80, Denied),
        tcp(&w.a.ingest, &w.metadata_v6, 80, Denied),
        tcp(&w.a.orchestrator, &w.public, 443, Allowed),
    ];
    // Pod addresses are private too: the public rules now reach pods on their ports (443,
    // 80, SMTP), but no workload listens there, and every workload port stays closed.
    for from in w.a.workloads() {
        for to in w.b.workloads() {
            rows.push(tcp(from, to, HTTP_PORT, Denied));
            for c in Component::ALL {
                rows.push(tcp(from, to, c.metrics_port(), Denied));
            }
        }
        rows.push(tcp(from, &w.b.orchestrator, HTTP_PORT, Denied));
    }
    let got = judge(&[&pa, &pb], false, &rows);
    let wrong = mismatches(&rows, &got);
    assert!(
        wrong.is_empty(),
        "{} of {} rows differ:\n{}",
        wrong.len(),
        rows.len(),
        wrong.join("\n")
    );
}

#[test]
fn a_default_install_reaches_its_endpoints_in_the_private_networks_on_their_ports_only() {
    // No endpoint configured: the database, collector and API server are looked for in the
    // private networks, on their ports.
    let config = Config::parse_from(["xin-operator", "--otel-exporter-endpoint=http://otel:4318"]);
    let (a, b) = tenants();
    let w = world(&config, &a, &b);
    let pa = build_tenant_network_policies(&a, "xin-a", &config);
    let pb = build_tenant_network_policies(&b, "xin-b", &config);
    let vm_db = Peer::external("database VM 192.168.7.20", "192.168.7.20");
    let rows = vec![
        tcp(&w.a.gateway, &w.database, 5432, Allowed),
        tcp(&w.a.gateway, &vm_db, 5432, Allowed),
        tcp(&w.a.gateway, &vm_db, 22, Denied),
        tcp(&w.a.orchestrator, &w.collector, 4317, Allowed),
        tcp(&w.a.ingest, &w.api_server, 6443, Allowed),
        tcp(&w.a.orchestrator, &w.api_server, 6443, Denied),
        tcp(&w.a.gateway, &w.public, 5432, Denied),
        tcp(&w.a.gateway, &w.metadata, 5432, Denied),
        // Monitoring is the chart's default namespace.
        tcp(&w.prometheus, &w.a.orchestrator, 9101, Allowed),
        // Still nothing across tenants: b's pods listen on none of these ports.
        tcp(&w.a.ingest, &w.b.orchestrator, HTTP_PORT, Denied),
        tcp(&w.a.gateway, &w.b.gateway, HTTP_PORT, Denied),
    ];
    let got = judge(&[&pa, &pb], false, &rows);
    let wrong = mismatches(&rows, &got);
    assert!(
        wrong.is_empty(),
        "{} of {} rows differ:\n{}",
        wrong.len(),
        rows.len(),
        wrong.join("\n")
    );
}
