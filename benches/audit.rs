//! `cargo bench --bench audit`: audit events per second through the real writer (`AuditLog`) to a
//! file, with the hash chain on and off, and how fast `audit verify` checks the result (issue 13).
//! Launch throughput with the chain on vs off is a pair of rows in `benches/launch.rs`.
//!
//! What is measured: `record()` of N launch events from one task, until the writer thread has
//! written the last one (the log dropped and its writer task joined), so it is the writer's
//! sustained rate, batching included, and the CPU time (user + system) of the process per event,
//! which is the figure to compare on a shared machine. Settings: `BENCH_AUDIT_EVENTS` (200000).
//!
//! With the chain on, the same events also go to PostgreSQL (`audit.postgres_url`): a private
//! `postgres` started like the tests start it (or `BENCH_AUDIT_DB` = a URL to use instead),
//! `BENCH_AUDIT_DB_EVENTS` (20000) events, timed until the last one is in the table. The CPU
//! figure there is this process's only (the database's own is not counted).
//!
//! Under `cargo test --all-targets` (no `--bench`) it writes 2,000 chained events across
//! rotations, checks `verify` passes them and names a flipped byte, and checks `chain = false`
//! writes no chain fields. No timing is asserted.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use storegate::audit::verify::{Options, verify};
use storegate::audit::{AuditEvent, AuditLog, EventKind, Outcome, RotatePolicy, TrailConfig};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("cannot start the tokio runtime");
    let dir = Scratch::new();
    if !bench {
        runtime.block_on(self_check(&dir.0));
        eprintln!("audit benchmark: self-check passed; no load outside `cargo bench`");
        return;
    }
    let n: usize = std::env::var("BENCH_AUDIT_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    println!(
        "audit writer benchmark: {n} launch events from one task to a file, each setting twice, alternating"
    );
    println!(
        "  (CPU = user + system time of this process per event: the figure to compare on a busy machine)"
    );
    for round in 0..2 {
        for chain in [false, true] {
            let file = dir.0.join(format!("chain-{chain}-{round}.jsonl"));
            let cpu_before = cpu_seconds();
            let elapsed = runtime.block_on(write(&file, &trail(chain, None), 0..n));
            let cpu = cpu_seconds() - cpu_before;
            let bytes = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
            println!(
                "  chain {:<5}: {:>9.0} events/s wall, {:.2} us CPU/event, {:.0} bytes/event",
                chain,
                n as f64 / elapsed.as_secs_f64(),
                cpu * 1e6 / n as f64,
                bytes as f64 / n as f64
            );
            if chain && round == 1 {
                let cpu_before = cpu_seconds();
                let summary = verify(std::slice::from_ref(&file), &Options::default())
                    .unwrap_or_else(|p| panic!("the benchmark's own trail does not verify: {p}"));
                let cpu = cpu_seconds() - cpu_before;
                assert_eq!(summary.events, n as u64);
                println!(
                    "  audit verify: {:>9.0} events/s of CPU ({n} events in {cpu:.2} s CPU)",
                    n as f64 / cpu
                );
            }
        }
    }
    bench_postgres(&runtime, &dir.0);
}

/// The PostgreSQL row: `n` chained events through the file writer and the sink, until the sink
/// has stored them all.
fn bench_postgres(runtime: &tokio::runtime::Runtime, dir: &Path) {
    let n: usize = std::env::var("BENCH_AUDIT_DB_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let (_server, url) = match std::env::var("BENCH_AUDIT_DB") {
        Ok(url) => (None, url),
        Err(_) => {
            let pg = support::postgres::PostgresServer::start();
            let url = pg.url();
            (Some(pg), url)
        }
    };
    let file = dir.join("postgres.jsonl");
    let sink = storegate::audit::postgres::SinkConfig {
        url: storegate::secret::Secret::new(url),
        spool_file: dir.join("postgres.pgspool"),
        spool_max: 1 << 30,
    };
    let cpu_before = cpu_seconds();
    let (elapsed, stored, spooled) = runtime.block_on(async {
        let (feed, stats, task) = storegate::audit::postgres::start(sink);
        let (log, writer) =
            AuditLog::open_with_sink(Some(&file), &trail(true, None), Some(feed)).expect("open");
        let start = Instant::now();
        for i in 0..n {
            log.record(event(i));
        }
        drop(log);
        writer.await.expect("writer");
        task.await.expect("sink");
        use std::sync::atomic::Ordering::Relaxed;
        (
            start.elapsed(),
            stats.stored.load(Relaxed),
            stats.spooled.load(Relaxed) + stats.dropped.load(Relaxed),
        )
    });
    let cpu = cpu_seconds() - cpu_before;
    println!(
        "  postgres (chain on): {:>9.0} events/s wall into the table, {:.2} us CPU/event here, {stored} stored, {spooled} spooled or dropped",
        n as f64 / elapsed.as_secs_f64(),
        cpu * 1e6 / n as f64,
    );
}

/// User + system CPU seconds of this process so far.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we pass and reads nothing else.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

fn trail(chain: bool, rotate_size: Option<u64>) -> TrailConfig {
    TrailConfig {
        chain,
        writer_id: Some("bench-1".into()),
        rotate: RotatePolicy {
            max_bytes: rotate_size,
            max_age: None,
        },
    }
}

/// A launch event as the gateway writes one (same fields, similar sizes).
fn event(n: usize) -> AuditEvent {
    let mut ev = AuditEvent::new(
        1_796_000_000 + (n / 100) as i64,
        &format!("0f8c1e62-3b7a-4c1d-9f4e-{n:012}"),
        EventKind::Launch,
        Outcome::Allow,
    );
    ev.subject = Some(format!("am|user-{}", n % 997));
    ev.idp = Some("am".into());
    ev.email = Some(format!("user{}@example.com", n % 997));
    ev.store = Some("nw-us".into());
    ev.rule = Some("employees-us".into());
    ev.role = Some("buyer".into());
    ev.customer_id = Some(1000 + (n % 997) as u64);
    ev
}

/// Records `range` and waits until the writer has written them all; returns the time taken.
async fn write(file: &Path, trail: &TrailConfig, range: std::ops::Range<usize>) -> Duration {
    let (log, writer) = AuditLog::open_with_handle(Some(file), trail).expect("open the audit log");
    let start = Instant::now();
    for n in range {
        log.record(event(n));
    }
    drop(log);
    writer.await.expect("the audit writer finished");
    start.elapsed()
}

async fn self_check(dir: &Path) {
    let file = dir.join("check.jsonl");
    write(&file, &trail(true, Some(64 * 1024)), 0..2000).await;
    let mut files = storegate::audit::rotate::rotated_files(&file).expect("list rotated files");
    assert!(!files.is_empty(), "64 KiB files should have rotated");
    files.push(file.clone());
    let summary = verify(&files, &Options::default())
        .unwrap_or_else(|p| panic!("an untouched trail does not verify: {p}"));
    assert_eq!(summary.events, 2000);
    assert_eq!(summary.writers.len(), 1);
    assert_eq!(
        (summary.writers[0].first_seq, summary.writers[0].last_seq),
        (1, 2000)
    );
    // One flipped byte in the middle of the newest file is named.
    let mut bytes = std::fs::read(&file).expect("read the trail");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&file, &bytes).expect("write the trail");
    let problem = verify(&files, &Options::default()).expect_err("a flipped byte verified");
    assert!(
        problem.at.starts_with(&format!("{}:", file.display())),
        "{problem}"
    );

    let off = dir.join("off.jsonl");
    write(&off, &trail(false, None), 0..10).await;
    let text = std::fs::read_to_string(&off).expect("read");
    assert_eq!(text.lines().count(), 10);
    assert!(
        !text.contains("\"seq\"") && !text.contains("\"hash\""),
        "{text}"
    );
}

/// A fresh directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "storegate-bench-audit-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        ));
        std::fs::create_dir_all(&dir).expect("create the scratch directory");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
