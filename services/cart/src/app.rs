//! Builds the service (state, product client, server) and runs it.

use std::sync::Arc;

use shop_kit::{
    api::Money,
    auth::{AuthState, GrpcAuth, Verifier},
    events::ConsumerRunner,
    server::{Check, Criticality, Server},
    service::{Service, ServiceConfig},
};
use shop_proto::{
    contracts,
    shop::{
        cart::v1::cart_service_server::CartServiceServer,
        product::v1::{GetProductRequest, product_service_client::ProductServiceClient},
    },
};
use tonic::Code;
use uuid::Uuid;

use crate::{SERVICE, config::Config, error::Error, store::CartStore};

type ProductClient = ProductServiceClient<shop_kit::grpc::Outbound>;

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

    /// The product's current name and price from the product service, asked for `customer`
    /// (`shop-acting-for`); 404 for an unknown product, 422 for one that is not for sale, 503
    /// when the service cannot answer in time.
    pub async fn product(&self, id: Uuid, customer: Uuid) -> Result<ProductInfo, Error> {
        let mut client = self.inner.products.clone();
        let request = tonic::Request::new(GetProductRequest { product_id: id.to_string() });
        let answer = client.get_product(shop_kit::grpc::acting_for(request, customer)).await;
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

impl ServiceConfig for Config {
    fn telemetry(&self) -> &shop_kit::config::TelemetryConfig {
        &self.telemetry
    }
}

/// Connects and binds; the service then runs with [`Service::run`] (the server and the
/// order-events consumer).
pub async fn build(config: Config) -> anyhow::Result<Service> {
    let redis = shop_kit::cache::connect(&config.redis).await?;
    // One producer for dead letters and readiness.
    let publisher = shop_kit::service::broker(&config.kafka, &[contracts::ORDER]).await?;
    let kafka_ready = Check::kafka(publisher.clone(), config.kafka.topics().name(contracts::ORDER));
    let consumer = ConsumerRunner::with(
        &config.kafka,
        &publisher,
        SERVICE,
        crate::events::OrderEvents::new(redis.clone(), config.redis.key_prefix.clone()),
    )?;
    let verifier = Arc::new(Verifier::remote(&config.auth, &config.jwks_url, SERVICE)?);
    let tokens = shop_kit::auth::ServiceTokens::new(config.service_credentials)?;
    let products = ProductServiceClient::new(shop_kit::grpc::outbound(
        &config.product_url,
        config.product_deadline,
        &tokens,
        "product",
    )?);
    let store = CartStore::new(redis.clone(), config.redis.key_prefix.clone(), config.idle_ttl, config.max_lines);
    let state = AppState { inner: Arc::new(Inner { store, products, verifier: Arc::clone(&verifier) }) };
    let grpc = GrpcAuth::new(CartServiceServer::new(crate::grpc::CartGrpc::new(state.clone())), verifier);
    let server = Server::new(SERVICE, config.http)
        .api(crate::http::api(state))
        .grpc(grpc)
        .check(Check::redis(redis, Criticality::Required))
        .check(kafka_ready)
        .bind()
        .await?;
    Ok(Service::new(server).background("consumer", |shutdown| consumer.run(shutdown)).flush(&publisher))
}
