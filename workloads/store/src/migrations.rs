//! The migrations step, as the schema's owner: the embedded migrations, then the runtime role's
//! data rights on what they made.

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, PgPool};

use crate::provision::ProvisionError;

fn sql(what: &'static str) -> impl FnOnce(sqlx::Error) -> ProvisionError {
    move |source| ProvisionError::Sql { what, source }
}

/// The migrations step: connects as the schema's owner, applies the embedded migrations, and
/// gives `runtime_role` data rights on every table (read-only on the migrations' own table).
/// `lock_down_schema` also takes `PUBLIC`'s rights on the `public` schema away (a database the
/// operator made; a team's own database keeps what its owner set). Returns the schema version.
pub async fn migrate_as_owner(
    owner_url: &str,
    runtime_role: &str,
    lock_down_schema: bool,
) -> Result<i64, ProvisionError> {
    let opts: PgConnectOptions = owner_url
        .parse()
        .map_err(|e: sqlx::Error| ProvisionError::AdminUrl(e.to_string()))?;
    // A pool of one rather than a bare connection: the migrator's future over a pool is
    // `Send` for any caller (an operator's reconcile runs on a multi-threaded runtime).
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(std::time::Duration::from_secs(15))
        .connect_with(opts)
        .await
        .map_err(sql("connecting as the schema's owner"))?;
    let result = migrate_on(&pool, runtime_role, lock_down_schema).await;
    pool.close().await;
    result
}

async fn migrate_on(
    pool: &PgPool,
    runtime_role: &str,
    lock_down_schema: bool,
) -> Result<i64, ProvisionError> {
    let role = runtime_role.replace('"', "\"\"");
    let mut before = vec![];
    if lock_down_schema {
        before.push((
            "revoking PUBLIC's rights on schema public",
            "REVOKE ALL ON SCHEMA public FROM PUBLIC".to_string(),
        ));
        before.push((
            "granting the runtime role USAGE on schema public",
            format!("GRANT USAGE ON SCHEMA public TO \"{role}\""),
        ));
    }
    for (what, s) in before {
        sqlx::query(AssertSqlSafe(s))
            .execute(pool)
            .await
            .map_err(sql(what))?;
    }
    crate::MIGRATOR.run(pool).await?;
    for (what, s) in [
        (
            "granting the runtime role data rights",
            format!(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO \"{role}\""
            ),
        ),
        (
            "granting the runtime role the sequences",
            format!("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO \"{role}\""),
        ),
        (
            "keeping the migrations table read-only",
            format!("REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON _sqlx_migrations FROM \"{role}\""),
        ),
    ] {
        sqlx::query(AssertSqlSafe(s))
            .execute(pool)
            .await
            .map_err(sql(what))?;
    }
    let mut conn = pool
        .acquire()
        .await
        .map_err(sql("reading the schema version"))?;
    crate::applied_version(&mut conn)
        .await
        .map_err(sql("reading the schema version"))
}
