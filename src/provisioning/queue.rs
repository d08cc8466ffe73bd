//! The durable, rate-limit-aware work queue between the plan and BigCommerce: one interface
//! ([`WorkQueue`]) used by the reconciler and the [`Executor`](super::executor::Executor), two
//! implementations.
//!
//! - [`file::FileQueue`] (`queue = "file:PATH"`, one process): a JSON snapshot plus an
//!   append-only journal.
//! - [`redis::RedisQueue`] (`queue = "redis"`, several replicas): one Redis Stream per
//!   BigCommerce account read through a consumer group, so replicas share the work.
//!
//! What both guarantee:
//! - Batched: up to 10 customers of one account and one kind per call (docs/bigcommerce.md).
//! - Optimistic creates: a batch of up to 10 joiners is created without a lookup, the IdP subject
//!   set inline (`storegate_subject` attribute), so a joiner costs a tenth of a call. BigCommerce
//!   refuses the whole batch with 422 when an email is taken, naming it: only those are looked up
//!   (`email:in`), adopted (update, then subject) or dead-lettered as a `subject_conflict` when
//!   bound to another subject, and the rest created.
//! - Idempotent: updates, subject writes and deletes are idempotent by nature; a create that may
//!   have taken effect (an item recovered after a crash, reclaimed from another consumer, or
//!   retried after a 5xx, timeout or reset) first looks the emails up: a customer already bound
//!   to our subject is done, so nothing is duplicated.
//! - Never silently dropped: an item BigCommerce refuses (4xx), or one that failed
//!   [`Backoff::dead_letter_after`] times, goes to the dead letters with an audit event. The next
//!   reconcile pass plans whatever is still missing again, so a dead letter is a report, not a
//!   loss.

pub mod file;
pub mod redis;

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::reconcile::Action;

/// Customers per BigCommerce batch call.
pub const BATCH: usize = 10;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "stage", rename_all = "snake_case")]
pub enum Stage {
    /// The action itself.
    Main,
    /// Adopted (updated); its IdP subject remains to be recorded.
    Subject { customer_id: u64 },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Item {
    /// The file queue's sequence number (0 in Redis, where [`Item::entry`] identifies it).
    pub seq: u64,
    pub run: String,
    pub action: Action,
    pub stage: Stage,
    /// Failed attempts so far (transient failures: 5xx, timeouts).
    #[serde(default)]
    pub attempts: u32,
    /// May have taken effect already (recovered after a restart, reclaimed from a stopped
    /// consumer, or retried after a failure whose outcome is unknown). Stored only when set, so
    /// a create sent back to the queue uncertain (missing from a create answer) still looks
    /// first when the Redis queue re-adds it as a new entry.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub uncertain: bool,
    /// The Redis Stream entry id this item was read from. Not stored.
    #[serde(skip)]
    pub entry: Option<String>,
    /// When the file queue took it (unix seconds), for the console's "oldest item"; the Redis
    /// queue reads that from the entry id instead. Absent in items queued by older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_at: Option<i64>,
}

impl Item {
    pub fn new(run: &str, action: Action) -> Self {
        Item {
            seq: 0,
            run: run.to_owned(),
            action,
            stage: Stage::Main,
            attempts: 0,
            uncertain: false,
            entry: None,
            queued_at: None,
        }
    }
}

/// What goes in one BigCommerce call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchKey {
    Create,
    Put,
    Delete,
    Subject,
}

pub fn batch_key(i: &Item) -> BatchKey {
    match (&i.stage, &i.action) {
        (Stage::Subject { .. }, _) => BatchKey::Subject,
        (Stage::Main, Action::Create { .. }) => BatchKey::Create,
        (Stage::Main, Action::Update { .. } | Action::Restrict { .. }) => BatchKey::Put,
        (Stage::Main, Action::Delete { .. }) => BatchKey::Delete,
    }
}

/// The first item and up to [`BATCH`] - 1 later ones of the same kind that go in one call with
/// it (subject stages too: `PUT /v3/customers/attribute-values` takes 10 customers). Takes an
/// iterator so the file queue picks from its whole backlog without copying it.
pub fn pick_batch<'a>(items: impl IntoIterator<Item = &'a Item>) -> Vec<Item> {
    let mut items = items.into_iter();
    let Some(first) = items.next() else {
        return Vec::new();
    };
    let key = batch_key(first);
    std::iter::once(first)
        .chain(items.filter(|i| batch_key(i) == key))
        .take(BATCH)
        .cloned()
        .collect()
}

/// Counts for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Items waiting for a worker.
    pub waiting: u64,
    /// Items handed to a worker and not settled yet (Redis: pending in the consumer group).
    pub in_flight: u64,
    /// Items given up on (refused by BigCommerce, or failing too often).
    pub dead_letters: u64,
}

/// Why the queue could not be read or written. None loses work: what was queued stays queued,
/// so a caller backs off and retries (the executor) or reports it (doctor, the console).
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Redis cannot be reached (down, a timeout, a lost master): retry once it is back.
    #[error("provisioning queue: {0}")]
    Unavailable(String),
    /// Redis failed one command (`command` says which step).
    #[error("provisioning queue in Redis: {command} failed: {detail}")]
    Command {
        command: &'static str,
        detail: String,
    },
    /// The queue file holds something else (another file, damaged): move it away; the next
    /// reconcile pass plans again.
    #[error("{} is not a storegate queue: {detail}", path.display())]
    Corrupt { path: PathBuf, detail: String },
    /// The queue file or its journal cannot be read or written (permissions, a full disk).
    #[error("cannot {action} {}: {error}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    /// An item could not be written as JSON (a bug: items are plain data).
    #[error("cannot encode a provisioning queue item: {0}")]
    Encode(serde_json::Error),
}

/// A scheduled pass's right to plan (see [`WorkQueue::lease`]).
#[async_trait]
pub trait PassLease: Send {
    /// Gives the lease up so the next interval's pass (on any replica) can plan.
    async fn release(self: Box<Self>);
}

/// The queue interface the reconciler and the executor use; see the module docs.
#[async_trait]
pub trait WorkQueue: Send + Sync {
    /// Queues the plan of run `run`, one item per action.
    async fn enqueue(&self, run: &str, actions: Vec<Action>) -> Result<(), QueueError>;

    /// Items waiting or in flight (every consumer).
    async fn len(&self) -> Result<u64, QueueError>;

    async fn is_empty(&self) -> Result<bool, QueueError> {
        Ok(self.len().await? == 0)
    }

    /// Accounts with queued items.
    async fn accounts(&self) -> Result<Vec<String>, QueueError>;

    /// The next batch of `account` for this worker (see [`pick_batch`]); empty when there is
    /// nothing this worker can take now.
    async fn next_batch(&self, account: &str) -> Result<Vec<Item>, QueueError>;

    /// True when another consumer still holds items of `account`: a worker with an empty batch
    /// waits for them to settle (or to become reclaimable) instead of declaring the queue done.
    async fn held_elsewhere(&self, account: &str) -> Result<bool, QueueError>;

    /// The outcome of a batch: `done` items leave, `dead` items go to the dead letters with
    /// their reason, `changed` items replace their earlier version (next stage, or one more
    /// failed attempt).
    async fn settle(
        &self,
        done: &[Item],
        dead: &[(Item, String)],
        changed: Vec<Item>,
    ) -> Result<(), QueueError>;

    /// Pauses every worker of `account` (on every replica sharing the queue) for `wait`: the
    /// store answered 429 or its quota is spent.
    async fn pause(&self, account: &str, wait: Duration) -> Result<(), QueueError>;

    /// How long workers of `account` must still wait, if paused.
    async fn paused_for(&self, account: &str) -> Result<Option<Duration>, QueueError>;

    /// The right to plan a scheduled pass, or `None` when another replica holds it.
    async fn lease(&self) -> Result<Option<Box<dyn PassLease>>, QueueError>;

    async fn stats(&self) -> Result<QueueStats, QueueError>;

    /// The dead letters, oldest first, with their reasons.
    async fn dead_letters(&self) -> Result<Vec<(Item, String)>, QueueError>;

    /// When the oldest item still queued was queued (unix seconds), if known (the console).
    async fn oldest_queued_at(&self) -> Result<Option<i64>, QueueError> {
        Ok(None)
    }
}

/// How long to wait; tests shorten these.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
    /// Consecutive transient failures after which a worker stops (its items stay queued).
    pub give_up_after: u32,
    /// A 429 without `X-Rate-Limit-Time-Reset-Ms` (platform load).
    pub rate_limited_default: Duration,
    /// Failed attempts after which an item goes to the dead letters.
    pub dead_letter_after: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            first: Duration::from_millis(250),
            max: Duration::from_secs(30),
            give_up_after: 12,
            rate_limited_default: Duration::from_secs(1),
            dead_letter_after: 50,
        }
    }
}

impl Backoff {
    /// The wait after the `failures`-th consecutive failure.
    pub fn after(&self, failures: u32) -> Duration {
        self.first
            .saturating_mul(1 << failures.min(16))
            .min(self.max)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainReport {
    pub calls: u64,
    pub done: u64,
    /// Items sent to the dead letters.
    pub failed: u64,
    pub rate_limited: u64,
    pub retried: u64,
    /// Accounts whose worker stopped on repeated failures; their items are still queued.
    pub stalled: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provisioning::reconcile::Action;

    fn delete_item() -> Item {
        Item::new(
            "r1",
            Action::Delete {
                account: "store1".into(),
                id: 7,
                email: "a@corp.example".into(),
                before: crate::provisioning::reconcile::CustomerState {
                    first_name: "A".into(),
                    last_name: "B".into(),
                    channel_ids: Some(vec![1]),
                    customer_group_id: 0,
                },
            },
        )
    }

    #[test]
    fn uncertain_is_stored_only_when_set_and_survives_a_round_trip() {
        let mut item = delete_item();
        let plain = serde_json::to_string(&item).unwrap();
        assert!(!plain.contains("uncertain"), "{plain}");
        item.uncertain = true;
        let marked = serde_json::to_string(&item).unwrap();
        let back: Item = serde_json::from_str(&marked).unwrap();
        assert!(back.uncertain, "{marked}");
        let back: Item = serde_json::from_str(&plain).unwrap();
        assert!(!back.uncertain);
    }
}
