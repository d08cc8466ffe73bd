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

/// The table's seqs in the order the rows were inserted (each insert is its own transaction,
/// so its xmin grows with insertion order).
fn insertion_order(pg: &PostgresServer) -> Vec<u64> {
    pg.psql(
        "postgres",
        "SELECT seq FROM audit_events ORDER BY xmin::text::bigint, seq",
    )
    .expect("select")
    .lines()
    .map(|l| l.parse().expect("seq"))
    .collect()
}

/// Pushes `lines` as the writer thread does (it never waits), from a blocking thread.
async fn burst(feed: &postgres::Feed, lines: &[Vec<u8>]) {
    let feed = feed.clone();
    let lines = lines.to_vec();
    tokio::task::spawn_blocking(move || {
        for l in &lines {
            feed.push(l);
        }
    })
    .await
    .expect("burst");
}

#[tokio::test]
async fn a_burst_beyond_the_channel_spills_to_the_spool_and_every_event_lands_once_in_order() {
    let mut pg = PostgresServer::start();
    let dir = temp_dir("pg-burst");
    let (feed, stats, task) = postgres::start(sink(&pg.url(), &dir, 64 << 20));
    let mut chain = Chain::new("gw-burst", ChainHead::genesis());
    let n = 3 * postgres::CHANNEL_CAPACITY;
    let all = sealed(&mut chain, 2 * n + 1);
    feed.push(&all[0]);
    until_count("1 stored", &stats, |s| s.stored.load(Ordering::Relaxed), 1).await;

    // Slow: another session holds the table locked, so inserts wait while the burst comes.
    let mut locker = std::process::Command::new(pg.psql_bin());
    locker.args(["-X", "-q", "-d", &pg.url(), "-c"]).arg(
        "BEGIN; LOCK TABLE audit_events IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(8); COMMIT;",
    );
    let locker = std::thread::spawn(move || locker.output());
    wait::until("the table locked", WITHIN, || async {
        pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' AND relation = 'audit_events'::regclass",
        )
        .is_ok_and(|c| c == "1")
    })
    .await;
    burst(&feed, &all[1..=n]).await;
    assert!(
        stats.channel_full.load(Ordering::Relaxed) > 0,
        "the channel filled up and the writer spilled"
    );
    assert!(stats.spooling.load(Ordering::Relaxed));
    assert_eq!(stats.dropped.load(Ordering::Relaxed), 0);
    let _ = locker.join();

    // Absent: the database goes away mid-burst and comes back.
    until_count(
        "the first burst stored",
        &stats,
        |s| s.stored.load(Ordering::Relaxed),
        n as u64 + 1,
    )
    .await;
    pg.stop();
    burst(&feed, &all[n + 1..]).await;
    pg.start_again();
    wait::until("the spool replayed", WITHIN, || async {
        !stats.spooling.load(Ordering::Relaxed)
    })
    .await;
    drop(feed);
    task.await.expect("sink task");

    assert_eq!(table(&pg), heads(&all), "every event once");
    let seqs: Vec<u64> = (1..=all.len() as u64).collect();
    assert_eq!(insertion_order(&pg), seqs, "inserted in chain order");
    assert_eq!(stats.dropped.load(Ordering::Relaxed), 0);
    assert!(stats.spooled.load(Ordering::Relaxed) >= n as u64);
    assert!(!stats.spooling.load(Ordering::Relaxed));
    assert!(!dir.join("audit.pgspool").exists(), "the spool is emptied");
    let text = stats.prometheus();
    assert!(
        !text.contains("storegate_audit_db_channel_full_total 0\n"),
        "{text}"
    );
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

/// `storegate audit migrate --postgres URL`: stdout, or stderr as the error.
fn audit_migrate(url: &str) -> Result<String, String> {
    let out = std::process::Command::new(crate::cli::BIN)
        .args(["audit", "migrate", "--postgres", url])
        .env_remove("STOREGATE_AUDIT_OWNER_DB")
        .output()
        .expect("run storegate");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

#[tokio::test]
async fn the_owner_migrates_and_the_gateway_runs_as_a_role_that_may_only_insert_and_select() {
    let pg = PostgresServer::start();
    // The roles docs/audit.md tells the DBA to create (PostgreSQL 15 and later: nobody but the
    // database owner may create in schema public).
    pg.psql(
        "postgres",
        "CREATE ROLE storegate_owner LOGIN; CREATE ROLE storegate_app LOGIN; \
         GRANT CREATE ON SCHEMA public TO storegate_owner",
    )
    .expect("roles");
    let dir = temp_dir("pg-roles");
    let (feed, stats, task) = postgres::start(sink(&pg.url_as("storegate_app"), &dir, 1 << 20));
    let mut chain = Chain::new("gw-roles", ChainHead::genesis());
    let all = sealed(&mut chain, 4);

    // Before the owner migrated, the app role cannot create the table: events wait in the spool.
    feed.push(&all[0]);
    until_count(
        "1 spooled",
        &stats,
        |s| s.spooled.load(Ordering::Relaxed),
        1,
    )
    .await;
    assert_eq!(stats.stored.load(Ordering::Relaxed), 0);
    let refused =
        audit_migrate(&pg.url_as("storegate_app")).expect_err("the app role cannot migrate");
    assert!(
        refused.starts_with("storegate: cannot migrate the audit table: ")
            && refused.ends_with("permission denied for schema public"),
        "{refused}"
    );

    assert_eq!(
        audit_migrate(&pg.url_as("storegate_owner")),
        Ok(
            "applied V1__audit_events, V2__audit_events_time, V3__audit_events_request_id"
                .to_owned()
        )
    );
    assert_eq!(
        audit_migrate(&pg.url_as("storegate_owner")),
        Ok("audit_events is current; nothing to apply".to_owned())
    );
    pg.psql(
        "storegate_owner",
        "GRANT SELECT, INSERT ON audit_events TO storegate_app; \
         GRANT SELECT ON refinery_schema_history TO storegate_app",
    )
    .expect("grants");

    // The sink, still as the app role, finds the table current and replays the spool.
    for l in &all[1..] {
        feed.push(l);
    }
    until_count("4 stored", &stats, |s| s.stored.load(Ordering::Relaxed), 4).await;
    drop(feed);
    task.await.expect("sink task");
    assert_eq!(table(&pg), heads(&all), "every event once, in order");

    for sql in [
        "UPDATE audit_events SET event = 'edited' WHERE seq = 1",
        "DELETE FROM audit_events WHERE seq = 2",
        "TRUNCATE audit_events",
        "DELETE FROM refinery_schema_history",
        "DROP TABLE audit_events",
        "CREATE TABLE audit_events_copy (line text)",
    ] {
        let err = pg.psql("storegate_app", sql).expect_err(sql);
        assert!(
            err.contains("permission denied") || err.contains("must be owner"),
            "{sql}: {err}"
        );
    }
    // The owner is stopped by the trigger too.
    let err = pg
        .psql("storegate_owner", "DELETE FROM audit_events")
        .expect_err("owner delete");
    assert!(
        err.contains("audit_events is append-only: DELETE refused"),
        "{err}"
    );
    assert_eq!(
        pg.psql("storegate_app", "SELECT count(*) FROM audit_events"),
        Ok("4".to_owned())
    );
}

/// One event sealed into `chain`, as the writer would (without the newline).
fn seal_json(chain: &mut Chain, json: &str) -> Vec<u8> {
    let mut out = Vec::new();
    chain.seal(json.as_bytes(), &mut out);
    out.pop();
    out
}

#[tokio::test]
async fn the_access_review_reads_last_launches_from_the_table_when_there_is_one_else_from_the_files()
 {
    use storegate::access_review::sources::last_launches;
    let pg = PostgresServer::start();
    let dir = temp_dir("pg-launches");
    // Replica A's events reach the table; replica B's file is all this replica has of its own.
    let cfg = sink(&pg.url(), &dir, 1 << 20);
    let (feed, stats, task) = postgres::start(cfg.clone());
    let mut a = Chain::new("gw-a", ChainHead::genesis());
    for ev in [
        r#"{"time":"2026-12-01T10:00:00Z","request_id":"r1","event":"launch","outcome":"allow","subject":"alice","idp":"corp","store":"us"}"#,
        r#"{"time":"2026-12-01T11:00:00Z","request_id":"r2","event":"launch","outcome":"allow","subject":"alice","idp":"corp","store":"us","rule":"staff"}"#,
        r#"{"time":"2026-12-01T09:00:00Z","request_id":"r3","event":"launch","outcome":"allow","subject":"alice","idp":"corp","store":"us"}"#,
        r#"{"time":"2026-12-01T12:00:00Z","request_id":"r4","event":"launch","outcome":"deny","subject":"bob","idp":"corp","store":"eu"}"#,
        r#"{"time":"2026-12-01T12:30:00Z","request_id":"r5","event":"sign_in","outcome":"allow","subject":"carol","idp":"corp"}"#,
    ] {
        feed.push(&seal_json(&mut a, ev));
    }
    until_count("5 stored", &stats, |s| s.stored.load(Ordering::Relaxed), 5).await;
    drop(feed);
    task.await.expect("sink task");
    let file = dir.join("replica-b.jsonl");
    std::fs::write(
        &file,
        "{\"time\":\"2026-12-01T13:00:00Z\",\"request_id\":\"r9\",\"event\":\"launch\",\"outcome\":\"allow\",\"subject\":\"dave\",\"idp\":\"corp\",\"store\":\"us\"}\n",
    )
    .expect("file");
    let files = [file];
    let at = |rfc: &str| {
        time::OffsetDateTime::parse(rfc, &time::format_description::well_known::Rfc3339)
            .expect("time")
            .unix_timestamp()
    };
    let pairs = |l: &storegate::access_review::Launches| -> Vec<(String, String, i64)> {
        l.iter()
            .map(|((s, st), v)| (s.clone(), st.clone(), v.at))
            .collect()
    };

    // [audit] postgres_url set: the fleet's launches, the newest per person and store.
    let (launches, from, warnings) = last_launches(Some(&cfg), &files).await;
    assert_eq!(
        pairs(&launches),
        [(
            "alice".to_owned(),
            "us".to_owned(),
            at("2026-12-01T11:00:00Z")
        )]
    );
    assert_eq!(
        launches.values().next().and_then(|l| l.rule.as_deref()),
        Some("staff")
    );
    assert_eq!(from, "the audit table (every replica)");
    assert!(warnings.is_empty(), "{warnings:?}");

    // Not set: this replica's files.
    let (launches, from, warnings) = last_launches(None, &files).await;
    assert_eq!(
        pairs(&launches),
        [(
            "dave".to_owned(),
            "us".to_owned(),
            at("2026-12-01T13:00:00Z")
        )]
    );
    assert_eq!(from, "this replica's audit files");
    assert!(warnings.is_empty(), "{warnings:?}");

    // Set but unreachable: the files, and a warning saying so.
    let away = sink(
        &format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            crate::support::free_port()
        ),
        &dir,
        1 << 20,
    );
    let (launches, from, warnings) = last_launches(Some(&away), &files).await;
    assert_eq!(pairs(&launches).len(), 1);
    assert_eq!(from, "this replica's audit files");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0]
            .starts_with("the audit table was not read (cannot connect to the audit database: "),
        "{warnings:?}"
    );
    assert!(
        !warnings[0].contains("postgres://"),
        "no URL in a warning: {warnings:?}"
    );
}

#[tokio::test]
async fn the_console_reads_every_replicas_activity_from_the_table() {
    use storegate::web::admin::fleet;
    let pg = PostgresServer::start();
    let dir = temp_dir("pg-fleet");
    let (feed, stats, task) = postgres::start(sink(&pg.url(), &dir, 1 << 20));
    let now = 1_796_205_600 + 1800; // 2026-12-02T10:30:00Z
    let mut a = Chain::new("gw-a", ChainHead::genesis());
    let mut b = Chain::new("gw-b", ChainHead::genesis());
    let lines = [
        seal_json(
            &mut a,
            r#"{"time":"2026-12-02T10:01:00Z","request_id":"r1","event":"sign_in","outcome":"allow","subject":"s1","idp":"nam"}"#,
        ),
        seal_json(
            &mut b,
            r#"{"time":"2026-12-02T10:05:00Z","request_id":"r2","event":"sign_in","outcome":"allow","subject":"s2","idp":"nam"}"#,
        ),
        seal_json(
            &mut b,
            r#"{"time":"2026-12-02T09:10:00Z","request_id":"r3","event":"launch","outcome":"allow","subject":"s2","store":"us"}"#,
        ),
        seal_json(
            &mut a,
            r#"{"time":"2026-12-02T10:07:00Z","request_id":"r4","event":"launch","outcome":"deny","subject":"s1","email":"ann@corp.example","store":"eu","rule":"contractors-never-eu","reason":"not_entitled"}"#,
        ),
        seal_json(
            &mut b,
            r#"{"time":"2026-11-01T10:00:00Z","request_id":"r5","event":"sign_in","outcome":"allow","subject":"s3","idp":"old"}"#,
        ),
    ];
    for l in &lines {
        feed.push(l);
    }
    until_count("5 stored", &stats, |s| s.stored.load(Ordering::Relaxed), 5).await;
    drop(feed);
    task.await.expect("sink task");

    let f = fleet::read(&pg.url(), now).await.expect("read the table");
    let last = f.hours.last().expect("hours");
    assert_eq!(
        (last.sign_ins, last.launches, last.denials),
        (2, 0, 1),
        "both replicas"
    );
    assert_eq!(f.hours[f.hours.len() - 2].launches, 1);
    assert_eq!(f.denials.len(), 1);
    assert_eq!(f.denials[0].rule, "contractors-never-eu");
    assert_eq!(f.denials[0].who, "ann@corp.example");
    assert_eq!(
        f.last_sign_in.get("nam").map(String::as_str),
        Some("2026-12-02T10:05:00Z"),
        "the newest of either replica"
    );
    assert!(
        !f.last_sign_in.contains_key("old"),
        "older than the look-back"
    );
}
