//! The benchmark's own broker: a tansu behind a TCP proxy, so the backlog figure can make the
//! broker unreachable and reachable again.

use std::{
    net::{Shutdown, TcpListener, TcpStream},
    path::Path,
    process::Child,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use anyhow::Context as _;

use crate::infra;

/// Where the services reach the benchmark's broker: a proxy in front of it, so the backlog
/// figure can make the broker unreachable and reachable again. (SIGKILLing tansu 0.6 under
/// this load and restarting it is no good: its idempotent-producer check then panics on the
/// first produce to a partition the producer had not written before, and the broker stops
/// answering.)
pub(super) const BENCH_BROKER: &str = "127.0.0.1:29092";
/// Where tansu itself listens (it advertises the proxy's address).
const BENCH_TANSU: &str = "127.0.0.1:29093";

/// The benchmark's tansu and the proxy in front of it.
pub(super) struct Broker {
    child: Mutex<Option<Child>>,
    pub(super) proxy: Proxy,
}

impl Broker {
    pub(super) fn start(dir: &Path) -> anyhow::Result<Self> {
        let proxy = Proxy::start(BENCH_BROKER, BENCH_TANSU)?;
        // In memory: tansu's sqlite engine is not what is measured here. Under the saga's load it
        // spends most of its time in table scans that grow with the topics (perf: ~60% in
        // sqlite's btree walk) and becomes the bottleneck of the whole run; a cluster runs
        // Kafka. `BENCH_BROKER_STORAGE=sqlite://tansu.db` measures with it.
        let storage = std::env::var("BENCH_BROKER_STORAGE").unwrap_or_else(|_| "memory://tansu/".into());
        let child = infra::spawn_tansu_advertising(BENCH_TANSU, BENCH_BROKER, &storage, dir, &dir.join("tansu.log"))?;
        Ok(Self { child: Mutex::new(Some(child)), proxy })
    }

    pub(super) fn stop(&self) {
        if let Ok(mut child) = self.child.lock()
            && let Some(mut child) = child.take()
        {
            infra::terminate(&mut child, Duration::from_secs(5));
        }
    }
}

/// A TCP proxy that can cut every connection and refuse new ones until restored.
pub(super) struct Proxy {
    open: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(listen: &str, upstream: &str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(listen).with_context(|| format!("cannot listen on {listen}"))?;
        let open = Arc::new(AtomicBool::new(true));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let (is_open, all, upstream) = (Arc::clone(&open), Arc::clone(&connections), upstream.to_owned());
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if !is_open.load(Ordering::Acquire) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream) else { continue };
                let (Ok(client_copy), Ok(server_copy)) = (client.try_clone(), server.try_clone()) else { continue };
                if let Ok(mut all) = all.lock() {
                    all.extend(client.try_clone().ok());
                    all.extend(server.try_clone().ok());
                }
                pipe(client, server_copy);
                pipe(server, client_copy);
            }
        });
        Ok(Self { open, connections })
    }

    /// The outage: every connection closed, new ones refused.
    pub(super) fn cut(&self) {
        self.open.store(false, Ordering::Release);
        if let Ok(mut all) = self.connections.lock() {
            for stream in all.drain(..) {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }

    /// The broker's return: new connections go through again.
    pub(super) fn restore(&self) {
        self.open.store(true, Ordering::Release);
    }
}

/// Copies `from` into `to` on a thread of its own until either side closes.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}
