//! Reading what a spec refers to (the "dereference" step): Secrets, keys, the owning Tenant,
//! and a Channel's webhook keys. A problem the user must fix is a [`Problem`] (it becomes a
//! `Stalled` condition and an Event), not an error. Secret values never leave this module in a
//! message.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff;
use kube::{Api, Client, ResourceExt};
use xin_api::SecretKeyRef;
use xin_api::channel::{Channel, ChannelType};
use xin_api::routes::{ChannelRoute, Credentials, WebhookKey};
use xin_api::tenant::{Tenant, tenant_of_namespace};

use crate::builders::gateway::webhook_path;
use crate::conditions::reason;
use crate::error::Result;

/// Something only the user can fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub reason: &'static str,
    pub message: String,
}

impl Problem {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Problem {
            reason,
            message: message.into(),
        }
    }
}

pub type Resolved<T> = std::result::Result<T, Problem>;

/// Reads a Secret; `Ok(None)` when it does not exist.
pub async fn secret(client: &Client, ns: &str, name: &str) -> Result<Option<Secret>> {
    Ok(Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await?)
}

/// Reads one key of a Secret, as bytes.
pub async fn secret_key(client: &Client, ns: &str, r: &SecretKeyRef) -> Result<Resolved<Vec<u8>>> {
    let Some(s) = secret(client, ns, &r.name).await? else {
        return Ok(Err(Problem::new(
            reason::SECRET_NOT_FOUND,
            format!("Secret {ns}/{} not found", r.name),
        )));
    };
    Ok(match s.data.as_ref().and_then(|d| d.get(&r.key)) {
        Some(ByteString(v)) => Ok(v.clone()),
        None => Err(Problem::new(
            reason::SECRET_KEY_MISSING,
            format!("Secret {ns}/{} has no key {:?}", r.name, r.key),
        )),
    })
}

/// Checks a whole Secret exists.
pub async fn secret_exists(client: &Client, ns: &str, name: &str) -> Result<Resolved<()>> {
    Ok(match secret(client, ns, name).await? {
        Some(_) => Ok(()),
        None => Err(Problem::new(
            reason::SECRET_NOT_FOUND,
            format!("Secret {ns}/{name} not found"),
        )),
    })
}

async fn secret_string(client: &Client, ns: &str, r: &SecretKeyRef) -> Result<Resolved<String>> {
    Ok(secret_key(client, ns, r).await?.and_then(|v| {
        String::from_utf8(v).map_err(|_| {
            Problem::new(
                reason::SECRET_KEY_MISSING,
                format!("Secret {ns}/{} key {:?} is not UTF-8 text", r.name, r.key),
            )
        })
    }))
}

/// The Tenant that owns namespace `ns`: the namespace name says which one, and the Tenant must
/// exist and record `ns` as its namespace. Labels prove nothing.
pub async fn owning_tenant(client: &Client, ns: &str) -> Result<Resolved<Tenant>> {
    let Some(name) = tenant_of_namespace(ns) else {
        return Ok(Err(Problem::new(
            reason::TENANT_NOT_FOUND,
            format!(
                "namespace {ns} belongs to no Tenant (tenant namespaces are named xin-<tenant>)"
            ),
        )));
    };
    let tenant = Api::<Tenant>::all(client.clone()).get_opt(name).await?;
    Ok(match tenant {
        // A Tenant being decommissioned has had its secrets deleted on purpose: nothing may
        // recreate them.
        Some(t) if t.metadata.deletion_timestamp.is_some() => Err(Problem::new(
            reason::TENANT_DELETING,
            format!("Tenant {name} is being deleted"),
        )),
        Some(t) if t.status.as_ref().and_then(|s| s.namespace.as_deref()) == Some(ns) => Ok(t),
        Some(_) => Err(Problem::new(
            reason::TENANT_NOT_READY,
            format!("Tenant {name} has not set up namespace {ns} yet"),
        )),
        None => Err(Problem::new(
            reason::TENANT_NOT_FOUND,
            format!("namespace {ns} belongs to no Tenant: Tenant {name} not found"),
        )),
    })
}

/// Keys in a generated webhook Secret.
pub mod webhook_keys {
    pub const CURRENT: &str = "current";
    pub const CURRENT_CREATED_AT: &str = "current-created-at";
    pub const PREVIOUS: &str = "previous";
    pub const PREVIOUS_EXPIRES_AT: &str = "previous-expires-at";
}

/// Name of a Channel's generated webhook Secret.
pub fn webhook_secret_name(channel: &str) -> String {
    format!("{channel}-webhook")
}

/// The webhook keys a channel accepts now: the current key, and the previous one while its
/// grace period lasts. Reads the referenced Secret or the generated one.
pub async fn webhook_keys(
    client: &Client,
    ch: &Channel,
    now: jiff::Timestamp,
) -> Result<Resolved<Vec<WebhookKey>>> {
    let ns = ch.namespace().unwrap_or_default();
    if let Some(r) = &ch.spec.webhook.secret_ref {
        return Ok(secret_string(client, &ns, r).await?.map(|key| {
            vec![WebhookKey {
                key,
                expires_at: None,
            }]
        }));
    }
    let name = webhook_secret_name(&ch.name_any());
    let Some(s) = secret(client, &ns, &name).await? else {
        return Ok(Err(Problem::new(
            reason::SECRET_NOT_FOUND,
            format!("webhook Secret {ns}/{name} not created yet"),
        )));
    };
    Ok(Ok(keys_from_data(
        s.data.as_ref().unwrap_or(&BTreeMap::new()),
        now,
    )))
}

/// The accepted keys in a generated webhook Secret's data at `now`.
pub fn keys_from_data(
    data: &BTreeMap<String, ByteString>,
    now: jiff::Timestamp,
) -> Vec<WebhookKey> {
    let text = |k: &str| {
        data.get(k)
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
    };
    let mut out = Vec::new();
    if let Some(key) = text(webhook_keys::CURRENT) {
        out.push(WebhookKey {
            key,
            expires_at: None,
        });
    }
    if let (Some(key), Some(exp)) = (
        text(webhook_keys::PREVIOUS),
        text(webhook_keys::PREVIOUS_EXPIRES_AT),
    ) && exp.parse::<jiff::Timestamp>().is_ok_and(|t| t > now)
    {
        out.push(WebhookKey {
            key,
            expires_at: exp.parse().ok().map(xin_api::routes::Time),
        });
    }
    out
}

/// Reads every credential a channel's type needs.
pub async fn credentials(client: &Client, ch: &Channel) -> Result<Resolved<Credentials>> {
    let ns = ch.namespace().unwrap_or_default();
    let mut c = Credentials::default();
    macro_rules! read {
        ($r:expr) => {
            match secret_string(client, &ns, $r).await? {
                Ok(v) => Some(v),
                Err(p) => return Ok(Err(p)),
            }
        };
    }
    match ch.spec.type_ {
        ChannelType::Telegram => {
            let Some(t) = &ch.spec.telegram else {
                return Ok(Err(missing_section("telegram")));
            };
            c.bot_token = read!(&t.bot_token_secret_ref);
        }
        ChannelType::Whatsapp | ChannelType::Instagram => {
            let Some(m) = &ch.spec.meta else {
                return Ok(Err(missing_section("meta")));
            };
            c.app_secret = read!(&m.app_secret_ref);
            c.access_token = read!(&m.access_token_secret_ref);
            if let Some(v) = &m.verify_token_secret_ref {
                c.verify_token = read!(v);
            }
        }
        ChannelType::Web => {
            let Some(w) = &ch.spec.web else {
                return Ok(Err(missing_section("web")));
            };
            c.identity_secret = read!(&w.identity_secret_ref);
        }
    }
    Ok(Ok(c))
}

fn missing_section(s: &str) -> Problem {
    Problem::new(
        "InvalidSpec",
        format!("spec.{s} is required for this channel type"),
    )
}

/// Everything the gateway needs to serve a channel, or why it cannot yet.
pub async fn channel_route(
    client: &Client,
    ch: &Channel,
    now: jiff::Timestamp,
) -> Result<Resolved<ChannelRoute>> {
    let creds = match credentials(client, ch).await? {
        Ok(c) => c,
        Err(p) => return Ok(Err(p)),
    };
    let keys = match webhook_keys(client, ch, now).await? {
        Ok(k) if !k.is_empty() => k,
        Ok(_) => {
            return Ok(Err(Problem::new(
                reason::SECRET_KEY_MISSING,
                "the webhook Secret holds no key",
            )));
        }
        Err(p) => return Ok(Err(p)),
    };
    let s = &ch.spec;
    Ok(Ok(ChannelRoute {
        name: ch.name_any(),
        type_: s.type_,
        path: webhook_path(&ch.name_any()),
        suspended: s.suspend,
        max_body_bytes: s.max_body_bytes,
        requests_per_second: s.rate_limit.requests_per_second,
        burst: s.rate_limit.burst,
        keys,
        credentials: creds,
        allowed_origins: s
            .web
            .as_ref()
            .map(|w| w.allowed_origins.clone())
            .unwrap_or_default(),
        phone_number_id: s.meta.as_ref().and_then(|m| m.phone_number_id.clone()),
        page_id: s.meta.as_ref().and_then(|m| m.page_id.clone()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_previous_keys_are_not_accepted() {
        let now: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let mut data = BTreeMap::from([
            (
                webhook_keys::CURRENT.to_string(),
                ByteString(b"new".to_vec()),
            ),
            (
                webhook_keys::PREVIOUS.to_string(),
                ByteString(b"old".to_vec()),
            ),
            (
                webhook_keys::PREVIOUS_EXPIRES_AT.to_string(),
                ByteString(b"2026-01-01T00:10:00Z".to_vec()),
            ),
        ]);
        let keys = keys_from_data(&data, now);
        assert_eq!(
            keys.iter().map(|k| k.key.as_str()).collect::<Vec<_>>(),
            ["new", "old"]
        );
        assert_eq!(
            keys[1].expires_at.as_ref().map(|t| t.0),
            Some("2026-01-01T00:10:00Z".parse().unwrap())
        );
        data.insert(
            webhook_keys::PREVIOUS_EXPIRES_AT.into(),
            ByteString(b"2025-12-31T23:59:59Z".to_vec()),
        );
        assert_eq!(keys_from_data(&data, now).len(), 1);
    }
}
