//! Where documents come from: a ConfigMap's keys (read through the API with the Job's service
//! account), HTTP(S) URLs (through the outbound client: destination checks, size limit,
//! bounded redirects, one deadline), or the objects under a prefix of an S3-compatible bucket
//! (Apache Arrow's `object_store`, its connections resolved through the same destination
//! checks). A directory of files stands in for a mounted ConfigMap in benchmarks and local runs.
//!
//! Listing fails the whole run (`SourceUnavailable`); reading one document fails only that
//! document, with a reason (`docs/ingestion.md`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use object_store::{ObjectStore, ObjectStoreExt};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use xin_api::ingestion::Source as SourceSpec;
use xin_runtime::outbound::{Limits, Outbound, OutboundError};

/// One document to read.
#[derive(Clone, PartialEq, Eq)]
pub struct DocRef {
    /// Stable id in the knowledge store: never a secret (a URL's userinfo, query and fragment
    /// are replaced by a digest).
    pub id: String,
    /// The URL to fetch, which may hold credentials: never logged, stored or shown.
    pub url: Option<String>,
    /// For people: the ConfigMap key, URL or object key (the document in `status.failures`).
    pub name: String,
    /// What the format is detected from (a key, an object key, a URL's path).
    pub file_name: String,
    /// Size when the listing tells.
    pub size: Option<u64>,
}

// The URL may carry credentials.
impl std::fmt::Debug for DocRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocRef")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// A URL's document id: the URL itself when it has no userinfo, query or fragment; else the
/// URL cut to `scheme://host[:port]/path` and `~` with 16 hex digits of the whole URL's
/// SHA-256 (two URLs that differ only in their query stay two documents, and a token in a
/// query never reaches the store, the prompt or the status).
pub fn url_id(url: &str) -> String {
    let redacted = xin_runtime::outbound::redact_url(url);
    if redacted == url {
        return redacted;
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(url.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{redacted}~{hex}")
}

/// A document's bytes.
#[derive(Clone, Debug)]
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub content_type: Option<String>,
}

/// Why a document could not be read: a reason for `status.failures` and a detail.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("larger than {limit} bytes (INGEST_MAX_DOCUMENT_BYTES)")]
    TooLarge { limit: usize },
    #[error("{0}")]
    NotAllowed(String),
    #[error("not found")]
    NotFound,
    /// Worth another try: a connection, a timeout, a 5xx or 429.
    #[error("{0}")]
    Failed(String),
    /// Another try would get the same answer (a 401, 403 or other 4xx).
    #[error("{0}")]
    Refused(String),
}

impl FetchError {
    pub fn reason(&self) -> &'static str {
        match self {
            FetchError::TooLarge { .. } => "TooLarge",
            FetchError::NotAllowed(_) => "DestinationNotAllowed",
            FetchError::NotFound => "NotFound",
            FetchError::Failed(_) | FetchError::Refused(_) => "FetchFailed",
        }
    }
}

/// The source could not be opened or listed: the run fails (and the Job retries it).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub String);

enum Kind {
    /// The ConfigMap's name; keys and values, `None` for a key the spec names that the
    /// ConfigMap lacks.
    ConfigMap(String, BTreeMap<String, Option<Vec<u8>>>),
    Urls {
        urls: Vec<String>,
        headers: HeaderMap,
        client: Outbound,
    },
    S3 {
        store: Arc<dyn ObjectStore>,
        bucket: String,
        prefix: String,
    },
    Dir(PathBuf),
}

/// An opened source.
pub struct Source {
    kind: Kind,
    max_bytes: usize,
}

/// What opening a source needs.
pub struct Open<'a> {
    pub spec: &'a SourceSpec,
    pub namespace: &'a str,
    pub kube: Option<kube::Client>,
    pub outbound: &'a Outbound,
    pub headers_dir: Option<&'a std::path::Path>,
    pub s3_keys: Option<(String, String)>,
    pub max_bytes: usize,
    pub timeout: Duration,
}

impl Source {
    /// A directory's regular files, one document each (benchmarks, local runs).
    pub fn dir(path: PathBuf, max_bytes: usize) -> Self {
        Source {
            kind: Kind::Dir(path),
            max_bytes,
        }
    }

    pub async fn open(o: Open<'_>) -> Result<Self, SourceError> {
        let kind = if let Some(cm) = &o.spec.config_map {
            let client = o
                .kube
                .ok_or_else(|| SourceError("no Kubernetes client to read the ConfigMap".into()))?;
            let api: Api<ConfigMap> = Api::namespaced(client, o.namespace);
            let found = api.get_opt(&cm.name).await.map_err(|e| {
                SourceError(format!(
                    "cannot read ConfigMap {}/{}: {e}",
                    o.namespace, cm.name
                ))
            })?;
            let found = found.ok_or_else(|| {
                SourceError(format!("ConfigMap {}/{} not found", o.namespace, cm.name))
            })?;
            let mut data: BTreeMap<String, Option<Vec<u8>>> = found
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, Some(v.into_bytes())))
                .collect();
            for (k, v) in found.binary_data.unwrap_or_default() {
                data.insert(k, Some(v.0));
            }
            if !cm.keys.is_empty() {
                // A named key that is missing is a failed document, not a silent skip.
                data.retain(|k, _| cm.keys.contains(k));
                for k in &cm.keys {
                    data.entry(k.clone()).or_insert(None);
                }
            }
            Kind::ConfigMap(cm.name.clone(), data)
        } else if let Some(u) = &o.spec.url {
            let headers = match (&u.headers_secret_ref, o.headers_dir) {
                (Some(r), Some(dir)) => read_headers(dir).map_err(|e| {
                    SourceError(format!(
                        "headers Secret {} (INGEST_HEADERS_DIR): {e}",
                        r.name
                    ))
                })?,
                (Some(r), None) => {
                    return Err(SourceError(format!(
                        "the source names headers Secret {} but INGEST_HEADERS_DIR is not set",
                        r.name
                    )));
                }
                _ => HeaderMap::new(),
            };
            let client = o.outbound.with_limits(Limits {
                timeout: o.timeout,
                max_response_bytes: o.max_bytes,
                max_redirects: 5,
            });
            Kind::Urls {
                urls: u.urls.clone(),
                headers,
                client,
            }
        } else if let Some(s3) = &o.spec.s3 {
            let (key, secret) = o.s3_keys.ok_or_else(|| {
                SourceError(
                    "INGEST_S3_ACCESS_KEY_ID and INGEST_S3_SECRET_ACCESS_KEY are required for an S3 source"
                        .into(),
                )
            })?;
            o.outbound
                .check_url(&s3.endpoint)
                .map_err(|e| SourceError(format!("spec.source.s3.endpoint: {e}")))?;
            let client = o.outbound.checked_client(o.timeout).map_err(SourceError)?;
            let store = object_store::aws::AmazonS3Builder::new()
                .with_endpoint(s3.endpoint.trim_end_matches('/'))
                .with_bucket_name(&s3.bucket)
                .with_region(s3.region.clone().unwrap_or_else(|| "us-east-1".into()))
                .with_access_key_id(key)
                .with_secret_access_key(secret)
                .with_allow_http(s3.endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false)
                .with_http_connector(Connector(client))
                .with_retry(object_store::RetryConfig {
                    max_retries: 4,
                    retry_timeout: o.timeout,
                    ..object_store::RetryConfig::default()
                })
                .build()
                .map_err(|e| SourceError(format!("spec.source.s3: {e}")))?;
            Kind::S3 {
                store: Arc::new(store),
                bucket: s3.bucket.clone(),
                prefix: s3.prefix.clone().unwrap_or_default(),
            }
        } else {
            return Err(SourceError(
                "the spec names no source (configMap, url or s3)".into(),
            ));
        };
        Ok(Source {
            kind,
            max_bytes: o.max_bytes,
        })
    }

    /// The documents, in a stable order; at most `max + 1` (the caller refuses more than
    /// `max`).
    pub async fn list(&self, max: usize) -> Result<Vec<DocRef>, SourceError> {
        match &self.kind {
            Kind::ConfigMap(cm, data) => Ok(data
                .keys()
                .map(|k| DocRef {
                    url: None,
                    id: format!("configmap:{cm}/{k}"),
                    name: k.clone(),
                    file_name: k.clone(),
                    size: None,
                })
                .collect()),
            Kind::Urls { urls, .. } => Ok(urls
                .iter()
                .map(|u| DocRef {
                    url: Some(u.clone()),
                    id: url_id(u),
                    name: xin_runtime::outbound::redact_url(u),
                    file_name: reqwest::Url::parse(u)
                        .map(|p| p.path().to_string())
                        .unwrap_or_default(),
                    size: None,
                })
                .collect()),
            Kind::S3 {
                store,
                bucket,
                prefix,
            } => {
                // `object_store` lists whole path segments: list the prefix's directory and
                // keep the keys that start with the prefix.
                let dir = prefix.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                let dir = (!dir.is_empty()).then(|| object_store::path::Path::from(dir));
                let mut stream = store.list(dir.as_ref());
                let mut out = vec![];
                while let Some(meta) = stream
                    .try_next()
                    .await
                    .map_err(|e| SourceError(format!("cannot list bucket {bucket}: {e}")))?
                {
                    let key = meta.location.to_string();
                    if !key.starts_with(prefix.as_str()) || key.ends_with('/') {
                        continue;
                    }
                    out.push(DocRef {
                        url: None,
                        id: format!("s3://{bucket}/{key}"),
                        name: key.clone(),
                        file_name: key,
                        size: Some(meta.size),
                    });
                    if out.len() > max {
                        break;
                    }
                }
                out.sort_by(|a, b| a.id.cmp(&b.id));
                Ok(out)
            }
            Kind::Dir(dir) => {
                let mut out = vec![];
                let entries = std::fs::read_dir(dir)
                    .map_err(|e| SourceError(format!("cannot list {}: {e}", dir.display())))?;
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_file()) {
                        let name = e.file_name().to_string_lossy().into_owned();
                        out.push(DocRef {
                            url: None,
                            id: format!("file:{name}"),
                            name: name.clone(),
                            file_name: name,
                            size: e.metadata().ok().map(|m| m.len()),
                        });
                    }
                    if out.len() > max {
                        break;
                    }
                }
                out.sort_by(|a, b| a.id.cmp(&b.id));
                Ok(out)
            }
        }
    }

    /// One document's bytes.
    pub async fn fetch(&self, doc: &DocRef) -> Result<Fetched, FetchError> {
        let too_large = FetchError::TooLarge {
            limit: self.max_bytes,
        };
        if doc.size.is_some_and(|s| s > self.max_bytes as u64) {
            return Err(too_large);
        }
        match &self.kind {
            Kind::ConfigMap(_, data) => match data.get(&doc.name) {
                Some(Some(b)) => Ok(Fetched {
                    bytes: b.clone(),
                    content_type: None,
                }),
                _ => Err(FetchError::NotFound),
            },
            Kind::Urls {
                headers, client, ..
            } => {
                let url = doc.url.as_deref().unwrap_or(&doc.id);
                let req = client.get(url).headers(headers.clone());
                let resp = client.send(req).await.map_err(|e| match e {
                    OutboundError::ResponseTooLarge { .. } => too_large.clone(),
                    OutboundError::DestinationNotAllowed { .. } => {
                        FetchError::NotAllowed(e.to_string())
                    }
                    other => FetchError::Failed(other.to_string()),
                })?;
                if resp.status == reqwest::StatusCode::NOT_FOUND
                    || resp.status == reqwest::StatusCode::GONE
                {
                    return Err(FetchError::NotFound);
                }
                if resp.status.is_server_error()
                    || resp.status.as_u16() == 429
                    || resp.status.as_u16() == 408
                {
                    return Err(FetchError::Failed(format!("answered HTTP {}", resp.status)));
                }
                if !resp.status.is_success() {
                    return Err(FetchError::Refused(format!(
                        "answered HTTP {}",
                        resp.status
                    )));
                }
                let content_type = resp
                    .headers
                    .get(reqwest::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                Ok(Fetched {
                    bytes: resp.body,
                    content_type,
                })
            }
            Kind::S3 { store, .. } => {
                let path = object_store::path::Path::from(doc.name.as_str());
                let got = store.get(&path).await.map_err(|e| match e {
                    object_store::Error::NotFound { .. } => FetchError::NotFound,
                    other => FetchError::Failed(other.to_string()),
                })?;
                if got.meta.size > self.max_bytes as u64 {
                    return Err(too_large);
                }
                let content_type = got
                    .attributes
                    .get(&object_store::Attribute::ContentType)
                    .map(|v| v.to_string());
                let bytes = got
                    .bytes()
                    .await
                    .map_err(|e| FetchError::Failed(e.to_string()))?;
                Ok(Fetched {
                    bytes: bytes.to_vec(),
                    content_type,
                })
            }
            Kind::Dir(dir) => std::fs::read(dir.join(&doc.name))
                .map(|bytes| Fetched {
                    bytes,
                    content_type: None,
                })
                .map_err(|e| FetchError::Failed(e.to_string())),
        }
    }
}

/// The headers Secret, mounted as a directory: one file per header (Kubernetes' own entries,
/// `..data` and the like, skipped). A trailing newline is not part of a value.
fn read_headers(dir: &std::path::Path) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::new();
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let value = std::fs::read_to_string(e.path())
            .map_err(|err| format!("header {name}: cannot read: {err}"))?;
        let value = value.strip_suffix('\n').unwrap_or(&value);
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("key {name:?} is not an HTTP header name"))?;
        // The value is a secret: its content never goes into the message.
        let v = HeaderValue::from_str(value)
            .map_err(|_| format!("the value of header {name} is not a valid header value"))?;
        let mut v = v;
        v.set_sensitive(true);
        headers.insert(n, v);
    }
    Ok(headers)
}

/// Hands `object_store` the outbound policy's checked client.
#[derive(Debug)]
struct Connector(reqwest::Client);

impl object_store::client::HttpConnector for Connector {
    fn connect(
        &self,
        _options: &object_store::ClientOptions,
    ) -> object_store::Result<object_store::client::HttpClient> {
        Ok(object_store::client::HttpClient::new(self.0.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_ids_never_carry_credentials_or_queries() {
        assert_eq!(
            url_id("https://docs.example.com/faq.md"),
            "https://docs.example.com/faq.md"
        );
        let a = url_id("https://u:pw@docs.example.com/faq?token=s3cr3t&page=1");
        let b = url_id("https://u:pw@docs.example.com/faq?token=s3cr3t&page=2");
        assert!(
            a.starts_with("https://docs.example.com/faq~")
                && a.len() == "https://docs.example.com/faq~".len() + 16,
            "{a}"
        );
        assert_ne!(a, b);
        assert!(!a.contains("s3cr3t") && !a.contains("pw"));
        let d = DocRef {
            id: a,
            url: Some("https://u:pw@docs.example.com/faq?token=s3cr3t".into()),
            name: "n".into(),
            file_name: "f".into(),
            size: None,
        };
        assert!(!format!("{d:?}").contains("s3cr3t"));
    }

    #[test]
    fn headers_come_from_files_and_bad_ones_name_the_key_not_the_value() {
        let dir = std::env::temp_dir().join(format!("xin-headers-{}", rand::random::<u64>()));
        std::fs::create_dir_all(dir.join("..2026_11_30")).unwrap();
        std::fs::write(dir.join("Authorization"), "Bearer s3cr3t\n").unwrap();
        std::fs::write(dir.join("X-Api-Key"), "k").unwrap();
        let h = read_headers(&dir).unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h["authorization"], "Bearer s3cr3t");
        assert!(h["authorization"].is_sensitive());
        std::fs::write(dir.join("bad header"), "v").unwrap();
        let e = read_headers(&dir).unwrap_err();
        assert!(e.contains("bad header"), "{e}");
        std::fs::remove_file(dir.join("bad header")).unwrap();
        std::fs::write(dir.join("X-Bad-Value"), "line\nbreak-secret").unwrap();
        let e = read_headers(&dir).unwrap_err();
        assert!(
            e.contains("X-Bad-Value") && !e.contains("break-secret"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
