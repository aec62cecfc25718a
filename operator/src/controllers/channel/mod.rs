//! Channel → its webhook Secret (generated and rotated, or referenced) and its status, which
//! says whether the channel can be served: a `Stalled` Channel (a credential or its key is
//! missing, its Tenant is not ready) is left out of the gateway's routes by the Tenant
//! controller, which only collects that verdict.
//!
//! One pass, top to bottom: [`resolve`] (the owning Tenant, the namespace's Secrets, the
//! webhook Secret as it is) → [`validate`](resolve::validate) (credentials for the channel's
//! type) → [`children`] (the webhook Secret's next data, pure) → apply → [`status`](children::status).

pub mod children;
pub mod keys;
pub mod resolve;
pub mod telegram;

use std::sync::Arc;

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::Store;
use kube::{Api, ResourceExt};
use xin_api::channel::{Channel, ChannelStatus};

use super::Context;
use super::runner::{Note, Pass, Reconcile, status_fields};
use crate::conditions::reason;
use crate::error::{OnObject, Result, object_name};
use keys::KeySet;

pub use keys::new_key;

/// On a generated webhook Secret: the value of the rotation annotation last acted on.
pub const HANDLED_ROTATION_ANNOTATION: &str = "xin.dev/handled-rotation-request";

/// Whether `ch` names Secret `name` (so a change of it concerns the channel).
pub fn references_secret(ch: &Channel, name: &str) -> bool {
    let s = &ch.spec;
    let mut names = vec![];
    names.extend(s.telegram.iter().map(|t| &t.bot_token_secret_ref.name));
    if let Some(m) = &s.meta {
        names.push(&m.app_secret_ref.name);
        names.extend(m.previous_app_secrets.iter().map(|p| &p.secret_ref.name));
        names.push(&m.access_token_secret_ref.name);
        names.extend(m.verify_token_secret_ref.iter().map(|r| &r.name));
    }
    names.extend(s.web.iter().map(|w| &w.identity_secret_ref.name));
    names.extend(s.webhook.secret_ref.iter().map(|r| &r.name));
    names.iter().any(|n| *n == name) || keys_secret_is(ch, name)
}

fn keys_secret_is(ch: &Channel, name: &str) -> bool {
    ch.spec.webhook.secret_ref.is_none()
        && super::resolve::webhook_secret_name(&ch.name_any()) == name
}

impl Reconcile for Channel {
    type Status = ChannelStatus;

    fn owned_status(&self) -> ChannelStatus {
        self.status.clone().unwrap_or_default()
    }
    status_fields!(ChannelStatus);
    fn api(client: kube::Client, namespace: &str) -> kube::Api<Self> {
        Api::namespaced(client, namespace)
    }
    fn store(ctx: &Context) -> Store<Channel> {
        ctx.stores.channels.clone()
    }

    async fn reconcile(ch: Arc<Channel>, ctx: Arc<Context>) -> Result<Pass<ChannelStatus>> {
        let object = object_name(ch.as_ref());
        let now = ctx.now();
        let resolved = match resolve::resolve(&ch, &ctx).await {
            Ok(r) => r,
            Err(e) => {
                let e = crate::error::Error::new(&object, e);
                if !e.user_fixable() {
                    return Err(e);
                }
                return Ok(Pass::stalled(children::base_status(&ch), &e));
            }
        };
        let mut validated = resolve::validate(&ch, resolved, &object);
        let mut built = children::build_channel_children(&ch, &validated, &now.0, new_key);
        // About to write a Secret whose next data derives from its current data: derive it
        // from the live Secret, not from the watch's possibly older view.
        if let Some(secret) = &built.webhook_secret
            && !validated.fresh
            && !crate::apply::up_to_date(validated.webhook_secret.as_ref(), secret)
        {
            validated = resolve::refresh(&ch, validated, &ctx).await.on(&object)?;
            built = children::build_channel_children(&ch, &validated, &now.0, new_key);
        }
        let secrets: Api<Secret> =
            Api::namespaced(ctx.client.clone(), &ch.namespace().unwrap_or_default());
        let children::ChannelChildren { webhook_secret } = &built;
        if let Some(secret) = webhook_secret {
            crate::apply::apply(&secrets, validated.webhook_secret.as_ref(), secret)
                .await
                .on(&object)?;
        }
        // Telegram learns a new key only through setWebhook: once due, the operator calls it
        // and records the acknowledgement beside the keys.
        let keys = built
            .webhook_secret
            .as_ref()
            .and_then(|s| s.data.as_ref())
            .and_then(KeySet::from_data);
        let delay = Duration::from_secs(ctx.config.telegram_register_delay_seconds);
        let mut plan = telegram::plan(&ch, keys.as_ref(), now.0, delay);
        let mut failure = None;
        let mut registered_event = None;
        if let (telegram::Plan::Register { url }, Some(keys), Some(secret)) =
            (&plan, keys, built.webhook_secret.clone())
        {
            let token = validated
                .credentials
                .as_ref()
                .ok()
                .and_then(|c| c.bot_token.clone());
            let result = match (token, &validated.ingress) {
                (_, Some(p)) => Err(format!(
                    "the Ingress is refused, so nothing is registered: {}",
                    p.message
                )),
                (None, None) => {
                    Err("the bot token cannot be read (see CredentialsResolved)".to_string())
                }
                (Some(token), None) => {
                    telegram::set_webhook(
                        &ctx.http,
                        &ctx.config.telegram_api_base,
                        &token,
                        url,
                        &keys.current,
                    )
                    .await
                }
            };
            match result {
                Ok(()) => {
                    let acked = keys.acknowledged(url, now.0);
                    let mut next = secret.clone();
                    next.data = Some(acked.to_data());
                    crate::apply::apply(&secrets, Some(&secret), &next)
                        .await
                        .on(&object)?;
                    registered_event = Some(Note {
                        warning: false,
                        reason: reason::REGISTERED,
                        message: format!("Telegram acknowledged the current webhook key at {url}"),
                        action: "Register",
                    });
                    plan = telegram::plan(&ch, Some(&acked), now.0, delay);
                    built.webhook_secret = Some(next);
                }
                Err(why) => {
                    tracing::warn!(error = %why, "Telegram webhook registration failed");
                    failure = Some(why);
                }
            }
        }
        let mut pass =
            children::status(&ch, &validated, &built, &now.0, (&plan, failure.as_deref()));
        pass.events.extend(registered_event);
        Ok(pass)
    }
}
