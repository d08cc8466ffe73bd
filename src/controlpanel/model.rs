//! The values the steps exchange: who should have which store (desired) and who has it
//! (observed). Emails are lower-case throughout; stores are store hashes.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::clock::UnixTime;

/// One SCIM-managed active person with control-panel grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DesiredStaff {
    /// `{idp}:{subject}`.
    pub subject: String,
    pub email: String,
    /// Store hash -> the permission codes the grant expects there.
    pub stores: BTreeMap<String, BTreeSet<String>>,
}

/// The desired state of every account: the staff, the leavers and SCIM's whole population.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredStaffState {
    /// Active people (with or without control-panel grants), by email.
    pub staff: BTreeMap<String, DesiredStaff>,
    /// Leavers (`active: false` or deleted) -> since when, when SCIM says (`meta.lastModified`).
    pub leavers: BTreeMap<String, Option<UnixTime>>,
}

impl DesiredStaffState {
    /// Whether SCIM knows this email (active or leaver): only those are managed.
    pub fn knows(&self, email: &str) -> bool {
        self.staff.contains_key(email) || self.leavers.contains_key(email)
    }
}

/// A user's access to one store, as read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    /// `bc/account/user/{id}`; `None` for a user storegate added since the last read.
    pub user_id: Option<String>,
    pub permissions: BTreeSet<String>,
}

/// What an account holds: its users and each managed store's users.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Observed {
    /// Email -> user id (`None` until read again after storegate added them).
    pub account_users: BTreeMap<String, Option<String>>,
    /// Store hash -> email -> access.
    pub stores: BTreeMap<String, BTreeMap<String, Member>>,
}

impl Observed {
    /// The stores `email` has access to.
    pub fn stores_of(&self, email: &str) -> BTreeSet<String> {
        self.stores
            .iter()
            .filter(|(_, m)| m.contains_key(email))
            .map(|(s, _)| s.clone())
            .collect()
    }

    /// Every email in the account or one of its stores.
    pub fn emails(&self) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self.account_users.keys().cloned().collect();
        for m in self.stores.values() {
            out.extend(m.keys().cloned());
        }
        out
    }

    /// The user id of `email`, from the account or any store.
    pub fn user_id(&self, email: &str) -> Option<String> {
        self.account_users
            .get(email)
            .cloned()
            .flatten()
            .or_else(|| {
                self.stores
                    .values()
                    .find_map(|m| m.get(email).and_then(|x| x.user_id.clone()))
            })
    }
}
