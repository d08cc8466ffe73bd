//! The central PostgreSQL sink (issue 13): every chained line also goes to an append-only table
//! `audit_events`, keyed by (writer, seq), besides the file.
//!
//! Why tokio-postgres + refinery rather than sqlx: one table and one insert need no query
//! macros or compile-time database, and the pair builds much lighter.
//!
//! The path of an event: the file writer seals a line and hands a copy to [`Feed::push`], which
//! never waits, so a slow or absent database cannot hold up a sign-in or a launch. The line goes
//! into a bounded channel (10,000 lines); when the channel is full, or while older lines wait in
//! the local spool file, it is appended to the spool instead ([`spool`]: one order for channel
//! and file). One task inserts lines in order: what the channel holds is taken in batches and
//! inserted pipelined; lines it could not store (database away) go to the front of the spool with
//! what the channel still holds; once the channel is empty it replays the spool, in order, and
//! deletes it. Inserts are `ON CONFLICT (writer, seq) DO NOTHING`, so a line sent twice (replayed
//! after an insert whose answer was lost) is stored once. The spool is bounded (`spool_max`);
//! beyond it events are dropped for the table (they stay in the file trail) and counted.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

use super::chain::{Line, parse_line};

pub mod spool;
use spool::Spool;

mod embedded {
    refinery::embed_migrations!("migrations/audit");
}

/// Lines waiting in memory for the insert task; beyond this they go to the spool file.
pub const CHANNEL_CAPACITY: usize = 10_000;
/// Default `audit.spool_max`: 64 MiB of lines, hours of events for a busy gateway.
pub const DEFAULT_SPOOL_MAX: u64 = 64 << 20;
/// Lines the task takes from the channel at once and sends pipelined on its one connection: one
/// round trip per batch instead of one per line (a burst of launches outran single inserts and
/// filled the channel).
const BATCH: usize = 256;
/// How long the task waits before trying an absent database again.
const RETRY: Duration = Duration::from_millis(500);

/// What the sink did; shared with `/metrics` and `/readyz`.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Lines inserted (first time or replayed).
    pub stored: AtomicU64,
    /// Lines written to the spool: the database was away, or the channel full.
    pub spooled: AtomicU64,
    /// Lines the writer found the channel full for (each went to the spool, or was dropped when
    /// the spool was full too).
    pub channel_full: AtomicU64,
    /// Spooled lines inserted after the database came back.
    pub replayed: AtomicU64,
    /// Lines lost for the table (still in the file trail): the spool full or unwritable.
    pub dropped: AtomicU64,
    /// Whether the last attempt reached the database.
    pub up: AtomicBool,
    /// Whether lines are waiting in the spool (readiness warns).
    pub spooling: AtomicBool,
}

impl SinkStats {
    /// The sink's metrics in Prometheus text format (appended to `/metrics`).
    pub fn prometheus(&self) -> String {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "# HELP storegate_audit_db_events_total Audit events handled by the PostgreSQL sink, by what happened to them.\n\
             # TYPE storegate_audit_db_events_total counter\n\
             storegate_audit_db_events_total{{result=\"stored\"}} {}\n\
             storegate_audit_db_events_total{{result=\"spooled\"}} {}\n\
             storegate_audit_db_events_total{{result=\"replayed\"}} {}\n\
             storegate_audit_db_events_total{{result=\"dropped\"}} {}\n\
             # HELP storegate_audit_db_up Whether the last attempt reached the audit database.\n\
             # TYPE storegate_audit_db_up gauge\n\
             storegate_audit_db_up {}\n\
             # HELP storegate_audit_db_spooling Whether audit events wait in the local spool.\n\
             # TYPE storegate_audit_db_spooling gauge\n\
             storegate_audit_db_spooling {}\n\
             # HELP storegate_audit_db_channel_full_total Audit events that found the in-memory queue to the database full and went to the spool.\n\
             # TYPE storegate_audit_db_channel_full_total counter\n\
             storegate_audit_db_channel_full_total {}\n",
            n(&self.stored),
            n(&self.spooled),
            n(&self.replayed),
            n(&self.dropped),
            u8::from(self.up.load(Ordering::Relaxed)),
            u8::from(self.spooling.load(Ordering::Relaxed)),
            n(&self.channel_full),
        )
    }
}

/// `[audit] postgres_url`, `spool_file`, `spool_max`.
#[derive(Clone)]
pub struct SinkConfig {
    pub url: crate::secret::Secret,
    pub spool_file: PathBuf,
    pub spool_max: u64,
}

impl std::fmt::Debug for SinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkConfig")
            .field("spool_file", &self.spool_file)
            .field("spool_max", &self.spool_max)
            .finish_non_exhaustive()
    }
}

/// The writer's end: hands sealed lines to the insert task, or to the spool, without waiting.
#[derive(Clone)]
pub struct Feed {
    tx: mpsc::Sender<Vec<u8>>,
    spool: Arc<Spool>,
}

impl Feed {
    /// One sealed line (without its newline).
    pub fn push(&self, line: &[u8]) {
        self.spool.push(&self.tx, line);
    }
}

/// Starts the insert task. It ends when every [`Feed`] is dropped and every line is stored or
/// spooled (a spool that cannot be replayed then stays for the next start).
pub fn start(cfg: SinkConfig) -> (Feed, Arc<SinkStats>, tokio::task::JoinHandle<()>) {
    let stats = Arc::new(SinkStats::default());
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    let spool = Arc::new(Spool::open(
        cfg.spool_file.clone(),
        cfg.spool_max,
        stats.clone(),
    ));
    let task = Inserter {
        cfg,
        stats: stats.clone(),
        spool: spool.clone(),
        client: None,
        migrated: false,
    };
    let handle = tokio::spawn(task.run(rx));
    (Feed { tx, spool }, stats, handle)
}

struct Inserter {
    cfg: SinkConfig,
    stats: Arc<SinkStats>,
    spool: Arc<Spool>,
    client: Option<tokio_postgres::Client>,
    migrated: bool,
}

/// What one replay step did.
enum Replay {
    /// Lines were stored; there may be more.
    Progress,
    /// The spool is empty and deleted.
    Drained,
    /// The database is away (or the file unreadable): try again later.
    Stalled,
}

/// The columns of one line; `None` for a line that is not a chained event.
fn columns(line: &[u8]) -> Option<(String, i64, String, String, String, String, String)> {
    let Line::Chained(link) = parse_line(line) else {
        return None;
    };
    let text = std::str::from_utf8(line).ok()?;
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    Some((
        link.writer,
        i64::try_from(link.seq).ok()?,
        link.prev,
        link.hash,
        v.get("time")?.as_str()?.to_owned(),
        v.get("event")?.as_str()?.to_owned(),
        text.to_owned(),
    ))
}

const INSERT: &str = "INSERT INTO audit_events (writer, seq, prev, hash, time, event, line) \
                      VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (writer, seq) DO NOTHING";

impl Inserter {
    async fn connect(&mut self) -> Result<(), tokio_postgres::Error> {
        if self.client.as_ref().is_some_and(|c| !c.is_closed()) {
            return Ok(());
        }
        self.client = None;
        let (mut client, conn) =
            tokio_postgres::connect(self.cfg.url.expose(), tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::warn!(error = %e, "audit database connection ended");
            }
        });
        if !self.migrated {
            if let Err(e) = ensure_migrated(&mut client).await {
                let e = migration_error(&e);
                tracing::error!(error = %e, "cannot migrate the audit table; will retry (run `storegate audit migrate` as the table's owner)");
                return Ok(());
            }
            self.migrated = true;
        }
        self.client = Some(client);
        Ok(())
    }

    /// Inserts a batch pipelined on one connection; per line, whether it is done (stored, or
    /// skipped as not a chained event). A line not done is not stored and must be spooled.
    async fn insert_batch(&mut self, lines: &[Vec<u8>]) -> Vec<bool> {
        if self.connect().await.is_err() || !self.migrated {
            return vec![false; lines.len()];
        }
        let Some(client) = &self.client else {
            return vec![false; lines.len()];
        };
        let statement = match client.prepare(INSERT).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "audit database unavailable; spooling");
                self.client = None;
                return vec![false; lines.len()];
            }
        };
        let rows: Vec<_> = lines.iter().map(|l| columns(l)).collect();
        let results = futures::future::join_all(rows.iter().map(|row| async {
            match row {
                None => {
                    tracing::error!(
                        "an audit line for the database is not a chained event; skipped"
                    );
                    Ok(false)
                }
                Some(c) => client
                    .execute(&statement, &[&c.0, &c.1, &c.2, &c.3, &c.4, &c.5, &c.6])
                    .await
                    .map(|_| true),
            }
        }))
        .await;
        let mut lost_connection = false;
        let done = results
            .into_iter()
            .map(|r| match r {
                Ok(stored) => {
                    if stored {
                        self.stats.stored.fetch_add(1, Ordering::Relaxed);
                    }
                    true
                }
                Err(e) => {
                    if !lost_connection {
                        tracing::warn!(error = %e, "audit database insert failed; spooling");
                    }
                    lost_connection = true;
                    false
                }
            })
            .collect();
        if lost_connection {
            self.client = None;
        }
        done
    }

    /// Stores a batch taken from the channel; what is not stored goes to the front of the spool.
    async fn store(
        &mut self,
        batch: Vec<Vec<u8>>,
        rx: &mut mpsc::Receiver<Vec<u8>>,
        offset: &mut u64,
    ) {
        let done = self.insert_batch(&batch).await;
        self.stats
            .up
            .store(done.iter().all(|d| *d), Ordering::Relaxed);
        let failed: Vec<Vec<u8>> = batch
            .into_iter()
            .zip(done)
            .filter_map(|(line, done)| (!done).then_some(line))
            .collect();
        if !failed.is_empty() {
            self.spool.spill_front(failed, rx, offset);
        }
    }

    /// Replays up to a batch of the spool from `offset`, moving `offset` past what was stored.
    async fn replay(&mut self, offset: &mut u64) -> Replay {
        let lines = match self.spool.read_from(*offset, BATCH) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(spool = %self.spool.path().display(), error = %e, "cannot read the audit spool");
                return Replay::Stalled;
            }
        };
        if lines.is_empty() {
            if self.spool.finish_if_drained(*offset) {
                *offset = 0;
                tracing::info!("audit spool replayed into the database");
                return Replay::Drained;
            }
            return Replay::Stalled;
        }
        let batch: Vec<Vec<u8>> = lines.iter().map(|l| l.line.clone()).collect();
        let done = self.insert_batch(&batch).await;
        // Only a stored prefix moves the offset: the rest is sent again (stored once).
        let stored = done.iter().take_while(|d| **d).count();
        if let Some(last) = stored.checked_sub(1) {
            *offset = lines[last].end;
        }
        self.stats
            .replayed
            .fetch_add(stored as u64, Ordering::Relaxed);
        let all = stored == lines.len();
        self.stats.up.store(all, Ordering::Relaxed);
        if all {
            Replay::Progress
        } else {
            Replay::Stalled
        }
    }

    /// Takes `first` and what else the channel holds now, up to [`BATCH`] lines.
    fn batch(first: Vec<u8>, rx: &mut mpsc::Receiver<Vec<u8>>) -> Vec<Vec<u8>> {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(line) => batch.push(line),
                Err(_) => break,
            }
        }
        batch
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Vec<u8>>) {
        // Where replay stands in the spool file (in memory: after a restart the file is sent
        // again from the start, and what was stored is stored once).
        let mut offset = 0u64;
        loop {
            if !self.spool.is_spilling() {
                let Some(first) = rx.recv().await else {
                    break;
                };
                let batch = Self::batch(first, &mut rx);
                self.store(batch, &mut rx, &mut offset).await;
                continue;
            }
            // The channel's lines are older than the spool's: they go first.
            let closed = match rx.try_recv() {
                Ok(first) => {
                    let batch = Self::batch(first, &mut rx);
                    self.store(batch, &mut rx, &mut offset).await;
                    continue;
                }
                Err(mpsc::error::TryRecvError::Empty) => false,
                Err(mpsc::error::TryRecvError::Disconnected) => true,
            };
            match self.replay(&mut offset).await {
                Replay::Progress | Replay::Drained => {}
                Replay::Stalled if closed => break,
                Replay::Stalled => tokio::time::sleep(RETRY).await,
            }
        }
    }
}

/// The newest migration this build embeds.
fn latest_migration() -> i32 {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| m.version())
        .max()
        .and_then(|v| i32::try_from(v).ok())
        .unwrap_or(0)
}

/// Whether the owner already applied every migration this build has. Read with SELECT only:
/// refinery's runner starts with `CREATE TABLE IF NOT EXISTS refinery_schema_history`, which
/// PostgreSQL refuses to a role without CREATE on the schema even when the table exists, so
/// the insert-and-select-only application role must not run it.
async fn is_current(client: &tokio_postgres::Client) -> bool {
    match client
        .query_one("SELECT max(version) FROM refinery_schema_history", &[])
        .await
    {
        Ok(row) => row
            .try_get::<_, Option<i32>>(0)
            .ok()
            .flatten()
            .is_some_and(|v| v >= latest_migration()),
        Err(_) => false,
    }
}

/// refinery's message with its causes (its own Display ends at "db error"; the database's
/// reason, e.g. "permission denied for schema public", is further down the chain).
fn migration_error(e: &refinery::Error) -> String {
    let mut out = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// Runs the embedded migrations unless the table is current already.
async fn ensure_migrated(client: &mut tokio_postgres::Client) -> Result<(), refinery::Error> {
    if is_current(client).await {
        return Ok(());
    }
    embedded::migrations::runner()
        .run_async(client)
        .await
        .map(|_| ())
}

/// Why the audit table could not be used by a one-off reader or `storegate audit migrate`
/// (the sink itself retries and spools instead, see [`Feed`]).
#[derive(Debug, thiserror::Error)]
pub enum AuditStoreError {
    /// The database cannot be reached or refused the login: check `[audit] postgres_url` (host,
    /// role, password) and that this host reaches PostgreSQL.
    #[error("cannot connect to the audit database: {0}")]
    Connect(tokio_postgres::Error),
    /// A query on `audit_events` failed (the table is missing, the role may not select).
    #[error("cannot read audit_events: {0}")]
    Read(tokio_postgres::Error),
    /// The migrations failed (with their causes): run them as the table's owner.
    #[error("cannot migrate the audit table: {0}")]
    Migrate(String),
}

/// One short-lived connection for a reader (`audit verify`, the console, the access review).
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, AuditStoreError> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(AuditStoreError::Connect)?;
    tokio::spawn(conn);
    Ok(client)
}

/// `storegate audit migrate --postgres URL`: creates or upgrades `audit_events` as the role in
/// `url` (the table's owner), so the gateway itself can run as a role that may only insert and
/// select. Returns the versions applied now (empty: already current).
pub async fn migrate(url: &str) -> Result<Vec<String>, AuditStoreError> {
    let mut client = connect(url).await?;
    let report = embedded::migrations::runner()
        .run_async(&mut client)
        .await
        .map_err(|e| AuditStoreError::Migrate(migration_error(&e)))?;
    Ok(report
        .applied_migrations()
        .iter()
        .map(|m| format!("V{}__{}", m.version(), m.name()))
        .collect())
}

/// The table's lines in (writer, seq) order, for `storegate audit verify --postgres URL`.
pub async fn table_lines(url: &str) -> Result<Vec<String>, AuditStoreError> {
    let client = connect(url).await?;
    let rows = client
        .query("SELECT line FROM audit_events ORDER BY writer, seq", &[])
        .await
        .map_err(AuditStoreError::Read)?;
    Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
}
