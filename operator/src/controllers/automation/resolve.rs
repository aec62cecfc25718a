//! What a rule refers to: its Tenant and the Secrets its action names, from the watches.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::ByteString;
use kube::ResourceExt;
use xin_api::automation::AutomationRule;
use xin_api::tenant::Tenant;

use crate::config::Config;
use crate::controllers::Context;
use crate::controllers::resolve::{owning_tenant, secret_exists, secret_key};
use crate::error::ResolveError;

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
pub(super) async fn resolve(
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
                crate::controllers::resolve::secret(&secrets, &ns, n).as_deref(),
                n,
                &tenant,
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
            let s = crate::controllers::resolve::secret(&secrets, &ns, &r.name)?;
            Some((r.name.clone(), s.data.clone().unwrap_or_default()))
        });
    Ok(Resolved {
        tenant,
        headers,
        platform,
    })
}

/// Whether a rule may name Secret `name`: not one the operator manages (database credentials,
/// the signing key, routes, webhook keys), nor one the Tenant names for its own database (a
/// bring-your-own runtime or owner URL), nor the platform's telemetry headers — the worker
/// would be granted it and could send it to the tenant's URL.
pub fn usable_by_rules(
    secret: Option<&k8s_openapi::api::core::v1::Secret>,
    name: &str,
    tenant: &Tenant,
    config: &Config,
) -> bool {
    let managed = secret
        .and_then(|s| s.metadata.labels.as_ref())
        .and_then(|l| l.get(crate::builders::MANAGED_BY.0))
        .is_some_and(|v| v == crate::builders::MANAGED_BY.1);
    let db = &tenant.spec.database;
    let database = [&db.url_secret_ref, &db.owner_url_secret_ref]
        .into_iter()
        .flatten()
        .any(|r| r.name == name);
    !managed && !database && config.otel_tenant_headers_secret.as_deref() != Some(name)
}
