//! The checks of a Tenant the API server's schema cannot make: its namespace is not the
//! operator's own, and its time zone is one the tz database knows.

use xin_api::tenant::{Tenant, tenant_namespace};

use super::resolve::Resolved;
use crate::config::Config;
use crate::error::{Error, Problem, ValidateError};
use kube::ResourceExt;

/// A Tenant ready to be built: what it owns, and what its workloads need — or why they cannot
/// be built yet (the namespace and its guard rails are built either way, so the user can
/// create the Secrets the workloads need in it).
#[derive(Clone, Debug)]
pub struct ValidatedTenant {
    pub tenant: Tenant,
    pub namespace: String,
    /// Channels in the namespace (served or not) and AutomationRules, for the status.
    pub channels: i32,
    pub rules: i32,
    pub workloads: std::result::Result<super::resolve::WorkloadInputs, Problem>,
}

/// The Tenant's namespace, unless it is the operator's own or one the platform reserves. (The
/// API refuses the name `system`; this catches an operator installed into another `xin-`
/// namespace, and the platform's data and monitoring namespaces.)
pub fn namespace(tenant: &Tenant, config: &Config) -> Result<String, ValidateError> {
    let ns = tenant_namespace(&tenant.name_any());
    if ns == config.operator_namespace
        || ns == config.lease_namespace
        || config.reserved_namespaces.contains(&ns)
    {
        return Err(ValidateError::ReservedNamespace { namespace: ns });
    }
    Ok(ns)
}

/// Turns what was resolved into a [`ValidatedTenant`]: a time zone the tz database does not
/// know, like a missing Secret, keeps the workloads from being built.
pub fn validate(tenant: &Tenant, resolved: Resolved, object: &str) -> ValidatedTenant {
    let tz = &tenant.spec.time_zone;
    let workloads = match resolved.workloads {
        _ if tz.parse::<chrono_tz::Tz>().is_err() => Err(Problem::from(&Error::new(
            object,
            ValidateError::InvalidTimeZone {
                field: "spec.timeZone",
                value: tz.clone(),
            },
        ))),
        Ok(w) => Ok(w),
        Err(e) => Err(Problem::from(&e)),
    };
    ValidatedTenant {
        tenant: tenant.clone(),
        namespace: resolved.namespace,
        channels: resolved.channels,
        rules: resolved.rules,
        workloads,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_platforms_namespaces_are_reserved() {
        let config = Config::for_tests();
        let t = |name: &str| crate::builders::tenant::tests::tenant(name);
        assert_eq!(namespace(&t("acme"), &config).unwrap(), "xin-acme");
        for reserved in ["data", "monitoring"] {
            let e = namespace(&t(reserved), &config).unwrap_err();
            assert!(e.to_string().contains("reserved"), "{e}");
        }
        let mut custom = config.clone();
        custom.reserved_namespaces = vec!["xin-vault".into()];
        assert!(namespace(&t("vault"), &custom).is_err());
        assert!(namespace(&t("data"), &custom).is_ok());
    }
}
