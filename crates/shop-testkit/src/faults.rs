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
        Self::serve(listener, target)
    }

    fn serve(listener: tokio::net::TcpListener, target: &str) -> Self {
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
                let Ok((mut inbound, _)) = accepted else { continue };
                // While cut, the connection is dropped (closed) at once.
                let Some(cut) = current.lock().expect("proxy state").clone() else { continue };
                let target = target.clone();
                let stopped = stopped.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else { return };
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
    directory: PathBuf,
    child: Child,
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
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("port").port();
        let target = format!("127.0.0.1:{port}");
        let proxy = TcpProxy::start(&target).await;
        let directory = std::env::temp_dir().join(format!("shop-broker-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&directory).expect("a broker directory");
        let child = Command::new(Self::binary())
            .args(["broker", "--listener-url", &format!("tcp://{target}")])
            .args(["--advertised-listener-url", &format!("tcp://{}", proxy.address())])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(&directory)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu is installed by cargo xtask test");
        let started = Instant::now();
        while tokio::net::TcpStream::connect(&target).await.is_err() {
            assert!(started.elapsed() < Duration::from_secs(20), "the test broker did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self { proxy, directory, child }
    }

    /// The address clients use (the proxy's).
    pub fn address(&self) -> String {
        self.proxy.address().to_string()
    }

    /// Makes the broker unreachable.
    pub fn cut(&self) {
        self.proxy.cut();
    }

    /// Makes it reachable again.
    pub fn restore(&self) {
        self.proxy.restore();
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
    /// Starts `binary` with exactly `env` (plus `LISTEN_ADDR` on a free port).
    pub fn start(binary: &str, env: &[(&str, String)]) -> Self {
        let address = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("address");
        let log = std::env::temp_dir().join(format!("shop-service-{}.log", uuid::Uuid::now_v7().simple()));
        let file = std::fs::File::create(&log).expect("a log file");
        let child = Command::new(binary)
            .env_clear()
            .envs(env.iter().map(|(name, value)| (*name, value.as_str())))
            .env("LISTEN_ADDR", address.to_string())
            .env("LOG_FORMAT", "pretty")
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
