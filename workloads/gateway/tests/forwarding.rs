//! The forwarding worker in process against a real PostgreSQL (`XIN_TEST_DATABASE_URL`) and an
//! orchestrator stand-in: concurrent forwards keep each message's correlation id in their own
//! log lines, and a worker whose lease was taken over cannot finish the row.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use prometheus_client::metrics::family::Family;
use serde_json::{Value, json};
use sqlx::PgPool;
use xin_api::channel::ChannelType;
use xin_api::routes::{ChannelRoute, Credentials, Routes};
use xin_e2e::workload::{Answer, Recorded, StandIn};
use xin_gateway::backlog::Backlog;
use xin_gateway::forward::Forwarder;
use xin_gateway::providers::Inbound;
use xin_gateway::reply::ProviderApis;
use xin_gateway::routes::RouteTable;
use xin_gateway::{Gateway, accept};
use xin_runtime::CorrelationId;

/// Every log line of this test binary, as the gateway writes them (JSON, the current span's
/// fields under `span`), kept in memory.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn lines(&self) -> Vec<Value> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }
}

/// The process-wide log capture, set up as the workloads set up their logs
/// (`xin_runtime::init_telemetry`): JSON, flattened events, the current span's fields.
fn logs() -> Logs {
    static LOGS: OnceLock<Logs> = OnceLock::new();
    LOGS.get_or_init(|| {
        use tracing_subscriber::layer::SubscriberExt;
        let logs = Logs::default();
        let w = logs.clone();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_subscriber::filter::LevelFilter::INFO)
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(move || w.clone()),
            );
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
        logs
    })
    .clone()
}

fn web_route() -> ChannelRoute {
    ChannelRoute {
        name: "web".into(),
        type_: ChannelType::Web,
        path: "/webhooks/web".into(),
        suspended: false,
        max_body_bytes: 4096,
        requests_per_second: 1000,
        burst: 1000,
        keys: vec![],
        credentials: Credentials::default(),
        allowed_origins: vec![],
        phone_number_id: None,
        page_id: None,
        legacy_identity_tokens: false,
        anonymous_visitors: false,
        display_name: None,
        theme: None,
    }
}

async fn setup(orchestrator: &str, concurrency: usize) -> (Gateway, Forwarder) {
    let url = xin_store::fresh_test_database().await;
    let pool: PgPool = xin_store::connect(&url, 8).await.unwrap();
    let table = RouteTable::default();
    table.set(Routes {
        tenant: "acme".into(),
        channels: vec![web_route()],
    });
    let gw = Gateway::new(
        "acme".into(),
        table.clone(),
        pool.clone(),
        b"tenant-signing-key-0123456789".to_vec(),
    );
    let fwd = Forwarder {
        pool,
        routes: table,
        client: xin_runtime::http_client(Duration::from_secs(30)),
        orchestrator: orchestrator.into(),
        signing_key: Arc::new(b"tenant-signing-key-0123456789".to_vec()),
        apis: ProviderApis {
            telegram: "http://127.0.0.1:9".into(),
            meta: "http://127.0.0.1:9".into(),
        },
        wake: gw.wake.clone(),
        answered: gw.answered.clone(),
        lease: Duration::from_secs(60),
        max_attempts: 12,
        concurrency,
        outcomes: Family::default(),
        backlog: Default::default(),
    };
    (gw, fwd)
}

/// Accepts one widget message from `sender` under `correlation_id`.
async fn accept_one(gw: &Gateway, sender: &str, text: &str, correlation_id: &str) {
    let m = Inbound {
        provider_message_id: format!("web:{sender}"),
        sender: sender.into(),
        text: text.into(),
    };
    let new = accept(gw, "web", &[m], &CorrelationId(correlation_id.into()))
        .await
        .unwrap();
    assert_eq!(new, 1);
}

const ANSWERED: &str = "message answered and replied";
const GAVE_UP: &str = "giving up on a message (dead letter)";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_forwards_log_each_messages_own_correlation_id() {
    let logs = logs();
    // The orchestrator stand-in answers after a pause (so that many forwards are in flight at
    // once) and refuses every third message as invalid (422: set aside at once), echoing the
    // X-Request-ID it was sent in its refusal.
    let orchestrator = StandIn::start(|r: &Recorded| {
        let corr = r.header("x-request-id").unwrap_or_default().to_string();
        let mut a = if r.json()["text"]
            .as_str()
            .unwrap_or_default()
            .contains("refuse")
        {
            Answer::json(422, json!({"error": "invalid", "seen_request_id": corr}))
        } else {
            Answer::json(
                200,
                json!({"conversation": {"id": format!("conv-{corr}")}, "answer": {"text": format!("answer for {corr}")}}),
            )
        };
        a.delay = Duration::from_millis(150);
        a
    });
    let (gw, fwd) = setup(&orchestrator.url(), 8).await;
    // 50 messages from 50 users (all may run at once; the worker takes 8 at a time).
    let run = format!("{:08x}", rand::random::<u32>());
    let mut refused = HashMap::new();
    for i in 0..50 {
        let corr = format!("fwd-{run}-{i:02}");
        let text = if i % 3 == 0 { "please refuse" } else { "hello" };
        accept_one(&gw, &format!("user-{i}"), text, &corr).await;
        refused.insert(corr, i % 3 == 0);
    }
    // The backlog gauges, as the gateway registers them.
    let metrics = xin_runtime::HttpMetrics::default();
    let mut fwd = fwd;
    fwd.backlog = Backlog::register(&metrics, &gw.polls);
    fwd.backlog.refresh(&gw.pool).await.unwrap();
    let text = metrics.encode();
    assert!(text.contains("gateway_inbox_pending 50\n"), "{text}");
    assert!(text.contains("gateway_inbox_dead_letters 0\n"), "{text}");
    assert!(text.contains("gateway_widget_polls_open 0\n"), "{text}");
    let oldest = metric_value(&text, "gateway_inbox_oldest_pending_age_seconds");
    assert!(oldest > 0.0 && oldest < 600.0, "{oldest}");
    let worker = tokio::spawn(fwd.clone().run());

    // Positive evidence that every message is done: 50 final log lines are written (whatever
    // span they are in; that is checked below). No other test of this binary runs a worker.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = logs
            .lines()
            .iter()
            .filter(|l| l["message"] == ANSWERED || l["message"] == GAVE_UP)
            .count();
        if done >= 50 {
            break;
        }
        assert!(Instant::now() < deadline, "{done} of 50 forwarded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.abort();

    let ids: HashMap<i64, String> =
        sqlx::query_as::<_, (i64, String)>("SELECT id, correlation_id FROM gateway_inbox")
            .fetch_all(&gw.pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    // Every line the forwarding wrote carries a correlation id, and its own message's: the
    // span's row, the row's correlation id in the database, and (for refusals) the id the
    // orchestrator saw, all agree.
    let mut finals: HashMap<String, Vec<String>> = HashMap::new();
    let forwarding: Vec<Value> = logs
        .lines()
        .into_iter()
        .filter(|l| {
            l["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("xin_gateway::forward"))
        })
        .collect();
    for l in &forwarding {
        let corr = l["span"]["correlation_id"]
            .as_str()
            .unwrap_or_else(|| panic!("a forwarding log line without a correlation id: {l}"));
        if !corr.starts_with(&format!("fwd-{run}-")) {
            continue; // another test's
        }
        let row = l["span"]["inbox_id"].as_i64().expect("inbox_id");
        assert_eq!(ids[&row], corr, "{l}");
        if let Some(error) = l["error"].as_str() {
            assert!(
                error.contains(corr),
                "an error line carries another message's error: {l}"
            );
        }
        finals
            .entry(corr.to_string())
            .or_default()
            .push(l["message"].as_str().unwrap().to_string());
    }
    assert_eq!(finals.len(), 50, "{finals:?}");
    for (corr, lines) in &finals {
        let expected = if refused[corr] { GAVE_UP } else { ANSWERED };
        assert_eq!(lines, &[expected.to_string()], "{corr}");
    }
    let (replied, failed): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE replied_at IS NOT NULL), count(*) FILTER (WHERE failed_at IS NOT NULL) FROM gateway_inbox",
    )
    .fetch_one(&gw.pool)
    .await
    .unwrap();
    assert_eq!((replied, failed), (33, 17));
    // One orchestrator call per message (the conversation is found or created in it).
    let calls = orchestrator.requests();
    assert_eq!(calls.len(), 50);
    assert!(calls.iter().all(|r| r.path == "/v1/messages"));
    // The same, in the gauges; and each reply's accept-to-reply time, by channel.
    fwd.backlog.refresh(&gw.pool).await.unwrap();
    let text = metrics.encode();
    assert!(text.contains("gateway_inbox_pending 0\n"), "{text}");
    assert!(text.contains("gateway_inbox_dead_letters 17\n"), "{text}");
    assert_eq!(
        metric_value(&text, "gateway_inbox_oldest_pending_age_seconds"),
        0.0
    );
    assert!(
        text.contains("gateway_accept_to_reply_seconds_count{channel=\"web\"} 33\n"),
        "{text}"
    );
    let took = metric_value(
        &text,
        "gateway_accept_to_reply_seconds_sum{channel=\"web\"}",
    );
    assert!(
        took >= 33.0 * 0.15,
        "each reply waited for the stand-in's 150 ms: {took}"
    );
}

/// The value of the sample `name` (with its labels, if any) in a text exposition.
fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[tokio::test]
async fn a_stale_lease_owner_cannot_finish_the_row() {
    logs();
    let (gw, fwd) = setup("http://127.0.0.1:9", 1).await;
    accept_one(&gw, "user-1", "hello", "stale-1").await;
    let first = fwd.lease_batch(1).await.unwrap().pop().expect("leased");
    assert!(
        fwd.renew(&first).await.unwrap(),
        "the owner renews its lease"
    );
    // The first worker stalls past its lease; another takes the row.
    sqlx::query("UPDATE gateway_inbox SET locked_until = now() - interval '1 second'")
        .execute(&gw.pool)
        .await
        .unwrap();
    let second = fwd
        .lease_batch(1)
        .await
        .unwrap()
        .pop()
        .expect("leased again");
    assert_eq!(second.id, first.id);
    assert_ne!(second.lease_owner, first.lease_owner);

    // The stale owner can do nothing to the row any more.
    assert!(!fwd.renew(&first).await.unwrap());
    assert!(
        !fwd.store_answer(&first, "c1", "stale answer")
            .await
            .unwrap()
    );
    assert!(
        !fwd.record_failure(&first, "stale failure", true, 1.0)
            .await
            .unwrap()
    );
    assert!(fwd.mark_replied(&first).await.unwrap().is_none());
    let row: (Option<String>, i32, bool, bool) = sqlx::query_as(
        "SELECT answer, attempts, replied_at IS NOT NULL, failed_at IS NOT NULL FROM gateway_inbox WHERE id = $1",
    )
    .bind(first.id)
    .fetch_one(&gw.pool)
    .await
    .unwrap();
    assert_eq!(row, (None, 0, false, false), "untouched by the stale owner");

    // The current owner can.
    assert!(fwd.store_answer(&second, "c1", "the answer").await.unwrap());
    assert!(fwd.mark_replied(&second).await.unwrap().is_some());
    let replied: bool =
        sqlx::query_scalar("SELECT replied_at IS NOT NULL FROM gateway_inbox WHERE id = $1")
            .bind(first.id)
            .fetch_one(&gw.pool)
            .await
            .unwrap();
    assert!(replied);
}
