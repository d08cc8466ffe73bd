//! The entitlement engine: pure, `(Identity, Policy, now) -> Entitlements`.
//!
//! Precedence (documented in the README and proven by the tests below):
//! 1. A rule applies to a store when all of its conditions match the identity, the store is in its
//!    `stores` list (or the list is `"*"`), and `now` is inside its validity window.
//! 2. Any applicable **deny** rule refuses the store, whatever allows it (deny wins).
//! 3. Otherwise the **first** applicable allow rule, in file order, grants the store and decides its
//!    role and customer group. Later allow rules for the same store are recorded as overlaps.
//! 4. No applicable rule: the store is refused (deny by default).
//!
//! Every decision names the rule that made it, so the portal, the 403 page, the audit trail and
//! `storegate explain` all tell the same story.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::clock::UnixTime;
use crate::identity::{Identity, StoreId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    Allow,
    Deny,
}

/// Which stores a rule covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSelector {
    All,
    Only(Vec<StoreId>),
}

impl StoreSelector {
    fn covers(&self, store: &StoreId) -> bool {
        match self {
            StoreSelector::All => true,
            StoreSelector::Only(ids) => ids.contains(store),
        }
    }
}

/// A BigCommerce customer group, by id or by name (resolved, and created if missing, at launch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CustomerGroupRef {
    Id(u64),
    Name(String),
}

impl CustomerGroupRef {
    pub fn parse(raw: &str) -> Self {
        match raw.parse::<u64>() {
            Ok(id) => CustomerGroupRef::Id(id),
            Err(_) => CustomerGroupRef::Name(raw.to_owned()),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conditions {
    /// Any of these groups (compared case-insensitively; DNs compared whole).
    pub groups_any: Vec<String>,
    /// Any of these email domains (lower-case).
    pub email_domains: Vec<String>,
    /// Any of these IdP ids.
    pub idps: Vec<String>,
    /// Every attribute listed must carry one of its values.
    pub attributes: BTreeMap<String, Vec<String>>,
}

impl Conditions {
    fn matches(&self, id: &Identity) -> bool {
        let groups = self.groups_any.is_empty()
            || id.groups.iter().any(|g| {
                self.groups_any
                    .iter()
                    .any(|want| want.eq_ignore_ascii_case(g))
            });
        let domain = self.email_domains.is_empty()
            || id.email_domain().is_some_and(|d| {
                self.email_domains
                    .iter()
                    .any(|want| want.eq_ignore_ascii_case(&d))
            });
        let idp = self.idps.is_empty() || self.idps.iter().any(|want| want == id.idp.as_str());
        let attributes = self.attributes.iter().all(|(name, wanted)| {
            id.attributes
                .get(name)
                .is_some_and(|have| have.iter().any(|v| wanted.contains(v)))
        });
        groups && domain && idp && attributes
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    pub effect: Effect,
    pub conditions: Conditions,
    pub stores: StoreSelector,
    pub role: String,
    pub customer_group: Option<CustomerGroupRef>,
    pub not_before: Option<UnixTime>,
    pub not_after: Option<UnixTime>,
}

impl Rule {
    fn in_window(&self, now: UnixTime) -> bool {
        self.not_before.is_none_or(|nb| now >= nb) && self.not_after.is_none_or(|na| now < na)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Every configured store, in file order (the portal's order).
    pub stores: Vec<StoreId>,
    pub rules: Vec<Rule>,
}

/// One user's right on one store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Grant {
    pub store: StoreId,
    pub role: String,
    pub customer_group: Option<CustomerGroupRef>,
    /// The rule that granted it.
    pub rule: String,
    /// When the grant lapses (the deciding rule's `not_after`).
    pub expires_at: Option<UnixTime>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "lowercase")]
pub enum Decision {
    Allow {
        grant: Grant,
        /// Later allow rules that also matched and were overridden by file order.
        overridden: Vec<String>,
    },
    Deny {
        reason: DenyReason,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DenyReason {
    /// A deny rule matched.
    DeniedByRule { rule: String },
    /// No allow rule matched (deny by default).
    NoMatchingRule,
    /// The store is not configured.
    UnknownStore,
}

impl DenyReason {
    /// The deciding rule's name, or a fixed label for the default.
    pub fn rule_label(&self) -> &str {
        match self {
            DenyReason::DeniedByRule { rule } => rule,
            DenyReason::NoMatchingRule => "default-deny",
            DenyReason::UnknownStore => "unknown-store",
        }
    }

    pub fn explain(&self) -> String {
        match self {
            DenyReason::DeniedByRule { rule } => format!("the rule \"{rule}\" denies this store"),
            DenyReason::NoMatchingRule => {
                "no rule grants you this store (deny by default)".to_owned()
            }
            DenyReason::UnknownStore => "there is no such store".to_owned(),
        }
    }
}

impl Policy {
    /// Decide one store.
    pub fn decide(&self, id: &Identity, store: &StoreId, now: UnixTime) -> Decision {
        if !self.stores.contains(store) {
            return Decision::Deny {
                reason: DenyReason::UnknownStore,
            };
        }
        let applicable = self
            .rules
            .iter()
            .filter(|r| r.stores.covers(store) && r.in_window(now) && r.conditions.matches(id));
        let mut first_allow: Option<&Rule> = None;
        let mut overridden = Vec::new();
        for rule in applicable {
            match rule.effect {
                Effect::Deny => {
                    return Decision::Deny {
                        reason: DenyReason::DeniedByRule {
                            rule: rule.name.clone(),
                        },
                    };
                }
                Effect::Allow if first_allow.is_none() => first_allow = Some(rule),
                Effect::Allow => overridden.push(rule.name.clone()),
            }
        }
        match first_allow {
            Some(rule) => Decision::Allow {
                grant: Grant {
                    store: store.clone(),
                    role: rule.role.clone(),
                    customer_group: rule.customer_group.clone(),
                    rule: rule.name.clone(),
                    expires_at: rule.not_after,
                },
                overridden,
            },
            None => Decision::Deny {
                reason: DenyReason::NoMatchingRule,
            },
        }
    }

    /// Decide every configured store, in portal order.
    pub fn evaluate(&self, id: &Identity, now: UnixTime) -> Vec<(StoreId, Decision)> {
        self.stores
            .iter()
            .map(|s| (s.clone(), self.decide(id, s, now)))
            .collect()
    }

    /// The grants only, in portal order.
    pub fn grants(&self, id: &Identity, now: UnixTime) -> Vec<Grant> {
        self.evaluate(id, now)
            .into_iter()
            .filter_map(|(_, d)| match d {
                Decision::Allow { grant, .. } => Some(grant),
                Decision::Deny { .. } => None,
            })
            .collect()
    }

    /// The decision the launch path needs. A [`LaunchDecision`] can only come from here, so a login
    /// token cannot be minted without an entitlement check made for that very request.
    pub fn authorize_launch(
        &self,
        id: &Identity,
        store: &StoreId,
        now: UnixTime,
    ) -> Result<LaunchDecision, DenyReason> {
        match self.decide(id, store, now) {
            Decision::Allow { grant, .. } => Ok(LaunchDecision {
                grant,
                subject: id.subject.clone(),
                decided_at: now,
            }),
            Decision::Deny { reason } => Err(reason),
        }
    }
}

/// Proof that the policy allowed this identity this store at this moment. No public constructor.
#[derive(Debug)]
pub struct LaunchDecision {
    grant: Grant,
    subject: String,
    decided_at: UnixTime,
}

impl LaunchDecision {
    pub fn grant(&self) -> &Grant {
        &self.grant
    }
    pub fn subject(&self) -> &str {
        &self.subject
    }
    pub fn decided_at(&self) -> UnixTime {
        self.decided_at
    }
}

#[cfg(test)]
mod tests;
