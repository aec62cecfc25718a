//! Channel → its webhook Secret (generated and rotated, or referenced) and its status, which
//! says whether the channel can be served: a `Stalled` Channel (a credential or its key is
//! missing, its Tenant is not ready) is left out of the gateway's routes by the Tenant
//! controller, which only collects that verdict.
//!
//! One pass, top to bottom: [`resolve`] (the owning Tenant, the namespace's Secrets, the
//! webhook Secret as it is) → [`validate`](resolve::validate) (credentials for the channel's
//! type; the Ingress the platform allows) → [`children`] (the webhook Secret's next data, pure)
//! → apply → [`telegram::complete`] (a Telegram key registered with `setWebhook` once due) →
//! [`status`](children::status).

pub mod children;
pub mod keys;
pub mod resolve;
pub mod telegram;

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::Store;
use kube::{Api, ResourceExt};
use xin_api::channel::{Channel, ChannelStatus};

use super::Context;
use super::runner::{Pass, Reconcile, status_fields};
use crate::error::{OnObject, Result, object_name};

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
        let channels = ctx.stores.channels.state();
        let mut validated = resolve::validate(
            &ch,
            resolved,
            &ctx.config,
            channels.iter().map(|c| c.as_ref()),
        );
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
        let (plan, failure, registered) =
            telegram::complete(&ch, &validated, &mut built, &secrets, &ctx, now.0)
                .await
                .on(&object)?;
        let mut pass =
            children::status(&ch, &validated, &built, &now.0, (&plan, failure.as_deref()));
        pass.events.extend(registered);
        Ok(pass)
    }
}
