//! Builds the service (state, server, reservation sweeper) and runs it.

use std::{sync::Arc, time::Duration};

use shop_kit::metrics::Kind;
use shop_kit::{
    auth::{AuthState, GrpcAuth, Verifier},
    events::{ConsumerRunner, Relay, Topics},
    retention::Retention,
    server::{Check, Criticality, Server},
    service::{Service, ServiceConfig},
};
use shop_proto::{contracts, shop::product::v1::product_service_server::ProductServiceServer};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    SERVICE,
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
    topics: Topics,
    cache: ProductCache,
    verifier: Arc<Verifier>,
    reservation_ttl: Duration,
}

impl AppState {
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The topics' names in this environment.
    pub fn topics(&self) -> &Topics {
        &self.inner.topics
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

impl ServiceConfig for Config {
    fn telemetry(&self) -> &shop_kit::config::TelemetryConfig {
        &self.telemetry
    }
}

/// Connects, migrates, binds; the service then runs with [`Service::run`]: the server, the
/// order-events consumer, the outbox relay, the reservation sweeper and the cache's
/// invalidation subscription.
pub async fn build(config: Config) -> anyhow::Result<Service> {
    let pool = shop_kit::service::database(&config.database, &crate::MIGRATOR).await?;
    // One producer for the outbox, dead letters and readiness.
    let publisher = shop_kit::service::broker(&config.kafka, &[contracts::ORDER, contracts::PRODUCT]).await?;
    let topics = config.kafka.topics();
    let kafka_ready = Check::kafka(publisher.clone(), topics.name(contracts::PRODUCT));
    let redis = shop_kit::cache::connect(&config.redis).await?;
    let verifier = Arc::new(Verifier::remote(&config.auth, &config.jwks_url, SERVICE)?);
    let state = AppState {
        inner: Arc::new(Inner {
            pool: pool.clone(),
            topics,
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
    // Not batched: stock rows are locked in product-id order so that concurrent
    // reservations never deadlock, and a batch would lock several orders' rows out of order.
    let consumer = ConsumerRunner::new(
        &config.kafka,
        &publisher,
        SERVICE,
        pool.clone(),
        crate::events::OrderEvents { cache: state.cache().clone() },
    )?;
    let grpc = GrpcAuth::new(ProductServiceServer::new(crate::grpc::ProductGrpc::new(state.clone())), verifier);
    shop_kit::metrics::describe(&[
        ("product_cache_requests_total", Kind::Counter, "Product reads by cache result (local_hit, hit, miss, error)."),
        (
            "reservations_expired_units_total",
            Kind::Counter,
            "Units of stock whose reservation expired unconfirmed and returned to stock.",
        ),
    ]);
    let server = Server::new(SERVICE, config.http)
        .api(crate::http::api(state.clone()))
        .grpc(grpc)
        .check(Check::postgres(pool.clone()))
        .check(kafka_ready)
        .check(Check::redis(redis, Criticality::Optional))
        .bind()
        .await?;
    let relay = Relay::new(pool.clone(), &publisher);
    let subscriber = shop_kit::cache::client(&config.redis)?;
    let sweep_interval = config.sweep_interval;
    let cache = state.cache().clone();
    let retention =
        Retention::new(pool.clone(), &config.retention).rule(inventory::retention_rule(config.reservation_retention));
    Ok(Service::new(server)
        .background("reservation sweeper", move |shutdown| sweep_lapsed_reservations(state, sweep_interval, shutdown))
        .background("consumer", |shutdown| consumer.run(shutdown))
        .background("outbox relay", |shutdown| relay.run(shutdown))
        .background("cache invalidations", move |shutdown| cache.subscribe_invalidations(subscriber, shutdown))
        .background("retention", |shutdown| retention.run(shutdown))
        .flush(&publisher)
        .close(&pool))
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
