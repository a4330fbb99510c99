//! One checkout is one trace, proven where a collector would see it: the six services
//! export their spans over OTLP/gRPC to a real receiver ([`shop_testkit::OtlpReceiver`]),
//! a customer checks out with a `traceparent` of the test's, and the spans that reach the
//! receiver form one tree: the checkout request (REST) → the calls to product and cart
//! (gRPC) → the relay's publish of OrderPlaced → the payment consumer → the payment worker
//! → the publish of PaymentSucceeded → the order consumer → the publish of OrderConfirmed
//! → the notification consumer → the delivery. Every span's parent is a span of the trace.

use std::{collections::HashMap, time::Duration};

use serde_json::Value;
use shop_testkit::{OtlpReceiver, ReceivedSpan, eventually};

use crate::helpers::{Platform, order_body, spawn_with};

const TRACE: &str = "6e0c63257de34c92bf9efcd03927272e";
/// The test's own span: the caller of the checkout, not exported.
const CALLER: &str = "00f067aa0ba902b7";

#[tokio::test]
async fn one_checkout_is_one_trace_from_the_rest_call_to_the_notification() {
    // This test process's telemetry exports to the receiver (the harness's own
    // `init_tracing` then finds it installed and leaves it).
    let receiver = OtlpReceiver::start().await;
    let guard = shop_kit::telemetry::init(&shop_kit::config::TelemetryConfig {
        service_name: "shop-e2e".into(),
        log_format: shop_kit::config::LogFormat::Pretty,
        log_filter: std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        otlp_endpoint: Some(receiver.endpoint()),
        otlp_ca: None,
    })
    .unwrap();
    let app = spawn_with(Platform::AllSix).await;
    let smtp = app.smtp.as_ref().unwrap();
    let lamp = app.product("LAMP", 2500, 10).await;
    let token = app.register("grace@example.com").await;
    app.add_to_cart(&token, &lamp, 1).await;

    let placed = app
        .client
        .post(app.order.url("/v1/orders"))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{TRACE}-{CALLER}-01"))
        .json(&order_body("tok_visa"))
        .send()
        .await
        .unwrap();
    assert_eq!(placed.status(), 201);
    let order: Value = placed.json().await.unwrap();
    let id = order["id"].as_str().unwrap().to_owned();
    app.order_becomes(&token, &id, "confirmed").await;
    eventually("the confirmation email", Duration::from_secs(30), || async {
        smtp.messages().iter().any(|m| m.contains(&format!("Subject: Order {id} is confirmed"))).then_some(())
    })
    .await;
    // The batch exporter sends every few seconds; the last spans (the delivery's) may
    // still be queued: wait for them, then flush whatever is left.
    eventually("the delivery's span at the receiver", Duration::from_secs(30), || async {
        receiver.spans().iter().any(|span| span.trace_id == TRACE && span.name == "deliver").then_some(())
    })
    .await;
    assert!(guard.flush_within(Duration::from_secs(10)).await, "the spans were flushed");

    let spans: Vec<ReceivedSpan> = receiver.spans().into_iter().filter(|span| span.trace_id == TRACE).collect();
    let by_id: HashMap<&str, &ReceivedSpan> = spans.iter().map(|span| (span.span_id.as_str(), span)).collect();
    let describe = || spans.iter().map(|span| format!("{span:?}")).collect::<Vec<_>>().join("\n");
    let parent = |span: &ReceivedSpan| span.parent_span_id.as_deref().and_then(|id| by_id.get(id)).copied();

    // One root: the checkout request, a child of the caller's span.
    let roots: Vec<&ReceivedSpan> = spans.iter().filter(|span| parent(span).is_none()).collect();
    assert_eq!(roots.len(), 1, "one root span:\n{}", describe());
    let root = roots[0];
    assert_eq!(root.parent_span_id.as_deref(), Some(CALLER), "{root:?}");
    assert_eq!((root.name.as_str(), root.kind.as_str()), ("request", "SPAN_KIND_SERVER"), "{root:?}");
    assert_eq!(root.attribute("http.path"), Some("/v1/orders"), "{root:?}");

    // Each stage, found by what it is, and the stage it must descend from.
    let find = |what: &str, test: &dyn Fn(&ReceivedSpan) -> bool| -> &ReceivedSpan {
        spans
            .iter()
            .find(|span| test(span))
            .unwrap_or_else(|| panic!("no span for {what} in the trace:\n{}", describe()))
    };
    let descends = |span: &ReceivedSpan, ancestor: &ReceivedSpan| {
        let mut current = parent(span);
        while let Some(step) = current {
            if step.span_id == ancestor.span_id {
                return true;
            }
            current = parent(step);
        }
        false
    };
    let grpc = |service: &'static str| {
        move |span: &ReceivedSpan| {
            span.name == "request" && span.attribute("http.path").is_some_and(|path| path.starts_with(service))
        }
    };
    let publish = |ce_type: &'static str| {
        move |span: &ReceivedSpan| span.name == "publish" && span.attribute("ce_type") == Some(ce_type)
    };
    let consume = |consumer: &'static str, ce_type: &'static str| {
        move |span: &ReceivedSpan| {
            // A consumer is named by its group id: the service, after the topic prefix.
            span.name == "consume"
                && span.attribute("consumer").is_some_and(|name| name.ends_with(consumer))
                && span.attribute("ce_type") == Some(ce_type)
        }
    };
    let reserve = find("product's ReserveStock (gRPC)", &grpc("/shop.product.v1.ProductService/ReserveStock"));
    let placed = find("the publish of OrderPlaced", &publish("shop.order.v1.OrderPlaced"));
    let charge = find("the payment consumer", &consume("payment-service", "shop.order.v1.OrderPlaced"));
    let worker = find("the payment worker", &|span: &ReceivedSpan| span.name == "payment");
    let paid = find("the publish of PaymentSucceeded", &publish("shop.payment.v1.PaymentSucceeded"));
    let confirm = find("the order consumer", &consume("order-service", "shop.payment.v1.PaymentSucceeded"));
    let confirmed = find("the publish of OrderConfirmed", &publish("shop.order.v1.OrderConfirmed"));
    let notify = find("the notification consumer", &consume("notification-service", "shop.order.v1.OrderConfirmed"));
    let deliver = find("the delivery", &|span: &ReceivedSpan| span.name == "deliver");
    let chain = [root, placed, charge, worker, paid, confirm, confirmed, notify, deliver];
    for pair in chain.windows(2) {
        assert!(descends(pair[1], pair[0]), "{} does not descend from {}:\n{}", pair[1].name, pair[0].name, describe());
    }
    assert!(descends(reserve, root), "the gRPC call is part of the checkout:\n{}", describe());
    assert_eq!(placed.kind, "SPAN_KIND_PRODUCER");
    assert_eq!(charge.kind, "SPAN_KIND_CONSUMER");
    assert_eq!(
        parent(charge).map(|span| span.span_id.as_str()),
        Some(placed.span_id.as_str()),
        "a consumer's parent is the publish"
    );
}
