//! The text `reconcile` and `reconcile --dry-run` print for control-panel users: each step, the
//! unmanaged users, the permission drift, and the plan's cost in calls and in time at the budget
//! ("3 leavers removed now (6 calls); 212 additions need 3 h at 70 calls/hour").

use std::fmt::Write as _;

use super::budget::HOURLY_LIMIT;
use super::drift;
use super::plan::{Kind, Step};
use super::run::{AccountReport, StaffReport};

/// Seconds until the `k`-th call (1-based) of a plan can be sent when `left` calls of the hour
/// are unspent: the first `left` at once, then 70 per hour as the oldest leave the hour
/// (conservative: calls spent earlier in the hour may free sooner).
pub fn eta_secs(k: usize, left: u32) -> i64 {
    let left = left as usize;
    if k <= left {
        return 0;
    }
    let per_hour = HOURLY_LIMIT as usize;
    i64::try_from(((k - left - 1) / per_hour + 1) * 3600).unwrap_or(i64::MAX)
}

/// `now`, `4 min`, `3 h 5 min`.
pub fn duration(secs: i64) -> String {
    if secs <= 0 {
        return "now".into();
    }
    let (h, m) = (secs / 3600, (secs % 3600 + 59) / 60);
    match (h, m) {
        (0, m) => format!("within {m} min"),
        (h, 0) => format!("within {h} h"),
        (h, m) => format!("within {h} h {m} min"),
    }
}

/// One line per kind with people, calls and when the last of them is sent at the budget,
/// counting from the calls left in this hour.
pub fn cost(steps: &[Step], used_last_hour: u32) -> Vec<String> {
    let left = HOURLY_LIMIT.saturating_sub(used_last_hour);
    let mut lines = Vec::new();
    let mut k = 0;
    for kind in Kind::ALL {
        let of_kind: Vec<&Step> = steps.iter().filter(|s| s.kind == kind).collect();
        if of_kind.is_empty() {
            continue;
        }
        k += of_kind.len();
        let people = of_kind
            .iter()
            .map(|s| s.change.email())
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        let what = match kind {
            Kind::Leaver => format!("{people} leaver(s) removed"),
            Kind::Mover => format!("{people} mover(s) removed from lost stores"),
            Kind::Addition => format!("{people} person(s) added"),
        };
        lines.push(format!(
            "{what}: {} call(s), {}",
            of_kind.len(),
            duration(eta_secs(k, left))
        ));
    }
    lines
}

fn account(out: &mut String, r: &AccountReport, dry_run: bool) {
    let _ = writeln!(
        out,
        "control panel [{}]: {} step(s) planned, {} call(s) this pass ({} page(s) read), {} of {HOURLY_LIMIT} calls used in the last hour",
        r.account,
        r.plan.steps.len(),
        r.calls,
        r.reads,
        r.used_last_hour
    );
    for s in &r.plan.steps {
        let store = s
            .change
            .store()
            .map(|h| format!(" store {h}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<8} {} {}{store}",
            s.kind.label(),
            s.change.name(),
            s.change.email()
        );
    }
    let pending = if dry_run {
        r.plan.steps.clone()
    } else {
        r.pending()
    };
    for line in cost(&pending, r.used_last_hour) {
        let _ = writeln!(out, "  cost: {line} at {HOURLY_LIMIT} calls/hour");
    }
    if dry_run {
        // Reads are real calls and count against BigCommerce's hourly limit: say what this
        // dry run cost, and that it sent nothing else.
        let _ = writeln!(
            out,
            "  dry run: no write call sent; its reads used {} of this hour's {HOURLY_LIMIT} Account API calls ({} used in the last hour, {} left)",
            r.calls,
            r.used_last_hour,
            HOURLY_LIMIT.saturating_sub(r.used_last_hour)
        );
    } else {
        let _ = writeln!(out, "  done {}, failed {}", r.done.len(), r.failed.len());
    }
    for (s, e) in &r.failed {
        let _ = writeln!(
            out,
            "  failed: {} {}: {e}",
            s.change.name(),
            s.change.email()
        );
    }
    if let Some(t) = r.paused_until {
        let _ = writeln!(
            out,
            "  paused: the hourly budget is spent; the rest goes on at {}",
            crate::clock::rfc3339(t)
        );
    }
    if let Some(e) = &r.error {
        let _ = writeln!(out, "  error: {e}");
    }
    for u in &r.plan.unmanaged {
        let _ = writeln!(
            out,
            "  unmanaged (not in SCIM, left alone): {} stores [{}]",
            u.email,
            u.stores.join(", ")
        );
    }
    for d in &r.drift {
        let _ = writeln!(
            out,
            "  drift {} store {}: {} (permissions are not writable by API: fix in the control panel)",
            d.email,
            d.store,
            drift::describe(d)
        );
    }
}

/// The whole control-panel part of a pass or a dry run.
pub fn render(report: &StaffReport, dry_run: bool) -> String {
    let mut out = String::new();
    for r in &report.accounts {
        account(&mut out, r, dry_run);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_decides_when_each_call_goes() {
        assert_eq!(eta_secs(70, 70), 0);
        assert_eq!(eta_secs(71, 70), 3600);
        assert_eq!(eta_secs(140, 70), 3600);
        assert_eq!(eta_secs(141, 70), 7200);
        assert_eq!(eta_secs(1, 0), 3600);
        assert_eq!(duration(0), "now");
        assert_eq!(duration(240), "within 4 min");
        assert_eq!(duration(3 * 3600 + 300), "within 3 h 5 min");
        assert_eq!(duration(7200), "within 2 h");
    }
}
