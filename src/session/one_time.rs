//! One-time values shared by every replica: the SAML replay cache (an assertion ID is accepted
//! once, until its NotOnOrAfter) and pending SAML sign-ins (taken exactly once by the ACS).
//!
//! In memory for one process; in Redis for several, where `SET NX PXAT` makes "first one wins"
//! atomic across replicas and Redis forgets each key when it no longer matters.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::RedisHandle;
use crate::clock::UnixTime;

#[derive(Clone)]
pub enum OneTimeStore {
    Memory(Arc<Mutex<HashMap<String, (UnixTime, String)>>>),
    Redis { handle: RedisHandle, prefix: String },
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

impl OneTimeStore {
    pub fn memory() -> Self {
        OneTimeStore::Memory(Arc::new(Mutex::new(HashMap::new())))
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
                if m.len() >= SWEEP_AT {
                    m.retain(|_, (exp, _)| *exp > now);
                }
                match m.get(key) {
                    Some((exp, _)) if *exp > now => Ok(false),
                    _ => {
                        m.insert(key.to_owned(), (until, value.to_owned()));
                        Ok(true)
                    }
                }
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
                if m.len() >= SWEEP_AT {
                    m.retain(|_, (exp, _)| *exp > now);
                }
                m.insert(key.to_owned(), (until, value.to_owned()));
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
}
