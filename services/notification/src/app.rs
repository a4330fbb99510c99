//! Builds the service (state, server, consumer, delivery worker) and runs it.

use std::{net::SocketAddr, sync::Arc};

use shop_kit::{
    auth::{AuthState, JwksClient, KeySource, Verifier},
    events::{ConsumerRunner, PgInbox},
    server::{BoundServer, Check, Server},
};
use sqlx::PgPool;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use utoipa::OpenApi as _;

use crate::{config::Config, delivery::Worker, events::Events};

#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    verifier: Verifier,
}

impl AppState {
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }
}

impl AuthState for AppState {
    fn verifier(&self) -> &Verifier {
        &self.inner.verifier
    }
}

pub struct Application {
    server: BoundServer,
    consumer: ConsumerRunner<PgInbox<Events>>,
    worker: Worker,
    relay: shop_kit::events::Relay,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let pool = shop_kit::db::connect(&config.database).await?;
        if config.database.migrate_on_start {
            shop_kit::db::prepare(&pool, &crate::MIGRATOR).await?;
        }
        let topics: Vec<String> = ["shop.user.v1", "shop.order.v1", "shop.payment.v1"]
            .iter()
            .map(|topic| config.kafka.topic(topic))
            .collect();
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        let own_topic = config.kafka.topic("shop.notification.v1");
        if config.kafka.create_topics {
            // One request for all of them: each call is an admin client and a broker round trip.
            let all: Vec<&str> = topics.iter().copied().chain([own_topic.as_str()]).collect();
            shop_kit::events::ensure_topics(&config.kafka, &all, 3).await?;
        }
        // One producer for the outbox, dead letters and readiness.
        let publisher = shop_kit::events::Publisher::new(&config.kafka)?;
        let kafka_ready = Check::kafka(publisher.clone(), own_topic.clone());
        let consumer = ConsumerRunner::new(
            &config.kafka,
            &publisher,
            &config.kafka.topic("notification-service"),
            &topics,
            pool.clone(),
            Events { email_enabled: config.smtp.is_some() },
        )?
        // Each event only inserts rows: events may share a transaction.
        .batch(config.kafka.consumer_batch);
        let worker = Worker::new(pool.clone(), own_topic, config.smtp.as_ref(), config.max_attempts)?;
        let relay = shop_kit::events::Relay::new(pool.clone(), &publisher);
        let verifier =
            Verifier::new(&config.auth, KeySource::Jwks(JwksClient::new(&config.jwks_url, config.auth.jwks_ttl)?));
        let state = AppState { inner: Arc::new(Inner { pool: pool.clone(), verifier }) };
        let server = Server::new("notification-service", config.http)
            .rest(crate::http::router(state))
            .check(Check::postgres(pool))
            .check(kafka_ready)
            .openapi(&crate::http::ApiDoc::openapi())
            .bind()
            .await?;
        Ok(Self { server, consumer, worker, relay })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Serves, consumes and delivers until `shutdown`, then drains all three.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let tasks = TaskTracker::new();
        tasks.spawn(self.consumer.run(shutdown.clone()));
        tasks.spawn(self.worker.run(shutdown.clone()));
        tasks.spawn(self.relay.run(shutdown.clone()));
        tasks.close();
        let served = self.server.run(shutdown.clone()).await;
        shutdown.cancel();
        tasks.wait().await;
        served
    }
}
