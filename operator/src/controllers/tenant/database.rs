//! The tenant's database, between validate and build: provisioned on the platform server
//! (platform-managed) or taken from the team's Secrets (bring your own), then migrated by the
//! operator as the schema's owner — before any workload is built, so no workload starts on a
//! schema older than it needs. Skipped, with no connection at all, when the status already
//! records this database at the current schema version and no password rotation is pending.

use std::time::Duration;

use kube::ResourceExt;
use sqlx::postgres::PgConnectOptions;
use xin_api::tenant::{ROTATE_DATABASE_PASSWORD_ANNOTATION, Tenant, TenantDatabaseStatus};
use xin_store::provision::{self, TenantDatabase};

use super::validate::ValidatedTenant;
use crate::builders::tenant::DATABASE_SECRET;
use crate::controllers::Context;
use crate::error::{DatabaseError, Error, Problem};

pub const MANAGED: &str = "Managed";
pub const EXTERNAL: &str = "External";

/// How long one connection to a team's own database may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// What the spec and the namespace say about the database (read by the resolve step).
#[derive(Clone, PartialEq)]
pub enum DatabasePlan {
    /// The operator provisions it; the runtime URL it wrote earlier, if any, and the rotation
    /// request that URL answers.
    Managed {
        existing_url: Option<String>,
        rotation_handled: Option<String>,
    },
    /// The team's own: the workloads' URL and the owner's, for the migrations step.
    External {
        runtime_url: String,
        owner_url: String,
    },
}

/// The database the workloads get.
#[derive(Clone, PartialEq)]
pub struct Database {
    /// The runtime URL (only digested into the pod templates' hash; rendered only into the
    /// managed database's Secret).
    pub url: String,
    /// Platform-managed: the Secret's content (URL, the rotation request it answers).
    pub managed: Option<(String, Option<String>)>,
    pub status: TenantDatabaseStatus,
    /// The runtime password was rotated in this pass.
    pub rotated: bool,
}

// The URLs hold passwords: `Debug` shows neither.
impl std::fmt::Debug for DatabasePlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatabasePlan::Managed {
                existing_url,
                rotation_handled,
            } => f
                .debug_struct("Managed")
                .field("existing_url", &existing_url.as_ref().map(|_| "<redacted>"))
                .field("rotation_handled", rotation_handled)
                .finish(),
            DatabasePlan::External { .. } => f.write_str("External(<redacted>)"),
        }
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("status", &self.status)
            .field("rotated", &self.rotated)
            .finish_non_exhaustive()
    }
}

/// Runs the step for a Tenant whose workloads can be built: on success the inputs carry the
/// database; on failure the workloads are not built (those that run are left alone) and the
/// Tenant says why.
pub async fn step(v: &mut ValidatedTenant, ctx: &Context, object: &str) {
    let Ok(inputs) = v.workloads.as_mut() else {
        return;
    };
    match ensure(&v.tenant, &inputs.database_plan, ctx).await {
        Ok(db) => {
            inputs.db_url = db.url.as_bytes().to_vec();
            inputs.database = Some(db);
        }
        Err(e) => v.workloads = Err(Problem::from(&Error::new(object, e))),
    }
}

/// `host:port/database`: how the status names a database (no user, no password).
fn target(opts: &PgConnectOptions) -> String {
    format!(
        "{}:{}/{}",
        opts.get_host(),
        opts.get_port(),
        opts.get_database().unwrap_or_default()
    )
}

fn current(tenant: &Tenant, mode: &str, name: &str) -> Option<TenantDatabaseStatus> {
    tenant
        .status
        .as_ref()
        .and_then(|s| s.database.clone())
        .filter(|d| {
            d.mode == mode && d.name == name && d.schema_version >= xin_store::schema_version()
        })
}

/// The password of a URL this operator wrote (`postgres://role:password@host:port/db`).
fn password_of(url: &str) -> Option<&str> {
    let userinfo = url.strip_prefix("postgres://")?.split_once('@')?.0;
    userinfo
        .split_once(':')
        .map(|(_, p)| p)
        .filter(|p| !p.is_empty())
}

async fn ensure(
    tenant: &Tenant,
    plan: &DatabasePlan,
    ctx: &Context,
) -> Result<Database, DatabaseError> {
    match plan {
        DatabasePlan::Managed {
            existing_url,
            rotation_handled,
        } => {
            let admin = ctx.database.as_ref().ok_or(DatabaseError::NotConfigured)?;
            let names = TenantDatabase::for_uid(&tenant.uid().unwrap_or_default())
                .map_err(|e| DatabaseError::Provision(e.to_string()))?;
            let requested = tenant
                .annotations()
                .get(ROTATE_DATABASE_PASSWORD_ANNOTATION)
                .cloned();
            let rotate = requested.is_some() && requested != *rotation_handled;
            let name = format!("{}/{}", admin.server(), names.database);
            let kept = existing_url
                .as_deref()
                .filter(|u| !rotate && password_of(u).is_some());
            if let (Some(url), Some(status)) = (kept, current(tenant, MANAGED, &name)) {
                return Ok(Database {
                    url: url.to_string(),
                    managed: Some((url.to_string(), rotation_handled.clone())),
                    status,
                    rotated: false,
                });
            }
            let password = kept
                .and_then(password_of)
                .map(String::from)
                .unwrap_or_else(provision::new_password);
            let version = admin
                .ensure(&names, &password, &tenant.name_any())
                .await
                .map_err(DatabaseError::from_provision)?;
            let url = admin.url(&names.runtime, &password, &names.database);
            Ok(Database {
                managed: Some((url.clone(), requested.or_else(|| rotation_handled.clone()))),
                url,
                status: TenantDatabaseStatus {
                    mode: MANAGED.into(),
                    name,
                    schema_version: version,
                    url_secret_name: Some(DATABASE_SECRET.into()),
                },
                rotated: rotate,
            })
        }
        DatabasePlan::External {
            runtime_url,
            owner_url,
        } => {
            let runtime: PgConnectOptions =
                runtime_url.parse().map_err(|_| DatabaseError::InvalidUrl {
                    field: "spec.database.urlSecretRef",
                })?;
            let _: PgConnectOptions = owner_url.parse().map_err(|_| DatabaseError::InvalidUrl {
                field: "spec.database.ownerUrlSecretRef",
            })?;
            let name = target(&runtime);
            let status = match current(tenant, EXTERNAL, &name) {
                Some(s) => s,
                None => {
                    let version = tokio::time::timeout(
                        CONNECT_TIMEOUT * 4,
                        provision::migrate_as_owner(owner_url, runtime.get_username(), false),
                    )
                    .await
                    .map_err(|_| {
                        DatabaseError::Unavailable("the migrations step timed out".into())
                    })?
                    .map_err(DatabaseError::from_provision)?;
                    check_runtime_role(runtime).await?;
                    TenantDatabaseStatus {
                        mode: EXTERNAL.into(),
                        name,
                        schema_version: version,
                        url_secret_name: None,
                    }
                }
            };
            Ok(Database {
                url: runtime_url.clone(),
                managed: None,
                status,
                rotated: false,
            })
        }
    }
}

/// A team's runtime role may read and write rows, nothing more.
async fn check_runtime_role(opts: PgConnectOptions) -> Result<(), DatabaseError> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(CONNECT_TIMEOUT)
        .connect_with(opts)
        .await
        .map_err(|e| DatabaseError::Unavailable(e.to_string()))?;
    let powers = provision::runtime_role_powers(&pool).await;
    pool.close().await;
    let powers = powers.map_err(|e| DatabaseError::Unavailable(e.to_string()))?;
    if powers.is_empty() {
        Ok(())
    } else {
        Err(DatabaseError::RoleTooPowerful(powers.join(", ")))
    }
}

/// Decommission: `Delete` drops the platform-managed database and its roles, `Retain` keeps
/// the rows and disables the runtime login. A team's own database is left as it is.
pub async fn decommission(tenant: &Tenant, ctx: &Context) -> Result<(), String> {
    // Not only when the spec asks for a managed database now: a Tenant that moved to its own
    // database keeps the one provisioned before (named by its uid), which goes the same way.
    // Both statements are no-ops when nothing of that name exists.
    let provisioned = tenant
        .status
        .as_ref()
        .and_then(|s| s.database.as_ref())
        .is_some_and(|d| d.mode == MANAGED);
    let Some(admin) = ctx.database.as_ref() else {
        if provisioned && tenant.spec.database.url_secret_ref.is_none() {
            return Err("the tenant's database was provisioned on the platform server, but the operator has no admin URL for it any more (XIN_DATABASE_ADMIN_URL)".into());
        }
        return Ok(());
    };
    let names =
        TenantDatabase::for_uid(&tenant.uid().unwrap_or_default()).map_err(|e| e.to_string())?;
    let result = match tenant.spec.deletion_policy {
        xin_api::tenant::DeletionPolicy::Delete => admin.drop(&names).await,
        xin_api::tenant::DeletionPolicy::Retain => admin.disable(&names).await,
    };
    result.map_err(|e| format!("database {}: {e}", names.database))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_of_a_url_the_operator_wrote() {
        assert_eq!(
            password_of("postgres://xin_1_app:Abc123@db:5432/xin_1"),
            Some("Abc123")
        );
        assert_eq!(password_of("postgres://xin_1_app@db:5432/xin_1"), None);
        assert_eq!(password_of("postgres://xin_1_app:@db:5432/xin_1"), None);
        assert_eq!(password_of("mysql://a:b@c/d"), None);
    }
}
