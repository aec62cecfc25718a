//! The platform database shared by the workload binaries: one set of embedded migrations
//! (gateway inbox, conversations and messages, knowledge chunks, outbox events), the check
//! that a database carries the schema a binary needs, and ([`provision`]) a database and two
//! roles per Tenant. Isolation is the database: a tenant's runtime role can connect to its own
//! database only and has data rights only there (`docs/security.md`).
#![forbid(unsafe_code)]

pub mod cpu;
pub mod knowledge;
mod migrations;
pub mod provision;
mod roles;

use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool};

/// The embedded migrations, run by the migrations step ([`provision::migrate_as_owner`]),
/// never by the binaries.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The schema version this code needs: its newest migration.
pub fn schema_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or_default()
}

/// The newest migration applied successfully; 0 on a database never migrated.
pub(crate) async fn applied_version(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await?;
    if !exists {
        return Ok(0);
    }
    sqlx::query_scalar("SELECT COALESCE(max(version), 0) FROM _sqlx_migrations WHERE success")
        .fetch_one(&mut *conn)
        .await
}

/// Refuses a database whose schema is older than this code needs: the migrations step (run
/// by the operator before the workloads start) has not run yet. A newer schema is fine (the
/// migrations only add), so old pods keep working while new ones roll out.
pub async fn check_schema(pool: &PgPool) -> Result<(), String> {
    let mut conn = pool
        .acquire()
        .await
        .map_err(|e| format!("cannot connect to the database (DATABASE_URL): {e}"))?;
    let have = applied_version(&mut conn)
        .await
        .map_err(|e| format!("cannot read the schema version (DATABASE_URL): {e}"))?;
    let need = schema_version();
    if have < need {
        return Err(format!(
            "the database schema is at version {have} but this binary needs {need}: the \
             migrations step has not run (the operator runs it before the workloads start; \
             see docs/security.md, \"Migrations\")"
        ));
    }
    Ok(())
}

/// A pool on `url`. The error names the variable, never the URL (it holds a password).
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, String> {
    let opts: PgConnectOptions = url
        .parse()
        .map_err(|e| format!("DATABASE_URL is not a PostgreSQL URL: {e}"))?;
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(opts)
        .await
        .map_err(|e| format!("cannot connect to the database (DATABASE_URL): {e}"))
}

/// Refuses a runtime role that could do more than read and write rows (a superuser, an owner
/// of the tables, a role that can create roles or databases): tenant isolation would rest on
/// the code being well-behaved.
pub async fn check_runtime_role(pool: &PgPool) -> Result<(), String> {
    let powers = provision::runtime_role_powers(pool)
        .await
        .map_err(|e| format!("cannot check the database role (DATABASE_URL): {e}"))?;
    if powers.is_empty() {
        return Ok(());
    }
    Err(format!(
        "the DATABASE_URL role {}: a workload must connect with a role that has data rights \
         only (docs/security.md, \"Database\")",
        powers.join(", ")
    ))
}

/// Test support: the admin URL of the test server (`XIN_TEST_DATABASE_URL`, a superuser URL,
/// as `e2e/postgres.sh` prints).
pub fn test_admin_url() -> String {
    std::env::var("XIN_TEST_DATABASE_URL").expect(
        "XIN_TEST_DATABASE_URL is not set: start PostgreSQL with `e2e/postgres.sh start`, or run `make test`",
    )
}

/// Test support: a tenant database provisioned exactly as the operator does it (its own
/// database, an owner and a runtime role, migrated), on the server `XIN_TEST_DATABASE_URL`
/// names.
pub struct TestDatabase {
    pub admin: provision::Admin,
    pub names: provision::TenantDatabase,
    /// What the workloads use: the runtime role.
    pub url: String,
}

impl TestDatabase {
    pub async fn new() -> Self {
        let admin = provision::Admin::new(&test_admin_url()).expect("XIN_TEST_DATABASE_URL");
        let uid = format!("{:032x}", rand::random::<u128>());
        let names = provision::TenantDatabase::for_uid(&uid).expect("a hex uid");
        let password = provision::new_password();
        admin
            .ensure(&names, &password, "test")
            .await
            .expect("provision a test tenant database");
        let url = admin.url(&names.runtime, &password, &names.database);
        TestDatabase { admin, names, url }
    }
}

/// Test support: the runtime URL of a fresh [`TestDatabase`].
pub async fn fresh_test_database() -> String {
    TestDatabase::new().await.url
}
