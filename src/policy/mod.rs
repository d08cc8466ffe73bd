//! The entitlement engine: pure, `(Identity, Policy, now) -> Entitlements`.
//!
//! # Precedence
//!
//! 1. A rule **applies** to a store when
//!    - the store is in its scope: listed in `stores` (or `stores = ["*"]`), or carrying one of its
//!      `store_tags` (the scope is the union of both lists);
//!    - every condition kind it sets matches the identity (kinds are AND-ed, the values inside one
//!      kind are OR-ed): `groups_any`, `roles_any`, `email_domains`, `idps`, `attributes` (every
//!      listed attribute carries one of the listed values), `attribute_regex` (every listed
//!      attribute has a value the whole regex matches: patterns are anchored), `acr_any`, `amr_any`;
//!    - `now` is inside its window: `not_before <= now < not_after`, where the end is the earlier of
//!      `not_after` and the time read from the identity's `expires_claim` (when the rule names one).
//!      A rule naming an `expires_claim` the identity does not carry, or carries unreadably, does not
//!      apply (fail closed).
//! 2. Any applicable **deny** rule refuses the store, whatever allows it (deny wins), wherever it
//!    sits in the file.
//! 3. Otherwise the **first** applicable allow rule, in file order, grants the store. Later
//!    applicable allow rules are recorded as overridden (and `storegate check` warns about them).
//! 4. No applicable allow rule: the store is refused (deny by default). When an allow rule would
//!    have applied but its window has ended, the refusal says so ([`DenyReason::Expired`]).
//!
//! # What a grant carries
//!
//! The deciding rule's `role` is looked up in a template: the rule's own `template`, else the
//! store's. The template's entry for that role gives the customer group, B2B company and role,
//! allowed storefront paths, required acr and maximum session age; any of these set on the rule
//! itself overrides the template's value.
//!
//! # Matching details
//!
//! `email_domains` trusts an address only when the IdP vouches for it ([`Identity::email_verified`]:
//! OIDC `email_verified: true`, or `trust_email` on the IdP). For an allow rule an unverified
//! address does not match, and when such a rule is all that would have granted the store the
//! refusal names it ([`DenyReason::EmailNotVerified`]). For a deny rule the address counts as
//! given, verified or not: leaving it out could only let someone past a deny.
//!
//! Groups and roles compare case-insensitively. A group written as a DN (`cn=Staff,ou=Groups,o=Corp`)
//! is compared whole, RDN by RDN, ignoring case and spaces around `,` and `=`; a plain name never
//! matches a DN (a name can exist in several containers). Email domains compare case-insensitively
//! and exactly (no subdomains). IdP ids, attribute values and acr/amr compare exactly.
//!
//! Every decision names the rule that made it, so the portal, the 403 page, the audit trail and
//! `storegate explain` all tell the same story.

pub mod admin;
mod control_panel;
mod expiry;
mod lint;
pub mod route;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::clock::UnixTime;
use crate::identity::{Identity, StoreId};
use crate::redirect::LocalPath;

pub use control_panel::{
    ControlPanelGrant, ControlPanelRefusal, ControlPanelSetup, HIGH_RISK_PERMISSIONS,
    KNOWN_PERMISSIONS,
};
pub use expiry::parse_expiry;
pub use lint::{Finding, Location};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    Allow,
    Deny,
}

/// Which stores a rule lists by id.
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

impl fmt::Display for CustomerGroupRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CustomerGroupRef::Id(id) => write!(f, "#{id}"),
            CustomerGroupRef::Name(n) => write!(f, "\"{n}\""),
        }
    }
}

/// A B2B Edition company user role (docs/bigcommerce.md: `role` 0 admin, 1 senior buyer,
/// 2 junior buyer; `companyRoleId` for custom roles).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum B2bRole {
    Admin,
    SeniorBuyer,
    JuniorBuyer,
    /// A custom company role, by `companyRoleId`.
    Custom(u64),
}

impl B2bRole {
    /// The B2B Edition `role` number, or `None` for a custom role (sent as `companyRoleId`).
    pub fn role_number(self) -> Option<u8> {
        match self {
            B2bRole::Admin => Some(0),
            B2bRole::SeniorBuyer => Some(1),
            B2bRole::JuniorBuyer => Some(2),
            B2bRole::Custom(_) => None,
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "admin" | "0" => Some(B2bRole::Admin),
            "senior_buyer" | "1" => Some(B2bRole::SeniorBuyer),
            "junior_buyer" | "2" => Some(B2bRole::JuniorBuyer),
            _ => None,
        }
    }
}

impl fmt::Display for B2bRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            B2bRole::Admin => f.write_str("admin"),
            B2bRole::SeniorBuyer => f.write_str("senior buyer"),
            B2bRole::JuniorBuyer => f.write_str("junior buyer"),
            B2bRole::Custom(id) => write!(f, "custom role #{id}"),
        }
    }
}

/// B2B Edition membership a grant gives: a company and the user's role in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct B2bGrant {
    pub company_id: u64,
    pub role: B2bRole,
}

/// What a role means on a store. In a template every field is that role's value; on a rule a
/// field that is set overrides the template's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantSpec {
    pub customer_group: Option<CustomerGroupRef>,
    pub b2b: Option<B2bGrant>,
    /// Storefront path prefixes `redirect_to` may use. `None`: any path.
    pub allowed_paths: Option<Vec<String>>,
    /// The authentication contract (acr) the session must carry to launch.
    pub require_acr: Option<String>,
    /// Launch only within this many seconds of signing in at the gateway (agencies, partners).
    pub max_session_age: Option<i64>,
    /// The `[[permission_set]]` this role is expected to hold in the store's control panel.
    pub control_panel: Option<String>,
}

impl GrantSpec {
    fn or(&self, fallback: Option<&GrantSpec>) -> GrantSpec {
        let Some(f) = fallback else {
            return self.clone();
        };
        GrantSpec {
            customer_group: self
                .customer_group
                .clone()
                .or_else(|| f.customer_group.clone()),
            b2b: self.b2b.or(f.b2b),
            allowed_paths: self
                .allowed_paths
                .clone()
                .or_else(|| f.allowed_paths.clone()),
            require_acr: self.require_acr.clone().or_else(|| f.require_acr.clone()),
            max_session_age: self.max_session_age.or(f.max_session_age),
            control_panel: self
                .control_panel
                .clone()
                .or_else(|| f.control_panel.clone()),
        }
    }
}

/// A named role -> grant mapping stores and rules share (`[[template]]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Template {
    pub name: String,
    pub roles: BTreeMap<String, GrantSpec>,
}

/// A regular expression over one attribute, compared by its source text.
#[derive(Debug, Clone)]
pub struct AttrRegex {
    source: String,
    anchored: regex::Regex,
}

impl AttrRegex {
    /// Compiles `pattern` anchored at both ends: it must match the whole value.
    pub fn new(pattern: &str) -> Result<Self, regex::Error> {
        Ok(AttrRegex {
            source: pattern.to_owned(),
            anchored: regex::Regex::new(&format!("^(?:{pattern})$"))?,
        })
    }
    pub fn as_str(&self) -> &str {
        &self.source
    }
    pub fn is_match(&self, value: &str) -> bool {
        self.anchored.is_match(value)
    }
}

impl PartialEq for AttrRegex {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}
impl Eq for AttrRegex {}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conditions {
    /// Any of these groups (names, or DNs compared RDN by RDN), case-insensitively.
    pub groups_any: Vec<String>,
    /// Any of these roles, case-insensitively.
    pub roles_any: Vec<String>,
    /// Any of these email domains.
    pub email_domains: Vec<String>,
    /// Any of these IdP ids.
    pub idps: Vec<String>,
    /// Every attribute listed must carry one of its values (one value: equals).
    pub attributes: BTreeMap<String, Vec<String>>,
    /// Every attribute listed must carry a value the (anchored) regex matches.
    pub attribute_regex: BTreeMap<String, AttrRegex>,
    /// The session's acr must be one of these.
    pub acr_any: Vec<String>,
    /// The session's amr must include one of these.
    pub amr_any: Vec<String>,
}

/// `cn=Staff, OU=Groups,o=corp` and `CN=staff,ou=groups,O=Corp` -> the same key; a plain name ->
/// its lower case. A plain name and a DN never share a key (a DN key always holds `=`).
pub fn group_key(raw: &str) -> String {
    let raw = raw.trim();
    if !looks_like_dn(raw) {
        return raw.to_lowercase();
    }
    // One pass (this runs for every group of every sign-in): lower-case, and drop the spaces
    // around `,` and `=` unless escaped.
    fn trim_end(out: &mut String) {
        while out.ends_with(' ') && !out[..out.len() - 1].ends_with('\\') {
            out.pop();
        }
    }
    let mut out = String::with_capacity(raw.len());
    let mut escaped = false;
    let mut after_separator = false;
    for c in raw.chars() {
        if escaped {
            out.extend(c.to_lowercase());
            escaped = false;
            continue;
        }
        match c {
            '\\' => {
                out.push('\\');
                escaped = true;
                after_separator = false;
            }
            ',' | '=' => {
                trim_end(&mut out);
                out.push(c);
                after_separator = true;
            }
            ' ' if after_separator => {}
            _ => {
                after_separator = false;
                out.extend(c.to_lowercase());
            }
        }
    }
    trim_end(&mut out);
    out
}

fn looks_like_dn(s: &str) -> bool {
    s.split_once('=').is_some_and(|(attr, _)| {
        let a = attr.trim();
        !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    })
}

/// One identity's facts and rule states at one instant, shared by the decisions one request
/// makes (a launch decides its store, then which stores of the same account are granted).
pub struct Evaluation<'p, 'i> {
    policy: &'p Policy,
    facts: Facts<'i>,
    now: UnixTime,
    memo: Vec<Option<RuleState>>,
}

impl<'p> Evaluation<'p, '_> {
    /// The decision the launch path needs. A [`LaunchDecision`] can only come from here, so a
    /// login token cannot be minted without an entitlement check made for that very request: the
    /// store, the storefront path it opens, the session's authentication strength and age.
    pub fn authorize_launch(
        &mut self,
        store: &StoreId,
        path: &LocalPath,
    ) -> Result<LaunchDecision, LaunchRefusal> {
        let (p, id, now) = (self.policy, self.facts.id, self.now);
        let Some(&pos) = p.store_pos.get(store) else {
            return Err(LaunchRefusal::Denied(DenyReason::UnknownStore));
        };
        // No list of overridden rules: a launch shows none.
        let grant = match p.decide_at(pos, &self.facts, now, &mut self.memo, false) {
            Decision::Allow { grant, .. } => grant,
            Decision::Deny { reason } => return Err(LaunchRefusal::Denied(reason)),
        };
        if !grant.permits_path(path) {
            return Err(LaunchRefusal::PathNotAllowed {
                rule: grant.rule,
                allowed: grant.allowed_paths.unwrap_or_default(),
            });
        }
        if let Some(max) = grant.max_session_age {
            // The gateway session's age: a fresh sign-in at the gateway resets it, so the
            // redirect the launch answers with cannot loop (an IdP's `auth_time` might not move).
            if now - id.signed_in_at >= max {
                return Err(LaunchRefusal::SessionTooOld {
                    rule: grant.rule,
                    max_age: max,
                });
            }
        }
        if !grant.acr_satisfied(id) {
            return Err(LaunchRefusal::StepUpRequired {
                rule: grant.rule,
                acr: grant.require_acr.unwrap_or_default(),
            });
        }
        Ok(LaunchDecision {
            grant,
            subject: id.subject.clone(),
            decided_at: now,
            path: path.clone(),
        })
    }

    /// The stores `keep` selects that are granted now: the stores of [`Policy::grants_where`],
    /// decided the same way but without building a grant for each (a launch needs only which of
    /// its account's stores are granted, to know the customer's channels).
    pub fn granted_stores_where(
        &mut self,
        mut keep: impl FnMut(&StoreId) -> bool,
    ) -> Vec<&'p StoreId> {
        let p = self.policy;
        (0..p.stores.len())
            .filter(|&pos| keep(&p.stores[pos].id))
            .filter(|&pos| {
                matches!(
                    p.verdict_at(pos, &self.facts, self.now, &mut self.memo, None),
                    Verdict::Allow { .. }
                )
            })
            .map(|pos| &p.stores[pos].id)
            .collect()
    }
}

/// The identity's facts, normalized once per evaluation.
struct Facts<'a> {
    id: &'a Identity,
    groups: HashSet<String>,
    roles: HashSet<String>,
    domain: Option<String>,
    /// Whether the IdP vouches for the address `domain` comes from.
    domain_verified: bool,
}

impl<'a> Facts<'a> {
    fn new(id: &'a Identity) -> Self {
        Facts {
            id,
            groups: id.groups.iter().map(|g| group_key(g)).collect(),
            roles: id.roles.iter().map(|r| r.to_lowercase()).collect(),
            domain: id.email_domain(),
            domain_verified: id.email_verified,
        }
    }
}

/// A rule's conditions with the case-folding done once, when the policy is built.
#[derive(Debug, Clone, Default)]
struct Prepared {
    groups: Vec<String>,
    roles: Vec<String>,
    domains: Vec<String>,
}

impl Prepared {
    fn of(c: &Conditions) -> Self {
        Prepared {
            groups: c.groups_any.iter().map(|g| group_key(g)).collect(),
            roles: c.roles_any.iter().map(|r| r.to_lowercase()).collect(),
            domains: c.email_domains.iter().map(|d| d.to_lowercase()).collect(),
        }
    }
}

/// How a rule's conditions stand for one identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Match {
    Yes,
    /// Everything holds, but the email domain only by an address the IdP does not vouch for.
    UnverifiedEmail,
    No,
}

impl Conditions {
    fn matches_prepared(&self, p: &Prepared, f: &Facts<'_>) -> Match {
        let domain = if p.domains.is_empty() {
            Match::Yes
        } else if f.domain.as_ref().is_some_and(|d| p.domains.contains(d)) {
            if f.domain_verified {
                Match::Yes
            } else {
                Match::UnverifiedEmail
            }
        } else {
            Match::No
        };
        if domain == Match::No || !self.others_match(p, f) {
            return Match::No;
        }
        domain
    }

    /// Every condition but `email_domains`.
    fn others_match(&self, p: &Prepared, f: &Facts<'_>) -> bool {
        let id = f.id;
        (p.groups.is_empty() || p.groups.iter().any(|g| f.groups.contains(g)))
            && (p.roles.is_empty() || p.roles.iter().any(|r| f.roles.contains(r)))
            && (self.idps.is_empty() || self.idps.iter().any(|want| want == id.idp.as_str()))
            && self.attributes.iter().all(|(name, wanted)| {
                id.attributes
                    .get(name)
                    .is_some_and(|have| have.iter().any(|v| wanted.contains(v)))
            })
            && self.attribute_regex.iter().all(|(name, re)| {
                id.attributes
                    .get(name)
                    .is_some_and(|have| have.iter().any(|v| re.is_match(v)))
            })
            && (self.acr_any.is_empty()
                || id
                    .auth
                    .acr
                    .as_ref()
                    .is_some_and(|a| self.acr_any.contains(a)))
            && (self.amr_any.is_empty() || id.auth.amr.iter().any(|m| self.amr_any.contains(m)))
    }

    /// Whether these conditions hold for `id` in an allow rule (unindexed; for tests and tools).
    pub fn matches(&self, id: &Identity) -> bool {
        self.matches_as(Effect::Allow, id)
    }

    /// Whether these conditions hold for `id` in a rule of `effect`: a deny rule takes an
    /// unverified email domain at its word, an allow rule does not.
    pub fn matches_as(&self, effect: Effect, id: &Identity) -> bool {
        match self.matches_prepared(&Prepared::of(self), &Facts::new(id)) {
            Match::Yes => true,
            Match::UnverifiedEmail => effect == Effect::Deny,
            Match::No => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    pub effect: Effect,
    pub conditions: Conditions,
    pub stores: StoreSelector,
    /// Stores carrying any of these tags are in scope too (compared case-insensitively).
    pub store_tags: Vec<String>,
    pub role: String,
    /// The template whose entry for `role` shapes the grant (else the store's template).
    pub template: Option<String>,
    /// Grant fields set on the rule itself; they override the template's.
    pub grant: GrantSpec,
    pub not_before: Option<UnixTime>,
    pub not_after: Option<UnixTime>,
    /// An identity attribute (claim) holding the access's end, RFC 3339 or Unix seconds.
    pub expires_claim: Option<String>,
}

impl Rule {
    /// An allow rule for `role` on `stores`, with no condition, window or grant settings.
    pub fn allow(name: impl Into<String>, role: impl Into<String>, stores: StoreSelector) -> Rule {
        Rule {
            name: name.into(),
            effect: Effect::Allow,
            conditions: Conditions::default(),
            stores,
            store_tags: Vec::new(),
            role: role.into(),
            template: None,
            grant: GrantSpec::default(),
            not_before: None,
            not_after: None,
            expires_claim: None,
        }
    }

    /// A deny rule on `stores`, with no condition or window.
    pub fn deny(name: impl Into<String>, stores: StoreSelector) -> Rule {
        Rule {
            effect: Effect::Deny,
            ..Rule::allow(name, "", stores)
        }
    }

    fn in_scope(&self, store: &StoreEntry) -> bool {
        self.stores.covers(&store.id)
            || self
                .store_tags
                .iter()
                .any(|t| store.tags.iter().any(|have| have.eq_ignore_ascii_case(t)))
    }

    /// Whether `now` is inside the rule's configured window (the claim expiry aside).
    pub fn in_window(&self, now: UnixTime) -> bool {
        self.not_before.is_none_or(|nb| now >= nb) && self.not_after.is_none_or(|na| now < na)
    }
}

/// One configured storefront as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreEntry {
    pub id: StoreId,
    /// Region, brand, business unit...: what `store_tags` select.
    pub tags: Vec<String>,
    /// The template the store follows.
    pub template: Option<String>,
}

impl StoreEntry {
    /// A store with no tags and no template.
    pub fn plain(id: StoreId) -> Self {
        StoreEntry {
            id,
            tags: Vec::new(),
            template: None,
        }
    }
}

/// The policy: stores, templates and rules in file order, plus the index that makes one
/// evaluation cheap (rules per store; lower-cased group keys). Built only by [`Policy::new`], so
/// the index can never disagree with the rules.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    stores: Vec<StoreEntry>,
    templates: Vec<Template>,
    rules: Vec<Rule>,
    prepared: Vec<Prepared>,
    /// For each store (by position), the rules whose scope covers it, in file order.
    by_store: Vec<Vec<usize>>,
    /// The same, split into deny rules and allow rules (each in file order), so a decision
    /// checks the few denies and stops at the first applicable allow.
    denies_by_store: Vec<Vec<usize>>,
    allows_by_store: Vec<Vec<usize>>,
    store_pos: HashMap<StoreId, usize>,
    template_pos: HashMap<String, usize>,
    /// Permission sets and each store's `[[bigcommerce]]` id: what control-panel grants need.
    control_panel: ControlPanelSetup,
}

/// One user's right on one store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Grant {
    pub store: StoreId,
    pub role: String,
    pub customer_group: Option<CustomerGroupRef>,
    /// The rule that granted it.
    pub rule: String,
    /// The template that shaped it, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// When the grant lapses: the earlier of the rule's `not_after` and the identity's
    /// `expires_claim` value.
    pub expires_at: Option<UnixTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b2b: Option<B2bGrant>,
    /// Storefront path prefixes the launch may open; `None` = any path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_paths: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub require_acr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_session_age: Option<i64>,
    /// The `[[permission_set]]` expected in the store's control panel (see
    /// [`Policy::control_panel_grants`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_panel: Option<String>,
}

impl Grant {
    /// Whether the grant lets a launch open `path` on the storefront.
    ///
    /// A prefix ending in `/` covers everything below it; any other prefix covers itself, itself
    /// followed by `/`, `?` or `#`. Paths with dot segments (`/a/../b`, also percent-encoded) are
    /// refused outright when paths are restricted: the browser would resolve them elsewhere.
    pub fn permits_path(&self, path: &LocalPath) -> bool {
        let Some(allowed) = &self.allowed_paths else {
            return true;
        };
        let p = path.as_str();
        if has_dot_segment(p) {
            return false;
        }
        allowed.iter().any(|prefix| {
            if prefix.ends_with('/') {
                p.starts_with(prefix.as_str())
            } else {
                p.strip_prefix(prefix.as_str()).is_some_and(|rest| {
                    rest.is_empty()
                        || rest.starts_with('/')
                        || rest.starts_with('?')
                        || rest.starts_with('#')
                })
            }
        })
    }

    /// Whether the session's authentication satisfies the grant's acr: the same class, or one the
    /// IdP's configured order puts above it (`acr_implies`, SAML `minimum`).
    pub fn acr_satisfied(&self, id: &Identity) -> bool {
        self.require_acr.as_ref().is_none_or(|want| {
            id.auth.acr.as_ref() == Some(want) || id.auth.acr_implies.contains(want)
        })
    }
}

fn has_dot_segment(path: &str) -> bool {
    let path = path.split(['?', '#']).next().unwrap_or("");
    path.split('/').any(|seg| {
        let s = seg.to_ascii_lowercase().replace("%2e", ".");
        s == "." || s == ".."
    })
}

// Allow is the common case and is matched by value everywhere; boxing the grant buys nothing.
#[allow(clippy::large_enum_variant)]
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
    /// An allow rule matched but its access ended at `at`.
    Expired { rule: String, at: UnixTime },
    /// An allow rule would have matched, but through `email_domains` on an address the IdP does
    /// not vouch for (no `email_verified: true`, and the IdP is not marked `trust_email`).
    EmailNotVerified { rule: String },
    /// No allow rule matched (deny by default).
    NoMatchingRule,
    /// The store is not configured.
    UnknownStore,
}

impl DenyReason {
    /// The deciding rule's name, or a fixed label for the default.
    pub fn rule_label(&self) -> &str {
        match self {
            DenyReason::DeniedByRule { rule }
            | DenyReason::Expired { rule, .. }
            | DenyReason::EmailNotVerified { rule } => rule,
            DenyReason::NoMatchingRule => "default-deny",
            DenyReason::UnknownStore => "unknown-store",
        }
    }

    pub fn explain(&self) -> String {
        match self {
            DenyReason::DeniedByRule { rule } => format!("the rule \"{rule}\" denies this store"),
            DenyReason::Expired { rule, at } => format!(
                "your access through the rule \"{rule}\" expired at {}",
                crate::clock::rfc3339(*at)
            ),
            DenyReason::EmailNotVerified { rule } => format!(
                "the rule \"{rule}\" grants this store by email domain, and your identity provider did not confirm your email address (email_verified), so it does not apply"
            ),
            DenyReason::NoMatchingRule => {
                "no rule grants you this store (deny by default)".to_owned()
            }
            DenyReason::UnknownStore => "there is no such store".to_owned(),
        }
    }
}

/// How one rule stands for one identity at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RuleState {
    NoMatch,
    /// An allow rule that would apply but for an unverified email domain.
    UnverifiedEmail,
    NotYet,
    Expired {
        at: UnixTime,
    },
    Applies {
        until: Option<UnixTime>,
    },
}

/// Which rule decides a store (indexes into `Policy::rules`); a [`Decision`] names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Allow {
        rule: usize,
        until: Option<UnixTime>,
    },
    DeniedBy(usize),
    Expired {
        rule: usize,
        at: UnixTime,
    },
    EmailNotVerified(usize),
    NoMatchingRule,
}

impl Policy {
    /// Builds the policy and its index. Rules keep file order; stores keep portal order.
    pub fn new(stores: Vec<StoreEntry>, templates: Vec<Template>, rules: Vec<Rule>) -> Policy {
        let prepared = rules.iter().map(|r| Prepared::of(&r.conditions)).collect();
        let by_store: Vec<Vec<usize>> = stores
            .iter()
            .map(|s| {
                rules
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.in_scope(s))
                    .map(|(i, _)| i)
                    .collect()
            })
            .collect();
        let split = |effect: Effect| -> Vec<Vec<usize>> {
            by_store
                .iter()
                .map(|list| {
                    list.iter()
                        .copied()
                        .filter(|i| rules[*i].effect == effect)
                        .collect()
                })
                .collect()
        };
        let denies_by_store = split(Effect::Deny);
        let allows_by_store = split(Effect::Allow);
        let store_pos = stores
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.clone(), i))
            .collect();
        let template_pos = templates
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Policy {
            stores,
            templates,
            rules,
            prepared,
            by_store,
            denies_by_store,
            allows_by_store,
            store_pos,
            template_pos,
            control_panel: ControlPanelSetup::default(),
        }
    }

    /// Stores without tags or templates: the shape of the first policies, kept for tests.
    pub fn with_plain_stores(stores: Vec<StoreId>, rules: Vec<Rule>) -> Policy {
        Policy::new(
            stores.into_iter().map(StoreEntry::plain).collect(),
            Vec::new(),
            rules,
        )
    }

    pub fn stores(&self) -> &[StoreEntry] {
        &self.stores
    }
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
    pub fn templates(&self) -> &[Template] {
        &self.templates
    }
    pub fn store_ids(&self) -> impl Iterator<Item = &StoreId> {
        self.stores.iter().map(|s| &s.id)
    }
    pub fn has_store(&self, id: &StoreId) -> bool {
        self.store_pos.contains_key(id)
    }
    pub fn template(&self, name: &str) -> Option<&Template> {
        self.template_pos.get(name).map(|i| &self.templates[*i])
    }
    /// The rules whose scope covers `store`, in file order.
    pub fn rules_for(&self, store: &StoreId) -> impl Iterator<Item = &Rule> {
        self.store_pos
            .get(store)
            .map(|p| self.by_store[*p].as_slice())
            .unwrap_or(&[])
            .iter()
            .map(|i| &self.rules[*i])
    }

    fn rule_state(&self, i: usize, f: &Facts<'_>, now: UnixTime) -> RuleState {
        let rule = &self.rules[i];
        let unverified = match rule.conditions.matches_prepared(&self.prepared[i], f) {
            Match::Yes => false,
            Match::UnverifiedEmail => rule.effect == Effect::Allow,
            Match::No => return RuleState::NoMatch,
        };
        if unverified {
            // Said only of a rule that would otherwise apply now.
            return match self.window_state(rule, f, now) {
                RuleState::Applies { .. } => RuleState::UnverifiedEmail,
                _ => RuleState::NoMatch,
            };
        }
        self.window_state(rule, f, now)
    }

    /// The rule's standing by its window and `expires_claim`, its conditions holding.
    fn window_state(&self, rule: &Rule, f: &Facts<'_>, now: UnixTime) -> RuleState {
        if rule.not_before.is_some_and(|nb| now < nb) {
            return RuleState::NotYet;
        }
        let mut until = rule.not_after;
        if let Some(claim) = &rule.expires_claim {
            match expiry::read_expiry(f.id, claim) {
                Some(t) => until = Some(until.map_or(t, |u| u.min(t))),
                // Fail closed: a grant that should carry an end date but does not is no grant.
                None => return RuleState::NoMatch,
            }
        }
        match until {
            Some(at) if now >= at => RuleState::Expired { at },
            _ => RuleState::Applies { until },
        }
    }

    /// Which rule decides store `pos` for these facts, without building anything: deny wins,
    /// then the first allow that applies; else the first expired allow, else the first allow
    /// held back by an unverified email. `on_overridden` hears of every later allow that applies
    /// as well; without it the search stops at the first.
    fn verdict_at(
        &self,
        pos: usize,
        f: &Facts<'_>,
        now: UnixTime,
        memo: &mut [Option<RuleState>],
        mut on_overridden: Option<&mut dyn FnMut(usize)>,
    ) -> Verdict {
        let mut state = |i: usize| *memo[i].get_or_insert_with(|| self.rule_state(i, f, now));
        // Deny wins, wherever it sits in the file.
        for &i in &self.denies_by_store[pos] {
            if let RuleState::Applies { .. } = state(i) {
                return Verdict::DeniedBy(i);
            }
        }
        let mut first_allow: Option<(usize, Option<UnixTime>)> = None;
        let mut expired: Option<(usize, UnixTime)> = None;
        let mut unverified: Option<usize> = None;
        for &i in &self.allows_by_store[pos] {
            match state(i) {
                RuleState::Applies { until } if first_allow.is_none() => {
                    first_allow = Some((i, until));
                    if on_overridden.is_none() {
                        break;
                    }
                }
                RuleState::Applies { .. } => {
                    if let Some(tell) = on_overridden.as_mut() {
                        tell(i);
                    }
                }
                RuleState::Expired { at } if expired.is_none() && first_allow.is_none() => {
                    expired = Some((i, at));
                }
                RuleState::UnverifiedEmail if unverified.is_none() && first_allow.is_none() => {
                    unverified = Some(i);
                }
                _ => {}
            }
        }
        match (first_allow, expired, unverified) {
            (Some((rule, until)), _, _) => Verdict::Allow { rule, until },
            (None, Some((rule, at)), _) => Verdict::Expired { rule, at },
            (None, None, Some(rule)) => Verdict::EmailNotVerified(rule),
            (None, None, None) => Verdict::NoMatchingRule,
        }
    }

    fn decide_at(
        &self,
        pos: usize,
        f: &Facts<'_>,
        now: UnixTime,
        memo: &mut [Option<RuleState>],
        record_overridden: bool,
    ) -> Decision {
        let mut overridden = Vec::new();
        let mut note = |i: usize| overridden.push(self.rules[i].name.clone());
        let verdict = self.verdict_at(
            pos,
            f,
            now,
            memo,
            record_overridden.then_some(&mut note as &mut dyn FnMut(usize)),
        );
        let rule_name = |i: usize| self.rules[i].name.clone();
        match verdict {
            Verdict::Allow { rule, until } => Decision::Allow {
                grant: self.grant(&self.stores[pos], &self.rules[rule], until),
                overridden,
            },
            Verdict::DeniedBy(i) => Decision::Deny {
                reason: DenyReason::DeniedByRule { rule: rule_name(i) },
            },
            Verdict::Expired { rule, at } => Decision::Deny {
                reason: DenyReason::Expired {
                    rule: rule_name(rule),
                    at,
                },
            },
            Verdict::EmailNotVerified(i) => Decision::Deny {
                reason: DenyReason::EmailNotVerified { rule: rule_name(i) },
            },
            Verdict::NoMatchingRule => Decision::Deny {
                reason: DenyReason::NoMatchingRule,
            },
        }
    }

    fn grant(&self, store: &StoreEntry, rule: &Rule, until: Option<UnixTime>) -> Grant {
        let template_name = rule.template.as_ref().or(store.template.as_ref());
        let from_template = template_name
            .and_then(|n| self.template(n))
            .and_then(|t| t.roles.get(&rule.role));
        let spec = rule.grant.or(from_template);
        Grant {
            store: store.id.clone(),
            role: rule.role.clone(),
            customer_group: spec.customer_group,
            rule: rule.name.clone(),
            template: from_template.and(template_name.cloned()),
            expires_at: until,
            b2b: spec.b2b,
            allowed_paths: spec.allowed_paths,
            require_acr: spec.require_acr,
            max_session_age: spec.max_session_age,
            control_panel: spec.control_panel,
        }
    }

    /// Decide one store.
    pub fn decide(&self, id: &Identity, store: &StoreId, now: UnixTime) -> Decision {
        let Some(&pos) = self.store_pos.get(store) else {
            return Decision::Deny {
                reason: DenyReason::UnknownStore,
            };
        };
        let mut memo = vec![None; self.rules.len()];
        self.decide_at(pos, &Facts::new(id), now, &mut memo, true)
    }

    /// Decide every configured store, in portal order. Each rule's conditions are evaluated at
    /// most once for the whole call.
    pub fn evaluate(&self, id: &Identity, now: UnixTime) -> Vec<(StoreId, Decision)> {
        let facts = Facts::new(id);
        let mut memo = vec![None; self.rules.len()];
        (0..self.stores.len())
            .map(|pos| {
                (
                    self.stores[pos].id.clone(),
                    self.decide_at(pos, &facts, now, &mut memo, true),
                )
            })
            .collect()
    }

    /// The grants only, in portal order: the request path (portal, launch), which needs no list
    /// of overridden rules.
    pub fn grants(&self, id: &Identity, now: UnixTime) -> Vec<Grant> {
        self.grants_where(id, now, |_| true)
    }

    /// [`Self::grants`] for the stores `keep` selects only; the others are not decided at all.
    /// A launch needs the grants of one BigCommerce account's stores, not of every store.
    pub fn grants_where(
        &self,
        id: &Identity,
        now: UnixTime,
        mut keep: impl FnMut(&StoreId) -> bool,
    ) -> Vec<Grant> {
        let facts = Facts::new(id);
        let mut memo = vec![None; self.rules.len()];
        (0..self.stores.len())
            .filter(|&pos| keep(&self.stores[pos].id))
            .filter_map(
                |pos| match self.decide_at(pos, &facts, now, &mut memo, false) {
                    Decision::Allow { grant, .. } => Some(grant),
                    Decision::Deny { .. } => None,
                },
            )
            .collect()
    }

    /// The stores `keep` selects that `id` is granted now (see [`Evaluation::granted_stores_where`]).
    pub fn granted_stores_where(
        &self,
        id: &Identity,
        now: UnixTime,
        keep: impl FnMut(&StoreId) -> bool,
    ) -> Vec<&StoreId> {
        self.evaluation(id, now).granted_stores_where(keep)
    }

    /// The decision the launch path needs (see [`Evaluation::authorize_launch`]).
    pub fn authorize_launch(
        &self,
        id: &Identity,
        store: &StoreId,
        now: UnixTime,
        path: &LocalPath,
    ) -> Result<LaunchDecision, LaunchRefusal> {
        self.evaluation(id, now).authorize_launch(store, path)
    }

    /// `id`'s facts at `now`, for several decisions of one request: the identity is normalised
    /// once, and each rule's conditions are evaluated at most once across them (issue 15).
    pub fn evaluation<'p, 'i>(&'p self, id: &'i Identity, now: UnixTime) -> Evaluation<'p, 'i> {
        Evaluation {
            policy: self,
            facts: Facts::new(id),
            now,
            memo: vec![None; self.rules.len()],
        }
    }

    /// What `storegate check` should warn about (a pure look at the policy at `now`).
    pub fn lint(&self, now: UnixTime) -> Vec<Finding> {
        lint::lint(self, now)
    }

    /// Every acr some grant can require (the only values `/login?acr=` accepts).
    pub fn required_acrs(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .rules
            .iter()
            .filter_map(|r| r.grant.require_acr.as_deref())
            .chain(self.templates.iter().flat_map(|t| {
                t.roles
                    .values()
                    .filter_map(|spec| spec.require_acr.as_deref())
            }))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// Why a launch of an allowed-or-not store cannot go ahead now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaunchRefusal {
    /// The policy refuses the store.
    Denied(DenyReason),
    /// The store is granted, but not the storefront page asked for.
    PathNotAllowed { rule: String, allowed: Vec<String> },
    /// The grant needs a stronger authentication contract: sign in again with `acr_values`.
    StepUpRequired { rule: String, acr: String },
    /// The grant allows launches only this soon after authenticating: sign in again.
    SessionTooOld { rule: String, max_age: i64 },
}

impl LaunchRefusal {
    /// The rule (or default label) behind the refusal, for the audit trail.
    pub fn rule_label(&self) -> &str {
        match self {
            LaunchRefusal::Denied(r) => r.rule_label(),
            LaunchRefusal::PathNotAllowed { rule, .. }
            | LaunchRefusal::StepUpRequired { rule, .. }
            | LaunchRefusal::SessionTooOld { rule, .. } => rule,
        }
    }

    /// A stable reason code for audit events.
    pub fn code(&self) -> &'static str {
        match self {
            LaunchRefusal::Denied(DenyReason::Expired { .. }) => "grant_expired",
            LaunchRefusal::Denied(DenyReason::EmailNotVerified { .. }) => "email_not_verified",
            LaunchRefusal::Denied(_) => "not_entitled",
            LaunchRefusal::PathNotAllowed { .. } => "path_not_allowed",
            LaunchRefusal::StepUpRequired { .. } => "step_up_required",
            LaunchRefusal::SessionTooOld { .. } => "session_too_old",
        }
    }

    pub fn explain(&self) -> String {
        match self {
            LaunchRefusal::Denied(r) => r.explain(),
            LaunchRefusal::PathNotAllowed { rule, allowed } => format!(
                "the rule \"{rule}\" lets you open only {} on this store",
                allowed.join(", ")
            ),
            LaunchRefusal::StepUpRequired { rule, acr } => format!(
                "the rule \"{rule}\" requires the sign-in method {acr}, which this session did not use"
            ),
            LaunchRefusal::SessionTooOld { rule, max_age } => format!(
                "the rule \"{rule}\" allows launches only within {} of signing in",
                humantime::format_duration(std::time::Duration::from_secs(
                    u64::try_from(*max_age).unwrap_or(0)
                ))
            ),
        }
    }
}

/// Proof that the policy allowed this identity this store, this storefront path, at this
/// moment. No public constructor.
#[derive(Debug)]
pub struct LaunchDecision {
    grant: Grant,
    subject: String,
    decided_at: UnixTime,
    path: LocalPath,
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
    /// The storefront path the policy checked: the only one the token may carry.
    pub fn path(&self) -> &LocalPath {
        &self.path
    }
}

#[cfg(test)]
mod tests;
