//! docs/performance.md: the machine, the figures next to their limits and targets, each
//! service's own figures, then notes.md (how to read it).

use std::{
    fmt::Write as _,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use super::{CONNECTIONS, Figure, RESTARTS, SECONDS};

/// Everything the document reports, from every part of the run.
pub(super) struct Report {
    pub(super) figures: Vec<Figure>,
    /// In the order of [`crate::services::ALL`].
    pub(super) services: Vec<ServiceFigures>,
    /// When the run started.
    pub(super) started: Instant,
    /// When the release build was done (the rest of the run is the measuring).
    pub(super) build_done: Instant,
}

/// One service's own figures.
pub(super) struct ServiceFigures {
    pub(super) name: &'static str,
    /// Each restart's time from spawn to ready, sorted.
    pub(super) starts: Vec<Duration>,
    pub(super) idle_kib: u64,
    /// The peak under the loads (at least the idle figure).
    pub(super) peak_kib: u64,
    /// The stripped release binary.
    pub(super) binary_bytes: u64,
}

impl Report {
    /// The document, in Markdown.
    pub(super) fn render(&self) -> anyhow::Result<String> {
        let mut doc = String::new();
        self.write_header(&mut doc)?;
        self.write_figures(&mut doc)?;
        self.write_services(&mut doc)?;
        writeln!(doc, "{}", include_str!("notes.md"))?;
        Ok(doc)
    }

    fn write_header(&self, doc: &mut String) -> anyhow::Result<()> {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|line| line.starts_with("model name"))
                    .map(|line| line.split(':').nth(1).unwrap_or("").trim().to_owned())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let cores = thread::available_parallelism().map(usize::from).unwrap_or(0);
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|info| info.lines().next().and_then(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok()))
            .map_or("?".into(), |kib| format!("{:.0} GiB", kib as f64 / 1024.0 / 1024.0));
        let date = Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M UTC"])
            .output()
            .ok()
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
            .unwrap_or_default();
        let build = self.build_done.duration_since(self.started);
        writeln!(doc, "# Performance\n")?;
        writeln!(
            doc,
            "Written by `cargo xtask bench` on {date}: {cores} cores ({cpu}), {memory} RAM, the release build,"
        )?;
        writeln!(doc, "the load generators on the same machine (so every figure shares the 2 cores with its")?;
        writeln!(doc, "generator, and every ratio compares two runs that share them the same way). Postgres 15")?;
        writeln!(
            doc,
            "and Redis 7 local, tansu as the broker. Each load runs {SECONDS} s with {CONNECTIONS} connections"
        )?;
        writeln!(
            doc,
            "unless the row says otherwise. Run time: {:.0} s after a {:.0} s build.\n",
            self.started.elapsed().saturating_sub(build).as_secs_f64(),
            build.as_secs_f64()
        )?;
        Ok(())
    }

    fn write_figures(&self, doc: &mut String) -> anyhow::Result<()> {
        writeln!(doc, "| figure | measured | limit on this machine | ratio | target | met |")?;
        writeln!(doc, "|---|---|---|---|---|---|")?;
        for figure in &self.figures {
            writeln!(
                doc,
                "| {} | {} | {} | {} | {} | {} |",
                figure.name,
                figure.measured,
                figure.baseline,
                figure.ratio.map_or("-".into(), |ratio| format!("{ratio:.2}×")),
                figure.target,
                match figure.met {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "-",
                }
            )?;
        }
        Ok(())
    }

    fn write_services(&self, doc: &mut String) -> anyhow::Result<()> {
        writeln!(doc, "\n## Per service\n")?;
        writeln!(
            doc,
            "| service | start → ready | RSS idle | RSS peak under the loads | stripped binary | met (≤ 250 ms · ≤ 15 MiB · ≤ 64 MiB · ≤ 15 MB) |"
        )?;
        writeln!(doc, "|---|---|---|---|---|---|")?;
        for service in &self.services {
            let starts_ms: Vec<f64> = service.starts.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
            let ready_ms = starts_ms.get(starts_ms.len() / 2).copied().unwrap_or(f64::NAN);
            let ready_range = match (starts_ms.first(), starts_ms.last()) {
                (Some(low), Some(high)) if starts_ms.len() > 1 => format!(" ({low:.0}–{high:.0})"),
                _ => String::new(),
            };
            let mark = |met: bool| if met { "yes" } else { "**no**" };
            let met = [
                ready_ms <= 250.0,
                service.idle_kib <= 15 * 1024,
                service.peak_kib <= 64 * 1024,
                service.binary_bytes <= 15_000_000,
            ]
            .map(mark)
            .join(" · ");
            writeln!(
                doc,
                "| {} | {:.0} ms{} | {:.1} MiB | {:.1} MiB | {:.1} MB | {} |",
                service.name,
                ready_ms,
                ready_range,
                service.idle_kib as f64 / 1024.0,
                service.peak_kib as f64 / 1024.0,
                service.binary_bytes as f64 / 1e6,
                met
            )?;
        }
        writeln!(
            doc,
            "\nStart → ready is a restart's, the median of {RESTARTS} (their range in brackets): from spawning the"
        )?;
        writeln!(doc, "process to its first `200` from `/readyz` (migrations already applied, connections to")?;
        writeln!(doc, "Postgres, Redis and the broker made).\n")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tables_keep_the_documents_format() {
        let figure = |met| Figure {
            name: "cart read (req/s)".into(),
            measured: "9000".into(),
            baseline: "redis-benchmark 60000".into(),
            ratio: Some(0.15),
            target: "(reported)".into(),
            met,
        };
        let starts = [140, 120, 300].map(Duration::from_millis);
        let report = Report {
            figures: vec![figure(None), figure(Some(false))],
            services: vec![ServiceFigures {
                name: "cart",
                starts: {
                    let mut sorted = starts.to_vec();
                    sorted.sort_unstable();
                    sorted
                },
                idle_kib: 10 * 1024,
                peak_kib: 70 * 1024,
                binary_bytes: 12_300_000,
            }],
            started: Instant::now(),
            build_done: Instant::now(),
        };
        let doc = report.render().unwrap();
        assert!(doc.starts_with("# Performance\n\nWritten by `cargo xtask bench` on "), "{doc}");
        assert!(
            doc.contains("\n| cart read (req/s) | 9000 | redis-benchmark 60000 | 0.15× | (reported) | - |\n"),
            "{doc}"
        );
        assert!(doc.contains("| (reported) | **no** |\n"), "{doc}");
        assert!(
            doc.contains("\n| cart | 140 ms (120–300) | 10.0 MiB | 70.0 MiB | 12.3 MB | yes · yes · **no** · yes |\n"),
            "{doc}"
        );
        assert!(doc.contains("the median of 3 (their range in brackets)"), "{doc}");
        assert!(doc.ends_with(&format!("{}\n", include_str!("notes.md"))), "the notes come last");
    }
}
