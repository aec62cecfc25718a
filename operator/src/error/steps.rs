//! One error enum per pipeline step; [`super::Error`] wraps them with the object and says,
//! in one place, what each means for the user.

use thiserror::Error;

/// Reading what the spec refers to.
#[derive(Error, Debug)]
pub enum ResolveError {
    #[error("Secret {namespace}/{name} not found")]
    SecretNotFound { namespace: String, name: String },
    #[error("Secret {namespace}/{name} has no key {key:?}")]
    SecretKeyMissing {
        namespace: String,
        name: String,
        key: String,
    },
    #[error("Secret {namespace}/{name} key {key:?} is not UTF-8 text")]
    SecretKeyNotText {
        namespace: String,
        name: String,
        key: String,
    },
    #[error(
        "Secret {namespace}/{name} key {key:?} is not a webhook key Telegram accepts (1-256 characters of A-Z a-z 0-9 _ -): Telegram would refuse it in setWebhook, so the channel is not served"
    )]
    InvalidTelegramSecretToken {
        namespace: String,
        name: String,
        key: String,
    },
    #[error("Secret {namespace}/{name} key {key:?} is empty")]
    SecretValueEmpty {
        namespace: String,
        name: String,
        key: String,
    },
    #[error(
        "namespace {namespace} exists and was not made for this Tenant: annotate it with {annotation}={tenant} to let the Tenant adopt it"
    )]
    NamespaceNotAdoptable {
        namespace: String,
        tenant: String,
        annotation: &'static str,
    },
    #[error("granting the operator its rights in namespace {namespace}: {message}")]
    Access { namespace: String, message: String },
    #[error("webhook Secret {namespace}/{name} holds no key")]
    WebhookKeyMissing { namespace: String, name: String },
    #[error("ConfigMap {namespace}/{name} not found")]
    ConfigMapNotFound { namespace: String, name: String },
    #[error("ConfigMap {namespace}/{name} has no key {key:?}")]
    ConfigMapKeyMissing {
        namespace: String,
        name: String,
        key: String,
    },
    #[error(
        "namespace {namespace} belongs to no Tenant (tenant namespaces are named xin-<tenant>)"
    )]
    NotATenantNamespace { namespace: String },
    #[error("namespace {namespace} belongs to no Tenant: Tenant {tenant} not found")]
    TenantNotFound { namespace: String, tenant: String },
    #[error("Tenant {tenant} has not set up namespace {namespace} yet")]
    TenantNotReady { namespace: String, tenant: String },
    #[error("Tenant {tenant} is being deleted")]
    TenantDeleting { tenant: String },
    #[error("namespace {namespace} belongs to another Tenant (uid {owner})")]
    NamespaceTaken { namespace: String, owner: String },
    #[error("the watch of {what} has not listed yet")]
    NotSynced { what: &'static str },
    #[error("reading {what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
}

impl ResolveError {
    /// Something the spec refers to is missing or wrong (not a failed or pending read).
    pub fn user_fixable(&self) -> bool {
        !matches!(
            self,
            ResolveError::Kube { .. } | ResolveError::NotSynced { .. }
        )
    }
}

/// Checking the spec beyond what the API server's schema could.
#[derive(Error, Debug)]
pub enum ValidateError {
    #[error("{field} {value:?} is not an IANA time zone (for example Europe/Berlin)")]
    InvalidTimeZone { field: &'static str, value: String },
    #[error("{0}")]
    InvalidSchedule(String),
    #[error("{0}")]
    InvalidTemplate(String),
    #[error("Secret {secret} (spec.action.webhook.headersSecretRef): {problem}")]
    InvalidHeaders { secret: String, problem: String },
    #[error(
        "Secret {name} belongs to the platform (the operator manages it, the Tenant names it for its database, or it holds the platform's telemetry headers): a rule cannot use it; put what the action needs in a Secret of your own"
    )]
    PlatformSecret { name: String },
    #[error("spec.{section} is required for this channel type")]
    MissingSection { section: &'static str },
    #[error(
        "namespace {namespace} is reserved for the Xin platform (the operator's own, or XIN_RESERVED_NAMESPACES); choose another Tenant name"
    )]
    ReservedNamespace { namespace: String },
    #[error(
        "spec.ingress.host {host:?} is not a host Tenant {tenant} may use: add its domain to the Tenant's spec.network.allowedDomains, or have the platform allow it (XIN_INGRESS_ALLOWED_HOSTS)"
    )]
    HostNotAllowed { host: String, tenant: String },
    #[error("spec.ingress.host {host:?} is already used by another Tenant's Channel")]
    HostTaken { host: String },
    #[error(
        "spec.ingress.annotations: {key:?} is not an annotation the platform allows on Ingresses (XIN_INGRESS_ANNOTATION_ALLOWLIST)"
    )]
    IngressAnnotationNotAllowed { key: String },
    /// `url` is redacted (no userinfo, query or fragment).
    #[error("{field} {url} is not an allowed destination: {reason}")]
    DestinationNotAllowed {
        field: String,
        url: String,
        reason: xin_api::destination::Reason,
    },
}

impl ValidateError {
    /// The URL in `field`, unless the destination policy refuses it.
    pub fn check_destination(
        policy: &xin_api::destination::DestinationPolicy,
        field: impl Into<String>,
        url: &str,
    ) -> Result<(), ValidateError> {
        match policy.check_url(url) {
            xin_api::destination::Verdict::Allowed => Ok(()),
            xin_api::destination::Verdict::Refused(reason) => {
                Err(ValidateError::DestinationNotAllowed {
                    field: field.into(),
                    url: xin_api::destination::redact_url(url),
                    reason,
                })
            }
        }
    }
}

/// The tenant's database: provisioning and the migrations step.
#[derive(Error, Debug)]
pub enum DatabaseError {
    #[error(
        "spec.database names no database of the team's own (urlSecretRef, ownerUrlSecretRef) and the operator has no platform database to provision one on (chart value database.adminUrlSecret)"
    )]
    NotConfigured,
    #[error("{field} is not a postgres:// URL")]
    InvalidUrl { field: &'static str },
    #[error("the database server cannot be reached: {0}")]
    Unavailable(String),
    #[error("the migrations step failed: {0}")]
    Migration(String),
    #[error("provisioning the database failed: {0}")]
    Provision(String),
    #[error(
        "the role of spec.database.urlSecretRef {0}: the workloads need a role with data rights only"
    )]
    RoleTooPowerful(String),
}

impl DatabaseError {
    /// Sorts a provisioning error by what the user sees. sqlx's messages carry the server's
    /// message, never the URL or a password.
    pub fn from_provision(e: xin_store::provision::ProvisionError) -> Self {
        use xin_store::provision::ProvisionError as P;
        match e {
            e if e.is_connection() => DatabaseError::Unavailable(e.to_string()),
            P::Migrate(m) => DatabaseError::Migration(m.to_string()),
            P::AdminUrl(_) => DatabaseError::InvalidUrl {
                field: "the database URL",
            },
            other => DatabaseError::Provision(other.to_string()),
        }
    }

    /// Only a change by the user can fix it.
    pub fn user_fixable(&self) -> bool {
        matches!(
            self,
            DatabaseError::NotConfigured
                | DatabaseError::InvalidUrl { .. }
                | DatabaseError::RoleTooPowerful(_)
        )
    }
}

/// Turning the validated input into objects.
#[derive(Error, Debug)]
pub enum BuildError {
    #[error("serialising {what}: {source}")]
    Serialize {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// Writing the children.
#[derive(Error, Debug)]
pub enum ApplyError {
    #[error("{verb} {kind} {name}: {source}")]
    Kube {
        verb: &'static str,
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "Job {name} was deleted before its result was recorded; create a new IngestionJob to ingest again"
    )]
    JobMissing { name: String },
    #[error("serialising a {kind}: {source}")]
    Serialize {
        kind: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("the watch of {what} has not listed yet")]
    NotSynced { what: &'static str },
}

/// Writing the status.
#[derive(Error, Debug)]
pub enum StatusError {
    #[error("patching the status: {0}")]
    Kube(#[source] kube::Error),
    #[error("serialising the status: {0}")]
    Serialize(#[source] serde_json::Error),
}

/// Adding or removing the finalizer, and the cleanup it guards.
#[derive(Error, Debug)]
pub enum FinalizeError {
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{0}")]
    Step(String),
}
