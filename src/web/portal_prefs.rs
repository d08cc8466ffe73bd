//! What the portal remembers per person: the stores they pinned and the ones they opened last.
//!
//! Kept beside the sessions (memory for one process, the sessions' Redis for several replicas),
//! so every replica shows the same order, and keyed by IdP and subject rather than by session,
//! so a pin survives signing out. It decides nothing: a pinned store the person has lost access
//! to is simply not shown (the portal lists grants first, then orders them).
//!
//! Recording a launch is on the launch's hot path, so it costs no read: in Redis the recently
//! opened stores are a list beside the record (`LREM`, `LPUSH`, `LTRIM`, `EXPIRE`, pipelined), and
//! the launches of a moment (`OPENED_WINDOW`) are coalesced into one pipeline per person, sent by
//! one task (issue 15: a `GET` and a `SET` per launch, in a task of its own, cost the Redis launch
//! about a third of its throughput). In memory the record is changed in place.

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
    Redis(RedisHandle, Arc<OpenedQueue>),
}

/// Launches waiting to be written to Redis, in the order they happened.
#[derive(Default)]
pub struct OpenedQueue {
    /// (person, store): the person as [`person_name`] gives it, hashed by the writer.
    pending: Mutex<Vec<(String, String)>>,
    /// One writer at a time, so a person's launches reach Redis in order.
    writing: tokio::sync::Mutex<()>,
}

/// A moment's launches waiting beyond this many are dropped (and logged): what is lost is an
/// ordering on the portal, and memory stays bounded if Redis stalls.
const MAX_PENDING_OPENED: usize = 10_000;

/// How long the first launch of a batch waits for others to join it before the batch is written.
/// A person opening stores in a burst costs one pipeline per window instead of one per launch
/// (issue 15: the pipeline was a second Redis round trip per launch); the portal, seen again only
/// after the storefront, shows the order this much later. A process stopping within the window
/// loses that ordering, as a full queue does.
const OPENED_WINDOW: std::time::Duration = std::time::Duration::from_millis(250);

#[derive(Default)]
pub struct MemoryPrefs {
    entries: HashMap<String, (u64, Prefs)>,
    writes: u64,
}

impl std::fmt::Debug for PrefsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PrefsStore::Memory(_) => f.write_str("PrefsStore::Memory"),
            PrefsStore::Redis(..) => f.write_str("PrefsStore::Redis"),
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The key of one person's record: a hash, so a subject (an email, a DN) is never a Redis key.
fn person_key(id: &Identity) -> String {
    person_key_of(&person_name(id))
}

/// What identifies a person to [`person_key`]: the IdP and the subject, NUL-separated. The
/// launch queues this and the writer hashes it once per person and batch.
fn person_name(id: &Identity) -> String {
    let (idp, subject) = (id.idp.as_str(), id.subject.as_str());
    let mut name = String::with_capacity(idp.len() + 1 + subject.len());
    name.push_str(idp);
    name.push('\0');
    name.push_str(subject);
    name
}

fn person_key_of(name: &str) -> String {
    let digest = Sha256::digest(name.as_bytes());
    let mut key = String::with_capacity(store::REDIS_PREFIX.len() + 7 + 2 * digest.len());
    key.push_str(store::REDIS_PREFIX);
    key.push_str("portal:");
    for b in digest {
        key.push(char::from(HEX[usize::from(b >> 4)]));
        key.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    key
}

/// The Redis list of a person's recently opened stores, most recent first, beside their record.
fn recent_key(record_key: &str) -> String {
    // The record's key as the hash tag: in a Redis cluster the list lives in the record's slot,
    // so reading both is one pipeline on one node (a pipeline across slots is refused there).
    format!("{{{record_key}}}:recent")
}

/// A moment's launches (person key, store; oldest first) reduced to what the recent lists
/// need: per person, the stores to move to the front, oldest first, each once (at the place of
/// its last opening), at most [`MAX_RECENT`].
fn coalesce(opened: &[(String, String)]) -> Vec<(&str, Vec<&str>)> {
    let mut by_person: Vec<(&str, Vec<&str>)> = Vec::new();
    for (person, store) in opened {
        let at = match by_person.iter().position(|(p, _)| p == person) {
            Some(i) => i,
            None => {
                by_person.push((person, Vec::new()));
                by_person.len() - 1
            }
        };
        let stores = &mut by_person[at].1;
        stores.retain(|s| s != store);
        stores.push(store);
    }
    for (_, stores) in &mut by_person {
        // Only the last MAX_RECENT can stay on the list.
        let keep_from = stores.len().saturating_sub(MAX_RECENT);
        stores.drain(..keep_from);
    }
    by_person
}

/// The pipelines that record `opened` (person names, see [`person_name`], and stores; see
/// [`coalesce`]), one per person (one key, so one
/// cluster slot): each store is moved to the front of the person's list (`LREM`, then one
/// `LPUSH`, which pushes its arguments to the front in turn, so the last one opened ends first),
/// the list cut to [`MAX_RECENT`] and its expiry renewed. No read: the result does not depend on
/// what the list held.
fn recent_pipelines(opened: &[(String, String)]) -> Vec<redis::Pipeline> {
    let mut pipes = Vec::new();
    for (person, stores) in coalesce(opened) {
        let mut pipe = redis::pipe();
        let key = recent_key(&person_key_of(person));
        for s in &stores {
            pipe.cmd("LREM").arg(&key).arg(0).arg(*s).ignore();
        }
        pipe.cmd("LPUSH").arg(&key).arg(&stores).ignore();
        pipe.cmd("LTRIM")
            .arg(&key)
            .arg(0)
            .arg(MAX_RECENT as i64 - 1)
            .ignore();
        pipe.cmd("EXPIRE").arg(&key).arg(REDIS_TTL_SECS).ignore();
        pipes.push(pipe);
    }
    pipes
}

impl PrefsStore {
    /// Beside the sessions: in their Redis when they are in Redis, else in this process.
    pub fn beside(sessions: &session::Store) -> Self {
        match sessions {
            session::Store::Redis(s) => PrefsStore::Redis(s.handle().clone(), Arc::default()),
            session::Store::Memory(_) => PrefsStore::Memory(Arc::default()),
        }
    }

    pub async fn get(&self, id: &Identity) -> Result<Prefs, String> {
        let key = person_key(id);
        match self {
            PrefsStore::Memory(m) => Ok(self.memory_get(m, id)),
            PrefsStore::Redis(handle, _) => {
                let mut conn = handle.conn().await?;
                let (raw, recent): (Option<String>, Vec<String>) = redis::pipe()
                    .cmd("GET")
                    .arg(&key)
                    .cmd("LRANGE")
                    .arg(recent_key(&key))
                    .arg(0)
                    .arg(MAX_RECENT as i64 - 1)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| format!("redis GET: {}", store::describe(&e)))?;
                // A record this version cannot read is no preference, not an error page.
                let mut prefs: Prefs = raw
                    .and_then(|r| serde_json::from_str(&r).ok())
                    .unwrap_or_default();
                // Records written before the list existed kept `recent` inside; the list wins
                // once there is one.
                if !recent.is_empty() {
                    prefs.recent = recent;
                }
                Ok(prefs)
            }
        }
    }

    async fn put(&self, id: &Identity, prefs: &Prefs) -> Result<(), String> {
        let key = person_key(id);
        match self {
            PrefsStore::Memory(m) => {
                self.memory_put(m, id, prefs);
                Ok(())
            }
            PrefsStore::Redis(handle, _) => {
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

    /// Puts `store` first among the person's recently opened stores, without holding up the
    /// launch that calls it: in memory at once; for Redis queued, and written by one task with
    /// whatever else was opened meanwhile (a failure only loses the ordering, and is logged).
    pub fn opened(&self, id: &Identity, store: &str) {
        match self {
            PrefsStore::Memory(m) => {
                let mut prefs = self.memory_get(m, id);
                prefs.opened(store);
                self.memory_put(m, id, &prefs);
            }
            PrefsStore::Redis(handle, queue) => {
                let first = {
                    let mut pending = queue.pending.lock();
                    if pending.len() >= MAX_PENDING_OPENED {
                        tracing::info!(
                            "too many launches waiting to be recorded as recently opened; one dropped"
                        );
                        return;
                    }
                    pending.push((person_name(id), store.to_owned()));
                    pending.len() == 1
                };
                // The first launch of a batch starts its writer; the others join the batch
                // while it waits.
                if first {
                    let handle = handle.clone();
                    let queue = queue.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(OPENED_WINDOW).await;
                        write_opened(&handle, &queue).await
                    });
                }
            }
        }
    }

    fn memory_get(&self, m: &Mutex<MemoryPrefs>, id: &Identity) -> Prefs {
        m.lock()
            .entries
            .get(&person_key(id))
            .map(|(_, p)| p.clone())
            .unwrap_or_default()
    }

    fn memory_put(&self, m: &Mutex<MemoryPrefs>, id: &Identity, prefs: &Prefs) {
        let key = person_key(id);
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

/// Writes the queued launches, batch after batch, until none is left.
async fn write_opened(handle: &RedisHandle, queue: &OpenedQueue) {
    let _one_writer = queue.writing.lock().await;
    let batch = std::mem::take(&mut *queue.pending.lock());
    if batch.is_empty() {
        return;
    }
    let written = match handle.conn().await {
        Ok(conn) => {
            // One pipeline per person (one key, one cluster slot), sent together: a batch of
            // many people is one wait, not one round trip each. A person's order holds, as each
            // has one pipeline per batch and batches are written one at a time.
            let pipes = recent_pipelines(&batch);
            let sent = futures::future::join_all(pipes.iter().map(|pipe| {
                let mut conn = conn.clone();
                async move { pipe.query_async::<()>(&mut conn).await }
            }))
            .await;
            match sent.into_iter().find_map(Result::err) {
                Some(e) => Err(store::describe(&e)),
                None => Ok(()),
            }
        }
        Err(e) => Err(e),
    };
    if let Err(e) = written {
        tracing::info!(error = %e, launches = batch.len(), "could not record recently opened stores");
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
    fn a_moments_launches_coalesce_per_person_in_the_order_of_their_last_opening() {
        let opened: Vec<(String, String)> = [
            ("p1", "a"),
            ("p2", "x"),
            ("p1", "b"),
            ("p1", "a"),
            ("p2", "x"),
            ("p1", "c"),
        ]
        .iter()
        .map(|(p, s)| (p.to_string(), s.to_string()))
        .collect();
        assert_eq!(
            coalesce(&opened),
            [("p1", vec!["b", "a", "c"]), ("p2", vec!["x"])]
        );
        // Pushed to the front oldest first, the list reads c, a, b: as `Prefs::opened` orders it.
        let mut p = Prefs::default();
        for (_, s) in opened.iter().filter(|(p, _)| p == "p1") {
            p.opened(s);
        }
        assert_eq!(p.recent, ["c", "a", "b"]);
        // More than MAX_RECENT: only the last ones are pushed.
        let many: Vec<(String, String)> = ["a", "b", "c", "d", "e", "f"]
            .iter()
            .map(|s| ("p".to_owned(), s.to_string()))
            .collect();
        assert_eq!(coalesce(&many), [("p", vec!["c", "d", "e", "f"])]);
    }

    #[test]
    fn the_person_key_is_a_hex_digest_not_the_subject() {
        let id = Identity {
            subject: "ada@example.com".into(),
            idp: crate::identity::IdpId::new("corp"),
            email: None,
            email_verified: false,
            given_name: None,
            family_name: None,
            name: None,
            groups: vec![],
            roles: vec![],
            attributes: Default::default(),
            auth: Default::default(),
            signed_in_at: 0,
        };
        let key = person_key(&id);
        let hex = key.strip_prefix("storegate:portal:").unwrap();
        assert_eq!(hex.len(), 64);
        assert!(
            hex.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        let mut h = Sha256::new();
        h.update(b"corp\0ada@example.com");
        let want: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, want);
        assert_eq!(recent_key(&key), format!("{{{key}}}:recent"));
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
