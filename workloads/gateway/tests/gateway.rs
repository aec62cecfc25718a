//! The gateway over real HTTP on loopback, against a real PostgreSQL (`e2e/postgres.sh`,
//! started by `make test`; `XIN_TEST_DATABASE_URL` names it). Each test gets its own database.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;
use xin_api::channel::ChannelType;
use xin_api::routes::{ChannelRoute, Credentials, Routes, Time, WebhookKey};
use xin_gateway::routes::{self, RouteTable};
use xin_gateway::verify::meta_sign;
use xin_gateway::widget::{identity_token, legacy_identity_token};
use xin_gateway::{Gateway, app};
use xin_runtime::HttpMetrics;

struct Reply {
    status: u16,
    headers: String,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    Reply {
        status,
        headers: head.to_string(),
        body: body.to_string(),
    }
}

fn route(name: &str, type_: ChannelType) -> ChannelRoute {
    let mut credentials = Credentials::default();
    match type_ {
        ChannelType::Telegram => credentials.bot_token = Some("1:bot".into()),
        ChannelType::Whatsapp => {
            credentials.app_secret = Some("app-secret".into());
            credentials.verify_token = Some("verify-me".into());
        }
        ChannelType::Instagram => credentials.app_secret = Some("app-secret".into()),
        ChannelType::Web => {}
    }
    ChannelRoute {
        name: name.into(),
        type_,
        path: format!("/webhooks/{name}"),
        suspended: false,
        max_body_bytes: 4096,
        requests_per_second: 1000,
        burst: 1000,
        keys: vec![WebhookKey {
            key: format!("{name}-key"),
            expires_at: None,
        }],
        credentials,
        allowed_origins: vec![],
        phone_number_id: None,
        page_id: None,
        legacy_identity_tokens: false,
        anonymous_visitors: false,
        display_name: None,
        theme: None,
    }
}

struct Harness {
    addr: String,
    /// The database URL the gateway uses (an ordinary role).
    pool: PgPool,
    routes_file: std::path::PathBuf,
    metrics: HttpMetrics,
    /// The gateway being served (to observe its state).
    gw: Gateway,
    /// The test database's name.
    db: String,
    /// Holds the routes file; removed when the test ends (passed or failed).
    _dir: tempfile::TempDir,
}

async fn start(channels: Vec<ChannelRoute>) -> Harness {
    start_with(
        channels,
        xin_gateway::server::DEFAULT_HEADER_READ_TIMEOUT,
        xin_gateway::server::DEFAULT_BODY_READ_TIMEOUT,
    )
    .await
}

/// [`start`] with the public listener's timeouts.
async fn start_with(
    channels: Vec<ChannelRoute>,
    header_read_timeout: Duration,
    body_read_timeout: Duration,
) -> Harness {
    start_configured(channels, header_read_timeout, body_read_timeout, |_| {}).await
}

/// [`start_with`], the gateway changed by `configure` before it serves.
async fn start_configured(
    channels: Vec<ChannelRoute>,
    header_read_timeout: Duration,
    body_read_timeout: Duration,
    configure: impl FnOnce(&mut Gateway),
) -> Harness {
    let url = xin_store::fresh_test_database().await;
    let db = url.rsplit('/').next().unwrap().to_string();
    let pool = xin_store::connect(&url, 4).await.unwrap();
    xin_store::check_runtime_role(&pool).await.unwrap();
    let dir = tempfile::Builder::new()
        .prefix(&format!("xin-gw-{db}-"))
        .tempdir()
        .unwrap();
    let routes_file = dir.path().join("routes.json");
    let r = Routes {
        tenant: "acme".into(),
        channels,
    };
    std::fs::write(&routes_file, serde_json::to_vec(&r).unwrap()).unwrap();
    let (initial, bytes) = routes::load(&routes_file).unwrap();
    let table = RouteTable::default();
    table.set(initial);
    let metrics = HttpMetrics::default();
    routes::watch(
        routes_file.clone(),
        table.clone(),
        bytes,
        Duration::from_millis(200),
        &metrics,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut gw = Gateway::new(
        "acme".into(),
        table,
        pool.clone(),
        b"tenant-signing-key-0123456789".to_vec(),
    );
    gw.body_read_timeout = body_read_timeout;
    configure(&mut gw);
    let router = app(gw.clone(), metrics.clone());
    tokio::spawn(async move {
        xin_gateway::serve(
            listener,
            router,
            header_read_timeout,
            std::future::pending(),
        )
        .await
        .unwrap()
    });
    Harness {
        gw,
        addr,
        pool,
        routes_file,
        metrics,
        db,
        _dir: dir,
    }
}

impl Harness {
    async fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        self.req("POST", path, headers, body).await
    }

    async fn req(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        let method = method.to_string();
        let (addr, path, body) = (self.addr.clone(), path.to_string(), body.to_vec());
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        tokio::task::spawn_blocking(move || {
            let h: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            http(&addr, &method, &path, &h, &body)
        })
        .await
        .unwrap()
    }

    async fn get(&self, path: &str) -> Reply {
        let (addr, path) = (self.addr.clone(), path.to_string());
        tokio::task::spawn_blocking(move || http(&addr, "GET", &path, &[], b""))
            .await
            .unwrap()
    }

    async fn inbox(&self, channel: &str) -> Vec<(String, String)> {
        sqlx::query_as::<_, (String, String)>(
            "SELECT provider_message_id, text FROM gateway_inbox WHERE channel = $1 ORDER BY id",
        )
        .bind(channel)
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }
}

fn assert_json_error(r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    let j = r.json();
    assert_eq!(j["error"], code, "{j}");
    assert!(j["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(j["correlation_id"].as_str().is_some_and(|c| !c.is_empty()));
}

const TG_TEXT: &str = r#"{"update_id":42,"message":{"message_id":7,"date":1700000000,"chat":{"id":5000000001,"type":"private"},"text":"\u0633\u0644\u0627\u0645, where is my order?"}}"#;

#[tokio::test]
async fn telegram_updates_are_verified_stored_once_and_other_kinds_ignored() {
    let h = start(vec![route("tg", ChannelType::Telegram)]).await;
    let ok = h
        .post(
            "/webhooks/tg",
            &[
                ("X-Telegram-Bot-Api-Secret-Token", "tg-key"),
                ("X-Request-ID", "req-123"),
            ],
            TG_TEXT.as_bytes(),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    // The public edge makes its own correlation id (a client's X-Request-ID is only logged)
    // and echoes it.
    let correlation = ok
        .header("x-request-id")
        .expect("the correlation id is echoed");
    assert_ne!(
        correlation, "req-123",
        "a client's X-Request-ID is not trusted"
    );
    assert_eq!(correlation.len(), 32);
    assert_eq!(ok.json()["new"], 1);
    // The provider retries: accepted again, stored once.
    let again = h
        .post(
            "/webhooks/tg",
            &[("X-Telegram-Bot-Api-Secret-Token", "tg-key")],
            TG_TEXT.as_bytes(),
        )
        .await;
    assert_eq!((again.status, again.json()["new"].clone()), (200, json!(0)));
    assert_eq!(
        h.inbox("tg").await,
        vec![(
            "tg:5000000001:7".to_string(),
            "سلام, where is my order?".to_string()
        )]
    );
    let cid: String = sqlx::query_scalar(
        "SELECT correlation_id FROM gateway_inbox WHERE provider_message_id = 'tg:5000000001:7'",
    )
    .fetch_one(&h.pool)
    .await
    .unwrap();
    assert_eq!(
        cid, correlation,
        "the stored message carries the request's correlation id"
    );

    let wrong = h
        .post(
            "/webhooks/tg",
            &[("X-Telegram-Bot-Api-Secret-Token", "TG-KEY")],
            TG_TEXT.as_bytes(),
        )
        .await;
    assert_json_error(&wrong, 403, "invalid_signature");
    assert!(!wrong.body.contains("tg-key"), "a key must never be echoed");
    assert_json_error(
        &h.post("/webhooks/tg", &[], TG_TEXT.as_bytes()).await,
        401,
        "missing_signature",
    );
    assert_json_error(
        &h.post(
            "/webhooks/tg",
            &[("X-Telegram-Bot-Api-Secret-Token", "tg-key")],
            b"{\"update_id\":",
        )
        .await,
        400,
        "malformed_payload",
    );

    let sticker = br#"{"update_id":43,"message":{"message_id":8,"date":1700000001,"chat":{"id":1,"type":"private"},"sticker":{"file_id":"x"}}}"#;
    let r = h
        .post(
            "/webhooks/tg",
            &[("X-Telegram-Bot-Api-Secret-Token", "tg-key")],
            sticker,
        )
        .await;
    assert_eq!((r.status, r.json()["received"].clone()), (200, json!(0)));
    assert_json_error(
        &h.post("/webhooks/nope", &[], b"{}").await,
        404,
        "unknown_channel",
    );
    assert_eq!(h.inbox("tg").await.len(), 1);
}

#[tokio::test]
async fn telegram_messages_are_keyed_by_chat_and_message_id_not_update_id() {
    let h = start(vec![route("tg", ChannelType::Telegram)]).await;
    let update = |update_id: i64, message_id: i64, text: &str| {
        serde_json::to_vec(
            &json!({"update_id": update_id, "message": {"message_id": message_id,
            "date": 1700000000, "chat": {"id": 5000000001i64, "type": "private"}, "text": text}}),
        )
        .unwrap()
    };
    let post = async |body: Vec<u8>| {
        let r = h
            .post(
                "/webhooks/tg",
                &[("X-Telegram-Bot-Api-Secret-Token", "tg-key")],
                &body,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["new"].as_u64().unwrap()
    };
    assert_eq!(post(update(100, 1, "first")).await, 1);
    // The webhook was set up again: update_ids start over, the new message is still new.
    assert_eq!(post(update(100, 2, "after the reset")).await, 1);
    // Telegram delivers the first message again under another update_id: stored once.
    assert_eq!(post(update(7, 1, "first")).await, 0);
    assert_eq!(
        h.inbox("tg").await,
        vec![
            ("tg:5000000001:1".to_string(), "first".to_string()),
            ("tg:5000000001:2".to_string(), "after the reset".to_string())
        ]
    );
}

#[tokio::test]
async fn during_a_rotation_both_keys_are_accepted_until_the_old_one_expires() {
    let mut r = route("tg", ChannelType::Telegram);
    r.keys = vec![
        WebhookKey {
            key: "new".into(),
            expires_at: None,
        },
        WebhookKey {
            key: "old".into(),
            expires_at: Some(Time("2999-01-01T00:00:00Z".parse().unwrap())),
        },
        WebhookKey {
            key: "older".into(),
            expires_at: Some(Time("2001-01-01T00:00:00Z".parse().unwrap())),
        },
    ];
    let h = start(vec![r]).await;
    let body = |id: u32| {
        format!(
            r#"{{"update_id":{id},"message":{{"message_id":{id},"date":1,"chat":{{"id":1,"type":"private"}},"text":"hi"}}}}"#
        )
    };
    assert_eq!(
        h.post(
            "/webhooks/tg",
            &[("X-Telegram-Bot-Api-Secret-Token", "new")],
            body(1).as_bytes()
        )
        .await
        .status,
        200
    );
    assert_eq!(
        h.post(
            "/webhooks/tg",
            &[("X-Telegram-Bot-Api-Secret-Token", "old")],
            body(2).as_bytes()
        )
        .await
        .status,
        200
    );
    assert_eq!(
        h.post(
            "/webhooks/tg",
            &[("X-Telegram-Bot-Api-Secret-Token", "older")],
            body(3).as_bytes()
        )
        .await
        .status,
        403,
        "an expired key is refused"
    );
}

#[tokio::test]
async fn whatsapp_handshake_signature_and_batches() {
    let h = start(vec![route("wa", ChannelType::Whatsapp)]).await;
    let ok = h
        .get("/webhooks/wa?hub.mode=subscribe&hub.verify_token=verify-me&hub.challenge=1158201444")
        .await;
    assert_eq!((ok.status, ok.body.as_str()), (200, "1158201444"));
    assert!(ok.header("content-type").unwrap().starts_with("text/plain"));
    assert_eq!(
        ok.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );
    // The echo is bounded: a long "challenge" is not reflected.
    let long = "7".repeat(xin_gateway::MAX_CHALLENGE_CHARS + 1);
    let r = h
        .get(&format!(
            "/webhooks/wa?hub.mode=subscribe&hub.verify_token=verify-me&hub.challenge={long}"
        ))
        .await;
    assert_json_error(&r, 400, "invalid_challenge");
    assert!(!r.body.contains(&long));
    assert_eq!(
        r.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );
    let longest = "7".repeat(xin_gateway::MAX_CHALLENGE_CHARS);
    let r = h
        .get(&format!(
            "/webhooks/wa?hub.mode=subscribe&hub.verify_token=verify-me&hub.challenge={longest}"
        ))
        .await;
    assert_eq!((r.status, r.body.as_str()), (200, longest.as_str()));
    assert_json_error(
        &h.get("/webhooks/wa?hub.mode=subscribe&hub.verify_token=nope&hub.challenge=1")
            .await,
        403,
        "verification_failed",
    );

    // Meta escapes non-ASCII and slashes; the signature is over exactly these bytes.
    let body = br#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"messages":[{"from":"16505551234","id":"wamid.1","timestamp":"1700000000","type":"text","text":{"body":"Hi \u00e9 https:\/\/x"}},{"from":"16505551234","id":"wamid.2","type":"text","text":{"body":"second"}}]}}]},{"id":"2","changes":[{"field":"messages","value":{"statuses":[{"id":"wamid.0","status":"read"}]}}]}]}"#;
    let sig = format!("sha256={}", meta_sign("app-secret", body));
    let r = h
        .post("/webhooks/wa", &[("X-Hub-Signature-256", &sig)], body)
        .await;
    assert_eq!(
        (r.status, r.json()["new"].clone()),
        (200, json!(2)),
        "{}",
        r.body
    );
    assert_eq!(
        h.inbox("wa")
            .await
            .iter()
            .map(|(_, t)| t.as_str())
            .collect::<Vec<_>>(),
        ["Hi é https://x", "second"]
    );

    let respaced: Value = serde_json::from_slice(body).unwrap();
    let reserialised = serde_json::to_vec_pretty(&respaced).unwrap();
    assert_json_error(
        &h.post(
            "/webhooks/wa",
            &[("X-Hub-Signature-256", &sig)],
            &reserialised,
        )
        .await,
        403,
        "invalid_signature",
    );
    let wrong_secret = format!("sha256={}", meta_sign("not-the-secret", body));
    assert_json_error(
        &h.post(
            "/webhooks/wa",
            &[("X-Hub-Signature-256", &wrong_secret)],
            body,
        )
        .await,
        403,
        "invalid_signature",
    );
    assert_json_error(
        &h.post(
            "/webhooks/wa",
            &[("X-Hub-Signature-256", &sig.replace("sha256=", "sha1="))],
            body,
        )
        .await,
        403,
        "invalid_signature",
    );
    assert_json_error(
        &h.post("/webhooks/wa", &[], body).await,
        401,
        "missing_signature",
    );

    let statuses = br#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"statuses":[{"id":"wamid.9","status":"delivered"}]}}]}]}"#;
    let s = format!("sha256={}", meta_sign("app-secret", statuses));
    assert_eq!(
        h.post("/webhooks/wa", &[("X-Hub-Signature-256", &s)], statuses)
            .await
            .status,
        200
    );
    assert_eq!(h.inbox("wa").await.len(), 2);
}

#[tokio::test]
async fn meta_previous_app_secrets_count_until_expiry_and_other_accounts_are_dropped() {
    let mut wa = route("wa", ChannelType::Whatsapp);
    wa.credentials.app_secret = Some("new-secret".into());
    wa.credentials.previous_app_secrets = vec![
        WebhookKey {
            key: "old-secret".into(),
            expires_at: Some(Time("2999-01-01T00:00:00Z".parse().unwrap())),
        },
        WebhookKey {
            key: "older-secret".into(),
            expires_at: Some(Time("2001-01-01T00:00:00Z".parse().unwrap())),
        },
    ];
    wa.phone_number_id = Some("111".into());
    let mut ig = route("ig", ChannelType::Instagram);
    ig.page_id = Some("P1".into());
    let h = start(vec![wa, ig]).await;
    let foreign = format!("{}_total", xin_gateway::FOREIGN_ENTRIES);

    let wa_body = |id: &str, phone: &str| {
        format!(
            r#"{{"object":"whatsapp_business_account","entry":[{{"id":"W","changes":[{{"field":"messages","value":{{"metadata":{{"phone_number_id":"{phone}"}},"messages":[{{"from":"1","id":"{id}","type":"text","text":{{"body":"{id}"}}}}]}}}}]}}]}}"#
        )
        .into_bytes()
    };
    let post_signed = async |path: &str, secret: &str, body: &[u8]| {
        let sig = format!("sha256={}", meta_sign(secret, body));
        h.post(path, &[("X-Hub-Signature-256", sig.as_str())], body)
            .await
    };
    // The current secret and a previous one until its expiry; an expired one is refused.
    for (secret, id) in [("new-secret", "wamid.1"), ("old-secret", "wamid.2")] {
        let r = post_signed("/webhooks/wa", secret, &wa_body(id, "111")).await;
        assert_eq!(
            (r.status, r.json()["new"].clone()),
            (200, json!(1)),
            "{secret}"
        );
    }
    assert_json_error(
        &post_signed("/webhooks/wa", "older-secret", &wa_body("wamid.3", "111")).await,
        403,
        "invalid_signature",
    );
    // Signed with our app's secret, but for another of the app's numbers: not ours to store.
    let r = post_signed("/webhooks/wa", "new-secret", &wa_body("wamid.4", "222")).await;
    assert_eq!(
        (r.status, r.json()["new"].clone()),
        (200, json!(0)),
        "{}",
        r.body
    );
    assert_eq!(
        h.inbox("wa")
            .await
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>(),
        ["wa:wamid.1", "wa:wamid.2"]
    );
    assert_eq!(labelled(&h, &foreign, r#"channel="wa""#), 1);

    // Instagram: another account's entry, and a message to another recipient, are dropped.
    let ig_body = br#"{"object":"instagram","entry":[
      {"id":"P1","time":1,"messaging":[
        {"sender":{"id":"U1"},"recipient":{"id":"P1"},"timestamp":1,"message":{"mid":"m1","text":"ours"}},
        {"sender":{"id":"U2"},"recipient":{"id":"P9"},"timestamp":1,"message":{"mid":"m2","text":"not ours"}}]},
      {"id":"P2","time":1,"messaging":[
        {"sender":{"id":"U3"},"recipient":{"id":"P2"},"timestamp":1,"message":{"mid":"m3","text":"not ours"}}]}]}"#;
    let r = post_signed("/webhooks/ig", "app-secret", ig_body).await;
    assert_eq!(
        (r.status, r.json()["new"].clone()),
        (200, json!(1)),
        "{}",
        r.body
    );
    assert_eq!(
        h.inbox("ig").await,
        vec![("ig:m1".to_string(), "ours".to_string())]
    );
    assert_eq!(labelled(&h, &foreign, r#"channel="ig""#), 2);
}

#[tokio::test]
async fn instagram_echoes_are_ignored() {
    let h = start(vec![route("ig", ChannelType::Instagram)]).await;
    let body = br#"{"object":"instagram","entry":[{"id":"1","time":1,"messaging":[{"sender":{"id":"U1"},"recipient":{"id":"P"},"timestamp":1,"message":{"mid":"m1","text":"hello"}},{"sender":{"id":"P"},"recipient":{"id":"U1"},"timestamp":2,"message":{"mid":"m2","text":"echo","is_echo":true}}]}]}"#;
    let sig = format!("sha256={}", meta_sign("app-secret", body));
    let r = h
        .post("/webhooks/ig", &[("X-Hub-Signature-256", &sig)], body)
        .await;
    assert_eq!((r.status, r.json()["new"].clone()), (200, json!(1)));
    assert_eq!(
        h.inbox("ig").await,
        vec![("ig:m1".to_string(), "hello".to_string())]
    );
}

#[tokio::test]
async fn body_and_rate_limits_answer_413_and_429_with_retry_after() {
    let mut r = route("tg", ChannelType::Telegram);
    r.max_body_bytes = 1024;
    r.requests_per_second = 1;
    r.burst = 1;
    let h = start(vec![r]).await;
    // Refused before it is verified, so it takes nothing from the channel's rate.
    let big = vec![b' '; 2048];
    assert_json_error(
        &h.post(
            "/webhooks/tg",
            &[("X-Telegram-Bot-Api-Secret-Token", "tg-key")],
            &big,
        )
        .await,
        413,
        "payload_too_large",
    );
    let body = TG_TEXT.as_bytes();
    assert_eq!(
        h.post(
            "/webhooks/tg",
            &[("X-Telegram-Bot-Api-Secret-Token", "tg-key")],
            body
        )
        .await
        .status,
        200
    );
    let limited = h
        .post(
            "/webhooks/tg",
            &[("X-Telegram-Bot-Api-Secret-Token", "tg-key")],
            body,
        )
        .await;
    assert_json_error(&limited, 429, "rate_limited");
    let wait: u64 = limited
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=2).contains(&wait), "Retry-After {wait}");
}

/// A counter with labels in the gateway's metrics (0 when never incremented).
fn labelled(h: &Harness, name: &str, labels: &str) -> u64 {
    let m = h.metrics.encode();
    let prefix = format!("{name}{{{labels}}} ");
    m.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.parse().unwrap())
}

#[tokio::test]
async fn a_flood_of_unverified_requests_spends_its_own_budget_not_the_channels_rate() {
    // A channel rate of one request at a time: a flood charged to it would shut the real
    // provider out.
    let mut tg = route("tg", ChannelType::Telegram);
    let mut wa = route("wa", ChannelType::Whatsapp);
    for r in [&mut tg, &mut wa] {
        r.requests_per_second = 1;
        r.burst = 1;
    }
    let h = start(vec![tg, wa]).await;
    let refused = format!("{}_total", xin_gateway::REFUSED_REQUESTS);

    // Unsigned and wrongly signed POSTs, well past the failure budget: refused as they are
    // until the budget is spent, then 429 too_many_failures, never the channel's rate_limited.
    let body = br#"{"object":"whatsapp_business_account","entry":[]}"#;
    let forged = format!("sha256={}", meta_sign("not-the-secret", body));
    let flood = 3 * xin_gateway::limits::FAILURE_BURST as usize;
    let unsigned: &[(&str, &str)] = &[];
    let wrong_token = &[("X-Telegram-Bot-Api-Secret-Token", "wrong")];
    let wrong_signature = &[("X-Hub-Signature-256", forged.as_str())];
    for (path, kinds) in [
        ("/webhooks/tg", vec![(unsigned, 401), (wrong_token, 403)]),
        (
            "/webhooks/wa",
            vec![(unsigned, 401), (wrong_signature, 403)],
        ),
    ] {
        let mut budget_spent = 0;
        for i in 0..flood {
            let (headers, expected) = kinds[i % kinds.len()];
            let r = h.post(path, headers, body).await;
            if r.status == 429 {
                assert_json_error(&r, 429, "too_many_failures");
                assert!(r.header("retry-after").is_some());
                budget_spent += 1;
            } else {
                assert_eq!(r.status, expected, "{path}: {}", r.body);
            }
        }
        assert!(
            budget_spent > 0,
            "{path}: the failure budget was never spent"
        );
    }
    // A genuine delivery still gets through, on both channels, during the flood.
    let ok = h
        .post(
            "/webhooks/tg",
            &[("X-Telegram-Bot-Api-Secret-Token", "tg-key")],
            TG_TEXT.as_bytes(),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let sig = format!("sha256={}", meta_sign("app-secret", body));
    let ok = h
        .post(
            "/webhooks/wa",
            &[("X-Hub-Signature-256", sig.as_str())],
            body,
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    // Verified requests do meet the channel's own limit.
    let limited = h
        .post(
            "/webhooks/tg",
            &[("X-Telegram-Bot-Api-Secret-Token", "tg-key")],
            TG_TEXT.as_bytes(),
        )
        .await;
    assert_json_error(&limited, 429, "rate_limited");

    // Counted by channel and reason; an unknown channel under "unknown", never its URL name.
    assert!(h.post("/webhooks/nosuch-xq7", &[], b"{}").await.status == 404);
    for (labels, at_least) in [
        (r#"channel="tg",reason="missing_signature""#, 1),
        (r#"channel="tg",reason="invalid_signature""#, 1),
        (r#"channel="tg",reason="too_many_failures""#, 1),
        (r#"channel="tg",reason="rate_limited""#, 1),
        (r#"channel="wa",reason="missing_signature""#, 1),
        (r#"channel="wa",reason="invalid_signature""#, 1),
        (r#"channel="wa",reason="too_many_failures""#, 1),
        (r#"channel="unknown",reason="unknown_channel""#, 1),
    ] {
        let n = labelled(&h, &refused, labels);
        assert!(n >= at_least, "{labels}: {n}\n{}", h.metrics.encode());
    }
    assert!(!h.metrics.encode().contains("nosuch-xq7"));
}

/// Replaces the routes file in one step (as the kubelet swaps a Secret volume), so the
/// watcher never reads it half written.
fn replace_routes_file(path: &std::path::Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The value of an unlabelled counter in the gateway's metrics (0 before its first increment).
fn counter(h: &Harness, name: &str) -> u64 {
    let m = h.metrics.encode();
    let line = m
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no {name} in the metrics:\n{m}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_new_channel_in_the_routes_file_is_served_without_a_restart() {
    let h = start(vec![route("tg", ChannelType::Telegram)]).await;
    let failures = format!("{}_total", routes::RELOAD_FAILURES);
    assert_json_error(
        &h.post("/webhooks/tg2", &[], b"{}").await,
        404,
        "unknown_channel",
    );
    let r = Routes {
        tenant: "acme".into(),
        channels: vec![
            route("tg", ChannelType::Telegram),
            route("tg2", ChannelType::Telegram),
        ],
    };
    replace_routes_file(&h.routes_file, &serde_json::to_vec(&r).unwrap());
    let mut status = 0;
    for _ in 0..50 {
        status = h
            .post(
                "/webhooks/tg2",
                &[("X-Telegram-Bot-Api-Secret-Token", "tg2-key")],
                TG_TEXT.as_bytes(),
            )
            .await
            .status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200);
    assert_eq!(counter(&h, &failures), 0, "a good file is no failure");

    // A broken file keeps the last good routes: wait until the watcher has read and rejected
    // it, then the new channel must still be served.
    replace_routes_file(&h.routes_file, b"{broken");
    let mut rejected = 0;
    for _ in 0..100 {
        rejected = counter(&h, &failures);
        if rejected > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(rejected > 0, "the broken routes file was never rejected");
    assert_eq!(
        h.post(
            "/webhooks/tg2",
            &[("X-Telegram-Bot-Api-Secret-Token", "tg2-key")],
            TG_TEXT.as_bytes()
        )
        .await
        .status,
        200,
        "the last good routes stay in use"
    );
}

#[tokio::test]
async fn http_metrics_count_by_route_method_and_status() {
    let h = start(vec![route("tg", ChannelType::Telegram)]).await;
    h.post(
        "/webhooks/tg",
        &[("X-Telegram-Bot-Api-Secret-Token", "tg-key")],
        TG_TEXT.as_bytes(),
    )
    .await;
    h.post("/webhooks/tg", &[], TG_TEXT.as_bytes()).await;
    // A method of the client's own making is counted as OTHER, not as a label of its choice.
    let custom = h.req("XMETHOD-7F3A", "/webhooks/tg", &[], b"").await;
    assert_eq!(custom.status, 405);
    let m = h.metrics.encode();
    assert!(!m.contains("XMETHOD"), "{m}");
    assert!(
        m.contains(
            r#"http_requests_total{route="/webhooks/{channel}",method="OTHER",status_code="405"} 1"#
        ),
        "{m}"
    );
    assert!(
        m.contains(
            r#"http_requests_total{route="/webhooks/{channel}",method="POST",status_code="200"} 1"#
        ),
        "{m}"
    );
    assert!(
        m.contains(
            r#"http_requests_total{route="/webhooks/{channel}",method="POST",status_code="401"} 1"#
        ),
        "{m}"
    );
    assert!(m.contains("http_request_latency_seconds_bucket"), "{m}");
}

fn web_route(name: &str) -> ChannelRoute {
    let mut r = route(name, ChannelType::Web);
    r.allowed_origins = vec!["https://shop.example".into()];
    r.credentials.identity_secret = Some("site-identity-secret".into());
    r
}

#[tokio::test]
async fn the_widget_script_is_served_by_its_content_hash() {
    let h = start(vec![web_route("web")]).await;
    let script = std::str::from_utf8(xin_api::widget::EMBED_JS).unwrap();
    let pinned = h.get(xin_api::widget::script_path()).await;
    assert_eq!(pinned.status, 200);
    assert_eq!(pinned.body, script, "the embedded build, byte for byte");
    assert_eq!(
        pinned.header("content-type").as_deref(),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(
        pinned.header("cache-control").as_deref(),
        Some("public, max-age=31536000, immutable")
    );
    // Loaded with `integrity` from another origin: needs CORS.
    assert_eq!(
        pinned.header("access-control-allow-origin").as_deref(),
        Some("*")
    );
    assert_eq!(
        pinned.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );
    let unpinned = h.get("/widget/embed.js").await;
    assert_eq!(unpinned.body, script);
    assert_eq!(
        unpinned.header("cache-control").as_deref(),
        Some("public, max-age=300")
    );
    assert_eq!(h.get("/widget/embed.0000000000000000.js").await.status, 404);
}

fn anonymous_route(name: &str) -> ChannelRoute {
    let mut r = web_route(name);
    r.anonymous_visitors = true;
    // The channel's own limit out of the way: these tests are about the anonymous ones.
    r.requests_per_second = 10_000;
    r.burst = 10_000;
    r
}

fn visitor(n: usize) -> String {
    format!("visitor-{n:012}")
}

async fn anonymous_session(h: &Harness, visitor: &str, headers: &[(&str, &str)]) -> Reply {
    let body = serde_json::to_vec(&json!({ "visitor_id": visitor })).unwrap();
    h.post("/widget/web/session", headers, &body).await
}

#[tokio::test]
async fn the_widget_config_is_the_channels_theme_for_allowed_origins() {
    let mut web = anonymous_route("web");
    web.display_name = Some("Acme help widget".into());
    web.theme = Some(xin_api::channel::WidgetTheme {
        primary_color: Some("#0b7a75".into()),
        title: None,
        welcome_message: Some("سلام! بپرسید.".into()),
        locale: Some(xin_api::channel::WidgetLocale::Fa),
    });
    let h = start(vec![web, web_route("plain")]).await;
    let origin = ("Origin", "https://shop.example");
    let c = h.req("GET", "/widget/web/config", &[origin], b"").await;
    assert_eq!(c.status, 200, "{}", c.body);
    assert_eq!(
        c.json(),
        json!({"title": "Acme help widget", "welcome_message": "سلام! بپرسید.",
               "primary_color": "#0b7a75", "locale": "fa", "anonymous_visitors": true})
    );
    assert_eq!(
        c.header("access-control-allow-origin").as_deref(),
        Some("https://shop.example")
    );
    let plain = h.req("GET", "/widget/plain/config", &[origin], b"").await;
    assert_eq!(
        plain.json(),
        json!({"title": "plain", "anonymous_visitors": false})
    );
    // Another site may read that it is refused (so its widget says so), nothing more.
    let evil = h
        .req(
            "GET",
            "/widget/web/config",
            &[("Origin", "https://evil.example")],
            b"",
        )
        .await;
    assert_json_error(&evil, 403, "origin_not_allowed");
    assert_eq!(
        evil.header("access-control-allow-origin").as_deref(),
        Some("https://evil.example")
    );
    assert_eq!(h.get("/widget/nope/config").await.status, 404);
}

#[tokio::test]
async fn anonymous_visitors_chat_in_sessions_of_their_own() {
    let h = start(vec![anonymous_route("web"), web_route("private")]).await;
    let origin = ("Origin", "https://shop.example");
    let a = anonymous_session(&h, &visitor(1), &[origin]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = format!("Bearer {}", a.json()["session_token"].as_str().unwrap());
    let b = anonymous_session(&h, &visitor(2), &[origin]).await;
    let b = format!("Bearer {}", b.json()["session_token"].as_str().unwrap());
    let sent = h
        .post(
            "/widget/web/messages",
            &[origin, ("Authorization", &a)],
            br#"{"text": "where is my parcel?", "client_message_id": "c-1"}"#,
        )
        .await;
    assert_eq!(sent.status, 202, "{}", sent.body);
    let mine = h
        .req(
            "GET",
            "/widget/web/messages?after=0",
            &[origin, ("Authorization", &a)],
            b"",
        )
        .await;
    assert_eq!(mine.json()["messages"][0]["text"], "where is my parcel?");
    assert_eq!(mine.json()["messages"][0]["failed"], false);
    let theirs = h
        .req(
            "GET",
            "/widget/web/messages?after=0",
            &[origin, ("Authorization", &b)],
            b"",
        )
        .await;
    assert_eq!(
        theirs.json()["messages"],
        json!([]),
        "another visitor sees nothing"
    );
    let sender: String = sqlx::query_scalar("SELECT sender FROM gateway_inbox")
        .fetch_one(&h.pool)
        .await
        .unwrap();
    assert_eq!(sender, format!("anon:{}", visitor(1)));

    // Refusals, each with its own code.
    let private = h
        .post(
            "/widget/private/session",
            &[origin],
            &serde_json::to_vec(&json!({"visitor_id": visitor(3)})).unwrap(),
        )
        .await;
    assert_json_error(&private, 403, "anonymous_visitors_not_allowed");
    assert_json_error(
        &anonymous_session(&h, "short", &[origin]).await,
        400,
        "invalid_visitor_id",
    );
    assert_json_error(
        &anonymous_session(&h, "has spaces in it, too", &[origin]).await,
        400,
        "invalid_visitor_id",
    );
    let both = json!({"visitor_id": visitor(4), "user_id": "u", "identity_token": "t"});
    assert_json_error(
        &h.post(
            "/widget/web/session",
            &[origin],
            &serde_json::to_vec(&both).unwrap(),
        )
        .await,
        400,
        "ambiguous_session_request",
    );
    assert_json_error(
        &h.post("/widget/web/session", &[origin], b"{}").await,
        400,
        "missing_identity",
    );
    // An identified user can never be an anonymous visitor's id.
    let exp = xin_runtime::signing::now() + 600;
    let user = format!("anon:{}", visitor(1));
    let token = identity_token("site-identity-secret", "web", &user, exp);
    let posing = json!({"user_id": user, "identity_token": token});
    assert_json_error(
        &h.post(
            "/widget/web/session",
            &[origin],
            &serde_json::to_vec(&posing).unwrap(),
        )
        .await,
        400,
        "invalid_user_id",
    );
}

#[tokio::test]
async fn anonymous_limits_hold_per_visitor_and_per_address() {
    use xin_gateway::limits::{ANONYMOUS_ADDRESS_BURST, ANONYMOUS_VISITOR_BURST};
    let h = start(vec![anonymous_route("web")]).await;
    let origin = ("Origin", "https://shop.example");
    // One visitor: its burst, then 429 with Retry-After.
    for n in 0..ANONYMOUS_VISITOR_BURST as usize {
        let r = anonymous_session(&h, &visitor(0), &[origin]).await;
        assert_eq!(r.status, 200, "request {n}: {}", r.body);
    }
    let over = anonymous_session(&h, &visitor(0), &[origin]).await;
    assert_json_error(&over, 429, "rate_limited");
    assert!(over.header("retry-after").is_some());
    // New visitor ids from the same address: the address's burst, then 429 for any visitor.
    let spent = ANONYMOUS_VISITOR_BURST as usize + 1;
    for n in spent..ANONYMOUS_ADDRESS_BURST as usize {
        let r = anonymous_session(&h, &visitor(n), &[origin]).await;
        assert_eq!(r.status, 200, "request {n}: {}", r.body);
    }
    let r = anonymous_session(&h, &visitor(10_000), &[origin]).await;
    assert_json_error(&r, 429, "rate_limited");
    // Not from a trusted proxy, X-Forwarded-For changes nothing.
    let r = anonymous_session(
        &h,
        &visitor(10_001),
        &[origin, ("X-Forwarded-For", "198.51.100.1")],
    )
    .await;
    assert_json_error(&r, 429, "rate_limited");
    let refusals = h.metrics.encode();
    assert!(
        refusals.contains(r#"gateway_refused_requests_total{channel="web",reason="rate_limited"}"#),
        "{refusals}"
    );
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit() {
    use xin_gateway::limits::ANONYMOUS_ADDRESS_BURST;
    let h = start_configured(
        vec![anonymous_route("web")],
        xin_gateway::server::DEFAULT_HEADER_READ_TIMEOUT,
        xin_gateway::server::DEFAULT_BODY_READ_TIMEOUT,
        |gw| {
            gw.trusted_proxies =
                std::sync::Arc::new(xin_gateway::client::parse_trusted("127.0.0.1").unwrap())
        },
    )
    .await;
    let origin = ("Origin", "https://shop.example");
    let client = |ip: &'static str| ("X-Forwarded-For", ip);
    for n in 0..ANONYMOUS_ADDRESS_BURST as usize {
        let r = anonymous_session(&h, &visitor(n), &[origin, client("198.51.100.1")]).await;
        assert_eq!(r.status, 200, "request {n}: {}", r.body);
    }
    let r = anonymous_session(&h, &visitor(999), &[origin, client("198.51.100.1")]).await;
    assert_json_error(&r, 429, "rate_limited");
    // Another client behind the same proxy is not held back by the first.
    let r = anonymous_session(&h, &visitor(1000), &[origin, client("198.51.100.2")]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // A client cannot pick its address by writing the header itself: the proxy's entry (the
    // last) is the one read.
    let r = anonymous_session(
        &h,
        &visitor(1001),
        &[origin, client("203.0.113.77, 198.51.100.1")],
    )
    .await;
    assert_json_error(&r, 429, "rate_limited");
}

#[tokio::test]
async fn widget_cors_identity_and_session_tokens() {
    let h = start(vec![web_route("web")]).await;
    let origin = ("Origin", "https://shop.example");

    // Preflight: allowed origin gets the CORS headers, another origin a JSON 403.
    let pre = h
        .req("OPTIONS", "/widget/web/messages", &[origin], b"")
        .await;
    assert_eq!(pre.status, 204, "{}", pre.body);
    assert_eq!(
        pre.header("access-control-allow-origin").as_deref(),
        Some("https://shop.example")
    );
    assert!(
        pre.header("access-control-allow-headers")
            .unwrap()
            .contains("authorization")
    );
    let evil = h
        .req(
            "OPTIONS",
            "/widget/web/messages",
            &[("Origin", "https://evil.example")],
            b"",
        )
        .await;
    assert_json_error(&evil, 403, "origin_not_allowed");
    assert_eq!(evil.header("access-control-allow-origin"), None);

    // Identity token: the user id, channel and expiry signed with the site's secret.
    let exp = xin_runtime::signing::now() + 600;
    let good = identity_token("site-identity-secret", "web", "user-7", exp);
    let wrong = identity_token("another-secret", "web", "user-7", exp);
    let sess = |tok: &str| {
        serde_json::to_vec(&json!({"user_id": "user-7", "identity_token": tok})).unwrap()
    };
    assert_json_error(
        &h.post("/widget/web/session", &[origin], &sess(&wrong))
            .await,
        403,
        "invalid_identity_token",
    );
    assert_json_error(
        &h.post("/widget/web/session", &[origin], b"{not json").await,
        400,
        "malformed_json",
    );
    let ok = h.post("/widget/web/session", &[origin], &sess(&good)).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(
        ok.header("access-control-allow-origin").as_deref(),
        Some("https://shop.example")
    );
    let token = ok.json()["session_token"].as_str().unwrap().to_string();
    let bearer = format!("Bearer {token}");
    let auth = ("Authorization", bearer.as_str());

    // Messages need the session; they land in the inbox under the session's user.
    let msg =
        serde_json::to_vec(&json!({"text": "سلام، ساعت کاری؟", "client_message_id": "c1"})).unwrap();
    assert_json_error(
        &h.post("/widget/web/messages", &[origin], &msg).await,
        401,
        "missing_session",
    );
    let forged = format!("Bearer {}x", &token[..token.len() - 1]);
    assert_json_error(
        &h.post(
            "/widget/web/messages",
            &[origin, ("Authorization", forged.as_str())],
            &msg,
        )
        .await,
        401,
        "invalid_session",
    );
    let sent = h.post("/widget/web/messages", &[origin, auth], &msg).await;
    assert_eq!(sent.status, 202, "{}", sent.body);
    let again = h.post("/widget/web/messages", &[origin, auth], &msg).await;
    assert_eq!(
        again.json()["message_id"],
        sent.json()["message_id"],
        "a resent message is stored once"
    );
    assert_eq!(
        h.inbox("web").await,
        vec![(
            xin_gateway::widget::widget_message_id("user-7", "c1"),
            "سلام، ساعت کاری؟".to_string()
        )]
    );
    let empty = serde_json::to_vec(&json!({"text": "  "})).unwrap();
    assert_json_error(
        &h.post("/widget/web/messages", &[origin, auth], &empty)
            .await,
        400,
        "invalid_text",
    );

    // Reading back: the user's own messages only.
    let list = h
        .req("GET", "/widget/web/messages?after=0", &[origin, auth], b"")
        .await;
    assert_eq!(list.status, 200, "{}", list.body);
    let msgs = list.json()["messages"].as_array().unwrap().clone();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0]["answer"], Value::Null);
    let other_user = xin_gateway::widget::issue_session(
        b"tenant-signing-key-0123456789",
        "web",
        "user-8",
        i64::MAX,
    );
    let other = format!("Bearer {other_user}");
    let theirs = h
        .req(
            "GET",
            "/widget/web/messages",
            &[("Authorization", other.as_str())],
            b"",
        )
        .await;
    assert_eq!(theirs.json()["messages"].as_array().unwrap().len(), 0);

    // Webhook endpoints refuse web channels without a 5xx.
    assert_json_error(
        &h.post("/webhooks/web", &[], b"{}").await,
        405,
        "not_a_webhook_channel",
    );
}

#[tokio::test]
async fn a_client_stalling_in_its_headers_or_body_is_cut_off() {
    // Short timeouts for the test; the defaults are 10 s and 30 s.
    let h = start_with(
        vec![route("tg", ChannelType::Telegram)],
        Duration::from_secs(1),
        Duration::from_secs(1),
    )
    .await;
    let addr = h.addr.clone();
    tokio::task::spawn_blocking(move || {
        // Half a header line, then nothing: the gateway closes the connection. The client's
        // own read timeout is only a bound on the test; reaching it means no disconnect.
        let mut s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(b"POST /webhooks/tg HTTP/1.1\r\nHost: x\r\nX-Telegram-Bot-Api-Se")
            .unwrap();
        let mut buf = Vec::new();
        match s.read_to_end(&mut buf) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("the stalled connection was not closed: {e}"),
        }
        // Nothing but, at most, an error status: never a request served.
        let text = String::from_utf8_lossy(&buf);
        assert!(text.is_empty() || !text.starts_with("HTTP/1.1 2"), "{text}");

        // Whole headers, part of the body, then nothing: 408 and the connection closed.
        let mut s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(
            b"POST /webhooks/tg HTTP/1.1\r\nHost: x\r\nX-Telegram-Bot-Api-Secret-Token: tg-key\r\nContent-Length: 100\r\n\r\n{\"update_id\":",
        )
        .unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)
            .expect("the stalled body was answered and the connection closed");
        let text = String::from_utf8_lossy(&buf);
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(text.contains(r#""error":"body_timeout""#), "{text}");
    })
    .await
    .unwrap();
    // The gateway still serves.
    let ok = h
        .post(
            "/webhooks/tg",
            &[("X-Telegram-Bot-Api-Secret-Token", "tg-key")],
            TG_TEXT.as_bytes(),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
}

#[tokio::test]
async fn ready_answers_503_soon_when_the_database_does_not() {
    // A port that accepts connections (the kernel's backlog) and never answers: the pool's
    // connect hangs, as it does for a database behind a dropped route.
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("postgres://gw:pw@{}/acme", black_hole.local_addr().unwrap());
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy(&url)
        .unwrap();
    let gw = Gateway::new(
        "acme".into(),
        RouteTable::default(),
        pool,
        b"tenant-signing-key-0123456789".to_vec(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let router = app(gw, HttpMetrics::default());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    // A hang (or the pool's 5-s acquire timeout) fails the test; the answer must be a 503.
    let r = tokio::time::timeout(
        Duration::from_secs(3),
        tokio::task::spawn_blocking(move || http(&addr, "GET", "/ready", &[], b"")),
    )
    .await
    .expect("/ready did not answer within 3 s")
    .unwrap();
    assert_eq!(r.status, 503, "{}", r.body);
    drop(black_hole);
}

/// Starts a widget long poll and leaves it open (the answer is read later, or never).
fn open_poll(addr: &str, bearer: &str, wait: u64) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET /widget/web/messages?wait={wait} HTTP/1.1\r\nHost: x\r\nAuthorization: {bearer}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    s
}

fn read_reply(mut s: TcpStream) -> String {
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn widget_polls_are_capped_per_session_and_user_and_rate_limited() {
    let h = start(vec![web_route("web")]).await;
    let key = b"tenant-signing-key-0123456789";
    let bearer = |user: &str, exp: i64| {
        format!(
            "Bearer {}",
            xin_gateway::widget::issue_session(key, "web", user, exp)
        )
    };
    let far = xin_runtime::signing::now() + 3600;
    // Three sessions of user-7 (tabs), one of user-8.
    let (a1, a2, a3) = (
        bearer("user-7", far),
        bearer("user-7", far + 1),
        bearer("user-7", far + 2),
    );
    let b = bearer("user-8", far);
    let poll_now = async |bearer: &str| {
        h.req(
            "GET",
            "/widget/web/messages?wait=0",
            &[("Authorization", bearer)],
            b"",
        )
        .await
    };
    // Positive evidence that the held polls are open on the gateway before probing.
    let wait_open = async |n: usize| {
        for _ in 0..200 {
            if h.gw.polls.open_now() == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("{n} polls never open (now {})", h.gw.polls.open_now());
    };

    // The session's cap: two held polls, then a third is refused.
    let held: Vec<TcpStream> = (0..xin_gateway::MAX_POLLS_PER_SESSION)
        .map(|_| open_poll(&h.addr, &a1, 5))
        .collect();
    wait_open(xin_gateway::MAX_POLLS_PER_SESSION).await;
    let capped = poll_now(&a1).await;
    assert_json_error(&capped, 429, "too_many_polls");
    assert!(
        capped.json()["message"]
            .as_str()
            .unwrap()
            .contains("session")
    );
    assert_eq!(capped.header("retry-after").as_deref(), Some("1"));
    // The user's cap: the user's other sessions may add polls up to the user's total only.
    let more: Vec<TcpStream> = (xin_gateway::MAX_POLLS_PER_SESSION
        ..xin_gateway::MAX_POLLS_PER_USER)
        .map(|_| open_poll(&h.addr, &a2, 5))
        .collect();
    wait_open(xin_gateway::MAX_POLLS_PER_USER).await;
    let capped = poll_now(&a3).await;
    assert_json_error(&capped, 429, "too_many_polls");
    assert!(capped.json()["message"].as_str().unwrap().contains("user"));
    // Another user is not held back by user-7's polls.
    assert_eq!(poll_now(&b).await.status, 200);
    // Held polls end (their wait runs out) and free their places.
    for s in held.into_iter().chain(more) {
        let reply = tokio::task::spawn_blocking(move || read_reply(s))
            .await
            .unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    }
    assert_eq!(poll_now(&a1).await.status, 200);

    // The poll rate: user-8 polling in a tight loop meets 429 rate_limited.
    let mut limited = None;
    for _ in 0..(2 * xin_gateway::polls::POLL_BURST as usize + 10) {
        let r = poll_now(&b).await;
        if r.status == 429 {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let limited = limited.expect("user-8's polls were never rate limited");
    assert_json_error(&limited, 429, "rate_limited");
    assert!(limited.header("retry-after").is_some());
    let refused = format!("{}_total", xin_gateway::REFUSED_REQUESTS);
    assert!(labelled(&h, &refused, r#"channel="web",reason="too_many_polls""#) >= 2);
    assert!(labelled(&h, &refused, r#"channel="web",reason="rate_limited""#) >= 1);
}

#[tokio::test]
async fn identity_tokens_expire_are_bound_to_the_channel_and_legacy_ones_need_the_flag() {
    let mut legacy_ok = web_route("old-site");
    legacy_ok.legacy_identity_tokens = true;
    let h = start(vec![web_route("web"), legacy_ok]).await;
    let now = xin_runtime::signing::now();
    let session = async |channel: &str, token: &str| {
        let body =
            serde_json::to_vec(&json!({"user_id": "user-7", "identity_token": token})).unwrap();
        h.post(&format!("/widget/{channel}/session"), &[], &body)
            .await
    };
    let secret = "site-identity-secret";
    let ok = session("web", &identity_token(secret, "web", "user-7", now + 600)).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_json_error(
        &session("web", &identity_token(secret, "web", "user-7", now - 1)).await,
        403,
        "identity_token_expired",
    );
    assert_json_error(
        &session(
            "web",
            &identity_token(secret, "web", "user-7", now + 7 * 86_400),
        )
        .await,
        403,
        "identity_token_expiry_too_far",
    );
    // A token for another channel of the same site (same secret) does not open this one.
    assert_json_error(
        &session(
            "web",
            &identity_token(secret, "old-site", "user-7", now + 600),
        )
        .await,
        403,
        "invalid_identity_token",
    );
    // The old format: refused with its own code, unless the channel still accepts it.
    let legacy = legacy_identity_token(secret, "user-7");
    assert_json_error(&session("web", &legacy).await, 403, "legacy_identity_token");
    let r = session("old-site", &legacy).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = session(
        "old-site",
        &identity_token(secret, "old-site", "user-7", now + 600),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn nul_bytes_and_long_widget_ids_are_stored_not_refused_with_a_5xx() {
    let mut web = web_route("web");
    web.max_body_bytes = 1 << 16;
    let h = start(vec![route("wa", ChannelType::Whatsapp), web]).await;
    // A NUL in one message of a batch: stored (as U+FFFD) with the rest, never a 5xx.
    let body = br#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"messages":[
      {"from":"1","id":"wamid.N","type":"text","text":{"body":"a\u0000b"}},
      {"from":"2","id":"wamid.M","type":"text","text":{"body":"fine"}}]}}]}]}"#;
    let sig = format!("sha256={}", meta_sign("app-secret", body));
    let r = h
        .post("/webhooks/wa", &[("X-Hub-Signature-256", &sig)], body)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let stored = h.inbox("wa").await;
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].1, "a\u{fffd}b");

    // The widget refuses NUL in text with a 400; the longest user and client ids still give
    // a fixed-length inbox key, and ids with ':' cannot collide.
    let user = "u:".repeat(64);
    let token = identity_token(
        "site-identity-secret",
        "web",
        &user,
        xin_runtime::signing::now() + 600,
    );
    let s = h
        .post(
            "/widget/web/session",
            &[],
            &serde_json::to_vec(&json!({"user_id": user, "identity_token": token})).unwrap(),
        )
        .await;
    assert_eq!(s.status, 200, "{}", s.body);
    let bearer = format!("Bearer {}", s.json()["session_token"].as_str().unwrap());
    let auth = ("Authorization", bearer.as_str());
    let nul = serde_json::to_vec(&json!({"text": "a\u{0}b"})).unwrap();
    assert_json_error(
        &h.post("/widget/web/messages", &[auth], &nul).await,
        400,
        "invalid_text",
    );
    let long =
        serde_json::to_vec(&json!({"text": "hi", "client_message_id": "c".repeat(128)})).unwrap();
    assert_eq!(
        h.post("/widget/web/messages", &[auth], &long).await.status,
        202
    );
    let key = &h.inbox("web").await[0].0;
    assert_eq!(key.len(), 4 + 64, "{key}");
    assert_ne!(
        xin_gateway::widget::widget_message_id("a", "b:c"),
        xin_gateway::widget::widget_message_id("a:b", "c")
    );
}

#[tokio::test]
async fn a_channel_whose_keys_are_empty_accepts_nothing() {
    let mut tg = route("tg", ChannelType::Telegram);
    tg.keys[0].key = String::new();
    let mut wa = route("wa", ChannelType::Whatsapp);
    wa.credentials.app_secret = Some(" ".into());
    let h = start(vec![tg, wa]).await;
    // An empty token would equal the empty key; a signature with an empty secret is one
    // anyone can compute. Both are refused, and nothing is stored.
    let r = h
        .post(
            "/webhooks/tg",
            &[("X-Telegram-Bot-Api-Secret-Token", "")],
            TG_TEXT.as_bytes(),
        )
        .await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["error"], "channel_not_configured", "{}", r.body);
    let body = br#"{"object":"whatsapp_business_account","entry":[]}"#;
    let forged = format!("sha256={}", xin_gateway::verify::meta_sign(" ", body));
    let r = h
        .post(
            "/webhooks/wa",
            &[("X-Hub-Signature-256", forged.as_str())],
            body,
        )
        .await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(h.inbox("tg").await.is_empty());
}

/// A superuser pool on the test database `db` (to hold locks and add triggers behind the
/// gateway's back).
async fn admin_pool(db: &str) -> PgPool {
    let admin = xin_store::test_admin_url();
    let (server, _) = admin.rsplit_once('/').unwrap();
    xin_store::connect(&format!("{server}/{db}"), 2)
        .await
        .unwrap()
}

/// How many of `db`'s sessions wait on a lock.
async fn lock_waiters(admin: &PgPool, db: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
    )
    .bind(db)
    .fetch_one(admin)
    .await
    .unwrap()
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let start = std::time::Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn tg_update(chat: i64, message_id: i64, text: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "update_id": message_id,
        "message": {"message_id": message_id, "date": 1700000000, "chat": {"id": chat, "type": "private"}, "text": text}
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_accepts_share_commits_and_each_request_gets_its_own_count() {
    use xin_gateway::inbox::InboxSettings;
    use xin_gateway::providers::Inbound;
    let url = xin_store::fresh_test_database().await;
    let db = url.rsplit('/').next().unwrap().to_string();
    let pool = xin_store::connect(&url, 4).await.unwrap();
    let gw = Gateway::new(
        "acme".into(),
        RouteTable::default(),
        pool.clone(),
        b"tenant-signing-key-0123456789".to_vec(),
    )
    .with_inbox_settings(InboxSettings {
        max_batch_rows: 16,
        commits_in_flight: 2,
    });
    let admin = admin_pool(&db).await;
    // Hold the inbox so that commits wait: every request that comes meanwhile queues up.
    let mut lock = admin.begin().await.unwrap();
    sqlx::query("LOCK TABLE gateway_inbox IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let send = |key: String| {
        let gw = gw.clone();
        tokio::spawn(async move {
            let m = Inbound {
                provider_message_id: key.clone(),
                sender: "5000000001".into(),
                text: format!("text {key}"),
            };
            let new = xin_gateway::accept(
                &gw,
                "tg",
                &[m],
                &xin_runtime::CorrelationId(format!("c-{key}")),
            )
            .await;
            (key, new)
        })
    };
    // Two lone requests take both commit slots, one after the other …
    let mut tasks = vec![send("m0".into())];
    wait_for("the first commit to wait on the lock", async || {
        lock_waiters(&admin, &db).await == 1
    })
    .await;
    tasks.push(send("m1".into()));
    wait_for("the second commit to wait on the lock", async || {
        lock_waiters(&admin, &db).await == 2
    })
    .await;
    // … and 38 more queue behind them: 34 new messages and 4 a provider sends again.
    for i in 2..36 {
        tasks.push(send(format!("m{i}")));
    }
    for i in [0, 5, 20, 35] {
        tasks.push(send(format!("m{i}")));
    }
    wait_for("38 requests queued for the committer", async || {
        gw.inbox.queued() == 38
    })
    .await;
    lock.rollback().await.unwrap();
    let mut new_per_key = std::collections::BTreeMap::<String, u64>::new();
    for t in tasks {
        let (key, new) = t.await.unwrap();
        *new_per_key.entry(key).or_default() += new.expect("accepted");
    }
    // Each message counted new exactly once, whichever of its requests carried it first.
    assert_eq!(new_per_key.len(), 36);
    assert!(new_per_key.values().all(|n| *n == 1), "{new_per_key:?}");
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT provider_message_id FROM gateway_inbox ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    let mut distinct = stored.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!((stored.len(), distinct.len()), (36, 36));
    // Commits: the two lone ones, then the 38 queued in batches of at most 16.
    let mut text = String::new();
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register(
        xin_gateway::inbox::BATCH_MESSAGES,
        "",
        gw.inbox.batch_sizes(),
    );
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let sample = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in {text}"))
    };
    assert_eq!(sample("gateway_accept_batch_messages_count"), 5.0, "{text}");
    assert_eq!(sample("gateway_accept_batch_messages_sum"), 40.0, "{text}");
    assert_eq!(
        sample("gateway_accept_batch_messages_bucket{le=\"16.0\"}"),
        5.0,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_answers_503_to_its_own_requests_only_and_the_next_commit_works() {
    let h = start(vec![route("tg", ChannelType::Telegram)]).await;
    let admin = admin_pool(&h.db).await;
    // A write the database refuses: a trigger that fails one text.
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF NEW.text = 'poison' THEN RAISE EXCEPTION 'poisoned'; END IF; RETURN NEW; END $$;
         CREATE TRIGGER refuse_poison BEFORE INSERT ON gateway_inbox
         FOR EACH ROW EXECUTE FUNCTION refuse_poison();",
    )
    .execute(&admin)
    .await
    .unwrap();
    let post = |body: Vec<u8>| {
        let addr = h.addr.clone();
        tokio::task::spawn_blocking(move || {
            http(
                &addr,
                "POST",
                "/webhooks/tg",
                &[("X-Telegram-Bot-Api-Secret-Token", "tg-key")],
                &body,
            )
        })
    };
    // Two commits in flight at once, the poisoned one first.
    let mut lock = admin.begin().await.unwrap();
    sqlx::query("LOCK TABLE gateway_inbox IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let poisoned = post(tg_update(1, 1, "poison"));
    wait_for("the poisoned commit to wait on the lock", async || {
        lock_waiters(&admin, &h.db).await == 1
    })
    .await;
    let fine = post(tg_update(2, 2, "fine"));
    wait_for("the second commit to wait on the lock", async || {
        lock_waiters(&admin, &h.db).await == 2
    })
    .await;
    lock.rollback().await.unwrap();
    let (poisoned, fine) = (poisoned.await.unwrap(), fine.await.unwrap());
    assert_json_error(&poisoned, 503, "inbox_unavailable");
    assert!(!poisoned.body.contains("poisoned"), "{}", poisoned.body);
    assert_eq!(
        (fine.status, fine.json()["new"].clone()),
        (200, json!(1)),
        "{}",
        fine.body
    );
    // The committer goes on, and the provider's retry of the refused update is stored.
    sqlx::raw_sql("DROP TRIGGER refuse_poison ON gateway_inbox")
        .execute(&admin)
        .await
        .unwrap();
    let retried = post(tg_update(1, 1, "poison")).await.unwrap();
    assert_eq!(
        (retried.status, retried.json()["new"].clone()),
        (200, json!(1)),
        "{}",
        retried.body
    );
    assert_eq!(
        h.inbox("tg")
            .await
            .iter()
            .map(|(_, t)| t.as_str())
            .collect::<Vec<_>>(),
        ["fine", "poison"]
    );
}
