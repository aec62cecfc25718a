//! One ingestion run: list the source, read and parse each document (format from its content
//! type, else its name), chunk it by structure, embed the chunks that need it, and write them
//! to the knowledge store; report progress and the result.
//!
//! - A document that cannot be read or parsed is a failure with a reason (listed in
//!   `status.failures`, counted in `failedDocuments`); the run goes on, and fails at the end
//!   only when the failures pass `spec.failureThreshold`. What did not fail is written either
//!   way.
//! - A source with no document fails the run (`NoDocuments`) without writing: a `Replace` of
//!   nothing would empty the tenant's knowledge.
//! - `Upsert` commits every `INGEST_BATCH_DOCUMENTS` documents; `Replace` commits once, at the
//!   end, with the removal of documents gone from the source (knowledge is never half
//!   replaced). Documents that failed this time keep their earlier chunks.
//! - Writes and embedding requests that fail for a passing reason (a connection, a throttle)
//!   are retried with backoff; a run that still cannot write fails with an error, and the Job
//!   runs it again — writes are idempotent, so nothing is lost or duplicated.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use sqlx::PgPool;
use xin_api::ingestion::{
    FailureThreshold, IngestMode, IngestionFailure, IngestionJobSpec, Visibility, WorkerState,
    worker_reason,
};
use xin_store::knowledge::{self, ChunkRow, Replace, WriteSet, Written};

use crate::chunk::{self, HEADING_SEPARATOR};
use crate::embed::{EmbedError, Embedder, backoff};
use crate::formats::{self, Format, JsonlFields, ParseError};
use crate::metrics::Metrics;
use crate::report::{Report, Reporter};
use crate::source::{DocRef, FetchError, Source};

/// The reasons a document fails with (`status.failures[].reason`, the `reason` label of
/// `xin_ingest_failures_total`); `docs/ingestion.md` explains each.
pub const FAILURE_REASONS: &[&str] = &[
    "UnsupportedFormat",
    "InvalidEncoding",
    "CorruptDocument",
    "EncryptedDocument",
    "NoTextLayer",
    "InvalidRecord",
    "EmptyDocument",
    "ParseTimeout",
    "TooLarge",
    "NotFound",
    "FetchFailed",
    "DestinationNotAllowed",
    "DuplicateDocument",
];

/// A PDF (or any document) may take this long to parse.
const PARSE_TIMEOUT: Duration = Duration::from_secs(60);
/// Documents parsed on the async threads below this size; larger ones on the blocking pool.
const INLINE_PARSE_BYTES: usize = 64 << 10;

/// A run that could not finish: the Job runs it again (exit status 1).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("source unavailable: {0}")]
    Source(String),
    #[error("the knowledge store failed: {0}")]
    Database(String),
    #[error("embedding failed: {0}")]
    Embedding(#[from] EmbedError),
}

impl RunError {
    /// The reason written to `status.worker.reason` while the Job retries.
    pub fn reason(&self) -> &'static str {
        match self {
            RunError::Source(_) => worker_reason::SOURCE_UNAVAILABLE,
            RunError::Database(_) => "DatabaseUnavailable",
            RunError::Embedding(_) => "EmbeddingUnavailable",
        }
    }
}

/// Everything one run needs.
pub struct Run<'a> {
    pub tenant: &'a str,
    pub job: &'a str,
    pub spec: &'a IngestionJobSpec,
    pub source: &'a Source,
    pub pool: &'a PgPool,
    pub embedder: Option<&'a Embedder>,
    pub reporter: &'a Reporter,
    pub metrics: &'a Metrics,
    pub concurrency: usize,
    pub batch_documents: usize,
    pub max_documents: usize,
    pub retry_base: Duration,
    /// Bounds the large documents parsed at once ([`Run::heavy_parses`]).
    pub heavy: tokio::sync::Semaphore,
}

/// A document's chunks, ready to write.
struct Doc {
    id: String,
    rows: Vec<ChunkRow>,
}

/// What reading one source entry gave: its documents (one, or a JSONL file's records) and
/// failures.
struct Read {
    docs: Vec<Doc>,
    failures: Vec<IngestionFailure>,
}

fn failure(document: &str, reason: &'static str, message: String) -> IngestionFailure {
    let mut message = message;
    if message.len() > 1000 {
        let mut cut = 1000;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
    IngestionFailure {
        document: document.chars().take(2048).collect(),
        reason: reason.into(),
        message: Some(message),
    }
}

fn parse_reason(e: &ParseError) -> &'static str {
    match e {
        ParseError::NotUtf8 => "InvalidEncoding",
        ParseError::CorruptPdf(_) => "CorruptDocument",
        ParseError::EncryptedPdf => "EncryptedDocument",
        ParseError::NoTextLayer => "NoTextLayer",
        ParseError::Jsonl { .. } => "InvalidRecord",
        ParseError::Empty => "EmptyDocument",
        ParseError::Nul => "InvalidEncoding",
    }
}

/// Tokens, roughly: about 4/3 per word, and at least one per 4 characters (scripts without
/// spaces).
pub fn token_estimate(text: &str) -> i32 {
    let words = text.split_whitespace().count();
    let chars = text.chars().count();
    ((words * 4).div_ceil(3)).max(chars.div_ceil(4)).max(1) as i32
}

/// The chunk's title: the document's, followed by the heading path when it says more.
fn chunk_title(doc_title: &str, heading: &str) -> String {
    if heading.is_empty() || heading == doc_title {
        doc_title.to_string()
    } else if heading.starts_with(doc_title) || doc_title.is_empty() {
        heading.to_string()
    } else {
        format!("{doc_title}{HEADING_SEPARATOR}{heading}")
    }
}

/// The file name without its directories and extension, as a fallback title.
fn file_title(name: &str) -> String {
    let base = name.rsplit('/').next().unwrap_or(name);
    match base.rsplit_once('.') {
        Some((stem, _)) if !stem.is_empty() => stem.to_string(),
        _ => base.to_string(),
    }
}

/// How the spec shapes chunks.
struct Shape {
    size: usize,
    overlap: usize,
    visibility: &'static str,
    tags: Vec<String>,
    jsonl: JsonlFields,
}

impl Shape {
    fn new(spec: &IngestionJobSpec) -> Self {
        let mut tags = spec.tags.clone();
        tags.sort();
        tags.dedup();
        let j = spec.jsonl.clone().unwrap_or_default();
        Shape {
            size: spec.chunking.size.max(1) as usize,
            overlap: spec.chunking.overlap.max(0) as usize,
            visibility: match spec.visibility {
                Visibility::Public => "public",
                Visibility::Internal => "internal",
            },
            tags,
            jsonl: JsonlFields {
                text: j.text_field,
                title: j.title_field,
                id: j.id_field,
                metadata: j.metadata_fields,
            },
        }
    }

    fn visibility(&self) -> &'static str {
        self.visibility
    }

    /// Parses and chunks one entry's bytes (CPU only).
    fn read(&self, doc: &DocRef, format: Format, bytes: &[u8]) -> Read {
        let (size, overlap) = (self.size, self.overlap);
        let results = formats::parse(format, bytes, &self.jsonl);
        let several = format == Format::Jsonl;
        let mut out = Read {
            docs: vec![],
            failures: vec![],
        };
        for r in results {
            // PostgreSQL cannot store U+0000 in text or JSON: that document fails, not the write.
            let r = r.and_then(|p| {
                let nul = p.text.contains('\0')
                    || p.title.contains('\0')
                    || p.part.contains('\0')
                    || serde_json::Value::Object(p.metadata.clone())
                        .to_string()
                        .contains("\\u0000");
                if nul { Err(ParseError::Nul) } else { Ok(p) }
            });
            match r {
                Ok(p) => {
                    let (id, name) = if several {
                        (
                            format!("{}#{}", doc.id, p.part),
                            format!("{}#{}", doc.name, p.part),
                        )
                    } else {
                        (doc.id.clone(), doc.name.clone())
                    };
                    let title = if p.title.is_empty() {
                        file_title(&doc.file_name)
                    } else {
                        p.title.clone()
                    };
                    let metadata = serde_json::Value::Object(p.metadata);
                    let rows: Vec<ChunkRow> = chunk::chunk(&p.text, size, overlap)
                        .into_iter()
                        .map(|c| {
                            let title = chunk_title(&title, &c.heading);
                            let content_hash = knowledge::content_hash(
                                &title,
                                &name,
                                &c.text,
                                self.visibility(),
                                &self.tags,
                                &metadata,
                            );
                            ChunkRow {
                                document_id: id.clone(),
                                chunk_index: c.index as i32,
                                token_count: token_estimate(&c.text),
                                title,
                                source: name.clone(),
                                text: c.text,
                                visibility: self.visibility(),
                                tags: self.tags.clone(),
                                metadata: metadata.clone(),
                                embedding: None,
                                content_hash,
                            }
                        })
                        .collect();
                    if rows.is_empty() {
                        out.failures
                            .push(failure(&name, "EmptyDocument", "no text".into()));
                    } else {
                        out.docs.push(Doc { id, rows });
                    }
                }
                Err(e) => {
                    let name = match &e {
                        ParseError::Jsonl { line, .. } => format!("{}#line-{line}", doc.name),
                        _ => doc.name.clone(),
                    };
                    out.failures
                        .push(failure(&name, parse_reason(&e), e.to_string()));
                }
            }
        }
        out
    }
}

/// The counts so far and the report they make.
struct Progress {
    found: u64,
    ingested: Vec<String>,
    failures: Vec<IngestionFailure>,
    failed: u64,
    /// Entries with a failure, by id: in a `Replace`, every document `<id>#…` of theirs stays.
    failed_entries: Vec<String>,
    chunks: i64,
    written: Written,
    report: Report,
}

impl<'a> Run<'a> {
    /// The semaphore [`Run::heavy`] starts with: two large documents (PDFs and documents of
    /// 64 KiB or more) parsed at once.
    pub fn heavy_parses() -> tokio::sync::Semaphore {
        tokio::sync::Semaphore::new(2)
    }

    /// The run. `Ok` carries the final report (Succeeded or Failed), for the caller to write to
    /// the IngestionJob ([`Reporter::finish`]); `Err` is a run to be tried again.
    pub async fn run(&self) -> Result<Report, RunError> {
        let shape = Arc::new(Shape::new(self.spec));
        let mut p = Progress {
            found: 0,
            ingested: vec![],
            failures: vec![],
            failed: 0,
            failed_entries: vec![],
            chunks: 0,
            written: Written::default(),
            report: Report {
                state: WorkerState::Running,
                started_at: Some(now()),
                ..Report::default()
            },
        };
        self.reporter.progress(&p.report).await;

        let listed = self
            .source
            .list(self.max_documents)
            .await
            .map_err(|e| RunError::Source(e.0))?;
        if listed.len() > self.max_documents {
            return Ok(self
                .finish(
                    p,
                    Some((
                        worker_reason::TOO_MANY_DOCUMENTS,
                        format!(
                            "the source holds more than {} documents (INGEST_MAX_DOCUMENTS); split it into several IngestionJobs",
                            self.max_documents
                        ),
                    )),
                )
                .await);
        }
        if listed.is_empty() {
            return Ok(self
                .finish(
                    p,
                    Some((
                        worker_reason::NO_DOCUMENTS,
                        "the source holds no document; nothing was written (a Replace never empties the knowledge)".into(),
                    )),
                )
                .await);
        }
        tracing::info!(documents = listed.len(), "source listed");
        let all_ids: Vec<String> = listed.iter().map(|d| d.id.clone()).collect();
        let replace = self.spec.mode == IngestMode::Replace;

        // Reading and parsing go on while a batch is written: the reader fills a bounded
        // channel, the writer drains it (one task, two futures polled together).
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(DocRef, Read)>(self.concurrency * 4);
        let reader_shape = shape.clone();
        let reader = async move {
            let shape = reader_shape;
            let mut reads = futures::stream::iter(listed)
                .map(|doc| {
                    let shape = shape.clone();
                    async move {
                        let read = self.read_one(shape, &doc).await;
                        (doc, read)
                    }
                })
                .buffered(self.concurrency);
            while let Some(item) = reads.next().await {
                if tx.send(item).await.is_err() {
                    break; // the writer stopped (an error): stop reading
                }
            }
        };
        let mut pending: Vec<Doc> = vec![];
        let progress = &mut p;
        let pending_ref = &mut pending;
        let writer = async move {
            let (p, pending) = (progress, pending_ref);
            let mut pending_docs = 0usize;
            let mut seen = std::collections::HashSet::new();
            while let Some((doc, mut read)) = rx.recv().await {
                p.found += (read.docs.len() + read.failures.len()).max(1) as u64;
                // An entry with a failure keeps its earlier chunks in a Replace: all of a file
                // that failed, and the records of a JSONL file of which one failed.
                if !read.failures.is_empty() {
                    p.failed_entries.push(doc.id.clone());
                }
                // One document per id: a URL listed twice, two JSONL records with one id.
                let (unique, repeated): (Vec<Doc>, Vec<Doc>) = read
                    .docs
                    .into_iter()
                    .partition(|d| seen.insert(d.id.clone()));
                read.docs = unique;
                for d in repeated {
                    read.failures.push(failure(
                        &d.rows[0].source,
                        "DuplicateDocument",
                        "another document of this job has the same id (a URL listed twice, or a JSONL id repeated); the first one was ingested".into(),
                    ));
                }
                for f in read.failures {
                    self.metrics.failure(static_reason(&f.reason));
                    p.failed += 1;
                    if p.failures.len() < crate::report::MAX_FAILURES {
                        p.failures.push(f);
                    }
                }
                pending_docs += read.docs.len();
                pending.extend(read.docs);
                if !replace && pending_docs >= self.batch_documents {
                    self.flush(p, std::mem::take(pending), None).await?;
                    pending_docs = 0;
                }
                // At most every 2 s (the reporter throttles): failures show while a long run
                // goes on.
                self.progress(p).await;
            }
            Ok::<(), RunError>(())
        };
        let ((), written) = futures::join!(reader, writer);
        written?;
        let replace_scope = replace.then(|| Replace {
            tags: shape.tags.clone(),
            keep: all_ids
                .iter()
                .cloned()
                .chain(pending.iter().map(|d| d.id.clone()))
                .collect(),
            keep_parts_of: p.failed_entries.clone(),
        });
        // A Replace with failures past the threshold removes nothing: the source may be only
        // half readable.
        let exceeded =
            FailureThreshold::exceeded(self.spec.failure_threshold.as_ref(), p.failed, p.found);
        let scope = replace_scope.as_ref().filter(|_| !exceeded);
        if !pending.is_empty() || scope.is_some() {
            self.flush(&mut p, pending, scope).await?;
        }
        self.metrics.documents("failed", p.failed);
        // The status carries what the store holds for this job's documents.
        let (documents, chunks) = self
            .with_retries("counting", || {
                knowledge::count(self.pool, self.tenant, &p.ingested)
            })
            .await?;
        p.report.documents = documents;
        p.chunks = chunks;
        let outcome = exceeded.then(|| {
            (
                worker_reason::FAILURE_THRESHOLD_EXCEEDED,
                format!(
                    "{} of {} documents failed, more than spec.failureThreshold allows ({}); the others were ingested{}",
                    p.failed,
                    p.found,
                    threshold_text(self.spec.failure_threshold.as_ref()),
                    if replace { " and nothing was removed" } else { "" }
                ),
            )
        });
        Ok(self.finish(p, outcome).await)
    }

    async fn progress(&self, p: &mut Progress) {
        if !self.reporter.due().await {
            return;
        }
        p.report.documents = p.ingested.len() as i64;
        p.report.chunks = p.chunks;
        p.report.failed = p.failed as i64;
        p.report.failures = p.failures.clone();
        self.reporter.progress(&p.report).await;
    }

    async fn finish(&self, mut p: Progress, failed: Option<(&'static str, String)>) -> Report {
        p.report.chunks = p.chunks;
        p.report.failed = p.failed as i64;
        p.report.failures = std::mem::take(&mut p.failures);
        p.report.finished_at = Some(now());
        match failed {
            Some((reason, message)) => {
                p.report.state = WorkerState::Failed;
                p.report.reason = Some(reason.into());
                p.report.message = Some(message);
            }
            None => {
                p.report.state = WorkerState::Succeeded;
                p.report.message = Some(format!(
                    "{} documents in {} chunks ({} new, {} changed, {} unchanged, {} removed); {} failed",
                    p.report.documents,
                    p.report.chunks,
                    p.written.inserted,
                    p.written.updated,
                    p.written.unchanged,
                    p.written.deleted,
                    p.failed
                ));
            }
        }
        p.report
    }

    /// Reads, detects, parses and chunks one entry.
    async fn read_one(&self, shape: Arc<Shape>, doc: &DocRef) -> Read {
        let whole = |reason: &'static str, message: String| Read {
            docs: vec![],
            failures: vec![failure(&doc.name, reason, message)],
        };
        let fetched = match self.fetch_with_retries(doc).await {
            Ok(f) => f,
            Err(e) => return whole(e.reason(), e.to_string()),
        };
        let Some(format) = formats::detect(&doc.file_name, fetched.content_type.as_deref()) else {
            return whole(
                "UnsupportedFormat",
                format!(
                    "neither the content type ({}) nor the name says Markdown, text, HTML, JSONL or PDF",
                    fetched.content_type.as_deref().unwrap_or("none")
                ),
            );
        };
        let span = tracing::debug_span!("parse", document = %doc.name, format = format.as_str());
        if fetched.bytes.len() < INLINE_PARSE_BYTES && format != Format::Pdf {
            return span.in_scope(|| shape.read(doc, format, &fetched.bytes));
        }
        // Large documents and PDFs off the async threads, within a deadline.
        let (doc2, bytes) = (doc.clone(), fetched.bytes);
        // At most two at once: a large document's analysis takes many times its size in memory.
        let Ok(_permit) = self.heavy.acquire().await else {
            return whole("ParseTimeout", "the worker is shutting down".into());
        };
        let task = tokio::task::spawn_blocking(move || {
            span.in_scope(|| shape.read(&doc2, format, &bytes))
        });
        match tokio::time::timeout(PARSE_TIMEOUT, task).await {
            Ok(Ok(read)) => read,
            Ok(Err(e)) => whole("CorruptDocument", format!("parsing failed: {e}")),
            Err(_) => whole(
                "ParseTimeout",
                format!("parsing took longer than {} s", PARSE_TIMEOUT.as_secs()),
            ),
        }
    }

    /// A fetch, tried again (3 attempts) when it failed for a passing reason.
    async fn fetch_with_retries(&self, doc: &DocRef) -> Result<crate::source::Fetched, FetchError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.source.fetch(doc).await {
                Err(FetchError::Failed(why)) if attempt < 3 => {
                    tracing::warn!(document = %doc.name, attempt, reason = %why, "fetch failed; retrying");
                    tokio::time::sleep(backoff(self.retry_base, attempt)).await;
                }
                other => return other,
            }
        }
    }

    /// Embeds what needs it and writes `docs` (and the `Replace`) in one transaction.
    async fn flush(
        &self,
        p: &mut Progress,
        docs: Vec<Doc>,
        replace: Option<&Replace>,
    ) -> Result<(), RunError> {
        let ids: Vec<String> = docs.iter().map(|d| d.id.clone()).collect();
        let mut rows: Vec<ChunkRow> = docs.into_iter().flat_map(|d| d.rows).collect();
        if let Some(embedder) = self.embedder {
            self.embed(embedder, &ids, &mut rows).await?;
        }
        let set = WriteSet {
            tenant: self.tenant,
            job: self.job,
            rows: &rows,
            replace,
        };
        let w = self
            .with_retries("writing", || knowledge::write(self.pool, &set))
            .await?;
        self.metrics.chunks("inserted", w.inserted);
        self.metrics.chunks("updated", w.updated);
        self.metrics.chunks("unchanged", w.unchanged);
        self.metrics.chunks("deleted", w.deleted);
        self.metrics.documents("ingested", ids.len() as u64);
        p.written.inserted += w.inserted;
        p.written.updated += w.updated;
        p.written.unchanged += w.unchanged;
        p.written.deleted += w.deleted;
        p.chunks += rows.len() as i64;
        p.ingested.extend(ids);
        tracing::info!(
            documents = p.ingested.len(),
            inserted = w.inserted,
            updated = w.updated,
            unchanged = w.unchanged,
            deleted = w.deleted,
            "batch written"
        );
        Ok(())
    }

    /// Embeds the rows whose stored chunk does not already carry this model's vector of the
    /// same content.
    async fn embed(
        &self,
        embedder: &Embedder,
        ids: &[String],
        rows: &mut [ChunkRow],
    ) -> Result<(), RunError> {
        let stored = self
            .with_retries("reading stored chunks", || {
                knowledge::stored(self.pool, self.tenant, ids)
            })
            .await?;
        let need: Vec<usize> = rows
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                stored
                    .get(&(r.document_id.clone(), r.chunk_index))
                    .is_none_or(|s| {
                        s.content_hash.as_deref() != Some(r.content_hash.as_str())
                            || s.embedding_model.as_deref() != Some(embedder.model())
                            || embedder
                                .dimensions()
                                .is_some_and(|d| s.embedding_dimensions != Some(d as i32))
                    })
            })
            .map(|(i, _)| i)
            .collect();
        if need.is_empty() {
            return Ok(());
        }
        let texts: Vec<String> = need
            .iter()
            .map(|&i| format!("{}\n\n{}", rows[i].title, rows[i].text))
            .collect();
        let vectors = embedder.embed(&texts).await?;
        for (i, v) in need.into_iter().zip(vectors) {
            rows[i].embedding = Some((v, embedder.model().to_string()));
        }
        Ok(())
    }

    /// A database step, retried with backoff (8 attempts) when the failure may pass: a lost
    /// or refused connection, a pool timeout, a serialization failure or deadlock.
    async fn with_retries<T, F, Fut>(&self, what: &str, f: F) -> Result<T, RunError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match f().await {
                Ok(v) => return Ok(v),
                Err(e) if attempt < 8 && transient(&e) => {
                    let wait = backoff(self.retry_base, attempt);
                    tracing::warn!(error = %e, attempt, wait_ms = wait.as_millis() as u64, "{what} failed; retrying");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(RunError::Database(format!("{what}: {e}"))),
            }
        }
    }
}

/// Whether a database error may pass by itself.
fn transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(d) => matches!(
            d.code().as_deref(),
            // serialization_failure, deadlock_detected, too_many_connections,
            // cannot_connect_now, admin_shutdown, crash_shutdown
            Some("40001" | "40P01" | "53300" | "57P03" | "57P01" | "57P02")
        ),
        _ => false,
    }
}

/// The `&'static str` of a reason from [`FAILURE_REASONS`] (failures are built from them).
fn static_reason(r: &str) -> &'static str {
    FAILURE_REASONS
        .iter()
        .find(|k| **k == r)
        .copied()
        .unwrap_or("FetchFailed")
}

fn threshold_text(t: Option<&FailureThreshold>) -> String {
    match t {
        None => format!("more than {} %", FailureThreshold::DEFAULT_PERCENT),
        Some(t) => {
            let mut parts = vec![];
            if let Some(n) = t.max_failed_documents {
                parts.push(format!("{n} documents"));
            }
            if let Some(pc) = t.max_failed_percent {
                parts.push(format!("{pc} %"));
            }
            format!("at most {}", parts.join(" and "))
        }
    }
}

pub fn now() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_and_token_estimates() {
        assert_eq!(chunk_title("Shipping", "Shipping"), "Shipping");
        assert_eq!(
            chunk_title("Shipping", "Shipping › Germany"),
            "Shipping › Germany"
        );
        assert_eq!(chunk_title("FAQ", "Returns"), "FAQ › Returns");
        assert_eq!(chunk_title("FAQ", ""), "FAQ");
        assert_eq!(file_title("docs/faq/shipping.md"), "shipping");
        assert_eq!(file_title(".env"), ".env");
        assert_eq!(token_estimate("one two three"), 4);
        assert_eq!(token_estimate("کتاب‌ها"), 2);
        assert!(FAILURE_REASONS.iter().all(|r| r.len() <= 64));
    }
}
