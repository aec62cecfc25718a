//! Tenant isolation on one shared database (row-level security keyed by `xin.tenant`), and
//! the binary as a real process: it refuses a role that would bypass row-level security,
//! refuses bad configuration naming the variable, serves, and stops on SIGTERM.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

#[tokio::test]
async fn tenants_on_one_database_cannot_see_or_write_each_others_rows() {
    let db = database().await;
    let a = start(&db, config("a")).await;
    let b = start(&db, config("b")).await;
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

    // A raw pool of tenant a sees none of b's rows.
    let raw = xin_store::connect(&db, "a", 1).await.unwrap();
    for (table, a_rows) in [
        ("conversations", 1i64),
        ("messages", 2),
        ("outbox_events", 2),
        ("knowledge_chunks", 0),
    ] {
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(&raw)
                .await
                .unwrap();
        assert_eq!(n, a_rows, "{table} as seen by tenant a");
        let foreign: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {table} WHERE tenant <> 'a'"
        )))
        .fetch_one(&raw)
        .await
        .unwrap();
        assert_eq!(foreign, 0, "{table}");
    }
    // b's rows exist (b sees them), so the zeros above are the policy at work.
    let b_msgs: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(&b.pool)
        .await
        .unwrap();
    assert_eq!(b_msgs, 2);

    // Writing as b through a's pool is refused by the policy, and so is moving a row.
    let err = sqlx::query("INSERT INTO conversations (id, tenant, channel, external_user) VALUES ('x1', 'b', 'web', 'mallory')")
        .execute(&raw)
        .await
        .unwrap_err();
    let code = err
        .as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.to_string());
    assert_eq!(code.as_deref(), Some("42501"), "{err}");
    assert!(err.to_string().contains("row-level security"), "{err}");
    let err = sqlx::query("INSERT INTO outbox_events (tenant, kind, conversation_id, correlation_id) VALUES ('b', 'handoff_requested', $1, 'x')")
        .bind(&b_conv)
        .execute(&raw)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("row-level security"), "{err}");
    let err = sqlx::query("UPDATE conversations SET tenant = 'b' WHERE id = $1")
        .bind(&a_conv)
        .execute(&raw)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("row-level security"), "{err}");
    let moved = sqlx::query("UPDATE conversations SET status = 'closed' WHERE id = $1")
        .bind(&b_conv)
        .execute(&raw)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(moved, 0, "b's conversation cannot be changed through a");
    // A session without the setting sees nothing at all.
    let unscoped = sqlx::PgPool::connect(&db).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM conversations")
        .fetch_one(&unscoped)
        .await
        .unwrap();
    assert_eq!(n, 0);
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
async fn the_binary_refuses_a_role_that_bypasses_row_level_security() {
    let superuser = std::env::var("XIN_TEST_DATABASE_URL").unwrap();
    let mut c = binary();
    rendered_env(&mut c, &superuser, free_port(), free_port());
    let out = output_within(c.spawn().unwrap(), Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("BYPASSRLS") && stderr.contains("isolation"),
        "{stderr}"
    );
    let all = format!("{stderr}{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        !all.contains("sk-never-printed") && !all.contains("tenant-signing-key"),
        "{all}"
    );
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
    let m = client
        .get(format!("http://127.0.0.1:{metrics}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
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
