//! Desired state and plan: pure functions, no I/O.
//!
//! Desired state = SCIM users and groups + the policy, at a given time: for every active user, the
//! stores the policy grants them (their SCIM groups' displayNames are their groups), folded per
//! BigCommerce account into one customer (channels, customer group, names, IdP subject).
//! Actual state = the account's customers with the emails in question. The plan is what makes
//! actual equal desired:
//! - joiner: create the customer, its IdP subject set inline (`storegate_subject` attribute);
//! - changed names, channels or group: update; a customer found by email that carries no subject
//!   yet is adopted (updated, then its subject recorded);
//! - a customer found by email that carries **another** subject is a [`Conflict`]: reported,
//!   never adopted, updated or deprovisioned;
//! - mover: a customer on an account the user no longer has any store of is deprovisioned there;
//! - leaver (`active: false`, or deleted — a tombstone): deprovisioned on every account.
//!
//! Deprovisioning (BigCommerce has no active flag): `restrict` moves the customer to the locked
//! group, cuts `channel_ids` to its origin channel (an empty list is invalid) and sets a random
//! password; `delete` deletes the customer. The gateway refuses the launch independently.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::scim::{ScimData, user_active, user_emails};
use crate::bigcommerce::api::Customer;
use crate::clock::UnixTime;
use crate::config::Config;
use crate::config::provisioning::{Deprovision, SubjectAttribute};
use crate::identity::{AuthContext, BoundSubject, Identity, IdpId, SubjectMatch};
use crate::policy::CustomerGroupRef;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredCustomer {
    pub account: String,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    /// Sorted, never empty.
    pub channel_ids: Vec<u64>,
    pub group: Option<CustomerGroupRef>,
    /// `{idp}:{subject}`, as the launch path records it.
    pub subject: String,
    /// B2B Edition company and role, from the first granted store of this account that has one.
    pub b2b: Option<crate::policy::B2bGrant>,
}

/// Everything the plan needs to know about who should have what.
#[derive(Debug, Clone, Default)]
pub struct Desired {
    pub customers: Vec<DesiredCustomer>,
    /// Emails (lower-case) of people who must have no customer on any account.
    pub leavers: Vec<String>,
    /// Lower-case email -> `{idp}:{subject}`, for joiners, movers and leavers alike: a customer
    /// with this email bound to another subject is someone else's.
    pub subjects: HashMap<String, String>,
}

fn s<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr)
        .and_then(Value::as_str)
        .filter(|x| !x.trim().is_empty())
}

/// The identity a SCIM user stands for, as the policy sees it.
pub fn identity_of(cfg: &Config, data: &ScimData, id: &str, user: &Value) -> Option<Identity> {
    identity_with_groups(cfg, user, || data.group_names_of(id))
}

/// [`identity_of`] with the user's group names from the caller: a pass over every user takes
/// them from [`ScimData::group_names_by_member`], built once, instead of reading every group
/// for each user (100,000 users × 5,000 groups).
pub fn identity_with_groups(
    cfg: &Config,
    user: &Value,
    groups: impl FnOnce() -> Vec<String>,
) -> Option<Identity> {
    let idp = cfg
        .provisioning
        .idp
        .clone()
        .or_else(|| cfg.idps.first().map(|i| i.id.to_string()))?;
    let subject = match cfg.provisioning.subject_attribute {
        SubjectAttribute::ExternalId => s(user, "/externalId").or(s(user, "/userName")),
        SubjectAttribute::UserName => s(user, "/userName"),
    }?;
    let email = user_emails(user).into_iter().next();
    let mut attributes = BTreeMap::new();
    if let Some(ext) = user
        .get(super::scim::wire::ENTERPRISE_SCHEMA)
        .and_then(Value::as_object)
    {
        for (k, v) in ext {
            if let Some(t) = v.as_str() {
                attributes.insert(k.clone(), vec![t.to_owned()]);
            }
        }
    }
    Some(Identity {
        subject: subject.to_owned(),
        idp: IdpId::new(idp),
        email,
        // SCIM (Identity Manager) is the system of record: its addresses are the directory's,
        // so reconcile adopts and matches `email_domains` on them (a trust path of its own, unlike
        // a sign-in, where the IdP must vouch).
        email_verified: true,
        given_name: s(user, "/name/givenName").map(str::to_owned),
        family_name: s(user, "/name/familyName").map(str::to_owned),
        name: s(user, "/displayName").map(str::to_owned),
        groups: groups(),
        roles: Vec::new(),
        attributes,
        auth: AuthContext::default(),
        signed_in_at: 0,
    })
}

/// Desired state from SCIM data and the policy at `now`.
pub fn desired_state(cfg: &Config, data: &ScimData, now: UnixTime) -> Desired {
    let mut out = Desired::default();
    let mut active_emails = std::collections::HashSet::new();
    let memberships = data.group_names_by_member();
    let groups_of = |id: &str| memberships.get(id).cloned().unwrap_or_default();
    for (id, user) in &data.users {
        let user = &user.value();
        let emails: Vec<String> = user_emails(user).iter().map(|e| e.to_lowercase()).collect();
        if !user_active(user) {
            if let Some(identity) = identity_with_groups(cfg, user, || groups_of(id)) {
                for e in &emails {
                    out.subjects
                        .entry(e.clone())
                        .or_insert_with(|| BoundSubject::of(&identity).into_string());
                }
            }
            out.leavers.extend(emails);
            continue;
        }
        let Some(identity) = identity_with_groups(cfg, user, || groups_of(id)) else {
            continue;
        };
        let Some(email) = identity.email.clone() else {
            continue;
        };
        active_emails.insert(email.to_lowercase());
        // An active user's binding wins over a leaver's with the same address (a rehire).
        out.subjects.insert(
            email.to_lowercase(),
            BoundSubject::of(&identity).into_string(),
        );
        type PerAccount = (
            Vec<u64>,
            Option<CustomerGroupRef>,
            Option<crate::policy::B2bGrant>,
        );
        let mut per_account: BTreeMap<String, PerAccount> = BTreeMap::new();
        for grant in cfg.policy.grants(&identity, now) {
            let Some(store) = cfg.store(&grant.store) else {
                continue;
            };
            let e = per_account
                .entry(store.account.clone())
                .or_insert((Vec::new(), None, None));
            e.0.push(store.channel_id);
            // The first granted store (portal order) decides the group, as at launch.
            if e.1.is_none() {
                e.1 = grant.customer_group.clone();
            }
            if e.2.is_none() {
                e.2 = grant.b2b;
            }
        }
        let local = email.split('@').next().unwrap_or(&email).to_owned();
        for (account, (mut channels, group, b2b)) in per_account {
            channels.sort_unstable();
            channels.dedup();
            out.customers.push(DesiredCustomer {
                account,
                email: email.clone(),
                first_name: identity.given_name.clone().unwrap_or_else(|| local.clone()),
                last_name: identity.family_name.clone().unwrap_or_else(|| "-".into()),
                channel_ids: channels,
                group,
                subject: BoundSubject::of(&identity).into_string(),
                b2b,
            });
        }
    }
    for (id, t) in &data.tombstones {
        let t = &t.value();
        let emails: Vec<String> = user_emails(t).iter().map(|e| e.to_lowercase()).collect();
        if let Some(identity) = identity_with_groups(cfg, t, || groups_of(id)) {
            for e in &emails {
                out.subjects
                    .entry(e.clone())
                    .or_insert_with(|| BoundSubject::of(&identity).into_string());
            }
        }
        out.leavers.extend(emails);
    }
    // A rehire (active again under the same address) is not a leaver.
    out.leavers.retain(|e| !active_emails.contains(e));
    out.leavers.sort();
    out.leavers.dedup();
    out
}

/// The fields the reconciler manages on a customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerState {
    pub first_name: String,
    pub last_name: String,
    pub channel_ids: Option<Vec<u64>>,
    pub customer_group_id: u64,
}

impl From<&Customer> for CustomerState {
    fn from(c: &Customer) -> Self {
        CustomerState {
            first_name: c.first_name.clone(),
            last_name: c.last_name.clone(),
            channel_ids: c.channel_ids.clone(),
            customer_group_id: c.customer_group_id,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    Create {
        customer: DesiredCustomer,
        group_id: Option<u64>,
    },
    Update {
        account: String,
        id: u64,
        email: String,
        before: CustomerState,
        after: CustomerState,
        /// Adoption: the customer carries no subject yet; record this one after the update.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bind_subject: Option<String>,
    },
    /// Restrict: locked group, origin channel only, random password.
    Restrict {
        account: String,
        id: u64,
        email: String,
        before: CustomerState,
        after: CustomerState,
    },
    Delete {
        account: String,
        id: u64,
        email: String,
        before: CustomerState,
    },
}

impl Action {
    pub fn account(&self) -> &str {
        match self {
            Action::Create { customer, .. } => &customer.account,
            Action::Update { account, .. }
            | Action::Restrict { account, .. }
            | Action::Delete { account, .. } => account,
        }
    }
    pub fn email(&self) -> &str {
        match self {
            Action::Create { customer, .. } => &customer.email,
            Action::Update { email, .. }
            | Action::Restrict { email, .. }
            | Action::Delete { email, .. } => email,
        }
    }
}

/// What each account's customers look like, keyed by lower-case email.
pub type Actual = HashMap<String, HashMap<String, Customer>>;

/// Ids already resolved per account: named groups, the locked group and the `storegate_subject`
/// attribute (absent: no customer of that account carries a subject yet).
#[derive(Debug, Clone, Default)]
pub struct GroupIds {
    pub named: HashMap<(String, String), u64>,
    pub locked: HashMap<String, u64>,
    pub subject_attribute: HashMap<String, u64>,
}

impl GroupIds {
    /// The IdP subject `c` carries on `account`, if any.
    pub fn recorded_subject<'a>(&self, account: &str, c: &'a Customer) -> Option<&'a str> {
        self.subject_attribute
            .get(account)
            .and_then(|a| c.attribute(*a))
    }

    fn resolve(&self, account: &str, g: &Option<CustomerGroupRef>) -> Option<u64> {
        match g {
            None => None,
            Some(CustomerGroupRef::Id(id)) => Some(*id),
            Some(CustomerGroupRef::Name(n)) => {
                self.named.get(&(account.to_owned(), n.clone())).copied()
            }
        }
    }
}

/// A customer found by a person's email that carries another person's IdP subject. Left alone:
/// adopting it would hand one person's account (orders, addresses) to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conflict {
    pub account: String,
    pub id: u64,
    pub email: String,
    /// The subject the customer carries.
    pub recorded: String,
    /// The subject of the person with this email in the desired state.
    pub wanted: String,
}

/// Every customer of `actual` found by the email of someone in the desired state (joiner, mover
/// or leaver) but bound to another subject.
pub fn conflicts(
    desired: &Desired,
    actual: &Actual,
    groups: &GroupIds,
    accounts: &[String],
) -> Vec<Conflict> {
    let mut out = Vec::new();
    for account in accounts {
        let Some(have) = actual.get(account) else {
            continue;
        };
        let mut emails: Vec<&String> = have.keys().collect();
        emails.sort();
        for email in emails {
            let (Some(c), Some(wanted)) = (have.get(email), desired.subjects.get(email)) else {
                continue;
            };
            if let SubjectMatch::Conflict { recorded } =
                SubjectMatch::of(groups.recorded_subject(account, c), wanted)
            {
                out.push(Conflict {
                    account: account.clone(),
                    id: c.id,
                    email: email.clone(),
                    recorded: recorded.to_owned(),
                    wanted: wanted.clone(),
                });
            }
        }
    }
    out
}

/// The plan: desired vs actual. `accounts` lists every configured account. Customers in
/// [`conflicts`] get no action.
pub fn plan(
    desired: &Desired,
    actual: &Actual,
    groups: &GroupIds,
    accounts: &[String],
    mode: Deprovision,
) -> Vec<Action> {
    let mut actions = Vec::new();
    let mut wanted: std::collections::HashSet<(String, String)> = std::collections::HashSet::new();
    let conflicted: std::collections::HashSet<(String, String)> =
        conflicts(desired, actual, groups, accounts)
            .into_iter()
            .map(|c| (c.account, c.email))
            .collect();
    let empty = HashMap::new();
    for d in &desired.customers {
        let email = d.email.to_lowercase();
        wanted.insert((d.account.clone(), email.clone()));
        if conflicted.contains(&(d.account.clone(), email.clone())) {
            continue;
        }
        let group_id = groups.resolve(&d.account, &d.group);
        match actual.get(&d.account).unwrap_or(&empty).get(&email) {
            None => actions.push(Action::Create {
                customer: d.clone(),
                group_id,
            }),
            Some(c) => {
                let bind_subject = groups
                    .recorded_subject(&d.account, c)
                    .is_none()
                    .then(|| d.subject.clone());
                let before = CustomerState::from(c);
                let after = CustomerState {
                    first_name: d.first_name.clone(),
                    last_name: d.last_name.clone(),
                    channel_ids: Some(d.channel_ids.clone()),
                    customer_group_id: group_id.unwrap_or(c.customer_group_id),
                };
                if before != after || bind_subject.is_some() {
                    actions.push(Action::Update {
                        account: d.account.clone(),
                        id: c.id,
                        email,
                        before,
                        after,
                        bind_subject,
                    });
                }
            }
        }
    }
    // Movers lose accounts they no longer qualify for; leavers lose every account.
    let movers = desired.customers.iter().map(|d| d.email.to_lowercase());
    let mut people: Vec<String> = movers.chain(desired.leavers.iter().cloned()).collect();
    people.sort();
    people.dedup();
    for account in accounts {
        let have = actual.get(account).unwrap_or(&empty);
        for email in &people {
            if wanted.contains(&(account.clone(), email.clone())) {
                continue;
            }
            let Some(c) = have.get(email) else { continue };
            if conflicted.contains(&(account.clone(), email.clone())) {
                continue;
            }
            let before = CustomerState::from(c);
            match mode {
                Deprovision::Delete => actions.push(Action::Delete {
                    account: account.clone(),
                    id: c.id,
                    email: email.clone(),
                    before,
                }),
                Deprovision::Restrict => {
                    let locked = groups
                        .locked
                        .get(account)
                        .copied()
                        .unwrap_or(c.customer_group_id);
                    let origin = c
                        .origin_channel_id
                        .or_else(|| c.channel_ids.as_ref().and_then(|v| v.first().copied()))
                        .unwrap_or(1);
                    let after = CustomerState {
                        channel_ids: Some(vec![origin]),
                        customer_group_id: locked,
                        ..before.clone()
                    };
                    // Already locked: nothing to do (the password is not re-randomised every pass).
                    if before != after {
                        actions.push(Action::Restrict {
                            account: account.clone(),
                            id: c.id,
                            email: email.clone(),
                            before,
                            after,
                        });
                    }
                }
            }
        }
    }
    actions
}

#[cfg(test)]
mod tests;
