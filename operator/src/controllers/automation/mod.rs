//! AutomationRule → conditions. The Tenant controller runs the automation worker while rules
//! exist; the worker reports runs in the rule's status under its own field manager, so this
//! controller writes only `observedGeneration` and `conditions`.
//!
//! One pass: [`resolve`] (the Tenant, the Secrets the action names) → [`validate`] (the
//! schedule and its time zone, the webhook and CRM URLs' destinations, the templates rendered
//! for sample runs, the webhook's extra headers) → status. A rule has no children.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::ByteString;

use kube::ResourceExt;
use kube::runtime::reflector::Store;
use xin_api::automation::schedule::parse_cron;
use xin_api::automation::{AutomationRule, AutomationRuleStatus, check_header, template};
use xin_api::tenant::Tenant;

use super::Context;
use super::resolve::{owning_tenant, secret_exists, secret_key};
use super::runner::{Extra, Pass, Reconcile, status_fields};
use crate::conditions::{Health, reason, types};
use crate::config::Config;
use crate::error::{OnObject, ResolveError, Result, ValidateError, object_name};

/// The Secrets a rule's action names: `(keys, whole Secrets)`.
fn secret_refs(rule: &AutomationRule) -> (Vec<xin_api::SecretKeyRef>, Vec<String>) {
    let a = &rule.spec.action;
    let (mut keys, mut whole) = (Vec::new(), Vec::new());
    if let Some(w) = &a.webhook {
        whole.extend(w.headers_secret_ref.iter().map(|r| r.name.clone()));
        keys.extend(w.signing_secret_ref.iter().cloned());
    }
    if let Some(c) = &a.crm {
        keys.push(c.auth_secret_ref.clone());
    }
    if let Some(e) = &a.email {
        whole.push(e.smtp_secret_ref.name.clone());
    }
    (keys, whole)
}

/// Every Secret `rule` names (the automation worker's Role grants `get` on exactly these).
pub fn secret_names(rule: &AutomationRule) -> Vec<String> {
    let (keys, mut whole) = secret_refs(rule);
    whole.extend(keys.into_iter().map(|k| k.name));
    whole
}

/// Whether `rule` names Secret `name` (so a change of it concerns the rule).
pub fn references_secret(rule: &AutomationRule, name: &str) -> bool {
    let (keys, whole) = secret_refs(rule);
    keys.iter().any(|k| k.name == name) || whole.iter().any(|w| w == name)
}

/// What a rule's pass reads.
pub struct Resolved {
    pub tenant: Arc<Tenant>,
    /// The webhook's headers Secret's data, when it names one.
    pub headers: Option<(String, BTreeMap<String, ByteString>)>,
    /// Secrets the rule names that belong to the platform (refused).
    pub platform: Vec<String>,
}

/// The owning Tenant, and every Secret the action names.
async fn resolve(
    rule: &AutomationRule,
    ctx: &Context,
) -> std::result::Result<Resolved, ResolveError> {
    let ns = rule.namespace().unwrap_or_default();
    let tenant = owning_tenant(&ctx.stores.tenants, &ns)?;
    let (keys, whole) = secret_refs(rule);
    if keys.is_empty() && whole.is_empty() {
        return Ok(Resolved {
            tenant,
            headers: None,
            platform: vec![],
        });
    }
    let secrets = ctx.stores.secrets.store(&ns).await?;
    for r in &keys {
        secret_key(&secrets, &ns, r)?;
    }
    for n in &whole {
        secret_exists(&secrets, &ns, n)?;
    }
    let platform: Vec<String> = keys
        .iter()
        .map(|k| k.name.clone())
        .chain(whole.iter().cloned())
        .filter(|n| {
            !usable_by_rules(
                super::resolve::secret(&secrets, &ns, n).as_deref(),
                n,
                &ctx.config,
            )
        })
        .collect();
    let headers = rule
        .spec
        .action
        .webhook
        .as_ref()
        .and_then(|w| w.headers_secret_ref.as_ref())
        .and_then(|r| {
            let s = super::resolve::secret(&secrets, &ns, &r.name)?;
            Some((r.name.clone(), s.data.clone().unwrap_or_default()))
        });
    Ok(Resolved {
        tenant,
        headers,
        platform,
    })
}

/// Whether a rule may name Secret `name`: not one the operator manages (database credentials,
/// the signing key, routes, webhook keys) nor the platform's telemetry headers — the worker
/// would be granted it and could send it to the tenant's URL.
pub fn usable_by_rules(
    secret: Option<&k8s_openapi::api::core::v1::Secret>,
    name: &str,
    config: &Config,
) -> bool {
    let managed = secret
        .and_then(|s| s.metadata.labels.as_ref())
        .and_then(|l| l.get(crate::builders::MANAGED_BY.0))
        .is_some_and(|v| v == crate::builders::MANAGED_BY.1);
    !managed && config.otel_tenant_headers_secret.as_deref() != Some(name)
}

/// The webhook and CRM URLs are not destinations the outbound policy refuses by their
/// literal host (the worker checks what names resolve to); the templates render (a CRM body
/// to valid JSON) for sample runs of the rule's triggers; the webhook's extra headers can be
/// sent; and the schedule parses as a 5-field crontab, in a time zone the tz database knows.
pub fn validate(
    rule: &AutomationRule,
    resolved: &Resolved,
    config: &Config,
) -> std::result::Result<(), ValidateError> {
    let tenant = &resolved.tenant;
    let a = &rule.spec.action;
    if let Some(name) = resolved.platform.first() {
        return Err(ValidateError::PlatformSecret { name: name.clone() });
    }
    template::check(&rule.spec.trigger, a).map_err(ValidateError::InvalidTemplate)?;
    if let Some((secret, data)) = &resolved.headers {
        for (k, v) in data {
            check_header(k, &v.0).map_err(|problem| ValidateError::InvalidHeaders {
                secret: secret.clone(),
                problem,
            })?;
        }
    }
    let policy = config.destination_policy();
    if let Some(w) = &a.webhook {
        ValidateError::check_destination(&policy, "spec.action.webhook.url", &w.url)?;
    }
    if let Some(c) = &a.crm {
        ValidateError::check_destination(&policy, "spec.action.crm.endpoint", &c.endpoint)?;
    }
    let Some(s) = &rule.spec.trigger.schedule else {
        return Ok(());
    };
    let cron = parse_cron(&s.cron).map_err(ValidateError::InvalidSchedule)?;
    let tz = s.time_zone.clone().unwrap_or(tenant.spec.time_zone.clone());
    if let Ok(zone) = tz.parse::<chrono_tz::Tz>()
        && !xin_api::automation::schedule::fires(&cron, zone, chrono::Utc::now())
    {
        return Err(ValidateError::InvalidSchedule(format!(
            "cron {:?} never fires (no such date, like 30 February)",
            s.cron
        )));
    }
    if tz.parse::<chrono_tz::Tz>().is_err() {
        let field = if s.time_zone.is_some() {
            "spec.trigger.schedule.timeZone"
        } else {
            "the Tenant's spec.timeZone"
        };
        return Err(ValidateError::InvalidTimeZone { field, value: tz });
    }
    Ok(())
}

/// The pass of a rule whose references resolve and whose schedule is valid.
pub fn status(rule: &AutomationRule) -> Pass<AutomationRuleStatus> {
    let health = if rule.spec.suspend {
        Health::Ready {
            reason: reason::SUSPENDED,
            message: "paused: no schedule fires and no event is acted on".into(),
        }
    } else {
        Health::Ready {
            reason: reason::RECONCILED,
            message: "run by the tenant's automation worker".into(),
        }
    };
    Pass::new(rule.current_status(), health)
}

/// Shown on every pass, whatever the health.
fn suspended(rule: &AutomationRule) -> Extra {
    let on = rule.spec.suspend;
    Extra {
        type_: types::SUSPENDED,
        status: on,
        reason: if on {
            reason::SUSPENDED
        } else {
            reason::ACTIVE
        },
        message: String::new(),
    }
}

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
            Ok(resolved) => validate(&rule, &resolved, &ctx.config).on(&object),
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
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

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
            let pass = match validate(&r, &resolved(&t, None), &config) {
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
        let e = validate(&r, &resolved(&t, None), &config).unwrap_err();
        assert_eq!(
            e.to_string(),
            "spec.action.webhook.url http://10.20.0.7:8080/hook is not an allowed destination: a private address"
        );
        config.outbound_allow = "10.20.0.0/16".parse().unwrap();
        assert!(validate(&r, &resolved(&t, None), &config).is_ok());
        config.outbound_deny = "10.20.0.7".parse().unwrap();
        let e = validate(&r, &resolved(&t, None), &config).unwrap_err();
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
        assert!(validate(&r, &ok, &config).is_ok());
        for (kv, want) in [
            (
                ("X-Api-Key", "s3cret\r\nX-Admin: 1"),
                "contains a line break",
            ),
            (("Bad Header", "v"), "is not an HTTP token"),
            (("Idempotency-Key", "v"), "is set by the worker"),
        ] {
            let bad = resolved(&t, Some(("hooks", &[kv])));
            let e = validate(&r, &bad, &config).unwrap_err();
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
        let e = validate(&r, &platform, &config).unwrap_err();
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
        assert!(!usable_by_rules(Some(&managed), "xin-database", &config));
        assert!(usable_by_rules(None, "hooks", &config));
    }
}
