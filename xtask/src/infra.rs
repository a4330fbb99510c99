//! The infrastructure a run needs: Postgres, Redis and a Kafka-protocol broker, found at
//! their configured addresses or started here (and then stopped again by whoever asked).

use std::os::unix::process::CommandExt as _;
use std::{
    fs,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream, ToSocketAddrs as _},
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// The admin URL of Postgres (`SHOP_POSTGRES_URL`).
pub(crate) fn postgres_url() -> String {
    std::env::var("SHOP_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The Redis URL (`REDIS_URL`).
pub(crate) fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// `host:port` of a URL such as `scheme://user:pass@host:port/path`.
pub(crate) fn host_port(url: &str, default_port: u16) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    if host_port.contains(':') { host_port.to_owned() } else { format!("{host_port}:{default_port}") }
}

pub(crate) fn reachable(address: &str) -> bool {
    address
        .to_socket_addrs()
        .ok()
        .into_iter()
        .flatten()
        .any(|socket| TcpStream::connect_timeout(&socket, Duration::from_millis(300)).is_ok())
}

pub(crate) fn wait_until_reachable(what: &str, address: &str, timeout: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    while !reachable(address) {
        if started.elapsed() > timeout {
            bail!("{what} did not come up on {address} within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Something this run started and must stop at the end.
pub(crate) enum Started {
    Postgres { cluster: String },
    Redis { address: String },
    Broker(Child),
}

impl Started {
    pub(crate) fn stop(self) {
        match self {
            Self::Postgres { cluster } => {
                let (version, name) = cluster.split_once('/').unwrap_or(("15", "main"));
                let _ =
                    Command::new("pg_ctlcluster").args(["--skip-systemctl-redirect", version, name, "stop"]).status();
            }
            Self::Redis { address } => {
                let (host, port) = address.rsplit_once(':').unwrap_or(("127.0.0.1", "6379"));
                let _ = Command::new("redis-cli").args(["-h", host, "-p", port, "shutdown", "nosave"]).status();
            }
            Self::Broker(mut child) => {
                terminate(&mut child, Duration::from_secs(5));
            }
        }
    }

    /// Stops it at once: a broker is killed (SIGKILL); Postgres and Redis stop as usual.
    pub(crate) fn kill(self) {
        match self {
            Self::Broker(mut child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            other => other.stop(),
        }
    }
}

/// Asks a child to stop (SIGTERM), then kills it after `grace`.
pub(crate) fn terminate(child: &mut Child, grace: Duration) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).stderr(Stdio::null()).status();
    let started = Instant::now();
    while started.elapsed() < grace {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Makes sure Postgres answers; starts the local cluster if it is installed but stopped.
pub(crate) fn ensure_postgres() -> anyhow::Result<Option<Started>> {
    let address = host_port(&postgres_url(), 5432);
    if reachable(&address) {
        return Ok(None);
    }
    let clusters = fs::read_dir("/etc/postgresql")
        .with_context(|| format!("Postgres is not reachable on {address} and no local cluster is installed"))?;
    let version = clusters
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().into_string().ok())
        .max()
        .context("no local Postgres cluster found under /etc/postgresql")?;
    eprintln!("xtask: Postgres is not running on {address}; starting the local cluster {version}/main");
    let status = Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &version, "main", "start"])
        .status()
        .context("cannot run pg_ctlcluster")?;
    if !status.success() {
        bail!("pg_ctlcluster {version} main start failed");
    }
    wait_until_reachable("Postgres", &address, Duration::from_secs(30))?;
    Ok(Some(Started::Postgres { cluster: format!("{version}/main") }))
}

/// Makes sure Redis answers; starts the local server if it is installed but stopped.
pub(crate) fn ensure_redis() -> anyhow::Result<Option<Started>> {
    let address = host_port(&redis_url(), 6379);
    if reachable(&address) {
        return Ok(None);
    }
    let (host, port) = address.rsplit_once(':').unwrap_or(("127.0.0.1", "6379"));
    eprintln!("xtask: Redis is not running on {address}; starting redis-server");
    let status = Command::new("redis-server")
        .args(["--daemonize", "yes", "--bind", host, "--port", port, "--save", "", "--appendonly", "no"])
        .status()
        .context("Redis is not reachable and redis-server cannot be run")?;
    if !status.success() {
        bail!("redis-server failed to start");
    }
    wait_until_reachable("Redis", &address, Duration::from_secs(15))?;
    Ok(Some(Started::Redis { address }))
}

/// The broker address: `KAFKA_BROKERS` if set, else the local tansu on 127.0.0.1:9092.
pub(crate) fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// The tansu binary, installed with cargo on first use.
fn tansu() -> anyhow::Result<String> {
    let on_path = Command::new("tansu").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    if on_path.is_ok_and(|status| status.success()) {
        return Ok("tansu".into());
    }
    let cargo_home = std::env::var("CARGO_HOME")
        .unwrap_or_else(|_| format!("{}/.cargo", std::env::var("HOME").unwrap_or_else(|_| "/root".into())));
    let installed = format!("{cargo_home}/bin/tansu");
    if Path::new(&installed).exists() {
        return Ok(installed);
    }
    eprintln!("xtask: installing the tansu broker (once per machine, about 12 minutes)");
    let status = Command::new("cargo")
        .args(["install", "tansu", "--version", "0.6.0", "--locked", "--features", "libsql,dynostore"])
        .status()
        .context("cannot run cargo install tansu")?;
    if !status.success() {
        bail!("cargo install tansu failed");
    }
    Ok(installed)
}

/// The brokers `cargo xtask test` uses: `KAFKA_BROKERS` if set, else a tansu of its own on
/// 127.0.0.1:19092, never the one `cargo xtask up` runs on 9092. Sharing it, the tests' load
/// and topic deletions reached the developer's platform: tansu 0.6's sqlite storage panicked
/// once under both ("more or less than one row") and stopped serving either.
pub(crate) fn test_brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

/// Makes sure a Kafka-protocol broker answers: the configured one, or a local tansu with
/// sqlite storage under target/shop-dev (kept across restarts).
pub(crate) fn ensure_broker(log: &Path) -> anyhow::Result<Option<Started>> {
    ensure_broker_at(&brokers(), "sqlite://tansu.db", log)
}

/// As [`ensure_broker`], for `brokers` and a tansu storing in `storage` (relative to
/// target/shop-dev).
pub(crate) fn ensure_broker_at(brokers: &str, storage: &str, log: &Path) -> anyhow::Result<Option<Started>> {
    let configured = std::env::var("KAFKA_BROKERS").is_ok();
    let address = brokers.split(',').next().unwrap_or("127.0.0.1:9092").trim().to_owned();
    if reachable(&address) {
        return Ok(None);
    }
    if configured {
        bail!("KAFKA_BROKERS is set to {address}, but nothing answers there");
    }
    let dir = crate::state_dir();
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    eprintln!("xtask: starting the tansu broker on {address} (storage {storage} in {})", dir.display());
    let child = spawn_tansu_advertising(&address, &address, storage, &dir, log)?;
    Ok(Some(Started::Broker(child)))
}

/// Starts tansu on `address` with `storage` (a sqlite URL's path is relative to `dir`, and
/// its data is kept across restarts, a SIGKILL included), telling clients to connect to
/// `advertised` (a proxy in front of it, or `address`), and waits until it answers.
pub(crate) fn spawn_tansu_advertising(
    address: &str,
    advertised: &str,
    storage: &str,
    dir: &Path,
    log: &Path,
) -> anyhow::Result<Child> {
    let binary = tansu()?;
    let log_file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    // Its own process group: a terminal's Ctrl-C reaches only xtask, which stops the
    // broker after the services that use it.
    let mut child = Command::new(binary)
        .process_group(0)
        .args(["broker", "--listener-url", &format!("tcp://{address}")])
        .args(["--advertised-listener-url", &format!("tcp://{advertised}"), "--storage-engine", storage])
        .current_dir(dir)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .spawn()
        .context("cannot start tansu")?;
    if let Err(error) = wait_until_reachable("the tansu broker", address, Duration::from_secs(30)) {
        terminate(&mut child, Duration::from_secs(5));
        return Err(error.context(format!("see {}", log.display())));
    }
    Ok(child)
}

/// Runs SQL as the Postgres admin through psql; returns its output.
pub(crate) fn psql(sql: &str) -> anyhow::Result<String> {
    psql_at(&postgres_url(), sql)
}

/// Runs SQL in database `name` through psql; returns its output.
pub(crate) fn psql_in(name: &str, sql: &str) -> anyhow::Result<String> {
    psql_at(&database_url(name), sql)
}

/// Runs SQL on the database at `url` through psql; returns its output (`-tA`: unaligned
/// rows, `|` between columns).
pub(crate) fn psql_at(url: &str, sql: &str) -> anyhow::Result<String> {
    let output = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-tA", "-c", sql])
        .output()
        .context("cannot run psql (install the postgresql-client package)")?;
    if !output.status.success() {
        bail!("psql failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Creates the database if it does not exist, on the server of the admin URL `admin`.
pub(crate) fn ensure_database_on(admin: &str, name: &str) -> anyhow::Result<()> {
    if psql_at(admin, &format!("SELECT 1 FROM pg_database WHERE datname = '{name}'"))? != "1" {
        psql_at(admin, &format!(r#"CREATE DATABASE "{name}""#))?;
        eprintln!("xtask: created database {name}");
    }
    Ok(())
}

/// The URL of database `name` on the admin server.
pub(crate) fn database_url(name: &str) -> String {
    database_url_on(&postgres_url(), name)
}

/// The URL of database `name` on the server of the admin URL `admin`.
pub(crate) fn database_url_on(admin: &str, name: &str) -> String {
    let (base, query) = admin.split_once('?').map_or((admin, None), |(base, query)| (base, Some(query)));
    let scheme_end = base.find("://").map_or(0, |at| at + 3);
    let base = base[scheme_end..].find('/').map_or(base, |slash| &base[..scheme_end + slash]);
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

/// The status code of `GET http://address/path`, if anything answered.
pub(crate) fn http_status(address: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").ok()?;
    let mut head = [0_u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Removes every Redis key under `prefix` (a private platform instance's) from the Redis at
/// `url`. Without
/// redis-cli the keys stay (they expire with the carts' idle TTL) and a note says so.
pub(crate) fn delete_redis_keys(url: &str, prefix: &str) -> anyhow::Result<()> {
    let Ok(listed) = Command::new("redis-cli").args(["-u", url, "--scan", "--pattern", &format!("{prefix}*")]).output()
    else {
        eprintln!("xtask: redis-cli not found; keys under {prefix:?} are left to expire");
        return Ok(());
    };
    if !listed.status.success() {
        bail!("redis-cli --scan failed: {}", String::from_utf8_lossy(&listed.stderr).trim());
    }
    let text = String::from_utf8_lossy(&listed.stdout).into_owned();
    let keys: Vec<&str> = text.lines().filter(|key| !key.is_empty()).collect();
    for chunk in keys.chunks(500) {
        let status =
            Command::new("redis-cli").args(["-u", url, "UNLINK"]).args(chunk).stdout(Stdio::null()).status()?;
        if !status.success() {
            bail!("redis-cli UNLINK failed");
        }
    }
    Ok(())
}

/// Deletes every topic whose name starts with `prefix` from the broker.
pub(crate) fn delete_topics(brokers: &str, prefix: &str) -> anyhow::Result<()> {
    use rdkafka::{
        ClientConfig,
        admin::{AdminClient, AdminOptions},
        client::DefaultClientContext,
    };
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start a runtime")?;
    runtime.block_on(async {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .create()
            .context("cannot create a Kafka admin client")?;
        let metadata = admin.inner().fetch_metadata(None, Duration::from_secs(10)).context("cannot list the topics")?;
        let names: Vec<String> = metadata
            .topics()
            .iter()
            .map(|topic| topic.name().to_owned())
            .filter(|name| name.starts_with(prefix))
            .collect();
        if names.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        for result in admin.delete_topics(&names, &AdminOptions::new()).await.context("cannot delete topics")? {
            // A topic the broker lists but no longer knows is gone already; anything else is
            // left behind with a note (a leftover topic harms nothing).
            if let Err((topic, error)) = result
                && error != rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition
            {
                eprintln!("xtask: topic {topic} is left behind: {error}");
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_of_urls() {
        let cases = [
            ("postgres://postgres@127.0.0.1:5432/postgres", 5432, "127.0.0.1:5432"),
            ("postgres://u:p@db.internal/x?sslmode=disable", 5432, "db.internal:5432"),
            ("redis://127.0.0.1:6380", 6379, "127.0.0.1:6380"),
            ("redis://:secret@cache:6379/0", 6379, "cache:6379"),
        ];
        for (url, port, expected) in cases {
            assert_eq!(host_port(url, port), expected, "case {url}");
        }
    }

    #[test]
    fn database_urls_on_an_admin_url() {
        let cases = [
            ("postgres://postgres@127.0.0.1:5432/postgres", "postgres://postgres@127.0.0.1:5432/shop_order"),
            ("postgres://postgres@127.0.0.1:55432", "postgres://postgres@127.0.0.1:55432/shop_order"),
            ("postgres://u:p@db/x?sslmode=disable", "postgres://u:p@db/shop_order?sslmode=disable"),
        ];
        for (admin, expected) in cases {
            assert_eq!(database_url_on(admin, "shop_order"), expected, "case {admin}");
        }
    }
}
