//! Retrieval against a real PostgreSQL: lexical ranking in English and Persian, the bounded
//! candidate set, min score, max documents, token budget, visibility and tags, and the hybrid
//! with embeddings (an embeddings stand-in returns a fixed question vector).

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use sqlx::PgPool;
use xin_orchestrator::config::{EmbeddingConfig, RetrievalConfig};
use xin_orchestrator::retrieval::{
    ALL_TERMS_CANDIDATES, PER_TERM_CANDIDATES, Retrieved, Retriever,
};

/// A lexical retriever with the tenant's word statistics loaded, as at start.
async fn lexical(cfg: RetrievalConfig, pool: &PgPool) -> Retriever {
    let r = Retriever::new(cfg, None, outbound());
    r.refresh_term_stats(pool).await.unwrap();
    r
}

fn docs(r: &Retrieved) -> Vec<&str> {
    r.chunks.iter().map(|c| c.document_id.as_str()).collect()
}

async fn tenant_pool() -> PgPool {
    let url = database().await;
    xin_store::connect(&url, 4).await.unwrap()
}

async fn seed_knowledge(pool: &PgPool) {
    let mut s = Seed::new(
        "passwords",
        "Resetting your password",
        "To reset your password open Settings and choose Security, then follow the reset link.",
    );
    s.token_count = 60;
    seed(pool, s).await;
    let mut s = Seed::new(
        "password-policy",
        "Password rules",
        "A password needs twelve characters.",
    );
    s.token_count = 30;
    seed(pool, s).await;
    seed(
        pool,
        Seed::new(
            "shipping",
            "Shipping",
            "Orders ship within two business days.",
        ),
    )
    .await;
    seed(
        pool,
        Seed::new(
            "fa-password",
            "تغییر رمز عبور",
            "برای تغییر رمز عبور به تنظیمات بروید و گزینه امنیت را انتخاب کنید.",
        ),
    )
    .await;
    seed(
        pool,
        Seed::new(
            "fa-shipping",
            "ارسال",
            "سفارش‌ها ظرف دو روز کاری ارسال می‌شوند.",
        ),
    )
    .await;
    let mut s = Seed::new(
        "staff-escalation",
        "Escalating password resets",
        "Staff can force a password reset from the admin console.",
    );
    s.visibility = "internal";
    seed(pool, s).await;
    let mut s = Seed::new(
        "refund-en",
        "Refunds",
        "Refunds are issued within five days.",
    );
    s.tags = &["billing", "en"];
    seed(pool, s).await;
    let mut s = Seed::new(
        "refund-any",
        "Refund requests",
        "Refund requests need the order number.",
    );
    s.tags = &["billing"];
    seed(pool, s).await;
}

#[tokio::test]
async fn lexical_retrieval_ranks_filters_and_caps() {
    let pool = tenant_pool().await;
    seed_knowledge(&pool).await;
    let r = lexical(RetrievalConfig::default(), &pool).await;
    assert!(
        r.refresh_term_stats(&pool).await.unwrap() > 0,
        "words in two chunks or more"
    );

    let got = r
        .retrieve(&pool, "How do I reset my password?", &[])
        .await
        .unwrap();
    assert_eq!(docs(&got), ["passwords", "password-policy"], "{got:?}");
    assert!(!got.vector_used);
    let (best, second) = (got.chunks[0].score, got.chunks[1].score);
    assert!(
        best > second && best <= 1.0 && second >= 0.2,
        "{best} {second}"
    );

    // Persian, with a question mark and a zero-width non-joiner in the stored text.
    let got = r
        .retrieve(&pool, "چطور رمز عبور را تغییر دهم؟", &[])
        .await
        .unwrap();
    assert_eq!(docs(&got), ["fa-password"], "{got:?}");
    let got = r
        .retrieve(&pool, "سفارش‌ها کی ارسال می‌شوند", &[])
        .await
        .unwrap();
    assert_eq!(docs(&got)[0], "fa-shipping", "{got:?}");

    // Min score: between the two scores only the best remains.
    let cfg = RetrievalConfig {
        min_score: (best + second) / 2.0,
        ..RetrievalConfig::default()
    };
    let got = lexical(cfg, &pool)
        .await
        .retrieve(&pool, "How do I reset my password?", &[])
        .await
        .unwrap();
    assert_eq!(docs(&got), ["passwords"]);

    let cfg = RetrievalConfig {
        max_documents: 1,
        ..RetrievalConfig::default()
    };
    let got = lexical(cfg, &pool)
        .await
        .retrieve(&pool, "How do I reset my password?", &[])
        .await
        .unwrap();
    assert_eq!(docs(&got), ["passwords"]);

    // The budget: 60 + 30 tokens do not fit in 50; the smaller one still does.
    let cfg = RetrievalConfig {
        context_budget_tokens: 50,
        ..RetrievalConfig::default()
    };
    let got = lexical(cfg, &pool)
        .await
        .retrieve(&pool, "How do I reset my password?", &[])
        .await
        .unwrap();
    assert_eq!(docs(&got), ["password-policy"]);
    let cfg = RetrievalConfig {
        context_budget_tokens: 90,
        ..RetrievalConfig::default()
    };
    assert_eq!(
        docs(
            &lexical(cfg, &pool)
                .await
                .retrieve(&pool, "reset password", &[])
                .await
                .unwrap()
        ),
        ["passwords", "password-policy"]
    );

    // Visibility: internal chunks only when configured.
    let cfg = RetrievalConfig {
        visibility: vec!["public".into(), "internal".into()],
        ..RetrievalConfig::default()
    };
    let got = lexical(cfg, &pool)
        .await
        .retrieve(&pool, "reset password", &[])
        .await
        .unwrap();
    assert!(docs(&got).contains(&"staff-escalation"), "{got:?}");
    assert!(
        !docs(&r.retrieve(&pool, "staff admin console", &[]).await.unwrap())
            .contains(&"staff-escalation")
    );

    // Tags: only chunks carrying all of them.
    let tags = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let got = r
        .retrieve(&pool, "refunds refund requests", &[])
        .await
        .unwrap();
    assert_eq!(got.chunks.len(), 2, "{got:?}");
    let got = r
        .retrieve(&pool, "refunds refund requests", &tags(&["billing", "en"]))
        .await
        .unwrap();
    assert_eq!(docs(&got), ["refund-en"]);
    let got = r
        .retrieve(&pool, "refunds refund requests", &tags(&["billing", "fr"]))
        .await
        .unwrap();
    assert!(got.chunks.is_empty());

    // Nothing to search for, or operators and quotes as input: no error, no result.
    for q in ["?!", "' OR 1=1 --", "& | ! ( :* <-> )", "\\'"] {
        let got = r.retrieve(&pool, q, &[]).await.unwrap();
        assert!(got.chunks.is_empty(), "{q}: {got:?}");
    }
    // Operators around words are dropped, the words still count.
    let got = r
        .retrieve(&pool, "password:* & !(reset) <->", &[])
        .await
        .unwrap();
    assert_eq!(docs(&got), ["passwords", "password-policy"]);
}

#[tokio::test]
async fn candidates_are_bounded_and_rare_words_outrank_common_ones() {
    let pool = tenant_pool().await;
    // 300 chunks share the common words; one has the rare one.
    let rows: Vec<String> = (0..300)
        .map(|i| format!("shared common words about the product number {i}"))
        .collect();
    sqlx::query(
        "INSERT INTO knowledge_chunks (tenant, document_id, chunk_index, text, token_count)
         SELECT current_database(), 'doc-' || n, 0, t, 20 FROM unnest($1::text[]) WITH ORDINALITY AS x(t, n)",
    )
    .bind(&rows)
    .execute(&pool)
    .await
    .unwrap();
    seed(
        &pool,
        Seed::new(
            "warranty",
            "Warranty",
            "The warranty covers the product for two years.",
        ),
    )
    .await;
    let r = lexical(RetrievalConfig::default(), &pool).await;
    let got = r
        .retrieve(&pool, "what does the warranty of the product cover", &[])
        .await
        .unwrap();
    assert_eq!(docs(&got)[0], "warranty", "{got:?}");
    let bound = PER_TERM_CANDIDATES as usize * 7 + ALL_TERMS_CANDIDATES as usize;
    assert!(
        got.candidates <= bound,
        "{} candidates scored",
        got.candidates
    );
    assert!(
        got.candidates < 300,
        "the candidate set is bounded: {}",
        got.candidates
    );
    // A chunk matching only the common words scores far below the one with the rare word.
    if let Some(other) = got.chunks.get(1) {
        assert!(other.score < got.chunks[0].score * 0.7, "{got:?}");
    }
}

#[tokio::test]
async fn the_hybrid_weight_moves_between_lexical_and_vector_order() {
    let stand_in = StandIn::start().await;
    stand_in.set_embedding(vec![1.0, 0.0, 0.0, 0.0]);
    let pool = tenant_pool().await;
    // Lexically strong, orthogonal to the question vector.
    let mut s = Seed::new(
        "lexical-best",
        "Reset your password",
        "To reset your password open Settings and reset it.",
    );
    s.embedding = Some(vec![0.0, 1.0, 0.0, 0.0]);
    seed(&pool, s).await;
    // Lexically weak, the question vector itself.
    let mut s = Seed::new(
        "vector-best",
        "Account access",
        "Your password is personal.",
    );
    s.embedding = Some(vec![2.0, 0.0, 0.0, 0.0]);
    seed(&pool, s).await;
    // No shared word at all, close to the question vector.
    let mut s = Seed::new(
        "vector-only",
        "Signing in",
        "Use the link we e-mailed you to sign in.",
    );
    s.embedding = Some(vec![0.9, 0.1, 0.0, 0.0]);
    seed(&pool, s).await;
    // No embedding.
    seed(
        &pool,
        Seed::new("no-embedding", "Misc", "Password hints are not stored."),
    )
    .await;

    let retriever = |weight: f64| {
        let cfg = RetrievalConfig {
            hybrid_weight: weight,
            min_score: 0.2,
            ..RetrievalConfig::default()
        };
        let e = EmbeddingConfig {
            dimensions: None,
            endpoint: stand_in.url.clone(),
            model: "embed-small".into(),
            timeout: Duration::from_secs(2),
            api_key: None,
            refresh: Duration::from_secs(3600),
        };
        Retriever::new(cfg, Some(&e), outbound())
    };
    let q = "how do I reset my password";

    let lexical_only = retriever(0.0);
    lexical_only.index().unwrap().refresh(&pool).await.unwrap();
    let got = lexical_only.retrieve(&pool, q, &[]).await.unwrap();
    assert_eq!(docs(&got)[0], "lexical-best", "{got:?}");
    assert!(!docs(&got).contains(&"vector-only"));
    assert!(!got.vector_used);

    let vector = retriever(1.0);
    let index = vector.index().unwrap();
    assert_eq!(index.refresh(&pool).await.unwrap(), 3);
    assert_eq!((index.len(), index.dim()), (3, 4));
    let got = vector.retrieve(&pool, q, &[]).await.unwrap();
    assert!(got.vector_used, "{got:?}");
    assert_eq!(docs(&got), ["vector-best", "vector-only"], "{got:?}");
    // Exact, from the stored embedding (not the index's int8 copy).
    assert!((got.chunks[0].score - 1.0).abs() < 1e-6, "{got:?}");
    let asked = stand_in.embedding_requests();
    assert_eq!(
        asked.last().unwrap(),
        &json!({"model": "embed-small", "input": q})
    );

    let half = retriever(0.5);
    half.index().unwrap().refresh(&pool).await.unwrap();
    let got = half.retrieve(&pool, q, &[]).await.unwrap();
    assert!(
        docs(&got).contains(&"lexical-best") && docs(&got).contains(&"vector-best"),
        "{got:?}"
    );

    // New chunks reach the index on the next refresh; changed ones within CHANGED_EVERY.
    let mut s = Seed::new("added-later", "New", "Brand new text.");
    s.embedding = Some(vec![1.0, 0.05, 0.0, 0.0]);
    seed(&pool, s).await;
    assert_eq!(index.refresh(&pool).await.unwrap(), 1);
    assert!(docs(&vector.retrieve(&pool, q, &[]).await.unwrap()).contains(&"added-later"));
    sqlx::query("UPDATE knowledge_chunks SET embedding = '{0,0,1,0}', updated_at = now() WHERE document_id = 'vector-best'")
        .execute(&pool)
        .await
        .unwrap();
    for _ in 0..xin_orchestrator::retrieval::CHANGED_EVERY {
        index.refresh(&pool).await.unwrap();
    }
    let got = vector.retrieve(&pool, q, &[]).await.unwrap();
    assert!(
        !docs(&got).contains(&"vector-best"),
        "the changed embedding was picked up: {got:?}"
    );

    // The embedding endpoint fails: lexical only, and the reason is kept.
    stand_in.set_embedding(vec![]);
    let got = vector.retrieve(&pool, q, &[]).await.unwrap();
    assert!(!got.vector_used);
    assert!(
        got.vector_note
            .as_deref()
            .unwrap_or_default()
            .contains("not embedded"),
        "{got:?}"
    );
    assert_eq!(docs(&got)[0], "lexical-best");
}

#[tokio::test]
async fn message_tags_and_embeddings_apply_through_the_api() {
    let stand_in = StandIn::start().await;
    stand_in.set_embedding(vec![0.0, 0.0, 1.0]);
    let url = database().await;
    let pool = xin_store::connect(&url, 2).await.unwrap();
    let mut s = Seed::new(
        "refund-en",
        "Refunds",
        "Refunds are issued within five days.",
    );
    s.tags = &["billing", "en"];
    s.embedding = Some(vec![1.0, 0.0, 0.0]);
    seed(&pool, s).await;
    let mut s = Seed::new(
        "refund-any",
        "Refund requests",
        "Refund requests need the order number.",
    );
    s.tags = &["billing"];
    s.embedding = Some(vec![0.0, 0.0, 1.0]);
    seed(&pool, s).await;
    let mut cfg = config("acme");
    cfg.retrieval.hybrid_weight = 0.7;
    cfg.embedding = Some(EmbeddingConfig {
        dimensions: None,
        endpoint: stand_in.url.clone(),
        model: "e".into(),
        timeout: Duration::from_secs(2),
        api_key: None,
        refresh: Duration::from_millis(200),
    });
    let h = start(&url, cfg).await;
    let id = h.conversation("frank").await;
    let gauge = h.metric_value("orchestrator_embedding_index_vectors");
    assert_eq!(gauge, Some(2.0), "the index's size is exported once loaded");
    let r = h.say(&id, json!({"text": "refunds"})).await;
    let j = r.json();
    assert_eq!(
        j["answer"]["sources"][0]["document_id"], "refund-any",
        "the vector decides at 0.7: {j}"
    );
    let r = h
        .say(&id, json!({"text": "refunds", "tags": ["billing", "en"]}))
        .await;
    let sources = r.json()["answer"]["sources"].clone();
    // refund-any lacks the tag; refund-en scores 0.3 × its lexical 1.0.
    assert_eq!(sources.as_array().unwrap().len(), 1, "{sources}");
    assert_eq!(sources[0]["document_id"], "refund-en");
    // The background refresher picks up a chunk added while serving.
    let mut s = Seed::new("gift-cards", "Gift cards", "Gift cards never expire.");
    s.embedding = Some(vec![0.0, 0.0, 2.0]);
    seed(&pool, s).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while h.orchestrator.retriever.index().unwrap().len() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the refresher did not pick up the new chunk"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(h.orchestrator.retriever.index().unwrap().len(), 3);
}

#[tokio::test]
async fn the_fulltext_index_drives_lexical_lookups_with_no_superuser_step() {
    let url = database().await;
    let pool = xin_store::connect(&url, 1).await.unwrap();
    seed(&pool, Seed::new("d", "t", "needle in a haystack")).await;
    sqlx::query(
        "INSERT INTO knowledge_chunks (tenant, document_id, chunk_index, text, token_count)
         SELECT 'acme', 'hay-' || n, 0, 'hay straw bale ' || n, 5 FROM generate_series(1, 5000) n",
    )
    .execute(&pool)
    .await
    .unwrap();
    // `ts_match_vq` as PostgreSQL ships it (the tenant databases are made from template0).
    let leakproof: bool = sqlx::query_scalar(
        "SELECT proleakproof FROM pg_proc WHERE oid = 'pg_catalog.ts_match_vq(tsvector, tsquery)'::regprocedure",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(!leakproof);
    // Plans with sequential scans discouraged: the question is whether the index can be used
    // (under row-level security it could not).
    let plan = |pool: PgPool| async move {
        sqlx::query("SET enable_seqscan = off")
            .execute(&pool)
            .await
            .unwrap();
        let rows: Vec<String> = sqlx::query_scalar(
            "EXPLAIN SELECT id FROM knowledge_chunks WHERE tsv @@ to_tsquery('simple', 'needle')",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        rows.join("\n")
    };
    let fresh = xin_store::connect(&url, 1).await.unwrap();
    let p = plan(fresh.clone()).await;
    assert!(p.contains("knowledge_chunks_tsv"), "{p}");
    let got = Retriever::new(RetrievalConfig::default(), None, outbound())
        .retrieve(&fresh, "needle", &[])
        .await
        .unwrap();
    assert_eq!(docs(&got), ["d"]);
}

/// sqlx prepares each statement once per connection, and after five runs PostgreSQL may plan
/// it once for any parameters (the generic plan). With no tags asked for, that plan must not
/// scan the tags' index: `tags @> '{}'` holds for every chunk, so it would be a bitmap of the
/// whole table on every candidate scan (a 10× slower retrieval at 100,000 chunks).
#[tokio::test]
async fn the_generic_plan_of_retrieval_does_not_scan_the_tags_index_for_no_tags() {
    let url = database().await;
    let pool = xin_store::connect(&url, 1).await.unwrap();
    sqlx::query(
        "INSERT INTO knowledge_chunks (tenant, document_id, chunk_index, text, token_count, tags)
         SELECT 'acme', 'doc-' || n, 0, 'hay straw bale word' || (n % 500), 5,
                CASE WHEN n % 7 = 0 THEN ARRAY['billing'] ELSE ARRAY[]::text[] END
         FROM generate_series(1, 20000) n",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE knowledge_chunks")
        .execute(&pool)
        .await
        .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET plan_cache_mode = force_generic_plan;
         PREPARE lexical(text[], text[], text[], int, text, int, bigint[], text, float8[], bool[], bool) AS {}",
        xin_orchestrator::retrieval::LEXICAL_SQL
    )))
    .execute(&mut *conn)
    .await
    .unwrap();
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN EXECUTE lexical(ARRAY['hay','word7'], ARRAY['public'], ARRAY[]::text[], 64,
            'hay & word7', 32, ARRAY[]::bigint[], 'hay | word7', ARRAY[0.1, 3]::float8[],
            ARRAY[false, true], false)",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    let plan = plan.join("\n");
    assert!(plan.contains("knowledge_chunks_tsv"), "{plan}");
    assert!(!plan.contains("knowledge_chunks_tags"), "{plan}");
}

#[tokio::test]
async fn a_restarted_index_restores_from_its_directory_and_catches_up_with_the_database() {
    let stand_in = StandIn::start().await;
    let pool = tenant_pool().await;
    let dir = std::env::temp_dir().join(format!(
        "xin-restore-test-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let retriever = |model: &str| {
        let e = EmbeddingConfig {
            dimensions: None,
            endpoint: stand_in.url.clone(),
            model: model.into(),
            timeout: Duration::from_secs(2),
            api_key: None,
            refresh: Duration::from_secs(3600),
        };
        let cfg = RetrievalConfig {
            index_dir: Some(dir.clone()),
            ..RetrievalConfig::default()
        };
        Retriever::new(cfg, Some(&e), outbound())
    };
    let with = |doc: &'static str, v: [f32; 3]| {
        let mut s = Seed::new(doc, doc, "text");
        s.embedding = Some(v.to_vec());
        s
    };
    seed(&pool, with("kept", [1.0, 0.0, 0.0])).await;
    // Rows within a few seconds of the newest `updated_at` seen are read again at restore
    // (a transaction may commit rows stamped a little earlier): "kept" is older than that.
    // `updated_at` is set by a trigger, so the database's clock has to move on.
    while sqlx::query_scalar::<_, bool>(
        "SELECT now() - max(updated_at) < interval '6 seconds' FROM knowledge_chunks",
    )
    .fetch_one(&pool)
    .await
    .unwrap()
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    seed(&pool, with("deleted", [0.9, 0.1, 0.0])).await;
    seed(&pool, with("changed", [0.8, 0.2, 0.0])).await;
    let first = retriever("m");
    let index = first.index().unwrap();
    assert_eq!(
        index.refresh(&pool).await.unwrap(),
        3,
        "the first load reads all"
    );
    index.refresh(&pool).await.unwrap(); // saves
    for f in ["embeddings.usearch", "embeddings.keys", "embeddings.json"] {
        assert!(dir.join(f).exists(), "{f} saved");
    }
    drop(first);

    // While the process is down: one chunk deleted, one re-embedded, one added.
    sqlx::query("DELETE FROM knowledge_chunks WHERE document_id = 'deleted'")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE knowledge_chunks SET embedding = '{0,0,1}', updated_at = now() + interval '1 minute'
         WHERE document_id = 'changed'",
    )
    .execute(&pool)
    .await
    .unwrap();
    seed(&pool, with("added", [0.0, 1.0, 0.0])).await;

    let second = retriever("m");
    let index = second.index().unwrap();
    // Only the changed and the added chunk are read with their embeddings.
    assert_eq!(index.refresh(&pool).await.unwrap(), 2);
    assert_eq!(index.len(), 3);
    let ids: std::collections::HashMap<String, i64> =
        sqlx::query_as("SELECT document_id, id FROM knowledge_chunks")
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    let public = vec!["public".to_string()];
    let nearest = |q: [f32; 3]| index.top(&q, 1, &public, &[])[0].0;
    assert_eq!(nearest([0.0, 0.0, 1.0]), ids["changed"]);
    assert_eq!(nearest([0.0, 1.0, 0.0]), ids["added"]);
    assert_eq!(nearest([1.0, 0.0, 0.0]), ids["kept"]);
    assert!(
        index
            .top(&[1.0, 0.0, 0.0], 10, &public, &[])
            .iter()
            .all(|(id, _)| ids.values().any(|v| v == id)),
        "the deleted chunk is gone"
    );
    drop(second);

    // Another embedding model: the saved index is not used, every embedding is read.
    let other = retriever("other-model");
    assert_eq!(other.index().unwrap().refresh(&pool).await.unwrap(), 3);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_embedding_with_a_null_element_is_left_out_not_an_error() {
    let stand_in = StandIn::start().await;
    stand_in.set_embedding(vec![1.0, 0.0, 0.0]);
    let pool = tenant_pool().await;
    let mut s = Seed::new("good", "Refunds", "Refunds take five days.");
    s.embedding = Some(vec![1.0, 0.0, 0.0]);
    seed(&pool, s).await;
    sqlx::query(
        "INSERT INTO knowledge_chunks (tenant, document_id, chunk_index, title, text, token_count, embedding)
         VALUES ('acme', 'holey', 0, 'Refunds too', 'Refunds are also described here.', 10, '{1,NULL,0}')",
    )
    .execute(&pool)
    .await
    .unwrap();
    let r = Retriever::new(
        RetrievalConfig {
            hybrid_weight: 0.5,
            min_score: 0.0,
            ..RetrievalConfig::default()
        },
        Some(&EmbeddingConfig {
            dimensions: None,
            endpoint: stand_in.url.clone(),
            model: "m".into(),
            timeout: Duration::from_secs(2),
            api_key: None,
            refresh: Duration::from_secs(3600),
        }),
        outbound(),
    );
    assert_eq!(
        r.index().unwrap().refresh(&pool).await.unwrap(),
        1,
        "only the whole one"
    );
    let got = r.retrieve(&pool, "refunds", &[]).await.unwrap();
    assert!(got.vector_used, "{got:?}");
    let holey = got
        .chunks
        .iter()
        .find(|c| c.document_id == "holey")
        .expect("found lexically");
    assert_eq!(holey.vector, 0.0);
    let good = got.chunks.iter().find(|c| c.document_id == "good").unwrap();
    assert!((good.vector - 1.0).abs() < 1e-6, "{got:?}");
}
