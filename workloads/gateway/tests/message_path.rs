//! The whole message path with real processes: `xin-gateway` and `xin-orchestrator` binaries
//! against a real PostgreSQL (`XIN_TEST_DATABASE_URL`, see `e2e/postgres.sh`), with local
//! stand-ins only for Telegram, Meta, the LLM and an OTLP collector.

use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;
use xin_api::channel::ChannelType;
use xin_api::routes::{ChannelRoute, Credentials, Routes, WebhookKey};
use xin_e2e::workload::{Answer, Recorded, StandIn, Workload, free_port};
use xin_e2e::{HttpReply, http};
use xin_gateway::verify::meta_sign;

const KEY: &str = "acme-signing-key-0123456789abcdef";
const ANSWER: &str = "You can return any item within 30 days of delivery.";

fn route(name: &str, type_: ChannelType) -> ChannelRoute {
    let mut r = ChannelRoute {
        name: name.into(),
        type_,
        path: format!("/webhooks/{name}"),
        suspended: false,
        max_body_bytes: 1 << 20,
        requests_per_second: 100,
        burst: 100,
        keys: vec![WebhookKey {
            key: format!("{name}-key"),
            expires_at: None,
        }],
        credentials: Credentials::default(),
        allowed_origins: vec![],
        phone_number_id: None,
        page_id: None,
        legacy_identity_tokens: false,
        anonymous_visitors: false,
        display_name: None,
        theme: None,
    };
    let c = &mut r.credentials;
    match type_ {
        ChannelType::Telegram => c.bot_token = Some("123:bot-token".into()),
        ChannelType::Whatsapp | ChannelType::Instagram => {
            c.app_secret = Some("app-secret".into());
            c.access_token = Some("meta-access-token".into());
        }
        ChannelType::Web => {
            c.identity_secret = Some("site-secret".into());
            r.allowed_origins = vec!["https://shop.example".into()];
        }
    }
    match type_ {
        ChannelType::Whatsapp => r.phone_number_id = Some("106540352242922".into()),
        ChannelType::Instagram => r.page_id = Some("17841400000000000".into()),
        ChannelType::Telegram | ChannelType::Web => {}
    }
    r
}

/// An OpenAI-compatible stand-in: answers [`ANSWER`] when the system prompt's context holds
/// the returns policy, else "no context" (the history is not looked at).
fn llm() -> StandIn {
    StandIn::start(|r: &Recorded| {
        let system = r.json()["messages"][0]["content"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let content = if system.contains("30 days") {
            ANSWER
        } else {
            "no context"
        };
        Answer::json(
            200,
            json!({"id": "c1", "object": "chat.completion", "model": "m",
                   "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}]}),
        )
    })
}

fn ok_provider() -> StandIn {
    StandIn::start(|_| Answer::json(200, json!({"ok": true, "result": {"message_id": 1}})))
}

struct Stack {
    db_url: String,
    pool: PgPool,
    routes_file: std::path::PathBuf,
    gw_addr: String,
    orch_port: u16,
    llm: StandIn,
    telegram: StandIn,
    meta: StandIn,
    otel: StandIn,
    /// Holds the routes file; removed when the test ends (passed or failed).
    _dir: tempfile::TempDir,
}

impl Stack {
    async fn new() -> Stack {
        let db_url = xin_store::fresh_test_database().await;
        let pool = xin_store::connect(&db_url, 2).await.unwrap();
        sqlx::query(
            "INSERT INTO knowledge_chunks (tenant, document_id, chunk_index, title, text, token_count)
             VALUES ('acme', 'returns', 0, 'Returns policy', 'You can return any item within 30 days of delivery for a full refund.', 16),
                    ('acme', 'hours', 0, 'Opening hours', 'Our support team answers Monday to Friday, 9:00 to 17:00.', 14)",
        )
        .execute(&pool)
        .await
        .unwrap();
        let dir = tempfile::Builder::new()
            .prefix("xin-path-")
            .tempdir()
            .unwrap();
        let routes_file = dir.path().join("routes.json");
        let routes = Routes {
            tenant: "acme".into(),
            channels: vec![
                route("tg", ChannelType::Telegram),
                route("wa", ChannelType::Whatsapp),
                route("ig", ChannelType::Instagram),
                route("web", ChannelType::Web),
            ],
        };
        std::fs::write(&routes_file, serde_json::to_vec(&routes).unwrap()).unwrap();
        Stack {
            db_url,
            pool,
            routes_file,
            gw_addr: format!("127.0.0.1:{}", free_port()),
            orch_port: free_port(),
            llm: llm(),
            telegram: ok_provider(),
            meta: ok_provider(),
            otel: StandIn::start(|_| Answer::json(200, json!({}))),
            _dir: dir,
        }
    }

    fn otel_env(&self) -> Vec<(String, String)> {
        vec![
            ("OTEL_EXPORTER_ENDPOINT".into(), self.otel.url()),
            (
                "OTEL_EXPORTER_HEADERS".into(),
                "x-collector-token=s3cret-otel".into(),
            ),
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into()),
        ]
    }

    fn gateway(&self) -> Workload {
        let port = self.gw_addr.rsplit(':').next().unwrap().to_string();
        let mut env: Vec<(String, String)> = [
            ("XIN_TENANT", "acme".to_string()),
            ("GATEWAY_HTTP_HOST", "127.0.0.1".into()),
            ("GATEWAY_HTTP_PORT", port),
            ("GATEWAY_METRICS_HOST", "127.0.0.1".into()),
            ("GATEWAY_METRICS_PORT", free_port().to_string()),
            (
                "GATEWAY_ROUTES_FILE",
                self.routes_file.display().to_string(),
            ),
            ("DATABASE_URL", self.db_url.clone()),
            (
                "ORCHESTRATOR_URL",
                format!("http://127.0.0.1:{}", self.orch_port),
            ),
            ("TENANT_SIGNING_KEY", KEY.into()),
            ("TELEGRAM_API_BASE", self.telegram.url()),
            ("META_GRAPH_API_BASE", format!("{}/v21.0", self.meta.url())),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        env.extend(self.otel_env());
        let mut w = Workload::start("xin-gateway", "gateway", &env);
        w.wait_ready(&self.gw_addr, "/ready");
        w
    }

    fn orchestrator(&self) -> Workload {
        let mut env: Vec<(String, String)> = [
            ("XIN_TENANT", "acme".to_string()),
            ("ORCHESTRATOR_HTTP_HOST", "127.0.0.1".into()),
            ("ORCHESTRATOR_HTTP_PORT", self.orch_port.to_string()),
            ("ORCHESTRATOR_METRICS_HOST", "127.0.0.1".into()),
            ("ORCHESTRATOR_METRICS_PORT", free_port().to_string()),
            ("DATABASE_URL", self.db_url.clone()),
            ("TENANT_SIGNING_KEY", KEY.into()),
            ("LLM_ENDPOINT", self.llm.url()),
            ("LLM_MODEL", "primary".into()),
            ("LLM_TIMEOUT_SECONDS", "5".into()),
            // The LLM stand-in listens on loopback, which the outbound policy refuses.
            ("XIN_OUTBOUND_ALLOW", "127.0.0.1/32".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        env.extend(self.otel_env());
        let mut w = Workload::start("xin-orchestrator", "orchestrator", &env);
        w.wait_ready(&format!("127.0.0.1:{}", self.orch_port), "/ready");
        w
    }

    async fn post(&self, path: &str, headers: Vec<(String, String)>, body: Vec<u8>) -> HttpReply {
        let (addr, path) = (self.gw_addr.clone(), path.to_string());
        tokio::task::spawn_blocking(move || {
            let h: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            http(&addr, "POST", &path, &h, &body).expect("gateway reachable")
        })
        .await
        .unwrap()
    }

    async fn get(&self, path: &str, headers: Vec<(String, String)>) -> HttpReply {
        let (addr, path) = (self.gw_addr.clone(), path.to_string());
        tokio::task::spawn_blocking(move || {
            let h: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            http(&addr, "GET", &path, &h, b"").expect("gateway reachable")
        })
        .await
        .unwrap()
    }
}

fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn sent_to(reqs: &[Recorded], path: &str) -> Vec<Recorded> {
    reqs.iter().filter(|r| r.path == path).cloned().collect()
}

fn tg_update(update_id: i64, chat: i64, text: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"update_id": update_id, "message": {"message_id": update_id, "date": 1700000000,
        "chat": {"id": chat, "type": "private"}, "from": {"id": chat, "is_bot": false, "first_name": "U"}, "text": text}}))
    .unwrap()
}

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread")]
async fn messages_from_every_channel_are_answered_once_with_correlation_ids_and_traces() {
    let s = Stack::new().await;
    let mut orch = s.orchestrator();
    let mut gw = s.gateway();

    // Telegram, delivered twice (a provider retry): one answer, one reply.
    let update = tg_update(
        9001,
        5000000001,
        "How many days do I have to return an order?",
    );
    // The gateway makes the correlation id of each delivery (the client's X-Request-ID is only
    // logged, as client_request_id); the first delivery's is the one the message keeps.
    let mut ids = vec![];
    for _ in 0..2 {
        let r = s
            .post(
                "/webhooks/tg",
                h(&[
                    ("X-Telegram-Bot-Api-Secret-Token", "tg-key"),
                    ("X-Request-ID", "client-tg-1"),
                ]),
                update.clone(),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let id = r.header("x-request-id").expect("echoed").to_string();
        assert_ne!(id, "client-tg-1");
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1], "every request has its own correlation id");
    let corr_tg = ids[0].clone();
    let sent = s.telegram.wait_for("sendMessage", WAIT, |r| {
        !sent_to(r, "/bot123:bot-token/sendMessage").is_empty()
    });
    let reply = &sent_to(&sent, "/bot123:bot-token/sendMessage")[0];
    assert_eq!(
        reply.json(),
        json!({"chat_id": 5000000001i64, "text": ANSWER})
    );
    assert_eq!(reply.header("x-request-id"), Some(corr_tg.as_str()));

    // WhatsApp: a signed batch of two users' messages (one Persian) and a status.
    let wa = br#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"phone_number_id":"106540352242922"},
      "messages":[{"from":"16505551234","id":"wamid.1","timestamp":"1700000000","type":"text","text":{"body":"return policy: how many days?"}},
                  {"from":"4915112345678","id":"wamid.2","timestamp":"1700000001","type":"text","text":{"body":"\u0633\u0627\u0639\u062a \u06a9\u0627\u0631\u06cc\u061f"}}],
      "statuses":[{"id":"wamid.0","status":"read"}]}}]}]}"#;
    let sig = format!("sha256={}", meta_sign("app-secret", wa));
    let r = s
        .post(
            "/webhooks/wa",
            h(&[("X-Hub-Signature-256", &sig)]),
            wa.to_vec(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Instagram: a user's message and the business's own echo (never answered).
    let ig = br#"{"object":"instagram","entry":[{"id":"17841400000000000","time":1700000000000,"messaging":[
      {"sender":{"id":"IGSID1"},"recipient":{"id":"17841400000000000"},"timestamp":1700000000000,"message":{"mid":"m1","text":"what is the return window in days?"}},
      {"sender":{"id":"17841400000000000"},"recipient":{"id":"IGSID1"},"timestamp":1700000000001,"message":{"mid":"m2","text":"echo","is_echo":true}}]}]}"#;
    let sig = format!("sha256={}", meta_sign("app-secret", ig));
    let r = s
        .post(
            "/webhooks/ig",
            h(&[("X-Hub-Signature-256", &sig)]),
            ig.to_vec(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);

    let meta = s.meta.wait_for("3 Meta sends", WAIT, |r| r.len() >= 3);
    let wa_sends = sent_to(&meta, "/v21.0/106540352242922/messages");
    assert_eq!(wa_sends.len(), 2, "{meta:#?}");
    for m in &wa_sends {
        assert_eq!(m.header("authorization"), Some("Bearer meta-access-token"));
        assert_eq!(m.json()["messaging_product"], "whatsapp");
    }
    let mut to: Vec<String> = wa_sends
        .iter()
        .map(|m| m.json()["to"].as_str().unwrap().to_string())
        .collect();
    to.sort();
    assert_eq!(to, ["16505551234", "4915112345678"]);
    let ig_sends = sent_to(&meta, "/v21.0/17841400000000000/messages");
    assert_eq!(ig_sends.len(), 1);
    assert_eq!(ig_sends[0].json()["recipient"]["id"], "IGSID1");

    // The web widget: identity token → session → message → answer by long poll.
    let id_token = xin_gateway::widget::identity_token(
        "site-secret",
        "web",
        "visitor-1",
        xin_runtime::signing::now() + 600,
    );
    let origin = ("Origin", "https://shop.example");
    let sess = s
        .post(
            "/widget/web/session",
            h(&[origin]),
            serde_json::to_vec(&json!({"user_id": "visitor-1", "identity_token": id_token}))
                .unwrap(),
        )
        .await;
    assert_eq!(sess.status, 200, "{}", sess.body);
    let bearer = format!("Bearer {}", sess.json()["session_token"].as_str().unwrap());
    let sent = s
        .post(
            "/widget/web/messages",
            h(&[
                origin,
                ("Authorization", &bearer),
                ("X-Request-ID", "corr-web-1"),
            ]),
            serde_json::to_vec(
                &json!({"text": "Can I return a gift after 30 days?", "client_message_id": "w1"}),
            )
            .unwrap(),
        )
        .await;
    assert_eq!(sent.status, 202, "{}", sent.body);
    let got = s
        .get(
            "/widget/web/messages?after=0&wait=20",
            h(&[origin, ("Authorization", &bearer)]),
        )
        .await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.json()["messages"][0]["answer"], ANSWER, "{}", got.body);

    // Exactly once: give a duplicate the time to be (wrongly) answered again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        sent_to(&s.telegram.requests(), "/bot123:bot-token/sendMessage").len(),
        1
    );
    assert_eq!(s.meta.requests().len(), 3);
    assert_eq!(
        s.llm.requests().len(),
        5,
        "one LLM call per message: tg, 2 wa, ig, web"
    );

    // The correlation id reached the orchestrator's rows, both logs and both services' traces.
    let (corr, path): (String, Option<String>) = sqlx::query_as(
        "SELECT u.correlation_id, a.answer_path FROM messages u JOIN messages a ON a.reply_to = u.id
         WHERE u.client_message_id = 'tg:5000000001:9001'",
    )
    .fetch_one(&s.pool)
    .await
    .unwrap();
    assert_eq!(
        (corr.as_str(), path.as_deref()),
        (corr_tg.as_str(), Some("llm"))
    );
    assert!(
        gw.logs().contains(&corr_tg),
        "gateway log lacks the correlation id"
    );
    assert!(
        gw.logs().contains(r#""client_request_id":"client-tg-1""#),
        "gateway log lacks the client's request id"
    );
    assert!(
        orch.logs().contains(&corr_tg),
        "orchestrator log lacks the correlation id"
    );
    for l in gw.logs().lines().chain(orch.logs().lines()) {
        assert!(
            !l.contains("bot-token")
                && !l.contains("meta-access-token")
                && !l.contains(KEY)
                && !l.contains("s3cret-otel"),
            "secret in a log line: {l}"
        );
    }
    assert_eq!(gw.logs().matches("tracing initialised").count(), 1);
    let otel = s.otel.wait_for(
        "spans with the correlation id from both services",
        WAIT,
        |r| {
            let has = |svc: &str| {
                r.iter().any(|x| {
                    let b = String::from_utf8_lossy(&x.body);
                    b.contains(corr_tg.as_str()) && b.contains(svc)
                })
            };
            has("xin-gateway") && has("xin-orchestrator")
        },
    );
    assert!(otel.iter().all(|r| r.path == "/v1/traces" && r.header("x-collector-token") == Some("s3cret-otel")));
    s.otel
        .wait_for("the answer path as a trace attribute", WAIT, |r| {
            r.iter().any(|x| {
                let b = String::from_utf8_lossy(&x.body);
                b.contains("xin-orchestrator") && b.contains("answer.path")
            })
        });

    // SIGTERM finishes the request in flight (a long poll) before exiting: the request is
    // sent, and seen by the gateway, before the signal.
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(&s.gw_addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        conn,
        "GET /widget/web/messages?after=999999&wait=3 HTTP/1.1\r\nHost: x\r\nAuthorization: {bearer}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    // Connected and written: the gateway accepts at once; give it a moment to read.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        gw.terminate(),
        "the gateway exits 0 on SIGTERM:\n{}",
        gw.logs()
    );
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "the in-flight request got its answer: {answer}"
    );
    assert!(orch.terminate(), "the orchestrator exits 0 on SIGTERM");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_killed_after_accepting_still_replies_after_restart() {
    let s = Stack::new().await;
    // No orchestrator yet: the gateway accepts, cannot forward, and is killed.
    let mut gw = s.gateway();
    let r = s
        .post(
            "/webhooks/tg",
            h(&[("X-Telegram-Bot-Api-Secret-Token", "tg-key")]),
            tg_update(77, -1001234567890, "return window in days?"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // A second message of the same chat waits behind the first, across retries.
    let r = s
        .post(
            "/webhooks/tg",
            h(&[("X-Telegram-Bot-Api-Secret-Token", "tg-key")]),
            tg_update(78, -1001234567890, "and hello again"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let attempts: i32 = sqlx::query_scalar(
            "SELECT attempts FROM gateway_inbox WHERE provider_message_id = 'tg:-1001234567890:77'",
        )
        .fetch_one(&s.pool)
        .await
        .unwrap();
        if attempts >= 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no forwarding attempt:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gw.kill();
    assert!(s.telegram.requests().is_empty());

    let _orch = s.orchestrator();
    let _gw = s.gateway();
    let sent = s
        .telegram
        .wait_for("both replies after restart", Duration::from_secs(60), |r| {
            r.len() >= 2
        });
    assert_eq!(
        sent.iter().map(Recorded::json).collect::<Vec<_>>(),
        [
            json!({"chat_id": -1001234567890i64, "text": ANSWER}),
            json!({"chat_id": -1001234567890i64, "text": "no context"})
        ],
        "in the order the chat wrote them"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(s.telegram.requests().len(), 2, "each replied once");
    let untried: i32 = sqlx::query_scalar(
        "SELECT attempts FROM gateway_inbox WHERE provider_message_id = 'tg:-1001234567890:78'",
    )
    .fetch_one(&s.pool)
    .await
    .unwrap();
    assert_eq!(
        untried, 0,
        "the second message was never tried before the first"
    );
    let (replied, error): (bool, Option<String>) = sqlx::query_as(
        "SELECT replied_at IS NOT NULL, last_error FROM gateway_inbox WHERE provider_message_id = 'tg:-1001234567890:77'",
    )
    .fetch_one(&s.pool)
    .await
    .unwrap();
    assert!(replied);
    assert!(
        error
            .unwrap_or_default()
            .contains("orchestrator unreachable")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_refusing_the_reply_is_retried_then_set_aside() {
    let mut s = Stack::new().await;
    // Telegram refuses (400: the chat is gone): no point retrying.
    s.telegram = StandIn::start(|_| {
        Answer::json(
            400,
            json!({"ok": false, "error_code": 400, "description": "Bad Request: chat not found"}),
        )
    });
    let _orch = s.orchestrator();
    let _gw = s.gateway();
    let r = s
        .post(
            "/webhooks/tg",
            h(&[("X-Telegram-Bot-Api-Secret-Token", "tg-key")]),
            tg_update(5, 42, "return days?"),
        )
        .await;
    assert_eq!(r.status, 200);
    let deadline = std::time::Instant::now() + WAIT;
    let error = loop {
        let row: (Option<String>, bool) = sqlx::query_as(
            "SELECT last_error, failed_at IS NOT NULL FROM gateway_inbox WHERE provider_message_id = 'tg:42:5'",
        )
        .fetch_one(&s.pool)
        .await
        .unwrap();
        if row.1 {
            break row.0.unwrap_or_default();
        }
        assert!(std::time::Instant::now() < deadline, "never set aside");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        error.contains("400") && error.contains("chat not found"),
        "{error}"
    );
    assert!(
        !error.contains("bot-token"),
        "the token is in the URL and must not leak: {error}"
    );
    assert_eq!(s.telegram.requests().len(), 1, "a 4xx is not retried");
}

#[tokio::test(flavor = "multi_thread")]
async fn misconfiguration_is_one_clear_error() {
    let s = Stack::new().await;
    // The metrics port is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let base: Vec<(String, String)> = h(&[
        ("XIN_TENANT", "acme"),
        ("GATEWAY_HTTP_HOST", "127.0.0.1"),
        ("GATEWAY_HTTP_PORT", &free_port().to_string()),
        ("GATEWAY_METRICS_HOST", "127.0.0.1"),
        ("GATEWAY_ROUTES_FILE", &s.routes_file.display().to_string()),
        ("DATABASE_URL", &s.db_url),
        ("ORCHESTRATOR_URL", "http://127.0.0.1:9"),
        ("TENANT_SIGNING_KEY", KEY),
    ]);
    let run = |extra: &[(&str, &str)]| {
        let mut env = base.clone();
        env.extend(h(extra));
        let mut w = Workload::start("xin-gateway", "gateway-misconfigured", &env);
        let status = w.wait_exit(Duration::from_secs(30));
        (status, w.logs())
    };
    let (status, logs) = run(&[("GATEWAY_METRICS_PORT", &port)]);
    assert!(status.is_some_and(|s| !s.success()), "{logs}");
    assert!(
        logs.contains(&format!("cannot serve metrics on 127.0.0.1:{port}")),
        "{logs}"
    );
    assert!(!logs.contains("panicked"), "{logs}");

    // A superuser database role would bypass row-level security.
    let admin = std::env::var("XIN_TEST_DATABASE_URL").unwrap();
    let (status, logs) = run(&[
        ("GATEWAY_METRICS_PORT", &free_port().to_string()),
        ("DATABASE_URL", &admin),
    ]);
    assert!(status.is_some_and(|s| !s.success()), "{logs}");
    assert!(logs.contains("BYPASSRLS"), "{logs}");

    // Bad OTLP headers: one clear error, and the gateway still serves.
    let gw_port = free_port();
    let mut env = base.clone();
    env.extend(h(&[
        ("GATEWAY_HTTP_PORT", &gw_port.to_string()),
        ("GATEWAY_METRICS_PORT", &free_port().to_string()),
        ("OTEL_EXPORTER_ENDPOINT", "http://127.0.0.1:9"),
        (
            "OTEL_EXPORTER_HEADERS",
            "authorization=Bearer x,s3cret-without-equals",
        ),
    ]));
    let mut w = Workload::start("xin-gateway", "gateway-bad-otel", &env);
    w.wait_ready(&format!("127.0.0.1:{gw_port}"), "/ready");
    let logs = w.logs();
    assert_eq!(logs.matches("tracing not initialised").count(), 1, "{logs}");
    assert!(!logs.contains("panicked"), "{logs}");
    assert!(
        logs.contains("entry 2 is not key=value") && !logs.contains("s3cret"),
        "{logs}"
    );
    drop(taken);
}
