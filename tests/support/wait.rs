//! Waiting for an event with a bound, instead of sleeping and hoping it happened: a loaded
//! 2-core machine makes any fixed sleep either too short (flaky) or too long (slow).

use std::future::Future;
use std::time::{Duration, Instant};

/// How often [`until`] looks again.
const POLL: Duration = Duration::from_millis(25);

/// Polls `check` until it holds; panics naming `what` once `within` has passed. Returns how long
/// it took (for messages; never assert on it).
pub async fn until<F, Fut>(what: &str, within: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        if start.elapsed() >= within {
            panic!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}
