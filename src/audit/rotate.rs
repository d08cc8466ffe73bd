//! The audit file: append, rotate by size or age, reopen on SIGHUP, and find where a writer's
//! chain stood when it starts again (issue 13).
//!
//! Rotation renames `FILE` to `FILE.YYYYMMDDTHHMMSSZ` (UTC, `.1`, `.2`... if taken) and opens a
//! new `FILE`; the chain simply goes on, so the new file's first event carries the last hash of
//! the rotated one. A restarted writer continues its chain from its last event in `FILE` (or, if
//! `FILE` has none, in the newest rotated file): see [`recover_head`].

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::chain::{ChainHead, Line, parse_line};

/// When to start a new file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RotatePolicy {
    /// Rotate before a write would take the file past this many bytes.
    pub max_bytes: Option<u64>,
    /// Rotate when the file has been written to for this long (counted from when it was opened).
    pub max_age: Option<Duration>,
}

impl RotatePolicy {
    /// Whether a file of `size` bytes opened at `opened` must be rotated before `next` more
    /// bytes are written at `now`. An empty file is never rotated (one huge event still goes in).
    pub fn due(&self, size: u64, next: u64, opened: SystemTime, now: SystemTime) -> bool {
        if size == 0 {
            return false;
        }
        let too_big = self.max_bytes.is_some_and(|max| size + next > max);
        let too_old = self
            .max_age
            .is_some_and(|age| now.duration_since(opened).unwrap_or_default() >= age);
        too_big || too_old
    }
}

/// The open audit file.
#[derive(Debug)]
pub struct FileSink {
    path: PathBuf,
    file: File,
    size: u64,
    opened: SystemTime,
    policy: RotatePolicy,
}

impl FileSink {
    /// Opens `path` for append. A file whose last line was cut short (a crash mid-write) gets a
    /// newline first, so new events start on their own line; `audit verify` still reports the
    /// cut line.
    pub fn open(path: &Path, policy: RotatePolicy, now: SystemTime) -> io::Result<Self> {
        let mut file = OpenOptions::new().create(true).append(true).open(path)?;
        let mut size = file.metadata()?.len();
        if size > 0 && !ends_with_newline(path)? {
            tracing::warn!(file = %path.display(), "the audit file ends in an incomplete line (cut short?); continuing on a new line");
            file.write_all(b"\n")?;
            size += 1;
        }
        Ok(FileSink {
            path: path.to_owned(),
            file,
            size,
            opened: now,
            policy,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether to rotate before writing `next` bytes after `pending` bytes not yet written.
    pub fn rotation_due(&self, pending: u64, next: u64, now: SystemTime) -> bool {
        self.policy.due(self.size + pending, next, self.opened, now)
    }

    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)?;
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// Renames the file aside and opens a fresh one; returns the rotated file's name.
    pub fn rotate(&mut self, now: SystemTime) -> io::Result<PathBuf> {
        self.file.flush()?;
        let to = rotated_name(&self.path, now);
        std::fs::rename(&self.path, &to)?;
        *self = FileSink::open(&self.path, self.policy, now)?;
        Ok(to)
    }

    /// Opens the path again (after an external tool such as logrotate moved the file).
    pub fn reopen(&mut self, now: SystemTime) -> io::Result<()> {
        *self = FileSink::open(&self.path, self.policy, now)?;
        Ok(())
    }
}

fn ends_with_newline(path: &Path) -> io::Result<bool> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(true);
    }
    f.seek(SeekFrom::Start(len - 1))?;
    let mut last = [0u8; 1];
    f.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

/// `FILE.20261202T072400Z`, or with `.1`, `.2`... when that name is taken.
pub fn rotated_name(path: &Path, now: SystemTime) -> PathBuf {
    let stamp = time::OffsetDateTime::from(now);
    let stamp = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        stamp.year(),
        u8::from(stamp.month()),
        stamp.day(),
        stamp.hour(),
        stamp.minute(),
        stamp.second()
    );
    let base = format!("{}.{stamp}", path.display());
    let mut candidate = PathBuf::from(&base);
    let mut n = 1;
    while candidate.exists() {
        candidate = PathBuf::from(format!("{base}.{n}"));
        n += 1;
    }
    candidate
}

/// Rotated siblings of `path` (`FILE.<timestamp>...`), oldest first.
pub fn rotated_files(path: &Path) -> io::Result<Vec<PathBuf>> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(Vec::new());
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let file_name = entry.file_name().to_string_lossy().into_owned();
        // Timestamps only (not `.gz` copies a log shipper may leave).
        let is_rotation = file_name.strip_prefix(&prefix).is_some_and(|rest| {
            rest.len() >= 16 && rest.as_bytes()[..8].iter().all(u8::is_ascii_digit)
        });
        if is_rotation {
            found.push(dir.join(file_name));
        }
    }
    found.sort();
    Ok(found)
}

/// Where `writer`'s chain stands: its last event in `path`, else in the newest rotated file.
/// `None`: no event of this writer is there, so its chain starts at genesis.
///
/// This is how a restart links: the writer reads its last line's `seq` and `hash` on open and
/// goes on from there, so a restart is invisible to `audit verify`.
pub fn recover_head(path: &Path, writer: &str) -> io::Result<Option<ChainHead>> {
    if let Some(head) = last_event_of(path, writer)? {
        return Ok(Some(head));
    }
    match rotated_files(path)?.last() {
        Some(newest) => last_event_of(newest, writer),
        None => Ok(None),
    }
}

/// The last intact-looking chained event of `writer` in `path` (none if the file is missing).
/// Reads the last line first; only when that is another writer's does it read the whole file.
fn last_event_of(path: &Path, writer: &str) -> io::Result<Option<ChainHead>> {
    let head_of = |line: &[u8]| match parse_line(line) {
        Line::Chained(l) if l.writer == writer => Some(ChainHead {
            seq: l.seq,
            hash: l.hash,
        }),
        _ => None,
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if let Some(line) = last_complete_line(&file)?
        && let Some(head) = head_of(&line)
    {
        return Ok(Some(head));
    }
    let mut reader = io::BufReader::new(File::open(path)?);
    let mut head = None;
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        // Only whole lines count: a cut-short last line is not an event.
        if line.last() == Some(&b'\n')
            && let Some(h) = head_of(line.trim_ascii_end())
        {
            head = Some(h);
        }
    }
    Ok(head)
}

/// The last line that ends in a newline, read from the end of the file in growing windows.
fn last_complete_line(file: &File) -> io::Result<Option<Vec<u8>>> {
    let mut f = file;
    let len = f.metadata()?.len();
    let mut window: u64 = 64 * 1024;
    loop {
        let start = len.saturating_sub(window);
        f.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::with_capacity((len - start) as usize);
        f.read_to_end(&mut buf)?;
        // Drop a cut-short tail, then the final newline.
        let Some(end) = buf.iter().rposition(|b| *b == b'\n') else {
            if start == 0 {
                return Ok(None);
            }
            window *= 2;
            continue;
        };
        let body = &buf[..end];
        match body.iter().rposition(|b| *b == b'\n') {
            Some(nl) => return Ok(Some(body[nl + 1..].to_vec())),
            None if start == 0 => return Ok(Some(body.to_vec())),
            None => window *= 2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Duration = Duration::from_secs(1_796_000_000);

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + T0 + Duration::from_secs(secs)
    }

    #[test]
    fn size_rotation_happens_before_the_write_that_would_pass_the_limit() {
        let p = RotatePolicy {
            max_bytes: Some(1000),
            max_age: None,
        };
        assert!(!p.due(900, 100, at(0), at(0)));
        assert!(p.due(901, 100, at(0), at(0)));
        // An empty file takes even an oversized event.
        assert!(!p.due(0, 5000, at(0), at(0)));
    }

    #[test]
    fn time_rotation_happens_once_the_file_is_as_old_as_rotate_every() {
        let p = RotatePolicy {
            max_bytes: None,
            max_age: Some(Duration::from_secs(3600)),
        };
        assert!(!p.due(10, 10, at(0), at(3599)));
        assert!(p.due(10, 10, at(0), at(3600)));
        assert!(p.due(10, 10, at(0), at(3601)));
        // A clock that went backwards does not rotate.
        assert!(!p.due(10, 10, at(10), at(0)));
    }

    #[test]
    fn rotated_names_carry_the_utc_time_and_sort_in_order() {
        let dir = std::env::temp_dir().join(format!("sg-rot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.jsonl");
        let first = rotated_name(&path, at(0));
        assert!(
            first
                .to_string_lossy()
                .ends_with("audit.jsonl.20261130T005320Z"),
            "{first:?}"
        );
        std::fs::write(&first, "").unwrap();
        let second = rotated_name(&path, at(0));
        assert!(second.to_string_lossy().ends_with("Z.1"));
        std::fs::write(&second, "").unwrap();
        std::fs::write(dir.join("audit.jsonl.gz"), "").unwrap();
        assert_eq!(rotated_files(&path).unwrap(), vec![first, second]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
