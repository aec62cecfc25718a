//! The end of `make demo`: runs tenant `acme`'s gateway and orchestrator as local processes
//! with the configuration the operator rendered (see `xin_e2e::local` for the few local
//! overrides), loads the example knowledge, then sends a signed web-widget message and a
//! Telegram update through the gateway and prints the answers and the metrics.
//!
//! Stand-ins, on loopback: the LLM (an OpenAI-compatible endpoint that answers with the
//! context sentence closest to the question) and the Telegram Bot API (prints what it gets).
//! The example knowledge is read from the `acme-faq` ConfigMap and written to the knowledge
//! table directly, one chunk per file: the ingestion worker is not written yet.
//!
//! Needs `KUBECONFIG` (the local control plane, with examples/ applied and Ready) and
//! `XIN_DEMO_ADMIN_DATABASE_URL` (a superuser URL of the local PostgreSQL).

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use xin_e2e::local::{Overrides, gateway_env, orchestrator_env, write_routes};
use xin_e2e::workload::{Answer, Recorded, StandIn, Workload, free_port};
use xin_e2e::{get_json, http, http_get};

const NS: &str = "xin-acme";

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

async fn database(admin_url: &str) -> Result<String, String> {
    use sqlx::postgres::PgConnectOptions;
    let opts: PgConnectOptions = admin_url.parse().map_err(|e| format!("{e}"))?;
    let admin = sqlx::PgPool::connect_with(opts.clone())
        .await
        .map_err(|e| format!("{e}"))?;
    let _ = sqlx::query("CREATE ROLE xin_app LOGIN NOSUPERUSER NOBYPASSRLS")
        .execute(&admin)
        .await;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'xin_demo')")
            .fetch_one(&admin)
            .await
            .map_err(|e| format!("{e}"))?;
    if !exists {
        sqlx::query("CREATE DATABASE xin_demo OWNER xin_app")
            .execute(&admin)
            .await
            .map_err(|e| format!("{e}"))?;
    }
    Ok(format!(
        "postgres://xin_app@{}:{}/xin_demo",
        opts.get_host(),
        opts.get_port()
    ))
}

/// The example knowledge: one chunk per file of the `acme-faq` ConfigMap, tagged like the
/// example IngestionJob.
async fn load_knowledge(url: &str) -> Result<usize, String> {
    let pool = xin_store::connect(url, 1).await?;
    let cm =
        get_json(&["configmap", "acme-faq", "-n", NS]).ok_or("ConfigMap acme-faq not found")?;
    let data = cm["data"].as_object().cloned().unwrap_or_default();
    for (file, text) in &data {
        let text = text.as_str().unwrap_or_default();
        let title = text
            .lines()
            .find_map(|l| l.strip_prefix("# "))
            .unwrap_or(file)
            .to_string();
        sqlx::query(
            "INSERT INTO knowledge_chunks (tenant, document_id, chunk_index, title, source, text, token_count, tags)
             VALUES ('acme', $1, 0, $2, $3, $4, $5, ARRAY['faq'])
             ON CONFLICT (tenant, document_id, chunk_index) DO UPDATE SET title = EXCLUDED.title, text = EXCLUDED.text,
               token_count = EXCLUDED.token_count, updated_at = now()",
        )
        .bind(file)
        .bind(&title)
        .bind(format!("configmap/{NS}/acme-faq/{file}"))
        .bind(text)
        .bind((text.split_whitespace().count() * 4 / 3) as i32)
        .execute(&pool)
        .await
        .map_err(|e| format!("{e}"))?;
    }
    Ok(data.len())
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

async fn run() -> Result<(), String> {
    let admin = std::env::var("XIN_DEMO_ADMIN_DATABASE_URL")
        .map_err(|_| "XIN_DEMO_ADMIN_DATABASE_URL is not set")?;
    let db = database(&admin).await?;
    let n = load_knowledge(&db).await?;
    println!("loaded {n} example documents from configmap/acme-faq into the knowledge table");

    let llm = StandIn::start(llm_answer);
    let telegram =
        StandIn::start(|_| Answer::json(200, json!({"ok": true, "result": {"message_id": 1}})));
    let meta = StandIn::start(|_| Answer::json(200, json!({"messages": [{"id": "wamid.demo"}]})));
    let dir = std::env::temp_dir().join(format!("xin-demo-{}", std::process::id()));
    let o = Overrides {
        database_url: db,
        gateway_port: free_port(),
        gateway_metrics_port: free_port(),
        orchestrator_port: free_port(),
        orchestrator_metrics_port: free_port(),
        routes_file: write_routes(NS, &dir)?,
        llm_endpoint: Some(llm.url()),
        telegram_api_base: telegram.url(),
        meta_graph_api_base: format!("{}/v21.0", meta.url()),
    };
    let orch_addr = format!("127.0.0.1:{}", o.orchestrator_port);
    let gw_addr = format!("127.0.0.1:{}", o.gateway_port);
    let mut orch = Workload::start(
        "xin-orchestrator",
        "demo-orchestrator",
        &orchestrator_env(NS, &o)?,
    );
    orch.wait_ready(&orch_addr, "/ready");
    let mut gw = Workload::start("xin-gateway", "demo-gateway", &gateway_env(NS, &o)?);
    gw.wait_ready(&gw_addr, "/ready");
    println!(
        "xin-orchestrator on {orch_addr} and xin-gateway on {gw_addr}, configured as the operator rendered them"
    );
    println!("  logs: {} and {}", orch.log.display(), gw.log.display());

    let routes: Value =
        serde_json::from_slice(&std::fs::read(&o.routes_file).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    let channel = |name: &str| {
        routes["channels"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["name"] == name).cloned())
            .ok_or(format!("no channel {name} in the routes"))
    };

    // The web widget, as the site's page would use it.
    let web = channel("web")?;
    let origin = web["allowedOrigins"][0]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let secret = web["credentials"]["identitySecret"]
        .as_str()
        .unwrap_or_default();
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).map_err(|e| e.to_string())?;
    mac.update(b"visitor-42");
    let identity = hex::encode(mac.finalize().into_bytes());
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
    let update = json!({"update_id": update_id, "message": {"message_id": 1, "date": update_id,
        "chat": {"id": 5000000001i64, "type": "private"}, "from": {"id": 5000000001i64, "is_bot": false, "first_name": "Demo"},
        "text": question}})
    .to_string();
    let gw3 = gw_addr.clone();
    let r = tokio::task::spawn_blocking(move || {
        http(
            &gw3,
            "POST",
            "/webhooks/telegram",
            &[
                ("X-Telegram-Bot-Api-Secret-Token", token.as_str()),
                ("X-Request-ID", "demo-telegram-1"),
            ],
            update.as_bytes(),
        )
    })
    .await
    .map_err(|e| e.to_string())?
    .ok_or("gateway unreachable")?;
    println!("    webhook answered {} {}", r.status, r.body.trim());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let sent = loop {
        if let Some(s) = telegram
            .requests()
            .into_iter()
            .find(|r| r.path.ends_with("/sendMessage"))
        {
            break s;
        }
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "no sendMessage within 30 s; gateway log: {}",
                gw.log.display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("    Telegram stand-in got sendMessage: {}", sent.json());

    println!("\n--- metrics");
    for l in metric_lines(
        &format!("127.0.0.1:{}", o.gateway_metrics_port),
        &["gateway_forwarded_messages_total", "http_requests_total"],
    ) {
        println!("  gateway       {l}");
    }
    for l in metric_lines(
        &format!("127.0.0.1:{}", o.orchestrator_metrics_port),
        &["orchestrator_answers_total"],
    ) {
        println!("  orchestrator  {l}");
    }
    let corr = orch
        .logs()
        .lines()
        .filter(|l| l.contains("demo-telegram-1"))
        .count();
    println!("  orchestrator log lines carrying correlation id demo-telegram-1: {corr}");
    gw.terminate();
    orch.terminate();
    Ok(())
}
