//! Works the [`WorkQueue`] off against BigCommerce: one worker per account, batches of up to 10
//! customers, paced by `X-Rate-Limit-*`, waiting out 429s (shared with every replica through the
//! queue's pause), backing off on 5xx and transport failures.
//!
//! The executor is the same for both queue kinds; what differs (where items live, who else
//! consumes them, how a pause reaches other replicas) is behind [`WorkQueue`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::bc::{BatchClient, CallError, RateInfo};
use super::queue::{Backoff, BatchKey, DrainReport, Item, Stage, WorkQueue, batch_key};
use super::reconcile::Action;
use crate::audit::{AuditEvent, AuditLog, EventKind, Outcome};
use crate::bigcommerce::api::Customer;
use crate::clock::SharedClock;

pub struct Executor {
    pub queue: Arc<dyn WorkQueue>,
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
        let accounts = match self.queue.accounts().await {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "cannot read the provisioning queue; its work stays queued");
                return DrainReport {
                    stalled: self.clients.keys().cloned().collect(),
                    ..Default::default()
                };
            }
        };
        // A JoinSet: dropping the drain (a stopped gateway, a test's "crash") stops its workers.
        let mut tasks = tokio::task::JoinSet::new();
        for account in accounts {
            let me = self.clone();
            tasks.spawn(async move { me.work(&account, max_calls).await });
        }
        let mut total = DrainReport::default();
        while let Some(r) = tasks.join_next().await {
            if let Ok(r) = r {
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

    /// Waits for the window to reset rather than spend a call on a certain 429; the pause
    /// reaches every worker of the account (every replica, with the Redis queue).
    async fn pace(&self, account: &str, rate: RateInfo) {
        if rate.left == Some(0) {
            let wait = rate
                .reset_ms
                .map(Duration::from_millis)
                .unwrap_or(self.backoff.rate_limited_default);
            self.pause(account, wait).await;
        }
    }

    async fn pause(&self, account: &str, wait: Duration) {
        if let Err(e) = self.queue.pause(account, wait).await {
            tracing::warn!(account, error = %format!("{e:#}"), "cannot share the rate-limit pause; waiting here only");
            tokio::time::sleep(wait).await;
        }
    }

    /// Sleeps while another worker (here or on another replica) paused the account.
    async fn wait_if_paused(&self, account: &str) -> anyhow::Result<()> {
        while let Some(wait) = self.queue.paused_for(account).await? {
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }

    /// How often a worker with nothing to take looks again while another consumer holds items.
    const POLL: Duration = Duration::from_millis(200);

    async fn work(&self, account: &str, max_calls: Option<u64>) -> DrainReport {
        let mut report = DrainReport::default();
        let Some(client) = self.clients.get(account).cloned() else {
            tracing::error!(
                account,
                "queued provisioning work for an account that is not configured ([[bigcommerce]] id); it stays queued"
            );
            report.stalled.push(account.to_owned());
            return report;
        };
        let mut failures = 0u32;
        loop {
            if max_calls.is_some_and(|m| report.calls >= m) {
                return report;
            }
            let batch = match self.next(account).await {
                Ok(Some(batch)) => batch,
                Ok(None) => return report,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(account, error = %format!("{e:#}"), failures, "provisioning queue unavailable; backing off");
                    if failures >= self.backoff.give_up_after {
                        report.stalled.push(account.to_owned());
                        return report;
                    }
                    tokio::time::sleep(self.backoff.after(failures)).await;
                    continue;
                }
            };
            if batch.is_empty() {
                continue;
            }
            match self.run_batch(&client, batch.clone(), &mut report).await {
                Step::Settled {
                    done,
                    failed,
                    changed,
                } => {
                    failures = 0;
                    let done_items: Vec<Item> = done.iter().map(|(i, _)| i.clone()).collect();
                    if let Err(e) = self.queue.settle(&done_items, &failed, changed).await {
                        // The effect happened; the items stay queued and are redone (idempotently).
                        tracing::error!(account, error = %format!("{e:#}"), "cannot record finished provisioning work; it will be redone");
                        report.stalled.push(account.to_owned());
                        return report;
                    }
                    for (item, customer_id) in done {
                        report.done += 1;
                        self.audit_item(&item, Outcome::Allow, customer_id, None);
                    }
                    for (item, why) in failed {
                        report.failed += 1;
                        self.dead_lettered(&item, &why);
                    }
                }
                Step::Retry(CallError::RateLimited { reset_ms }) => {
                    report.rate_limited += 1;
                    let wait = reset_ms
                        .map(Duration::from_millis)
                        .unwrap_or(self.backoff.rate_limited_default);
                    self.pause(account, wait.max(Duration::from_millis(10)))
                        .await;
                }
                Step::Retry(e) => {
                    failures += 1;
                    report.retried += 1;
                    tracing::warn!(account, error = %e, failures, "BigCommerce call failed; backing off");
                    // The outcome is unknown: the batch's creates must look before they create.
                    let (mut changed, mut dead) = (Vec::new(), Vec::new());
                    for mut i in batch {
                        i.attempts += 1;
                        i.uncertain = true;
                        if i.attempts >= self.backoff.dead_letter_after {
                            let why = format!("failed {} times, last: {e}", i.attempts);
                            dead.push((i, why));
                        } else {
                            changed.push(i);
                        }
                    }
                    match self.queue.settle(&[], &dead, changed).await {
                        Ok(()) => {
                            for (item, why) in dead {
                                report.failed += 1;
                                self.dead_lettered(&item, &why);
                            }
                        }
                        Err(e) => {
                            tracing::warn!(account, error = %format!("{e:#}"), "cannot record the failed attempt")
                        }
                    }
                    if failures >= self.backoff.give_up_after {
                        report.stalled.push(account.to_owned());
                        return report;
                    }
                    tokio::time::sleep(self.backoff.after(failures)).await;
                }
            }
        }
    }

    /// The next batch; `Some(empty)` when another consumer holds items of the account (the
    /// worker waits for them to settle or to become reclaimable), `None` when all is done.
    async fn next(&self, account: &str) -> anyhow::Result<Option<Vec<Item>>> {
        self.wait_if_paused(account).await?;
        let batch = self.queue.next_batch(account).await?;
        if !batch.is_empty() {
            return Ok(Some(batch));
        }
        if self.queue.held_elsewhere(account).await? {
            tokio::time::sleep(Self::POLL).await;
            return Ok(Some(Vec::new()));
        }
        Ok(None)
    }

    async fn call<T>(
        &self,
        account: &str,
        report: &mut DrainReport,
        f: impl std::future::Future<Output = (Result<T, CallError>, RateInfo)>,
    ) -> Result<T, CallError> {
        // Another worker (or replica) may have paused the store since this batch was taken.
        if let Err(e) = self.wait_if_paused(account).await {
            tracing::warn!(account, error = %format!("{e:#}"), "cannot read the shared rate-limit pause");
        }
        report.calls += 1;
        let (r, rate) = f.await;
        self.pace(account, rate).await;
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
        let first_account = first.action.account().to_owned();
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
                    .call(
                        &first_account,
                        report,
                        client.set_subject(customer_id, &customer.subject),
                    )
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
                match self.call(&first_account, report, client.delete(&ids)).await {
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
                match self
                    .call(&first_account, report, client.update(&bodies))
                    .await
                {
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
        let first_account = batch
            .first()
            .map(|i| i.action.account().to_owned())
            .unwrap_or_default();
        let mut existing: HashMap<String, Customer> = HashMap::new();
        if batch.iter().any(|i| i.uncertain || i.attempts > 0) {
            let emails: Vec<String> = batch.iter().map(email_of).collect();
            match self
                .call(&first_account, report, client.find_by_emails(&emails))
                .await
            {
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
        match self
            .call(&first_account, report, client.create(&bodies))
            .await
        {
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

    /// An item given up on: logged with what to do, audited (`dead_letter`).
    fn dead_lettered(&self, item: &Item, why: &str) {
        tracing::error!(
            run = %item.run,
            account = %item.action.account(),
            email = %item.action.email(),
            reason = %why,
            "provisioning item moved to the dead letters: fix the cause in BigCommerce or in the SCIM data; the next reconcile pass plans whatever is still missing again"
        );
        self.audit_item(
            item,
            Outcome::Error,
            None,
            Some(format!("dead letter: {why}")),
        );
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
