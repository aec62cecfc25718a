//! `make bench-gateway`: signed WhatsApp webhooks through the gateway (signature check on the
//! raw bytes, parsing, durable insert into PostgreSQL, 200) against a bare hyper server that
//! reads the body and answers 200, with the same load generator in the same run.
//!
//! Two measurements per server: the most requests per second with 32 keep-alive connections
//! (closed loop), and latency at a fixed 1,000 requests/s (open loop, measured from each
//! request's scheduled time, so a stall is not hidden). Figures only, no pass/fail. The
//! forwarding worker is not running: this is the accept path.
//!
//! Settings: `XIN_BENCH_SECONDS` (default 10) per phase, `XIN_TEST_DATABASE_URL`.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use xin_api::channel::ChannelType;
use xin_api::routes::{ChannelRoute, Credentials, Routes, WebhookKey};
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

async fn serve_gateway() -> String {
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
        }],
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let router = app(
        Gateway::new(
            "acme".into(),
            table,
            pool,
            b"bench-signing-key-0123456789".to_vec(),
        ),
        HttpMetrics::default(),
    );
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

struct Figures {
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

async fn measure(name: &str, addr: &str, secs: u64) -> Figures {
    let url = format!("http://{addr}/webhooks/wa");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    // Warm-up.
    let warm = bodies(200, &format!("{name}-warm"));
    for b in warm.iter() {
        send(&client, &url, b).await;
    }
    // Closed loop: 32 connections as fast as they go.
    let set = bodies(400_000, &format!("{name}-max"));
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let stop = start + Duration::from_secs(secs);
    let workers: Vec<_> = (0..32)
        .map(|_| {
            let (client, url, set, next, errors) = (
                client.clone(),
                url.clone(),
                set.clone(),
                next.clone(),
                errors.clone(),
            );
            tokio::spawn(async move {
                while Instant::now() < stop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= set.len() {
                        break;
                    }
                    if !send(&client, &url, &set[i]).await {
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

    // Open loop at 1,000 requests/s.
    let rate = 1000u64;
    let set = bodies((rate * secs) as usize, &format!("{name}-fixed"));
    let start = Instant::now();
    let mut handles = Vec::with_capacity(set.len());
    for i in 0..set.len() {
        let due = start + Duration::from_micros(i as u64 * 1_000_000 / rate);
        tokio::time::sleep_until(due.into()).await;
        let (client, url, set, errors) = (client.clone(), url.clone(), set.clone(), errors.clone());
        handles.push(tokio::spawn(async move {
            let ok = send(&client, &url, &set[i]).await;
            if !ok {
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
    let (bare, gw) = servers.block_on(async { (serve_bare().await, serve_gateway().await) });
    let load = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "signed WhatsApp webhooks, {secs} s per phase; baseline = bare hyper server, same load generator, same run"
    );
    let b = load.block_on(measure("bare", &bare, secs));
    let g = load.block_on(measure("gateway", &gw, secs));
    println!();
    println!(
        "| server | max req/s (32 conns) | at 1k req/s: achieved | p50 ms | p99 ms | errors |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for (n, f) in [("bare hyper", &b), ("xin-gateway", &g)] {
        println!(
            "| {n} | {:.0} | {:.0} | {:.2} | {:.2} | {} |",
            f.max_rps, f.achieved_rps, f.p50_ms, f.p99_ms, f.errors
        );
    }
    println!();
    println!(
        "ratio gateway / bare (max req/s): {:.2}  (goal ≥ 0.5)",
        g.max_rps / b.max_rps
    );
    println!("gateway p99 at 1k req/s: {:.2} ms  (goal ≤ 5 ms)", g.p99_ms);
    drop(servers);
}
