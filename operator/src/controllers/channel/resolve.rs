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
use crate::controllers::Context;
use crate::controllers::resolve::{credentials, owning_tenant, secret_key, webhook_secret_name};
use crate::error::{Error, ResolveError};

/// What one pass of a Channel works from.
#[derive(Clone, Debug)]
pub struct ResolvedChannel {
    pub tenant: String,
    /// The credentials its type needs, or why they cannot be read.
    pub credentials: Result<Credentials, ErrorInfo>,
    /// A referenced webhook key's problem (`None` when it resolves or is generated).
    pub referenced_key: Option<ErrorInfo>,
    /// The generated webhook Secret as it is now (`None` when referenced or not created yet).
    pub webhook_secret: Option<Secret>,
    /// The rotation requested by annotation that has not been handled yet.
    pub rotate: bool,
    pub requested_rotation: Option<String>,
}

/// A user-fixable problem, as it is shown (reason and message).
#[derive(Clone, Debug, PartialEq)]
pub struct ErrorInfo {
    pub reason: &'static str,
    pub message: String,
}

impl From<&Error> for ErrorInfo {
    fn from(e: &Error) -> Self {
        ErrorInfo {
            reason: e.reason(),
            message: e.message(),
        }
    }
}

pub async fn resolve(ch: &Channel, ctx: &Context) -> Result<ResolvedChannel, ResolveError> {
    let ns = ch.namespace().unwrap_or_default();
    let tenant: std::sync::Arc<Tenant> = owning_tenant(&ctx.stores.tenants, &ns)?;
    let secrets: Store<Secret> = ctx.stores.secrets.store(&ns).await?;
    let object = crate::error::object_name(ch);
    let info = |e: crate::error::Cause| ErrorInfo::from(&Error::new(&object, e));
    let creds = credentials(&secrets, ch).map_err(info);

    let requested = ch.annotations().get(ROTATE_ANNOTATION).cloned();
    let (referenced_key, webhook_secret, rotate) = match &ch.spec.webhook.secret_ref {
        Some(r) => (
            secret_key(&secrets, &ns, r).err().map(|e| info(e.into())),
            None,
            false,
        ),
        None => {
            let name = webhook_secret_name(&ch.name_any());
            let cached = crate::controllers::resolve::secret(&secrets, &ns, &name);
            let handled = |s: &Secret| s.annotations().get(HANDLED_ROTATION_ANNOTATION).cloned();
            let pending = |s: Option<&Secret>| {
                requested.is_some() && s.is_some() && requested != s.and_then(handled)
            };
            // The handled request is recorded on the Secret. When the watch shows no Secret or
            // an unhandled request, read it fresh: a stale view must not make a second key.
            let current = match cached {
                Some(s) if !pending(Some(&s)) => Some(s.as_ref().clone()),
                _ => Api::<Secret>::namespaced(ctx.client.clone(), &ns)
                    .get_opt(&name)
                    .await
                    .map_err(|source| ResolveError::Kube {
                        what: format!("Secret {ns}/{name}"),
                        source,
                    })?,
            };
            let rotate = pending(current.as_ref());
            (None, current, rotate)
        }
    };
    Ok(ResolvedChannel {
        tenant: tenant.name_any(),
        credentials: creds,
        referenced_key,
        webhook_secret,
        rotate,
        requested_rotation: requested,
    })
}

/// Nothing to check beyond what resolving found (the API server checks the spec, and the
/// credentials' sections are checked as they are read); kept as the pipeline's step so a
/// check has its place.
pub fn validate(_ch: &Channel, resolved: ResolvedChannel, _object: &str) -> ResolvedChannel {
    resolved
}
