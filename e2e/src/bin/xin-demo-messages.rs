//! The end of `make demo`: runs both example tenants' gateways and orchestrators as local
//! processes with the configuration the operator rendered (see `xin_e2e::local` for the few
//! local overrides), each on the database the operator provisioned for it; runs each
//! tenant's example IngestionJob with the ingestion worker (as its Job is configured, with its
//! service account); then sends acme a signed web-widget
//! message and a Telegram update, and globex a signed WhatsApp message, and prints the answers
//! (each from its own tenant's knowledge) and the metrics; then runs acme's automation worker
//! (as its Deployment is configured, with its service account) on the example rules, their
//! receivers pointed at local stand-ins: the weekday digest run now (a signed webhook) and a
//! handoff asked in a web conversation (a CRM ticket), and shows the rules' status.
//!
//! Stand-ins, on loopback: the LLM (an OpenAI-compatible endpoint that answers with the
//! context sentence closest to the question) and the Telegram Bot API (prints what it gets).
//! Needs `KUBECONFIG` (the local control plane, with examples/ applied and Ready, the operator
//! provisioning databases on the local PostgreSQL).

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use xin_e2e::local::{
    Overrides, automation_env, gateway_env, orchestrator_env, orchestrator_post,
    service_account_kubeconfig, write_routes,
};
use xin_e2e::workload::{Answer, Recorded, StandIn, Workload, free_port};
use xin_e2e::{get_json, http, http_get};

fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() > 2)
        .map(str::to_lowercase)
        .collect()
}

/// The demo's LLM: answers with the body of the context chunk (the orchestrator's prompt lists
/// them after `Context:`, separated by blank lines) sharing most words with the question.
fn llm_answer(r: &Recorded) -> Answer {
    let v = r.json();
    let msgs = v["messages"].as_array().cloned().unwrap_or_default();
    let question = msgs
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_string();
    let system = msgs
        .iter()
        .find(|m| m["role"] == "system")
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_string();
    let context = system
        .split_once("Context:")
        .map(|x| x.1)
        .unwrap_or_default();
    let q = words(&question);
    let best = context
        .split("\n\n")
        .filter(|c| !c.trim().is_empty() && c.trim() != "(none)")
        .max_by_key(|c| {
            let w = words(c);
            q.iter().filter(|x| w.contains(x)).count()
        })
        .map(|c| {
            c.lines()
                .filter(|l| !l.starts_with('[') && !l.starts_with('#'))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|b| !b.trim().is_empty())
        .unwrap_or_else(|| {
            "I could not find that in our documents; a person will follow up.".into()
        });
    Answer::json(
        200,
        json!({"id": "demo", "object": "chat.completion", "model": v["model"],
               "choices": [{"index": 0, "finish_reason": "stop",
                            "message": {"role": "assistant", "content": best.split_whitespace().collect::<Vec<_>>().join(" ")}}]}),
    )
}

/// Runs the ingestion worker for every IngestionJob of the tenant's namespace with its Job's
/// configuration and service account, waits for the operator to report it `Succeeded`, and
/// checks that its status counts are what the tenant's database holds. Returns the jobs'
/// documents and chunks.
async fn ingest(tenant: &str, db: &str) -> Result<(i64, i64), String> {
    use xin_e2e::local::{IngestOverrides, run_ingestion};
    let ns = format!("xin-{tenant}");
    let list = get_json(&["ingestionjobs", "-n", &ns]).ok_or("cannot list IngestionJobs")?;
    let names: Vec<String> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i.pointer("/metadata/name").and_then(Value::as_str))
        .map(str::to_string)
        .collect();
    if names.is_empty() {
        return Err(format!("no IngestionJob in {ns}"));
    }
    let pool = xin_store::connect(db, 1).await?;
    let (mut documents, mut chunks) = (0, 0);
    for name in &names {
        let ij = get_json(&["ingestionjob", name, "-n", &ns]).ok_or("IngestionJob gone")?;
        let done = ij.pointer("/status/phase").and_then(Value::as_str) == Some("Succeeded");
        if !done {
            let run = run_ingestion(&ns, name, &IngestOverrides::default())?;
            if !run.success {
                return Err(format!("xin-ingest failed for {ns}/{name}:\n{}", run.log));
            }
        }
        let mut status = Value::Null;
        for _ in 0..120 {
            status =
                get_json(&["ingestionjob", name, "-n", &ns]).unwrap_or_default()["status"].clone();
            if status["phase"] == "Succeeded" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if status["phase"] != "Succeeded" {
            return Err(format!(
                "IngestionJob {ns}/{name} is not Succeeded: {status}"
            ));
        }
        let (d, c) = (
            status["documents"].as_i64().unwrap_or(-1),
            status["chunks"].as_i64().unwrap_or(-1),
        );
        documents += d;
        chunks += c;
        println!(
            "IngestionJob {name}: {d} documents, {c} chunks ({})",
            status
                .pointer("/worker/message")
                .and_then(Value::as_str)
                .unwrap_or_default()
        );
    }
    // The status counts are the store's (every chunk of these example jobs is tagged `faq`).
    let (d, c): (i64, i64) = sqlx::query_as(
        "SELECT count(DISTINCT document_id), count(*) FROM knowledge_chunks WHERE tags = ARRAY['faq']",
    )
    .fetch_one(&pool)
    .await
    .map_err(|e| e.to_string())?;
    if (d, c) != (documents, chunks) {
        return Err(format!(
            "{tenant}: the IngestionJobs report {documents} documents and {chunks} chunks, the database holds {d} and {c}"
        ));
    }
    Ok((documents, chunks))
}

fn metric_lines(addr: &str, prefixes: &[&str]) -> Vec<String> {
    http_get(addr, "/metrics")
        .map(|(_, b)| b)
        .unwrap_or_default()
        .lines()
        .filter(|l| prefixes.iter().any(|p| l.starts_with(p)))
        .map(str::to_string)
        .collect()
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// One tenant's gateway and orchestrator, started with what the operator rendered.
struct Stack {
    orch: Workload,
    gw: Workload,
    gw_addr: String,
    overrides: Overrides,
    routes: Value,
}

impl Stack {
    async fn start(
        tenant: &str,
        llm: &StandIn,
        telegram: &StandIn,
        meta: &StandIn,
    ) -> Result<Stack, String> {
        let ns = format!("xin-{tenant}");
        let rendered = xin_e2e::local::rendered_env(&ns, "xin-orchestrator")?;
        let db = rendered
            .iter()
            .find(|(k, _)| k == "DATABASE_URL")
            .map(|(_, v)| v.clone())
            .ok_or("the orchestrator has no DATABASE_URL")?;
        let database = db.rsplit('/').next().unwrap_or_default();
        println!(
            "\n=== {tenant}: the ingestion worker (xin-ingest), as its Job is configured, into the tenant's own database {database}"
        );
        let (documents, chunks) = ingest(tenant, &db).await?;
        println!(
            "{tenant}: {documents} documents in {chunks} chunks, as the IngestionJobs' status and the database both say"
        );
        let dir = std::env::temp_dir().join(format!("xin-demo-{tenant}-{}", std::process::id()));
        let o = Overrides {
            database_url: None,
            gateway_port: free_port(),
            gateway_metrics_port: free_port(),
            orchestrator_port: free_port(),
            orchestrator_metrics_port: free_port(),
            routes_file: write_routes(&ns, &dir)?,
            llm_endpoint: Some(llm.url()),
            embedding_endpoint: None,
            telegram_api_base: telegram.url(),
            meta_graph_api_base: format!("{}/v21.0", meta.url()),
        };
        let orch_addr = format!("127.0.0.1:{}", o.orchestrator_port);
        let gw_addr = format!("127.0.0.1:{}", o.gateway_port);
        let mut orch = Workload::start(
            "xin-orchestrator",
            &format!("demo-{tenant}-orchestrator"),
            &orchestrator_env(&ns, &o)?,
        );
        orch.wait_ready(&orch_addr, "/ready");
        let mut gw = Workload::start(
            "xin-gateway",
            &format!("demo-{tenant}-gateway"),
            &gateway_env(&ns, &o)?,
        );
        gw.wait_ready(&gw_addr, "/ready");
        println!(
            "xin-orchestrator on {orch_addr} and xin-gateway on {gw_addr}, configured as the operator rendered them"
        );
        println!("  logs: {} and {}", orch.log.display(), gw.log.display());
        let routes: Value =
            serde_json::from_slice(&std::fs::read(&o.routes_file).map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        Ok(Stack {
            orch,
            gw,
            gw_addr,
            overrides: o,
            routes,
        })
    }

    /// POSTs a provider webhook to the gateway and prints its answer.
    async fn webhook(
        &self,
        path: &'static str,
        headers: Vec<(&'static str, String)>,
        body: String,
    ) -> Result<(), String> {
        let gw = self.gw_addr.clone();
        let r = tokio::task::spawn_blocking(move || {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            http(&gw, "POST", path, &h, body.as_bytes())
        })
        .await
        .map_err(|e| e.to_string())?
        .ok_or("gateway unreachable")?;
        println!("    webhook answered {} {}", r.status, r.body.trim());
        Ok(())
    }

    /// The first call to `stand_in` whose path ends with `suffix`, within 30 s.
    async fn wait_for(&self, stand_in: &StandIn, suffix: &str) -> Result<Recorded, String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = stand_in
                .requests()
                .into_iter()
                .find(|r| r.path.ends_with(suffix))
            {
                return Ok(s);
            }
            if std::time::Instant::now() > deadline {
                return Err(format!(
                    "no {suffix} call within 30 s; gateway log: {}",
                    self.gw.log.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn channel(&self, name: &str) -> Result<Value, String> {
        self.routes["channels"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["name"] == name).cloned())
            .ok_or(format!("no channel {name} in the routes"))
    }

    fn metrics(&self, tenant: &str) {
        for l in metric_lines(
            &format!("127.0.0.1:{}", self.overrides.gateway_metrics_port),
            &["gateway_forwarded_messages_total", "http_requests_total"],
        ) {
            println!("  {tenant} gateway       {l}");
        }
        for l in metric_lines(
            &format!("127.0.0.1:{}", self.overrides.orchestrator_metrics_port),
            &["orchestrator_answers_total"],
        ) {
            println!("  {tenant} orchestrator  {l}");
        }
    }
}

async fn run() -> Result<(), String> {
    let llm = StandIn::start(llm_answer);
    let telegram =
        StandIn::start(|_| Answer::json(200, json!({"ok": true, "result": {"message_id": 1}})));
    let meta = StandIn::start(|_| Answer::json(200, json!({"messages": [{"id": "wamid.demo"}]})));
    let mut acme = Stack::start("acme", &llm, &telegram, &meta).await?;
    let acme_answers = acme_messages(&acme, &telegram).await?;
    let mut automation = automations(&acme).await?;
    let mut globex = Stack::start("globex", &llm, &telegram, &meta).await?;
    let globex_answer = globex_message(&globex, &meta).await?;
    // Each tenant answers from its own knowledge, and from nothing of the other's.
    for (tenant, answer, own, other) in [
        ("acme", &acme_answers, "30 days", "warranty"),
        ("globex", &globex_answer, "two-year warranty", "30 days"),
    ] {
        if !answer.contains(own) || answer.contains(other) {
            return Err(format!(
                "{tenant}'s answers do not come from its own knowledge (want {own:?}, never {other:?}): {answer}"
            ));
        }
    }
    println!("\neach tenant answered from its own knowledge");

    println!("\n--- metrics");
    acme.metrics("acme");
    globex.metrics("globex");
    // The edge makes its own correlation id; the client's X-Request-ID is only logged beside it.
    let edge_id = acme
        .gw
        .logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| {
            v.to_string()
                .contains("\"client_request_id\":\"demo-telegram-1\"")
        })
        .and_then(|v| {
            v.pointer("/span/correlation_id")
                .or(v.get("correlation_id"))
                .and_then(|c| c.as_str())
                .map(str::to_string)
        })
        .ok_or("no gateway log line records the client's X-Request-ID demo-telegram-1")?;
    let corr = acme
        .orch
        .logs()
        .lines()
        .filter(|l| l.contains(&edge_id))
        .count();
    println!(
        "  the gateway's correlation id {edge_id} (the client's X-Request-ID demo-telegram-1 logged as client_request_id): {corr} acme orchestrator log lines carry it"
    );
    if let Ok(hold) = std::env::var("XIN_DEMO_HOLD") {
        let workloads = [
            ("acme", "gateway", &acme.gw, &acme.overrides),
            ("acme", "orchestrator", &acme.orch, &acme.overrides),
            ("globex", "gateway", &globex.gw, &globex.overrides),
            ("globex", "orchestrator", &globex.orch, &globex.overrides),
        ];
        let mut targets: Vec<Value> = workloads
            .iter()
            .map(|(tenant, component, w, o)| {
                let (metrics, http) = if *component == "gateway" {
                    (o.gateway_metrics_port, o.gateway_port)
                } else {
                    (o.orchestrator_metrics_port, o.orchestrator_port)
                };
                json!({"tenant": tenant, "component": component, "metrics": format!("127.0.0.1:{metrics}"),
                       "http": format!("127.0.0.1:{http}"), "pid": w.pid()})
            })
            .collect();
        targets.push(json!({"tenant": "acme", "component": "automation", "metrics": automation.metrics, "pid": automation.worker.pid()}));
        // For Prometheus (`make demo-observability`): an ingestion run whose metrics stay up
        // (a Job's are served only while it runs).
        let mut ingest = if std::env::var("XIN_DEMO_INGEST_METRICS").as_deref() == Ok("1") {
            let i = lingering_ingestion("xin-acme", "faq-2026-11")?;
            targets.push(json!({"tenant": "acme", "component": "ingest", "metrics": i.metrics, "pid": i.worker.pid()}));
            Some(i)
        } else {
            None
        };
        // `make demo`: a page with acme's widget (a fixed port: its origin is in examples/).
        let pages = if std::env::var("XIN_DEMO_WIDGET_PAGE").as_deref() == Ok("1") {
            Some(widget_pages(&acme)?)
        } else {
            None
        };
        let mut held_state = json!({"targets": targets});
        if let Some(p) = &pages {
            held_state["widget_page"] = json!(format!("{}/", p.origin));
        }
        let held = hold_until_released(&hold, &held_state).await;
        drop(pages);
        if let Some(ingest) = ingest.as_mut() {
            ingest.worker.terminate();
            let _ = std::fs::remove_dir_all(&ingest.dir);
            let _ = xin_e2e::kubectl(&[
                "delete",
                "ingestionjob",
                &ingest.name,
                "-n",
                "xin-acme",
                "--ignore-not-found",
            ]);
        }
        held?;
    }
    automation.worker.terminate();
    let _ = std::fs::remove_dir_all(&automation.dir);
    for s in [&mut acme, &mut globex] {
        s.gw.terminate();
        s.orch.terminate();
    }
    Ok(())
}

/// A copy of IngestionJob `ns/name` (`<name>-metrics`), its worker run as its Job would be
/// but serving its metrics after the run (`INGEST_METRICS_LINGER_SECONDS`) until stopped. A
/// copy left by an earlier run is deleted first; on any error the copy and the scratch
/// directory are removed again.
fn lingering_ingestion(ns: &str, name: &str) -> Result<Automation, String> {
    let copy = format!("{name}-metrics");
    let dir = std::env::temp_dir().join(format!("xin-demo-ingest-{}", std::process::id()));
    let delete = || {
        let _ = xin_e2e::kubectl(&[
            "delete",
            "ingestionjob",
            &copy,
            "-n",
            ns,
            "--ignore-not-found",
            "--wait=true",
        ]);
    };
    delete();
    let started = start_lingering_ingestion(ns, name, &copy, &dir);
    if started.is_err() {
        delete();
        let _ = std::fs::remove_dir_all(&dir);
    }
    started
}

fn start_lingering_ingestion(
    ns: &str,
    name: &str,
    copy: &str,
    dir: &std::path::Path,
) -> Result<Automation, String> {
    let mut ij = get_json(&["ingestionjob", name, "-n", ns]).ok_or("IngestionJob gone")?;
    ij["metadata"] = json!({"name": copy, "namespace": ns});
    ij.as_object_mut().map(|o| o.remove("status"));
    let applied = xin_e2e::kubectl_stdin(&["apply", "-f", "-"], Some(&ij.to_string()));
    if !applied.ok {
        return Err(format!("kubectl apply {copy}: {}", applied.stderr));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while get_json(&["ingestionjob", copy, "-n", ns])
        .and_then(|v| v.pointer("/status/jobName").cloned())
        .is_none()
    {
        if std::time::Instant::now() > deadline {
            return Err(format!("IngestionJob {ns}/{copy} got no Job within 60 s"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut env = xin_e2e::local::ingest_env(ns, copy, dir, &Default::default())?;
    let kubeconfig = service_account_kubeconfig(ns, "xin-ingest", dir)?;
    env.push(("KUBECONFIG".into(), kubeconfig.display().to_string()));
    env.push(("INGEST_METRICS_LINGER_SECONDS".into(), "3600".into()));
    let port = env
        .iter()
        .find(|(k, _)| k == "INGEST_METRICS_PORT")
        .map(|(_, v)| v.clone())
        .ok_or("no INGEST_METRICS_PORT")?;
    let worker = Workload::start("xin-ingest", &format!("demo-{copy}"), &env);
    let metrics = format!("127.0.0.1:{port}");
    println!("xin-ingest for IngestionJob {ns}/{copy}, its metrics on {metrics} after the run");
    Ok(Automation {
        worker,
        metrics,
        dir: dir.to_path_buf(),
        name: copy.to_string(),
    })
}

/// The origin of the demo's widget page: one of acme's allowed origins in examples/.
const WIDGET_PAGE_PORT: u16 = 18090;

/// A made-up shop's pages with acme's widget on them (`/` in English, `/fa` in Persian), on
/// `http://localhost:18090`, the snippet pointing at acme's gateway on this machine (the
/// Channel's status gives the same snippet for its public host).
fn widget_pages(acme: &Stack) -> Result<xin_e2e::browser::Pages, String> {
    use xin_e2e::browser::{Page, Pages, widget_page};
    let snippet = xin_api::widget::snippet(&format!("http://{}", acme.gw_addr), "web");
    let fa = snippet.replace(
        " async>",
        " data-locale=\"fa\" data-title=\"راهنمای اکمه\" async>",
    );
    let pages = Pages::serve(
        &format!("127.0.0.1:{WIDGET_PAGE_PORT}"),
        "localhost",
        vec![
            Page {
                path: "/".into(),
                html: widget_page("en", "Acme shop (demo)", "Ask the chat at the bottom right about shipping, returns or support hours.", &snippet),
                csp: None,
            },
            Page {
                path: "/fa".into(),
                html: widget_page("fa", "فروشگاه اکمه (نمونه)", "از گفتگوی پایین صفحه دربارهٔ ارسال، مرجوعی یا ساعات پشتیبانی بپرسید.", &fa),
                csp: None,
            },
        ],
    )
    .map_err(|e| {
        format!("cannot serve the widget page on 127.0.0.1:{WIDGET_PAGE_PORT}: {e} (another demo still running? make cluster-down stops it)")
    })?;
    println!(
        "\n--- the web widget: {}/ (English) and {}/fa (Persian), acme's widget answering from its knowledge",
        pages.origin, pages.origin
    );
    Ok(pages)
}

/// With `XIN_DEMO_HOLD=<file>` (`make demo`; with `XIN_DEMO_WIDGET_PAGE=1` also the widget's
/// page, with `XIN_DEMO_INGEST_METRICS=1` also an ingestion run's metrics, for
/// `make demo-observability`): writes the running workloads (tenant, component, metrics
/// address, the gateways' and orchestrators' HTTP address, pid) as JSON to `<file>`, then keeps them running until the file is removed or
/// the process gets SIGTERM or SIGINT (a Prometheus can scrape them meanwhile, and traces
/// keep flowing).
async fn hold_until_released(path: &str, targets: &Value) -> Result<(), String> {
    let tmp = format!("{path}.tmp");
    std::fs::write(&tmp, targets.to_string())
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("XIN_DEMO_HOLD: cannot write {path}: {e}"))?;
    println!("
the workloads keep running (their metrics addresses are in {path}) until it is removed or this process is stopped");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| e.to_string())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tokio::time::sleep(Duration::from_millis(300)) => {
                if !std::path::Path::new(path).exists() {
                    break;
                }
            }
        }
    }
    let _ = std::fs::remove_file(path);
    Ok(())
}

/// globex: a WhatsApp message signed with the app secret, as Meta sends it; the answer goes
/// back through the Graph API stand-in.
/// Returns what globex sent back through the Graph API.
async fn globex_message(stack: &Stack, meta: &StandIn) -> Result<String, String> {
    let wa = stack.channel("whatsapp")?;
    let secret = wa["credentials"]["appSecret"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let phone = wa["credentials"]["phoneNumberId"]
        .as_str()
        .or(wa["phoneNumberId"].as_str())
        .unwrap_or("106540352242922")
        .to_string();
    let question = "How long is the warranty on my appliance?";
    println!("\n--- WhatsApp message from +15550001 to globex: {question}");
    let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages",
        "value": {"messaging_product": "whatsapp", "metadata": {"phone_number_id": phone},
                  "messages": [{"from": "15550001", "id": format!("wamid.demo-{}", std::process::id()),
                                "timestamp": "1764504000", "type": "text", "text": {"body": question}}]}}]}]})
    .to_string();
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).map_err(|e| e.to_string())?;
    mac.update(body.as_bytes());
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    stack
        .webhook(
            "/webhooks/whatsapp",
            vec![
                ("X-Hub-Signature-256", signature),
                ("X-Request-ID", "demo-whatsapp-1".into()),
            ],
            body,
        )
        .await?;
    let sent = stack.wait_for(meta, "/messages").await?;
    println!("    Graph API stand-in got: {}", sent.json());
    Ok(sent.json()["text"]["body"].to_string())
}

/// acme: a web-widget question and a Telegram update.
/// Returns acme's answers: the widget's, then the one sent back through Telegram.
/// acme's example AutomationRules run by its automation worker, their receivers (made-up
/// hosts in examples/) pointed at local stand-ins; the demo's operator allows loopback
/// destinations (`XIN_OUTBOUND_ALLOW=127.0.0.1/32` in e2e/demo.sh).
/// A worker still running, with its metrics address, scratch directory and object's name.
struct Automation {
    worker: Workload,
    metrics: String,
    dir: std::path::PathBuf,
    name: String,
}

async fn automations(acme: &Stack) -> Result<Automation, String> {
    let ns = "xin-acme";
    let hook = StandIn::start(|_| Answer::json(200, json!({"ok": true})));
    let crm = StandIn::start(|_| Answer::json(201, json!({"ticket": "ACME-1"})));
    println!("\n=== acme: the automation worker (xin-automation), as its Deployment is configured");
    println!(
        "    the example rules' receivers pointed at stand-ins: webhook {} and CRM {}",
        hook.url(),
        crm.url()
    );
    for (rule, patch) in [
        (
            "weekday-digest",
            json!({"spec": {"action": {"webhook": {"url": format!("{}/digest", hook.url())}}}}),
        ),
        (
            "handoff-to-crm",
            json!({"spec": {"action": {"crm": {"endpoint": format!("{}/api/tickets", crm.url())}}}}),
        ),
    ] {
        let out = xin_e2e::kubectl(&[
            "patch",
            "automationrule",
            rule,
            "-n",
            ns,
            "--type=merge",
            "-p",
            &patch.to_string(),
        ]);
        if !out.ok {
            return Err(format!(
                "kubectl patch automationrule {rule}: {}",
                out.stderr
            ));
        }
        let ready = xin_e2e::kubectl(&[
            "wait",
            "--for=condition=Ready",
            &format!("automationrule/{rule}"),
            "-n",
            ns,
            "--timeout=60s",
        ]);
        if !ready.ok {
            return Err(format!("automationrule {rule} not Ready: {}", ready.stderr));
        }
    }
    let a = automation_env(ns, None, Some("127.0.0.1/32"))?;
    let dir = std::env::temp_dir().join(format!("xin-demo-automation-{}", std::process::id()));
    let kubeconfig = service_account_kubeconfig(ns, "xin-automation", &dir)?;
    let mut env = a.env;
    env.push(("KUBECONFIG".into(), kubeconfig.display().to_string()));
    let mut worker = Workload::start("xin-automation", "demo-acme-automation", &env);
    worker.wait_ready(&a.http, "/ready");
    println!(
        "xin-automation on {} (service account xin-automation); log: {}",
        a.http,
        worker.log.display()
    );

    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
        .to_string();
    println!("\n--- kubectl annotate automationrule weekday-digest xin.dev/run-now={stamp}");
    let out = xin_e2e::kubectl(&[
        "annotate",
        "automationrule",
        "weekday-digest",
        "-n",
        ns,
        &format!("xin.dev/run-now={stamp}"),
        "--overwrite",
    ]);
    if !out.ok {
        return Err(format!("kubectl annotate: {}", out.stderr));
    }
    let digest = acme.wait_for(&hook, "/digest").await?;
    println!(
        "    webhook stand-in got POST /digest, Idempotency-Key {}, X-Xin-Signature-256 {}",
        digest.header("idempotency-key").unwrap_or("?"),
        digest.header("x-xin-signature-256").unwrap_or("?")
    );

    let key = xin_e2e::local::secret_value(ns, "xin-tenant-signing", "key")?;
    let addr = format!("127.0.0.1:{}", acme.overrides.orchestrator_port);
    let text = "This is taking too long, can I talk to a human?";
    println!("\n--- web conversation, visitor-7 writes: {text}");
    let (a2, k2) = (addr.clone(), key.clone());
    let conv = tokio::task::spawn_blocking(move || {
        orchestrator_post(
            &a2,
            &k2,
            "/v1/conversations",
            &json!({"channel": "web", "external_user": "visitor-7"}),
        )
    })
    .await
    .map_err(|e| e.to_string())?;
    let id = conv["id"].as_str().unwrap_or_default().to_string();
    tokio::task::spawn_blocking(move || {
        orchestrator_post(
            &addr,
            &key,
            &format!("/v1/conversations/{id}/messages"),
            &json!({"text": text}),
        )
    })
    .await
    .map_err(|e| e.to_string())?;
    let ticket = acme.wait_for(&crm, "/api/tickets").await?;
    println!(
        "    CRM stand-in got POST /api/tickets: {}",
        String::from_utf8_lossy(&ticket.body)
    );

    // The worker reports within a few seconds; show the rules once both runs are in.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let done = ["weekday-digest", "handoff-to-crm"].iter().all(|r| {
            get_json(&["automationrule", r, "-n", ns])
                .is_some_and(|o| o["status"]["succeeded"].as_i64() >= Some(1))
        });
        if done {
            break;
        }
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "the rules' status shows no run within 30 s; worker log: {}",
                worker.log.display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let table = xin_e2e::kubectl(&[
        "get",
        "automationrules",
        "-n",
        ns,
        "-o",
        "custom-columns=RULE:.metadata.name,SUCCEEDED:.status.succeeded,FAILED:.status.failed,DEAD:.status.deadLettered,QUEUE:.status.queueDepth,LAST RUN:.status.lastRunTime,NEXT RUN:.status.nextRunTime",
    ]);
    println!(
        "\n$ kubectl get automationrules -n {ns} -o custom-columns=...\n{}",
        table.stdout.trim_end()
    );
    Ok(Automation {
        worker,
        metrics: a.metrics,
        dir,
        name: "xin-automation".into(),
    })
}

async fn acme_messages(stack: &Stack, telegram: &StandIn) -> Result<String, String> {
    let gw_addr = stack.gw_addr.clone();
    let channel = |name: &str| stack.channel(name);

    // The web widget, as the site's page would use it.
    let web = channel("web")?;
    let origin = web["allowedOrigins"][0]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let secret = web["credentials"]["identitySecret"]
        .as_str()
        .unwrap_or_default();
    // The site's server signs the visitor for this channel until an expiry (docs/gateway.md,
    // "Identity tokens"): v1.<exp>.<hex HMAC-SHA256(secret, "xin-identity-v1\n" channel "\n"
    // exp "\n" user_id)>.
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() + 600)
        .unwrap_or_default();
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).map_err(|e| e.to_string())?;
    mac.update(format!("xin-identity-v1\nweb\n{exp}\nvisitor-42").as_bytes());
    let identity = format!("v1.{exp}.{}", hex::encode(mac.finalize().into_bytes()));
    let question = "How long do I have to return an item?";
    println!("\n--- web widget (origin {origin}), visitor-42 asks: {question}");
    let (gw2, origin2) = (gw_addr.clone(), origin.clone());
    let answer = tokio::task::spawn_blocking(move || -> Result<String, String> {
        let o = ("Origin", origin2.as_str());
        let body = json!({"user_id": "visitor-42", "identity_token": identity}).to_string();
        let s = http(&gw2, "POST", "/widget/web/session", &[o], body.as_bytes())
            .ok_or("gateway unreachable")?;
        if s.status != 200 {
            return Err(format!("session refused: {} {}", s.status, s.body));
        }
        let bearer = format!(
            "Bearer {}",
            s.json()["session_token"].as_str().unwrap_or_default()
        );
        let a = ("Authorization", bearer.as_str());
        let msg =
            json!({"text": question, "client_message_id": format!("demo-{}", std::process::id())})
                .to_string();
        let m = http(
            &gw2,
            "POST",
            "/widget/web/messages",
            &[o, a, ("X-Request-ID", "demo-widget-1")],
            msg.as_bytes(),
        )
        .ok_or("gateway unreachable")?;
        if m.status != 202 {
            return Err(format!("message refused: {} {}", m.status, m.body));
        }
        let id = m.json()["message_id"].as_i64().unwrap_or(0);
        let got = http(
            &gw2,
            "GET",
            &format!("/widget/web/messages?after={}&wait=25", id - 1),
            &[o, a],
            b"",
        )
        .ok_or("gateway unreachable")?;
        got.json()["messages"][0]["answer"]
            .as_str()
            .map(str::to_string)
            .ok_or(format!("no answer yet: {}", got.body))
    })
    .await
    .map_err(|e| e.to_string())??;
    println!("    answer: {answer}");

    // A Telegram update, with the webhook's secret token as Telegram sends it.
    let tg = channel("telegram")?;
    let token = tg["keys"][0]["key"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let update_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(1);
    let question = "When does your support team answer?";
    println!("\n--- Telegram update {update_id} from chat 5000000001: {question}");
    // The inbox keys Telegram messages by chat and message id: a new id for every run.
    let update = json!({"update_id": update_id, "message": {"message_id": update_id, "date": update_id,
        "chat": {"id": 5000000001i64, "type": "private"}, "from": {"id": 5000000001i64, "is_bot": false, "first_name": "Demo"},
        "text": question}})
    .to_string();
    stack
        .webhook(
            "/webhooks/telegram",
            vec![
                ("X-Telegram-Bot-Api-Secret-Token", token),
                ("X-Request-ID", "demo-telegram-1".into()),
            ],
            update,
        )
        .await?;
    let sent = stack.wait_for(telegram, "/sendMessage").await?;
    println!("    Telegram stand-in got sendMessage: {}", sent.json());
    Ok(format!("{answer}\n{}", sent.json()["text"]))
}
