//! The local spool of the PostgreSQL sink: a file of sealed lines waiting for the table, shared
//! by the audit writer thread (which spills into it when the in-memory channel is full) and the
//! insert task (which spills lines it could not store, and replays the file).
//!
//! One order for everything: what the insert task holds comes first, then the channel, then the
//! file. To keep it, while the spool is in use ("spilling") the writer appends every new line to
//! the file instead of the channel, and the insert task drains the channel before it replays the
//! file. Lines the insert task could not store go in *front* of the file, together with what the
//! channel still holds (they are older than anything in it). One lock covers the writer's
//! choice between channel and file, every append, the rewrite and the deletion; it is never
//! held across a database call, so a slow database cannot stall the writer.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::SinkStats;

struct State {
    /// The append handle, opened on first use.
    file: Option<File>,
    /// Bytes in the file (replayed or not).
    len: u64,
    /// New lines go to the file, not the channel.
    spilling: bool,
    /// The "spool full" error was logged for this spell (one line per spell, not per event).
    told_full: bool,
}

pub struct Spool {
    path: PathBuf,
    max: u64,
    stats: Arc<SinkStats>,
    state: Mutex<State>,
}

/// One line read back, with the file offset just past it (its newline).
pub struct Spooled {
    pub line: Vec<u8>,
    pub end: u64,
}

impl Spool {
    /// Takes over what a previous run left (spilling until it is replayed). A torn last line
    /// (a crash mid-append) is closed with a newline so what follows starts a line of its own;
    /// the torn one is skipped at replay as not a chained event.
    pub fn open(path: PathBuf, max: u64, stats: Arc<SinkStats>) -> Spool {
        let mut len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if len > 0 && !ends_with_newline(&path) {
            let closed = OpenOptions::new()
                .append(true)
                .open(&path)
                .and_then(|mut f| f.write_all(b"\n"));
            match closed {
                Ok(()) => len += 1,
                Err(e) => {
                    tracing::error!(spool = %path.display(), error = %e, "cannot close the audit spool's torn last line")
                }
            }
        }
        stats.spooling.store(len > 0, Ordering::Relaxed);
        Spool {
            path,
            max,
            stats,
            state: Mutex::new(State {
                file: None,
                len,
                spilling: len > 0,
                told_full: false,
            }),
        }
    }

    pub fn is_spilling(&self) -> bool {
        self.state.lock().spilling
    }

    /// The writer's side: into the channel while it has room and the spool is not in use,
    /// otherwise onto the end of the file. Never waits on the database.
    pub fn push(&self, tx: &mpsc::Sender<Vec<u8>>, line: &[u8]) {
        let mut s = self.state.lock();
        if !s.spilling {
            match tx.try_send(line.to_vec()) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        "the audit database task has stopped; an event for the table was dropped (it is still in the file trail)"
                    );
                    return;
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    // From here on everything goes to the file until it is replayed, so the
                    // lines still in the channel stay ahead of it.
                    s.spilling = true;
                    self.stats.spooling.store(true, Ordering::Relaxed);
                    self.stats.channel_full.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        self.append(&mut s, line);
    }

    /// The insert task's side: `failed` (lines it took but could not store) and everything the
    /// channel still holds go in front of the lines from `offset` on; what was already replayed
    /// is dropped from the file. Afterwards the file is read from offset 0 again.
    pub fn spill_front(
        &self,
        failed: Vec<Vec<u8>>,
        rx: &mut mpsc::Receiver<Vec<u8>>,
        offset: &mut u64,
    ) {
        let mut s = self.state.lock();
        let mut older = failed;
        while let Ok(line) = rx.try_recv() {
            older.push(line);
        }
        s.spilling = true;
        self.stats.spooling.store(true, Ordering::Relaxed);
        if *offset >= s.len {
            // Nothing waits in the file: plain appends (after dropping what was replayed).
            if s.len > 0 {
                s.file = None;
                s.len = 0;
                if let Err(e) = std::fs::remove_file(&self.path) {
                    tracing::error!(spool = %self.path.display(), error = %e, "cannot empty the audit spool");
                }
            }
            *offset = 0;
            for line in &older {
                self.append(&mut s, line);
            }
            return;
        }
        // Older lines before the waiting ones: write both to a new file and swap it in. The
        // older lines are kept even beyond `spool_max` (at most what the channel held), because
        // dropping them would leave a hole in the middle of the table instead of a missing tail.
        match self.rewrite(&older, *offset) {
            Ok(len) => {
                self.stats
                    .spooled
                    .fetch_add(older.len() as u64, Ordering::Relaxed);
                s.file = None;
                s.len = len;
                *offset = 0;
            }
            Err(e) => {
                tracing::error!(spool = %self.path.display(), error = %e, "cannot put audit events back in front of the spool; they are dropped for the table (still in the file trail)");
                self.stats
                    .dropped
                    .fetch_add(older.len() as u64, Ordering::Relaxed);
            }
        }
    }

    fn rewrite(&self, older: &[Vec<u8>], offset: u64) -> std::io::Result<u64> {
        let mut rest = Vec::new();
        let mut f = File::open(&self.path)?;
        f.seek(SeekFrom::Start(offset))?;
        f.read_to_end(&mut rest)?;
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut out = std::io::BufWriter::new(File::create(&tmp)?);
        let mut len = rest.len() as u64;
        for line in older {
            out.write_all(line)?;
            out.write_all(b"\n")?;
            len += line.len() as u64 + 1;
        }
        out.write_all(&rest)?;
        out.into_inner().map_err(|e| e.into_error())?.sync_data()?;
        std::fs::rename(&tmp, &self.path)?;
        Ok(len)
    }

    fn append(&self, s: &mut State, line: &[u8]) {
        if s.len + line.len() as u64 + 1 > self.max {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            if !s.told_full {
                s.told_full = true;
                tracing::error!(spool = %self.path.display(), "the audit spool is full; events for the database are dropped until it is replayed (they are still in the file trail)");
            }
            return;
        }
        let file = match s.file.take() {
            Some(f) => Ok(f),
            None => OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path),
        };
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line);
        buf.push(b'\n');
        match file.and_then(|mut f| f.write_all(&buf).map(|()| f)) {
            Ok(f) => {
                s.file = Some(f);
                s.len += buf.len() as u64;
                self.stats.spooled.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::error!(spool = %self.path.display(), error = %e, "cannot write the audit spool; an event for the database was dropped");
            }
        }
    }

    /// Up to `max_lines` whole lines from `offset` (a line still being appended is left for
    /// the next read). No lock: only the writer appends, and only this task rewrites or deletes.
    pub fn read_from(&self, offset: u64, max_lines: usize) -> std::io::Result<Vec<Spooled>> {
        let mut f = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        f.seek(SeekFrom::Start(offset))?;
        let mut reader = std::io::BufReader::new(f);
        let mut out = Vec::new();
        let mut end = offset;
        while out.len() < max_lines {
            let mut line = Vec::new();
            let n = reader.read_until(b'\n', &mut line)?;
            if n == 0 || line.last() != Some(&b'\n') {
                break;
            }
            end += n as u64;
            line.pop();
            if line.is_empty() {
                continue;
            }
            out.push(Spooled { line, end });
        }
        Ok(out)
    }

    /// Deletes the file and ends the spell when everything up to `offset` was replayed and
    /// nothing was appended since; `true` then (new lines go to the channel again).
    pub fn finish_if_drained(&self, offset: u64) -> bool {
        let mut s = self.state.lock();
        if offset < s.len {
            return false;
        }
        s.file = None;
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::error!(spool = %self.path.display(), error = %e, "cannot empty the audit spool; its lines will be sent again (stored once)");
                return false;
            }
        }
        s.len = 0;
        s.spilling = false;
        s.told_full = false;
        self.stats.spooling.store(false, Ordering::Relaxed);
        true
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn ends_with_newline(path: &Path) -> bool {
    let Ok(mut f) = File::open(path) else {
        return true;
    };
    let mut last = [0u8; 1];
    f.seek(SeekFrom::End(-1)).is_ok() && f.read_exact(&mut last).is_ok() && last[0] == b'\n'
}
