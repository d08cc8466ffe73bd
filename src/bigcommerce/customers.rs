//! Find or create the customer a launch signs in as (docs/bigcommerce.md: "Customers must
//! already exist"). Customers are keyed by email; the IdP subject is kept beside the customer in the
//! `storegate_subject` custom attribute (set inline on create, read with `include=attributes`),
//! since BigCommerce cannot search by attribute value. An existing customer bound to nobody is
//! adopted only on an email the IdP vouches for ([`Identity::email_verified`]).

use super::api::{ApiError, AttributeValue, CustomerUpdate, Customers, NewCustomer, one};
use crate::identity::{BoundSubject, Identity, SubjectMatch};
use crate::policy::LaunchDecision;

/// BigCommerce's limit on first and last names.
const MAX_NAME: usize = 100;

/// Returns the id of the customer for `identity` on the store behind `api`, creating it or
/// bringing its channels and customer group in line with the launch decision.
///
/// `channel_ids` are the channels of this store hash the user is entitled to. An existing customer's
/// channels are only ever widened (union), and a customer allowed on every channel (`null`) is left so.
pub async fn ensure_customer(
    api: &dyn Customers,
    identity: &Identity,
    decision: &LaunchDecision,
    channel_ids: &[u64],
) -> Result<u64, ApiError> {
    ensure_customer_reporting(api, identity, decision, channel_ids)
        .await
        .map(|e| e.id)
}

/// The customer a launch ensured, and what it changed on the way (for the launch's audit event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ensured {
    pub id: u64,
    pub change: Option<CustomerChange>,
}

/// A write a launch made to a customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CustomerChange {
    /// Created, with the subject bound inline.
    Created,
    /// An existing customer bound to this person (`update` as well when there was one).
    Adopted { update: Option<CustomerUpdate> },
    /// Channels widened or customer group moved.
    Updated(CustomerUpdate),
}

impl CustomerChange {
    /// The audit reason, the reconciler's words for the same writes.
    pub fn reason(&self) -> &'static str {
        match self {
            CustomerChange::Created => "create",
            CustomerChange::Adopted { .. } => "adopt",
            CustomerChange::Updated(_) => "update",
        }
    }

    /// What was written, for the audit event's `after`.
    pub fn update(&self) -> Option<&CustomerUpdate> {
        match self {
            CustomerChange::Created => None,
            CustomerChange::Adopted { update } => update.as_ref(),
            CustomerChange::Updated(u) => Some(u),
        }
    }
}

/// [`ensure_customer`], also saying what it wrote.
pub async fn ensure_customer_reporting(
    api: &dyn Customers,
    identity: &Identity,
    decision: &LaunchDecision,
    channel_ids: &[u64],
) -> Result<Ensured, ApiError> {
    let email = identity
        .email
        .as_deref()
        .map(str::trim)
        .filter(|e| e.contains('@'))
        .ok_or(ApiError::MissingEmail)?;
    let mut wanted: Vec<u64> = channel_ids.to_vec();
    wanted.sort_unstable();
    wanted.dedup();
    if wanted.is_empty() {
        return Err(ApiError::NoChannels);
    }
    let group = match &decision.grant().customer_group {
        Some(g) => Some(one::customer_group_id(api, g).await?),
        None => None,
    };

    let attribute_id = one::subject_attribute_id(api).await?;
    let ours = BoundSubject::of(identity);

    match one::find_customer_by_email(api, email).await? {
        None => {
            let (first_name, last_name) = names(identity, email);
            let created = one::create_customer(
                api,
                NewCustomer {
                    email: email.to_owned(),
                    first_name,
                    last_name,
                    customer_group_id: group,
                    origin_channel_id: wanted.first().copied(),
                    channel_ids: wanted,
                    attributes: vec![AttributeValue {
                        attribute_id,
                        attribute_value: ours.into_string(),
                    }],
                },
            )
            .await?;
            Ok(Ensured {
                id: created.id,
                change: Some(CustomerChange::Created),
            })
        }
        Some(existing) => {
            // Email alone must not hand over an account: a storefront customer who registered
            // with a staff member's email would otherwise be signed in as that staff member's
            // session, or vice versa. A customer this gateway created carries its IdP subject; one
            // created elsewhere (no subject yet) is adopted once, on its first launch, and only
            // when the IdP vouches for the address (docs/security.md, "Identity binding"). Nothing
            // about the customer is changed before that is decided.
            let adopted = match ours.against(existing.attribute(attribute_id)) {
                SubjectMatch::Ours => false,
                SubjectMatch::Conflict { recorded } => {
                    return Err(ApiError::SubjectConflict {
                        customer_id: existing.id,
                        recorded: recorded.to_owned(),
                    });
                }
                SubjectMatch::Unbound if !identity.email_verified => {
                    return Err(ApiError::AdoptionNeedsVerifiedEmail {
                        customer_id: existing.id,
                    });
                }
                SubjectMatch::Unbound => {
                    tracing::info!(
                        customer_id = existing.id,
                        "adopting an existing BigCommerce customer by email"
                    );
                    one::set_subject(api, existing.id, attribute_id, ours.as_str()).await?;
                    true
                }
            };
            let mut update = CustomerUpdate::default();
            if let Some(have) = &existing.channel_ids {
                let mut union = have.clone();
                union.extend(&wanted);
                union.sort_unstable();
                union.dedup();
                let mut have_sorted = have.clone();
                have_sorted.sort_unstable();
                have_sorted.dedup();
                if union != have_sorted {
                    update.channel_ids = Some(union);
                }
            }
            if let Some(g) = group.filter(|g| *g != existing.customer_group_id) {
                update.customer_group_id = Some(g);
            }
            let update = if update.is_empty() {
                None
            } else {
                one::update_customer(api, existing.id, update.clone()).await?;
                Some(update)
            };
            let change = match (adopted, update) {
                (true, update) => Some(CustomerChange::Adopted { update }),
                (false, Some(u)) => Some(CustomerChange::Updated(u)),
                (false, None) => None,
            };
            Ok(Ensured {
                id: existing.id,
                change,
            })
        }
    }
}

/// First and last name for a new customer (both required by BigCommerce): the IdP's given and
/// family names; else the display name split at its first space; else the email's local part, and
/// "-" for a missing last name.
fn names(identity: &Identity, email: &str) -> (String, String) {
    let clean = |s: Option<&str>| {
        s.map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let (display_first, display_last) = match clean(identity.name.as_deref()) {
        Some(n) => match n.split_once(' ') {
            Some((f, l)) => (clean(Some(f)), clean(Some(l))),
            None => (Some(n), None),
        },
        None => (None, None),
    };
    let local = email
        .split('@')
        .next()
        .filter(|l| !l.is_empty())
        .unwrap_or(email);
    let first = clean(identity.given_name.as_deref())
        .or(display_first)
        .unwrap_or_else(|| local.to_owned());
    let last = clean(identity.family_name.as_deref())
        .or(display_last)
        .unwrap_or_else(|| "-".to_owned());
    (truncate(first), truncate(last))
}

fn truncate(s: String) -> String {
    match s.char_indices().nth(MAX_NAME) {
        Some((i, _)) => s[..i].to_owned(),
        None => s,
    }
}

#[cfg(test)]
mod tests;
