//! Server-side sessions: the cookie holds only an opaque id; the data lives in memory (one
//! process) or in Redis (several replicas).

pub mod browser;
pub mod decoded;
pub mod index;
pub mod memory;
pub mod one_time;
pub mod redis_store;

use std::sync::Arc;
use std::time::Duration;

pub use memory::MemorySessionStore;
pub use redis_store::RedisSessionStore;

use crate::config::{SessionBackend, SessionConfig};
use crate::store::{REDIS_PREFIX, RedisHandle};

/// The configured store, as one concrete type for the session layer.
#[derive(Debug, Clone)]
pub enum Store {
    Memory(MemorySessionStore),
    Redis(Box<RedisSessionStore>),
}

impl Store {
    pub fn from_config(cfg: &SessionConfig) -> Result<Self, String> {
        match &cfg.backend {
            SessionBackend::Memory => Ok(Store::Memory(MemorySessionStore::default())),
            SessionBackend::Redis(topology) => {
                let ca = match &cfg.redis_ca_file {
                    Some(p) => Some(std::fs::read(p).map_err(|e| {
                        format!("cannot read session.redis_ca_file {}: {e}", p.display())
                    })?),
                    None => None,
                };
                let handle = RedisHandle::for_topology(topology, ca, Duration::from_secs(2))?;
                Ok(Store::Redis(Box::new(RedisSessionStore::new(
                    handle,
                    REDIS_PREFIX,
                ))))
            }
        }
    }

    /// Readiness: the store answers.
    pub async fn check(&self) -> Result<(), String> {
        match self {
            Store::Memory(_) => Ok(()),
            Store::Redis(s) => s.handle().ping().await,
        }
    }

    /// The sign-in in the record stored under `id`, read without the session layer's copy of
    /// the whole record (issue 15). `Ok(None)` when there is no readable sign-in there: the
    /// caller then reads through the session, which ends or reports it as it always has.
    pub async fn signed_in(
        &self,
        id: &tower_sessions::session::Id,
    ) -> tower_sessions::session_store::Result<Option<browser::SignedInRecord>> {
        match self {
            Store::Memory(s) => Ok(s.signed_in(id)),
            Store::Redis(s) => s.signed_in(id).await,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Store::Memory(_) => "memory",
            Store::Redis(..) => "redis",
        }
    }
}

#[async_trait::async_trait]
impl tower_sessions::SessionStore for Store {
    async fn create(
        &self,
        r: &mut tower_sessions::session::Record,
    ) -> tower_sessions::session_store::Result<()> {
        match self {
            Store::Memory(s) => s.create(r).await,
            Store::Redis(s) => s.create(r).await,
        }
    }
    async fn save(
        &self,
        r: &tower_sessions::session::Record,
    ) -> tower_sessions::session_store::Result<()> {
        match self {
            Store::Memory(s) => s.save(r).await,
            Store::Redis(s) => s.save(r).await,
        }
    }
    async fn load(
        &self,
        id: &tower_sessions::session::Id,
    ) -> tower_sessions::session_store::Result<Option<tower_sessions::session::Record>> {
        match self {
            Store::Memory(s) => s.load(id).await,
            Store::Redis(s) => s.load(id).await,
        }
    }
    async fn delete(
        &self,
        id: &tower_sessions::session::Id,
    ) -> tower_sessions::session_store::Result<()> {
        match self {
            Store::Memory(s) => s.delete(id).await,
            Store::Redis(s) => s.delete(id).await,
        }
    }
}

pub type SharedStore = Arc<Store>;
