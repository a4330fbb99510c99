//! Builds the service (state, server, consumer, delivery worker) and runs it.

use std::sync::Arc;

use shop_kit::metrics::Kind;
use shop_kit::{
    auth::{AuthState, GrpcAuth, Verifier},
    events::{ConsumerRunner, Consumes as _, Relay},
    retention::Retention,
    server::{Check, Server},
    service::{Service, ServiceConfig},
};
use shop_proto::{contracts, shop::notification::v1::notification_service_server::NotificationServiceServer};
use sqlx::PgPool;

use crate::{
    SERVICE,
    config::Config,
    delivery::Worker,
    events::{Events, Notifiable},
};

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
/// events consumer, the delivery worker and the outbox relay).
pub async fn build(config: Config) -> anyhow::Result<Service> {
    let pool = shop_kit::service::database(&config.database, &crate::MIGRATOR).await?;
    // One request for all of them: each call is an admin client and a broker round trip.
    let topics: Vec<_> = Notifiable::topics().into_iter().chain([contracts::NOTIFICATION]).collect();
    // One producer for the outbox, dead letters and readiness.
    let publisher = shop_kit::service::broker(&config.kafka, &topics).await?;
    let kafka_ready = Check::kafka(publisher.clone(), config.kafka.topics().name(contracts::NOTIFICATION));
    let consumer = ConsumerRunner::new(
        &config.kafka,
        &publisher,
        SERVICE,
        pool.clone(),
        Events { email_enabled: config.smtp.is_some() },
    )?
    // Each event only inserts rows: events may share a transaction.
    .batch(config.kafka.consumer_batch);
    let worker = Worker::new(pool.clone(), config.kafka.topics(), config.smtp.as_ref(), config.max_attempts)?;
    let relay = Relay::new(pool.clone(), &publisher);
    let verifier = Arc::new(Verifier::remote(&config.auth, &config.jwks_url, SERVICE)?);
    let state = AppState { inner: Arc::new(Inner { pool: pool.clone(), verifier: Arc::clone(&verifier) }) };
    let grpc =
        GrpcAuth::new(NotificationServiceServer::new(crate::grpc::NotificationGrpc::new(state.clone())), verifier);
    shop_kit::metrics::describe(&[("notifications_sent_total", Kind::Counter, "Notifications delivered, by channel.")]);
    let server = Server::new(SERVICE, config.http)
        .api(crate::http::api(state))
        .grpc(grpc)
        .check(Check::postgres(pool.clone()))
        .check(kafka_ready)
        .bind()
        .await?;
    let retention = Retention::new(pool.clone(), &config.retention);
    Ok(Service::new(server)
        .background("consumer", |shutdown| consumer.run(shutdown))
        .background("delivery worker", |shutdown| worker.run(shutdown))
        .background("outbox relay", |shutdown| relay.run(shutdown))
        .background("retention", |shutdown| retention.run(shutdown))
        .flush(&publisher)
        .close(&pool))
}
