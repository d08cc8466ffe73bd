//! One-time values shared by every replica: the SAML replay cache (an assertion ID is accepted
//! once, until its NotOnOrAfter) and pending SAML sign-ins (taken exactly once by the ACS).
//!
//! In memory for one process; in Redis for several, where `SET NX PXAT` makes "first one wins"
//! atomic across replicas and Redis forgets each key when it no longer matters.
//!
//! The memory store is bounded (issue 10): anonymous `/login` requests each leave a pending entry,
//! so without a cap they could grow the process without limit. When it is full, expired entries
//! go first; if every entry is still live, a new entry is **refused** (the caller answers 503) and
//! none is evicted. Evicting the oldest would be the friendlier choice for pending sign-ins, but
//! the same map holds the SAML replay cache: forgetting a live assertion ID early would let that
//! assertion be accepted a second time, and an attacker who can fill the map could choose when.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::clock::UnixTime;
use crate::store::RedisHandle;

#[derive(Clone)]
pub enum OneTimeStore {
    Memory(Arc<Mutex<Bounded>>),
    Redis { handle: RedisHandle, prefix: String },
}

/// The memory store's entries (`key -> (expiry, value)`) and its bound.
pub struct Bounded {
    entries: HashMap<String, (UnixTime, String)>,
    cap: usize,
    /// When expired entries were last dropped: at most one full sweep a second, so a full map
    /// does not cost every refused insert a scan.
    swept_at: Option<UnixTime>,
}

impl Bounded {
    /// Makes room for one new key: drops expired entries when the map is large, then refuses
    /// when it is still at the cap.
    fn room_for(&mut self, key: &str, now: UnixTime) -> Result<(), String> {
        if self.entries.contains_key(key) {
            return Ok(());
        }
        let large = self.entries.len() >= SWEEP_AT.min(self.cap);
        if large && self.swept_at != Some(now) {
            self.entries.retain(|_, (exp, _)| *exp > now);
            self.swept_at = Some(now);
        }
        if self.entries.len() >= self.cap {
            tracing::warn!(
                entries = self.entries.len(),
                "the in-memory one-time store is full of live entries; refusing a new one"
            );
            return Err(format!(
                "the in-memory one-time store holds {} live entries, its limit: too many sign-ins in progress; retry in a few minutes",
                self.entries.len()
            ));
        }
        Ok(())
    }
}

impl std::fmt::Debug for OneTimeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OneTimeStore::Memory(_) => f.write_str("OneTimeStore::Memory"),
            OneTimeStore::Redis { .. } => f.write_str("OneTimeStore::Redis"),
        }
    }
}

/// Above this many entries the memory store drops expired ones on insert.
const SWEEP_AT: usize = 10_000;
/// The memory store's bound: pending sign-ins live minutes, so this is far more sign-ins in
/// flight than one process serves, at a few hundred bytes each (tens of MB at most).
pub const MEMORY_CAP: usize = 100_000;

impl OneTimeStore {
    pub fn memory() -> Self {
        Self::memory_with_cap(MEMORY_CAP)
    }

    /// A memory store holding at most `cap` entries (tests use a small one).
    pub fn memory_with_cap(cap: usize) -> Self {
        OneTimeStore::Memory(Arc::new(Mutex::new(Bounded {
            entries: HashMap::new(),
            cap,
            swept_at: None,
        })))
    }

    pub fn redis(handle: RedisHandle, prefix: &str) -> Self {
        OneTimeStore::Redis {
            handle,
            prefix: prefix.to_owned(),
        }
    }

    /// Records `key` until `until` (unix seconds). `Ok(true)` the first time, `Ok(false)` when the
    /// key is already recorded and not yet expired (a replay).
    pub async fn claim(&self, key: &str, until: UnixTime, now: UnixTime) -> Result<bool, String> {
        self.put_nx(&format!("replay:{key}"), "1", until, now).await
    }

    /// Stores `value` under `key` until `until`, unless the key exists.
    pub async fn put_nx(
        &self,
        key: &str,
        value: &str,
        until: UnixTime,
        now: UnixTime,
    ) -> Result<bool, String> {
        match self {
            OneTimeStore::Memory(m) => {
                let mut m = m.lock();
                if let Some((exp, _)) = m.entries.get(key)
                    && *exp > now
                {
                    return Ok(false);
                }
                m.room_for(key, now)?;
                m.entries.insert(key.to_owned(), (until, value.to_owned()));
                Ok(true)
            }
            OneTimeStore::Redis { handle, prefix } => {
                let mut conn = handle.conn().await?;
                // PXAT: absolute expiry in ms, so every replica agrees on when the key goes,
                // whatever its own clock; at least one second in the future.
                let at_ms = until.max(now + 1) * 1000;
                let res: Option<String> = redis::cmd("SET")
                    .arg(format!("{prefix}{key}"))
                    .arg(value)
                    .arg("NX")
                    .arg("PXAT")
                    .arg(at_ms)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| format!("redis SET NX: {:?}", e.kind()))?;
                Ok(res.is_some())
            }
        }
    }

    /// Stores `value` under `key` until `until`, replacing any previous value.
    pub async fn set(
        &self,
        key: &str,
        value: &str,
        until: UnixTime,
        now: UnixTime,
    ) -> Result<(), String> {
        match self {
            OneTimeStore::Memory(m) => {
                let mut m = m.lock();
                m.room_for(key, now)?;
                m.entries.insert(key.to_owned(), (until, value.to_owned()));
                Ok(())
            }
            OneTimeStore::Redis { handle, prefix } => {
                let mut conn = handle.conn().await?;
                let at_ms = until.max(now + 1) * 1000;
                let _: Option<String> = redis::cmd("SET")
                    .arg(format!("{prefix}{key}"))
                    .arg(value)
                    .arg("PXAT")
                    .arg(at_ms)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| format!("redis SET: {:?}", e.kind()))?;
                Ok(())
            }
        }
    }

    /// The value under `key`, if any and not expired (left in place).
    pub async fn get(&self, key: &str, now: UnixTime) -> Result<Option<String>, String> {
        match self {
            OneTimeStore::Memory(m) => Ok(m
                .lock()
                .entries
                .get(key)
                .filter(|(exp, _)| *exp > now)
                .map(|(_, v)| v.clone())),
            OneTimeStore::Redis { handle, prefix } => {
                let mut conn = handle.conn().await?;
                redis::cmd("GET")
                    .arg(format!("{prefix}{key}"))
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| format!("redis GET: {:?}", e.kind()))
            }
        }
    }

    /// Removes and returns the value under `key` (at most one caller gets it).
    pub async fn take(&self, key: &str, now: UnixTime) -> Result<Option<String>, String> {
        match self {
            OneTimeStore::Memory(m) => Ok(m
                .lock()
                .entries
                .remove(key)
                .filter(|(exp, _)| *exp > now)
                .map(|(_, v)| v)),
            OneTimeStore::Redis { handle, prefix } => {
                let mut conn = handle.conn().await?;
                redis::cmd("GETDEL")
                    .arg(format!("{prefix}{key}"))
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| format!("redis GETDEL: {:?}", e.kind()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_claims_once_until_expiry() {
        let s = OneTimeStore::memory();
        assert!(s.claim("a", 100, 10).await.unwrap());
        assert!(!s.claim("a", 100, 99).await.unwrap());
        // Expired entries no longer block (the assertion itself is refused as expired by then).
        assert!(s.claim("a", 200, 100).await.unwrap());
    }

    #[tokio::test]
    async fn memory_take_is_one_use() {
        let s = OneTimeStore::memory();
        assert!(s.put_nx("p", "v", 100, 0).await.unwrap());
        assert_eq!(s.take("p", 1).await.unwrap().as_deref(), Some("v"));
        assert_eq!(s.take("p", 1).await.unwrap(), None);
        assert!(s.put_nx("q", "v", 100, 0).await.unwrap());
        assert_eq!(s.take("q", 100).await.unwrap(), None, "expired");
    }

    /// Issue 10: at the cap, expired entries make room; with every entry live, a new key is
    /// refused and no live entry (a replay record above all) is evicted.
    #[tokio::test]
    async fn memory_store_at_its_cap_drops_expired_entries_then_refuses_new_ones() {
        let s = OneTimeStore::memory_with_cap(3);
        assert!(s.put_nx("old", "v", 10, 0).await.unwrap());
        assert!(s.claim("assertion-1", 100, 0).await.unwrap());
        assert!(s.put_nx("p2", "v", 100, 0).await.unwrap());
        // Full; "old" expired at 10: it makes room.
        assert!(s.put_nx("p3", "v", 100, 20).await.unwrap());
        assert_eq!(s.get("old", 20).await.unwrap(), None);
        // Full of live entries: refused, and the replay record and pending entries stay.
        let err = s.put_nx("p4", "v", 100, 21).await.unwrap_err();
        assert!(err.contains("3 live entries"), "{err}");
        assert!(s.claim("assertion-2", 100, 21).await.is_err());
        assert!(s.set("p5", "v", 100, 21).await.is_err());
        assert!(
            !s.claim("assertion-1", 100, 21).await.unwrap(),
            "the replay record survived: the assertion is still refused"
        );
        assert_eq!(s.get("p2", 21).await.unwrap().as_deref(), Some("v"));
        // Replacing a key already held needs no room.
        s.set("p2", "w", 100, 21).await.unwrap();
        // Taking one frees a place.
        assert_eq!(s.take("p3", 22).await.unwrap().as_deref(), Some("v"));
        assert!(s.put_nx("p4", "v", 100, 22).await.unwrap());
    }
}
