//! `make bench-ingest`: figures, no pass/fail (a timed assertion is flaky on shared machines).
//! Needs `XIN_TEST_DATABASE_URL` (the Makefile starts `e2e/postgres.sh`).
//!
//! `XIN_BENCH_DOCUMENTS` (default 10,000) Markdown documents of about 2 KB (headings and
//! paragraphs of varied words), from a directory of files (what a mounted ConfigMap looks
//! like), lexical only, the default spec (Upsert, chunks of 800 with 100 of overlap): the
//! whole run — read, parse, chunk, digest, write in batches of 1,000 — into a fresh tenant
//! database as its runtime role. Documents per second end to end and the process's peak RSS,
//! beside the floor measured in the same run: the very same chunk rows written to another
//! fresh database by the fastest bulk path the runtime role may take, one `COPY` straight
//! into the table in one transaction.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::PgPool;
use xin_api::ingestion::{IngestionJobSpec, WorkerState};
use xin_ingest::metrics::Metrics;
use xin_ingest::pipeline::Run;
use xin_ingest::report::Reporter;
use xin_ingest::source::Source;
use xin_runtime::HttpMetrics;
use xin_store::knowledge::{self, ChunkRow};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if std::env::var("XIN_TEST_DATABASE_URL").is_err() {
        eprintln!(
            "XIN_TEST_DATABASE_URL is not set: run `make bench-ingest`, or start PostgreSQL with \
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

/// A document of about `bytes` bytes: a title, sections with headings, paragraphs of
/// sentences drawn from a vocabulary.
fn document(rng: &mut StdRng, i: usize, bytes: usize) -> String {
    const WORDS: &[&str] = &[
        "order",
        "shipping",
        "delivery",
        "return",
        "refund",
        "account",
        "password",
        "invoice",
        "warranty",
        "repair",
        "parcel",
        "tracking",
        "payment",
        "card",
        "address",
        "support",
        "agent",
        "hours",
        "store",
        "discount",
        "voucher",
        "size",
        "colour",
        "exchange",
        "days",
        "business",
        "international",
        "express",
        "customer",
        "service",
        "the",
        "a",
        "to",
        "and",
        "of",
        "your",
        "we",
        "within",
        "after",
        "before",
        "is",
        "can",
        "will",
        "for",
        "on",
    ];
    let mut s = format!("# Topic {i}\n\n");
    let mut section = 0;
    while s.len() < bytes {
        if rng.random_range(0..4) == 0 {
            section += 1;
            let _ = write!(s, "## Section {section}\n\n");
        }
        let sentences = rng.random_range(2..6);
        for _ in 0..sentences {
            let n = rng.random_range(6..16);
            for w in 0..n {
                let word = WORDS[rng.random_range(0..WORDS.len())];
                if w == 0 {
                    let mut c = word.chars();
                    let first = c.next().unwrap().to_uppercase();
                    let _ = write!(s, "{first}{}", c.as_str());
                } else {
                    s.push(' ');
                    s.push_str(word);
                }
            }
            let _ = write!(s, " {}. ", rng.random_range(1..1000));
        }
        s.push_str("\n\n");
    }
    s
}

/// Peak resident set of this process so far (VmHWM), in MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// A stored chunk row: id, position, title, source, text, tokens, visibility, tags, metadata,
/// digest.
type Raw = (
    String,
    i32,
    String,
    String,
    String,
    i32,
    String,
    Vec<String>,
    serde_json::Value,
    String,
);

/// Every chunk row of the store, as the worker wrote it.
async fn rows(pool: &PgPool) -> Vec<ChunkRow> {
    let raw: Vec<Raw> =
        sqlx::query_as(
            "SELECT document_id, chunk_index, title, source, text, token_count, visibility, tags, metadata, content_hash
             FROM knowledge_chunks ORDER BY document_id, chunk_index",
        )
        .fetch_all(pool)
        .await
        .unwrap();
    raw.into_iter()
        .map(
            |(
                document_id,
                chunk_index,
                title,
                source,
                text,
                token_count,
                visibility,
                tags,
                metadata,
                content_hash,
            )| ChunkRow {
                document_id,
                chunk_index,
                title,
                source,
                text,
                token_count,
                visibility: if visibility == "internal" {
                    "internal"
                } else {
                    "public"
                },
                tags,
                metadata,
                embedding: None,
                content_hash,
            },
        )
        .collect()
}

/// The floor: `rows` in one `COPY` straight into the table, one transaction.
async fn copy_direct(pool: &PgPool, rows: &[ChunkRow]) -> Duration {
    let mut buf = String::with_capacity(rows.len() * 1200);
    for r in rows {
        buf.push_str("\"bench\",\"bench\",");
        knowledge::csv_row(&mut buf, r);
    }
    let start = Instant::now();
    let mut tx = pool.begin().await.unwrap();
    let mut copy = tx
        .copy_in_raw(&format!(
            "COPY knowledge_chunks (tenant, ingestion_job, {}) FROM STDIN (FORMAT csv)",
            knowledge::COPY_COLUMNS
        ))
        .await
        .unwrap();
    copy.send(buf.into_bytes()).await.unwrap();
    copy.finish().await.unwrap();
    tx.commit().await.unwrap();
    start.elapsed()
}

async fn run() {
    let n = env_usize("XIN_BENCH_DOCUMENTS", 10_000);
    let bytes = env_usize("XIN_BENCH_DOCUMENT_BYTES", 2048);
    let dir: PathBuf =
        std::env::temp_dir().join(format!("xin-bench-ingest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    let mut total = 0;
    for i in 0..n {
        let d = document(&mut rng, i, bytes);
        total += d.len();
        std::fs::write(dir.join(format!("doc-{i:05}.md")), d).unwrap();
    }
    println!(
        "ingestion: {n} Markdown documents, {:.1} KiB on average, lexical only, default chunking (800/100), Upsert",
        total as f64 / n as f64 / 1024.0
    );

    let spec: IngestionJobSpec = serde_json::from_value(
        serde_json::json!({"source": {"configMap": {"name": "bench"}}, "tags": ["bench"]}),
    )
    .unwrap();
    let pool = xin_store::connect(&xin_store::fresh_test_database().await, 4)
        .await
        .unwrap();
    let http = HttpMetrics::default();
    let metrics = Metrics::new("bench", &http);
    let source = Source::dir(dir.clone(), 32 << 20);
    let rss_before = peak_rss_mib();
    let start = Instant::now();
    let report = Run {
        tenant: "bench",
        job: "bench",
        spec: &spec,
        source: &source,
        pool: &pool,
        embedder: None,
        reporter: &Reporter::none(),
        metrics: &metrics,
        concurrency: 8,
        batch_documents: 1000,
        max_documents: 100_000,
        retry_base: Duration::from_millis(100),
        heavy: Run::heavy_parses(),
    }
    .run()
    .await
    .unwrap();
    let pipeline = start.elapsed();
    let rss = peak_rss_mib();
    assert_eq!(report.state, WorkerState::Succeeded, "{report:?}");
    assert_eq!(report.documents as usize, n, "every document ingested");
    let written = rows(&pool).await;
    assert_eq!(written.len() as i64, report.chunks);

    let floor_pool = xin_store::connect(&xin_store::fresh_test_database().await, 1)
        .await
        .unwrap();
    let floor = copy_direct(&floor_pool, &written).await;
    let copied: i64 = sqlx::query_scalar("SELECT count(*) FROM knowledge_chunks")
        .fetch_one(&floor_pool)
        .await
        .unwrap();
    assert_eq!(copied as usize, written.len());

    let docs_per_s = n as f64 / pipeline.as_secs_f64();
    println!(
        "  xin-ingest pipeline: {n} documents → {} chunks in {:.2} s = {docs_per_s:.0} documents/s (goal ≥ 2,000)",
        report.chunks,
        pipeline.as_secs_f64()
    );
    println!(
        "  floor (the same rows, one COPY into the table, one transaction): {:.2} s = {:.0} documents/s",
        floor.as_secs_f64(),
        n as f64 / floor.as_secs_f64()
    );
    println!(
        "  ratio pipeline / floor: {:.2}× (goal ≤ 3×)",
        pipeline.as_secs_f64() / floor.as_secs_f64()
    );
    println!(
        "  peak RSS of the process: {rss:.0} MiB ({rss_before:.0} MiB before the run, the documents generated)"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
