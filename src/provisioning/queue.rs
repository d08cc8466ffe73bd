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
//! - Optimistic creates: a batch of up to 10 joiners is created without a lookup, the IdP subject
//!   set inline (`storegate_subject` attribute), so a joiner costs a tenth of a call. BigCommerce
//!   refuses the whole batch with 422 when an email is taken, naming it: only those are looked up
//!   (`email:in`), adopted (update, then subject) or reported as a conflict when bound to another
//!   subject, and the rest created.
//! - Idempotent: updates, subject writes and deletes are idempotent by nature; a create that may
//!   have taken effect (an item recovered from disk after a crash, or retried after a 5xx,
//!   timeout or reset) first looks the emails up: a customer already bound to our subject is
//!   done, so nothing is duplicated.
//!
//! Not done: the Redis Stream + consumer group mode for several replicas.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::bc::{BatchClient, CallError, Created, RateInfo};
use super::reconcile::{Action, CustomerState};
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
    /// Adopted (updated); its IdP subject remains to be recorded.
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

fn create_body(a: &Action, subject_attribute: u64) -> Option<Value> {
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
        "attributes": [{ "attribute_id": subject_attribute, "attribute_value": c.subject }],
    });
    if let Some(g) = group_id {
        v["customer_group_id"] = json!(g);
    }
    Some(v)
}

/// The `PUT /v3/customers` item of an action; `None` for an adoption whose fields are already
/// right (only its subject is written).
fn put_body(a: &Action) -> Option<Value> {
    match a {
        Action::Update {
            id, before, after, ..
        } if before != after => Some(json!({
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

/// The subject an item records at the [`Stage::Subject`] stage.
fn subject_of(a: &Action) -> Option<&str> {
    match a {
        Action::Create { customer, .. } => Some(&customer.subject),
        Action::Update { bind_subject, .. } => bind_subject.as_deref(),
        _ => None,
    }
}

/// A create that found the customer already there (created outside the gateway, or by a
/// lost-answer attempt of ours) becomes what the plan would have made of it.
enum Found {
    /// Already bound to this subject: nothing left to do.
    Ours(u64),
    /// Bound to another subject: left alone, reported.
    Conflict(String),
    /// No subject yet: adopt it (update to the desired fields, then record the subject).
    Adopt(Box<Item>),
}

fn found_existing(item: &Item, c: &Customer, subject_attribute: u64) -> Found {
    let Action::Create { customer, group_id } = &item.action else {
        return Found::Ours(c.id);
    };
    match c.attribute(subject_attribute) {
        Some(s) if s == customer.subject => Found::Ours(c.id),
        Some(s) => Found::Conflict(format!(
            "subject_conflict: customer #{} has the email {} but is bound to {s}, not {}; left alone, an administrator must resolve it in BigCommerce",
            c.id, customer.email, customer.subject
        )),
        None => {
            let before = CustomerState::from(c);
            let after = CustomerState {
                first_name: customer.first_name.clone(),
                last_name: customer.last_name.clone(),
                channel_ids: Some(customer.channel_ids.clone()),
                customer_group_id: group_id.unwrap_or(c.customer_group_id),
            };
            let mut adopted = item.clone();
            adopted.action = Action::Update {
                account: customer.account.clone(),
                id: c.id,
                email: customer.email.to_lowercase(),
                before,
                after,
                bind_subject: Some(customer.subject.clone()),
            };
            adopted.stage = Stage::Main;
            adopted.attempts = 0;
            adopted.uncertain = false;
            Found::Adopt(Box::new(adopted))
        }
    }
}

#[derive(Default)]
struct Settled {
    done: Vec<(Item, Option<u64>)>,
    failed: Vec<(Item, String)>,
    changed: Vec<Item>,
}

impl Settled {
    /// Sorts the `found` customers' items into done, failed or changed; returns the items whose
    /// customer was not found.
    fn resolve(
        &mut self,
        items: Vec<Item>,
        found: &[Customer],
        subject_attribute: u64,
    ) -> Vec<Item> {
        let by_email: HashMap<String, &Customer> =
            found.iter().map(|c| (c.email.to_lowercase(), c)).collect();
        let mut rest = Vec::new();
        for i in items {
            match by_email.get(&i.action.email().to_lowercase()) {
                None => rest.push(i),
                Some(c) => match found_existing(&i, c, subject_attribute) {
                    Found::Ours(id) => self.done.push((i, Some(id))),
                    Found::Conflict(why) => {
                        tracing::warn!(account = %i.action.account(), customer = c.id, "{why}");
                        self.failed.push((i, why));
                    }
                    Found::Adopt(adopted) => self.changed.push(*adopted),
                },
            }
        }
        rest
    }

    fn step(self) -> Step {
        Step::Settled {
            done: self.done,
            failed: self.failed,
            changed: self.changed,
        }
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

/// Rounds of "create, 422 names taken emails, look them up" in one batch before the rest is left
/// for the next batch (each round settles at least one item, so this only bounds a race).
const CREATE_ROUNDS: usize = 3;

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
                let attribute = match self.subject_attribute(client).await {
                    Ok(a) => a,
                    Err(e) => return Step::Retry(e),
                };
                let subjects: Vec<(u64, String)> = batch
                    .iter()
                    .filter_map(|i| match (&i.stage, subject_of(&i.action)) {
                        (Stage::Subject { customer_id }, Some(s)) => {
                            Some((*customer_id, s.to_owned()))
                        }
                        _ => None,
                    })
                    .collect();
                match self
                    .call(report, client.set_subjects(attribute, &subjects))
                    .await
                {
                    Ok(()) => Step::Settled {
                        done: batch
                            .into_iter()
                            .map(|i| {
                                let id = match i.stage {
                                    Stage::Subject { customer_id } => Some(customer_id),
                                    Stage::Main => None,
                                };
                                (i, id)
                            })
                            .collect(),
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
                // An adoption whose fields are already right needs no update call.
                let updated = if bodies.is_empty() {
                    Ok(Vec::new())
                } else {
                    self.call(report, client.update(&bodies)).await
                };
                match updated {
                    Ok(_) => {
                        let mut settled = Settled::default();
                        for i in batch {
                            match &i.action {
                                // Adopted: its subject is recorded next, 10 per call.
                                Action::Update {
                                    id,
                                    bind_subject: Some(_),
                                    ..
                                } => {
                                    let mut next = i.clone();
                                    next.stage = Stage::Subject { customer_id: *id };
                                    next.attempts = 0;
                                    settled.changed.push(next);
                                }
                                _ => settled.done.push((i, None)),
                            }
                        }
                        settled.step()
                    }
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

    /// The subject attribute's id on this account (found or created once, then cached).
    async fn subject_attribute(&self, client: &BatchClient) -> Result<u64, CallError> {
        client.subject_attribute_id(true).await?.ok_or_else(|| {
            CallError::Transient("the storegate_subject attribute could not be created".into())
        })
    }

    /// Optimistic creates (see the module docs).
    async fn create(
        &self,
        client: &BatchClient,
        batch: Vec<Item>,
        report: &mut DrainReport,
    ) -> Step {
        let attribute = match self.subject_attribute(client).await {
            Ok(a) => a,
            Err(e) => return Step::Retry(e),
        };
        let emails_of = |items: &[Item]| -> Vec<String> {
            items
                .iter()
                .map(|i| i.action.email().to_lowercase())
                .collect()
        };
        let mut settled = Settled::default();
        let mut pending = batch;
        // An earlier attempt may have created them (5xx, timeout, reset, restart): look first,
        // so a retry never creates a second customer.
        if pending.iter().any(|i| i.uncertain || i.attempts > 0) {
            match self
                .call(report, client.find_by_emails(&emails_of(&pending)))
                .await
            {
                Ok(found) => pending = settled.resolve(pending, &found, attribute),
                Err(e) => return Step::Retry(e),
            }
        }
        for _ in 0..CREATE_ROUNDS {
            if pending.is_empty() {
                break;
            }
            let bodies: Vec<Value> = pending
                .iter()
                .filter_map(|i| create_body(&i.action, attribute))
                .collect();
            match self.call(report, client.create(&bodies)).await {
                Ok(Created::All(created)) => {
                    let by_email: HashMap<String, u64> = created
                        .into_iter()
                        .map(|c| (c.email.to_lowercase(), c.id))
                        .collect();
                    for mut i in std::mem::take(&mut pending) {
                        match by_email.get(&i.action.email().to_lowercase()) {
                            Some(id) => settled.done.push((i, Some(*id))),
                            // Not in the answer: look before trying again.
                            None => {
                                i.uncertain = true;
                                settled.changed.push(i);
                            }
                        }
                    }
                }
                // Nothing was created; look up only the named emails.
                Ok(Created::EmailsTaken(taken)) => {
                    match self.call(report, client.find_by_emails(&taken)).await {
                        Ok(found) => pending = settled.resolve(pending, &found, attribute),
                        Err(e) => return Step::Retry(e),
                    }
                }
                Err(CallError::Refused { .. }) if pending.len() > 1 => {
                    return match self.one_by_one(client, pending, report).await {
                        Step::Settled {
                            done,
                            failed,
                            changed,
                        } => {
                            settled.done.extend(done);
                            settled.failed.extend(failed);
                            settled.changed.extend(changed);
                            settled.step()
                        }
                        other => other,
                    };
                }
                Err(CallError::Refused { status, message }) => {
                    settled.failed.extend(
                        pending
                            .drain(..)
                            .map(|i| (i, format!("{status}: {message}"))),
                    );
                }
                Err(e) => return Step::Retry(e),
            }
        }
        // Still pending after the rounds (emails taken and freed again meanwhile): next batch.
        settled.changed.extend(pending.into_iter().map(|mut i| {
            i.uncertain = true;
            i
        }));
        settled.step()
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
                id,
                before,
                after,
                bind_subject,
                ..
            } => (
                if bind_subject.is_some() {
                    "adopt"
                } else {
                    "update"
                },
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
