//! `make bench-orchestrator`: figures, no pass/fail (a timed assertion is flaky on shared
//! machines). Needs `XIN_TEST_DATABASE_URL` (the Makefile starts `e2e/postgres.sh`).
//!
//! (a) Retrieval at scale: one tenant with `XIN_BENCH_CHUNKS` (default 100,000) chunks of ~60
//!     words drawn from a Zipf-distributed vocabulary, with 384-d embeddings unless
//!     `XIN_BENCH_EMBEDDINGS=0`; p50/p95 over 500 varied questions, lexical and hybrid. The
//!     embeddings are synthetic but clustered like real ones (see [`Embeddings`]); the HNSW
//!     index's recall@10 is measured against an exact f32 search over the same vectors
//!     (`XIN_BENCH_RECALL_QUERIES`, default 200), and one orchestrator process's peak RSS
//!     and time to ready with the index restored from its volume, built from the database,
//!     and without embeddings (the baseline). The goal is stated at 1M chunks:
//!     `XIN_BENCH_CHUNKS=1000000 XIN_BENCH_MESSAGE_PATH=0 make bench-orchestrator`.
//! (b) The message path: two tenants, each an orchestrator *process* (the release binary, as
//!     the image runs it) over its own database of `XIN_BENCH_CHUNKS` chunks, answering
//!     through an LLM stand-in that takes exactly 300 ms (lexical retrieval). The runbook's
//!     spike load: 2 tenants × 50 users, each sending a message, waiting for the answer and
//!     pausing 1–3 s, for `XIN_BENCH_SPIKE_SECONDS` (default 30) — once with one signed call
//!     per message (`POST /v1/messages`, what the gateway makes) and once with the two calls
//!     the gateway made before (find-or-create the conversation, then post to it). Then open
//!     loop at rising rates (`XIN_BENCH_RATES`, default 20,40,80,160,320 messages/s, each for
//!     `XIN_BENCH_STEP_SECONDS`, default 10) until the p95 overhead passes 200 ms: the
//!     saturation throughput. Overhead = latency − the baseline's at the same percentile,
//!     the baseline being the same users calling the stand-in directly (same run). CPU per
//!     message = the orchestrators' and PostgreSQL's CPU time (read from /proc: the
//!     processes' own time, and for PostgreSQL the postmaster's, its reaped children's and its
//!     live backends') divided by the messages answered. `XIN_BENCH_MESSAGE_PATH=0` skips it.

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
use xin_orchestrator::config::{EmbeddingConfig, RetrievalConfig};
use xin_orchestrator::retrieval::{Retriever, VECTOR_CANDIDATES, normalise};

const DIM: usize = 384;
const WORDS_PER_CHUNK: usize = 60;
const VOCABULARY: usize = 5000;
const QUERIES: usize = 500;
const LLM_DELAY: Duration = Duration::from_millis(300);

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

/// Synthetic embeddings with the structure real ones have: sentence embeddings lie near a
/// manifold of low intrinsic dimension (tens, not 384), so neighbours are graded. Each
/// chunk's vector is a fixed random linear map of a point in a 16-dimensional latent space
/// into 384 dimensions, plus noise, normalised; the four chunks of a document lie close to
/// the document's latent point. (Uniform random vectors have no neighbours to find — every
/// cosine is 0 ± 0.05 — and flat clusters of equidistant chunks make the exact top 10 a
/// matter of ±0.01 of noise; an earlier version of this bench used such clusters, where the
/// index's recall@10 was 0.55.) Deterministic: chunk `i`'s vector depends on `i` alone.
struct Embeddings {
    /// `DIM × LATENT`, row-major.
    map: Vec<f32>,
}

const LATENT: usize = 16;
/// Questions not about one chunk pick a random latent point.
const TOPICS: usize = 1000;

/// Near-Gaussian (a scaled sum of four uniforms).
fn gauss(rng: &mut StdRng) -> f32 {
    (0..4).map(|_| rng.random_range(-1.0f32..1.0)).sum::<f32>() * 0.866
}

fn latent(rng: &mut StdRng) -> Vec<f32> {
    (0..LATENT).map(|_| gauss(rng)).collect()
}

impl Embeddings {
    fn new() -> Self {
        let mut rng = StdRng::seed_from_u64(7);
        Embeddings {
            map: (0..DIM * LATENT).map(|_| gauss(&mut rng)).collect(),
        }
    }

    /// The 384-d unit vector of latent point `z`, with ambient noise from `rng`.
    fn embed(&self, z: &[f32], rng: &mut StdRng) -> Vec<f32> {
        normalise(
            (0..DIM)
                .map(|d| {
                    let row = &self.map[d * LATENT..(d + 1) * LATENT];
                    row.iter().zip(z).map(|(a, b)| a * b).sum::<f32>() + 1.5 * gauss(rng)
                })
                .collect(),
        )
        .unwrap()
    }

    /// Chunk `i` (document `i / 4`), rounded to the three decimals the bench stores.
    fn chunk(&self, i: usize) -> Vec<f32> {
        let doc = latent(&mut StdRng::seed_from_u64(0xD0C0_0000 ^ (i / 4) as u64));
        let mut rng = StdRng::seed_from_u64(0xC4C4_0000_0000 ^ i as u64);
        let z: Vec<f32> = doc.iter().map(|x| x + 0.35 * gauss(&mut rng)).collect();
        self.embed(&z, &mut rng)
            .into_iter()
            .map(|x| (x * 1000.0).round() / 1000.0)
            .collect()
    }

    /// A question about chunk `i` (its vector plus noise), or about a random point.
    fn question(&self, about: Result<usize, usize>, rng: &mut StdRng) -> Vec<f32> {
        match about {
            Ok(i) => {
                let base = normalise(self.chunk(i)).unwrap();
                normalise(base.iter().map(|x| x + 0.04 * gauss(rng)).collect()).unwrap()
            }
            Err(_) => {
                let z = latent(rng);
                self.embed(&z, rng)
            }
        }
    }
}

/// What was seeded: each chunk's word ids and, with embeddings, its vector and filter
/// attributes (for the exact search the index's recall is measured against).
struct Seeded {
    words_of: Vec<Vec<u16>>,
    /// Row-major `n × DIM`, normalised, as stored (empty without embeddings).
    vectors: Vec<f32>,
    public: Vec<bool>,
    billing: Vec<bool>,
}

/// Seeds `n` chunks for the pool's tenant with COPY.
async fn seed_chunks(
    pool: &PgPool,
    tenant: &str,
    n: usize,
    embeddings: bool,
    rng: &mut StdRng,
) -> Seeded {
    let gen_vectors = embeddings.then(Embeddings::new);
    let mut vectors = Vec::with_capacity(if embeddings { n * DIM } else { 0 });
    let (mut public, mut billing) = (Vec::with_capacity(n), Vec::with_capacity(n));
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
            public.push(visibility == "public");
            billing.push(tags.contains("billing"));
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
            if let Some(g) = &gen_vectors {
                let v = g.chunk(i);
                buf.push(b'{');
                for (d, x) in v.iter().enumerate() {
                    if d > 0 {
                        buf.push(b',');
                    }
                    write!(buf, "{x:.3}").unwrap();
                }
                buf.extend_from_slice(b"}\n");
                vectors.extend(normalise(v).unwrap());
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
    Seeded {
        words_of,
        vectors,
        public,
        billing,
    }
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
    let mut rng = StdRng::seed_from_u64(42);
    let url = database().await;
    let _ = rustls::crypto::ring::default_provider().install_default();

    println!(
        "# xin-orchestrator benchmark ({} CPUs)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let pool = xin_store::connect(&url, 4).await.unwrap();
    let t = Instant::now();
    let seeded = seed_chunks(&pool, "bench", chunks, embeddings, &mut rng).await;
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
    let qs = questions(&seeded.words_of, &mut rng);
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
        vector_retrieval(&pool, &url, &seeded, &qs, &mut rng).await;
    } else {
        println!("(hybrid not measured: XIN_BENCH_EMBEDDINGS=0)");
    }

    drop(seeded);
    // (b) the message path
    if std::env::var("XIN_BENCH_MESSAGE_PATH").is_ok_and(|v| v == "0") {
        println!("\n(the message path not measured: XIN_BENCH_MESSAGE_PATH=0)");
        return;
    }
    message_path(&url, chunks, &mut rng).await;
}

/// (a, continued) The vector side at `seeded`'s size: the index built from the database as
/// the orchestrator builds it, the vector search alone and hybrid retrieval timed, recall@10
/// against an exact search over the same vectors (same run), and one replica's memory and
/// cold start measured on the orchestrator process.
async fn vector_retrieval(
    pool: &PgPool,
    url: &str,
    seeded: &Seeded,
    qs: &[(String, Vec<String>)],
    rng: &mut StdRng,
) {
    let chunks = seeded.public.len();
    let dir = std::env::temp_dir().join(format!("xin-bench-index-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let embedding = EmbeddingConfig {
        dimensions: None,
        endpoint: "http://127.0.0.1:9".into(),
        model: "bench-embed".into(),
        timeout: Duration::from_secs(1),
        api_key: None,
        refresh: Duration::from_secs(3600),
    };
    let hybrid = Retriever::new(
        RetrievalConfig {
            index_dir: Some(dir.clone()),
            ..RetrievalConfig::default()
        },
        Some(&embedding),
        outbound(),
    );
    hybrid.refresh_term_stats(pool).await.unwrap();
    let index = hybrid.index().unwrap().clone();
    let t = Instant::now();
    index.refresh(pool).await.unwrap(); // the first load builds
    let build = t.elapsed();
    index.refresh(pool).await.unwrap(); // the next one saves to `dir`
    let synth = Embeddings::new();
    // Three in five questions are about one chunk, the others about a random point.
    let about: Vec<Result<usize, usize>> = (0..QUERIES)
        .map(|i| {
            if i % 5 < 3 {
                Ok(rng.random_range(0..chunks))
            } else {
                Err(rng.random_range(0..TOPICS))
            }
        })
        .collect();
    let qv: Vec<Vec<f32>> = about.iter().map(|a| synth.question(*a, rng)).collect();
    let (mut lat, mut scan, mut found) = (Vec::new(), Vec::new(), Vec::new());
    let vis = vec!["public".to_string()];
    for ((q, tags), v) in qs.iter().zip(&qv) {
        let t = Instant::now();
        found.push(index.top(v, VECTOR_CANDIDATES, &vis, tags));
        scan.push(ms(t.elapsed()));
        let t = Instant::now();
        hybrid.search(pool, q, Some(v.clone()), tags).await.unwrap();
        lat.push(ms(t.elapsed()));
    }
    let (h, s) = (stats(lat), stats(scan));
    println!(
        "| hybrid 0.5 (question vector given) | {} | {:.1} | {:.1} | {:.1} | {:.1} | | |",
        h.n, h.p50, h.p95, h.p99, h.max
    );
    println!(
        "| vector search alone (HNSW, int8, {} × {DIM}-d, top {VECTOR_CANDIDATES}, filtered) | {} | {:.2} | {:.2} | {:.2} | {:.2} | | |",
        index.len(),
        s.n,
        s.p50,
        s.p95,
        s.p99,
        s.max
    );
    let (vectors, graph, slack, rows) = index.memory_breakdown();
    println!(
        "embedding index: {} vectors built from the database in {:.1} s; the index reports {} MiB: int8 vectors {vectors:.0}, graph {graph:.0}, its allocators' reserve and waste {slack:.0}, the rest its key and slot tables; the filter attributes' map ~{rows:.0} MiB (the f32 vectors alone would be {} MiB); saved for restarts",
        index.len(),
        build.as_secs_f64(),
        index.memory_usage() >> 20,
        (chunks * DIM * 4) >> 20
    );

    // Recall@10 against an exact search (f32, brute force, the same filter) in this run.
    let n = env_usize("XIN_BENCH_RECALL_QUERIES", 200).min(QUERIES);
    let rows: Vec<(i64, String, i32)> =
        sqlx::query_as("SELECT id, document_id, chunk_index FROM knowledge_chunks")
            .fetch_all(pool)
            .await
            .unwrap();
    let mut id_of = vec![0i64; chunks];
    for (id, doc, idx) in rows {
        let d: usize = doc.trim_start_matches("doc-").parse().unwrap();
        id_of[d * 4 + idx as usize] = id;
    }
    let t = Instant::now();
    let exact: Vec<Vec<i64>> = std::thread::scope(|sc| {
        let parts: Vec<_> = (0..n)
            .collect::<Vec<_>>()
            .chunks(n.div_ceil(2).max(1))
            .map(|part| {
                let part = part.to_vec();
                let (qv, qs, id_of) = (&qv, qs, &id_of);
                sc.spawn(move || {
                    part.into_iter()
                        .map(|k| exact_top(seeded, &qv[k], !qs[k].1.is_empty(), 10, id_of))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        parts.into_iter().flat_map(|p| p.join().unwrap()).collect()
    });
    let exact_secs = t.elapsed().as_secs_f64();
    // Retrieval scores its candidates exactly (from the stored embeddings): the index's
    // top VECTOR_CANDIDATES re-scored with the f32 vectors is what it ranks.
    let slot: std::collections::HashMap<i64, usize> =
        id_of.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let rescored = |k: usize| {
        let mut c: Vec<(f32, i64)> = found[k]
            .iter()
            .map(|(id, _)| {
                let i = slot[id];
                let v = &seeded.vectors[i * DIM..(i + 1) * DIM];
                (xin_orchestrator::retrieval::dot(v, &qv[k]), *id)
            })
            .collect();
        c.sort_by(|a, b| b.0.total_cmp(&a.0));
        c.into_iter().take(10).map(|x| x.1).collect::<Vec<i64>>()
    };
    let (mut hit, mut hit_raw, mut total) = ([0usize; 2], [0usize; 2], [0usize; 2]);
    for k in 0..n {
        let kind = usize::from(about[k].is_err());
        let raw: Vec<i64> = found[k].iter().take(10).map(|x| x.0).collect();
        let ranked = rescored(k);
        hit_raw[kind] += exact[k].iter().filter(|id| raw.contains(id)).count();
        hit[kind] += exact[k].iter().filter(|id| ranked.contains(id)).count();
        total[kind] += exact[k].len();
    }
    let r = |h: [usize; 2], t: [usize; 2]| {
        let f = |h: usize, t: usize| h as f64 / t.max(1) as f64;
        format!(
            "{:.3} ({:.3} about one chunk, {:.3} about a random point)",
            f(h[0] + h[1], t[0] + t[1]),
            f(h[0], t[0]),
            f(h[1], t[1])
        )
    };
    println!(
        "recall@10 against exact search over {n} questions (goal >= 0.95): {} as retrieval ranks (the index's top {VECTOR_CANDIDATES}, re-scored exactly); the index's own top 10 {}; exact f32 scan {:.0} ms a question",
        r(hit, total),
        r(hit_raw, total),
        1000.0 * exact_secs * 2.0 / n.max(1) as f64
    );
    let indexed = index.len();
    drop(hybrid);
    drop(index);
    replica(url, &dir, chunks, indexed).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The exact top `k` (database ids) among public chunks (with the billing tag when `billing`).
fn exact_top(seeded: &Seeded, q: &[f32], billing: bool, k: usize, id_of: &[i64]) -> Vec<i64> {
    let mut best: Vec<(f32, usize)> = Vec::with_capacity(k + 1);
    for (i, v) in seeded.vectors.chunks_exact(DIM).enumerate() {
        if !seeded.public[i] || (billing && !seeded.billing[i]) {
            continue;
        }
        let s = xin_orchestrator::retrieval::dot(v, q);
        if best.len() == k && s <= best[k - 1].0 {
            continue;
        }
        let at = best.partition_point(|b| b.0 >= s);
        best.insert(at, (s, i));
        best.truncate(k);
    }
    best.into_iter().map(|(_, i)| id_of[i]).collect()
}

/// One replica: the orchestrator process with embeddings, started over a volume holding the
/// saved index, then over an empty one; beside it the same process without embeddings.
async fn replica(url: &str, saved: &std::path::Path, chunks: usize, expected: usize) {
    println!(
        "\n### one replica: the orchestrator process over {chunks} embedded chunks (goal: <= 512 MiB, cold start <= 60 s)"
    );
    println!("| start | seconds until the index is loaded | peak RSS MiB | RSS then MiB |");
    println!("| --- | ---: | ---: | ---: |");
    let empty = saved.with_extension("empty");
    let _ = std::fs::remove_dir_all(&empty);
    std::fs::create_dir_all(&empty).unwrap();
    let embed = |dir: &std::path::Path| {
        vec![
            ("EMBEDDING_ENDPOINT", "http://127.0.0.1:9".to_string()),
            ("EMBEDDING_MODEL", "bench-embed".to_string()),
            ("RETRIEVAL_INDEX_DIR", dir.display().to_string()),
        ]
    };
    for (label, extra) in [
        ("baseline: no embeddings (lexical only)", vec![]),
        (
            "restored from the saved index (a restarted container)",
            embed(saved),
        ),
        (
            "built from the database (an empty volume: a new pod)",
            embed(&empty),
        ),
    ] {
        let t = Instant::now();
        let svc = spawn_service_with(
            "bench",
            url,
            "http://127.0.0.1:9",
            &extra,
            Duration::from_secs(1800),
        )
        .await;
        // `/ready` stops waiting for the index after its grace: wait for the index itself.
        if !extra.is_empty() {
            let c = client();
            loop {
                let text = scrape(&c, &svc.metrics).await;
                if metric_value(&text, "orchestrator_embedding_index_vectors")
                    .is_some_and(|v| v as usize >= expected)
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        let secs = t.elapsed().as_secs_f64();
        let status = std::fs::read_to_string(format!("/proc/{}/status", svc.child.id())).unwrap();
        let kib = |key: &str| {
            status
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(f64::NAN)
        };
        println!(
            "| {label} | {secs:.1} | {:.0} | {:.0} |",
            kib("VmHWM:") / 1024.0,
            kib("VmRSS:") / 1024.0
        );
    }
    let _ = std::fs::remove_dir_all(&empty);
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

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// One tenant's orchestrator, the release binary in a process of its own.
struct Service {
    child: std::process::Child,
    addr: String,
    metrics: String,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn spawn_service(tenant: &str, db: &str, llm: &str) -> Service {
    spawn_service_with(tenant, db, llm, &[], Duration::from_secs(60)).await
}

/// An orchestrator process with `extra` environment, ready (database and embedding index)
/// within `within`.
async fn spawn_service_with(
    tenant: &str,
    db: &str,
    llm: &str,
    extra: &[(&str, String)],
    within: Duration,
) -> Service {
    let port = free_port();
    let metrics_port = free_port();
    let log = std::env::temp_dir().join(format!("xin-bench-orchestrator-{tenant}.log"));
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_xin-orchestrator"))
        .env("XIN_TENANT", tenant)
        .env("DATABASE_URL", db)
        .env("TENANT_SIGNING_KEY", std::str::from_utf8(KEY).unwrap())
        .env("ORCHESTRATOR_HTTP_HOST", "127.0.0.1")
        .env("ORCHESTRATOR_HTTP_PORT", port.to_string())
        .env("ORCHESTRATOR_METRICS_HOST", "127.0.0.1")
        .env("ORCHESTRATOR_METRICS_PORT", metrics_port.to_string())
        .env("LLM_ENDPOINT", llm)
        .env("LLM_MODEL", "bench-model")
        .env("LLM_TIMEOUT_SECONDS", "30")
        .env("XIN_OUTBOUND_ALLOW", "127.0.0.1/32")
        .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("start xin-orchestrator");
    let addr = format!("127.0.0.1:{port}");
    let c = client();
    let start = Instant::now();
    while !c
        .get(format!("http://{addr}/ready"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            start.elapsed() < within,
            "xin-orchestrator for {tenant} not ready in {} s (log: {})",
            within.as_secs(),
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Service {
        child,
        addr,
        metrics: format!("127.0.0.1:{metrics_port}"),
    }
}

/// How a message reaches the orchestrator.
#[derive(Clone, Copy, PartialEq)]
enum Path {
    /// `POST /v1/messages`: one call.
    OneCall,
    /// `POST /v1/conversations`, then `POST /v1/conversations/{id}/messages`.
    TwoCalls,
    /// The baseline: the LLM stand-in directly.
    StandIn,
}

async fn signed_post(
    c: &reqwest::Client,
    addr: &str,
    path: &str,
    body: String,
) -> Result<serde_json::Value, String> {
    let mut req = c.post(format!("http://{addr}{path}")).body(body.clone());
    for (k, v) in signed_headers(
        KEY,
        xin_runtime::signing::now(),
        "POST",
        path,
        body.as_bytes(),
    ) {
        req = req.header(k, v);
    }
    match req.send().await {
        Ok(r) if r.status().is_success() => r.json().await.map_err(|e| e.to_string()),
        Ok(r) => Err(format!(
            "{} {}",
            r.status(),
            r.text().await.unwrap_or_default()
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// Sends one message of `user` by `path`; Ok when it was answered.
async fn send_message(
    c: &reqwest::Client,
    path: Path,
    addr: &str,
    llm: &str,
    user: &str,
    text: &str,
    cmid: &str,
) -> Result<(), String> {
    match path {
        Path::OneCall => {
            let body = json!({"channel": "web", "external_user": user, "text": text, "client_message_id": cmid});
            let v = signed_post(c, addr, "/v1/messages", body.to_string()).await?;
            v.pointer("/answer/text")
                .map(|_| ())
                .ok_or_else(|| format!("no answer: {v}"))
        }
        Path::TwoCalls => {
            let body = json!({"channel": "web", "external_user": user});
            let conv = signed_post(c, addr, "/v1/conversations", body.to_string()).await?;
            let id = conv["id"].as_str().ok_or("no conversation id")?;
            let body = json!({"text": text, "client_message_id": cmid});
            let v = signed_post(
                c,
                addr,
                &format!("/v1/conversations/{id}/messages"),
                body.to_string(),
            )
            .await?;
            v.pointer("/answer/text")
                .map(|_| ())
                .ok_or_else(|| format!("no answer: {v}"))
        }
        Path::StandIn => {
            let body =
                json!({"model": "bench-model", "messages": [{"role": "user", "content": text}]});
            let r = c
                .post(format!("{llm}/v1/chat/completions"))
                .json(&body)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if r.status().is_success() {
                Ok(())
            } else {
                Err(r.status().to_string())
            }
        }
    }
}

/// What a load phase measured.
#[derive(Default)]
struct Phase {
    latencies: Vec<f64>,
    errors: usize,
    first_error: Option<String>,
    seconds: f64,
    /// CPU seconds of the orchestrator processes and of PostgreSQL during the phase.
    orchestrator_cpu: f64,
    postgres_cpu: f64,
}

impl Phase {
    fn messages(&self) -> usize {
        self.latencies.len()
    }
    fn cpu_ms_per_message(&self) -> (f64, f64) {
        let n = self.messages().max(1) as f64;
        (
            1000.0 * self.orchestrator_cpu / n,
            1000.0 * self.postgres_cpu / n,
        )
    }
}

struct Load<'a> {
    services: &'a [Service],
    llm: &'a str,
    postgres: xin_store::cpu::ServerCpu,
    texts: Arc<Vec<String>>,
    run_id: u32,
}

impl Load<'_> {
    fn cpu(&self) -> (f64, f64) {
        let orchestrators = self
            .services
            .iter()
            .map(|s| xin_store::cpu::process_seconds(s.child.id()))
            .sum();
        (orchestrators, self.postgres.seconds())
    }

    /// `users` per tenant, each: a message, its answer, a pause of 1–3 s; for `secs`.
    async fn spike(&self, path: Path, users: usize, secs: u64, label: &str) -> Phase {
        let c = client();
        let (o0, p0) = self.cpu();
        let start = Instant::now();
        let until = start + Duration::from_secs(secs);
        let tasks: Vec<_> = (0..users * self.services.len())
            .map(|u| {
                let c = c.clone();
                let addr = self.services[u % self.services.len()].addr.clone();
                let llm = self.llm.to_string();
                let texts = self.texts.clone();
                let user = format!("{label}-{}-{u}", self.run_id);
                tokio::spawn(async move {
                    let mut rng = StdRng::seed_from_u64(u as u64);
                    // Users arrive over the first pause, not all in one instant.
                    tokio::time::sleep(Duration::from_millis(rng.random_range(0..2000))).await;
                    let mut out = (Vec::new(), 0usize, None);
                    let mut m = 0;
                    while Instant::now() < until {
                        let text = &texts[rng.random_range(0..texts.len())];
                        let t = Instant::now();
                        match send_message(
                            &c,
                            path,
                            &addr,
                            &llm,
                            &user,
                            text,
                            &format!("{user}-{m}"),
                        )
                        .await
                        {
                            Ok(()) => out.0.push(ms(t.elapsed())),
                            Err(e) => {
                                out.1 += 1;
                                out.2.get_or_insert(e);
                            }
                        }
                        m += 1;
                        tokio::time::sleep(Duration::from_millis(rng.random_range(1000..=3000)))
                            .await;
                    }
                    out
                })
            })
            .collect();
        let mut phase = Phase::default();
        for t in tasks {
            let (l, e, first) = t.await.unwrap();
            phase.latencies.extend(l);
            phase.errors += e;
            if phase.first_error.is_none() {
                phase.first_error = first;
            }
        }
        phase.seconds = start.elapsed().as_secs_f64();
        let (o1, p1) = self.cpu();
        (phase.orchestrator_cpu, phase.postgres_cpu) = (o1 - o0, p1 - p0);
        phase
    }

    /// Open loop: `rate` messages per second over both tenants for `secs`, each from one of
    /// 1,000 users per tenant in turn; latency from each message's scheduled time.
    async fn open_loop(&self, path: Path, rate: usize, secs: u64) -> Phase {
        let c = client();
        let (o0, p0) = self.cpu();
        let start = Instant::now();
        let total = rate * secs as usize;
        let mut handles = Vec::with_capacity(total);
        for i in 0..total {
            let due = start + Duration::from_micros((i as u64 * 1_000_000) / rate as u64);
            tokio::time::sleep_until(due.into()).await;
            let c = c.clone();
            let addr = self.services[i % self.services.len()].addr.clone();
            let llm = self.llm.to_string();
            let text = self.texts[i % self.texts.len()].clone();
            let user = format!(
                "rate{rate}-{}-{}",
                self.run_id,
                i % (1000 * self.services.len())
            );
            let cmid = format!("rate{rate}-{}-{i}", self.run_id);
            handles.push(tokio::spawn(async move {
                let r = send_message(&c, path, &addr, &llm, &user, &text, &cmid).await;
                (ms(due.elapsed()), r)
            }));
        }
        let mut phase = Phase::default();
        for h in handles {
            match h.await.unwrap() {
                (l, Ok(())) => phase.latencies.push(l),
                (_, Err(e)) => {
                    phase.errors += 1;
                    phase.first_error.get_or_insert(e);
                }
            }
        }
        phase.seconds = start.elapsed().as_secs_f64();
        let (o1, p1) = self.cpu();
        (phase.orchestrator_cpu, phase.postgres_cpu) = (o1 - o0, p1 - p0);
        phase
    }
}

async fn message_path(url_a: &str, chunks: usize, rng: &mut StdRng) {
    let spike_secs = env_usize("XIN_BENCH_SPIKE_SECONDS", 30) as u64;
    let step_secs = env_usize("XIN_BENCH_STEP_SECONDS", 10) as u64;
    let rates: Vec<usize> = std::env::var("XIN_BENCH_RATES")
        .unwrap_or_else(|_| "20,40,80,160,320".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    let stand_in = StandIn::start().await;
    stand_in.set(
        "bench-model",
        Behaviour::Slow(LLM_DELAY, "A short answer from the stand-in.".into()),
    );
    // The second tenant: a database of its own with as many chunks (no embeddings: the
    // message path here retrieves lexically).
    let url_b = database().await;
    let t = Instant::now();
    let pool_b = xin_store::connect(&url_b, 2).await.unwrap();
    seed_chunks(&pool_b, "bench-b", chunks, false, rng).await;
    let postgres = xin_store::cpu::ServerCpu::of(&pool_b)
        .await
        .expect("PostgreSQL runs on this machine (its CPU is read from /proc)");
    let services = [
        spawn_service("bench", url_a, &stand_in.url).await,
        spawn_service("bench-b", &url_b, &stand_in.url).await,
    ];
    println!(
        "\n## (b) the message path: 2 tenants, each an orchestrator process over {chunks} chunks (the second seeded in {:.1} s), LLM stand-in answering after {} ms, lexical retrieval",
        t.elapsed().as_secs_f64(),
        LLM_DELAY.as_millis()
    );
    println!(
        "(the orchestrators, PostgreSQL, the stand-in and the load generator share this machine's {} CPUs)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let vocab = vocabulary();
    let texts: Vec<String> = (0..2000)
        .map(|_| {
            let w: Vec<&str> = (0..6)
                .map(|_| vocab[30 + rng.random_range(0..2000)].as_str())
                .collect();
            format!("how do i {}?", w.join(" "))
        })
        .collect();
    let load = Load {
        services: &services,
        llm: &stand_in.url,
        postgres,
        texts: Arc::new(texts),
        run_id: rand::random(),
    };
    // Warm-up: connections, statement caches, word statistics.
    load.open_loop(Path::OneCall, 20, 2).await;

    println!(
        "\n### spike load: 2 tenants × 50 users, each pausing 1–3 s between messages, {spike_secs} s (goal: p95 overhead <= 50 ms, <= 2 ms CPU per message)"
    );
    println!(
        "| run | messages | errors | msgs/s | p50 ms | p95 ms | p99 ms | max ms | p95 overhead ms | CPU ms/msg: orchestrator | PostgreSQL | total |"
    );
    println!(
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    let baseline = load
        .spike(Path::StandIn, 50, spike_secs.min(15), "base")
        .await;
    let b = stats(baseline.latencies.clone());
    println!(
        "| baseline: the users → the stand-in | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | — | | | |",
        b.n,
        baseline.errors,
        b.n as f64 / baseline.seconds,
        b.p50,
        b.p95,
        b.p99,
        b.max
    );
    for (label, path, users) in [
        (
            "one call per message (POST /v1/messages)",
            Path::OneCall,
            "one",
        ),
        ("two calls per message (before)", Path::TwoCalls, "two"),
    ] {
        // Users of their own per run: a message id seen before would be answered from storage.
        let r = load.spike(path, 50, spike_secs, users).await;
        let o = stats(r.latencies.clone());
        let (co, cp) = r.cpu_ms_per_message();
        println!(
            "| {label} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} |",
            o.n,
            r.errors,
            o.n as f64 / r.seconds,
            o.p50,
            o.p95,
            o.p99,
            o.max,
            o.p95 - b.p95,
            co,
            cp,
            co + cp
        );
        if let Some(e) = &r.first_error {
            println!("  first error: {e}");
        }
    }

    println!(
        "\n### saturation: open loop over both tenants at rising rates, {step_secs} s each, until the p95 overhead passes 200 ms (one call per message)"
    );
    println!(
        "| messages/s offered | answered | errors | p50 ms | p95 ms | p99 ms | p95 overhead ms | CPU ms/msg: orchestrator | PostgreSQL | total |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut saturated = None;
    let mut sustained = None;
    for rate in rates {
        let r = load.open_loop(Path::OneCall, rate, step_secs).await;
        let o = stats(r.latencies.clone());
        let (co, cp) = r.cpu_ms_per_message();
        let overhead = o.p95 - b.p95;
        println!(
            "| {rate} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} |",
            o.n,
            r.errors,
            o.p50,
            o.p95,
            o.p99,
            overhead,
            co,
            cp,
            co + cp
        );
        if let Some(e) = &r.first_error {
            println!("  first error: {e}");
        }
        if overhead > 200.0 || r.errors * 20 > r.messages() + r.errors {
            saturated = Some(rate);
            break;
        }
        sustained = Some(rate);
    }
    match (sustained, saturated) {
        (Some(s), Some(x)) => println!(
            "saturation throughput: between {s} and {x} messages/s (the p95 overhead passed 200 ms, or errors 5 %, at {x})"
        ),
        (Some(s), None) => println!(
            "saturation throughput: above {s} messages/s (the highest rate tried; XIN_BENCH_RATES tries more)"
        ),
        (None, Some(x)) => {
            println!("saturation throughput: below {x} messages/s (the lowest rate tried)")
        }
        (None, None) => println!("saturation throughput: no rate tried"),
    }
    println!(
        "overhead = latency − the baseline's at the same percentile (p95 {:.1} ms)",
        b.p95
    );
}
