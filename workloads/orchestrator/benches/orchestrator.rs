//! `make bench-orchestrator`: figures, no pass/fail (a timed assertion is flaky on shared
//! machines). Needs `XIN_TEST_DATABASE_URL` (the Makefile starts `e2e/postgres.sh`).
//!
//! (a) Retrieval at scale: one tenant with `XIN_BENCH_CHUNKS` (default 100,000) chunks of ~60
//!     words drawn from a Zipf-distributed vocabulary, with 384-d embeddings unless
//!     `XIN_BENCH_EMBEDDINGS=0`; p50/p95 over 500 varied questions, lexical and hybrid.
//! (b) End to end: the orchestrator in-process with an LLM stand-in answering after exactly
//!     300 ms; `XIN_BENCH_CONVERSATIONS` (default 250) concurrent conversations, each a create
//!     and 4 signed messages; latency, overhead above the same client calling the stand-in
//!     directly (the baseline, measured in the same run), error rate, throughput.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use sqlx::PgPool;
use xin_orchestrator::config::{EmbeddingConfig, LlmConfig, RetrievalConfig};
use xin_orchestrator::retrieval::{Retriever, normalise};

const DIM: usize = 384;
const WORDS_PER_CHUNK: usize = 60;
const VOCABULARY: usize = 5000;
const QUERIES: usize = 500;
const LLM_DELAY: Duration = Duration::from_millis(300);
const MESSAGES_PER_CONVERSATION: usize = 4;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if std::env::var("XIN_TEST_DATABASE_URL").is_err() {
        eprintln!(
            "XIN_TEST_DATABASE_URL is not set: run `make bench-orchestrator`, or start PostgreSQL with \
             `e2e/postgres.sh start` and export XIN_TEST_DATABASE_URL=$(e2e/postgres.sh url)"
        );
        std::process::exit(2);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

/// Common English function words first (most frequent), then generated pseudo-words.
fn vocabulary() -> Vec<String> {
    let mut v: Vec<String> =
        "the a to and of how do i my is in for on it you can what with your not this be are"
            .split(' ')
            .map(str::to_string)
            .collect();
    let (cons, vows) = ("bcdfghjklmnprstvz".as_bytes(), "aeiou".as_bytes());
    let syll: Vec<String> = cons
        .iter()
        .flat_map(|c| {
            vows.iter()
                .map(move |v| format!("{}{}", *c as char, *v as char))
        })
        .collect();
    'outer: for a in &syll {
        for b in &syll {
            for c in ["", "n", "r", "s"] {
                if v.len() == VOCABULARY {
                    break 'outer;
                }
                v.push(format!("{a}{b}{c}"));
            }
        }
    }
    v
}

/// Zipf(1.0) ranks by inverse transform over the cumulative weights.
struct Zipf(Vec<f64>);

impl Zipf {
    fn new(n: usize) -> Self {
        let mut acc = 0.0;
        Zipf(
            (1..=n)
                .map(|r| {
                    acc += 1.0 / r as f64;
                    acc
                })
                .collect(),
        )
    }
    fn sample(&self, rng: &mut StdRng) -> usize {
        let u = rng.random::<f64>() * self.0.last().unwrap();
        self.0.partition_point(|&c| c < u).min(self.0.len() - 1)
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Stats {
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
    n: usize,
}

fn stats(mut v: Vec<f64>) -> Stats {
    v.sort_by(f64::total_cmp);
    Stats {
        p50: pct(&v, 0.50),
        p95: pct(&v, 0.95),
        p99: pct(&v, 0.99),
        max: v.last().copied().unwrap_or(f64::NAN),
        n: v.len(),
    }
}

/// Seeds `n` chunks for the pool's tenant with COPY; returns each chunk's word ids.
async fn seed_chunks(
    pool: &PgPool,
    tenant: &str,
    n: usize,
    embeddings: bool,
    rng: &mut StdRng,
) -> Vec<Vec<u16>> {
    let vocab = vocabulary();
    let zipf = Zipf::new(vocab.len());
    let tag_sets = [
        "{}",
        "{}",
        "{billing}",
        "{shipping}",
        "{account}",
        "{billing,en}",
    ];
    let mut words_of = Vec::with_capacity(n);
    let mut conn = pool.acquire().await.unwrap();
    // COPY into a table with row-level security is refused ("COPY FROM not supported with
    // row-level security"): COPY into a temporary table, then INSERT … SELECT (policy-checked).
    sqlx::query(
        "CREATE TEMP TABLE IF NOT EXISTS stage (tenant TEXT, document_id TEXT, chunk_index INT, title TEXT,
         text TEXT, token_count INT, visibility TEXT, tags TEXT[], embedding REAL[])",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    let batch = 5000;
    let mut done = 0;
    while done < n {
        let mut copy = conn.copy_in_raw("COPY stage FROM STDIN").await.unwrap();
        let mut buf = Vec::with_capacity(batch * 3000);
        for i in done..(done + batch).min(n) {
            let ids: Vec<u16> = (0..WORDS_PER_CHUNK)
                .map(|_| zipf.sample(rng) as u16)
                .collect();
            let text: Vec<&str> = ids.iter().map(|&w| vocab[w as usize].as_str()).collect();
            let title: Vec<&str> = (0..3)
                .map(|_| vocab[30 + rng.random_range(0..vocab.len() - 30)].as_str())
                .collect();
            let visibility = if rng.random_range(0..10) == 0 {
                "internal"
            } else {
                "public"
            };
            let tags = tag_sets[rng.random_range(0..tag_sets.len())];
            write!(
                buf,
                "{tenant}\tdoc-{}\t{}\t{}\t{}.\t{}\t{visibility}\t{tags}\t",
                i / 4,
                i % 4,
                title.join(" "),
                text.join(" "),
                (WORDS_PER_CHUNK as f64 * 1.3) as i32
            )
            .unwrap();
            if embeddings {
                buf.push(b'{');
                for d in 0..DIM {
                    if d > 0 {
                        buf.push(b',');
                    }
                    write!(buf, "{:.3}", rng.random_range(-1.0f32..1.0)).unwrap();
                }
                buf.extend_from_slice(b"}\n");
            } else {
                buf.extend_from_slice(b"\\N\n");
            }
            words_of.push(ids);
        }
        copy.send(buf).await.unwrap();
        copy.finish().await.unwrap();
        sqlx::query(
            "WITH moved AS (DELETE FROM stage RETURNING *)
             INSERT INTO knowledge_chunks (tenant, document_id, chunk_index, title, text, token_count, visibility, tags, embedding)
             SELECT tenant, document_id, chunk_index, title, text, token_count, visibility, tags, embedding FROM moved",
        )
        .execute(&mut *conn)
        .await
        .unwrap();
        done = (done + batch).min(n);
    }
    sqlx::query("ANALYZE knowledge_chunks")
        .execute(&mut *conn)
        .await
        .unwrap();
    words_of
}

/// Questions: most are words of an existing chunk plus function words (something relevant
/// exists), the rest Zipf-random words; one in ten has a tag filter.
fn questions(words_of: &[Vec<u16>], rng: &mut StdRng) -> Vec<(String, Vec<String>)> {
    let vocab = vocabulary();
    let zipf = Zipf::new(vocab.len());
    (0..QUERIES)
        .map(|i| {
            let mut q: Vec<&str> = Vec::new();
            if i % 5 < 3 {
                let chunk = &words_of[rng.random_range(0..words_of.len())];
                q.extend(["how", "do", "i"]);
                for _ in 0..rng.random_range(2..6) {
                    q.push(&vocab[chunk[rng.random_range(0..chunk.len())] as usize]);
                }
            } else {
                for _ in 0..rng.random_range(3..9) {
                    q.push(&vocab[zipf.sample(rng)]);
                }
            }
            let tags = if i % 10 == 9 {
                vec!["billing".to_string()]
            } else {
                vec![]
            };
            (format!("{}?", q.join(" ")), tags)
        })
        .collect()
}

async fn run() {
    let chunks = env_usize("XIN_BENCH_CHUNKS", 100_000);
    let embeddings = std::env::var("XIN_BENCH_EMBEDDINGS")
        .map(|v| v != "0")
        .unwrap_or(true);
    let conversations = env_usize("XIN_BENCH_CONVERSATIONS", 250);
    let mut rng = StdRng::seed_from_u64(42);
    let url = database().await;
    let _ = rustls::crypto::ring::default_provider().install_default();

    println!(
        "# xin-orchestrator benchmark ({} CPUs)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let pool = xin_store::connect(&url, 4).await.unwrap();
    let t = Instant::now();
    let words_of = seed_chunks(&pool, "bench", chunks, embeddings, &mut rng).await;
    println!(
        "seeded {chunks} chunks of {WORDS_PER_CHUNK} words ({VOCABULARY}-word Zipf vocabulary){} in {:.1} s",
        if embeddings {
            format!(", {DIM}-d embeddings")
        } else {
            ", no embeddings".into()
        },
        t.elapsed().as_secs_f64()
    );

    // (a) retrieval
    let qs = questions(&words_of, &mut rng);
    let lexical = Retriever::new(
        RetrievalConfig {
            hybrid_weight: 0.0,
            ..RetrievalConfig::default()
        },
        None,
        outbound(),
    );
    let t = Instant::now();
    let words = lexical.refresh_term_stats(&pool).await.unwrap();
    let stats_load = t.elapsed();
    println!("\n## (a) retrieval over {chunks} chunks (goal: p95 <= 30 ms)");
    println!(
        "(word statistics: {words} words in 2+ chunks, loaded with ts_stat in {:.2} s; refreshed every {} s in the background)",
        stats_load.as_secs_f64(),
        xin_orchestrator::retrieval::TERM_STATS_REFRESH.as_secs()
    );
    println!(
        "| mode | questions | p50 ms | p95 ms | p99 ms | max ms | mean candidates | mean chunks returned |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    // A tenant database as the operator provisions it: no row-level security, so the GIN
    // index serves `@@` with `ts_match_vq` as PostgreSQL ships it (no superuser step).
    let pool = xin_store::connect(&url, 4).await.unwrap();
    measure(&lexical, &pool, &qs[..50]).await; // warm-up
    let lex = measure(&lexical, &pool, &qs).await;
    println!("{}", lex.row("lexical"));
    if embeddings {
        let hybrid = Retriever::new(
            RetrievalConfig::default(),
            Some(&EmbeddingConfig {
                dimensions: None,
                endpoint: "http://127.0.0.1:9".into(),
                model: "unused".into(),
                timeout: Duration::from_secs(1),
                api_key: None,
                refresh: Duration::from_secs(3600),
            }),
            outbound(),
        );
        hybrid.refresh_term_stats(&pool).await.unwrap();
        let index = hybrid.index().unwrap().clone();
        let t = Instant::now();
        index.refresh(&pool).await.unwrap();
        let load = t.elapsed();
        let qv: Vec<Vec<f32>> = (0..QUERIES)
            .map(|_| normalise((0..DIM).map(|_| rng.random_range(-1.0f32..1.0)).collect()).unwrap())
            .collect();
        let (mut lat, mut scan) = (Vec::new(), Vec::new());
        let vis = vec!["public".to_string()];
        for ((q, tags), v) in qs.iter().zip(&qv) {
            let t = Instant::now();
            index.top(v, 64, &vis, tags);
            scan.push(ms(t.elapsed()));
            let t = Instant::now();
            hybrid
                .search(&pool, q, Some(v.clone()), tags)
                .await
                .unwrap();
            lat.push(ms(t.elapsed()));
        }
        let (h, s) = (stats(lat), stats(scan));
        println!(
            "| hybrid 0.5 (question vector given) | {} | {:.1} | {:.1} | {:.1} | {:.1} | | |",
            h.n, h.p50, h.p95, h.p99, h.max
        );
        println!(
            "| vector scan alone ({} × {DIM}-d, in memory) | {} | {:.1} | {:.1} | {:.1} | {:.1} | | |",
            index.len(),
            s.n,
            s.p50,
            s.p95,
            s.p99,
            s.max
        );
        println!(
            "embedding index: loaded {} vectors in {:.1} s (~{} MiB of f32)",
            index.len(),
            load.as_secs_f64(),
            index.len() * DIM * 4 / (1 << 20)
        );
    } else {
        println!("(hybrid not measured: XIN_BENCH_EMBEDDINGS=0)");
    }

    // (b) end to end
    let stand_in = StandIn::start().await;
    stand_in.set(
        "bench-model",
        Behaviour::Slow(LLM_DELAY, "A short answer from the stand-in.".into()),
    );
    println!(
        "\n## (b) end to end: {conversations} concurrent conversations × (create + {MESSAGES_PER_CONVERSATION} messages), LLM stand-in answers after {} ms",
        LLM_DELAY.as_millis()
    );
    println!(
        "(lexical retrieval; the orchestrator, PostgreSQL, the stand-in and the client share this machine)"
    );
    let small_url = database().await;
    let small_pool = xin_store::connect(&small_url, 2).await.unwrap();
    seed_chunks(&small_pool, "bench", 1000, false, &mut rng).await;
    let large = format!("{chunks}-chunk knowledge");
    for stagger in [true, false] {
        println!(
            "\n### {}",
            if stagger {
                "staggered starts (each conversation starts at a random point of the first 300 ms)"
            } else {
                "lockstep (all conversations start together; every wave of requests arrives at once)"
            }
        );
        println!(
            "| run | messages | errors | p50 ms | p95 ms | p99 ms | max ms | p95 overhead ms | p50 overhead ms | msgs/s |"
        );
        println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        let baseline = baseline(&stand_in, conversations, stagger).await;
        let b = stats(baseline.latencies.clone());
        println!(
            "| baseline: client → stand-in | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | — | — | {:.0} |",
            b.n, baseline.errors, b.p50, b.p95, b.p99, b.max, baseline.throughput
        );
        for (label, db) in [("1k-chunk knowledge", &small_url), (large.as_str(), &url)] {
            let r = end_to_end(db, &stand_in, conversations, stagger).await;
            let o = stats(r.latencies.clone());
            println!(
                "| orchestrator, {label} | {} | {} ({:.2} %) | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} |",
                o.n,
                r.errors,
                100.0 * r.errors as f64 / (o.n + r.errors).max(1) as f64,
                o.p50,
                o.p95,
                o.p99,
                o.max,
                o.p95 - b.p95,
                o.p50 - b.p50,
                r.throughput
            );
            let cr = sorted(&r.creates);
            println!(
                "| &nbsp;&nbsp;its creates | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | | | |",
                cr.len(),
                r.create_errors,
                pct(&cr, 0.5),
                pct(&cr, 0.95),
                pct(&cr, 0.99),
                cr.last().copied().unwrap_or(f64::NAN)
            );
            if let Some(e) = &r.first_error {
                println!("  first error: {e}");
            }
        }
    }
    println!(
        "\noverhead = orchestrator − baseline at the same percentile (goal: p95 overhead <= 50 ms)"
    );
}

struct Measured {
    stats: Stats,
    candidates: f64,
    returned: f64,
}

impl Measured {
    fn row(&self, label: &str) -> String {
        let s = &self.stats;
        format!(
            "| {label} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {:.1} |",
            s.n, s.p50, s.p95, s.p99, s.max, self.candidates, self.returned
        )
    }
}

async fn measure(r: &Retriever, pool: &PgPool, qs: &[(String, Vec<String>)]) -> Measured {
    let (mut lat, mut cands, mut found) = (Vec::new(), 0usize, 0usize);
    for (q, tags) in qs {
        let t = Instant::now();
        let got = r.retrieve(pool, q, tags).await.unwrap();
        lat.push(ms(t.elapsed()));
        cands += got.candidates;
        found += got.chunks.len();
    }
    Measured {
        stats: stats(lat),
        candidates: cands as f64 / qs.len().max(1) as f64,
        returned: found as f64 / qs.len().max(1) as f64,
    }
}

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

struct Run {
    latencies: Vec<f64>,
    creates: Vec<f64>,
    errors: usize,
    create_errors: usize,
    throughput: f64,
    first_error: Option<String>,
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The same concurrency and request count straight to the stand-in.
async fn baseline(stand_in: &StandIn, conversations: usize, stagger: bool) -> Run {
    let c = client();
    let url = format!("{}/v1/chat/completions", stand_in.url);
    let start = Instant::now();
    let tasks: Vec<_> = (0..conversations)
        .map(|i| {
            let (c, url) = (c.clone(), url.clone());
            let offset = if stagger {
                Duration::from_millis((i as u64 * 7919) % LLM_DELAY.as_millis() as u64)
            } else {
                Duration::ZERO
            };
            tokio::spawn(async move {
                tokio::time::sleep(offset).await;
                let mut out = Vec::new();
                for m in 0..MESSAGES_PER_CONVERSATION {
                    let body = json!({"model": "bench-model", "messages": [{"role": "user", "content": format!("question {m} of {i}")}]});
                    let t = Instant::now();
                    let ok = c.post(&url).json(&body).send().await.is_ok_and(|r| r.status().is_success());
                    out.push((ms(t.elapsed()), ok));
                }
                out
            })
        })
        .collect();
    let mut run = Run {
        latencies: vec![],
        creates: vec![],
        errors: 0,
        create_errors: 0,
        throughput: 0.0,
        first_error: None,
    };
    for t in tasks {
        for (l, ok) in t.await.unwrap() {
            if ok {
                run.latencies.push(l)
            } else {
                run.errors += 1
            }
        }
    }
    run.throughput =
        (conversations * MESSAGES_PER_CONVERSATION) as f64 / start.elapsed().as_secs_f64();
    run
}

async fn end_to_end(db: &str, stand_in: &StandIn, conversations: usize, stagger: bool) -> Run {
    let mut cfg = config("bench");
    cfg.llm = Some(LlmConfig {
        endpoint: stand_in.url.clone(),
        model: "bench-model".into(),
        fallback_model: None,
        timeout: Duration::from_secs(10),
        api_key: None,
    });
    // The production default pool size (DATABASE_MAX_CONNECTIONS).
    let h = Arc::new(start_with(db, cfg, 16).await);
    let c = client();
    let mut rng = StdRng::seed_from_u64(7);
    let vocab = vocabulary();
    let texts: Vec<Vec<String>> = (0..conversations)
        .map(|_| {
            (0..MESSAGES_PER_CONVERSATION)
                .map(|_| {
                    let w: Vec<&str> = (0..6)
                        .map(|_| vocab[30 + rng.random_range(0..2000)].as_str())
                        .collect();
                    format!("how do i {}?", w.join(" "))
                })
                .collect()
        })
        .collect();
    // Fresh users and message ids per run: a repeat would be answered from storage.
    let run_id: u32 = rand::random();
    let start = Instant::now();
    let tasks: Vec<_> = texts
        .into_iter()
        .enumerate()
        .map(|(i, texts)| {
            let (h, c) = (h.clone(), c.clone());
            // Staggered: each conversation starts at a random point of the first LLM period,
            // as users do, instead of all of them in lockstep.
            let offset = if stagger {
                Duration::from_millis((i as u64 * 7919) % LLM_DELAY.as_millis() as u64)
            } else {
                Duration::ZERO
            };
            tokio::spawn(async move {
                tokio::time::sleep(offset).await;
                let send = |path: String, body: String| {
                    let (h, c) = (h.clone(), c.clone());
                    async move {
                        let mut req = c
                            .post(format!("http://{}{path}", h.addr))
                            .body(body.clone());
                        for (k, v) in signed_headers(
                            &h.key,
                            xin_runtime::signing::now(),
                            "POST",
                            &path,
                            body.as_bytes(),
                        ) {
                            req = req.header(k, v);
                        }
                        match req.send().await {
                            Ok(r) if r.status().is_success() => r
                                .json::<serde_json::Value>()
                                .await
                                .map_err(|e| e.to_string()),
                            Ok(r) => Err(format!(
                                "{} {}",
                                r.status(),
                                r.text().await.unwrap_or_default()
                            )),
                            Err(e) => Err(e.to_string()),
                        }
                    }
                };
                let mut out = (None, Vec::new(), None);
                let t = Instant::now();
                let body = json!({"channel": "web", "external_user": format!("user-{run_id}-{i}")})
                    .to_string();
                let id = match send("/v1/conversations".into(), body).await {
                    Ok(v) => {
                        out.0 = Some(Ok(ms(t.elapsed())));
                        v["id"].as_str().unwrap_or_default().to_string()
                    }
                    Err(e) => {
                        out.0 = Some(Err(e));
                        return out;
                    }
                };
                for (m, text) in texts.into_iter().enumerate() {
                    let body =
                        json!({"text": text, "client_message_id": format!("{run_id}-{i}-{m}")})
                            .to_string();
                    let t = Instant::now();
                    match send(format!("/v1/conversations/{id}/messages"), body).await {
                        Ok(_) => out.1.push(ms(t.elapsed())),
                        Err(e) => {
                            out.2.get_or_insert(e);
                        }
                    }
                }
                out
            })
        })
        .collect();
    let mut run = Run {
        latencies: vec![],
        creates: vec![],
        errors: 0,
        create_errors: 0,
        throughput: 0.0,
        first_error: None,
    };
    for t in tasks {
        let (create, lats, err) = t.await.unwrap();
        match create {
            Some(Ok(l)) => {
                run.creates.push(l);
                run.errors += MESSAGES_PER_CONVERSATION - lats.len();
            }
            Some(Err(e)) => {
                run.create_errors += 1;
                run.errors += MESSAGES_PER_CONVERSATION;
                run.first_error.get_or_insert(e);
            }
            None => {}
        }
        if let Some(e) = err {
            run.first_error.get_or_insert(e);
        }
        run.latencies.extend(lats);
    }
    run.throughput = run.latencies.len() as f64 / start.elapsed().as_secs_f64();
    run
}
