//! [`CustomerApi`] over HTTP: `{api_base}/stores/{hash}/...` through the shared
//! [`StoreHttp`] (credentials, correlation header, transport failures), with this client's own
//! retry policy and the reading of BigCommerce's refusals.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{
    ApiError, Customer, CustomerApi, CustomerUpdate, NewCustomer, SUBJECT_ATTRIBUTE, StoreTime,
};
use crate::bigcommerce::transport::StoreHttp;
use crate::clock::UnixTime;
use crate::config::BigCommerceAccount;
use crate::policy::CustomerGroupRef;

/// How often and how long to retry. One retry each, both short: a launch has a user waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Longest wait honoured from `X-Rate-Limit-Time-Reset-Ms` before the one retry of a 429.
    pub max_rate_limit_wait: Duration,
    /// Wait for a 429 without the header (platform load, per docs/bigcommerce.md).
    pub default_rate_limit_wait: Duration,
    /// Wait before the one retry of a 5xx.
    pub server_error_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_rate_limit_wait: Duration::from_secs(2),
            default_rate_limit_wait: Duration::from_millis(500),
            server_error_backoff: Duration::from_millis(250),
        }
    }
}

pub struct HttpCustomerApi {
    http: StoreHttp,
    retry: RetryPolicy,
    /// The subject attribute's id, resolved on first use (it never changes for a store).
    subject_attribute: tokio::sync::OnceCell<u64>,
}

impl std::fmt::Debug for HttpCustomerApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpCustomerApi")
            .field("http", &self.http)
            .finish_non_exhaustive()
    }
}

const MAX_ERROR_MESSAGE: usize = 300;

impl HttpCustomerApi {
    pub fn new(account: &BigCommerceAccount) -> Result<Self, ApiError> {
        let http = StoreHttp::management(account).map_err(|e| ApiError::Unexpected {
            detail: format!("building the HTTP client: {e}"),
        })?;
        Ok(HttpCustomerApi {
            http,
            retry: RetryPolicy::default(),
            subject_attribute: tokio::sync::OnceCell::new(),
        })
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// One call, retried once on 429 (after the advertised reset, capped) and once on 5xx.
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<(StatusCode, Vec<u8>), ApiError> {
        let store_hash = self.http.store_hash();
        let mut retried = false;
        loop {
            let reply = self.http.send(method.clone(), path, query, body).await?;
            let status = reply.status;
            if status == StatusCode::TOO_MANY_REQUESTS {
                if retried {
                    return Err(reply.rate_limited());
                }
                let wait = reply
                    .rate
                    .reset_ms
                    .map(Duration::from_millis)
                    .unwrap_or(self.retry.default_rate_limit_wait)
                    .min(self.retry.max_rate_limit_wait);
                tracing::warn!(%store_hash, wait_ms = wait.as_millis() as u64, "BigCommerce rate limit: retrying once");
                tokio::time::sleep(wait).await;
                retried = true;
                continue;
            }
            if status.is_server_error() && !retried {
                tracing::warn!(%store_hash, %status, "BigCommerce server error: retrying once");
                tokio::time::sleep(self.retry.server_error_backoff).await;
                retried = true;
                continue;
            }
            let body = self.http.body(reply).await?;
            if status.is_success() {
                return Ok((status, body));
            }
            return Err(rejected(status, &body));
        }
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Option<T>, ApiError> {
        let (status, body) = self.call(Method::GET, path, query, None).await?;
        // v2 collections answer 204 with no body when nothing matches.
        if status == StatusCode::NO_CONTENT || body.is_empty() {
            return Ok(None);
        }
        parse(&body).map(Some)
    }

    async fn send_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &Value,
    ) -> Result<T, ApiError> {
        let (_, bytes) = self.call(method, path, &[], Some(body)).await?;
        parse(&bytes)
    }
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::Unexpected {
        detail: format!("malformed JSON from BigCommerce: {e}"),
    })
}

/// Turns a 4xx/3xx answer into [`ApiError::Rejected`] with BigCommerce's own words: the v3 `title`
/// (plus the `errors` map), or the v2 `[{"message"}]`.
fn rejected(status: StatusCode, body: &[u8]) -> ApiError {
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let mut message = match &value {
        Value::Object(o) => {
            let title = o
                .get("title")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let details: Vec<String> = o
                .get("errors")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}: {}", v.as_str().unwrap_or_default()))
                        .collect()
                })
                .unwrap_or_default();
            if details.is_empty() {
                title
            } else {
                format!("{title} ({})", details.join("; "))
            }
        }
        Value::Array(items) => items
            .iter()
            .filter_map(|i| i.get("message").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("; "),
        _ => String::new(),
    };
    if message.is_empty() {
        message = match status {
            StatusCode::UNAUTHORIZED => "the access token was refused".to_owned(),
            StatusCode::FORBIDDEN => "the API account lacks a scope this call needs".to_owned(),
            s if s.is_redirection() => {
                "BigCommerce answered with a redirect, check api_base".to_owned()
            }
            s => s.canonical_reason().unwrap_or("no reason given").to_owned(),
        };
    }
    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        message.push_str(" (check the account's access token and its scopes: store_v2_customers, store_v2_information)");
    }
    message.truncate(
        message
            .char_indices()
            .nth(MAX_ERROR_MESSAGE)
            .map(|(i, _)| i)
            .unwrap_or(message.len()),
    );
    ApiError::Rejected {
        status: status.as_u16(),
        message,
    }
}

#[derive(Deserialize)]
struct Data<T> {
    data: T,
}

#[derive(Deserialize)]
struct Group {
    id: u64,
    name: String,
}

#[derive(Deserialize)]
struct Attribute {
    id: u64,
    name: String,
}

#[async_trait]
impl StoreTime for HttpCustomerApi {
    async fn store_time(&self) -> Result<UnixTime, ApiError> {
        #[derive(Deserialize)]
        struct Time {
            time: UnixTime,
        }
        let t: Option<Time> = self.get_json("/v2/time", &[]).await?;
        t.map(|t| t.time).ok_or_else(|| ApiError::Unexpected {
            detail: "empty answer from /v2/time".into(),
        })
    }
}

#[async_trait]
impl CustomerApi for HttpCustomerApi {
    fn store_hash(&self) -> &str {
        self.http.store_hash()
    }

    async fn find_customer_by_email(&self, email: &str) -> Result<Option<Customer>, ApiError> {
        let found: Option<Data<Vec<Customer>>> = self
            .get_json(
                "/v3/customers",
                &[("email:in", email), ("include", "attributes")],
            )
            .await?;
        // `email:in` splits on commas: keep only the exact (case-insensitive) match.
        Ok(found
            .map(|d| d.data)
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.email.eq_ignore_ascii_case(email)))
    }

    async fn create_customer(&self, customer: NewCustomer) -> Result<Customer, ApiError> {
        if customer.channel_ids.is_empty() {
            return Err(ApiError::NoChannels);
        }
        let created: Data<Vec<Customer>> = self
            .send_json(Method::POST, "/v3/customers", &json!([customer]))
            .await?;
        created
            .data
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::Unexpected {
                detail: "creating a customer returned no customer".into(),
            })
    }

    async fn update_customer(&self, id: u64, update: CustomerUpdate) -> Result<(), ApiError> {
        if update.channel_ids.as_ref().is_some_and(Vec::is_empty) {
            return Err(ApiError::NoChannels);
        }
        let mut item = serde_json::to_value(&update).map_err(|e| ApiError::Unexpected {
            detail: e.to_string(),
        })?;
        if let Value::Object(map) = &mut item {
            map.insert("id".into(), json!(id));
        }
        let _: Value = self
            .send_json(Method::PUT, "/v3/customers", &json!([item]))
            .await?;
        Ok(())
    }

    async fn customer_group_id(&self, group: &CustomerGroupRef) -> Result<u64, ApiError> {
        let name = match group {
            CustomerGroupRef::Id(id) => return Ok(*id),
            CustomerGroupRef::Name(name) => name,
        };
        let found: Option<Vec<Group>> = self
            .get_json("/v2/customer_groups", &[("name", name)])
            .await?;
        if let Some(g) = found
            .unwrap_or_default()
            .into_iter()
            .find(|g| &g.name == name)
        {
            return Ok(g.id);
        }
        let created: Group = self
            .send_json(
                Method::POST,
                "/v2/customer_groups",
                &json!({ "name": name }),
            )
            .await?;
        Ok(created.id)
    }

    async fn subject_attribute_id(&self) -> Result<u64, ApiError> {
        self.subject_attribute
            .get_or_try_init(|| async {
                let found: Option<Data<Vec<Attribute>>> = self
                    .get_json("/v3/customers/attributes", &[("name", SUBJECT_ATTRIBUTE)])
                    .await?;
                if let Some(a) = found
                    .map(|d| d.data)
                    .unwrap_or_default()
                    .into_iter()
                    .find(|a| a.name == SUBJECT_ATTRIBUTE)
                {
                    return Ok(a.id);
                }
                let created: Data<Vec<Attribute>> = self
                    .send_json(
                        Method::POST,
                        "/v3/customers/attributes",
                        &json!([{ "name": SUBJECT_ATTRIBUTE, "type": "string" }]),
                    )
                    .await?;
                created
                    .data
                    .first()
                    .map(|a| a.id)
                    .ok_or_else(|| ApiError::Unexpected {
                        detail: "creating the storegate_subject customer attribute returned no attribute".into(),
                    })
            })
            .await
            .copied()
    }

    async fn set_subject(
        &self,
        customer_id: u64,
        attribute_id: u64,
        idp_subject: &str,
    ) -> Result<(), ApiError> {
        let _: Value = self
            .send_json(
                Method::PUT,
                "/v3/customers/attribute-values",
                &json!([{ "customer_id": customer_id, "attribute_id": attribute_id, "value": idp_subject }]),
            )
            .await?;
        Ok(())
    }
}
