//! The payment service binary: configuration, telemetry, then the service until a signal.

/// jemalloc: the request path allocates per request, and glibc malloc's arena locks cost it
/// ~30% of its throughput under load (docs/performance.md). Unprefixed, it is malloc for the
/// C code too (librdkafka).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    use payment_service::{MIGRATOR, SERVICE, app, config::Config};
    shop_kit::service::main(SERVICE, Some(&MIGRATOR), Config::from_env, app::build).await
}
