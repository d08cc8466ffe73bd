//! The one Redis client of the gateway, on a standalone server, a Sentinel-managed master or a
//! Redis Cluster, shared by sessions, the SAML replay cache, one-time ids and the provisioning
//! queue.
//!
//! Built on the `redis` crate's own support: one `MultiplexedConnection` to a server (replaced by
//! [`RedisHandle::conn`] once a command shows it broken), `SentinelClient` to find the master,
//! `cluster_async::ClusterConnection` for a cluster (it follows MOVED and ASK and refreshes its
//! slot map itself). Callers only see [`RedisConn`], so code written against a
//! standalone server runs unchanged on the other two, provided every multi-key command or script
//! names keys that share one hash tag (one cluster slot).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Cmd, ErrorKind, IntoConnectionInfo, Pipeline, RedisFuture,
    TlsCertificates, Value,
};
use tokio::sync::Mutex;

use super::redis_sentinel::{MasterInUse, Sentinels};
use crate::config::RedisTopology;
use crate::secret::Secret;

/// A lazily connected, self-reconnecting Redis connection shared by every user of Redis.
///
/// The gateway starts even when Redis is down (it answers 503 and `/readyz` is red) and picks the
/// connection up by itself once Redis is back.
#[derive(Clone)]
pub struct RedisHandle {
    connector: Arc<Connector>,
    /// The connection in use: read without a lock by every command (issue 15).
    current: Arc<ArcSwapOption<RedisConn>>,
    /// Held while connecting, so that one request connects and the others wait for it.
    connecting: Arc<Mutex<()>>,
    timeout: Duration,
    /// Failed connection attempts and commands, for `storegate_redis_errors_total`.
    errors: Arc<AtomicU64>,
}

/// How a fresh connection is made.
pub(super) enum Connector {
    Standalone(redis::Client),
    /// Shared with the watcher that follows the master (`redis_sentinel`), which holds it weakly.
    Sentinel(Arc<Sentinels>),
    Cluster(ClusterClient),
}

impl std::fmt::Debug for RedisHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URLs may carry a password.
        f.write_str("RedisHandle")
    }
}

impl RedisHandle {
    /// A standalone server at `url`.
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
        Self::for_topology(
            &RedisTopology::Standalone { url: url.clone() },
            ca_pem,
            timeout,
        )
    }

    /// A handle on `topology`. Nothing is connected yet: the first [`Self::conn`] does that.
    pub fn for_topology(
        topology: &RedisTopology,
        ca_pem: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Self, String> {
        let certs = |root_cert: Vec<u8>| TlsCertificates {
            client_tls: None,
            root_cert: Some(root_cert),
        };
        let connector = match topology {
            RedisTopology::Standalone { url } => {
                let raw = refuse_insecure(url)?;
                match ca_pem {
                    None => redis::Client::open(raw),
                    Some(ca) => redis::Client::build_with_tls(raw, certs(ca)),
                }
                .map(Connector::Standalone)
                .map_err(|e| format!("invalid Redis URL or CA: {:?}", e.kind()))?
            }
            RedisTopology::Sentinel {
                sentinels,
                master,
                username,
                password,
            } => {
                let mut addrs = Vec::with_capacity(sentinels.len());
                let mut sentinel_auth = None;
                for s in sentinels {
                    let info = refuse_insecure(s)?
                        .into_connection_info()
                        .map_err(|e| format!("invalid Redis sentinel URL: {:?}", e.kind()))?;
                    // The crate authenticates to every sentinel alike: the first URL's user and
                    // password are used (config validation keeps the list to one TLS mode).
                    if sentinel_auth.is_none() {
                        sentinel_auth =
                            Some((info.redis.username.clone(), info.redis.password.clone()));
                    }
                    addrs.push(info.addr);
                }
                let tls = topology.uses_tls();
                let mut b =
                    SentinelClientBuilder::new(addrs, master.clone(), SentinelServerType::Master)
                        .map_err(|e| format!("invalid Redis sentinel setup: {:?}", e.kind()))?;
                if let Some((user, pass)) = sentinel_auth {
                    if let Some(u) = user {
                        b = b.set_client_to_sentinel_username(u);
                    }
                    if let Some(p) = pass {
                        b = b.set_client_to_sentinel_password(p);
                    }
                }
                if let Some(u) = username {
                    b = b.set_client_to_redis_username(u.clone());
                }
                if let Some(p) = password {
                    b = b.set_client_to_redis_password(p.expose().to_owned());
                }
                if tls {
                    // The master the sentinels name is reached like the sentinels: TLS, verified.
                    b = b.set_client_to_redis_tls_mode(redis::TlsMode::Secure);
                    if let Some(ca) = ca_pem {
                        b = b
                            .set_client_to_redis_certificates(certs(ca.clone()))
                            .set_client_to_sentinel_certificates(certs(ca));
                    }
                }
                let client = b
                    .build()
                    .map_err(|e| format!("invalid Redis sentinel setup: {}", describe(&e)))?;
                Connector::Sentinel(Arc::new(Sentinels::new(client, master.clone())))
            }
            RedisTopology::Cluster { nodes } => {
                let mut urls = Vec::with_capacity(nodes.len());
                for n in nodes {
                    urls.push(refuse_insecure(n)?.to_owned());
                }
                let mut b = ClusterClient::builder(urls)
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    // Redirects (MOVED, ASK) count as retries in the crate, so some are needed;
                    // waits stay short so a request during an outage still fails within ~timeout.
                    .retries(3)
                    .min_retry_wait(10)
                    .max_retry_wait(100);
                if let Some(ca) = ca_pem {
                    b = b.certs(certs(ca));
                }
                Connector::Cluster(
                    b.build()
                        .map_err(|e| format!("invalid Redis cluster setup: {}", describe(&e)))?,
                )
            }
        };
        Ok(RedisHandle {
            connector: Arc::new(connector),
            current: Arc::new(ArcSwapOption::empty()),
            connecting: Arc::new(Mutex::new(())),
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

    /// Whether this is a Redis Cluster, where one pipeline must not span keys of several slots.
    pub fn is_cluster(&self) -> bool {
        matches!(&*self.connector, Connector::Cluster(_))
    }

    /// The shared connection, connecting first if there is none, if a command found it broken,
    /// or, with Sentinel, if the master it reached has failed or stepped down since.
    pub async fn conn(&self) -> Result<RedisConn, String> {
        if let Some(c) = self.usable() {
            return Ok(c);
        }
        let _connecting = self.connecting.lock().await;
        // Another request may have connected while this one waited.
        if let Some(c) = self.usable() {
            return Ok(c);
        }
        let c = tokio::time::timeout(self.timeout * 2, self.connect())
            .await
            .map_err(|_| "Redis did not answer in time".to_owned())
            .and_then(|r| r)
            .inspect_err(|_| self.count_error())?;
        self.current.store(Some(Arc::new(c.clone())));
        Ok(c)
    }

    /// The connection in use, unless a command has shown it broken (or, with Sentinel, its
    /// master lost).
    fn usable(&self) -> Option<RedisConn> {
        self.current
            .load()
            .as_deref()
            .filter(|c| !c.unusable())
            .cloned()
    }

    async fn connect(&self) -> Result<RedisConn, String> {
        // No retries and no background reconnects: a request during an outage fails at once
        // (503), the command that found the connection broken marks it, and the next request
        // connects afresh, so service resumes with the first request after Redis is back. (The
        // crate's ConnectionManager did the same with its retries off, for a second boxed future
        // and a shared-future poll on every command.)
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout);
        match &*self.connector {
            Connector::Standalone(client) => client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map(|c| RedisConn::single(c, None))
                .map_err(|e| format!("cannot connect to Redis: {}", describe(&e))),
            Connector::Sentinel(sentinels) => {
                let client = sentinels
                    .client
                    .lock()
                    .await
                    .async_get_client()
                    .await
                    .map_err(|e| {
                        format!(
                            "cannot find the Redis master through the sentinels: {}",
                            describe(&e)
                        )
                    })?;
                let master = client.get_connection_info().addr.clone();
                let c = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map_err(|e| {
                        format!(
                            "cannot connect to the Redis master the sentinels named: {}",
                            describe(&e)
                        )
                    })?;
                Sentinels::start_watching(sentinels, self.timeout);
                Ok(RedisConn::single(c, Some(sentinels.now_using(&master))))
            }
            Connector::Cluster(client) => client
                .get_async_connection()
                .await
                .map(|c| RedisConn {
                    inner: Inner::Cluster(c),
                    broken: Arc::default(),
                    lost: None,
                })
                .map_err(|e| format!("cannot connect to the Redis cluster: {}", describe(&e))),
        }
    }

    pub async fn ping(&self) -> Result<(), String> {
        let mut c = self.conn().await?;
        let pong: String = redis::cmd("PING").query_async(&mut c).await.map_err(|e| {
            self.count_error();
            format!("Redis PING failed: {}", describe(&e))
        })?;
        if pong != "PONG" {
            return Err(format!("Redis answered PING with {pong}"));
        }
        if let Connector::Cluster(_) = &*self.connector {
            // The crate sends PING to the masters it holds a connection to, and drops the
            // connection of a master that failed: PING alone stays green with a master down.
            // The cluster's own verdict covers that (once its node timeout has passed).
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query_async(&mut c)
                .await
                .map_err(|e| {
                    self.count_error();
                    format!("Redis CLUSTER INFO failed: {}", describe(&e))
                })?;
            let state = info
                .lines()
                .find_map(|l| l.trim().strip_prefix("cluster_state:"))
                .unwrap_or("unknown");
            if state != "ok" {
                return Err(format!(
                    "the Redis cluster reports cluster_state:{state} (a master is down or slots are not covered)"
                ));
            }
        }
        Ok(())
    }
}

fn refuse_insecure(url: &Secret) -> Result<&str, String> {
    let raw = url.expose();
    if raw.contains("#insecure") {
        return Err("a Redis URL asks for `#insecure` (no TLS certificate verification); give the CA with `session.redis_ca_file` instead".into());
    }
    Ok(raw)
}

/// A connection from [`RedisHandle::conn`]: cheap to clone, multiplexed, usable with
/// `redis::cmd`, `AsyncCommands` and `redis::Script` whatever the topology.
#[derive(Clone)]
pub struct RedisConn {
    inner: Inner,
    /// One server or Sentinel: set once a command finds the connection dropped or unusable, so
    /// the handle connects afresh for the next request. A cluster connection reconnects its
    /// nodes itself.
    broken: Arc<AtomicBool>,
    /// Sentinel only: the master this connection reaches, marked lost when a reply shows it is
    /// gone or demoted or the sentinels name another, so the handle asks the sentinels again
    /// instead of reconnecting to the same address.
    lost: Option<Arc<MasterInUse>>,
}

#[derive(Clone)]
enum Inner {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl RedisConn {
    fn single(c: MultiplexedConnection, lost: Option<Arc<MasterInUse>>) -> Self {
        RedisConn {
            inner: Inner::Single(c),
            broken: Arc::default(),
            lost,
        }
    }

    fn unusable(&self) -> bool {
        self.broken.load(Ordering::Relaxed) || self.lost.as_ref().is_some_and(|l| l.is_lost())
    }

    /// After a failover the old master either is unreachable (I/O errors) or, demoted to a
    /// replica, refuses writes with READONLY; either way the sentinels must be asked again.
    fn note<T>(&self, r: &redis::RedisResult<T>) {
        let Err(e) = r else {
            return;
        };
        // What the crate's ConnectionManager reconnected on: the connection is gone.
        if matches!(self.inner, Inner::Single(_)) && (e.is_unrecoverable_error() || e.is_io_error())
        {
            self.broken.store(true, Ordering::Relaxed);
        }
        if let Some(lost) = &self.lost
            && (e.kind() == ErrorKind::ReadOnly
                || e.is_io_error()
                || e.is_connection_dropped()
                || e.is_connection_refusal()
                || e.is_timeout())
        {
            lost.mark_lost();
        }
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let r = match &mut self.inner {
                // The connection's own method, not its boxed `ConnectionLike` future.
                Inner::Single(c) => c.send_packed_command(cmd).await,
                Inner::Cluster(c) => c.req_packed_command(cmd).await,
            };
            self.note(&r);
            r
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let r = match &mut self.inner {
                Inner::Single(c) => c.send_packed_commands(cmd, offset, count).await,
                Inner::Cluster(c) => c.req_packed_commands(cmd, offset, count).await,
            };
            self.note(&r);
            r
        })
    }

    fn get_db(&self) -> i64 {
        match &self.inner {
            Inner::Single(c) => c.get_db(),
            Inner::Cluster(c) => c.get_db(),
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
        // The cause (refused, timed out, an untrusted TLS certificate) is what the administrator
        // acts on. A cause that names a URL is left out: it may hold credentials.
        let mut cause = std::error::Error::source(e);
        while let Some(c) = cause {
            let text = c.to_string();
            if !text.contains("://") && !s.contains(&text) {
                s.push_str(": ");
                s.push_str(&text);
            }
            cause = c.source();
        }
        s.push_str(" (I/O error: is Redis running and reachable, and its certificate trusted?)");
    }
    s
}
