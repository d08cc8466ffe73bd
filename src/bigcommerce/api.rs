//! The slice of the BigCommerce Management API the gateway uses, behind one batch-shaped trait,
//! [`Customers`], so the launch path, the reconciler and the tests see the same interface and
//! nothing above this module knows about HTTP. One HTTP implementation ([`HttpCustomers`]);
//! retry, metering and own-change recording are layers implementing the same trait
//! (`quick_retry`, `metered`, `webhooks::RecordingCustomers`). The launch's one-customer
//! operations are slices of one ([`one`]).

mod http;
pub mod one;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::UnixTime;

pub use http::HttpCustomers;

/// Emails per lookup call (`GET /v3/customers?email:in=...`).
pub const LOOKUP: usize = 50;

/// Ids per `GET /v3/customers?id:in=...`.
pub const BY_ID: usize = 250;

/// A customer as the gateway sees it (a subset of the v3 customer object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    pub id: u64,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    #[serde(default)]
    pub customer_group_id: u64,
    /// `None`: may sign in to every channel that allows global logins.
    #[serde(default)]
    pub channel_ids: Option<Vec<u64>>,
    #[serde(default)]
    pub origin_channel_id: Option<u64>,
    /// Custom attribute values, present when read with `include=attributes`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<AttributeValue>,
}

impl Customer {
    /// The value of custom attribute `attribute_id`, if the customer carries one.
    pub fn attribute(&self, attribute_id: u64) -> Option<&str> {
        self.attributes
            .iter()
            .find(|a| a.attribute_id == attribute_id)
            .map(|a| a.attribute_value.as_str())
            .filter(|v| !v.is_empty())
    }
}

/// One custom attribute value of a customer, as `POST /v3/customers` takes it inline and
/// `include=attributes` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttributeValue {
    pub attribute_id: u64,
    pub attribute_value: String,
}

/// The customer attribute (type string) that binds a customer to its IdP subject (`{idp}:{sub}`).
/// BigCommerce cannot search by attribute value: customers are found by email and this value
/// says whose they are. Found by name, or created once per store.
pub const SUBJECT_ATTRIBUTE: &str = "storegate_subject";

/// A customer to create. `channel_ids` must not be empty (BigCommerce rejects an empty array).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewCustomer {
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_group_id: Option<u64>,
    pub channel_ids: Vec<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin_channel_id: Option<u64>,
    /// Set inline on create: the subject binding costs no extra call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<AttributeValue>,
}

/// The fields the gateway changes on an existing customer; `None` leaves a field alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CustomerUpdate {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel_ids: Option<Vec<u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_group_id: Option<u64>,
}

impl CustomerUpdate {
    pub fn is_empty(&self) -> bool {
        self.channel_ids.is_none() && self.customer_group_id.is_none()
    }
}

/// What went wrong talking to BigCommerce, kept apart so an admin knows what to do. "Upstream
/// failed" is never "access denied". No variant ever carries a credential. The one error type of
/// every BigCommerce client ([`Customers`] for the launch and the reconciler, B2B Edition's
/// `B2bApi`); [`ApiError::class`] says who must act.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    #[error("BigCommerce ({store_hash}) is unreachable: {detail}")]
    Unreachable { store_hash: String, detail: String },
    #[error(
        "BigCommerce ({store_hash}) did not answer in time; check the account's timeout and BigCommerce status"
    )]
    Timeout { store_hash: String },
    #[error(
        "BigCommerce rate limit reached for this store; retry in {retry_after_ms} ms (the quota is shared by every app on the store)"
    )]
    RateLimited { retry_after_ms: u64 },
    #[error("BigCommerce {} ({status}): {message}", rejection(.status))]
    Rejected { status: u16, message: String },
    #[error("unexpected answer from BigCommerce: {detail}")]
    Unexpected { detail: String },
    /// Caller misuse: BigCommerce customers are keyed by email.
    #[error(
        "the identity has no email address, which BigCommerce needs to find or create the customer; release the email claim from the IdP"
    )]
    MissingEmail,
    /// Caller misuse: BigCommerce rejects an empty `channel_ids` array.
    #[error(
        "customer {customer_id} has this email but belongs to another identity ({recorded}); an administrator must resolve the conflict in BigCommerce"
    )]
    SubjectConflict { customer_id: u64, recorded: String },
    /// A customer with this email exists and is bound to nobody, but the IdP does not vouch for
    /// the address: adopting it would hand the account to whoever first claims the address.
    #[error(
        "customer {customer_id} has this email and is not linked to any identity yet; it is adopted only when the IdP vouches for the address (OIDC email_verified: true, or trust_email = true on an [[idp]] whose directory owns the addresses), and this sign-in's IdP did not"
    )]
    AdoptionNeedsVerifiedEmail { customer_id: u64 },
    #[error("no channel to grant: a customer needs at least one channel")]
    NoChannels,
    /// B2B Edition state the gateway will not change on its own (another company, a company
    /// that is not approved): an administrator must look.
    #[error("{detail}")]
    B2bConflict { detail: String },
}

/// How an error status reads: a 5xx is BigCommerce failing (retried), anything else a refusal.
fn rejection(status: &u16) -> &'static str {
    if *status >= 500 {
        "failed on its side"
    } else {
        "refused the request"
    }
}

/// Who must act on a BigCommerce failure, decided once by the error type so callers do not sort
/// variants again (the split rustls makes between a misbehaving peer, a configuration mismatch
/// and API misuse).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// BigCommerce failed or was out of reach; `retryable`: the same call may succeed later.
    Upstream { retryable: bool },
    /// Only an administrator can resolve it: a conflict in the store, a missing API scope, bad
    /// credentials, an IdP that does not release or vouch for the email.
    NeedsAdministrator,
    /// Our bug or bad input: repeating the call cannot help.
    Misuse,
}

impl ErrorClass {
    /// BigCommerce failed or was out of reach (retryable or not): nothing was wrong with the
    /// request, so it is not settled as refused.
    pub fn is_upstream(self) -> bool {
        matches!(self, ErrorClass::Upstream { .. })
    }

    /// The class of a refusal with HTTP `status` (BigCommerce's answer to one of our calls).
    pub fn of_status(status: u16) -> Self {
        match status {
            // Bad or revoked credentials, or a scope the API account lacks.
            401 | 403 => ErrorClass::NeedsAdministrator,
            409 => ErrorClass::NeedsAdministrator,
            429 => ErrorClass::Upstream { retryable: true },
            s if s >= 500 => ErrorClass::Upstream { retryable: true },
            _ => ErrorClass::Misuse,
        }
    }
}

/// An [`ApiError`] of one configured account, named as the configuration names it
/// (`[[bigcommerce]] acme: ...`), for the errors that reach an administrator at start or in a
/// report rather than in a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[[{section}]] {account}: {error}")]
pub struct AccountError {
    /// The configuration table: `bigcommerce` or `account` (control panel).
    pub section: &'static str,
    /// The account's `id`, and the API when it is not the store's (`acme (B2B Edition)`).
    pub account: String,
    pub error: ApiError,
}

impl AccountError {
    /// An error of the `[[bigcommerce]]` account `account`.
    pub fn store(account: impl Into<String>, error: ApiError) -> Self {
        AccountError {
            section: "bigcommerce",
            account: account.into(),
            error,
        }
    }
}

impl ApiError {
    /// The HTTP client could not be built (the TLS backend failed to start): a start-up failure.
    pub fn client_setup(e: impl std::fmt::Display) -> Self {
        ApiError::Unexpected {
            detail: format!("building the HTTP client: {e}"),
        }
    }

    /// Who must act; callers decide on this rather than on variants.
    pub fn class(&self) -> ErrorClass {
        match self {
            ApiError::Unreachable { .. }
            | ApiError::Timeout { .. }
            | ApiError::RateLimited { .. } => ErrorClass::Upstream { retryable: true },
            ApiError::Rejected { status, .. } => ErrorClass::of_status(*status),
            ApiError::Unexpected { .. } => ErrorClass::Upstream { retryable: false },
            ApiError::MissingEmail
            | ApiError::SubjectConflict { .. }
            | ApiError::AdoptionNeedsVerifiedEmail { .. }
            | ApiError::B2bConflict { .. } => ErrorClass::NeedsAdministrator,
            ApiError::NoChannels => ErrorClass::Misuse,
        }
    }
}

/// The store's clock, the time source of [`crate::bigcommerce::store_clock::StoreClock`].
#[async_trait]
pub trait StoreTime: Send + Sync {
    /// `GET /stores/{hash}/v2/time`: the store's Unix time.
    async fn store_time(&self) -> Result<UnixTime, ApiError>;
}

/// The rate-limit headers of one answer (`X-Rate-Limit-Requests-Left`,
/// `X-Rate-Limit-Time-Reset-Ms`), so a caller working through many calls can pace itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateInfo {
    pub left: Option<u64>,
    pub reset_ms: Option<u64>,
}

/// A write's result with the rate-limit headers of its answer (default when there was none).
pub type Paced<T> = (Result<T, ApiError>, RateInfo);

/// The answer to a batch create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// Every customer was created (BigCommerce creates all or none).
    All(Vec<Customer>),
    /// 422 because these emails (lower-case) already belong to customers: nothing was created.
    EmailsTaken(Vec<String>),
}

/// The BigCommerce customer operations of one store, batch-shaped (docs/bigcommerce.md:
/// `POST`/`PUT /v3/customers` take arrays of at most 10). The launch path uses slices of one
/// ([`one`]); the reconciler's queue uses batches and paces itself by the returned
/// [`RateInfo`]. The HTTP client never retries; the launch stacks [`crate::bigcommerce::quick_retry`]
/// on it, the reconciler's queue decides about retries itself.
#[async_trait]
pub trait Customers: StoreTime + Send + Sync {
    /// The store this client talks to.
    fn store_hash(&self) -> &str;

    /// Customers with these emails (at most [`LOOKUP`]), with their custom attribute values
    /// (`include=attributes`). `email:in` splits on commas: callers keep the exact matches.
    async fn find_by_emails(&self, emails: &[String]) -> Paced<Vec<Customer>>;

    /// Customers by id (at most [`BY_ID`]).
    async fn find_by_ids(&self, ids: &[u64]) -> Result<Vec<Customer>, ApiError>;

    /// `POST /v3/customers` with at most 10 v3 customer objects (a serialized [`NewCustomer`]
    /// or the reconciler's rendering). BigCommerce refuses the whole batch with 422 when an
    /// email is taken, naming it: that answer is [`Created::EmailsTaken`].
    async fn create(&self, customers: &[Value]) -> Paced<Created>;

    /// `PUT /v3/customers` with at most 10 updates, each with its `id`.
    async fn update(&self, updates: &[Value]) -> Paced<Vec<Customer>>;

    /// `DELETE /v3/customers?id:in=...` (never without ids: BigCommerce would answer 204 anyway).
    async fn delete(&self, ids: &[u64]) -> Paced<()>;

    /// Records IdP subjects on existing customers, at most 10 per call:
    /// `PUT /v3/customers/attribute-values` (an upsert).
    async fn set_subjects(&self, attribute_id: u64, subjects: &[(u64, String)]) -> Paced<()>;

    /// Every customer carrying a value of the subject attribute, as (customer id, subject).
    async fn subject_values(&self, attribute_id: u64) -> Result<Vec<(u64, String)>, ApiError>;

    /// The id of the [`SUBJECT_ATTRIBUTE`] customer attribute: cached, else found by name, else
    /// (when `create`) created. `None`: it does not exist and `create` is false (a dry run).
    async fn subject_attribute_id(&self, create: bool) -> Result<Option<u64>, ApiError>;

    /// The id of the customer group named `name`, created when missing and `create`. `None`: it
    /// does not exist and `create` is false (reads only: safe in `--dry-run`).
    async fn customer_group_id(&self, name: &str, create: bool) -> Result<Option<u64>, ApiError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_failures_are_retryable_and_never_an_administrator_matter() {
        let up = ErrorClass::Upstream { retryable: true };
        for e in [
            ApiError::Timeout {
                store_hash: "s".into(),
            },
            ApiError::Unreachable {
                store_hash: "s".into(),
                detail: "reset".into(),
            },
            ApiError::RateLimited { retry_after_ms: 5 },
            ApiError::Rejected {
                status: 503,
                message: "down".into(),
            },
        ] {
            assert_eq!(e.class(), up, "{e}");
        }
        let garbled = ApiError::Unexpected {
            detail: "bad JSON".into(),
        };
        assert_eq!(garbled.class(), ErrorClass::Upstream { retryable: false });
    }

    #[test]
    fn conflicts_and_credentials_need_an_administrator_and_bad_input_is_misuse() {
        for e in [
            ApiError::Rejected {
                status: 401,
                message: "".into(),
            },
            ApiError::Rejected {
                status: 403,
                message: "".into(),
            },
            ApiError::Rejected {
                status: 409,
                message: "".into(),
            },
            ApiError::MissingEmail,
            ApiError::SubjectConflict {
                customer_id: 1,
                recorded: "a:b".into(),
            },
            ApiError::AdoptionNeedsVerifiedEmail { customer_id: 1 },
            ApiError::B2bConflict {
                detail: "other company".into(),
            },
        ] {
            assert_eq!(e.class(), ErrorClass::NeedsAdministrator, "{e}");
        }
        for e in [
            ApiError::NoChannels,
            ApiError::Rejected {
                status: 422,
                message: "bad".into(),
            },
            ApiError::Rejected {
                status: 400,
                message: "bad".into(),
            },
        ] {
            assert_eq!(e.class(), ErrorClass::Misuse, "{e}");
        }
    }

    #[test]
    fn an_account_error_names_the_configuration_table_and_account() {
        let e = AccountError::store("acme (B2B Edition)", ApiError::client_setup("no TLS"));
        assert_eq!(
            e.to_string(),
            "[[bigcommerce]] acme (B2B Edition): unexpected answer from BigCommerce: building the HTTP client: no TLS"
        );
    }
}
