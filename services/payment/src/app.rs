//! Builds the service (state, server, relay, consumer) and runs it.

use std::{net::SocketAddr, sync::Arc};

use shop_kit::{
    auth::{AuthState, JwksClient, KeySource, Verifier},
    events::{ConsumerRunner, Relay},
    server::{BoundServer, Check, Server},
};
use sqlx::PgPool;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use utoipa::OpenApi as _;

use crate::{config::Config, events::OrderEvents, provider::TestProvider};

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
    relay: Relay,
    consumer: ConsumerRunner<shop_kit::events::PgInbox<OrderEvents>>,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let pool = shop_kit::db::connect(&config.database).await?;
        if config.database.migrate_on_start {
            shop_kit::db::prepare(&pool, &crate::MIGRATOR).await?;
        }
        let payment_topic = config.kafka.topic(crate::PAYMENT_TOPIC);
        let order_topic = config.kafka.topic(crate::ORDER_TOPIC);
        if config.kafka.create_topics {
            shop_kit::events::ensure_topics(&config.kafka, &[&payment_topic, &order_topic], 3).await?;
        }
        // One producer for the outbox, dead letters and readiness.
        let publisher = shop_kit::events::Publisher::new(&config.kafka)?;
        let kafka_ready = Check::kafka(publisher.clone(), payment_topic.clone());
        let handler =
            OrderEvents { provider: Arc::new(TestProvider), payment_topic, charge_attempts: config.charge_attempts };
        let group = config.kafka.topic("payment-service");
        // Each event touches one order's payment: events may share a transaction.
        let consumer = ConsumerRunner::new(&config.kafka, &publisher, &group, &[&order_topic], pool.clone(), handler)?
            .batch(config.kafka.consumer_batch);
        let verifier =
            Verifier::new(&config.auth, KeySource::Jwks(JwksClient::new(&config.jwks_url, config.auth.jwks_ttl)?));
        let state = AppState { inner: Arc::new(Inner { pool: pool.clone(), verifier }) };
        let server = Server::new("payment-service", config.http)
            .rest(crate::http::router(state))
            .check(Check::postgres(pool.clone()))
            .check(kafka_ready)
            .openapi(&crate::http::ApiDoc::openapi())
            .bind()
            .await?;
        Ok(Self { server, relay: Relay::new(pool, &publisher), consumer })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Serves, relays and consumes until `shutdown`, then drains all three.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let tasks = TaskTracker::new();
        tasks.spawn(self.relay.run(shutdown.clone()));
        tasks.spawn(self.consumer.run(shutdown.clone()));
        tasks.close();
        let served = self.server.run(shutdown.clone()).await;
        shutdown.cancel();
        tasks.wait().await;
        served
    }
}
