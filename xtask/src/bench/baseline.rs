//! The bare servers and the gRPC client: this binary's hidden `bench-server axum|tonic` and
//! `bench-grpc` subcommands, run as processes of their own. The servers do nothing but answer
//! a fixed product, the ceiling of what a Rust HTTP/gRPC stack does on this machine.

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};

use super::{CONNECTIONS, SECONDS};
use crate::infra;

/// Starts `bench-server <stack> <port>` from the release build.
pub(super) fn spawn_baseline(stack: Stack, port: u16) -> anyhow::Result<Child> {
    let stack = stack.as_str();
    Command::new(crate::build_dir("release").join("xtask"))
        .args(["bench-server", stack, &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start the {stack} baseline"))
}

/// Waits until a bare server listens on `port`.
pub(super) fn wait_port(port: u16) -> anyhow::Result<()> {
    infra::wait_until_reachable("a baseline server", &format!("127.0.0.1:{port}"), Duration::from_secs(10))
}

/// `bench-grpc`: this binary as a tonic client, in its own process.
/// Every call carries `token` (the product service admits the cart's and the order's service
/// tokens only; the bare server ignores it, so both read the same requests).
pub(super) fn grpc_load(url: &str, id: &str, token: &str) -> anyhow::Result<f64> {
    let binary = crate::build_dir("release").join("xtask");
    let output = Command::new(binary)
        .args(["bench-grpc", url, id, &CONNECTIONS.to_string(), &SECONDS.to_string(), "--token", token])
        .output()
        .context("cannot run bench-grpc")?;
    if !output.status.success() {
        bail!("bench-grpc failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    String::from_utf8_lossy(&output.stdout).trim().parse().context("bench-grpc printed no rate")
}

/// `bench-server axum|tonic <port>`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServerArgs {
    /// The stack to serve with.
    #[arg(value_enum)]
    stack: Stack,
    /// The port on 127.0.0.1.
    port: u16,
}

/// A bare server's stack.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(super) enum Stack {
    /// axum: GET /json answers a fixed product as JSON.
    Axum,
    /// tonic: ProductService/GetProduct answers a fixed product.
    Tonic,
}

impl Stack {
    fn as_str(self) -> &'static str {
        match self {
            Self::Axum => "axum",
            Self::Tonic => "tonic",
        }
    }
}

/// `bench-server axum|tonic <port>`: the ceiling — a handler that only answers.
pub(crate) fn server(args: ServerArgs) -> anyhow::Result<()> {
    let address = SocketAddr::from(([127, 0, 0, 1], args.port));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        match args.stack {
            Stack::Axum => {
                let body = serde_json::json!({
                    "id": "01900000-0000-7000-8000-000000000000", "sku": "LAMP-001", "name": "Desk lamp",
                    "description": "A warm desk lamp with a linen shade and a brass stem, for long evenings.",
                    "price": {"amount": 4900, "currency": "USD"}, "categories": ["home", "lighting"],
                    "stock_available": 120, "image_url": "https://img.shop.local/lamp.jpg",
                    "created_at": "2026-11-22T10:00:00Z", "updated_at": "2026-11-22T10:00:00Z"
                });
                let app = axum::Router::new().route(
                    "/json",
                    axum::routing::get(move || {
                        let body = body.clone();
                        async move { axum::Json(body) }
                    }),
                );
                let listener = tokio::net::TcpListener::bind(address).await?;
                axum::serve(listener, app).await?;
            }
            Stack::Tonic => {
                tonic::transport::Server::builder()
                    .add_service(shop_proto::shop::product::v1::product_service_server::ProductServiceServer::new(Echo))
                    .serve(address)
                    .await?;
            }
        }
        Ok(())
    })
}

/// A ProductService whose GetProduct returns a fixed product: a bare tonic unary call.
struct Echo;

#[tonic::async_trait]
impl shop_proto::shop::product::v1::product_service_server::ProductService for Echo {
    async fn get_product(
        &self,
        request: tonic::Request<shop_proto::shop::product::v1::GetProductRequest>,
    ) -> Result<tonic::Response<shop_proto::shop::product::v1::GetProductResponse>, tonic::Status> {
        use shop_proto::shop::{common::v1::Money, product::v1::Product};
        let product = Product {
            id: request.into_inner().product_id,
            sku: "LAMP-001".into(),
            name: "Desk lamp".into(),
            description: "A warm desk lamp with a linen shade and a brass stem, for long evenings.".into(),
            price: Some(Money { amount: 4900, currency: "USD".into() }),
            categories: vec!["home".into(), "lighting".into()],
            stock_available: 120,
            image_url: "https://img.shop.local/lamp.jpg".into(),
            active: true,
            created_at: None,
            updated_at: None,
        };
        Ok(tonic::Response::new(shop_proto::shop::product::v1::GetProductResponse { product: Some(product) }))
    }

    async fn batch_get_products(
        &self,
        _: tonic::Request<shop_proto::shop::product::v1::BatchGetProductsRequest>,
    ) -> Result<tonic::Response<shop_proto::shop::product::v1::BatchGetProductsResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("baseline"))
    }

    async fn reserve_stock(
        &self,
        _: tonic::Request<shop_proto::shop::product::v1::ReserveStockRequest>,
    ) -> Result<tonic::Response<shop_proto::shop::product::v1::ReserveStockResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("baseline"))
    }

    async fn release_stock(
        &self,
        _: tonic::Request<shop_proto::shop::product::v1::ReleaseStockRequest>,
    ) -> Result<tonic::Response<shop_proto::shop::product::v1::ReleaseStockResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("baseline"))
    }
}

/// `bench-grpc <url> <product id> <concurrency> <seconds>`.
#[derive(Debug, clap::Args)]
pub(crate) struct GrpcArgs {
    /// The gRPC server, like http://127.0.0.1:29001.
    url: String,
    /// The product to get.
    product_id: String,
    /// Calls in flight at once.
    concurrency: usize,
    /// How long to call, s.
    seconds: u64,
    /// A bearer token every call carries.
    #[arg(long)]
    token: Option<String>,
}

/// `bench-grpc <url> <product id> <concurrency> <seconds>`: prints successful calls per second.
pub(crate) fn grpc_client(args: GrpcArgs) -> anyhow::Result<()> {
    let GrpcArgs { url, product_id: id, concurrency, seconds, token } = args;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let rate = runtime.block_on(async move {
        let channel = tonic::transport::Endpoint::from_shared(url.clone())?.connect().await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let mut client =
                shop_proto::shop::product::v1::product_service_client::ProductServiceClient::new(channel.clone());
            let id = id.clone();
            let authorization: Option<tonic::metadata::MetadataValue<_>> =
                token.as_ref().map(|token| format!("Bearer {token}").parse()).transpose()?;
            tasks.push(tokio::spawn(async move {
                let mut done = 0_u64;
                while tokio::time::Instant::now() < deadline {
                    let mut request = tonic::Request::new(shop_proto::shop::product::v1::GetProductRequest {
                        product_id: id.clone(),
                    });
                    if let Some(value) = &authorization {
                        request.metadata_mut().insert("authorization", value.clone());
                    }
                    if client.get_product(request).await.is_ok() {
                        done += 1;
                    }
                }
                done
            }));
        }
        let mut total = 0_u64;
        for task in tasks {
            total += task.await.unwrap_or(0);
        }
        anyhow::Ok(total as f64 / seconds as f64)
    })?;
    #[expect(clippy::print_stdout, reason = "the parent process reads the rate")]
    {
        println!("{rate:.1}");
    }
    Ok(())
}
