//! What `storegate check` warns about: a pure look at a policy that is valid but probably not
//! what its author meant. Each finding names where it is (a store or a rule, by file position) so
//! the configuration loader can print `file:line: warning: ...`.

use super::{Effect, Policy, Rule, StoreSelector};
use crate::clock::UnixTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// The n-th `[[store]]`.
    Store(usize),
    /// The n-th `[[rule]]`.
    Rule(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub at: Location,
    pub message: String,
}

fn unconditional(r: &Rule) -> bool {
    let c = &r.conditions;
    c.groups_any.is_empty()
        && c.roles_any.is_empty()
        && c.email_domains.is_empty()
        && c.idps.is_empty()
        && c.attributes.is_empty()
        && c.attribute_regex.is_empty()
        && c.acr_any.is_empty()
        && c.amr_any.is_empty()
        && r.not_before.is_none()
        && r.not_after.is_none()
        && r.expires_claim.is_none()
}

/// Two non-empty lists with nothing in common: conditions that cannot hold together.
fn disjoint(a: &[String], b: &[String]) -> bool {
    !a.is_empty()
        && !b.is_empty()
        && !a
            .iter()
            .any(|x| b.iter().any(|y| x.eq_ignore_ascii_case(y)))
}

/// Whether one identity could satisfy both rules at some moment (a cheap, conservative test).
fn may_overlap(a: &Rule, b: &Rule) -> bool {
    let (x, y) = (&a.conditions, &b.conditions);
    if disjoint(&x.idps, &y.idps)
        || disjoint(&x.email_domains, &y.email_domains)
        || disjoint(&x.acr_any, &y.acr_any)
    {
        return false;
    }
    let windows_apart = |p: &Rule, q: &Rule| matches!((p.not_after, q.not_before), (Some(end), Some(start)) if end <= start);
    !(windows_apart(a, b) || windows_apart(b, a))
}

pub fn lint(p: &Policy, now: UnixTime) -> Vec<Finding> {
    let mut out = Vec::new();
    // cover[rule][store]: the rule's scope holds the store.
    let mut cover = vec![vec![false; p.stores.len()]; p.rules.len()];
    for (pos, rules) in p.by_store.iter().enumerate() {
        for &i in rules {
            cover[i][pos] = true;
        }
    }
    // Stores no allow rule reaches, or that follow no template at all.
    for (pos, store) in p.stores.iter().enumerate() {
        let allows: Vec<&Rule> = p.by_store[pos]
            .iter()
            .map(|i| &p.rules[*i])
            .filter(|r| r.effect == Effect::Allow)
            .collect();
        if allows.is_empty() {
            out.push(Finding {
                at: Location::Store(pos),
                message: format!(
                    "store \"{}\" has no rule that grants it: nobody can open it",
                    store.id
                ),
            });
        } else if store.template.is_none() && allows.iter().all(|r| r.template.is_none()) {
            out.push(Finding {
                at: Location::Store(pos),
                message: format!(
                    "store \"{}\" has no template, and no rule granting it names one: its grants use only the rules' own settings",
                    store.id
                ),
            });
        }
        // A role the store's template does not define gets nothing from it.
        if let Some(tname) = &store.template
            && let Some(t) = p.template(tname)
        {
            for r in &allows {
                if r.template.is_none() && !t.roles.contains_key(&r.role) {
                    out.push(Finding {
                        at: Location::Store(pos),
                        message: format!(
                            "rule \"{}\" grants role \"{}\" on store \"{}\", whose template \"{tname}\" does not define that role",
                            r.name, r.role, store.id
                        ),
                    });
                }
            }
        }
    }
    for (i, r) in p.rules.iter().enumerate() {
        let covered: Vec<usize> = (0..p.stores.len()).filter(|pos| cover[i][*pos]).collect();
        let never = |why: String| Finding {
            at: Location::Rule(i),
            message: format!("rule \"{}\" can never match: {why}", r.name),
        };
        if covered.is_empty() {
            out.push(never(
                "its stores and store_tags select no configured store".into(),
            ));
            continue;
        }
        if let Some(end) = r.not_after
            && end <= now
        {
            out.push(never(format!(
                "its not_after ({}) has passed",
                crate::clock::rfc3339(end)
            )));
            continue;
        }
        if r.effect == Effect::Allow {
            let shadow = p.rules.iter().enumerate().find(|(k, d)| {
                d.effect == Effect::Deny
                    && unconditional(d)
                    && covered.iter().all(|pos| cover[*k][*pos])
            });
            let shadow = shadow.map(|(_, d)| d);
            if let Some(d) = shadow {
                out.push(never(format!(
                    "the unconditional deny rule \"{}\" covers every store it grants",
                    d.name
                )));
            }
        }
    }
    // Overlapping allow rules: one finding per pair, at the later rule, naming the winner.
    for (j, later) in p.rules.iter().enumerate() {
        if later.effect != Effect::Allow {
            continue;
        }
        for (i, earlier) in p.rules.iter().enumerate().take(j) {
            if earlier.effect != Effect::Allow || !may_overlap(earlier, later) {
                continue;
            }
            let shared: Vec<&str> = p
                .stores
                .iter()
                .enumerate()
                .filter(|(pos, _)| cover[i][*pos] && cover[j][*pos])
                .map(|(_, s)| s.id.as_str())
                .collect();
            if shared.is_empty() {
                continue;
            }
            let what = if matches!(earlier.stores, StoreSelector::All)
                && matches!(later.stores, StoreSelector::All)
            {
                "every store".to_owned()
            } else {
                shared.join(", ")
            };
            out.push(Finding {
                at: Location::Rule(j),
                message: format!(
                    "rules \"{}\" and \"{}\" can both grant {what}; resolved by file order: \"{}\" decides when both match",
                    earlier.name, later.name, earlier.name
                ),
            });
        }
    }
    out
}
