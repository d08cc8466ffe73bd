//! The provisioning queue in Redis (issue 5, issue 6): a Stream per account read through one
//! consumer group by several executors, against a private `redis-server` and the BigCommerce
//! simulator with rate limits and injected 5xx.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use storegate::audit::{AuditEvent, AuditLog, EventKind, Outcome};
use storegate::clock::{Clock, SystemClock};
use storegate::config::Config;
use storegate::flows::provision::{Reconciler, scheduled_pass};
use storegate::provisioning::queue::QueueStats;
use storegate::provisioning::reconcile::Action;

use crate::support::provisioning::{
    HASHES, assert_exactly_once, config_text, fast, optimistic_creates_case, scim_with_users,
    simulator, temp,
};
use crate::support::redis::RedisServer;

fn redis_config(sim_base: &str, redis: &RedisServer, claim_after: &str) -> Config {
    config_text(
        sim_base,
        &format!("queue = \"redis\"\nqueue_claim_after = \"{claim_after}\"\n"),
        &format!(
            "[session]\nstore = \"redis\"\nredis_url = \"{}\"\n",
            redis.url()
        ),
    )
}

fn reconciler(cfg: &Arc<Config>, audit: AuditLog) -> Reconciler {
    storegate::app::reconciler(cfg.clone(), audit, Arc::new(SystemClock), fast()).unwrap()
}

fn drain_audit(rx: &mut tokio::sync::mpsc::UnboundedReceiver<AuditEvent>) -> Vec<AuditEvent> {
    let mut out = Vec::new();
    while let Ok(ev) = rx.try_recv() {
        out.push(ev);
    }
    out
}

/// (account, email) of every `create` audited as done, failing on a repeated one.
fn created(events: &[AuditEvent], seen: &mut HashSet<(String, String)>) -> usize {
    let mut n = 0;
    for ev in events {
        if ev.event == EventKind::Provision
            && ev.outcome == Outcome::Allow
            && ev.reason.as_deref() == Some("create")
        {
            let key = (
                ev.target.clone().unwrap_or_default(),
                ev.email.clone().unwrap_or_default(),
            );
            assert!(seen.insert(key.clone()), "created twice: {key:?}");
            n += 1;
        }
    }
    n
}

fn settled() -> QueueStats {
    QueueStats {
        waiting: 0,
        in_flight: 0,
        dead_letters: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_share_a_1000_user_wave_over_3_stores_without_loss_or_duplicate() {
    let redis = RedisServer::start();
    let (sim, base) = simulator(200, 250).await;
    let cfg = Arc::new(redis_config(&base, &redis, "5m"));
    let scim = scim_with_users(1000, "staff").await;
    let (audit_a, mut rx_a) = AuditLog::channel();
    let (audit_b, mut rx_b) = AuditLog::channel();
    let a = reconciler(&cfg, audit_a);
    let b = reconciler(&cfg, audit_b);
    let plan = a
        .plan(
            &scim.snapshot().await.expect("SCIM snapshot"),
            SystemClock.now(),
        )
        .await
        .unwrap();
    assert_eq!(plan.len(), 3000);
    a.executor.queue.enqueue("wave", plan).await.unwrap();
    assert_eq!(
        b.executor.queue.stats().await.unwrap(),
        QueueStats {
            waiting: 3000,
            in_flight: 0,
            dead_letters: 0
        },
        "both executors see the one shared queue"
    );
    // A BigCommerce hiccup in the middle of the wave.
    sim.fail_next(25, axum::http::StatusCode::SERVICE_UNAVAILABLE);
    let (da, db) = tokio::join!(a.executor.drain(None), b.executor.drain(None));
    println!("consumer a: {da:?}\nconsumer b: {db:?}");
    assert!(
        da.stalled.is_empty() && db.stalled.is_empty(),
        "{da:?} {db:?}"
    );
    assert_eq!(da.failed + db.failed, 0);
    assert_eq!(da.done + db.done, 3000, "every item done exactly once");
    assert!(da.done > 0 && db.done > 0, "both consumers did work");
    assert_eq!(
        da.retried + db.retried,
        25,
        "each injected 5xx retried once"
    );
    assert_exactly_once(&sim, 1000);
    let mut seen = HashSet::new();
    let by_a = created(&drain_audit(&mut rx_a), &mut seen);
    let by_b = created(&drain_audit(&mut rx_b), &mut seen);
    assert_eq!(by_a + by_b, 3000);
    assert_eq!(a.executor.queue.stats().await.unwrap(), settled());
    assert_eq!(a.executor.queue.len().await.unwrap(), 0);
    let again = a
        .plan(
            &scim.snapshot().await.expect("SCIM snapshot"),
            SystemClock.now(),
        )
        .await
        .unwrap();
    assert!(again.is_empty(), "{:?}", &again[..again.len().min(3)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_dropped_with_work_pending_is_taken_over_by_the_other() {
    let redis = RedisServer::start();
    let (sim, base) = simulator(400, 250).await;
    let cfg = Arc::new(redis_config(&base, &redis, "1s"));
    let scim = scim_with_users(200, "staff").await;
    let data = scim.snapshot().await.expect("SCIM snapshot");
    let a = reconciler(&cfg, AuditLog::channel().0);
    let b = reconciler(&cfg, AuditLog::channel().0);
    let plan = b.plan(&data, SystemClock.now()).await.unwrap();
    b.executor.queue.enqueue("run-1", plan).await.unwrap();
    // B works for a while and is stopped at an arbitrary point (possibly mid-call) ...
    let ex = b.executor.clone();
    let worker = tokio::spawn(async move { ex.drain(None).await });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while sim.customers("store1").len() < 50 {
        assert!(
            !worker.is_finished() && std::time::Instant::now() < deadline,
            "the worker stopped or stalled before 50 customers on store1"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    worker.abort();
    let _ = worker.await;
    // ... and certainly holds an unsettled batch of every store when it goes.
    for h in HASHES {
        assert!(!b.executor.queue.next_batch(h).await.unwrap().is_empty());
    }
    drop(b);
    let held = a.executor.queue.stats().await.unwrap();
    assert!(held.in_flight >= 3, "{held:?}");
    // A finishes everything, B's pending entries included (after `queue_claim_after`).
    let started = std::time::Instant::now();
    let report = a.executor.drain(None).await;
    assert!(report.stalled.is_empty(), "{report:?}");
    assert_eq!(
        report.failed,
        0,
        "{:?}",
        a.executor.queue.dead_letters().await.unwrap()
    );
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "B's entries were taken over only after queue_claim_after"
    );
    assert_exactly_once(&sim, 200);
    assert_eq!(a.executor.queue.stats().await.unwrap(), settled());
    assert!(a.plan(&data, SystemClock.now()).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_gateway_resumes_the_queue_from_redis() {
    let redis = RedisServer::start();
    let (sim, base) = simulator(400, 250).await;
    let cfg = Arc::new(redis_config(&base, &redis, "1s"));
    let scim = scim_with_users(200, "staff").await;
    let data = scim.snapshot().await.expect("SCIM snapshot");
    let first = reconciler(&cfg, AuditLog::channel().0);
    let plan = first.plan(&data, SystemClock.now()).await.unwrap();
    first.executor.queue.enqueue("run-1", plan).await.unwrap();
    let ex = first.executor.clone();
    let worker = tokio::spawn(async move { ex.drain(None).await });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while sim.customers("store2").len() < 50 {
        assert!(
            !worker.is_finished() && std::time::Instant::now() < deadline,
            "the worker stopped or stalled before 50 customers on store2"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    worker.abort();
    let _ = worker.await;
    drop(first);
    // A new process: a new consumer on the same Redis.
    let second = reconciler(&cfg, AuditLog::channel().0);
    assert!(
        !second.executor.queue.is_empty().await.unwrap(),
        "work survived"
    );
    let report = second.executor.drain(None).await;
    assert!(
        report.stalled.is_empty() && report.failed == 0,
        "{report:?}"
    );
    assert!(report.done > 0);
    assert_exactly_once(&sim, 200);
    assert_eq!(second.executor.queue.stats().await.unwrap(), settled());
    assert!(
        second
            .plan(&data, SystemClock.now())
            .await
            .unwrap()
            .is_empty()
    );
}

/// Queues 3 users x 3 stores where one create names a customer group that does not exist (422 on
/// every attempt) and works it off; checks the dead letter, its audit event and the gauges.
async fn refused_item_goes_to_the_dead_letters(cfg: Config) {
    let cfg = Arc::new(cfg);
    let scim = scim_with_users(3, "staff").await;
    let (audit, mut rx) = AuditLog::channel();
    let r = reconciler(&cfg, audit);
    let mut plan = r
        .plan(
            &scim.snapshot().await.expect("SCIM snapshot"),
            SystemClock.now(),
        )
        .await
        .unwrap();
    assert_eq!(plan.len(), 9);
    let bad = plan
        .iter_mut()
        .find(|a| a.account() == "store2")
        .expect("a create on store2");
    let bad_email = bad.email().to_owned();
    let Action::Create { group_id, .. } = bad else {
        panic!("the first store2 action is a create");
    };
    *group_id = Some(999_999);
    r.executor.queue.enqueue("poison", plan).await.unwrap();
    let report = r.executor.drain(None).await;
    assert!(report.stalled.is_empty(), "{report:?}");
    assert_eq!((report.done, report.failed), (8, 1), "{report:?}");
    let dead = r.executor.queue.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].0.action.email(), bad_email);
    assert!(dead[0].1.starts_with("422"), "{}", dead[0].1);
    assert_eq!(
        r.executor.queue.stats().await.unwrap(),
        QueueStats {
            waiting: 0,
            in_flight: 0,
            dead_letters: 1
        }
    );
    let events: Vec<AuditEvent> = drain_audit(&mut rx)
        .into_iter()
        .filter(|e| e.event == EventKind::Provision && e.outcome == Outcome::Error)
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].email.as_deref(), Some(bad_email.as_str()));
    assert!(
        events[0]
            .detail
            .as_deref()
            .is_some_and(|d| d.starts_with("dead letter: 422")),
        "{:?}",
        events[0].detail
    );
    // /metrics reads the same counts.
    let m = storegate::metrics::Metrics::new().unwrap();
    m.watch_queue(r.executor.queue.clone()).unwrap();
    m.refresh().await;
    let text = m.render().unwrap();
    for line in [
        "storegate_provisioning_queue_depth 0",
        "storegate_provisioning_queue_in_flight 0",
        "storegate_provisioning_queue_dead_letters 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanently_refused_item_is_dead_lettered_in_redis() {
    let redis = RedisServer::start();
    let (_sim, base) = simulator(1000, 1000).await;
    refused_item_goes_to_the_dead_letters(redis_config(&base, &redis, "5m")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanently_refused_item_is_dead_lettered_in_the_file_queue() {
    let (_sim, base) = simulator(1000, 1000).await;
    let dir = temp("dead");
    refused_item_goes_to_the_dead_letters(config_text(
        &base,
        &format!("queue = \"file:{}\"\n", dir.join("queue.json").display()),
        "",
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_concurrent_scheduled_passes_only_one_plans() {
    let redis = RedisServer::start();
    let (sim, base) = simulator(1000, 1000).await;
    let cfg = Arc::new(redis_config(&base, &redis, "5m"));
    let scim = scim_with_users(5, "staff").await;
    let (audit_a, mut rx_a) = AuditLog::channel();
    let (audit_b, mut rx_b) = AuditLog::channel();
    let a = reconciler(&cfg, audit_a);
    let b = reconciler(&cfg, audit_b);
    let (pa, pb) = tokio::join!(scheduled_pass(&a, &scim), scheduled_pass(&b, &scim));
    assert_eq!(
        [pa, pb].iter().filter(|p| **p).count(),
        1,
        "exactly one replica planned ({pa}, {pb})"
    );
    assert_exactly_once(&sim, 5);
    let passes = |evs: Vec<AuditEvent>| {
        evs.iter()
            .filter(|e| e.event == EventKind::Reconcile && e.outcome == Outcome::Allow)
            .count()
    };
    assert_eq!(
        passes(drain_audit(&mut rx_a)) + passes(drain_audit(&mut rx_b)),
        1,
        "one pass audited"
    );
    // The lease was released: the next interval's pass runs (and finds nothing to do).
    assert!(scheduled_pass(&b, &scim).await);
    assert_exactly_once(&sim, 5);
    // A 429 seen by one replica pauses the other for that store.
    a.executor
        .queue
        .pause("store1", Duration::from_millis(800))
        .await
        .unwrap();
    let left = b.executor.queue.paused_for("store1").await.unwrap();
    assert!(
        left.is_some_and(|d| d > Duration::from_millis(300) && d <= Duration::from_millis(800)),
        "{left:?}"
    );
    assert_eq!(b.executor.queue.paused_for("store2").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_failing_on_every_attempt_is_dead_lettered_after_dead_letter_after() {
    let redis = RedisServer::start();
    let (sim, base) = simulator(1000, 1000).await;
    let cfg = Arc::new(redis_config(&base, &redis, "5m"));
    let scim = scim_with_users(1, "staff").await;
    let (audit, mut rx) = AuditLog::channel();
    let mut backoff = fast();
    backoff.dead_letter_after = 3;
    let r = storegate::app::reconciler(cfg, audit, Arc::new(SystemClock), backoff).unwrap();
    let plan = r
        .plan(
            &scim.snapshot().await.expect("SCIM snapshot"),
            SystemClock.now(),
        )
        .await
        .unwrap();
    assert_eq!(plan.len(), 3);
    r.executor.queue.enqueue("outage", plan).await.unwrap();
    // BigCommerce answers 503 to everything from now on.
    sim.fail_next(10_000, axum::http::StatusCode::SERVICE_UNAVAILABLE);
    let report = r.executor.drain(None).await;
    assert!(report.stalled.is_empty(), "{report:?}");
    assert_eq!((report.done, report.failed), (0, 3), "{report:?}");
    assert_eq!(report.retried, 9, "3 attempts per item: {report:?}");
    let dead = r.executor.queue.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 3);
    for (item, why) in &dead {
        assert_eq!(item.attempts, 3);
        assert!(
            why.starts_with("failed 3 times, last: BigCommerce failed on its side (503)"),
            "{why}"
        );
    }
    let errors = drain_audit(&mut rx)
        .into_iter()
        .filter(|e| e.event == EventKind::Provision && e.outcome == Outcome::Error)
        .count();
    assert_eq!(errors, 3);
    assert_eq!(
        r.executor.queue.stats().await.unwrap(),
        QueueStats {
            waiting: 0,
            in_flight: 0,
            dead_letters: 3
        }
    );
    for h in HASHES {
        assert!(sim.customers(h).is_empty());
    }
}

/// bcattr's optimistic creates through the Redis queue: a taken email is adopted (its update and
/// subject write re-added to the stream), another subject's customer is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimistic_creates_adopt_and_dead_letter_subject_conflicts_in_redis() {
    let redis = RedisServer::start();
    let (sim, base) = simulator(1000, 1000).await;
    optimistic_creates_case(&sim, redis_config(&base, &redis, "5m")).await;
}

/// Entries taken over from a stopped consumer are uncertain: their creates look the emails up
/// before creating (one lookup, no create, not even a refused one), and the customers the
/// stopped consumer's call did create count as done, with their ids, not twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taken_over_creates_look_first_and_count_what_the_stopped_consumer_created() {
    let redis = RedisServer::start();
    let (sim, base) = simulator(1000, 1000).await;
    let cfg = Arc::new(redis_config(&base, &redis, "1s"));
    let scim = scim_with_users(10, "staff").await;
    let data = scim.snapshot().await.expect("SCIM snapshot");
    let (audit, mut rx) = AuditLog::channel();
    let a = reconciler(&cfg, audit);
    let b = reconciler(&cfg, AuditLog::channel().0);
    let plan = b.plan(&data, SystemClock.now()).await.unwrap();
    assert_eq!(plan.len(), 30, "10 joiners x 3 stores");
    b.executor.queue.enqueue("run-1", plan).await.unwrap();
    // B takes store1's batch; its create lands (seeded here, subject included), then B stops
    // before settling.
    let batch = b.executor.queue.next_batch("store1").await.unwrap();
    assert_eq!(batch.len(), 10);
    let mut ids = std::collections::HashMap::new();
    for item in &batch {
        let Action::Create { customer, .. } = &item.action else {
            panic!("a create: {item:?}");
        };
        let id = sim
            .add_customer(
                "store1",
                &customer.email,
                &customer.first_name,
                &customer.last_name,
                Some(customer.channel_ids.clone()),
            )
            .unwrap();
        sim.set_attribute_value("store1", id, "storegate_subject", &customer.subject);
        ids.insert(customer.email.clone(), id);
    }
    drop(b);
    let before = sim.api_calls("store1");
    let report = a.executor.drain(None).await;
    assert!(report.stalled.is_empty(), "{report:?}");
    assert_eq!(
        (
            report.done,
            report.failed,
            report.rate_limited,
            report.retried
        ),
        (30, 0, 0, 0),
        "{report:?}"
    );
    // store1: the attribute's id, then one lookup of the 10 emails, and nothing else.
    assert_eq!(sim.api_calls("store1") - before, 2);
    assert_exactly_once(&sim, 10);
    let done_on_store1: Vec<AuditEvent> = drain_audit(&mut rx)
        .into_iter()
        .filter(|e| {
            e.event == EventKind::Provision
                && e.outcome == Outcome::Allow
                && e.target
                    .as_deref()
                    .is_some_and(|t| t.ends_with(" on store1"))
        })
        .collect();
    assert_eq!(done_on_store1.len(), 10);
    for ev in &done_on_store1 {
        let email = ev.email.clone().unwrap_or_default();
        assert_eq!(ev.customer_id, ids.get(&email).copied(), "{email}");
        assert_eq!(ev.reason.as_deref(), Some("create"));
    }
    assert_eq!(a.executor.queue.stats().await.unwrap(), settled());
}

/// The queue on a Redis Cluster (three masters): its keys share the `{prov}` hash tag, so the
/// Streams, the consumer group, the lease and the pause live on one node and every script runs
/// there. Two consumers share a 100-user wave over 3 stores with injected 5xx: exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_two_consumers_share_a_wave_exactly_once() {
    let cluster = crate::support::redis::ClusterSetup::start();
    let (sim, base) = simulator(200, 250).await;
    let cfg = Arc::new(config_text(
        &base,
        "queue = \"redis\"\nqueue_claim_after = \"5m\"\n",
        &format!(
            "[session]\nstore = \"redis\"\nredis_mode = \"cluster\"\nredis_nodes = [\"{}\"]\n",
            cluster.node_url(1)
        ),
    ));
    let scim = scim_with_users(100, "staff").await;
    let a = reconciler(&cfg, AuditLog::channel().0);
    let b = reconciler(&cfg, AuditLog::channel().0);
    let plan = a
        .plan(
            &scim.snapshot().await.expect("SCIM snapshot"),
            SystemClock.now(),
        )
        .await
        .unwrap();
    assert_eq!(plan.len(), 300);
    a.executor.queue.enqueue("wave", plan).await.unwrap();
    assert_eq!(b.executor.queue.stats().await.unwrap().waiting, 300);
    sim.fail_next(5, axum::http::StatusCode::SERVICE_UNAVAILABLE);
    let (da, db) = tokio::join!(a.executor.drain(None), b.executor.drain(None));
    assert!(
        da.stalled.is_empty() && db.stalled.is_empty(),
        "{da:?} {db:?}"
    );
    assert_eq!(da.failed + db.failed, 0);
    assert_eq!(da.done + db.done, 300, "every item done exactly once");
    assert_exactly_once(&sim, 100);
    assert_eq!(a.executor.queue.stats().await.unwrap(), settled());
    let keys: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| {
            crate::support::redis::cli(n.port, &["KEYS", "storegate:{prov}:*"])
                .trim()
                .to_owned()
        })
        .collect();
    assert_eq!(
        keys.iter().filter(|k| !k.is_empty()).count(),
        1,
        "the queue's keys are on one node: {keys:?}"
    );
}
