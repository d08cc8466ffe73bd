//! The Management API client of the reconciler (the work queue, the reads before planning, the
//! access report): the customer calls in batches of at most 10 (docs/bigcommerce.md:
//! `POST`/`PUT /v3/customers` take arrays of at most 10). One call per method, no retry here: the
//! queue decides about retries. Every answer's `X-Rate-Limit-*` headers are returned so the queue
//! can pace itself before the store's quota runs out.
//!
//! The HTTP exchange (credentials, correlation header, rate-limit headers, transport failures) is
//! the shared [`StoreHttp`], as for the launch path's client and B2B Edition.
//!
//! Errors are the launch path's [`ApiError`] (one error type for both clients): a 429 is
//! `RateLimited` (`retry_after_ms` 0 when the answer gave no reset), a transport failure
//! `Unreachable`/`Timeout`, a 5xx or a refusal `Rejected` with its status (its
//! [`ApiError::class`] says who must act), an answer that cannot be read `Unexpected`.
//!
//! The IdP subject lives in the `storegate_subject` customer attribute: set inline on create,
//! read with `include=attributes`, written for existing customers 10 at a time with
//! `PUT /v3/customers/attribute-values`.

use std::sync::OnceLock;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::api::{ApiError, Customer, SUBJECT_ATTRIBUTE};
use super::transport::StoreHttp;
use crate::config::BigCommerceAccount;

pub use super::transport::RateInfo;

/// Emails per lookup call (`GET /v3/customers?email:in=...`).
pub const LOOKUP: usize = 50;

/// Ids per `GET /v3/customers?id:in=...`.
pub const BY_ID: usize = 250;

/// The answer to a batch create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// Every customer was created (BigCommerce creates all or none).
    All(Vec<Customer>),
    /// 422 because these emails (lower-case) already belong to customers: nothing was created.
    EmailsTaken(Vec<String>),
}

pub struct BatchClient {
    http: StoreHttp,
    /// The subject attribute's id, once found or created (it never changes for a store).
    subject_attribute: OnceLock<u64>,
    /// Where the customers this client writes are recorded, so their webhooks are known to be
    /// ours (issue 13); set by the gateway when it receives webhooks.
    own: OnceLock<crate::bigcommerce::webhooks::OwnChanges>,
}

impl BatchClient {
    pub fn new(account: &BigCommerceAccount) -> anyhow::Result<Self> {
        Ok(BatchClient {
            http: StoreHttp::management(account)?,
            subject_attribute: OnceLock::new(),
            own: OnceLock::new(),
        })
    }

    /// Records every customer this client writes from now on in `own` (once; later calls are
    /// ignored).
    pub fn record_own_changes(&self, own: crate::bigcommerce::webhooks::OwnChanges) {
        let _ = self.own.set(own);
    }

    async fn record(&self, ids: Vec<u64>) {
        if let Some(own) = self.own.get() {
            for id in ids {
                own.record_customer(self.http.store_hash(), id).await;
            }
        }
    }

    fn ids_of(items: &[Value]) -> Vec<u64> {
        items
            .iter()
            .filter_map(|i| i.get("id").and_then(Value::as_u64))
            .collect()
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> (Result<Value, ApiError>, RateInfo) {
        let (r, rate) = self.send(method, path, query, body).await;
        (
            r.and_then(|(status, bytes)| Self::json(status, &bytes)),
            rate,
        )
    }

    /// A successful answer's JSON; a refusal's words (truncated: they end up in audit events).
    fn json(status: StatusCode, bytes: &[u8]) -> Result<Value, ApiError> {
        if !status.is_success() {
            let text = String::from_utf8_lossy(bytes);
            Err(ApiError::Rejected {
                status: status.as_u16(),
                message: text.chars().take(300).collect(),
            })
        } else if bytes.is_empty() {
            Ok(Value::Null)
        } else {
            serde_json::from_slice(bytes).map_err(|e| ApiError::Unexpected {
                detail: format!("bad JSON: {e}"),
            })
        }
    }

    /// One request; 429, 5xx and transport failures are errors, any other answer is returned
    /// with its body.
    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> (Result<(StatusCode, Vec<u8>), ApiError>, RateInfo) {
        let reply = match self.http.send(method, path, query, body).await {
            Ok(r) => r,
            Err(e) => return (Err(e), RateInfo::default()),
        };
        let (status, rate) = (reply.status, reply.rate);
        let result = if status == StatusCode::TOO_MANY_REQUESTS {
            Err(reply.rate_limited())
        } else if status.is_server_error() {
            Err(ApiError::Rejected {
                status: status.as_u16(),
                message: format!("HTTP {status}"),
            })
        } else {
            // A body cut off mid-way: the call may have taken effect, like a timeout.
            self.http.body(reply).await.map(|b| (status, b))
        };
        (result, rate)
    }

    fn customers(v: Value) -> Result<Vec<Customer>, ApiError> {
        serde_json::from_value(v.get("data").cloned().unwrap_or(Value::Array(vec![]))).map_err(
            |e| ApiError::Unexpected {
                detail: format!("unexpected customer list: {e}"),
            },
        )
    }

    /// Customers with these emails (at most 50 per call), with their attribute values.
    pub async fn find_by_emails(
        &self,
        emails: &[String],
    ) -> (Result<Vec<Customer>, ApiError>, RateInfo) {
        let q = [
            ("email:in", emails.join(",")),
            ("include", "attributes".to_owned()),
            ("limit", "250".to_owned()),
        ];
        let (r, rate) = self.call(Method::GET, "/v3/customers", &q, None).await;
        (r.and_then(Self::customers), rate)
    }

    /// `POST /v3/customers` with at most 10 customers. BigCommerce refuses the whole batch with
    /// 422 when an email is taken, naming it: that answer is [`Created::EmailsTaken`].
    pub async fn create(&self, items: &[Value]) -> (Result<Created, ApiError>, RateInfo) {
        let (r, rate) = self.create_unrecorded(items).await;
        if let Ok(Created::All(created)) = &r {
            self.record(created.iter().map(|c| c.id).collect()).await;
        }
        (r, rate)
    }

    async fn create_unrecorded(&self, items: &[Value]) -> (Result<Created, ApiError>, RateInfo) {
        let (r, rate) = self
            .send(
                Method::POST,
                "/v3/customers",
                &[],
                Some(&Value::Array(items.to_vec())),
            )
            .await;
        let r = r.and_then(|(status, bytes)| {
            if status == StatusCode::UNPROCESSABLE_ENTITY {
                let taken = taken_emails(items, &bytes);
                if !taken.is_empty() {
                    return Ok(Created::EmailsTaken(taken));
                }
            }
            Self::json(status, &bytes)
                .and_then(Self::customers)
                .map(Created::All)
        });
        (r, rate)
    }

    /// `PUT /v3/customers` with at most 10 updates, each with its `id`.
    pub async fn update(&self, items: &[Value]) -> (Result<Vec<Customer>, ApiError>, RateInfo) {
        self.record(Self::ids_of(items)).await;
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
    pub async fn delete(&self, ids: &[u64]) -> (Result<(), ApiError>, RateInfo) {
        self.record(ids.to_vec()).await;
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

    /// Records IdP subjects on existing customers, at most 10 per call:
    /// `PUT /v3/customers/attribute-values` (an upsert).
    pub async fn set_subjects(
        &self,
        attribute_id: u64,
        subjects: &[(u64, String)],
    ) -> (Result<(), ApiError>, RateInfo) {
        let body: Vec<Value> = subjects
            .iter()
            .map(|(id, s)| json!({ "customer_id": id, "attribute_id": attribute_id, "value": s }))
            .collect();
        self.record(subjects.iter().map(|(id, _)| *id).collect())
            .await;
        let (r, rate) = self
            .call(
                Method::PUT,
                "/v3/customers/attribute-values",
                &[],
                Some(&Value::Array(body)),
            )
            .await;
        (r.map(|_| ()), rate)
    }

    /// The id of the `storegate_subject` attribute: cached, else found by name, else (when
    /// `create`) created. `None`: it does not exist and `create` is false (a dry run), so no
    /// customer carries a subject yet.
    pub async fn subject_attribute_id(&self, create: bool) -> Result<Option<u64>, ApiError> {
        if let Some(id) = self.subject_attribute.get() {
            return Ok(Some(*id));
        }
        let (r, _) = self
            .call(
                Method::GET,
                "/v3/customers/attributes",
                &[("name", SUBJECT_ATTRIBUTE.to_owned())],
                None,
            )
            .await;
        let found = r?
            .get("data")
            .and_then(Value::as_array)
            .and_then(|a| {
                a.iter()
                    .find(|a| a.get("name").and_then(Value::as_str) == Some(SUBJECT_ATTRIBUTE))
            })
            .and_then(|a| a.get("id"))
            .and_then(Value::as_u64);
        let id = match found {
            Some(id) => id,
            None if !create => return Ok(None),
            None => {
                let body = json!([{ "name": SUBJECT_ATTRIBUTE, "type": "string" }]);
                let (r, _) = self
                    .call(Method::POST, "/v3/customers/attributes", &[], Some(&body))
                    .await;
                r?.pointer("/data/0/id")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| ApiError::Unexpected {
                        detail: "creating the storegate_subject customer attribute returned no id"
                            .into(),
                    })?
            }
        };
        Ok(Some(*self.subject_attribute.get_or_init(|| id)))
    }

    /// The id of a customer group by name, if it exists (reads only: safe in `--dry-run`).
    pub async fn find_group_id(&self, name: &str) -> Result<Option<u64>, ApiError> {
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

    /// Every customer carrying a value of the subject attribute, as (customer id, subject):
    /// `GET /v3/customers/attribute-values?attribute_id:in=..`, 250 a page.
    pub async fn subject_values(&self, attribute_id: u64) -> Result<Vec<(u64, String)>, ApiError> {
        let mut out = Vec::new();
        for page in 1u32.. {
            let q = [
                ("attribute_id:in", attribute_id.to_string()),
                ("limit", "250".to_owned()),
                ("page", page.to_string()),
            ];
            let (r, _) = self
                .call(Method::GET, "/v3/customers/attribute-values", &q, None)
                .await;
            let v = r?;
            let data = v.get("data").and_then(Value::as_array);
            let n = data.map_or(0, Vec::len);
            for m in data.into_iter().flatten() {
                if let (Some(id), Some(val)) = (
                    m.get("customer_id").and_then(Value::as_u64),
                    m.get("attribute_value").and_then(Value::as_str),
                ) && !val.is_empty()
                {
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
    pub async fn find_by_ids(&self, ids: &[u64]) -> Result<Vec<Customer>, ApiError> {
        let list: Vec<String> = ids.iter().map(u64::to_string).collect();
        let q = [("id:in", list.join(",")), ("limit", "250".to_owned())];
        let (r, _) = self.call(Method::GET, "/v3/customers", &q, None).await;
        r.and_then(Self::customers)
    }

    /// The id of a customer group by name, created when missing.
    pub async fn group_id(&self, name: &str) -> Result<u64, ApiError> {
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
            .ok_or_else(|| ApiError::Unexpected {
                detail: "creating a customer group returned no id".into(),
            })
    }
}

/// The emails of `items` that a 422 body says are already in use (lower-case). BigCommerce names
/// each duplicate in its `errors` map ("The email address X is already in use ..."); an email is
/// taken when a message saying so names it as a whole word.
fn taken_emails(items: &[Value], body: &[u8]) -> Vec<String> {
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let named: Vec<String> = body
        .get("errors")
        .and_then(Value::as_object)
        .map(|m| {
            m.values()
                .filter_map(Value::as_str)
                .map(str::to_lowercase)
                .filter(|t| t.contains("already in use") || t.contains("already exists"))
                .flat_map(|t| {
                    t.split(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ','))
                        .map(|w| w.trim_end_matches(['.', ':', ';']).to_owned())
                        .filter(|w| w.contains('@'))
                        .collect::<Vec<_>>()
                })
                .collect()
        })
        .unwrap_or_default();
    let mut taken: Vec<String> = items
        .iter()
        .filter_map(|i| i.get("email").and_then(Value::as_str))
        .map(str::to_lowercase)
        .filter(|e| named.contains(e))
        .collect();
    taken.sort();
    taken.dedup();
    taken
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taken_emails_are_the_batch_emails_named_as_in_use() {
        let items = vec![
            json!({"email": "Ada@corp.example"}),
            json!({"email": "bob@corp.example"}),
            json!({"email": "ada@corp.example.org"}),
        ];
        let body = json!({"status": 422, "title": "Unable to create customers", "errors": {
            "0.email": "The email address ada@corp.example is already in use by another customer.",
            "2.first_name": "first_name is required",
        }});
        let taken = taken_emails(&items, body.to_string().as_bytes());
        // Whole addresses only: "ada@corp.example.org" is not named.
        assert_eq!(taken, vec!["ada@corp.example".to_owned()]);
        assert!(taken_emails(&items, b"not json").is_empty());
        let longer = json!({"errors": {"0.email": "The email address ada@corp.example.org is already in use."}});
        assert_eq!(
            taken_emails(&items, longer.to_string().as_bytes()),
            vec!["ada@corp.example.org".to_owned()]
        );
    }
}
