//! One checkout is one trace, and every log line written for it says which: the payment
//! service run as a process with JSON logs, fed order events that carry a `traceparent`.
//! The worker that charges and refunds later, in a task of its own, continues the trace
//! of the event that made the work due; the outcome events carry it on; each log line
//! written while handling a request or an event has `trace_id` and `span_id` at its top
//! level.

use std::time::Duration;

use serde_json::Value;
use shop_proto::shop::payment::v1::{GetOrderPaymentRequest, payment_service_client::PaymentServiceClient};
use shop_testkit::{FakeProvider, ServiceProcess, TestDb, eventually, http_client};
use sqlx::PgPool;
use uuid::Uuid;

use crate::charges::{brokers, cancelled, placed, publish_traced};

const CHARGE_TRACE: &str = "5f0c4b1e9a7d4e2f8b3c6a1d0e9f8a7b";
const REFUND_TRACE: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90";
const REST_TRACE: &str = "0123456789abcdef0123456789abcdef";
const GRPC_TRACE: &str = "fedcba9876543210fedcba9876543210";

fn traceparent(trace_id: &str) -> String {
    format!("00-{trace_id}-00f067aa0ba902b7-01")
}

/// The `traceparent` of the outbox row of event `name` about `order`, once there is one.
async fn outcome_traceparent(pool: &PgPool, name: &str, order: Uuid) -> String {
    eventually(&format!("{name} for the order"), Duration::from_secs(60), || async {
        sqlx::query_scalar::<_, Option<String>>("SELECT traceparent FROM outbox WHERE ce_type = $1 AND key = $2")
            .bind(format!("shop.payment.v1.{name}"))
            .bind(order.to_string())
            .fetch_optional(pool)
            .await
            .unwrap()
    })
    .await
    .unwrap_or_default()
}

#[tokio::test]
async fn the_worker_continues_the_events_trace_and_every_log_line_names_its_trace() {
    let (db, provider) = (TestDb::new().await, FakeProvider::start().await);
    let prefix = format!("t{}.", Uuid::now_v7().simple());
    let kafka = shop_kit::events::KafkaConfig::for_brokers(&brokers());
    let topics = [format!("{prefix}shop.order.v1"), format!("{prefix}shop.payment.v1")];
    shop_kit::events::ensure_topics(&kafka, &[&topics[0], &topics[1]], 3).await.unwrap();
    let mut service = ServiceProcess::start(
        env!("CARGO_BIN_EXE_payment-service"),
        &[
            ("DATABASE_URL", db.url().to_owned()),
            ("KAFKA_BROKERS", brokers()),
            ("KAFKA_TOPIC_PREFIX", prefix.clone()),
            ("KAFKA_CREATE_TOPICS", "true".to_owned()),
            ("PAYMENT_PROVIDER_URL", provider.url()),
            ("LOG_FORMAT", "json".to_owned()),
            // Everything, the libraries' DEBUG lines inside the spans included; tower-http's
            // line for each request ("finished processing request") is DEBUG. (Not
            // `info,tower_http=debug`: a per-target DEBUG directive loses the INFO lines, see
            // docs/runbook.md.)
            ("RUST_LOG", "debug".to_owned()),
        ],
    );
    let pool = PgPool::connect(db.url()).await.unwrap();
    eventually("the service to be ready", Duration::from_secs(60), || async {
        let ready = http_client().get(service.url("/readyz")).send().await.ok()?;
        ready.status().is_success().then_some(())
    })
    .await;

    // An order placed and then cancelled with a refund, each event in a trace of its own.
    let order = Uuid::now_v7();
    let charge = traceparent(CHARGE_TRACE);
    publish_traced(&prefix, "OrderPlaced", order, &placed(order, "tok_visa", 1500), Some(&charge)).await;
    let succeeded = outcome_traceparent(&pool, "PaymentSucceeded", order).await;
    assert!(
        succeeded.starts_with(&format!("00-{CHARGE_TRACE}-")),
        "PaymentSucceeded left the trace: {succeeded:?}\n{}",
        service.log()
    );
    let refund = traceparent(REFUND_TRACE);
    publish_traced(&prefix, "OrderCancelled", order, &cancelled(order, true), Some(&refund)).await;
    let refunded = outcome_traceparent(&pool, "PaymentRefunded", order).await;
    assert!(
        refunded.starts_with(&format!("00-{REFUND_TRACE}-")),
        "PaymentRefunded left the trace: {refunded:?}\n{}",
        service.log()
    );

    // A REST request and a gRPC call (refused: no token), each with a trace of its own.
    let rest = http_client().get(service.url("/v1/payments")).header("traceparent", traceparent(REST_TRACE));
    rest.send().await.unwrap();
    let mut grpc = PaymentServiceClient::connect(service.url("")).await.unwrap();
    let mut request = tonic::Request::new(GetOrderPaymentRequest { order_id: order.to_string() });
    request.metadata_mut().insert("traceparent", traceparent(GRPC_TRACE).parse().unwrap());
    let refused = grpc.get_order_payment(request).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    service.terminate(Duration::from_secs(20)).await.expect("the service stops");
    let log = service.log();
    let lines: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("not a JSON line ({error}): {line}")))
        .collect();
    let traced = |trace_id: &str| -> Vec<&Value> { lines.iter().filter(|line| line["trace_id"] == trace_id).collect() };
    // Every line written inside one of the spans that handle something (a request, a
    // consumed event, a payment's work, a publish) carries both ids, 32 and 16 hex digits,
    // whoever writes it (the service, sqlx, rdkafka, h2, tower-http). Lines in the HTTP/2
    // connection's own span (h2's frames, below a request) belong to no request.
    let handling = ["request", "consume", "payment", "publish"];
    let inside = |line: &&Value| line["span"]["name"].as_str().is_some_and(|name| handling.contains(&name));
    assert!(lines.iter().filter(inside).count() > 10, "lines inside the handling spans:\n{log}");
    for line in lines.iter().filter(inside) {
        let (trace_id, span_id) = (line["trace_id"].as_str(), line["span_id"].as_str());
        assert!(
            trace_id.is_some_and(|id| id.len() == 32) && span_id.is_some_and(|id| id.len() == 16),
            "a line inside a span without its trace ids: {line}"
        );
    }
    let charge_lines = traced(CHARGE_TRACE);
    assert!(
        charge_lines.iter().any(|line| line["span"]["name"] == "payment" && line["message"] == "payment taken"),
        "the worker's charge is logged in the order's trace:\n{log}"
    );
    assert!(
        traced(REFUND_TRACE).iter().any(|line| line["message"] == "payment refunded"),
        "the worker's refund is logged in the cancellation's trace:\n{log}"
    );
    for (trace_id, what) in [(REST_TRACE, "the REST request"), (GRPC_TRACE, "the gRPC call")] {
        assert!(
            traced(trace_id).iter().any(|line| line["message"] == "finished processing request"),
            "{what} is logged in its caller's trace:\n{log}"
        );
    }
}
