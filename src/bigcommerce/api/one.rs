//! The launch path's one-customer operations, as slices of one of [`Customers`]: a launch has a
//! user waiting for one customer, the reconciler batches ten. The rate-limit headers are dropped
//! here (a launch does not pace; the quick retry layer waits out a 429 once).

use serde_json::{Value, json};

use super::{ApiError, Created, Customer, CustomerUpdate, Customers, NewCustomer};
use crate::policy::CustomerGroupRef;

/// The customer with this email (compared case-insensitively), if any, with its custom
/// attribute values.
pub async fn find_customer_by_email(
    api: &dyn Customers,
    email: &str,
) -> Result<Option<Customer>, ApiError> {
    let (found, _) = api.find_by_emails(&[email.to_owned()]).await;
    // `email:in` splits on commas: keep only the exact (case-insensitive) match.
    Ok(found?
        .into_iter()
        .find(|c| c.email.eq_ignore_ascii_case(email)))
}

/// Creates one customer (its `channel_ids` must not be empty: BigCommerce rejects that).
pub async fn create_customer(
    api: &dyn Customers,
    customer: NewCustomer,
) -> Result<Customer, ApiError> {
    if customer.channel_ids.is_empty() {
        return Err(ApiError::NoChannels);
    }
    let item = to_value(&customer)?;
    match api.create(&[item]).await.0? {
        Created::All(created) => created
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::Unexpected {
                detail: "creating a customer returned no customer".into(),
            }),
        // BigCommerce's 422 for a taken email, as the one refusal it is for a single create.
        Created::EmailsTaken(taken) => Err(ApiError::Rejected {
            status: 422,
            message: format!(
                "the email address {} is already in use by another customer",
                taken.join(", ")
            ),
        }),
    }
}

/// Changes the fields `update` names on customer `id`.
pub async fn update_customer(
    api: &dyn Customers,
    id: u64,
    update: CustomerUpdate,
) -> Result<(), ApiError> {
    if update.channel_ids.as_ref().is_some_and(Vec::is_empty) {
        return Err(ApiError::NoChannels);
    }
    let mut item = to_value(&update)?;
    if let Value::Object(map) = &mut item {
        map.insert("id".into(), json!(id));
    }
    api.update(&[item]).await.0.map(|_| ())
}

/// The id of a customer group; a group given by name is looked up and created when missing.
pub async fn customer_group_id(
    api: &dyn Customers,
    group: &CustomerGroupRef,
) -> Result<u64, ApiError> {
    match group {
        CustomerGroupRef::Id(id) => Ok(*id),
        CustomerGroupRef::Name(name) => {
            api.customer_group_id(name, true)
                .await?
                .ok_or_else(|| ApiError::Unexpected {
                    detail: "creating a customer group returned no id".into(),
                })
        }
    }
}

/// The id of the subject attribute, found by name or created (once per store; cached).
pub async fn subject_attribute_id(api: &dyn Customers) -> Result<u64, ApiError> {
    api.subject_attribute_id(true)
        .await?
        .ok_or_else(|| ApiError::Unexpected {
            detail: "the storegate_subject attribute could not be created".into(),
        })
}

/// Records the IdP subject on an existing customer (`PUT /v3/customers/attribute-values`).
pub async fn set_subject(
    api: &dyn Customers,
    customer_id: u64,
    attribute_id: u64,
    idp_subject: &str,
) -> Result<(), ApiError> {
    api.set_subjects(attribute_id, &[(customer_id, idp_subject.to_owned())])
        .await
        .0
}

fn to_value<T: serde::Serialize>(v: &T) -> Result<Value, ApiError> {
    serde_json::to_value(v).map_err(|e| ApiError::Unexpected {
        detail: e.to_string(),
    })
}
