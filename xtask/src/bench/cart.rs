//! The cart: reads and writes through cart-service next to redis-benchmark on the same
//! Redis operations.

use std::process::Command;

use anyhow::{Context as _, bail};

use super::{
    Context, Figure,
    generators::{oha_max, oha_run, redis_benchmark},
    service,
};

/// The cart's figures: a user's cart read, and an item put into it.
pub(super) fn measure(context: &Context<'_>) -> anyhow::Result<Vec<Figure>> {
    let Context { instance, oha, product_id: id, .. } = context;
    let mut figures = Vec::new();
    eprintln!("xtask: == cart read and write");
    let user = service("user")?;
    let cart = service("cart")?;
    let (user_id, token) = register(&instance.url(user))?;
    let auth = format!("authorization: Bearer {token}");
    let put = oha_run(
        oha,
        &format!("{}/v1/cart/items/{id}", instance.url(cart)),
        &[
            "-c",
            "8",
            "-z",
            "4s",
            "-m",
            "PUT",
            "-H",
            "content-type: application/json",
            "-d",
            r#"{"quantity":2}"#,
            "-H",
            &auth,
        ],
    )?;
    let read = oha_max(oha, &format!("{}/v1/cart", instance.url(cart)), &["-H", &auth])?;
    let key = format!("{}cart:{user_id}", instance.redis_prefix);
    let redis_read = redis_benchmark(&["HGETALL", &key])?;
    figures.push(Figure {
        name: "cart read (req/s)".into(),
        measured: format!("{:.0}", read.rps),
        baseline: format!("redis-benchmark HGETALL of the same cart {redis_read:.0}"),
        ratio: Some(read.rps / redis_read),
        target: "(reported)".into(),
        met: None,
    });
    let redis_write = redis_benchmark(&["HSET", &format!("{}bench-probe", instance.redis_prefix), "line", "x"])?;
    figures.push(Figure {
        name: "cart write, PUT item (req/s)".into(),
        measured: format!("{:.0} (8 clients; each prices the line over gRPC)", put.rps),
        baseline: format!("redis-benchmark HSET {redis_write:.0}"),
        ratio: Some(put.rps / redis_write),
        target: "(reported)".into(),
        met: None,
    });
    Ok(figures)
}

/// A new user, logged in: its id and access token.
fn register(user_url: &str) -> anyhow::Result<(String, String)> {
    let email = format!("bench-{}@bench.shop.local", std::process::id());
    let body = format!(r#"{{"email":"{email}","password":"bench-password-1","name":"Bench"}}"#);
    let created = curl_json("POST", &format!("{user_url}/v1/users"), &body, None)?;
    let id = created["id"].as_str().context("no user id")?.to_owned();
    let login = curl_json(
        "POST",
        &format!("{user_url}/v1/auth/login"),
        &format!(r#"{{"email":"{email}","password":"bench-password-1"}}"#),
        None,
    )?;
    Ok((id, login["access_token"].as_str().context("no token")?.to_owned()))
}

/// `curl` sending `body` as JSON; the answer's JSON.
fn curl_json(method: &str, url: &str, body: &str, token: Option<&str>) -> anyhow::Result<serde_json::Value> {
    let mut command = Command::new("curl");
    command.args(["-sf", "-X", method, url, "-H", "content-type: application/json", "-d", body]);
    if let Some(token) = token {
        command.args(["-H", &format!("authorization: Bearer {token}")]);
    }
    let output = command.output().context("cannot run curl")?;
    if !output.status.success() {
        bail!("{method} {url} failed");
    }
    Ok(serde_json::from_slice(&output.stdout)?)
}
