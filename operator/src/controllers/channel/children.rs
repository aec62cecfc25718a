//! What a Channel owns (its generated webhook Secret) and what its status says, as pure
//! functions of the resolved channel and the clock.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff;
use kube::ResourceExt;
use serde::Serialize;
use xin_api::channel::{
    Channel, ChannelStatus, ChannelType, PreviousKeyStatus, TelegramWebhookStatus, WidgetStatus,
};

use super::HANDLED_ROTATION_ANNOTATION;
use super::keys::{KeySet, next_keys};
use super::resolve::ResolvedChannel;
use super::telegram::Plan;
use crate::builders::gateway::webhook_path;
use crate::builders::meta;
use crate::conditions::{Health, reason, types};
use crate::controllers::resolve::webhook_secret_name;
use crate::controllers::runner::{Extra, Note, Pass, Requeue};

/// Everything a Channel owns.
#[derive(Clone, PartialEq, Serialize)]
pub struct ChannelChildren {
    /// The generated webhook Secret; `None` when the key is referenced.
    pub webhook_secret: Option<Secret>,
}

impl std::fmt::Debug for ChannelChildren {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelChildren")
            .field(
                "webhook_secret",
                &self.webhook_secret.as_ref().map(crate::redact::SecretNames),
            )
            .finish()
    }
}

/// The status fields that need nothing resolved.
pub fn base_status(ch: &Channel) -> ChannelStatus {
    let name = ch.name_any();
    ChannelStatus {
        observed_generation: ch.metadata.generation,
        conditions: vec![],
        webhook_path: Some(webhook_path(&name)),
        webhook_url: super::keys::public_url(ch),
        webhook_secret_name: None,
        key_created_at: None,
        previous_key_expires_at: None,
        previous_keys: vec![],
        last_rotation_request: None,
        telegram_webhook: None,
        widget: None,
    }
}

fn grace(ch: &Channel) -> Duration {
    Duration::from_secs(ch.spec.webhook.rotation_grace_period_seconds.max(0) as u64)
}

pub fn build_channel_children(
    ch: &Channel,
    r: &ResolvedChannel,
    now: &jiff::Timestamp,
    fresh_key: impl FnOnce() -> String,
) -> ChannelChildren {
    if ch.spec.webhook.secret_ref.is_some() {
        return ChannelChildren {
            webhook_secret: None,
        };
    }
    let ns = ch.namespace().unwrap_or_default();
    let name = webhook_secret_name(&ch.name_any());
    let url = super::keys::telegram_url(ch);
    let (keys, _) = next_keys(
        r.keys(),
        r.rotate,
        grace(ch),
        *now,
        url.as_deref(),
        fresh_key,
    );
    let data = keys.to_data();
    let mut metadata = meta(ch, &name, &ns, &r.tenant, "channel-webhook");
    // A first key needs no rotation: the current request counts as handled from the start.
    if let Some(req) = &r.requested_rotation {
        metadata.annotations = Some(BTreeMap::from([(
            HANDLED_ROTATION_ANNOTATION.to_string(),
            req.clone(),
        )]));
    }
    ChannelChildren {
        webhook_secret: Some(Secret {
            metadata,
            type_: Some("Opaque".into()),
            data: Some(data),
            ..Secret::default()
        }),
    }
}

/// The pass of a Channel: routable (`Ready`) when its credentials and key resolve; on
/// Telegram, also whether Telegram has the current key (`registration`: this pass's plan and,
/// when it called Telegram and failed, why).
pub fn status(
    ch: &Channel,
    r: &ResolvedChannel,
    built: &ChannelChildren,
    now: &jiff::Timestamp,
    registration: (&Plan, Option<&str>),
) -> Pass<ChannelStatus> {
    let mut status = base_status(ch);
    let mut requeue = Requeue::Resync;
    let wake_at = |t: jiff::Timestamp, requeue: &mut Requeue| {
        let secs = (t.as_second() - now.as_second()).max(0) as u64 + 1;
        let after = Duration::from_secs(secs);
        *requeue = match *requeue {
            Requeue::After(d) if d <= after => Requeue::After(d),
            _ => Requeue::After(after),
        };
    };
    let mut events = vec![];
    match (&ch.spec.webhook.secret_ref, &built.webhook_secret) {
        (Some(r), _) => status.webhook_secret_name = Some(r.name.clone()),
        (None, Some(secret)) => {
            status.webhook_secret_name = secret.metadata.name.clone();
            status.last_rotation_request = r.requested_rotation.clone();
            if let Some(keys) = secret.data.as_ref().and_then(KeySet::from_data) {
                let held = keys.held(ch);
                status.key_created_at = Some(Time(keys.created_at));
                status.previous_key_expires_at = keys.previous.first().map(|p| Time(p.expires_at));
                status.previous_keys = keys
                    .previous
                    .iter()
                    .map(|p| PreviousKeyStatus {
                        expires_at: Time(p.expires_at),
                        held_for_telegram: held && p.expires_at <= *now,
                    })
                    .collect();
                // Wake up when an earlier key expires, to drop it from the Secret and the
                // routes (while held, Telegram's acknowledgement is what ends it).
                if !held && let Some(t) = keys.previous.iter().map(|p| p.expires_at).min() {
                    wake_at(t, &mut requeue);
                }
            }
            if r.rotate {
                events.push(Note {
                    warning: false,
                    reason: reason::WEBHOOK_KEY_ROTATED,
                    message: format!(
                        "new webhook key in Secret {}; the previous key is accepted for {} s{}",
                        status.webhook_secret_name.as_deref().unwrap_or_default(),
                        grace(ch).as_secs(),
                        if super::keys::telegram_url(ch).is_some() {
                            ", and until Telegram has acknowledged the new one"
                        } else {
                            ""
                        }
                    ),
                    action: "Rotate",
                });
            }
        }
        (None, None) => {}
    }
    let (plan, failure) = registration;
    let registered = |status: bool, reason: &'static str, message: String| Extra {
        type_: types::TELEGRAM_WEBHOOK_REGISTERED,
        status,
        reason,
        message,
    };
    let telegram = match plan {
        Plan::NotTelegram => None,
        Plan::KeyReferenced => Some(registered(
            false,
            reason::KEY_NOT_GENERATED,
            "spec.webhook.secretRef is set: register the webhook with Telegram yourself (setWebhook with this URL and the key as secret_token)".into(),
        )),
        Plan::NoPublicUrl => Some(registered(
            false,
            reason::NO_PUBLIC_URL,
            "no spec.ingress.host, so no public URL: nothing is registered with Telegram; call setWebhook yourself with your URL and the key as secret_token".into(),
        )),
        Plan::Registered { url, at } => {
            status.telegram_webhook = Some(TelegramWebhookStatus {
                url: url.clone(),
                registered_at: Some(Time(*at)),
            });
            Some(registered(
                true,
                reason::REGISTERED,
                format!("Telegram delivers to {url} with the current key"),
            ))
        }
        Plan::Register { url } | Plan::Wait { url, .. } => {
            status.telegram_webhook = Some(TelegramWebhookStatus {
                url: url.clone(),
                registered_at: None,
            });
            match (plan, failure) {
                (_, Some(why)) => {
                    requeue = Requeue::After(Duration::from_secs(30));
                    Some(registered(
                        false,
                        reason::REGISTRATION_FAILED,
                        format!("{why}; retrying in 30 s (earlier keys stay accepted until Telegram acknowledges)"),
                    ))
                }
                (Plan::Wait { until, .. }, None) => {
                    wake_at(*until, &mut requeue);
                    Some(registered(
                        false,
                        reason::REGISTRATION_PENDING,
                        format!("registering the current key with Telegram at {until}, once the gateway has loaded it"),
                    ))
                }
                _ => Some(registered(
                    false,
                    reason::REGISTRATION_PENDING,
                    "registering the current key with Telegram".into(),
                )),
            }
        }
    };
    let cred = match &r.credentials {
        Ok(_) => Extra {
            type_: types::CREDENTIALS_RESOLVED,
            status: true,
            reason: reason::RESOLVED,
            message: "every referenced Secret key was found".into(),
        },
        Err(e) => Extra {
            type_: types::CREDENTIALS_RESOLVED,
            status: false,
            reason: e.reason,
            message: e.message.clone(),
        },
    };
    let problem = r
        .referenced_key
        .as_ref()
        .or(r.credentials.as_ref().err())
        .or(r.ingress.as_ref());
    // Ready with a public host: how a site embeds the widget.
    if problem.is_none()
        && ch.spec.type_ == ChannelType::Web
        && let Some(ing) = &ch.spec.ingress
    {
        status.widget = Some(widget_status(
            &format!("https://{}", ing.host),
            &ch.name_any(),
        ));
    }
    let health = match problem {
        Some(p) => Health::Stalled {
            reason: p.reason,
            message: p.message.clone(),
        },
        None if ch.spec.suspend => Health::Ready {
            reason: reason::SUSPENDED,
            message: "suspended: the gateway answers 503 on this channel".into(),
        },
        None => Health::Ready {
            reason: reason::RECONCILED,
            message: format!("served by the gateway of Tenant {}", r.tenant),
        },
    };
    let mut pass = Pass::new(status, health).with_extra(cred).requeue(requeue);
    if let Some(t) = telegram {
        pass = pass.with_extra(t);
    }
    pass.events = events;
    pass
}

/// The widget's script, integrity and snippet for the gateway at `base` (`https://host`).
fn widget_status(base: &str, channel: &str) -> WidgetStatus {
    use xin_api::widget;
    WidgetStatus {
        script_url: format!("{base}{}", widget::script_path()),
        integrity: widget::integrity().to_string(),
        channel_url: format!("{base}{}", widget::channel_path(channel)),
        snippet: widget::snippet(base, channel),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;
    use xin_api::routes::Credentials;

    use super::*;
    use crate::controllers::runner::Outcome;
    use crate::error::Problem;
    use crate::golden;

    fn now() -> jiff::Timestamp {
        "2026-11-30T12:00:00Z".parse().unwrap()
    }

    fn channel(spec_extra: serde_json::Value) -> Channel {
        let mut spec = serde_json::json!({"type": "telegram", "displayName": "bot",
            "telegram": {"botTokenSecretRef": {"name": "tg", "key": "token"}}});
        spec.as_object_mut()
            .unwrap()
            .extend(spec_extra.as_object().unwrap().clone());
        let mut c: Channel = serde_json::from_value(serde_json::json!({
            "apiVersion": "xin.dev/v1alpha1", "kind": "Channel",
            "metadata": {"name": "bot", "namespace": "xin-acme", "uid": "uid-bot", "generation": 2},
            "spec": spec,
        }))
        .unwrap();
        c.metadata.annotations = None;
        c
    }

    fn resolved(secret: Option<Secret>, rotate: Option<&str>) -> ResolvedChannel {
        ResolvedChannel {
            tenant: "acme".into(),
            tenant_object: None,
            credentials: Ok(Credentials::default()),
            referenced_key: None,
            ingress: None,
            webhook_secret: secret,
            rotate: rotate.is_some(),
            fresh: false,
            requested_rotation: rotate.map(String::from),
        }
    }

    fn existing(handled: Option<&str>) -> Secret {
        let b = |s: &str| ByteString(s.as_bytes().to_vec());
        let mut s = Secret {
            data: Some(BTreeMap::from([
                ("current".to_string(), b("k-old")),
                ("current-created-at".to_string(), b("2026-11-01T00:00:00Z")),
            ])),
            ..Secret::default()
        };
        if let Some(h) = handled {
            s.metadata.annotations = Some(BTreeMap::from([(
                HANDLED_ROTATION_ANNOTATION.to_string(),
                h.to_string(),
            )]));
        }
        s
    }

    /// The pass with the registration this pass would plan and no call to Telegram.
    fn plain_status(
        ch: &Channel,
        r: &ResolvedChannel,
        built: &ChannelChildren,
    ) -> Pass<ChannelStatus> {
        let keys = built
            .webhook_secret
            .as_ref()
            .and_then(|s| s.data.as_ref())
            .and_then(KeySet::from_data);
        let plan = super::super::telegram::plan(ch, keys.as_ref(), now(), Duration::ZERO);
        status(ch, r, built, &now(), (&plan, None))
    }

    /// Builds the children and the pass and checks both against `channel/<name>`.
    fn case(name: &str, ch: &Channel, r: &ResolvedChannel) -> Outcome<ChannelStatus> {
        let built = build_channel_children(ch, r, &now(), || "k-new".into());
        golden::check(&format!("channel/{name}.children"), &built);
        let out = plain_status(ch, r, &built).outcome(ch, &Time(now()));
        golden::check(&format!("channel/{name}.status"), &out);
        out
    }

    #[test]
    fn a_first_key_is_generated_and_the_channel_is_routable() {
        let ch = channel(serde_json::json!({"ingress": {"host": "bot.acme.example"}}));
        let out = case("first-key", &ch, &resolved(None, None));
        let s = out.status.unwrap();
        assert_eq!(
            s.webhook_url.as_deref(),
            Some("https://bot.acme.example/webhooks/bot")
        );
        assert!(
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        );
    }

    #[test]
    fn a_rotation_request_makes_a_new_key_keeps_the_old_one_and_says_so() {
        let mut ch = channel(serde_json::json!({}));
        ch.metadata.annotations = Some(BTreeMap::from([(
            xin_api::channel::ROTATE_ANNOTATION.to_string(),
            "2".to_string(),
        )]));
        let out = case(
            "rotation",
            &ch,
            &resolved(Some(existing(Some("1"))), Some("2")),
        );
        assert_eq!(out.events.len(), 1);
        assert_eq!(out.events[0].reason, reason::WEBHOOK_KEY_ROTATED);
        // The previous key's expiry wakes the channel to drop it.
        assert_eq!(out.requeue, Requeue::After(Duration::from_secs(901)));
    }

    #[test]
    fn a_referenced_key_owns_nothing() {
        let ch =
            channel(serde_json::json!({"webhook": {"secretRef": {"name": "mine", "key": "k"}}}));
        let out = case("referenced-key", &ch, &resolved(None, None));
        assert_eq!(
            out.status.unwrap().webhook_secret_name.as_deref(),
            Some("mine")
        );
    }

    #[test]
    fn missing_credentials_stall_the_channel_but_its_key_is_made() {
        let ch = channel(serde_json::json!({}));
        let mut r = resolved(None, None);
        r.credentials = Err(Problem {
            reason: reason::SECRET_NOT_FOUND,
            message: "Secret xin-acme/tg not found".into(),
        });
        let out = case("missing-credentials", &ch, &r);
        assert!(out.stalled);
        let s = out.status.unwrap();
        let cred = s
            .conditions
            .iter()
            .find(|c| c.type_ == types::CREDENTIALS_RESOLVED)
            .unwrap();
        assert_eq!(
            (cred.status.as_str(), cred.reason.as_str()),
            ("False", reason::SECRET_NOT_FOUND)
        );
    }

    #[test]
    fn a_key_time_with_fractions_compares_equal_to_the_stored_status() {
        // Secrets written by earlier versions hold sub-second times; the API server stores
        // status times in whole seconds. The second pass must find nothing to write.
        let ch = channel(serde_json::json!({}));
        let mut secret = existing(None);
        secret.data.as_mut().unwrap().insert(
            "current-created-at".into(),
            ByteString(b"2026-11-01T00:00:00.123456Z".to_vec()),
        );
        let r = resolved(Some(secret), None);
        let built = build_channel_children(&ch, &r, &now(), || "k-new".into());
        let first = plain_status(&ch, &r, &built).outcome(&ch, &Time(now()));
        // What the API server gives back: the status as JSON, times in whole seconds.
        let stored: ChannelStatus =
            serde_json::from_value(serde_json::to_value(first.status.unwrap()).unwrap()).unwrap();
        let mut ch2 = ch.clone();
        ch2.status = Some(stored);
        let again = plain_status(&ch2, &r, &built).outcome(&ch2, &Time(now()));
        assert!(again.status.is_none(), "{:?}", again.status);
    }

    #[test]
    fn a_suspended_channel_stays_routable_and_says_so() {
        let ch = channel(serde_json::json!({"suspend": true}));
        let out = case("suspended", &ch, &resolved(Some(existing(None)), None));
        let s = out.status.unwrap();
        let ready = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", reason::SUSPENDED)
        );
    }

    #[test]
    fn a_ready_web_channel_with_a_host_shows_the_snippet() {
        let web = |extra: serde_json::Value| {
            let mut spec = serde_json::json!({"type": "web", "displayName": "site",
                "web": {"allowedOrigins": ["https://shop.example"], "identitySecretRef": {"name": "s", "key": "k"}}});
            spec.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            let mut ch = channel(serde_json::json!({}));
            ch.spec = serde_json::from_value(spec).unwrap();
            ch
        };
        let r = resolved(Some(existing(None)), None);
        let ch = web(serde_json::json!({"ingress": {"host": "chat.acme.example"}}));
        let built = build_channel_children(&ch, &r, &now(), || "k-new".into());
        let w = plain_status(&ch, &r, &built)
            .outcome(&ch, &Time(now()))
            .status
            .unwrap()
            .widget
            .expect("a snippet once Ready with a host");
        let script = format!(
            "https://chat.acme.example{}",
            xin_api::widget::script_path()
        );
        assert_eq!(w.script_url, script);
        assert_eq!(w.channel_url, "https://chat.acme.example/widget/bot");
        assert_eq!(w.integrity, xin_api::widget::integrity());
        assert!(
            w.snippet.contains(&format!(r#"src="{script}""#))
                && w.snippet
                    .contains(&format!(r#"integrity="{}""#, w.integrity)),
            "{}",
            w.snippet
        );
        // No host: no public URL to give; not Ready: nothing to paste yet.
        let no_host = web(serde_json::json!({}));
        let built = build_channel_children(&no_host, &r, &now(), || "k-new".into());
        let s = plain_status(&no_host, &r, &built).outcome(&no_host, &Time(now()));
        assert_eq!(s.status.unwrap().widget, None);
        let mut stalled = resolved(Some(existing(None)), None);
        stalled.credentials = Err(Problem {
            reason: reason::SECRET_NOT_FOUND,
            message: "Secret xin-acme/s not found".into(),
        });
        let s = plain_status(&ch, &stalled, &built).outcome(&ch, &Time(now()));
        assert!(s.stalled);
        assert_eq!(s.status.unwrap().widget, None);
    }
}
