//! The tamper-evident audit trail (issue 13): the real writer (`AuditLog`) writes a chained trail
//! across a rotation and a restart, and `storegate audit verify` (the built binary) passes it
//! untouched and names FILE:LINE of a flipped byte, a deleted line, a reordered pair, an inserted
//! line and a cut-off tail, with exit code 1.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use storegate::audit::{AuditEvent, AuditLog, EventKind, Outcome, RotatePolicy, TrailConfig};

use crate::cli::{BIN, TempDir};

const WRITER: &str = "gw-test-1";

fn trail_config(rotate_size: Option<u64>) -> TrailConfig {
    TrailConfig {
        chain: true,
        writer_id: Some(WRITER.to_owned()),
        rotate: RotatePolicy {
            max_bytes: rotate_size,
            max_age: None,
        },
    }
}

fn event(n: usize) -> AuditEvent {
    let mut ev = AuditEvent::new(
        1_796_000_000 + n as i64,
        &format!("req-{n}"),
        EventKind::Launch,
        Outcome::Allow,
    );
    ev.store = Some("nw-us".into());
    ev.subject = Some(format!("user-{n}"));
    ev
}

/// Runs one writer "process": opens `file`, records events `from..to`, stops and waits until
/// everything is written (the writer thread ends when the last sender is dropped).
async fn write_events(file: &Path, trail: &TrailConfig, range: std::ops::Range<usize>) {
    let (log, writer) = AuditLog::open_with_handle(Some(file), trail).expect("open the audit log");
    for n in range {
        log.record(event(n));
    }
    drop(log);
    writer.await.expect("the audit writer finished");
}

/// The active file and its rotated siblings, oldest first.
fn trail_files(file: &Path) -> Vec<PathBuf> {
    let mut files = storegate::audit::rotate::rotated_files(file).expect("list rotated files");
    files.push(file.to_owned());
    files
}

fn verify(files: &[PathBuf], extra: &[&str]) -> Output {
    Command::new(BIN)
        .args(["audit", "verify"])
        .args(extra)
        .args(files)
        .output()
        .expect("run storegate audit verify")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Asserts exit code 1 and that the first stderr line is `FILE:LINE: ...` containing `says`.
fn assert_refused(o: &Output, file: &Path, line: usize, says: &str) {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "stderr: {err}\nstdout: {}",
        stdout(o)
    );
    let first = err.lines().next().unwrap_or_default();
    let at = format!("{}:{line}: ", file.display());
    assert!(first.starts_with(&at), "expected {at:?}..., got {first:?}");
    assert!(first.contains(says), "expected {says:?} in {first:?}");
    assert!(err.contains("the audit trail does not verify"), "{err}");
}

fn read_lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .expect("read the audit file")
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(p: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(p, text).expect("write the audit file");
}

/// A trail of 50 events: 40 written across size rotations, then a restart adds 10 more.
async fn rotated_and_restarted(dir: &TempDir) -> PathBuf {
    let file = dir.write("storegate.jsonl", "");
    let trail = trail_config(Some(2048));
    write_events(&file, &trail, 0..40).await;
    write_events(&file, &trail, 40..50).await;
    file
}

#[tokio::test]
async fn an_untouched_trail_verifies_across_rotation_and_restart() {
    let dir = TempDir::new("audit-intact");
    let file = rotated_and_restarted(&dir).await;
    let files = trail_files(&file);
    assert!(
        files.len() >= 3,
        "2 KiB files should have rotated: {files:?}"
    );
    // Each rotated file's first event links to the last hash of the file before it.
    for pair in files.windows(2) {
        let last: serde_json::Value =
            serde_json::from_str(read_lines(&pair[0]).last().unwrap()).unwrap();
        let first: serde_json::Value = serde_json::from_str(&read_lines(&pair[1])[0]).unwrap();
        assert_eq!(first["prev"], last["hash"], "{pair:?}");
        assert_eq!(first["seq"].as_u64(), last["seq"].as_u64().map(|s| s + 1));
    }
    // The restart continued the chain: seq 41 links to seq 40, no second genesis.
    let all: Vec<serde_json::Value> = files
        .iter()
        .flat_map(|f| read_lines(f))
        .map(|l| serde_json::from_str(&l).unwrap())
        .collect();
    let seqs: Vec<u64> = all.iter().map(|v| v["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
    assert!(all.iter().all(|v| v["writer"] == WRITER));
    assert_eq!(all[0]["prev"], storegate::audit::chain::GENESIS);
    assert_eq!(all[40]["prev"], all[39]["hash"]);
    assert_eq!(all[40]["request_id"], "req-40");

    // Files in any order: verify sorts a writer's files by seq.
    let mut shuffled = files.clone();
    shuffled.reverse();
    let o = verify(&shuffled, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains(&format!(
            "intact: {} file(s), 50 chained event(s) from 1 writer(s)",
            files.len()
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("writer {WRITER}: seq 1..50")),
        "{out}"
    );
}

#[tokio::test]
async fn verify_names_a_flipped_byte() {
    let dir = TempDir::new("audit-flip");
    let active = rotated_and_restarted(&dir).await;
    let files = trail_files(&active);
    // The oldest file is a full one (several events).
    let file = files[0].clone();
    let mut bytes = std::fs::read(&file).unwrap();
    // Inside line 2's `subject` value: `user-…` becomes `vser-…`.
    let line2 = bytes.iter().position(|b| *b == b'\n').unwrap() + 1;
    let at = line2 + find(&bytes[line2..], b"\"subject\":\"u").unwrap() + 11;
    bytes[at] ^= 0x03;
    std::fs::write(&file, &bytes).unwrap();
    let o = verify(&files, &[]);
    assert_refused(
        &o,
        &file,
        2,
        "was edited: its content does not match its hash",
    );
}

#[tokio::test]
async fn verify_names_a_deleted_line() {
    let dir = TempDir::new("audit-delete");
    let active = rotated_and_restarted(&dir).await;
    let files = trail_files(&active);
    // The oldest file is a full one (several events).
    let file = files[0].clone();
    let mut lines = read_lines(&file);
    let gone: serde_json::Value = serde_json::from_str(&lines.remove(2)).unwrap();
    write_lines(&file, &lines);
    let o = verify(&files, &[]);
    let seq = gone["seq"].as_u64().unwrap();
    assert_refused(
        &o,
        &file,
        3,
        &format!(
            "events {seq}..{seq} of writer {WRITER} are missing before this line (after line 2): deleted"
        ),
    );
}

#[tokio::test]
async fn verify_names_a_reordered_pair() {
    let dir = TempDir::new("audit-reorder");
    let active = rotated_and_restarted(&dir).await;
    let files = trail_files(&active);
    // The oldest file is a full one (several events).
    let file = files[0].clone();
    let mut lines = read_lines(&file);
    lines.swap(1, 2);
    write_lines(&file, &lines);
    let o = verify(&files, &[]);
    assert_refused(&o, &file, 2, "comes before seq");
    assert!(
        stderr(&o).contains("(line 3): events were reordered"),
        "{}",
        stderr(&o)
    );
}

#[tokio::test]
async fn verify_names_an_inserted_copy() {
    let dir = TempDir::new("audit-insert");
    let active = rotated_and_restarted(&dir).await;
    let files = trail_files(&active);
    // The oldest file is a full one (several events).
    let file = files[0].clone();
    let mut lines = read_lines(&file);
    let copy = lines[1].clone();
    lines.insert(3, copy);
    write_lines(&file, &lines);
    let o = verify(&files, &[]);
    assert_refused(&o, &file, 4, "an event was inserted, or lines were copied");
}

#[tokio::test]
async fn verify_names_a_tail_cut_mid_line() {
    let dir = TempDir::new("audit-truncate");
    let file = rotated_and_restarted(&dir).await;
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() - 30]).unwrap();
    let n = read_lines(&file).len();
    let o = verify(&trail_files(&file), &[]);
    assert_refused(&o, &file, n, "the last line is incomplete (no newline)");
}

#[tokio::test]
async fn verify_names_whole_lines_cut_from_a_rotated_file() {
    let dir = TempDir::new("audit-cut-rotated");
    let file = rotated_and_restarted(&dir).await;
    let files = trail_files(&file);
    let oldest = &files[0];
    let mut lines = read_lines(oldest);
    let kept = lines.len() - 2;
    lines.truncate(kept);
    write_lines(oldest, &lines);
    let o = verify(&files, &[]);
    // The next file starts with the hash of the removed last event: the gap shows there.
    assert_refused(
        &o,
        &files[1],
        1,
        &format!("are missing between {}", oldest.display()),
    );
}

#[tokio::test]
async fn an_anchor_catches_whole_lines_cut_from_the_newest_file() {
    let dir = TempDir::new("audit-cut-live");
    let file = rotated_and_restarted(&dir).await;
    let files = trail_files(&file);
    // The auditor kept the summary's anchor from an earlier run.
    let o = verify(&files, &[]);
    let out = stdout(&o);
    let anchor = out
        .split("(anchor: ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .expect("the summary names an anchor")
        .to_owned();
    assert!(anchor.starts_with(&format!("{WRITER}:50:")), "{anchor}");
    // The newest file may hold a single event: cut one.
    let mut lines = read_lines(&file);
    lines.truncate(lines.len() - 1);
    write_lines(&file, &lines);
    // Without the anchor a cleanly cut tail is a shorter valid chain...
    assert_eq!(verify(&files, &[]).status.code(), Some(0));
    // ...with it, the cut is named.
    let o = verify(&files, &["--anchor", &anchor]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).starts_with(&format!(
            "--anchor {WRITER}:50: writer {WRITER}'s chain ends at seq 49, but event 50 existed: events 50..50 were cut from the end"
        )),
        "{}",
        stderr(&o)
    );
}

#[tokio::test]
async fn sighup_reopen_starts_a_new_file_that_links_to_the_moved_one() {
    let dir = TempDir::new("audit-reopen");
    let file = dir.write("storegate.jsonl", "");
    let moved = file.with_extension("jsonl.logrotate");
    let (log, writer) = AuditLog::open_with_handle(Some(&file), &trail_config(None)).expect("open");
    for n in 0..5 {
        log.record(event(n));
    }
    crate::support::wait::until(
        "the first five events are written",
        std::time::Duration::from_secs(10),
        || {
            let written = std::fs::read_to_string(&file).is_ok_and(|t| t.lines().count() == 5);
            async move { written }
        },
    )
    .await;
    // logrotate: move the file away, then signal.
    std::fs::rename(&file, &moved).unwrap();
    log.reopen();
    for n in 5..8 {
        log.record(event(n));
    }
    drop(log);
    writer.await.unwrap();
    assert_eq!(read_lines(&moved).len(), 5);
    assert_eq!(read_lines(&file).len(), 3);
    let o = verify(&[file.clone(), moved.clone()], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("seq 1..8 in 2 file(s)"),
        "{}",
        stdout(&o)
    );
}

#[tokio::test]
async fn two_writers_in_one_file_keep_separate_chains() {
    let dir = TempDir::new("audit-two-writers");
    let file = dir.write("storegate.jsonl", "");
    let other = TrailConfig {
        writer_id: Some("gw-test-1-reconcile-7".into()),
        ..trail_config(None)
    };
    write_events(&file, &trail_config(None), 0..3).await;
    write_events(&file, &other, 3..5).await;
    // The first writer restarts: its last event is not the file's last line.
    write_events(&file, &trail_config(None), 5..7).await;
    let o = verify(std::slice::from_ref(&file), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains(&format!("writer {WRITER}: seq 1..5")), "{out}");
    assert!(
        out.contains("writer gw-test-1-reconcile-7: seq 1..2"),
        "{out}"
    );
}

#[tokio::test]
async fn an_unchained_trail_is_refused_and_chain_false_writes_the_old_format() {
    let dir = TempDir::new("audit-unchained");
    let file = dir.write("storegate.jsonl", "");
    let off = TrailConfig {
        chain: false,
        ..trail_config(None)
    };
    write_events(&file, &off, 0..2).await;
    let first: serde_json::Value = serde_json::from_str(&read_lines(&file)[0]).unwrap();
    assert_eq!(first["request_id"], "req-0");
    for k in ["seq", "writer", "prev", "hash"] {
        assert!(first.get(k).is_none(), "chain = false wrote {k}");
    }
    let o = verify(std::slice::from_ref(&file), &[]);
    assert_refused(&o, &file, 1, "an event without a hash chain");
    // Turning the chain on later: the old lines are skipped only when asked.
    write_events(&file, &trail_config(None), 2..4).await;
    let o = verify(std::slice::from_ref(&file), &["--allow-unchained"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("2 unchained event(s) skipped"),
        "{}",
        stdout(&o)
    );
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Correlation ids end to end: the launch's response, every BigCommerce call it made (the
/// simulator records `X-Request-Id`) and its audit event carry the same request id.
#[tokio::test]
async fn a_launch_its_bigcommerce_calls_and_its_audit_event_share_one_request_id() {
    use crate::harness::{Gateway, MAIN_HASH, Opts, Reserved};
    use crate::support::browser::Browser;
    use crate::support::rogue_op::RogueOp;
    const CLIENT: &str = "storegate";
    const SECRET: &str = "audit-client-secret-0123456789";

    let op = RogueOp::start(CLIENT, SECRET).await;
    op.set_claims(serde_json::json!({"email": "lee@corp.example", "email_verified": true, "given_name": "Lee", "family_name": "Tester", "groups": ["bc-merchandisers"]}));
    let gw = Gateway::start(Reserved::new().await, Opts::new(&op.issuer, CLIENT, SECRET)).await;
    let b = Browser::new();
    let start = b.get(&gw.url("/login")).await;
    let done = b.follow_while(start, |u| u.path() != "/").await;
    assert_eq!(done.status(), 303, "signed in: {}", b.hops_text());
    let before = gw.sim.request_ids(MAIN_HASH).len();

    let launch = b.get(&gw.url("/stores/us/launch")).await;
    assert_eq!(launch.status(), 302);
    let rid = launch
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("the response names its request id")
        .to_owned();
    let calls = gw.sim.request_ids(MAIN_HASH)[before..].to_vec();
    // The first launch looks the customer up, creates it and reads the store clock.
    assert!(
        calls.len() >= 2,
        "BigCommerce calls of the launch: {calls:?}"
    );
    assert!(calls.iter().all(|id| *id == rid), "{calls:?} vs {rid}");
    let events = gw.audit_events().await;
    let ev = events
        .iter()
        .find(|e| e.event == EventKind::Launch && e.outcome == Outcome::Allow)
        .expect("a granted launch is audited");
    assert_eq!(ev.request_id, rid);
}
