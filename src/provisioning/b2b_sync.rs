//! B2B Edition company membership, reconciled (issue 5): for every desired customer whose grant
//! carries a company and role, the company user is made to match, as the launch does.
//!
//! This is a step of the pass after the queue drained, not a queued action: the customer must
//! exist first (the B2B user is matched by the customer id), and the step is idempotent, so a
//! crash is repaired by the next pass. A customer who is a user of another company, or a company
//! that is missing or not approved, is reported (log + `provision` audit event with outcome deny,
//! reason `b2b_conflict`), never moved.

use std::collections::HashMap;

use super::reconcile::{Desired, DesiredCustomer};
use super::run::Reconciler;
use crate::audit::{AuditEvent, EventKind, Outcome};
use crate::bigcommerce::api::ApiError;
use crate::bigcommerce::b2b::{B2bOutcome, ensure_membership};
use crate::identity::{AuthContext, Identity, IdpId};

/// What the step did (or, in a dry run, would do) for one customer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum B2bChangeKind {
    Created,
    RoleChanged,
    Unchanged,
    /// Another company, or a company missing or not approved: left alone.
    Conflict,
    /// The B2B Edition call failed; the next pass tries again.
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
    /// The grant's role.
    pub after: String,
    pub kind: B2bChangeKind,
    pub detail: String,
}

/// The identity [`crate::bigcommerce::b2b::B2bApi::create_user`] needs, from the desired state.
fn identity_of(d: &DesiredCustomer) -> Identity {
    let (idp, subject) = d.subject.split_once(':').unwrap_or(("", &d.subject));
    Identity {
        subject: subject.to_owned(),
        idp: IdpId::new(idp.to_owned()),
        email: Some(d.email.clone()),
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

impl Reconciler {
    /// Brings B2B membership in line for every desired customer with a B2B grant; with `apply`
    /// false only reads (a dry run). Audits every change, conflict and failure when applying.
    pub async fn b2b_step(
        &self,
        desired: &Desired,
        run: &str,
        now: crate::clock::UnixTime,
        apply: bool,
    ) -> anyhow::Result<Vec<B2bChange>> {
        let mut out = Vec::new();
        let mut by_account: HashMap<&str, Vec<&DesiredCustomer>> = HashMap::new();
        for d in desired.customers.iter().filter(|d| d.b2b.is_some()) {
            by_account.entry(d.account.as_str()).or_default().push(d);
        }
        let mut accounts: Vec<_> = by_account.into_iter().collect();
        accounts.sort_by_key(|(a, _)| *a);
        for (account, wanted) in accounts {
            let (Some(client), Some(api)) = (self.clients.get(account), self.b2b.get(account))
            else {
                // `check` refuses b2b grants on accounts without B2B access; not reachable.
                tracing::warn!(
                    account,
                    "B2B grants on an account without b2b_access_token: skipped"
                );
                continue;
            };
            let emails: Vec<String> = wanted.iter().map(|d| d.email.to_lowercase()).collect();
            let mut ids = HashMap::new();
            for chunk in emails.chunks(50) {
                for c in self
                    .retrying(|| async { client.find_by_emails(chunk).await.0 })
                    .await?
                {
                    ids.insert(c.email.to_lowercase(), c.id);
                }
            }
            for d in wanted {
                let Some(grant) = d.b2b else { continue };
                let mut change = B2bChange {
                    account: account.to_owned(),
                    email: d.email.clone(),
                    customer_id: ids.get(&d.email.to_lowercase()).copied(),
                    company_id: grant.company_id,
                    before: None,
                    after: grant.role.to_string(),
                    kind: B2bChangeKind::AfterCreate,
                    detail: String::new(),
                };
                let Some(customer_id) = change.customer_id else {
                    if apply {
                        change.kind = B2bChangeKind::Failed;
                        change.detail =
                            "no customer with this email (its creation failed?); retried next pass"
                                .into();
                    } else {
                        change.detail = "once the plan has created the customer".into();
                    }
                    self.b2b_audit(&change, run, now, apply);
                    out.push(change);
                    continue;
                };
                match ensure_membership(api.as_ref(), grant, &identity_of(d), customer_id, apply)
                    .await
                {
                    Ok(m) => {
                        change.before = m.before;
                        change.kind = match m.outcome {
                            B2bOutcome::Created { .. } => B2bChangeKind::Created,
                            B2bOutcome::RoleChanged { .. } => B2bChangeKind::RoleChanged,
                            B2bOutcome::Unchanged { .. } => B2bChangeKind::Unchanged,
                        };
                    }
                    Err(ApiError::B2bConflict { detail }) => {
                        change.kind = B2bChangeKind::Conflict;
                        change.detail = format!(
                            "{detail}; left alone: an administrator must fix the company membership in B2B Edition"
                        );
                    }
                    Err(e) => {
                        change.kind = B2bChangeKind::Failed;
                        change.detail = format!("B2B Edition: {e}; retried next pass");
                    }
                }
                self.b2b_audit(&change, run, now, apply);
                out.push(change);
            }
        }
        Ok(out)
    }

    fn b2b_audit(&self, c: &B2bChange, run: &str, now: crate::clock::UnixTime, apply: bool) {
        if !apply {
            return; // a dry run only prints
        }
        let (outcome, reason) = match c.kind {
            B2bChangeKind::Unchanged | B2bChangeKind::AfterCreate => return,
            B2bChangeKind::Created => (Outcome::Allow, "b2b_create"),
            B2bChangeKind::RoleChanged => (Outcome::Allow, "b2b_role"),
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
                after = %c.after,
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
        ev.after = Some(serde_json::Value::String(c.after.clone()));
        if !c.detail.is_empty() {
            ev.detail = Some(c.detail.clone());
        }
        self.executor.audit.record(ev);
    }
}

/// The B2B step as text, one customer a line (unchanged ones left out).
pub fn render_b2b(changes: &[B2bChange]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for c in changes {
        let what = match c.kind {
            B2bChangeKind::Unchanged => continue,
            B2bChangeKind::Created => "b2b-add ",
            B2bChangeKind::RoleChanged => "b2b-role",
            B2bChangeKind::Conflict => "conflict",
            B2bChangeKind::Failed => "b2b-fail",
            B2bChangeKind::AfterCreate => "b2b-add ",
        };
        let _ = writeln!(
            out,
            "{what} {:<10} {} company {} role {} -> {}{}",
            c.account,
            c.email,
            c.company_id,
            c.before.as_deref().unwrap_or("-"),
            c.after,
            if c.detail.is_empty() {
                String::new()
            } else {
                format!(": {}", c.detail)
            }
        );
    }
    out
}
