//! Fulfilment: an admin ships a confirmed order, then marks it delivered, over REST and gRPC;
//! every other state, caller and body is refused, and each step publishes its event.

use reqwest::Method;
use serde_json::{Value, json};
use shop_proto::shop::{
    events::v1::{OrderShipped, PaymentSucceeded},
    order::v1::{DeliverOrderRequest, ShipOrderRequest, order_service_client::OrderServiceClient},
};
use tonic::{Code, transport::Channel};

use crate::helpers::{TestApp, assert_problem, spawn_app};

/// A confirmed order of a new customer: (token, order id).
async fn confirmed(app: &TestApp, product: &str) -> (String, String) {
    let (buyer, order) = app.placed(product, 1).await;
    let id = order["id"].as_str().unwrap().to_owned();
    let paid = PaymentSucceeded { order_id: id.clone(), ..Default::default() };
    app.publish_payment("PaymentSucceeded", &id, prost::Message::encode_to_vec(&paid)).await;
    app.order_becomes(&buyer, &id, "confirmed").await;
    (buyer, id)
}

async fn post(app: &TestApp, path: &str, token: &str, body: Option<Value>) -> reqwest::Response {
    let mut request = app.client.request(Method::POST, app.order.url(path)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

fn as_<T>(token: &str, message: T) -> tonic::Request<T> {
    shop_kit::grpc::with_bearer(tonic::Request::new(message), token)
}

fn shipment() -> Value {
    json!({"carrier": "DHL", "tracking_number": "JD0146-0001"})
}

#[tokio::test]
async fn an_admin_ships_then_delivers_a_confirmed_order_and_nothing_else() {
    let app = spawn_app().await;
    let lamp = app.catalog.add("Lamp", 2999, "USD", 10);
    let (buyer, id) = confirmed(&app, &lamp).await;
    let (pending_buyer, pending) = app.placed(&lamp, 1).await;
    let pending = pending["id"].as_str().unwrap().to_owned();
    let (ship, deliver, cancel) =
        (format!("/v1/orders/{id}/ship"), format!("/v1/orders/{id}/deliver"), format!("/v1/orders/{id}/cancel"));

    assert_problem(post(&app, &ship, &buyer, Some(shipment())).await, 403, "forbidden", "a customer ships").await;
    let refused = post(&app, &format!("/v1/orders/{pending}/ship"), &app.admin, Some(shipment())).await;
    assert_problem(refused, 409, "illegal_transition", "an unpaid order ships").await;
    assert_problem(post(&app, &deliver, &app.admin, None).await, 409, "illegal_transition", "not shipped yet").await;
    let unknown = format!("/v1/orders/{}/ship", uuid::Uuid::now_v7());
    assert_problem(post(&app, &unknown, &app.admin, Some(shipment())).await, 404, "order_not_found", "unknown").await;
    let bad = post(&app, &ship, &app.admin, Some(json!({"carrier": " ", "tracking_number": "1Z 999"}))).await;
    let problem = assert_problem(bad, 422, "validation_failed", "bad shipment").await;
    let fields: Vec<&str> =
        problem["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["carrier", "tracking_number"]);
    let extra = post(&app, &ship, &app.admin, Some(json!({"carrier": "DHL", "tracking_number": "X1", "eta": 3}))).await;
    assert_eq!(extra.status(), 422, "unknown fields are refused");
    assert_eq!(post(&app, &ship, &app.admin, None).await.status().as_u16() / 100, 4, "no body");

    let shipped = post(&app, &ship, &app.admin, Some(shipment())).await;
    assert_eq!(shipped.status(), 200);
    let shipped: Value = shipped.json().await.unwrap();
    assert_eq!(shipped["status"], "shipped");
    assert_eq!(
        (shipped["shipment"]["carrier"].as_str(), shipped["shipment"]["tracking_number"].as_str()),
        (Some("DHL"), Some("JD0146-0001"))
    );
    assert!(shipped["shipment"]["shipped_at"].is_string() && shipped["delivered_at"].is_null());
    let again = post(&app, &ship, &app.admin, Some(shipment())).await;
    assert_problem(again, 409, "illegal_transition", "shipped twice").await;
    assert_problem(post(&app, &cancel, &buyer, None).await, 409, "illegal_transition", "cancel a shipped order").await;
    assert_problem(post(&app, &deliver, &buyer, None).await, 403, "forbidden", "a customer delivers").await;

    let delivered = post(&app, &deliver, &app.admin, None).await;
    assert_eq!(delivered.status(), 200);
    let delivered: Value = delivered.json().await.unwrap();
    assert_eq!(delivered["status"], "delivered");
    assert!(delivered["delivered_at"].is_string());
    assert_eq!(delivered["shipment"]["carrier"], "DHL", "the shipment stays on the order");
    assert_problem(post(&app, &deliver, &app.admin, None).await, 409, "illegal_transition", "delivered twice").await;
    assert_problem(post(&app, &cancel, &app.admin, None).await, 409, "illegal_transition", "cancel delivered").await;
    let read: Value = app.call(Method::GET, &format!("/v1/orders/{id}"), Some(&buyer)).await.json().await.unwrap();
    assert_eq!(read["status"], "delivered", "the customer sees it");
    let pending_read: Value =
        app.call(Method::GET, &format!("/v1/orders/{pending}"), Some(&pending_buyer)).await.json().await.unwrap();
    assert_eq!(pending_read["status"], "pending_payment", "a refused step changes nothing");

    // Each step's event is in the outbox, in order, with what a consumer needs.
    let pool = sqlx::PgPool::connect(app.order_db.url()).await.unwrap();
    let events: Vec<(String, Vec<u8>)> =
        sqlx::query_as("SELECT ce_type, payload FROM outbox WHERE key = $1 ORDER BY seq")
            .bind(&id)
            .fetch_all(&pool)
            .await
            .unwrap();
    let types: Vec<&str> = events.iter().map(|(ce_type, _)| ce_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "shop.order.v1.OrderPlaced",
            "shop.order.v1.OrderConfirmed",
            "shop.order.v1.OrderShipped",
            "shop.order.v1.OrderDelivered"
        ]
    );
    let shipped: OrderShipped = prost::Message::decode(events[2].1.as_slice()).unwrap();
    assert_eq!(
        (shipped.order_id.as_str(), shipped.carrier.as_str(), shipped.tracking_number.as_str()),
        (id.as_str(), "DHL", "JD0146-0001")
    );
    assert!(shipped.shipped_at.is_some() && !shipped.user_id.is_empty());
}

#[tokio::test]
async fn grpc_ships_and_delivers_for_admins_only() {
    let app = spawn_app().await;
    let lamp = app.catalog.add("Lamp", 2999, "USD", 10);
    let (buyer, id) = confirmed(&app, &lamp).await;
    let mut client = OrderServiceClient::new(Channel::from_shared(app.order.url("")).unwrap().connect().await.unwrap());
    let ship = || ShipOrderRequest { order_id: id.clone(), carrier: "UPS".into(), tracking_number: "1Z999".into() };

    assert_eq!(client.ship_order(as_(&buyer, ship())).await.unwrap_err().code(), Code::PermissionDenied);
    assert_eq!(client.ship_order(tonic::Request::new(ship())).await.unwrap_err().code(), Code::Unauthenticated);
    let bad = ShipOrderRequest { order_id: "42".into(), ..ship() };
    assert_eq!(client.ship_order(as_(&app.admin, bad)).await.unwrap_err().code(), Code::InvalidArgument);
    let bad = ShipOrderRequest { tracking_number: String::new(), ..ship() };
    assert_eq!(client.ship_order(as_(&app.admin, bad)).await.unwrap_err().code(), Code::InvalidArgument);

    let shipped = client.ship_order(as_(&app.admin, ship())).await.unwrap().into_inner().order.unwrap();
    assert_eq!(shipped.status, "shipped");
    let shipment = shipped.shipment.unwrap();
    assert_eq!((shipment.carrier.as_str(), shipment.tracking_number.as_str()), ("UPS", "1Z999"));
    assert_eq!(client.ship_order(as_(&app.admin, ship())).await.unwrap_err().code(), Code::FailedPrecondition);

    let deliver = || DeliverOrderRequest { order_id: id.clone() };
    assert_eq!(client.deliver_order(as_(&buyer, deliver())).await.unwrap_err().code(), Code::PermissionDenied);
    let delivered = client.deliver_order(as_(&app.admin, deliver())).await.unwrap().into_inner().order.unwrap();
    assert_eq!(delivered.status, "delivered");
    assert!(delivered.delivered_at.is_some());
    assert_eq!(client.deliver_order(as_(&app.admin, deliver())).await.unwrap_err().code(), Code::FailedPrecondition);
}
