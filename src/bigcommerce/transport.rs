//! The one HTTP exchange behind every BigCommerce client: the customer client of the launch path
//! and the reconciler (`api::HttpCustomers`) and B2B Edition (`b2b::HttpB2bApi`). Here, and only
//! here: the credentials and the correlation header go on each request (`X-Request-Id`, issue
//! 13), redirects are never followed (they would carry the token), the rate-limit headers are
//! read, and a failure to reach BigCommerce becomes an [`ApiError`] of the right class. What an
//! answer means (envelopes, refusal wording, batching) stays with the client of that API;
//! retrying is the caller's (`quick_retry`, the reconciler's queue).

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde_json::Value;

use super::api::{ApiError, RateInfo};
use crate::config::BigCommerceAccount;
use crate::secret::Secret;

/// One store's API over HTTP.
pub struct StoreHttp {
    client: reqwest::Client,
    /// e.g. `{api_base}/stores/{hash}` or B2B Edition's `.../api/v3/io`, no trailing slash.
    base: String,
    store_hash: String,
    token: Secret,
    /// B2B Edition names the store in a header too (`X-Store-Hash`).
    store_header: bool,
}

impl std::fmt::Debug for StoreHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("StoreHttp")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// An answer whose body is not read yet: a client may decide on the status alone.
pub struct Reply {
    pub status: StatusCode,
    pub rate: RateInfo,
    /// `Retry-After` in seconds, as B2B Edition sends it on a 429.
    retry_after_secs: Option<u64>,
    resp: reqwest::Response,
}

impl Reply {
    /// How long a 429 asks to wait, in ms (0: no hint): `X-Rate-Limit-Time-Reset-Ms`, else
    /// `Retry-After`.
    pub fn retry_after_ms(&self) -> u64 {
        self.rate
            .reset_ms
            .or_else(|| self.retry_after_secs.map(|s| s.saturating_mul(1000)))
            .unwrap_or(0)
    }

    /// The 429 as the one error every client returns for it.
    pub fn rate_limited(&self) -> ApiError {
        ApiError::RateLimited {
            retry_after_ms: self.retry_after_ms(),
        }
    }
}

impl StoreHttp {
    /// The Management API of `account` (`{api_base}/stores/{hash}`), with its timeout.
    pub fn management(account: &BigCommerceAccount) -> reqwest::Result<Self> {
        Ok(StoreHttp {
            client: super::store_api_client(account)?,
            base: super::store_api_base(account),
            store_hash: account.store_hash.clone(),
            token: account.access_token.clone(),
            store_header: false,
        })
    }

    /// B2B Edition at `base` for the store `store_hash`.
    pub fn b2b(
        base: &url::Url,
        store_hash: &str,
        token: Secret,
        timeout: std::time::Duration,
    ) -> reqwest::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(StoreHttp {
            client,
            base: base.as_str().trim_end_matches('/').to_owned(),
            store_hash: store_hash.to_owned(),
            token,
            store_header: true,
        })
    }

    pub fn store_hash(&self) -> &str {
        &self.store_hash
    }

    /// One request to `{base}{path}`; no retry here (each client has its own policy).
    pub async fn send<Q: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        query: &Q,
        body: Option<&Value>,
    ) -> Result<Reply, ApiError> {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("X-Auth-Token", self.token.expose())
            .header("Accept", "application/json")
            .query(query);
        if self.store_header {
            req = req.header("X-Store-Hash", &self.store_hash);
        }
        let mut req = crate::audit::correlation::tag(req);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| self.transport_error(e))?;
        let number = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        Ok(Reply {
            status: resp.status(),
            rate: RateInfo {
                left: number("x-rate-limit-requests-left"),
                reset_ms: number("x-rate-limit-time-reset-ms"),
            },
            retry_after_secs: number("retry-after"),
            resp,
        })
    }

    /// The whole body of `reply`. A body cut off mid-way is a transport failure: the call may
    /// have taken effect, as after a timeout.
    pub async fn body(&self, reply: Reply) -> Result<Vec<u8>, ApiError> {
        reply
            .resp
            .bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| self.transport_error(e))
    }

    /// A timeout, or a failure to reach BigCommerce or to read its whole answer (retryable
    /// upstream failures); anything else reqwest reports is an unexpected answer. reqwest's
    /// message names the URL, never the headers: no token in here.
    fn transport_error(&self, e: reqwest::Error) -> ApiError {
        let store_hash = self.store_hash.clone();
        if e.is_timeout() {
            ApiError::Timeout { store_hash }
        } else if e.is_connect() || e.is_request() || e.is_body() {
            ApiError::Unreachable {
                store_hash,
                detail: e.without_url().to_string(),
            }
        } else {
            ApiError::Unexpected {
                detail: e.without_url().to_string(),
            }
        }
    }
}
