//! The store's clock, for `iat`.
//!
//! docs/bigcommerce.md: a login token is valid 30 s and refused when `iat` is in the future; clock
//! skew is the classic cause of "Invalid login". So `iat` is our clock corrected by the store's
//! (`GET /stores/{hash}/v2/time`), as the official Python client's `use_bc_time` does. The offset is
//! cached per store hash and refreshed after a TTL; between refreshes no API call is made.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;

use super::api::{ApiError, StoreTime};
use crate::clock::{SharedClock, UnixTime};

/// Default time between two readings of a store's clock.
pub const DEFAULT_TTL: Duration = Duration::from_secs(600);
/// How long a stale offset may still be used when the store's clock cannot be read.
pub const DEFAULT_MAX_STALE: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy)]
struct Offset {
    /// Store time minus local time, in seconds.
    secs: i64,
    /// Local time when it was measured.
    measured_at: UnixTime,
}

pub struct StoreClock {
    clock: SharedClock,
    ttl: i64,
    max_stale: i64,
    offsets: Mutex<HashMap<String, Offset>>,
}

impl StoreClock {
    pub fn new(clock: SharedClock) -> Self {
        Self::with_ttl(clock, DEFAULT_TTL, DEFAULT_MAX_STALE)
    }

    pub fn with_ttl(clock: SharedClock, ttl: Duration, max_stale: Duration) -> Self {
        StoreClock {
            clock,
            ttl: i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
            max_stale: i64::try_from(max_stale.as_secs()).unwrap_or(i64::MAX),
            offsets: Mutex::new(HashMap::new()),
        }
    }

    /// The store's current time: local now plus the cached offset, re-read from `source` when the
    /// offset is older than the TTL. A failed re-read falls back to an offset younger than
    /// `max_stale`; without one the error is returned (no guessing the store's time).
    pub async fn now(
        &self,
        store_hash: &str,
        source: &dyn StoreTime,
    ) -> Result<UnixTime, ApiError> {
        let local = self.clock.now();
        let cached = self.offsets.lock().get(store_hash).copied();
        if let Some(o) = cached.filter(|o| local - o.measured_at < self.ttl) {
            return Ok(local.saturating_add(o.secs));
        }
        match source.store_time().await {
            Ok(store_time) => {
                let measured_at = self.clock.now();
                let secs = store_time - measured_at;
                self.offsets
                    .lock()
                    .insert(store_hash.to_owned(), Offset { secs, measured_at });
                Ok(measured_at.saturating_add(secs))
            }
            Err(e) => match cached.filter(|o| local - o.measured_at < self.max_stale) {
                Some(o) => {
                    tracing::warn!(store_hash, error = %e, "cannot read the store clock; using the last offset");
                    Ok(local.saturating_add(o.secs))
                }
                None => Err(e),
            },
        }
    }

    /// The cached offset (store minus local, seconds), for `/readyz` and diagnostics.
    pub fn offset(&self, store_hash: &str) -> Option<i64> {
        self.offsets.lock().get(store_hash).map(|o| o.secs)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::clock::{Clock, ManualClock};

    /// A store whose clock runs `offset` seconds from the shared manual clock.
    struct FakeStore {
        clock: ManualClock,
        offset: parking_lot::Mutex<i64>,
        calls: AtomicU32,
        fail: parking_lot::Mutex<bool>,
    }

    #[async_trait]
    impl StoreTime for FakeStore {
        async fn store_time(&self) -> Result<UnixTime, ApiError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if *self.fail.lock() {
                return Err(ApiError::Timeout {
                    store_hash: "h".into(),
                });
            }
            Ok(self.clock.now() + *self.offset.lock())
        }
    }

    fn setup(offset: i64) -> (ManualClock, FakeStore, StoreClock) {
        let clock = ManualClock::at(1_000_000);
        let store = FakeStore {
            clock: clock.clone(),
            offset: parking_lot::Mutex::new(offset),
            calls: AtomicU32::new(0),
            fail: parking_lot::Mutex::new(false),
        };
        let sc = StoreClock::with_ttl(
            Arc::new(clock.clone()),
            Duration::from_secs(600),
            Duration::from_secs(3600),
        );
        (clock, store, sc)
    }

    #[tokio::test]
    async fn store_behind_local_clock_gives_earlier_time() {
        let (_, store, sc) = setup(-45);
        assert_eq!(sc.now("h", &store).await.unwrap(), 1_000_000 - 45);
        assert_eq!(sc.offset("h"), Some(-45));
    }

    #[tokio::test]
    async fn store_ahead_of_local_clock_gives_later_time() {
        let (_, store, sc) = setup(120);
        assert_eq!(sc.now("h", &store).await.unwrap(), 1_000_120);
    }

    #[tokio::test]
    async fn offset_is_reused_within_ttl_and_follows_local_time() {
        let (clock, store, sc) = setup(-45);
        sc.now("h", &store).await.unwrap();
        clock.advance(599);
        *store.offset.lock() = 1000; // not re-read yet
        assert_eq!(sc.now("h", &store).await.unwrap(), 1_000_000 + 599 - 45);
        assert_eq!(store.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn offset_is_refreshed_at_the_ttl() {
        let (clock, store, sc) = setup(-45);
        sc.now("h", &store).await.unwrap();
        clock.advance(600);
        *store.offset.lock() = 7;
        assert_eq!(sc.now("h", &store).await.unwrap(), 1_000_600 + 7);
        assert_eq!(store.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn offsets_are_kept_per_store_hash() {
        let (_, store, sc) = setup(10);
        sc.now("a", &store).await.unwrap();
        *store.offset.lock() = -10;
        assert_eq!(sc.now("b", &store).await.unwrap(), 1_000_000 - 10);
        assert_eq!(sc.offset("a"), Some(10));
        assert_eq!(sc.offset("b"), Some(-10));
    }

    #[tokio::test]
    async fn failed_refresh_uses_a_stale_offset_but_no_offset_is_an_error() {
        let (clock, store, sc) = setup(30);
        *store.fail.lock() = true;
        assert_eq!(
            sc.now("h", &store).await.unwrap_err(),
            ApiError::Timeout {
                store_hash: "h".into()
            }
        );
        *store.fail.lock() = false;
        sc.now("h", &store).await.unwrap();
        *store.fail.lock() = true;
        clock.advance(700);
        assert_eq!(sc.now("h", &store).await.unwrap(), 1_000_700 + 30);
        clock.advance(3000); // 3700 s old: too stale
        assert!(sc.now("h", &store).await.is_err());
    }
}
