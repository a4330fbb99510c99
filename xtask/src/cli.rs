//! The command line: one subcommand per task, each with typed arguments, parsed by clap.
//! The doc comments below are the help text (`cargo xtask --help`, `cargo xtask <command>
//! --help`).

use clap::{Parser, Subcommand, ValueEnum};

/// The developer's one entry point: run, test, seed, deploy, load and measure Shop.
#[derive(Debug, Parser)]
#[command(name = "xtask", bin_name = "cargo xtask")]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Start Postgres/Redis/broker if needed and run every service; Ctrl-C stops it.
    ///
    /// Uses Postgres and Redis at their configured URLs (`SHOP_POSTGRES_URL`, `REDIS_URL`),
    /// starting the local servers if they are installed but stopped, a Kafka-protocol broker
    /// (`KAFKA_BROKERS`, or a local tansu), creates the databases, builds and starts every
    /// service, waits until each is ready and streams the logs with a service prefix.
    /// Configure it with environment variables; `--observe` also runs Prometheus.
    Up(crate::up::Args),
    /// fmt, clippy, cargo deny, deploy-check, the k6 smoke test, then every test against real Postgres,
    /// Redis and the broker.
    ///
    /// Stops at the first failure. Arguments after `--` go to nextest:
    /// `cargo xtask test -- -E 'test(login)'`.
    Test(crate::test::Args),
    /// Load the demo catalog into the product database (idempotent).
    Seed,
    /// Inspect or replay a topic's dead letters (from `<topic>.dlq`).
    ///
    /// The broker is `KAFKA_BROKERS` (default 127.0.0.1:9092).
    Dlq {
        #[command(subcommand)]
        action: crate::dlq::Action,
    },
    /// The manifests Argo CD applies to an environment, rendered offline.
    Render(crate::deploy::RenderArgs),
    /// helm lint + render, Kubernetes/CRD schemas, policies, checkov (offline).
    DeployCheck,
    /// cargo deny: RustSec advisories (offline snapshot), licenses, bans, sources (deny.toml).
    Deny,
    /// schemathesis against every service's OpenAPI document, as a customer and as an admin.
    ///
    /// Runs against `up`'s services with every check (xtask/contract/schemathesis.toml says
    /// which are off for which operation, and why); registers a customer of its own and logs in
    /// as the development admin. Fails on any failure; JUnit reports go to target/shop-dev/contract.
    Contract,
    /// Promote a release one step: dev → staging → prod.
    ///
    /// Gives <TO> the git revision (chart and values) and the images <FROM> runs
    /// (argocd/envs/<env>/release.yaml), committed on a new branch promote/<TO>-<revision> for a
    /// pull request. Refused unless <FROM>'s revision is on this branch and <TO>'s is its ancestor.
    Promote(crate::promote::Args),
    /// Put an environment back on the release before its current one, on a new branch.
    Rollback(crate::promote::RollbackArgs),
    /// Record the image an environment runs in its release.yaml (CI, for dev).
    SetImage(crate::promote::SetImageArgs),
    /// Pin an environment's release to a commit of this branch (CI, for dev).
    SetRevision(crate::promote::SetRevisionArgs),
    /// Run a k6 scenario against the running platform (`up`).
    ///
    /// The targets are `USER_URL` … `NOTIFICATION_URL` or `BASE_URL` (default: `up`'s ports);
    /// results go to load-tests/results/<scenario>.{json,txt}. Fails when a threshold fails.
    Load(crate::load::Args),
    /// Measure every figure next to this machine's limits; writes docs/performance.md.
    ///
    /// Runs the release build as a private instance of the platform (ports +20000, its own
    /// databases, Redis keys and broker, all removed afterwards) beside bare axum/tonic
    /// servers, oha, pgbench, redis-benchmark and k6.
    Bench(crate::bench::Args),
    /// Restart Postgres and Redis, pause the broker, kill each service during checkouts; then
    /// check every order, payment, refund, notification and the stock.
    ///
    /// Runs a private instance (ports +30000) on a Postgres, Redis and tansu broker of its own
    /// (ports 55432, 56379, 39092; nothing shared is touched). With checkouts running it
    /// restarts Postgres (pg_ctl restart -m fast), restarts Redis, pauses the broker for 20 s
    /// (SIGSTOP) and SIGKILLs each service once, starting it again. Once the platform is at
    /// rest (at most 2 minutes) it prints the counts and fails naming each violated invariant:
    /// every order confirmed or cancelled, each confirmed one charged exactly once and
    /// notified once per kind, each cancelled paid one refunded once, the stock balanced.
    /// Everything it started is removed afterwards, after Ctrl-C too.
    Chaos,
    /// Internal to `bench`: a bare server that only answers.
    #[command(hide = true)]
    BenchServer(crate::bench::ServerArgs),
    /// Internal to `bench`: a tonic client calling GetProduct; prints calls per second.
    #[command(hide = true)]
    BenchGrpc(crate::bench::GrpcArgs),
}

/// An environment of the deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Environment {
    Dev,
    Staging,
    Prod,
}

impl Environment {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Dev => "dev",
            Self::Staging => "staging",
            Self::Prod => "prod",
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, error::ErrorKind};

    use super::*;

    fn parse(line: &[&str]) -> Command {
        let arguments = std::iter::once("cargo xtask").chain(line.iter().copied());
        match Cli::try_parse_from(arguments) {
            Ok(Cli { command: Some(command) }) => command,
            Ok(Cli { command: None }) => panic!("{line:?}: no command"),
            Err(error) => panic!("{line:?}: {error}"),
        }
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn representative_command_lines_parse() {
        assert!(matches!(parse(&["up"]), Command::Up(crate::up::Args { observe: false })));
        assert!(matches!(parse(&["up", "--observe"]), Command::Up(crate::up::Args { observe: true })));
        let Command::Test(test) = parse(&["test", "--", "-E", "test(x)"]) else { panic!("test") };
        assert_eq!(test.nextest, ["-E", "test(x)"]);
        let Command::Test(test) = parse(&["test"]) else { panic!("test") };
        assert!(test.nextest.is_empty());
        assert!(matches!(parse(&["seed"]), Command::Seed));
        let Command::Dlq { action: crate::dlq::Action::List { topic } } = parse(&["dlq", "list", "shop.order.v1"])
        else {
            panic!("dlq list")
        };
        assert_eq!(topic, "shop.order.v1");
        assert!(matches!(
            parse(&["dlq", "redrive", "shop.order.v1.dlq"]),
            Command::Dlq { action: crate::dlq::Action::Redrive { .. } }
        ));
        let Command::Render(render) = parse(&["render", "--env", "dev", "--out", "/tmp/render"]) else {
            panic!("render")
        };
        assert_eq!((render.env, render.out.as_path()), (Environment::Dev, std::path::Path::new("/tmp/render")));
        assert!(matches!(parse(&["deploy-check"]), Command::DeployCheck));
        let Command::Promote(promote) = parse(&["promote", "dev", "staging", "--dry-run"]) else { panic!("promote") };
        assert_eq!((promote.from, promote.to), (Environment::Dev, Environment::Staging));
        assert!(promote.output.dry_run && !promote.output.no_commit);
        let Command::Rollback(rollback) = parse(&["rollback", "prod", "--no-commit"]) else { panic!("rollback") };
        assert_eq!(rollback.env, Environment::Prod);
        assert!(rollback.output.no_commit && !rollback.output.dry_run);
        let digest = format!("sha256:{}", "a".repeat(64));
        let Command::SetImage(set) = parse(&["set-image", "dev", "order", "sha-1234567", &digest]) else {
            panic!("set-image")
        };
        assert_eq!((set.env, set.service.as_str(), set.digest.as_deref()), (Environment::Dev, "order", Some(&*digest)));
        let Command::SetRevision(set) = parse(&["set-revision", "dev", "HEAD"]) else { panic!("set-revision") };
        assert_eq!((set.env, set.commit.as_str()), (Environment::Dev, "HEAD"));
        let Command::Load(load) = parse(&["load", "orders", "--users", "50", "--duration", "30s"]) else {
            panic!("load")
        };
        assert_eq!(load.scenario, crate::load::Scenario::Orders);
        assert_eq!((load.users, load.duration.as_deref(), load.vus, load.rate), (Some(50), Some("30s"), None, None));
        let Command::Load(load) = parse(&["load", "mixed", "--rate", "100", "--vus", "20"]) else { panic!("load") };
        assert_eq!((load.rate, load.vus), (Some(100), Some(20)));
        let Command::Bench(bench) = parse(&["bench", "--only", "reads,saga"]) else { panic!("bench") };
        assert_eq!(bench.only, [crate::bench::Section::Reads, crate::bench::Section::Saga]);
        let Command::Bench(bench) = parse(&["bench"]) else { panic!("bench") };
        assert!(bench.only.is_empty());
        assert!(matches!(parse(&["chaos"]), Command::Chaos));
        assert!(matches!(parse(&["bench-server", "axum", "29000"]), Command::BenchServer(_)));
        assert!(matches!(parse(&["bench-grpc", "http://127.0.0.1:29001", "id", "32", "8"]), Command::BenchGrpc(_)));
    }

    #[test]
    fn wrong_command_lines_are_refused() {
        let cases: [&[&str]; 13] = [
            &["up", "extra"],
            &["test", "-E", "test(x)"],
            &["seed", "extra"],
            &["dlq", "peek", "topic"],
            &["render", "--env", "qa", "--out", "/tmp/x"],
            &["render", "--env", "dev"],
            &["promote", "dev"],
            &["promote", "dev", "staging", "--dry-run", "--no-commit"],
            &["load", "nonsense"],
            &["load", "smoke", "--vus", "0"],
            &["load", "smoke", "--duration", "30"],
            &["bench", "--only", "reads,everything"],
            &["chaos", "--forever"],
        ];
        for line in cases {
            let arguments = std::iter::once("cargo xtask").chain(line.iter().copied());
            assert!(Cli::try_parse_from(arguments).is_err(), "{line:?} parsed");
        }
    }

    /// Every subcommand, nested ones included, by its full command line.
    fn every_subcommand() -> Vec<Vec<String>> {
        fn walk(command: &clap::Command, path: &[String], out: &mut Vec<Vec<String>>) {
            for sub in command.get_subcommands() {
                let mut line = path.to_vec();
                line.push(sub.get_name().to_owned());
                out.push(line.clone());
                walk(sub, &line, out);
            }
        }
        let mut out = Vec::new();
        walk(&Cli::command(), &[], &mut out);
        out
    }

    #[test]
    fn help_renders_for_every_subcommand() {
        let lines = every_subcommand();
        assert!(lines.len() >= 15, "{lines:?}");
        for line in lines {
            let mut arguments: Vec<&str> = vec!["cargo xtask"];
            arguments.extend(line.iter().map(String::as_str));
            arguments.push("--help");
            let error = Cli::try_parse_from(&arguments).expect_err("--help stops the parse");
            assert_eq!(error.kind(), ErrorKind::DisplayHelp, "{line:?}");
            assert!(error.to_string().contains("Usage: cargo xtask"), "{line:?}: {error}");
        }
    }

    #[test]
    fn help_lists_every_command_flag_and_scenario() {
        let help = Cli::command().render_long_help().to_string();
        for command in [
            "up",
            "test",
            "seed",
            "dlq",
            "render",
            "deploy-check",
            "deny",
            "promote",
            "rollback",
            "set-image",
            "set-revision",
            "load",
            "bench",
            "chaos",
        ] {
            assert!(help.contains(&format!("  {command} ")), "{command} missing from\n{help}");
        }
        assert!(!help.contains("bench-server") && !help.contains("bench-grpc"), "internal commands shown\n{help}");
        let expected: [(&str, &[&str]); 5] = [
            ("load", &["--vus", "--duration", "--rate", "--users"]),
            ("bench", &["--only", "reads", "cart", "saga", "backlog", "checkout"]),
            ("render", &["--env", "--out", "dev", "staging", "prod"]),
            ("promote", &["--dry-run", "--no-commit", "release.yaml"]),
            ("test", &["NEXTEST_ARGS"]),
        ];
        for (command, words) in expected {
            let mut cli = Cli::command();
            let help = cli.find_subcommand_mut(command).map(|sub| sub.render_long_help().to_string()).unwrap();
            for word in words {
                assert!(help.contains(word), "{word} missing from `{command} --help`\n{help}");
            }
        }
    }

    #[test]
    fn load_offers_exactly_the_scenarios_in_load_tests() {
        let mut files: Vec<String> = std::fs::read_dir(crate::root().join("load-tests/scenarios"))
            .unwrap()
            .filter_map(|entry| entry.unwrap().file_name().to_str()?.strip_suffix(".js").map(str::to_owned))
            .collect();
        files.sort();
        let mut offered: Vec<String> =
            crate::load::Scenario::value_variants().iter().map(|scenario| scenario.file_stem().to_owned()).collect();
        offered.sort();
        assert_eq!(offered, files);
        let mut cli = Cli::command();
        let help = cli.find_subcommand_mut("load").map(|sub| sub.render_long_help().to_string()).unwrap();
        for scenario in &files {
            assert!(help.contains(scenario.as_str()), "{scenario} missing from `load --help`\n{help}");
        }
    }
}
