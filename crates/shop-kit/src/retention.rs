//! Retention: rows a service keeps only for a while, deleted in the background.
//!
//! Every service that keeps events prunes its published `outbox` rows and its `inbox` rows
//! ([`Retention::new`] adds both); a service adds rules for its own tables (order its
//! idempotency keys, product its finished reservations). Each rule deletes at most
//! `RETENTION_BATCH` rows per statement, one statement after another until fewer than a
//! batch are left, so no statement holds locks on many rows or writes much WAL at once. A
//! pass runs every `RETENTION_INTERVAL`; what it deleted is counted in
//! `retention_deleted_rows_total{table}`.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `RETENTION_INTERVAL` | `10m` | how often a pass runs |
//! | `RETENTION_BATCH` | `1000` | rows per delete statement |
//! | `RETENTION_OUTBOX` | `1d` | how long a published outbox row is kept (unpublished ones always are) |
//! | `RETENTION_INBOX` | `7d` | how long a consumer remembers an event id |
//!
//! The inbox is what makes a redelivered event a duplicate: keep it at least as long as the
//! topics keep their events (the charts' `retention.ms` is 7 days), or an event replayed from
//! older offsets would be applied again.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, HumanDuration, Vars};

/// How the retention job runs and what the kit's own tables keep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionConfig {
    pub interval: Duration,
    pub batch: i64,
    pub outbox: Duration,
    pub inbox: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(600),
            batch: 1000,
            outbox: Duration::from_secs(86_400),
            inbox: Duration::from_secs(7 * 86_400),
        }
    }
}

impl RetentionConfig {
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let positive = |name: &str, default: Duration| -> Result<Duration, ConfigError> {
            let value = vars.or(name, HumanDuration(default))?.0;
            if value.is_zero() { Err(vars.invalid(name, "must be greater than zero")) } else { Ok(value) }
        };
        let batch: i64 = vars.or("RETENTION_BATCH", defaults.batch)?;
        if !(1..=100_000).contains(&batch) {
            return Err(vars.invalid("RETENTION_BATCH", "must be between 1 and 100000"));
        }
        Ok(Self {
            interval: positive("RETENTION_INTERVAL", defaults.interval)?,
            batch,
            outbox: positive("RETENTION_OUTBOX", defaults.outbox)?,
            inbox: positive("RETENTION_INBOX", defaults.inbox)?,
        })
    }
}

/// One table's rule: a `DELETE` of at most `$2` rows older than `$1` seconds.
#[derive(Clone, Debug)]
pub struct Rule {
    table: &'static str,
    delete: String,
    age: Duration,
}

impl Rule {
    /// `delete` takes the age in seconds as `$1` (a `double precision`) and the batch size
    /// as `$2`, and deletes at most `$2` rows, e.g.
    /// `DELETE FROM t WHERE id IN (SELECT id FROM t WHERE created_at < now() - $1 * interval '1 second' LIMIT $2)`.
    pub fn new(table: &'static str, delete: impl Into<String>, age: Duration) -> Self {
        Self { table, delete: delete.into(), age }
    }
}

/// The retention job of one service database.
#[derive(Clone, Debug)]
pub struct Retention {
    pool: PgPool,
    config: RetentionConfig,
    rules: Vec<Rule>,
}

impl Retention {
    /// The job with the kit's rules: published outbox rows and inbox rows.
    pub fn new(pool: PgPool, config: &RetentionConfig) -> Self {
        let rules = vec![
            Rule::new(
                "outbox",
                "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE published_at IS NOT NULL \
                 AND published_at < now() - $1 * interval '1 second' ORDER BY seq LIMIT $2)",
                config.outbox,
            ),
            Rule::new(
                "inbox",
                "DELETE FROM inbox WHERE (consumer, ce_id) IN (SELECT consumer, ce_id FROM inbox \
                 WHERE processed_at < now() - $1 * interval '1 second' LIMIT $2)",
                config.inbox,
            ),
        ];
        Self { pool, config: config.clone(), rules }
    }

    /// Adds a rule for one of the service's own tables.
    #[must_use]
    pub fn rule(mut self, rule: Rule) -> Self {
        self.rules.push(rule);
        self
    }

    /// One pass over every rule: the rows each deleted, by table. A rule that fails is
    /// logged and skipped until the next pass.
    pub async fn prune(&self) -> Vec<(&'static str, u64)> {
        let mut deleted = Vec::with_capacity(self.rules.len());
        for rule in &self.rules {
            let mut total = 0;
            loop {
                let outcome = sqlx::query(&rule.delete)
                    .bind(rule.age.as_secs_f64())
                    .bind(self.config.batch)
                    .execute(&self.pool)
                    .await;
                match outcome {
                    Ok(done) => {
                        total += done.rows_affected();
                        metrics::counter!("retention_deleted_rows_total", "table" => rule.table)
                            .increment(done.rows_affected());
                        if done.rows_affected() < self.config.batch.unsigned_abs() {
                            break;
                        }
                    }
                    Err(error) => {
                        tracing::warn!(table = rule.table, %error, "retention: cannot delete old rows; next pass retries");
                        break;
                    }
                }
            }
            if total > 0 {
                tracing::info!(table = rule.table, deleted = total, "retention: deleted old rows");
            }
            deleted.push((rule.table, total));
        }
        deleted
    }

    /// A pass now, then one every `RETENTION_INTERVAL`, until `shutdown` (which abandons a
    /// pass in flight: each batch is its own statement, so nothing is left half-done).
    pub async fn run(self, shutdown: CancellationToken) {
        let mut every = tokio::time::interval(self.config.interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = self.prune() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_name_their_variable() {
        assert_eq!(RetentionConfig::from_vars(&Vars::default()).unwrap(), RetentionConfig::default());
        let set =
            RetentionConfig::from_vars(&Vars::from_pairs([("RETENTION_INBOX", "14d"), ("RETENTION_BATCH", "50")]))
                .unwrap();
        assert_eq!((set.inbox, set.batch), (Duration::from_secs(14 * 86_400), 50));
        for (name, value) in [
            ("RETENTION_INTERVAL", "0s"),
            ("RETENTION_BATCH", "0"),
            ("RETENTION_BATCH", "many"),
            ("RETENTION_OUTBOX", "1 week"),
            ("RETENTION_INBOX", "0d"),
        ] {
            let error = RetentionConfig::from_vars(&Vars::from_pairs([(name, value)])).unwrap_err();
            assert!(error.to_string().contains(name), "{name}={value}: {error}");
        }
    }
}
