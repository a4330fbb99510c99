//! Product reads: by id from the cache, by id from Postgres (every read a cache miss), and
//! over gRPC, each next to the bare stack or the database doing the same thing alone.

use std::{process::Child, time::Duration};

use anyhow::{Context as _, bail};

use super::{
    AXUM_PORT, CONNECTIONS, Context, Figure, TONIC_PORT,
    baseline::grpc_load,
    generators::{oha_max, oha_rate, pgbench_prepared},
    restart, service,
};
use crate::services::Service;

/// The reads' figures. Restarts the product service without a cache for the misses, and
/// again with it afterwards.
pub(super) fn measure(
    context: &Context<'_>,
    children: &mut [(&'static Service, Child)],
) -> anyhow::Result<Vec<Figure>> {
    let product = service("product")?;
    let product_path = format!("{}/v1/products/{}", context.instance.url(product), context.product_id);
    let mut figures = cache_hit(context, &product_path)?;
    figures.extend(cache_miss(context, &product_path, children)?);
    figures.push(grpc(context, product)?);
    Ok(figures)
}

fn cache_hit(context: &Context<'_>, product_path: &str) -> anyhow::Result<Vec<Figure>> {
    let oha = context.oha;
    eprintln!("xtask: == product read, cache hit");
    let axum = oha_max(oha, &format!("http://127.0.0.1:{AXUM_PORT}/json"), &[])?;
    let _ = oha_max(oha, product_path, &[])?; // warm: connections, cache
    let hit = oha_max(oha, product_path, &[])?;
    let closed_loop = Figure {
        name: "product read by id, cache hit (req/s)".into(),
        measured: format!("{:.0}", hit.rps),
        baseline: format!("bare axum JSON handler {:.0}", axum.rps),
        ratio: Some(hit.rps / axum.rps),
        target: "≥ 25,000 and ≥ 0.5× axum".into(),
        met: Some(hit.rps >= 25_000.0 && hit.rps >= 0.5 * axum.rps),
    };
    let fixed = oha_rate(oha, product_path, 15_000)?;
    let open_loop = Figure {
        name: "product read, cache hit, p99 at 15k req/s open loop".into(),
        measured: format!("{:.2} ms (achieved {:.0} req/s)", fixed.p99_ms, fixed.rps),
        baseline: "-".into(),
        ratio: None,
        target: "≤ 5 ms".into(),
        met: Some(fixed.p99_ms <= 5.0 && fixed.rps >= 14_000.0),
    };
    Ok(vec![closed_loop, open_loop])
}

fn cache_miss(
    context: &Context<'_>,
    product_path: &str,
    children: &mut [(&'static Service, Child)],
) -> anyhow::Result<Vec<Figure>> {
    let Context { instance, oha, product_id: id, product_db, .. } = context;
    eprintln!("xtask: == product read, cache miss");
    let sql = crate::root().join("target").join("bench-select.sql");
    std::fs::write(&sql, product_by_id_script()?)?;
    let pg_select = pgbench_prepared(product_db, &sql, CONNECTIONS, &[("id", id)])?;
    // The same service with a cache that stores nothing: every read misses (a Redis GET
    // that finds nothing, then Postgres).
    let (service, child) =
        children.iter_mut().find(|(service, _)| service.name == "product").context("product runs")?;
    restart(instance, service, child, &[("PRODUCT_CACHE_TTL", "0s")], Duration::from_secs(10))?;
    let _ = oha_max(oha, product_path, &[])?;
    let miss = oha_max(oha, product_path, &[])?;
    let miss_fixed = oha_rate(oha, product_path, (miss.rps * 0.5).max(100.0) as u32)?;
    let closed_loop = Figure {
        name: "product read by id, cache miss (req/s)".into(),
        measured: format!("{:.0}", miss.rps),
        baseline: format!("pgbench, same SELECT, prepared, {CONNECTIONS} clients: {pg_select:.0} tps"),
        ratio: Some(miss.rps / pg_select),
        target: "≥ 0.5× pgbench".into(),
        met: Some(miss.rps >= 0.5 * pg_select),
    };
    let open_loop = Figure {
        name: "product read, cache miss, p99 at half that rate".into(),
        measured: format!("{:.2} ms at {:.0} req/s", miss_fixed.p99_ms, miss_fixed.rps),
        baseline: "-".into(),
        ratio: None,
        target: "≤ 15 ms".into(),
        met: Some(miss_fixed.p99_ms <= 15.0),
    };
    restart(instance, service, child, &[], Duration::from_secs(10))?;
    Ok(vec![closed_loop, open_loop])
}

/// product-service's read by id (`store::products::by_id`): the file it compiles in, so pgbench
/// runs exactly the service's statement. (xtask depends on no service crate; it reads the file.)
const PRODUCT_BY_ID: &str = include_str!("../../../services/product/src/store/sql/product_by_id.sql");

/// [`PRODUCT_BY_ID`] as a pgbench script: one line, its parameter `$1` as pgbench's `:id`,
/// which `-M prepared` sends as a bind parameter, as sqlx does.
fn product_by_id_script() -> anyhow::Result<String> {
    if !PRODUCT_BY_ID.contains("$1") || PRODUCT_BY_ID.contains("$2") {
        bail!("product_by_id.sql no longer has exactly one parameter");
    }
    let statement = PRODUCT_BY_ID.split_whitespace().collect::<Vec<_>>().join(" ");
    Ok(format!("{};\n", statement.trim_end_matches(';').replace("$1", ":id")))
}

fn grpc(context: &Context<'_>, product: &Service) -> anyhow::Result<Figure> {
    eprintln!("xtask: == gRPC GetProduct");
    // As the cart service calls it: with the cart's service token (each call verifies it).
    let token = context.instance.service_token("cart", "product")?;
    let echo = grpc_load(&format!("http://127.0.0.1:{TONIC_PORT}"), &context.product_id, &token)?;
    let grpc = grpc_load(&format!("http://127.0.0.1:{}", context.instance.port(product)), &context.product_id, &token)?;
    Ok(Figure {
        name: "gRPC GetProduct (calls/s)".into(),
        measured: format!("{grpc:.0}"),
        baseline: format!("bare tonic unary {echo:.0}"),
        ratio: Some(grpc / echo),
        target: "≥ 0.5× tonic".into(),
        met: Some(grpc >= 0.5 * echo),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pgbench_script_is_the_services_statement_on_one_line() {
        let script = product_by_id_script().unwrap();
        assert!(
            script.starts_with("SELECT p.id, p.sku,") && script.ends_with(" AND p.deleted_at IS NULL;\n"),
            "{script}"
        );
        assert_eq!(script.lines().count(), 1, "{script}");
        assert!(script.contains("WHERE p.id = :id") && !script.contains('$'), "{script}");
    }
}
