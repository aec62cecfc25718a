//! What a database role may do, checked from its own session.

use sqlx::PgPool;

/// What a runtime role could do beyond reading and writing rows, each a reason tenant
/// isolation would not hold: empty when it has data rights only.
pub async fn runtime_role_powers(pool: &PgPool) -> Result<Vec<&'static str>, sqlx::Error> {
    let (superuser, bypassrls, createrole, createdb, owns_db, owns_tables): (
        bool,
        bool,
        bool,
        bool,
        bool,
        bool,
    ) = sqlx::query_as(
        "SELECT r.rolsuper, r.rolbypassrls, r.rolcreaterole, r.rolcreatedb,
                d.datdba = r.oid,
                EXISTS (SELECT 1 FROM pg_tables t WHERE t.schemaname = 'public'
                        AND pg_has_role(current_user, t.tableowner, 'USAGE'))
         FROM pg_roles r, pg_database d
         WHERE r.rolname = current_user AND d.datname = current_database()",
    )
    .fetch_one(pool)
    .await?;
    Ok([
        (superuser, "is a superuser"),
        (bypassrls, "has BYPASSRLS"),
        (createrole, "has CREATEROLE"),
        (createdb, "has CREATEDB"),
        (owns_db, "owns the database"),
        (
            owns_tables,
            "owns the tables (it could change or drop them)",
        ),
    ]
    .into_iter()
    .filter_map(|(has, what)| has.then_some(what))
    .collect())
}
