//! [`Customers`] over HTTP: `{api_base}/stores/{hash}/...` through the shared [`StoreHttp`]
//! (credentials, correlation header, rate-limit headers, transport failures), and the reading of
//! BigCommerce's answers. One request per call (a find-or-create two), no retry here: the
//! launch stacks `quick_retry` on this client, the reconciler's queue decides itself.
//!
//! Errors: a 429 is `RateLimited` (`retry_after_ms` 0 when the answer gave no reset), a
//! transport failure `Unreachable`/`Timeout`, a 5xx or a refusal `Rejected` with its status (a
//! refusal in BigCommerce's own words), an answer that cannot be read `Unexpected`.
//!
//! The IdP subject lives in the `storegate_subject` customer attribute: set inline on create,
//! read with `include=attributes`, written for existing customers 10 at a time with
//! `PUT /v3/customers/attribute-values`.

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    ApiError, Created, Customer, Customers, Paced, RateInfo, SUBJECT_ATTRIBUTE, StoreTime,
};
use crate::bigcommerce::transport::StoreHttp;
use crate::clock::UnixTime;
use crate::config::BigCommerceAccount;

pub struct HttpCustomers {
    http: StoreHttp,
    /// The subject attribute's id, resolved on first use (it never changes for a store); a
    /// `OnceCell` so concurrent launches wait for one lookup instead of racing to create it.
    subject_attribute: tokio::sync::OnceCell<u64>,
}

impl std::fmt::Debug for HttpCustomers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpCustomers")
            .field("http", &self.http)
            .finish_non_exhaustive()
    }
}

/// The longest refusal message kept (they end up in audit events and pages).
const MAX_ERROR_MESSAGE: usize = 300;

impl HttpCustomers {
    pub fn new(account: &BigCommerceAccount) -> Result<Self, ApiError> {
        let http = StoreHttp::management(account).map_err(ApiError::client_setup)?;
        Ok(HttpCustomers {
            http,
            subject_attribute: tokio::sync::OnceCell::new(),
        })
    }

    /// One request and its JSON (`Null` for an empty answer, as v2 collections give with 204
    /// when nothing matches); 429, 5xx, refusals and transport failures are errors.
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Paced<Value> {
        let (r, rate) = self.send(method, path, query, body).await;
        (r.and_then(|(status, bytes)| json(status, &bytes)), rate)
    }

    /// One request; 429, 5xx and transport failures are errors, any other answer is returned
    /// with its body.
    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Paced<(StatusCode, Vec<u8>)> {
        let reply = match self.http.send(method, path, query, body).await {
            Ok(r) => r,
            Err(e) => return (Err(e), RateInfo::default()),
        };
        let (status, rate) = (reply.status, reply.rate);
        let result = if status == StatusCode::TOO_MANY_REQUESTS {
            Err(reply.rate_limited())
        } else if status.is_server_error() {
            // BigCommerce failed; its body (often a proxy's HTML page) says nothing more.
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

    /// The subject attribute's id found by name, if it exists.
    async fn find_subject_attribute(&self) -> Result<Option<u64>, ApiError> {
        let (r, _) = self
            .call(
                Method::GET,
                "/v3/customers/attributes",
                &[("name", SUBJECT_ATTRIBUTE.to_owned())],
                None,
            )
            .await;
        Ok(r?
            .get("data")
            .and_then(Value::as_array)
            .and_then(|a| {
                a.iter()
                    .find(|a| a.get("name").and_then(Value::as_str) == Some(SUBJECT_ATTRIBUTE))
            })
            .and_then(|a| a.get("id"))
            .and_then(Value::as_u64))
    }

    /// The subject attribute's id, found by name or created.
    async fn find_or_create_subject_attribute(&self) -> Result<u64, ApiError> {
        if let Some(id) = self.find_subject_attribute().await? {
            return Ok(id);
        }
        let body = json!([{ "name": SUBJECT_ATTRIBUTE, "type": "string" }]);
        let (r, _) = self
            .call(Method::POST, "/v3/customers/attributes", &[], Some(&body))
            .await;
        r?.pointer("/data/0/id")
            .and_then(Value::as_u64)
            .ok_or_else(|| ApiError::Unexpected {
                detail: "creating the storegate_subject customer attribute returned no attribute"
                    .into(),
            })
    }
}

/// A successful answer's JSON; a refusal in BigCommerce's words.
fn json(status: StatusCode, bytes: &[u8]) -> Result<Value, ApiError> {
    if !status.is_success() {
        Err(rejected(status, bytes))
    } else if bytes.is_empty() || status == StatusCode::NO_CONTENT {
        Ok(Value::Null)
    } else {
        serde_json::from_slice(bytes).map_err(|e| ApiError::Unexpected {
            detail: format!("malformed JSON from BigCommerce: {e}"),
        })
    }
}

fn customers(v: Value) -> Result<Vec<Customer>, ApiError> {
    serde_json::from_value(v.get("data").cloned().unwrap_or(Value::Array(vec![]))).map_err(|e| {
        ApiError::Unexpected {
            detail: format!("unexpected customer list: {e}"),
        }
    })
}

fn ids_query(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
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

#[async_trait]
impl StoreTime for HttpCustomers {
    async fn store_time(&self) -> Result<UnixTime, ApiError> {
        #[derive(Deserialize)]
        struct Time {
            time: UnixTime,
        }
        let (r, _) = self.call(Method::GET, "/v2/time", &[], None).await;
        match r? {
            Value::Null => Err(ApiError::Unexpected {
                detail: "empty answer from /v2/time".into(),
            }),
            v => serde_json::from_value::<Time>(v)
                .map(|t| t.time)
                .map_err(|e| ApiError::Unexpected {
                    detail: format!("malformed JSON from BigCommerce: {e}"),
                }),
        }
    }
}

#[async_trait]
impl Customers for HttpCustomers {
    fn store_hash(&self) -> &str {
        self.http.store_hash()
    }

    async fn find_by_emails(&self, emails: &[String]) -> Paced<Vec<Customer>> {
        let q = [
            ("email:in", emails.join(",")),
            ("include", "attributes".to_owned()),
            ("limit", "250".to_owned()),
        ];
        let (r, rate) = self.call(Method::GET, "/v3/customers", &q, None).await;
        (r.and_then(customers), rate)
    }

    async fn find_by_ids(&self, ids: &[u64]) -> Result<Vec<Customer>, ApiError> {
        let q = [("id:in", ids_query(ids)), ("limit", "250".to_owned())];
        let (r, _) = self.call(Method::GET, "/v3/customers", &q, None).await;
        r.and_then(customers)
    }

    async fn create(&self, items: &[Value]) -> Paced<Created> {
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
            json(status, &bytes).and_then(customers).map(Created::All)
        });
        (r, rate)
    }

    async fn update(&self, items: &[Value]) -> Paced<Vec<Customer>> {
        let (r, rate) = self
            .call(
                Method::PUT,
                "/v3/customers",
                &[],
                Some(&Value::Array(items.to_vec())),
            )
            .await;
        (r.and_then(customers), rate)
    }

    async fn delete(&self, ids: &[u64]) -> Paced<()> {
        let (r, rate) = self
            .call(
                Method::DELETE,
                "/v3/customers",
                &[("id:in", ids_query(ids))],
                None,
            )
            .await;
        (r.map(|_| ()), rate)
    }

    async fn set_subjects(&self, attribute_id: u64, subjects: &[(u64, String)]) -> Paced<()> {
        let body: Vec<Value> = subjects
            .iter()
            .map(|(id, s)| json!({ "customer_id": id, "attribute_id": attribute_id, "value": s }))
            .collect();
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

    /// `GET /v3/customers/attribute-values?attribute_id:in=..`, 250 a page.
    async fn subject_values(&self, attribute_id: u64) -> Result<Vec<(u64, String)>, ApiError> {
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

    async fn subject_attribute_id(&self, create: bool) -> Result<Option<u64>, ApiError> {
        if let Some(id) = self.subject_attribute.get() {
            return Ok(Some(*id));
        }
        if !create {
            let found = self.find_subject_attribute().await?;
            if let Some(id) = found {
                // Lost to a concurrent lookup: the same id.
                let _ = self.subject_attribute.set(id);
            }
            return Ok(found);
        }
        self.subject_attribute
            .get_or_try_init(|| self.find_or_create_subject_attribute())
            .await
            .map(|id| Some(*id))
    }

    async fn customer_group_id(&self, name: &str, create: bool) -> Result<Option<u64>, ApiError> {
        let (r, _) = self
            .call(
                Method::GET,
                "/v2/customer_groups",
                &[("name", name.to_owned())],
                None,
            )
            .await;
        // The exact name only: the filter is BigCommerce's, the decision ours.
        let found = r?
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|g| g.get("name").and_then(Value::as_str) == Some(name))
            })
            .and_then(|g| g.get("id"))
            .and_then(Value::as_u64);
        if found.is_some() || !create {
            return Ok(found);
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
            .map(Some)
            .ok_or_else(|| ApiError::Unexpected {
                detail: "creating a customer group returned no id".into(),
            })
    }
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
