//! B2B Edition company membership, reconciled (issue 5) as a step of the pass after the queue
//! drained: the customer must exist first (a company user is matched by the customer id), and the
//! step is idempotent, so a crash is repaired by the next pass.
//!
//! Per account with B2B access, every company involved is read once per pass: its record (it must
//! exist and be approved) and its users, page by page (`GET /users?companyId=`). The rest is
//! compared locally, so a pass in which nothing changed costs 1 + pages calls per company, not
//! calls per person. The companies involved are those of the desired grants and, when the account
//! has customers storegate bound, every company the policy names on the account's stores.
//! - joiner: a desired customer with a B2B grant but no user in that company first gets one
//!   `GET /users/customer/{id}` (a user of another company is a conflict), then the company user
//!   (`b2b_create`);
//! - mover within the company: the role changes in place (`b2b_role`);
//! - leaver, or mover whose grants on the account lost their B2B part or the store: the company
//!   user of a customer storegate bound (its `storegate_subject` attribute holds that person's
//!   subject) is deleted (`b2b_remove`). A customer bound to a subject that SCIM no longer knows at
//!   all is `not_desired` drift: its company user goes only with `repair_drift = true`;
//! - a customer who is a user of another company, or a company that is missing or not approved,
//!   is reported (log + `provision` audit event, outcome deny, reason `b2b_conflict`), never moved.
//!   Users of companies the policy does not name are never read, so never touched; customers not
//!   bound to a subject are never removed.
//!
//! Remove, not deactivate: B2B Edition has no active flag on a company user (reference
//! docs/bigcommerce.md: only a company has a status, and deactivating it would lock out every
//! colleague), so deleting the user is the only way to end buying for the company. That holds for
//! both `deprovision` modes: with `restrict` the locked customer stays but is no longer a buyer of
//! the company; with `delete` no company user is left pointing at a deleted customer. A rehire
//! simply gets a new company user as a joiner.
//!
//! Rate limits and transient failures are retried within the pass ([`super::retry`]); what still
//! fails is reported per person (`b2b_failed`) and retried by the next pass: a failed call never
//! fails the pass.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use super::observe::BoundCustomer;
use super::queue::Backoff;
use super::reconcile::{Desired, DesiredCustomer};
use super::retry::{b2b_wait, bc_wait, bounded};
use crate::audit::{AuditEvent, AuditLog, EventKind, Outcome};
use crate::bigcommerce::api::{ApiError, Customer};
use crate::bigcommerce::api::{Customers, LOOKUP};
use crate::bigcommerce::b2b::{
    B2bApi, CompanyUser, MembershipNeed, membership_need, role_text, usable_company,
};
use crate::config::Config;
use crate::identity::{AuthContext, Identity, IdpId, SubjectMatch};
use crate::policy::{B2bGrant, Effect};

/// Company users per `GET /users?companyId=` page.
const PAGE: u64 = 100;

/// What the step did (or, in a dry run, would do) for one customer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum B2bChangeKind {
    Created,
    RoleChanged,
    Unchanged,
    /// A leaver or mover lost the company user.
    Removed,
    /// Another company, or a company missing or not approved: left alone.
    Conflict,
    /// A call failed (after the retries of the pass); the next pass tries again.
    Failed,
    /// Dry run: the customer does not exist yet, so its membership cannot be read.
    AfterCreate,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct B2bChange {
    pub account: String,
    pub email: String,
    pub customer_id: Option<u64>,
    pub company_id: u64,
    /// The role before (`None`: no company user).
    pub before: Option<String>,
    /// The grant's role (`None`: the company user goes).
    pub after: Option<String>,
    pub kind: B2bChangeKind,
    pub detail: String,
}

/// A company for this pass: its users by customer id, or why it cannot be used.
type Members = Result<HashMap<u64, CompanyUser>, (B2bChangeKind, String)>;

/// Customer ids by lower-case email (with the subject the customer is bound to, if any), and
/// the emails whose lookup kept failing, with why.
#[derive(Default)]
struct Lookup {
    ids: HashMap<String, (u64, Option<String>)>,
    failed: HashMap<String, String>,
}

/// A customer storegate bound on this account, with the subject it is bound to.
type Bound<'a> = (&'a Customer, &'a str);

const LEFT_ALONE: &str =
    "left alone: an administrator must fix the company membership in B2B Edition";

/// The identity [`crate::bigcommerce::b2b::B2bApi::create_user`] needs, from the desired state.
fn identity_of(d: &DesiredCustomer) -> Identity {
    let (idp, subject) = d.subject.split_once(':').unwrap_or(("", &d.subject));
    Identity {
        subject: subject.to_owned(),
        idp: IdpId::new(idp.to_owned()),
        email: Some(d.email.clone()),
        // SCIM is the system of record for these people (see reconcile::identity_of).
        email_verified: true,
        given_name: Some(d.first_name.clone()),
        family_name: Some(d.last_name.clone()),
        name: None,
        groups: Vec::new(),
        roles: Vec::new(),
        attributes: Default::default(),
        auth: AuthContext::default(),
        signed_in_at: 0,
    }
}

/// The companies any allow rule names (on the rule or through its template) on the account's
/// stores: the companies whose users storegate manages there.
fn managed_companies(cfg: &Config, account: &str) -> BTreeSet<u64> {
    let policy = &cfg.policy;
    let mut out = BTreeSet::new();
    for store in cfg.stores.iter().filter(|s| s.account == account) {
        for r in policy.rules_for(&store.id) {
            if r.effect != Effect::Allow {
                continue;
            }
            let from_template = r
                .template
                .as_ref()
                .or(store.template.as_ref())
                .and_then(|t| policy.template(t))
                .and_then(|t| t.roles.get(&r.role))
                .and_then(|g| g.b2b);
            if let Some(g) = r.grant.b2b.or(from_template) {
                out.insert(g.company_id);
            }
        }
    }
    out
}

/// What the step works with: the B2B Edition clients of the accounts with B2B access, and the
/// Management API clients to find customer ids by email.
pub struct B2bStep<'a> {
    pub config: &'a Config,
    pub b2b: &'a HashMap<String, Arc<dyn B2bApi>>,
    pub clients: &'a HashMap<String, Arc<dyn Customers>>,
    pub backoff: Backoff,
    pub audit: &'a AuditLog,
}

impl B2bStep<'_> {
    /// Brings B2B membership in line on every account with B2B access: desired customers with a
    /// B2B grant get it, `bound` customers (account, customer, subject: read before the drain)
    /// without one lose their company user. With `apply` false only reads (a dry run). Audits
    /// every change, conflict and failure when applying.
    pub async fn run(
        &self,
        desired: &Desired,
        bound: &[BoundCustomer],
        run: &str,
        now: crate::clock::UnixTime,
        apply: bool,
    ) -> Vec<B2bChange> {
        let mut out = Vec::new();
        let mut accounts: Vec<_> = self.b2b.iter().collect();
        accounts.sort_by_key(|(a, _)| a.as_str());
        for (account, api) in accounts {
            let api = api.as_ref();
            let wanted: Vec<&DesiredCustomer> = desired
                .customers
                .iter()
                .filter(|d| &d.account == account && d.b2b.is_some())
                .collect();
            let bound_here: Vec<Bound<'_>> = bound
                .iter()
                .filter(|(a, _, _)| a == account)
                .map(|(_, c, s)| (c, s.as_str()))
                .collect();
            let mut companies: BTreeSet<u64> = wanted
                .iter()
                .filter_map(|d| d.b2b.map(|g| g.company_id))
                .collect();
            if !bound_here.is_empty() {
                companies.extend(managed_companies(self.config, account));
            }
            let mut members = Vec::new();
            for company_id in companies {
                members.push((company_id, self.members(api, company_id).await));
            }
            for (company_id, m) in &members {
                if let Err((_, detail)) = m {
                    // Its leavers cannot be found either: they keep their users until it can.
                    tracing::warn!(
                        account = %account,
                        company = company_id,
                        "B2B company not reconciled this pass: {detail}"
                    );
                }
            }
            let members: HashMap<u64, Members> = members.into_iter().collect();
            let lookup = self.customer_ids(account, &wanted).await;
            for d in &wanted {
                if let Some(grant) = d.b2b {
                    out.push(
                        self.ensure(api, account, d, grant, &lookup, &members, apply)
                            .await,
                    );
                }
            }
            out.extend(
                self.removals(api, account, desired, &bound_here, &members, apply)
                    .await,
            );
        }
        for c in &out {
            self.b2b_audit(c, run, now, apply);
        }
        out
    }

    /// A company's users by customer id, if the company exists and is approved.
    async fn members(&self, api: &dyn B2bApi, company_id: u64) -> Members {
        let b = &self.backoff;
        let failed = |e: ApiError| {
            (
                B2bChangeKind::Failed,
                format!("B2B Edition: {e}; retried next pass"),
            )
        };
        let found = bounded(b, |e| b2b_wait(e, true), || api.company(company_id))
            .await
            .map_err(failed)?;
        match usable_company(company_id, found) {
            Ok(_) => {}
            Err(ApiError::B2bConflict { detail }) => return Err((B2bChangeKind::Conflict, detail)),
            Err(e) => return Err(failed(e)),
        }
        let mut users = HashMap::new();
        let mut offset = 0;
        loop {
            let (page, total) = bounded(
                b,
                |e| b2b_wait(e, true),
                || api.company_users(company_id, offset, PAGE),
            )
            .await
            .map_err(failed)?;
            let got = page.len() as u64;
            users.extend(page.into_iter().map(|u| (u.customer_id, u)));
            offset += got;
            if got == 0 || offset >= total {
                return Ok(users);
            }
        }
    }

    /// The customer ids of the wanted people, with the subject each is bound to; a lookup that
    /// keeps failing is reported per person.
    async fn customer_ids(&self, account: &str, wanted: &[&DesiredCustomer]) -> Lookup {
        let mut out = Lookup::default();
        let emails: Vec<String> = wanted.iter().map(|d| d.email.to_lowercase()).collect();
        let Some(client) = self.clients.get(account) else {
            return out; // every account has a client; nobody is found otherwise
        };
        let b = &self.backoff;
        // Cached since the plan; in a dry run it may not exist yet (then nobody is bound).
        let attribute = match bounded(b, bc_wait, || client.subject_attribute_id(false)).await {
            Ok(a) => a,
            Err(e) => {
                let why = format!(
                    "reading the storegate_subject attribute failed ({e}); retried next pass"
                );
                out.failed = emails.into_iter().map(|e| (e, why.clone())).collect();
                return out;
            }
        };
        for chunk in emails.chunks(LOOKUP) {
            match bounded(b, bc_wait, || async {
                client.find_by_emails(chunk).await.0
            })
            .await
            {
                Ok(found) => {
                    out.ids.extend(found.into_iter().map(|c| {
                        let subject = attribute.and_then(|a| c.attribute(a)).map(str::to_owned);
                        (c.email.to_lowercase(), (c.id, subject))
                    }));
                }
                Err(e) => {
                    tracing::warn!(account, error = %e, "customer lookup for the B2B step failed");
                    for email in chunk {
                        out.failed.insert(
                            email.clone(),
                            format!("BigCommerce customer lookup failed ({e}); retried next pass"),
                        );
                    }
                }
            }
        }
        out
    }

    /// One desired person with a B2B grant.
    #[allow(clippy::too_many_arguments)]
    async fn ensure(
        &self,
        api: &dyn B2bApi,
        account: &str,
        d: &DesiredCustomer,
        grant: B2bGrant,
        lookup: &Lookup,
        members: &HashMap<u64, Members>,
        apply: bool,
    ) -> B2bChange {
        let email = d.email.to_lowercase();
        let mut change = B2bChange {
            account: account.to_owned(),
            email: d.email.clone(),
            customer_id: lookup.ids.get(&email).map(|(id, _)| *id),
            company_id: grant.company_id,
            before: None,
            after: Some(grant.role.to_string()),
            kind: B2bChangeKind::AfterCreate,
            detail: String::new(),
        };
        if let Some(why) = lookup.failed.get(&email) {
            change.kind = B2bChangeKind::Failed;
            change.detail = why.clone();
            return change;
        }
        let Some(customer_id) = change.customer_id else {
            if apply {
                change.kind = B2bChangeKind::Failed;
                change.detail =
                    "no customer with this email (its creation failed?); retried next pass".into();
            } else {
                change.detail = "once the plan has created the customer".into();
            }
            return change;
        };
        if let Some((_, recorded)) = lookup.ids.get(&email)
            && let SubjectMatch::Conflict { recorded } =
                SubjectMatch::of(recorded.as_deref(), &d.subject)
        {
            // Someone else's customer (a `subject_conflict` of the plan): never made a buyer.
            change.kind = B2bChangeKind::Conflict;
            change.detail = format!(
                "customer {customer_id} has this email but is bound to {recorded}, not {}; {LEFT_ALONE}",
                d.subject
            );
            return change;
        }
        let users = match members.get(&grant.company_id) {
            Some(Ok(users)) => users,
            Some(Err((kind, detail))) => {
                change.kind = kind.clone();
                change.detail = match kind {
                    B2bChangeKind::Conflict => format!("{detail}; {LEFT_ALONE}"),
                    _ => detail.clone(),
                };
                return change;
            }
            None => {
                change.kind = B2bChangeKind::Failed;
                change.detail = "the company was not read this pass; retried next pass".into();
                return change;
            }
        };
        match self
            .converge(api, d, customer_id, users.get(&customer_id), grant, apply)
            .await
        {
            Ok((kind, before)) => {
                change.kind = kind;
                change.before = before;
            }
            Err(ApiError::B2bConflict { detail }) => {
                change.kind = B2bChangeKind::Conflict;
                change.detail = format!("{detail}; {LEFT_ALONE}");
            }
            Err(e) => {
                change.kind = B2bChangeKind::Failed;
                change.detail = format!("B2B Edition: {e}; retried next pass");
            }
        }
        change
    }

    /// Brings one customer's company user in line with `grant` ([`membership_need`], as the
    /// launch decides it). `listed`: their user in the grant's company, as read this pass; when
    /// not listed they may be a user of another company (a conflict), have joined since the
    /// list was read, or have no user yet.
    async fn converge(
        &self,
        api: &dyn B2bApi,
        d: &DesiredCustomer,
        customer_id: u64,
        listed: Option<&CompanyUser>,
        grant: B2bGrant,
        apply: bool,
    ) -> Result<(B2bChangeKind, Option<String>), ApiError> {
        let b = &self.backoff;
        let user = match listed {
            Some(user) => Some(user.clone()),
            None => {
                bounded(
                    b,
                    |e| b2b_wait(e, true),
                    || api.user_by_customer(customer_id),
                )
                .await?
            }
        };
        let before = user.as_ref().map(role_text);
        match membership_need(customer_id, user, grant)? {
            MembershipNeed::Unchanged(_) => Ok((B2bChangeKind::Unchanged, before)),
            MembershipNeed::RoleChange(user) => {
                if apply {
                    bounded(
                        b,
                        |e| b2b_wait(e, true),
                        || api.set_role(user.id, grant.role),
                    )
                    .await?;
                }
                Ok((B2bChangeKind::RoleChanged, before))
            }
            MembershipNeed::Create => {
                if apply {
                    let identity = identity_of(d);
                    bounded(
                        b,
                        |e| b2b_wait(e, false),
                        || api.create_user(grant.company_id, &identity, grant.role),
                    )
                    .await?;
                }
                Ok((B2bChangeKind::Created, None))
            }
        }
    }

    /// The company users of bound customers whose person has no B2B grant on this account.
    async fn removals(
        &self,
        api: &dyn B2bApi,
        account: &str,
        desired: &Desired,
        bound: &[Bound<'_>],
        members: &HashMap<u64, Members>,
        apply: bool,
    ) -> Vec<B2bChange> {
        let known: HashSet<&str> = desired.subjects.values().map(String::as_str).collect();
        let leavers: HashSet<&str> = desired.leavers.iter().map(String::as_str).collect();
        let mut desired_here: HashMap<&str, Vec<&DesiredCustomer>> = HashMap::new();
        for d in desired.customers.iter().filter(|d| d.account == account) {
            desired_here.entry(d.subject.as_str()).or_default().push(d);
        }
        let mut companies: Vec<(&u64, &HashMap<u64, CompanyUser>)> = members
            .iter()
            .filter_map(|(id, m)| m.as_ref().ok().map(|users| (id, users)))
            .collect();
        companies.sort_by_key(|(id, _)| **id);
        let mut out = Vec::new();
        for (customer, subject) in bound {
            if subject.is_empty() {
                continue;
            }
            let email = customer.email.to_lowercase();
            let here = desired_here.get(subject).map(Vec::as_slice).unwrap_or(&[]);
            if here.iter().any(|d| d.b2b.is_some()) {
                continue; // still granted: `ensure` handles (or reports) the membership
            }
            let why = if !here.is_empty() {
                "mover: the grant on this store no longer gives B2B Edition membership"
            } else if leavers.contains(email.as_str())
                && desired.subjects.get(&email).map(String::as_str) == Some(*subject)
            {
                "leaver"
            } else if known.contains(subject) {
                "mover: no longer granted a store on this account"
            } else if self.config.provisioning.repair_drift {
                "not in the desired state (repair_drift)"
            } else {
                continue; // reported as not_desired drift; repaired only with repair_drift
            };
            for (company_id, users) in &companies {
                let Some(user) = users.get(&customer.id) else {
                    continue;
                };
                let mut change = B2bChange {
                    account: account.to_owned(),
                    email: customer.email.clone(),
                    customer_id: Some(customer.id),
                    company_id: **company_id,
                    before: Some(role_text(user)),
                    after: None,
                    kind: B2bChangeKind::Removed,
                    detail: format!("{why} (bound to {subject})"),
                };
                if apply
                    && let Err(e) = bounded(
                        &self.backoff,
                        |e| b2b_wait(e, true),
                        || api.delete_user(user.id),
                    )
                    .await
                {
                    change.kind = B2bChangeKind::Failed;
                    change.detail = format!(
                        "{why}: removing the company user failed: B2B Edition: {e}; retried next pass"
                    );
                }
                out.push(change);
            }
        }
        out
    }

    fn b2b_audit(&self, c: &B2bChange, run: &str, now: crate::clock::UnixTime, apply: bool) {
        if !apply {
            return; // a dry run only prints
        }
        let (outcome, reason) = match c.kind {
            B2bChangeKind::Unchanged | B2bChangeKind::AfterCreate => return,
            B2bChangeKind::Created => (Outcome::Allow, "b2b_create"),
            B2bChangeKind::RoleChanged => (Outcome::Allow, "b2b_role"),
            B2bChangeKind::Removed => (Outcome::Allow, "b2b_remove"),
            B2bChangeKind::Conflict => (Outcome::Deny, "b2b_conflict"),
            B2bChangeKind::Failed => (Outcome::Error, "b2b_failed"),
        };
        match c.kind {
            B2bChangeKind::Conflict | B2bChangeKind::Failed => tracing::warn!(
                account = %c.account,
                email = %c.email,
                company = c.company_id,
                "B2B membership not reconciled: {}",
                c.detail
            ),
            _ => tracing::info!(
                account = %c.account,
                email = %c.email,
                company = c.company_id,
                before = ?c.before,
                after = ?c.after,
                "B2B membership reconciled"
            ),
        }
        let mut ev = AuditEvent::new(
            now,
            &format!("reconcile-{run}"),
            EventKind::Provision,
            outcome,
        );
        ev.actor = Some("reconcile".into());
        ev.run = Some(run.to_owned());
        ev.email = Some(c.email.clone());
        ev.customer_id = c.customer_id;
        ev.target = Some(format!(
            "B2B company {} user {} on {}",
            c.company_id, c.email, c.account
        ));
        ev.reason = Some(reason.into());
        ev.before = c.before.clone().map(serde_json::Value::String);
        ev.after = c.after.clone().map(serde_json::Value::String);
        if !c.detail.is_empty() {
            ev.detail = Some(c.detail.clone());
        }
        self.audit.record(ev);
    }
}
