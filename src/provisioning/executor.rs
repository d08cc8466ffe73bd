//! Works the [`WorkQueue`] off against BigCommerce: one worker per account, batches of up to 10
//! customers, paced by `X-Rate-Limit-*`, waiting out 429s (shared with every replica through the
//! queue's pause), backing off on 5xx and transport failures.
//!
//! Creates are optimistic (see the [`queue`](super::queue) module docs): a batch of joiners is
//! created without a lookup, the IdP subject set inline; only a 422 naming taken emails, an
//! uncertain item (recovered, taken over from another consumer) or a retried one looks first.
//!
//! The executor is the same for both queue kinds; what differs (where items live, who else
//! consumes them, how a pause reaches other replicas) is behind [`WorkQueue`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::queue::{Backoff, BatchKey, DrainReport, Item, QueueError, Stage, WorkQueue, batch_key};
use super::reconcile::{Action, CustomerState};
use crate::audit::{AuditEvent, AuditLog, EventKind, Outcome};
use crate::bigcommerce::api::{ApiError, Customer};
use crate::bigcommerce::api::{Created, Customers, RateInfo};
use crate::clock::SharedClock;
use crate::identity::SubjectMatch;

pub struct Executor {
    pub queue: Arc<dyn WorkQueue>,
    pub clients: HashMap<String, Arc<dyn Customers>>,
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
    /// Bound to another subject: a refusal no retry fixes (dead letter, reported).
    Conflict(String),
    /// No subject yet: adopt it (update to the desired fields, then record the subject).
    Adopt(Box<Item>),
}

fn found_existing(item: &Item, c: &Customer, subject_attribute: u64) -> Found {
    let Action::Create { customer, group_id } = &item.action else {
        return Found::Ours(c.id);
    };
    match SubjectMatch::of(c.attribute(subject_attribute), &customer.subject) {
        SubjectMatch::Ours => Found::Ours(c.id),
        SubjectMatch::Conflict { recorded: s } => Found::Conflict(format!(
            "subject_conflict: customer #{} has the email {} but is bound to {s}, not {}; left alone, an administrator must resolve it in BigCommerce",
            c.id, customer.email, customer.subject
        )),
        SubjectMatch::Unbound => {
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
    Retry(ApiError),
}

/// Why a refused call's items are dead letters: the status and BigCommerce's words.
fn refusal(e: &ApiError) -> String {
    match e {
        ApiError::Rejected { status, message } => format!("{status}: {message}"),
        other => other.to_string(),
    }
}

/// Rounds of "create, 422 names taken emails, look them up" in one batch before the rest is left
/// for the next batch (each round settles at least one item, so this only bounds a race).
const CREATE_ROUNDS: usize = 3;

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
    async fn wait_if_paused(&self, account: &str) -> Result<(), QueueError> {
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
            // The pass's id (`reconcile-{run}`, its provision events' request id) goes on the
            // calls as X-Request-Id and on the own-change record, so the webhook echoing this
            // batch's writes joins the pass's events as a launch's echo joins the launch.
            let request_id = batch
                .first()
                .map(|i| format!("reconcile-{}", i.run))
                .unwrap_or_default();
            let step = crate::audit::correlation::scope(
                request_id,
                self.run_batch(client.as_ref(), batch.clone(), &mut report),
            )
            .await;
            match step {
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
                Step::Retry(ApiError::RateLimited { retry_after_ms }) => {
                    report.rate_limited += 1;
                    // 0: the answer gave no reset time.
                    let wait = match retry_after_ms {
                        0 => self.backoff.rate_limited_default,
                        ms => Duration::from_millis(ms),
                    };
                    self.pause(account, wait.max(Duration::from_millis(10)))
                        .await;
                }
                Step::Retry(e) => {
                    failures += 1;
                    report.retried += 1;
                    // Say what happens next: the admin reading this need not act yet.
                    tracing::warn!(
                        account,
                        error = %e,
                        failures,
                        retry_in_ms = self.backoff.after(failures).as_millis() as u64,
                        "BigCommerce call failed; the batch stays queued and is retried after a backoff (a dead letter after {} attempts)",
                        self.backoff.dead_letter_after
                    );
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
    async fn next(&self, account: &str) -> Result<Option<Vec<Item>>, QueueError> {
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
        f: impl std::future::Future<Output = (Result<T, ApiError>, RateInfo)>,
    ) -> Result<T, ApiError> {
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
        client: &dyn Customers,
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
                    .call(
                        &first_account,
                        report,
                        client.set_subjects(attribute, &subjects),
                    )
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
                    Err(e) if !e.class().is_upstream() && batch.len() > 1 => {
                        self.one_by_one(client, batch, report).await
                    }
                    Err(e) if !e.class().is_upstream() => Step::Settled {
                        done: vec![],
                        failed: batch.into_iter().map(|i| (i, refusal(&e))).collect(),
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
                    Err(e) if !e.class().is_upstream() => Step::Settled {
                        done: vec![],
                        failed: batch.into_iter().map(|i| (i, refusal(&e))).collect(),
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
                    self.call(&first_account, report, client.update(&bodies))
                        .await
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
                    Err(e) if !e.class().is_upstream() && batch.len() > 1 => {
                        self.one_by_one(client, batch, report).await
                    }
                    Err(e) if !e.class().is_upstream() => Step::Settled {
                        done: vec![],
                        failed: batch.into_iter().map(|i| (i, refusal(&e))).collect(),
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
        client: &dyn Customers,
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
    async fn subject_attribute(&self, client: &dyn Customers) -> Result<u64, ApiError> {
        crate::bigcommerce::api::one::subject_attribute_id(client).await
    }

    /// Optimistic creates (see the module docs).
    async fn create(
        &self,
        client: &dyn Customers,
        batch: Vec<Item>,
        report: &mut DrainReport,
    ) -> Step {
        let account = batch
            .first()
            .map(|i| i.action.account().to_owned())
            .unwrap_or_default();
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
        // An earlier attempt may have created them (5xx, timeout, reset, restart, or a consumer
        // that stopped mid-call and whose items were taken over): look first, so a retry never
        // creates a second customer.
        if pending.iter().any(|i| i.uncertain || i.attempts > 0) {
            match self
                .call(
                    &account,
                    report,
                    client.find_by_emails(&emails_of(&pending)),
                )
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
            match self.call(&account, report, client.create(&bodies)).await {
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
                    match self
                        .call(&account, report, client.find_by_emails(&taken))
                        .await
                    {
                        Ok(found) => pending = settled.resolve(pending, &found, attribute),
                        Err(e) => return Step::Retry(e),
                    }
                }
                Err(e) if !e.class().is_upstream() && pending.len() > 1 => {
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
                Err(e) if !e.class().is_upstream() => {
                    let why = refusal(&e);
                    settled
                        .failed
                        .extend(pending.drain(..).map(|i| (i, why.clone())));
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
