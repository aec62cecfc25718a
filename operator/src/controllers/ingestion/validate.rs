//! The checks the API server's schema cannot make on an IngestionJob, before its Job is
//! created (the spec cannot change afterwards).

use xin_api::ingestion::IngestionJob;

use crate::config::Config;
use crate::error::ValidateError;

/// The URL sources and the S3 endpoint are not destinations the outbound policy refuses by
/// their literal host (the worker checks what names resolve to). Checked before the Job is
/// created: the spec cannot change afterwards.
pub fn validate_sources(
    ij: &IngestionJob,
    config: &Config,
) -> std::result::Result<(), ValidateError> {
    let src = &ij.spec.source;
    let policy = config.destination_policy();
    for (i, url) in src.url.iter().flat_map(|u| u.urls.iter()).enumerate() {
        ValidateError::check_destination(&policy, format!("spec.source.url.urls[{i}]"), url)?;
    }
    if let Some(s3) = &src.s3 {
        ValidateError::check_destination(&policy, "spec.source.s3.endpoint", &s3.endpoint)?;
    }
    Ok(())
}
