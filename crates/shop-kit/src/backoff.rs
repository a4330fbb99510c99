//! How long to wait before trying again: exponential, capped, jittered, the same everywhere
//! (the outbox relay, the consumer's retries, mail delivery, payment provider calls).

use std::time::Duration;

use rand::Rng as _;

/// `base × 2^(attempt-1)`, at most `cap`, then ±50 % jitter (so replicas that failed
/// together do not retry together). `attempt` counts from 1.
pub fn exponential(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let doubled = base.saturating_mul(2_u32.saturating_pow(attempt.saturating_sub(1).min(16)));
    doubled.min(cap).mul_f64(rand::thread_rng().gen_range(0.5..1.5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_the_base_with_jitter_and_is_capped() {
        let (base, cap) = (Duration::from_millis(200), Duration::from_secs(300));
        for (attempt, expected) in [(0, 200), (1, 200), (2, 400), (3, 800), (30, 300_000), (u32::MAX, 300_000)] {
            let pause = exponential(attempt, base, cap).as_millis();
            assert!(expected / 2 <= pause && pause <= expected * 3 / 2, "attempt {attempt}: {pause} ms");
        }
    }
}
