//! Builds the service (state, clients, server, outbox relay) and runs it.

use std::{net::SocketAddr, sync::Arc};

use shop_kit::{
    auth::{AuthState, GrpcAuth, JwksClient, KeySource, Verifier},
    events::{ConsumerRunner, Relay},
    server::{BoundServer, Check, Server},
};
use shop_proto::shop::{
    cart::v1::cart_service_client::CartServiceClient, order::v1::order_service_server::OrderServiceServer,
    product::v1::product_service_client::ProductServiceClient,
};
use sqlx::PgPool;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::{service::interceptor::InterceptedService, transport::Channel};
use utoipa::OpenApi as _;

use crate::config::Config;

type Interceptor = fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>;
pub type CartClient = CartServiceClient<InterceptedService<Channel, Interceptor>>;
pub type ProductClient = ProductServiceClient<InterceptedService<Channel, Interceptor>>;

#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    verifier: Arc<Verifier>,
    cart: CartClient,
    products: ProductClient,
    order_topic: String,
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

    /// The full name of the order topic (with any test prefix).
    pub fn order_topic(&self) -> &str {
        &self.inner.order_topic
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
    consumer: ConsumerRunner<shop_kit::events::PgInbox<crate::events::PaymentEvents>>,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let pool = shop_kit::db::connect(&config.database).await?;
        if config.database.migrate_on_start {
            shop_kit::db::prepare(&pool, &crate::MIGRATOR).await?;
        }
        let order_topic = config.kafka.topic(crate::ORDER_TOPIC);
        let payment_topic = config.kafka.topic(crate::PAYMENT_TOPIC);
        if config.kafka.create_topics {
            shop_kit::events::ensure_topics(&config.kafka, &[&order_topic, &payment_topic], 3).await?;
        }
        // One producer for the outbox, dead letters and readiness.
        let publisher = shop_kit::events::Publisher::new(&config.kafka)?;
        let consumer = ConsumerRunner::new(
            &config.kafka,
            &publisher,
            &config.kafka.topic("order-service"),
            &[&payment_topic],
            pool.clone(),
            crate::events::PaymentEvents { order_topic: order_topic.clone() },
        )?
        // Each event locks one order row: events may share a transaction.
        .batch(config.kafka.consumer_batch);
        let kafka_ready = Check::kafka(publisher.clone(), order_topic.clone());
        let verifier = Arc::new(Verifier::new(
            &config.auth,
            KeySource::Jwks(JwksClient::new(&config.jwks_url, config.auth.jwks_ttl)?),
        ));
        let trace = shop_kit::grpc::propagate_trace as Interceptor;
        let cart =
            CartServiceClient::with_interceptor(shop_kit::grpc::channel(&config.cart_url, config.deadline)?, trace);
        let products = ProductServiceClient::with_interceptor(
            shop_kit::grpc::channel(&config.product_url, config.deadline)?,
            trace,
        );
        let state = AppState {
            inner: Arc::new(Inner { pool: pool.clone(), verifier: Arc::clone(&verifier), cart, products, order_topic }),
        };
        let grpc = GrpcAuth::new(OrderServiceServer::new(crate::grpc::OrderGrpc::new(state.clone())), verifier);
        let server = Server::new("order-service", config.http)
            .rest(crate::http::router(state))
            .grpc(grpc)
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

    /// Serves and relays the outbox until `shutdown`, then drains both.
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
