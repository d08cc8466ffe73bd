//! Where SCIM resources persist. The service keeps every resource in memory and writes each change
//! through a [`ScimStore`] before answering, so an acknowledged change survives a restart.
//!
//! - [`FileStore`] (the embedded default, `store = "file:DIR"`): one JSON file per resource under
//!   `DIR/users`, `DIR/groups` and `DIR/tombstones`, each written to a temporary file, synced and
//!   renamed over the old one, so a crash leaves either the old or the new resource, never half.
//! - [`MemoryStore`] (`store = "memory"`): nothing persists; tests and demos.
//! - [`super::redis_store::RedisScimStore`] (`store = "redis"`): shared by every replica. Each
//!   replica's in-memory copy is a cache, brought up to date ([`ScimStore::refresh`]) before every
//!   SCIM request and leaver check, and every change is a [`ScimStore::commit`] that only lands
//!   when the replica's copy was current, so two replicas can never both take one userName.
//!
//! Not done: PostgreSQL.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    User,
    Group,
    /// What is left of a deleted user: enough to refuse their sign-in and find their customers.
    Tombstone,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::User, Kind::Group, Kind::Tombstone];

    /// The name used in storage keys and folder names' stead in shared stores.
    pub fn tag(self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::Group => "group",
            Kind::Tombstone => "tombstone",
        }
    }

    pub fn from_tag(tag: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.tag() == tag)
    }

    fn dir(self) -> &'static str {
        match self {
            Kind::User => "users",
            Kind::Group => "groups",
            Kind::Tombstone => "tombstones",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("SCIM store: {0}")]
pub struct StoreError(pub String);

/// One resource written (`Some`) or removed (`None`) by a change.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    pub kind: Kind,
    pub id: String,
    pub value: Option<Value>,
}

/// A point in a shared store's history: which data set (a random epoch, new whenever the shared
/// data starts from nothing, e.g. an emptied Redis) and how many changes it has had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    pub epoch: String,
    pub number: u64,
}

/// What a replica must do to its copy to be current.
#[derive(Debug, Clone, PartialEq)]
pub enum Refresh {
    /// Nothing changed since the revision it holds.
    Current,
    /// Apply these (the latest state of every resource changed since), then it is at `at`.
    Changed { at: Revision, writes: Vec<Write> },
    /// Replace everything: it held no revision, fell behind the change log, or the epoch changed.
    Full {
        at: Revision,
        items: Vec<(Kind, Value)>,
    },
    /// As `Full`, already built into a copy while it was read (a full load from Redis: holding
    /// 100,000 resources as `Value`s at once would cost a replica about 800 MB).
    Loaded { at: Revision, data: super::ScimData },
}

/// The outcome of [`ScimStore::commit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Commit {
    /// Stored; a shared store says which revision the writer's copy is now at.
    Done(Option<Revision>),
    /// Another replica changed something since `seen`: refresh and decide again.
    Stale,
}

#[async_trait]
pub trait ScimStore: Send + Sync {
    /// Every stored resource.
    async fn load(&self) -> Result<Vec<(Kind, Value)>, StoreError>;
    async fn put(&self, kind: Kind, id: &str, resource: &Value) -> Result<(), StoreError>;
    async fn delete(&self, kind: Kind, id: &str) -> Result<(), StoreError>;

    /// Whether other processes write to this store too: then the service does not load it at
    /// start (it may be down; the first request does) and refreshes before every read.
    fn shared(&self) -> bool {
        false
    }

    /// Brings a copy at `seen` up to date. A store only this process writes is always current.
    async fn refresh(&self, _seen: Option<&Revision>) -> Result<Refresh, StoreError> {
        Ok(Refresh::Current)
    }

    /// Stores every write of one change, provided nothing changed since `seen`.
    async fn commit(
        &self,
        _seen: Option<&Revision>,
        writes: &[Write],
    ) -> Result<Commit, StoreError> {
        for w in writes {
            match &w.value {
                Some(v) => self.put(w.kind, &w.id, v).await?,
                None => self.delete(w.kind, &w.id).await?,
            }
        }
        Ok(Commit::Done(None))
    }
}

#[derive(Debug, Default)]
pub struct MemoryStore;

#[async_trait]
impl ScimStore for MemoryStore {
    async fn load(&self) -> Result<Vec<(Kind, Value)>, StoreError> {
        Ok(Vec::new())
    }
    async fn put(&self, _: Kind, _: &str, _: &Value) -> Result<(), StoreError> {
        Ok(())
    }
    async fn delete(&self, _: Kind, _: &str) -> Result<(), StoreError> {
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
}

/// Ids are generated by the service (UUIDs); anything else never names a file.
fn safe_id(id: &str) -> Result<&str, StoreError> {
    if !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        Ok(id)
    } else {
        Err(StoreError(format!("refusing to store an unsafe id {id:?}")))
    }
}

/// Writes `bytes` to `path` atomically: temporary file in the same folder, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("f"),
        uuid::Uuid::new_v4()
    ));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

impl FileStore {
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let dir = dir.into();
        for kind in [Kind::User, Kind::Group, Kind::Tombstone] {
            std::fs::create_dir_all(dir.join(kind.dir()))
                .map_err(|e| StoreError(format!("cannot create {}: {e}", dir.display())))?;
        }
        Ok(FileStore { dir })
    }

    fn path(&self, kind: Kind, id: &str) -> Result<PathBuf, StoreError> {
        Ok(self
            .dir
            .join(kind.dir())
            .join(format!("{}.json", safe_id(id)?)))
    }

    /// Reads every resource synchronously (the reconcile command reads without a server).
    pub fn load_blocking(&self) -> Result<Vec<(Kind, Value)>, StoreError> {
        let mut out = Vec::new();
        for kind in [Kind::User, Kind::Group, Kind::Tombstone] {
            let dir = self.dir.join(kind.dir());
            let entries = std::fs::read_dir(&dir)
                .map_err(|e| StoreError(format!("cannot read {}: {e}", dir.display())))?;
            for entry in entries {
                let entry = entry.map_err(|e| StoreError(e.to_string()))?;
                let p = entry.path();
                if p.extension().and_then(|e| e.to_str()) != Some("json") {
                    continue;
                }
                let text = std::fs::read(&p)
                    .map_err(|e| StoreError(format!("cannot read {}: {e}", p.display())))?;
                let v: Value = serde_json::from_slice(&text)
                    .map_err(|e| StoreError(format!("{} is not JSON: {e}", p.display())))?;
                out.push((kind, v));
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl ScimStore for FileStore {
    async fn load(&self) -> Result<Vec<(Kind, Value)>, StoreError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.load_blocking())
            .await
            .map_err(|e| StoreError(e.to_string()))?
    }

    async fn put(&self, kind: Kind, id: &str, resource: &Value) -> Result<(), StoreError> {
        let path = self.path(kind, id)?;
        let bytes = serde_json::to_vec(resource).map_err(|e| StoreError(e.to_string()))?;
        tokio::task::spawn_blocking(move || write_atomic(&path, &bytes))
            .await
            .map_err(|e| StoreError(e.to_string()))?
            .map_err(|e| StoreError(format!("cannot write: {e}")))
    }

    async fn delete(&self, kind: Kind, id: &str) -> Result<(), StoreError> {
        let path = self.path(kind, id)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError(format!("cannot delete {}: {e}", path.display()))),
        }
    }
}
