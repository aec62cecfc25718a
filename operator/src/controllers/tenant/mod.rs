//! Tenant → namespace, quota, limits, network policy, identities, signing Secret,
//! orchestrator; plus the gateway (while Channels exist) and the automation worker (while
//! AutomationRules exist). Deletion runs the decommission sequence in a finalizer.
//!
//! One pass, top to bottom:
//! 1. [`finalizer`]: a Tenant being deleted is decommissioned instead; otherwise the
//!    finalizer goes on before any side effect.
//! 2. [`resolve`]: what the spec and the namespace hold — from the watches' stores.
//! 3. [`validate`]: the checks the API server's schema cannot make.
//! 4. [`database`]: the tenant's database provisioned (or the team's own checked) and
//!    migrated, before any workload is built.
//! 5. [`children`]: every child, built by pure functions into [`children::TenantChildren`].
//! 6. [`apply`]: the desired set applied, what is no longer desired pruned.
//! 7. [`status`]: health from the workloads, as a typed status (the runner patches it).

pub mod access;
pub mod apply;
pub mod children;
pub mod database;
pub mod finalizer;
pub mod resolve;
pub mod status;
pub mod validate;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use kube::runtime::reflector::Store;
use xin_api::tenant::{Tenant, TenantStatus};

use super::Context;
use super::runner::{Pass, Reconcile, status_fields};
use crate::error::{Error, OnObject, Result, object_name};

pub use finalizer::FINALIZER;

impl Reconcile for Tenant {
    type Status = TenantStatus;

    fn owned_status(&self) -> TenantStatus {
        self.status.clone().unwrap_or_default()
    }
    status_fields!(TenantStatus);
    fn api(client: kube::Client, _namespace: &str) -> kube::Api<Self> {
        kube::Api::all(client)
    }
    fn store(ctx: &Context) -> Store<Tenant> {
        ctx.stores.tenants.clone()
    }

    async fn reconcile(tenant: Arc<Tenant>, ctx: Arc<Context>) -> Result<Pass<TenantStatus>> {
        let object = object_name(tenant.as_ref());
        if tenant.metadata.deletion_timestamp.is_some() {
            return finalizer::decommission(&tenant, &ctx).await.on(&object);
        }
        finalizer::ensure(&tenant, &ctx).await.on(&object)?;
        let namespace = validate::namespace(&tenant, &ctx.config).on(&object)?;
        let resolved = resolve::resolve(&tenant, namespace, &ctx)
            .await
            .on(&object)?;
        let mut validated = validate::validate(&tenant, resolved, &object, &ctx.config);
        database::step(&mut validated, &ctx, &object).await;
        let children = children::build_tenant_children(&validated, &ctx.config).on(&object)?;
        apply::apply(&tenant, children, &ctx).await.on(&object)?;
        Ok(status::pass(
            &validated,
            &status::availability(&validated, &ctx.stores),
        ))
    }

    fn error_pass(&self, e: &Error) -> Pass<TenantStatus> {
        finalizer::error_pass(self, e)
    }
}
