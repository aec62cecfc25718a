//! Two tenants side by side, each on its own database (the boundary itself is tried with
//! hostile SQL in `xin-store`'s tests), and the binary as a real process: it refuses a role
//! with more than data rights and a schema older than it needs, refuses bad configuration
//! naming the variable, serves, and stops on SIGTERM.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

#[tokio::test]
async fn tenants_side_by_side_never_see_each_others_conversations_or_knowledge() {
    let (db_a, db_b) = tokio::join!(database(), database());
    let a = start(&db_a, config("a")).await;
    let b = start(&db_b, config("b")).await;
    seed(
        &b.pool,
        Seed::new(
            "b-secret",
            "B's pricing",
            "Tenant b secret discount code is PURPLE",
        ),
    )
    .await;
    let b_conv = b.conversation("shared-user").await;
    let r = b
        .say(&b_conv, json!({"text": "secret discount code"}))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["answer"]["sources"][0]["document_id"],
        "b-secret",
        "b retrieves its own chunk"
    );

    // Through a's API b's conversation does not exist, for every verb.
    assert_json_error(
        &a.get(&format!("/v1/conversations/{b_conv}")).await,
        404,
        "conversation_not_found",
    );
    assert_json_error(
        &a.say(&b_conv, json!({"text": "hi"})).await,
        404,
        "conversation_not_found",
    );
    assert_json_error(
        &a.signed(
            "POST",
            &format!("/v1/conversations/{b_conv}/close"),
            b"",
            &[],
        )
        .await,
        404,
        "conversation_not_found",
    );
    assert_json_error(
        &a.post(&format!("/v1/conversations/{b_conv}/handoff"), json!({}))
            .await,
        404,
        "conversation_not_found",
    );
    // The same user on the same channel is a separate conversation in a.
    let a_conv = a.conversation("shared-user").await;
    assert_ne!(a_conv, b_conv);
    // a's retrieval never finds b's knowledge.
    let r = a
        .say(&a_conv, json!({"text": "secret discount code"}))
        .await;
    assert_eq!(r.json()["answer"]["sources"], json!([]), "{}", r.body);
    assert!(!r.body.contains("PURPLE"));
    assert_eq!(
        b.get(&format!("/v1/conversations/{b_conv}")).await.json()["status"],
        "open"
    );
}

fn binary() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xin-orchestrator"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The environment `orchestrator_env` renders, pointed at `db`.
fn rendered_env(c: &mut Command, db: &str, http: u16, metrics: u16) {
    c.env("XIN_TENANT", "acme")
        .env("XIN_NAMESPACE", "xin-acme")
        .env("TENANT_TIME_ZONE", "Asia/Tehran")
        .env("ORCHESTRATOR_HTTP_HOST", "127.0.0.1")
        .env("ORCHESTRATOR_HTTP_PORT", http.to_string())
        .env("ORCHESTRATOR_METRICS_HOST", "127.0.0.1")
        .env("ORCHESTRATOR_METRICS_PORT", metrics.to_string())
        .env("DATABASE_URL", db)
        .env("TENANT_SIGNING_KEY", std::str::from_utf8(KEY).unwrap())
        .env("RETRIEVAL_HYBRID_WEIGHT", "0.5")
        .env("RETRIEVAL_MIN_SCORE", "0.2")
        .env("RETRIEVAL_MAX_DOCUMENTS", "5")
        .env("RETRIEVAL_CONTEXT_BUDGET_TOKENS", "3000")
        .env("LLM_ENDPOINT", closed_port_url())
        .env("LLM_MODEL", "m")
        .env("LLM_TIMEOUT_SECONDS", "1")
        .env("LLM_API_KEY", "sk-never-printed")
        .env("XIN_SERVICE_CIDR", "10.96.0.0/12")
        // The stand-ins listen on loopback, which is refused by default.
        .env("XIN_OUTBOUND_ALLOW", "127.0.0.1/32");
}

/// Kills the process when a failed assertion unwinds before the test stops it itself.
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn output_within(mut child: std::process::Child, limit: Duration) -> std::process::Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("the process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn the_binary_refuses_a_role_with_more_than_data_rights() {
    let superuser = std::env::var("XIN_TEST_DATABASE_URL").unwrap();
    let mut c = binary();
    rendered_env(&mut c, &superuser, free_port(), free_port());
    let out = output_within(c.spawn().unwrap(), Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("is a superuser") && stderr.contains("data rights only"),
        "{stderr}"
    );
    let all = format!("{stderr}{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        !all.contains("sk-never-printed") && !all.contains("tenant-signing-key"),
        "{all}"
    );
}

#[tokio::test]
async fn the_binary_refuses_a_schema_older_than_it_needs() {
    // An ordinary role on a database the migrations step never ran on.
    let admin = sqlx::PgPool::connect(&xin_store::test_admin_url())
        .await
        .unwrap();
    let name = format!("xin_old_{:08x}", rand::random::<u32>());
    for s in [
        format!("CREATE ROLE {name} LOGIN PASSWORD 'pw-{name}'"),
        format!("CREATE DATABASE {name}"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(s))
            .execute(&admin)
            .await
            .unwrap();
    }
    let admin_url = xin_store::test_admin_url();
    let (base, _) = admin_url.rsplit_once('/').unwrap();
    let host = base.rsplit_once('@').unwrap().1;
    let url = format!("postgres://{name}:pw-{name}@{host}/{name}");
    let mut c = binary();
    rendered_env(&mut c, &url, free_port(), free_port());
    let out = output_within(c.spawn().unwrap(), Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let need = xin_store::schema_version();
    assert!(
        stderr.contains(&format!(
            "schema is at version 0 but this binary needs {need}"
        )) && stderr.contains("migrations step"),
        "{stderr}"
    );
    assert!(!stderr.contains(&format!("pw-{name}")), "{stderr}");
}

#[tokio::test]
async fn the_binary_refuses_bad_configuration_naming_the_variable() {
    for (var, value) in [
        ("RETRIEVAL_HYBRID_WEIGHT", "1.5"),
        ("RETRIEVAL_MIN_SCORE", "-1"),
        ("RETRIEVAL_MAX_DOCUMENTS", "many"),
        ("LLM_TIMEOUT_SECONDS", "0"),
        ("LLM_ENDPOINT", "llm.example"),
        ("RETRIEVAL_VISIBILITY", "everyone"),
        ("TENANT_SIGNING_KEY", ""),
        ("TENANT_SIGNING_KEY", "too-short"),
        ("XIN_OUTBOUND_ALLOW", "127.0.0.1/33"),
        ("XIN_OUTBOUND_DENY", "http://x"),
        ("XIN_SERVICE_CIDR", "cluster"),
    ] {
        let mut c = binary();
        rendered_env(
            &mut c,
            "postgres://nobody@127.0.0.1:1/none",
            free_port(),
            free_port(),
        );
        c.env(var, value);
        let out = output_within(c.spawn().unwrap(), Duration::from_secs(10));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{var}={value} was accepted");
        assert!(stderr.contains(var), "{var}={value}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let mut c = binary();
    rendered_env(
        &mut c,
        "postgres://nobody@127.0.0.1:1/none",
        free_port(),
        free_port(),
    );
    c.env_remove("LLM_MODEL");
    let out = output_within(c.spawn().unwrap(), Duration::from_secs(10));
    assert!(String::from_utf8_lossy(&out.stderr).contains("LLM_MODEL is required"));
    // --help documents every variable.
    let help = binary().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for var in [
        "XIN_TENANT",
        "ORCHESTRATOR_HTTP_PORT",
        "ORCHESTRATOR_METRICS_PORT",
        "DATABASE_URL",
        "TENANT_SIGNING_KEY",
        "RETRIEVAL_HYBRID_WEIGHT",
        "RETRIEVAL_CONTEXT_BUDGET_TOKENS",
        "RETRIEVAL_VISIBILITY",
        "LLM_ENDPOINT",
        "LLM_FALLBACK_MODEL",
        "LLM_TIMEOUT_SECONDS",
        "LLM_API_KEY",
        "EMBEDDING_ENDPOINT",
        "EMBEDDING_MODEL",
        "HANDOFF_KEYWORDS",
        "TENANT_TIME_ZONE",
        "XIN_NAMESPACE",
        "XIN_OUTBOUND_ALLOW",
        "XIN_OUTBOUND_DENY",
        "XIN_SERVICE_CIDR",
    ] {
        assert!(help.contains(var), "--help does not mention {var}");
    }
}

#[tokio::test]
async fn the_binary_serves_the_rendered_environment_and_stops_on_sigterm() {
    let db = database().await;
    let (http, metrics) = (free_port(), free_port());
    let mut c = binary();
    rendered_env(&mut c, &db, http, metrics);
    let mut guard = KillOnDrop(Some(c.spawn().unwrap()));
    let client = reqwest::Client::new();
    let start = Instant::now();
    loop {
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{http}/ready"))
            .send()
            .await
            && r.status() == 200
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "not ready in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let body = br#"{"channel":"web","external_user":"u"}"#;
    let mut req = client
        .post(format!("http://127.0.0.1:{http}/v1/conversations"))
        .body(body.to_vec());
    for (k, v) in signed_headers(
        KEY,
        xin_runtime::signing::now(),
        "POST",
        "/v1/conversations",
        body,
    ) {
        req = req.header(k, v);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The LLM endpoint is down: the answer is extractive, and the metric says so.
    let path = format!("/v1/conversations/{id}/messages");
    let body = br#"{"text":"hello"}"#;
    let mut req = client
        .post(format!("http://127.0.0.1:{http}{path}"))
        .body(body.to_vec());
    for (k, v) in signed_headers(KEY, xin_runtime::signing::now(), "POST", &path, body) {
        req = req.header(k, v);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200);
    let m = scrape(&client, &format!("127.0.0.1:{metrics}")).await;
    assert!(
        m.contains("orchestrator_answers_total{path=\"extractive\"} 1"),
        "{m}"
    );
    assert!(m.contains("http_requests_total{route=\"/v1/conversations/{id}/messages\",method=\"POST\",status_code=\"200\"} 1"), "{m}");

    let child = guard.0.take().unwrap();
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let out = output_within(child, Duration::from_secs(15));
    assert!(out.status.success(), "exit after SIGTERM: {:?}", out.status);
    let logs = String::from_utf8_lossy(&out.stdout);
    assert!(logs.contains("xin-orchestrator serving"), "{logs}");
    assert!(logs.contains("\"path\":\"extractive\""), "{logs}");
    assert!(
        !logs.contains("sk-never-printed") && !logs.contains("tenant-signing-key"),
        "{logs}"
    );
    assert!(
        !logs.contains("\"hello\""),
        "message text must not be logged at info: {logs}"
    );
}
