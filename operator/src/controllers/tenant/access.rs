//! The operator's own rights in a tenant namespace. Its ClusterRole grants no Secret rights
//! and no namespace deletes anywhere: as it takes a namespace for a Tenant, it binds the
//! ClusterRole `XIN_TENANT_ACCESS_CLUSTER_ROLE` (Secrets; deleting that one namespace) to its
//! own ServiceAccount there, with a RoleBinding — which it may create only for that one
//! ClusterRole (`bind` on it by name) and, by the chart's ValidatingAdmissionPolicy, only in
//! `xin-*` namespaces other than its own. The binding goes with the namespace, or at the end
//! of a `Retain` decommission.

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use xin_api::tenant::Tenant;

use crate::apply::apply;
use crate::builders::meta;
use crate::builders::tenant::build_namespace;
use crate::config::Config;
use crate::controllers::Context;
use crate::error::ApplyError;

/// Name of the operator's RoleBinding in each tenant namespace.
pub const ACCESS_BINDING: &str = "xin-operator-access";

/// The RoleBinding that gives the operator its rights in `ns`; `None` when the operator is
/// configured without one (its ClusterRole then has to grant them).
pub fn build_access_binding(tenant: &Tenant, ns: &str, config: &Config) -> Option<RoleBinding> {
    let role = config.tenant_access_cluster_role.as_deref()?;
    Some(RoleBinding {
        metadata: meta(tenant, ACCESS_BINDING, ns, &tenant.name_any(), "operator"),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: role.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: config.operator_service_account.clone(),
            namespace: Some(config.operator_namespace.clone()),
            ..Subject::default()
        }]),
    })
}

/// Makes the namespace (when missing) and the operator's RoleBinding in it, before anything
/// reads its Secrets. `existing`: the namespace as it is (its ownership already checked).
pub async fn ensure(
    tenant: &Tenant,
    ns: &str,
    existing: Option<&Namespace>,
    ctx: &Context,
) -> Result<(), ApplyError> {
    let Some(binding) = build_access_binding(tenant, ns, &ctx.config) else {
        return Ok(());
    };
    if existing.is_none() {
        apply(
            &Api::<Namespace>::all(ctx.client.clone()),
            None,
            &build_namespace(tenant, ns),
        )
        .await?;
    }
    let cached = ctx
        .stores
        .role_bindings
        .get(&ObjectRef::new(ACCESS_BINDING).within(ns));
    apply(
        &Api::<RoleBinding>::namespaced(ctx.client.clone(), ns),
        cached.as_deref(),
        &binding,
    )
    .await?;
    Ok(())
}

/// Removes the operator's RoleBinding from a namespace it releases (`Retain`).
pub async fn release(ns: &str, ctx: &Context) -> Result<(), kube::Error> {
    if ctx.config.tenant_access_cluster_role.is_none() {
        return Ok(());
    }
    match Api::<RoleBinding>::namespaced(ctx.client.clone(), ns)
        .delete(ACCESS_BINDING, &Default::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn the_binding_names_the_operators_account_and_the_one_cluster_role() {
        let t = crate::builders::tenant::tests::tenant("acme");
        assert!(build_access_binding(&t, "xin-acme", &Config::for_tests()).is_none());
        let config = Config::parse_from([
            "xin-operator",
            "--tenant-access-cluster-role=xin-operator-tenant",
            "--operator-namespace=platform",
            "--operator-service-account=xin",
        ]);
        let b = build_access_binding(&t, "xin-acme", &config).unwrap();
        assert_eq!(b.metadata.namespace.as_deref(), Some("xin-acme"));
        assert_eq!(b.role_ref.kind, "ClusterRole");
        assert_eq!(b.role_ref.name, "xin-operator-tenant");
        let s = &b.subjects.unwrap()[0];
        assert_eq!(
            (s.kind.as_str(), s.name.as_str(), s.namespace.as_deref()),
            ("ServiceAccount", "xin", Some("platform"))
        );
        // Owned by the Tenant, so it goes with it.
        assert_eq!(b.metadata.owner_references.unwrap()[0].kind, "Tenant");
    }
}
