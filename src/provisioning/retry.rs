//! Bounded retries for the calls of a step that runs after the queue drained (the B2B step): a
//! 429 waits what the answer asks (`X-Rate-Limit-Time-Reset-Ms` or `Retry-After`, capped by
//! [`Backoff::max`]) or [`Backoff::rate_limited_default`]; a transient failure of an idempotent
//! call backs off like the queue's workers. After [`Backoff::give_up_after`] retries the last
//! error is returned, so a pass always ends; the next pass tries again. [`lookup`] is the
//! retry of the reads before planning.

use std::future::Future;
use std::time::Duration;

use super::queue::Backoff;
use crate::bigcommerce::api::{ApiError, ErrorClass};

/// How to treat a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// 429: wait the hint, or the default when the answer gave none.
    RateLimited(Option<Duration>),
    /// 5xx, timeout, transport failure of a call that is safe to repeat.
    Transient,
    /// Retrying cannot help (a refusal, or a write that may have taken effect).
    Final,
}

/// Runs `f` until it succeeds, fails for good, or `backoff.give_up_after` retries are used up.
pub async fn bounded<T, E, F, Fut>(
    backoff: &Backoff,
    classify: impl Fn(&E) -> Wait,
    f: F,
) -> Result<T, E>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut retries = 0u32;
    loop {
        let e = match f().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let wait = match classify(&e) {
            Wait::Final => return Err(e),
            _ if retries >= backoff.give_up_after => return Err(e),
            Wait::RateLimited(hint) => hint
                .unwrap_or(backoff.rate_limited_default)
                .min(backoff.max),
            Wait::Transient => backoff.after(retries),
        };
        retries += 1;
        tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64, retries, "call failed; retrying");
        tokio::time::sleep(wait).await;
    }
}

/// A B2B Edition error; `idempotent` says whether a call that may have taken effect can be
/// repeated (a create cannot: a second one would be refused as a duplicate).
pub fn b2b_wait(e: &ApiError, idempotent: bool) -> Wait {
    match (e, e.class()) {
        (ApiError::RateLimited { retry_after_ms }, _) => {
            Wait::RateLimited((*retry_after_ms > 0).then(|| Duration::from_millis(*retry_after_ms)))
        }
        (_, ErrorClass::Upstream { retryable: true }) if idempotent => Wait::Transient,
        _ => Wait::Final,
    }
}

/// A BigCommerce Management API error of a read (customer lookups): reads are safe to repeat,
/// so every upstream failure is retried, an answer that could not be read included.
pub fn bc_wait(e: &ApiError) -> Wait {
    match (e, e.class()) {
        (ApiError::RateLimited { retry_after_ms }, _) => {
            Wait::RateLimited((*retry_after_ms > 0).then(|| Duration::from_millis(*retry_after_ms)))
        }
        (_, class) if class.is_upstream() => Wait::Transient,
        _ => Wait::Final,
    }
}

/// A lookup before planning: a 429 waits what the answer asks (uncapped, and never counted: a
/// plan needs the answer, and the quota comes back), an upstream failure backs off up to
/// [`Backoff::give_up_after`] times; a refusal, or the last upstream failure, is returned.
pub async fn lookup<T, F, Fut>(b: &Backoff, f: F) -> Result<T, ApiError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
{
    let mut failures = 0u32;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(ApiError::RateLimited { retry_after_ms }) => {
                let hinted = Duration::from_millis(retry_after_ms);
                tokio::time::sleep(if hinted.is_zero() {
                    b.rate_limited_default
                } else {
                    hinted
                })
                .await;
            }
            Err(e) if e.class().is_upstream() && failures < b.give_up_after => {
                failures += 1;
                tracing::warn!(error = %e, "BigCommerce lookup failed; backing off");
                tokio::time::sleep(b.first.saturating_mul(1 << failures.min(16)).min(b.max)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn quick(give_up_after: u32) -> Backoff {
        Backoff {
            first: Duration::from_millis(1),
            max: Duration::from_millis(2),
            give_up_after,
            rate_limited_default: Duration::from_millis(1),
            dead_letter_after: 50,
        }
    }

    #[tokio::test]
    async fn a_429_is_retried_until_it_succeeds() {
        let calls = AtomicU32::new(0);
        let r: Result<u32, ApiError> = bounded(
            &quick(5),
            |e| b2b_wait(e, false),
            || async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 | 1 => Err(ApiError::RateLimited {
                        retry_after_ms: 60_000,
                    }),
                    n => Ok(n),
                }
            },
        )
        .await;
        assert_eq!(r, Ok(2));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn retries_stop_after_give_up_after_and_return_the_last_error() {
        let calls = AtomicU32::new(0);
        let unavailable = ApiError::Rejected {
            status: 503,
            message: "HTTP 503".into(),
        };
        let r: Result<(), ApiError> = bounded(&quick(2), bc_wait, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(unavailable.clone())
        })
        .await;
        assert_eq!(r, Err(unavailable.clone()));
        assert_eq!(calls.load(Ordering::SeqCst), 3, "one try and two retries");
    }

    #[tokio::test]
    async fn a_create_that_timed_out_is_not_repeated() {
        let calls = AtomicU32::new(0);
        let timeout = ApiError::Timeout {
            store_hash: "s".into(),
        };
        let r: Result<(), ApiError> = bounded(
            &quick(5),
            |e| b2b_wait(e, false),
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(timeout.clone())
            },
        )
        .await;
        assert_eq!(r, Err(timeout.clone()));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_lookup_retries_upstream_failures_and_returns_a_refusal_at_once() {
        let calls = AtomicU32::new(0);
        let r: Result<u32, ApiError> = lookup(&quick(5), || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 => Err(ApiError::Unexpected {
                    detail: "bad JSON".into(),
                }),
                1 => Err(ApiError::Unreachable {
                    store_hash: "s".into(),
                    detail: "reset".into(),
                }),
                n => Ok(n),
            }
        })
        .await;
        assert_eq!(r, Ok(2));

        let refused = ApiError::Rejected {
            status: 422,
            message: "bad".into(),
        };
        let calls = AtomicU32::new(0);
        let r: Result<(), ApiError> = lookup(&quick(5), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(refused.clone())
        })
        .await;
        assert_eq!(r, Err(refused.clone()));
        assert_eq!(calls.load(Ordering::SeqCst), 1, "a refusal is not retried");
    }
}
