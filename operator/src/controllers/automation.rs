//! AutomationRule → conditions. The Tenant controller runs the automation worker while rules
//! exist; the worker reports runs in the rule's status under its own field manager, so this
//! controller writes only `observedGeneration` and `conditions`.

use std::sync::Arc;
use std::time::Instant;

use futures::Stream;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::instrument;
use xin_api::automation::AutomationRule;

use super::resolve::{self, Problem};
use super::{Context, error_policy, key, patch_status};
use crate::conditions::{Health, extra, merge, reason};
use crate::error::Result;

const KIND: &str = "AutomationRule";

pub fn controller(
    ctx: Arc<Context>,
) -> impl Stream<Item = super::ControllerResult<AutomationRule>> {
    let controller = Controller::new(
        Api::<AutomationRule>::all(ctx.client.clone()),
        watcher::Config::default().any_semantic(),
    );
    let store = controller.store();
    controller
        .watches(
            Api::<xin_api::Tenant>::all(ctx.client.clone()),
            watcher::Config::default(),
            super::tenant_dependents(store),
        )
        .with_config(
            kube::runtime::controller::Config::default().concurrency(ctx.config.concurrency),
        )
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
}

/// Parses a standard 5-field crontab expression (minute hour day-of-month month day-of-week,
/// Sunday = 0 or 7), refusing the 6- and 7-field forms some libraries accept.
pub fn parse_cron(expr: &str) -> std::result::Result<croner::Cron, String> {
    let fields = expr.split_whitespace().count();
    if fields != 5 {
        return Err(format!(
            "cron {expr:?} has {fields} fields; use standard 5-field crontab syntax (minute hour day-of-month month day-of-week)"
        ));
    }
    expr.parse::<croner::Cron>()
        .map_err(|e| format!("cron {expr:?} is invalid: {e}"))
}

/// What the spec refers to, checked.
async fn check(rule: &AutomationRule, ctx: &Context) -> Result<std::result::Result<(), Problem>> {
    let ns = rule.namespace().unwrap_or_default();
    let tenant = match resolve::owning_tenant(&ctx.client, &ns).await? {
        Ok(t) => t,
        Err(p) => return Ok(Err(p)),
    };
    if let Some(s) = &rule.spec.trigger.schedule {
        if let Err(m) = parse_cron(&s.cron) {
            return Ok(Err(Problem::new(reason::INVALID_SCHEDULE, m)));
        }
        let tz = s.time_zone.clone().unwrap_or(tenant.spec.time_zone.clone());
        if tz.parse::<chrono_tz::Tz>().is_err() {
            return Ok(Err(Problem::new(
                reason::INVALID_TIME_ZONE,
                format!("time zone {tz:?} is not an IANA time zone"),
            )));
        }
    }
    let a = &rule.spec.action;
    let mut keys = Vec::new();
    let mut whole = Vec::new();
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
    for r in &keys {
        if let Err(p) = resolve::secret_key(&ctx.client, &ns, r).await? {
            return Ok(Err(p));
        }
    }
    for n in &whole {
        if let Err(p) = resolve::secret_exists(&ctx.client, &ns, n).await? {
            return Ok(Err(p));
        }
    }
    Ok(Ok(()))
}

#[instrument(skip_all, fields(rule = %rule.name_any(), namespace = rule.namespace().unwrap_or_default()))]
async fn reconcile(rule: Arc<AutomationRule>, ctx: Arc<Context>) -> Result<Action> {
    let start = Instant::now();
    let api = Api::<AutomationRule>::namespaced(
        ctx.client.clone(),
        &rule.namespace().unwrap_or_default(),
    );
    let checked = check(&rule, &ctx).await;
    ctx.metrics.reconciled(KIND, start.elapsed());
    let current = rule.status.clone().unwrap_or_default();
    let g = rule.metadata.generation;
    let (health, action) = match checked? {
        Ok(()) => {
            ctx.reset_backoff(&key(rule.as_ref()));
            let h = if rule.spec.suspend {
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
            (h, ctx.resync())
        }
        Err(p) => {
            ctx.report_stall(rule.object_ref(&()), &current.conditions, &p)
                .await;
            let retry = ctx.retry_after(p.reason, &key(rule.as_ref()));
            (
                Health::Stalled {
                    reason: p.reason,
                    message: p.message,
                },
                Action::requeue(retry),
            )
        }
    };
    let mut desired = health.conditions(g);
    desired.push(extra(
        "Suspended",
        rule.spec.suspend,
        if rule.spec.suspend {
            reason::SUSPENDED
        } else {
            "Active"
        },
        "",
        g,
    ));
    let status =
        json!({"observedGeneration": g, "conditions": merge(&current.conditions, desired)});
    patch_status(&api, rule.as_ref(), status).await?;
    Ok(action)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_crontab_is_accepted_and_other_forms_refused() {
        assert!(parse_cron("0 9 * * 1-5").is_ok());
        assert!(parse_cron("*/15 * * * *").is_ok());
        let six = parse_cron("0 0 9 * * 1-5").unwrap_err();
        assert!(six.contains("6 fields"), "{six}");
        assert!(parse_cron("61 * * * *").is_err());
    }

    #[test]
    fn weekday_numbers_follow_crontab_not_the_cron_crate() {
        // `0 9 * * 1` is Monday 09:00 in crontab; the `cron` crate would read 1 as Sunday.
        use chrono::TimeZone;
        let cron = parse_cron("0 9 * * 1").unwrap();
        let sunday = chrono_tz::Europe::Berlin
            .with_ymd_and_hms(2026, 3, 29, 0, 0, 0)
            .unwrap();
        let next = cron.find_next_occurrence(&sunday, false).unwrap();
        assert_eq!(next.format("%A %H:%M").to_string(), "Monday 09:00");
    }
}
