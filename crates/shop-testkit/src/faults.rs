//! Fault injection: a TCP proxy a test can cut and restore, a private broker reached only
//! through such a proxy, and a service binary run as a child process that a test can stop
//! with a signal.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio_util::sync::CancellationToken;

/// A TCP proxy in front of a real server, that a test can cut to simulate an outage and
/// restore. While cut, it closes every open connection and closes each new one at once.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

pub struct TcpProxy {
    address: SocketAddr,
    /// Cancelled on cut; replaced on restore. Each connection ends when its generation's is.
    generation: Arc<Mutex<Option<CancellationToken>>>,
    stop: CancellationToken,
}

impl TcpProxy {
    /// Listens on an ephemeral port and forwards every connection to `target`.
    pub async fn start(target: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("cannot bind the proxy");
        Self::serve(listener, target, None)
    }

    /// Listens on an ephemeral port, ends TLS there with `acceptor`, and forwards what it
    /// decrypts to `target` in plaintext: a TLS server in front of one that has none.
    pub async fn start_tls(target: &str, acceptor: tokio_rustls::TlsAcceptor) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("cannot bind the proxy");
        Self::serve(listener, target, Some(acceptor))
    }

    fn serve(listener: tokio::net::TcpListener, target: &str, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let address = listener.local_addr().expect("proxy address");
        let target = target.to_owned();
        let generation = Arc::new(Mutex::new(Some(CancellationToken::new())));
        let stop = CancellationToken::new();
        let (current, stopped) = (Arc::clone(&generation), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = stopped.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((inbound, _)) = accepted else { continue };
                // While cut, the connection is dropped (closed) at once.
                let Some(cut) = current.lock().expect("proxy state").clone() else { continue };
                let target = target.clone();
                let stopped = stopped.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else { return };
                    let mut inbound: Box<dyn Stream> = match tls {
                        None => Box::new(inbound),
                        // A client that does not finish the handshake (wrong CA, plaintext) is dropped.
                        Some(acceptor) => match acceptor.accept(inbound).await {
                            Ok(stream) => Box::new(stream),
                            Err(_) => return,
                        },
                    };
                    tokio::select! {
                        () = cut.cancelled() => {}
                        () = stopped.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        Self { address, generation, stop }
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Closes every connection and refuses new ones: the server looks down.
    pub fn cut(&self) {
        if let Some(token) = self.generation.lock().expect("proxy state").take() {
            token.cancel();
        }
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        let mut generation = self.generation.lock().expect("proxy state");
        if generation.is_none() {
            *generation = Some(CancellationToken::new());
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
        self.stop.cancel();
    }
}

/// A tansu broker of the test's own, on sqlite storage in a temporary directory, that
/// advertises a [`TcpProxy`] in front of it: every client (the service's and the test's)
/// reaches it only through the proxy, so cutting the proxy makes the broker unreachable
/// while it keeps running, and restoring it brings it back with its data.
pub struct TestBroker {
    proxy: TcpProxy,
    /// Where tansu itself listens (the proxy forwards there).
    target: String,
    /// What the broker advertises: the proxy's address (by name when it serves TLS).
    advertised: String,
    /// `--authentication`: every client must complete SASL first.
    authentication: bool,
    directory: PathBuf,
    child: Option<Child>,
}

impl TestBroker {
    fn binary() -> String {
        let on_path = Command::new("tansu").arg("--version").output().is_ok_and(|output| output.status.success());
        if on_path {
            return "tansu".into();
        }
        let home = std::env::var("CARGO_HOME")
            .unwrap_or_else(|_| format!("{}/.cargo", std::env::var("HOME").unwrap_or_default()));
        format!("{home}/bin/tansu")
    }

    pub async fn start() -> Self {
        Self::start_secured(None, &[]).await
    }

    /// A broker behind a proxy that serves TLS with `tls` (advertised as `localhost:<port>`,
    /// the name its certificate holds) and, when `users` (name, password) are given, knows them
    /// as SCRAM-SHA-512 users and requires every client to authenticate first (tansu's
    /// `--authentication`; the users are made with `tansu user create` before it is on).
    pub async fn start_secured(tls: Option<&crate::tls::LocalhostCertificate>, users: &[(&str, &str)]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("port").port();
        let target = format!("127.0.0.1:{port}");
        let (proxy, advertised) = match tls {
            None => {
                let proxy = TcpProxy::start(&target).await;
                let advertised = proxy.address().to_string();
                (proxy, advertised)
            }
            Some(certificate) => {
                let proxy = TcpProxy::start_tls(&target, certificate.acceptor()).await;
                let advertised = format!("localhost:{}", proxy.address().port());
                (proxy, advertised)
            }
        };
        let directory = std::env::temp_dir().join(format!("shop-broker-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&directory).expect("a broker directory");
        let mut broker = Self { proxy, target, advertised, authentication: false, directory, child: None };
        broker.launch().await;
        if !users.is_empty() {
            for (name, password) in users {
                let made = Command::new(Self::binary())
                    .args(["user", "create", "--broker", &format!("tcp://{}", broker.target), name, password])
                    .args(["--mechanism", "scram512"])
                    .output()
                    .expect("tansu user create runs");
                assert!(made.status.success(), "tansu user create: {}", String::from_utf8_lossy(&made.stderr));
            }
            broker.authentication = true;
            broker.kill();
            broker.launch().await;
        }
        broker
    }

    async fn launch(&mut self) {
        let mut command = Command::new(Self::binary());
        command
            .args(["broker", "--listener-url", &format!("tcp://{}", self.target)])
            .args(["--advertised-listener-url", &format!("tcp://{}", self.advertised)])
            .args(["--storage-engine", "sqlite://tansu.db"]);
        if self.authentication {
            command.arg("--authentication");
        }
        let child = command
            .current_dir(&self.directory)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu is installed by cargo xtask test");
        self.child = Some(child);
        let started = Instant::now();
        while tokio::net::TcpStream::connect(&self.target).await.is_err() {
            assert!(started.elapsed() < Duration::from_secs(20), "the test broker did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The address clients use (the proxy's; `localhost:<port>` when it serves TLS).
    pub fn address(&self) -> String {
        self.advertised.clone()
    }

    /// Makes the broker unreachable.
    pub fn cut(&self) {
        self.proxy.cut();
    }

    /// Makes it reachable again.
    pub fn restore(&self) {
        self.proxy.restore();
    }

    /// SIGKILLs the broker (what it had not written to its storage is lost, as in a crash)
    /// and starts it again on the same storage and address.
    pub async fn kill_and_restart(&mut self) {
        self.kill();
        self.launch().await;
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

/// A service binary running as a child process, its output kept in a file (printed when a
/// test fails through [`ServiceProcess::log`]); killed with SIGKILL when dropped, so a
/// failing test leaves no process behind.
pub struct ServiceProcess {
    child: Child,
    log: PathBuf,
    address: SocketAddr,
}

impl ServiceProcess {
    /// Starts `binary` with exactly `env` (plus `LISTEN_ADDR` on a free port, and
    /// `LOG_FORMAT=pretty` unless `env` sets it).
    pub fn start(binary: &str, env: &[(&str, String)]) -> Self {
        let address = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("address");
        let log = std::env::temp_dir().join(format!("shop-service-{}.log", uuid::Uuid::now_v7().simple()));
        let file = std::fs::File::create(&log).expect("a log file");
        let child = Command::new(binary)
            .env_clear()
            .env("LOG_FORMAT", "pretty")
            .envs(env.iter().map(|(name, value)| (*name, value.as_str())))
            .env("LISTEN_ADDR", address.to_string())
            .stdout(Stdio::from(file.try_clone().expect("a log file")))
            .stderr(Stdio::from(file))
            .spawn()
            .expect("the service binary starts");
        Self { child, log, address }
    }

    /// The service's base URL.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// What the service has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the process with SIGKILL (no shutdown runs) and reaps it.
    pub fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits up to `deadline` for the process to exit: its status and how
    /// long it took, or `None` (after a SIGKILL) when it did not exit in time.
    pub async fn terminate(&mut self, deadline: Duration) -> Option<(ExitStatus, Duration)> {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
        assert!(sent.success(), "cannot signal the service");
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("the child's status") {
                return Some((status, started.elapsed()));
            }
            if started.elapsed() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The dependency a stop test makes unreachable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outage {
    Broker,
    Postgres,
    Redis,
}

/// The `SHUTDOWN_TIMEOUT` the stop tests give a service.
pub const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// `url` with its host and port replaced by `proxy`'s, and the host and port it named
/// (`default_port` when it has none): the proxy's target.
pub fn through(url: &str, proxy: SocketAddr, default_port: u16) -> (String, String) {
    let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (user, host) = authority.rsplit_once('@').map_or(("", authority), |(user, host)| (user, host));
    let target = if host.contains(':') { host.to_owned() } else { format!("{host}:{default_port}") };
    let user = if user.is_empty() { String::new() } else { format!("{user}@") };
    (target, format!("{scheme}://{user}{proxy}{path}"))
}

/// The stop test every service runs: starts `binary` (the real service, a child process)
/// with a fresh database when `database`, a private broker and a Redis key prefix, each
/// behind a proxy, plus `env`; once it is ready, makes `outage`'s dependency unreachable,
/// waits until `/readyz` reports it failing, sends SIGTERM, and checks the process exits 0
/// within [`STOP_DEADLINE`] with a `stopped` line. Returns how long the stop took.
pub async fn sigterm_during(outage: Outage, binary: &str, database: bool, env: &[(&str, String)]) -> Duration {
    let broker = TestBroker::start().await;
    let db = if database { Some(crate::TestDb::new().await) } else { None };
    let redis = crate::TestRedis::new();
    let postgres_proxy = TcpProxy::start(&through(&crate::postgres_admin_url(), broker.proxy.address(), 5432).0).await;
    let (redis_target, _) = through(&redis.url(), broker.proxy.address(), 6379);
    let redis_proxy = TcpProxy::start(&redis_target).await;
    let mut vars: Vec<(&str, String)> = vec![
        ("KAFKA_BROKERS", broker.address()),
        ("KAFKA_TOPIC_PREFIX", format!("t{}.", uuid::Uuid::now_v7().simple())),
        ("KAFKA_CREATE_TOPICS", "true".into()),
        ("REDIS_URL", through(&redis.url(), redis_proxy.address(), 6379).1),
        ("REDIS_KEY_PREFIX", redis.prefix().to_owned()),
        // The callers of other services need a client secret to start (none is asked for).
        ("SERVICE_CLIENT_SECRET", format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())),
        ("SHUTDOWN_TIMEOUT", format!("{}s", STOP_DEADLINE.as_secs())),
        ("SHUTDOWN_GRACE", "2s".into()),
        ("RUST_LOG", "info".into()),
    ];
    if let Some(db) = &db {
        vars.push(("DATABASE_URL", through(db.url(), postgres_proxy.address(), 5432).1));
    }
    vars.extend(env.iter().cloned());
    let mut service = ServiceProcess::start(binary, &vars);
    let readiness = |service: &ServiceProcess| {
        let url = service.url("/readyz");
        async move {
            let response = crate::http_client().get(url).send().await.ok()?;
            let status = response.status().as_u16();
            Some((status, response.text().await.unwrap_or_default()))
        }
    };
    let started = Instant::now();
    loop {
        if let Some((200, body)) = readiness(&service).await
            && !body.contains("failing")
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{binary} not ready in 30 s; log:\n{}", service.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    match outage {
        Outage::Broker => broker.cut(),
        Outage::Postgres => postgres_proxy.cut(),
        Outage::Redis => redis_proxy.cut(),
    }
    let check = match outage {
        Outage::Broker => "\"kafka\":",
        Outage::Postgres => "\"postgres\":",
        Outage::Redis => "\"redis\":",
    };
    // The check's own entry in the report, up to its closing brace, says "failing".
    let failing = |body: &str| {
        body.split_once(check)
            .and_then(|(_, rest)| rest.split_once('}'))
            .is_some_and(|(entry, _)| entry.contains("failing"))
    };
    let cut = Instant::now();
    loop {
        if readiness(&service).await.is_some_and(|(_, body)| failing(&body)) {
            break;
        }
        assert!(cut.elapsed() < Duration::from_secs(15), "{binary}: readiness never reported {outage:?} down");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let exited = service.terminate(STOP_DEADLINE + Duration::from_secs(5)).await;
    let log = service.log();
    let Some((status, took)) = exited else { panic!("{binary}: no exit within {STOP_DEADLINE:?}; log:\n{log}") };
    assert!(status.success(), "{binary}: exit status {status}; log:\n{log}");
    assert!(took < STOP_DEADLINE, "{binary}: took {took:?}, over {STOP_DEADLINE:?}; log:\n{log}");
    assert!(log.contains("stopped"), "{binary}: no stopped line; log:\n{log}");
    for line in log.lines().filter(|line| line.contains("stopp")) {
        eprintln!("{outage:?} down: {line}");
    }
    took
}
