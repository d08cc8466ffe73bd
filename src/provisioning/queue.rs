//! The durable, rate-limit-aware work queue between the plan and BigCommerce.
//!
//! - Durable: pending items live in a JSON snapshot (written atomically: temporary file + rename)
//!   plus an append-only journal (`PATH.log`) with one line per completed batch; a restart loads
//!   the snapshot, replays the journal and resumes. The journal is folded into the snapshot every
//!   [`COMPACT_EVERY`] lines. Replaying is idempotent, and so is redoing an item whose completion
//!   did not reach the disk (see below), so the journal is not fsynced on every line.
//! - Batched: up to 10 customers of one account and one kind per call (BIGCOMMERCE.md).
//! - Rate-limit aware: each account's worker reads `X-Rate-Limit-Requests-Left` and
//!   `X-Rate-Limit-Time-Reset-Ms` and waits for the window to reset before the quota runs out; a 429
//!   waits for the advertised reset (or backs off when absent); 5xx and transport failures back
//!   off exponentially and retry.
//! - Idempotent: updates and deletes are idempotent by nature; a create that may have taken
//!   effect (an item recovered from disk after a crash, or retried after a 5xx/timeout) first
//!   looks the emails up and creates only the missing customers, so nothing is duplicated.
//!
//! Not done: the Redis Stream + consumer group mode for several replicas.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::bc::{BatchClient, CallError, RateInfo};
use super::reconcile::Action;
use crate::audit::{AuditEvent, AuditLog, EventKind, Outcome};
use crate::bigcommerce::api::Customer;
use crate::clock::SharedClock;

/// Customers per BigCommerce batch call.
pub const BATCH: usize = 10;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "stage", rename_all = "snake_case")]
pub enum Stage {
    /// The action itself.
    Main,
    /// Created; the IdP subject metafield remains to be recorded.
    Subject { customer_id: u64 },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Item {
    pub seq: u64,
    pub run: String,
    pub action: Action,
    pub stage: Stage,
    #[serde(default)]
    pub attempts: u32,
    /// May have taken effect already (recovered after a restart, or retried after a failure whose
    /// outcome is unknown). Not stored: every item read back from disk is uncertain.
    #[serde(skip)]
    pub uncertain: bool,
}

/// Journal lines after which the snapshot is rewritten.
pub const COMPACT_EVERY: usize = 200;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Journal {
    done: Vec<u64>,
    changed: Vec<Item>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct QueueFile {
    #[serde(skip)]
    journal_lines: usize,
    next_seq: u64,
    items: Vec<Item>,
}

pub struct Queue {
    path: PathBuf,
    state: Mutex<QueueFile>,
}

impl Queue {
    /// Opens (or starts) the queue file; every item found is treated as uncertain.
    pub fn open(path: impl Into<PathBuf>) -> anyhow::Result<Self> {
        let path = path.into();
        let mut file: QueueFile = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| anyhow::anyhow!("{} is not a storegate queue: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => QueueFile::default(),
            Err(e) => return Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
        };
        match std::fs::read_to_string(Self::log_path(&path)) {
            Ok(log) => {
                for line in log.lines() {
                    // A torn last line (crash while appending) is ignored: its batch is redone.
                    let Ok(j) = serde_json::from_str::<Journal>(line) else {
                        continue;
                    };
                    Self::apply(&mut file, &j);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(anyhow::anyhow!("cannot read the queue journal: {e}")),
        }
        for it in &mut file.items {
            it.uncertain = true;
        }
        Ok(Queue {
            path,
            state: Mutex::new(file),
        })
    }

    fn log_path(path: &std::path::Path) -> PathBuf {
        let mut p = path.as_os_str().to_owned();
        p.push(".log");
        PathBuf::from(p)
    }

    fn apply(file: &mut QueueFile, j: &Journal) {
        file.items.retain(|i| !j.done.contains(&i.seq));
        for c in &j.changed {
            if let Some(slot) = file.items.iter_mut().find(|i| i.seq == c.seq) {
                *slot = c.clone();
            }
        }
    }

    /// Rewrites the snapshot, then drops the journal it now contains.
    async fn persist(&self, file: &mut QueueFile) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec(&*file)?;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            super::scim::store::write_atomic(&path, &bytes)?;
            match std::fs::remove_file(Self::log_path(&path)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        })
        .await??;
        file.journal_lines = 0;
        Ok(())
    }

    pub async fn enqueue(&self, run: &str, actions: Vec<Action>) -> anyhow::Result<()> {
        let mut f = self.state.lock().await;
        for action in actions {
            let seq = f.next_seq;
            f.next_seq += 1;
            f.items.push(Item {
                seq,
                run: run.to_owned(),
                action,
                stage: Stage::Main,
                attempts: 0,
                uncertain: false,
            });
        }
        self.persist(&mut f).await
    }

    pub async fn len(&self) -> usize {
        self.state.lock().await.items.len()
    }

    pub async fn is_empty(&self) -> bool {
        self.len().await == 0
    }

    /// Up to [`BATCH`] items of `account` that go in one call with the first pending one.
    async fn next_batch(&self, account: &str) -> Vec<Item> {
        let f = self.state.lock().await;
        let mut mine = f.items.iter().filter(|i| i.action.account() == account);
        let Some(first) = mine.next() else {
            return Vec::new();
        };
        let key = batch_key(first);
        if key == BatchKey::Subject {
            return vec![first.clone()];
        }
        std::iter::once(first)
            .chain(mine.filter(|i| batch_key(i) == key))
            .take(BATCH)
            .cloned()
            .collect()
    }

    /// Applies the outcome of a batch: `done` items leave, `changed` items are replaced.
    async fn settle(&self, done: &[u64], changed: Vec<Item>) -> anyhow::Result<()> {
        let mut f = self.state.lock().await;
        let j = Journal {
            done: done.to_vec(),
            changed,
        };
        Self::apply(&mut f, &j);
        if f.journal_lines + 1 >= COMPACT_EVERY {
            return self.persist(&mut f).await;
        }
        let mut line = serde_json::to_vec(&j)?;
        line.push(b'\n');
        let log = Self::log_path(&self.path);
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            let mut out = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)?;
            out.write_all(&line)
        })
        .await??;
        f.journal_lines += 1;
        Ok(())
    }

    async fn accounts(&self) -> Vec<String> {
        let f = self.state.lock().await;
        let mut a: Vec<String> = f
            .items
            .iter()
            .map(|i| i.action.account().to_owned())
            .collect();
        a.sort();
        a.dedup();
        a
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BatchKey {
    Create,
    Put,
    Delete,
    Subject,
}

fn batch_key(i: &Item) -> BatchKey {
    match (&i.stage, &i.action) {
        (Stage::Subject { .. }, _) => BatchKey::Subject,
        (Stage::Main, Action::Create { .. }) => BatchKey::Create,
        (Stage::Main, Action::Update { .. } | Action::Restrict { .. }) => BatchKey::Put,
        (Stage::Main, Action::Delete { .. }) => BatchKey::Delete,
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
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            first: Duration::from_millis(250),
            max: Duration::from_secs(30),
            give_up_after: 12,
            rate_limited_default: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainReport {
    pub calls: u64,
    pub done: u64,
    pub failed: u64,
    pub rate_limited: u64,
    pub retried: u64,
    /// Accounts whose worker stopped on repeated failures; their items are still queued.
    pub stalled: Vec<String>,
}

pub struct Executor {
    pub queue: Arc<Queue>,
    pub clients: HashMap<String, Arc<BatchClient>>,
    pub audit: AuditLog,
    pub clock: SharedClock,
    pub backoff: Backoff,
}

fn random_password() -> String {
    use rand::RngCore;
    let mut b = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut b);
    use base64::Engine;
    // Letters, digits and symbols: satisfies BigCommerce's password rules.
    format!(
        "{}!9a",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    )
}

fn create_body(a: &Action) -> Option<Value> {
    let Action::Create {
        customer: c,
        group_id,
    } = a
    else {
        return None;
    };
    let mut v = json!({
        "email": c.email,
        "first_name": c.first_name,
        "last_name": c.last_name,
        "channel_ids": c.channel_ids,
        "origin_channel_id": c.channel_ids.first(),
    });
    if let Some(g) = group_id {
        v["customer_group_id"] = json!(g);
    }
    Some(v)
}

fn put_body(a: &Action) -> Option<Value> {
    match a {
        Action::Update { id, after, .. } => Some(json!({
            "id": id,
            "first_name": after.first_name,
            "last_name": after.last_name,
            "channel_ids": after.channel_ids,
            "customer_group_id": after.customer_group_id,
        })),
        // The password is made here and never stored or logged.
        Action::Restrict { id, after, .. } => Some(json!({
            "id": id,
            "channel_ids": after.channel_ids,
            "customer_group_id": after.customer_group_id,
            "authentication": { "new_password": random_password() },
        })),
        _ => None,
    }
}

enum Step {
    /// Items finished, items changed (e.g. moved to the subject stage).
    Settled {
        done: Vec<(Item, Option<u64>)>,
        failed: Vec<(Item, String)>,
        changed: Vec<Item>,
    },
    Retry(CallError),
}

impl Executor {
    /// Works every queued item off, one worker per account, until the queue is empty or a worker
    /// gives up (`stalled`). `max_calls` stops each worker early (tests: a crash mid-run).
    pub async fn drain(self: &Arc<Self>, max_calls: Option<u64>) -> DrainReport {
        let mut tasks = Vec::new();
        for account in self.queue.accounts().await {
            let me = self.clone();
            tasks.push(tokio::spawn(
                async move { me.work(&account, max_calls).await },
            ));
        }
        let mut total = DrainReport::default();
        for t in tasks {
            if let Ok(r) = t.await {
                total.calls += r.calls;
                total.done += r.done;
                total.failed += r.failed;
                total.rate_limited += r.rate_limited;
                total.retried += r.retried;
                total.stalled.extend(r.stalled);
            }
        }
        total
    }

    async fn pace(&self, rate: RateInfo) {
        // Wait for the window to reset rather than spend a call on a certain 429.
        if rate.left == Some(0) {
            let wait = rate
                .reset_ms
                .map(Duration::from_millis)
                .unwrap_or(self.backoff.rate_limited_default);
            tokio::time::sleep(wait).await;
        }
    }

    async fn work(&self, account: &str, max_calls: Option<u64>) -> DrainReport {
        let mut report = DrainReport::default();
        let Some(client) = self.clients.get(account).cloned() else {
            report.stalled.push(account.to_owned());
            return report;
        };
        let mut failures = 0u32;
        loop {
            if max_calls.is_some_and(|m| report.calls >= m) {
                return report;
            }
            let batch = self.queue.next_batch(account).await;
            if batch.is_empty() {
                return report;
            }
            match self.run_batch(&client, batch.clone(), &mut report).await {
                Step::Settled {
                    done,
                    failed,
                    changed,
                } => {
                    failures = 0;
                    let mut gone: Vec<u64> = done.iter().map(|(i, _)| i.seq).collect();
                    gone.extend(failed.iter().map(|(i, _)| i.seq));
                    if let Err(e) = self.queue.settle(&gone, changed).await {
                        tracing::error!(error = %e, "cannot write the provisioning queue");
                        report.stalled.push(account.to_owned());
                        return report;
                    }
                    for (item, customer_id) in done {
                        report.done += 1;
                        self.audit_item(&item, Outcome::Allow, customer_id, None);
                    }
                    for (item, why) in failed {
                        report.failed += 1;
                        self.audit_item(&item, Outcome::Error, None, Some(why));
                    }
                }
                Step::Retry(CallError::RateLimited { reset_ms }) => {
                    report.rate_limited += 1;
                    let wait = reset_ms
                        .map(Duration::from_millis)
                        .unwrap_or(self.backoff.rate_limited_default);
                    tokio::time::sleep(wait.max(Duration::from_millis(10))).await;
                }
                Step::Retry(e) => {
                    failures += 1;
                    report.retried += 1;
                    tracing::warn!(account, error = %e, failures, "BigCommerce call failed; backing off");
                    if failures >= self.backoff.give_up_after {
                        report.stalled.push(account.to_owned());
                        return report;
                    }
                    // The outcome is unknown: the batch's creates must look before they create.
                    let changed: Vec<Item> = batch
                        .into_iter()
                        .map(|mut i| {
                            i.attempts += 1;
                            i.uncertain = true;
                            i
                        })
                        .collect();
                    let _ = self.queue.settle(&[], changed).await;
                    let wait = self
                        .backoff
                        .first
                        .saturating_mul(1 << failures.min(16))
                        .min(self.backoff.max);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn call<T>(
        &self,
        report: &mut DrainReport,
        f: impl std::future::Future<Output = (Result<T, CallError>, RateInfo)>,
    ) -> Result<T, CallError> {
        report.calls += 1;
        let (r, rate) = f.await;
        self.pace(rate).await;
        r
    }

    async fn run_batch(
        &self,
        client: &BatchClient,
        batch: Vec<Item>,
        report: &mut DrainReport,
    ) -> Step {
        let Some(first) = batch.first() else {
            return Step::Settled {
                done: vec![],
                failed: vec![],
                changed: vec![],
            };
        };
        match batch_key(first) {
            BatchKey::Subject => {
                let Stage::Subject { customer_id } = first.stage else {
                    return Step::Settled {
                        done: vec![],
                        failed: vec![],
                        changed: vec![],
                    };
                };
                let Action::Create { customer, .. } = &first.action else {
                    return Step::Settled {
                        done: vec![],
                        failed: vec![],
                        changed: vec![],
                    };
                };
                match self
                    .call(report, client.set_subject(customer_id, &customer.subject))
                    .await
                {
                    Ok(()) => Step::Settled {
                        done: vec![(first.clone(), Some(customer_id))],
                        failed: vec![],
                        changed: vec![],
                    },
                    Err(CallError::Refused { status, message }) => Step::Settled {
                        done: vec![],
                        failed: vec![(first.clone(), format!("{status}: {message}"))],
                        changed: vec![],
                    },
                    Err(e) => Step::Retry(e),
                }
            }
            BatchKey::Delete => {
                let ids: Vec<u64> = batch
                    .iter()
                    .filter_map(|i| match &i.action {
                        Action::Delete { id, .. } => Some(*id),
                        _ => None,
                    })
                    .collect();
                match self.call(report, client.delete(&ids)).await {
                    Ok(()) => Step::Settled {
                        done: batch.into_iter().map(|i| (i, None)).collect(),
                        failed: vec![],
                        changed: vec![],
                    },
                    Err(CallError::Refused { status, message }) => Step::Settled {
                        done: vec![],
                        failed: batch
                            .into_iter()
                            .map(|i| (i, format!("{status}: {message}")))
                            .collect(),
                        changed: vec![],
                    },
                    Err(e) => Step::Retry(e),
                }
            }
            BatchKey::Put => {
                let bodies: Vec<Value> = batch.iter().filter_map(|i| put_body(&i.action)).collect();
                match self.call(report, client.update(&bodies)).await {
                    Ok(_) => Step::Settled {
                        done: batch.into_iter().map(|i| (i, None)).collect(),
                        failed: vec![],
                        changed: vec![],
                    },
                    Err(CallError::Refused { .. }) if batch.len() > 1 => {
                        self.one_by_one(client, batch, report).await
                    }
                    Err(CallError::Refused { status, message }) => Step::Settled {
                        done: vec![],
                        failed: batch
                            .into_iter()
                            .map(|i| (i, format!("{status}: {message}")))
                            .collect(),
                        changed: vec![],
                    },
                    Err(e) => Step::Retry(e),
                }
            }
            BatchKey::Create => self.create(client, batch, report).await,
        }
    }

    /// A refused batch: each item alone, so one bad customer does not hold up nine good ones.
    async fn one_by_one(
        &self,
        client: &BatchClient,
        batch: Vec<Item>,
        report: &mut DrainReport,
    ) -> Step {
        let (mut done, mut failed, mut changed) = (vec![], vec![], vec![]);
        for item in batch {
            match Box::pin(self.run_batch(client, vec![item.clone()], report)).await {
                Step::Settled {
                    done: d,
                    failed: f,
                    changed: c,
                } => {
                    done.extend(d);
                    failed.extend(f);
                    changed.extend(c);
                }
                // Leave the rest queued; it is retried as a whole next time.
                Step::Retry(e) if done.is_empty() && failed.is_empty() && changed.is_empty() => {
                    return Step::Retry(e);
                }
                Step::Retry(_) => break,
            }
        }
        Step::Settled {
            done,
            failed,
            changed,
        }
    }

    async fn create(
        &self,
        client: &BatchClient,
        batch: Vec<Item>,
        report: &mut DrainReport,
    ) -> Step {
        let email_of = |i: &Item| i.action.email().to_lowercase();
        let mut existing: HashMap<String, Customer> = HashMap::new();
        if batch.iter().any(|i| i.uncertain || i.attempts > 0) {
            let emails: Vec<String> = batch.iter().map(email_of).collect();
            match self.call(report, client.find_by_emails(&emails)).await {
                Ok(found) => {
                    existing = found
                        .into_iter()
                        .map(|c| (c.email.to_lowercase(), c))
                        .collect();
                }
                Err(e) => return Step::Retry(e),
            }
        }
        let to_subject = |mut i: Item, id: u64| {
            i.stage = Stage::Subject { customer_id: id };
            i.attempts = 0;
            i.uncertain = false;
            i
        };
        let mut changed = Vec::new();
        let mut missing = Vec::new();
        for i in batch {
            match existing.get(&email_of(&i)) {
                // Created by an earlier attempt whose answer was lost: do not create it twice.
                Some(c) => changed.push(to_subject(i, c.id)),
                None => missing.push(i),
            }
        }
        if missing.is_empty() {
            return Step::Settled {
                done: vec![],
                failed: vec![],
                changed,
            };
        }
        let bodies: Vec<Value> = missing
            .iter()
            .filter_map(|i| create_body(&i.action))
            .collect();
        match self.call(report, client.create(&bodies)).await {
            Ok(created) => {
                let by_email: HashMap<String, u64> = created
                    .into_iter()
                    .map(|c| (c.email.to_lowercase(), c.id))
                    .collect();
                for i in missing {
                    match by_email.get(&email_of(&i)) {
                        Some(id) => changed.push(to_subject(i, *id)),
                        None => {
                            let mut i = i;
                            i.uncertain = true;
                            changed.push(i);
                        }
                    }
                }
                Step::Settled {
                    done: vec![],
                    failed: vec![],
                    changed,
                }
            }
            Err(CallError::Refused { .. }) if missing.len() > 1 => {
                let step = self.one_by_one(client, missing, report).await;
                match step {
                    Step::Settled {
                        done,
                        failed,
                        changed: c,
                    } => {
                        changed.extend(c);
                        Step::Settled {
                            done,
                            failed,
                            changed,
                        }
                    }
                    other => other,
                }
            }
            Err(CallError::Refused { status, message }) => Step::Settled {
                done: vec![],
                failed: missing
                    .into_iter()
                    .map(|i| (i, format!("{status}: {message}")))
                    .collect(),
                changed,
            },
            Err(e) => Step::Retry(e),
        }
    }

    fn audit_item(
        &self,
        item: &Item,
        outcome: Outcome,
        customer_id: Option<u64>,
        error: Option<String>,
    ) {
        let mut ev = AuditEvent::new(
            self.clock.now(),
            &format!("reconcile-{}", item.run),
            EventKind::Provision,
            outcome,
        );
        ev.actor = Some("reconcile".into());
        ev.run = Some(item.run.clone());
        ev.target = Some(format!(
            "customer {} on {}",
            item.action.email(),
            item.action.account()
        ));
        ev.email = Some(item.action.email().to_owned());
        ev.detail = error;
        let (reason, before, after, id) = match &item.action {
            Action::Create { customer, .. } => (
                "create",
                None,
                serde_json::to_value(customer).ok(),
                customer_id,
            ),
            Action::Update {
                id, before, after, ..
            } => (
                "update",
                serde_json::to_value(before).ok(),
                serde_json::to_value(after).ok(),
                Some(*id),
            ),
            Action::Restrict {
                id, before, after, ..
            } => (
                "deprovision_restrict",
                serde_json::to_value(before).ok(),
                serde_json::to_value(after).ok(),
                Some(*id),
            ),
            Action::Delete { id, before, .. } => (
                "deprovision_delete",
                serde_json::to_value(before).ok(),
                None,
                Some(*id),
            ),
        };
        ev.reason = Some(reason.into());
        ev.before = before;
        ev.after = after;
        ev.customer_id = id;
        self.audit.record(ev);
    }
}
