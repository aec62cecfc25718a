//! What a Channel refers to: its Tenant, its credentials and its webhook key, from the
//! watches — and the generated webhook Secret fresh from the API server when the pass may
//! write it (a key must never be generated twice because the watch lagged).

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::Store;
use kube::{Api, ResourceExt};
use xin_api::channel::{Channel, ROTATE_ANNOTATION};
use xin_api::routes::Credentials;
use xin_api::tenant::Tenant;

use super::HANDLED_ROTATION_ANNOTATION;
use crate::config::Config;
use crate::controllers::Context;
use crate::controllers::resolve::{
    credentials, owning_tenant, previous_app_secrets, referenced_key, webhook_secret_name,
};
use crate::error::{Error, Problem, ResolveError};

/// What one pass of a Channel works from.
#[derive(Clone)]
pub struct ResolvedChannel {
    pub tenant: String,
    /// The owning Tenant as the watch shows it (its allowed domains, for the Ingress check).
    pub tenant_object: Option<std::sync::Arc<Tenant>>,
    /// The credentials its type needs, or why they cannot be read.
    pub credentials: Result<Credentials, Problem>,
    /// A referenced webhook key's problem (`None` when it resolves or is generated).
    pub referenced_key: Option<Problem>,
    /// Why the platform refuses the channel's Ingress (`None` when it has none or it is allowed).
    pub ingress: Option<Problem>,
    /// The generated webhook Secret as it is now (`None` when referenced or not created yet).
    pub webhook_secret: Option<Secret>,
    /// The rotation requested by annotation that has not been handled yet.
    pub rotate: bool,
    /// `webhook_secret` was read from the API server (not the watch) in this pass.
    pub fresh: bool,
    pub requested_rotation: Option<String>,
}

impl ResolvedChannel {
    /// The generated webhook Secret's keys as they are now.
    pub fn keys(&self) -> Option<super::keys::KeySet> {
        self.webhook_secret
            .as_ref()
            .and_then(|s| s.data.as_ref())
            .and_then(super::keys::KeySet::from_data)
    }
}

// The webhook Secret holds the keys: `Debug` shows its name only (credentials redact themselves).
impl std::fmt::Debug for ResolvedChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolvedChannel")
            .field("tenant", &self.tenant)
            .field("credentials", &self.credentials)
            .field("referenced_key", &self.referenced_key)
            .field("ingress", &self.ingress)
            .field(
                "webhook_secret",
                &self.webhook_secret.as_ref().map(crate::redact::SecretNames),
            )
            .field("rotate", &self.rotate)
            .field("fresh", &self.fresh)
            .field("requested_rotation", &self.requested_rotation)
            .finish()
    }
}

pub async fn resolve(ch: &Channel, ctx: &Context) -> Result<ResolvedChannel, ResolveError> {
    let ns = ch.namespace().unwrap_or_default();
    let tenant: std::sync::Arc<Tenant> = owning_tenant(&ctx.stores.tenants, &ns)?;
    let secrets: Store<Secret> = ctx.stores.secrets.store(&ns).await?;
    let object = crate::error::object_name(ch);
    let info = |e: crate::error::Cause| Problem::from(&Error::new(&object, e));
    // The earlier Meta app secrets are credentials too: one that cannot be read keeps the
    // channel off the routes, so the Channel must say so.
    let creds = credentials(&secrets, ch)
        .and_then(|c| {
            Ok(Credentials {
                previous_app_secrets: previous_app_secrets(&secrets, ch, ctx.now().0)?,
                ..c
            })
        })
        .map_err(info);

    let requested = ch.annotations().get(ROTATE_ANNOTATION).cloned();
    let mut resolved = ResolvedChannel {
        tenant: tenant.name_any(),
        tenant_object: Some(tenant.clone()),
        credentials: creds,
        referenced_key: None,
        ingress: None,
        webhook_secret: None,
        rotate: false,
        fresh: false,
        requested_rotation: requested,
    };
    match &ch.spec.webhook.secret_ref {
        Some(r) => {
            resolved.referenced_key = referenced_key(&secrets, &ns, ch, r)
                .err()
                .map(|e| info(e.into()));
        }
        None => {
            let name = webhook_secret_name(&ch.name_any());
            let cached = crate::controllers::resolve::secret(&secrets, &ns, &name);
            resolved.webhook_secret = cached.map(|s| s.as_ref().clone());
            resolved.rotate = pending(&resolved);
            // The handled request is recorded on the Secret. When the watch shows no Secret or
            // an unhandled request, read it fresh: a stale view must not make a second key.
            if resolved.webhook_secret.is_none() || resolved.rotate {
                resolved = refresh(ch, resolved, ctx).await?;
            }
        }
    }
    Ok(resolved)
}

/// A rotation was requested by annotation and the Secret has not handled it yet.
fn pending(r: &ResolvedChannel) -> bool {
    let handled = r
        .webhook_secret
        .as_ref()
        .and_then(|s| s.annotations().get(HANDLED_ROTATION_ANNOTATION).cloned());
    r.requested_rotation.is_some() && r.webhook_secret.is_some() && r.requested_rotation != handled
}

/// Reads the generated webhook Secret from the API server: its next data is derived from its
/// current data (the key), so it is never derived from a view the watch has not caught up on.
pub async fn refresh(
    ch: &Channel,
    mut r: ResolvedChannel,
    ctx: &Context,
) -> Result<ResolvedChannel, ResolveError> {
    let ns = ch.namespace().unwrap_or_default();
    let name = webhook_secret_name(&ch.name_any());
    r.webhook_secret = Api::<Secret>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&name)
        .await
        .map_err(|source| ResolveError::Kube {
            what: format!("Secret {ns}/{name}"),
            source,
        })?;
    r.rotate = pending(&r);
    r.fresh = true;
    Ok(r)
}

/// The check the API server's schema cannot make: the channel's Ingress is one the platform
/// allows its Tenant (host within the Tenant's allowed domains or the operator's patterns, not
/// another Tenant's; annotations on the allowlist). `others` are the Channels the watch knows
/// (the first to claim a host keeps it). Credentials are checked as they are read (resolve),
/// so a refusal here is kept as a problem and the pass goes on to report it.
pub fn validate<'a>(
    ch: &Channel,
    mut resolved: ResolvedChannel,
    config: &Config,
    others: impl IntoIterator<Item = &'a Channel>,
) -> ResolvedChannel {
    if let Some(tenant) = &resolved.tenant_object {
        resolved.ingress = crate::controllers::ingress::check(ch, tenant, config, others)
            .err()
            .map(|e| Problem::from(&Error::new(crate::error::object_name(ch), e)));
    }
    resolved
}
