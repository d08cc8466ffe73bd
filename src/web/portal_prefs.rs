//! What the portal remembers per person: the stores they pinned and the ones they opened last.
//!
//! Kept beside the sessions (memory for one process, the sessions' Redis for several replicas),
//! so every replica shows the same order, and keyed by IdP and subject rather than by session,
//! so a pin survives signing out. It decides nothing: a pinned store the person has lost access
//! to is simply not shown (the portal lists grants first, then orders them).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::identity::Identity;
use crate::session;
use crate::store::{self, RedisHandle};

/// The most stores one person may pin: more would stop being "first" (and bounds the record).
pub const MAX_PINNED: usize = 12;
/// How many recently opened stores the portal puts first.
pub const MAX_RECENT: usize = 4;
/// How long Redis keeps the preferences of someone who no longer signs in.
const REDIS_TTL_SECS: u64 = 180 * 86_400;
/// The memory store's bound (people, not entries); the oldest-written person goes first.
const MEMORY_CAP: usize = 50_000;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Prefs {
    /// Store ids, in the order they were pinned.
    #[serde(default)]
    pub pinned: Vec<String>,
    /// Store ids, most recently opened first.
    #[serde(default)]
    pub recent: Vec<String>,
}

impl Prefs {
    /// Puts `store` at the front of the recent list.
    pub fn opened(&mut self, store: &str) {
        self.recent.retain(|s| s != store);
        self.recent.insert(0, store.to_owned());
        self.recent.truncate(MAX_RECENT);
    }

    /// Pins or unpins `store`; pinning beyond [`MAX_PINNED`] is refused with a message.
    pub fn pin(&mut self, store: &str, pinned: bool) -> Result<(), String> {
        let had = self.pinned.iter().any(|s| s == store);
        match (pinned, had) {
            (true, true) | (false, false) => Ok(()),
            (false, true) => {
                self.pinned.retain(|s| s != store);
                Ok(())
            }
            (true, false) if self.pinned.len() >= MAX_PINNED => Err(format!(
                "You can pin at most {MAX_PINNED} stores; unpin one first."
            )),
            (true, false) => {
                self.pinned.push(store.to_owned());
                Ok(())
            }
        }
    }
}

#[derive(Clone)]
pub enum PrefsStore {
    Memory(Arc<Mutex<MemoryPrefs>>),
    Redis(RedisHandle),
}

#[derive(Default)]
pub struct MemoryPrefs {
    entries: HashMap<String, (u64, Prefs)>,
    writes: u64,
}

impl std::fmt::Debug for PrefsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PrefsStore::Memory(_) => f.write_str("PrefsStore::Memory"),
            PrefsStore::Redis(_) => f.write_str("PrefsStore::Redis"),
        }
    }
}

/// The key of one person's record: a hash, so a subject (an email, a DN) is never a Redis key.
fn person_key(id: &Identity) -> String {
    let mut h = Sha256::new();
    h.update(id.idp.as_str().as_bytes());
    h.update([0]);
    h.update(id.subject.as_bytes());
    let digest = h.finalize();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}portal:{hex}", store::REDIS_PREFIX)
}

impl PrefsStore {
    /// Beside the sessions: in their Redis when they are in Redis, else in this process.
    pub fn beside(sessions: &session::Store) -> Self {
        match sessions {
            session::Store::Redis(s) => PrefsStore::Redis(s.handle().clone()),
            session::Store::Memory(_) => PrefsStore::Memory(Arc::default()),
        }
    }

    pub async fn get(&self, id: &Identity) -> Result<Prefs, String> {
        let key = person_key(id);
        match self {
            PrefsStore::Memory(m) => Ok(m
                .lock()
                .entries
                .get(&key)
                .map(|(_, p)| p.clone())
                .unwrap_or_default()),
            PrefsStore::Redis(handle) => {
                let mut conn = handle.conn().await?;
                let raw: Option<String> = redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| format!("redis GET: {}", store::describe(&e)))?;
                // A record this version cannot read is no preference, not an error page.
                Ok(raw
                    .and_then(|r| serde_json::from_str(&r).ok())
                    .unwrap_or_default())
            }
        }
    }

    async fn put(&self, id: &Identity, prefs: &Prefs) -> Result<(), String> {
        let key = person_key(id);
        match self {
            PrefsStore::Memory(m) => {
                let mut m = m.lock();
                m.writes += 1;
                let at = m.writes;
                if m.entries.len() >= MEMORY_CAP && !m.entries.contains_key(&key) {
                    let oldest = m
                        .entries
                        .iter()
                        .min_by_key(|(_, (w, _))| *w)
                        .map(|(k, _)| k.clone());
                    if let Some(k) = oldest {
                        m.entries.remove(&k);
                    }
                }
                m.entries.insert(key, (at, prefs.clone()));
                Ok(())
            }
            PrefsStore::Redis(handle) => {
                let value = serde_json::to_string(prefs).map_err(|e| e.to_string())?;
                let mut conn = handle.conn().await?;
                let _: () = redis::cmd("SET")
                    .arg(&key)
                    .arg(value)
                    .arg("EX")
                    .arg(REDIS_TTL_SECS)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| format!("redis SET: {}", store::describe(&e)))?;
                Ok(())
            }
        }
    }

    /// Read, change, write. Two tabs changing the same person's record at once may lose one
    /// change (last write wins): a pin or a recent entry, never an access decision.
    pub async fn update(
        &self,
        id: &Identity,
        change: impl FnOnce(&mut Prefs) -> Result<(), String>,
    ) -> Result<Result<(), String>, String> {
        let mut prefs = self.get(id).await?;
        if let Err(refused) = change(&mut prefs) {
            return Ok(Err(refused));
        }
        self.put(id, &prefs).await?;
        Ok(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_keeps_the_last_four_most_recent_first() {
        let mut p = Prefs::default();
        for s in ["a", "b", "c", "a", "d", "e"] {
            p.opened(s);
        }
        assert_eq!(p.recent, ["e", "d", "a", "c"]);
    }

    #[test]
    fn pinning_is_idempotent_and_bounded() {
        let mut p = Prefs::default();
        p.pin("a", true).unwrap();
        p.pin("a", true).unwrap();
        assert_eq!(p.pinned, ["a"]);
        for i in 1..MAX_PINNED {
            p.pin(&format!("s{i}"), true).unwrap();
        }
        let err = p.pin("one-more", true).unwrap_err();
        assert_eq!(err, "You can pin at most 12 stores; unpin one first.");
        assert_eq!(p.pinned.len(), MAX_PINNED);
        p.pin("a", false).unwrap();
        assert!(!p.pinned.contains(&"a".to_owned()));
        p.pin("one-more", true).unwrap();
    }
}
