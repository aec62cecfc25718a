//! Knowledge writes against a real PostgreSQL, as the tenant's runtime role: idempotent, a
//! shrunk document loses its surplus chunks, a `Replace` removes what the source no longer
//! holds in the same transaction as the new chunks, and an unchanged chunk keeps its
//! embedding.

use sqlx::PgPool;
use xin_store::knowledge::{self, ChunkRow, Replace, WriteSet};

fn row(doc: &str, i: i32, text: &str, tags: &[&str]) -> ChunkRow {
    let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
    let metadata = serde_json::json!({});
    ChunkRow {
        document_id: doc.into(),
        chunk_index: i,
        title: "T".into(),
        source: doc.into(),
        text: text.into(),
        token_count: 1,
        visibility: "public",
        content_hash: knowledge::content_hash("T", doc, text, "public", &tags, &metadata),
        tags,
        metadata,
        embedding: None,
    }
}

async fn rows(pool: &PgPool) -> Vec<(String, i32, String)> {
    sqlx::query_as("SELECT document_id, chunk_index, text FROM knowledge_chunks ORDER BY 1, 2")
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn write(pool: &PgPool, rows: &[ChunkRow], replace: Option<&Replace>) -> knowledge::Written {
    knowledge::write(
        pool,
        &WriteSet {
            tenant: "acme",
            job: "j1",
            rows,
            replace,
        },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn the_same_write_twice_adds_nothing_and_a_shrunk_document_loses_its_tail() {
    let pool = xin_store::connect(&xin_store::fresh_test_database().await, 2)
        .await
        .unwrap();
    let first = [
        row("a", 0, "a0", &["faq"]),
        row("a", 1, "a1 \"quoted\", with comma\nand newline", &["faq"]),
        row("b", 0, "b0 — پشتیبانی می‌کنیم", &["faq"]),
    ];
    let w = write(&pool, &first, None).await;
    assert_eq!(
        (w.inserted, w.updated, w.unchanged, w.deleted),
        (3, 0, 0, 0)
    );
    let before = rows(&pool).await;
    assert_eq!(before.len(), 3);
    assert_eq!(before[1].2, "a1 \"quoted\", with comma\nand newline");
    assert_eq!(before[2].2, "b0 — پشتیبانی می‌کنیم");
    let stamp = |pool: PgPool| async move {
        sqlx::query_scalar::<_, String>(
            "SELECT string_agg(updated_at::text, ',' ORDER BY document_id, chunk_index) FROM knowledge_chunks",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let t0 = stamp(pool.clone()).await;
    let w = write(&pool, &first, None).await;
    assert_eq!(
        (w.inserted, w.updated, w.unchanged, w.deleted),
        (0, 0, 3, 0)
    );
    assert_eq!(rows(&pool).await, before);
    assert_eq!(
        stamp(pool.clone()).await,
        t0,
        "an unchanged chunk is not touched"
    );

    // `a` now has one chunk, changed: its second goes; `b` is untouched (not in this write).
    let w = write(&pool, &[row("a", 0, "a0 new", &["faq"])], None).await;
    assert_eq!(
        (w.inserted, w.updated, w.unchanged, w.deleted),
        (0, 1, 0, 1)
    );
    let after = rows(&pool).await;
    assert_eq!(
        after,
        vec![
            ("a".to_string(), 0, "a0 new".to_string()),
            before[2].clone()
        ]
    );
    assert_eq!(
        knowledge::count(&pool, "acme", &["a".into(), "b".into()])
            .await
            .unwrap(),
        (2, 2)
    );
}

#[tokio::test]
async fn replace_removes_documents_gone_from_the_source_atomically() {
    let pool = xin_store::connect(&xin_store::fresh_test_database().await, 2)
        .await
        .unwrap();
    write(
        &pool,
        &[
            row("a", 0, "a0", &["faq"]),
            row("gone", 0, "g0", &["faq"]),
            row("failed", 0, "f0", &["faq"]),
            row("other-tags", 0, "o0", &["faq", "internal"]),
            row("records.jsonl#7", 0, "r7", &["faq"]),
            row("records.jsonl-other#1", 0, "x", &["faq"]),
        ],
        None,
    )
    .await;
    let replace = Replace {
        tags: vec!["faq".into()],
        keep: vec!["a".into(), "failed".into(), "new".into()],
        keep_parts_of: vec!["records.jsonl".into()],
    };
    // A write that fails half-way (a row the table refuses) leaves everything as it was.
    let mut bad = row("new", 0, "n0", &["faq"]);
    bad.visibility = "nobody";
    let err = knowledge::write(
        &pool,
        &WriteSet {
            tenant: "acme",
            job: "j2",
            rows: &[row("new", 0, "n0", &["faq"]), bad],
            replace: Some(&replace),
        },
    )
    .await;
    assert!(err.is_err());
    assert_eq!(
        rows(&pool).await.len(),
        6,
        "nothing of a failed write shows"
    );

    let w = write(
        &pool,
        &[row("a", 0, "a0", &["faq"]), row("new", 0, "n0", &["faq"])],
        Some(&replace),
    )
    .await;
    assert_eq!((w.inserted, w.unchanged, w.deleted), (1, 1, 2));
    let docs: Vec<String> = rows(&pool).await.into_iter().map(|r| r.0).collect();
    // `gone` is removed; `failed` (unreadable this time), the records of a JSONL file that
    // failed as a whole, and another tag set stay.
    assert_eq!(
        docs,
        ["a", "failed", "new", "other-tags", "records.jsonl#7"]
    );
}

#[tokio::test]
async fn an_unchanged_chunk_keeps_its_embedding_and_another_model_replaces_it() {
    let pool = xin_store::connect(&xin_store::fresh_test_database().await, 2)
        .await
        .unwrap();
    let mut r = row("a", 0, "a0", &[]);
    r.embedding = Some((vec![1.0, 0.0], "m1".into()));
    write(&pool, std::slice::from_ref(&r), None).await;
    let stored = knowledge::stored(&pool, "acme", &["a".into()])
        .await
        .unwrap();
    assert_eq!(
        stored[&("a".to_string(), 0)].embedding_model.as_deref(),
        Some("m1")
    );

    // Unchanged, written without an embedding (the worker skipped it): kept.
    let w = write(&pool, &[row("a", 0, "a0", &[])], None).await;
    assert_eq!(w.unchanged, 1);
    let emb: Option<Vec<f32>> = sqlx::query_scalar("SELECT embedding FROM knowledge_chunks")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(emb, Some(vec![1.0, 0.0]));

    // Same text, another model's vector: rewritten.
    r.embedding = Some((vec![0.0, 1.0], "m2".into()));
    let w = write(&pool, std::slice::from_ref(&r), None).await;
    assert_eq!(w.updated, 1);
    let (emb, model): (Option<Vec<f32>>, Option<String>) =
        sqlx::query_as("SELECT embedding, embedding_model FROM knowledge_chunks")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((emb, model.as_deref()), (Some(vec![0.0, 1.0]), Some("m2")));

    // Same model, other dimensions (the Tenant's `dimensions` changed): rewritten too.
    r.embedding = Some((vec![0.0, 1.0, 0.0], "m2".into()));
    let w = write(&pool, std::slice::from_ref(&r), None).await;
    assert_eq!(w.updated, 1);
    let stored = knowledge::stored(&pool, "acme", &["a".into()])
        .await
        .unwrap();
    assert_eq!(stored[&("a".to_string(), 0)].embedding_dimensions, Some(3));

    // Changed text without an embedding: the old vector no longer describes it.
    write(&pool, &[row("a", 0, "a0 changed", &[])], None).await;
    let emb: Option<Vec<f32>> = sqlx::query_scalar("SELECT embedding FROM knowledge_chunks")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(emb, None);
}
