//! The ingestion run against real components: a real PostgreSQL (the tenant's own database,
//! as its runtime role), real HTTP servers on loopback for URL sources and the embedding
//! endpoint, and a real S3-compatible server (moto, `e2e/s3.sh`) for buckets.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use sqlx::PgPool;
use xin_api::ingestion::{IngestionJobSpec, WorkerState};
use xin_ingest::config::EmbeddingConfig;
use xin_ingest::embed::Embedder;
use xin_ingest::metrics::Metrics;
use xin_ingest::pipeline::Run;
use xin_ingest::report::{Report, Reporter};
use xin_ingest::source::{Open, Source};
use xin_runtime::HttpMetrics;
use xin_runtime::outbound::{DestinationPolicy, Outbound};

type Files = Arc<BTreeMap<String, (&'static str, Vec<u8>)>>;

/// An HTTP server on 127.0.0.1 serving `files` (path → content type, body); `/private/*`
/// needs the header `X-Api-Key: k-123`.
async fn serve(files: Vec<(&'static str, &'static str, Vec<u8>)>) -> String {
    let files: Files = Arc::new(
        files
            .into_iter()
            .map(|(p, ct, b)| (p.to_string(), (ct, b)))
            .collect(),
    );
    let app = Router::new()
        .fallback(get(
            |State(files): State<Files>, uri: axum::http::Uri, headers: HeaderMap| async move {
                let path = uri.path().to_string();
                if path.starts_with("/private/")
                    && headers.get("x-api-key").and_then(|v| v.to_str().ok()) != Some("k-123")
                {
                    return StatusCode::UNAUTHORIZED.into_response();
                }
                match files.get(&path) {
                    Some((ct, body)) => {
                        ([(header::CONTENT_TYPE, *ct)], body.clone()).into_response()
                    }
                    None => StatusCode::NOT_FOUND.into_response(),
                }
            },
        ))
        .with_state(files);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// An embedding endpoint that answers the first `throttle` requests 429, then 8-dimensional
/// vectors derived from each input; counts requests and inputs.
#[derive(Clone, Default)]
struct EmbedStandIn {
    requests: Arc<AtomicUsize>,
    inputs: Arc<AtomicUsize>,
    throttle: usize,
}

async fn embedding_server(stand_in: EmbedStandIn) -> String {
    let app = Router::new()
        .route(
            "/v1/embeddings",
            post(
                |State(s): State<EmbedStandIn>, body: axum::Json<serde_json::Value>| async move {
                    let n = s.requests.fetch_add(1, Ordering::SeqCst);
                    if n < s.throttle {
                        return (
                            StatusCode::TOO_MANY_REQUESTS,
                            [(header::RETRY_AFTER, "0")],
                            "slow down",
                        )
                            .into_response();
                    }
                    let inputs = body["input"].as_array().cloned().unwrap_or_default();
                    s.inputs.fetch_add(inputs.len(), Ordering::SeqCst);
                    let data: Vec<serde_json::Value> = inputs
                        .iter()
                        .enumerate()
                        .map(|(i, t)| {
                            let t = t.as_str().unwrap_or_default();
                            let v: Vec<f32> = (0..8)
                                .map(|k| ((t.len() + k * 7) % 11) as f32 + 1.0)
                                .collect();
                            serde_json::json!({"index": i, "embedding": v})
                        })
                        .collect();
                    axum::Json(serde_json::json!({"data": data})).into_response()
                },
            ),
        )
        .with_state(stand_in);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// The outbound client as the worker builds it, with loopback allowed for the stand-ins.
fn outbound(metrics: &HttpMetrics) -> Outbound {
    let policy = DestinationPolicy {
        allow: "127.0.0.1/32".parse().unwrap(),
        ..DestinationPolicy::default()
    };
    Outbound::new(policy, metrics).unwrap()
}

fn spec(v: serde_json::Value) -> IngestionJobSpec {
    serde_json::from_value(v).unwrap()
}

struct Env {
    pool: PgPool,
    http: HttpMetrics,
    metrics: Metrics,
    outbound: Outbound,
}

async fn env() -> Env {
    let pool = xin_store::connect(&xin_store::fresh_test_database().await, 4)
        .await
        .unwrap();
    let http = HttpMetrics::default();
    let metrics = Metrics::new("acme", &http);
    let outbound = outbound(&http);
    Env {
        pool,
        http,
        metrics,
        outbound,
    }
}

async fn open(e: &Env, spec: &IngestionJobSpec, headers_dir: Option<PathBuf>, s3: bool) -> Source {
    Source::open(Open {
        spec: &spec.source,
        namespace: "xin-acme",
        kube: None,
        outbound: &e.outbound,
        headers_dir: headers_dir.as_deref(),
        s3_keys: s3.then(|| ("test-key".to_string(), "test-secret".to_string())),
        max_bytes: 1 << 20,
        timeout: Duration::from_secs(10),
    })
    .await
    .unwrap()
}

async fn run(
    e: &Env,
    spec: &IngestionJobSpec,
    source: &Source,
    embedder: Option<&Embedder>,
) -> Report {
    Run {
        tenant: "acme",
        job: "kb",
        spec,
        source,
        pool: &e.pool,
        embedder,
        reporter: &Reporter::none(),
        metrics: &e.metrics,
        concurrency: 4,
        batch_documents: 2,
        max_documents: 1000,
        retry_base: Duration::from_millis(10),
        heavy: Run::heavy_parses(),
    }
    .run()
    .await
    .unwrap()
}

/// (documents, chunks) in the store, and a fingerprint of every row.
async fn store(pool: &PgPool) -> (i64, i64, String) {
    sqlx::query_as(
        "SELECT count(DISTINCT document_id), count(*),
                COALESCE(string_agg(document_id || ':' || chunk_index || ':' || updated_at::text, ',' ORDER BY document_id, chunk_index), '')
         FROM knowledge_chunks",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

fn reasons(r: &Report) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = r
        .failures
        .iter()
        .map(|f| (f.document.clone(), f.reason.clone()))
        .collect();
    v.sort();
    v
}

/// A mounted-Secret stand-in with one header; removed when dropped (passed or failed).
fn headers_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("xin-ingest-headers-")
        .tempdir()
        .unwrap();
    std::fs::write(dir.path().join("X-Api-Key"), "k-123\n").unwrap();
    dir
}

#[tokio::test]
async fn every_format_from_urls_bad_documents_reported_and_the_same_job_twice_adds_nothing() {
    let e = env().await;
    let pdf = xin_ingest::formats::sample_pdf(&[
        &["Warranty claims need the receipt."],
        &["Repairs take five days."],
    ]);
    let base = serve(vec![
        ("/faq.md", "text/markdown", "# Shipping\n\nOrders ship within 2 business days. Tracking links arrive by email.\n\n## Germany\n\nDelivery takes 1-3 days.\n".as_bytes().to_vec()),
        ("/private/page.html", "text/html; charset=utf-8", b"<html><head><title>Returns</title><script>var secret = 1;</script><style>p{}</style></head><body><h1>Returns</h1><p>Return any item within 30 days.</p></body></html>".to_vec()),
        ("/records.jsonl", "application/x-ndjson", "{\"id\": \"r1\", \"q\": \"Opening hours\", \"body\": \"We open at nine.\", \"meta\": {\"lang\": \"en\"}}\n\n{\"id\": \"r2\", \"q\": \"ساعات کاری\", \"body\": \"ما ساعت نه باز می‌کنیم.\", \"meta\": {\"lang\": \"fa\"}}\nnot json\n".as_bytes().to_vec()),
        ("/manual.pdf", "application/pdf", pdf),
        ("/broken.pdf", "application/pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog".to_vec()),
        ("/logo.png", "image/png", vec![0x89, b'P', b'N', b'G']),
        ("/fa.txt", "text/plain", "پشتیبانی: کتاب‌ها را ظرف ۳ روز می‌فرستیم.".as_bytes().to_vec()),
    ])
    .await;
    let urls: Vec<String> = [
        "/faq.md",
        "/faq.md",
        "/private/page.html",
        "/records.jsonl",
        "/manual.pdf",
        "/broken.pdf",
        "/logo.png",
        "/gone.md",
        "/fa.txt",
    ]
    .iter()
    .map(|p| format!("{base}{p}"))
    .collect();
    let spec = spec(serde_json::json!({
        "source": {"url": {"urls": urls, "headersSecretRef": {"name": "kb-headers"}}},
        "tags": ["kb"], "chunking": {"size": 100, "overlap": 20},
        "jsonl": {"textField": "body", "titleField": "q", "idField": "id", "metadataFields": ["meta.lang"]},
        "failureThreshold": {"maxFailedDocuments": 5},
    }));
    let headers = headers_dir();
    let source = open(&e, &spec, Some(headers.path().to_path_buf()), false).await;
    let r = run(&e, &spec, &source, None).await;
    assert_eq!(r.state, WorkerState::Succeeded, "{r:?}");
    assert_eq!(
        reasons(&r),
        [
            (format!("{base}/broken.pdf"), "CorruptDocument".into()),
            (format!("{base}/faq.md"), "DuplicateDocument".into()),
            (format!("{base}/gone.md"), "NotFound".into()),
            (format!("{base}/logo.png"), "UnsupportedFormat".into()),
            (
                format!("{base}/records.jsonl#line-4"),
                "InvalidRecord".into()
            ),
        ]
    );
    assert_eq!(r.failed, 5);
    // faq.md, page.html, two records, manual.pdf, fa.txt.
    let (docs, chunks, rows) = store(&e.pool).await;
    assert_eq!(
        (r.documents, r.chunks),
        (docs, chunks),
        "the status counts are the store's"
    );
    assert_eq!(docs, 6);
    assert!(chunks >= 6, "{chunks}");

    // What each format became.
    let text = |doc: String| {
        let pool = e.pool.clone();
        async move {
            sqlx::query_as::<_, (String, String, serde_json::Value)>(
                "SELECT title, string_agg(text, '|' ORDER BY chunk_index), (array_agg(metadata))[1] FROM knowledge_chunks WHERE document_id = $1 GROUP BY title ORDER BY min(chunk_index)",
            )
            .bind(doc)
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    };
    let html = text(format!("{base}/private/page.html")).await;
    assert_eq!(html[0].0, "Returns");
    assert!(
        html[0].1.contains("Return any item within 30 days.") && !html[0].1.contains("secret"),
        "{html:?}"
    );
    let record = text(format!("{base}/records.jsonl#r2")).await;
    assert_eq!(record[0].0, "ساعات کاری");
    assert_eq!(record[0].1, "ما ساعت نه باز می‌کنیم.");
    assert_eq!(record[0].2, serde_json::json!({"meta.lang": "fa"}));
    let manual = text(format!("{base}/manual.pdf")).await;
    assert!(
        manual
            .iter()
            .any(|(_, t, _)| t.contains("Warranty claims need the receipt.")),
        "{manual:?}"
    );
    let faq = text(format!("{base}/faq.md")).await;
    assert!(
        faq.iter()
            .any(|(title, _, _)| title == "Shipping › Germany"),
        "{faq:?}"
    );
    let fa = text(format!("{base}/fa.txt")).await;
    assert_eq!(fa[0].1, "پشتیبانی: کتاب‌ها را ظرف ۳ روز می‌فرستیم.");

    // The same job again: nothing added, nothing touched.
    let again = run(&e, &spec, &source, None).await;
    assert_eq!(again.state, WorkerState::Succeeded);
    assert_eq!((again.documents, again.chunks), (r.documents, r.chunks));
    assert_eq!(store(&e.pool).await.2, rows, "a second run rewrote rows");
    assert!(
        again
            .message
            .as_deref()
            .unwrap()
            .contains("(0 new, 0 changed"),
        "{again:?}"
    );
    let m = e.http.encode();
    assert!(
        m.contains("xin_ingest_failures_total{tenant=\"acme\",reason=\"CorruptDocument\"} 2"),
        "{m}"
    );
}

#[tokio::test]
async fn past_the_failure_threshold_the_job_fails_with_its_reason_and_keeps_what_it_read() {
    let e = env().await;
    let base = serve(vec![("/ok.md", "text/markdown", b"# OK\n\nfine".to_vec())]).await;
    let spec = spec(serde_json::json!({
        "source": {"url": {"urls": [format!("{base}/ok.md"), format!("{base}/a.exe"), format!("{base}/b.md")]}},
        "mode": "Replace",
    }));
    let source = open(&e, &spec, None, false).await;
    let r = run(&e, &spec, &source, None).await;
    assert_eq!(r.state, WorkerState::Failed);
    assert_eq!(r.reason.as_deref(), Some("FailureThresholdExceeded"));
    assert!(
        r.message
            .as_deref()
            .unwrap()
            .starts_with("2 of 3 documents failed"),
        "{r:?}"
    );
    assert_eq!(store(&e.pool).await.0, 1, "what was read is written");

    // A source with nothing in it fails before writing anything (a Replace of nothing
    // would empty the knowledge).
    let dir = tempfile::Builder::new()
        .prefix("xin-ingest-empty-")
        .tempdir()
        .unwrap();
    let r = run(
        &e,
        &spec,
        &Source::dir(dir.path().to_path_buf(), 1 << 20),
        None,
    )
    .await;
    assert_eq!(r.state, WorkerState::Failed);
    assert_eq!(r.reason.as_deref(), Some("NoDocuments"));
    assert_eq!(store(&e.pool).await.0, 1, "nothing removed");
}

/// The bucket `bucket` on the S3 stand-in (created), as a client of its own.
async fn s3_bucket(endpoint: &str, bucket: &str) -> object_store::aws::AmazonS3 {
    let r = reqwest::Client::new()
        .put(format!("{endpoint}/{bucket}"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "create bucket: {}", r.status());
    object_store::aws::AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_bucket_name(bucket)
        .with_region("us-east-1")
        .with_access_key_id("test-key")
        .with_secret_access_key("test-secret")
        .with_allow_http(true)
        .build()
        .unwrap()
}

async fn s3_put(store: &object_store::aws::AmazonS3, key: &str, content_type: &str, body: &[u8]) {
    use object_store::{Attribute, Attributes, ObjectStore, PutOptions};
    let mut attributes = Attributes::new();
    attributes.insert(Attribute::ContentType, content_type.to_string().into());
    store
        .put_opts(
            &object_store::path::Path::from(key),
            body.to_vec().into(),
            PutOptions {
                attributes,
                ..PutOptions::default()
            },
        )
        .await
        .unwrap();
}

fn s3_endpoint() -> String {
    std::env::var("XIN_TEST_S3_ENDPOINT").expect(
        "XIN_TEST_S3_ENDPOINT is not set: start the S3 stand-in with `e2e/s3.sh start`, or run `make test`",
    )
}

#[tokio::test]
async fn a_bucket_prefix_and_replace_removes_what_the_bucket_no_longer_holds() {
    let e = env().await;
    let endpoint = s3_endpoint();
    let bucket = format!("kb-{:x}", rand::random::<u32>());
    let s3 = s3_bucket(&endpoint, &bucket).await;
    s3_put(
        &s3,
        "kb/returns.md",
        "text/markdown",
        b"# Returns\n\n30 days.",
    )
    .await;
    s3_put(&s3, "kb/old.md", "text/markdown", b"# Old\n\nGone soon.").await;
    // Detected from its content type, not its name.
    s3_put(
        &s3,
        "kb/hours",
        "text/html",
        b"<h1>Hours</h1><p>Nine to five.</p>",
    )
    .await;
    s3_put(
        &s3,
        "other/skip.md",
        "text/markdown",
        b"# Not under the prefix",
    )
    .await;
    let spec = spec(serde_json::json!({
        "source": {"s3": {"endpoint": endpoint, "bucket": bucket, "prefix": "kb/", "credentialsSecretRef": {"name": "s3"}}},
        "tags": ["kb"], "mode": "Replace",
    }));
    let source = open(&e, &spec, None, true).await;
    let r = run(&e, &spec, &source, None).await;
    assert_eq!(r.state, WorkerState::Succeeded, "{r:?}");
    assert_eq!(r.documents, 3);
    let docs = |pool: PgPool| async move {
        sqlx::query_scalar::<_, String>(
            "SELECT DISTINCT document_id FROM knowledge_chunks ORDER BY 1",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    assert_eq!(
        docs(e.pool.clone()).await,
        [
            format!("s3://{bucket}/kb/hours"),
            format!("s3://{bucket}/kb/old.md"),
            format!("s3://{bucket}/kb/returns.md")
        ]
    );
    object_store::ObjectStoreExt::delete(&s3, &object_store::path::Path::from("kb/old.md"))
        .await
        .unwrap();
    s3_put(
        &s3,
        "kb/returns.md",
        "text/markdown",
        b"# Returns\n\n60 days now.",
    )
    .await;
    let r = run(&e, &spec, &source, None).await;
    assert_eq!(r.state, WorkerState::Succeeded, "{r:?}");
    assert_eq!(
        docs(e.pool.clone()).await,
        [
            format!("s3://{bucket}/kb/hours"),
            format!("s3://{bucket}/kb/returns.md")
        ]
    );
    let text: String = sqlx::query_scalar(
        "SELECT text FROM knowledge_chunks WHERE document_id LIKE '%returns.md'",
    )
    .fetch_one(&e.pool)
    .await
    .unwrap();
    assert!(text.contains("60 days now."), "{text}");
}

#[tokio::test]
async fn embeddings_throttled_then_answered_are_retried_and_unchanged_chunks_are_not_embedded_again()
 {
    let e = env().await;
    let stand_in = EmbedStandIn {
        throttle: 3,
        ..EmbedStandIn::default()
    };
    let url = embedding_server(stand_in.clone()).await;
    let base = serve(vec![
        ("/a.md", "text/markdown", b"# A\n\nFirst paragraph about shipping.\n\nSecond paragraph about returns and refunds, long enough to make a second chunk of this document.".to_vec()),
        ("/b.md", "text/markdown", b"# B\n\nWarranty.".to_vec()),
    ])
    .await;
    let spec = spec(serde_json::json!({
        "source": {"url": {"urls": [format!("{base}/a.md"), format!("{base}/b.md")]}},
        "chunking": {"size": 100, "overlap": 0},
    }));
    let source = open(&e, &spec, None, false).await;
    let embedder = Embedder::new(
        &e.outbound,
        EmbeddingConfig {
            url: format!("{url}/v1/embeddings"),
            model: "m-1".into(),
            dimensions: Some(8),
            api_key: None,
            batch_size: 1,
            concurrency: 2,
            max_attempts: 10,
            timeout: Duration::from_secs(5),
        },
        Duration::from_millis(5),
        e.metrics.clone(),
    );
    let r = run(&e, &spec, &source, Some(&embedder)).await;
    assert_eq!(r.state, WorkerState::Succeeded, "{r:?}");
    let (chunks, embedded): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE embedding IS NOT NULL AND array_length(embedding, 1) = 8 AND embedding_model = 'm-1') FROM knowledge_chunks",
    )
    .fetch_one(&e.pool)
    .await
    .unwrap();
    assert!(chunks >= 3, "{chunks}");
    assert_eq!(embedded, chunks, "every chunk has its vector");
    assert_eq!(stand_in.inputs.load(Ordering::SeqCst) as i64, chunks);
    assert!(stand_in.requests.load(Ordering::SeqCst) as i64 >= chunks + 3);
    assert!(
        e.http
            .encode()
            .contains("xin_ingest_embedding_requests_total{tenant=\"acme\",outcome=\"retried\"} 3")
    );

    // Again: every chunk is unchanged and already has this model's vector.
    let before = stand_in.requests.load(Ordering::SeqCst);
    let r = run(&e, &spec, &source, Some(&embedder)).await;
    assert_eq!(r.state, WorkerState::Succeeded);
    assert_eq!(
        stand_in.requests.load(Ordering::SeqCst),
        before,
        "nothing embedded twice"
    );
}

#[tokio::test]
async fn a_nul_character_fails_only_its_document_and_a_url_token_never_reaches_the_store() {
    let e = env().await;
    let base = serve(vec![
        ("/nul.txt", "text/plain", b"before\0after".to_vec()),
        ("/doc.md", "text/markdown", b"# Doc\n\nFine.".to_vec()),
        ("/private/denied.md", "text/markdown", b"# Never".to_vec()),
    ])
    .await;
    let spec = spec(serde_json::json!({
        "source": {"url": {"urls": [format!("{base}/nul.txt"), format!("{base}/doc.md?token=s3cr3t"), format!("{base}/private/denied.md")]}},
        "failureThreshold": {"maxFailedPercent": 100},
    }));
    let source = open(&e, &spec, None, false).await;
    let r = run(&e, &spec, &source, None).await;
    assert_eq!(r.state, WorkerState::Succeeded, "{r:?}");
    assert_eq!(
        reasons(&r),
        [
            (format!("{base}/nul.txt"), "InvalidEncoding".into()),
            // 401: refused, and not tried again.
            (format!("{base}/private/denied.md"), "FetchFailed".into()),
        ]
    );
    let (id, source_name): (String, String) =
        sqlx::query_as("SELECT document_id, source FROM knowledge_chunks")
            .fetch_one(&e.pool)
            .await
            .unwrap();
    assert!(id.starts_with(&format!("{base}/doc.md~")), "{id}");
    assert!(
        !id.contains("s3cr3t") && !source_name.contains("s3cr3t"),
        "{id} {source_name}"
    );
}

/// The database drops the worker's connections (an administrator terminates its backends)
/// while it writes: the run retries, slows down, and ends with every document once.
#[tokio::test(flavor = "multi_thread")]
async fn a_store_dropping_connections_mid_run_loses_and_duplicates_nothing() {
    let url = xin_store::fresh_test_database().await;
    let role = url
        .trim_start_matches("postgres://")
        .split(':')
        .next()
        .unwrap()
        .to_string();
    let pool = xin_store::connect(&url, 4).await.unwrap();
    let http = HttpMetrics::default();
    let metrics = Metrics::new("acme", &http);
    let tmp = tempfile::Builder::new()
        .prefix("xin-ingest-flaky-")
        .tempdir()
        .unwrap();
    let dir = tmp.path().to_path_buf();
    let n = 2000;
    for i in 0..n {
        std::fs::write(
            dir.join(format!("doc-{i:04}.md")),
            format!(
                "# Doc {i}\n\nParagraph one of document {i}.\n\nParagraph two of document {i}."
            ),
        )
        .unwrap();
    }
    let spec = spec(serde_json::json!({"source": {"configMap": {"name": "x"}}, "tags": ["flaky"]}));
    let source = Source::dir(dir.clone(), 1 << 20);
    let admin = xin_store::connect(&xin_store::test_admin_url(), 1)
        .await
        .unwrap();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killer = {
        let (done, role) = (done.clone(), role.clone());
        tokio::spawn(async move {
            let mut killed = 0i64;
            // A few rounds, so that the run's retries (8 attempts each) can win.
            for _ in 0..40 {
                if done.load(Ordering::SeqCst) || killed >= 6 {
                    break;
                }
                let k: i64 = sqlx::query_scalar(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = $1",
                )
                .bind(&role)
                .fetch_one(&admin)
                .await
                .unwrap();
                killed += k;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            killed
        })
    };
    let report = Run {
        tenant: "acme",
        job: "flaky",
        spec: &spec,
        source: &source,
        pool: &pool,
        embedder: None,
        reporter: &Reporter::none(),
        metrics: &metrics,
        concurrency: 4,
        batch_documents: 50,
        max_documents: 10_000,
        retry_base: Duration::from_millis(20),
        heavy: Run::heavy_parses(),
    }
    .run()
    .await;
    done.store(true, Ordering::SeqCst);
    let killed = killer.await.unwrap();
    assert!(
        killed > 0,
        "no connection of the worker was terminated: the test proved nothing"
    );
    let report = report.expect("the run survives dropped connections");
    assert_eq!(report.state, WorkerState::Succeeded, "{report:?}");
    assert_eq!(report.documents, n);
    let check = xin_store::connect(&url, 1).await.unwrap();
    let (docs, chunks, distinct): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(DISTINCT document_id), count(*), count(DISTINCT (document_id, chunk_index)) FROM knowledge_chunks",
    )
    .fetch_one(&check)
    .await
    .unwrap();
    assert_eq!(docs, n);
    assert_eq!(chunks, distinct, "no chunk twice");
    assert_eq!(chunks, report.chunks, "the status counts are the store's");
}
