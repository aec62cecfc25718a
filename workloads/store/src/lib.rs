//! The platform database shared by the workload binaries: one set of embedded migrations
//! (gateway inbox, conversations and messages, knowledge chunks, outbox events) and
//! connections scoped to one tenant. Isolation is PostgreSQL row-level security: every table
//! has a `tenant` column and a policy comparing it with the session's `xin.tenant` setting,
//! which [`connect`] sets on every pooled connection.
#![forbid(unsafe_code)]

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// Applies the embedded migrations. Safe to run from several replicas at once (sqlx holds an
/// advisory lock while migrating).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    sqlx::migrate!("./migrations").run(pool).await
}

/// A pool whose every connection sees only `tenant`'s rows. The error names the variable,
/// never the URL (it may hold a password).
pub async fn connect(url: &str, tenant: &str, max_connections: u32) -> Result<PgPool, String> {
    let opts: PgConnectOptions = url
        .parse()
        .map_err(|e| format!("DATABASE_URL is not a PostgreSQL URL: {e}"))?;
    let tenant = tenant.to_string();
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .after_connect(move |conn, _| {
            let tenant = tenant.clone();
            Box::pin(async move {
                sqlx::query("SELECT set_config('xin.tenant', $1, false)")
                    .bind(tenant)
                    .execute(conn)
                    .await
                    .map(|_| ())
            })
        })
        .connect_with(opts)
        .await
        .map_err(|e| format!("cannot connect to the database (DATABASE_URL): {e}"))
}

/// `true` when the pool's role bypasses row-level security (a superuser or `BYPASSRLS`
/// role), in which case tenant isolation would not hold: the binaries refuse to start.
pub async fn bypasses_row_security(pool: &PgPool) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user")
        .fetch_one(pool)
        .await
}

/// Test support: a fresh database owned by the ordinary role `xin_app` (created when
/// missing), on the server `XIN_TEST_DATABASE_URL` names (a superuser URL, as
/// `e2e/postgres.sh` prints). Returns the URL the workloads should use.
pub async fn fresh_test_database(prefix: &str) -> String {
    let admin_url = std::env::var("XIN_TEST_DATABASE_URL").expect(
        "XIN_TEST_DATABASE_URL is not set: start PostgreSQL with `e2e/postgres.sh start`, or run `make test`",
    );
    let opts: PgConnectOptions = admin_url.parse().expect("XIN_TEST_DATABASE_URL");
    let admin = PgPool::connect_with(opts.clone())
        .await
        .expect("connect to the test PostgreSQL");
    // Several tests race to create the role: a duplicate is fine.
    let _ = sqlx::query("CREATE ROLE xin_app LOGIN NOSUPERUSER NOBYPASSRLS")
        .execute(&admin)
        .await;
    let db = format!("{prefix}_{:016x}", rand::random::<u64>());
    // `db` is our own name (prefix from the test code, hex), never input.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {db} OWNER xin_app"
    )))
    .execute(&admin)
    .await
    .expect("create the test database");
    admin.close().await;
    format!(
        "postgres://xin_app@{}:{}/{db}",
        opts.get_host(),
        opts.get_port()
    )
}
