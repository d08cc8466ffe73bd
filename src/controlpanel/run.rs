//! A control-panel pass over every `[[account]]`: read (or reuse the cached read), plan, then
//! spend the budget one step at a time in plan order. A spent budget or a 429 pauses the
//! account (the rest waits for the next pass, recomputed from a fresh plan: nothing is lost); a
//! refused step is audited and the account is read again next pass.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;

use super::budget::CallBudget;
use super::drift::{self, PermissionDrift};
use super::model::{DesiredStaffState, Observed};
use super::observe::{self, Halt, spend_and_call};
use super::plan::{self, Change, Plan, Rules, Step};
use crate::audit::{AuditEvent, AuditLog, EventKind, Outcome};
use crate::bigcommerce::account_api::{AccountApi, AccountApiError};
use crate::bigcommerce::api::AccountError;
use crate::clock::{SharedClock, UnixTime};
use crate::config::account::ControlPanelAccount;

/// A cached read is used for this long (then read again: an administrator's changes in the
/// control panel show within the hour).
pub const CACHE_MAX_AGE_SECS: i64 = 3600;

pub struct StaffAccount {
    pub config: ControlPanelAccount,
    pub api: AccountApi,
}

impl StaffAccount {
    fn stores(&self) -> BTreeSet<String> {
        self.config
            .stores
            .iter()
            .map(|s| s.store_hash.clone())
            .collect()
    }

    fn rules(&self) -> Rules {
        Rules {
            keep_account_on_leave: self.config.keep_account_on_leave,
            manage_all: self.config.manage_all,
        }
    }
}

struct Cached {
    observed: Observed,
    read_at: UnixTime,
}

pub struct StaffReconciler {
    pub accounts: Vec<StaffAccount>,
    pub budget: Arc<dyn CallBudget>,
    pub audit: AuditLog,
    pub clock: SharedClock,
    cache: Mutex<HashMap<String, Cached>>,
    /// The last pass's pending steps per account, for the metrics.
    pending: Mutex<BTreeMap<String, Vec<Step>>>,
    gauges: std::sync::OnceLock<Gauges>,
    /// Which drifts were audited, so an unchanged one is not audited at every pass.
    drift_ledger: Mutex<drift::DriftLedger>,
}

/// The control-panel gauges (registered by [`crate::metrics::Metrics::control_panel_gauges`]).
pub struct Gauges {
    pub calls_used: prometheus::IntGaugeVec,
    pub calls_left: prometheus::IntGaugeVec,
    pub pending: prometheus::IntGaugeVec,
    pub oldest_leaver: prometheus::IntGaugeVec,
}

impl Gauges {
    /// Sets one account's gauges from its part of a pass.
    fn set(&self, r: &AccountReport, desired: &DesiredStaffState, now: UnixTime) {
        let a = r.account.as_str();
        let used = i64::from(r.used_last_hour);
        self.calls_used.with_label_values(&[a]).set(used);
        self.calls_left
            .with_label_values(&[a])
            .set((i64::from(super::budget::HOURLY_LIMIT) - used).max(0));
        let pending = r.pending();
        for (kind, n) in plan::by_kind(&pending) {
            self.pending
                .with_label_values(&[a, kind.label()])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let oldest = pending
            .iter()
            .filter(|s| s.kind == plan::Kind::Leaver)
            .filter_map(|s| desired.leavers.get(s.change.email()).copied().flatten())
            .min()
            .map(|since| (now - since).max(0))
            .unwrap_or(0);
        self.oldest_leaver.with_label_values(&[a]).set(oldest);
    }
}

/// One account's part of a pass.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AccountReport {
    pub account: String,
    pub plan: Plan,
    pub done: Vec<Step>,
    pub failed: Vec<(Step, String)>,
    /// Calls spent (reads and steps).
    pub calls: u32,
    /// The pages read (0 when the cached read was used).
    pub reads: u32,
    /// Paused by the budget or a 429: the rest of the plan goes on at this time.
    pub paused_until: Option<UnixTime>,
    /// Why nothing or not everything was done, other than a pause.
    pub error: Option<String>,
    pub drift: Vec<PermissionDrift>,
    /// Calls spent in the last hour, after this pass.
    pub used_last_hour: u32,
}

impl AccountReport {
    /// Steps of the plan not done this pass.
    pub fn pending(&self) -> Vec<Step> {
        let mut left = self.plan.steps.clone();
        for d in &self.done {
            if let Some(i) = left.iter().position(|s| s == d) {
                left.remove(i);
            }
        }
        left
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct StaffReport {
    pub accounts: Vec<AccountReport>,
}

impl StaffReconciler {
    pub fn new(
        accounts: Vec<StaffAccount>,
        budget: Arc<dyn CallBudget>,
        audit: AuditLog,
        clock: SharedClock,
    ) -> Self {
        StaffReconciler {
            accounts,
            budget,
            audit,
            clock,
            cache: Mutex::new(HashMap::new()),
            pending: Mutex::new(BTreeMap::new()),
            gauges: std::sync::OnceLock::new(),
            drift_ledger: Mutex::new(drift::DriftLedger::default()),
        }
    }

    /// Every account's API client built from the configuration.
    pub fn from_config(
        accounts: &[ControlPanelAccount],
        budget: Arc<dyn CallBudget>,
        audit: AuditLog,
        clock: SharedClock,
    ) -> Result<Self, AccountError> {
        let accounts = accounts
            .iter()
            .map(|a| {
                Ok(StaffAccount {
                    api: AccountApi::new(a)?,
                    config: a.clone(),
                })
            })
            .collect::<Result<Vec<_>, AccountError>>()?;
        Ok(Self::new(accounts, budget, audit, clock))
    }

    /// A pass: `apply` false plans and finds drift only (reads still spend the budget).
    pub async fn pass(&self, desired: &DesiredStaffState, run: &str, apply: bool) -> StaffReport {
        let mut report = StaffReport::default();
        for a in &self.accounts {
            let r = self.account_pass(a, desired, run, apply).await;
            self.pending.lock().insert(a.config.id.clone(), r.pending());
            if let Some(g) = self.gauges.get() {
                g.set(&r, desired, self.clock.now());
            }
            report.accounts.push(r);
        }
        report
    }

    /// Sets the gauges each pass updates (once; the gateway's metrics).
    pub fn set_gauges(&self, gauges: Gauges) {
        let _ = self.gauges.set(gauges);
    }

    /// The pending steps of the last pass per account (metrics).
    pub fn pending(&self) -> BTreeMap<String, Vec<Step>> {
        self.pending.lock().clone()
    }

    /// The cached read and when it was made, when fresh enough.
    fn cached(&self, account: &str, now: UnixTime) -> Option<(Observed, UnixTime)> {
        self.cache
            .lock()
            .get(account)
            .filter(|c| now - c.read_at < CACHE_MAX_AGE_SECS)
            .map(|c| (c.observed.clone(), c.read_at))
    }

    /// What `a` holds and when it was read, through the pass's own read path: the cached read
    /// while fresh, else a read whose pages each spend a call of the budget first (`calls`
    /// counts them). `storegate access-report --control-panel` reads through this, so a report
    /// can never take calls the reconciler's budget does not know about.
    pub async fn snapshot(
        &self,
        a: &StaffAccount,
        calls: &mut u32,
    ) -> Result<(Observed, UnixTime), Halt> {
        let now = self.clock.now();
        if let Some(cached) = self.cached(&a.config.id, now) {
            return Ok(cached);
        }
        let o = observe::read(
            &a.api,
            self.budget.as_ref(),
            &a.config.id,
            &self.clock,
            &a.stores(),
            calls,
        )
        .await?;
        self.remember(&a.config.id, &o, now);
        Ok((o, now))
    }

    fn remember(&self, account: &str, observed: &Observed, read_at: UnixTime) {
        self.cache.lock().insert(
            account.to_owned(),
            Cached {
                observed: observed.clone(),
                read_at,
            },
        );
    }

    async fn read(&self, a: &StaffAccount, r: &mut AccountReport) -> Result<Observed, Halt> {
        let mut calls = 0;
        let result = observe::read(
            &a.api,
            self.budget.as_ref(),
            &a.config.id,
            &self.clock,
            &a.stores(),
            &mut calls,
        )
        .await;
        r.calls += calls;
        r.reads += calls;
        if let Ok(o) = &result {
            self.remember(&a.config.id, o, self.clock.now());
        }
        result
    }

    async fn account_pass(
        &self,
        a: &StaffAccount,
        desired: &DesiredStaffState,
        run: &str,
        apply: bool,
    ) -> AccountReport {
        let id = a.config.id.clone();
        let mut r = AccountReport {
            account: id.clone(),
            ..Default::default()
        };
        let mut fresh = false;
        let mut observed = match self.cached(&id, self.clock.now()) {
            Some((o, _)) => o,
            None => {
                fresh = true;
                match self.read(a, &mut r).await {
                    Ok(o) => o,
                    Err(h) => {
                        self.halted(&mut r, h);
                        self.record_used(&mut r).await;
                        return r;
                    }
                }
            }
        };
        let mut p = plan::plan(desired, &observed, &a.stores(), a.rules());
        // A removal of someone storegate added since the last read needs their user id.
        if p.needs_ids() && !fresh {
            match self.read(a, &mut r).await {
                Ok(o) => {
                    observed = o;
                    p = plan::plan(desired, &observed, &a.stores(), a.rules());
                }
                Err(h) => {
                    self.halted(&mut r, h);
                    r.plan = p;
                    self.record_used(&mut r).await;
                    return r;
                }
            }
        }
        r.plan = p;
        r.drift = drift::find(&id, desired, &observed);
        if apply {
            let now = self.clock.now();
            let due = self.drift_ledger.lock().to_audit(&id, now, &r.drift);
            drift::audit(&self.audit, run, now, &due);
            self.apply(a, &mut r, &mut observed, run).await;
        }
        self.record_used(&mut r).await;
        r
    }

    /// Sets the report's calls used in the last hour. A budget that cannot be read counts as
    /// spent (the gauges then show no headroom, not a full hour) and says so in the report.
    async fn record_used(&self, r: &mut AccountReport) {
        match self.budget.used(&r.account, self.clock.now()).await {
            Ok(n) => r.used_last_hour = n,
            Err(e) => {
                r.used_last_hour = super::budget::HOURLY_LIMIT;
                r.error.get_or_insert_with(|| {
                    format!("the Account API budget cannot be read, so calls used in the last hour are unknown (counted as all {}): {e}", super::budget::HOURLY_LIMIT)
                });
            }
        }
    }

    fn halted(&self, r: &mut AccountReport, h: Halt) {
        match h {
            Halt::Paused { retry_at } => r.paused_until = Some(retry_at),
            Halt::Budget(e) => {
                r.error = Some(format!("the Account API budget cannot be read: {e}"))
            }
            Halt::Failed(e) => {
                self.cache.lock().remove(&r.account);
                r.error = Some(e.to_string());
            }
        }
    }

    async fn apply(
        &self,
        a: &StaffAccount,
        r: &mut AccountReport,
        observed: &mut Observed,
        run: &str,
    ) {
        let id = a.config.id.clone();
        for step in r.plan.steps.clone() {
            let mut calls = 0;
            let result = spend_and_call(
                self.budget.as_ref(),
                &id,
                &self.clock,
                &mut calls,
                send(&a.api, &step.change),
            )
            .await;
            r.calls += calls;
            match result {
                Ok(()) => {
                    plan::apply(observed, &step.change);
                    self.audit_step(&id, run, &step, Outcome::Allow, None);
                    r.done.push(step);
                }
                Err(Halt::Failed(e)) => {
                    let transient = matches!(e, AccountApiError::Transient(_));
                    self.audit_step(&id, run, &step, Outcome::Error, Some(e.to_string()));
                    r.failed.push((step, e.to_string()));
                    // What the account holds is no longer known: read it again next pass.
                    self.cache.lock().remove(&id);
                    if transient {
                        r.error = Some(e.to_string());
                        return;
                    }
                }
                Err(h) => {
                    self.halted(r, h);
                    break;
                }
            }
        }
        // The cache keeps storegate's own changes, so the next pass need not read again.
        if let Some(c) = self.cache.lock().get_mut(&id) {
            c.observed = observed.clone();
        }
    }

    fn audit_step(
        &self,
        account: &str,
        run: &str,
        step: &Step,
        outcome: Outcome,
        error: Option<String>,
    ) {
        let mut ev = AuditEvent::new(
            self.clock.now(),
            &format!("reconcile-{run}"),
            EventKind::Provision,
            outcome,
        );
        ev.actor = Some("reconcile".into());
        ev.run = Some(run.to_owned());
        ev.target = Some(format!("control-panel:{account}"));
        ev.email = Some(step.change.email().to_owned());
        ev.store = step.change.store().map(str::to_owned);
        ev.reason = Some(format!("cp_{}", step.change.name()));
        ev.detail = Some(match error {
            Some(e) => format!("{} ({}) failed: {e}", step.change.name(), step.kind.label()),
            None => format!("{} ({})", step.change.name(), step.kind.label()),
        });
        self.audit.record(ev);
    }
}

async fn send(api: &AccountApi, change: &Change) -> Result<(), AccountApiError> {
    match change {
        Change::RemoveUserFromStore {
            user_id: Some(user),
            store,
            ..
        } => api.remove_user_from_store(user, store).await,
        Change::RemoveUserFromStore { user_id: None, .. } => Err(AccountApiError::Unexpected(
            "the user id is not known yet; the account is read again next pass".into(),
        )),
        Change::RemoveUserFromAccount { email } => api.remove_user_from_account(email).await,
        Change::AddUserToAccount { email } => api.add_user_to_account(email).await,
        Change::AddUserToStore { email, store } => api.add_user_to_store(email, store).await,
    }
}
