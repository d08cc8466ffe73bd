//! The desired state (pure): every SCIM person, active ones with their control-panel grants per
//! store hash, leavers with the time SCIM recorded their change.
//!
//! The grants come from the policy (`Policy::control_panel_grants`, keyed by `[[bigcommerce]]`
//! id); [`desired_staff`] takes them as a function so this step stays independent of how the
//! policy computes them.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::model::{DesiredStaff, DesiredStaffState};
use crate::clock::UnixTime;
use crate::config::Config;
use crate::identity::{BoundSubject, Identity};
use crate::provisioning::reconcile::identity_of;
use crate::provisioning::scim::{ScimData, user_active, user_emails};

/// Grants of one identity: `[[bigcommerce]]` id -> expected permission codes.
pub type Grants = BTreeMap<String, BTreeSet<String>>;

fn modified_at(user: &Value) -> Option<UnixTime> {
    let raw = user.pointer("/meta/lastModified")?.as_str()?;
    chrono::DateTime::parse_from_rfc3339(raw)
        .ok()
        .map(|t| t.timestamp())
}

/// Desired staff from SCIM and `grants` (the policy's control-panel grants of an identity).
pub fn desired_staff(
    cfg: &Config,
    data: &ScimData,
    grants: impl Fn(&Identity) -> Grants,
) -> DesiredStaffState {
    let hash_of = |id: &str| {
        cfg.bigcommerce
            .iter()
            .find(|b| b.id == id)
            .map(|b| b.store_hash.clone())
    };
    let mut out = DesiredStaffState::default();
    let mut leave = |emails: Vec<String>, since: Option<UnixTime>| {
        for e in emails {
            out.leavers.entry(e.to_lowercase()).or_insert(since);
        }
    };
    let mut active = Vec::new();
    for (id, user) in &data.users {
        let user = &user.value();
        if !user_active(user) {
            leave(user_emails(user), modified_at(user));
            continue;
        }
        let Some(identity) = identity_of(cfg, data, id, user) else {
            continue;
        };
        let Some(email) = identity.email.as_ref().map(|e| e.to_lowercase()) else {
            continue;
        };
        let mut stores = BTreeMap::new();
        for (account, perms) in grants(&identity) {
            if let Some(hash) = hash_of(&account) {
                stores
                    .entry(hash)
                    .or_insert_with(BTreeSet::new)
                    .extend(perms);
            }
        }
        active.push(DesiredStaff {
            subject: BoundSubject::of(&identity).into_string(),
            email,
            stores,
        });
    }
    for t in data.tombstones.values() {
        let t = &t.value();
        leave(user_emails(t), modified_at(t));
    }
    for staff in active {
        // A rehire (active again under the same address) is not a leaver.
        out.leavers.remove(&staff.email);
        out.staff.insert(staff.email.clone(), staff);
    }
    out
}

/// Desired staff from SCIM and the configured policy's control-panel grants at `now`.
pub fn from_config(cfg: &Config, data: &ScimData, now: UnixTime) -> DesiredStaffState {
    desired_staff(cfg, data, |id| {
        cfg.policy
            .control_panel_grants(id, now)
            .into_iter()
            .map(|(account, g)| (account, g.permissions))
            .collect()
    })
}
