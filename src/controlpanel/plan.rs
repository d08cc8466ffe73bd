//! The plan (pure): desired vs observed for one account -> the ordered steps that make them
//! equal, one Account API call each.
//!
//! Order is the point (70 calls an hour): every leaver's removals first (from each store, then
//! from the account unless `keep_account_on_leave`), then movers' removals (stores they lost),
//! then additions (`addUserToAccount` when not in the account, then `addUserToStore` by email
//! for each granted store). People outside SCIM's population (the store owner, BigCommerce
//! support, service accounts) are *unmanaged*: listed, never touched unless `manage_all`, which
//! treats them as leavers. An active person with no grant on the account loses its stores (a
//! mover) but keeps the account user: only a SCIM leaver is removed from the account.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::model::{DesiredStaffState, Observed};

/// One Account API mutation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Change {
    /// `removeUserFromStore` (needs the user id: `None` until the account is read again).
    RemoveUserFromStore {
        email: String,
        user_id: Option<String>,
        store: String,
    },
    RemoveUserFromAccount {
        email: String,
    },
    AddUserToAccount {
        email: String,
    },
    /// By email, as BigCommerce requires.
    AddUserToStore {
        email: String,
        store: String,
    },
}

impl Change {
    pub fn email(&self) -> &str {
        match self {
            Change::RemoveUserFromStore { email, .. }
            | Change::RemoveUserFromAccount { email }
            | Change::AddUserToAccount { email }
            | Change::AddUserToStore { email, .. } => email,
        }
    }

    pub fn store(&self) -> Option<&str> {
        match self {
            Change::RemoveUserFromStore { store, .. } | Change::AddUserToStore { store, .. } => {
                Some(store)
            }
            _ => None,
        }
    }

    /// The mutation's name (audit reason codes, dry-run lines).
    pub fn name(&self) -> &'static str {
        match self {
            Change::RemoveUserFromStore { .. } => "removeUserFromStore",
            Change::RemoveUserFromAccount { .. } => "removeUserFromAccount",
            Change::AddUserToAccount { .. } => "addUserToAccount",
            Change::AddUserToStore { .. } => "addUserToStore",
        }
    }
}

/// Why a step is planned; also the order of the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Leaver,
    Mover,
    Addition,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Leaver, Kind::Mover, Kind::Addition];

    pub fn label(self) -> &'static str {
        match self {
            Kind::Leaver => "leaver",
            Kind::Mover => "mover",
            Kind::Addition => "addition",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    pub kind: Kind,
    pub change: Change,
}

/// A user storegate does not manage, with the stores they have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unmanaged {
    pub email: String,
    pub stores: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub unmanaged: Vec<Unmanaged>,
}

impl Plan {
    /// Steps of each kind.
    pub fn count(&self, kind: Kind) -> usize {
        self.steps.iter().filter(|s| s.kind == kind).count()
    }

    /// People with a pending step of this kind.
    pub fn people(&self, kind: Kind) -> usize {
        self.steps
            .iter()
            .filter(|s| s.kind == kind)
            .map(|s| s.change.email())
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// A removal whose user id is unknown (added since the last read): the account must be read
    /// again before it can be sent.
    pub fn needs_ids(&self) -> bool {
        self.steps
            .iter()
            .any(|s| matches!(s.change, Change::RemoveUserFromStore { user_id: None, .. }))
    }
}

/// How an account is managed (from `[[account]]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rules {
    pub keep_account_on_leave: bool,
    pub manage_all: bool,
}

/// The plan for one account whose managed stores are `stores` (store hashes).
pub fn plan(
    desired: &DesiredStaffState,
    observed: &Observed,
    stores: &BTreeSet<String>,
    rules: Rules,
) -> Plan {
    let mut leavers = Vec::new();
    let mut movers = Vec::new();
    let mut additions = Vec::new();
    let mut unmanaged = Vec::new();
    let wanted = |email: &str| -> BTreeSet<String> {
        desired
            .staff
            .get(email)
            .map(|d| {
                d.stores
                    .keys()
                    .filter(|s| stores.contains(*s))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    };
    let remove_from = |email: &str, has: &BTreeSet<String>, kind: Kind, out: &mut Vec<Step>| {
        for store in has {
            out.push(Step {
                kind,
                change: Change::RemoveUserFromStore {
                    email: email.to_owned(),
                    user_id: observed
                        .stores
                        .get(store)
                        .and_then(|m| m.get(email))
                        .and_then(|m| m.user_id.clone()),
                    store: store.clone(),
                },
            });
        }
    };
    for email in observed.emails() {
        let has: BTreeSet<String> = observed
            .stores_of(&email)
            .into_iter()
            .filter(|s| stores.contains(s))
            .collect();
        if desired.staff.contains_key(&email) {
            let lost: BTreeSet<String> = has.difference(&wanted(&email)).cloned().collect();
            remove_from(&email, &lost, Kind::Mover, &mut movers);
        } else if desired.leavers.contains_key(&email) || rules.manage_all {
            remove_from(&email, &has, Kind::Leaver, &mut leavers);
            if !rules.keep_account_on_leave && observed.account_users.contains_key(&email) {
                leavers.push(Step {
                    kind: Kind::Leaver,
                    change: Change::RemoveUserFromAccount {
                        email: email.clone(),
                    },
                });
            }
        } else {
            unmanaged.push(Unmanaged {
                email: email.clone(),
                stores: has.into_iter().collect(),
            });
        }
    }
    for email in desired.staff.keys() {
        let gained: Vec<String> = wanted(email)
            .difference(&observed.stores_of(email))
            .cloned()
            .collect();
        if gained.is_empty() {
            continue;
        }
        if !observed.account_users.contains_key(email) {
            additions.push(Step {
                kind: Kind::Addition,
                change: Change::AddUserToAccount {
                    email: email.clone(),
                },
            });
        }
        for store in gained {
            additions.push(Step {
                kind: Kind::Addition,
                change: Change::AddUserToStore {
                    email: email.clone(),
                    store,
                },
            });
        }
    }
    let mut steps = leavers;
    steps.extend(movers);
    steps.extend(additions);
    Plan { steps, unmanaged }
}

/// `observed` after `change` succeeded, so a cached read stays true to what storegate did.
pub fn apply(observed: &mut Observed, change: &Change) {
    match change {
        Change::RemoveUserFromStore { email, store, .. } => {
            if let Some(m) = observed.stores.get_mut(store) {
                m.remove(email);
            }
        }
        Change::RemoveUserFromAccount { email } => {
            observed.account_users.remove(email);
            for m in observed.stores.values_mut() {
                m.remove(email);
            }
        }
        Change::AddUserToAccount { email } => {
            observed.account_users.insert(email.clone(), None);
        }
        Change::AddUserToStore { email, store } => {
            let user_id = observed.user_id(email);
            observed.stores.entry(store.clone()).or_default().insert(
                email.clone(),
                super::model::Member {
                    user_id,
                    permissions: BTreeSet::from([
                        crate::controlpanel::drift::NO_PERMISSION_REQUIRED.to_owned(),
                    ]),
                },
            );
        }
    }
}

/// Steps of each kind, for the metrics.
pub fn by_kind(steps: &[Step]) -> BTreeMap<Kind, usize> {
    let mut out = BTreeMap::new();
    for k in Kind::ALL {
        out.insert(k, steps.iter().filter(|s| s.kind == k).count());
    }
    out
}

#[cfg(test)]
mod tests;
