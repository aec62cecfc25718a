//! Completing a Telegram key rotation: Telegram learns a webhook's secret token only through
//! `setWebhook` (<https://core.telegram.org/bots/api#setwebhook>), so after a new key the
//! operator calls it with the Channel's public URL and the new key — once the gateway has had
//! time to load the key — and records Telegram's acknowledgement in the webhook Secret; the
//! earlier keys are kept until then (see [`KeySet::held`](super::keys::KeySet::held)).

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff;
use kube::Api;
use serde_json::json;
use xin_api::channel::{Channel, ChannelType};

use super::children::ChannelChildren;
use super::keys::{KeySet, public_url, telegram_url};
use super::resolve::ResolvedChannel;
use crate::conditions::reason;
use crate::controllers::Context;
use crate::controllers::runner::Note;
use crate::error::ApplyError;

/// What the operator does about a channel's registration with Telegram in this pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Not a Telegram channel: nothing to register, no condition.
    NotTelegram,
    /// The key is the user's own (`spec.webhook.secretRef`): registering it is theirs too.
    KeyReferenced,
    /// No Ingress host, so no public URL to register.
    NoPublicUrl,
    /// Telegram has acknowledged the current key at `url`.
    Registered { url: String, at: jiff::Timestamp },
    /// Register now.
    Register { url: String },
    /// Register at `until`, when the gateway has surely loaded the key (a mounted Secret
    /// reaches a running pod only after the kubelet's sync).
    Wait { url: String, until: jiff::Timestamp },
}

pub fn plan(ch: &Channel, keys: Option<&KeySet>, now: jiff::Timestamp, delay: Duration) -> Plan {
    if ch.spec.type_ != ChannelType::Telegram {
        return Plan::NotTelegram;
    }
    let Some(url) = telegram_url(ch) else {
        return match public_url(ch) {
            Some(_) => Plan::KeyReferenced,
            None => Plan::NoPublicUrl,
        };
    };
    let Some(keys) = keys else {
        // No key yet: the next pass, after the Secret is written, plans.
        return Plan::Wait { url, until: now };
    };
    if let Some(at) = keys.registered_at(&url) {
        return Plan::Registered { url, at };
    }
    let until = keys.created_at + jiff::SignedDuration::from_secs(delay.as_secs() as i64);
    if now >= until {
        Plan::Register { url }
    } else {
        Plan::Wait { url, until }
    }
}

/// This pass's registration: plans it and, when due, calls Telegram and records its
/// acknowledgement in the webhook Secret (`built` then holds what was written). Returns the
/// plan as it stands after, why a call failed, and the Event of a new registration.
pub async fn complete(
    ch: &Channel,
    r: &ResolvedChannel,
    built: &mut ChannelChildren,
    secrets: &Api<Secret>,
    ctx: &Context,
    now: jiff::Timestamp,
) -> Result<(Plan, Option<String>, Option<Note>), ApplyError> {
    let keys = built
        .webhook_secret
        .as_ref()
        .and_then(|s| s.data.as_ref())
        .and_then(KeySet::from_data);
    let delay = Duration::from_secs(ctx.config.telegram_register_delay_seconds);
    let plan = plan(ch, keys.as_ref(), now, delay);
    let (Plan::Register { url }, Some(keys), Some(secret)) =
        (&plan, keys, built.webhook_secret.clone())
    else {
        return Ok((plan, None, None));
    };
    let token = r
        .credentials
        .as_ref()
        .ok()
        .and_then(|c| c.bot_token.clone());
    let result = match (token, &r.ingress) {
        (_, Some(p)) => Err(format!(
            "the Ingress is refused, so nothing is registered: {}",
            p.message
        )),
        (None, None) => Err("the bot token cannot be read (see CredentialsResolved)".into()),
        (Some(token), None) => {
            set_webhook(
                &ctx.http,
                &ctx.config.telegram_api_base,
                &token,
                url,
                &keys.current,
            )
            .await
        }
    };
    if let Err(why) = result {
        tracing::warn!(error = %why, "Telegram webhook registration failed");
        return Ok((plan, Some(why), None));
    }
    let acked = keys.acknowledged(url, now);
    let mut next = secret.clone();
    next.data = Some(acked.to_data());
    crate::apply::apply(secrets, Some(&secret), &next).await?;
    let event = Note {
        warning: false,
        reason: reason::REGISTERED,
        message: format!("Telegram acknowledged the current webhook key at {url}"),
        action: "Register",
    };
    built.webhook_secret = Some(next);
    Ok((self::plan(ch, Some(&acked), now, delay), None, Some(event)))
}

/// Calls `setWebhook` with `url` and `secret_token`. The error names what failed and never
/// the bot token (it is part of the request URL) or the key.
pub async fn set_webhook(
    http: &reqwest::Client,
    api_base: &str,
    bot_token: &str,
    url: &str,
    secret_token: &str,
) -> Result<(), String> {
    let endpoint = format!(
        "{}/bot{bot_token}/setWebhook",
        api_base.trim_end_matches('/')
    );
    let resp = http
        .post(endpoint)
        .json(&json!({"url": url, "secret_token": secret_token}))
        .send()
        .await
        .map_err(|e| format!("Telegram's Bot API is unreachable: {}", e.without_url()))?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    if status.is_success() && body["ok"] == true {
        return Ok(());
    }
    // Redacted before it is cut short, so no part of a token survives a cut through it.
    let description: String = body["description"]
        .as_str()
        .unwrap_or("no description")
        .replace(bot_token, "<bot token>")
        .replace(secret_token, "<key>")
        .chars()
        .take(200)
        .collect();
    Err(format!(
        "Telegram refused setWebhook ({status}): {description}"
    ))
}

#[cfg(test)]
mod tests {
    use super::super::keys::next_keys;
    use super::*;

    fn at(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    fn channel(spec: serde_json::Value) -> Channel {
        let mut base = serde_json::json!({"type": "telegram", "displayName": "bot",
            "telegram": {"botTokenSecretRef": {"name": "tg", "key": "token"}}});
        base.as_object_mut()
            .unwrap()
            .extend(spec.as_object().unwrap().clone());
        serde_json::from_value(serde_json::json!({
            "apiVersion": "xin.dev/v1alpha1", "kind": "Channel",
            "metadata": {"name": "bot", "namespace": "xin-acme"}, "spec": base}))
        .unwrap()
    }

    #[test]
    fn a_new_key_is_registered_after_the_delay_then_is_registered() {
        let ch = channel(serde_json::json!({"ingress": {"host": "hooks.acme.example"}}));
        let url = "https://hooks.acme.example/webhooks/bot".to_string();
        let t0 = at("2026-01-01T00:00:00Z");
        let delay = Duration::from_secs(120);
        assert_eq!(
            plan(&ch, None, t0, delay),
            Plan::Wait {
                url: url.clone(),
                until: t0
            }
        );
        let (k, _) = next_keys(None, false, Duration::ZERO, t0, None, || "k".into());
        assert_eq!(
            plan(&ch, Some(&k), t0, delay),
            Plan::Wait {
                url: url.clone(),
                until: at("2026-01-01T00:02:00Z")
            }
        );
        let t1 = at("2026-01-01T00:02:00Z");
        assert_eq!(
            plan(&ch, Some(&k), t1, delay),
            Plan::Register { url: url.clone() }
        );
        let k = k.acknowledged(&url, t1);
        assert_eq!(
            plan(&ch, Some(&k), t1, delay),
            Plan::Registered { url, at: t1 }
        );
    }

    #[test]
    fn without_a_public_url_or_with_the_users_key_nothing_is_registered() {
        let t0 = at("2026-01-01T00:00:00Z");
        let (k, _) = next_keys(None, false, Duration::ZERO, t0, None, || "k".into());
        let d = Duration::ZERO;
        assert_eq!(
            plan(&channel(serde_json::json!({})), Some(&k), t0, d),
            Plan::NoPublicUrl
        );
        let own = channel(serde_json::json!({"ingress": {"host": "h.example"},
            "webhook": {"secretRef": {"name": "mine", "key": "k"}}}));
        assert_eq!(plan(&own, None, t0, d), Plan::KeyReferenced);
        let mut web = channel(serde_json::json!({"ingress": {"host": "h.example"}}));
        web.spec.type_ = ChannelType::Web;
        assert_eq!(plan(&web, Some(&k), t0, d), Plan::NotTelegram);
    }
}
