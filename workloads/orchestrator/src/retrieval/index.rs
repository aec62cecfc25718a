//! The tenant's chunk embeddings in an approximate nearest-neighbour index: HNSW over
//! int8-quantized, normalised vectors (`usearch`), searched with the visibility and tag filter
//! applied inside the graph walk. PostgreSQL stays the source of truth; the index follows it:
//! - new chunks (by id) every refresh, changed ones (by `updated_at`) every [`CHANGED_EVERY`]
//!   refreshes, and a membership sweep every [`SWEEP`] that reads only ids and removes what
//!   was deleted — rows are added and removed in place, the index is never rebuilt beside
//!   itself, so memory does not double;
//! - with a directory (`RETRIEVAL_INDEX_DIR`, an `emptyDir` in the operator's Deployment),
//!   the index is saved there after its first load and after each sweep that found changes,
//!   and a restarted process restores it and catches up from the database (new, changed and
//!   deleted rows) instead of reading every embedding again.
//!
//! Memory: one byte per dimension plus the graph (about 85 bytes a vector at connectivity 8)
//! and a small row of metadata; `make bench-orchestrator` measures it at 1M × 384-d.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

/// A membership sweep (ids only; removes deleted chunks) at most this often.
pub const SWEEP: Duration = Duration::from_secs(600);
/// Changed (re-embedded) chunks are looked for every this many refreshes; new ones every time.
pub const CHANGED_EVERY: u32 = 6;
/// HNSW connectivity (neighbours per node above the base layer; twice that in it). 8 rather
/// than the usual 16: the graph is then ~85 bytes a vector instead of ~150 (a million 384-d
/// vectors measured 600 MiB resident, of which 366 MiB the int8 vectors); the exact
/// re-scoring of the candidates makes up for the lower recall (0.98 at 1M).
pub const CONNECTIVITY: usize = 8;
/// Candidates kept while inserting.
pub const EXPANSION_ADD: usize = 64;
/// Candidates kept while searching (at least the number asked for).
pub const EXPANSION_SEARCH: usize = 128;
/// Index operations that may run at once (each needs one of the index's search contexts).
const CONTEXTS: usize = 8;
/// Rows read per page.
const PAGE: i64 = 2000;
/// The layout of the saved files; another value is not restored.
const FORMAT: u32 = 1;
/// Seconds of slack on `updated_at`: a transaction may commit rows stamped a little earlier.
const UPDATED_SLACK: f64 = 5.0;

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

/// The tenant's embedded chunks in an HNSW index (see the module's documentation).
pub struct EmbeddingIndex {
    state: RwLock<State>,
    /// Bounds concurrent index operations to the contexts the index reserved.
    gate: Gate,
    refresh: tokio::sync::Mutex<RefreshState>,
    /// Where the index is saved and restored from, when set.
    dir: Option<PathBuf>,
    /// The embedding model: a saved index of another model is not restored.
    model: String,
    loaded: AtomicBool,
}

#[derive(Default)]
struct State {
    /// Created with the first vector, whose length fixes the dimension.
    hnsw: Option<Index>,
    dim: usize,
    /// Every chunk in the index, with its filter attributes. Search admits only keys found
    /// here, so a key left in the graph by an interrupted save is never returned.
    rows: HashMap<u64, Row>,
    visibilities: Interned<Box<str>>,
    tag_sets: Interned<Box<[String]>>,
    /// Rows skipped because their dimension differs from the index's.
    mismatched: usize,
}

#[derive(Clone, Copy)]
struct Row {
    visibility: u32,
    tags: u32,
}

/// Distinct values (visibilities, tag sets) stored once and referred to by number.
struct Interned<T> {
    values: Vec<T>,
    ids: HashMap<T, u32>,
}

impl<T> Default for Interned<T> {
    fn default() -> Self {
        Interned {
            values: Vec::new(),
            ids: HashMap::new(),
        }
    }
}

impl<T: std::hash::Hash + Eq + Clone> Interned<T> {
    fn id(&mut self, v: T) -> u32 {
        if let Some(&id) = self.ids.get(&v) {
            return id;
        }
        let id = self.values.len() as u32;
        self.values.push(v.clone());
        self.ids.insert(v, id);
        id
    }
}

#[derive(Default)]
struct RefreshState {
    initialised: bool,
    max_id: i64,
    max_updated: f64,
    last_sweep: Option<Instant>,
    count: u32,
    /// Changed since the last save.
    dirty: bool,
    /// Saved (or found nothing to save) since the first load.
    saved_once: bool,
}

/// What is saved beside the index file.
#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct Saved {
    format: u32,
    model: String,
    dim: usize,
    count: usize,
    max_id: i64,
    max_updated: f64,
}

type IndexRow = (i64, Vec<f32>, String, Vec<String>, f64);
type MetaRow = (i64, String, Vec<String>, f64);

/// The columns of an [`IndexRow`] for every embedded chunk (no NULL element); callers add
/// `AND …`.
const INDEX_ROWS: &str =
    "SELECT id, embedding, visibility, tags, extract(epoch FROM updated_at)::float8
     FROM knowledge_chunks WHERE embedding IS NOT NULL AND array_position(embedding, NULL) IS NULL";

/// A counting semaphore for blocking threads.
struct Gate {
    free: Mutex<usize>,
    freed: Condvar,
}

impl Gate {
    fn new(n: usize) -> Self {
        Gate {
            free: Mutex::new(n),
            freed: Condvar::new(),
        }
    }

    fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
        drop(free);
        struct Release<'a>(&'a Gate);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                *self.0.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
                self.0.freed.notify_one();
            }
        }
        let _release = Release(self);
        f()
    }
}

impl Default for EmbeddingIndex {
    fn default() -> Self {
        EmbeddingIndex::new(None, "")
    }
}

impl EmbeddingIndex {
    /// An empty index; `dir` is where it is saved and restored from, `model` the embedding
    /// model (a saved index of another model is rebuilt).
    pub fn new(dir: Option<PathBuf>, model: &str) -> Self {
        EmbeddingIndex {
            state: RwLock::default(),
            gate: Gate::new(CONTEXTS),
            refresh: tokio::sync::Mutex::default(),
            dir,
            model: model.into(),
            loaded: AtomicBool::new(false),
        }
    }

    pub fn len(&self) -> usize {
        self.read().rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dim(&self) -> usize {
        self.read().dim
    }

    /// Whether the refresher's first load (or restore) has finished.
    pub fn loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Bytes the HNSW index holds (vectors and graph), as the index reports them.
    pub fn memory_usage(&self) -> usize {
        self.read().hnsw.as_ref().map_or(0, |h| h.memory_usage())
    }

    /// Where the index's memory goes, in MiB: (vectors, graph, their allocators' reserve and
    /// waste, the filter attributes' map), the first three as the index reports them.
    pub fn memory_breakdown(&self) -> (f64, f64, f64, f64) {
        let st = self.read();
        let mib = |b: usize| b as f64 / (1 << 20) as f64;
        // A hashbrown table: a power-of-two number of buckets at most 7/8 full, each holding
        // an entry and a control byte.
        let rows = (st.rows.capacity() * 8 / 7).next_power_of_two()
            * (std::mem::size_of::<(u64, Row)>() + 1);
        let Some(h) = &st.hnsw else {
            return (0.0, 0.0, 0.0, mib(rows));
        };
        let m = h.memory_stats();
        (
            mib(m.vectors_allocated - m.vectors_reserved - m.vectors_wasted),
            mib(m.graph_allocated - m.graph_reserved - m.graph_wasted),
            mib(m.vectors_reserved + m.vectors_wasted + m.graph_reserved + m.graph_wasted),
            mib(rows),
        )
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Brings the index up to date with the database; returns how many rows with an
    /// embedding were read. The first call restores the saved index (when there is one) or
    /// reads every embedding; the next one saves it (with a directory).
    pub async fn refresh(self: &Arc<Self>, pool: &PgPool) -> Result<usize, sqlx::Error> {
        let mut st = self.refresh.lock().await;
        if !st.initialised {
            let restored = match self.restore(pool, &mut st).await {
                Ok(r) => r,
                Err(RestoreError::Db(e)) => return Err(e),
                Err(RestoreError::Unusable(why)) => {
                    if self.dir.is_some() {
                        tracing::info!(reason = %why, "no saved embedding index to restore; reading every embedding");
                    }
                    None
                }
            };
            let read = match restored {
                Some(read) => read,
                None => self.load_all(pool, &mut st).await?,
            };
            st.initialised = true;
            st.last_sweep = Some(Instant::now());
            // Saved by the next refresh: the first load is not held up by writing it.
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
            self.apply(&mut st, rows).await;
        }
        if st.count.is_multiple_of(CHANGED_EVERY) {
            let rows: Vec<IndexRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "{INDEX_ROWS} AND updated_at > to_timestamp($1) AND id <= $2"
            )))
            .bind(st.max_updated - UPDATED_SLACK)
            .bind(st.max_id)
            .fetch_all(pool)
            .await?;
            read += rows.len();
            self.apply(&mut st, rows).await;
        }
        if st.last_sweep.is_none_or(|t| t.elapsed() >= SWEEP) {
            let present = embedded_ids(pool).await?;
            let gone = self.remove_absent(&present);
            if gone > 0 {
                st.dirty = true;
                tracing::info!(removed = gone, "embedding index: deleted chunks removed");
            }
            st.last_sweep = Some(Instant::now());
            self.save(&mut st).await;
        } else if !st.saved_once {
            self.save(&mut st).await;
        }
        Ok(read)
    }

    /// Reads every embedded row into the index.
    async fn load_all(
        self: &Arc<Self>,
        pool: &PgPool,
        st: &mut RefreshState,
    ) -> Result<usize, sqlx::Error> {
        let started = Instant::now();
        let mut read = 0;
        let mut after = 0;
        loop {
            let rows = page(pool, after).await?;
            let Some(last) = rows.last() else { break };
            after = last.0;
            read += rows.len();
            self.apply(st, rows).await;
        }
        tracing::info!(
            chunks = self.len(),
            seconds = started.elapsed().as_secs_f64(),
            "embedding index built"
        );
        Ok(read)
    }

    /// Removes from the index the chunks not in `present` (sorted ids); returns how many.
    fn remove_absent(&self, present: &[i64]) -> usize {
        let mut st = self.write();
        let gone: Vec<u64> = st
            .rows
            .keys()
            .copied()
            .filter(|k| present.binary_search(&(*k as i64)).is_err())
            .collect();
        for k in &gone {
            st.rows.remove(k);
            if let Some(h) = &st.hnsw {
                let _ = h.remove(*k);
            }
        }
        gone.len()
    }

    /// Adds or replaces `rows` (advancing the watermarks); the vectors go in on blocking
    /// threads, in parallel for large batches.
    async fn apply(self: &Arc<Self>, st: &mut RefreshState, rows: Vec<IndexRow>) {
        if rows.is_empty() {
            return;
        }
        let mut batch = Vec::with_capacity(rows.len());
        for (id, v, visibility, tags, updated) in rows {
            st.max_id = st.max_id.max(id);
            st.max_updated = st.max_updated.max(updated);
            if let Some(v) = normalise(v) {
                batch.push((id as u64, v, visibility, tags));
            }
        }
        st.dirty = true;
        let me = self.clone();
        // Large batches take a while: off the async threads.
        let _ = tokio::task::spawn_blocking(move || me.apply_blocking(batch)).await;
    }
}

/// Why a saved index was not restored.
enum RestoreError {
    /// Nothing usable saved (or no directory): read every embedding instead.
    Unusable(String),
    Db(sqlx::Error),
}

impl From<sqlx::Error> for RestoreError {
    fn from(e: sqlx::Error) -> Self {
        RestoreError::Db(e)
    }
}

const INDEX_FILE: &str = "embeddings.usearch";
const KEYS_FILE: &str = "embeddings.keys";
const STATE_FILE: &str = "embeddings.json";

fn new_hnsw(dim: usize) -> Result<Index, String> {
    let h = Index::new(&IndexOptions {
        dimensions: dim,
        metric: MetricKind::Cos,
        quantization: ScalarKind::I8,
        connectivity: CONNECTIVITY,
        expansion_add: EXPANSION_ADD,
        expansion_search: EXPANSION_SEARCH,
        multi: false,
    })
    .map_err(|e| e.to_string())?;
    h.reserve_capacity_and_threads(1024, CONTEXTS)
        .map_err(|e| e.to_string())?;
    Ok(h)
}

impl EmbeddingIndex {
    /// Adds or replaces a batch (already normalised).
    fn apply_blocking(&self, batch: Vec<(u64, Vec<f32>, String, Vec<String>)>) {
        // Create the index, drop replaced vectors and make room: exclusive, and quick.
        let batch = {
            let mut st = self.write();
            if st.dim == 0 {
                st.dim = batch.first().map_or(0, |b| b.1.len());
            }
            let dim = st.dim;
            let mut keep = Vec::with_capacity(batch.len());
            for b in batch {
                if b.1.len() == dim {
                    keep.push(b);
                    continue;
                }
                st.mismatched += 1;
                if st.mismatched == 1 {
                    tracing::warn!(
                        chunk = b.0,
                        dim = b.1.len(),
                        index_dim = dim,
                        "knowledge chunk embedding has another dimension; skipped (was the embedding model changed?)"
                    );
                }
                // A chunk re-embedded with another dimension leaves the index.
                if st.rows.remove(&b.0).is_some()
                    && let Some(h) = &st.hnsw
                {
                    let _ = h.remove(b.0);
                }
            }
            if keep.is_empty() {
                return;
            }
            if st.hnsw.is_none() {
                match new_hnsw(dim) {
                    Ok(h) => st.hnsw = Some(h),
                    Err(e) => {
                        tracing::error!(error = %e, "embedding index could not be created");
                        return;
                    }
                }
            }
            let st = &*st;
            let h = st.hnsw.as_ref().expect("created above");
            // Replaced vectors go first (a restored index may hold a key its rows do not).
            for b in &keep {
                if h.contains(b.0) {
                    let _ = h.remove(b.0);
                }
            }
            let need = h.size() + keep.len();
            if need > h.capacity() {
                let grown = need.max(h.capacity() * 2).max(1024);
                if let Err(e) = h.reserve_capacity_and_threads(grown, CONTEXTS) {
                    tracing::error!(error = %e, capacity = grown, "embedding index could not grow");
                    return;
                }
            }
            keep
        };
        // Insert: shared, so searches go on meanwhile; in parallel for large batches.
        let added: Vec<bool> = {
            let st = self.read();
            let h = st.hnsw.as_ref().expect("created above");
            let threads = if batch.len() >= 256 {
                std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
            } else {
                1
            };
            let per = batch.len().div_ceil(threads);
            let gate = &self.gate;
            std::thread::scope(|s| {
                let parts: Vec<_> = batch
                    .chunks(per)
                    .map(|part| {
                        s.spawn(move || {
                            part.iter()
                                .map(|(k, v, ..)| match gate.run(|| h.add(*k, v)) {
                                    Ok(()) => true,
                                    Err(e) => {
                                        tracing::warn!(chunk = k, error = %e, "chunk not added to the embedding index");
                                        false
                                    }
                                })
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                parts
                    .into_iter()
                    .flat_map(|p| p.join().unwrap_or_default())
                    .collect()
            })
        };
        // The filter attributes: exclusive, and quick.
        let mut st = self.write();
        for ((k, _, visibility, tags), ok) in batch.into_iter().zip(added) {
            if !ok {
                st.rows.remove(&k);
                continue;
            }
            let row = Row {
                visibility: st.visibilities.id(visibility.into()),
                tags: st.tag_sets.id(tags.into()),
            };
            st.rows.insert(k, row);
        }
    }

    /// The saved index, caught up with the database; `None` when there is none to restore.
    async fn restore(
        self: &Arc<Self>,
        pool: &PgPool,
        st: &mut RefreshState,
    ) -> Result<Option<usize>, RestoreError> {
        let Some(dir) = self.dir.clone() else {
            return Err(RestoreError::Unusable("no index directory".into()));
        };
        let started = Instant::now();
        let model = self.model.clone();
        let (hnsw, keys, saved) = tokio::task::spawn_blocking(move || read_saved(&dir, &model))
            .await
            .map_err(|e| RestoreError::Unusable(e.to_string()))?
            .map_err(RestoreError::Unusable)?;
        let loaded_in = started.elapsed();
        // Which saved rows still stand: ids and attributes only. `embedding IS NOT NULL` is
        // read from the row header; the full test (no NULL element) would read every
        // embedding. A row failing it was never saved, so it is "stale" below and the full
        // test applies when it is fetched.
        let mut rows = HashMap::with_capacity(keys.len());
        let mut interned = (Interned::default(), Interned::default());
        let mut stale = Vec::new();
        let mut present = Vec::with_capacity(keys.len());
        let (mut max_id, mut max_updated) = (saved.max_id, saved.max_updated);
        let mut after = 0i64;
        loop {
            let page: Vec<MetaRow> = sqlx::query_as(
                "SELECT id, visibility, tags, extract(epoch FROM updated_at)::float8
                 FROM knowledge_chunks WHERE embedding IS NOT NULL AND id > $1 ORDER BY id LIMIT 20000",
            )
            .bind(after)
            .fetch_all(pool)
            .await?;
            let Some(last) = page.last() else { break };
            after = last.0;
            for (id, visibility, tags, updated) in page {
                present.push(id);
                max_id = max_id.max(id);
                max_updated = max_updated.max(updated);
                let unchanged = id <= saved.max_id
                    && updated <= saved.max_updated - UPDATED_SLACK
                    && keys.binary_search(&(id as u64)).is_ok();
                if !unchanged {
                    stale.push(id);
                    continue;
                }
                let row = Row {
                    visibility: interned.0.id(visibility.into_boxed_str()),
                    tags: interned.1.id(tags.into_boxed_slice()),
                };
                rows.insert(id as u64, row);
            }
        }
        let mut gone = 0;
        for k in &keys {
            if present.binary_search(&(*k as i64)).is_err() {
                let _ = hnsw.remove(*k);
                gone += 1;
            }
        }
        drop(present);
        drop(keys);
        {
            let mut s = self.write();
            s.dim = saved.dim;
            s.hnsw = Some(hnsw);
            s.rows = rows;
            (s.visibilities, s.tag_sets) = interned;
        }
        // Changed and new rows: their embeddings, by id.
        let mut read = 0;
        for ids in stale.chunks(PAGE as usize) {
            let rows: Vec<IndexRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "{INDEX_ROWS} AND id = ANY($1)"
            )))
            .bind(ids)
            .fetch_all(pool)
            .await?;
            read += rows.len();
            self.apply(st, rows).await;
        }
        st.max_id = st.max_id.max(max_id);
        st.max_updated = st.max_updated.max(max_updated);
        st.dirty = read > 0 || gone > 0;
        tracing::info!(
            chunks = self.len(),
            caught_up = read,
            removed = gone,
            seconds = started.elapsed().as_secs_f64(),
            file_seconds = loaded_in.as_secs_f64(),
            "embedding index restored"
        );
        Ok(Some(read))
    }

    /// Saves the index to its directory when it changed since the last save. A failure is
    /// logged (the index in memory still serves) and retried after the next sweep.
    async fn save(self: &Arc<Self>, st: &mut RefreshState) {
        let Some(dir) = self.dir.clone() else { return };
        if !st.dirty {
            st.saved_once = true;
            return;
        }
        let me = self.clone();
        let (max_id, max_updated) = (st.max_id, st.max_updated);
        let started = Instant::now();
        let r = tokio::task::spawn_blocking(move || me.save_blocking(&dir, max_id, max_updated))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r);
        match r {
            Ok(count) => {
                st.dirty = false;
                st.saved_once = true;
                tracing::info!(
                    chunks = count,
                    seconds = started.elapsed().as_secs_f64(),
                    "embedding index saved"
                );
            }
            Err(e) => {
                // Tried again after the next sweep, not on every refresh.
                st.saved_once = true;
                tracing::warn!(error = %e, "embedding index not saved; it still serves from memory")
            }
        }
    }

    fn save_blocking(&self, dir: &Path, max_id: i64, max_updated: f64) -> Result<usize, String> {
        let st = self.read();
        let Some(h) = &st.hnsw else {
            return Ok(0);
        };
        let path = |name: &str| dir.join(name);
        let tmp = |name: &str| dir.join(format!("{name}.tmp"));
        let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
        std::fs::create_dir_all(dir).map_err(|e| io("creating the directory", e))?;
        // Without its state file nothing is restored: it goes first and comes back last.
        match std::fs::remove_file(path(STATE_FILE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io("removing the old state", e));
            }
            _ => {}
        }
        let index_tmp = tmp(INDEX_FILE);
        h.save(&index_tmp.to_string_lossy())
            .map_err(|e| format!("writing the index: {e}"))?;
        let mut keys: Vec<u64> = st.rows.keys().copied().collect();
        keys.sort_unstable();
        let bytes: Vec<u8> = keys.iter().flat_map(|k| k.to_le_bytes()).collect();
        std::fs::write(tmp(KEYS_FILE), bytes).map_err(|e| io("writing the keys", e))?;
        let saved = Saved {
            format: FORMAT,
            model: self.model.clone(),
            dim: st.dim,
            count: h.size(),
            max_id,
            max_updated,
        };
        let json = serde_json::to_vec(&saved).map_err(|e| e.to_string())?;
        std::fs::write(tmp(STATE_FILE), json).map_err(|e| io("writing the state", e))?;
        for name in [INDEX_FILE, KEYS_FILE, STATE_FILE] {
            std::fs::rename(tmp(name), path(name)).map_err(|e| io("renaming", e))?;
        }
        Ok(keys.len())
    }

    /// Refreshes now (the first load) and then every `every` until the index is dropped;
    /// errors are logged and retried. `after` runs after each refresh (metrics).
    pub fn spawn_refresher(
        self: &Arc<Self>,
        pool: PgPool,
        every: Duration,
        after: impl Fn(&EmbeddingIndex) + Send + 'static,
    ) {
        let index = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(index) = index.upgrade() else { return };
                let first = !index.loaded();
                match index.refresh(&pool).await {
                    Ok(n) if first => {
                        tracing::info!(chunks = n, dim = index.dim(), "embedding index loaded")
                    }
                    Ok(_) => {}
                    Err(e) if first => tracing::warn!(
                        error = %e,
                        "embedding index not loaded yet; retrieval is lexical until it is"
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, "embedding index refresh failed; retrying")
                    }
                }
                after(&index);
                if first && index.refresh.lock().await.initialised {
                    index.loaded.store(true, Ordering::Release);
                }
                drop(index);
                tokio::time::sleep(every).await;
            }
        });
    }

    /// The `k` chunks most similar to the normalised `q` among those with one of the
    /// `visibility` values and all of `tags`: (id, cosine), best first. Approximate: the
    /// graph walk keeps [`EXPANSION_SEARCH`] candidates.
    pub fn top(
        &self,
        q: &[f32],
        k: usize,
        visibility: &[String],
        tags: &[String],
    ) -> Vec<(i64, f32)> {
        let st = self.read();
        let Some(h) = &st.hnsw else {
            return Vec::new();
        };
        if q.len() != st.dim || k == 0 || st.rows.is_empty() {
            return Vec::new();
        }
        let visible: Vec<bool> = (st.visibilities.values.iter())
            .map(|v| visibility.iter().any(|a| **a == **v))
            .collect();
        let tagged: Vec<bool> = (st.tag_sets.values.iter())
            .map(|set| tags.iter().all(|t| set.contains(t)))
            .collect();
        let rows = &st.rows;
        let found = self.gate.run(|| {
            h.filtered_search(q, k, |key| {
                rows.get(&key)
                    .is_some_and(|r| visible[r.visibility as usize] && tagged[r.tags as usize])
            })
        });
        let m = match found {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "embedding index search failed");
                return Vec::new();
            }
        };
        let mut out: Vec<(i64, f32)> = (m.keys.iter().zip(&m.distances))
            .map(|(k, d)| (*k as i64, 1.0 - d))
            .collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        out
    }
}

/// Reads the saved index, its sorted keys and state; an error says why it is not usable.
fn read_saved(dir: &Path, model: &str) -> Result<(Index, Vec<u64>, Saved), String> {
    let state = std::fs::read(dir.join(STATE_FILE)).map_err(|e| format!("state: {e}"))?;
    let saved: Saved = serde_json::from_slice(&state).map_err(|e| format!("state: {e}"))?;
    if saved.format != FORMAT {
        return Err(format!("saved in format {}, not {FORMAT}", saved.format));
    }
    if saved.model != model {
        return Err("saved for another embedding model".into());
    }
    let bytes = std::fs::read(dir.join(KEYS_FILE)).map_err(|e| format!("keys: {e}"))?;
    if bytes.len() % 8 != 0 {
        return Err("keys file is truncated".into());
    }
    let keys: Vec<u64> = bytes
        .chunks_exact(8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .collect();
    if !keys.is_sorted() {
        return Err("keys file is not sorted".into());
    }
    let index = Index::restore(&dir.join(INDEX_FILE).to_string_lossy())
        .map_err(|e| format!("index: {e}"))?;
    if index.size() != saved.count || index.dimensions() != saved.dim {
        return Err(format!(
            "index holds {} vectors of {} dimensions, the state says {} of {}",
            index.size(),
            index.dimensions(),
            saved.count,
            saved.dim
        ));
    }
    index
        .reserve_capacity_and_threads(index.size().max(1024), CONTEXTS)
        .map_err(|e| format!("index: {e}"))?;
    index.change_expansion_search(EXPANSION_SEARCH);
    index.change_expansion_add(EXPANSION_ADD);
    Ok((index, keys, saved))
}

async fn page(pool: &PgPool, after: i64) -> Result<Vec<IndexRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{INDEX_ROWS} AND id > $1 ORDER BY id LIMIT {PAGE}"
    )))
    .bind(after)
    .fetch_all(pool)
    .await
}

/// The ids of every chunk with an embedding, sorted (from the row headers: no embedding is
/// read).
async fn embedded_ids(pool: &PgPool) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM knowledge_chunks WHERE embedding IS NOT NULL ORDER BY id")
        .fetch_all(pool)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, v: &[f32], visibility: &str, tags: &[&str]) -> IndexRow {
        let tags = tags.iter().map(|t| t.to_string()).collect();
        (id, v.to_vec(), visibility.into(), tags, 0.0)
    }

    #[tokio::test]
    async fn the_index_finds_the_nearest_vectors_among_the_allowed() {
        let index = Arc::new(EmbeddingIndex::default());
        let mut st = RefreshState::default();
        index
            .apply(
                &mut st,
                vec![
                    row(1, &[1.0, 0.0, 0.0], "public", &[]),
                    row(2, &[0.0, 2.0, 0.0], "public", &["billing"]),
                    row(3, &[1.0, 1.0, 0.0], "internal", &[]),
                    row(4, &[0.0, 0.0], "public", &[]), // another dimension
                    row(5, &[0.0, 0.0, 0.0], "public", &[]), // zero
                ],
            )
            .await;
        assert_eq!((index.len(), index.dim()), (3, 3));
        assert_eq!(st.max_id, 5);
        let q = normalise(vec![1.0, 0.9, 0.0]).unwrap();
        let all: Vec<String> = vec!["public".into(), "internal".into()];
        let ids = |v: Vec<(i64, f32)>| v.into_iter().map(|x| x.0).collect::<Vec<_>>();
        assert_eq!(ids(index.top(&q, 10, &all, &[])), [3, 1, 2]);
        assert_eq!(ids(index.top(&q, 2, &all, &[])), [3, 1]);
        assert_eq!(ids(index.top(&q, 10, &["public".into()], &[])), [1, 2]);
        assert_eq!(ids(index.top(&q, 10, &all, &["billing".into()])), [2]);
        assert!(index.top(&q, 10, &["secret".into()], &[]).is_empty());
        // Scores are cosines from int8 vectors: within a percent.
        assert!(
            (index.top(&q, 1, &all, &[])[0].1 - (1.9 / 1.81f32.sqrt() / 2f32.sqrt())).abs() < 0.01
        );
        assert!(index.top(&[1.0, 0.0], 10, &all, &[]).is_empty());
        // An update replaces the vector and the attributes in place.
        index
            .apply(
                &mut st,
                vec![row(1, &[0.0, 0.0, 1.0], "public", &["billing"])],
            )
            .await;
        assert_eq!(ids(index.top(&q, 10, &all, &[])), [3, 2, 1]);
        assert_eq!(ids(index.top(&q, 10, &all, &["billing".into()])), [2, 1]);
        assert_eq!(index.len(), 3);
        // Removal of what the database no longer has.
        assert_eq!(index.remove_absent(&[2, 3]), 1);
        assert_eq!(ids(index.top(&q, 10, &all, &[])), [3, 2]);
    }

    #[tokio::test]
    async fn thousands_of_vectors_are_found_again_and_the_filter_holds() {
        let index = Arc::new(EmbeddingIndex::default());
        let mut st = RefreshState::default();
        // Deterministic pseudo-random vectors (an LCG): no two alike.
        let mut x = 12345u64;
        let mut next = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let rows: Vec<IndexRow> = (1..=3000)
            .map(|i| {
                let v: Vec<f32> = (0..32).map(|_| next()).collect();
                row(i, &v, if i % 3 == 0 { "internal" } else { "public" }, &[])
            })
            .collect();
        let vectors: Vec<(i64, Vec<f32>)> = rows.iter().map(|r| (r.0, r.1.clone())).collect();
        index.apply(&mut st, rows).await;
        assert_eq!(index.len(), 3000);
        let public = vec!["public".to_string()];
        for (id, v) in vectors.iter().step_by(97) {
            let q = normalise(v.clone()).unwrap();
            let got = index.top(&q, 5, &public, &[]);
            assert!(
                got.iter().all(|(i, _)| i % 3 != 0),
                "internal chunk returned: {got:?}"
            );
            if id % 3 != 0 {
                assert_eq!(got[0].0, *id, "a vector is its own nearest neighbour");
                assert!(got[0].1 > 0.98, "{got:?}");
            }
        }
    }

    #[tokio::test]
    async fn a_saved_index_is_restored_only_for_its_model_and_format() {
        let dir = std::env::temp_dir().join(format!("xin-index-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let index = Arc::new(EmbeddingIndex::new(Some(dir.clone()), "m1"));
        let mut st = RefreshState::default();
        index
            .apply(
                &mut st,
                vec![
                    row(7, &[1.0, 0.0], "public", &[]),
                    row(9, &[0.0, 1.0], "public", &["x"]),
                ],
            )
            .await;
        index.save(&mut st).await;
        assert!(!st.dirty, "saved");
        let (h, keys, saved) = read_saved(&dir, "m1").unwrap();
        assert_eq!(
            (h.size(), keys, saved.max_id, saved.dim),
            (2, vec![7, 9], 9, 2)
        );
        let why = |model: &str| read_saved(&dir, model).err().unwrap_or_default();
        assert!(why("m2").contains("another embedding model"));
        std::fs::write(dir.join(KEYS_FILE), [1u8, 2, 3]).unwrap();
        assert!(why("m1").contains("truncated"));
        std::fs::remove_file(dir.join(STATE_FILE)).unwrap();
        assert!(why("m1").contains("state"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
