//! TLS to Postgres (`DATABASE_SSL_MODE`, `DATABASE_CA_FILE`), against this machine's real
//! Postgres, which serves TLS with its own certificate (`ssl_cert_file`, issued for
//! `localhost`). Nothing is written; each test only connects.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly on purpose")]

use shop_kit::{
    config::Vars,
    db::{self, DatabaseConfig},
};

/// The admin URL with another host (`localhost` is the name the server's certificate has).
fn url_with_host(host: &str) -> String {
    let admin = shop_testkit::postgres_admin_url();
    let mut url = url::Url::parse(&admin).unwrap();
    url.set_host(Some(host)).unwrap();
    url.to_string()
}

fn config(url: &str, settings: &[(&str, &str)]) -> Result<DatabaseConfig, String> {
    let mut pairs = vec![("DATABASE_URL", url)];
    pairs.extend_from_slice(settings);
    DatabaseConfig::from_vars(&Vars::from_pairs(pairs)).map_err(|error| error.to_string())
}

/// Whether the pool's session runs over TLS, as the server sees it.
async fn over_tls(config: &DatabaseConfig) -> Result<bool, String> {
    let pool = db::connect(config).await.map_err(|error| format!("{error:#}"))?;
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .map_err(|error| error.to_string())?;
    pool.close().await;
    Ok(ssl)
}

/// The server's own certificate, which this test trusts as its CA.
async fn server_certificate() -> std::path::PathBuf {
    let pool = db::connect(&DatabaseConfig::for_url(&shop_testkit::postgres_admin_url())).await.unwrap();
    let path: String = sqlx::query_scalar("SELECT current_setting('ssl_cert_file')").fetch_one(&pool).await.unwrap();
    pool.close().await;
    std::path::PathBuf::from(path)
}

#[tokio::test]
async fn the_mode_decides_whether_the_session_is_encrypted() {
    let url = shop_testkit::postgres_admin_url();
    assert!(over_tls(&config(&url, &[("DATABASE_SSL_MODE", "require")]).unwrap()).await.unwrap(), "require");
    assert!(!over_tls(&config(&url, &[("DATABASE_SSL_MODE", "disable")]).unwrap()).await.unwrap(), "disable");
}

#[tokio::test]
async fn verify_full_connects_only_to_the_certified_name_signed_by_the_trusted_ca() {
    let certificate = server_certificate().await;
    let ca = certificate.to_str().unwrap();
    let verified = [("DATABASE_SSL_MODE", "verify-full"), ("DATABASE_CA_FILE", ca)];

    let right = config(&url_with_host("localhost"), &verified).unwrap();
    assert!(over_tls(&right).await.unwrap(), "the certified name, the trusted CA: connected over TLS");

    let wrong_name = config(&url_with_host("127.0.0.1"), &verified).unwrap();
    let error = over_tls(&wrong_name).await.unwrap_err();
    assert!(error.contains("cannot connect to Postgres") && error.to_lowercase().contains("certificate"), "{error}");

    // A CA that did not sign the server's certificate.
    let other_ca = shop_testkit::tls::LocalhostCertificate::generate().write_ca("shop-db-tls-other-ca");
    let untrusted = config(
        &url_with_host("localhost"),
        &[("DATABASE_SSL_MODE", "verify-full"), ("DATABASE_CA_FILE", other_ca.to_str().unwrap())],
    )
    .unwrap();
    let error = over_tls(&untrusted).await.unwrap_err();
    assert!(error.to_lowercase().contains("certificate"), "{error}");
    std::fs::remove_file(&other_ca).unwrap();
}

#[test]
fn bad_tls_settings_name_the_setting() {
    let url = shop_testkit::postgres_admin_url();
    let cases = [
        (vec![("DATABASE_SSL_MODE", "sometimes")], "DATABASE_SSL_MODE"),
        (vec![("DATABASE_SSL_MODE", "verify-full"), ("DATABASE_CA_FILE", "/nonexistent/ca.pem")], "DATABASE_CA_FILE"),
        (vec![("DATABASE_SSL_MODE", "verify-full"), ("DATABASE_CA_FILE", "/etc/hostname")], "holds no PEM certificate"),
        // A CA file with a mode that checks nothing would look safe and be ignored.
        (
            vec![("DATABASE_SSL_MODE", "require"), ("DATABASE_CA_FILE", "/etc/ssl/certs/ca-certificates.crt")],
            "verify-ca",
        ),
    ];
    for (settings, expected) in cases {
        let error = config(&url, &settings).unwrap_err();
        assert!(error.contains(expected), "{settings:?}: {error}");
    }
}
