//! The provisioning journey, top to bottom: how a SCIM change reaches BigCommerce.
//!
//! 1. **The timer.** Inside `serve`, [`spawn_schedule`] (started by
//!    [`crate::app::start_reconcile_schedule`]) runs a pass every `[provisioning]
//!    reconcile_interval`, or sooner when a BigCommerce webhook reports an external change with
//!    `repair_drift`. A pass still running makes the next one skip. `storegate reconcile` runs
//!    the same [`Reconciler::pass`] once (or [`Reconciler::dry_run`]).
//! 2. **The lease.** [`scheduled_pass`]: with a shared Redis queue one replica plans per interval;
//!    the others only help work the queue off.
//! 3. **The pass** ([`Reconciler::pass`]), each step one module:
//!    - finish work an earlier pass left in the queue, so the plan reads an up-to-date store;
//!    - the desired state: the policy applied to the SCIM snapshot
//!      ([`reconcile::desired_state`], pure);
//!    - the actual state: customers, groups and subject bindings read from BigCommerce
//!      ([`observe`]);
//!    - the plan ([`reconcile::plan`], pure) and the drift ([`drift`]), logged and audited;
//!    - the plan is queued ([`crate::provisioning::queue`]) and the
//!      [`Executor`](crate::provisioning::executor::Executor) works it off in batches through the
//!      Management API client ([`crate::bigcommerce::api::Customers`]);
//!    - B2B Edition company membership, after the drain, since a company user needs the customer
//!      ([`b2b_sync`]).
//!
//! `--dry-run` ([`Reconciler::dry_run`]) only reads: missing customer groups are not created (a
//! joiner's group shows as `-`, a group change is not shown until the group exists).
//!
//! The parts a pass works with are built once, by [`crate::app::reconciler`].

use std::collections::HashMap;
use std::sync::Arc;

use crate::audit::{AuditEvent, EventKind, Outcome};
use crate::bigcommerce::api::ApiError;
use crate::bigcommerce::api::Customers;
use crate::bigcommerce::b2b::B2bApi;
use crate::clock::UnixTime;
use crate::config::Config;
use crate::provisioning::b2b_sync::{self, B2bChange, B2bStep};
use crate::provisioning::drift::{self, Drift};
use crate::provisioning::executor::Executor;
use crate::provisioning::observe::{BoundCustomer, Observe};
use crate::provisioning::queue::DrainReport;
use crate::provisioning::reconcile::{self, Action, Desired};
use crate::provisioning::scim::{ScimData, ScimService};

/// What a pass works with: one Management API client and (with B2B access) one B2B Edition
/// client per account, and the executor that owns the queue.
pub struct Reconciler {
    pub config: Arc<Config>,
    pub clients: HashMap<String, Arc<dyn Customers>>,
    /// B2B Edition clients of the accounts that have B2B access, for [`Reconciler::b2b_step`].
    pub b2b: HashMap<String, Arc<dyn B2bApi>>,
    pub executor: Arc<Executor>,
    /// Control-panel users through the Account API, when `[[account]]` is configured (issue 12).
    pub staff: Option<Arc<crate::controlpanel::run::StaffReconciler>>,
}

/// Why a pass ended before its plan was worked off.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// A read before planning failed after its retries: nothing was planned.
    #[error("BigCommerce: {0}")]
    BigCommerce(#[from] ApiError),
    /// Work left by an earlier pass could not be finished: planning on top would read a stale
    /// store.
    #[error("BigCommerce kept failing for {0:?}; queued work is kept for the next run")]
    Stalled(Vec<String>),
    /// The queue could not be read or written: the pass stops; queued work stays queued.
    #[error(transparent)]
    Queue(crate::provisioning::queue::QueueError),
    #[error("cannot read the SCIM data: {0}")]
    Scim(String),
}

#[derive(Debug, Default)]
pub struct PassReport {
    pub run: String,
    pub plan: Vec<Action>,
    pub drift: Vec<Drift>,
    pub drain: DrainReport,
    /// B2B Edition membership, after the queue drained (see [`super::b2b_sync`]).
    pub b2b: Vec<B2bChange>,
    /// Control-panel users (see [`crate::controlpanel`]); empty without `[[account]]`.
    pub staff: crate::controlpanel::run::StaffReport,
}

/// What `storegate reconcile --dry-run` prints.
#[derive(Debug)]
pub struct DryRun {
    pub plan: Vec<Action>,
    pub drift: Vec<Drift>,
    pub b2b: Vec<B2bChange>,
    pub staff: crate::controlpanel::run::StaffReport,
}

impl PassReport {
    /// B2B Edition company users changed (created, role changed, removed) and people whose B2B
    /// step failed this pass.
    pub fn b2b_counts(&self) -> (usize, usize) {
        use b2b_sync::B2bChangeKind as K;
        let count = |f: fn(&K) -> bool| self.b2b.iter().filter(|c| f(&c.kind)).count();
        (
            count(|k| matches!(k, K::Created | K::RoleChanged | K::Removed)),
            count(|k| *k == K::Failed),
        )
    }
}

impl Reconciler {
    /// A full pass: finish queued work, plan, queue, work it off, then the B2B step.
    pub async fn pass(&self, data: &ScimData, now: UnixTime) -> Result<PassReport, PassError> {
        let mut report = PassReport {
            run: uuid::Uuid::new_v4().to_string(),
            ..Default::default()
        };
        let queue = &self.executor.queue;
        if !queue.is_empty().await.map_err(PassError::Queue)? {
            let r = self.executor.drain(None).await;
            if !r.stalled.is_empty() {
                return Err(PassError::Stalled(r.stalled));
            }
        }
        // Decided once per pass: the plan and the B2B step after the drain work from it.
        let desired = reconcile::desired_state(&self.config, data, now);
        let (plan, drift, bound) = self.plan_drift_bound(&desired, true).await?;
        report.plan = plan;
        report.drift = drift;
        drift::report(&self.executor.audit, &report.run, now, &report.drift);
        queue
            .enqueue(&report.run, report.plan.clone())
            .await
            .map_err(PassError::Queue)?;
        report.drain = self.executor.drain(None).await;
        report.b2b = self
            .b2b_step(&desired, &bound, &report.run, now, true)
            .await;
        report.staff = self.staff_step(data, &report.run, now, true).await;
        Ok(report)
    }

    /// Control-panel users (issue 12): its own budget and plan, after the customers; a spent
    /// budget pauses it without failing the pass. `apply` false only reads.
    pub async fn staff_step(
        &self,
        data: &ScimData,
        run: &str,
        now: UnixTime,
        apply: bool,
    ) -> crate::controlpanel::run::StaffReport {
        let Some(staff) = &self.staff else {
            return Default::default();
        };
        let desired = crate::controlpanel::desired::from_config(&self.config, data, now);
        staff.pass(&desired, run, apply).await
    }

    /// `--dry-run`: the drift, the plan and the B2B step, reading only. The desired state and
    /// the bound customers are read once for all three, as in a pass.
    pub async fn dry_run(&self, data: &ScimData, now: UnixTime) -> Result<DryRun, PassError> {
        let desired = reconcile::desired_state(&self.config, data, now);
        let (plan, drift, bound) = self.plan_drift_bound(&desired, false).await?;
        let b2b = self.b2b_step(&desired, &bound, "dry-run", now, false).await;
        let staff = self.staff_step(data, "dry-run", now, false).await;
        Ok(DryRun {
            plan,
            drift,
            b2b,
            staff,
        })
    }

    /// Plans a pass (creating missing customer groups). Work left in the queue by an earlier run
    /// is finished first by [`Reconciler::pass`], so the plan reads an up-to-date BigCommerce.
    pub async fn plan(&self, data: &ScimData, now: UnixTime) -> Result<Vec<Action>, PassError> {
        let desired = reconcile::desired_state(&self.config, data, now);
        Ok(self.plan_with_drift(&desired, true).await?.0)
    }

    /// The plan and the drift without any write to BigCommerce (`--dry-run`).
    pub async fn preview(
        &self,
        data: &ScimData,
        now: UnixTime,
    ) -> Result<(Vec<Action>, Vec<Drift>), PassError> {
        let desired = reconcile::desired_state(&self.config, data, now);
        self.plan_with_drift(&desired, false).await
    }

    /// What the B2B step would do, reading only.
    pub async fn preview_b2b(
        &self,
        data: &ScimData,
        now: UnixTime,
    ) -> Result<Vec<B2bChange>, PassError> {
        Ok(self.dry_run(data, now).await?.b2b)
    }

    /// The plan and the drift towards `desired`; `create_groups` false reads only.
    pub async fn plan_with_drift(
        &self,
        desired: &Desired,
        create_groups: bool,
    ) -> Result<(Vec<Action>, Vec<Drift>), PassError> {
        let (plan, drift, _) = self.plan_drift_bound(desired, create_groups).await?;
        Ok((plan, drift))
    }

    /// Reads the actual state, then plans towards `desired` and finds the drift. Also returns the
    /// customers bound to a subject, which the B2B step needs after the drain.
    async fn plan_drift_bound(
        &self,
        desired: &Desired,
        create_groups: bool,
    ) -> Result<(Vec<Action>, Vec<Drift>, Vec<BoundCustomer>), PassError> {
        let observe = Observe {
            config: &self.config,
            clients: &self.clients,
            backoff: self.executor.backoff,
        };
        let mut emails: Vec<String> = desired
            .customers
            .iter()
            .map(|d| d.email.to_lowercase())
            .chain(desired.leavers.iter().cloned())
            .collect();
        emails.sort();
        emails.dedup();
        let actual = observe.actual(&emails).await?;
        let attributes = observe.subject_attributes(create_groups).await?;
        let tagged = observe.tagged(&attributes).await?;
        let repair = self.config.provisioning.repair_drift;
        let mut groups = observe
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
        let mut drift = drift::find(
            desired, &tagged, &groups, mode, repair, &conflicts, &mut plan,
        );
        drift.extend(conflicts.into_iter().map(drift::from_conflict));
        Ok((plan, drift, tagged))
    }

    /// B2B Edition membership towards `desired` (see [`b2b_sync`]); `apply` false only reads.
    pub async fn b2b_step(
        &self,
        desired: &Desired,
        bound: &[BoundCustomer],
        run: &str,
        now: UnixTime,
        apply: bool,
    ) -> Vec<B2bChange> {
        B2bStep {
            config: &self.config,
            b2b: &self.b2b,
            clients: &self.clients,
            backoff: self.executor.backoff,
            audit: &self.executor.audit,
        }
        .run(desired, bound, run, now, apply)
        .await
    }
}

/// Runs a pass every `interval` (the first one `interval` after the start) until the task is
/// aborted. A pass still running when the next one is due makes that one skip (logged and
/// audited); every pass is logged and audited (`reconcile`) with its counts or its error.
pub fn spawn_schedule(
    reconciler: Arc<Reconciler>,
    scim: Arc<ScimService>,
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
/// [`WorkQueue::lease`](crate::provisioning::queue::WorkQueue::lease)): with a shared Redis queue, one replica plans per interval. Another
/// replica skips planning and helps work the queue off. True when this replica planned.
pub async fn scheduled_pass(r: &Reconciler, scim: &ScimService) -> bool {
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

async fn run_scheduled_pass(r: &Reconciler, scim: &ScimService) {
    let now = r.executor.clock.now();
    let started = std::time::Instant::now();
    let result = match scim.snapshot().await {
        Ok(data) => r.pass(&data, now).await,
        Err(e) => Err(PassError::Scim(e.detail)),
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
