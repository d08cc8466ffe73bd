//! The GraphQL Account API client (control-panel users, issue 12): `POST
//! {api_base}/accounts/{uuid}/graphql` with an account-level token. Six fixed documents
//! ([`ops`]): two paged reads and the four namespaced mutations of docs/control-panel.md.
//!
//! Every answer is untrusted JSON: [`decode`] turns status + body into a typed value or an
//! [`AccountApiError`] and is a fuzz target. The caller spends the hourly budget before each call
//! (see `crate::controlpanel::budget`); this client only reports a 429 as
//! [`AccountApiError::RateLimited`].

pub mod ops;
mod wire;

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::bigcommerce::api::{AccountError, ApiError, ErrorClass};
use crate::config::account::ControlPanelAccount;
use crate::secret::Secret;

pub use wire::{AccountUser, Page, StorePage, StoreUser, StoreUsers};

/// Users asked for per page. The docs name no maximum; 500 keeps a 70-per-hour budget for the
/// writes (a 1,000-person account reads in 2 calls per connection).
pub const PAGE_SIZE: u32 = 500;
/// Stores asked for per page of `account.stores`.
pub const STORE_PAGE_SIZE: u32 = 50;
/// The longest error text kept from an answer (it ends in logs and audit events).
pub const MAX_MESSAGE: usize = 300;
/// The most GraphQL error messages kept from one answer.
pub const MAX_MESSAGES: usize = 5;
/// The longest page cursor accepted: a cursor goes back into the next request and is kept
/// between passes, so an answer cannot make either grow without bound (the simulator's and
/// BigCommerce's are a few dozen bytes).
pub const MAX_CURSOR: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountApiError {
    /// 429: the account's hourly limit is spent (`Retry-After` seconds, when sent).
    #[error("rate limited (retry after {retry_after_secs:?} s)")]
    RateLimited { retry_after_secs: Option<u64> },
    /// 5xx, timeout or transport failure: the call may or may not have taken effect.
    #[error("transient failure: {0}")]
    Transient(String),
    /// A refusal other than 429 (bad token or missing scope: 401/403).
    #[error("refused ({status}): {message}")]
    Refused { status: u16, message: String },
    /// HTTP 200 with GraphQL `errors[]`: the input was refused (unknown user, already a member).
    #[error("refused by the Account API: {}", .messages.join("; "))]
    GraphQl { messages: Vec<String> },
    /// An answer that is not the documented shape.
    #[error("unexpected answer: {0}")]
    Unexpected(String),
}

impl AccountApiError {
    /// Who must act (see [`ErrorClass`]).
    pub fn class(&self) -> ErrorClass {
        match self {
            AccountApiError::RateLimited { .. } | AccountApiError::Transient(_) => {
                ErrorClass::Upstream { retryable: true }
            }
            AccountApiError::Refused { status, .. } => ErrorClass::of_status(*status),
            // The account's state differs from what the plan read: an administrator looks if
            // the next pass (which reads again) does not settle it.
            AccountApiError::GraphQl { .. } => ErrorClass::NeedsAdministrator,
            AccountApiError::Unexpected(_) => ErrorClass::Upstream { retryable: false },
        }
    }
}

fn clip(s: &str) -> String {
    s.chars().take(MAX_MESSAGE).collect()
}

/// Status, `Retry-After` and body of an answer -> the `data` object as `T`, or why not. Pure.
pub fn decode<T: DeserializeOwned>(
    status: u16,
    retry_after: Option<&str>,
    body: &[u8],
) -> Result<T, AccountApiError> {
    match status {
        200 => {}
        429 => {
            return Err(AccountApiError::RateLimited {
                retry_after_secs: retry_after.and_then(|v| v.trim().parse().ok()),
            });
        }
        s if s >= 500 => return Err(AccountApiError::Transient(format!("HTTP {s}"))),
        s => {
            let message = serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| first_message(&v))
                .unwrap_or_else(|| format!("HTTP {s}"));
            return Err(AccountApiError::Refused {
                status: s,
                message: clip(&message),
            });
        }
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| AccountApiError::Unexpected(clip(&format!("not JSON: {e}"))))?;
    if !v.is_object() {
        return Err(AccountApiError::Unexpected("not a JSON object".into()));
    }
    // Read again as the two members that matter: a JSON object keeps only the last of two
    // members with one name, so `{"errors":[..],"data":..,"errors":[]}` would pass for a success.
    // The typed read refuses a repeated `data` or `errors` (fuzz target account_api_decode).
    let v: Envelope = serde_json::from_slice(body)
        .map_err(|e| AccountApiError::Unexpected(clip(&format!("not one answer: {e}"))))?;
    if let Some(errors) = v.errors.as_ref().and_then(Value::as_array)
        && !errors.is_empty()
    {
        let messages = errors
            .iter()
            .take(MAX_MESSAGES)
            .map(|e| clip(e.get("message").and_then(Value::as_str).unwrap_or("error")))
            .collect();
        return Err(AccountApiError::GraphQl { messages });
    }
    let data = v
        .data
        .filter(|d| d.is_object())
        .ok_or_else(|| AccountApiError::Unexpected("no `data` object".into()))?;
    T::deserialize(data).map_err(|e| AccountApiError::Unexpected(clip(&e.to_string())))
}

/// The top level of a GraphQL answer (other members, such as `extensions`, are ignored).
#[derive(serde::Deserialize)]
struct Envelope {
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    errors: Option<Value>,
}

/// Whether a mutation's `data` holds its result object at `field`.
pub fn mutated(data: &Value, field: &str) -> Result<(), AccountApiError> {
    match data.pointer(field) {
        Some(v) if v.is_object() => Ok(()),
        _ => Err(AccountApiError::Unexpected(format!("no result at {field}"))),
    }
}

/// An `account.users` answer -> one page of at most [`PAGE_SIZE`] users (the size asked for).
pub fn decode_account_users(
    status: u16,
    retry_after: Option<&str>,
    body: &[u8],
) -> Result<Page<AccountUser>, AccountApiError> {
    let d: wire::AccountUsersData = decode(status, retry_after, body)?;
    d.account.users.into_page(PAGE_SIZE)
}

/// An `account.stores.users` answer asked with `stores` stores per page -> at most that many
/// stores, each with at most [`PAGE_SIZE`] users.
pub fn decode_store_users(
    status: u16,
    retry_after: Option<&str>,
    body: &[u8],
    stores: u32,
) -> Result<StorePage, AccountApiError> {
    let d: wire::StoreUsersData = decode(status, retry_after, body)?;
    d.into_page(stores, PAGE_SIZE)
}

/// A mutation's answer -> `Ok` only when `data` holds the result object at `field` (one of the
/// `*_RESULT` pointers of [`ops`]).
pub fn decode_mutation(
    status: u16,
    retry_after: Option<&str>,
    body: &[u8],
    field: &str,
) -> Result<(), AccountApiError> {
    let data: Value = decode(status, retry_after, body)?;
    mutated(&data, field)
}

fn first_message(v: &Value) -> Option<String> {
    v.get("errors")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
        .and_then(|e| e.get("message"))
        .or_else(|| v.get("title"))
        .or_else(|| v.get("message"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// What came back for one document, before decoding.
struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: axum::body::Bytes,
}

/// One account's client. Cheap to share.
pub struct AccountApi {
    http: reqwest::Client,
    url: String,
    token: Secret,
}

impl AccountApi {
    /// The client of `[[account]]` `account`; fails only when the HTTP client cannot be built.
    pub fn new(account: &ControlPanelAccount) -> Result<Self, AccountError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            // A redirect would carry the token to wherever it points.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| AccountError {
                section: "account",
                account: account.id.clone(),
                error: ApiError::client_setup(e),
            })?;
        Ok(AccountApi {
            http,
            url: format!(
                "{}/accounts/{}/graphql",
                account.api_base.as_str().trim_end_matches('/'),
                account.account_uuid
            ),
            token: account.access_token.clone(),
        })
    }

    /// Sends one document; the status, `Retry-After` and body for one of the `decode_*`
    /// functions (kept apart so the fuzz target reaches the same decoding).
    async fn call(&self, query: &str, variables: Value) -> Result<Answer, AccountApiError> {
        let resp = self
            .http
            .post(&self.url)
            .header("X-Auth-Token", self.token.expose())
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .map_err(|e| AccountApiError::Transient(clip(&e.without_url().to_string())))?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp
            .bytes()
            .await
            .map_err(|e| AccountApiError::Transient(clip(&e.without_url().to_string())))?;
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    }

    /// A mutation whose result object at `field` (a JSON pointer into `data`) must be present:
    /// `null` without `errors[]` is not a success.
    async fn mutate(
        &self,
        query: &str,
        variables: Value,
        field: &str,
    ) -> Result<(), AccountApiError> {
        let a = self.call(query, variables).await?;
        decode_mutation(a.status, a.retry_after.as_deref(), &a.body, field)
    }

    /// One page of `account.users`.
    pub async fn account_users(
        &self,
        after: Option<&str>,
    ) -> Result<Page<AccountUser>, AccountApiError> {
        let a = self
            .call(
                ops::ACCOUNT_USERS,
                json!({ "first": PAGE_SIZE, "after": after }),
            )
            .await?;
        decode_account_users(a.status, a.retry_after.as_deref(), &a.body)
    }

    /// One page of `account.stores`, each with one page of its users (`users_after` applies to
    /// every store of the page: continuing one store's users asks for a page of one store).
    pub async fn store_users(
        &self,
        stores: u32,
        stores_after: Option<&str>,
        users_after: Option<&str>,
    ) -> Result<StorePage, AccountApiError> {
        let a = self
            .call(
                ops::STORE_USERS,
                json!({ "stores": stores, "storesAfter": stores_after, "first": PAGE_SIZE, "after": users_after }),
            )
            .await?;
        decode_store_users(a.status, a.retry_after.as_deref(), &a.body, stores)
    }

    pub async fn add_user_to_account(&self, email: &str) -> Result<(), AccountApiError> {
        self.mutate(
            ops::ADD_USER_TO_ACCOUNT,
            json!({ "email": email }),
            ops::ADD_USER_TO_ACCOUNT_RESULT,
        )
        .await
    }

    pub async fn remove_user_from_account(&self, email: &str) -> Result<(), AccountApiError> {
        self.mutate(
            ops::REMOVE_USER_FROM_ACCOUNT,
            json!({ "email": email }),
            ops::REMOVE_USER_FROM_ACCOUNT_RESULT,
        )
        .await
    }

    /// By email, as BigCommerce requires since its 2024 security fix.
    pub async fn add_user_to_store(
        &self,
        email: &str,
        store_hash: &str,
    ) -> Result<(), AccountApiError> {
        self.mutate(
            ops::ADD_USER_TO_STORE,
            json!({ "email": email, "storeId": store_hash }),
            ops::ADD_USER_TO_STORE_RESULT,
        )
        .await
    }

    pub async fn remove_user_from_store(
        &self,
        user_id: &str,
        store_hash: &str,
    ) -> Result<(), AccountApiError> {
        self.mutate(
            ops::REMOVE_USER_FROM_STORE,
            json!({ "userId": user_id, "storeId": store_hash }),
            ops::REMOVE_USER_FROM_STORE_RESULT,
        )
        .await
    }
}

#[cfg(test)]
mod tests;
