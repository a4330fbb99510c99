//! Builds the service (state, server, reservation sweeper) and runs it.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use shop_kit::{
    auth::{AuthState, GrpcAuth, JwksClient, KeySource, Verifier},
    server::{BoundServer, Check, Criticality, Server},
};
use shop_proto::shop::product::v1::product_service_server::ProductServiceServer;
use sqlx::PgPool;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use utoipa::OpenApi as _;
use uuid::Uuid;

use crate::{
    config::Config,
    error::Error,
    store::{
        self, Product, ProductCache,
        cache::Lookup,
        inventory::{self, ReleaseReason},
    },
};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    product_topic: String,
    cache: ProductCache,
    verifier: Arc<Verifier>,
    reservation_ttl: Duration,
}

impl AppState {
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The full name of the product topic (with any test prefix).
    pub fn product_topic(&self) -> &str {
        &self.inner.product_topic
    }

    pub fn cache(&self) -> &ProductCache {
        &self.inner.cache
    }

    pub fn reservation_ttl(&self) -> Duration {
        self.inner.reservation_ttl
    }

    /// One product (deleted ones are not found), through the cache.
    pub async fn product(&self, id: Uuid) -> Result<Product, Error> {
        let version = match self.inner.cache.get(id).await {
            Lookup::Hit(product) => return Ok(*product),
            Lookup::Miss(ticket) => Some(ticket),
            Lookup::Unavailable => None,
        };
        let mut connection = self.pool().acquire().await?;
        let product = store::products::by_id(&mut connection, id).await?.ok_or(Error::ProductNotFound)?;
        drop(connection);
        if let Some(ticket) = version {
            self.inner.cache.store(&product, ticket).await;
        }
        Ok(product)
    }
}

impl AuthState for AppState {
    fn verifier(&self) -> &Verifier {
        &self.inner.verifier
    }
}

pub struct Application {
    server: BoundServer,
    state: AppState,
    sweep_interval: Duration,
    consumer: shop_kit::events::ConsumerRunner<shop_kit::events::PgInbox<crate::events::OrderEvents>>,
    relay: shop_kit::events::Relay,
    redis: redis::Client,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let pool = shop_kit::db::connect(&config.database).await?;
        if config.database.migrate_on_start {
            shop_kit::db::prepare(&pool, &crate::MIGRATOR).await?;
        }
        let order_topic = config.kafka.topic(crate::ORDER_TOPIC);
        let product_topic = config.kafka.topic(crate::PRODUCT_TOPIC);
        if config.kafka.create_topics {
            shop_kit::events::ensure_topics(&config.kafka, &[&order_topic, &product_topic], 3).await?;
        }
        // One producer for the outbox, dead letters and readiness.
        let publisher = shop_kit::events::Publisher::new(&config.kafka)?;
        let kafka_ready = Check::kafka(publisher.clone(), product_topic.clone());
        let redis = shop_kit::cache::connect(&config.redis).await?;
        let verifier = Arc::new(Verifier::new(
            &config.auth,
            KeySource::Jwks(JwksClient::new(&config.jwks_url, config.auth.jwks_ttl)?),
        ));
        let state = AppState {
            inner: Arc::new(Inner {
                pool: pool.clone(),
                product_topic,
                cache: ProductCache::new(
                    redis.clone(),
                    config.redis.key_prefix.clone(),
                    config.cache_ttl,
                    config.local_cache_ttl,
                    config.redis.timeout,
                ),
                verifier: Arc::clone(&verifier),
                reservation_ttl: config.reservation_ttl,
            }),
        };
        let grpc =
            GrpcAuth::optional(ProductServiceServer::new(crate::grpc::ProductGrpc::new(state.clone())), verifier);
        let server = Server::new("product-service", config.http)
            .rest(crate::http::router(state.clone()))
            .grpc(grpc)
            .check(Check::postgres(pool.clone()))
            .check(kafka_ready)
            .check(Check::redis(redis, Criticality::Optional))
            .openapi(&crate::http::ApiDoc::openapi())
            .bind()
            .await?;
        let consumer = shop_kit::events::ConsumerRunner::new(
            &config.kafka,
            &publisher,
            &config.kafka.topic("product-service"),
            &[&order_topic],
            pool.clone(),
            crate::events::OrderEvents { cache: state.cache().clone() },
        )?;
        // Not batched: stock rows are locked in product-id order so that concurrent
        // reservations never deadlock, and a batch would lock several orders' rows out of order.
        let relay = shop_kit::events::Relay::new(pool, &publisher);
        let redis = shop_kit::cache::client(&config.redis)?;
        Ok(Self { server, state, sweep_interval: config.sweep_interval, consumer, relay, redis })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Serves and sweeps lapsed reservations until `shutdown`, then drains both.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let tasks = TaskTracker::new();
        tasks.spawn(sweep_lapsed_reservations(self.state.clone(), self.sweep_interval, shutdown.clone()));
        tasks.spawn(self.consumer.run(shutdown.clone()));
        tasks.spawn(self.relay.run(shutdown.clone()));
        tasks.spawn(self.state.cache().clone().subscribe_invalidations(self.redis, shutdown.clone()));
        tasks.close();
        let served = self.server.run(shutdown.clone()).await;
        shutdown.cancel();
        tasks.wait().await;
        served
    }
}

/// Releases the holds of orders nobody confirmed in time, every `interval`.
async fn sweep_lapsed_reservations(state: AppState, interval: Duration, shutdown: CancellationToken) {
    let span = tracing::info_span!("reservation_sweeper");
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        match sweep_once(&state).await {
            Ok(0) => {}
            Ok(orders) => span.in_scope(|| tracing::info!(orders, "released lapsed reservations")),
            Err(error) => span.in_scope(|| tracing::warn!(error = %error, "reservation sweep failed; will retry")),
        }
    }
}

/// One sweep; returns how many orders' holds were released.
pub async fn sweep_once(state: &AppState) -> Result<usize, Error> {
    let mut connection = state.pool().acquire().await?;
    let orders = inventory::lapsed(&mut connection, 500).await?;
    for order_id in &orders {
        let (units, touched) = inventory::release(&mut connection, *order_id, ReleaseReason::Expired).await?;
        metrics::counter!("reservations_expired_units_total").increment(u64::try_from(units).unwrap_or(0));
        state.cache().invalidate(&touched).await;
    }
    Ok(orders.len())
}
