//! Control-panel grants: which permission set each person is expected to hold in the control
//! panel of each BigCommerce store (store hash), derived from the same decisions as storefront
//! grants. Pure: no API, no clock of its own.
//!
//! A `[[store]]` is a storefront channel; several of them can share one `[[bigcommerce]]` store
//! hash, and the control panel belongs to the hash. So a person's control-panel grant for a hash is
//! the union of the permission sets of every allowed channel of that hash whose grant (rule or
//! template role) names a `control_panel` set. A channel the policy refuses (deny rule, window
//! ended, no rule) contributes nothing: the decision engine is the storefront's, unchanged.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use super::{Decision, DenyReason, Facts, Policy};
use crate::clock::UnixTime;
use crate::identity::{Identity, StoreId};

/// Permission codes as the Account API reports them (`account.stores.users.permissions`), from
/// BigCommerce's documentation. `check` warns about a code not listed here (BigCommerce adds
/// codes; a typo would otherwise only show up as drift).
pub const KNOWN_PERMISSIONS: &[&str] = &[
    "Manage_Products",
    "Create_Product",
    "Edit_Products",
    "Manage_Categories",
    "Manage_Orders",
    "Refund_Orders",
    "Manage_Customers",
    "Manage_Coupons",
    "Manage_Promotions",
    "Manage_PriceLists",
    "Manage_Inventory",
    "Manage_Settings",
    "Manage_Users",
    "Grant_High_Risk_Store_Permissions",
    "Create_Store_API_Tokens",
    "Statistics_Overview",
    "No_Permission_Required",
];

/// Permissions that let a holder hand out access or take the store's data wholesale: an excess
/// one is reported before any other drift.
pub const HIGH_RISK_PERMISSIONS: &[&str] = &[
    "Grant_High_Risk_Store_Permissions",
    "Manage_Users",
    "Create_Store_API_Tokens",
];

/// What control-panel grants need beyond the rules: the named permission sets, and which
/// `[[bigcommerce]]` id (store hash) each `[[store]]` belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControlPanelSetup {
    /// `[[permission_set]]` name -> permission codes.
    pub permission_sets: BTreeMap<String, BTreeSet<String>>,
    /// `[[store]]` id -> its `[[bigcommerce]]` id. A store missing here gives no control-panel
    /// grant.
    pub store_accounts: HashMap<StoreId, String>,
}

/// One person's expected control-panel access to one store hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ControlPanelGrant {
    /// The union of the permission codes of every set granted through any channel of the hash.
    pub permissions: BTreeSet<String>,
    /// The `[[permission_set]]` names, in portal order of the channels that granted them.
    pub sets: Vec<String>,
    /// The rules that granted them (the deciding rule of each channel), in the same order.
    pub rules: Vec<String>,
    /// When the control-panel access ends altogether: the latest end of the contributing
    /// grants, `None` when any of them has no end. (A shorter grant's permissions leave the
    /// union earlier; the next evaluation shows that.)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<UnixTime>,
}

impl ControlPanelGrant {
    fn first(set: &str, perms: &BTreeSet<String>, rule: &str, until: Option<UnixTime>) -> Self {
        ControlPanelGrant {
            permissions: perms.clone(),
            sets: vec![set.to_owned()],
            rules: vec![rule.to_owned()],
            expires_at: until,
        }
    }

    fn add(&mut self, set: &str, perms: &BTreeSet<String>, rule: &str, until: Option<UnixTime>) {
        self.permissions.extend(perms.iter().cloned());
        if !self.sets.iter().any(|s| s == set) {
            self.sets.push(set.to_owned());
        }
        if !self.rules.iter().any(|r| r == rule) {
            self.rules.push(rule.to_owned());
        }
        self.expires_at = match (self.expires_at, until) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
    }
}

/// Why the portal's "Control panel" entry of a store hash does not open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlPanelRefusal {
    /// No `[[bigcommerce]]` with this id has a configured store.
    UnknownAccount,
    /// Every channel of the hash is refused; the most telling reason (a deny rule first).
    Denied(DenyReason),
    /// A channel is granted (as a storefront), but no grant of the hash names a permission set.
    NoControlPanel { rule: String },
}

impl ControlPanelRefusal {
    /// The rule (or default label) behind the refusal, for the audit trail and the 403 page.
    pub fn rule_label(&self) -> &str {
        match self {
            ControlPanelRefusal::UnknownAccount => DenyReason::UnknownStore.rule_label(),
            ControlPanelRefusal::Denied(r) => r.rule_label(),
            ControlPanelRefusal::NoControlPanel { rule } => rule,
        }
    }

    /// A stable reason code for audit events (the launch's codes where they mean the same).
    pub fn code(&self) -> &'static str {
        match self {
            ControlPanelRefusal::UnknownAccount => "unknown_store",
            ControlPanelRefusal::Denied(DenyReason::Expired { .. }) => "grant_expired",
            ControlPanelRefusal::Denied(DenyReason::EmailNotVerified { .. }) => {
                "email_not_verified"
            }
            ControlPanelRefusal::Denied(_) => "not_entitled",
            ControlPanelRefusal::NoControlPanel { .. } => "no_control_panel_grant",
        }
    }

    pub fn explain(&self) -> String {
        match self {
            ControlPanelRefusal::UnknownAccount => "there is no such store".to_owned(),
            ControlPanelRefusal::Denied(r) => r.explain(),
            ControlPanelRefusal::NoControlPanel { rule } => format!(
                "the rule \"{rule}\" gives you the storefront but no control-panel permission set"
            ),
        }
    }
}

/// Which refusal of one hash's channels is shown: a deny rule says the most, then an expired
/// grant, an unverified email, and plain default-deny last.
fn refusal_rank(r: &DenyReason) -> u8 {
    match r {
        DenyReason::DeniedByRule { .. } => 0,
        DenyReason::Expired { .. } => 1,
        DenyReason::EmailNotVerified { .. } => 2,
        DenyReason::NoMatchingRule => 3,
        DenyReason::UnknownStore => 4,
    }
}

impl Policy {
    /// Adds the permission sets and store -> `[[bigcommerce]]` map control-panel grants need.
    pub fn with_control_panel(mut self, setup: ControlPanelSetup) -> Policy {
        self.control_panel = setup;
        self
    }

    /// The named permission set, if configured.
    pub fn permission_set(&self, name: &str) -> Option<&BTreeSet<String>> {
        self.control_panel.permission_sets.get(name)
    }

    pub fn permission_sets(&self) -> &BTreeMap<String, BTreeSet<String>> {
        &self.control_panel.permission_sets
    }

    /// The `[[bigcommerce]]` id `store` belongs to, when known.
    pub fn store_account(&self, store: &StoreId) -> Option<&str> {
        self.control_panel
            .store_accounts
            .get(store)
            .map(String::as_str)
    }

    /// Expected control-panel access per `[[bigcommerce]]` id (store hash) for `id` at `now`: the
    /// union, per hash, of the permission sets its allowed channels' grants name. A refused channel
    /// contributes nothing; a hash with no such grant is absent.
    pub fn control_panel_grants(
        &self,
        id: &Identity,
        now: UnixTime,
    ) -> BTreeMap<String, ControlPanelGrant> {
        let accounts = &self.control_panel.store_accounts;
        let mut out: BTreeMap<String, ControlPanelGrant> = BTreeMap::new();
        for g in self.grants_where(id, now, |s| accounts.contains_key(s)) {
            let (Some(set), Some(account)) = (&g.control_panel, accounts.get(&g.store)) else {
                continue;
            };
            // Validation refuses a grant naming an unknown set; a hand-built policy that does
            // so grants nothing rather than an empty set.
            let Some(perms) = self.permission_set(set) else {
                continue;
            };
            match out.get_mut(account) {
                Some(cp) => cp.add(set, perms, &g.rule, g.expires_at),
                None => {
                    out.insert(
                        account.clone(),
                        ControlPanelGrant::first(set, perms, &g.rule, g.expires_at),
                    );
                }
            }
        }
        out
    }

    /// The control-panel grant of one hash, decided now, or why there is none: what the portal's
    /// "Control panel" entry checks again when it is opened.
    pub fn authorize_control_panel(
        &self,
        id: &Identity,
        account: &str,
        now: UnixTime,
    ) -> Result<ControlPanelGrant, ControlPanelRefusal> {
        let accounts = &self.control_panel.store_accounts;
        let positions: Vec<usize> = (0..self.stores.len())
            .filter(|&p| accounts.get(&self.stores[p].id).map(String::as_str) == Some(account))
            .collect();
        if positions.is_empty() {
            return Err(ControlPanelRefusal::UnknownAccount);
        }
        if let Some(grant) = self.control_panel_grants(id, now).remove(account) {
            return Ok(grant);
        }
        let facts = Facts::new(id);
        let mut memo = vec![None; self.rules.len()];
        let mut allowed_rule: Option<String> = None;
        let mut denied: Option<DenyReason> = None;
        for pos in positions {
            match self.decide_at(pos, &facts, now, &mut memo, false) {
                Decision::Allow { grant, .. } => {
                    allowed_rule.get_or_insert(grant.rule);
                }
                Decision::Deny { reason } => {
                    if denied
                        .as_ref()
                        .is_none_or(|d| refusal_rank(&reason) < refusal_rank(d))
                    {
                        denied = Some(reason);
                    }
                }
            }
        }
        Err(match (denied, allowed_rule) {
            (Some(r @ DenyReason::DeniedByRule { .. }), _) => ControlPanelRefusal::Denied(r),
            (_, Some(rule)) => ControlPanelRefusal::NoControlPanel { rule },
            (Some(r), None) => ControlPanelRefusal::Denied(r),
            (None, None) => ControlPanelRefusal::Denied(DenyReason::NoMatchingRule),
        })
    }
}

#[cfg(test)]
#[path = "control_panel_tests.rs"]
mod tests;
