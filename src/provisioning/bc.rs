//! The BigCommerce calls the work queue makes, in batches of at most 10 customers (BIGCOMMERCE.md:
//! `POST`/`PUT /v3/customers` take arrays of at most 10). One call per method, no retry here: the
//! queue decides about retries. Every answer's `X-Rate-Limit-*` headers are returned so the queue
//! can pace itself before the store's quota runs out.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::bigcommerce::api::{Customer, SUBJECT_KEY, SUBJECT_NAMESPACE};
use crate::config::BigCommerceAccount;
use crate::secret::Secret;

/// The rate-limit headers of one answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateInfo {
    pub left: Option<u64>,
    pub reset_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// 429: wait `reset_ms` (or back off when absent: platform load).
    #[error("rate limited")]
    RateLimited { reset_ms: Option<u64> },
    /// 5xx, timeout or transport failure: the call may or may not have taken effect.
    #[error("transient failure: {0}")]
    Transient(String),
    /// 4xx other than 429: the input was refused.
    #[error("refused ({status}): {message}")]
    Refused { status: u16, message: String },
}

pub struct BatchClient {
    http: reqwest::Client,
    base: String,
    token: Secret,
}

impl BatchClient {
    pub fn new(account: &BigCommerceAccount) -> anyhow::Result<Self> {
        Ok(BatchClient {
            http: reqwest::Client::builder()
                .timeout(account.timeout)
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            base: format!(
                "{}/stores/{}",
                account.api_base.as_str().trim_end_matches('/'),
                account.store_hash
            ),
            token: account.access_token.clone(),
        })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> (Result<Value, CallError>, RateInfo) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("X-Auth-Token", self.token.expose())
            .header("Accept", "application/json")
            .query(query);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                return (
                    Err(CallError::Transient(e.without_url().to_string())),
                    RateInfo::default(),
                );
            }
        };
        let header = |n: &str| {
            resp.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
        };
        let rate = RateInfo {
            left: header("x-rate-limit-requests-left"),
            reset_ms: header("x-rate-limit-time-reset-ms"),
        };
        let status = resp.status();
        let bytes = resp.bytes().await.unwrap_or_default();
        let result = if status == StatusCode::TOO_MANY_REQUESTS {
            Err(CallError::RateLimited {
                reset_ms: rate.reset_ms,
            })
        } else if status.is_server_error() {
            Err(CallError::Transient(format!("HTTP {status}")))
        } else if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes);
            Err(CallError::Refused {
                status: status.as_u16(),
                message: text.chars().take(300).collect(),
            })
        } else if bytes.is_empty() {
            Ok(Value::Null)
        } else {
            serde_json::from_slice(&bytes)
                .map_err(|e| CallError::Transient(format!("bad JSON: {e}")))
        };
        (result, rate)
    }

    fn customers(v: Value) -> Result<Vec<Customer>, CallError> {
        serde_json::from_value(v.get("data").cloned().unwrap_or(Value::Array(vec![])))
            .map_err(|e| CallError::Transient(format!("unexpected customer list: {e}")))
    }

    /// Customers with these emails (at most 50 per call).
    pub async fn find_by_emails(
        &self,
        emails: &[String],
    ) -> (Result<Vec<Customer>, CallError>, RateInfo) {
        let q = [("email:in", emails.join(",")), ("limit", "250".to_owned())];
        let (r, rate) = self.call(Method::GET, "/v3/customers", &q, None).await;
        (r.and_then(Self::customers), rate)
    }

    /// `POST /v3/customers` with at most 10 customers.
    pub async fn create(&self, items: &[Value]) -> (Result<Vec<Customer>, CallError>, RateInfo) {
        let (r, rate) = self
            .call(
                Method::POST,
                "/v3/customers",
                &[],
                Some(&Value::Array(items.to_vec())),
            )
            .await;
        (r.and_then(Self::customers), rate)
    }

    /// `PUT /v3/customers` with at most 10 updates, each with its `id`.
    pub async fn update(&self, items: &[Value]) -> (Result<Vec<Customer>, CallError>, RateInfo) {
        let (r, rate) = self
            .call(
                Method::PUT,
                "/v3/customers",
                &[],
                Some(&Value::Array(items.to_vec())),
            )
            .await;
        (r.and_then(Self::customers), rate)
    }

    /// `DELETE /v3/customers?id:in=...` (never without ids: BigCommerce would answer 204 anyway).
    pub async fn delete(&self, ids: &[u64]) -> (Result<(), CallError>, RateInfo) {
        let list: Vec<String> = ids.iter().map(u64::to_string).collect();
        let (r, rate) = self
            .call(
                Method::DELETE,
                "/v3/customers",
                &[("id:in", list.join(","))],
                None,
            )
            .await;
        (r.map(|_| ()), rate)
    }

    /// Records the IdP subject in the app-only metafield; an existing one is updated.
    pub async fn set_subject(
        &self,
        customer_id: u64,
        subject: &str,
    ) -> (Result<(), CallError>, RateInfo) {
        let path = format!("/v3/customers/{customer_id}/metafields");
        let body = json!({ "namespace": SUBJECT_NAMESPACE, "key": SUBJECT_KEY, "value": subject, "permission_set": "app_only" });
        let (r, rate) = self.call(Method::POST, &path, &[], Some(&body)).await;
        match r {
            Err(CallError::Refused { status: 409, .. }) => {
                let q = [
                    ("namespace", SUBJECT_NAMESPACE.to_owned()),
                    ("key", SUBJECT_KEY.to_owned()),
                ];
                let (r, rate) = self.call(Method::GET, &path, &q, None).await;
                let id = match r {
                    Ok(v) => v.pointer("/data/0/id").and_then(Value::as_u64),
                    Err(e) => return (Err(e), rate),
                };
                let Some(id) = id else {
                    return (Err(CallError::Transient("metafield vanished".into())), rate);
                };
                let (r, rate) = self
                    .call(
                        Method::PUT,
                        &format!("{path}/{id}"),
                        &[],
                        Some(&json!({ "value": subject })),
                    )
                    .await;
                (r.map(|_| ()), rate)
            }
            other => (other.map(|_| ()), rate),
        }
    }

    /// The id of a customer group by name, if it exists (reads only: safe in `--dry-run`).
    pub async fn find_group_id(&self, name: &str) -> Result<Option<u64>, CallError> {
        let (r, _) = self
            .call(
                Method::GET,
                "/v2/customer_groups",
                &[("name", name.to_owned())],
                None,
            )
            .await;
        Ok(r?
            .as_array()
            .and_then(|a| a.first())
            .and_then(|g| g.get("id"))
            .and_then(Value::as_u64))
    }

    /// Every customer carrying the storegate subject metafield, as (customer id, subject):
    /// `GET /v3/customers/metafields?namespace=..&key=..`, 250 a page.
    pub async fn subject_metafields(&self) -> Result<Vec<(u64, String)>, CallError> {
        let mut out = Vec::new();
        for page in 1u32.. {
            let q = [
                ("namespace", SUBJECT_NAMESPACE.to_owned()),
                ("key", SUBJECT_KEY.to_owned()),
                ("limit", "250".to_owned()),
                ("page", page.to_string()),
            ];
            let (r, _) = self
                .call(Method::GET, "/v3/customers/metafields", &q, None)
                .await;
            let v = r?;
            let data = v.get("data").and_then(Value::as_array);
            let n = data.map_or(0, Vec::len);
            for m in data.into_iter().flatten() {
                if let (Some(id), Some(val)) = (
                    m.get("resource_id").and_then(Value::as_u64),
                    m.get("value").and_then(Value::as_str),
                ) {
                    out.push((id, val.to_owned()));
                }
            }
            let pages = v
                .pointer("/meta/pagination/total_pages")
                .and_then(Value::as_u64)
                .unwrap_or(1);
            if n == 0 || u64::from(page) >= pages {
                break;
            }
        }
        Ok(out)
    }

    /// Customers by id (at most 250 per call).
    pub async fn find_by_ids(&self, ids: &[u64]) -> Result<Vec<Customer>, CallError> {
        let list: Vec<String> = ids.iter().map(u64::to_string).collect();
        let q = [("id:in", list.join(",")), ("limit", "250".to_owned())];
        let (r, _) = self.call(Method::GET, "/v3/customers", &q, None).await;
        r.and_then(Self::customers)
    }

    /// The id of a customer group by name, created when missing.
    pub async fn group_id(&self, name: &str) -> Result<u64, CallError> {
        if let Some(id) = self.find_group_id(name).await? {
            return Ok(id);
        }
        let (r, _) = self
            .call(
                Method::POST,
                "/v2/customer_groups",
                &[],
                Some(&json!({ "name": name })),
            )
            .await;
        r?.get("id")
            .and_then(Value::as_u64)
            .ok_or_else(|| CallError::Transient("no group id".into()))
    }
}
