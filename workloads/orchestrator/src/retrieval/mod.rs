//! Retrieval over the tenant's `knowledge_chunks` (row-level security scopes every row to the
//! tenant; input is still never trusted): hybrid of PostgreSQL full text and cosine similarity
//! over an in-memory index of the tenant's embeddings.
//!
//! Lexical, bounded before ranking: `ts_rank` reads the `tsvector` of every row it ranks, so
//! its cost grows with the number of matches, and a common word matches a large share of the
//! tenant's chunks (PostgreSQL's documentation on ranking says as much:
//! <https://www.postgresql.org/docs/current/textsearch-controls.html#TEXTSEARCH-RANKING>):
//! 1. the question's words, sanitised to letters, digits and combining marks (Unicode aware,
//!    so Persian works), at most [`MAX_TERMS`];
//! 2. candidates: for each word in at most [`COMMON_DF`] chunks, at most
//!    [`PER_TERM_CANDIDATES`] matching chunks (a GIN index scan with LIMIT), plus at most
//!    [`ALL_TERMS_CANDIDATES`] chunks matching every word, plus the vector candidates — never
//!    more than a few hundred rows. Word frequencies come from [`TermStats`] (`ts_stat`,
//!    refreshed in the background);
//! 3. only those are scored: `0.7 × coverage + 0.3 × ts_rank / max ts_rank`, where coverage
//!    is the IDF-weighted share of the question's words (those found in any candidate) that
//!    the chunk contains, so a word found everywhere counts little. Both parts are in 0..1.
//!
//! Vector: the question's embedding searched in an HNSW index of the tenant's embedded chunks
//! (int8-quantized, visibility and tags filtered inside the search; [`EmbeddingIndex`]), top
//! [`VECTOR_CANDIDATES`]. The vector score of every candidate (vector or lexical) is
//! max(0, cosine), computed exactly from its stored embedding, which the candidate query
//! returns: the quantized vectors only choose the candidates.
//!
//! Combined: `w × vector + (1 − w) × lexical` (w = `RETRIEVAL_HYBRID_WEIGHT`, taken as 0 when
//! no question embedding is available), then the min score, the max documents and the token
//! budget are applied best first.

mod index;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;
use sqlx::PgPool;
use xin_runtime::outbound::{Limits, Outbound};

use crate::config::{EmbeddingConfig, RetrievalConfig};
pub use index::{
    CHANGED_EVERY, CONNECTIVITY, EXPANSION_ADD, EXPANSION_SEARCH, EmbeddingIndex, SWEEP, dot,
    normalise,
};

/// Most distinct words of a question used for lexical retrieval.
pub const MAX_TERMS: usize = 12;
/// Longest word (in characters) kept; longer runs are not words anyone asks about.
pub const MAX_TERM_CHARS: usize = 64;
/// Chunks taken per word before ranking.
pub const PER_TERM_CANDIDATES: i64 = 32;
/// Chunks matching every word taken before ranking.
pub const ALL_TERMS_CANDIDATES: i64 = 64;
/// How often the word statistics are reloaded.
pub const TERM_STATS_REFRESH: Duration = Duration::from_secs(300);
/// Chunks taken from the vector scan.
pub const VECTOR_CANDIDATES: usize = 64;

/// One retrieved chunk with its scores.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Chunk {
    pub id: i64,
    pub document_id: String,
    pub chunk_index: i32,
    pub title: String,
    #[serde(skip)]
    pub text: String,
    #[serde(skip)]
    pub token_count: i32,
    pub score: f64,
    #[serde(skip)]
    pub lexical: f64,
    #[serde(skip)]
    pub vector: f64,
}

/// The outcome of one retrieval.
#[derive(Debug, Clone, Default)]
pub struct Retrieved {
    /// Best first, after every filter and cap.
    pub chunks: Vec<Chunk>,
    /// Whether the vector side took part.
    pub vector_used: bool,
    /// Why it did not, when it was configured.
    pub vector_note: Option<String>,
    /// Rows scored (the bounded candidate set).
    pub candidates: usize,
}

/// Is `c` part of a word? ASCII letters and digits; beyond ASCII anything but spaces, controls
/// and punctuation, so letters of every script and their combining marks (Persian short
/// vowels, Indic vowel signs) stay inside the word. The tsquery operators are all ASCII, so a
/// query built of such words cannot be malformed.
pub fn is_word_char(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphanumeric();
    }
    !(c.is_whitespace() || c.is_control() || is_punctuation(c))
}

fn is_punctuation(c: char) -> bool {
    matches!(c,
        '\u{00A0}'..='\u{00BF}' | '\u{00D7}' | '\u{00F7}'
        // general punctuation, incl. zero-width (non-)joiners, dashes, quotes
        | '\u{2000}'..='\u{206F}'
        | '\u{2E00}'..='\u{2E7F}'
        // Arabic comma, semicolon, question mark, percent/decimal/thousands, full stop
        | '\u{060C}' | '\u{060D}' | '\u{061B}' | '\u{061F}' | '\u{066A}'..='\u{066D}' | '\u{06D4}'
        | '\u{3000}'..='\u{303F}'
        | '\u{FE10}'..='\u{FE1F}' | '\u{FE30}'..='\u{FE4F}'
        | '\u{FF01}'..='\u{FF0F}' | '\u{FF1A}'..='\u{FF20}' | '\u{FF3B}'..='\u{FF40}' | '\u{FF5B}'..='\u{FF65}'
        | '\u{FEFF}' | '\u{FFFD}')
}

/// The distinct words of a question, in order, at most [`MAX_TERMS`]. Case is left to
/// PostgreSQL (`to_tsquery('simple', …)` normalises exactly as the stored `tsv` was).
pub fn query_terms(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for w in text.split(|c: char| !is_word_char(c)) {
        if w.is_empty() || w.chars().count() > MAX_TERM_CHARS || out.iter().any(|o| o == w) {
            continue;
        }
        out.push(w.to_string());
        if out.len() == MAX_TERMS {
            break;
        }
    }
    out
}

/// `w1 | w2 | …` for `to_tsquery`.
pub fn or_query(terms: &[String]) -> String {
    terms.join(" | ")
}

/// `w1 & w2 & …` for `to_tsquery`.
pub fn and_query(terms: &[String]) -> String {
    terms.join(" & ")
}

/// The lexical score in 0..1 from the coverage (matched weight / total weight) and the rank
/// relative to the best rank among the candidates.
pub fn lexical_score(matched: f64, total: f64, rank: f64, max_rank: f64) -> f64 {
    let coverage = if total > 0.0 {
        (matched / total).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let rank = if max_rank > 0.0 {
        (rank / max_rank).clamp(0.0, 1.0)
    } else {
        0.0
    };
    0.7 * coverage + 0.3 * rank
}

/// `w × vector + (1 − w) × lexical`.
pub fn combine(weight: f64, vector: f64, lexical: f64) -> f64 {
    weight * vector + (1.0 - weight) * lexical
}

/// Best first (ties: lower id first), drops scores below `min_score`, keeps at most
/// `max_documents`, and keeps chunks only while the sum of their token counts stays within
/// `budget`: a chunk too large for what is left is skipped and smaller ones after it may
/// still fit.
pub fn select(
    mut chunks: Vec<Chunk>,
    min_score: f64,
    max_documents: usize,
    budget: usize,
) -> Vec<Chunk> {
    chunks.retain(|c| c.score >= min_score && c.score > 0.0);
    chunks.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
    let mut used = 0usize;
    let mut out = Vec::new();
    for c in chunks {
        if out.len() == max_documents {
            break;
        }
        let tokens = c.token_count.max(0) as usize;
        if used + tokens > budget {
            continue;
        }
        used += tokens;
        out.push(c);
    }
    out
}

/// Retrieval for one tenant: configuration, the embedding client and index when configured.
#[derive(Clone)]
pub struct Retriever {
    pub config: RetrievalConfig,
    embedder: Option<Embedder>,
    index: Option<Arc<EmbeddingIndex>>,
    stats: Arc<RwLock<Arc<TermStats>>>,
}

impl Retriever {
    /// `http` is the outbound client: the embedding endpoint is the tenant's.
    pub fn new(
        config: RetrievalConfig,
        embedding: Option<&EmbeddingConfig>,
        http: Outbound,
    ) -> Self {
        let embedder = embedding.map(|e| Embedder {
            http: http.with_limits(Limits {
                timeout: e.timeout,
                max_response_bytes: crate::llm::MAX_RESPONSE_BYTES,
                ..Limits::default()
            }),
            url: format!("{}/v1/embeddings", e.endpoint),
            model: e.model.clone(),
            dimensions: e.dimensions,
            api_key: e.api_key.clone(),
        });
        let index = embedder.as_ref().map(|e| {
            Arc::new(EmbeddingIndex::new(
                config.index_dir.clone(),
                &index_model(&e.model, e.dimensions),
            ))
        });
        Retriever {
            config,
            index,
            embedder,
            stats: Arc::default(),
        }
    }

    /// Reloads the document frequencies of the tenant's words (`ts_stat`, ~0.7 s at 100k
    /// chunks); returns how many words occur in two chunks or more.
    pub async fn refresh_term_stats(&self, pool: &PgPool) -> Result<usize, sqlx::Error> {
        let chunks: i64 = sqlx::query_scalar("SELECT count(*) FROM knowledge_chunks")
            .fetch_one(pool)
            .await?;
        let rows: Vec<(String, i32)> = sqlx::query_as(
            "SELECT word, ndoc FROM ts_stat('SELECT tsv FROM knowledge_chunks') WHERE ndoc >= 2",
        )
        .fetch_all(pool)
        .await?;
        let n = rows.len();
        let stats = TermStats {
            chunks: chunks.max(0) as u64,
            df: rows
                .into_iter()
                .map(|(w, d)| (w, d.max(0) as u32))
                .collect(),
        };
        *self.stats.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(stats);
        Ok(n)
    }

    /// Refreshes the word statistics every `every` in the background.
    pub fn spawn_term_stats_refresher(&self, pool: PgPool, every: Duration) {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = me.refresh_term_stats(&pool).await {
                    tracing::warn!(error = %e, "word statistics refresh failed; retrying");
                }
            }
        });
    }

    fn term_stats(&self) -> Arc<TermStats> {
        self.stats.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The embedding index, when embeddings are configured.
    pub fn index(&self) -> Option<&Arc<EmbeddingIndex>> {
        self.index.as_ref()
    }

    /// Retrieves for `question`: embeds it when an embedding endpoint is configured (falling
    /// back to lexical only when that fails), then [`Retriever::search`].
    pub async fn retrieve(
        &self,
        pool: &PgPool,
        question: &str,
        tags: &[String],
    ) -> Result<Retrieved, sqlx::Error> {
        let mut note = None;
        let mut vector = None;
        if let (Some(embedder), Some(index)) = (&self.embedder, &self.index) {
            if self.config.hybrid_weight <= 0.0 {
                note = Some("hybrid weight is 0".to_string());
            } else if index.is_empty() {
                note = Some("no embedded chunks".to_string());
            } else {
                match embedder.embed(question).await {
                    Ok(v) => vector = Some(v),
                    Err(e) => note = Some(format!("question not embedded: {e}")),
                }
            }
        }
        let mut r = self.search(pool, question, vector, tags).await?;
        if r.vector_note.is_none() {
            r.vector_note = note;
        }
        Ok(r)
    }

    /// Hybrid search with an already computed question embedding (or none: lexical only).
    pub async fn search(
        &self,
        pool: &PgPool,
        question: &str,
        vector: Option<Vec<f32>>,
        tags: &[String],
    ) -> Result<Retrieved, sqlx::Error> {
        let cfg = &self.config;
        let terms = query_terms(question);
        let mut note = None;
        // The query normalised once; the index scan runs off the async threads.
        let query = match (vector, &self.index) {
            (Some(v), Some(index)) => match normalise(v) {
                Some(q) if q.len() == index.dim() => Some((q, index.clone())),
                Some(q) => {
                    note = Some(format!(
                        "question embedding has {} dimensions, the knowledge {}",
                        q.len(),
                        index.dim()
                    ));
                    None
                }
                None => {
                    note = Some("question embedding is empty or zero".into());
                    None
                }
            },
            _ => None,
        };
        let vector_ids: Vec<i64> = match &query {
            Some((q, index)) => {
                let (q, index, vis, tags) = (
                    q.clone(),
                    index.clone(),
                    cfg.visibility.clone(),
                    tags.to_vec(),
                );
                tokio::task::spawn_blocking(move || index.top(&q, VECTOR_CANDIDATES, &vis, &tags))
                    .await
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(id, _)| id)
                    .collect()
            }
            None => Vec::new(),
        };
        if terms.is_empty() && vector_ids.is_empty() {
            return Ok(Retrieved {
                vector_used: query.is_some(),
                vector_note: note,
                ..Default::default()
            });
        }
        let plan = plan_terms(&terms, &self.term_stats());
        // The words' queries come from a CTE, so the planner cannot see how rare they are and
        // takes its default share of rows (0.5 %): with LIMIT, a sequential scan then looks
        // cheaper than the GIN index, and reads on until it finds enough matches — 60 ms at
        // 1M chunks for a word in 2,000 of them. Sequential scans are off for this statement.
        let mut tx = pool.begin().await?;
        sqlx::query("SET LOCAL enable_seqscan = off")
            .execute(&mut *tx)
            .await?;
        let rows: Vec<ScoredRow> = sqlx::query_as(LEXICAL_SQL)
            .bind(&terms)
            .bind(&cfg.visibility)
            .bind(tags)
            .bind(PER_TERM_CANDIDATES)
            // NULL (matches nothing) rather than an empty query, which PostgreSQL reports.
            .bind(plan.all_words.then(|| and_query(&terms)))
            .bind(ALL_TERMS_CANDIDATES)
            .bind(&vector_ids)
            .bind((!terms.is_empty()).then(|| or_query(&terms)))
            .bind(&plan.idf)
            .bind(&plan.scan)
            .bind(query.is_some())
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let max_rank = rows.iter().map(|r| r.rank).fold(0.0, f64::max);
        let total = matched_weight(rows.iter().flat_map(|r| r.matched.iter()), &plan.idf);
        let weight = if query.is_some() {
            cfg.hybrid_weight
        } else {
            0.0
        };
        let candidates = rows.len();
        let chunks = rows
            .into_iter()
            .map(|mut r| {
                let lexical = lexical_score(
                    matched_weight(r.matched.iter(), &plan.idf),
                    total,
                    r.rank,
                    max_rank,
                );
                // Exact, from the stored embedding: the index's int8 vectors only chose
                // the vector candidates.
                let embedding = r.embedding.take();
                let vector = query
                    .as_ref()
                    .and_then(|(q, _)| {
                        let v = normalise(embedding?)?;
                        (v.len() == q.len()).then(|| dot(&v, q))
                    })
                    .map(|c| c.max(0.0) as f64)
                    .unwrap_or(0.0);
                Chunk {
                    id: r.id,
                    document_id: r.document_id,
                    chunk_index: r.chunk_index,
                    title: r.title,
                    text: r.text,
                    token_count: r.token_count,
                    score: combine(weight, vector, lexical),
                    lexical,
                    vector,
                }
            })
            .collect();
        Ok(Retrieved {
            chunks: select(
                chunks,
                cfg.min_score,
                cfg.max_documents,
                cfg.context_budget_tokens,
            ),
            vector_used: query.is_some(),
            vector_note: note,
            candidates,
        })
    }
}

/// What a saved embedding index must have been built for: the model and the dimensions asked.
fn index_model(model: &str, dimensions: Option<usize>) -> String {
    match dimensions {
        Some(d) => format!("{model}/{d}"),
        None => model.to_string(),
    }
}

/// A candidate as [`LEXICAL_SQL`] returns it.
#[derive(sqlx::FromRow)]
struct ScoredRow {
    id: i64,
    document_id: String,
    chunk_index: i32,
    title: String,
    text: String,
    token_count: i32,
    /// The (1-based) positions of the question's words the chunk contains.
    matched: Vec<i32>,
    rank: f64,
    /// With a question vector only.
    embedding: Option<Vec<f32>>,
}

/// $1 words, $2 visibilities, $3 required tags, $4 per-word limit, $5 all-words query (or
/// NULL), $6 its limit, $7 vector candidate ids, $8 any-word query, $9 each word's IDF, $10
/// whether each word gets its own candidate scan, $11 whether to return the embeddings (for
/// the exact cosine; not read otherwise). Filters are applied inside every candidate
/// scan so they do not waste candidate slots. The tag filter is written so that no tags ($3
/// empty, the common case) is not a filter at all: `k.tags @> '{}'` alone holds for every
/// row, and in the generic plan PostgreSQL uses for a prepared statement after five runs it
/// was ANDed through the tags' GIN index — a bitmap of every chunk on each scan (10× slower).
#[doc(hidden)]
pub const LEXICAL_SQL: &str = "
WITH terms AS (
    SELECT DISTINCT ON (q) n, q, scan FROM (
        SELECT t.n, to_tsquery('simple', t.w) AS q, t.scan
        FROM unnest($1::text[], $9::float8[], $10::bool[]) WITH ORDINALITY AS t (w, idf, scan, n)
    ) x
    WHERE numnode(q) > 0
    ORDER BY q, n
),
hits AS (
    SELECT h.id
    FROM terms t
    CROSS JOIN LATERAL (
        SELECT k.id FROM knowledge_chunks k
        WHERE t.scan AND k.tsv @@ t.q AND k.visibility = ANY($2) AND (cardinality($3::text[]) = 0 OR k.tags @> $3)
        LIMIT $4
    ) h
),
cand AS (
    SELECT id FROM hits
    UNION
    (SELECT k.id FROM knowledge_chunks k
     WHERE $5::text IS NOT NULL AND k.tsv @@ to_tsquery('simple', $5)
       AND k.visibility = ANY($2) AND (cardinality($3::text[]) = 0 OR k.tags @> $3)
     LIMIT $6)
    UNION
    SELECT unnest($7::bigint[])
)
SELECT k.id, k.document_id, k.chunk_index, k.title, k.text, k.token_count,
       ARRAY(SELECT t.n::int4 FROM terms t WHERE k.tsv @@ t.q ORDER BY t.n) AS matched,
       coalesce(ts_rank(k.tsv, to_tsquery('simple', $8)), 0)::float8 AS rank,
       -- An array with a NULL element would not decode (and has no cosine): none.
       CASE WHEN $11 AND array_position(k.embedding, NULL) IS NULL THEN k.embedding END AS embedding
FROM knowledge_chunks k
WHERE k.id IN (SELECT id FROM cand) AND k.visibility = ANY($2) AND (cardinality($3::text[]) = 0 OR k.tags @> $3)";

/// Document frequencies of the tenant's words (lexemes in two chunks or more).
#[derive(Debug, Default)]
pub struct TermStats {
    pub chunks: u64,
    pub df: HashMap<String, u32>,
}

impl TermStats {
    /// In how many chunks `word` occurs; a word not in the statistics counts as rare (1):
    /// it is rare, or newer than the statistics.
    pub fn df(&self, word: &str) -> u32 {
        self.df
            .get(&word.to_lowercase())
            .or_else(|| self.df.get(word))
            .copied()
            .unwrap_or(1)
    }

    /// BM25's inverse document frequency, always above 0.
    pub fn idf(&self, df: u32) -> f64 {
        let n = self.chunks.max(df as u64) as f64;
        let df = df as f64;
        (1.0 + (n - df + 0.5) / (df + 0.5)).ln()
    }
}

/// How the question's words are used.
#[derive(Debug, PartialEq)]
pub struct TermPlan {
    pub idf: Vec<f64>,
    /// Scanned for candidates on its own (not a stop-word-like word).
    pub scan: Vec<bool>,
    /// Whether to look for chunks holding every word.
    pub all_words: bool,
}

/// Words in more than this many chunks get no candidate scan of their own (a GIN bitmap scan
/// costs in proportion to the word's chunks: ~3.7 ms for 35,000 at 100k chunks); they still
/// count in the all-words scan and in scoring.
pub const COMMON_DF: u32 = 5000;

pub fn plan_terms(terms: &[String], stats: &TermStats) -> TermPlan {
    let df: Vec<u32> = terms.iter().map(|t| stats.df(t)).collect();
    let scan: Vec<bool> = df.iter().map(|&d| d <= COMMON_DF).collect();
    TermPlan {
        idf: df.iter().map(|&d| stats.idf(d)).collect(),
        // With a rare word in it, the all-words scan is cheap (GIN skips along the rare
        // word's list); with only common ones it would read them all and find noise.
        all_words: terms.len() > 1 && scan.iter().any(|&s| s),
        scan,
    }
}

/// The sum of the IDF of the distinct (1-based) word positions in `matched`.
pub fn matched_weight<'a>(matched: impl Iterator<Item = &'a i32>, idf: &[f64]) -> f64 {
    let mut seen = vec![false; idf.len()];
    let mut sum = 0.0;
    for &n in matched {
        let i = (n as usize).wrapping_sub(1);
        if i < idf.len() && !seen[i] {
            seen[i] = true;
            sum += idf[i];
        }
    }
    sum
}

/// The question's embedding from an OpenAI-compatible `/v1/embeddings`.
#[derive(Clone)]
struct Embedder {
    /// Bounded by the embedding timeout and the response limit.
    http: Outbound,
    url: String,
    model: String,
    dimensions: Option<usize>,
    api_key: Option<xin_runtime::Redacted>,
}

impl Embedder {
    async fn embed(&self, text: &str) -> Result<Vec<f32>, String> {
        let mut body = serde_json::json!({"model": self.model, "input": text});
        if let Some(d) = self.dimensions {
            body["dimensions"] = d.into();
        }
        let mut req = self.http.post(&self.url).json(&body);
        if let Some(k) = &self.api_key {
            req = req.bearer_auth(k.expose());
        }
        let resp = self.http.send(req).await.map_err(|e| e.to_string())?;
        let status = resp.status;
        if !status.is_success() {
            return Err(format!("embedding endpoint answered {status}"));
        }
        let body = resp.body;
        #[derive(serde::Deserialize)]
        struct Item {
            embedding: Vec<f32>,
        }
        #[derive(serde::Deserialize)]
        struct Resp {
            data: Vec<Item>,
        }
        let r: Resp = serde_json::from_slice(&body)
            .map_err(|e| format!("unparsable embedding answer: {e}"))?;
        r.data
            .into_iter()
            .next()
            .map(|i| i.embedding)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| "embedding answer has no vector".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(id: i64, score: f64, tokens: i32) -> Chunk {
        Chunk {
            id,
            document_id: format!("d{id}"),
            chunk_index: 0,
            title: String::new(),
            text: String::new(),
            token_count: tokens,
            score,
            lexical: score,
            vector: 0.0,
        }
    }

    #[test]
    fn query_terms_keep_letters_digits_and_marks_of_every_script() {
        assert_eq!(
            query_terms("How do I reset my password?!"),
            ["How", "do", "I", "reset", "my", "password"]
        );
        // Persian: the question mark is punctuation, the zero-width non-joiner splits as
        // PostgreSQL's parser does, a short vowel (sukun) stays inside the word.
        assert_eq!(
            query_terms("رمز عبور را چطور تغییر دهم؟ می‌خواهم کتابْ"),
            [
                "رمز",
                "عبور",
                "را",
                "چطور",
                "تغییر",
                "دهم",
                "می",
                "خواهم",
                "کتابْ"
            ]
        );
        assert_eq!(query_terms("हिन्दी ۱۲۳"), ["हिन्दी", "۱۲۳"]);
        // Every tsquery operator is ASCII punctuation, so nothing of it survives.
        assert_eq!(
            query_terms("a&b | !c:* <-> 'd' (e) \\f"),
            ["a", "b", "c", "d", "e", "f"]
        );
        assert_eq!(query_terms("reset reset RESET"), ["reset", "RESET"]);
        assert!(query_terms("?! ... ،؛").is_empty());
        let many: String = (0..40).map(|i| format!("w{i} ")).collect();
        assert_eq!(query_terms(&many).len(), MAX_TERMS);
        assert!(query_terms(&"x".repeat(65)).is_empty());
        assert_eq!(
            or_query(&query_terms("reset, password")),
            "reset | password"
        );
        assert_eq!(
            and_query(&query_terms("reset password")),
            "reset & password"
        );
    }

    #[test]
    fn common_words_weigh_little_and_get_no_scan_of_their_own() {
        let stats = TermStats {
            chunks: 100_000,
            df: [("the".to_string(), 90_000), ("password".to_string(), 300)]
                .into_iter()
                .collect(),
        };
        assert_eq!(stats.df("The"), 90_000, "looked up lower-cased");
        assert_eq!(stats.df("zyx"), 1, "unknown words count as rare");
        assert!(stats.idf(90_000) < 0.2 && stats.idf(300) > 5.0 && stats.idf(1) > stats.idf(300));
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let p = plan_terms(&words(&["the", "password"]), &stats);
        assert_eq!(p.scan, [false, true]);
        assert!(p.all_words);
        let p = plan_terms(&words(&["The", "the"]), &stats);
        assert_eq!((p.scan, p.all_words), (vec![false, false], false));
        assert!(!plan_terms(&words(&["password"]), &stats).all_words);
        // No statistics yet: every word is rare, scanned, and weighs the same.
        let p = plan_terms(&words(&["a", "b"]), &TermStats::default());
        assert_eq!(p.scan, [true, true]);
        assert_eq!(p.idf[0], p.idf[1]);
        assert!(p.idf[0] > 0.0);
        // Matched positions are 1-based and counted once.
        assert_eq!(matched_weight([2, 2, 3, 9].iter(), &[1.0, 2.0, 4.0]), 6.0);
        assert_eq!(matched_weight([0, -1].iter(), &[1.0]), 0.0);
    }

    #[test]
    fn scores_combine_by_weight_and_stay_within_0_and_1() {
        assert_eq!(combine(0.0, 0.9, 0.3), 0.3);
        assert_eq!(combine(1.0, 0.9, 0.3), 0.9);
        assert!((combine(0.5, 0.9, 0.3) - 0.6).abs() < 1e-12);
        assert_eq!(lexical_score(2.0, 2.0, 0.5, 0.5), 1.0);
        assert_eq!(lexical_score(0.0, 0.0, 0.0, 0.0), 0.0);
        assert!((lexical_score(1.0, 2.0, 0.25, 0.5) - 0.5).abs() < 1e-12);
        assert_eq!(lexical_score(5.0, 2.0, 1.0, 0.5), 1.0);
    }

    #[test]
    fn selection_filters_sorts_and_caps_by_count_and_token_budget() {
        let cands = vec![
            chunk(1, 0.5, 100),
            chunk(2, 0.9, 100),
            chunk(3, 0.1, 10),
            chunk(4, 0.7, 900),
            chunk(5, 0.6, 100),
            chunk(6, 0.6, 100),
        ];
        let ids = |v: Vec<Chunk>| v.into_iter().map(|c| c.id).collect::<Vec<_>>();
        assert_eq!(ids(select(cands.clone(), 0.2, 10, 10_000)), [2, 4, 5, 6, 1]);
        assert_eq!(ids(select(cands.clone(), 0.2, 2, 10_000)), [2, 4]);
        // 4 does not fit in what is left of 1000 after 2; smaller ones after it still do.
        assert_eq!(ids(select(cands.clone(), 0.2, 10, 999)), [2, 5, 6, 1]);
        assert_eq!(ids(select(cands.clone(), 0.2, 10, 150)), [2]);
        assert_eq!(ids(select(cands.clone(), 0.65, 10, 10_000)), [2, 4]);
        assert!(select(cands, 0.95, 10, 10_000).is_empty());
        assert!(select(vec![chunk(1, 0.0, 1)], 0.0, 10, 10).is_empty());
    }
}
