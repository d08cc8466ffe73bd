//! The PostgreSQL audit sink against a real `postgres` (issue 13): events stored in order, a
//! database outage that loses nothing and stores every event once, the append-only table, and a
//! full spool counted exactly.

use std::sync::atomic::Ordering;
use std::time::Duration;

use storegate::audit::chain::{Chain, ChainHead};
use storegate::audit::postgres::{self, SinkConfig, SinkStats};
use storegate::audit::{AuditEvent, AuditLog, EventKind, Outcome, TrailConfig};
use storegate::secret::Secret;

use crate::support::postgres::PostgresServer;
use crate::support::wait;

const WITHIN: Duration = Duration::from_secs(60);

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("sg-{tag}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn sink(url: &str, dir: &std::path::Path, spool_max: u64) -> SinkConfig {
    SinkConfig {
        url: Secret::new(url.to_owned()),
        spool_file: dir.join("audit.pgspool"),
        spool_max,
    }
}

/// The table as `writer:seq:hash` lines, in (writer, seq) order.
fn table(pg: &PostgresServer) -> Vec<String> {
    pg.psql(
        "postgres",
        "SELECT writer || ':' || seq || ':' || hash FROM audit_events ORDER BY writer, seq",
    )
    .expect("select")
    .lines()
    .map(str::to_owned)
    .collect()
}

/// The chain heads of `lines`, as `writer:seq:hash`.
fn heads(lines: &[Vec<u8>]) -> Vec<String> {
    lines
        .iter()
        .map(|l| match storegate::audit::chain::parse_line(l) {
            storegate::audit::chain::Line::Chained(link) => {
                format!("{}:{}:{}", link.writer, link.seq, link.hash)
            }
            other => panic!("not chained: {other:?}"),
        })
        .collect()
}

/// `n` sealed lines of writer `gw-test`, from seq `from`.
fn sealed(chain: &mut Chain, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut out = Vec::new();
            let ev = format!(
                r#"{{"time":"2026-12-02T10:00:00Z","request_id":"r{i}","event":"launch","outcome":"allow","store":"us"}}"#
            );
            chain.seal(ev.as_bytes(), &mut out);
            out.pop();
            out
        })
        .collect()
}

async fn until_count(what: &str, stats: &SinkStats, pick: fn(&SinkStats) -> u64, want: u64) {
    wait::until(what, WITHIN, || async { pick(stats) >= want }).await;
}

#[tokio::test]
async fn events_go_to_the_file_and_the_table_in_order_with_the_same_chain() {
    let pg = PostgresServer::start();
    let dir = temp_dir("pg-order");
    let (feed, stats, task) = postgres::start(sink(&pg.url(), &dir, 1 << 20));
    let trail = TrailConfig {
        writer_id: Some("gw-order".into()),
        ..TrailConfig::default()
    };
    let file = dir.join("audit.jsonl");
    let (log, writer) = AuditLog::open_with_sink(Some(&file), &trail, Some(feed)).expect("open");
    for i in 0..5 {
        let mut ev = AuditEvent::new(
            1_764_669_600 + i,
            &format!("r{i}"),
            EventKind::Launch,
            Outcome::Allow,
        );
        ev.store = Some("us".into());
        log.record(ev);
    }
    drop(log);
    writer.await.expect("writer");
    task.await.expect("sink task");
    assert_eq!(stats.stored.load(Ordering::Relaxed), 5);
    let lines: Vec<Vec<u8>> = std::fs::read(&file)
        .expect("file")
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    assert_eq!(
        table(&pg),
        heads(&lines),
        "same events, same order, same hashes"
    );
    // What the table holds verifies as a trail of its own.
    let rows = postgres::table_lines(&pg.url()).await.expect("read table");
    let copy = dir.join("from-table.jsonl");
    std::fs::write(&copy, rows.join("\n") + "\n").expect("write copy");
    let summary = storegate::audit::verify::verify(&[copy], &Default::default());
    assert!(
        summary.is_ok(),
        "{:?}",
        summary.err().map(|e| e.to_string())
    );
}

#[tokio::test]
async fn a_database_outage_loses_nothing_and_stores_every_event_once_in_order() {
    let mut pg = PostgresServer::start();
    let dir = temp_dir("pg-outage");
    let (feed, stats, task) = postgres::start(sink(&pg.url(), &dir, 1 << 20));
    let mut chain = Chain::new("gw-test", ChainHead::genesis());
    let all = sealed(&mut chain, 9);
    for l in &all[..3] {
        feed.push(l);
    }
    until_count("3 stored", &stats, |s| s.stored.load(Ordering::Relaxed), 3).await;
    assert!(stats.up.load(Ordering::Relaxed));

    pg.stop();
    for l in &all[3..7] {
        feed.push(l);
    }
    until_count(
        "4 spooled",
        &stats,
        |s| s.spooled.load(Ordering::Relaxed),
        4,
    )
    .await;
    assert!(!stats.up.load(Ordering::Relaxed));
    assert!(
        stats.spooling.load(Ordering::Relaxed),
        "readiness warns while spooling"
    );

    pg.start_again();
    until_count(
        "4 replayed",
        &stats,
        |s| s.replayed.load(Ordering::Relaxed),
        4,
    )
    .await;
    for l in &all[7..] {
        feed.push(l);
    }
    drop(feed);
    task.await.expect("sink task");
    assert_eq!(table(&pg), heads(&all), "every event once, in order");
    assert_eq!(stats.spooled.load(Ordering::Relaxed), 4);
    assert_eq!(stats.replayed.load(Ordering::Relaxed), 4);
    assert_eq!(stats.dropped.load(Ordering::Relaxed), 0);
    assert!(!stats.spooling.load(Ordering::Relaxed));
    assert!(!dir.join("audit.pgspool").exists(), "the spool is emptied");
    let text = stats.prometheus();
    assert!(
        text.contains("storegate_audit_db_events_total{result=\"spooled\"} 4\n"),
        "{text}"
    );
    assert!(
        text.contains("storegate_audit_db_events_total{result=\"replayed\"} 4\n"),
        "{text}"
    );
    assert!(text.contains("storegate_audit_db_up 1\n"), "{text}");

    // Replaying what is already stored stores nothing twice (insert keyed on writer, seq).
    let (feed, stats, task) = postgres::start(sink(&pg.url(), &dir, 1 << 20));
    feed.push(&all[0]);
    drop(feed);
    task.await.expect("sink task");
    assert_eq!(stats.stored.load(Ordering::Relaxed), 1, "the insert ran");
    assert_eq!(table(&pg), heads(&all), "and added nothing");
}

#[tokio::test]
async fn the_table_is_append_only_for_the_app_role_and_even_for_its_owner() {
    let pg = PostgresServer::start();
    let dir = temp_dir("pg-ro");
    let (feed, _stats, task) = postgres::start(sink(&pg.url(), &dir, 1 << 20));
    let mut chain = Chain::new("gw-test", ChainHead::genesis());
    for l in sealed(&mut chain, 2) {
        feed.push(&l);
    }
    drop(feed);
    task.await.expect("sink task");
    // The role docs/audit.md tells the DBA to create.
    pg.psql(
        "postgres",
        "CREATE ROLE storegate_app LOGIN; GRANT INSERT, SELECT ON audit_events TO storegate_app",
    )
    .expect("create role");
    assert_eq!(
        pg.psql("storegate_app", "SELECT count(*) FROM audit_events"),
        Ok("2".to_owned())
    );
    for sql in [
        "UPDATE audit_events SET event = 'edited' WHERE seq = 1",
        "DELETE FROM audit_events WHERE seq = 2",
        "TRUNCATE audit_events",
    ] {
        let err = pg.psql("storegate_app", sql).expect_err(sql);
        assert!(err.contains("permission denied"), "{sql}: {err}");
        // The owner is stopped by the trigger.
        let err = pg.psql("postgres", sql).expect_err(sql);
        assert!(err.contains("audit_events is append-only"), "{sql}: {err}");
    }
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT count(*) FROM audit_events WHERE event = 'launch'"
        ),
        Ok("2".to_owned())
    );
}

#[tokio::test]
async fn a_full_spool_drops_and_counts_exactly_what_did_not_fit() {
    // Nothing listens on this port: the database is away for the whole test.
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/postgres",
        crate::support::free_port()
    );
    let dir = temp_dir("pg-full");
    let mut chain = Chain::new("gw-test", ChainHead::genesis());
    let lines = sealed(&mut chain, 8);
    let each = lines[0].len() as u64 + 1;
    assert!(
        lines.iter().all(|l| l.len() as u64 + 1 == each),
        "same-size lines"
    );
    // Room for exactly three lines and a bit.
    let (feed, stats, task) = postgres::start(sink(&url, &dir, 3 * each + each / 2));
    for l in &lines {
        feed.push(l);
    }
    drop(feed);
    task.await.expect("sink task");
    assert_eq!(stats.spooled.load(Ordering::Relaxed), 3);
    assert_eq!(stats.dropped.load(Ordering::Relaxed), 5);
    assert_eq!(stats.stored.load(Ordering::Relaxed), 0);
    assert!(
        stats
            .prometheus()
            .contains("storegate_audit_db_events_total{result=\"dropped\"} 5\n")
    );
    let spooled = std::fs::read(dir.join("audit.pgspool")).expect("spool");
    let expected: Vec<u8> = lines[..3]
        .iter()
        .flat_map(|l| l.iter().copied().chain([b'\n']))
        .collect();
    assert_eq!(spooled, expected, "the oldest events are kept, in order");
}
