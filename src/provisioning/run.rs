//! One reconcile pass: read desired state (SCIM + policy) and actual state (BigCommerce), plan,
//! then print the plan (`--dry-run`) or queue it and work the queue off.
//!
//! `--dry-run` ([`Reconciler::preview`]) only reads: missing customer groups are not created (a
//! joiner's group shows as `-`, a group change is not shown until the group exists).
//!
//! Drift: every pass also reads the customers that carry the `storegate_subject` attribute
//! (`GET /v3/customers/attribute-values?attribute_id:in=..`). One that is not in the desired state
//! and not already in the
//! plan (e.g. its SCIM user vanished without a tombstone, or it was adopted and the grant went) is
//! `not_desired` drift; a desired one whose channels or group differ is `changed` drift. Each is
//! logged and audited (`drift`). `not_desired` drift is deprovisioned only with
//! `[provisioning] repair_drift = true`; `changed` drift is repaired by the plan's own update (the
//! desired state is the source of truth; a policy change and an edit in BigCommerce look the same).
//! A customer found by a person's email but bound to another subject is `subject_conflict`: it
//! gets no action, and is logged, audited and printed with the plan, every pass, until an
//! administrator resolves it.
//!
//! B2B Edition company membership is a step after the queue drained: see [`super::b2b_sync`].
//!
//! [`spawn_schedule`] runs a pass every `[provisioning] reconcile_interval` inside `serve`.

use std::collections::HashMap;
use std::sync::Arc;

use super::bc::{BatchClient, CallError};
use super::executor::Executor;
use super::queue::file::FileQueue;
use super::queue::redis::RedisQueue;
use super::queue::{Backoff, DrainReport, WorkQueue};
use super::reconcile::{self, Action, Actual, GroupIds};
use super::scim::ScimData;
use crate::audit::AuditLog;
use crate::audit::{AuditEvent, EventKind, Outcome};
use crate::bigcommerce::api::Customer;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::config::provisioning::{Deprovision, QueueStorage, ScimStorage};
use crate::policy::CustomerGroupRef;

/// Emails per lookup call (`GET /v3/customers?email:in=...`).
pub(super) const LOOKUP: usize = 50;

pub struct Reconciler {
    pub config: Arc<Config>,
    pub clients: HashMap<String, Arc<BatchClient>>,
    /// B2B Edition clients of the accounts that have B2B access, for [`Reconciler::b2b_step`].
    pub b2b: HashMap<String, Arc<dyn crate::bigcommerce::b2b::B2bApi>>,
    pub executor: Arc<Executor>,
}

#[derive(Debug, Default)]
pub struct PassReport {
    pub run: String,
    pub plan: Vec<Action>,
    pub drift: Vec<Drift>,
    pub drain: DrainReport,
    /// B2B Edition membership, after the queue drained (see [`super::b2b_sync`]).
    pub b2b: Vec<super::b2b_sync::B2bChange>,
}

/// What `storegate reconcile --dry-run` prints.
#[derive(Debug)]
pub struct DryRun {
    pub plan: Vec<Action>,
    pub drift: Vec<Drift>,
    pub b2b: Vec<super::b2b_sync::B2bChange>,
}

impl PassReport {
    /// B2B Edition company users changed (created, role changed, removed) and people whose B2B
    /// step failed this pass.
    pub fn b2b_counts(&self) -> (usize, usize) {
        use super::b2b_sync::B2bChangeKind as K;
        let count = |f: fn(&K) -> bool| self.b2b.iter().filter(|c| f(&c.kind)).count();
        (
            count(|k| matches!(k, K::Created | K::RoleChanged | K::Removed)),
            count(|k| *k == K::Failed),
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftKind {
    /// Carries the subject attribute, but the desired state has no customer for it on this
    /// account.
    NotDesired,
    /// Desired, but its channels or customer group differ from the desired ones.
    Changed,
    /// Found by a person's email, but bound to another IdP subject: left alone.
    SubjectConflict,
}

/// A customer provisioned (or adopted) by storegate that BigCommerce shows differently from the
/// desired state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Drift {
    pub account: String,
    pub id: u64,
    pub email: String,
    pub subject: String,
    pub kind: DriftKind,
    pub detail: String,
    /// An action was planned for it (`repair_drift`, or the plan's own update).
    pub repaired: bool,
}

/// Ids per `GET /v3/customers?id:in=...`.
const BY_ID: usize = 250;

/// SCIM data as stored on disk or in Redis (for `storegate reconcile` without a running gateway).
pub async fn load_scim(cfg: &Config) -> anyhow::Result<ScimData> {
    match cfg.scim.as_ref().map(|s| &s.store) {
        Some(ScimStorage::File(dir)) => {
            let store = super::scim::store::FileStore::open(dir)?;
            Ok(ScimData::from_resources(store.load_blocking()?))
        }
        Some(ScimStorage::Redis) => {
            let crate::session::Store::Redis(s) =
                crate::session::Store::from_config(&cfg.session).map_err(anyhow::Error::msg)?
            else {
                anyhow::bail!("scim.store is \"redis\" but [session] has no Redis");
            };
            let store = super::scim::redis_store::RedisScimStore::new(
                s.handle().clone(),
                crate::session::REDIS_PREFIX,
            );
            use super::scim::store::ScimStore;
            let items = store
                .load()
                .await
                .map_err(|e| anyhow::anyhow!("cannot read the SCIM data from Redis: {e}"))?;
            Ok(ScimData::from_resources(items))
        }
        Some(ScimStorage::Memory) => anyhow::bail!(
            "scim.store is \"memory\": there is nothing stored to reconcile from outside the gateway"
        ),
        None => anyhow::bail!("[scim] is not enabled: there is no desired state to reconcile"),
    }
}

impl Reconciler {
    /// A reconciler with its own Redis connection when `[provisioning] queue = "redis"` (the
    /// `storegate reconcile` command); the gateway passes its own with [`Self::with_redis`].
    pub fn new(
        config: Arc<Config>,
        audit: AuditLog,
        clock: SharedClock,
        backoff: Backoff,
    ) -> anyhow::Result<Self> {
        Self::with_redis(config, audit, clock, backoff, None)
    }

    /// Like [`Self::new`], with the gateway's shared [`RedisHandle`](crate::session::RedisHandle)
    /// for a Redis queue.
    pub fn with_redis(
        config: Arc<Config>,
        audit: AuditLog,
        clock: SharedClock,
        backoff: Backoff,
        redis: Option<crate::session::RedisHandle>,
    ) -> anyhow::Result<Self> {
        let mut clients = HashMap::new();
        for a in &config.bigcommerce {
            clients.insert(a.id.clone(), Arc::new(BatchClient::new(a)?));
        }
        let queue = open_queue(&config, redis)?;
        let executor = Arc::new(Executor {
            queue,
            clients: clients.clone(),
            audit,
            clock,
            backoff,
        });
        let b2b = crate::bigcommerce::b2b::clients(&config)?;
        Ok(Reconciler {
            config,
            clients,
            b2b,
            executor,
        })
    }

    /// A call retried through 429 and 5xx (lookups before planning).
    pub(super) async fn retrying<T, F, Fut>(&self, f: F) -> anyhow::Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, CallError>>,
    {
        let b = self.executor.backoff;
        let mut failures = 0u32;
        loop {
            match f().await {
                Ok(v) => return Ok(v),
                Err(CallError::RateLimited { reset_ms }) => {
                    tokio::time::sleep(
                        reset_ms
                            .map(std::time::Duration::from_millis)
                            .unwrap_or(b.rate_limited_default),
                    )
                    .await;
                }
                Err(CallError::Transient(e)) if failures < b.give_up_after => {
                    failures += 1;
                    tracing::warn!(error = %e, "BigCommerce lookup failed; backing off");
                    tokio::time::sleep(b.first.saturating_mul(1 << failures.min(16)).min(b.max))
                        .await;
                }
                Err(e) => return Err(anyhow::anyhow!("BigCommerce: {e}")),
            }
        }
    }

    /// The customers of every account with the emails in question.
    async fn actual(&self, emails: &[String]) -> anyhow::Result<Actual> {
        let mut actual: Actual = HashMap::new();
        for (account, client) in &self.clients {
            let mut have = HashMap::new();
            for chunk in emails.chunks(LOOKUP) {
                let found = self
                    .retrying(|| async { client.find_by_emails(chunk).await.0 })
                    .await?;
                for c in found {
                    have.insert(c.email.to_lowercase(), c);
                }
            }
            actual.insert(account.clone(), have);
        }
        Ok(actual)
    }

    async fn group(
        &self,
        client: &BatchClient,
        name: &str,
        create: bool,
    ) -> anyhow::Result<Option<u64>> {
        if create {
            Ok(Some(self.retrying(|| client.group_id(name)).await?))
        } else {
            let id = self.retrying(|| client.find_group_id(name)).await?;
            if id.is_none() {
                tracing::info!(
                    group = name,
                    "customer group does not exist yet (dry run: not created)"
                );
            }
            Ok(id)
        }
    }

    async fn groups(
        &self,
        desired: &reconcile::Desired,
        need_locked: bool,
        create: bool,
    ) -> anyhow::Result<GroupIds> {
        let mut g = GroupIds::default();
        for d in &desired.customers {
            if let Some(CustomerGroupRef::Name(n)) = &d.group {
                let key = (d.account.clone(), n.clone());
                if g.named.contains_key(&key) {
                    continue;
                }
                if let Some(client) = self.clients.get(&d.account)
                    && let Some(id) = self.group(client, n, create).await?
                {
                    g.named.insert(key, id);
                }
            }
        }
        if need_locked && self.config.provisioning.deprovision == Deprovision::Restrict {
            let name = &self.config.provisioning.locked_customer_group;
            for (account, client) in &self.clients {
                if let Some(id) = self.group(client, name, create).await? {
                    g.locked.insert(account.clone(), id);
                }
            }
        }
        Ok(g)
    }

    /// Plans a pass (creating missing customer groups). Work left in the queue by an earlier run
    /// is finished first by [`Reconciler::pass`], so the plan reads an up-to-date BigCommerce.
    pub async fn plan(
        &self,
        data: &ScimData,
        now: crate::clock::UnixTime,
    ) -> anyhow::Result<Vec<Action>> {
        let desired = reconcile::desired_state(&self.config, data, now);
        Ok(self.plan_with_drift(&desired, true).await?.0)
    }

    /// The plan and the drift without any write to BigCommerce (`--dry-run`).
    pub async fn preview(
        &self,
        data: &ScimData,
        now: crate::clock::UnixTime,
    ) -> anyhow::Result<(Vec<Action>, Vec<Drift>)> {
        let desired = reconcile::desired_state(&self.config, data, now);
        self.plan_with_drift(&desired, false).await
    }

    /// What the B2B step would do, reading only.
    pub async fn preview_b2b(
        &self,
        data: &ScimData,
        now: crate::clock::UnixTime,
    ) -> anyhow::Result<Vec<super::b2b_sync::B2bChange>> {
        Ok(self.dry_run(data, now).await?.b2b)
    }

    /// `--dry-run`: the drift, the plan and the B2B step, reading only. The desired state and
    /// the bound customers are read once for all three, as in a pass.
    pub async fn dry_run(
        &self,
        data: &ScimData,
        now: crate::clock::UnixTime,
    ) -> anyhow::Result<DryRun> {
        let desired = reconcile::desired_state(&self.config, data, now);
        let (plan, drift, bound) = self.plan_drift_bound(&desired, false).await?;
        let b2b = self.b2b_step(&desired, &bound, "dry-run", now, false).await;
        Ok(DryRun { plan, drift, b2b })
    }

    /// The plan and the drift towards `desired`; `create_groups` false reads only.
    pub async fn plan_with_drift(
        &self,
        desired: &reconcile::Desired,
        create_groups: bool,
    ) -> anyhow::Result<(Vec<Action>, Vec<Drift>)> {
        let (plan, drift, _) = self.plan_drift_bound(desired, create_groups).await?;
        Ok((plan, drift))
    }

    /// [`Self::plan_with_drift`], and the customers bound to a subject (account, customer,
    /// subject), which the B2B step needs after the drain.
    async fn plan_drift_bound(
        &self,
        desired: &reconcile::Desired,
        create_groups: bool,
    ) -> anyhow::Result<(Vec<Action>, Vec<Drift>, Vec<(String, Customer, String)>)> {
        let mut emails: Vec<String> = desired
            .customers
            .iter()
            .map(|d| d.email.to_lowercase())
            .chain(desired.leavers.iter().cloned())
            .collect();
        emails.sort();
        emails.dedup();
        let actual = self.actual(&emails).await?;
        let attributes = self.subject_attributes(create_groups).await?;
        let tagged = self.tagged(&attributes).await?;
        let repair = self.config.provisioning.repair_drift;
        let mut groups = self
            .groups(
                desired,
                !desired.leavers.is_empty() || !desired.customers.is_empty() || !tagged.is_empty(),
                create_groups,
            )
            .await?;
        groups.subject_attribute = attributes;
        let accounts: Vec<String> = self
            .config
            .bigcommerce
            .iter()
            .map(|a| a.id.clone())
            .collect();
        let mode = self.config.provisioning.deprovision;
        let mut plan = reconcile::plan(desired, &actual, &groups, &accounts, mode);
        let conflicts = reconcile::conflicts(desired, &actual, &groups, &accounts);
        let mut drift = drift(
            desired, &tagged, &groups, mode, repair, &conflicts, &mut plan,
        );
        drift.extend(conflicts.into_iter().map(|c| Drift {
            detail: format!(
                "has the email of {} but is bound to {}; left alone: an administrator must resolve it in BigCommerce (change the email of one of them, or clear the storegate_subject attribute)",
                c.wanted, c.recorded
            ),
            account: c.account,
            id: c.id,
            email: c.email,
            subject: c.recorded,
            kind: DriftKind::SubjectConflict,
            repaired: false,
        }));
        Ok((plan, drift, tagged))
    }

    /// Per account, the `storegate_subject` attribute's id; created when missing unless
    /// `create` is false (a dry run: then that account has no entry, and no customer is bound).
    async fn subject_attributes(&self, create: bool) -> anyhow::Result<HashMap<String, u64>> {
        let mut out = HashMap::new();
        for (account, client) in &self.clients {
            if let Some(id) = self
                .retrying(|| client.subject_attribute_id(create))
                .await?
            {
                out.insert(account.clone(), id);
            }
        }
        Ok(out)
    }

    /// Per account, the customers carrying the `storegate_subject` attribute, with that subject.
    async fn tagged(
        &self,
        attributes: &HashMap<String, u64>,
    ) -> anyhow::Result<Vec<(String, Customer, String)>> {
        let mut out = Vec::new();
        for (account, client) in &self.clients {
            let Some(attribute) = attributes.get(account) else {
                continue;
            };
            let subjects: HashMap<u64, String> = self
                .retrying(|| client.subject_values(*attribute))
                .await?
                .into_iter()
                .collect();
            let mut ids: Vec<u64> = subjects.keys().copied().collect();
            ids.sort_unstable();
            for chunk in ids.chunks(BY_ID) {
                for c in self.retrying(|| client.find_by_ids(chunk)).await? {
                    let subject = subjects.get(&c.id).cloned().unwrap_or_default();
                    out.push((account.clone(), c, subject));
                }
            }
        }
        Ok(out)
    }

    /// A full pass: finish queued work, plan, queue, work it off.
    pub async fn pass(
        &self,
        data: &ScimData,
        now: crate::clock::UnixTime,
    ) -> anyhow::Result<PassReport> {
        let mut report = PassReport {
            run: uuid::Uuid::new_v4().to_string(),
            ..Default::default()
        };
        if !self.executor.queue.is_empty().await? {
            let r = self.executor.drain(None).await;
            if !r.stalled.is_empty() {
                anyhow::bail!(
                    "BigCommerce kept failing for {:?}; queued work is kept for the next run",
                    r.stalled
                );
            }
        }
        // Decided once per pass: the plan and the B2B step after the drain work from it.
        let desired = reconcile::desired_state(&self.config, data, now);
        let (plan, drift, bound) = self.plan_drift_bound(&desired, true).await?;
        report.plan = plan;
        report.drift = drift;
        for d in &report.drift {
            tracing::warn!(
                run = %report.run,
                account = %d.account,
                customer = d.id,
                email = %d.email,
                kind = ?d.kind,
                repaired = d.repaired,
                "drift: {}",
                d.detail
            );
            let mut ev = AuditEvent::new(
                now,
                &format!("reconcile-{}", report.run),
                EventKind::Drift,
                if d.repaired {
                    Outcome::Allow
                } else {
                    Outcome::Deny
                },
            );
            ev.actor = Some("reconcile".into());
            ev.run = Some(report.run.clone());
            ev.email = Some(d.email.clone());
            ev.subject = Some(d.subject.clone());
            ev.customer_id = Some(d.id);
            ev.target = Some(format!("customer {} on {}", d.email, d.account));
            ev.reason = Some(
                match d.kind {
                    DriftKind::NotDesired => "not_desired",
                    DriftKind::Changed => "changed",
                    DriftKind::SubjectConflict => "subject_conflict",
                }
                .into(),
            );
            ev.detail = Some(d.detail.clone());
            self.executor.audit.record(ev);
        }
        self.executor
            .queue
            .enqueue(&report.run, report.plan.clone())
            .await?;
        report.drain = self.executor.drain(None).await;
        report.b2b = self
            .b2b_step(&desired, &bound, &report.run, now, true)
            .await;
        Ok(report)
    }
}

/// The configured queue: the file, or a Redis Stream on `redis` (else on a connection opened
/// from `[session]`).
fn open_queue(
    config: &Config,
    redis: Option<crate::session::RedisHandle>,
) -> anyhow::Result<Arc<dyn WorkQueue>> {
    match &config.provisioning.queue {
        QueueStorage::File(path) => Ok(Arc::new(FileQueue::open(path)?)),
        QueueStorage::Redis => {
            let handle = match redis {
                Some(h) => h,
                None => match crate::session::Store::from_config(&config.session)
                    .map_err(anyhow::Error::msg)?
                {
                    crate::session::Store::Redis(s) => s.handle().clone(),
                    crate::session::Store::Memory(_) => anyhow::bail!(
                        "provisioning.queue = \"redis\" needs [session] store = \"redis\""
                    ),
                },
            };
            let accounts = config.bigcommerce.iter().map(|a| a.id.clone()).collect();
            Ok(Arc::new(RedisQueue::new(
                handle,
                crate::session::REDIS_PREFIX,
                accounts,
                config.provisioning.queue_claim_after,
            )))
        }
    }
}

/// Drift among the `tagged` customers (see the module docs); with `repair`, `not_desired` drift
/// is added to `plan` as a deprovisioning (already locked customers are not drift).
fn planned<'a>(account: &str, id: u64, plan: &'a [Action]) -> Option<&'a Action> {
    plan.iter().find(|a| {
        a.account() == account
            && match a {
                Action::Create { .. } => false,
                Action::Update { id: i, .. }
                | Action::Restrict { id: i, .. }
                | Action::Delete { id: i, .. } => *i == id,
            }
    })
}

fn drift(
    desired: &reconcile::Desired,
    tagged: &[(String, Customer, String)],
    groups: &GroupIds,
    mode: Deprovision,
    repair: bool,
    conflicts: &[reconcile::Conflict],
    plan: &mut Vec<Action>,
) -> Vec<Drift> {
    let mut out = Vec::new();
    for (account, c, subject) in tagged {
        let email = c.email.to_lowercase();
        // Reported as a conflict instead.
        if conflicts
            .iter()
            .any(|x| &x.account == account && x.id == c.id)
        {
            continue;
        }
        let want = desired
            .customers
            .iter()
            .find(|d| &d.account == account && d.email.eq_ignore_ascii_case(&email));
        match want {
            Some(_) => {
                if let Some(Action::Update { before, after, .. }) = planned(account, c.id, plan)
                    && (before.channel_ids != after.channel_ids
                        || before.customer_group_id != after.customer_group_id)
                {
                    out.push(Drift {
                        account: account.clone(),
                        id: c.id,
                        email: email.clone(),
                        subject: subject.clone(),
                        kind: DriftKind::Changed,
                        detail: format!(
                            "channels {:?} group {} where the desired state has channels {:?} group {}",
                            before.channel_ids,
                            before.customer_group_id,
                            after.channel_ids,
                            after.customer_group_id
                        ),
                        repaired: true,
                    });
                }
            }
            None => {
                if planned(account, c.id, plan).is_some() {
                    continue; // a leaver or mover: the plan deprovisions it anyway
                }
                // What deprovisioning would do; nothing means it is already locked.
                let leaver = reconcile::Desired {
                    leavers: vec![email.clone()],
                    ..Default::default()
                };
                let mut one = HashMap::new();
                one.insert(account.clone(), HashMap::from([(email.clone(), c.clone())]));
                let fix =
                    reconcile::plan(&leaver, &one, groups, std::slice::from_ref(account), mode);
                // Already locked (a missing locked group, in a dry run, cannot tell: reported).
                if fix.is_empty()
                    && (mode == Deprovision::Delete || groups.locked.contains_key(account))
                {
                    continue;
                }
                out.push(Drift {
                    account: account.clone(),
                    id: c.id,
                    email: email.clone(),
                    subject: subject.clone(),
                    kind: DriftKind::NotDesired,
                    detail: format!(
                        "carries subject {subject} but the desired state has no customer for it here{}",
                        if repair { "; deprovisioned" } else { "; report only (repair_drift = false)" }
                    ),
                    repaired: repair,
                });
                if repair {
                    plan.extend(fix);
                }
            }
        }
    }
    out
}

/// The drift as text, one customer a line.
pub fn render_drift(drift: &[Drift]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for d in drift {
        let label = match d.kind {
            DriftKind::SubjectConflict => "conflict",
            DriftKind::NotDesired | DriftKind::Changed => "drift   ",
        };
        let _ = writeln!(
            out,
            "{label} {:<10} {} (#{}) {:?}: {}",
            d.account, d.email, d.id, d.kind, d.detail
        );
    }
    out
}

/// The plan as text, one action a line.
pub fn render_plan(plan: &[Action]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for a in plan {
        let _ = match a {
            Action::Create {
                customer: c,
                group_id,
            } => writeln!(
                out,
                "create   {:<10} {} channels {:?} group {}",
                c.account,
                c.email,
                c.channel_ids,
                group_id
                    .map(|g| g.to_string())
                    .unwrap_or_else(|| "-".into())
            ),
            Action::Update {
                account,
                id,
                email,
                before,
                after,
                bind_subject,
            } => writeln!(
                out,
                "{} {account:<10} {email} (#{id}) channels {:?} -> {:?}, group {} -> {}{}",
                if bind_subject.is_some() {
                    "adopt   "
                } else {
                    "update  "
                },
                before.channel_ids,
                after.channel_ids,
                before.customer_group_id,
                after.customer_group_id,
                bind_subject
                    .as_ref()
                    .map(|s| format!(", subject {s}"))
                    .unwrap_or_default()
            ),
            Action::Restrict {
                account,
                id,
                email,
                before,
                after,
            } => writeln!(
                out,
                "restrict {account:<10} {email} (#{id}) channels {:?} -> {:?}, group {} -> {} (locked), random password",
                before.channel_ids,
                after.channel_ids,
                before.customer_group_id,
                after.customer_group_id
            ),
            Action::Delete {
                account, id, email, ..
            } => writeln!(out, "delete   {account:<10} {email} (#{id})"),
        };
    }
    let _ = writeln!(out, "{} action(s)", plan.len());
    out
}

/// Runs a pass every `interval` (the first one `interval` after the start) until the task is
/// aborted. A pass still running when the next one is due makes that one skip (logged and
/// audited); every pass is logged and audited (`reconcile`) with its counts or its error.
pub fn spawn_schedule(
    reconciler: Arc<Reconciler>,
    scim: Arc<super::scim::ScimService>,
    interval: std::time::Duration,
    wake: Option<Arc<tokio::sync::Notify>>,
) -> tokio::task::JoinHandle<()> {
    let running = Arc::new(tokio::sync::Mutex::new(()));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            // A pass runs every interval, or sooner when woken (an external change reported by a
            // BigCommerce webhook, with `repair_drift`).
            match &wake {
                Some(w) => {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = w.notified() => {}
                    }
                }
                None => {
                    tick.tick().await;
                }
            }
            let Ok(guard) = Arc::clone(&running).try_lock_owned() else {
                tracing::warn!("scheduled reconcile skipped: the previous pass is still running");
                let mut ev = AuditEvent::new(
                    reconciler.executor.clock.now(),
                    "reconcile-schedule",
                    EventKind::Reconcile,
                    Outcome::Deny,
                );
                ev.actor = Some("reconcile".into());
                ev.reason = Some("skipped_still_running".into());
                reconciler.executor.audit.record(ev);
                continue;
            };
            let r = Arc::clone(&reconciler);
            let scim = Arc::clone(&scim);
            tokio::spawn(async move {
                let _guard = guard;
                let _planned = scheduled_pass(&r, &scim).await;
            });
        }
    })
}

/// One scheduled pass, logged and audited, if this replica gets the lease (see
/// [`WorkQueue::lease`]): with a shared Redis queue, one replica plans per interval. Another
/// replica skips planning and helps work the queue off. True when this replica planned.
pub async fn scheduled_pass(r: &Reconciler, scim: &super::scim::ScimService) -> bool {
    let lease = match r.executor.queue.lease().await {
        Ok(Some(lease)) => lease,
        Ok(None) => {
            tracing::debug!(
                "scheduled reconcile: another replica holds the lease and plans this pass; helping with the queue only"
            );
            r.executor.drain(None).await;
            return false;
        }
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "scheduled reconcile skipped: cannot take the reconcile lease");
            return false;
        }
    };
    run_scheduled_pass(r, scim).await;
    lease.release().await;
    true
}

async fn run_scheduled_pass(r: &Reconciler, scim: &super::scim::ScimService) {
    let now = r.executor.clock.now();
    let started = std::time::Instant::now();
    let result = match scim.snapshot().await {
        Ok(data) => r.pass(&data, now).await,
        Err(e) => Err(anyhow::anyhow!("cannot read the SCIM data: {}", e.detail)),
    };
    let mut ev = match &result {
        Ok(report) => {
            let outcome = if report.drain.stalled.is_empty() && report.drain.failed == 0 {
                Outcome::Allow
            } else {
                Outcome::Error
            };
            let (b2b_changed, b2b_failed) = report.b2b_counts();
            let detail = format!(
                "{} action(s) planned, {} done, {} failed, {} drift, {} calls, {} rate-limited, {} retried, stalled {:?}, B2B {} changed {} failed, {} ms",
                report.plan.len(),
                report.drain.done,
                report.drain.failed,
                report.drift.len(),
                report.drain.calls,
                report.drain.rate_limited,
                report.drain.retried,
                report.drain.stalled,
                b2b_changed,
                b2b_failed,
                started.elapsed().as_millis()
            );
            tracing::info!(run = %report.run, "scheduled reconcile: {detail}");
            let mut ev = AuditEvent::new(
                r.executor.clock.now(),
                &format!("reconcile-{}", report.run),
                EventKind::Reconcile,
                outcome,
            );
            ev.run = Some(report.run.clone());
            ev.detail = Some(detail);
            ev
        }
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "scheduled reconcile failed");
            let mut ev = AuditEvent::new(
                r.executor.clock.now(),
                "reconcile-schedule",
                EventKind::Reconcile,
                Outcome::Error,
            );
            ev.reason = Some("pass_failed".into());
            ev.detail = Some(format!("{e:#}"));
            ev
        }
    };
    ev.actor = Some("reconcile".into());
    ev.reason.get_or_insert_with(|| "scheduled".into());
    r.executor.audit.record(ev);
}
