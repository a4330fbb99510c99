//! Builds the service (state, product client, server) and runs it.

use std::{net::SocketAddr, sync::Arc};

use shop_kit::{
    api::Money,
    auth::{AuthState, GrpcAuth, JwksClient, KeySource, Verifier},
    server::{BoundServer, Check, Criticality, Server},
};
use shop_proto::shop::{
    cart::v1::cart_service_server::CartServiceServer,
    product::v1::{GetProductRequest, product_service_client::ProductServiceClient},
};
use tokio_util::sync::CancellationToken;
use tonic::{Code, service::interceptor::InterceptedService, transport::Channel};
use utoipa::OpenApi as _;
use uuid::Uuid;

use crate::{config::Config, error::Error, store::CartStore};

type Interceptor = fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>;
type ProductClient = ProductServiceClient<InterceptedService<Channel, Interceptor>>;

/// What the cart needs to know of a product.
pub struct ProductInfo {
    pub name: String,
    pub price: Money,
}

#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    store: CartStore,
    products: ProductClient,
    verifier: Arc<Verifier>,
}

impl AppState {
    pub fn store(&self) -> &CartStore {
        &self.inner.store
    }

    /// The product's current name and price from the product service; 404 for an unknown
    /// product, 422 for one that is not for sale, 503 when the service cannot answer in time.
    pub async fn product(&self, id: Uuid) -> Result<ProductInfo, Error> {
        let mut client = self.inner.products.clone();
        let answer = client.get_product(GetProductRequest { product_id: id.to_string() }).await;
        let product = match answer {
            Ok(response) => response.into_inner().product.ok_or(Error::ProductNotFound)?,
            Err(status) if matches!(status.code(), Code::NotFound | Code::InvalidArgument) => {
                return Err(Error::ProductNotFound);
            }
            Err(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "product service call failed");
                return Err(Error::ProductServiceUnavailable);
            }
        };
        if !product.active {
            return Err(Error::ProductUnavailable);
        }
        let price = product.price.map(Money::from).ok_or(Error::ProductUnavailable)?;
        Ok(ProductInfo { name: product.name, price })
    }
}

impl AuthState for AppState {
    fn verifier(&self) -> &Verifier {
        &self.inner.verifier
    }
}

pub struct Application {
    server: BoundServer,
    consumer: shop_kit::events::ConsumerRunner<crate::events::OrderEvents>,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let redis = shop_kit::cache::connect(&config.redis).await?;
        let order_topic = config.kafka.topic(crate::ORDER_TOPIC);
        if config.kafka.create_topics {
            shop_kit::events::ensure_topics(&config.kafka, &[&order_topic], 3).await?;
        }
        // One producer for the outbox, dead letters and readiness.
        let publisher = shop_kit::events::Publisher::new(&config.kafka)?;
        let kafka_ready = Check::kafka(publisher.clone(), order_topic.clone());
        let consumer = shop_kit::events::ConsumerRunner::with(
            &config.kafka,
            &publisher,
            &config.kafka.topic("cart-service"),
            &[&order_topic],
            crate::events::OrderEvents::new(redis.clone(), config.redis.key_prefix.clone()),
        )?;
        let verifier = Arc::new(Verifier::new(
            &config.auth,
            KeySource::Jwks(JwksClient::new(&config.jwks_url, config.auth.jwks_ttl)?),
        ));
        let channel = shop_kit::grpc::channel(&config.product_url, config.product_deadline)?;
        let products = ProductServiceClient::with_interceptor(channel, shop_kit::grpc::propagate_trace as Interceptor);
        let store = CartStore::new(redis.clone(), config.redis.key_prefix.clone(), config.idle_ttl, config.max_lines);
        let state = AppState { inner: Arc::new(Inner { store, products, verifier: Arc::clone(&verifier) }) };
        let grpc = GrpcAuth::new(CartServiceServer::new(crate::grpc::CartGrpc::new(state.clone())), verifier);
        let server = Server::new("cart-service", config.http)
            .rest(crate::http::router(state))
            .grpc(grpc)
            .check(Check::redis(redis, Criticality::Required))
            .check(kafka_ready)
            .openapi(&crate::http::ApiDoc::openapi())
            .bind()
            .await?;
        Ok(Self { server, consumer })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Serves and consumes until `shutdown`, then drains both.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let tasks = tokio_util::task::TaskTracker::new();
        tasks.spawn(self.consumer.run(shutdown.clone()));
        tasks.close();
        let served = self.server.run(shutdown.clone()).await;
        shutdown.cancel();
        tasks.wait().await;
        served
    }
}
