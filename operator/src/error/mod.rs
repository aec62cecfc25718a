//! The operator's errors: one enum per pipeline step (resolve → validate → build → apply →
//! status, plus the finalizer), wrapped with the object they happened on. What each error
//! means for the user — its condition reason, its metric label, whether only the user can fix
//! it, whether it is worth an immediate retry — is decided in one place, [`Error`]'s methods.
//! No message ever carries a secret's value.

use thiserror::Error;

use crate::conditions::reason;

mod steps;
pub use steps::*;

/// A failure of one reconcile step on one object.
#[derive(Error, Debug)]
#[error("{object}: {step}: {source}")]
pub struct Error {
    /// `Kind namespace/name` (or `Kind name` when cluster-scoped).
    pub object: String,
    pub step: Step,
    #[source]
    pub source: Box<Cause>,
}

/// The step of the pipeline an error comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Resolve,
    Validate,
    Build,
    Apply,
    Status,
    Finalize,
    Database,
}

/// The cause of an [`Error`], by step.
#[derive(Error, Debug)]
pub enum Cause {
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error(transparent)]
    Validate(#[from] ValidateError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Status(#[from] StatusError),
    #[error(transparent)]
    Finalize(#[from] FinalizeError),
    #[error(transparent)]
    Database(#[from] DatabaseError),
}

impl Error {
    pub fn new(object: impl Into<String>, source: impl Into<Cause>) -> Self {
        let source = source.into();
        let step = match &source {
            Cause::Resolve(_) => Step::Resolve,
            Cause::Validate(_) => Step::Validate,
            Cause::Build(_) => Step::Build,
            Cause::Apply(_) => Step::Apply,
            Cause::Status(_) => Step::Status,
            Cause::Finalize(_) => Step::Finalize,
            Cause::Database(_) => Step::Database,
        };
        Error {
            object: object.into(),
            step,
            source: Box::new(source),
        }
    }

    /// The Kubernetes API error underneath, if any.
    fn kube(&self) -> Option<&kube::Error> {
        match self.source.as_ref() {
            Cause::Resolve(ResolveError::Kube { source, .. })
            | Cause::Apply(ApplyError::Kube { source, .. })
            | Cause::Status(StatusError::Kube(source))
            | Cause::Finalize(FinalizeError::Kube { source, .. }) => Some(source),
            _ => None,
        }
    }

    /// Only a change by the user can fix it: the object is `Stalled` with [`Error::reason`]
    /// and a Warning Event, and is retried with backoff.
    pub fn user_fixable(&self) -> bool {
        match self.source.as_ref() {
            Cause::Resolve(e) => e.user_fixable(),
            Cause::Validate(_) => true,
            Cause::Database(e) => e.user_fixable(),
            Cause::Apply(e) => matches!(e, ApplyError::JobMissing { .. }),
            Cause::Build(_) | Cause::Status(_) | Cause::Finalize(_) => false,
        }
    }

    /// The condition reason this error is shown with.
    pub fn reason(&self) -> &'static str {
        match self.source.as_ref() {
            Cause::Resolve(e) => match e {
                ResolveError::SecretNotFound { .. } => reason::SECRET_NOT_FOUND,
                ResolveError::SecretKeyMissing { .. }
                | ResolveError::SecretKeyNotText { .. }
                | ResolveError::WebhookKeyMissing { .. } => reason::SECRET_KEY_MISSING,
                ResolveError::ConfigMapNotFound { .. } => reason::CONFIG_MAP_NOT_FOUND,
                ResolveError::ConfigMapKeyMissing { .. } => reason::CONFIG_MAP_KEY_MISSING,
                ResolveError::NotATenantNamespace { .. } | ResolveError::TenantNotFound { .. } => {
                    reason::TENANT_NOT_FOUND
                }
                ResolveError::TenantNotReady { .. } => reason::TENANT_NOT_READY,
                ResolveError::TenantDeleting { .. } => reason::TENANT_DELETING,
                ResolveError::NamespaceTaken { .. } => reason::NAMESPACE_CONFLICT,
                ResolveError::SecretValueEmpty { .. } => reason::SECRET_VALUE_EMPTY,
                ResolveError::InvalidTelegramSecretToken { .. } => {
                    reason::INVALID_TELEGRAM_SECRET_TOKEN
                }
                ResolveError::NamespaceNotAdoptable { .. } => reason::NAMESPACE_NOT_ADOPTABLE,
                ResolveError::NotSynced { .. }
                | ResolveError::Kube { .. }
                | ResolveError::Access { .. } => reason::API_ERROR,
            },
            Cause::Validate(e) => match e {
                ValidateError::InvalidTimeZone { .. } => reason::INVALID_TIME_ZONE,
                ValidateError::InvalidSchedule(_) => reason::INVALID_SCHEDULE,
                ValidateError::InvalidTemplate(_) => reason::INVALID_TEMPLATE,
                ValidateError::InvalidHeaders { .. } => reason::INVALID_HEADERS,
                ValidateError::PlatformSecret { .. } => reason::PLATFORM_SECRET,
                ValidateError::MissingSection { .. } => reason::INVALID_SPEC,
                ValidateError::ReservedNamespace { .. } => reason::NAMESPACE_CONFLICT,
                ValidateError::DestinationNotAllowed { .. } => reason::DESTINATION_NOT_ALLOWED,
                ValidateError::HostNotAllowed { .. } | ValidateError::HostTaken { .. } => {
                    reason::HOST_NOT_ALLOWED
                }
                ValidateError::IngressAnnotationNotAllowed { .. } => {
                    reason::INGRESS_ANNOTATION_NOT_ALLOWED
                }
            },
            Cause::Apply(ApplyError::JobMissing { .. }) => reason::JOB_MISSING,
            Cause::Database(e) => match e {
                DatabaseError::NotConfigured | DatabaseError::InvalidUrl { .. } => {
                    reason::DATABASE_NOT_CONFIGURED
                }
                DatabaseError::Unavailable(_) | DatabaseError::Provision(_) => {
                    reason::DATABASE_UNAVAILABLE
                }
                DatabaseError::Migration(_) => reason::MIGRATION_FAILED,
                DatabaseError::RoleTooPowerful(_) => reason::DATABASE_ROLE_TOO_POWERFUL,
            },
            Cause::Finalize(_) => reason::DECOMMISSION_FAILED,
            Cause::Apply(
                ApplyError::Kube { .. }
                | ApplyError::Serialize { .. }
                | ApplyError::NotSynced { .. },
            )
            | Cause::Build(_)
            | Cause::Status(_) => reason::API_ERROR,
        }
    }

    /// Every value [`Error::metric_label`] gives a failure (`user_fixable` errors stall the
    /// object and are not failures); the metric starts with each at 0.
    pub const FAILURE_LABELS: [&'static str; 9] = [
        "conflict",
        "forbidden",
        "invalid_child",
        "throttled",
        "api_error",
        "api_unreachable",
        "not_synced",
        "serialize",
        "other",
    ];

    /// Low-cardinality label for `xin_operator_reconcile_failures_total{error=...}`.
    pub fn metric_label(&self) -> &'static str {
        if let Some(e) = self.kube() {
            return match e {
                kube::Error::Api(s) if s.code == 409 => "conflict",
                kube::Error::Api(s) if s.code == 403 => "forbidden",
                kube::Error::Api(s) if s.code == 422 => "invalid_child",
                kube::Error::Api(s) if s.code == 429 => "throttled",
                kube::Error::Api(_) => "api_error",
                _ => "api_unreachable",
            };
        }
        match self.source.as_ref() {
            Cause::Resolve(ResolveError::NotSynced { .. })
            | Cause::Apply(ApplyError::NotSynced { .. }) => "not_synced",
            Cause::Build(_)
            | Cause::Apply(ApplyError::Serialize { .. })
            | Cause::Status(StatusError::Serialize(_)) => "serialize",
            _ if self.user_fixable() => "user_fixable",
            _ => "other",
        }
    }

    /// The API server asked us to slow down: retry soon, without growing the object's
    /// backoff. (A 5xx can be persistent, such as a full Service IP range, and a watch that
    /// does not list may lack rights: they back off and show in the status.)
    pub fn is_transient(&self) -> bool {
        matches!(self.kube(), Some(kube::Error::Api(s)) if s.code == 429)
    }

    /// The message shown in a condition or an Event: the cause, without the object (which the
    /// condition is on already).
    pub fn message(&self) -> String {
        self.source.to_string()
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A user-fixable problem as it is shown in a condition (reason and message), kept by a pass
/// that goes on despite it (the Tenant's guard rails, a Channel's key).
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    pub reason: &'static str,
    pub message: String,
}

impl From<&Error> for Problem {
    fn from(e: &Error) -> Self {
        Problem {
            reason: e.reason(),
            message: e.message(),
        }
    }
}

/// A step's result with the object attached: `step_result.on(&obj)?`.
pub trait OnObject<T> {
    fn on(self, object: &str) -> Result<T>;
}

impl<T, E: Into<Cause>> OnObject<T> for std::result::Result<T, E> {
    fn on(self, object: &str) -> Result<T> {
        self.map_err(|e| Error::new(object, e))
    }
}

/// Names an object for messages: `Kind namespace/name` or `Kind name`.
pub fn object_name<K: kube::Resource<DynamicType = ()>>(obj: &K) -> String {
    let kind = K::kind(&());
    let name = obj.meta().name.as_deref().unwrap_or_default();
    match obj.meta().namespace.as_deref() {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::Resolve => "resolve",
            Step::Validate => "validate",
            Step::Build => "build",
            Step::Apply => "apply",
            Step::Status => "status",
            Step::Finalize => "finalize",
            Step::Database => "database",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("x", "y")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn one_place_says_reason_label_and_fixability() {
        let e = Error::new(
            "Tenant acme",
            ResolveError::SecretNotFound {
                namespace: "xin-acme".into(),
                name: "db".into(),
            },
        );
        assert_eq!(e.step, Step::Resolve);
        assert!(e.user_fixable());
        assert!(!e.is_transient());
        assert_eq!(e.reason(), reason::SECRET_NOT_FOUND);
        assert_eq!(e.metric_label(), "user_fixable");
        assert_eq!(e.message(), "Secret xin-acme/db not found");
        assert_eq!(
            e.to_string(),
            "Tenant acme: resolve: Secret xin-acme/db not found"
        );

        let throttled = Error::new(
            "Tenant acme",
            ApplyError::Kube {
                verb: "apply",
                kind: "Deployment",
                name: "xin-gateway".into(),
                source: api(429),
            },
        );
        assert!(throttled.is_transient() && !throttled.user_fixable());
        assert_eq!(throttled.metric_label(), "throttled");
        assert_eq!(throttled.reason(), reason::API_ERROR);
        // Only a 429 is retried soon: a 5xx can last (a full Service IP range), so it backs
        // off like any other API error and shows in the status.
        for code in [500, 503, 504] {
            let e = Error::new(
                "Tenant acme",
                ApplyError::Kube {
                    verb: "apply",
                    kind: "Service",
                    name: "xin-gateway".into(),
                    source: api(code),
                },
            );
            assert!(!e.is_transient() && !e.user_fixable(), "{code}");
            assert_eq!(e.reason(), reason::API_ERROR, "{code}");
        }
        let conflict = Error::new("Tenant acme", StatusError::Kube(api(409)));
        assert_eq!(
            (conflict.metric_label(), conflict.step),
            ("conflict", Step::Status)
        );
        let not_synced = Error::new("Tenant acme", ResolveError::NotSynced { what: "Secrets" });
        assert!(!not_synced.is_transient() && !not_synced.user_fixable());
        assert_eq!(not_synced.metric_label(), "not_synced");
    }

    #[test]
    fn a_refused_destination_names_the_field_the_redacted_url_and_the_reason() {
        let policy = crate::config::Config::for_tests().destination_policy();
        let e = ValidateError::check_destination(
            &policy,
            "spec.llm.endpoint",
            "http://user:s3cret@0x7f.1:8000/v1?key=s3cret",
        )
        .unwrap_err();
        let e = Error::new("Tenant acme", e);
        assert_eq!(
            e.message(),
            "spec.llm.endpoint http://0x7f.1:8000/v1 is not an allowed destination: a loopback address"
        );
        assert_eq!(e.reason(), reason::DESTINATION_NOT_ALLOWED);
        assert!(e.user_fixable());
        assert_eq!(e.step, Step::Validate);
        assert!(
            ValidateError::check_destination(&policy, "f", "https://llm.example.com/v1").is_ok()
        );
    }
}
