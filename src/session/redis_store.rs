//! A `tower_sessions::SessionStore` over the `redis` crate.
//!
//! Written here rather than taken from crates.io because the published Redis store for
//! tower-sessions 0.14 is built on `fred`, and we want one `redis` client for sessions, the SAML
//! replay cache and the provisioning queue. Records are JSON under `{prefix}session:{id}` with a
//! Redis expiry at the record's expiry date, so Redis itself forgets idle sessions.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Mutex;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};

use crate::secret::Secret;

/// A lazily connected, self-reconnecting Redis connection shared by every user of Redis.
///
/// The gateway starts even when Redis is down (it answers 503 and `/readyz` is red) and picks the
/// connection up by itself once Redis is back.
#[derive(Clone)]
pub struct RedisHandle {
    // Boxed behind an Arc: the client is large and every holder clones the handle.
    client: Arc<redis::Client>,
    conn: Arc<Mutex<Option<ConnectionManager>>>,
    timeout: Duration,
    /// Failed connection attempts and commands, for `storegate_redis_errors_total`.
    errors: Arc<AtomicU64>,
}

impl std::fmt::Debug for RedisHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password.
        f.write_str("RedisHandle")
    }
}

impl RedisHandle {
    pub fn new(url: &Secret, timeout: Duration) -> Result<Self, String> {
        Self::with_ca(url, None, timeout)
    }

    /// Like [`Self::new`]; for `rediss://`, `ca_pem` (PEM) replaces the OS trust store as the
    /// roots the server's certificate must chain to. The URL may name an ACL user and password
    /// (`redis://user:password@host:6379/0`); `rediss://` is TLS (rustls, certificate and host
    /// name verified; `#insecure` in the URL turns verification off and is refused here).
    pub fn with_ca(
        url: &Secret,
        ca_pem: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Self, String> {
        let raw = url.expose();
        if raw.contains("#insecure") {
            return Err("the Redis URL asks for `#insecure` (no TLS certificate verification); give the CA with `session.redis_ca_file` instead".into());
        }
        let client = match ca_pem {
            None => redis::Client::open(raw),
            Some(root_cert) => redis::Client::build_with_tls(
                raw,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                },
            ),
        }
        .map_err(|e| format!("invalid Redis URL or CA: {:?}", e.kind()))?;
        Ok(RedisHandle {
            client: Arc::new(client),
            conn: Arc::new(Mutex::new(None)),
            timeout,
            errors: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Redis errors seen so far (connects and commands), for the metrics.
    pub fn errors_total(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Counts one failed Redis command (connection failures are counted by [`Self::conn`]).
    pub fn count_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub async fn conn(&self) -> Result<ConnectionManager, String> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        // No retries inside the manager: each retry there waits a backoff of about a second
        // (the crate's delays are in units of its factor times a 1 s minimum), and every request
        // waiting on the shared reconnect future waited with it: 1.5 s per request while Redis
        // was down. With none, a request during an outage fails at once (503), and the next one
        // starts a fresh reconnect, so service resumes with the first request after Redis is back.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout)
            .set_number_of_retries(0);
        let c = tokio::time::timeout(
            self.timeout * 2,
            ConnectionManager::new_with_config((*self.client).clone(), config),
        )
        .await
        .map_err(|_| "Redis did not answer in time".to_owned())
        .and_then(|r| r.map_err(|e| format!("cannot connect to Redis: {}", describe(&e))))
        .inspect_err(|_| self.count_error())?;
        *guard = Some(c.clone());
        Ok(c)
    }

    pub async fn ping(&self) -> Result<(), String> {
        let mut c = self.conn().await?;
        let pong: String = redis::cmd("PING").query_async(&mut c).await.map_err(|e| {
            self.count_error();
            format!("Redis PING failed: {}", describe(&e))
        })?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(format!("Redis answered PING with {pong}"))
        }
    }
}

/// Redis errors without the URL (it may hold credentials).
pub fn describe(e: &redis::RedisError) -> String {
    let mut s = format!("{:?}", e.kind());
    if let Some(d) = e.detail() {
        s.push_str(": ");
        s.push_str(d);
    }
    if e.is_io_error() {
        s.push_str(" (I/O error: is Redis running and reachable?)");
    }
    s
}

#[derive(Debug, Clone)]
pub struct RedisSessionStore {
    redis: RedisHandle,
    prefix: String,
}

impl RedisSessionStore {
    pub fn new(redis: RedisHandle, prefix: impl Into<String>) -> Self {
        RedisSessionStore {
            redis,
            prefix: prefix.into(),
        }
    }

    pub fn handle(&self) -> &RedisHandle {
        &self.redis
    }

    fn key(&self, id: &Id) -> String {
        format!("{}session:{}", self.prefix, id)
    }

    fn backend(e: impl std::fmt::Display) -> session_store::Error {
        session_store::Error::Backend(e.to_string())
    }

    fn command_failed(&self, e: &redis::RedisError) -> session_store::Error {
        self.redis.count_error();
        Self::backend(describe(e))
    }

    async fn write(&self, record: &Record, only_if_new: bool) -> session_store::Result<bool> {
        let data = serde_json::to_string(record)
            .map_err(|e| session_store::Error::Encode(e.to_string()))?;
        let expire_at_ms = record.expiry_date.unix_timestamp_nanos() / 1_000_000;
        let mut conn = self.redis.conn().await.map_err(Self::backend)?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(&record.id))
            .arg(data)
            .arg("PXAT")
            .arg(expire_at_ms as i64);
        if only_if_new {
            cmd.arg("NX");
        }
        let reply: Option<String> = cmd
            .query_async(&mut conn)
            .await
            .map_err(|e| self.command_failed(&e))?;
        Ok(reply.is_some())
    }
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
        let mut conn = self.redis.conn().await.map_err(Self::backend)?;
        let data: Option<String> = conn
            .get(self.key(id))
            .await
            .map_err(|e| self.command_failed(&e))?;
        match data {
            Some(d) => serde_json::from_str(&d)
                .map(Some)
                .map_err(|e| session_store::Error::Decode(e.to_string())),
            None => Ok(None),
        }
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        let mut conn = self.redis.conn().await.map_err(Self::backend)?;
        let _: i64 = conn
            .del(self.key(id))
            .await
            .map_err(|e| self.command_failed(&e))?;
        Ok(())
    }
}
