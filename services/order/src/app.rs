//! Builds the service: state, clients of the cart and product services, server, outbox
//! relay and the payment-events consumer.

use std::{sync::Arc, time::Duration};

use shop_kit::{
    auth::{AuthState, GrpcAuth, Verifier},
    events::{ConsumerRunner, Relay, Topics},
    ratelimit::Rate,
    retention::Retention,
    server::{Check, Server},
    service::{Service, ServiceConfig},
};
use shop_proto::{
    contracts,
    shop::{
        cart::v1::cart_service_client::CartServiceClient, order::v1::order_service_server::OrderServiceServer,
        product::v1::product_service_client::ProductServiceClient,
    },
};
use sqlx::PgPool;

use crate::{SERVICE, config::Config};

pub type CartClient = CartServiceClient<shop_kit::grpc::Outbound>;
pub type ProductClient = ProductServiceClient<shop_kit::grpc::Outbound>;

#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    verifier: Arc<Verifier>,
    cart: CartClient,
    products: ProductClient,
    topics: Topics,
    /// `IDEMPOTENCY_LEASE`.
    idempotency_lease: Duration,
    /// `RATE_LIMIT_CHECKOUT`.
    checkout_rate: Rate,
}

impl AppState {
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    pub fn cart(&self) -> CartClient {
        self.inner.cart.clone()
    }

    pub fn products(&self) -> ProductClient {
        self.inner.products.clone()
    }

    /// The topics' names in this environment.
    pub fn topics(&self) -> &Topics {
        &self.inner.topics
    }

    /// How long an unanswered `Idempotency-Key` claim holds off retries.
    pub fn idempotency_lease(&self) -> Duration {
        self.inner.idempotency_lease
    }

    /// How many orders a customer may place per period.
    pub fn checkout_rate(&self) -> Rate {
        self.inner.checkout_rate
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

/// Connects, migrates, binds; the service then runs with [`Service::run`].
pub async fn build(config: Config) -> anyhow::Result<Service> {
    let pool = shop_kit::service::database(&config.database, &crate::MIGRATOR).await?;
    // One producer for the outbox, dead letters and readiness.
    let publisher = shop_kit::service::broker(&config.kafka, &[contracts::ORDER, contracts::PAYMENT]).await?;
    let topics = config.kafka.topics();
    let consumer = ConsumerRunner::new(
        &config.kafka,
        &publisher,
        SERVICE,
        pool.clone(),
        crate::events::payments::PaymentEvents { topics: topics.clone() },
    )?
    // Each event locks one order row: events may share a transaction.
    .batch(config.kafka.consumer_batch);
    let kafka_ready = Check::kafka(publisher.clone(), topics.name(contracts::ORDER));
    let verifier = Arc::new(Verifier::remote(&config.auth, &config.jwks_url, SERVICE)?);
    let tokens = shop_kit::auth::ServiceTokens::new(config.service_credentials)?;
    let cart = CartServiceClient::new(shop_kit::grpc::outbound(&config.cart_url, config.deadline, &tokens, "cart")?);
    let products =
        ProductServiceClient::new(shop_kit::grpc::outbound(&config.product_url, config.deadline, &tokens, "product")?);
    let state = AppState {
        inner: Arc::new(Inner {
            pool: pool.clone(),
            verifier: Arc::clone(&verifier),
            cart,
            products,
            topics,
            idempotency_lease: config.idempotency_lease,
            checkout_rate: config.checkout_rate,
        }),
    };
    let grpc = GrpcAuth::new(OrderServiceServer::new(crate::grpc::OrderGrpc::new(state.clone())), verifier);
    let server = Server::new(SERVICE, config.http)
        .api(crate::http::api(state))
        .grpc(grpc)
        .check(Check::postgres(pool.clone()))
        .check(kafka_ready)
        .bind()
        .await?;
    let relay = Relay::new(pool.clone(), &publisher);
    let retention = Retention::new(pool.clone(), &config.retention)
        .rule(crate::store::idempotency_retention_rule(config.idempotency_retention));
    Ok(Service::new(server)
        .background("outbox relay", |shutdown| relay.run(shutdown))
        .background("consumer", |shutdown| consumer.run(shutdown))
        .background("retention", |shutdown| retention.run(shutdown))
        .flush(&publisher)
        .close(&pool))
}
