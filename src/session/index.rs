//! Which sessions an identity provider's session opened, so that the IdP's logout (OIDC
//! Back-Channel Logout, a SAML LogoutRequest) ends them at once on every replica, instead of at
//! their next request.
//!
//! Two keys per signed-in session, both scoped to the IdP: its IdP session (`sid` claim of the ID
//! token, SAML `SessionIndex`) and its subject (`sub`, SAML NameID). Each key holds the set of
//! gateway session ids. A logout *takes* the set (read and delete in one step, so two replicas
//! receiving the same logout do not both act on it) and the caller deletes those session records.
//!
//! In memory for one process; in Redis beside the sessions for several (a set per key, `MULTI`
//! for the take, an expiry at the sessions' absolute lifetime so Redis forgets keys with them).
//! On a single Redis server a sign-in's entries are written with its session record, by the
//! session store, in one round trip ([`IndexOnCreate`]).

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

use super::Store;
use crate::clock::UnixTime;
use crate::identity::IdpId;
use crate::store::{REDIS_PREFIX, RedisHandle};

/// What an IdP names when it ends sessions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IndexKey {
    /// The IdP's session: OIDC `sid`, SAML `SessionIndex`.
    Sid(String),
    /// The person at the IdP: OIDC `sub`, SAML NameID.
    Sub(String),
}

impl IndexKey {
    fn name(&self, idp: &IdpId) -> String {
        // The IdP id is a config name (letters, digits, '-', '_'); the value is the IdP's own
        // string, last, so no value can reach into another IdP's keys.
        match self {
            IndexKey::Sid(v) => format!("sidx:{idp}:sid:{v}"),
            IndexKey::Sub(v) => format!("sidx:{idp}:sub:{v}"),
        }
    }
}

/// Index entries for a session about to be created, to be stored with its record in one Redis
/// round trip (issue 15: a sign-in's session `SET` and its index pipeline were two). The sign-in
/// sets them around `Session::save` ([`SessionIndex::on_create`], [`with_index_on_create`]);
/// the Redis session store writes them when it creates the record (`index_on_create`) and says
/// so ([`IndexOnCreate::written`]). Whenever it did not (the save was not a create), the sign-in
/// adds them itself, so a session is never left unindexed.
#[derive(Debug)]
pub struct IndexOnCreate {
    /// The index keys, prefixed as in Redis.
    names: Vec<String>,
    /// Their expiry (`EXPIREAT`, seconds).
    expire_at: UnixTime,
    written: AtomicBool,
}

impl IndexOnCreate {
    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn expire_at(&self) -> UnixTime {
        self.expire_at
    }

    /// Whether the store wrote these entries with the record it created.
    pub fn written(&self) -> bool {
        self.written.load(Ordering::Acquire)
    }

    pub(super) fn mark_written(&self) {
        self.written.store(true, Ordering::Release);
    }
}

tokio::task_local! {
    static INDEX_ON_CREATE: Arc<IndexOnCreate>;
}

/// Runs `save` (a `Session::save`) with `entries` offered to the store's `create`.
pub async fn with_index_on_create<F: Future>(entries: Arc<IndexOnCreate>, save: F) -> F::Output {
    INDEX_ON_CREATE.scope(entries, save).await
}

/// The entries offered to a `create` running inside [`with_index_on_create`].
pub(super) fn index_on_create() -> Option<Arc<IndexOnCreate>> {
    INDEX_ON_CREATE.try_with(Arc::clone).ok()
}

/// Above this many keys the memory index drops expired ones on insert.
const SWEEP_AT: usize = 10_000;

#[derive(Clone)]
pub enum SessionIndex {
    Memory(Arc<Mutex<MemoryIndex>>),
    Redis { handle: RedisHandle, prefix: String },
}

impl std::fmt::Debug for SessionIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionIndex::Memory(_) => f.write_str("SessionIndex::Memory"),
            SessionIndex::Redis { .. } => f.write_str("SessionIndex::Redis"),
        }
    }
}

#[derive(Default)]
pub struct MemoryIndex {
    /// key -> (expiry, session ids)
    sets: HashMap<String, (UnixTime, BTreeSet<String>)>,
    swept_at: Option<UnixTime>,
}

impl SessionIndex {
    /// The index for `store`: in the same Redis when the sessions are there, else in memory.
    pub fn beside(store: &Store) -> Self {
        match store {
            Store::Redis(s) => SessionIndex::Redis {
                handle: s.handle().clone(),
                prefix: REDIS_PREFIX.to_owned(),
            },
            Store::Memory(_) => SessionIndex::Memory(Arc::default()),
        }
    }

    /// The entries [`Self::add`] would write for a session opened by `idp` under `keys`, for the
    /// Redis session store to write with the record it creates. `None` where that cannot be one
    /// step: an index in memory, or a Redis cluster (the keys may live in different slots).
    pub fn on_create(
        &self,
        idp: &IdpId,
        keys: &[IndexKey],
        until: UnixTime,
        now: UnixTime,
    ) -> Option<Arc<IndexOnCreate>> {
        match self {
            SessionIndex::Redis { handle, prefix } if !handle.is_cluster() => {
                Some(Arc::new(IndexOnCreate {
                    names: keys
                        .iter()
                        .map(|k| format!("{prefix}{}", k.name(idp)))
                        .collect(),
                    expire_at: until.max(now + 1),
                    written: AtomicBool::new(false),
                }))
            }
            _ => None,
        }
    }

    /// Records that session `session_id` was opened by `idp` under each of `keys`, until `until`
    /// (the session's absolute end; a later sign-in under the same key extends it).
    pub async fn add(
        &self,
        idp: &IdpId,
        keys: &[IndexKey],
        session_id: &str,
        until: UnixTime,
        now: UnixTime,
    ) -> Result<(), String> {
        match self {
            SessionIndex::Memory(m) => {
                let mut m = m.lock();
                if m.sets.len() >= SWEEP_AT && m.swept_at != Some(now) {
                    m.sets.retain(|_, (exp, _)| *exp > now);
                    m.swept_at = Some(now);
                }
                for k in keys {
                    let slot = m.sets.entry(k.name(idp)).or_default();
                    if slot.0 <= now {
                        slot.1.clear();
                    }
                    slot.0 = slot.0.max(until);
                    slot.1.insert(session_id.to_owned());
                }
                Ok(())
            }
            SessionIndex::Redis { handle, prefix } => {
                let mut conn = handle.conn().await?;
                // Each SADD and its EXPIREAT stand together (a failure refuses the sign-in).
                // Every sign-in sets `until` = its time + the absolute lifetime, so the newest
                // member always sets the latest expiry. One pipeline for every key (one round
                // trip per sign-in, issue 15), except in a cluster: there the keys may live in
                // different slots and a pipeline across slots is refused, so one per key.
                let per_pipeline = if handle.is_cluster() {
                    1
                } else {
                    keys.len().max(1)
                };
                for group in keys.chunks(per_pipeline) {
                    let mut pipe = redis::pipe();
                    for k in group {
                        let name = format!("{prefix}{}", k.name(idp));
                        pipe.sadd(&name, session_id).ignore();
                        pipe.cmd("EXPIREAT")
                            .arg(&name)
                            .arg(until.max(now + 1))
                            .ignore();
                    }
                    pipe.query_async::<()>(&mut conn)
                        .await
                        .map_err(|e| format!("redis session index: {:?}", e.kind()))?;
                }
                Ok(())
            }
        }
    }

    /// Takes (reads and forgets, at once) the sessions `idp` opened under `key`.
    pub async fn take(
        &self,
        idp: &IdpId,
        key: &IndexKey,
        now: UnixTime,
    ) -> Result<Vec<String>, String> {
        match self {
            SessionIndex::Memory(m) => Ok(m
                .lock()
                .sets
                .remove(&key.name(idp))
                .filter(|(exp, _)| *exp > now)
                .map(|(_, ids)| ids.into_iter().collect())
                .unwrap_or_default()),
            SessionIndex::Redis { handle, prefix } => {
                let mut conn = handle.conn().await?;
                let name = format!("{prefix}{}", key.name(idp));
                // One key, so MULTI is fine in a cluster too: read and delete at once.
                let (ids, _): (Vec<String>, i64) = redis::pipe()
                    .atomic()
                    .smembers(&name)
                    .del(&name)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| format!("redis session index: {:?}", e.kind()))?;
                Ok(ids)
            }
        }
    }
}

/// Deletes the session records `ids` from `store` (ids that no longer exist are skipped);
/// returns how many ids were valid and deleted.
pub async fn end_sessions(store: &Store, ids: &[String]) -> Result<usize, String> {
    use tower_sessions::SessionStore;
    let mut ended = 0;
    for raw in ids {
        let Ok(id) = raw.parse::<tower_sessions::session::Id>() else {
            continue;
        };
        store.delete(&id).await.map_err(|e| e.to_string())?;
        ended += 1;
    }
    Ok(ended)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idp() -> IdpId {
        IdpId::new("nam")
    }

    #[tokio::test]
    async fn a_take_returns_every_session_of_the_key_once() {
        let ix = SessionIndex::Memory(Arc::default());
        let keys = [IndexKey::Sid("s1".into()), IndexKey::Sub("ada".into())];
        ix.add(&idp(), &keys, "a", 1000, 0).await.unwrap();
        ix.add(&idp(), &[IndexKey::Sub("ada".into())], "b", 1000, 0)
            .await
            .unwrap();
        let mut by_sub = ix
            .take(&idp(), &IndexKey::Sub("ada".into()), 1)
            .await
            .unwrap();
        by_sub.sort();
        assert_eq!(by_sub, ["a", "b"]);
        assert!(
            ix.take(&idp(), &IndexKey::Sub("ada".into()), 1)
                .await
                .unwrap()
                .is_empty(),
            "taken once"
        );
        assert_eq!(
            ix.take(&idp(), &IndexKey::Sid("s1".into()), 1)
                .await
                .unwrap(),
            ["a"]
        );
    }

    #[tokio::test]
    async fn keys_of_another_idp_or_kind_are_not_taken() {
        let ix = SessionIndex::Memory(Arc::default());
        ix.add(&idp(), &[IndexKey::Sid("x".into())], "a", 1000, 0)
            .await
            .unwrap();
        assert!(
            ix.take(&IdpId::new("other"), &IndexKey::Sid("x".into()), 1)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            ix.take(&idp(), &IndexKey::Sub("x".into()), 1)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn an_expired_key_ends_nothing_and_is_not_extended_by_old_members() {
        let ix = SessionIndex::Memory(Arc::default());
        ix.add(&idp(), &[IndexKey::Sub("ada".into())], "old", 100, 0)
            .await
            .unwrap();
        assert!(
            ix.take(&idp(), &IndexKey::Sub("ada".into()), 100)
                .await
                .unwrap()
                .is_empty()
        );
        ix.add(&idp(), &[IndexKey::Sub("ada".into())], "old", 100, 0)
            .await
            .unwrap();
        ix.add(&idp(), &[IndexKey::Sub("ada".into())], "new", 500, 200)
            .await
            .unwrap();
        assert_eq!(
            ix.take(&idp(), &IndexKey::Sub("ada".into()), 201)
                .await
                .unwrap(),
            ["new"],
            "the expired member went with its key"
        );
    }

    #[tokio::test]
    async fn ending_sessions_deletes_their_records_and_skips_junk_ids() {
        use tower_sessions::SessionStore;
        use tower_sessions::session::{Id, Record};
        let store = Store::Memory(crate::session::MemorySessionStore::default());
        let mut rec = Record {
            id: Id::default(),
            data: Default::default(),
            expiry_date: time::OffsetDateTime::now_utc() + time::Duration::minutes(5),
        };
        store.create(&mut rec).await.unwrap();
        let ids = [rec.id.to_string(), "not-an-id".to_owned()];
        assert_eq!(end_sessions(&store, &ids).await.unwrap(), 1);
        assert!(store.load(&rec.id).await.unwrap().is_none());
    }
}
