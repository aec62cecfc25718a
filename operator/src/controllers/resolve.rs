//! Reading what a spec refers to (the resolve step shared by the controllers): Secrets and
//! their keys, the owning Tenant, a Channel's webhook keys and credentials — all from the
//! watches' stores, never a request. A problem the user must fix is a [`ResolveError`] that
//! the runner shows as `Stalled`. Secret values never leave this module in a message.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use xin_api::SecretKeyRef;
use xin_api::channel::{Channel, ChannelType};
use xin_api::routes::{ChannelRoute, Credentials, WebhookKey};
use xin_api::tenant::{Tenant, tenant_of_namespace};

use crate::builders::gateway::webhook_path;
use crate::controllers::channel::keys::{KeySet, telegram_accepts};
use crate::error::{ResolveError, ValidateError};

/// Reads a Secret of `ns` from the namespace's watch.
pub fn secret(secrets: &Store<Secret>, ns: &str, name: &str) -> Option<std::sync::Arc<Secret>> {
    secrets.get(&ObjectRef::new(name).within(ns))
}

/// One key of a Secret, as bytes. A value that is empty or only whitespace is refused: an empty
/// credential must never become an empty signature or token that something accepts.
pub fn secret_key(
    secrets: &Store<Secret>,
    ns: &str,
    r: &SecretKeyRef,
) -> Result<Vec<u8>, ResolveError> {
    let s = secret(secrets, ns, &r.name).ok_or_else(|| ResolveError::SecretNotFound {
        namespace: ns.into(),
        name: r.name.clone(),
    })?;
    match s.data.as_ref().and_then(|d| d.get(&r.key)) {
        Some(ByteString(v)) if v.trim_ascii().is_empty() => Err(ResolveError::SecretValueEmpty {
            namespace: ns.into(),
            name: r.name.clone(),
            key: r.key.clone(),
        }),
        Some(ByteString(v)) => Ok(v.clone()),
        None => Err(ResolveError::SecretKeyMissing {
            namespace: ns.into(),
            name: r.name.clone(),
            key: r.key.clone(),
        }),
    }
}

/// Checks a whole Secret exists.
pub fn secret_exists(secrets: &Store<Secret>, ns: &str, name: &str) -> Result<(), ResolveError> {
    secret(secrets, ns, name)
        .map(|_| ())
        .ok_or_else(|| ResolveError::SecretNotFound {
            namespace: ns.into(),
            name: name.into(),
        })
}

/// One key of a Secret, as text.
pub fn secret_string(
    secrets: &Store<Secret>,
    ns: &str,
    r: &SecretKeyRef,
) -> Result<String, ResolveError> {
    String::from_utf8(secret_key(secrets, ns, r)?).map_err(|_| ResolveError::SecretKeyNotText {
        namespace: ns.into(),
        name: r.name.clone(),
        key: r.key.clone(),
    })
}

/// The Tenant that owns namespace `ns`: the namespace name says which one, and the Tenant must
/// exist and record `ns` as its namespace. Labels prove nothing.
pub fn owning_tenant(
    tenants: &Store<Tenant>,
    ns: &str,
) -> Result<std::sync::Arc<Tenant>, ResolveError> {
    let name = tenant_of_namespace(ns).ok_or_else(|| ResolveError::NotATenantNamespace {
        namespace: ns.into(),
    })?;
    let t = tenants
        .get(&ObjectRef::new(name))
        .ok_or_else(|| ResolveError::TenantNotFound {
            namespace: ns.into(),
            tenant: name.into(),
        })?;
    if t.metadata.deletion_timestamp.is_some() {
        // A Tenant being decommissioned has had its secrets deleted on purpose: nothing may
        // recreate them.
        return Err(ResolveError::TenantDeleting {
            tenant: name.into(),
        });
    }
    if t.status.as_ref().and_then(|s| s.namespace.as_deref()) != Some(ns) {
        return Err(ResolveError::TenantNotReady {
            namespace: ns.into(),
            tenant: name.into(),
        });
    }
    Ok(t)
}

/// Name of a Channel's generated webhook Secret.
pub fn webhook_secret_name(channel: &str) -> String {
    format!("{channel}-webhook")
}

/// The webhook keys a channel accepts now: the current key, and earlier ones while their
/// grace period lasts (or Telegram has not moved on: see [`KeySet::held`]). Reads the
/// referenced Secret or the generated one. A referenced key on a Telegram channel must be one
/// Telegram accepts as a `secret_token`.
pub fn webhook_keys(
    secrets: &Store<Secret>,
    ch: &Channel,
    now: jiff::Timestamp,
) -> Result<Vec<WebhookKey>, ResolveError> {
    let ns = ch.namespace().unwrap_or_default();
    if let Some(r) = &ch.spec.webhook.secret_ref {
        return Ok(vec![WebhookKey {
            key: referenced_key(secrets, &ns, ch, r)?,
            expires_at: None,
        }]);
    }
    let name = webhook_secret_name(&ch.name_any());
    let s = secret(secrets, &ns, &name).ok_or_else(|| ResolveError::SecretNotFound {
        namespace: ns.clone(),
        name: name.clone(),
    })?;
    let keys = KeySet::from_data(s.data.as_ref().unwrap_or(&BTreeMap::new())).ok_or(
        ResolveError::WebhookKeyMissing {
            namespace: ns,
            name,
        },
    )?;
    Ok(keys.accepted(now, keys.held(ch)))
}

/// A Channel's own webhook key (`spec.webhook.secretRef`), checked against Telegram's rules on
/// a Telegram channel: a token Telegram would refuse is never served.
pub fn referenced_key(
    secrets: &Store<Secret>,
    ns: &str,
    ch: &Channel,
    r: &SecretKeyRef,
) -> Result<String, ResolveError> {
    let v = secret_key(secrets, ns, r)?;
    if ch.spec.type_ == ChannelType::Telegram && !telegram_accepts(&v) {
        return Err(ResolveError::InvalidTelegramSecretToken {
            namespace: ns.into(),
            name: r.name.clone(),
            key: r.key.clone(),
        });
    }
    String::from_utf8(v).map_err(|_| ResolveError::SecretKeyNotText {
        namespace: ns.into(),
        name: r.name.clone(),
        key: r.key.clone(),
    })
}

/// A spec section the channel type needs (the API server refuses a Channel without it; this
/// guards objects written before that rule).
fn section<'a, T>(s: &'a Option<T>, section: &'static str) -> Result<&'a T, ValidateError> {
    s.as_ref().ok_or(ValidateError::MissingSection { section })
}

/// The credentials a channel's type needs, read from the namespace's Secrets.
pub fn credentials(
    secrets: &Store<Secret>,
    ch: &Channel,
) -> Result<Credentials, crate::error::Cause> {
    let ns = ch.namespace().unwrap_or_default();
    let read = |r: &SecretKeyRef| secret_string(secrets, &ns, r).map(Some);
    let mut c = Credentials::default();
    match ch.spec.type_ {
        ChannelType::Telegram => {
            let t = section(&ch.spec.telegram, "telegram")?;
            c.bot_token = read(&t.bot_token_secret_ref)?;
        }
        ChannelType::Whatsapp | ChannelType::Instagram => {
            let m = section(&ch.spec.meta, "meta")?;
            c.app_secret = read(&m.app_secret_ref)?;
            c.access_token = read(&m.access_token_secret_ref)?;
            if let Some(v) = &m.verify_token_secret_ref {
                c.verify_token = read(v)?;
            }
        }
        ChannelType::Web => {
            let w = section(&ch.spec.web, "web")?;
            c.identity_secret = read(&w.identity_secret_ref)?;
        }
    }
    Ok(c)
}

/// A Meta channel's earlier app secrets that have not expired at `now` (expired ones are not
/// read, so their Secrets may be gone).
pub fn previous_app_secrets(
    secrets: &Store<Secret>,
    ch: &Channel,
    now: jiff::Timestamp,
) -> Result<Vec<WebhookKey>, crate::error::Cause> {
    let ns = ch.namespace().unwrap_or_default();
    let Some(m) = &ch.spec.meta else {
        return Ok(vec![]);
    };
    m.previous_app_secrets
        .iter()
        .filter(|p| p.expires_at.0 > now)
        .map(|p| {
            Ok(WebhookKey {
                key: secret_string(secrets, &ns, &p.secret_ref)?,
                expires_at: Some(p.expires_at.clone()),
            })
        })
        .collect()
}

/// Everything the gateway needs to serve a channel, or why it cannot.
pub fn channel_route(
    secrets: &Store<Secret>,
    ch: &Channel,
    now: jiff::Timestamp,
) -> Result<ChannelRoute, crate::error::Cause> {
    let mut credentials = credentials(secrets, ch)?;
    credentials.previous_app_secrets = previous_app_secrets(secrets, ch, now)?;
    let keys = webhook_keys(secrets, ch, now)?;
    let s = &ch.spec;
    Ok(ChannelRoute {
        name: ch.name_any(),
        type_: s.type_,
        path: webhook_path(&ch.name_any()),
        suspended: s.suspend,
        max_body_bytes: s.max_body_bytes,
        requests_per_second: s.rate_limit.requests_per_second,
        burst: s.rate_limit.burst,
        keys,
        credentials,
        allowed_origins: s
            .web
            .as_ref()
            .map(|w| w.allowed_origins.clone())
            .unwrap_or_default(),
        phone_number_id: s.meta.as_ref().and_then(|m| m.phone_number_id.clone()),
        page_id: s.meta.as_ref().and_then(|m| m.page_id.clone()),
        legacy_identity_tokens: s
            .web
            .as_ref()
            .is_some_and(|w| w.accept_legacy_identity_tokens),
        anonymous_visitors: s.web.as_ref().is_some_and(|w| w.anonymous_visitors),
        display_name: s.web.as_ref().map(|_| s.display_name.clone()),
        theme: s.web.as_ref().and_then(|w| w.theme.clone()),
    })
}
