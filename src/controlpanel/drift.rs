//! Permission drift (pure): per managed person and store, the permissions the grant expects that
//! the user lacks (missing) and the ones they hold beyond it (excess), high-risk excess first.
//! The Account API cannot write permissions, so drift is only reported (audit events,
//! `reconcile --dry-run`, `access-report --control-panel`); an administrator or an Identity
//! Governance review acts on it in the control panel.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde::Serialize;

use super::model::{DesiredStaffState, Observed};
use crate::audit::{AuditEvent, AuditLog, EventKind, Outcome};
use crate::clock::UnixTime;

/// Every store user holds it; never drift.
pub const NO_PERMISSION_REQUIRED: &str = "No_Permission_Required";

/// Permissions that let the holder hand out access or take the store's data wholesale
/// (BigCommerce: only the store owner grants "high-risk" permissions); one list, the policy's.
/// An excess one is reported before any other drift.
use crate::policy::HIGH_RISK_PERMISSIONS as HIGH_RISK;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PermissionDrift {
    pub account: String,
    pub email: String,
    pub subject: String,
    pub store: String,
    pub missing: Vec<String>,
    /// Excess permissions, high-risk ones included.
    pub excess: Vec<String>,
    /// The high-risk ones among `excess`.
    pub high_risk: Vec<String>,
}

/// The drift of every managed person in a store they are expected in and have access to
/// (someone not yet added is a planned addition, not drift). High-risk first, then by email and
/// store.
pub fn find(
    account: &str,
    desired: &DesiredStaffState,
    observed: &Observed,
) -> Vec<PermissionDrift> {
    let mut out = Vec::new();
    for (email, staff) in &desired.staff {
        for (store, expected) in &staff.stores {
            let Some(member) = observed.stores.get(store).and_then(|m| m.get(email)) else {
                continue;
            };
            let real = |p: &&String| p.as_str() != NO_PERMISSION_REQUIRED;
            let missing: Vec<String> = expected
                .difference(&member.permissions)
                .filter(real)
                .cloned()
                .collect();
            let excess: Vec<String> = member
                .permissions
                .difference(expected)
                .filter(real)
                .cloned()
                .collect();
            if missing.is_empty() && excess.is_empty() {
                continue;
            }
            let high_risk = excess
                .iter()
                .filter(|p| HIGH_RISK.contains(&p.as_str()))
                .cloned()
                .collect();
            out.push(PermissionDrift {
                account: account.to_owned(),
                email: email.clone(),
                subject: staff.subject.clone(),
                store: store.clone(),
                missing,
                excess,
                high_risk,
            });
        }
    }
    // `false` sorts first: high-risk drift leads.
    out.sort_by(|a, b| {
        (a.high_risk.is_empty(), &a.email, &a.store).cmp(&(
            b.high_risk.is_empty(),
            &b.email,
            &b.store,
        ))
    });
    out
}

/// The reason code of a drift: the worst it holds.
pub fn reason(d: &PermissionDrift) -> &'static str {
    if !d.high_risk.is_empty() {
        "cp_permission_high_risk"
    } else if !d.excess.is_empty() {
        "cp_permission_excess"
    } else {
        "cp_permission_missing"
    }
}

/// One audit event (`drift`, outcome deny) per person and store.
pub fn audit(log: &AuditLog, run: &str, now: UnixTime, drift: &[&PermissionDrift]) {
    for d in drift {
        let mut ev = AuditEvent::new(
            now,
            &format!("reconcile-{run}"),
            EventKind::Drift,
            Outcome::Deny,
        );
        ev.actor = Some("reconcile".into());
        ev.run = Some(run.to_owned());
        ev.subject = Some(d.subject.clone());
        ev.email = Some(d.email.clone());
        ev.store = Some(d.store.clone());
        ev.target = Some(format!("control-panel:{}", d.account));
        ev.reason = Some(reason(d).into());
        ev.detail = Some(describe(d));
        log.record(ev);
    }
}

/// An unchanged drift is audited again after this long, so a daily review of the trail still
/// sees a permission nobody fixed.
pub const DRIFT_REMINDER_SECS: i64 = 24 * 3600;

/// Which drifts deserve an audit event. A pass runs every few minutes, and a person whose
/// permissions an administrator has not set yet drifts at every one (a 500-person wave made
/// 54,724 identical events): each drift is audited when it first appears or changes, then once a
/// day while it lasts; one that was fixed and comes back is new again. Kept per replica, so two
/// replicas may each report a drift once.
#[derive(Debug, Default)]
pub struct DriftLedger {
    /// (account, store, email) -> (the drift as described, when it was last audited).
    seen: HashMap<(String, String, String), (String, UnixTime)>,
}

impl DriftLedger {
    /// The drifts of `account` found at `now` that are to be audited; remembers them, and
    /// forgets the account's drifts that are gone.
    pub fn to_audit<'a>(
        &mut self,
        account: &str,
        now: UnixTime,
        drift: &'a [PermissionDrift],
    ) -> Vec<&'a PermissionDrift> {
        let current: HashSet<(String, String, String)> = drift
            .iter()
            .map(|d| (d.account.clone(), d.store.clone(), d.email.clone()))
            .collect();
        self.seen
            .retain(|k, _| k.0 != account || current.contains(k));
        let mut out = Vec::new();
        for d in drift {
            let key = (d.account.clone(), d.store.clone(), d.email.clone());
            let described = describe(d);
            let due = match self.seen.get(&key) {
                Some((before, at)) => {
                    *before != described || now.saturating_sub(*at) >= DRIFT_REMINDER_SECS
                }
                None => true,
            };
            if due {
                self.seen.insert(key, (described, now));
                out.push(d);
            }
        }
        out
    }
}

/// `high-risk excess [..]; excess [..]; missing [..]` (the parts that apply).
pub fn describe(d: &PermissionDrift) -> String {
    let mut parts = Vec::new();
    if !d.high_risk.is_empty() {
        parts.push(format!("high-risk excess {}", d.high_risk.join(" ")));
    }
    let other: BTreeSet<&String> = d
        .excess
        .iter()
        .filter(|p| !d.high_risk.contains(p))
        .collect();
    if !other.is_empty() {
        parts.push(format!(
            "excess {}",
            other.into_iter().cloned().collect::<Vec<_>>().join(" ")
        ));
    }
    if !d.missing.is_empty() {
        parts.push(format!("missing {}", d.missing.join(" ")));
    }
    parts.join("; ")
}

#[cfg(test)]
mod ledger_tests {
    use super::*;

    fn drift(email: &str, missing: &[&str]) -> PermissionDrift {
        PermissionDrift {
            account: "acme".into(),
            email: email.into(),
            subject: format!("corp:{email}"),
            store: "abc123".into(),
            missing: missing.iter().map(|s| s.to_string()).collect(),
            excess: vec![],
            high_risk: vec![],
        }
    }

    fn emails(v: Vec<&PermissionDrift>) -> Vec<String> {
        v.into_iter().map(|d| d.email.clone()).collect()
    }

    #[test]
    fn a_drift_is_audited_when_new_or_changed_and_daily_while_it_lasts() {
        let mut l = DriftLedger::default();
        let first = [
            drift("ana@x", &["Manage_Orders"]),
            drift("bo@x", &["Manage_Products"]),
        ];
        assert_eq!(emails(l.to_audit("acme", 1_000, &first)), ["ana@x", "bo@x"]);
        // The next pass finds the same: nothing new to say.
        assert!(l.to_audit("acme", 1_900, &first).is_empty());
        // Ana's drift changes: only hers is audited.
        let changed = [
            drift("ana@x", &["Manage_Orders", "Manage_Customers"]),
            drift("bo@x", &["Manage_Products"]),
        ];
        assert_eq!(emails(l.to_audit("acme", 2_800, &changed)), ["ana@x"]);
        // A day after Bo's was audited it is audited again; Ana's (audited later) not yet.
        assert_eq!(
            emails(l.to_audit("acme", 1_000 + DRIFT_REMINDER_SECS, &changed)),
            ["bo@x"]
        );
    }

    #[test]
    fn a_fixed_drift_that_comes_back_is_new_again_and_other_accounts_are_kept() {
        let mut l = DriftLedger::default();
        let ana = [drift("ana@x", &["Manage_Orders"])];
        assert_eq!(l.to_audit("acme", 10, &ana).len(), 1);
        let mut other = drift("cy@x", &["Manage_Orders"]);
        other.account = "beta".into();
        assert_eq!(
            l.to_audit("beta", 10, std::slice::from_ref(&other)).len(),
            1
        );
        // Fixed in acme: forgotten there, and beta's record is untouched.
        assert!(l.to_audit("acme", 20, &[]).is_empty());
        assert_eq!(l.to_audit("acme", 30, &ana).len(), 1);
        assert!(
            l.to_audit("beta", 30, std::slice::from_ref(&other))
                .is_empty()
        );
    }
}
