//! Channel → its webhook Secret (generated and rotated, or referenced) and its status. The
//! Tenant controller renders the channel into the gateway's routes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::Stream;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Api, Resource, ResourceExt};
use rand::RngCore;
use serde_json::json;
use tracing::instrument;
use xin_api::channel::{Channel, ROTATE_ANNOTATION};

use super::resolve::{self, Problem, webhook_keys as wk, webhook_secret_name};
use super::{Context, error_policy, key, patch_status};
use crate::apply::apply;
use crate::builders::gateway::webhook_path;
use crate::builders::{MANAGED_BY, meta};
use crate::conditions::{Health, extra, merge, reason};
use crate::error::Result;

const KIND: &str = "Channel";
/// On a generated webhook Secret: the value of the rotation annotation last acted on.
pub const HANDLED_ROTATION_ANNOTATION: &str = "xin.dev/handled-rotation-request";

pub fn controller(ctx: Arc<Context>) -> impl Stream<Item = super::ControllerResult<Channel>> {
    let client = ctx.client.clone();
    let ours = watcher::Config::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1));
    let controller = Controller::new(
        Api::<Channel>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    );
    let store = controller.store();
    controller
        .watches(
            Api::<xin_api::Tenant>::all(client.clone()),
            watcher::Config::default(),
            super::tenant_dependents(store),
        )
        .owns_stream(
            watcher(Api::<PartialObjectMeta<Secret>>::all(client), ours)
                .touched_objects()
                .predicate_filter(predicates::resource_version, Default::default()),
        )
        .with_config(
            kube::runtime::controller::Config::default().concurrency(ctx.config.concurrency),
        )
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
}

/// A fresh webhook key: 32 random bytes as URL-safe base64 (43 characters of `A-Za-z0-9_-`,
/// which Telegram's `secret_token` accepts).
pub fn new_key() -> String {
    use base64::Engine;
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// The generated webhook Secret's next data: unchanged unless a rotation was requested or the
/// previous key expired. Returns the data and whether a rotation happened.
pub fn next_webhook_data(
    current: Option<&BTreeMap<String, ByteString>>,
    rotate: bool,
    grace: Duration,
    now: jiff::Timestamp,
    fresh_key: impl FnOnce() -> String,
) -> (BTreeMap<String, ByteString>, bool) {
    let text = |k: &str| {
        current
            .and_then(|d| d.get(k))
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
    };
    let b = |s: String| ByteString(s.into_bytes());
    let mut out = BTreeMap::new();
    match text(wk::CURRENT) {
        Some(cur) if !rotate => {
            out.insert(wk::CURRENT.into(), b(cur));
            out.insert(
                wk::CURRENT_CREATED_AT.into(),
                b(text(wk::CURRENT_CREATED_AT).unwrap_or_else(|| now.to_string())),
            );
            if let (Some(prev), Some(exp)) = (text(wk::PREVIOUS), text(wk::PREVIOUS_EXPIRES_AT))
                && exp.parse::<jiff::Timestamp>().is_ok_and(|t| t > now)
            {
                out.insert(wk::PREVIOUS.into(), b(prev));
                out.insert(wk::PREVIOUS_EXPIRES_AT.into(), b(exp));
            }
            (out, false)
        }
        old => {
            out.insert(wk::CURRENT.into(), b(fresh_key()));
            out.insert(wk::CURRENT_CREATED_AT.into(), b(now.to_string()));
            let rotated = old.is_some();
            if let Some(prev) = old
                && !grace.is_zero()
            {
                let exp = now + jiff::SignedDuration::from_secs(grace.as_secs() as i64);
                out.insert(wk::PREVIOUS.into(), b(prev));
                out.insert(wk::PREVIOUS_EXPIRES_AT.into(), b(exp.to_string()));
            }
            (out, rotated)
        }
    }
}

#[instrument(skip_all, fields(channel = %ch.name_any(), namespace = ch.namespace().unwrap_or_default()))]
async fn reconcile(ch: Arc<Channel>, ctx: Arc<Context>) -> Result<Action> {
    let start = Instant::now();
    let res = reconcile_inner(&ch, &ctx).await;
    ctx.metrics.reconciled(KIND, start.elapsed());
    res
}

async fn reconcile_inner(ch: &Channel, ctx: &Context) -> Result<Action> {
    let client = &ctx.client;
    let ns = ch.namespace().unwrap_or_default();
    let name = ch.name_any();
    let api = Api::<Channel>::namespaced(client.clone(), &ns);
    let now = jiff::Timestamp::now();
    // Every field this controller owns is set, to `null` when it does not apply, so a value
    // that stopped applying is removed (see `patch_status`).
    let mut status = json!({
        "observedGeneration": ch.metadata.generation,
        "webhookPath": webhook_path(&name),
        "webhookUrl": ch.spec.ingress.as_ref().map(|ing| format!("https://{}{}", ing.host, webhook_path(&name))),
        "keyCreatedAt": null,
        "previousKeyExpiresAt": null,
        "lastRotationRequest": null,
    });

    let tenant = match resolve::owning_tenant(client, &ns).await? {
        Ok(t) => t,
        Err(p) => return stalled(ch, &api, ctx, p, status).await,
    };
    let creds = resolve::credentials(client, ch).await?;
    let cred_cond = match &creds {
        Ok(_) => extra(
            "CredentialsResolved",
            true,
            "Resolved",
            "every referenced Secret key was found",
            ch.metadata.generation,
        ),
        Err(p) => extra(
            "CredentialsResolved",
            false,
            p.reason,
            &p.message,
            ch.metadata.generation,
        ),
    };

    // The webhook key: referenced, or generated here and rotated on request.
    let grace = Duration::from_secs(ch.spec.webhook.rotation_grace_period_seconds.max(0) as u64);
    let mut requeue_at: Option<jiff::Timestamp> = None;
    match &ch.spec.webhook.secret_ref {
        Some(r) => {
            status["webhookSecretName"] = json!(r.name);
            if let Err(p) = resolve::secret_key(client, &ns, r).await? {
                return stalled_with(ch, &api, ctx, p, status, Some(cred_cond)).await;
            }
        }
        None => {
            let secret_name = webhook_secret_name(&name);
            let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
            let existing = secrets.get_opt(&secret_name).await?;
            let requested = ch.annotations().get(ROTATE_ANNOTATION).cloned();
            // The handled request is recorded on the Secret, read fresh from the API server:
            // the Channel in the watch cache may not show our last status patch yet, and a
            // stale view must not rotate twice.
            let handled = existing
                .as_ref()
                .and_then(|s| s.annotations().get(HANDLED_ROTATION_ANNOTATION).cloned());
            let rotate = requested.is_some() && requested != handled && existing.is_some();
            let (data, rotated) = next_webhook_data(
                existing.as_ref().and_then(|s| s.data.as_ref()),
                rotate,
                grace,
                now,
                new_key,
            );
            let mut metadata = meta(ch, &secret_name, &ns, &tenant.name_any(), "channel-webhook");
            // A first key needs no rotation: the current request counts as handled from the start.
            if let Some(r) = &requested {
                metadata.annotations = Some(BTreeMap::from([(
                    HANDLED_ROTATION_ANNOTATION.to_string(),
                    r.clone(),
                )]));
            }
            let secret = Secret {
                metadata,
                type_: Some("Opaque".into()),
                data: Some(data.clone()),
                ..Secret::default()
            };
            apply(&secrets, &secret).await?;
            if rotated {
                ctx.event(ch.object_ref(&()), EventType::Normal, "WebhookKeyRotated",
                    format!("new webhook key in Secret {secret_name}; the previous key is accepted for {} s", grace.as_secs()), "Rotate").await;
            }
            status["webhookSecretName"] = json!(secret_name);
            status["lastRotationRequest"] = json!(requested);
            let ts = |k: &str| {
                data.get(k)
                    .and_then(|v| String::from_utf8(v.0.clone()).ok())
                    .and_then(|s| s.parse::<jiff::Timestamp>().ok())
            };
            status["keyCreatedAt"] = json!(ts(wk::CURRENT_CREATED_AT).map(Time));
            let prev_exp = ts(wk::PREVIOUS_EXPIRES_AT);
            status["previousKeyExpiresAt"] = json!(prev_exp.map(Time));
            requeue_at = prev_exp;
        }
    }
    if let Err(p) = creds {
        return stalled_with(ch, &api, ctx, p, status, Some(cred_cond)).await;
    }

    let health = if ch.spec.suspend {
        Health::Ready {
            reason: reason::SUSPENDED,
            message: "suspended: the gateway answers 503 on this channel".into(),
        }
    } else {
        Health::Ready {
            reason: reason::RECONCILED,
            message: format!("served by the gateway of Tenant {}", tenant.name_any()),
        }
    };
    let current = ch.status.clone().unwrap_or_default();
    let mut desired = health.conditions(ch.metadata.generation);
    desired.push(cred_cond);
    status["conditions"] = json!(merge(&current.conditions, desired));
    patch_status(&api, ch, status).await?;
    ctx.reset_backoff(&key(ch));
    // Wake up when the previous key expires, to drop it from the Secret and the routes.
    Ok(match requeue_at {
        Some(t) => Action::requeue(Duration::from_secs(
            (t.as_second() - now.as_second()).max(0) as u64 + 1,
        )),
        None => ctx.resync(),
    })
}

async fn stalled(
    ch: &Channel,
    api: &Api<Channel>,
    ctx: &Context,
    p: Problem,
    status: serde_json::Value,
) -> Result<Action> {
    stalled_with(ch, api, ctx, p, status, None).await
}

async fn stalled_with(
    ch: &Channel,
    api: &Api<Channel>,
    ctx: &Context,
    p: Problem,
    mut status: serde_json::Value,
    extra_cond: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
) -> Result<Action> {
    let current = ch.status.clone().unwrap_or_default();
    ctx.report_stall(ch.object_ref(&()), &current.conditions, &p)
        .await;
    let retry = ctx.retry_after(p.reason, &key(ch));
    let mut desired = Health::Stalled {
        reason: p.reason,
        message: p.message,
    }
    .conditions(ch.metadata.generation);
    desired.extend(extra_cond);
    status["conditions"] = json!(merge(&current.conditions, desired));
    patch_status(api, ch, status).await?;
    Ok(Action::requeue(retry))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn keys_are_url_safe_and_fresh() {
        let (a, b) = (new_key(), new_key());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
    }

    #[test]
    fn first_reconcile_generates_then_keeps_the_key() {
        let now = at("2026-01-01T00:00:00Z");
        let (first, rotated) =
            next_webhook_data(None, false, Duration::from_secs(900), now, || "k1".into());
        assert!(!rotated);
        assert_eq!(first[wk::CURRENT].0, b"k1");
        let (second, _) = next_webhook_data(
            Some(&first),
            false,
            Duration::from_secs(900),
            at("2026-01-02T00:00:00Z"),
            || panic!("no new key"),
        );
        assert_eq!(
            first, second,
            "an unchanged channel must render identical data (no write)"
        );
    }

    #[test]
    fn rotation_keeps_the_previous_key_until_the_grace_period_ends() {
        let now = at("2026-01-01T00:00:00Z");
        let (first, _) =
            next_webhook_data(None, false, Duration::from_secs(900), now, || "old".into());
        let (rotated, did) =
            next_webhook_data(Some(&first), true, Duration::from_secs(900), now, || {
                "new".into()
            });
        assert!(did);
        assert_eq!(rotated[wk::CURRENT].0, b"new");
        assert_eq!(rotated[wk::PREVIOUS].0, b"old");
        assert_eq!(rotated[wk::PREVIOUS_EXPIRES_AT].0, b"2026-01-01T00:15:00Z");
        let (later, _) = next_webhook_data(
            Some(&rotated),
            false,
            Duration::from_secs(900),
            at("2026-01-01T00:15:01Z"),
            || panic!(),
        );
        assert!(
            !later.contains_key(wk::PREVIOUS),
            "expired previous key must be dropped"
        );
        assert_eq!(later[wk::CURRENT].0, b"new");
    }
}
