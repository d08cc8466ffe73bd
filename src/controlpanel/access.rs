//! The control-panel access report (`storegate access-report --control-panel`, issue 12): one
//! row per person × store of every `[[account]]`, with what an administrator or an Identity
//! Governance review can act on: the permission sets the policy expects, the permissions
//! BigCommerce holds, missing, excess and high-risk excess ones (flagged rows first), people
//! storegate will remove, and the users it does not manage.
//!
//! [`rows`] is pure: the desired state, the expected set names and one read of the account. The
//! read comes from [`StaffReconciler::snapshot`], the reconciler's own budgeted and cached read
//! path ([`report`]): a report spends the same 70-per-hour budget as the reconciler, and when
//! that budget is spent it fails with a message saying when to run it again, never a partial
//! report. The drift itself is [`drift::find`], the reconciler's, so the report and the
//! `drift` audit events cannot disagree.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::budget::HOURLY_LIMIT;
use super::desired;
use super::drift::{self, NO_PERMISSION_REQUIRED};
use super::model::{DesiredStaffState, Observed};
use super::observe::Halt;
use super::run::StaffReconciler;
use crate::bigcommerce::account_api::AccountApiError;
use crate::clock::{UnixTime, rfc3339};
use crate::config::Config;
use crate::config::account::ControlPanelAccount;
use crate::policy::HIGH_RISK_PERMISSIONS;
use crate::provisioning::reconcile::identity_of;
use crate::provisioning::scim::{ScimData, user_active};

/// Email -> store hash -> the `[[permission_set]]` names the policy grants there.
pub type ExpectedSets = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RowKind {
    /// Managed, granted and in the store, holding other permissions than the sets.
    Drift,
    /// Managed, granted, in the store, holding exactly the sets.
    Ok,
    /// Granted, not in the store yet: the reconciler adds them (BigCommerce's invitation).
    PendingAddition,
    /// In the store without a grant: the reconciler removes them (see `reason`).
    ToRemove,
    /// Not in SCIM's population (store owner, support, service accounts): left alone.
    Unmanaged,
}

impl RowKind {
    fn as_str(self) -> &'static str {
        match self {
            RowKind::Drift => "drift",
            RowKind::Ok => "ok",
            RowKind::PendingAddition => "pending_addition",
            RowKind::ToRemove => "to_remove",
            RowKind::Unmanaged => "unmanaged",
        }
    }
}

/// One person's access to one store. Lists are sorted; codes never include
/// `No_Permission_Required` (every store user holds it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    /// Stable across reports while the person keeps the store:
    /// `control_panel:{account}:{store}:{email}`.
    pub id: String,
    pub kind: RowKind,
    /// A high-risk permission is held beyond the sets (or by someone to be removed).
    pub flagged: bool,
    /// The `[[account]]` id.
    pub account: String,
    /// The `[[bigcommerce]]` id, and its store hash.
    pub store: String,
    pub store_hash: String,
    /// `{idp}:{subject}` of a managed active person; `None` for leavers and unmanaged users.
    pub subject: Option<String>,
    pub email: String,
    /// `bc/account/user/{id}`; `None` for a pending addition.
    pub user_id: Option<String>,
    pub expected_sets: Vec<String>,
    /// The union of the expected sets' codes.
    pub expected: Vec<String>,
    /// What BigCommerce reported the user holds in this store.
    pub held: Vec<String>,
    pub missing: Vec<String>,
    pub excess: Vec<String>,
    /// The high-risk codes among `excess`.
    pub high_risk: Vec<String>,
    /// Why a `to_remove` row goes: `leaver` (inactive or deleted in SCIM), `no_grant` (active,
    /// no grant for this store), `manage_all` (not in SCIM, and the account has `manage_all`).
    pub reason: Option<String>,
    /// When the permissions were read (RFC 3339).
    pub read_at: String,
}

/// The CSV columns, in order (the same names as the JSON members).
pub const COLUMNS: [&str; 17] = [
    "id",
    "kind",
    "flagged",
    "account",
    "store",
    "store_hash",
    "subject",
    "email",
    "user_id",
    "expected_sets",
    "expected",
    "held",
    "missing",
    "excess",
    "high_risk",
    "reason",
    "read_at",
];

/// The set names the policy grants each active SCIM person, per store hash (the desired state
/// keeps only the codes; a review needs the names).
pub fn expected_sets(cfg: &Config, data: &ScimData, now: UnixTime) -> ExpectedSets {
    let mut out = ExpectedSets::new();
    for (id, user) in &data.users {
        let user = &user.value();
        if !user_active(user) {
            continue;
        }
        let Some(identity) = identity_of(cfg, data, id, user) else {
            continue;
        };
        let Some(email) = identity.email.as_ref().map(|e| e.to_lowercase()) else {
            continue;
        };
        for (account, grant) in cfg.policy.control_panel_grants(&identity, now) {
            if let Some(b) = cfg.bigcommerce.iter().find(|b| b.id == account) {
                out.entry(email.clone())
                    .or_default()
                    .entry(b.store_hash.clone())
                    .or_default()
                    .extend(grant.sets);
            }
        }
    }
    out
}

fn codes<'a>(it: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    it.into_iter()
        .filter(|p| p.as_str() != NO_PERMISSION_REQUIRED)
        .cloned()
        .collect()
}

fn high_risk(excess: &[String]) -> Vec<String> {
    excess
        .iter()
        .filter(|p| HIGH_RISK_PERMISSIONS.contains(&p.as_str()))
        .cloned()
        .collect()
}

/// The rows of one account from one read of it (`read_at`), flagged rows first, then by id.
pub fn rows(
    account: &ControlPanelAccount,
    desired: &DesiredStaffState,
    sets: &ExpectedSets,
    observed: &Observed,
    read_at: UnixTime,
) -> Vec<Row> {
    let drift: BTreeMap<(String, String), drift::PermissionDrift> =
        drift::find(&account.id, desired, observed)
            .into_iter()
            .map(|d| ((d.email.clone(), d.store.clone()), d))
            .collect();
    let mut out = Vec::new();
    let empty = BTreeMap::new();
    for store in &account.stores {
        let hash = &store.store_hash;
        let members = observed.stores.get(hash).unwrap_or(&empty);
        let row = |email: &str, kind: RowKind| Row {
            id: format!("control_panel:{}:{}:{email}", account.id, store.id),
            kind,
            flagged: false,
            account: account.id.clone(),
            store: store.id.clone(),
            store_hash: hash.clone(),
            subject: None,
            email: email.to_owned(),
            user_id: None,
            expected_sets: Vec::new(),
            expected: Vec::new(),
            held: Vec::new(),
            missing: Vec::new(),
            excess: Vec::new(),
            high_risk: Vec::new(),
            reason: None,
            read_at: rfc3339(read_at),
        };
        for (email, member) in members {
            let held = codes(&member.permissions);
            let staff = desired.staff.get(email);
            let expected = staff.and_then(|s| s.stores.get(hash));
            let mut r = match (staff, expected) {
                (Some(s), Some(expected)) => {
                    let found = drift.get(&(email.clone(), hash.clone()));
                    let mut r = row(
                        email,
                        if found.is_some() {
                            RowKind::Drift
                        } else {
                            RowKind::Ok
                        },
                    );
                    r.subject = Some(s.subject.clone());
                    r.expected = codes(expected);
                    if let Some(d) = found {
                        r.missing = d.missing.clone();
                        r.excess = d.excess.clone();
                        r.high_risk = d.high_risk.clone();
                    }
                    r
                }
                (staff, _) => {
                    let reason = if staff.is_some() {
                        Some("no_grant")
                    } else if desired.leavers.contains_key(email) {
                        Some("leaver")
                    } else if account.manage_all {
                        Some("manage_all")
                    } else {
                        None
                    };
                    match reason {
                        // Storegate's own judgement ends at its population: an unmanaged
                        // user's permissions are listed, never called excess.
                        None => row(email, RowKind::Unmanaged),
                        Some(reason) => {
                            let mut r = row(email, RowKind::ToRemove);
                            r.subject = staff.map(|s| s.subject.clone());
                            r.reason = Some(reason.to_owned());
                            r.high_risk = high_risk(&held);
                            r.excess = held.clone();
                            r
                        }
                    }
                }
            };
            r.user_id = member.user_id.clone();
            r.held = held;
            r.expected_sets = sets
                .get(email)
                .and_then(|s| s.get(hash))
                .filter(|_| expected.is_some())
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default();
            r.flagged = !r.high_risk.is_empty();
            out.push(r);
        }
        for (email, s) in &desired.staff {
            let Some(expected) = s.stores.get(hash) else {
                continue;
            };
            if members.contains_key(email) {
                continue;
            }
            let mut r = row(email, RowKind::PendingAddition);
            r.subject = Some(s.subject.clone());
            r.expected = codes(expected);
            r.expected_sets = sets
                .get(email)
                .and_then(|s| s.get(hash))
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default();
            out.push(r);
        }
    }
    sort(&mut out);
    out
}

/// Flagged rows first, then by id.
pub fn sort(rows: &mut [Row]) {
    rows.sort_by(|a, b| (!a.flagged, &a.id).cmp(&(!b.flagged, &b.id)));
}

fn fields(r: &Row) -> Vec<String> {
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let list = |v: &[String]| v.join(" ");
    vec![
        r.id.clone(),
        r.kind.as_str().to_owned(),
        r.flagged.to_string(),
        r.account.clone(),
        r.store.clone(),
        r.store_hash.clone(),
        opt(&r.subject),
        r.email.clone(),
        opt(&r.user_id),
        list(&r.expected_sets),
        list(&r.expected),
        list(&r.held),
        list(&r.missing),
        list(&r.excess),
        list(&r.high_risk),
        opt(&r.reason),
        r.read_at.clone(),
    ]
}

/// The rows as CSV (lists space-separated), through the storefront report's writer.
pub fn to_csv(rows: &[Row]) -> String {
    crate::access_review::csv(&COLUMNS, rows.iter().map(fields))
}

/// The rows as a JSON array (lists as arrays, absent values `null`).
pub fn to_json(rows: &[Row]) -> String {
    serde_json::to_string_pretty(rows).unwrap_or_else(|_| "[]".to_owned())
}

/// How one account was read for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRead {
    pub account: String,
    pub read_at: UnixTime,
    /// Calls this report spent (0 when a fresh cached read was used).
    pub calls: u32,
    /// Calls spent in the last hour, this report's included.
    pub used_last_hour: u32,
}

impl AccountRead {
    /// The line `access-report` writes on stderr.
    pub fn describe(&self) -> String {
        format!(
            "[[account]] \"{}\": permissions read at {} with {} Account API call(s); {} of {HOURLY_LIMIT} calls used in the last hour",
            self.account,
            rfc3339(self.read_at),
            self.calls,
            self.used_last_hour
        )
    }
}

/// Why the report could not be made, in words an administrator can act on. No report is
/// printed then: half an account's stores would read as "nobody else has access".
pub fn halt_message(account: &str, halt: &Halt) -> String {
    match halt {
        Halt::Paused { retry_at } => format!(
            "[[account]] \"{account}\": the Account API budget is spent ({HOURLY_LIMIT} calls per hour, shared with `storegate reconcile` and every replica, or BigCommerce answered 429); the next call is free at {}. No report was printed: run it again after that time",
            rfc3339(*retry_at)
        ),
        Halt::Budget(e) => format!(
            "[[account]] \"{account}\": the Account API budget cannot be consulted ({e}), so nothing was read. No report was printed"
        ),
        Halt::Failed(AccountApiError::Refused { status, message })
            if *status == 401 || *status == 403 =>
        {
            format!(
                "[[account]] \"{account}\": the Account API refused the token ({status}: {message}). Set `access_token` to the token of an account-level API account of this account with the scope account_users_read. No report was printed"
            )
        }
        Halt::Failed(e) => format!(
            "[[account]] \"{account}\": the permissions could not be read: {e}. No report was printed"
        ),
    }
}

/// Reads every account through the reconciler's budgeted, cached path and builds the rows; the
/// first account that cannot be read fully fails the whole report with [`halt_message`].
pub async fn report(
    cfg: &Config,
    staff: &StaffReconciler,
    data: &ScimData,
    now: UnixTime,
) -> Result<(Vec<Row>, Vec<AccountRead>), String> {
    let desired = desired::from_config(cfg, data, now);
    let sets = expected_sets(cfg, data, now);
    let mut out = Vec::new();
    let mut reads = Vec::new();
    for a in &staff.accounts {
        let mut calls = 0;
        let (observed, read_at) = staff
            .snapshot(a, &mut calls)
            .await
            .map_err(|h| halt_message(&a.config.id, &h))?;
        out.extend(rows(&a.config, &desired, &sets, &observed, read_at));
        reads.push(AccountRead {
            account: a.config.id.clone(),
            read_at,
            calls,
            used_last_hour: staff
                .budget
                .used(&a.config.id, staff.clock.now())
                .await
                .unwrap_or(calls),
        });
    }
    sort(&mut out);
    Ok((out, reads))
}

#[cfg(test)]
mod tests;
