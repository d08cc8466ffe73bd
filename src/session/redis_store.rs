//! A `tower_sessions::SessionStore` over the `redis` crate.
//!
//! Written here rather than taken from crates.io because the published Redis store for
//! tower-sessions 0.14 is built on `fred`, and we want one `redis` client for sessions, the SAML
//! replay cache and the provisioning queue. Records are JSON under `{prefix}session:{id}` with a
//! Redis expiry at the record's expiry date, so Redis itself forgets idle sessions.

use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use redis::AsyncCommands;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};

use super::browser::SignedInRecord;
use super::decoded::DecodedCache;
use super::index::{IndexOnCreate, index_on_create};
use crate::store::{RedisHandle, describe};

#[derive(Debug, Clone)]
pub struct RedisSessionStore {
    redis: RedisHandle,
    prefix: String,
    /// Records decoded lately, by the exact bytes Redis returned (issue 15): a repeated load of
    /// an unchanged record is a compare and a copy, not a JSON decode.
    decoded: Arc<DecodedCache<Record>>,
    /// The sign-ins read from records lately, by the exact bytes (see [`Self::signed_in`]).
    signed_in: Arc<DecodedCache<SignedInRecord>>,
}

impl RedisSessionStore {
    pub fn new(redis: RedisHandle, prefix: impl Into<String>) -> Self {
        RedisSessionStore {
            redis,
            prefix: prefix.into(),
            decoded: Arc::default(),
            signed_in: Arc::default(),
        }
    }

    pub fn handle(&self) -> &RedisHandle {
        &self.redis
    }

    /// The sign-in stored under `id`, decoded once per record text (issue 15): a repeated read
    /// of an unchanged record is one `GET`, a comparison and two reference counts, with no
    /// record built. `Ok(None)` when there is no record or no readable sign-in in it.
    pub async fn signed_in(&self, id: &Id) -> session_store::Result<Option<SignedInRecord>> {
        let Some(d) = self.stored_text(id).await? else {
            return Ok(None);
        };
        Ok(self
            .signed_in
            .get_or_decode(*id, &d, |t| {
                let record = serde_json::from_str::<Record>(t).map_err(|_| ())?;
                SignedInRecord::from_data(*id, &record.data).ok_or(())
            })
            .ok())
    }

    /// The record stored under `id`, as Redis holds it.
    async fn stored_text(&self, id: &Id) -> session_store::Result<Option<String>> {
        let mut conn = self.redis.conn().await.map_err(Self::backend)?;
        conn.get(self.key(id))
            .await
            .map_err(|e| self.command_failed(&e))
    }

    /// `{prefix}session:{id}`, written piece by piece: every signed-in request builds it, and
    /// `format!` cost about 1,000 instructions of a launch (issue 15).
    fn key(&self, id: &Id) -> String {
        use std::fmt::Write as _;
        let mut key = String::with_capacity(self.prefix.len() + 8 + 22);
        key.push_str(&self.prefix);
        key.push_str("session:");
        // Writing into a `String` cannot fail.
        let _ = write!(key, "{id}");
        key
    }

    fn backend(e: impl std::fmt::Display) -> session_store::Error {
        session_store::Error::Backend(e.to_string())
    }

    fn command_failed(&self, e: &redis::RedisError) -> session_store::Error {
        self.redis.count_error();
        Self::backend(describe(e))
    }

    async fn write(&self, record: &Record, only_if_new: bool) -> session_store::Result<bool> {
        // An update that changes nothing but moves the expiry a moment is not written (issue 15):
        // a sign-in stores its new session itself, and the session layer saves it again at the
        // end of the request with the expiry its idle timeout gives at that instant. Comparing
        // the decoded record also spares the encoding. Skipping keeps XX's promise too: nothing
        // is written back after a logout deleted the record.
        if !only_if_new
            && self
                .decoded
                .holds_where(&record.id, |seen| unchanged_but_for_a_moment(seen, record))
        {
            return Ok(true);
        }
        let data = serde_json::to_string(record)
            .map_err(|e| session_store::Error::Encode(e.to_string()))?;
        let expire_at_ms = record.expiry_date.unix_timestamp_nanos() / 1_000_000;
        let mut conn = self.redis.conn().await.map_err(Self::backend)?;
        let stored = match only_if_new.then(index_on_create).flatten() {
            // A new sign-in's record and its session-index entries: one round trip (issue 15).
            Some(entries) => {
                self.create_indexed(&mut conn, record, &data, expire_at_ms as i64, &entries)
                    .await?
            }
            None => {
                let mut cmd = redis::cmd("SET");
                cmd.arg(self.key(&record.id))
                    .arg(&data)
                    .arg("PXAT")
                    .arg(expire_at_ms as i64);
                // NX for a new record; XX for an update, so that a request still in flight when
                // a logout deleted its session (issue 14: back-channel logout) cannot write the
                // session back.
                cmd.arg(if only_if_new { "NX" } else { "XX" });
                let reply: Option<String> = cmd
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| self.command_failed(&e))?;
                reply.is_some()
            }
        };
        if stored {
            // The next load of this record gets these very bytes back, unless it changes.
            self.decoded.remember(record.id, data, record.clone());
        }
        Ok(stored)
    }

    /// `SET NX` of the record and, only when it was stored, the index entries (a script, so an
    /// id that collided indexes nothing).
    async fn create_indexed(
        &self,
        conn: &mut crate::store::RedisConn,
        record: &Record,
        data: &str,
        expire_at_ms: i64,
        entries: &IndexOnCreate,
    ) -> session_store::Result<bool> {
        let mut call = CREATE_INDEXED.prepare_invoke();
        call.key(self.key(&record.id));
        for name in entries.names() {
            call.key(name);
        }
        call.arg(data)
            .arg(expire_at_ms)
            .arg(record.id.to_string())
            .arg(entries.expire_at());
        let created: i64 = call
            .invoke_async(conn)
            .await
            .map_err(|e| self.command_failed(&e))?;
        if created == 1 {
            entries.mark_written();
        }
        Ok(created == 1)
    }
}

/// KEYS[1]: the record's key; KEYS[2..]: index keys. ARGV: the record, its expiry (ms), the
/// session id, the index keys' expiry (s). 1 when the record was new and stored, else 0.
static CREATE_INDEXED: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if not redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2], 'NX') then
  return 0
end
for i = 2, #KEYS do
  redis.call('SADD', KEYS[i], ARGV[3])
  redis.call('EXPIREAT', KEYS[i], ARGV[4])
end
return 1
",
    )
});

/// How far a save may move a record's expiry without being written: Redis then forgets an idle
/// session at most this much before the idle timeout says, against one SET per sign-in saved.
const EXPIRY_SLACK: time::Duration = time::Duration::seconds(5);

/// Whether `now` is the record last read or written under its id (`seen`) but for an expiry
/// within [`EXPIRY_SLACK`].
fn unchanged_but_for_a_moment(seen: &Record, now: &Record) -> bool {
    (now.expiry_date - seen.expiry_date).abs() < EXPIRY_SLACK && seen.data == now.data
}

#[async_trait]
impl SessionStore for RedisSessionStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        // SET NX: an id collision (astronomically unlikely) gets a fresh id instead of
        // overwriting another user's session.
        for _ in 0..8 {
            if self.write(record, true).await? {
                return Ok(());
            }
            record.id = Id::default();
        }
        Err(session_store::Error::Backend(
            "could not allocate a unique session id".into(),
        ))
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        self.write(record, false).await.map(|_| ())
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let Some(d) = self.stored_text(id).await? else {
            return Ok(None);
        };
        match self
            .decoded
            .get_or_decode(*id, &d, |t| serde_json::from_str::<Record>(t))
        {
            Ok(record) => Ok(Some(record)),
            // A record this version cannot read (another version's format, a hand edit) is no
            // session: the browser signs in again instead of getting an error page on every
            // request until the record expires. Not serde's message: it may quote a value.
            Err(e) => {
                tracing::info!(
                    category = ?e.classify(),
                    column = e.column(),
                    "a session record could not be read; treated as no session"
                );
                Ok(None)
            }
        }
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        self.decoded.forget(id);
        self.signed_in.forget(id);
        let mut conn = self.redis.conn().await.map_err(Self::backend)?;
        let _: i64 = conn
            .del(self.key(id))
            .await
            .map_err(|e| self.command_failed(&e))?;
        Ok(())
    }
}
