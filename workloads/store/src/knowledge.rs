//! The knowledge store, as the ingestion worker writes it and retrieval reads it: one row per
//! chunk in `knowledge_chunks`, keyed by (tenant, document, position).
//!
//! Writes are idempotent and atomic. Each chunk carries a digest of everything written for it
//! ([`content_hash`]); a chunk whose digest is unchanged is left alone (it keeps its
//! embedding and its `updated_at`, so the orchestrator's index does not reload it), a changed
//! one is rewritten, and a document that shrank loses its surplus chunks. A [`Replace`] also
//! removes the documents of the same tags that the source no longer holds. All of it is one
//! transaction: the tenant's knowledge is never half old, half new. Rows go in by the fastest
//! path a runtime role may take: `COPY` into a temporary table, then one `INSERT … SELECT`.

use std::collections::HashMap;
use std::fmt::Write as _;

use sha2::{Digest, Sha256};
use sqlx::{PgPool, Postgres, Transaction};

/// One chunk to write.
#[derive(Clone, Debug, PartialEq)]
pub struct ChunkRow {
    /// The document's stable id (`configmap:<name>/<key>`, the URL — cut to
    /// `scheme://host/path~<digest>` when it has userinfo, a query or a fragment —,
    /// `s3://<bucket>/<key>`; a JSONL record as `<document>#<id>`).
    pub document_id: String,
    /// Position in the document, from 0.
    pub chunk_index: i32,
    pub title: String,
    /// Where it came from, for people (a ConfigMap key, a URL, an object key).
    pub source: String,
    pub text: String,
    pub token_count: i32,
    /// `public` or `internal`.
    pub visibility: &'static str,
    /// Sorted and without duplicates (a [`Replace`] compares tag sets).
    pub tags: Vec<String>,
    /// A JSON object.
    pub metadata: serde_json::Value,
    /// The embedding and its model; `None` to keep what the row has (an unchanged chunk) or
    /// when there are no embeddings.
    pub embedding: Option<(Vec<f32>, String)>,
    /// [`content_hash`] of the fields above (the embedding excepted).
    pub content_hash: String,
}

/// The digest of a chunk's written fields (the embedding excepted: it follows from the text).
pub fn content_hash(
    title: &str,
    source: &str,
    text: &str,
    visibility: &str,
    tags: &[String],
    metadata: &serde_json::Value,
) -> String {
    let mut h = Sha256::new();
    for part in [title, source, text, visibility] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.update((tags.len() as u64).to_be_bytes());
    for t in tags {
        h.update((t.len() as u64).to_be_bytes());
        h.update(t.as_bytes());
    }
    let meta = metadata.to_string();
    h.update((meta.len() as u64).to_be_bytes());
    h.update(meta.as_bytes());
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// What a chunk already stored has: its digest and the model of its embedding (when it has
/// one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub content_hash: Option<String>,
    pub embedding_model: Option<String>,
    /// The embedding's length, when there is one.
    pub embedding_dimensions: Option<i32>,
}

/// The stored chunks of `documents`, by (document, position).
pub async fn stored(
    pool: &PgPool,
    tenant: &str,
    documents: &[String],
) -> Result<HashMap<(String, i32), Stored>, sqlx::Error> {
    type Row = (String, i32, Option<String>, Option<String>, Option<i32>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT document_id, chunk_index, content_hash,
                CASE WHEN embedding IS NOT NULL THEN embedding_model END,
                array_length(embedding, 1)
         FROM knowledge_chunks WHERE tenant = $1 AND document_id = ANY($2)",
    )
    .bind(tenant)
    .bind(documents)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(d, i, content_hash, embedding_model, embedding_dimensions)| {
                (
                    (d, i),
                    Stored {
                        content_hash,
                        embedding_model,
                        embedding_dimensions,
                    },
                )
            },
        )
        .collect())
}

/// The removal of documents the source no longer holds: every chunk of the tenant whose tag
/// set equals `tags` and whose document is not in `keep`.
#[derive(Clone, Debug, PartialEq)]
pub struct Replace {
    /// Sorted, without duplicates.
    pub tags: Vec<String>,
    /// Every document the source holds, those that failed this time included (their earlier
    /// chunks stay until they can be read again).
    pub keep: Vec<String>,
    /// Files that failed as a whole and held several documents (JSONL): every document
    /// `<file>#…` stays too.
    pub keep_parts_of: Vec<String>,
}

/// One atomic write.
#[derive(Clone, Debug)]
pub struct WriteSet<'a> {
    pub tenant: &'a str,
    /// The IngestionJob writing (recorded on the rows it changes).
    pub job: &'a str,
    /// Every chunk of each document written: a document's chunks beyond these are removed.
    pub rows: &'a [ChunkRow],
    pub replace: Option<&'a Replace>,
}

/// What a write did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    /// Surplus chunks of shrunk documents and, for a [`Replace`], chunks of documents gone.
    pub deleted: u64,
}

/// Writes `set` in one transaction (see the module docs).
pub async fn write(pool: &PgPool, set: &WriteSet<'_>) -> Result<Written, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let written = write_in(&mut tx, set).await?;
    tx.commit().await?;
    Ok(written)
}

/// The columns of a [`csv_row`], in order (`tenant` and `ingestion_job` are not among them).
pub const COPY_COLUMNS: &str = "document_id, chunk_index, title, source, text, token_count, \
     visibility, tags, metadata, embedding, embedding_model, content_hash";

async fn write_in(
    tx: &mut Transaction<'_, Postgres>,
    set: &WriteSet<'_>,
) -> Result<Written, sqlx::Error> {
    sqlx::query(
        "CREATE TEMPORARY TABLE xin_ingest_stage (
            document_id TEXT NOT NULL, chunk_index INT NOT NULL, title TEXT NOT NULL,
            source TEXT NOT NULL, text TEXT NOT NULL, token_count INT NOT NULL,
            visibility TEXT NOT NULL, tags TEXT[] NOT NULL, metadata JSONB NOT NULL,
            embedding REAL[], embedding_model TEXT, content_hash TEXT NOT NULL
         ) ON COMMIT DROP",
    )
    .execute(&mut **tx)
    .await?;
    if !set.rows.is_empty() {
        let mut copy = tx
            .copy_in_raw(&format!(
                "COPY xin_ingest_stage ({COPY_COLUMNS}) FROM STDIN (FORMAT csv)"
            ))
            .await?;
        let mut buf = String::with_capacity(64 * 1024);
        for row in set.rows {
            csv_row(&mut buf, row);
            if buf.len() >= 1 << 20 {
                copy.send(std::mem::take(&mut buf).into_bytes()).await?;
            }
        }
        if !buf.is_empty() {
            copy.send(buf.into_bytes()).await?;
        }
        copy.finish().await?;
    }
    // Inserted rows have xmax 0; updated ones the writing transaction's id. A row whose digest
    // and embedding model are unchanged is not touched at all.
    let changed: Vec<(bool,)> = sqlx::query_as(
        "INSERT INTO knowledge_chunks (tenant, document_id, chunk_index, title, source, text,
            token_count, visibility, tags, metadata, embedding, embedding_model, content_hash,
            ingestion_job)
         SELECT $1, document_id, chunk_index, title, source, text, token_count, visibility,
            tags, metadata, embedding, embedding_model, content_hash, $2
         FROM xin_ingest_stage
         ON CONFLICT (tenant, document_id, chunk_index) DO UPDATE SET
            title = EXCLUDED.title, source = EXCLUDED.source, text = EXCLUDED.text,
            token_count = EXCLUDED.token_count, visibility = EXCLUDED.visibility,
            tags = EXCLUDED.tags, metadata = EXCLUDED.metadata,
            embedding = CASE WHEN EXCLUDED.embedding IS NOT NULL THEN EXCLUDED.embedding
                             WHEN knowledge_chunks.content_hash IS DISTINCT FROM EXCLUDED.content_hash THEN NULL
                             ELSE knowledge_chunks.embedding END,
            embedding_model = CASE WHEN EXCLUDED.embedding IS NOT NULL THEN EXCLUDED.embedding_model
                             WHEN knowledge_chunks.content_hash IS DISTINCT FROM EXCLUDED.content_hash THEN NULL
                             ELSE knowledge_chunks.embedding_model END,
            content_hash = EXCLUDED.content_hash, ingestion_job = EXCLUDED.ingestion_job
         WHERE knowledge_chunks.content_hash IS DISTINCT FROM EXCLUDED.content_hash
            OR (EXCLUDED.embedding IS NOT NULL
                AND (knowledge_chunks.embedding_model IS DISTINCT FROM EXCLUDED.embedding_model
                     OR array_length(knowledge_chunks.embedding, 1)
                        IS DISTINCT FROM array_length(EXCLUDED.embedding, 1)))
         RETURNING (xmax = 0)",
    )
    .bind(set.tenant)
    .bind(set.job)
    .fetch_all(&mut **tx)
    .await?;
    let inserted = changed.iter().filter(|(i,)| *i).count() as u64;
    let updated = changed.len() as u64 - inserted;
    let mut deleted = sqlx::query(
        "DELETE FROM knowledge_chunks k
         USING (SELECT document_id, max(chunk_index) AS last FROM xin_ingest_stage GROUP BY 1) s
         WHERE k.tenant = $1 AND k.document_id = s.document_id AND k.chunk_index > s.last",
    )
    .bind(set.tenant)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if let Some(r) = set.replace {
        deleted += sqlx::query(
            "DELETE FROM knowledge_chunks
             WHERE tenant = $1 AND tags = $2::text[] AND NOT (document_id = ANY($3))
               AND NOT EXISTS (SELECT 1 FROM unnest($4::text[]) f
                               WHERE starts_with(document_id, f || '#'))",
        )
        .bind(set.tenant)
        .bind(&r.tags)
        .bind(&r.keep)
        .bind(&r.keep_parts_of)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    }
    Ok(Written {
        inserted,
        updated,
        unchanged: set.rows.len() as u64 - inserted - updated,
        deleted,
    })
}

/// How many of `documents` the store holds, and their chunks.
pub async fn count(
    pool: &PgPool,
    tenant: &str,
    documents: &[String],
) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(DISTINCT document_id), count(*) FROM knowledge_chunks
         WHERE tenant = $1 AND document_id = ANY($2)",
    )
    .bind(tenant)
    .bind(documents)
    .fetch_one(pool)
    .await
}

/// A CSV field, always quoted (an empty quoted field is an empty string, not NULL).
fn quoted(buf: &mut String, s: &str) {
    buf.push('"');
    for c in s.chars() {
        if c == '"' {
            buf.push('"');
        }
        buf.push(c);
    }
    buf.push('"');
}

/// A PostgreSQL array literal of strings, each element double-quoted with `\` and `"`
/// escaped.
fn text_array(tags: &[String]) -> String {
    let mut a = String::from("{");
    for (i, t) in tags.iter().enumerate() {
        if i > 0 {
            a.push(',');
        }
        a.push('"');
        for c in t.chars() {
            if c == '"' || c == '\\' {
                a.push('\\');
            }
            a.push(c);
        }
        a.push('"');
    }
    a.push('}');
    a
}

/// `r` as one line of `COPY … (FORMAT csv)` for the columns [`COPY_COLUMNS`]: every text
/// quoted, arrays as PostgreSQL array literals, a missing embedding as NULL.
pub fn csv_row(buf: &mut String, r: &ChunkRow) {
    quoted(buf, &r.document_id);
    let _ = write!(buf, ",{},", r.chunk_index);
    quoted(buf, &r.title);
    buf.push(',');
    quoted(buf, &r.source);
    buf.push(',');
    quoted(buf, &r.text);
    let _ = write!(buf, ",{},", r.token_count);
    quoted(buf, r.visibility);
    buf.push(',');
    quoted(buf, &text_array(&r.tags));
    buf.push(',');
    quoted(buf, &r.metadata.to_string());
    buf.push(',');
    match &r.embedding {
        Some((v, model)) => {
            let mut a = String::with_capacity(v.len() * 10 + 2);
            a.push('{');
            for (i, x) in v.iter().enumerate() {
                if i > 0 {
                    a.push(',');
                }
                let _ = write!(a, "{x}");
            }
            a.push('}');
            quoted(buf, &a);
            buf.push(',');
            quoted(buf, model);
        }
        // Unquoted empty fields: NULL.
        None => buf.push(','),
    }
    buf.push(',');
    quoted(buf, &r.content_hash);
    buf.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_everything_that_could_break_a_row() {
        let row = ChunkRow {
            document_id: "configmap:faq/a\"b.md".into(),
            chunk_index: 2,
            title: "T, \"q\"".into(),
            source: "s".into(),
            text: "line 1\nline 2\r\n\\N".into(),
            token_count: 3,
            visibility: "public",
            tags: vec!["a\"b".into(), "c\\d".into()],
            metadata: serde_json::json!({"k": "v\""}),
            embedding: Some((vec![0.5, -1.0], "m".into())),
            content_hash: "h".into(),
        };
        let mut buf = String::new();
        csv_row(&mut buf, &row);
        assert_eq!(
            buf,
            "\"configmap:faq/a\"\"b.md\",2,\"T, \"\"q\"\"\",\"s\",\"line 1\nline 2\r\n\\N\",3,\"public\",\"{\"\"a\\\"\"b\"\",\"\"c\\\\d\"\"}\",\"{\"\"k\"\":\"\"v\\\"\"\"\"}\",\"{0.5,-1}\",\"m\",\"h\"\n"
        );
        let mut buf = String::new();
        csv_row(
            &mut buf,
            &ChunkRow {
                embedding: None,
                ..row
            },
        );
        assert!(buf.contains(",,\"h\"\n"), "{buf}");
    }

    #[test]
    fn the_hash_covers_every_written_field() {
        let m = serde_json::json!({});
        let base = content_hash("t", "s", "x", "public", &["a".into()], &m);
        assert_eq!(base.len(), 64);
        for other in [
            content_hash("t2", "s", "x", "public", &["a".into()], &m),
            content_hash("t", "s2", "x", "public", &["a".into()], &m),
            content_hash("t", "s", "x2", "public", &["a".into()], &m),
            content_hash("t", "s", "x", "internal", &["a".into()], &m),
            content_hash("t", "s", "x", "public", &["b".into()], &m),
            content_hash(
                "t",
                "s",
                "x",
                "public",
                &["a".into()],
                &serde_json::json!({"k": 1}),
            ),
            // Parts are length-prefixed: moving a character between fields changes the hash.
            content_hash("ts", "", "x", "public", &["a".into()], &m),
        ] {
            assert_ne!(base, other);
        }
    }
}
