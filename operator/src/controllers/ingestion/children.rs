//! What an IngestionJob owns: one `batch/v1` Job, built by a pure function.

use k8s_openapi::api::batch::v1::Job;
use xin_api::ingestion::IngestionJob;
use xin_api::tenant::Tenant;

use crate::builders::ingestion::build_ingestion_job;
use crate::config::Config;
use crate::error::BuildError;

/// Every child of an IngestionJob.
pub struct IngestionChildren {
    pub job: Job,
}

/// The children of a validated IngestionJob of `tenant`.
pub fn build_ingestion_children(
    ij: &IngestionJob,
    tenant: &Tenant,
    config: &Config,
) -> Result<IngestionChildren, BuildError> {
    let job = build_ingestion_job(ij, tenant, config).map_err(|source| BuildError::Serialize {
        what: "the ingestion Job",
        source,
    })?;
    Ok(IngestionChildren { job })
}
