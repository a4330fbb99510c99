//! Stand-ins for Shop's own gRPC services, so that a service's tests start only that
//! service: [`Catalog`] answers for the product service, [`Carts`] for the cart service.
//!
//! Each is a tonic server on `127.0.0.1:0` over in-memory state that the test sets up and
//! reads back. They implement the shop-proto server traits with no business logic beyond
//! what their callers depend on (a product's price and whether it is for sale; holding and
//! releasing stock all or nothing; a user's cart lines). They do not check tokens, but they
//! record who each call says it comes from ([`Call`]), so a test can see what its service
//! sends. What the real services do together is tested in `tests/e2e`.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use shop_proto::shop::{
    cart::v1::{self as cart, cart_service_server::CartServiceServer},
    common::v1::Money,
    product::v1::{self as product, product_service_server::ProductServiceServer},
};
use tonic::{Request, Response, Status, transport::server::TcpIncoming};

use crate::TestServer;

/// Binds `127.0.0.1:0` and serves `router` there until the server is dropped.
fn serve(router: tonic::transport::server::Router) -> TestServer {
    let address = SocketAddr::from(([127, 0, 0, 1], 0));
    let incoming = TcpIncoming::bind(address).expect("cannot bind a stand-in's port");
    let address = incoming.local_addr().expect("a bound stand-in has an address");
    TestServer::spawn(address, move |shutdown| async move {
        router.serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned()).await?;
        Ok(())
    })
}

/// One call a stand-in received: its method and the credentials it carried (the bearer
/// token's claims are read, not verified).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub method: &'static str,
    /// The token's `sub`: a service name or a user id.
    pub subject: Option<String>,
    /// The token's `aud`.
    pub audience: Option<String>,
    /// The `shop-acting-for` metadata.
    pub acting_for: Option<String>,
}

fn call_of<T>(method: &'static str, request: &Request<T>) -> Call {
    use base64::Engine as _;
    let metadata = request.metadata();
    let claims = metadata
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .and_then(|token| token.split('.').nth(1))
        .and_then(|payload| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok())
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .unwrap_or_default();
    let text = |value: &serde_json::Value| value.as_str().map(str::to_owned);
    Call {
        method,
        subject: text(&claims["sub"]),
        audience: text(&claims["aud"]),
        acting_for: metadata.get("shop-acting-for").and_then(|value| value.to_str().ok()).map(str::to_owned),
    }
}

fn lock<T>(state: &Mutex<T>) -> MutexGuard<'_, T> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The product service's catalog and stock, in memory.
pub struct Catalog {
    state: Arc<Mutex<CatalogState>>,
    server: TestServer,
}

#[derive(Default)]
struct CatalogState {
    /// By product id; `stock_available` is what is not held.
    products: HashMap<String, product::Product>,
    /// Held units by order id: (product id, quantity).
    holds: HashMap<String, Vec<(String, i64)>>,
    calls: Vec<Call>,
}

impl Catalog {
    /// Serves an empty catalog. Must run inside a Tokio runtime.
    pub fn start() -> Self {
        let state = Arc::new(Mutex::new(CatalogState::default()));
        let service = ProductServiceServer::new(CatalogService { state: state.clone() });
        let server = serve(tonic::transport::Server::builder().add_service(service));
        Self { state, server }
    }

    /// The address to give a service as `PRODUCT_GRPC_URL`.
    pub fn url(&self) -> String {
        self.server.url("")
    }

    /// Every call received so far, oldest first.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.state).calls.clone()
    }

    /// Puts a product on sale at `amount` (minor units) of `currency` with `stock` units;
    /// returns its id.
    pub fn add(&self, name: &str, amount: i64, currency: &str, stock: i64) -> String {
        let id = uuid::Uuid::now_v7().to_string();
        let product = product::Product {
            id: id.clone(),
            sku: name.to_uppercase(),
            name: name.to_owned(),
            price: Some(Money { amount, currency: currency.to_owned() }),
            stock_available: stock,
            active: true,
            ..Default::default()
        };
        lock(&self.state).products.insert(id.clone(), product);
        id
    }

    /// Takes a product off sale (`false`) or back on (`true`).
    pub fn set_active(&self, id: &str, active: bool) {
        if let Some(product) = lock(&self.state).products.get_mut(id) {
            product.active = active;
        }
    }

    /// Deletes a product: from now on it is unknown.
    pub fn remove(&self, id: &str) {
        lock(&self.state).products.remove(id);
    }

    /// A product's units that are not held.
    pub fn available(&self, id: &str) -> i64 {
        lock(&self.state).products.get(id).map_or(0, |product| product.stock_available)
    }

    /// The units held for `order_id`, by product id (empty when nothing is held).
    pub fn held_for(&self, order_id: &str) -> Vec<(String, i64)> {
        lock(&self.state).holds.get(order_id).cloned().unwrap_or_default()
    }
}

struct CatalogService {
    state: Arc<Mutex<CatalogState>>,
}

#[tonic::async_trait]
impl product::product_service_server::ProductService for CatalogService {
    async fn get_product(
        &self,
        request: Request<product::GetProductRequest>,
    ) -> Result<Response<product::GetProductResponse>, Status> {
        lock(&self.state).calls.push(call_of("GetProduct", &request));
        let id = &request.get_ref().product_id;
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(Status::invalid_argument("product_id: not a UUID"));
        }
        let product = lock(&self.state).products.get(id).cloned();
        match product {
            Some(product) => Ok(Response::new(product::GetProductResponse { product: Some(product) })),
            None => Err(Status::not_found("product_not_found: no such product")),
        }
    }

    async fn batch_get_products(
        &self,
        request: Request<product::BatchGetProductsRequest>,
    ) -> Result<Response<product::BatchGetProductsResponse>, Status> {
        let mut state = lock(&self.state);
        state.calls.push(call_of("BatchGetProducts", &request));
        let products = request.get_ref().product_ids.iter().filter_map(|id| state.products.get(id).cloned()).collect();
        Ok(Response::new(product::BatchGetProductsResponse { products }))
    }

    /// All or nothing: every line is held, or none is and the answer is `FailedPrecondition`.
    async fn reserve_stock(
        &self,
        request: Request<product::ReserveStockRequest>,
    ) -> Result<Response<product::ReserveStockResponse>, Status> {
        let mut state = lock(&self.state);
        state.calls.push(call_of("ReserveStock", &request));
        let request = request.into_inner();
        if state.holds.contains_key(&request.order_id) {
            return Ok(Response::new(product::ReserveStockResponse::default()));
        }
        for line in &request.items {
            let available = state.products.get(&line.product_id).map(|product| product.stock_available);
            match available {
                None => return Err(Status::not_found(format!("product_not_found: {}", line.product_id))),
                Some(available) if available < line.quantity => {
                    let detail = format!("only {available} of product {} available", line.product_id);
                    return Err(Status::failed_precondition(format!("out_of_stock: {detail}")));
                }
                Some(_) => {}
            }
        }
        let mut held = Vec::with_capacity(request.items.len());
        for line in request.items {
            if let Some(product) = state.products.get_mut(&line.product_id) {
                product.stock_available -= line.quantity;
            }
            held.push((line.product_id, line.quantity));
        }
        state.holds.insert(request.order_id, held);
        Ok(Response::new(product::ReserveStockResponse::default()))
    }

    async fn release_stock(
        &self,
        request: Request<product::ReleaseStockRequest>,
    ) -> Result<Response<product::ReleaseStockResponse>, Status> {
        let mut state = lock(&self.state);
        state.calls.push(call_of("ReleaseStock", &request));
        let held = state.holds.remove(&request.get_ref().order_id).unwrap_or_default();
        let mut released_units = 0;
        for (product_id, quantity) in held {
            if let Some(product) = state.products.get_mut(&product_id) {
                product.stock_available += quantity;
            }
            released_units += quantity;
        }
        Ok(Response::new(product::ReleaseStockResponse { released_units }))
    }
}

/// The cart service's carts, in memory: product ids and quantities per user.
pub struct Carts {
    state: Arc<Mutex<HashMap<String, Vec<cart::CartItem>>>>,
    calls: Arc<Mutex<Vec<Call>>>,
    server: TestServer,
}

impl Carts {
    /// Serves no carts. Must run inside a Tokio runtime.
    pub fn start() -> Self {
        let state = Arc::new(Mutex::new(HashMap::new()));
        let calls = Arc::new(Mutex::new(Vec::new()));
        let service = CartServiceServer::new(CartsService { state: state.clone(), calls: calls.clone() });
        let server = serve(tonic::transport::Server::builder().add_service(service));
        Self { state, calls, server }
    }

    /// The address to give a service as `CART_GRPC_URL`.
    pub fn url(&self) -> String {
        self.server.url("")
    }

    /// Every call received so far, oldest first.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.calls).clone()
    }

    /// Sets the quantity of `product_id` in `user_id`'s cart (no price: the caller asks the
    /// catalog for that).
    pub fn put(&self, user_id: uuid::Uuid, product_id: &str, quantity: i64) {
        let mut state = lock(&self.state);
        let items = state.entry(user_id.to_string()).or_default();
        items.retain(|item| item.product_id != product_id);
        items.push(cart::CartItem { product_id: product_id.to_owned(), quantity, ..Default::default() });
    }

    /// `user_id`'s lines: (product id, quantity).
    pub fn lines(&self, user_id: uuid::Uuid) -> Vec<(String, i64)> {
        let state = lock(&self.state);
        let items = state.get(&user_id.to_string()).map(Vec::as_slice).unwrap_or_default();
        items.iter().map(|item| (item.product_id.clone(), item.quantity)).collect()
    }
}

struct CartsService {
    state: Arc<Mutex<HashMap<String, Vec<cart::CartItem>>>>,
    calls: Arc<Mutex<Vec<Call>>>,
}

#[tonic::async_trait]
impl cart::cart_service_server::CartService for CartsService {
    async fn get_cart(
        &self,
        request: Request<cart::GetCartRequest>,
    ) -> Result<Response<cart::GetCartResponse>, Status> {
        lock(&self.calls).push(call_of("GetCart", &request));
        let user_id = request.into_inner().user_id;
        let items = lock(&self.state).get(&user_id).cloned().unwrap_or_default();
        Ok(Response::new(cart::GetCartResponse { cart: Some(cart::Cart { user_id, items, total: None }) }))
    }

    async fn clear_cart(
        &self,
        request: Request<cart::ClearCartRequest>,
    ) -> Result<Response<cart::ClearCartResponse>, Status> {
        lock(&self.calls).push(call_of("ClearCart", &request));
        lock(&self.state).remove(&request.get_ref().user_id);
        Ok(Response::new(cart::ClearCartResponse {}))
    }
}
