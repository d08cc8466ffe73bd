//! `storegate audit verify FILE...`: check every writer's hash chain across a set of files and
//! name the first problem as `FILE:LINE: message` (issue 13).
//!
//! Files may come in any order and from several writers (replicas): events are grouped by writer
//! id. Within a file, a writer's events must follow each other (`seq` + 1, `prev` = the hash of
//! the one before). Across files, a writer's files are put in `seq` order and each must start
//! where the previous one ended, which is how a rotation links. A writer's first given event may
//! start after seq 1 (older rotated files archived): that is reported in the summary, not as a
//! problem. Whole events cut from the end of the newest file leave a valid shorter chain; only an
//! anchor known from elsewhere (`--anchor WRITER:SEQ:HASH`, e.g. the head the gateway logs on
//! rotation, or a summary an auditor kept) can show that.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::chain::{GENESIS, Line, Link, parse_line};

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Skip events without chain fields instead of failing on them.
    pub allow_unchained: bool,
    /// Events known from elsewhere that must be in the trail as they were.
    pub anchors: Vec<Anchor>,
}

/// `WRITER:SEQ:HASH`: writer `WRITER`'s event `SEQ` had hash `HASH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    pub writer: String,
    pub seq: u64,
    pub hash: String,
}

impl std::str::FromStr for Anchor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        // The writer id may itself contain `:`, so split from the right.
        let mut parts = s.rsplitn(3, ':');
        let (Some(hash), Some(seq), Some(writer)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("anchor {s:?}: expected WRITER:SEQ:HASH"));
        };
        let seq = seq
            .parse()
            .map_err(|_| format!("anchor {s:?}: {seq:?} is not a sequence number"))?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("anchor {s:?}: the hash must be 64 hex digits"));
        }
        Ok(Anchor {
            writer: writer.to_owned(),
            seq,
            hash: hash.to_ascii_lowercase(),
        })
    }
}

/// The first problem found: where, and what it means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `FILE:LINE`, or `--anchor` for an anchor that matches nothing.
    pub at: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

/// One writer's chain as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterChain {
    pub writer: String,
    pub first_seq: u64,
    pub last_seq: u64,
    pub last_hash: String,
    pub files: usize,
}

/// What an intact set of files holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub files: usize,
    pub events: u64,
    /// Events without a chain, skipped with `--allow-unchained`.
    pub unchained: u64,
    pub writers: Vec<WriterChain>,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "intact: {} file(s), {} chained event(s) from {} writer(s)",
            self.files,
            self.events,
            self.writers.len()
        )?;
        if self.unchained > 0 {
            writeln!(
                f,
                "  {} unchained event(s) skipped (--allow-unchained): they prove nothing",
                self.unchained
            )?;
        }
        for w in &self.writers {
            let start = if w.first_seq == 1 {
                "from the first event".to_owned()
            } else {
                format!(
                    "earlier events are not in these files (first seq {})",
                    w.first_seq
                )
            };
            writeln!(
                f,
                "  writer {}: seq {}..{} in {} file(s), {start}; last hash {} (anchor: {}:{}:{})",
                w.writer,
                w.first_seq,
                w.last_seq,
                w.files,
                w.last_hash,
                w.writer,
                w.last_seq,
                w.last_hash
            )?;
        }
        Ok(())
    }
}

/// A chained event and where it is.
#[derive(Debug, Clone)]
struct Entry {
    line: usize,
    link: Link,
}

/// One writer's events in one file.
#[derive(Debug)]
struct Segment {
    file: usize,
    first: Entry,
    last: Entry,
}

/// Checks `files`; `Ok` with a summary when every chain is intact.
pub fn verify(files: &[PathBuf], opts: &Options) -> Result<Summary, Problem> {
    let mut summary = Summary {
        files: files.len(),
        ..Summary::default()
    };
    let mut segments: BTreeMap<String, Vec<Segment>> = BTreeMap::new();
    let anchors: HashMap<(&str, u64), &str> = opts
        .anchors
        .iter()
        .map(|a| ((a.writer.as_str(), a.seq), a.hash.as_str()))
        .collect();
    let mut anchors_seen = 0;
    for (index, path) in files.iter().enumerate() {
        let entries = read_file(path, opts, &mut summary)?;
        for (writer, run) in check_file(path, &entries)? {
            for e in &run {
                if let Some(expected) = anchors.get(&(writer.as_str(), e.link.seq)) {
                    anchors_seen += 1;
                    if *expected != e.link.hash {
                        return Err(at(
                            path,
                            e.line,
                            format!(
                                "event seq {} of writer {writer} has hash {}, but the anchor says {expected}: the trail was rewritten at or before this event",
                                e.link.seq, e.link.hash
                            ),
                        ));
                    }
                }
            }
            summary.events += run.len() as u64;
            let (Some(first), Some(last)) = (run.first(), run.last()) else {
                continue;
            };
            segments.entry(writer).or_default().push(Segment {
                file: index,
                first: first.clone(),
                last: last.clone(),
            });
        }
    }
    if segments.is_empty() {
        return Err(Problem {
            at: files
                .first()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "(no files)".into()),
            message: "no chained audit events in the given files: nothing can be verified".into(),
        });
    }
    for (writer, segs) in &mut segments {
        summary.writers.push(link_files(files, writer, segs)?);
    }
    if anchors_seen < opts.anchors.len() {
        for a in &opts.anchors {
            let known = summary.writers.iter().find(|w| w.writer == a.writer);
            let message = match known {
                None => format!("no event of writer {} in these files", a.writer),
                Some(w) if a.seq > w.last_seq => format!(
                    "writer {}'s chain ends at seq {}, but event {} existed: events {}..{} were cut from the end",
                    a.writer,
                    w.last_seq,
                    a.seq,
                    w.last_seq + 1,
                    a.seq
                ),
                Some(w) if a.seq < w.first_seq => continue,
                Some(_) => continue,
            };
            return Err(Problem {
                at: format!("--anchor {}:{}", a.writer, a.seq),
                message,
            });
        }
    }
    Ok(summary)
}

fn at(path: &Path, line: usize, message: String) -> Problem {
    Problem {
        at: format!("{}:{line}", path.display()),
        message,
    }
}

/// Reads one file's chained events (in line order), failing on the first line that is not one.
fn read_file(path: &Path, opts: &Options, summary: &mut Summary) -> Result<Vec<Entry>, Problem> {
    let bytes = std::fs::read(path).map_err(|e| Problem {
        at: path.display().to_string(),
        message: format!("cannot read the file: {e}"),
    })?;
    let mut entries = Vec::new();
    let mut rest = &bytes[..];
    let mut line = 0;
    while !rest.is_empty() {
        line += 1;
        let Some(end) = rest.iter().position(|b| *b == b'\n') else {
            return Err(at(
                path,
                line,
                "the last line is incomplete (no newline): the file was truncated, or the writer stopped mid-line".into(),
            ));
        };
        let text = &rest[..end];
        rest = &rest[end + 1..];
        match parse_line(text) {
            Line::Chained(link) if link.intact() => entries.push(Entry { line, link }),
            Line::Chained(link) => {
                return Err(at(
                    path,
                    line,
                    format!(
                        "event seq {} of writer {} was edited: its content does not match its hash",
                        link.seq, link.writer
                    ),
                ));
            }
            Line::Unchained if opts.allow_unchained => summary.unchained += 1,
            Line::Unchained => {
                return Err(at(
                    path,
                    line,
                    "an event without a hash chain (written with `chain = false`, or before the chain was on): it cannot be verified (--allow-unchained skips such events)".into(),
                ));
            }
            Line::Broken(why) => return Err(at(path, line, why)),
        }
    }
    Ok(entries)
}

/// Checks each writer's events in one file follow each other; returns them per writer.
fn check_file(path: &Path, entries: &[Entry]) -> Result<BTreeMap<String, Vec<Entry>>, Problem> {
    let mut runs: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
    for e in entries {
        let run = runs.entry(e.link.writer.clone()).or_default();
        let Some(before) = run.last() else {
            if e.link.seq == 1 && e.link.prev != GENESIS {
                return Err(at(
                    path,
                    e.line,
                    format!(
                        "event seq 1 of writer {} does not start from the genesis hash",
                        e.link.writer
                    ),
                ));
            }
            run.push(e.clone());
            continue;
        };
        let expected = before.link.seq + 1;
        let w = &e.link.writer;
        if e.link.seq == expected {
            if e.link.prev != before.link.hash {
                return Err(at(
                    path,
                    e.line,
                    format!(
                        "event seq {} of writer {w} does not link to seq {} (line {}): an event was replaced, or edited and its hash recomputed",
                        e.link.seq, before.link.seq, before.line
                    ),
                ));
            }
            run.push(e.clone());
            continue;
        }
        // Out of step. A seq already seen: inserted or copied. A later one: a reorder when the
        // expected event comes later in this file, else a deletion.
        let message = if e.link.seq < expected {
            if e.link.seq == 1 && e.link.prev == GENESIS {
                format!(
                    "writer {w}'s chain starts again from seq 1: the first event was copied, two writers share this id, or files were spliced"
                )
            } else {
                format!(
                    "event seq {} of writer {w} after seq {} (line {}): an event was inserted, or lines were copied",
                    e.link.seq, before.link.seq, before.line
                )
            }
        } else {
            match entries
                .iter()
                .find(|x| x.line > e.line && x.link.writer == *w && x.link.seq == expected)
            {
                Some(x) => format!(
                    "event seq {} of writer {w} comes before seq {expected} (line {}): events were reordered",
                    e.link.seq, x.line
                ),
                None => format!(
                    "events {expected}..{} of writer {w} are missing before this line (after line {}): deleted",
                    e.link.seq - 1,
                    before.line
                ),
            }
        };
        return Err(at(path, e.line, message));
    }
    Ok(runs)
}

/// Puts one writer's files in `seq` order and checks each starts where the one before ended.
fn link_files(
    files: &[PathBuf],
    writer: &str,
    segs: &mut [Segment],
) -> Result<WriterChain, Problem> {
    segs.sort_by_key(|s| s.first.link.seq);
    for pair in segs.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let (pa, pb) = (&files[a.file], &files[b.file]);
        let expected = a.last.link.seq + 1;
        let message = if b.first.link.seq < expected {
            format!(
                "event seq {} of writer {writer} is also in {} (line {}): a file was given twice, or copied",
                b.first.link.seq,
                pa.display(),
                a.first.line
            )
        } else if b.first.link.seq > expected {
            format!(
                "events {expected}..{} of writer {writer} are missing between {} (ends at line {}) and this file: a file was not given, or events were cut from its end",
                b.first.link.seq - 1,
                pa.display(),
                a.last.line
            )
        } else if b.first.link.prev != a.last.link.hash {
            format!(
                "event seq {} of writer {writer} does not link to the last event of {} (line {}): that file's end was replaced",
                b.first.link.seq,
                pa.display(),
                a.last.line
            )
        } else {
            continue;
        };
        return Err(at(pb, b.first.line, message));
    }
    let (Some(first), Some(last)) = (segs.first(), segs.last()) else {
        return Err(Problem {
            at: format!("writer {writer}"),
            message: "no events".into(),
        });
    };
    Ok(WriterChain {
        writer: writer.to_owned(),
        first_seq: first.first.link.seq,
        last_seq: last.last.link.seq,
        last_hash: last.last.link.hash.clone(),
        files: segs.len(),
    })
}
