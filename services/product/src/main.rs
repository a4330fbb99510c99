//! The product service binary: configuration, telemetry, then the application until a signal.

use product_service::{app::Application, config::Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if let Some(migrated) = shop_kit::db::migrate_command("product-service", &product_service::MIGRATOR).await {
        return migrated;
    }
    let config = Config::from_env()?;
    let _telemetry = shop_kit::telemetry::init(&config.telemetry)?;
    let application = Application::build(config).await?;
    application.run(shop_kit::server::shutdown_on_signal()).await
}
