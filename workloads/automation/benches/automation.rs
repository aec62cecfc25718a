//! `make bench-automation`: figures, no pass/fail (a timed assertion is flaky on shared machines).
//! Needs `XIN_TEST_DATABASE_URL` (the Makefile starts `e2e/postgres.sh`) and the SMTP stand-in
//! (`e2e/smtp.sh start`, run from here; a no-op when it runs already).
//!
//! The worker is the library's own loops ([`xin_automation::run_loops`]) with the settings of
//! the binary's defaults (any `AUTOMATION_*` variable in the environment overrides them, as it
//! does for the process), a fixed set of rules and Secrets (no API server: `api: None` writes
//! no status), each phase on a fresh tenant database provisioned as the operator does it.
//!
//! 1. **Floor**: `XIN_BENCH_RUNS` (default 10,000) event runs queued by the worker's own outbox
//!    pump (the time it took is shown), then the queue alone: a bare loop claiming batches with
//!    [`queue::claim`] (the worker's batch) and acknowledging them with [`queue::finish`] on a
//!    second task (as the worker's recorder does) — the dequeue-and-ack cost, no action.
//! 2. **Burst**: as many `message_received` outbox events for one webhook rule (signed with
//!    a Secret) to a local HTTP/1.1 sink on its own thread, the loops started, until every run
//!    is `succeeded` in the table: actions per second, the time to drain, the ratio to the
//!    floor. Beside it the sink alone: a bare reqwest client POSTing as many requests with the
//!    worker's concurrency.
//! 3. **Mix at 100× the runbook's load**: `XIN_BENCH_TENANTS` (200) rules, each standing for
//!    one tenant's traffic (an event filter on its own channel, so every event fires exactly
//!    one rule), 60 % webhook / 20 % CRM / 20 % e-mail (the SMTP stand-in, STARTTLS and AUTH);
//!    messages and their outbox events arrive as a Poisson process of
//!    `XIN_BENCH_TRIGGERS_PER_MINUTE` (5) per tenant for `XIN_BENCH_SECONDS` (60). All of them
//!    go through one worker and one queue, the worst case (in production every tenant has its
//!    own worker and database). The queue depth (pending + running, [`queue::depths`]) is
//!    sampled every second.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use clap::Parser;
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::{Notify, mpsc, watch};
use xin_api::automation::AutomationRule;
use xin_automation::actions::Actions;
use xin_automation::config::Args;
use xin_automation::metrics::Metrics;
use xin_automation::queue::{self, Outcome};
use xin_automation::rules::Rules;
use xin_automation::secrets::Secrets;
use xin_automation::{Settings, Worker, events, new_id, run_loops};
use xin_runtime::HttpMetrics;
use xin_runtime::outbound::Outbound;

const TENANT: &str = "bench";
const NAMESPACE: &str = "bench";
/// The signing key of the webhooks, the CRM token.
const HOOK_SECRET: &str = "hook";
const CRM_SECRET: &str = "crm";
const SMTP_SECRET: &str = "smtp";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if std::env::var("XIN_TEST_DATABASE_URL").is_err() {
        eprintln!(
            "XIN_TEST_DATABASE_URL is not set: run `make bench-automation`, or start PostgreSQL with \
             `e2e/postgres.sh start` and export XIN_TEST_DATABASE_URL=$(e2e/postgres.sh url)"
        );
        std::process::exit(2);
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

// ---------------------------------------------------------------------------------------------
// The sink: an HTTP/1.1 server on its own thread (one current-thread runtime) answering 200 to
// everything, counting what arrives by path.

#[derive(Default)]
struct Counts {
    hook: AtomicU64,
    crm: AtomicU64,
    other: AtomicU64,
    /// Nanoseconds after `base` of the first and the latest request (0: none yet).
    first: AtomicU64,
    last: AtomicU64,
}

struct Sink {
    addr: SocketAddr,
    counts: Arc<Counts>,
    base: Instant,
}

impl Sink {
    fn start() -> Sink {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let counts = Arc::new(Counts::default());
        let base = Instant::now();
        let state = (counts.clone(), base);
        std::thread::Builder::new()
            .name("sink".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                    let app = Router::new().fallback(receive).with_state(state);
                    axum::serve(listener, app).await.unwrap();
                });
            })
            .unwrap();
        Sink { addr, counts, base }
    }

    fn reset(&self) {
        for c in [
            &self.counts.hook,
            &self.counts.crm,
            &self.counts.other,
            &self.counts.first,
            &self.counts.last,
        ] {
            c.store(0, Ordering::SeqCst);
        }
    }

    fn total(&self) -> u64 {
        self.counts.hook.load(Ordering::SeqCst)
            + self.counts.crm.load(Ordering::SeqCst)
            + self.counts.other.load(Ordering::SeqCst)
    }

    /// First to latest request, when there were two or more.
    fn window(&self) -> Option<Duration> {
        let (f, l) = (
            self.counts.first.load(Ordering::SeqCst),
            self.counts.last.load(Ordering::SeqCst),
        );
        (f > 0 && l > f).then(|| Duration::from_nanos(l - f))
    }

    /// When the first request arrived, as an instant.
    fn first_at(&self) -> Option<Instant> {
        let f = self.counts.first.load(Ordering::SeqCst);
        (f > 0).then(|| self.base + Duration::from_nanos(f))
    }
}

async fn receive(
    State((counts, base)): State<(Arc<Counts>, Instant)>,
    uri: Uri,
    body: Bytes,
) -> StatusCode {
    let now = base.elapsed().as_nanos() as u64;
    let _ = counts
        .first
        .compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst);
    counts.last.fetch_max(now, Ordering::SeqCst);
    let path = uri.path();
    let c = if path.starts_with("/hook") {
        &counts.hook
    } else if path.starts_with("/crm") {
        &counts.crm
    } else {
        &counts.other
    };
    c.fetch_add(1, Ordering::Relaxed);
    drop(body);
    StatusCode::OK
}

// ---------------------------------------------------------------------------------------------
// Rules, Secrets, the worker.

fn rule(name: &str, channel: Option<&str>, action: Value) -> AutomationRule {
    let mut trigger = json!({"event": {"types": ["MessageReceived"]}});
    if let Some(c) = channel {
        trigger["event"]["filter"] = json!({"channels": [c]});
    }
    serde_json::from_value(json!({
        "apiVersion": "xin.dev/v1alpha1",
        "kind": "AutomationRule",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": new_id(),
            "creationTimestamp": "2020-01-01T00:00:00Z",
        },
        "spec": {"trigger": trigger, "action": action},
    }))
    .unwrap()
}

fn webhook(sink: SocketAddr, i: usize) -> Value {
    json!({"webhook": {
        "url": format!("http://{sink}/hook/{i}"),
        "signingSecretRef": {"name": HOOK_SECRET, "key": "key"},
    }})
}

fn crm(sink: SocketAddr, i: usize) -> Value {
    json!({"crm": {
        "endpoint": format!("http://{sink}/crm/{i}"),
        "authSecretRef": {"name": CRM_SECRET, "key": "token"},
        "bodyTemplate": r#"{"contact": {{ conversation.external_user }}, "channel": {{ conversation.channel }}, "text": {{ message.text }}, "key": {{ run.idempotency_key }}}"#,
    }})
}

fn email(i: usize) -> Value {
    json!({"email": {
        "smtpSecretRef": {"name": SMTP_SECRET},
        "to": [format!("ops-{i}@example.com")],
        "subjectTemplate": "New message on {{ conversation.channel }} from {{ conversation.external_user }}",
        "bodyTemplate": "{{ message.text }}\n\nRun {{ run.id }} ({{ run.idempotency_key }})",
    }})
}

/// The SMTP stand-in's `key=value` line.
struct Smtp {
    host: String,
    port: String,
    user: String,
    password: String,
    ca: String,
    maildir: std::path::PathBuf,
}

fn smtp_start() -> Result<Smtp, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../e2e/smtp.sh");
    let out = std::process::Command::new("bash")
        .arg(script)
        .arg("start")
        .output()
        .map_err(|e| format!("cannot run {script}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{script} start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let line = stdout
        .lines()
        .find(|l| l.contains("host="))
        .ok_or("smtp.sh printed no host= line")?;
    let kv: BTreeMap<&str, &str> = line
        .split_whitespace()
        .filter_map(|p| p.split_once('='))
        .collect();
    let get = |k: &str| {
        kv.get(k)
            .map(|v| v.to_string())
            .ok_or(format!("smtp.sh printed no {k}="))
    };
    Ok(Smtp {
        host: get("host")?,
        port: get("port")?,
        user: get("user")?,
        password: get("password")?,
        ca: std::fs::read_to_string(get("ca")?).map_err(|e| format!("the CA file: {e}"))?,
        maildir: get("maildir")?.into(),
    })
}

fn mails(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
                .count()
        })
        .unwrap_or(0)
}

fn secrets(smtp: Option<&Smtp>) -> Secrets {
    let mut s: BTreeMap<String, BTreeMap<String, Vec<u8>>> = BTreeMap::new();
    s.insert(
        HOOK_SECRET.into(),
        BTreeMap::from([("key".into(), b"bench-signing-key".to_vec())]),
    );
    s.insert(
        CRM_SECRET.into(),
        BTreeMap::from([("token".into(), b"bench-crm-token".to_vec())]),
    );
    if let Some(m) = smtp {
        s.insert(
            SMTP_SECRET.into(),
            BTreeMap::from([
                ("host".into(), m.host.clone().into_bytes()),
                ("port".into(), m.port.clone().into_bytes()),
                ("username".into(), m.user.clone().into_bytes()),
                ("password".into(), m.password.clone().into_bytes()),
                ("from".into(), b"Xin bench <bench@example.com>".to_vec()),
                ("ca.crt".into(), m.ca.clone().into_bytes()),
            ]),
        );
    }
    Secrets::fixed(NAMESPACE, s)
}

/// The binary's settings: its defaults, `AUTOMATION_*` from the environment, loopback allowed.
fn args(database_url: &str) -> Args {
    Args::try_parse_from([
        "xin-automation",
        "--tenant",
        TENANT,
        "--namespace",
        NAMESPACE,
        "--database-url",
        database_url,
        "--outbound-allow",
        "127.0.0.1/32",
    ])
    .unwrap_or_else(|e| panic!("{e}"))
}

/// A worker on a fresh tenant database, with `rules`.
async fn worker(rules: Vec<AutomationRule>, smtp: Option<&Smtp>) -> Arc<Worker> {
    let db = xin_store::TestDatabase::new().await;
    let a = args(&db.url);
    let pool = xin_store::connect(&db.url, a.database_connections as u32)
        .await
        .unwrap();
    let http = HttpMetrics::default();
    let outbound = Outbound::new(a.outbound.policy(), &http).unwrap();
    Arc::new(Worker {
        tenant: TENANT.into(),
        time_zone: a.time_zone.clone(),
        pool,
        rules: Rules::fixed(rules),
        actions: Actions {
            tenant: TENANT.into(),
            outbound,
            secrets: secrets(smtp),
            timeout: a.action_timeout,
        },
        metrics: Metrics::new(TENANT, &http),
        owner: new_id(),
        settings: Settings::from_args(&a),
        api: None,
        wake: Notify::new(),
        known_rule_names: Default::default(),
        healthy: AtomicBool::new(true),
    })
}

/// `n` user messages of one conversation and their `message_received` outbox events, written
/// `age` ago (the worker reads events a second old).
async fn burst_events(pool: &PgPool, n: usize) {
    sqlx::query(
        "INSERT INTO conversations (id, tenant, channel, external_user) VALUES ('c-burst', $1, 'web', 'user-1')",
    )
    .bind(TENANT)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "WITH m AS (
            INSERT INTO messages (tenant, conversation_id, role, text, correlation_id, created_at)
            SELECT $1, 'c-burst', 'user',
                   'Hello, my order ' || g || ' has not arrived yet; can you tell me where it is?',
                   md5(g::text), now() - interval '5 seconds'
              FROM generate_series(1, $2) g
            RETURNING id, text, correlation_id
         )
         INSERT INTO outbox_events (tenant, kind, conversation_id, payload, correlation_id, created_at)
         SELECT $1, 'message_received', 'c-burst',
                jsonb_build_object('channel', 'web', 'external_user', 'user-1', 'message_id', m.id,
                                   'client_message_id', NULL, 'text_length', char_length(m.text)),
                m.correlation_id, now() - interval '5 seconds'
           FROM m ORDER BY m.id",
    )
    .bind(TENANT)
    .bind(n as i64)
    .execute(pool)
    .await
    .unwrap();
}

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Claim and finish statements that took runs: every statement stamps its rows with its own
/// `now()`, so the distinct `started_at` (first attempts) and `finished_at` count them.
async fn statements(pool: &PgPool) -> (i64, i64) {
    let (c, f): (i64, i64) = sqlx::query_as(
        "SELECT count(DISTINCT started_at), count(DISTINCT finished_at) FROM automation_runs",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    (c, f)
}

fn per_s(n: f64, d: Duration) -> f64 {
    n / d.as_secs_f64().max(1e-9)
}

// ---------------------------------------------------------------------------------------------
// 1. The floor.

struct Floor {
    pump: Duration,
    elapsed: Duration,
    claims: i64,
    finishes: i64,
}

async fn floor(n: usize, sink: SocketAddr) -> Floor {
    let w = worker(vec![rule("burst", None, webhook(sink, 0))], None).await;
    burst_events(&w.pool, n).await;
    // The very runs the burst gets, queued by the worker's own pump.
    let start = Instant::now();
    while events::pump(&w).await.unwrap() > 0 {}
    let pump = start.elapsed();
    let queued = count(
        &w.pool,
        "SELECT count(*) FROM automation_runs WHERE state = 'pending'",
    )
    .await;
    assert_eq!(queued as usize, n, "every event queued one run");
    let _ = sqlx::query("ANALYZE automation_runs")
        .execute(&w.pool)
        .await;

    let batch = w.settings.claim_batch.min(w.settings.concurrency);
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<i64>>();
    let start = Instant::now();
    let acker = {
        let w = w.clone();
        tokio::spawn(async move {
            let mut acked = 0;
            while let Some(first) = rx.recv().await {
                let mut ids = first;
                while ids.len() < 1000 {
                    match rx.try_recv() {
                        Ok(more) => ids.extend(more),
                        Err(_) => break,
                    }
                }
                // Every run of the floor is on its first attempt.
                let rows: Vec<(i64, i32, Outcome)> =
                    ids.iter().map(|id| (*id, 1, Outcome::Succeeded)).collect();
                acked += queue::finish(&w.pool, &w.tenant, &w.owner, &rows)
                    .await
                    .unwrap();
            }
            acked
        })
    };
    let mut claimed = 0;
    while claimed < n {
        let active = w.rules.active_uids();
        let c = queue::claim(&w.pool, &w.owner, &active, batch, w.settings.lease)
            .await
            .unwrap();
        if c.is_empty() {
            break;
        }
        claimed += c.len();
        tx.send(c.into_iter().map(|r| r.id).collect()).unwrap();
    }
    drop(tx);
    let acked = acker.await.unwrap();
    let elapsed = start.elapsed();
    assert_eq!(acked as usize, n, "every run acknowledged");
    let (claims, finishes) = statements(&w.pool).await;
    w.pool.close().await;
    Floor {
        pump,
        elapsed,
        claims,
        finishes,
    }
}

// ---------------------------------------------------------------------------------------------
// 2. The burst, and the sink alone.

struct Burst {
    drain: Duration,
    delivered: u64,
    first_delivery: Option<Duration>,
    sink_window: Option<Duration>,
    outbox_done: Option<Duration>,
    peak_depth: i64,
    claims: i64,
    finishes: i64,
    failed: i64,
    concurrency: usize,
    claim_batch: usize,
}

async fn burst(n: usize, sink: &Sink) -> Burst {
    let w = worker(vec![rule("burst", None, webhook(sink.addr, 0))], None).await;
    burst_events(&w.pool, n).await;
    let _ = sqlx::query("ANALYZE outbox_events").execute(&w.pool).await;
    sink.reset();
    let (stop_tx, stop) = watch::channel(false);
    let start = Instant::now();
    let loops = tokio::spawn(run_loops(w.clone(), stop));
    let mut outbox_done = None;
    let mut peak_depth = 0;
    let deadline = Duration::from_secs(600);
    loop {
        let (succeeded, depth, unread): (i64, i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE state = 'succeeded'),
                    count(*) FILTER (WHERE state IN ('pending', 'running')),
                    (SELECT count(*) FROM outbox_events WHERE processed_at IS NULL)
               FROM automation_runs",
        )
        .fetch_one(&w.pool)
        .await
        .unwrap();
        peak_depth = peak_depth.max(depth);
        if unread == 0 && outbox_done.is_none() {
            outbox_done = Some(start.elapsed());
        }
        if succeeded as usize >= n || start.elapsed() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain = start.elapsed();
    let _ = stop_tx.send(true);
    let _ = loops.await;
    let delivered = sink.total();
    let (claims, finishes) = statements(&w.pool).await;
    let failed = count(
        &w.pool,
        "SELECT COALESCE(sum(failed + dead_lettered), 0)::bigint FROM automation_rule_stats",
    )
    .await;
    w.pool.close().await;
    Burst {
        drain,
        delivered,
        first_delivery: sink.first_at().map(|t| t.saturating_duration_since(start)),
        sink_window: sink.window(),
        outbox_done,
        peak_depth,
        claims,
        finishes,
        failed,
        concurrency: w.settings.concurrency,
        claim_batch: w.settings.claim_batch,
    }
}

/// A body the size of a burst webhook's (the run's context as JSON).
fn sample_body() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "event": {"id": 12345, "type": "MessageReceived", "created_at": "2026-01-01T00:00:00+00:00",
                  "correlation_id": "0123456789abcdef0123456789abcdef"},
        "conversation": {"id": "c-burst", "channel": "web", "external_user": "user-1"},
        "message": {"id": 12345, "text": "Hello, my order 12345 has not arrived yet; can you tell me where it is?"},
        "tenant": TENANT, "rule": "burst",
        "run": {"id": 12345, "idempotency_key": "xin-0123456789abcdef0123456789abcdef",
                "trigger": "event", "scheduled_for": null},
    }))
    .unwrap()
}

async fn sink_alone(n: usize, concurrency: usize, sink: &Sink) -> (Duration, u64) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = format!("http://{}/hook/baseline", sink.addr);
    let body = Bytes::from(sample_body());
    sink.reset();
    let start = Instant::now();
    let ok = futures::stream::iter(0..n)
        .map(|_| {
            let (client, url, body) = (client.clone(), url.clone(), body.clone());
            async move {
                client
                    .post(url)
                    .header("Content-Type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .map(|r| r.status().is_success())
                    .unwrap_or(false)
            }
        })
        .buffer_unordered(concurrency)
        .filter(|ok| futures::future::ready(*ok))
        .count()
        .await;
    let elapsed = start.elapsed();
    (elapsed, ok as u64)
}

// ---------------------------------------------------------------------------------------------
// 3. The mix at load.

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
enum Kind {
    Webhook,
    Crm,
    Email,
}

impl Kind {
    /// 60 % webhook, 20 % CRM, 20 % e-mail.
    fn of(i: usize) -> Kind {
        match i % 5 {
            0..=2 => Kind::Webhook,
            3 => Kind::Crm,
            _ => Kind::Email,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Webhook => "webhook",
            Kind::Crm => "CRM",
            Kind::Email => "e-mail",
        }
    }
}

const KINDS: [Kind; 3] = [Kind::Webhook, Kind::Crm, Kind::Email];

struct Mix {
    tenants: usize,
    per_minute: usize,
    seconds: usize,
    generated: HashMap<Kind, u64>,
    /// Queue depth (pending + running) and unread outbox events, once a second; `true` while
    /// triggers were arriving.
    samples: Vec<(i64, i64, bool)>,
    /// Age of the oldest run pending or running, at its largest, in seconds.
    oldest_max: f64,
    states: HashMap<(Kind, String), i64>,
    /// Seconds from the message's arrival to its run finishing, per kind.
    latency: HashMap<Kind, Vec<f64>>,
    sink_webhook: u64,
    sink_crm: u64,
    mail_files: Option<usize>,
    drain_after: Option<Duration>,
    failed: i64,
    first_error: Option<String>,
}

async fn mix(sink: &Sink, smtp: Option<&Smtp>) -> Mix {
    let tenants = env_usize("XIN_BENCH_TENANTS", 200).max(1);
    let per_minute = env_usize("XIN_BENCH_TRIGGERS_PER_MINUTE", 5);
    let seconds = env_usize("XIN_BENCH_SECONDS", 60);
    let mut rules = Vec::new();
    let mut kind_of_uid = HashMap::new();
    for i in 0..tenants {
        let kind = match Kind::of(i) {
            Kind::Email if smtp.is_none() => Kind::Webhook,
            k => k,
        };
        let action = match kind {
            Kind::Webhook => webhook(sink.addr, i),
            Kind::Crm => crm(sink.addr, i),
            Kind::Email => email(i),
        };
        let r = rule(
            &format!("t{i}-{}", kind.name().to_lowercase()),
            Some(&format!("t{i}")),
            action,
        );
        kind_of_uid.insert(r.metadata.uid.clone().unwrap(), kind);
        rules.push(r);
    }
    let kinds: Vec<Kind> = rules
        .iter()
        .map(|r| kind_of_uid[r.metadata.uid.as_ref().unwrap()])
        .collect();
    let w = worker(rules, smtp).await;
    // One open conversation per tenant, on the tenant's channel.
    sqlx::query(
        "INSERT INTO conversations (id, tenant, channel, external_user)
         SELECT 'c-t' || g, $1, 't' || g, 'user-' || g FROM generate_series(0, $2 - 1) g",
    )
    .bind(TENANT)
    .bind(tenants as i64)
    .execute(&w.pool)
    .await
    .unwrap();
    let mails_before = smtp.map(|m| mails(&m.maildir));
    sink.reset();

    let (stop_tx, stop) = watch::channel(false);
    let loops = tokio::spawn(run_loops(w.clone(), stop));

    // Triggers: a Poisson process of `rate` per second over all tenants, written every 100 ms
    // as the orchestrator writes them (the message and its event, in one statement).
    let rate = tenants as f64 * per_minute as f64 / 60.0;
    let arriving = Arc::new(AtomicBool::new(true));
    let mut generator = Some({
        let (pool, arriving) = (w.pool.clone(), arriving.clone());
        tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(7);
            let mut generated: HashMap<Kind, u64> = HashMap::new();
            let mut next = 0.0f64;
            let exp = |rng: &mut StdRng| -(1.0 - rng.random::<f64>()).ln() / rate;
            next += exp(&mut rng);
            let start = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                let now = start.elapsed().as_secs_f64().min(seconds as f64);
                let mut convs = Vec::new();
                while rate > 0.0 && next <= now {
                    let t = rng.random_range(0..tenants);
                    *generated.entry(kinds[t]).or_default() += 1;
                    convs.push(format!("c-t{t}"));
                    next += exp(&mut rng);
                }
                if !convs.is_empty() {
                    sqlx::query(
                        "WITH m AS (
                            INSERT INTO messages (tenant, conversation_id, role, text, correlation_id)
                            SELECT $1, conv, 'user',
                                   'Hello, my order ' || (random() * 100000)::int || ' has not arrived yet',
                                   md5(random()::text)
                              FROM unnest($2::text[]) AS conv
                            RETURNING id, conversation_id, text, correlation_id
                         )
                         INSERT INTO outbox_events (tenant, kind, conversation_id, payload, correlation_id)
                         SELECT $1, 'message_received', c.id,
                                jsonb_build_object('channel', c.channel, 'external_user', c.external_user,
                                                   'message_id', m.id, 'client_message_id', NULL,
                                                   'text_length', char_length(m.text)),
                                m.correlation_id
                           FROM m JOIN conversations c ON c.id = m.conversation_id ORDER BY m.id",
                    )
                    .bind(TENANT)
                    .bind(&convs)
                    .execute(&pool)
                    .await
                    .unwrap();
                }
                if now >= seconds as f64 {
                    break;
                }
            }
            arriving.store(false, Ordering::SeqCst);
            generated
        })
    });

    // Samples once a second while triggers arrive, then until every trigger's run is finished
    // (at most 120 s more).
    let mut samples = Vec::new();
    let mut oldest_max = 0.0f64;
    let mut drained_at = None;
    let mut generated = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut generation_end = None;
    loop {
        tick.tick().await;
        let still = arriving.load(Ordering::SeqCst);
        let depths = queue::depths(&w.pool).await.unwrap();
        let depth: i64 = depths.iter().map(|d| d.1).sum();
        if let Some(oldest) = depths.iter().map(|d| d.2).min() {
            oldest_max =
                oldest_max.max((chrono::Utc::now() - oldest).num_milliseconds() as f64 / 1000.0);
        }
        let unread = count(
            &w.pool,
            "SELECT count(*) FROM outbox_events WHERE processed_at IS NULL",
        )
        .await;
        samples.push((depth, unread, still));
        if still {
            continue;
        }
        if let Some(g) = generator.take() {
            generated = Some(g.await.unwrap_or_default());
            generation_end = Some(Instant::now());
        }
        let total: u64 = generated.as_ref().unwrap().values().sum();
        let finished = count(
            &w.pool,
            "SELECT count(*) FROM automation_runs WHERE state IN ('succeeded', 'dead')",
        )
        .await;
        if finished as u64 >= total && depth == 0 && unread == 0 {
            drained_at = generation_end.map(|t| t.elapsed());
            break;
        }
        if generation_end.is_some_and(|t| t.elapsed() > Duration::from_secs(120)) {
            break;
        }
    }
    let _ = stop_tx.send(true);
    let _ = loops.await;

    let mut states = HashMap::new();
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT rule_uid, state, count(*) FROM automation_runs GROUP BY rule_uid, state",
    )
    .fetch_all(&w.pool)
    .await
    .unwrap();
    for (uid, state, n) in rows {
        *states.entry((kind_of_uid[&uid], state)).or_default() += n;
    }
    let mut latency: HashMap<Kind, Vec<f64>> = HashMap::new();
    let rows: Vec<(String, f64)> = sqlx::query_as(
        "SELECT r.rule_uid, extract(epoch FROM r.finished_at - e.created_at)::float8
           FROM automation_runs r JOIN outbox_events e ON e.id = r.event_id
          WHERE r.state = 'succeeded'",
    )
    .fetch_all(&w.pool)
    .await
    .unwrap();
    for (uid, s) in rows {
        latency.entry(kind_of_uid[&uid]).or_default().push(s);
    }
    let failed = count(
        &w.pool,
        "SELECT COALESCE(sum(failed + dead_lettered), 0)::bigint FROM automation_rule_stats",
    )
    .await;
    let first_error: Option<String> = sqlx::query_scalar(
        "SELECT last_error FROM automation_rule_stats WHERE last_error IS NOT NULL LIMIT 1",
    )
    .fetch_optional(&w.pool)
    .await
    .unwrap()
    .flatten();
    w.pool.close().await;
    Mix {
        tenants,
        per_minute,
        seconds,
        generated: generated.unwrap_or_default(),
        samples,
        oldest_max,
        states,
        latency,
        sink_webhook: sink.counts.hook.load(Ordering::SeqCst),
        sink_crm: sink.counts.crm.load(Ordering::SeqCst),
        mail_files: smtp
            .zip(mails_before)
            .map(|(m, before)| mails(&m.maildir).saturating_sub(before)),
        drain_after: drained_at,
        failed,
        first_error,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    percentile(&s, 0.5)
}

fn median_i64(v: &[i64]) -> i64 {
    if v.is_empty() {
        return 0;
    }
    let mut s = v.to_vec();
    s.sort_unstable();
    s[s.len() / 2]
}

// ---------------------------------------------------------------------------------------------

async fn run() {
    let n = env_usize("XIN_BENCH_RUNS", 10_000).max(1);
    let sink = Sink::start();
    let settings = Settings::from_args(&args("postgres://unused@127.0.0.1/unused"));
    println!(
        "automation: worker settings concurrency={} claim batch={} event batch={} poll={} ms \
         database connections={} (the binary's defaults unless AUTOMATION_* is set)",
        settings.concurrency,
        settings.claim_batch,
        settings.event_batch,
        settings.poll.as_millis(),
        args("postgres://unused@127.0.0.1/unused").database_connections,
    );

    // 1. and 2., in rounds (the floor then the burst, each on a fresh database): the machine
    // is shared, so the medians are what the summary shows.
    let rounds = env_usize("XIN_BENCH_ROUNDS", 3).max(1);
    println!(
        "floor: {n} queued runs, bare SKIP LOCKED claim (batch {}) + finish (batched, on a second task), no action",
        settings.claim_batch.min(settings.concurrency)
    );
    println!(
        "burst: {n} message_received events → {n} signed webhooks to a local HTTP/1.1 sink (own thread), \
         from the loops' start until every run is succeeded in the table"
    );
    println!(
        "sink alone: a bare reqwest client POSTing {n} bodies of the same size, {} in flight",
        settings.concurrency
    );
    let mut floor_rates = Vec::new();
    let mut actions_rates = Vec::new();
    let mut alone_rates = Vec::new();
    let mut drains = Vec::new();
    let mut ratios = Vec::new();
    for round in 1..=rounds {
        let f = floor(n, sink.addr).await;
        let floor_rate = per_s(n as f64, f.elapsed);
        let b = burst(n, &sink).await;
        let actions_rate = per_s(b.delivered as f64, b.drain);
        let (alone, ok) = sink_alone(n, b.concurrency, &sink).await;
        let alone_rate = per_s(ok as f64, alone);
        let ratio = actions_rate / floor_rate;
        println!("  round {round}:");
        println!(
            "    floor  {floor_rate:>6.0} runs/s    ({:.2} s; {} claim statements of {:.1} runs, {} finish statements; \
             the pump queued them alone in {:.2} s = {:.0} events/s)",
            f.elapsed.as_secs_f64(),
            f.claims,
            n as f64 / f.claims.max(1) as f64,
            f.finishes,
            f.pump.as_secs_f64(),
            per_s(n as f64, f.pump)
        );
        println!(
            "    worker {actions_rate:>6.0} actions/s ({:.2} s to drain; {} delivered, {} failed attempts; {ratio:.2}× the floor)",
            b.drain.as_secs_f64(),
            b.delivered,
            b.failed
        );
        println!(
            "           first delivery after {:.2} s, sink saw first→last in {:.2} s, outbox all read after {:.2} s, \
             peak queue depth {}; {} claim statements of {:.1} runs (batch {}, concurrency {}), {} finish statements of {:.1}",
            b.first_delivery.map_or(f64::NAN, |d| d.as_secs_f64()),
            b.sink_window.map_or(f64::NAN, |d| d.as_secs_f64()),
            b.outbox_done.map_or(f64::NAN, |d| d.as_secs_f64()),
            b.peak_depth,
            b.claims,
            n as f64 / b.claims.max(1) as f64,
            b.claim_batch,
            b.concurrency,
            b.finishes,
            n as f64 / b.finishes.max(1) as f64
        );
        println!(
            "    sink alone {alone_rate:>6.0} requests/s ({ok} in {:.2} s)",
            alone.as_secs_f64()
        );
        floor_rates.push(floor_rate);
        actions_rates.push(actions_rate);
        alone_rates.push(alone_rate);
        drains.push(b.drain.as_secs_f64());
        ratios.push(ratio);
    }
    let floor_rate = median(&floor_rates);
    let actions_rate = median(&actions_rates);
    let alone_rate = median(&alone_rates);
    let drain = median(&drains);
    let ratio = median(&ratios);

    // 3.
    let smtp = match smtp_start() {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("the SMTP stand-in is not available ({e}); e-mail rules become webhooks");
            None
        }
    };
    let m = mix(&sink, smtp.as_ref()).await;
    let generated_total: u64 = m.generated.values().sum();
    println!(
        "mix: {} rules (one per tenant, 60 % webhook / 20 % CRM / 20 % e-mail), {} triggers/min/tenant = {} /min, Poisson, {} s, all through one worker",
        m.tenants,
        m.per_minute,
        m.tenants * m.per_minute,
        m.seconds
    );
    let depths_loaded: Vec<i64> = m.samples.iter().filter(|s| s.2).map(|s| s.0).collect();
    let all_depths: Vec<i64> = m.samples.iter().map(|s| s.0).collect();
    let (dmin, dmed, dmax) = (
        depths_loaded.iter().copied().min().unwrap_or(0),
        median_i64(&depths_loaded),
        depths_loaded.iter().copied().max().unwrap_or(0),
    );
    let unread_max = m.samples.iter().map(|s| s.1).max().unwrap_or(0);
    println!(
        "  queue depth (pending + running) under load, once a second: min {dmin} / median {dmed} / max {dmax}; oldest run waiting at most {:.2} s; unread outbox events at most {unread_max}",
        m.oldest_max
    );
    let timeline: Vec<String> = all_depths.iter().map(|d| d.to_string()).collect();
    for (i, chunk) in timeline.chunks(30).enumerate() {
        println!("    depth t={:>3}s: {}", i * 30, chunk.join(" "));
    }
    println!(
        "    (the last {} samples are after the triggers stopped; drained {})",
        m.samples.iter().filter(|s| !s.2).count(),
        m.drain_after.map_or("not within 120 s".into(), |d| format!(
            "{:.1} s after the triggers stopped",
            d.as_secs_f64()
        ))
    );
    for k in KINDS {
        let generated = m.generated.get(&k).copied().unwrap_or(0);
        let st = |s: &str| m.states.get(&(k, s.to_string())).copied().unwrap_or(0);
        let mut lat = m.latency.get(&k).cloned().unwrap_or_default();
        lat.sort_by(f64::total_cmp);
        let seen = match k {
            Kind::Webhook => format!("sink received {}", m.sink_webhook),
            Kind::Crm => format!("sink received {}", m.sink_crm),
            Kind::Email => m.mail_files.map_or("no SMTP stand-in".into(), |f| {
                format!("{f} new messages in the stand-in's maildir")
            }),
        };
        println!(
            "  {:<8} triggered {generated:>5}, succeeded {:>5}, dead {}, pending/running {} ({seen}); message → run finished p50 {:.2} s / p95 {:.2} s / max {:.2} s",
            k.name(),
            st("succeeded"),
            st("dead"),
            st("pending") + st("running"),
            percentile(&lat, 0.5),
            percentile(&lat, 0.95),
            percentile(&lat, 1.0),
        );
    }
    if m.failed > 0 {
        println!(
            "  failed attempts: {} (one error: {})",
            m.failed,
            m.first_error.as_deref().unwrap_or("-")
        );
    }

    println!();
    println!("summary (xin-automation; medians of {rounds} rounds where there are rounds):");
    println!(
        "  burst actions delivered/s      {actions_rate:>7.0}    goal ≥ 1,000/s  (the sink alone: {alone_rate:.0} requests/s)"
    );
    println!("  burst time to drain            {drain:>7.2} s  ({n} runs)");
    println!("  floor (bare SKIP LOCKED loop)  {floor_rate:>7.0}    runs/s");
    println!("  burst / floor                  {ratio:>7.2}×   goal ≥ 0.5×");
    println!(
        "  mix queue depth, max           {dmax:>7}    goal < 50  (median {dmed}; {} triggers/min, {generated_total} triggers in {} s)",
        m.tenants * m.per_minute,
        m.seconds
    );
}
