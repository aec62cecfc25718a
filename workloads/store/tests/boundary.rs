//! The tenant boundary, tried from a tenant's own runtime credentials with arbitrary SQL,
//! against a real PostgreSQL: every way out is refused, and nothing of the other tenant shows.

use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use xin_store::TestDatabase;

async fn pool(url: &str) -> PgPool {
    PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .unwrap()
}

/// Writes one conversation row as `who`.
async fn conversation(who: &PgPool, id: &str, tenant: &str) {
    sqlx::query(
        "INSERT INTO conversations (id, tenant, channel, external_user) VALUES ($1, $2, 'web', 'u')",
    )
    .bind(id)
    .bind(tenant)
    .execute(who)
    .await
    .unwrap();
}

/// The password in a `postgres://user:password@host...` URL.
fn password(url: &str) -> &str {
    let userinfo = url.split('@').next().unwrap();
    userinfo.rsplit(':').next().unwrap()
}

fn code(e: &sqlx::Error) -> Option<String> {
    e.as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.to_string())
}

/// Runs `statement` as `who` and expects "insufficient privilege" (42501).
async fn refused(who: &PgPool, statement: &str) {
    let e = sqlx::query(sqlx::AssertSqlSafe(statement.to_string()))
        .execute(who)
        .await
        .expect_err(statement);
    assert_eq!(code(&e).as_deref(), Some("42501"), "{statement}: {e}");
}

#[tokio::test]
async fn a_tenants_runtime_role_cannot_step_out_of_its_database() {
    let (a, b) = tokio::join!(TestDatabase::new(), TestDatabase::new());
    let pa = pool(&a.url).await;
    let pb = pool(&b.url).await;
    // Each tenant writes a row of its own.
    for (p, t) in [(&pa, "a"), (&pb, "b")] {
        conversation(p, &format!("conv-{t}"), t).await;
    }

    // Connecting to the other tenant's database: refused (no CONNECT right).
    let other = a
        .admin
        .url(&a.names.runtime, password(&a.url), &b.names.database);
    let e = PgConnection::connect(&other).await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("42501"), "{e}");

    // The session setting that row-level security used to read changes nothing: a's database
    // holds only a's rows.
    sqlx::query("SELECT set_config('xin.tenant', 'b', false)")
        .execute(&pa)
        .await
        .unwrap();
    let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM conversations")
        .fetch_all(&pa)
        .await
        .unwrap();
    assert_eq!(ids, vec!["conv-a".to_string()]);

    // Becoming another role, changing the schema or the policies, making roles, reading
    // password hashes: each refused.
    for statement in [
        format!("SET ROLE \"{}\"", b.names.runtime),
        format!("SET ROLE \"{}\"", a.names.owner),
        "SET ROLE postgres".to_string(),
        "ALTER TABLE gateway_inbox DISABLE ROW LEVEL SECURITY".to_string(),
        "ALTER TABLE gateway_inbox NO FORCE ROW LEVEL SECURITY".to_string(),
        "CREATE POLICY p ON conversations USING (true)".to_string(),
        "DROP TABLE conversations".to_string(),
        "TRUNCATE conversations".to_string(),
        "CREATE TABLE mine (x int)".to_string(),
        "CREATE ROLE intruder LOGIN".to_string(),
        "CREATE DATABASE intruder".to_string(),
        "SELECT rolpassword FROM pg_authid".to_string(),
        "DELETE FROM _sqlx_migrations".to_string(),
        format!("ALTER ROLE \"{}\" BYPASSRLS", a.names.runtime),
    ] {
        refused(&pa, &statement).await;
    }
    // Granting what it does not own is only a warning ("no privileges were granted"): b still
    // cannot connect to a's database afterwards.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "GRANT CONNECT ON DATABASE \"{}\" TO PUBLIC",
        a.names.database
    )))
    .execute(&pa)
    .await
    .unwrap();
    let b_into_a = b
        .admin
        .url(&b.names.runtime, password(&b.url), &a.names.database);
    let e = PgConnection::connect(&b_into_a).await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("42501"), "{e}");
    // Nor can a log in as b's role with its own password.
    let a_as_b = a
        .admin
        .url(&b.names.runtime, password(&a.url), &b.names.database);
    let e = PgConnection::connect(&a_as_b).await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("28P01"), "{e}");

    // DROP POLICY of the dropped policy names nothing; dropping one that exists needs the
    // owner: make one as the owner and try.
    let owner_url = a
        .admin
        .owner_login(&a.names, &xin_store::provision::new_password())
        .await
        .unwrap();
    let owner = pool(&owner_url).await;
    sqlx::query("CREATE POLICY audit ON conversations USING (true)")
        .execute(&owner)
        .await
        .unwrap();
    owner.close().await;
    refused(&pa, "DROP POLICY audit ON conversations").await;

    // The server's maintenance database keeps PostgreSQL's default CONNECT for PUBLIC (the
    // operator does not change server-wide settings; docs/security.md says how to close it):
    // a session there can make nothing and read no password hash.
    let maintenance = PgPool::connect(&a.admin.url(&a.names.runtime, password(&a.url), "postgres"))
        .await
        .expect("the maintenance database is open to every role by PostgreSQL's default");
    for statement in [
        "CREATE TABLE mine (x int)",
        "CREATE SCHEMA mine",
        "SELECT rolpassword FROM pg_authid",
        "CREATE DATABASE intruder",
    ] {
        refused(&maintenance, statement).await;
    }
    maintenance.close().await;

    // And b's row is where it was, seen by b only.
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM conversations WHERE tenant = 'b'")
        .fetch_one(&pa)
        .await
        .unwrap();
    assert_eq!(n, 0, "no row of b in a's database");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM conversations")
        .fetch_one(&pb)
        .await
        .unwrap();
    assert_eq!(n, 1, "b still sees its own row");
    assert!(
        xin_store::provision::runtime_role_powers(&pa)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn the_schema_check_refuses_an_unmigrated_database_and_names_both_versions() {
    let t = TestDatabase::new().await;
    let p = pool(&t.url).await;
    xin_store::check_schema(&p).await.unwrap();
    // A fresh database never migrated, reached as its owner: version 0.
    let admin = PgPool::connect(&xin_store::test_admin_url()).await.unwrap();
    let name = format!("xin_unmigrated_{:08x}", rand::random::<u32>());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .unwrap();
    let admin_url = xin_store::test_admin_url();
    let url = format!("{}/{name}", admin_url.rsplit_once('/').unwrap().0);
    let bare = pool(&url).await;
    let e = xin_store::check_schema(&bare).await.unwrap_err();
    let need = xin_store::schema_version();
    assert!(
        e.contains(&format!("at version 0 but this binary needs {need}")),
        "{e}"
    );
    // The superuser the test server gives is refused as a runtime role, with each reason.
    let e = xin_store::check_runtime_role(&bare).await.unwrap_err();
    assert!(
        e.contains("is a superuser") && e.contains("owns the database"),
        "{e}"
    );
}

#[tokio::test]
async fn retain_disables_the_login_and_keeps_the_rows_delete_drops_everything() {
    let t = TestDatabase::new().await;
    let p = pool(&t.url).await;
    conversation(&p, "c", "t").await;
    assert_eq!(t.admin.state(&t.names).await.unwrap(), (true, true));
    t.admin.disable(&t.names).await.unwrap();
    // The open session was ended, and a new one is refused.
    assert!(sqlx::query("SELECT 1").execute(&p).await.is_err());
    let e = PgConnection::connect(&t.url).await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("28000"), "{e}");
    assert_eq!(t.admin.state(&t.names).await.unwrap(), (true, false));
    // The rows are still there, for whoever audits them.
    let owner_url = t
        .admin
        .owner_login(&t.names, &xin_store::provision::new_password())
        .await
        .unwrap();
    let owner = pool(&owner_url).await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM conversations")
        .fetch_one(&owner)
        .await
        .unwrap();
    assert_eq!(n, 1);
    owner.close().await;

    t.admin.drop(&t.names).await.unwrap();
    assert_eq!(t.admin.state(&t.names).await.unwrap(), (false, false));
    let admin = PgPool::connect(&xin_store::test_admin_url()).await.unwrap();
    let roles: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname = ANY($1)")
        .bind(vec![t.names.owner.clone(), t.names.runtime.clone()])
        .fetch_one(&admin)
        .await
        .unwrap();
    assert_eq!(roles, 0, "both roles dropped");
    // Dropping again is a no-op (a decommission retried).
    t.admin.drop(&t.names).await.unwrap();
}

#[tokio::test]
async fn provisioning_twice_keeps_the_data_and_takes_the_new_password() {
    let t = TestDatabase::new().await;
    let p = pool(&t.url).await;
    conversation(&p, "c", "t").await;
    let password = xin_store::provision::new_password();
    let v = t.admin.ensure(&t.names, &password, "test").await.unwrap();
    assert_eq!(v, xin_store::schema_version());
    let rotated = t.admin.url(&t.names.runtime, &password, &t.names.database);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM conversations")
        .fetch_one(&pool(&rotated).await)
        .await
        .unwrap();
    assert_eq!(n, 1);
    // The old password no longer opens a session.
    let e = PgConnection::connect(&t.url).await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("28P01"), "{e}");
}

#[test]
fn names_come_from_the_uid_only() {
    let n = xin_store::provision::TenantDatabase::for_uid("3F2504E0-4F89-11D3-9A0C-0305E82C3301")
        .unwrap();
    assert_eq!(n.database, "xin_3f2504e04f8911d39a0c0305e82c3301");
    assert_eq!(n.owner, "xin_3f2504e04f8911d39a0c0305e82c3301_owner");
    assert_eq!(n.runtime, "xin_3f2504e04f8911d39a0c0305e82c3301_app");
    for bad in ["", "x; DROP DATABASE postgres", "abc\"def", &"a".repeat(40)] {
        assert!(
            xin_store::provision::TenantDatabase::for_uid(bad).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn a_scram_verifier_never_contains_the_password() {
    let v = xin_store::provision::scram_verifier("hunter2hunter2");
    assert!(v.starts_with("SCRAM-SHA-256$4096:"), "{v}");
    assert!(!v.contains("hunter2"));
    assert_ne!(
        v,
        xin_store::provision::scram_verifier("hunter2hunter2"),
        "salted"
    );
}
