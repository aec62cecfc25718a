//! Creating the Job: once, never updated (its template is immutable).

use k8s_openapi::api::batch::v1::Job;
use kube::{Api, ResourceExt};

use crate::builders::MANAGER;
use crate::controllers::Context;
use crate::error::ApplyError;

/// Creates the Job, never updates it: its template is immutable. `None` when it exists.
pub(super) async fn create(
    ctx: &Context,
    ns: &str,
    job: &Job,
) -> std::result::Result<Option<Job>, ApplyError> {
    let pp = kube::api::PostParams {
        field_manager: Some(MANAGER.into()),
        ..Default::default()
    };
    match Api::<Job>::namespaced(ctx.client.clone(), ns)
        .create(&pp, job)
        .await
    {
        Ok(j) => Ok(Some(j)),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(None),
        Err(source) => Err(ApplyError::Kube {
            verb: "create",
            kind: "Job",
            name: job.name_any(),
            source,
        }),
    }
}
