//! What a Channel owns (its generated webhook Secret) and what its status says, as pure
//! functions of the resolved channel and the clock.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff;
use kube::ResourceExt;
use serde::Serialize;
use xin_api::channel::{Channel, ChannelStatus};

use super::HANDLED_ROTATION_ANNOTATION;
use super::keys::next_webhook_data;
use super::resolve::ResolvedChannel;
use crate::builders::gateway::webhook_path;
use crate::builders::meta;
use crate::conditions::{Health, reason, types};
use crate::controllers::resolve::{webhook_keys as wk, webhook_secret_name};
use crate::controllers::runner::{Extra, Note, Pass, Requeue};

/// Everything a Channel owns.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChannelChildren {
    /// The generated webhook Secret; `None` when the key is referenced.
    pub webhook_secret: Option<Secret>,
}

/// The status fields that need nothing resolved.
pub fn base_status(ch: &Channel) -> ChannelStatus {
    let name = ch.name_any();
    ChannelStatus {
        observed_generation: ch.metadata.generation,
        conditions: vec![],
        webhook_path: Some(webhook_path(&name)),
        webhook_url: ch
            .spec
            .ingress
            .as_ref()
            .map(|ing| format!("https://{}{}", ing.host, webhook_path(&name))),
        webhook_secret_name: None,
        key_created_at: None,
        previous_key_expires_at: None,
        last_rotation_request: None,
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
    let (data, _) = next_webhook_data(
        r.webhook_secret.as_ref().and_then(|s| s.data.as_ref()),
        r.rotate,
        grace(ch),
        *now,
        fresh_key,
    );
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

/// The pass of a Channel: routable (`Ready`) when its credentials and key resolve.
pub fn status(
    ch: &Channel,
    r: &ResolvedChannel,
    built: &ChannelChildren,
    now: &jiff::Timestamp,
) -> Pass<ChannelStatus> {
    let mut status = base_status(ch);
    let mut requeue = Requeue::Resync;
    let mut events = vec![];
    match (&ch.spec.webhook.secret_ref, &built.webhook_secret) {
        (Some(r), _) => status.webhook_secret_name = Some(r.name.clone()),
        (None, Some(secret)) => {
            let data = secret.data.clone().unwrap_or_default();
            let ts = |k: &str| {
                data.get(k)
                    .and_then(|v| std::str::from_utf8(&v.0).ok())
                    .and_then(|s| s.parse::<jiff::Timestamp>().ok())
            };
            status.webhook_secret_name = secret.metadata.name.clone();
            status.last_rotation_request = r.requested_rotation.clone();
            status.key_created_at = ts(wk::CURRENT_CREATED_AT).map(Time);
            let prev = ts(wk::PREVIOUS_EXPIRES_AT);
            status.previous_key_expires_at = prev.map(Time);
            // Wake up when the previous key expires, to drop it from the Secret and the routes.
            if let Some(t) = prev {
                let secs = (t.as_second() - now.as_second()).max(0) as u64 + 1;
                requeue = Requeue::After(Duration::from_secs(secs));
            }
            if r.rotate {
                events.push(Note {
                    warning: false,
                    reason: reason::WEBHOOK_KEY_ROTATED,
                    message: format!(
                        "new webhook key in Secret {}; the previous key is accepted for {} s",
                        status.webhook_secret_name.as_deref().unwrap_or_default(),
                        grace(ch).as_secs()
                    ),
                    action: "Rotate",
                });
            }
        }
        (None, None) => {}
    }
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
    let problem = r.referenced_key.as_ref().or(r.credentials.as_ref().err());
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
    pass.events = events;
    pass
}
