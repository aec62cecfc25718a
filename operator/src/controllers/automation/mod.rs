//! AutomationRule → conditions. The Tenant controller runs the automation worker while rules
//! exist; the worker reports runs in the rule's status under its own field manager, so this
//! controller writes only `observedGeneration` and `conditions`.
//!
//! One pass: [`resolve`] (the Tenant, the Secrets the action names) → [`validate`] (the
//! schedule and its time zone, the webhook and CRM URLs' destinations, the templates rendered
//! for sample runs, the webhook's extra headers) → status. A rule has no children.

mod resolve;
mod status;
mod validate;

use std::sync::Arc;

use kube::runtime::reflector::Store;
use xin_api::automation::{AutomationRule, AutomationRuleStatus};

use resolve::resolve;
pub use resolve::{Resolved, references_secret, secret_names, usable_by_rules};
pub use status::status;
use status::suspended;
pub use validate::validate;

use super::Context;
use super::runner::{Pass, Reconcile, status_fields};
use crate::error::{OnObject, Result, object_name};

impl Reconcile for AutomationRule {
    type Status = AutomationRuleStatus;

    /// Only `observedGeneration` and `conditions`: the worker owns the rest.
    fn owned_status(&self) -> AutomationRuleStatus {
        let s = self.status.clone().unwrap_or_default();
        AutomationRuleStatus {
            observed_generation: s.observed_generation,
            conditions: s.conditions,
            ..AutomationRuleStatus::default()
        }
    }
    status_fields!(AutomationRuleStatus);
    fn api(client: kube::Client, namespace: &str) -> kube::Api<Self> {
        kube::Api::namespaced(client, namespace)
    }
    fn store(ctx: &Context) -> Store<AutomationRule> {
        ctx.stores.rules.clone()
    }

    async fn reconcile(
        rule: Arc<AutomationRule>,
        ctx: Arc<Context>,
    ) -> Result<Pass<AutomationRuleStatus>> {
        let object = object_name(rule.as_ref());
        let checked = match resolve(&rule, &ctx).await.on(&object) {
            Ok(resolved) => {
                let now = chrono::DateTime::from_timestamp(ctx.now().0.as_second(), 0)
                    .unwrap_or_default();
                validate(&rule, &resolved, &ctx.config, now).on(&object)
            }
            Err(e) => Err(e),
        };
        let pass = match checked {
            Ok(()) => status(&rule),
            Err(e) if e.user_fixable() => Pass::stalled(rule.current_status(), &e),
            Err(e) => return Err(e),
        };
        Ok(pass.with_extra(suspended(&rule)))
    }
}

#[cfg(test)]
mod pipeline_tests {
    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use xin_api::tenant::Tenant;

    use crate::conditions::reason;

    use super::*;
    use crate::error::Error;
    use crate::golden;

    fn rule(spec: serde_json::Value) -> AutomationRule {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "xin.dev/v1alpha1", "kind": "AutomationRule",
            "metadata": {"name": "digest", "namespace": "xin-acme", "uid": "uid-r", "generation": 4},
            "spec": spec,
            // Fields the worker owns: never part of what the operator writes.
            "status": {"succeeded": 7, "lastError": "timeout"},
        }))
        .unwrap()
    }

    fn resolved(t: &Tenant, headers: Option<(&str, &[(&str, &str)])>) -> Resolved {
        Resolved {
            tenant: Arc::new(t.clone()),
            headers: headers.map(|(name, kv)| {
                let data = kv
                    .iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect();
                (name.to_string(), data)
            }),
            platform: vec![],
        }
    }

    fn now() -> Time {
        Time("2026-11-30T12:00:00Z".parse().unwrap())
    }

    fn utc() -> chrono::DateTime<chrono::Utc> {
        "2026-11-30T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn schedules_are_checked_and_only_the_operators_fields_are_written() {
        let t = crate::builders::tenant::tests::tenant("acme");
        let webhook = serde_json::json!({"webhook": {"url": "https://h.example"}});
        let cases = [
            (
                "valid",
                serde_json::json!({"trigger": {"schedule": {"cron": "0 9 * * 1-5"}}, "action": webhook}),
            ),
            (
                "suspended",
                serde_json::json!({"trigger": {"schedule": {"cron": "0 9 * * 1-5"}}, "action": webhook, "suspend": true}),
            ),
            (
                "six-fields",
                serde_json::json!({"trigger": {"schedule": {"cron": "0 0 9 * * 1-5"}}, "action": webhook}),
            ),
            (
                "bad-time-zone",
                serde_json::json!({"trigger": {"schedule": {"cron": "0 9 * * *", "timeZone": "Mars/Olympus"}}, "action": webhook}),
            ),
            (
                "refused-webhook",
                serde_json::json!({"trigger": {"schedule": {"cron": "0 9 * * 1-5"}},
                    "action": {"webhook": {"url": "http://hooks.example@169.254.169.254/latest?token=x"}}}),
            ),
            (
                "crm-template-not-json",
                serde_json::json!({"trigger": {"event": {"types": ["MessageReceived"]}},
                    "action": {"crm": {"endpoint": "https://crm.example/api",
                        "authSecretRef": {"name": "crm", "key": "token"},
                        "bodyTemplate": "{\"text\": \"{{ message.text }}\"}"}}}),
            ),
            (
                "refused-crm",
                serde_json::json!({"trigger": {"schedule": {"cron": "0 9 * * 1-5"}},
                    "action": {"crm": {"endpoint": "http://crm.sales.svc.cluster.local/api",
                        "authSecretRef": {"name": "crm", "key": "token"}, "bodyTemplate": "{}"}}}),
            ),
        ];
        let config = crate::config::Config::for_tests();
        for (name, spec) in cases {
            let r = rule(spec);
            let pass = match validate(&r, &resolved(&t, None), &config, utc()) {
                Ok(()) => status(&r),
                Err(e) => Pass::stalled(
                    r.current_status(),
                    &Error::new("AutomationRule xin-acme/digest", e),
                ),
            }
            .with_extra(suspended(&r));
            let out = pass.outcome(&r, &now());
            golden::check(&format!("automation/{name}.status"), &out);
            let s = out.status.unwrap();
            assert!(
                s.succeeded.is_none() && s.last_error.is_none(),
                "{name}: the worker's fields are not the operator's"
            );
            assert_eq!(
                out.stalled,
                name != "valid" && name != "suspended",
                "{name}"
            );
        }
    }

    #[test]
    fn refused_destinations_name_the_field_and_the_allow_list_lifts_them() {
        let t = crate::builders::tenant::tests::tenant("acme");
        let r = rule(
            serde_json::json!({"trigger": {"event": {"types": ["ConversationClosed"]}},
            "action": {"webhook": {"url": "http://10.20.0.7:8080/hook?sig=secret"}}}),
        );
        let mut config = crate::config::Config::for_tests();
        let e = validate(&r, &resolved(&t, None), &config, utc()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "spec.action.webhook.url http://10.20.0.7:8080/hook is not an allowed destination: a private address"
        );
        config.outbound_allow = "10.20.0.0/16".parse().unwrap();
        assert!(validate(&r, &resolved(&t, None), &config, utc()).is_ok());
        config.outbound_deny = "10.20.0.7".parse().unwrap();
        let e = validate(&r, &resolved(&t, None), &config, utc()).unwrap_err();
        assert!(e.to_string().ends_with("on the outbound deny list"), "{e}");
    }

    #[test]
    fn webhook_headers_that_could_split_a_request_are_refused_without_their_value() {
        let t = crate::builders::tenant::tests::tenant("acme");
        let r = rule(
            serde_json::json!({"trigger": {"event": {"types": ["ConversationClosed"]}},
            "action": {"webhook": {"url": "https://hooks.example/x", "headersSecretRef": {"name": "hooks"}}}}),
        );
        let config = crate::config::Config::for_tests();
        let ok = resolved(&t, Some(("hooks", &[("X-Api-Key", "s3cret value")])));
        assert!(validate(&r, &ok, &config, utc()).is_ok());
        for (kv, want) in [
            (
                ("X-Api-Key", "s3cret\r\nX-Admin: 1"),
                "contains a line break",
            ),
            (("Bad Header", "v"), "is not an HTTP token"),
            (("Idempotency-Key", "v"), "is set by the worker"),
        ] {
            let bad = resolved(&t, Some(("hooks", &[kv])));
            let e = validate(&r, &bad, &config, utc()).unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.starts_with("Secret hooks (spec.action.webhook.headersSecretRef): ")
                    && msg.contains(want),
                "{msg}"
            );
            assert!(!msg.contains("s3cret"), "{msg}");
            assert_eq!(
                crate::error::Error::new("AutomationRule xin-acme/digest", e).reason(),
                reason::INVALID_HEADERS
            );
        }
        // A Secret of the platform is refused, whatever it holds.
        let mut platform = resolved(&t, None);
        platform.platform = vec!["xin-database".into()];
        let e = validate(&r, &platform, &config, utc()).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("Secret xin-database belongs to the platform"),
            "{e}"
        );
        let managed = k8s_openapi::api::core::v1::Secret {
            metadata: kube::api::ObjectMeta {
                labels: Some(
                    [(
                        crate::builders::MANAGED_BY.0.to_string(),
                        crate::builders::MANAGED_BY.1.to_string(),
                    )]
                    .into(),
                ),
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(!usable_by_rules(
            Some(&managed),
            "xin-database",
            &t,
            &config
        ));
        assert!(usable_by_rules(None, "hooks", &t, &config));
        // A team's own database URLs (runtime and owner) are the Tenant's, not the rules'.
        let mut own_db = t.clone();
        own_db.spec.database = serde_json::from_value(serde_json::json!({
            "urlSecretRef": {"name": "team-db", "key": "url"},
            "ownerUrlSecretRef": {"name": "team-db-owner", "key": "url"},
        }))
        .unwrap();
        for name in ["team-db", "team-db-owner"] {
            assert!(!usable_by_rules(None, name, &own_db, &config), "{name}");
        }
        assert!(usable_by_rules(None, "hooks", &own_db, &config));
    }
}
