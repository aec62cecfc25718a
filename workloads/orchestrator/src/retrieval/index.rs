//! The tenant's chunk embeddings in memory for a brute-force cosine scan. The embeddings are a
//! plain `REAL[]` column (no vector type or index in PostgreSQL), so an exact search in SQL
//! would read and multiply every embedded chunk's array on each question; normalised f32
//! vectors held in memory are scanned in a tight loop instead (`make bench-orchestrator`
//! measures it at 100,000 chunks).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use sqlx::PgPool;

/// A full reload of the embedding index (drops deleted chunks) at most this often.
pub const FULL_RELOAD: Duration = Duration::from_secs(600);
/// Changed (re-embedded) chunks are looked for every this many refreshes; new ones every time.
pub const CHANGED_EVERY: u32 = 6;

/// Scales `v` to unit length; `None` for an empty, zero or non-finite vector.
pub fn normalise(mut v: Vec<f32>) -> Option<Vec<f32>> {
    let norm = dot(&v, &v).sqrt();
    if v.is_empty() || !norm.is_finite() || norm == 0.0 {
        return None;
    }
    for x in &mut v {
        *x /= norm;
    }
    Some(v)
}

/// Dot product with eight independent accumulators, which the compiler turns into SIMD.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let (ca, ra) = a.as_chunks::<8>();
    let (cb, rb) = b.as_chunks::<8>();
    let mut acc = [0f32; 8];
    for (x, y) in ca.iter().zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// The tenant's chunk embeddings in memory, normalised, for a brute-force scan. Refreshed
/// incrementally (new chunks by id every refresh, changed ones by `updated_at` every
/// [`CHANGED_EVERY`] refreshes) and fully every [`FULL_RELOAD`].
#[derive(Default)]
pub struct EmbeddingIndex {
    data: RwLock<IndexData>,
    refresh: tokio::sync::Mutex<RefreshState>,
}

#[derive(Default)]
struct IndexData {
    dim: usize,
    ids: Vec<i64>,
    /// `ids.len() × dim`, row-major.
    vectors: Vec<f32>,
    visibility: Vec<Box<str>>,
    tags: Vec<Box<[String]>>,
    slots: HashMap<i64, usize>,
    /// Rows skipped because their dimension differs from the index's.
    mismatched: usize,
}

#[derive(Default)]
struct RefreshState {
    max_id: i64,
    max_updated: f64,
    last_full: Option<Instant>,
    count: u32,
}

type IndexRow = (i64, Vec<f32>, String, Vec<String>, f64);

const INDEX_COLUMNS: &str =
    "SELECT id, embedding, visibility, tags, extract(epoch FROM updated_at)::float8
     FROM knowledge_chunks WHERE embedding IS NOT NULL AND array_position(embedding, NULL) IS NULL";

impl EmbeddingIndex {
    pub fn len(&self) -> usize {
        self.read().ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dim(&self) -> usize {
        self.read().dim
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, IndexData> {
        self.data.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Brings the index up to date with the database; returns how many rows were read.
    pub async fn refresh(&self, pool: &PgPool) -> Result<usize, sqlx::Error> {
        let mut st = self.refresh.lock().await;
        let full = st.last_full.is_none_or(|t| t.elapsed() >= FULL_RELOAD);
        if full {
            let mut fresh = IndexData::default();
            let mut after = 0i64;
            let (mut max_id, mut max_updated, mut read) = (0, 0.0f64, 0);
            loop {
                let rows = page(pool, after).await?;
                let Some(last) = rows.last() else { break };
                after = last.0;
                read += rows.len();
                for r in rows {
                    max_id = max_id.max(r.0);
                    max_updated = max_updated.max(r.4);
                    fresh.upsert(r);
                }
            }
            *self.data.write().unwrap_or_else(|e| e.into_inner()) = fresh;
            *st = RefreshState {
                max_id,
                max_updated,
                last_full: Some(Instant::now()),
                count: 0,
            };
            return Ok(read);
        }
        st.count += 1;
        let mut read = 0;
        loop {
            let rows = page(pool, st.max_id).await?;
            if rows.is_empty() {
                break;
            }
            read += rows.len();
            self.apply(&mut st, rows);
        }
        if st.count % CHANGED_EVERY == 0 {
            // Seconds of slack: a transaction may commit rows stamped a little earlier.
            let rows: Vec<IndexRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "{INDEX_COLUMNS} AND updated_at > to_timestamp($1) AND id <= $2"
            )))
            .bind(st.max_updated - 5.0)
            .bind(st.max_id)
            .fetch_all(pool)
            .await?;
            read += rows.len();
            self.apply(&mut st, rows);
        }
        Ok(read)
    }

    fn apply(&self, st: &mut RefreshState, rows: Vec<IndexRow>) {
        let mut d = self.data.write().unwrap_or_else(|e| e.into_inner());
        for r in rows {
            st.max_id = st.max_id.max(r.0);
            st.max_updated = st.max_updated.max(r.4);
            d.upsert(r);
        }
    }

    /// Refreshes every `every` until the process ends; errors are logged and retried.
    pub fn spawn_refresher(self: &Arc<Self>, pool: PgPool, every: Duration) {
        let index = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(index) = index.upgrade() else { return };
                if let Err(e) = index.refresh(&pool).await {
                    tracing::warn!(error = %e, "embedding index refresh failed; retrying");
                }
            }
        });
    }

    /// Cosine of chunk `id` with the normalised `q`, when the chunk is indexed.
    pub fn cosine(&self, id: i64, q: &[f32]) -> Option<f32> {
        let d = self.read();
        let slot = *d.slots.get(&id)?;
        (q.len() == d.dim).then(|| dot(&d.vectors[slot * d.dim..(slot + 1) * d.dim], q))
    }

    /// The `k` chunks most similar to the normalised `q` among those with one of the
    /// `visibility` values and all of `tags`: (id, cosine), best first.
    pub fn top(
        &self,
        q: &[f32],
        k: usize,
        visibility: &[String],
        tags: &[String],
    ) -> Vec<(i64, f32)> {
        let d = self.read();
        if q.len() != d.dim || d.dim == 0 || k == 0 {
            return Vec::new();
        }
        let allowed = |i: usize| {
            visibility.iter().any(|v| **v == *d.visibility[i])
                && tags.iter().all(|t| d.tags[i].contains(t))
        };
        let mut heap: BinaryHeap<Scored> = BinaryHeap::with_capacity(k + 1);
        for (i, v) in d.vectors.chunks_exact(d.dim).enumerate() {
            let s = dot(v, q);
            if heap.len() == k && heap.peek().is_some_and(|w| s <= w.0) {
                continue;
            }
            if !allowed(i) {
                continue;
            }
            heap.push(Scored(s, i));
            if heap.len() > k {
                heap.pop();
            }
        }
        let mut out: Vec<(i64, f32)> = heap.into_iter().map(|Scored(s, i)| (d.ids[i], s)).collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        out
    }
}

/// Min-heap entry (the worst of the best k on top).
struct Scored(f32, usize);

impl PartialEq for Scored {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scored {
    fn cmp(&self, o: &Self) -> Ordering {
        o.0.total_cmp(&self.0).then(self.1.cmp(&o.1))
    }
}

async fn page(pool: &PgPool, after: i64) -> Result<Vec<IndexRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{INDEX_COLUMNS} AND id > $1 ORDER BY id LIMIT 2000"
    )))
    .bind(after)
    .fetch_all(pool)
    .await
}

impl IndexData {
    fn upsert(&mut self, (id, v, visibility, tags, _): IndexRow) {
        let Some(v) = normalise(v) else { return };
        if self.dim == 0 {
            self.dim = v.len();
        }
        if v.len() != self.dim {
            self.mismatched += 1;
            if self.mismatched == 1 {
                tracing::warn!(
                    chunk = id,
                    dim = v.len(),
                    index_dim = self.dim,
                    "knowledge chunk embedding has another dimension; skipped (was the embedding model changed?)"
                );
            }
            return;
        }
        match self.slots.get(&id) {
            Some(&slot) => {
                self.vectors[slot * self.dim..(slot + 1) * self.dim].copy_from_slice(&v);
                self.visibility[slot] = visibility.into();
                self.tags[slot] = tags.into();
            }
            None => {
                self.slots.insert(id, self.ids.len());
                self.ids.push(id);
                self.vectors.extend_from_slice(&v);
                self.visibility.push(visibility.into());
                self.tags.push(tags.into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_scan_finds_the_nearest_vectors_among_the_allowed() {
        let mut d = IndexData::default();
        d.upsert((1, vec![1.0, 0.0, 0.0], "public".into(), vec![], 0.0));
        d.upsert((
            2,
            vec![0.0, 2.0, 0.0],
            "public".into(),
            vec!["billing".into()],
            0.0,
        ));
        d.upsert((3, vec![1.0, 1.0, 0.0], "internal".into(), vec![], 0.0));
        d.upsert((4, vec![0.0, 0.0], "public".into(), vec![], 0.0)); // other dimension
        d.upsert((5, vec![0.0, 0.0, 0.0], "public".into(), vec![], 0.0)); // zero
        let index = EmbeddingIndex {
            data: RwLock::new(d),
            ..Default::default()
        };
        assert_eq!(index.len(), 3);
        let q = normalise(vec![1.0, 0.9, 0.0]).unwrap();
        let all: Vec<String> = vec!["public".into(), "internal".into()];
        let ids = |v: Vec<(i64, f32)>| v.into_iter().map(|x| x.0).collect::<Vec<_>>();
        assert_eq!(ids(index.top(&q, 10, &all, &[])), [3, 1, 2]);
        assert_eq!(ids(index.top(&q, 2, &all, &[])), [3, 1]);
        assert_eq!(ids(index.top(&q, 10, &["public".into()], &[])), [1, 2]);
        assert_eq!(ids(index.top(&q, 10, &all, &["billing".into()])), [2]);
        assert!((index.cosine(1, &q).unwrap() - 1.0 / 1.81f32.sqrt()).abs() < 1e-6);
        assert_eq!(index.cosine(9, &q), None);
        assert!(index.top(&[1.0, 0.0], 10, &all, &[]).is_empty());
        // An update replaces the vector in place.
        index
            .data
            .write()
            .unwrap()
            .upsert((1, vec![0.0, 0.0, 1.0], "public".into(), vec![], 1.0));
        assert_eq!(ids(index.top(&q, 10, &all, &[])), [3, 2, 1]);
        assert_eq!(index.len(), 3);
    }

    #[test]
    fn dot_products_match_a_plain_sum() {
        let a: Vec<f32> = (0..37).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..37).map(|i| 1.0 - i as f32 * 0.1).collect();
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - plain).abs() < 1e-3);
        assert!(normalise(vec![]).is_none());
        assert!(normalise(vec![0.0, 0.0]).is_none());
        assert!(normalise(vec![f32::NAN]).is_none());
    }
}
