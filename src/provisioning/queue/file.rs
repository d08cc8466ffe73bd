//! `queue = "file:PATH"`: the queue of one process.
//!
//! Pending items and dead letters live in a JSON snapshot (written atomically: temporary file +
//! rename) plus an append-only journal (`PATH.log`) with one line per settled batch; a restart
//! loads the snapshot, replays the journal and resumes. The journal is folded into the snapshot
//! every [`COMPACT_EVERY`] lines. Replaying is idempotent, and so is redoing an item whose
//! completion did not reach the disk (every item read back is uncertain), so the journal is not
//! fsynced on every line. Pauses and the pass lease are local: one process owns the file.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::{Item, PassLease, QueueError, QueueStats, WorkQueue, pick_batch};
use crate::provisioning::reconcile::Action;

/// Journal lines after which the snapshot is rewritten.
pub const COMPACT_EVERY: usize = 200;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct DeadLetter {
    item: Item,
    reason: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Journal {
    done: Vec<u64>,
    changed: Vec<Item>,
    #[serde(default)]
    dead: Vec<DeadLetter>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct QueueFile {
    #[serde(skip)]
    journal_lines: usize,
    /// Items handed to a worker and not settled yet (for the metrics).
    #[serde(skip)]
    handed: HashSet<u64>,
    next_seq: u64,
    items: Vec<Item>,
    #[serde(default)]
    dead: Vec<DeadLetter>,
}

pub struct FileQueue {
    path: PathBuf,
    state: Mutex<QueueFile>,
}

impl FileQueue {
    /// Opens (or starts) the queue file; every item found is treated as uncertain.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, QueueError> {
        let path = path.into();
        let mut file: QueueFile = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| QueueError::Corrupt {
                path: path.clone(),
                detail: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => QueueFile::default(),
            Err(error) => {
                return Err(QueueError::Io {
                    action: "read",
                    path,
                    error,
                });
            }
        };
        let log_path = Self::log_path(&path);
        match std::fs::read_to_string(&log_path) {
            Ok(log) => {
                for line in log.lines() {
                    // A torn last line (crash while appending) is ignored: its batch is redone.
                    let Ok(j) = serde_json::from_str::<Journal>(line) else {
                        continue;
                    };
                    Self::apply(&mut file, &j);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(QueueError::Io {
                    action: "read the queue journal",
                    path: log_path,
                    error,
                });
            }
        }
        for it in &mut file.items {
            it.uncertain = true;
        }
        Ok(FileQueue {
            path,
            state: Mutex::new(file),
        })
    }

    fn log_path(path: &std::path::Path) -> PathBuf {
        let mut p = path.as_os_str().to_owned();
        p.push(".log");
        PathBuf::from(p)
    }

    fn apply(file: &mut QueueFile, j: &Journal) {
        let gone: HashSet<u64> = j
            .done
            .iter()
            .copied()
            .chain(j.dead.iter().map(|d| d.item.seq))
            .collect();
        file.items.retain(|i| !gone.contains(&i.seq));
        file.dead.extend(j.dead.iter().cloned());
        for c in &j.changed {
            if let Some(slot) = file.items.iter_mut().find(|i| i.seq == c.seq) {
                *slot = c.clone();
            }
        }
        for seq in gone.iter().chain(j.changed.iter().map(|c| &c.seq)) {
            file.handed.remove(seq);
        }
    }

    /// Rewrites the snapshot, then drops the journal it now contains.
    async fn persist(&self, file: &mut QueueFile) -> Result<(), QueueError> {
        let bytes = serde_json::to_vec(&*file).map_err(QueueError::Encode)?;
        let path = self.path.clone();
        let written = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            crate::provisioning::scim::store::write_atomic(&path, &bytes)?;
            match std::fs::remove_file(Self::log_path(&path)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        })
        .await;
        Self::io_outcome("write the queue snapshot", self.path.clone(), written)?;
        file.journal_lines = 0;
        Ok(())
    }

    /// The outcome of a blocking file task; a task that did not finish (it panicked) counts
    /// as an I/O failure of `path`.
    fn io_outcome(
        action: &'static str,
        path: PathBuf,
        done: Result<std::io::Result<()>, tokio::task::JoinError>,
    ) -> Result<(), QueueError> {
        done.unwrap_or_else(|e| Err(std::io::Error::other(e)))
            .map_err(|error| QueueError::Io {
                action,
                path,
                error,
            })
    }
}

/// The file queue's lease: the schedule already runs one pass at a time in this process.
struct LocalLease;

#[async_trait]
impl PassLease for LocalLease {
    async fn release(self: Box<Self>) {}
}

#[async_trait]
impl WorkQueue for FileQueue {
    async fn enqueue(&self, run: &str, actions: Vec<Action>) -> Result<(), QueueError> {
        let mut f = self.state.lock().await;
        for action in actions {
            let mut item = Item::new(run, action);
            item.queued_at = Some(crate::clock::Clock::now(&crate::clock::SystemClock));
            item.seq = f.next_seq;
            f.next_seq += 1;
            f.items.push(item);
        }
        self.persist(&mut f).await
    }

    async fn len(&self) -> Result<u64, QueueError> {
        Ok(self.state.lock().await.items.len() as u64)
    }

    async fn accounts(&self) -> Result<Vec<String>, QueueError> {
        let f = self.state.lock().await;
        let mut a: Vec<String> = f
            .items
            .iter()
            .map(|i| i.action.account().to_owned())
            .collect();
        a.sort();
        a.dedup();
        Ok(a)
    }

    async fn next_batch(&self, account: &str) -> Result<Vec<Item>, QueueError> {
        let mut f = self.state.lock().await;
        // Picked by reference: the backlog can be tens of thousands of items.
        let batch = pick_batch(f.items.iter().filter(|i| i.action.account() == account));
        f.handed.extend(batch.iter().map(|i| i.seq));
        Ok(batch)
    }

    async fn held_elsewhere(&self, _account: &str) -> Result<bool, QueueError> {
        Ok(false)
    }

    async fn settle(
        &self,
        done: &[Item],
        dead: &[(Item, String)],
        changed: Vec<Item>,
    ) -> Result<(), QueueError> {
        let mut f = self.state.lock().await;
        let j = Journal {
            done: done.iter().map(|i| i.seq).collect(),
            changed,
            dead: dead
                .iter()
                .map(|(item, reason)| DeadLetter {
                    item: item.clone(),
                    reason: reason.clone(),
                })
                .collect(),
        };
        Self::apply(&mut f, &j);
        if f.journal_lines + 1 >= COMPACT_EVERY {
            return self.persist(&mut f).await;
        }
        let mut line = serde_json::to_vec(&j).map_err(QueueError::Encode)?;
        line.push(b'\n');
        let log = Self::log_path(&self.path);
        let to = log.clone();
        let appended = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            let mut out = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(to)?;
            out.write_all(&line)
        })
        .await;
        Self::io_outcome("append to the queue journal", log, appended)?;
        f.journal_lines += 1;
        Ok(())
    }

    async fn pause(&self, _account: &str, wait: Duration) -> Result<(), QueueError> {
        // One worker per account in one process: the worker that saw the 429 waits itself.
        tokio::time::sleep(wait).await;
        Ok(())
    }

    async fn paused_for(&self, _account: &str) -> Result<Option<Duration>, QueueError> {
        Ok(None)
    }

    async fn lease(&self) -> Result<Option<Box<dyn PassLease>>, QueueError> {
        Ok(Some(Box::new(LocalLease)))
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        let f = self.state.lock().await;
        let in_flight = f.handed.len() as u64;
        Ok(QueueStats {
            waiting: (f.items.len() as u64).saturating_sub(in_flight),
            in_flight,
            dead_letters: f.dead.len() as u64,
        })
    }

    async fn oldest_queued_at(&self) -> Result<Option<i64>, QueueError> {
        let f = self.state.lock().await;
        Ok(f.items.iter().filter_map(|i| i.queued_at).min())
    }

    async fn dead_letters(&self) -> Result<Vec<(Item, String)>, QueueError> {
        let f = self.state.lock().await;
        Ok(f.dead
            .iter()
            .map(|d| (d.item.clone(), d.reason.clone()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sg-queue-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_file_that_is_not_a_queue_is_corrupt_and_named() {
        let dir = scratch();
        let path = dir.join("queue.json");
        std::fs::write(&path, "{not json").unwrap();
        let Err(e) = FileQueue::open(&path) else {
            panic!("a damaged queue file must not open");
        };
        assert!(matches!(&e, QueueError::Corrupt { path: p, .. } if *p == path));
        assert_eq!(
            e.to_string(),
            format!(
                "{} is not a storegate queue: key must be a string at line 1 column 2",
                path.display()
            )
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn an_unreadable_journal_is_an_io_error_naming_the_journal() {
        let dir = scratch();
        let path = dir.join("queue.json");
        // A directory where the journal should be: reading it fails, not with "not found".
        std::fs::create_dir_all(dir.join("queue.json.log")).unwrap();
        let Err(e) = FileQueue::open(&path) else {
            panic!("an unreadable journal must not be skipped");
        };
        assert!(
            matches!(&e, QueueError::Io { action: "read the queue journal", path: p, .. } if *p == dir.join("queue.json.log")),
            "{e:?}"
        );
        assert!(
            e.to_string().starts_with(&format!(
                "cannot read the queue journal {}: ",
                dir.join("queue.json.log").display()
            )),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
