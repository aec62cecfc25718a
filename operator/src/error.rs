//! The operator's errors. Each has a metric label, and none carries a secret's value.

use thiserror::Error;

#[derive(Error, Debug)]
pub enum Error {
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),

    #[error("serialising {0} failed: {1}")]
    Serialize(&'static str, serde_json::Error),
}

impl Error {
    /// Low-cardinality label for `xin_operator_reconcile_failures_total{error=...}`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(s)) if s.code == 409 => "conflict",
            Error::Kube(kube::Error::Api(s)) if s.code == 403 => "forbidden",
            Error::Kube(kube::Error::Api(s)) if s.code == 422 => "invalid_child",
            Error::Kube(kube::Error::Api(s)) if s.code == 429 => "throttled",
            Error::Kube(kube::Error::Api(_)) => "api_error",
            Error::Kube(_) => "api_unreachable",
            Error::Serialize(..) => "serialize",
        }
    }
}

impl Error {
    /// The API server asked us to slow down: retry soon, without growing the object's
    /// backoff. (A 5xx can be persistent, such as a full Service IP range: it backs off.)
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Kube(kube::Error::Api(s)) if s.code == 429)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
