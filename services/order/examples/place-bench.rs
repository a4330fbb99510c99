//! The checkout's write as the service issues it, driven hard: `cargo xtask bench` runs this
//! next to pgbench running the identical statement ([`order_service::store::PLACE_SQL`]).
//!
//! `place-bench <database url> <clients> <seconds> [<orders per second>]`: without a rate,
//! `clients` tasks store one-line orders back to back (closed loop); with one, orders are due
//! at that rate whatever the answers do (open loop), each timed from when it was due. Prints
//! `<orders per second> <p50 ms> <p99 ms>` of the stores that succeeded, or fails if any did not.
//! `place-bench sql` prints the statement, for pgbench.

use std::{str::FromStr as _, sync::Arc, time::Duration};

use anyhow::{Context as _, bail};
use chrono::{SubsecRound as _, Utc};
use order_service::{
    domain::{Order, OrderLine, OrderStatus, ShippingAddress},
    events, store,
};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::time::Instant;
use uuid::Uuid;

fn order() -> Order {
    let now = Utc::now().trunc_subsecs(6);
    Order {
        shipment: None,
        delivered_at: None,
        id: Uuid::now_v7(),
        user_id: Uuid::now_v7(),
        status: OrderStatus::PendingPayment,
        total_amount: 1999,
        currency: "USD".into(),
        shipping_address: ShippingAddress {
            name: "Ada Lovelace".into(),
            line1: "12 St James Square".into(),
            line2: None,
            city: "London".into(),
            region: None,
            postal_code: "SW1Y 4JH".into(),
            country: "GB".into(),
        },
        failure_reason: None,
        lines: vec![OrderLine {
            product_id: Uuid::now_v7(),
            name: "Desk lamp".into(),
            quantity: 1,
            unit_price_amount: 1999,
            currency: "USD".into(),
        }],
        created_at: now,
        updated_at: now,
    }
}

async fn place_one(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    let order = order();
    let mut kafka = shop_kit::events::KafkaConfig::for_brokers("127.0.0.1:9092");
    kafka.topic_prefix = "bench.".into();
    let event = kafka.topics().event(order.id.to_string(), &events::placed(&order, "tok_visa"));
    let mut connection = pool.acquire().await?;
    store::place(&mut connection, &order, None, &event).await.map_err(|error| anyhow::anyhow!("{error}"))
}

fn percentile(sorted: &[Duration], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("sql") {
        #[expect(clippy::print_stdout, reason = "the benchmark reads the statement")]
        {
            println!("{}", store::PLACE_SQL.as_str());
        }
        return Ok(());
    }
    let (url, clients, seconds, rate) = match args.as_slice() {
        [url, clients, seconds] => (url, clients.parse::<u32>()?, seconds.parse::<u64>()?, None),
        [url, clients, seconds, rate] => {
            (url, clients.parse::<u32>()?, seconds.parse::<u64>()?, Some(rate.parse::<u32>()?))
        }
        _ => bail!("usage: place-bench <database url> <clients> <seconds> [<orders per second>]"),
    };
    let pool = PgPoolOptions::new()
        .max_connections(clients)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(PgConnectOptions::from_str(url)?)
        .await
        .context("cannot connect")?;
    // Warm every connection (and its prepared statement) before timing.
    let warm: Vec<_> = (0..clients).map(|_| place_one(&pool)).collect();
    for result in futures::future::join_all(warm).await {
        result?;
    }
    let pool = Arc::new(pool);
    let started = Instant::now();
    let end = started + Duration::from_secs(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    match rate {
        None => {
            for _ in 0..clients {
                let pool = Arc::clone(&pool);
                tasks.spawn(async move {
                    let mut timings = Vec::new();
                    while Instant::now() < end {
                        let began = Instant::now();
                        place_one(&pool).await?;
                        timings.push(began.elapsed());
                    }
                    anyhow::Ok(timings)
                });
            }
        }
        Some(rate) => {
            let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
            let mut due = started;
            while due < end {
                tokio::time::sleep_until(due).await;
                let pool = Arc::clone(&pool);
                let was_due = due;
                tasks.spawn(async move {
                    place_one(&pool).await?;
                    anyhow::Ok(vec![was_due.elapsed()])
                });
                due += interval;
            }
        }
    }
    let mut timings = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        timings.extend(joined??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    timings.sort();
    #[expect(clippy::print_stdout, reason = "the benchmark reads the figures")]
    {
        println!(
            "{:.1} {:.2} {:.2}",
            timings.len() as f64 / elapsed,
            percentile(&timings, 0.5),
            percentile(&timings, 0.99)
        );
    }
    Ok(())
}
