//! The launch path's quick retry, a layer around any [`Customers`]: a call that BigCommerce
//! answered with a 429 (after the advertised reset, capped) or a 5xx is made once more, at once,
//! because a user is waiting. Only upstream failures marked retryable are retried; an error an
//! administrator must resolve or a misuse never is, and neither is a timeout or an unreachable
//! store (the user has already waited the whole timeout, and the write may have taken effect).
//! The reconciler does not stack this layer: its queue decides about retries and paces itself.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::api::{ApiError, Created, Customer, Customers, ErrorClass, Paced, RateInfo, StoreTime};
use crate::clock::UnixTime;

/// How long to wait before the one retry. Both short: a launch has a user waiting.
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

/// How long to wait before retrying after `e`; `None`: do not retry.
pub fn retry_wait(e: &ApiError, policy: &RetryPolicy) -> Option<Duration> {
    if e.class() != (ErrorClass::Upstream { retryable: true }) {
        return None;
    }
    match e {
        ApiError::RateLimited { retry_after_ms: 0 } => Some(
            policy
                .default_rate_limit_wait
                .min(policy.max_rate_limit_wait),
        ),
        ApiError::RateLimited { retry_after_ms } => {
            Some(Duration::from_millis(*retry_after_ms).min(policy.max_rate_limit_wait))
        }
        ApiError::Rejected { status, .. } if *status >= 500 => Some(policy.server_error_backoff),
        _ => None,
    }
}

/// A [`Customers`] whose every call is retried once on a 429 or a 5xx.
pub struct QuickRetry {
    inner: Arc<dyn Customers>,
    policy: RetryPolicy,
}

impl QuickRetry {
    pub fn wrap(inner: Arc<dyn Customers>, policy: RetryPolicy) -> Arc<dyn Customers> {
        Arc::new(QuickRetry { inner, policy })
    }

    /// `call`, and once more after the wait [`retry_wait`] gives for its error.
    async fn paced<T, F, Fut>(&self, call: F) -> Paced<T>
    where
        F: Fn() -> Fut + Send + Sync,
        Fut: Future<Output = Paced<T>> + Send,
        T: Send,
    {
        let (r, rate) = call().await;
        let wait = match &r {
            Err(e) => retry_wait(e, &self.policy),
            Ok(_) => None,
        };
        let Some(wait) = wait else {
            return (r, rate);
        };
        let store_hash = self.inner.store_hash();
        match &r {
            Err(ApiError::RateLimited { .. }) => {
                tracing::warn!(%store_hash, wait_ms = wait.as_millis() as u64, "BigCommerce rate limit: retrying once")
            }
            Err(e) => tracing::warn!(%store_hash, error = %e, "BigCommerce failed: retrying once"),
            Ok(_) => {}
        }
        tokio::time::sleep(wait).await;
        call().await
    }

    /// [`Self::paced`] for a call that returns no rate-limit headers.
    async fn plain<T, F, Fut>(&self, call: F) -> Result<T, ApiError>
    where
        F: Fn() -> Fut + Send + Sync,
        Fut: Future<Output = Result<T, ApiError>> + Send,
        T: Send,
    {
        self.paced(|| {
            let f = call();
            async move { (f.await, RateInfo::default()) }
        })
        .await
        .0
    }
}

#[async_trait]
impl StoreTime for QuickRetry {
    async fn store_time(&self) -> Result<UnixTime, ApiError> {
        self.plain(|| self.inner.store_time()).await
    }
}

#[async_trait]
impl Customers for QuickRetry {
    fn store_hash(&self) -> &str {
        self.inner.store_hash()
    }

    async fn find_by_emails(&self, emails: &[String]) -> Paced<Vec<Customer>> {
        self.paced(|| self.inner.find_by_emails(emails)).await
    }

    async fn find_by_ids(&self, ids: &[u64]) -> Result<Vec<Customer>, ApiError> {
        self.plain(|| self.inner.find_by_ids(ids)).await
    }

    async fn create(&self, customers: &[Value]) -> Paced<Created> {
        self.paced(|| self.inner.create(customers)).await
    }

    async fn update(&self, updates: &[Value]) -> Paced<Vec<Customer>> {
        self.paced(|| self.inner.update(updates)).await
    }

    async fn delete(&self, ids: &[u64]) -> Paced<()> {
        self.paced(|| self.inner.delete(ids)).await
    }

    async fn set_subjects(&self, attribute_id: u64, subjects: &[(u64, String)]) -> Paced<()> {
        self.paced(|| self.inner.set_subjects(attribute_id, subjects))
            .await
    }

    async fn subject_values(&self, attribute_id: u64) -> Result<Vec<(u64, String)>, ApiError> {
        self.plain(|| self.inner.subject_values(attribute_id)).await
    }

    async fn subject_attribute_id(&self, create: bool) -> Result<Option<u64>, ApiError> {
        self.plain(|| self.inner.subject_attribute_id(create)).await
    }

    async fn customer_group_id(&self, name: &str, create: bool) -> Result<Option<u64>, ApiError> {
        self.plain(|| self.inner.customer_group_id(name, create))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bigcommerce::test_support::Scripted;

    fn instant() -> RetryPolicy {
        RetryPolicy {
            max_rate_limit_wait: Duration::ZERO,
            default_rate_limit_wait: Duration::ZERO,
            server_error_backoff: Duration::ZERO,
        }
    }

    fn rejected(status: u16) -> ApiError {
        ApiError::Rejected {
            status,
            message: "no".into(),
        }
    }

    /// Calls made for one `find_by_emails` whose answers are `script` in turn.
    async fn calls_for(
        script: Vec<Result<(), ApiError>>,
    ) -> (Result<Vec<Customer>, ApiError>, u32) {
        let fake = Arc::new(Scripted::new(script));
        let api = QuickRetry::wrap(fake.clone(), instant());
        let (r, _) = api.find_by_emails(&["a@corp.example".into()]).await;
        (r, fake.calls())
    }

    #[tokio::test]
    async fn a_retryable_upstream_failure_is_retried_exactly_once() {
        for e in [rejected(503), ApiError::RateLimited { retry_after_ms: 5 }] {
            assert_eq!(e.class(), ErrorClass::Upstream { retryable: true });
            let (r, calls) = calls_for(vec![Err(e.clone()), Ok(())]).await;
            assert_eq!((r, calls), (Ok(vec![]), 2), "{e}");
            let (r, calls) = calls_for(vec![Err(e.clone()), Err(e.clone()), Ok(())]).await;
            assert_eq!((r, calls), (Err(e.clone()), 2), "{e}: once, not twice");
        }
    }

    #[tokio::test]
    async fn administrator_matters_misuse_and_timeouts_are_never_retried() {
        for e in [
            rejected(401),
            rejected(409),
            ApiError::SubjectConflict {
                customer_id: 1,
                recorded: "a:b".into(),
            },
            rejected(422),
            ApiError::NoChannels,
            // Retryable upstream, but the user has waited the whole timeout already.
            ApiError::Timeout {
                store_hash: "h".into(),
            },
            ApiError::Unexpected {
                detail: "bad JSON".into(),
            },
        ] {
            let (r, calls) = calls_for(vec![Err(e.clone()), Ok(())]).await;
            assert_eq!((r, calls), (Err(e.clone()), 1), "{e}");
        }
    }

    #[test]
    fn a_429_waits_the_advertised_reset_capped_and_a_default_without_one() {
        let p = RetryPolicy::default();
        let wait = |ms| retry_wait(&ApiError::RateLimited { retry_after_ms: ms }, &p);
        assert_eq!(wait(300), Some(Duration::from_millis(300)));
        assert_eq!(wait(60_000), Some(p.max_rate_limit_wait));
        assert_eq!(wait(0), Some(p.default_rate_limit_wait));
        assert_eq!(retry_wait(&rejected(502), &p), Some(p.server_error_backoff));
    }
}
