//! `make bench-operator`: N tenants (XIN_BENCH_TENANTS, default 100), each with 2 channels,
//! 1 automation rule and 1 ingestion job, against the local control plane.
//!
//! - operator: apply the tenants' inputs (Secrets, ConfigMap, custom resources) and time until
//!   every object is Ready (and every IngestionJob Complete, or awaiting the report of a worker
//!   the fake node never runs);
//! - baseline, same run: apply the same child objects (built by the operator's own builders)
//!   directly with server-side apply, no operator, and time until their Deployments are
//!   available and Jobs complete.
//!
//! Prints the ratio, the operator's peak RSS and CPU seconds, write requests per tenant and
//! writes during 60 s idle. Figures only, no pass/fail.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::Discovery;
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use xin_api::channel::Channel;
use xin_api::routes::{ChannelRoute, Credentials, Routes, WebhookKey};
use xin_api::tenant::Tenant;
use xin_operator::builders::gateway::webhook_path;
use xin_operator::builders::ingestion::build_ingestion_job;
use xin_operator::config::Config;
use xin_operator::controllers::tenant::children::{TenantChildren, build_tenant_children};
use xin_operator::controllers::tenant::resolve::WorkloadInputs;
use xin_operator::controllers::tenant::validate::ValidatedTenant;

const CONCURRENCY: usize = 16;

/// The bench's tenants bring their own database (one, shared, migrated once), so N tenants do
/// not mean N databases: the runtime URL and the owner URL.
static DATABASE: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();

async fn shared_database() -> (String, String) {
    let t = xin_store::TestDatabase::new().await;
    let owner = t
        .admin
        .owner_login(&t.names, &xin_store::provision::new_password())
        .await
        .unwrap();
    (t.url, owner)
}

fn inputs(ns: &str, tenant: &str) -> Vec<Value> {
    let secret = |name: &str, data: Value| json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns}, "stringData": data});
    let (url, owner) = DATABASE.get().expect("the bench's database").clone();
    vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "annotations": {"xin.dev/adopt": tenant}}}),
        secret("db", json!({"url": url, "ownerUrl": owner})),
        secret("tg", json!({"token": "1:abc"})),
        secret("web", json!({"identity": "s3cret"})),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "faq", "namespace": ns}, "data": {"a.md": "# A\nanswer"}}),
        json!({"apiVersion": "xin.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": tenant},
               "spec": {"displayName": tenant, "database": {"urlSecretRef": {"name": "db", "key": "url"}, "ownerUrlSecretRef": {"name": "db", "key": "ownerUrl"}}, "deletionPolicy": "Delete"}}),
        json!({"apiVersion": "xin.dev/v1alpha1", "kind": "Channel", "metadata": {"name": "bot", "namespace": ns},
               "spec": {"type": "telegram", "displayName": "bot", "telegram": {"botTokenSecretRef": {"name": "tg", "key": "token"}}}}),
        json!({"apiVersion": "xin.dev/v1alpha1", "kind": "Channel", "metadata": {"name": "web", "namespace": ns},
               "spec": {"type": "web", "displayName": "web", "web": {"allowedOrigins": ["https://a.example"], "identitySecretRef": {"name": "web", "key": "identity"}}}}),
        json!({"apiVersion": "xin.dev/v1alpha1", "kind": "AutomationRule", "metadata": {"name": "digest", "namespace": ns},
               "spec": {"trigger": {"schedule": {"cron": "0 9 * * 1-5"}}, "action": {"webhook": {"url": "https://h.example/x"}}}}),
        json!({"apiVersion": "xin.dev/v1alpha1", "kind": "IngestionJob", "metadata": {"name": "faq", "namespace": ns},
               "spec": {"source": {"configMap": {"name": "faq"}}}}),
    ]
}

/// The children the operator makes for one such tenant, built by its own builders, without
/// owner references (no owner exists in the baseline).
fn children(tenant_name: &str, ns: &str, cfg: &Config) -> Vec<Value> {
    let mut t: Tenant = serde_json::from_value(inputs(ns, tenant_name)[5].clone()).unwrap();
    t.metadata.uid = Some("baseline".into());
    let ch = |v: Value| -> Channel {
        let mut c: Channel = serde_json::from_value(v).unwrap();
        c.metadata.uid = Some("baseline".into());
        c
    };
    let input = inputs(ns, tenant_name);
    let channels = [ch(input[6].clone()), ch(input[7].clone())];
    let mut ij: xin_api::IngestionJob = serde_json::from_value(input[9].clone()).unwrap();
    ij.metadata.uid = Some("baseline".into());
    let key = |c: &str| WebhookKey {
        key: format!("key-of-{c}"),
        expires_at: None,
    };
    let routes = Routes {
        tenant: tenant_name.into(),
        channels: channels
            .iter()
            .map(|c| ChannelRoute {
                name: c.name_any(),
                type_: c.spec.type_,
                path: webhook_path(&c.name_any()),
                suspended: false,
                max_body_bytes: c.spec.max_body_bytes,
                requests_per_second: 20,
                burst: 40,
                keys: vec![key(&c.name_any())],
                credentials: Credentials::default(),
                allowed_origins: vec![],
                phone_number_id: None,
                page_id: None,
                legacy_identity_tokens: false,
                anonymous_visitors: false,
                display_name: None,
                theme: None,
            })
            .collect(),
    };
    let webhook_secret = |c: &Channel| Secret {
        metadata: kube::core::ObjectMeta {
            name: Some(format!("{}-webhook", c.name_any())),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "current".into(),
            ByteString(b"k".to_vec()),
        )])),
        ..Secret::default()
    };
    // Exactly the children the operator builds, from its own pure builder.
    let validated = ValidatedTenant {
        tenant: t.clone(),
        namespace: ns.into(),
        channels: channels.len() as i32,
        rules: 1,
        rule_secrets: vec![],
        workloads: Ok(WorkloadInputs {
            db_url: b"postgres://x:y@db:5432/x".to_vec(),
            database_plan: xin_operator::controllers::tenant::database::DatabasePlan::External {
                runtime_url: String::new(),
                owner_url: String::new(),
            },
            database: None,
            llm_key: vec![],
            embedding_key: vec![],
            signing_key: b"signing-key".to_vec(),
            routes,
            live_channels: channels.to_vec(),
            gateway_waits: false,
        }),
    };
    let TenantChildren {
        namespace: _,
        guard_rails,
        workloads,
    } = build_tenant_children(&validated, cfg).unwrap();
    let mut objs: Vec<Value> = Vec::new();
    let mut push = |v: Value| objs.push(v);
    push(serde_json::to_value(&guard_rails.quota).unwrap());
    push(serde_json::to_value(&guard_rails.limits).unwrap());
    let np = &guard_rails.network_policies;
    for p in [
        &np.default_deny,
        &np.gateway,
        &np.orchestrator,
        &np.ingestion,
        &np.automation,
    ] {
        push(serde_json::to_value(p).unwrap());
    }
    let lists = [
        serde_json::to_value(&guard_rails.service_accounts).unwrap(),
        serde_json::to_value(&guard_rails.roles).unwrap(),
        serde_json::to_value(&guard_rails.role_bindings).unwrap(),
    ];
    let w = workloads.expect("inputs given");
    let more = [
        serde_json::to_value(&w.secrets).unwrap(),
        serde_json::to_value(&w.deployments).unwrap(),
        serde_json::to_value(&w.services).unwrap(),
        serde_json::to_value(&w.pdbs).unwrap(),
        serde_json::to_value(&w.hpas).unwrap(),
        serde_json::to_value(&w.ingresses).unwrap(),
    ];
    for l in lists.into_iter().chain(more) {
        for o in l.as_array().unwrap() {
            push(o.clone());
        }
    }
    push(serde_json::to_value(webhook_secret(&channels[0])).unwrap());
    push(serde_json::to_value(webhook_secret(&channels[1])).unwrap());
    push(serde_json::to_value(build_ingestion_job(&ij, &t, cfg).unwrap()).unwrap());
    for o in &mut objs {
        if let Some(m) = o["metadata"].as_object_mut() {
            m.remove("ownerReferences");
        }
    }
    objs
}

/// Applies Namespaces first, then everything else, `CONCURRENCY` requests at a time.
async fn apply_all(client: &Client, discovery: &Discovery, objs: Vec<Value>) {
    let (namespaces, rest): (Vec<Value>, Vec<Value>) =
        objs.into_iter().partition(|o| o["kind"] == "Namespace");
    apply_concurrently(client, discovery, namespaces).await;
    apply_concurrently(client, discovery, rest).await;
}

async fn apply_concurrently(client: &Client, discovery: &Discovery, objs: Vec<Value>) {
    stream::iter(objs)
        .map(|o| {
            let client = client.clone();
            let (ar, caps) = {
                let (group, version) = o["apiVersion"]
                    .as_str()
                    .unwrap()
                    .rsplit_once('/')
                    .map(|(g, v)| (g.to_string(), v.to_string()))
                    .unwrap_or(("".into(), o["apiVersion"].as_str().unwrap().into()));
                let gvk = GroupVersionKind::gvk(&group, &version, o["kind"].as_str().unwrap());
                discovery.resolve_gvk(&gvk).expect("known kind")
            };
            async move {
                let name = o["metadata"]["name"].as_str().unwrap().to_string();
                let api: Api<DynamicObject> =
                    match (caps.scope, o["metadata"]["namespace"].as_str()) {
                        (kube::discovery::Scope::Namespaced, Some(ns)) => {
                            Api::namespaced_with(client, ns, &ar)
                        }
                        _ => Api::all_with(client, &ar),
                    };
                api.patch(
                    &name,
                    &PatchParams::apply("xin-bench").force(),
                    &Patch::Apply(&o),
                )
                .await
                .map(|_| ())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await
        .expect("apply");
}

fn ready(o: &DynamicObject, cond: &str) -> bool {
    o.data["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == cond && c["status"] == "True")
}

async fn wait_operator(client: &Client, prefix: &str, n: usize) {
    let gvk = |k: &str| ApiResource::from_gvk(&GroupVersionKind::gvk("xin.dev", "v1alpha1", k));
    loop {
        let mut done = 0;
        for (kind, cond, per) in [
            ("Tenant", "Ready", 1),
            ("Channel", "Ready", 2),
            ("AutomationRule", "Ready", 1),
            ("IngestionJob", "Complete", 1),
        ] {
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &gvk(kind));
            let list = api.list(&ListParams::default()).await.unwrap();
            let ok = list
                .items
                .iter()
                .filter(|o| {
                    let mine = if kind == "Tenant" {
                        o.name_any().starts_with(prefix)
                    } else {
                        o.namespace()
                            .unwrap_or_default()
                            .starts_with(&format!("xin-{prefix}"))
                    };
                    // The fake node completes a Job's pod without running it, so no worker
                    // reports: for an IngestionJob the operator's part ends at
                    // AwaitingWorkerReport (its Job created, followed and finished).
                    let awaiting = kind == "IngestionJob"
                        && o.data["status"]["conditions"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|c| c["type"] == "Ready" && c["reason"] == "AwaitingWorkerReport");
                    mine && (ready(o, cond) || awaiting)
                })
                .count();
            if ok >= n * per {
                done += 1;
            }
        }
        if done == 4 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn wait_baseline(client: &Client, prefix: &str, n: usize) {
    loop {
        let deps = Api::<Deployment>::all(client.clone())
            .list(&ListParams::default())
            .await
            .unwrap();
        let avail = deps
            .items
            .iter()
            .filter(|d| d.namespace().unwrap_or_default().starts_with(prefix))
            .filter(|d| {
                d.status
                    .as_ref()
                    .and_then(|s| s.available_replicas)
                    .unwrap_or(0)
                    >= 1
            })
            .count();
        let jobs = Api::<Job>::all(client.clone())
            .list(&ListParams::default())
            .await
            .unwrap();
        let done = jobs
            .items
            .iter()
            .filter(|j| j.namespace().unwrap_or_default().starts_with(prefix))
            .filter(|j| j.status.as_ref().and_then(|s| s.succeeded).unwrap_or(0) >= 1)
            .count();
        if avail >= 3 * n && done >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn proc_stats(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm_kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = stat
        .rsplit_once(')')
        .map(|x| x.1)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (hwm_kb / 1024.0, ticks / 100.0)
}

fn metrics(addr: &str) -> String {
    let out = Command::new("curl")
        .args(["-fsS", &format!("http://{addr}/metrics")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The sum of the samples of `family` (leases excluded) whose line also contains `filter`.
fn sum(text: &str, family: &str, filter: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.starts_with(&format!("{family}{{"))
                && !l.contains("resource=\"leases\"")
                && l.contains(filter)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn writes(addr: &str) -> f64 {
    sum(&metrics(addr), "xin_operator_write_requests_total", "")
}

/// Write requests (leases excluded) by `verb resource`.
fn writes_by(addr: &str) -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    for l in metrics(addr).lines() {
        let Some(rest) = l.strip_prefix("xin_operator_write_requests_total{") else {
            continue;
        };
        let label = |name: &str| {
            rest.split(&format!("{name}=\""))
                .nth(1)
                .and_then(|v| v.split('"').next())
                .unwrap_or("?")
                .to_string()
        };
        let (verb, resource) = (label("verb"), label("resource"));
        if resource == "leases" {
            continue;
        }
        let v: f64 = l
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        *out.entry(format!("{verb} {resource}")).or_insert(0.0) += v;
    }
    out
}

/// Every request to the API server (leases excluded), and Tenant reconciles.
fn requests_and_tenant_reconciles(addr: &str) -> (f64, f64) {
    let m = metrics(addr);
    (
        sum(&m, "xin_operator_api_requests_total", ""),
        sum(&m, "xin_operator_reconciles_total", "kind=\"Tenant\""),
    )
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("XIN_BENCH_TENANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let client = Client::try_default()
        .await
        .expect("KUBECONFIG for the local control plane (make bench-operator sets it)");
    xin_e2e::operator::install_crds();
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let run = format!("{:x}", std::process::id());
    let cfg = Config::for_tests();
    DATABASE.set(shared_database().await).expect("set once");
    println!(
        "bench-operator: N = {n} tenants (2 channels, 1 rule, 1 ingestion job each), apply concurrency {CONCURRENCY}"
    );

    // Baseline first, so the operator's phase does not run beside the baseline's leftovers.
    let bprefix = format!("xin-bb{run}-");
    let base_objs: Vec<Value> = (0..n)
        .flat_map(|i| {
            let ns = format!("{bprefix}{i}");
            let mut v: Vec<Value> = inputs(&ns, "unused").into_iter().take(5).collect();
            v.extend(children(&format!("bb{run}-{i}"), &ns, &cfg));
            v
        })
        .collect();
    let base_count = base_objs.len();
    let t0 = Instant::now();
    apply_all(&client, &discovery, base_objs).await;
    let base_apply = t0.elapsed();
    wait_baseline(&client, &bprefix, n).await;
    let base = t0.elapsed();
    println!(
        "baseline (direct server-side apply of the same {base_count} objects): applied in {:.1} s, all available in {:.1} s",
        base_apply.as_secs_f64(),
        base.as_secs_f64()
    );

    // The operator.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_xin-operator"))
        .env("XIN_METRICS_ADDR", &addr)
        .env("XIN_LEADER_ELECT", "false")
        .env("XIN_RESYNC_SECONDS", "30")
        .env("XIN_EXIT_ON_STDIN_CLOSE", "true")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    while Command::new("curl")
        .args(["-fsS", &format!("http://{addr}/readyz")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| !s.success())
        .unwrap_or(true)
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let w0 = writes(&addr);
    let by0 = writes_by(&addr);
    let (_, cpu0) = proc_stats(pid);
    let oprefix = format!("bo{run}-");
    let op_objs: Vec<Value> = (0..n)
        .flat_map(|i| inputs(&format!("xin-{oprefix}{i}"), &format!("{oprefix}{i}")))
        .collect();
    let t1 = Instant::now();
    apply_all(&client, &discovery, op_objs).await;
    wait_operator(&client, &oprefix, n).await;
    let op = t1.elapsed();
    let w1 = writes(&addr);
    let by1 = writes_by(&addr);
    let (rss_peak, cpu1) = proc_stats(pid);
    println!("operator: all Ready in {:.1} s", op.as_secs_f64());
    let (r1, t1r) = requests_and_tenant_reconciles(&addr);
    tokio::time::sleep(Duration::from_secs(60)).await;
    let w2 = writes(&addr);
    let (r2, t2r) = requests_and_tenant_reconciles(&addr);
    let (rss_after, cpu2) = proc_stats(pid);

    println!();
    println!("| figure | value |");
    println!("| --- | --- |");
    println!("| tenants | {n} |");
    println!(
        "| operator: apply to all Ready | {:.1} s |",
        op.as_secs_f64()
    );
    println!(
        "| baseline: same children by direct SSA to all available | {:.1} s |",
        base.as_secs_f64()
    );
    println!(
        "| ratio operator / baseline | {:.2} |",
        op.as_secs_f64() / base.as_secs_f64()
    );
    println!("| operator peak RSS (VmHWM) | {rss_peak:.1} MiB (after idle {rss_after:.1} MiB) |");
    println!(
        "| operator CPU to converge | {:.1} s (idle 60 s: {:.2} s) |",
        cpu1 - cpu0,
        cpu2 - cpu1
    );
    // The floor writes each child once (server-side apply, no status).
    let floor_writes = (base_count - 5 * n) as f64 / n as f64;
    println!(
        "| write requests per tenant (leases excluded) | {:.1} (floor: {floor_writes:.0} children applied once; {:.2}×) |",
        (w1 - w0) / n as f64,
        (w1 - w0) / n as f64 / floor_writes
    );
    println!("| writes during 60 s idle | {} |", w2 - w1);
    let mut by: Vec<(String, f64)> = by1
        .iter()
        .map(|(k, v)| (k.clone(), v - by0.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect();
    by.sort_by(|a, b| b.1.total_cmp(&a.1));
    let by: Vec<String> = by
        .iter()
        .map(|(k, v)| format!("{k} {:.1}", v / n as f64))
        .collect();
    println!(
        "| writes per tenant by verb and resource | {} |",
        by.join(", ")
    );
    println!(
        "| requests during 60 s idle, per Tenant resync (reads included, leases excluded) | {:.2} ({} requests, {} Tenant reconciles) |",
        (r2 - r1) / (t2r - t1r).max(1.0),
        r2 - r1,
        t2r - t1r
    );

    // Clean up: the operator's tenants through their finalizer, the baseline namespaces directly.
    let tenants = Api::<Tenant>::all(client.clone());
    for i in 0..n {
        let _ = tenants
            .delete(&format!("{oprefix}{i}"), &DeleteParams::background())
            .await;
    }
    let nss = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone());
    for i in 0..n {
        let _ = nss
            .delete(&format!("{bprefix}{i}"), &DeleteParams::background())
            .await;
    }
    // Give the operator time to run the finalizers before it exits with this process.
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let left = tenants
            .list(&ListParams::default())
            .await
            .map(|l| {
                l.items
                    .iter()
                    .filter(|t| t.name_any().starts_with(&oprefix))
                    .count()
            })
            .unwrap_or(0);
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
}
