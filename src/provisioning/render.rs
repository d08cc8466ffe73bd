//! The reconcile pass as text for `storegate reconcile`: one line per drift, planned action and
//! B2B change. Only the CLI prints these; the pass itself returns typed reports.

use super::b2b_sync::{B2bChange, B2bChangeKind};
use super::drift::{Drift, DriftKind};
use super::reconcile::Action;

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

/// The B2B step as text, one customer a line (unchanged ones left out).
pub fn render_b2b(changes: &[B2bChange]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for c in changes {
        let what = match c.kind {
            B2bChangeKind::Unchanged => continue,
            B2bChangeKind::Created | B2bChangeKind::AfterCreate => "b2b-add ",
            B2bChangeKind::RoleChanged => "b2b-role",
            B2bChangeKind::Removed => "b2b-rm  ",
            B2bChangeKind::Conflict => "conflict",
            B2bChangeKind::Failed => "b2b-fail",
        };
        let _ = writeln!(
            out,
            "{what} {:<10} {} company {} role {} -> {}{}",
            c.account,
            c.email,
            c.company_id,
            c.before.as_deref().unwrap_or("-"),
            c.after.as_deref().unwrap_or("-"),
            if c.detail.is_empty() {
                String::new()
            } else {
                format!(": {}", c.detail)
            }
        );
    }
    out
}
