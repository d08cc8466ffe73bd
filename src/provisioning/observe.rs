//! Reading BigCommerce's actual state for a pass: the customers with the emails in question, the
//! customer groups the plan needs (created when missing, unless a dry run), the
//! `storegate_subject` attribute and the customers bound through it. Every read is retried
//! through 429 and 5xx ([`retry::lookup`]); what still fails ends the pass before anything is
//! planned.

use std::collections::HashMap;
use std::sync::Arc;

use super::queue::Backoff;
use super::reconcile::{Actual, Desired, GroupIds};
use super::retry;
use crate::bigcommerce::api::{ApiError, Customer};
use crate::bigcommerce::api::{BY_ID, Customers, LOOKUP};
use crate::config::Config;
use crate::config::provisioning::Deprovision;
use crate::policy::CustomerGroupRef;

/// A customer bound to an IdP subject: (account, customer, subject).
pub type BoundCustomer = (String, Customer, String);

/// The reads of one pass, over every account's client.
pub struct Observe<'a> {
    pub config: &'a Config,
    pub clients: &'a HashMap<String, Arc<dyn Customers>>,
    pub backoff: Backoff,
}

impl Observe<'_> {
    async fn retrying<T, F, Fut>(&self, f: F) -> Result<T, ApiError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        retry::lookup(&self.backoff, f).await
    }

    /// The customers of every account with the emails in question.
    pub async fn actual(&self, emails: &[String]) -> Result<Actual, ApiError> {
        let mut actual: Actual = HashMap::new();
        for (account, client) in self.clients {
            let mut have = HashMap::new();
            for chunk in emails.chunks(LOOKUP) {
                let found = self
                    .retrying(|| async { client.find_by_emails(chunk).await.0 })
                    .await?;
                for c in found {
                    have.insert(c.email.to_lowercase(), c);
                }
            }
            actual.insert(account.clone(), have);
        }
        Ok(actual)
    }

    pub async fn group(
        &self,
        client: &dyn Customers,
        name: &str,
        create: bool,
    ) -> Result<Option<u64>, ApiError> {
        let id = self
            .retrying(|| client.customer_group_id(name, create))
            .await?;
        if id.is_none() && !create {
            tracing::info!(
                group = name,
                "customer group does not exist yet (dry run: not created)"
            );
        }
        Ok(id)
    }

    pub async fn groups(
        &self,
        desired: &Desired,
        need_locked: bool,
        create: bool,
    ) -> Result<GroupIds, ApiError> {
        let mut g = GroupIds::default();
        for d in &desired.customers {
            if let Some(CustomerGroupRef::Name(n)) = &d.group {
                let key = (d.account.clone(), n.clone());
                if g.named.contains_key(&key) {
                    continue;
                }
                if let Some(client) = self.clients.get(&d.account)
                    && let Some(id) = self.group(client.as_ref(), n, create).await?
                {
                    g.named.insert(key, id);
                }
            }
        }
        if need_locked && self.config.provisioning.deprovision == Deprovision::Restrict {
            let name = &self.config.provisioning.locked_customer_group;
            for (account, client) in self.clients {
                if let Some(id) = self.group(client.as_ref(), name, create).await? {
                    g.locked.insert(account.clone(), id);
                }
            }
        }
        Ok(g)
    }

    /// Per account, the `storegate_subject` attribute's id; created when missing unless
    /// `create` is false (a dry run: then that account has no entry, and no customer is bound).
    pub async fn subject_attributes(&self, create: bool) -> Result<HashMap<String, u64>, ApiError> {
        let mut out = HashMap::new();
        for (account, client) in self.clients {
            if let Some(id) = self
                .retrying(|| client.subject_attribute_id(create))
                .await?
            {
                out.insert(account.clone(), id);
            }
        }
        Ok(out)
    }

    /// Per account, the customers carrying the `storegate_subject` attribute, with that subject.
    pub async fn tagged(
        &self,
        attributes: &HashMap<String, u64>,
    ) -> Result<Vec<BoundCustomer>, ApiError> {
        let mut out = Vec::new();
        for (account, client) in self.clients {
            let Some(attribute) = attributes.get(account) else {
                continue;
            };
            let subjects: HashMap<u64, String> = self
                .retrying(|| client.subject_values(*attribute))
                .await?
                .into_iter()
                .collect();
            let mut ids: Vec<u64> = subjects.keys().copied().collect();
            ids.sort_unstable();
            for chunk in ids.chunks(BY_ID) {
                for c in self.retrying(|| client.find_by_ids(chunk)).await? {
                    let subject = subjects.get(&c.id).cloned().unwrap_or_default();
                    out.push((account.clone(), c, subject));
                }
            }
        }
        Ok(out)
    }
}
