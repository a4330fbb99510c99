//! Postgres: the pool and embedded migrations.
//!
//! Migrations are embedded in each service binary (`sqlx::migrate!`) and applied under a
//! Postgres advisory lock (sqlx's migrator takes `pg_advisory_lock` keyed by the database), so N
//! replicas starting at once apply each migration exactly once. Locally they run when the
//! service starts; in Kubernetes the migration Job runs `<service> migrate` before the rollout
//! and the pods start with `DATABASE_MIGRATE_ON_START=false`.
//!
//! TLS (rustls): `DATABASE_SSL_MODE` is libpq's `sslmode` (`disable`, `prefer`, `require`,
//! `verify-ca`, `verify-full`) and `DATABASE_CA_FILE` a PEM bundle a `verify-*` mode trusts
//! besides the public webpki roots (sqlx's rustls setup always starts from those, so
//! `verify-full` is what keeps a publicly certified impostor out: it must also hold the host's
//! name, and no public CA certifies a `.svc` name). `DATABASE_CA_FILE` needs
//! `DATABASE_SSL_MODE=verify-ca` or `verify-full`. They win over `sslmode`/`sslrootcert` in
//! `DATABASE_URL`; without them the URL's say, and its default is `prefer` (TLS when the
//! server offers it, unverified), as libpq's. Staging and prod set `verify-full` with the
//! cluster's CA.

use std::{str::FromStr, time::Duration};

use anyhow::Context as _;
use secrecy::{ExposeSecret as _, SecretString};
use sqlx::{
    PgPool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions, PgSslMode},
};

use crate::config::{ConfigError, HumanDuration, Vars};

/// `DATABASE_IDLE_IN_TRANSACTION_TIMEOUT`'s default.
const DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);

/// Settings of a service's database.
#[derive(Clone, Debug)]
pub struct DatabaseConfig {
    /// `DATABASE_URL`: `postgres://user:password@host:port/database`.
    pub url: SecretString,
    /// `DATABASE_MAX_CONNECTIONS`: the pool size (default 10).
    pub max_connections: u32,
    /// `DATABASE_ACQUIRE_TIMEOUT`: how long a request waits for a connection (default 5s).
    pub acquire_timeout: Duration,
    /// `DATABASE_STATEMENT_TIMEOUT`: the longest one statement may run (default 10s).
    pub statement_timeout: Duration,
    /// `DATABASE_IDLE_IN_TRANSACTION_TIMEOUT`: Postgres ends a session that keeps a
    /// transaction open this long without running a statement (default 60s). A replica that
    /// freezes or loses its network mid-transaction would otherwise hold its locks (the outbox
    /// relay's per-topic lock among them, stopping that topic for every replica) until TCP
    /// keepalive notices, hours later. No transaction of ours waits that long between
    /// statements. `0s` turns it off.
    pub idle_in_transaction_timeout: Duration,
    /// `DATABASE_MIGRATE_ON_START`: whether the service applies its migrations when it starts
    /// (default true; the Helm chart sets false and runs the migration Job instead).
    pub migrate_on_start: bool,
    /// `DATABASE_SSL_MODE`: libpq's `sslmode`; `None` leaves the URL's (default `prefer`).
    pub ssl_mode: Option<PgSslMode>,
    /// `DATABASE_CA_FILE`: CA certificates (PEM) a `verify-ca`/`verify-full` mode trusts, besides
    /// the public webpki roots.
    pub ca_file: Option<std::path::PathBuf>,
}

impl DatabaseConfig {
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        let url = vars.secret("DATABASE_URL")?;
        let scheme_ok = ["postgres://", "postgresql://"].iter().any(|scheme| url.expose_secret().starts_with(scheme));
        if !scheme_ok || PgConnectOptions::from_str(url.expose_secret()).is_err() {
            return Err(ConfigError::Invalid {
                name: "DATABASE_URL".into(),
                value: "(hidden)".into(),
                reason: "not a postgres:// URL".into(),
            });
        }
        let max_connections: u32 = vars.or("DATABASE_MAX_CONNECTIONS", 10)?;
        if max_connections == 0 {
            return Err(vars.invalid("DATABASE_MAX_CONNECTIONS", "must be at least 1"));
        }
        let ssl_mode = match vars.raw("DATABASE_SSL_MODE") {
            None => None,
            Some(text) => Some(PgSslMode::from_str(text).map_err(|_| {
                vars.invalid("DATABASE_SSL_MODE", "must be disable, allow, prefer, require, verify-ca or verify-full")
            })?),
        };
        let ca_file = vars.ca_file("DATABASE_CA_FILE")?.map(|(path, _)| path);
        if ca_file.is_some() && !matches!(ssl_mode, Some(PgSslMode::VerifyCa | PgSslMode::VerifyFull)) {
            return Err(vars
                .invalid("DATABASE_CA_FILE", "verifies nothing unless DATABASE_SSL_MODE is verify-ca or verify-full"));
        }
        Ok(Self {
            url,
            ssl_mode,
            ca_file,
            max_connections,
            acquire_timeout: vars.or("DATABASE_ACQUIRE_TIMEOUT", HumanDuration(Duration::from_secs(5)))?.0,
            statement_timeout: vars.or("DATABASE_STATEMENT_TIMEOUT", HumanDuration(Duration::from_secs(10)))?.0,
            idle_in_transaction_timeout: vars
                .or("DATABASE_IDLE_IN_TRANSACTION_TIMEOUT", HumanDuration(DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT))?
                .0,
            migrate_on_start: vars.or("DATABASE_MIGRATE_ON_START", true)?,
        })
    }

    /// A configuration for `url` with the defaults (tests, tools).
    pub fn for_url(url: &str) -> Self {
        Self {
            url: SecretString::from(url.to_owned()),
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(10),
            idle_in_transaction_timeout: DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT,
            migrate_on_start: true,
            ssl_mode: None,
            ca_file: None,
        }
    }
}

/// Opens the pool and checks that the database answers.
pub async fn connect(config: &DatabaseConfig) -> anyhow::Result<PgPool> {
    let statement_timeout = config.statement_timeout.as_millis().to_string();
    let idle_in_transaction_timeout = config.idle_in_transaction_timeout.as_millis().to_string();
    let mut options = PgConnectOptions::from_str(config.url.expose_secret())
        .context("DATABASE_URL is not a postgres:// URL")?
        .options([
            ("statement_timeout", statement_timeout.as_str()),
            ("idle_in_transaction_session_timeout", idle_in_transaction_timeout.as_str()),
        ]);
    if let Some(mode) = config.ssl_mode {
        options = options.ssl_mode(mode);
    }
    if let Some(ca_file) = &config.ca_file {
        options = options.ssl_root_cert(ca_file);
    }
    let database = options.get_database().unwrap_or("(default)").to_owned();
    PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(config.acquire_timeout)
        .connect_with(options)
        .await
        .with_context(|| format!("cannot connect to Postgres database {database}"))
}

/// Applies the service's embedded migrations under the migrator's advisory lock.
pub async fn migrate(pool: &PgPool, migrator: &Migrator) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    migrator.run(pool).await.context("cannot apply database migrations")?;
    tracing::info!(duration_ms = started.elapsed().as_millis() as u64, "database migrations applied");
    Ok(())
}

/// Everything a service's database needs before it serves: its own migrations and the
/// messaging kit's (the `outbox` and `inbox` tables), applied as one set under the migrator's
/// lock.
pub async fn prepare(pool: &PgPool, migrator: &Migrator) -> anyhow::Result<()> {
    migrate(pool, &with_events(migrator)?).await
}

/// `service`'s migrations together with [`crate::events::MIGRATOR`]'s, in version order.
/// A version both use is refused: one of them would never run.
///
/// A database may hold migrations this binary does not know: a newer release applied them
/// and this one is its rollback (docs/deploy.md). Migrations are additive (expand/contract),
/// so the older release runs against the newer schema, and its migration Job must not fail
/// on them (`ignore_missing`). The ones both know are still checked against their checksums.
pub fn with_events(service: &Migrator) -> anyhow::Result<Migrator> {
    let events = &crate::events::MIGRATOR;
    if let Some(clash) = service.iter().find(|migration| events.iter().any(|kit| kit.version == migration.version)) {
        anyhow::bail!(
            "migration {} ({}) has the version of one of shop-kit's event migrations; renumber it",
            clash.version,
            clash.description
        );
    }
    let mut migrations: Vec<_> = events.iter().chain(service.iter()).cloned().collect();
    migrations.sort_by_key(|migration| migration.version);
    Ok(Migrator {
        migrations: std::borrow::Cow::Owned(migrations),
        ignore_missing: true,
        locking: service.locking,
        no_tx: service.no_tx,
    })
}

/// The `<service> migrate` command run by the deploy's migration Job: when the first argument
/// is `migrate`, prepares the database of `DATABASE_URL` (only the `DATABASE_*` variables and
/// the telemetry ones are read) and returns the outcome for `main` to return; otherwise `None`.
pub async fn migrate_command(service_name: &str, migrator: &Migrator) -> Option<anyhow::Result<()>> {
    if std::env::args().nth(1).as_deref() != Some("migrate") {
        return None;
    }
    Some(run_migrate_command(service_name, migrator).await)
}

async fn run_migrate_command(service_name: &str, migrator: &Migrator) -> anyhow::Result<()> {
    let vars = Vars::from_env();
    let telemetry = crate::config::TelemetryConfig::from_vars(&vars, service_name)?;
    let _telemetry = crate::telemetry::init(&telemetry)?;
    let config = DatabaseConfig::from_vars(&vars)?;
    let pool = connect(&config).await?;
    prepare(&pool, migrator).await?;
    pool.close().await;
    Ok(())
}

/// Whether `error` is a violation of the named unique/check/foreign-key constraint. Errors
/// map to client answers by constraint name, never by message text.
pub fn violates(error: &sqlx::Error, constraint: &str) -> bool {
    error.as_database_error().and_then(|error| error.constraint()) == Some(constraint)
}
