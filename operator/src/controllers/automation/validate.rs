//! The checks the API server's schema cannot make on a rule.

use xin_api::automation::schedule::parse_cron;
use xin_api::automation::{AutomationRule, check_header, template};

use super::Resolved;
use crate::config::Config;
use crate::error::ValidateError;

/// The webhook and CRM URLs are not destinations the outbound policy refuses by their
/// literal host (the worker checks what names resolve to); the templates render (a CRM body
/// to valid JSON) for sample runs of the rule's triggers; the webhook's extra headers can be
/// sent; and the schedule parses as a 5-field crontab, in a time zone the tz database knows.
pub fn validate(
    rule: &AutomationRule,
    resolved: &Resolved,
    config: &Config,
    now: chrono::DateTime<chrono::Utc>,
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
        && !xin_api::automation::schedule::fires(&cron, zone, now)
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
