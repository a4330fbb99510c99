//! The one start-up and shutdown path every service takes.
//!
//! `main` is [`main`]: the `migrate` command when asked for, configuration (fail fast,
//! before anything binds), telemetry, the service's own `build`, then [`Service::run`] until
//! SIGTERM or Ctrl-C. `build` uses [`database`] and [`broker`] for the common parts and ends
//! with [`Service::new`] over its bound server and [`Service::background`] for each
//! background task (outbox relay, consumers, sweepers).
//!
//! [`Service::run`] starts every background task on one [`TaskTracker`], serves, and on
//! shutdown drains in one order: the server stops taking requests and finishes those in
//! flight (within its grace period), then the background tasks are cancelled and awaited.

use std::{future::Future, net::SocketAddr};

use futures::future::BoxFuture;
use sqlx::{PgPool, migrate::Migrator};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    config::TelemetryConfig,
    db::DatabaseConfig,
    events::{KafkaConfig, Publisher, Topic},
    server::BoundServer,
};

/// A service's configuration, as far as the start-up path needs it.
pub trait ServiceConfig {
    fn telemetry(&self) -> &TelemetryConfig;
}

type Task = Box<dyn FnOnce(CancellationToken) -> BoxFuture<'static, ()> + Send>;

/// A built service: its bound server and its background tasks, not yet running.
pub struct Service {
    server: BoundServer,
    tasks: Vec<Task>,
}

impl Service {
    pub fn new(server: BoundServer) -> Self {
        Self { server, tasks: Vec::new() }
    }

    /// A task that runs beside the server until the token is cancelled.
    #[must_use]
    pub fn background<F, Fut>(mut self, task: F) -> Self
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.tasks.push(Box::new(move |shutdown| Box::pin(task(shutdown))));
        self
    }

    /// Where the server listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Serves and runs the background tasks until `shutdown`, then drains: the server first,
    /// then the background tasks.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let tasks = TaskTracker::new();
        for task in self.tasks {
            tasks.spawn(task(shutdown.clone()));
        }
        tasks.close();
        let served = self.server.run(shutdown.clone()).await;
        shutdown.cancel();
        tasks.wait().await;
        served
    }
}

/// A service binary's `main`: `<service> migrate` when asked (`migrator` is the service's
/// own, `None` for a service without a database), else configuration, telemetry, `build`,
/// and [`Service::run`] until a signal.
pub async fn main<C, B, Fut>(
    service: &'static str,
    migrator: Option<&'static Migrator>,
    config: impl FnOnce() -> anyhow::Result<C>,
    build: B,
) -> anyhow::Result<()>
where
    C: ServiceConfig,
    B: FnOnce(C) -> Fut,
    Fut: Future<Output = anyhow::Result<Service>>,
{
    if let Some(migrator) = migrator
        && let Some(migrated) = crate::db::migrate_command(service, migrator).await
    {
        return migrated;
    }
    let config = config()?;
    let _telemetry = crate::telemetry::init(config.telemetry())?;
    let service = build(config).await?;
    service.run(crate::server::shutdown_on_signal()).await
}

/// The service's pool, with its migrations and the messaging kit's applied first when
/// `DATABASE_MIGRATE_ON_START` says so.
pub async fn database(config: &DatabaseConfig, migrator: &Migrator) -> anyhow::Result<PgPool> {
    let pool = crate::db::connect(config).await?;
    if config.migrate_on_start {
        crate::db::prepare(&pool, migrator).await?;
    }
    Ok(pool)
}

/// The service's one producer, after creating `topics` (and their dead-letter twins) when
/// `KAFKA_CREATE_TOPICS` says so.
pub async fn broker(config: &KafkaConfig, topics: &[Topic]) -> anyhow::Result<Publisher> {
    if config.create_topics {
        let names: Vec<String> = topics.iter().map(|topic| config.topics().name(*topic)).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        crate::events::ensure_topics(config, &names, 3).await?;
    }
    Publisher::new(config)
}
