//! The infrastructure chaos disrupts, all of it its own, so that restarting it disturbs no
//! other run on the machine: a Postgres cluster made with initdb, a redis-server with an
//! append-only file (carts survive its restart, as they do in production) and a tansu broker,
//! each on a port of its own, with their data under one folder that is removed afterwards.
//!
//! Every process started here is written to `<folder>/pids`, so that a run that was itself
//! killed leaves nothing running after the next one starts.

use std::os::unix::process::CommandExt as _;
use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::infra;

/// The private Postgres's port (the machine's own is on 5432).
const POSTGRES_PORT: u16 = 55_432;
/// The private Redis's port (the machine's own is on 6379).
const REDIS_PORT: u16 = 56_379;
/// The private broker (`up`'s is on 9092, the tests' on 19092, the benchmark's on 29092).
pub(super) const BROKER: &str = "127.0.0.1:39092";

/// The private servers, running.
pub(super) struct Servers {
    dir: PathBuf,
    postgres: Postgres,
    redis: Option<Child>,
    broker: Option<Child>,
}

impl Servers {
    /// Starts all three under `dir` (made empty first; what a killed run left there is
    /// stopped and removed).
    pub(super) fn start(dir: &Path) -> anyhow::Result<Self> {
        remove_leftovers(dir);
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let postgres = Postgres::create(&dir.join("postgres"))?;
        let mut servers = Self { dir: dir.to_owned(), postgres, redis: None, broker: None };
        // From here on, `stop` (or drop) takes down what has started.
        servers.postgres.start()?;
        servers.redis = Some(servers.spawn_redis()?);
        let broker_dir = dir.join("broker");
        fs::create_dir_all(&broker_dir)?;
        let broker = infra::spawn_tansu_advertising(
            BROKER,
            BROKER,
            "sqlite://tansu.db",
            &broker_dir,
            &broker_dir.join("tansu.log"),
        )?;
        servers.record(broker.id(), "tansu");
        servers.broker = Some(broker);
        Ok(servers)
    }

    /// The admin URL of the private Postgres.
    pub(super) fn postgres_url() -> String {
        format!("postgres://postgres@127.0.0.1:{POSTGRES_PORT}/postgres")
    }

    /// The URL of the private Redis.
    pub(super) fn redis_url() -> String {
        format!("redis://127.0.0.1:{REDIS_PORT}")
    }

    /// `pg_ctl restart -m fast`: every connection is closed, the server stops cleanly and
    /// starts again (what `pg_ctlcluster 15 main restart` does).
    pub(super) fn restart_postgres(&mut self) -> anyhow::Result<()> {
        self.postgres.pg_ctl(&["-m", "fast", "-w", "-t", "60", "restart"])?;
        self.postgres.wait_until_reachable()
    }

    /// SIGTERM to redis-server (it writes its append-only file and exits), then a new one on
    /// the same files.
    pub(super) fn restart_redis(&mut self) -> anyhow::Result<()> {
        if let Some(mut redis) = self.redis.take() {
            infra::terminate(&mut redis, Duration::from_secs(10));
        }
        self.redis = Some(self.spawn_redis()?);
        Ok(())
    }

    /// SIGSTOP to the broker: it keeps its connections but answers nothing.
    pub(super) fn pause_broker(&self) -> anyhow::Result<()> {
        self.signal_broker("-STOP")
    }

    /// SIGCONT to the broker.
    pub(super) fn resume_broker(&self) -> anyhow::Result<()> {
        self.signal_broker("-CONT")
    }

    fn signal_broker(&self, signal: &str) -> anyhow::Result<()> {
        let broker = self.broker.as_ref().context("the broker is not running")?;
        signal_pid(broker.id(), signal)
    }

    /// Writes `pid` (a process of `name`) to the folder's list of processes to stop.
    pub(super) fn record(&self, pid: u32, name: &str) {
        let list = fs::OpenOptions::new().create(true).append(true).open(self.dir.join("pids"));
        if let Ok(mut list) = list {
            let _ = writeln!(list, "{pid} {name}");
        }
    }

    /// Stops everything (the broker and Redis at once, Postgres immediately) and removes
    /// the folder.
    pub(super) fn stop(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        if let Some(mut broker) = self.broker.take() {
            let _ = broker.kill();
            let _ = broker.wait();
        }
        if let Some(mut redis) = self.redis.take() {
            let _ = redis.kill();
            let _ = redis.wait();
        }
        self.postgres.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }

    fn spawn_redis(&self) -> anyhow::Result<Child> {
        let dir = self.dir.join("redis");
        fs::create_dir_all(&dir)?;
        let log = fs::OpenOptions::new().create(true).append(true).open(dir.join("redis.log"))?;
        let port = REDIS_PORT.to_string();
        let child = Command::new("redis-server")
            .process_group(0)
            .args(["--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes"])
            .args(["--protected-mode", "no", "--daemonize", "no", "--dir"])
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start redis-server (install the redis-server package)")?;
        self.record(child.id(), "redis-server");
        infra::wait_until_reachable("the chaos Redis", &format!("127.0.0.1:{port}"), Duration::from_secs(15))?;
        Ok(child)
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// A Postgres cluster of its own, run as the `postgres` user when this runs as root (initdb
/// and pg_ctl refuse root).
struct Postgres {
    bin: PathBuf,
    /// Holds `data/`, the log and the socket; owned by the server's user.
    dir: PathBuf,
    as_postgres_user: bool,
    running: bool,
}

impl Postgres {
    fn create(dir: &Path) -> anyhow::Result<Self> {
        let bin = postgres_bin()?;
        fs::create_dir_all(dir)?;
        let as_postgres_user = is_root();
        if as_postgres_user {
            let status = Command::new("chown").args(["postgres:postgres"]).arg(dir).status()?;
            if !status.success() {
                bail!("cannot give {} to the postgres user", dir.display());
            }
        }
        let postgres = Self { bin, dir: dir.to_owned(), as_postgres_user, running: false };
        let output = postgres
            .command("initdb")
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync", "-D"])
            .arg(dir.join("data"))
            .output()
            .context("cannot run initdb")?;
        if !output.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&output.stderr).trim());
        }
        Ok(postgres)
    }

    fn start(&mut self) -> anyhow::Result<()> {
        let options = format!(
            "-p {POSTGRES_PORT} -c listen_addresses=127.0.0.1 -k {} -c max_connections=200 -c fsync=off",
            self.dir.display()
        );
        self.running = true;
        self.pg_ctl(&["-w", "-t", "60", "-o", &options, "start"])?;
        self.wait_until_reachable()
    }

    fn wait_until_reachable(&self) -> anyhow::Result<()> {
        infra::wait_until_reachable(
            "the chaos Postgres",
            &format!("127.0.0.1:{POSTGRES_PORT}"),
            Duration::from_secs(60),
        )
    }

    fn pg_ctl(&self, args: &[&str]) -> anyhow::Result<()> {
        let output = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("postgres.log"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("cannot run pg_ctl")?;
        if !output.status.success() {
            bail!(
                "pg_ctl {} failed: {} (see {})",
                args.last().copied().unwrap_or_default(),
                String::from_utf8_lossy(&output.stderr).trim(),
                self.dir.join("postgres.log").display()
            );
        }
        Ok(())
    }

    fn stop(&mut self) {
        if std::mem::take(&mut self.running) {
            let _ = self.pg_ctl(&["-m", "immediate", "-w", "-t", "30", "stop"]);
        }
    }

    fn command(&self, tool: &str) -> Command {
        if self.as_postgres_user {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(self.bin.join(tool));
            command
        } else {
            Command::new(self.bin.join(tool))
        }
    }
}

/// The newest installed server's binaries (`/usr/lib/postgresql/<version>/bin`).
fn postgres_bin() -> anyhow::Result<PathBuf> {
    let root = Path::new("/usr/lib/postgresql");
    let version = fs::read_dir(root)
        .with_context(|| format!("no Postgres server installed under {}", root.display()))?
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| root.join(name).join("bin/initdb").exists())
        .max_by_key(|name| name.parse::<u32>().unwrap_or(0))
        .context("no initdb under /usr/lib/postgresql/*/bin")?;
    Ok(root.join(version).join("bin"))
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

fn signal_pid(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = Command::new("kill").args([signal, &pid.to_string()]).status().context("cannot run kill")?;
    if !status.success() {
        bail!("kill {signal} {pid} failed");
    }
    Ok(())
}

/// Stops what a killed run left under `dir` (its Postgres, and each recorded process that is
/// still the program it was) and removes the folder.
fn remove_leftovers(dir: &Path) {
    if !dir.exists() {
        return;
    }
    eprintln!("xtask: stopping and removing what an earlier chaos run left in {}", dir.display());
    let data = dir.join("postgres").join("data");
    if data.join("postmaster.pid").exists()
        && let Ok(bin) = postgres_bin()
    {
        let postgres = Postgres { bin, dir: dir.join("postgres"), as_postgres_user: is_root(), running: true };
        let _ = postgres.pg_ctl(&["-m", "immediate", "-w", "-t", "30", "stop"]);
    }
    let pids = fs::read_to_string(dir.join("pids")).unwrap_or_default();
    for line in pids.lines() {
        let Some((pid, name)) = line.split_once(' ') else { continue };
        let command_line = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if !name.is_empty() && String::from_utf8_lossy(&command_line).contains(name) {
            let _ = Command::new("kill").args(["-KILL", pid]).stderr(Stdio::null()).status();
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while fs::remove_dir_all(dir).is_err() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
}
