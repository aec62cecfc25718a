//! The checks of a Tenant the API server's schema cannot make: its namespace is not the
//! operator's own, its time zone is one the tz database knows, and its LLM endpoint is not a
//! destination the outbound policy refuses by its literal host (no DNS here: the workloads
//! check what names resolve to).

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
    /// The Secrets the rules name (sorted, unique): the automation worker may read exactly these.
    pub rule_secrets: Vec<String>,
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
/// know or a refused LLM endpoint, like a missing Secret, keeps the workloads from being
/// built.
pub fn validate(
    tenant: &Tenant,
    resolved: Resolved,
    object: &str,
    config: &Config,
) -> ValidatedTenant {
    let tz = &tenant.spec.time_zone;
    let workloads = match resolved.workloads {
        _ if tz.parse::<chrono_tz::Tz>().is_err() => Err(Problem::from(&Error::new(
            object,
            ValidateError::InvalidTimeZone {
                field: "spec.timeZone",
                value: tz.clone(),
            },
        ))),
        Ok(w) => llm_destination(tenant, config)
            .map(|()| w)
            .map_err(|e| Problem::from(&Error::new(object, e))),
        Err(e) => Err(Problem::from(&e)),
    };
    ValidatedTenant {
        tenant: tenant.clone(),
        namespace: resolved.namespace,
        channels: resolved.channels,
        rules: resolved.rules,
        rule_secrets: resolved.rule_secrets,
        workloads,
    }
}

/// The LLM and embedding endpoints are not destinations the outbound policy refuses.
fn llm_destination(tenant: &Tenant, config: &Config) -> Result<(), ValidateError> {
    let policy = config.destination_policy();
    if let Some(llm) = &tenant.spec.llm {
        ValidateError::check_destination(&policy, "spec.llm.endpoint", &llm.endpoint)?;
    }
    if let Some(e) = &tenant.spec.embeddings {
        ValidateError::check_destination(&policy, "spec.embeddings.endpoint", &e.endpoint)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use xin_api::routes::Routes;

    use super::super::resolve::WorkloadInputs;
    use super::super::status::pass;
    use super::*;
    use crate::conditions::reason;

    fn with_llm(endpoint: &str) -> Tenant {
        let mut t = crate::builders::tenant::tests::tenant("acme");
        t.spec.llm = Some(
            serde_json::from_value(serde_json::json!({"endpoint": endpoint, "model": "m"}))
                .unwrap(),
        );
        t
    }

    fn resolved() -> Resolved {
        Resolved {
            namespace: "xin-acme".into(),
            channels: 0,
            rules: 0,
            rule_secrets: vec![],
            workloads: Ok(WorkloadInputs {
                db_url: b"postgres://acme@db/acme".to_vec(),
                database_plan: super::super::database::DatabasePlan::Managed {
                    existing_url: None,
                    rotation_handled: None,
                },
                database: None,
                llm_key: vec![],
                embedding_key: vec![],
                signing_key: b"signing-key-of-acme".to_vec(),
                routes: Routes {
                    tenant: "acme".into(),
                    channels: vec![],
                },
                live_channels: vec![],
                gateway_waits: false,
            }),
        }
    }

    #[test]
    fn a_refused_embedding_endpoint_is_refused_like_the_llm_one() {
        let config = Config::for_tests();
        let mut t = with_llm("https://llm.example.com/v1");
        t.spec.embeddings = Some(
            serde_json::from_value(serde_json::json!({
                "endpoint": "http://10.1.2.3:8080", "model": "e5"}))
            .unwrap(),
        );
        let v = validate(&t, resolved(), "Tenant acme", &config);
        let Err(p) = v.workloads.as_ref() else {
            panic!("not refused")
        };
        assert_eq!(p.reason, reason::DESTINATION_NOT_ALLOWED);
        assert!(
            p.message
                .starts_with("spec.embeddings.endpoint http://10.1.2.3:8080"),
            "{}",
            p.message
        );
        t.spec.embeddings.as_mut().unwrap().endpoint = "https://embed.example.com".into();
        assert!(
            validate(&t, resolved(), "Tenant acme", &config)
                .workloads
                .is_ok()
        );
    }

    #[test]
    fn a_refused_llm_endpoint_keeps_the_workloads_from_being_built() {
        let config = Config::for_tests();
        for (endpoint, refused) in [
            (
                "http://169.254.169.254/latest",
                Some("a cloud metadata address"),
            ),
            ("http://user:pw@0x7f.1:8000/v1", Some("a loopback address")),
            ("http://good.example@10.0.0.5/", Some("a private address")),
            (
                "http://ollama.models.svc:11434",
                Some("a cluster-internal host name"),
            ),
            ("https://llm.example.com/v1", None),
        ] {
            let t = with_llm(endpoint);
            let v = validate(&t, resolved(), "Tenant acme", &config);
            match (refused, &v.workloads) {
                (None, Ok(_)) => {}
                (Some(why), Err(p)) => {
                    assert_eq!(p.reason, reason::DESTINATION_NOT_ALLOWED, "{endpoint}");
                    assert!(
                        p.message.starts_with("spec.llm.endpoint http") && p.message.ends_with(why),
                        "{endpoint}: {}",
                        p.message
                    );
                    assert!(!p.message.contains("pw@"), "{}", p.message);
                    let now = Time("2026-11-30T12:00:00Z".parse().unwrap());
                    let out = pass(&v, &Default::default()).outcome(&t, &now);
                    assert!(out.stalled, "{endpoint}");
                }
                (want, got) => panic!("{endpoint}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn the_operators_allow_list_lifts_the_refusal() {
        let t = with_llm("http://10.20.0.7:8000");
        let strict = Config::for_tests();
        assert!(
            validate(&t, resolved(), "Tenant acme", &strict)
                .workloads
                .is_err()
        );
        let mut on_prem = Config::for_tests();
        on_prem.outbound_allow = "10.20.0.0/16".parse().unwrap();
        assert!(
            validate(&t, resolved(), "Tenant acme", &on_prem)
                .workloads
                .is_ok()
        );
    }

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
