//! The authorization matrix (issues #14 and #15): every REST route of the six OpenAPI documents
//! and every gRPC method the six servers list through reflection, called as an anonymous
//! client, customer A on A's resources, customer B on A's resources, and an admin; every gRPC
//! method also with service tokens the user service issued (ADR 0012): an internal method with
//! the service that needs it and with another one, a client method with a service's. Each outcome is
//! compared with the table below; a route or method that the services serve and the table does
//! not name (or the other way round) fails the test, so a new route cannot ship without its row.
//! docs/security.md prints the same table.
//!
//! Outcomes are about who may, not what happens: `Ok` is any answer that is not a refusal
//! (2xx, or a business answer such as 409 for an empty cart); `Unauth` is 401 /
//! UNAUTHENTICATED, `Forbidden` 403 / PERMISSION_DENIED, `Hidden` 404 / NOT_FOUND (another's
//! resource is answered as absent). A 5xx or an unexpected refusal fails. Where B's call is
//! `Ok` on a list or "me" route, the answer must not contain A's ids.

#![allow(clippy::panic, reason = "tests fail loudly on purpose")]

use std::collections::{BTreeMap, BTreeSet};

use reqwest::Method;
use serde_json::{Value, json};
use shop_testkit::TestServer;
use tonic::{Code, Request, metadata::MetadataValue};

use crate::helpers::{Platform, order_body, spawn_with};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    Unauth,
    Forbidden,
    Hidden,
}
use Outcome::{Forbidden, Hidden, Ok as Allowed, Unauth};

/// anonymous, customer A, customer B on A's resources, admin.
type Row = [Outcome; 4];

const PUBLIC: Row = [Allowed, Allowed, Allowed, Allowed];
const SIGNED_IN: Row = [Unauth, Allowed, Allowed, Allowed];
const OWNER_OR_ADMIN: Row = [Unauth, Allowed, Hidden, Allowed];
const OWNER_OR_ADMIN_403: Row = [Unauth, Allowed, Forbidden, Allowed];
const ADMIN: Row = [Unauth, Forbidden, Forbidden, Allowed];

/// Every REST route: (service, method, path template) → outcomes.
fn rest_matrix() -> BTreeMap<(&'static str, &'static str, &'static str), Row> {
    BTreeMap::from([
        (("user", "GET", "/.well-known/jwks.json"), PUBLIC),
        (("user", "POST", "/v1/users"), PUBLIC),
        (("user", "GET", "/v1/users/me"), SIGNED_IN),
        (("user", "PATCH", "/v1/users/me"), SIGNED_IN),
        (("user", "GET", "/v1/users/{id}"), OWNER_OR_ADMIN_403),
        (("user", "POST", "/v1/auth/login"), PUBLIC),
        // The refresh token in the body is the only credential: a made-up one is 401 whoever
        // sends it (a valid one renews for whoever holds it: the user service's tests).
        (("user", "POST", "/v1/auth/refresh"), [Unauth; 4]),
        (("user", "POST", "/v1/auth/logout"), PUBLIC),
        // Services only, with HTTP Basic client credentials: any bearer token is 401.
        (("user", "POST", "/v1/oauth/token"), [Unauth; 4]),
        (("product", "GET", "/v1/products"), PUBLIC),
        (("product", "GET", "/v1/products/{id}"), PUBLIC),
        (("product", "GET", "/v1/categories"), PUBLIC),
        (("product", "POST", "/v1/products"), ADMIN),
        (("product", "PATCH", "/v1/products/{id}"), ADMIN),
        (("product", "DELETE", "/v1/products/{id}"), ADMIN),
        (("product", "PUT", "/v1/products/{id}/stock"), ADMIN),
        (("cart", "GET", "/v1/cart"), SIGNED_IN),
        (("cart", "DELETE", "/v1/cart"), SIGNED_IN),
        (("cart", "PUT", "/v1/cart/items/{product_id}"), SIGNED_IN),
        (("cart", "DELETE", "/v1/cart/items/{product_id}"), SIGNED_IN),
        (("order", "POST", "/v1/orders"), SIGNED_IN),
        (("order", "GET", "/v1/orders"), SIGNED_IN),
        (("order", "GET", "/v1/orders/{id}"), OWNER_OR_ADMIN_403),
        (("order", "POST", "/v1/orders/{id}/cancel"), OWNER_OR_ADMIN_403),
        (("order", "POST", "/v1/orders/{id}/ship"), ADMIN),
        (("order", "POST", "/v1/orders/{id}/deliver"), ADMIN),
        (("payment", "GET", "/v1/payments"), SIGNED_IN),
        (("notification", "GET", "/v1/notifications"), SIGNED_IN),
    ])
}

/// Who may call a gRPC method besides users: the services it is internal to (ADR 0012), or
/// none (a client method: every service token is refused).
#[derive(Clone, Copy, Debug)]
enum Services {
    /// Only `right` may call; `wrong` (another service of the platform) is refused.
    Internal { right: &'static str, wrong: &'static str },
    /// Users only: a service's token (`order`'s, for this callee) is refused.
    None,
}

/// An internal method: every user refused, only the services that need it admitted.
const INTERNAL: Row = [Unauth, Forbidden, Forbidden, Forbidden];

/// Every gRPC method: (service, full method) → outcomes for the four users, and which
/// services may call it. Internal RPCs take no user's token, however privileged.
fn grpc_matrix() -> BTreeMap<(&'static str, &'static str), (Row, Services)> {
    let internal = |right, wrong| (INTERNAL, Services::Internal { right, wrong });
    BTreeMap::from([
        (("user", "/shop.user.v1.UserService/GetUser"), (OWNER_OR_ADMIN_403, Services::None)),
        (("user", "/shop.user.v1.UserService/GetMe"), (SIGNED_IN, Services::None)),
        (("product", "/shop.product.v1.ProductService/GetProduct"), internal("cart", "payment")),
        (("product", "/shop.product.v1.ProductService/BatchGetProducts"), internal("order", "notification")),
        (("product", "/shop.product.v1.ProductService/ReserveStock"), internal("order", "cart")),
        (("product", "/shop.product.v1.ProductService/ReleaseStock"), internal("order", "cart")),
        (("cart", "/shop.cart.v1.CartService/GetCart"), internal("order", "payment")),
        (("cart", "/shop.cart.v1.CartService/ClearCart"), internal("order", "product")),
        (("order", "/shop.order.v1.OrderService/GetOrder"), (OWNER_OR_ADMIN_403, Services::None)),
        (("order", "/shop.order.v1.OrderService/ShipOrder"), (ADMIN, Services::None)),
        (("order", "/shop.order.v1.OrderService/DeliverOrder"), (ADMIN, Services::None)),
        (("payment", "/shop.payment.v1.PaymentService/GetOrderPayment"), (OWNER_OR_ADMIN, Services::None)),
        (("payment", "/shop.payment.v1.PaymentService/ListUserPayments"), (OWNER_OR_ADMIN_403, Services::None)),
        (
            ("notification", "/shop.notification.v1.NotificationService/ListUserNotifications"),
            (OWNER_OR_ADMIN_403, Services::None),
        ),
    ])
}

const WHO: [&str; 4] = ["anonymous", "customer A", "customer B on A's", "admin"];

/// A service token of `caller` for `callee`, from the user service, with `caller`'s secret.
async fn service_token(app: &crate::helpers::TestApp, user: &TestServer, caller: &str, callee: &str) -> String {
    let [(_, secret), _] = app.issuer.client_vars(caller);
    let response = app
        .client
        .post(user.url("/v1/oauth/token"))
        .basic_auth(caller, Some(secret))
        .form(&[("grant_type", "client_credentials"), ("audience", callee)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "a token for {caller} → {callee}");
    response.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned()
}

fn classify_http(status: u16) -> Option<Outcome> {
    match status {
        401 => Some(Unauth),
        403 => Some(Forbidden),
        404 => Some(Hidden),
        500.. => None,
        _ => Some(Allowed),
    }
}

fn classify_grpc(code: Code) -> Option<Outcome> {
    match code {
        Code::Unauthenticated => Some(Unauth),
        Code::PermissionDenied => Some(Forbidden),
        Code::NotFound => Some(Hidden),
        Code::Internal | Code::Unknown | Code::Unavailable | Code::DataLoss | Code::Unimplemented => None,
        _ => Some(Allowed),
    }
}

/// The REST routes a service's OpenAPI document lists.
async fn documented_routes(
    client: &reqwest::Client,
    name: &'static str,
    server: &TestServer,
) -> Vec<(&'static str, String, String)> {
    let document: Value = client.get(server.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    let mut routes = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            routes.push((name, method.to_uppercase(), path.clone()));
        }
    }
    routes
}

/// The methods a server lists through gRPC reflection (v1), health and reflection left out.
async fn reflected_methods(server: &TestServer) -> Vec<String> {
    use prost::Message as _;
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let channel = tonic::transport::Endpoint::from_shared(server.url("")).unwrap().connect().await.unwrap();
    let client = ServerReflectionClient::new(channel);
    let ask = |request: MessageRequest| ServerReflectionRequest { host: String::new(), message_request: Some(request) };
    let answer = |request| async {
        let mut stream =
            client.clone().server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
        stream.message().await.unwrap().unwrap().message_response.unwrap()
    };
    let MessageResponse::ListServicesResponse(list) = answer(ask(MessageRequest::ListServices(String::new()))).await
    else {
        panic!("no service list")
    };
    let mut methods = Vec::new();
    for service in list.service.iter().map(|s| s.name.clone()) {
        if service.starts_with("grpc.") {
            continue;
        }
        let MessageResponse::FileDescriptorResponse(files) =
            answer(ask(MessageRequest::FileContainingSymbol(service.clone()))).await
        else {
            panic!("no descriptor for {service}")
        };
        for bytes in &files.file_descriptor_proto {
            let file = prost_types::FileDescriptorProto::decode(bytes.as_slice()).unwrap();
            for described in &file.service {
                if format!("{}.{}", file.package(), described.name()) == service {
                    methods.extend(described.method.iter().map(|method| format!("/{service}/{}", method.name())));
                }
            }
        }
    }
    methods
}

#[tokio::test]
async fn every_route_and_method_answers_each_caller_as_the_matrix_says() {
    let app = spawn_with(Platform::AllSix).await;
    let user = app.user.as_ref().unwrap();
    let notification = app.notification.as_ref().unwrap();
    let payment = app.payment.as_ref().unwrap();
    let servers: [(&'static str, &TestServer); 6] = [
        ("user", user),
        ("product", &app.product),
        ("cart", &app.cart),
        ("order", &app.order),
        ("payment", payment),
        ("notification", notification),
    ];

    // A's world: an account, a product in a cart, an order placed and paid.
    let token_a = app.register("a@authz.test").await;
    let token_b = app.register("b@authz.test").await;
    let me = |token: String| {
        let request = app.client.get(user.url("/v1/users/me")).bearer_auth(token);
        async move { request.send().await.unwrap().json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned() }
    };
    let user_a = me(token_a.clone()).await;
    let product = app.product("AUTHZ-1", 1500, 1000).await;
    app.add_to_cart(&token_a, &product, 1).await;
    let placed = app.place(&token_a, &order_body("tok_visa"), None).await;
    assert_eq!(placed.status(), 201);
    let order: String = placed.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    app.order_becomes(&token_a, &order, "confirmed").await;
    let tokens = [None, Some(token_a.clone()), Some(token_b.clone()), Some(app.admin.clone())];

    // What the services serve, and what the matrix names, are the same set.
    let mut served = BTreeSet::new();
    for (name, server) in servers {
        for (service, method, path) in documented_routes(&app.client, name, server).await {
            served.insert(format!("REST {service} {method} {path}"));
        }
        for method in reflected_methods(server).await {
            served.insert(format!("gRPC {name} {method}"));
        }
    }
    let rest = rest_matrix();
    let grpc = grpc_matrix();
    let named: BTreeSet<String> = rest
        .keys()
        .map(|(service, method, path)| format!("REST {service} {method} {path}"))
        .chain(grpc.keys().map(|(service, method)| format!("gRPC {service} {method}")))
        .collect();
    assert_eq!(
        served.difference(&named).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "served but not in the matrix: add a row"
    );
    assert_eq!(named.difference(&served).collect::<Vec<_>>(), Vec::<&String>::new(), "in the matrix but not served");

    let mut mismatches = Vec::new();
    for ((service, method, template), row) in &rest {
        let server = servers.iter().find(|(name, _)| name == service).unwrap().1;
        for (who, token) in tokens.iter().enumerate() {
            let mut id = match (*service, *template) {
                ("user", _) => user_a.clone(),
                ("order", _) => order.clone(),
                _ => product.clone(),
            };
            if *method == "DELETE" && *template == "/v1/products/{id}" {
                id = app.product(&format!("AUTHZ-DEL-{who}"), 100, 1).await;
            }
            let path = template.replace("{id}", &id).replace("{product_id}", &product);
            let path = match *template {
                "/v1/payments" => format!("{path}?order_id={order}"),
                _ => path,
            };
            let body = match (*method, *template) {
                ("POST", "/v1/users") => {
                    Some(json!({"email": format!("new{who}@authz.test"), "password": "password-123", "name": "New"}))
                }
                ("PATCH", "/v1/users/me") => Some(json!({"name": "Renamed"})),
                ("POST", "/v1/auth/login") => Some(json!({"email": "a@authz.test", "password": "password-123"})),
                ("POST", "/v1/auth/refresh" | "/v1/auth/logout") => Some(json!({"refresh_token": "not-a-token"})),
                ("POST", "/v1/products") => Some(
                    json!({"sku": format!("AUTHZ-NEW-{who}"), "name": "New", "price": {"amount": 100, "currency": "USD"}}),
                ),
                ("PATCH", "/v1/products/{id}") => Some(json!({"name": "Renamed"})),
                ("PUT", "/v1/products/{id}/stock") => Some(json!({"on_hand": 1000})),
                ("PUT", "/v1/cart/items/{product_id}") => Some(json!({"quantity": 1})),
                ("POST", "/v1/orders") => Some(order_body("tok_visa")),
                ("POST", "/v1/orders/{id}/ship") => Some(json!({"carrier": "Post", "tracking_number": "T-1"})),
                _ => None,
            };
            if (*method, *template) == ("DELETE", "/v1/cart/items/{product_id}") && token.is_some() {
                // Something to remove, so that a 404 can only mean a refusal.
                app.add_to_cart(token.as_deref().unwrap(), &product, 1).await;
            }
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let response = app.call(server, method.clone(), &path, token.as_deref(), body.as_ref()).await;
            let status = response.status().as_u16();
            let text = response.text().await.unwrap_or_default();
            match classify_http(status) {
                None => mismatches.push(format!("REST {service} {method} {template} as {}: {status} {text}", WHO[who])),
                Some(outcome) if outcome != row[who] => mismatches.push(format!(
                    "REST {service} {method} {template} as {}: {outcome:?} ({status}), expected {:?}",
                    WHO[who], row[who]
                )),
                Some(_)
                    if who == 2
                        && (text.contains(&order) || text.contains(&user_a))
                        && *template != "/v1/auth/login" =>
                {
                    mismatches
                        .push(format!("REST {service} {method} {template} as B: the answer shows A's ids: {text}"))
                }
                Some(_) => {}
            }
        }
    }

    for ((service, method), (row, services)) in &grpc {
        let server = servers.iter().find(|(name, _)| name == service).unwrap().1;
        let mut callers: Vec<(String, Option<String>, Outcome)> =
            tokens.iter().enumerate().map(|(who, token)| (WHO[who].to_owned(), token.clone(), row[who])).collect();
        match services {
            Services::Internal { right, wrong } => {
                let wrong_token = service_token(&app, user, wrong, service).await;
                let right_token = service_token(&app, user, right, service).await;
                callers.push((format!("the {wrong} service"), Some(wrong_token), Forbidden));
                callers.push((format!("the {right} service"), Some(right_token), Allowed));
            }
            Services::None => {
                let token = service_token(&app, user, "order", service).await;
                callers.push(("the order service".to_owned(), Some(token), Forbidden));
            }
        }
        for (who, token, expected) in callers {
            let code = grpc_call(server, method, token.as_deref(), &user_a, &order, &product).await;
            match classify_grpc(code) {
                None => mismatches.push(format!("gRPC {method} as {who}: {code:?}")),
                Some(outcome) if outcome != expected => {
                    mismatches.push(format!("gRPC {method} as {who}: {outcome:?} ({code:?}), expected {expected:?}"))
                }
                Some(_) => {}
            }
        }
    }
    assert!(mismatches.is_empty(), "{} mismatches:\n{}", mismatches.len(), mismatches.join("\n"));
    app.stop().await;
}

/// A request with `token`, naming a customer as a service's call does (a user's call is
/// authorized by its token alone; the metadata does not change that).
fn authorized<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut request = shop_kit::grpc::acting_for(Request::new(message), uuid::Uuid::now_v7());
    if let Some(token) = token {
        let value: MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// Calls `method` on `server` as the holder of `token`, on A's resources; the status code.
async fn grpc_call(
    server: &TestServer,
    method: &str,
    token: Option<&str>,
    user: &str,
    order: &str,
    product: &str,
) -> Code {
    use shop_proto::shop::{
        cart::v1 as cart, notification::v1 as notification, order::v1 as orders, payment::v1 as payment,
        product::v1 as products, user::v1 as users,
    };
    let channel = tonic::transport::Endpoint::from_shared(server.url("")).unwrap().connect().await.unwrap();
    let code = |result: Result<(), tonic::Status>| result.err().map_or(Code::Ok, |status| status.code());
    let (user, order, product) = (user.to_owned(), order.to_owned(), product.to_owned());
    match method.rsplit('/').next().unwrap() {
        "GetUser" => code(
            users::user_service_client::UserServiceClient::new(channel)
                .get_user(authorized(users::GetUserRequest { user_id: user }, token))
                .await
                .map(drop),
        ),
        "GetMe" => code(
            users::user_service_client::UserServiceClient::new(channel)
                .get_me(authorized(users::GetMeRequest {}, token))
                .await
                .map(drop),
        ),
        "GetProduct" => code(
            products::product_service_client::ProductServiceClient::new(channel)
                .get_product(authorized(products::GetProductRequest { product_id: product }, token))
                .await
                .map(drop),
        ),
        "BatchGetProducts" => code(
            products::product_service_client::ProductServiceClient::new(channel)
                .batch_get_products(authorized(products::BatchGetProductsRequest { product_ids: vec![product] }, token))
                .await
                .map(drop),
        ),
        "ReserveStock" => {
            let items = vec![products::StockLine { product_id: product, quantity: 1 }];
            let request = products::ReserveStockRequest { order_id: uuid::Uuid::now_v7().to_string(), items };
            code(
                products::product_service_client::ProductServiceClient::new(channel)
                    .reserve_stock(authorized(request, token))
                    .await
                    .map(drop),
            )
        }
        "ReleaseStock" => code(
            products::product_service_client::ProductServiceClient::new(channel)
                .release_stock(authorized(
                    products::ReleaseStockRequest { order_id: uuid::Uuid::now_v7().to_string() },
                    token,
                ))
                .await
                .map(drop),
        ),
        "GetCart" => code(
            cart::cart_service_client::CartServiceClient::new(channel)
                .get_cart(authorized(cart::GetCartRequest { user_id: user }, token))
                .await
                .map(drop),
        ),
        "ClearCart" => code(
            cart::cart_service_client::CartServiceClient::new(channel)
                .clear_cart(authorized(cart::ClearCartRequest { user_id: user }, token))
                .await
                .map(drop),
        ),
        "GetOrder" => code(
            orders::order_service_client::OrderServiceClient::new(channel)
                .get_order(authorized(orders::GetOrderRequest { order_id: order }, token))
                .await
                .map(drop),
        ),
        "ShipOrder" => code(
            orders::order_service_client::OrderServiceClient::new(channel)
                .ship_order(authorized(
                    orders::ShipOrderRequest { order_id: order, carrier: "Post".into(), tracking_number: "T-2".into() },
                    token,
                ))
                .await
                .map(drop),
        ),
        "DeliverOrder" => code(
            orders::order_service_client::OrderServiceClient::new(channel)
                .deliver_order(authorized(orders::DeliverOrderRequest { order_id: order }, token))
                .await
                .map(drop),
        ),
        "GetOrderPayment" => code(
            payment::payment_service_client::PaymentServiceClient::new(channel)
                .get_order_payment(authorized(payment::GetOrderPaymentRequest { order_id: order }, token))
                .await
                .map(drop),
        ),
        "ListUserPayments" => code(
            payment::payment_service_client::PaymentServiceClient::new(channel)
                .list_user_payments(authorized(
                    payment::ListUserPaymentsRequest { user_id: user, ..Default::default() },
                    token,
                ))
                .await
                .map(drop),
        ),
        "ListUserNotifications" => code(
            notification::notification_service_client::NotificationServiceClient::new(channel)
                .list_user_notifications(authorized(
                    notification::ListUserNotificationsRequest { user_id: user, ..Default::default() },
                    token,
                ))
                .await
                .map(drop),
        ),
        other => panic!("no call written for {other}: add one"),
    }
}
