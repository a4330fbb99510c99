//! Builds the service (state, REST and gRPC server, relay, consumer, payment worker,
//! retention) and runs it.

use std::sync::Arc;

use shop_kit::metrics::Kind;
use shop_kit::{
    auth::{AuthState, GrpcAuth, Verifier},
    events::{ConsumerRunner, Relay},
    retention::Retention,
    server::{Check, Server},
    service::{Service, ServiceConfig},
};
use shop_proto::{contracts, shop::payment::v1::payment_service_server::PaymentServiceServer};
use sqlx::PgPool;

use tokio::sync::Notify;

use crate::{SERVICE, config::Config, events::OrderEvents, worker::Worker};

#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    verifier: Arc<Verifier>,
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

impl ServiceConfig for Config {
    fn telemetry(&self) -> &shop_kit::config::TelemetryConfig {
        &self.telemetry
    }
}

/// Connects, migrates, binds; the service then runs with [`Service::run`] (the server, the
/// outbox relay, the order-events consumer and the payment worker).
pub async fn build(config: Config) -> anyhow::Result<Service> {
    let pool = shop_kit::service::database(&config.database, &crate::MIGRATOR).await?;
    // One producer for the outbox, dead letters and readiness.
    let publisher = shop_kit::service::broker(&config.kafka, &[contracts::PAYMENT, contracts::ORDER]).await?;
    let topics = config.kafka.topics();
    let kafka_ready = Check::kafka(publisher.clone(), topics.name(contracts::PAYMENT));
    let wake = Arc::new(Notify::new());
    let handler = OrderEvents { wake: Arc::clone(&wake) };
    let worker = Worker {
        pool: pool.clone(),
        provider: crate::provider::from_config(&config.provider)?,
        topics,
        charge_attempts: config.charge_attempts,
        concurrency: config.worker_concurrency,
        timeout: config.provider.timeout,
        lease: config.provider.lease(config.database.acquire_timeout, config.database.statement_timeout),
        decline_after: config.provider.decline_after,
        wake,
    };
    // Each event touches one order's payment: events may share a transaction.
    let consumer = ConsumerRunner::new(&config.kafka, &publisher, SERVICE, pool.clone(), handler)?
        .batch(config.kafka.consumer_batch);
    let verifier = Arc::new(Verifier::remote(&config.auth, &config.jwks_url, SERVICE)?);
    let state = AppState { inner: Arc::new(Inner { pool: pool.clone(), verifier: Arc::clone(&verifier) }) };
    let grpc = GrpcAuth::new(PaymentServiceServer::new(crate::grpc::PaymentGrpc::new(state.clone())), verifier);
    shop_kit::metrics::describe(&[
        (
            "payment_provider_calls_total",
            Kind::Counter,
            "Calls to the payment provider, by operation and outcome (ok, transient_error).",
        ),
        ("payments_recorded_total", Kind::Counter, "Payment outcomes recorded, by status."),
        (
            "payment_claims_lost_total",
            Kind::Counter,
            "Provider outcomes not recorded because another worker took the claim over.",
        ),
    ]);
    let server = Server::new(SERVICE, config.http)
        .api(crate::http::api(state))
        .grpc(grpc)
        .check(Check::postgres(pool.clone()))
        .check(kafka_ready)
        .bind()
        .await?;
    let relay = Relay::new(pool.clone(), &publisher);
    let retention = Retention::new(pool.clone(), &config.retention);
    Ok(Service::new(server)
        .background("outbox relay", |shutdown| relay.run(shutdown))
        .background("consumer", |shutdown| consumer.run(shutdown))
        .background("payment worker", |shutdown| worker.run(shutdown))
        .background("retention", |shutdown| retention.run(shutdown))
        .flush(&publisher)
        .close(&pool))
}
