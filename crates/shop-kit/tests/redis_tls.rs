//! TLS to Redis (`rediss://`, `REDIS_CA_FILE`), against a real redis-server of the test's own
//! that serves only TLS, with a certificate for `localhost` from a CA made here. The server is
//! stopped and its files removed at the end.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly on purpose")]

use std::{path::Path, process::Stdio, time::Duration};

use shop_kit::{cache, config::Vars};

/// A CA and a certificate it signed for `localhost` alone: (CA PEM, certificate PEM, key PEM).
fn certificates() -> (String, String, String) {
    let certificate = shop_testkit::tls::LocalhostCertificate::for_names(&["localhost"]);
    (certificate.ca_pem, certificate.cert_pem, certificate.key_pem)
}

/// A redis-server listening with TLS only, killed on drop.
struct TlsRedis {
    child: std::process::Child,
    port: u16,
}

impl TlsRedis {
    fn start(dir: &Path, ca: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", "0", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--tls-port", &port.to_string(), "--tls-auth-clients", "no"])
            .arg("--tls-cert-file")
            .arg(dir.join("server.pem"))
            .arg("--tls-key-file")
            .arg(dir.join("server-key.pem"))
            .arg("--tls-ca-cert-file")
            .arg(ca)
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian's redis-server package, built with TLS)");
        Self { child, port }
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(settings: &[(&str, &str)]) -> Result<cache::RedisConfig, String> {
    cache::RedisConfig::from_vars(&Vars::from_pairs(settings.iter().copied())).map_err(|error| error.to_string())
}

/// PING through `config`, the error chain as text when it fails.
async fn ping(config: &cache::RedisConfig) -> Result<String, String> {
    let mut connection = cache::connect(config).await.map_err(|error| format!("{error:#}"))?;
    redis::cmd("PING").query_async::<String>(&mut connection).await.map_err(|error| error.to_string())
}

#[tokio::test]
async fn rediss_connects_only_to_a_server_its_ca_vouches_for() {
    let dir = std::env::temp_dir().join(format!("shop-redis-tls-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ca, cert, key) = certificates();
    let (other_ca, _, _) = certificates();
    for (name, pem) in [("ca.pem", &ca), ("server.pem", &cert), ("server-key.pem", &key), ("other-ca.pem", &other_ca)] {
        std::fs::write(dir.join(name), pem).unwrap();
    }
    let server = TlsRedis::start(&dir, &dir.join("ca.pem"));
    let url = format!("rediss://localhost:{}", server.port);
    let ca_file = dir.join("ca.pem");
    let trusted = config(&[("REDIS_URL", &url), ("REDIS_CA_FILE", ca_file.to_str().unwrap())]).unwrap();
    // The server takes a moment to listen.
    let mut answer = Err(String::new());
    for _ in 0..50 {
        answer = ping(&trusted).await;
        if answer.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(answer.unwrap(), "PONG", "over TLS, the certificate checked against REDIS_CA_FILE");

    let other = dir.join("other-ca.pem");
    let untrusted = config(&[("REDIS_URL", &url), ("REDIS_CA_FILE", other.to_str().unwrap())]).unwrap();
    let error = ping(&untrusted).await.unwrap_err();
    assert!(error.to_lowercase().contains("certificate") || error.to_lowercase().contains("issuer"), "{error}");

    let wrong_name = format!("rediss://127.0.0.1:{}", server.port);
    let by_address = config(&[("REDIS_URL", &wrong_name), ("REDIS_CA_FILE", ca_file.to_str().unwrap())]).unwrap();
    assert!(ping(&by_address).await.is_err(), "the certificate names localhost, not 127.0.0.1");

    let plain = config(&[("REDIS_URL", &format!("redis://localhost:{}", server.port))]).unwrap();
    assert!(ping(&plain).await.is_err(), "no plaintext on a TLS port");

    let refused = config(&[("REDIS_URL", "redis://127.0.0.1:6379"), ("REDIS_CA_FILE", ca_file.to_str().unwrap())]);
    assert!(refused.unwrap_err().contains("rediss://"), "a CA with a plaintext URL would verify nothing");
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}
