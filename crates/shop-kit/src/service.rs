//! The one start-up and shutdown path every service takes.
//!
//! `main` is [`main`]: the `migrate` command when asked for, configuration (fail fast,
//! before anything binds), telemetry, the service's own `build`, then [`Service::run`] until
//! SIGTERM or Ctrl-C. `build` uses [`database`] and [`broker`] for the common parts and ends
//! with [`Service::new`] over its bound server, [`Service::background`] for each background
//! task (outbox relay, consumers, sweepers), and [`Service::flush`] and [`Service::close`]
//! for its producer and pool.
//!
//! # Stopping
//!
//! The stop is bounded by `SHUTDOWN_TIMEOUT` (`HttpConfig::shutdown_timeout`), counted from
//! the signal, and every blocking call on the way has a timeout of its own:
//!
//! 1. The signal cancels one token. `/readyz` answers 503 from then on, the listener closes,
//!    and in-flight requests get `SHUTDOWN_GRACE`. At the same time every background task
//!    sees the token: consumers fetch nothing more, finish or abandon the batch in hand,
//!    commit what they applied and close; the relay finishes or abandons its batch.
//! 2. The background tasks are awaited until the deadline minus [`RESERVE`]; a task still
//!    running then is abandoned and named.
//! 3. The producer is flushed ([`FLUSH_TIMEOUT`]), the pool closed ([`POOL_CLOSE_TIMEOUT`]).
//! 4. [`main`] flushes telemetry ([`TELEMETRY_TIMEOUT`]), logs one `stopped` line naming
//!    whatever was abandoned, and ends the process with status 0. It exits deliberately:
//!    a tokio runtime's drop waits without limit for `spawn_blocking` tasks, and an
//!    abandoned librdkafka call (a commit or close while the broker is away) never returns.

use std::{
    future::Future,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::future::BoxFuture;
use sqlx::{PgPool, migrate::Migrator};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    config::TelemetryConfig,
    db::DatabaseConfig,
    events::{KafkaConfig, Publisher, Topic},
    server::BoundServer,
};

/// The longest the producer flush may take on the way out.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest closing the database pool may take on the way out.
pub const POOL_CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest the telemetry flush may take on the way out.
pub const TELEMETRY_TIMEOUT: Duration = Duration::from_secs(1);
/// What the background tasks leave of `SHUTDOWN_TIMEOUT` for the steps after them.
pub const RESERVE: Duration = Duration::from_secs(4);

/// A service's configuration, as far as the start-up path needs it.
pub trait ServiceConfig {
    fn telemetry(&self) -> &TelemetryConfig;
}

type Task = Box<dyn FnOnce(CancellationToken) -> BoxFuture<'static, ()> + Send>;

/// A built service: its bound server and its background tasks, not yet running.
pub struct Service {
    server: BoundServer,
    tasks: Vec<(&'static str, Task)>,
    publishers: Vec<Publisher>,
    pools: Vec<PgPool>,
}

/// How a stop went.
#[derive(Debug)]
pub struct Stopped {
    /// From the signal to the end of the last step.
    pub took: Duration,
    /// The steps and tasks that did not finish in time.
    pub abandoned: Vec<String>,
    /// When `SHUTDOWN_TIMEOUT` runs out.
    pub deadline: Instant,
}

impl Service {
    pub fn new(server: BoundServer) -> Self {
        Self { server, tasks: Vec::new(), publishers: Vec::new(), pools: Vec::new() }
    }

    /// A task, named for the logs, that runs beside the server until the token is
    /// cancelled; it should then stop within the shutdown deadline.
    #[must_use]
    pub fn background<F, Fut>(mut self, name: &'static str, task: F) -> Self
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.tasks.push((name, Box::new(move |shutdown| Box::pin(task(shutdown)))));
        self
    }

    /// A producer to flush once the background tasks have stopped.
    #[must_use]
    pub fn flush(mut self, publisher: &Publisher) -> Self {
        self.publishers.push(publisher.clone());
        self
    }

    /// A pool to close last.
    #[must_use]
    pub fn close(mut self, pool: &PgPool) -> Self {
        self.pools.push(pool.clone());
        self
    }

    /// Where the server listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Serves and runs the background tasks until `shutdown`, then stops within the
    /// shutdown deadline (see the module's documentation).
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        self.run_until_stopped(shutdown).await.map(drop)
    }

    /// [`Service::run`], reporting how the stop went.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<Stopped> {
        let Self { server, tasks: to_spawn, publishers, pools } = self;
        let timeout = server.config().shutdown_timeout;
        let running: Arc<Mutex<Vec<&'static str>>> = Arc::new(Mutex::new(Vec::new()));
        let tasks = TaskTracker::new();
        for (name, task) in to_spawn {
            running.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(name);
            let running = Arc::clone(&running);
            let task = task(shutdown.clone());
            tasks.spawn(async move {
                task.await;
                running.lock().unwrap_or_else(std::sync::PoisonError::into_inner).retain(|other| *other != name);
            });
        }
        tasks.close();
        let mut serve = std::pin::pin!(server.run(shutdown.clone()));
        let failed = tokio::select! {
            served = &mut serve => Some(served),
            () = shutdown.cancelled() => None,
        };
        let started = Instant::now();
        let deadline = started + timeout;
        shutdown.cancel();
        tracing::info!(timeout = ?timeout, "stopping: no new work; readiness answers 503");
        let served = match failed {
            Some(served) => served,
            None => serve.await,
        };
        tracing::info!(took = ?started.elapsed(), "stopping: requests drained");

        let mut abandoned = Vec::new();
        let step = Instant::now();
        let tasks_deadline = deadline.checked_sub(RESERVE).unwrap_or(deadline).max(step);
        if tokio::time::timeout_at(tasks_deadline.into(), tasks.wait()).await.is_ok() {
            tracing::info!(took = ?step.elapsed(), "stopping: background tasks stopped");
        } else {
            let left = running.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
            tracing::warn!(took = ?step.elapsed(), tasks = ?left, "stopping: background tasks abandoned at the deadline");
            abandoned.extend(left.into_iter().map(str::to_owned));
        }

        for publisher in publishers {
            let step = Instant::now();
            if publisher.flush(FLUSH_TIMEOUT.min(remaining(deadline))).await {
                tracing::info!(took = ?step.elapsed(), "stopping: producer flushed");
            } else {
                tracing::warn!(took = ?step.elapsed(), "stopping: producer flush abandoned; undelivered events stay pending in the outbox");
                abandoned.push("producer flush".to_owned());
            }
        }
        for pool in pools {
            let step = Instant::now();
            if tokio::time::timeout(POOL_CLOSE_TIMEOUT.min(remaining(deadline)), pool.close()).await.is_ok() {
                tracing::info!(took = ?step.elapsed(), "stopping: database pool closed");
            } else {
                tracing::warn!(took = ?step.elapsed(), "stopping: database pool close abandoned");
                abandoned.push("database pool close".to_owned());
            }
        }
        served.map(|()| Stopped { took: started.elapsed(), abandoned, deadline })
    }
}

fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100))
}

/// Runs a blocking call on a blocking thread and waits for it at most `timeout`: `None`
/// when it did not return in time (it keeps its thread; see [`main`] on why the process
/// then exits deliberately) or panicked.
pub async fn blocking_within<T, F>(timeout: Duration, call: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    match tokio::time::timeout(timeout, tokio::task::spawn_blocking(call)).await {
        Ok(Ok(value)) => Some(value),
        Ok(Err(_)) | Err(_) => None,
    }
}

/// A service binary's `main`: `<service> migrate` when asked (`migrator` is the service's
/// own, `None` for a service without a database), else configuration, telemetry, `build`,
/// and [`Service::run`] until a signal; after a stop it ends the process with status 0.
pub async fn main<C, B, Fut>(
    name: &'static str,
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
        && let Some(migrated) = crate::db::migrate_command(name, migrator).await
    {
        return migrated;
    }
    let config = config()?;
    let telemetry = crate::telemetry::init(config.telemetry())?;
    let service = build(config).await?;
    let mut stopped = service.run_until_stopped(crate::server::shutdown_on_signal()).await?;
    let step = Instant::now();
    if telemetry.flush_within(TELEMETRY_TIMEOUT.min(remaining(stopped.deadline))).await {
        tracing::info!(took = ?step.elapsed(), "stopping: telemetry flushed");
    } else {
        tracing::warn!(took = ?step.elapsed(), "stopping: telemetry flush abandoned");
        stopped.abandoned.push("telemetry flush".to_owned());
    }
    let took = step.elapsed() + stopped.took;
    if stopped.abandoned.is_empty() {
        tracing::info!(service = name, ?took, "stopped");
    } else {
        tracing::warn!(service = name, ?took, abandoned = ?stopped.abandoned, "stopped");
    }
    // Deliberately, not by returning: the runtime's drop would wait without limit for a
    // blocking librdkafka call left behind (see the module's documentation).
    std::process::exit(0)
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
