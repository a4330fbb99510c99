//! The services' resident memory: idle, and the peak under the loads.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

/// Resident memory of a process, KiB (0 if it is gone).
pub(super) fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Samples every service's RSS every 100 ms and keeps the peak.
pub(super) struct RssSampler {
    stop: Arc<AtomicBool>,
    peaks: Arc<Mutex<Vec<(&'static str, u64)>>>,
    handle: thread::JoinHandle<()>,
}

impl RssSampler {
    /// Starts sampling the processes `pids` (each with its service's name).
    pub(super) fn start(pids: &[(&'static str, u32)]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peaks = Arc::new(Mutex::new(pids.iter().map(|(name, _)| (*name, 0)).collect::<Vec<_>>()));
        let (stop_flag, shared, pids) = (Arc::clone(&stop), Arc::clone(&peaks), pids.to_vec());
        let handle = thread::spawn(move || {
            while !stop_flag.load(Ordering::Relaxed) {
                if let Ok(mut peaks) = shared.lock() {
                    for ((_, pid), (_, peak)) in pids.iter().zip(peaks.iter_mut()) {
                        *peak = (*peak).max(rss_kib(*pid));
                    }
                }
                thread::sleep(Duration::from_millis(100));
            }
        });
        Self { stop, peaks, handle }
    }

    /// Stops sampling; returns each service's peak, KiB.
    pub(super) fn stop(self) -> Vec<(&'static str, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.handle.join();
        self.peaks.lock().map(|peaks| peaks.clone()).unwrap_or_default()
    }
}
