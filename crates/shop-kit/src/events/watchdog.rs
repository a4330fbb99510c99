//! The consumer's watchdog.
//!
//! It rejoins the group under a new member id when the group is stuck: for two checks in a
//! row (10 s apart), this member received nothing while events waited on its topics and no
//! member's committed offset moved. A broker can leave a group in a state where some
//! partition is fetched by nobody: formed with an empty assignment (tansu 0.6 does when a
//! follower's SyncGroup races the eviction of a leader that was SIGKILLed), or with a
//! partition assigned to a member that is gone; nothing else would ever unstick it. The
//! checks run only while this member waits for events, so a member busy with one (a long
//! retry, a database outage) never rejoins on account of itself; a rejoin while another
//! member is slow costs a rebalance, and the inbox absorbs any redelivery.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use rdkafka::{
    TopicPartitionList,
    consumer::{Consumer as _, StreamConsumer},
};

use super::{ApplyOnce, ConsumerRunner};

/// How often the runner checks that its group is not stuck.
pub(super) const WATCHDOG_INTERVAL: Duration = Duration::from_secs(10);

/// What the watchdog compares between two checks: whether this member received an event
/// since the check before, whether events wait beyond the group's committed offsets, and
/// those offsets.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct GroupProgress {
    received: bool,
    waiting: bool,
    committed: Vec<(String, i32, i64)>,
}

impl GroupProgress {
    /// Blocking broker calls: run off the async threads. `None` if the broker did not answer.
    fn read(consumer: &StreamConsumer, topics: &[String], received: bool) -> Option<Self> {
        let timeout = Duration::from_secs(5);
        let mut partitions = TopicPartitionList::new();
        for topic in topics {
            let metadata = consumer.fetch_metadata(Some(topic), timeout).ok()?;
            for partition in metadata.topics().iter().flat_map(|topic| topic.partitions()) {
                partitions.add_partition(topic, partition.id());
            }
        }
        let committed = consumer.committed_offsets(partitions, timeout).ok()?;
        let mut waiting = false;
        let mut offsets = Vec::new();
        for element in committed.elements() {
            let (low, high) = consumer.fetch_watermarks(element.topic(), element.partition(), timeout).ok()?;
            let next = element.offset().to_raw().filter(|offset| *offset >= 0).unwrap_or(low);
            waiting |= high > next;
            offsets.push((element.topic().to_owned(), element.partition(), next));
        }
        offsets.sort();
        Some(Self { received, waiting, committed: offsets })
    }

    /// Stuck: at this check and the one `before`, nothing received here, events waiting, and
    /// not one committed offset moved.
    fn stuck_since(&self, before: Option<&Self>) -> bool {
        let idle = |progress: &Self| !progress.received && progress.waiting;
        idle(self) && before.is_some_and(|before| idle(before) && before.committed == self.committed)
    }
}

impl<A: ApplyOnce> ConsumerRunner<A> {
    /// One watchdog check; returns the progress to compare with at the next one.
    pub(super) async fn watch(&mut self, before: Option<GroupProgress>, received: bool) -> Option<GroupProgress> {
        let consumer = Arc::clone(&self.consumer);
        let topics = self.topics.clone();
        let now =
            tokio::task::spawn_blocking(move || GroupProgress::read(&consumer, &topics, received)).await.ok().flatten();
        tracing::debug!(consumer = %self.name, progress = ?now, "watchdog check");
        let now = now?;
        if !now.stuck_since(before.as_ref()) {
            return Some(now);
        }
        tracing::warn!(consumer = %self.name, committed = ?now.committed,
            "the group is stuck (nothing received here, events waiting, no progress); rejoining");
        match self.config.consumer(&self.name).and_then(|fresh| {
            let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
            fresh.subscribe(&topics).context("cannot subscribe")?;
            Ok(fresh)
        }) {
            Ok(fresh) => {
                let old = std::mem::replace(&mut self.consumer, Arc::new(fresh));
                // Closing leaves the group; librdkafka may block while it does.
                let _ = tokio::task::spawn_blocking(move || drop(old)).await;
                metrics::counter!("kafka_consumer_rejoins_total", "consumer" => self.name.clone()).increment(1);
                None
            }
            Err(error) => {
                tracing::warn!(consumer = %self.name, error = format!("{error:#}"), "cannot rejoin the group; will retry");
                Some(now)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_is_stuck_only_when_idle_waiting_and_frozen_twice() {
        let progress = |received: bool, waiting: bool, offset: i64| GroupProgress {
            received,
            waiting,
            committed: vec![("shop.order.v1".into(), 0, offset), ("shop.order.v1".into(), 1, 7)],
        };
        let stuck = progress(false, true, 3);
        assert!(stuck.stuck_since(Some(&progress(false, true, 3))), "idle, waiting, frozen: stuck");
        assert!(!stuck.stuck_since(None), "one check is not enough");
        assert!(!stuck.stuck_since(Some(&progress(false, true, 2))), "some member made progress");
        assert!(!stuck.stuck_since(Some(&progress(true, true, 3))), "this member received events before");
        assert!(!progress(true, true, 3).stuck_since(Some(&stuck)), "this member receives events now");
        assert!(!progress(false, false, 3).stuck_since(Some(&progress(false, false, 3))), "nothing waits");
    }
}
