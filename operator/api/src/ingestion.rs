//! `IngestionJob`: one upload of knowledge documents into a tenant's knowledge store.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::common::{DATA_KEY, DNS1123_SUBDOMAIN, SecretRef, impl_has_conditions};

/// Loads documents from a ConfigMap, URLs or an S3-compatible bucket into the tenant's
/// knowledge store, as a `batch/v1` Job running the ingestion worker. The spec is immutable:
/// create a new IngestionJob to ingest again.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "xin.dev",
    version = "v1alpha1",
    kind = "IngestionJob",
    namespaced,
    status = "IngestionJobStatus",
    shortname = "xij",
    category = "xin",
    derive = "PartialEq",
    doc = "An upload of knowledge documents into a tenant's knowledge store, run as a Job.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Documents", type_ = "integer", json_path = ".status.documents"),
    printcolumn(name = "Chunks", type_ = "integer", json_path = ".status.chunks"),
    printcolumn(name = "Failed", type_ = "integer", json_path = ".status.failedDocuments"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.spec == oldSelf.spec").message("an IngestionJob's spec is immutable: create a new IngestionJob to ingest again"),
    validation = Rule::new("!has(self.spec.mode) || self.spec.mode != 'Replace' || (has(self.spec.tags) && size(self.spec.tags) > 0)").message("mode Replace needs tags: it replaces the knowledge with exactly these tags, and without tags it would take every untagged document of the tenant")
)]
#[serde(rename_all = "camelCase")]
pub struct IngestionJobSpec {
    /// Where the documents come from: exactly one of `configMap`, `url` or `s3`.
    pub source: Source,
    /// How documents are split.
    #[serde(default)]
    pub chunking: Chunking,
    /// Tags stored with every chunk (retrieval can filter on them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        inner(
            length(min = 1, max = 63),
            pattern(r"^[a-z0-9]([a-z0-9._\-]*[a-z0-9])?$")
        )
    )]
    pub tags: Vec<String>,
    /// Who may be answered from these documents.
    #[serde(default)]
    pub visibility: Visibility,
    /// `Upsert` adds and updates documents; `Replace` also removes the tenant's chunks from
    /// earlier ingestions with the same tags that this one no longer contains.
    #[serde(default)]
    pub mode: IngestMode,
    /// Retries of the Job's pod before the IngestionJob fails.
    #[serde(default = "default_backoff_limit")]
    #[schemars(range(min = 0, max = 10))]
    pub backoff_limit: i32,
    /// Delete the Job (not the IngestionJob) this long after it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 31536000))]
    pub ttl_seconds_after_finished: Option<i32>,
    /// Which fields of a JSONL record hold its text, title, id and metadata (JSONL documents
    /// only; by default the text is the `text` field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jsonl: Option<JsonlSpec>,
    /// How many documents may fail (unsupported, corrupt, unreachable) before the whole
    /// IngestionJob fails. The documents that did not fail are ingested either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<FailureThreshold>,
}

/// A field of a JSONL record: a top-level key, or a dotted path into nested objects
/// (`meta.lang`).
pub const JSONL_FIELD: &str = r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$";

/// JSONL fields. Each non-blank line of a JSONL document is one record, ingested as its own
/// document.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct JsonlSpec {
    /// The field holding the record's text (a string).
    #[serde(default = "default_text_field")]
    #[schemars(length(min = 1, max = 253), pattern(JSONL_FIELD))]
    pub text_field: String,
    /// The field holding the record's title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(JSONL_FIELD))]
    pub title_field: Option<String>,
    /// The field holding the record's stable id (a string or a number); without it a record
    /// is known by its line number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(JSONL_FIELD))]
    pub id_field: Option<String>,
    /// Fields copied into every chunk's metadata.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        inner(length(min = 1, max = 253), pattern(JSONL_FIELD))
    )]
    pub metadata_fields: Vec<String>,
}

fn default_text_field() -> String {
    "text".into()
}

impl Default for JsonlSpec {
    fn default() -> Self {
        JsonlSpec {
            text_field: default_text_field(),
            title_field: None,
            id_field: None,
            metadata_fields: Vec::new(),
        }
    }
}

/// When failed documents fail the IngestionJob: more than `maxFailedDocuments`, or more than
/// `maxFailedPercent` percent of the documents found. Only the limits given apply; without
/// this field, more than 10 % fails it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.maxFailedDocuments) || has(self.maxFailedPercent)").message("failureThreshold needs maxFailedDocuments, maxFailedPercent or both"))]
pub struct FailureThreshold {
    /// At most this many documents may fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000000))]
    pub max_failed_documents: Option<i32>,
    /// At most this percentage of the documents may fail (100: never fail because of
    /// documents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub max_failed_percent: Option<i32>,
}

impl FailureThreshold {
    /// The default: more than 10 % of the documents.
    pub const DEFAULT_PERCENT: i32 = 10;

    /// Whether `failed` of `found` documents is past the threshold.
    pub fn exceeded(threshold: Option<&FailureThreshold>, failed: u64, found: u64) -> bool {
        let (count, percent) = match threshold {
            Some(t) => (t.max_failed_documents, t.max_failed_percent),
            None => (None, Some(Self::DEFAULT_PERCENT)),
        };
        count.is_some_and(|c| failed > c.max(0) as u64)
            || percent.is_some_and(|p| failed * 100 > p.max(0) as u64 * found)
    }
}

fn default_backoff_limit() -> i32 {
    3
}

/// Document source.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.configMap) ? 1 : 0) + (has(self.url) ? 1 : 0) + (has(self.s3) ? 1 : 0) == 1").message("source needs exactly one of configMap, url or s3"))]
pub struct Source {
    /// Keys of a ConfigMap in the same namespace, one document per key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapSource>,
    /// Documents fetched over HTTP(S).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<UrlSource>,
    /// Objects in an S3-compatible bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Source>,
}

/// ConfigMap source.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapSource {
    /// ConfigMap name.
    #[schemars(length(min = 1, max = 253), pattern(DNS1123_SUBDOMAIN))]
    pub name: String,
    /// Keys to ingest; every key when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 256),
        inner(length(min = 1, max = 253), pattern(DATA_KEY))
    )]
    pub keys: Vec<String>,
}

/// URL source.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct UrlSource {
    /// Document URLs.
    #[schemars(
        length(min = 1, max = 1000),
        inner(length(max = 2048), pattern(r"^https?://[^\s/$.?#][^\s]*$"))
    )]
    pub urls: Vec<String>,
    /// Secret whose keys and values are sent as request headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers_secret_ref: Option<SecretRef>,
}

/// S3-compatible source.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Source {
    /// Endpoint URL of the S3-compatible service.
    #[schemars(length(max = 2048), pattern(r"^https?://[^\s/$.?#][^\s]*$"))]
    pub endpoint: String,
    /// Bucket name.
    #[schemars(length(min = 3, max = 63))]
    pub bucket: String,
    /// Only objects under this prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub prefix: Option<String>,
    /// Region, when the service needs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub region: Option<String>,
    /// Secret with `accessKeyId` and `secretAccessKey`.
    pub credentials_secret_ref: SecretRef,
}

/// Chunking parameters, in characters.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.overlap < self.size").message("chunking.overlap must be smaller than chunking.size"))]
pub struct Chunking {
    /// Target chunk size.
    #[serde(default = "default_chunk_size")]
    #[schemars(range(min = 100, max = 8000))]
    pub size: i32,
    /// Characters shared by consecutive chunks.
    #[serde(default = "default_overlap")]
    #[schemars(range(min = 0, max = 2000))]
    pub overlap: i32,
}

fn default_chunk_size() -> i32 {
    800
}
fn default_overlap() -> i32 {
    100
}

impl Default for Chunking {
    fn default() -> Self {
        Chunking {
            size: default_chunk_size(),
            overlap: default_overlap(),
        }
    }
}

/// Who may be answered from a document.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum Visibility {
    /// Any end user.
    #[default]
    Public,
    /// Only authenticated (identity-verified) end users.
    Internal,
}

/// Ingestion mode.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum IngestMode {
    #[default]
    Upsert,
    Replace,
}

/// Lifecycle phase.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum Phase {
    #[default]
    Pending,
    Running,
    Succeeded,
    Failed,
}

/// A document that could not be ingested.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngestionFailure {
    /// The document (ConfigMap key, URL or object key; a JSONL record as `<document>#<id>`).
    #[schemars(length(max = 2100))]
    pub document: String,
    /// Why it failed, a reason from `docs/ingestion.md` (`UnsupportedFormat`, `CorruptDocument`,
    /// `FetchFailed`, …).
    #[schemars(length(max = 64))]
    pub reason: String,
    /// The detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub message: Option<String>,
}

/// Why the ingestion worker failed a run: `status.worker.reason`.
pub mod worker_reason {
    /// More documents failed than `spec.failureThreshold` allows.
    pub const FAILURE_THRESHOLD_EXCEEDED: &str = "FailureThresholdExceeded";
    /// The source held no document (nothing is replaced by nothing).
    pub const NO_DOCUMENTS: &str = "NoDocuments";
    /// The source could not be listed or read at all (ConfigMap, bucket).
    pub const SOURCE_UNAVAILABLE: &str = "SourceUnavailable";
    /// The worker's configuration is wrong (a setting the operator renders).
    pub const INVALID_CONFIGURATION: &str = "InvalidConfiguration";
    /// The source holds more documents than the worker takes in one run.
    pub const TOO_MANY_DOCUMENTS: &str = "TooManyDocuments";

    pub const ALL: &[&str] = &[
        FAILURE_THRESHOLD_EXCEEDED,
        NO_DOCUMENTS,
        SOURCE_UNAVAILABLE,
        INVALID_CONFIGURATION,
        TOO_MANY_DOCUMENTS,
    ];
}

/// What the ingestion worker reports of its run.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, schemars::JsonSchema,
)]
pub enum WorkerState {
    /// Reading, parsing and writing documents.
    #[default]
    Running,
    /// Every document was handled (some may have failed, within the threshold) and written.
    Succeeded,
    /// The run failed: past the failure threshold, no documents, or the source unreadable.
    Failed,
}

/// The ingestion worker's own report, written under its field manager (`xin-ingest`). The
/// operator reports `Succeeded` or `Failed` only from it: a Job whose pod exited without a
/// report has not ingested anything the operator can vouch for.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerReport {
    /// `Running`, `Succeeded` or `Failed`.
    pub state: WorkerState,
    /// Why it failed (`FailureThresholdExceeded`, `NoDocuments`, `SourceUnavailable`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A sentence for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the worker started this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the worker finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
}

/// Observed state of an IngestionJob. The operator writes the phase, times and conditions from
/// the Job and the worker's report; the ingestion worker writes the counts, failures and its
/// report under its own field manager.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngestionJobStatus {
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling`, `Stalled`, `Complete`, `Failed`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// `Pending`, `Running`, `Succeeded` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Name of the Job that runs the ingestion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// Documents ingested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub documents: Option<i64>,
    /// Chunks written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<i64>,
    /// Documents that failed, with reasons: the first ones only (see `failedDocuments`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub failures: Vec<IngestionFailure>,
    /// How many documents failed in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_documents: Option<i64>,
    /// The worker's report of its run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<WorkerReport>,
    /// When the Job started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the Job finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Seconds from start to completion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<i64>,
}

impl_has_conditions!(IngestionJobStatus);
