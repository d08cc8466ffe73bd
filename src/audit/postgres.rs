//! The central PostgreSQL sink (issue 13): every chained line also goes to an append-only table
//! `audit_events`, keyed by (writer, seq), besides the file.
//!
//! Why tokio-postgres + refinery rather than sqlx: one table and one insert need no query
//! macros or compile-time database, and the pair builds much lighter.
//!
//! The path of an event: the file writer seals a line and hands a copy to [`Feed::push`], which
//! never waits (a bounded channel; full = counted as dropped), so a slow or absent database
//! cannot hold up a sign-in or a launch. One task inserts lines in order. While the database is
//! away it appends them to a bounded local spool file (full = counted as dropped); when the
//! database is back it replays the spool, in order, before anything newer. What the channel holds
//! is taken in batches and inserted pipelined (the table is read in (writer, seq) order, so the
//! order in which a batch's rows land does not matter). Inserts are
//! `ON CONFLICT (writer, seq) DO NOTHING`, so a line sent twice (replayed after an insert whose
//! answer was lost) is stored once.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

use super::chain::{Line, parse_line};

mod embedded {
    refinery::embed_migrations!("migrations/audit");
}

/// Lines waiting for the insert task; beyond this the push is dropped (and counted).
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
    /// Lines written to the spool because the database was away.
    pub spooled: AtomicU64,
    /// Spooled lines inserted after the database came back.
    pub replayed: AtomicU64,
    /// Lines lost: spool full, or the channel full.
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
             storegate_audit_db_spooling {}\n",
            n(&self.stored),
            n(&self.spooled),
            n(&self.replayed),
            n(&self.dropped),
            u8::from(self.up.load(Ordering::Relaxed)),
            u8::from(self.spooling.load(Ordering::Relaxed)),
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

/// The writer's end: hands sealed lines to the insert task without waiting.
#[derive(Clone)]
pub struct Feed {
    tx: mpsc::Sender<Vec<u8>>,
    stats: Arc<SinkStats>,
}

impl Feed {
    /// One sealed line (without its newline).
    pub fn push(&self, line: &[u8]) {
        if self.tx.try_send(line.to_vec()).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Starts the insert task. It ends when every [`Feed`] is dropped and every line is stored or
/// spooled.
pub fn start(cfg: SinkConfig) -> (Feed, Arc<SinkStats>, tokio::task::JoinHandle<()>) {
    let stats = Arc::new(SinkStats::default());
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    let task = Inserter {
        cfg,
        stats: stats.clone(),
        client: None,
        migrated: false,
    };
    let handle = tokio::spawn(task.run(rx));
    (
        Feed {
            tx,
            stats: stats.clone(),
        },
        stats,
        handle,
    )
}

struct Inserter {
    cfg: SinkConfig,
    stats: Arc<SinkStats>,
    client: Option<tokio_postgres::Client>,
    migrated: bool,
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
            if let Err(e) = embedded::migrations::runner().run_async(&mut client).await {
                tracing::error!(error = %e, "cannot migrate the audit table; will retry");
                return Ok(());
            }
            self.migrated = true;
        }
        self.client = Some(client);
        Ok(())
    }

    /// Inserts one line; `Err` when the database is away (the line is not stored).
    async fn insert(&mut self, line: &[u8]) -> Result<(), ()> {
        let Some(c) = columns(line) else {
            tracing::error!("an audit line for the database is not a chained event; skipped");
            return Ok(());
        };
        if self.connect().await.is_err() || !self.migrated {
            return Err(());
        }
        let Some(client) = &self.client else {
            return Err(());
        };
        match client
            .execute(INSERT, &[&c.0, &c.1, &c.2, &c.3, &c.4, &c.5, &c.6])
            .await
        {
            Ok(_) => {
                self.stats.stored.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "audit database insert failed; spooling");
                self.client = None;
                Err(())
            }
        }
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

    fn spool_size(&self) -> u64 {
        std::fs::metadata(&self.cfg.spool_file)
            .map(|m| m.len())
            .unwrap_or(0)
    }

    fn spool(&self, line: &[u8]) {
        if self.spool_size() + line.len() as u64 + 1 > self.cfg.spool_max {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::error!(spool = %self.cfg.spool_file.display(), "the audit spool is full; an event for the database was dropped (it is still in the file trail)");
            return;
        }
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.cfg.spool_file)
            .and_then(|mut f| {
                let mut buf = line.to_vec();
                buf.push(b'\n');
                f.write_all(&buf)
            });
        match written {
            Ok(()) => {
                self.stats.spooled.fetch_add(1, Ordering::Relaxed);
                self.stats.spooling.store(true, Ordering::Relaxed);
            }
            Err(e) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::error!(spool = %self.cfg.spool_file.display(), error = %e, "cannot write the audit spool; an event for the database was dropped");
            }
        }
    }

    /// Replays the spool in order. `true` when it is empty afterwards.
    async fn replay(&mut self) -> bool {
        let lines = match read_lines(&self.cfg.spool_file) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(spool = %self.cfg.spool_file.display(), error = %e, "cannot read the audit spool");
                return false;
            }
        };
        if lines.is_empty() {
            self.stats.spooling.store(false, Ordering::Relaxed);
            return true;
        }
        for line in &lines {
            if self.insert(line).await.is_err() {
                // Still away; the spool stays as it is (what was inserted is not inserted twice).
                return false;
            }
            self.stats.replayed.fetch_add(1, Ordering::Relaxed);
        }
        if let Err(e) = std::fs::remove_file(&self.cfg.spool_file) {
            tracing::error!(error = %e, "cannot empty the audit spool; its lines will be sent again (stored once)");
            return false;
        }
        self.stats.spooling.store(false, Ordering::Relaxed);
        tracing::info!(
            events = lines.len(),
            "audit spool replayed into the database"
        );
        true
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Vec<u8>>) {
        let mut spool_empty = self.spool_size() == 0;
        self.stats.spooling.store(!spool_empty, Ordering::Relaxed);
        loop {
            let next = if spool_empty {
                rx.recv().await
            } else {
                // With a spool to replay, try again every RETRY even when nothing new comes.
                match tokio::time::timeout(RETRY, rx.recv()).await {
                    Ok(line) => line,
                    Err(_) => {
                        spool_empty = self.replay().await;
                        self.stats.up.store(spool_empty, Ordering::Relaxed);
                        continue;
                    }
                }
            };
            let Some(line) = next else {
                break;
            };
            let mut batch = vec![line];
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(line) => batch.push(line),
                    Err(_) => break,
                }
            }
            if !spool_empty {
                spool_empty = self.replay().await;
            }
            // Older lines first: while the spool holds any, new ones queue behind them.
            let done = if spool_empty {
                self.insert_batch(&batch).await
            } else {
                vec![false; batch.len()]
            };
            self.stats
                .up
                .store(done.iter().all(|d| *d), Ordering::Relaxed);
            for (line, done) in batch.iter().zip(done) {
                if !done {
                    self.spool(line);
                    spool_empty = false;
                }
            }
        }
    }
}

fn read_lines(path: &Path) -> std::io::Result<Vec<Vec<u8>>> {
    match std::fs::File::open(path) {
        Ok(f) => std::io::BufReader::new(f)
            .split(b'\n')
            .filter(|l| l.as_ref().map_or(true, |l| !l.is_empty()))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The table's lines in (writer, seq) order, for `storegate audit verify --postgres URL`.
pub async fn table_lines(url: &str) -> anyhow::Result<Vec<String>> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to the audit database: {e}"))?;
    tokio::spawn(conn);
    let rows = client
        .query("SELECT line FROM audit_events ORDER BY writer, seq", &[])
        .await
        .map_err(|e| anyhow::anyhow!("cannot read audit_events: {e}"))?;
    Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
}
