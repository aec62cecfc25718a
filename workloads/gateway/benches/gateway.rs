//! `make bench-gateway`: signed WhatsApp webhooks through the gateway (signature check on the
//! raw bytes, parsing, durable insert into PostgreSQL, 200) against a bare hyper server that
//! reads the body and answers 200, with the same load generator in the same run.
//!
//! Three servers: the bare one (the baseline), the gateway with one commit per request (how
//! it accepted before the group commit: batches of one message, as many commits in flight as
//! the pool has connections), and the gateway as it ships (group commit, default settings).
//! PostgreSQL must flush commits for this to mean anything: `make bench-gateway` starts one
//! with `fsync` and `synchronous_commit` on, and the figures say what the server runs with.
//!
//! Two measurements per server: the most requests per second with 32 keep-alive connections
//! (closed loop), and latency at a fixed 1,000 requests/s (open loop, measured from each
//! request's scheduled time, so a stall is not hidden). Then the inbox is counted: every
//! request answered 200 must have exactly one row (lost and duplicated rows are printed).
//! Figures only, no pass/fail. The forwarding worker is not running: this is the accept path.
//!
//! Settings: `XIN_BENCH_SECONDS` (default 10) per phase, `XIN_TEST_DATABASE_URL`.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use sqlx::PgPool;
use xin_api::channel::ChannelType;
use xin_api::routes::{ChannelRoute, Credentials, Routes, WebhookKey};
use xin_gateway::inbox::InboxSettings;
use xin_gateway::routes::RouteTable;
use xin_gateway::verify::meta_sign;
use xin_gateway::{Gateway, app};
use xin_runtime::HttpMetrics;

const SECRET: &str = "bench-app-secret";

fn bodies(n: usize, tag: &str) -> Arc<Vec<(Vec<u8>, String)>> {
    Arc::new(
        (0..n)
            .map(|i| {
                let body = format!(
                    r#"{{"object":"whatsapp_business_account","entry":[{{"id":"1","changes":[{{"field":"messages","value":{{"messaging_product":"whatsapp","metadata":{{"phone_number_id":"106540352242922"}},"contacts":[{{"profile":{{"name":"Bench"}},"wa_id":"16505551234"}}],"messages":[{{"from":"16505551234","id":"wamid.{tag}.{i}","timestamp":"1700000000","type":"text","text":{{"body":"\u0633\u0644\u0627\u0645, where is my order {i}?"}}}}]}}}}]}}]}}"#
                );
                let sig = format!("sha256={}", meta_sign(SECRET, body.as_bytes()));
                (body.into_bytes(), sig)
            })
            .collect(),
    )
}

async fn serve_bare() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let _ = req.into_body().collect().await;
                        Ok::<_, Infallible>(hyper::Response::new(http_body_util::Full::new(
                            hyper::body::Bytes::from_static(b"{\"received\":1}"),
                        )))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// A gateway on a fresh tenant database; returns its address, its pool and the gateway (to
/// read its commit sizes).
async fn serve_gateway(settings: InboxSettings) -> (String, PgPool, Gateway) {
    let url = xin_store::fresh_test_database().await;
    let pool = xin_store::connect(&url, 16).await.unwrap();
    let table = RouteTable::default();
    table.set(Routes {
        tenant: "acme".into(),
        channels: vec![ChannelRoute {
            name: "wa".into(),
            type_: ChannelType::Whatsapp,
            path: "/webhooks/wa".into(),
            suspended: false,
            max_body_bytes: 1 << 20,
            requests_per_second: 1_000_000,
            burst: 1_000_000,
            keys: vec![WebhookKey {
                key: "k".into(),
                expires_at: None,
            }],
            credentials: Credentials {
                app_secret: Some(SECRET.into()),
                ..Credentials::default()
            },
            allowed_origins: vec![],
            phone_number_id: Some("106540352242922".into()),
            page_id: None,
            legacy_identity_tokens: false,
            anonymous_visitors: false,
            display_name: None,
            theme: None,
        }],
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let gw = Gateway::new(
        "acme".into(),
        table,
        pool.clone(),
        b"bench-signing-key-0123456789".to_vec(),
    )
    .with_inbox_settings(settings);
    let router = app(gw.clone(), HttpMetrics::default());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (addr, pool, gw)
}

/// Messages per commit as (commits, messages), from the gateway's histogram.
fn commits(gw: &Gateway) -> (f64, f64) {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register("batch", "", gw.inbox.batch_sizes());
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let sample = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    (sample("batch_count"), sample("batch_sum"))
}

/// Rows stored for the requests of server `name`: (rows, distinct provider ids).
async fn stored(pool: &PgPool, name: &str) -> (i64, i64) {
    sqlx::query_as(
        "SELECT count(*), count(DISTINCT provider_message_id) FROM gateway_inbox
         WHERE provider_message_id LIKE $1",
    )
    .bind(format!("wa:wamid.{name}-%"))
    .fetch_one(pool)
    .await
    .unwrap()
}

struct Figures {
    /// Requests answered 200 over all phases (each carries a message id of its own).
    ok: usize,
    /// CPU microseconds per request in the closed-loop phase: this process (load generator
    /// and server) and PostgreSQL.
    process_us: f64,
    postgres_us: f64,
    max_rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    achieved_rps: f64,
    errors: usize,
}

async fn send(client: &reqwest::Client, url: &str, (body, sig): &(Vec<u8>, String)) -> bool {
    client
        .post(url)
        .header("content-type", "application/json")
        .header("x-hub-signature-256", sig)
        .body(body.clone())
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

async fn measure(name: &str, addr: &str, secs: u64, pg: xin_store::cpu::ServerCpu) -> Figures {
    let url = format!("http://{addr}/webhooks/wa");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    // Warm-up.
    let ok = Arc::new(AtomicUsize::new(0));
    let warm = bodies(200, &format!("{name}-warm"));
    for b in warm.iter() {
        if send(&client, &url, b).await {
            ok.fetch_add(1, Ordering::Relaxed);
        }
    }
    // Closed loop: 32 connections as fast as they go.
    let set = bodies(400_000, &format!("{name}-max"));
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let (cpu0, pg0) = (
        xin_store::cpu::process_seconds(std::process::id()),
        pg.seconds(),
    );
    let start = Instant::now();
    let stop = start + Duration::from_secs(secs);
    let workers: Vec<_> = (0..32)
        .map(|_| {
            let (client, url, set, next, errors, ok) = (
                client.clone(),
                url.clone(),
                set.clone(),
                next.clone(),
                errors.clone(),
                ok.clone(),
            );
            tokio::spawn(async move {
                while Instant::now() < stop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= set.len() {
                        break;
                    }
                    if send(&client, &url, &set[i]).await {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let done = next.load(Ordering::Relaxed).min(set.len());
    let max_rps = done as f64 / start.elapsed().as_secs_f64();
    let per_request = |s: f64| 1e6 * s / done.max(1) as f64;
    let process_us = per_request(xin_store::cpu::process_seconds(std::process::id()) - cpu0);
    let postgres_us = per_request(pg.seconds() - pg0);

    // Open loop at 1,000 requests/s.
    let rate = 1000u64;
    let set = bodies((rate * secs) as usize, &format!("{name}-fixed"));
    let start = Instant::now();
    let mut handles = Vec::with_capacity(set.len());
    for i in 0..set.len() {
        let due = start + Duration::from_micros(i as u64 * 1_000_000 / rate);
        tokio::time::sleep_until(due.into()).await;
        let (client, url, set, errors, ok) = (
            client.clone(),
            url.clone(),
            set.clone(),
            errors.clone(),
            ok.clone(),
        );
        handles.push(tokio::spawn(async move {
            if send(&client, &url, &set[i]).await {
                ok.fetch_add(1, Ordering::Relaxed);
            } else {
                errors.fetch_add(1, Ordering::Relaxed);
            }
            due.elapsed()
        }));
    }
    let mut lat = Vec::with_capacity(handles.len());
    for h in handles {
        lat.push(h.await.unwrap());
    }
    let achieved_rps = lat.len() as f64 / start.elapsed().as_secs_f64();
    lat.sort();
    let pct =
        |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1000.0;
    Figures {
        ok: ok.load(Ordering::Relaxed),
        process_us,
        postgres_us,
        max_rps,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        achieved_rps,
        errors: errors.load(Ordering::Relaxed),
    }
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let secs: u64 = std::env::var("XIN_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    // Servers and load generator on separate runtimes (2 threads each; the machine has 2 cores
    // and PostgreSQL shares them too).
    let servers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let per_request = InboxSettings {
        max_batch_rows: 1,
        commits_in_flight: 16,
    };
    let (bare, (single, single_pool, single_gw), (grouped, grouped_pool, grouped_gw)) = servers
        .block_on(async {
            (
                serve_bare().await,
                serve_gateway(per_request).await,
                serve_gateway(InboxSettings::default()).await,
            )
        });
    let durability: (String, String) = servers.block_on(async {
        sqlx::query_as("SELECT current_setting('fsync'), current_setting('synchronous_commit')")
            .fetch_one(&grouped_pool)
            .await
            .unwrap()
    });
    let load = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let defaults = InboxSettings::default();
    println!(
        "signed WhatsApp webhooks, {secs} s per phase; PostgreSQL fsync={}, synchronous_commit={}; \
         baseline = bare hyper server, same load generator, same run",
        durability.0, durability.1
    );
    let pg = servers
        .block_on(xin_store::cpu::ServerCpu::of(&grouped_pool))
        .expect("PostgreSQL runs on this machine (its CPU is read from /proc)");
    let b = load.block_on(measure("bare", &bare, secs, pg));
    let s1 = load.block_on(measure("single", &single, secs, pg));
    let g = load.block_on(measure("grouped", &grouped, secs, pg));
    let rows = servers.block_on(async {
        (
            stored(&single_pool, "single").await,
            stored(&grouped_pool, "grouped").await,
        )
    });
    println!();
    println!(
        "| server | max req/s (32 conns) | CPU µs/req: this process | PostgreSQL | at 1k req/s: achieved | p50 ms | p99 ms | errors | answered 200 | rows | lost | duplicated | messages per commit |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let row = |n: &str, f: &Figures, stored: Option<((i64, i64), (f64, f64))>| {
        let (rows, lost, dup, per_commit) = match stored {
            Some(((rows, distinct), (commits, messages))) => (
                rows.to_string(),
                (f.ok as i64 - distinct).max(0).to_string(),
                (rows - distinct).to_string(),
                format!("{:.1}", messages / commits.max(1.0)),
            ),
            None => ("–".into(), "–".into(), "–".into(), "–".into()),
        };
        println!(
            "| {n} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {} | {} | {rows} | {lost} | {dup} | {per_commit} |",
            f.max_rps,
            f.process_us,
            f.postgres_us,
            f.achieved_rps,
            f.p50_ms,
            f.p99_ms,
            f.errors,
            f.ok
        );
    };
    row("bare hyper", &b, None);
    row(
        "xin-gateway, one commit per request (before)",
        &s1,
        Some((rows.0, commits(&single_gw))),
    );
    row(
        &format!(
            "xin-gateway, group commit (≤ {} messages, {} in flight)",
            defaults.max_batch_rows, defaults.commits_in_flight
        ),
        &g,
        Some((rows.1, commits(&grouped_gw))),
    );
    println!();
    println!(
        "ratio gateway / bare (max req/s): group commit {:.2}, one commit per request {:.2}  (goal ≥ 0.5)",
        g.max_rps / b.max_rps,
        s1.max_rps / b.max_rps
    );
    println!(
        "gateway p99 at 1k req/s: group commit {:.2} ms, one commit per request {:.2} ms  (goal ≤ 5 ms)",
        g.p99_ms, s1.p99_ms
    );
    println!(
        "where the time goes (closed loop, CPU per request; the machine's cores are the limit): \
         the gateway's own work ≈ this process minus the bare run's ({:.0} µs with group commit), \
         PostgreSQL {:.0} µs; the load generator and the bare server {:.0} µs",
        g.process_us - b.process_us,
        g.postgres_us,
        b.process_us
    );
    drop(servers);
}
