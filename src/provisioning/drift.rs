//! Drift: customers storegate provisioned (or adopted) that BigCommerce shows differently from
//! the desired state.
//!
//! Every pass reads the customers that carry the `storegate_subject` attribute
//! (`GET /v3/customers/attribute-values?attribute_id:in=..`, see [`super::observe`]). One that is
//! not in the desired state and not already in the plan (e.g. its SCIM user vanished without a
//! tombstone, or it was adopted and the grant went) is `not_desired` drift; a desired one whose
//! channels or group differ is `changed` drift. Each is logged and audited (`drift`).
//! `not_desired` drift is deprovisioned only with `[provisioning] repair_drift = true`; `changed`
//! drift is repaired by the plan's own update (the desired state is the source of truth; a policy
//! change and an edit in BigCommerce look the same). A customer found by a person's email but
//! bound to another subject is `subject_conflict`: it gets no action, and is logged, audited and
//! printed with the plan, every pass, until an administrator resolves it.

use std::collections::HashMap;

use super::observe::BoundCustomer;
use super::reconcile::{self, Action, GroupIds};
use crate::audit::{AuditEvent, AuditLog, EventKind, Outcome};
use crate::config::provisioning::Deprovision;

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

pub fn find(
    desired: &reconcile::Desired,
    tagged: &[BoundCustomer],
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

/// A subject conflict as drift: reported every pass, never acted on.
pub fn from_conflict(c: reconcile::Conflict) -> Drift {
    Drift {
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
    }
}

/// Logs and audits (`drift`) each drift of pass `run`.
pub fn report(audit: &AuditLog, run: &str, now: crate::clock::UnixTime, drift: &[Drift]) {
    for d in drift {
        tracing::warn!(
            run = %run,
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
            &format!("reconcile-{run}"),
            EventKind::Drift,
            if d.repaired {
                Outcome::Allow
            } else {
                Outcome::Deny
            },
        );
        ev.actor = Some("reconcile".into());
        ev.run = Some(run.to_owned());
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
        audit.record(ev);
    }
}
