//! A database of its own for every Tenant, and the two roles that use it: an owner that only
//! the migrations step logs in as, and a runtime role with data rights only. The operator
//! runs this with the platform's admin credentials; the test suites use it to get the same
//! least-privilege databases the workloads run against.
//!
//! Why a database per tenant rather than a schema: a role's `CONNECT` right is per database,
//! so a tenant's credentials cannot even open a session where another tenant's rows are, and
//! nothing in the catalogue of one tenant's database names another's tables. Schemas share one
//! catalogue and rely on `USAGE` grants that every later migration must keep right.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use rand::Rng;
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, PgPool};

pub use crate::migrations::migrate_as_owner;
pub use crate::roles::runtime_role_powers;

/// The names of one Tenant's database and roles, derived from its UID (never its name: a
/// Tenant re-created with the same name gets new, empty ones).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantDatabase {
    pub database: String,
    pub owner: String,
    pub runtime: String,
}

impl TenantDatabase {
    /// `uid` is a Kubernetes UID (hex and dashes); anything else is refused, so the names are
    /// always plain identifiers.
    pub fn for_uid(uid: &str) -> Result<Self, ProvisionError> {
        let hex: String = uid.chars().filter(|c| *c != '-').collect();
        if hex.is_empty() || hex.len() > 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(ProvisionError::InvalidUid);
        }
        let base = format!("xin_{}", hex.to_ascii_lowercase());
        Ok(TenantDatabase {
            database: base.clone(),
            owner: format!("{base}_owner"),
            runtime: format!("{base}_app"),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("the Tenant has no UID to name its database after")]
    InvalidUid,
    #[error("the database admin URL is not a PostgreSQL URL: {0}")]
    AdminUrl(String),
    #[error("{what}: {source}")]
    Sql {
        what: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl ProvisionError {
    /// The server could not be reached (or refused the admin's login): worth retrying.
    pub fn is_connection(&self) -> bool {
        matches!(self, ProvisionError::Sql { source, .. } if matches!(source,
            sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed))
    }
}

fn sql(what: &'static str) -> impl FnOnce(sqlx::Error) -> ProvisionError {
    move |source| ProvisionError::Sql { what, source }
}

/// A random password of 32 letters and digits (190 bits): safe in a URL and in SQL.
pub fn new_password() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..32)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802/7677, as `psql`'s
/// `\password` computes it). Sending the verifier instead of the password keeps the password
/// out of the server's statement log, even when a statement fails.
pub fn scram_verifier(password: &str) -> String {
    const ITERATIONS: u32 = 4096;
    let salt: [u8; 16] = rand::random();
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), &salt, ITERATIONS, &mut salted);
    let hmac = |key: &[u8], msg: &[u8]| {
        let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
        m.update(msg);
        m.finalize().into_bytes()
    };
    let client_key = hmac(&salted, b"Client Key");
    let stored_key = Sha256::digest(client_key);
    let server_key = hmac(&salted, b"Server Key");
    format!(
        "SCRAM-SHA-256${ITERATIONS}:{}${}:{}",
        B64.encode(salt),
        B64.encode(stored_key),
        B64.encode(server_key)
    )
}

/// The platform's admin connection: creates, migrates, disables and drops tenant databases.
/// It needs `CREATEDB` and `CREATEROLE` (a superuser, or a managed service's admin role).
#[derive(Clone)]
pub struct Admin {
    opts: PgConnectOptions,
    pool: PgPool,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        write!(
            f,
            "Admin({}:{})",
            self.opts.get_host(),
            self.opts.get_port()
        )
    }
}

impl Admin {
    /// No connection is made until one is needed.
    pub fn new(url: &str) -> Result<Self, ProvisionError> {
        let opts: PgConnectOptions = url
            .parse()
            .map_err(|e: sqlx::Error| ProvisionError::AdminUrl(e.to_string()))?;
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .min_connections(0)
            .idle_timeout(std::time::Duration::from_secs(60))
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect_lazy_with(opts.clone());
        Ok(Admin { opts, pool })
    }

    /// `host:port` of the server.
    pub fn server(&self) -> String {
        format!(
            "{}:{}",
            url_host(self.opts.get_host()),
            self.opts.get_port()
        )
    }

    /// The URL a role uses to reach `database` on the admin's server.
    pub fn url(&self, role: &str, password: &str, database: &str) -> String {
        format!(
            "postgres://{role}:{password}@{}:{}/{database}",
            url_host(self.opts.get_host()),
            self.opts.get_port()
        )
    }

    async fn exec(&self, what: &'static str, statement: String) -> Result<(), ProvisionError> {
        sqlx::query(AssertSqlSafe(statement))
            .execute(&self.pool)
            .await
            .map_err(sql(what))?;
        Ok(())
    }

    async fn role_exists(&self, role: &str) -> Result<bool, ProvisionError> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(role)
            .fetch_one(&self.pool)
            .await
            .map_err(sql("reading pg_roles"))
    }

    async fn database_exists(&self, database: &str) -> Result<bool, ProvisionError> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(database)
            .fetch_one(&self.pool)
            .await
            .map_err(sql("reading pg_database"))
    }

    /// Creates what is missing — the roles, the database, its rights — sets the runtime
    /// role's password, and migrates the schema as the owner. Idempotent; returns the schema
    /// version. `label` (the Tenant's name) goes into the database's comment, for humans.
    pub async fn ensure(
        &self,
        db: &TenantDatabase,
        runtime_password: &str,
        label: &str,
    ) -> Result<i64, ProvisionError> {
        const ROLE: &str = "NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOREPLICATION";
        if !self.role_exists(&db.owner).await? {
            self.exec(
                "creating the owner role",
                // It owns the database, and through `pg_database_owner` the `public` schema.
                format!("CREATE ROLE \"{}\" NOLOGIN {ROLE}", db.owner),
            )
            .await
            .or_else(already_exists)?;
        }
        let verifier = scram_verifier(runtime_password);
        if !self.role_exists(&db.runtime).await? {
            self.exec(
                "creating the runtime role",
                format!(
                    "CREATE ROLE \"{}\" LOGIN {ROLE} NOINHERIT PASSWORD '{verifier}'",
                    db.runtime
                ),
            )
            .await
            .or_else(already_exists)?;
        }
        // Also re-asserts the attributes, should anyone have widened them.
        self.exec(
            "setting the runtime role's password",
            format!(
                "ALTER ROLE \"{}\" LOGIN {ROLE} NOINHERIT PASSWORD '{verifier}'",
                db.runtime
            ),
        )
        .await?;
        if !self.database_exists(&db.database).await? {
            // Not in a transaction (PostgreSQL refuses CREATE DATABASE in one).
            self.exec(
                "creating the database",
                format!(
                    "CREATE DATABASE \"{}\" OWNER \"{}\" TEMPLATE template0 ENCODING 'UTF8'",
                    db.database, db.owner
                ),
            )
            .await
            .or_else(already_exists)?;
        }
        let label = label.replace('\'', "''");
        for (what, statement) in [
            (
                "revoking PUBLIC's rights on the database",
                format!("REVOKE ALL ON DATABASE \"{}\" FROM PUBLIC", db.database),
            ),
            (
                "granting the runtime role CONNECT",
                format!(
                    "GRANT CONNECT, TEMPORARY ON DATABASE \"{}\" TO \"{}\"",
                    db.database, db.runtime
                ),
            ),
            (
                "commenting the database",
                format!(
                    "COMMENT ON DATABASE \"{}\" IS 'Xin tenant {label}'",
                    db.database
                ),
            ),
        ] {
            self.exec(what, statement).await?;
        }
        // The owner logs in only for the migrations, with a password nobody keeps.
        let owner_password = new_password();
        let owner_url = self.owner_login(db, &owner_password).await?;
        let migrated = migrate_as_owner(&owner_url, &db.runtime, true).await;
        let logout = self.owner_logout(db).await;
        let version = migrated?;
        logout?;
        Ok(version)
    }

    /// Lets the owner log in with `password`; returns its URL. For the migrations step, and
    /// for tests that need an owner URL (the bring-your-own mode).
    pub async fn owner_login(
        &self,
        db: &TenantDatabase,
        password: &str,
    ) -> Result<String, ProvisionError> {
        self.exec(
            "letting the owner log in",
            format!(
                "ALTER ROLE \"{}\" LOGIN PASSWORD '{}'",
                db.owner,
                scram_verifier(password)
            ),
        )
        .await?;
        Ok(self.url(&db.owner, password, &db.database))
    }

    async fn owner_logout(&self, db: &TenantDatabase) -> Result<(), ProvisionError> {
        self.exec(
            "disabling the owner's login",
            format!("ALTER ROLE \"{}\" NOLOGIN PASSWORD NULL", db.owner),
        )
        .await
    }

    /// `deletionPolicy: Retain`: the rows stay (for audit), the runtime role can no longer log
    /// in, and its open sessions end.
    pub async fn disable(&self, db: &TenantDatabase) -> Result<(), ProvisionError> {
        if self.role_exists(&db.runtime).await? {
            self.exec(
                "disabling the runtime login",
                format!("ALTER ROLE \"{}\" NOLOGIN", db.runtime),
            )
            .await?;
        }
        self.terminate_sessions(db).await
    }

    async fn terminate_sessions(&self, db: &TenantDatabase) -> Result<(), ProvisionError> {
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1 OR usename = $2",
        )
        .bind(&db.runtime)
        .bind(&db.owner)
        .execute(&self.pool)
        .await
        .map_err(sql("ending the tenant's sessions"))?;
        Ok(())
    }

    /// `deletionPolicy: Delete`: the database (its sessions ended) and both roles are gone.
    pub async fn drop(&self, db: &TenantDatabase) -> Result<(), ProvisionError> {
        self.exec(
            "dropping the database",
            format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", db.database),
        )
        .await?;
        for role in [&db.runtime, &db.owner] {
            self.exec("dropping a role", format!("DROP ROLE IF EXISTS \"{role}\""))
                .await?;
        }
        Ok(())
    }

    /// Whether the database exists, and the runtime role can log in.
    pub async fn state(&self, db: &TenantDatabase) -> Result<(bool, bool), ProvisionError> {
        let login: Option<bool> =
            sqlx::query_scalar("SELECT rolcanlogin FROM pg_roles WHERE rolname = $1")
                .bind(&db.runtime)
                .fetch_optional(&self.pool)
                .await
                .map_err(sql("reading pg_roles"))?;
        Ok((
            self.database_exists(&db.database).await?,
            login.unwrap_or(false),
        ))
    }
}

/// Two passes racing to create the same object: the second one finds it there.
fn already_exists(e: ProvisionError) -> Result<(), ProvisionError> {
    match &e {
        ProvisionError::Sql {
            source: sqlx::Error::Database(d),
            ..
        } if matches!(d.code().as_deref(), Some("42710" | "42P04" | "23505")) => Ok(()),
        _ => Err(e),
    }
}

fn url_host(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}
