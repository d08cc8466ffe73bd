//! In-memory sessions for a single process (the embedded default).
//!
//! Unlike tower-sessions' `MemoryStore`, expired records are purged, and the number of sessions is
//! capped: every anonymous `/login` creates a session, so without both an unauthenticated client
//! could grow the process without bound. A synchronous lock keeps critical sections short (no await
//! while holding it).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use time::OffsetDateTime;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};

use super::browser::SignedInRecord;

/// Purge expired records after this many creations.
const PURGE_EVERY: u64 = 1024;

#[derive(Debug, Clone)]
pub struct MemorySessionStore {
    inner: Arc<Mutex<Inner>>,
    max_sessions: usize,
}

#[derive(Debug, Default)]
struct Inner {
    records: HashMap<Id, Record>,
    creates: u64,
}

impl Default for MemorySessionStore {
    fn default() -> Self {
        Self::with_capacity_limit(500_000)
    }
}

impl MemorySessionStore {
    pub fn with_capacity_limit(max_sessions: usize) -> Self {
        MemorySessionStore {
            inner: Arc::new(Mutex::new(Inner::default())),
            max_sessions,
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every expired record; returns how many were dropped.
    pub fn purge_expired(&self) -> usize {
        let now = OffsetDateTime::now_utc();
        let mut inner = self.inner.lock();
        let before = inner.records.len();
        inner.records.retain(|_, r| r.expiry_date > now);
        before - inner.records.len()
    }

    /// The sign-in stored under `id`, read in place: no copy of the record (issue 15). A decode
    /// (the first read after the sign-in changed) runs under the store's lock; the decode cache
    /// makes every later read of the same text a comparison.
    pub fn signed_in(&self, id: &Id) -> Option<SignedInRecord> {
        let now = OffsetDateTime::now_utc();
        let inner = self.inner.lock();
        let record = inner.records.get(id).filter(|r| r.expiry_date > now)?;
        SignedInRecord::from_data(*id, &record.data)
    }
}

#[async_trait]
impl SessionStore for MemorySessionStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        let purge = {
            let mut inner = self.inner.lock();
            inner.creates += 1;
            inner.creates.is_multiple_of(PURGE_EVERY) || inner.records.len() >= self.max_sessions
        };
        if purge {
            self.purge_expired();
        }
        let mut inner = self.inner.lock();
        if inner.records.len() >= self.max_sessions {
            return Err(session_store::Error::Backend(format!(
                "the in-memory session store is full ({} sessions); use Redis for this load",
                self.max_sessions
            )));
        }
        while inner.records.contains_key(&record.id) {
            record.id = Id::default();
        }
        inner.records.insert(record.id, record.clone());
        Ok(())
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        // Only an existing record is updated: a request still in flight when a logout deleted
        // its session (issue 14: back-channel logout) cannot write the session back.
        if let Some(slot) = self.inner.lock().records.get_mut(&record.id) {
            *slot = record.clone();
        }
        Ok(())
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let now = OffsetDateTime::now_utc();
        Ok(self
            .inner
            .lock()
            .records
            .get(id)
            .filter(|r| r.expiry_date > now)
            .cloned())
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        self.inner.lock().records.remove(id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(expires_in: time::Duration) -> Record {
        Record {
            id: Id::default(),
            data: Default::default(),
            expiry_date: OffsetDateTime::now_utc() + expires_in,
        }
    }

    #[tokio::test]
    async fn expired_records_are_not_loaded_and_are_purged() {
        let store = MemorySessionStore::default();
        let mut old = record(time::Duration::seconds(-1));
        let mut live = record(time::Duration::minutes(5));
        store.create(&mut old).await.unwrap();
        store.create(&mut live).await.unwrap();
        assert!(store.load(&old.id).await.unwrap().is_none());
        assert!(store.load(&live.id).await.unwrap().is_some());
        assert_eq!(store.purge_expired(), 1);
        assert_eq!(store.len(), 1);
    }

    #[tokio::test]
    async fn the_cap_refuses_new_sessions_once_full_of_live_ones() {
        let store = MemorySessionStore::with_capacity_limit(2);
        for _ in 0..2 {
            store
                .create(&mut record(time::Duration::minutes(5)))
                .await
                .unwrap();
        }
        let err = store
            .create(&mut record(time::Duration::minutes(5)))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("full"), "{err}");
    }

    #[tokio::test]
    async fn a_full_store_makes_room_by_purging_expired_ones() {
        let store = MemorySessionStore::with_capacity_limit(2);
        store
            .create(&mut record(time::Duration::seconds(-1)))
            .await
            .unwrap();
        store
            .create(&mut record(time::Duration::minutes(5)))
            .await
            .unwrap();
        store
            .create(&mut record(time::Duration::minutes(5)))
            .await
            .unwrap();
        assert_eq!(store.len(), 2);
    }
}
