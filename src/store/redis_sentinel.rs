//! Following a Sentinel-managed master across failovers.
//!
//! A connection to the master is dropped (so the next [`super::RedisHandle::conn`] asks the
//! sentinels again) when either
//! - a reply shows the master is gone or demoted (I/O error, or `READONLY` from a replica), or
//! - the sentinels name another master. This matters because a master that was failed over while
//!   it was cut off, or by `SENTINEL FAILOVER`, keeps accepting writes until a sentinel turns it
//!   into a replica (about 8 s later), and those writes would then be thrown away. So a watcher
//!   asks a sentinel for the master's address every [`WATCH_PERIOD`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::sentinel::SentinelClient;
use redis::{AsyncConnectionConfig, ConnectionAddr};
use tokio::sync::Mutex;

/// How often the watcher asks a sentinel where the master is.
pub const WATCH_PERIOD: Duration = Duration::from_secs(1);

/// The sentinels, and the master the current connection talks to.
pub struct Sentinels {
    /// Behind a mutex: asking the sentinels needs `&mut`.
    pub client: Mutex<SentinelClient>,
    pub master_name: String,
    in_use: std::sync::Mutex<Option<Arc<MasterInUse>>>,
    watching: AtomicBool,
}

/// The master one connection was made to; `lost` is set once it should no longer be used.
pub struct MasterInUse {
    addr: String,
    lost: AtomicBool,
}

impl MasterInUse {
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    pub fn mark_lost(&self) {
        self.lost.store(true, Ordering::Relaxed);
    }
}

impl Sentinels {
    pub fn new(client: SentinelClient, master_name: String) -> Self {
        Sentinels {
            client: Mutex::new(client),
            master_name,
            in_use: std::sync::Mutex::new(None),
            watching: AtomicBool::new(false),
        }
    }

    /// Records that the connection now goes to `master` (as the sentinels named it) and returns
    /// the flag that connection carries.
    pub fn now_using(&self, master: &ConnectionAddr) -> Arc<MasterInUse> {
        let m = Arc::new(MasterInUse {
            addr: address(master),
            lost: AtomicBool::new(false),
        });
        if let Ok(mut slot) = self.in_use.lock() {
            *slot = Some(Arc::clone(&m));
        }
        m
    }

    /// Starts the watcher once; it stops when the last handle on `me` is dropped (the watcher
    /// holds it weakly, so it needs nothing of the connector that owns it).
    pub fn start_watching(me: &Arc<Sentinels>, timeout: Duration) {
        if me.watching.swap(true, Ordering::Relaxed) {
            return;
        }
        tokio::spawn(watch(Arc::downgrade(me), timeout));
    }
}

/// `host:port` as the sentinels report it.
fn address(a: &ConnectionAddr) -> String {
    match a {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            format!("{host}:{port}")
        }
        other => format!("{other}"),
    }
}

async fn watch(sentinels: Weak<Sentinels>, timeout: Duration) {
    let mut sentinel: Option<MultiplexedConnection> = None;
    loop {
        tokio::time::sleep(WATCH_PERIOD).await;
        let Some(s) = sentinels.upgrade() else {
            return;
        };
        let in_use = s.in_use.lock().ok().and_then(|g| g.clone());
        let Some(in_use) = in_use.filter(|m| !m.is_lost()) else {
            continue;
        };
        if sentinel.is_none() {
            let client = s.client.lock().await.async_get_sentinel_client().await;
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(timeout)
                .set_response_timeout(timeout);
            sentinel = match client {
                Ok(cl) => cl
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .ok(),
                Err(_) => None,
            };
        }
        let Some(conn) = sentinel.as_mut() else {
            continue;
        };
        let named: redis::RedisResult<Option<(String, u16)>> = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(&s.master_name)
            .query_async(conn)
            .await;
        match named {
            Ok(Some((host, port))) if format!("{host}:{port}") != in_use.addr => {
                tracing::warn!(
                    master = %s.master_name,
                    from = %in_use.addr,
                    to = %format!("{host}:{port}"),
                    "the sentinels name another Redis master: reconnecting"
                );
                in_use.mark_lost();
            }
            Ok(_) => {}
            // Another sentinel may answer next time.
            Err(_) => sentinel = None,
        }
    }
}
