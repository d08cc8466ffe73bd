//! Permission drift (pure): per managed person and store, the permissions the grant expects that
//! the user lacks (missing) and the ones they hold beyond it (excess), high-risk excess first.
//! The Account API cannot write permissions, so drift is only reported (audit events,
//! `reconcile --dry-run`, `access-report --control-panel`); an administrator or an Identity
//! Governance review acts on it in the control panel.

use std::collections::BTreeSet;

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
pub fn audit(log: &AuditLog, run: &str, now: UnixTime, drift: &[PermissionDrift]) {
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
