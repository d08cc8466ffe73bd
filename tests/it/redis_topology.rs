//! Redis Sentinel and Redis Cluster (issue 6), against real processes started per test: a master,
//! a replica and a sentinel; a three-master cluster made by `redis-cli --cluster create`.
//!
//! Cluster: two gateways seeded with different nodes share sessions and one-time state (sign in
//! on A, launch on B); each session key lives on exactly the node that owns its slot.
//! Sentinel: a signed-in browser keeps its session across `SENTINEL FAILOVER` and across a killed
//! master (the data was replicated first); the gateway moves to the new master by itself, without
//! a restart, and requests in between get 503, never a redirect or a sign-out.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Gateway, MAIN_HASH, Opts, Reserved};
use crate::support::browser::{Browser, location};
use crate::support::redis::{ClusterSetup, SentinelSetup};
use crate::support::rogue_op::RogueOp;

const CLIENT: &str = "storegate";
const SECRET: &str = "topology-client-secret-0123456789";

async fn op() -> RogueOp {
    let op = RogueOp::start(CLIENT, SECRET).await;
    op.set_claims(json!({"email": "kim@corp.example", "given_name": "Kim", "family_name": "Topology", "groups": ["bc-merchandisers"]}));
    op
}

async fn sign_in(browser: &Browser, gw: &Gateway) {
    let start = browser.get(&gw.url("/login")).await;
    let done = browser.follow_while(start, |u| u.path() != "/").await;
    assert_eq!(done.status(), 303, "signed in: {}", browser.hops_text());
}

async fn me(b: &Browser, gw: &Gateway) -> (u16, Option<Value>) {
    let resp = b.get(&gw.url("/api/me")).await;
    let status = resp.status().as_u16();
    (status, resp.json().await.ok())
}

async fn readyz(gw: &Gateway) -> u16 {
    reqwest::get(gw.url("/readyz"))
        .await
        .expect("GET /readyz")
        .status()
        .as_u16()
}

/// The session id in `browser`'s cookie for `gw`.
fn session_id(browser: &Browser, gw: &Gateway) -> String {
    let cookies = browser.cookies_for(&gw.base).expect("cookies");
    cookies
        .split("; ")
        .find_map(|c| c.strip_prefix("storegate_session="))
        .expect("session cookie")
        .to_owned()
}

#[tokio::test]
async fn cluster_sign_in_on_a_launch_on_b() {
    let cluster = ClusterSetup::start();
    let op = op().await;
    // A knows only node 0 and B only node 2: each discovers the rest of the cluster itself.
    let mut opts = Opts::new(&op.issuer, CLIENT, SECRET);
    opts.redis_topology = Some(format!(
        "redis_mode = \"cluster\"\nredis_nodes = [\"{}\"]",
        cluster.node_url(0)
    ));
    let a = Gateway::start(Reserved::new().await, opts).await;
    let b = a
        .replica_edited(
            Reserved::new().await,
            &cluster.node_url(0),
            &cluster.node_url(2),
        )
        .await;
    assert_eq!(readyz(&a).await, 200);
    assert_eq!(readyz(&b).await, 200);

    let browser = Browser::new();
    sign_in(&browser, &a).await;
    let (status, body) = me(&browser, &b).await;
    assert_eq!(status, 200, "B reads the session A wrote");
    assert_eq!(
        body.as_ref().and_then(|v| v["email"].as_str()),
        Some("kim@corp.example")
    );

    // The session record is on exactly one node: the owner of its slot.
    let key = format!("storegate:session:{}", session_id(&browser, &a));
    assert_eq!(cluster.nodes_holding(&key).len(), 1, "{key}");

    let launch = browser.get(&b.url("/stores/us/launch")).await;
    assert_eq!(
        launch.status(),
        302,
        "launch through B: {}",
        browser.hops_text()
    );
    let to_store = location(&launch).expect("to the storefront");
    assert!(
        to_store
            .path()
            .starts_with(&format!("/storefront/{MAIN_HASH}/1/login/token/")),
        "{to_store}"
    );
    assert_eq!(browser.follow(launch).await.status(), 200);
    assert_eq!(a.sim.accepted_logins().len(), 1, "one token, taken once");
}

/// A gateway on the sentinel setup (`extra`: more `[session]` lines), with one browser signed in
/// whose session is replicated.
async fn sentinel_gateway(redis: &SentinelSetup, extra: &str) -> (RogueOp, Gateway, Browser) {
    let op = op().await;
    let mut opts = Opts::new(&op.issuer, CLIENT, SECRET);
    opts.redis_topology = Some(format!(
        "redis_mode = \"sentinel\"\nredis_nodes = [\"{}\"]\nredis_sentinel_master = \"{}\"\n{extra}",
        redis.sentinel_url(),
        SentinelSetup::MASTER
    ));
    let gw = Gateway::start(Reserved::new().await, opts).await;
    assert_eq!(readyz(&gw).await, 200);
    let browser = Browser::new();
    sign_in(&browser, &gw).await;
    assert_eq!(me(&browser, &gw).await.0, 200);
    // Everything written so far is on the replica before it takes over.
    redis.wait_replicated();
    (op, gw, browser)
}

/// Signs a new browser in; `None` when a hop was refused (Redis unreachable).
async fn try_sign_in(gw: &Gateway) -> Option<Browser> {
    let b = Browser::new();
    let start = b.get(&gw.url("/login")).await;
    if start.status() != 303 {
        return None;
    }
    let done = b.follow_while(start, |u| u.path() != "/").await;
    (done.status() == 303).then_some(b)
}

/// Polls `/api/me` for `browser` every 100 ms until 200 or `within`; returns every status seen and
/// the email of the final answer.
async fn me_until_ok(browser: &Browser, gw: &Gateway, within: Duration) -> (Vec<u16>, String) {
    let t0 = Instant::now();
    let mut seen = Vec::new();
    loop {
        let (status, body) = me(browser, gw).await;
        seen.push(status);
        if status == 200 {
            let email = body
                .and_then(|v| v["email"].as_str().map(str::to_owned))
                .unwrap_or_default();
            return (seen, email);
        }
        assert!(
            t0.elapsed() < within,
            "no recovery within {within:?}: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn sentinel_failover_keeps_the_session_and_needs_no_restart() {
    let redis = SentinelSetup::start();
    let (_op, gw, browser) = sentinel_gateway(&redis, "").await;
    let key = format!("storegate:session:{}", session_id(&browser, &gw));
    let old_master = redis.master.port;
    let new_master = redis.replica.port;

    redis.failover();
    let t0 = Instant::now();
    assert_eq!(redis.current_master_port(), Some(new_master));

    // The demoted master keeps taking writes until a sentinel reconfigures it (about 8 s), so
    // the gateway must move by itself as soon as the sentinels name the new master: a session
    // created now lands on the new master, within a few watch periods.
    // What proves it is not the time taken but the old master's role: still a master (taking
    // writes) when the gateway's new session landed on the new one. The bound only stops a
    // gateway that never moves.
    let mut statuses = Vec::new();
    let moved = loop {
        let (status, _) = me(&browser, &gw).await;
        statuses.push(status);
        let old_still_master =
            redis.node_cli(old_master, &["ROLE"]).lines().next() == Some("master");
        if let Some(b) = try_sign_in(&gw).await {
            let k = format!("storegate:session:{}", session_id(&b, &gw));
            if redis.node_cli(new_master, &["EXISTS", &k]).trim() == "1" {
                assert!(
                    old_still_master,
                    "the gateway moved only once the old master {old_master} was demoted, not \
                     when the sentinels named the new one: {statuses:?}"
                );
                break t0.elapsed();
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the gateway still writes to the old master {old_master}: {statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503),
        "only 200 or 503 during the failover, never 401 or a redirect: {statuses:?}"
    );
    // The replicated session is still there, on the new master.
    let (seen, email) = me_until_ok(&browser, &gw, Duration::from_secs(5)).await;
    assert_eq!(
        email, "kim@corp.example",
        "same session after {moved:?}: {seen:?}"
    );
    assert_eq!(seen.iter().filter(|s| **s != 503).count(), 1, "{seen:?}");
    assert_eq!(
        redis.node_cli(new_master, &["EXISTS", &key]).trim(),
        "1",
        "the session lives on the new master"
    );
    assert_eq!(readyz(&gw).await, 200);
    // Writes work there: the launch stores the customer id in the session.
    let launch = browser.get(&gw.url("/stores/us/launch")).await;
    assert_eq!(launch.status(), 302, "{}", browser.hops_text());
    assert_eq!(browser.follow(launch).await.status(), 200);
    assert_eq!(gw.sim.accepted_logins().len(), 1);
}

#[tokio::test]
async fn sentinel_master_killed_requests_get_503_then_the_session_continues() {
    let redis = SentinelSetup::start();
    let (_op, gw, browser) = sentinel_gateway(&redis, "").await;
    let new_master = redis.replica.port;
    let mut redis = redis;
    redis.master.stop();

    // The sentinel needs down-after-milliseconds (1 s here) and the failover; meanwhile every
    // request is a clean 503 (no redirect, no sign-out), and afterwards the same session works.
    let (seen, email) = me_until_ok(&browser, &gw, Duration::from_secs(20)).await;
    assert_eq!(
        email, "kim@corp.example",
        "the replicated session survived: {seen:?}"
    );
    assert!(
        seen.len() >= 2,
        "the first request after the crash was refused: {seen:?}"
    );
    assert!(
        seen[..seen.len() - 1].iter().all(|s| *s == 503),
        "only 503 before recovery: {seen:?}"
    );
    assert_eq!(redis.current_master_port(), Some(new_master));
    assert_eq!(readyz(&gw).await, 200);
    let launch = browser.get(&gw.url("/stores/us/launch")).await;
    assert_eq!(launch.status(), 302, "{}", browser.hops_text());
    assert_eq!(browser.follow(launch).await.status(), 200);
    assert_eq!(gw.sim.accepted_logins().len(), 1);
}

#[tokio::test]
async fn sentinel_with_passwords_on_the_sentinel_and_the_master() {
    const DATA: &str = "master-password-4d3c2b1a";
    const SENTINEL: &str = "sentinel-password-a1b2c3d4";
    let redis = SentinelSetup::start_with_passwords(Some(DATA), Some(SENTINEL));
    // The sentinel URL carries the sentinel's password; redis_password is the master's.
    let (_op, gw, browser) =
        sentinel_gateway(&redis, &format!("redis_password = \"{DATA}\"")).await;
    let key = format!("storegate:session:{}", session_id(&browser, &gw));
    assert_eq!(
        redis.node_cli(redis.master.port, &["EXISTS", &key]).trim(),
        "1"
    );
    // The password is really required: an unauthenticated client is refused.
    assert_eq!(
        cli_noauth_exists(redis.master.port, &key),
        "NOAUTH",
        "the master refuses unauthenticated clients"
    );
    redis.failover();
    let (seen, email) = me_until_ok(&browser, &gw, Duration::from_secs(10)).await;
    assert_eq!(email, "kim@corp.example", "{seen:?}");
    assert!(seen.iter().all(|s| *s == 200 || *s == 503), "{seen:?}");
}

/// The first word of an unauthenticated `EXISTS key` answer (`NOAUTH` when a password is set).
fn cli_noauth_exists(port: u16, key: &str) -> String {
    crate::support::redis::cli(port, &["EXISTS", key])
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn cluster_master_down_is_503_and_not_ready_then_resumes_without_restart() {
    let mut cluster = ClusterSetup::start();
    let op = op().await;
    let mut opts = Opts::new(&op.issuer, CLIENT, SECRET);
    opts.redis_topology = Some(format!(
        "redis_mode = \"cluster\"\nredis_nodes = [\"{}\", \"{}\", \"{}\"]",
        cluster.node_url(0),
        cluster.node_url(1),
        cluster.node_url(2)
    ));
    let gw = Gateway::start(Reserved::new().await, opts).await;
    let browser = Browser::new();
    sign_in(&browser, &gw).await;
    let key = format!("storegate:session:{}", session_id(&browser, &gw));
    let owner = cluster.nodes_holding(&key);
    assert_eq!(owner.len(), 1, "{key}");
    let i = cluster
        .nodes
        .iter()
        .position(|n| n.port == owner[0])
        .expect("owner is a node");

    // The master holding the session dies (no replica to take over, nothing persisted).
    cluster.nodes[i].stop();
    // Answered, not hung: the gateway's own Redis timeouts (2 s, 3 short retries) bound the
    // request; the bound here only catches a hang, it measures nothing.
    let (status, _) = tokio::time::timeout(Duration::from_secs(20), me(&browser, &gw))
        .await
        .expect("/api/me answers while the session's node is down");
    assert_eq!(status, 503, "the session's node is down");
    // Readiness turns red once the cluster marks the master failed (node timeout 2 s here).
    let t1 = Instant::now();
    while readyz(&gw).await != 503 {
        assert!(
            t1.elapsed() < Duration::from_secs(10),
            "still ready with a master down"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // It comes back (same port and cluster identity, empty); the gateway was not restarted.
    cluster.nodes[i].restart();
    cluster.wait_ok();
    let t2 = Instant::now();
    while readyz(&gw).await != 200 {
        assert!(
            t2.elapsed() < Duration::from_secs(20),
            "not ready again after the node returned"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The session died with the node: the browser is signed out (401), not shown an error,
    // and signs in again.
    assert_eq!(me(&browser, &gw).await.0, 401);
    sign_in(&browser, &gw).await;
    assert_eq!(me(&browser, &gw).await.0, 200);
}
