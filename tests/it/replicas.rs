//! Several replicas, one Redis (issue 6): two gateways with the same configuration share a private
//! `redis-server`; a browser moves freely between them (as behind a load balancer). Redis going
//! away fails closed (503, no session, no token, no redirect loop) and coming back needs no
//! restart. Graceful shutdown lets an in-flight launch finish.

use std::time::Duration;

use serde_json::{Value, json};
use storegate::audit::{EventKind, Outcome};
use url::Url;

use crate::harness::{Gateway, MAIN_HASH, Opts, Reserved};
use crate::support::browser::{Browser, location};
use crate::support::redis::{RedisServer, cli};
use crate::support::rogue_op::{Fault, RogueOp};
use crate::support::wait;

const CLIENT: &str = "storegate";
const SECRET: &str = "replica-client-secret-0123456789";

/// One OP, one Redis, gateway A and its replica B.
async fn two_replicas() -> (RogueOp, RedisServer, Gateway, Gateway) {
    let op = RogueOp::start(CLIENT, SECRET).await;
    op.set_claims(json!({"email": "kim@corp.example", "given_name": "Kim", "family_name": "Replica", "groups": ["bc-merchandisers"]}));
    let redis = RedisServer::start();
    let mut opts = Opts::new(&op.issuer, CLIENT, SECRET);
    opts.redis_url = Some(redis.url());
    let a = Gateway::start(Reserved::new().await, opts).await;
    let b = a.replica(Reserved::new().await).await;
    (op, redis, a, b)
}

/// `url` with its origin replaced by `gw`'s (the load balancer sent this hop to another replica).
fn via(gw: &Gateway, url: &Url) -> String {
    let mut u = url.clone();
    let base = Url::parse(&gw.base).expect("gateway base");
    u.set_port(base.port()).expect("set port");
    u.to_string()
}

/// Signs `browser` in through `gw` and returns when it is back on the portal.
async fn sign_in(browser: &Browser, gw: &Gateway) {
    let start = browser.get(&gw.url("/login")).await;
    let done = browser.follow_while(start, |u| u.path() != "/").await;
    assert_eq!(done.status(), 303, "signed in: {}", browser.hops_text());
}

async fn me_status(b: &Browser, gw: &Gateway) -> u16 {
    b.get(&gw.url("/api/me")).await.status().as_u16()
}

async fn readyz(gw: &Gateway) -> (u16, Value) {
    let resp = reqwest::get(gw.url("/readyz")).await.expect("GET /readyz");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("readyz JSON"))
}

#[tokio::test]
async fn signed_in_through_a_launches_through_b() {
    let (_op, _redis, a, b) = two_replicas().await;
    let browser = Browser::new();
    sign_in(&browser, &a).await;
    assert_eq!(me_status(&browser, &b).await, 200, "B sees A's session");

    let launch = browser.get(&b.url("/stores/us/launch")).await;
    assert_eq!(
        launch.status(),
        302,
        "launch through B: {}",
        browser.hops_text()
    );
    let to_store = location(&launch).expect("to the storefront");
    assert!(
        to_store.as_str().starts_with(&format!(
            "{}/storefront/{MAIN_HASH}/1/login/token/",
            b.sim_base
        )),
        "{to_store}"
    );
    let landed = browser.follow(launch).await;
    assert_eq!(landed.status(), 200);
    assert_eq!(
        b.sim.accepted_logins().len(),
        1,
        "the storefront took the token"
    );

    // The customer id B ensured is in the shared session: A's launch makes no customer lookup.
    let calls_before = a.sim.api_calls(MAIN_HASH);
    let again = browser.get(&a.url("/stores/eu/launch")).await;
    assert_eq!(again.status(), 302);
    assert!(
        a.sim.api_calls(MAIN_HASH) <= calls_before + 1,
        "only the store clock may be read again"
    );
}

#[tokio::test]
async fn a_login_started_on_a_completes_on_b() {
    let (_op, _redis, a, b) = two_replicas().await;
    let browser = Browser::new();
    let start = browser.get(&a.url("/login?return_to=/api/me")).await;
    // Walk to the OP and back up to (not including) the callback, which the load balancer sends to B.
    let at_callback = browser
        .follow_while(start, |u| !u.path().starts_with("/oidc/"))
        .await;
    let callback = location(&at_callback).expect("OP redirects to the callback");
    assert!(callback.path().starts_with("/oidc/"), "{callback}");
    let done = browser.get(&via(&b, &callback)).await;
    assert_eq!(
        done.status(),
        303,
        "B completed A's login: {}",
        browser.hops_text()
    );
    assert_eq!(
        location(&done).map(|u| u.path().to_owned()).as_deref(),
        Some("/api/me")
    );
    assert_eq!(me_status(&browser, &a).await, 200);
    assert_eq!(me_status(&browser, &b).await, 200);

    // The state was consumed on B: the same browser replaying the same callback on A is refused
    // for that reason, and its session stays the one B signed in.
    let replay = browser.get(&via(&a, &callback)).await;
    assert_eq!(replay.status(), 400, "replayed callback");
    assert_eq!(sign_in_refusals(&a), ["state_unknown"]);
    assert_eq!(me_status(&browser, &a).await, 200);
}

/// The reasons of every refused sign-in at `gw` so far, oldest first.
fn sign_in_refusals(gw: &Gateway) -> Vec<String> {
    gw.audit_now()
        .iter()
        .filter(|e| e.event == EventKind::SignIn && e.outcome != Outcome::Allow)
        .map(|e| e.reason.clone().unwrap_or_default())
        .collect()
}

/// A state is spent once across replicas even when its sign-in fails: B refuses an expired ID
/// token after taking the state out of the shared session; the same browser (same cookies)
/// replaying the callback on A is refused as `state_unknown` before A goes to the token endpoint.
/// Only the shared store can refuse it: A would otherwise redeem the code again.
#[tokio::test]
async fn a_state_spent_on_b_by_a_failed_sign_in_is_refused_on_a() {
    let (op, _redis, a, b) = two_replicas().await;
    let browser = Browser::new();
    let start = browser.get(&a.url("/login")).await;
    let at_callback = browser
        .follow_while(start, |u| !u.path().starts_with("/oidc/"))
        .await;
    let callback = location(&at_callback).expect("OP redirects to the callback");
    op.set_fault(Fault::Expired);
    let failed = browser.get(&via(&b, &callback)).await;
    assert_eq!(failed.status(), 401, "expired ID token on B");
    assert_eq!(sign_in_refusals(&b), ["id_token_invalid"]);
    assert_eq!(op.token_calls(), 1);

    op.set_fault(Fault::None);
    let replay = browser.get(&via(&a, &callback)).await;
    assert_eq!(replay.status(), 400, "replayed callback on A");
    assert_eq!(sign_in_refusals(&a), ["state_unknown"]);
    assert_eq!(op.token_calls(), 1, "the code was not redeemed again");
    assert_eq!(me_status(&browser, &a).await, 401);
    assert_eq!(me_status(&browser, &b).await, 401);
    a.assert_no_token_minted();
}

#[tokio::test]
async fn redis_down_fails_closed_and_service_resumes_without_restart() {
    let (_op, mut redis, a, b) = two_replicas().await;
    let signed = Browser::new();
    sign_in(&signed, &a).await;
    // A login in flight when Redis goes away.
    let pending = Browser::new();
    let start = pending.get(&a.url("/login")).await;
    let at_callback = pending
        .follow_while(start, |u| !u.path().starts_with("/oidc/"))
        .await;
    let callback = location(&at_callback).expect("callback");

    redis.stop();

    // Fails fast: no request waits out a reconnect backoff. That once took 1.5 s per request,
    // 12 s for the 8 requests below; they normally take milliseconds together, so one bound
    // over all of them with a wide margin tells the two apart even on a loaded machine.
    let t0 = std::time::Instant::now();
    let mut took = Vec::new();
    for gw in [&a, &b] {
        // A signed-in browser: launch and /api/me are 503 pages, never a redirect.
        for path in ["/stores/us/launch", "/api/me", "/"] {
            let t = std::time::Instant::now();
            let resp = signed.get(&gw.url(path)).await;
            took.push((path, t.elapsed()));
            assert_eq!(resp.status(), 503, "{path} with Redis down");
            assert!(location(&resp).is_none(), "no redirect for {path}");
            let page = resp.text().await.expect("page");
            assert!(page.contains("session store"), "{path}: {page}");
        }
        // A new visitor: /login cannot store the pending login, so it does not send them to the IdP.
        let fresh = Browser::new();
        let resp = fresh.get(&gw.url("/login")).await;
        assert_eq!(resp.status(), 503, "/login with Redis down");
        assert!(location(&resp).is_none(), "no redirect to the IdP");
        // Readiness is red and says why.
        let t = std::time::Instant::now();
        let (status, body) = readyz(gw).await;
        took.push(("/readyz", t.elapsed()));
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["checks"]["session_store"]["ok"], false, "{body}");
        let why = body["checks"]["session_store"]["error"]
            .as_str()
            .unwrap_or_default();
        assert!(why.contains("Redis"), "reason names Redis: {why}");
        assert!(!why.contains("redis://"), "no URL in the reason: {why}");
    }
    assert!(
        t0.elapsed() < Duration::from_secs(6),
        "requests waited for Redis: {took:?}"
    );
    // The callback of the login in flight: no session is granted.
    let resp = pending.get(&via(&b, &callback)).await;
    assert_eq!(resp.status(), 503);
    assert!(location(&resp).is_none());
    a.assert_no_token_minted();
    assert!(
        a.sim.customers(MAIN_HASH).is_empty(),
        "no BigCommerce call while Redis is down"
    );

    // Redis returns, empty (it kept nothing). The gateways were not restarted.
    redis.restart();
    let mut ready = false;
    for _ in 0..50 {
        if readyz(&a).await.0 == 200 && readyz(&b).await.0 == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "both replicas ready again: {}", readyz(&a).await.1);
    // The old session died with Redis: sign in again, through A, and launch through B.
    assert_eq!(me_status(&signed, &b).await, 401);
    sign_in(&signed, &a).await;
    let launch = signed.get(&b.url("/stores/us/launch")).await;
    assert_eq!(launch.status(), 302, "{}", signed.hops_text());
    signed.follow(launch).await;
    assert_eq!(a.sim.accepted_logins().len(), 1);
}

#[tokio::test]
async fn graceful_shutdown_completes_an_in_flight_launch() {
    let (_op, _redis, a, b) = two_replicas().await;
    let browser = Browser::new();
    sign_in(&browser, &a).await;
    // Every BigCommerce answer now takes a while, so the launch is in flight when SIGTERM comes.
    a.set_sim_delay(Duration::from_millis(400));
    let client = browser.client().clone();
    let url = a.url("/stores/us/launch");
    let held = a.sim_requests();
    let in_flight = tokio::spawn(async move { client.get(url).send().await });
    // SIGTERM once the launch is waiting on BigCommerce, not before it arrived.
    wait::until(
        "the launch to call BigCommerce",
        Duration::from_secs(10),
        || async { a.sim_requests() > held },
    )
    .await;
    a.begin_shutdown();

    let resp = in_flight
        .await
        .expect("join")
        .expect("the in-flight launch got an answer");
    assert_eq!(resp.status(), 302, "the launch completed during the drain");
    assert!(
        location(&resp).is_some_and(|u| u
            .path()
            .starts_with(&format!("/storefront/{MAIN_HASH}/1/login/token/"))),
        "to the storefront"
    );
    a.wait_stopped(Duration::from_secs(10)).await;
    // A no longer takes requests; B (the other replica) still serves the same session.
    assert!(
        reqwest::get(a.url("/healthz")).await.is_err(),
        "A stopped listening"
    );
    a.set_sim_delay(Duration::ZERO);
    assert_eq!(me_status(&browser, &b).await, 200);
}

/// The key and raw JSON of the session record under `storegate:session:*` that holds a sign-in.
fn signed_in_record(redis: &RedisServer) -> (String, String) {
    let keys = cli(redis.port, &["--raw", "KEYS", "storegate:session:*"]);
    for key in keys.lines().filter(|k| !k.is_empty()) {
        let raw = cli(redis.port, &["--raw", "GET", key]);
        if raw.contains("\"auth\":") {
            return (key.to_owned(), raw.trim_end().to_owned());
        }
    }
    panic!("no session record holds a sign-in: {keys}");
}

/// Stores `raw` as the record under `key`, keeping its expiry.
fn store_record(redis: &RedisServer, key: &str, raw: &str) {
    let reply = cli(redis.port, &["SET", key, raw, "KEEPTTL"]);
    assert_eq!(reply.trim(), "OK", "SET {key}");
}

/// The record's `auth` value replaced by `auth`, as text: the record's id is an i128 that a
/// `serde_json::Value` round trip would turn into a float.
fn with_auth(raw: &str, auth: &Value) -> String {
    let record: Value = serde_json::from_str(raw).expect("a JSON session record");
    let old = format!("\"auth\":{}", record["data"]["auth"]);
    assert!(raw.contains(&old), "the sign-in is found as written");
    raw.replacen(&old, &format!("\"auth\":{auth}"), 1)
}

/// Launches `us` through `gw` and asserts the browser is sent to sign in again.
async fn assert_launch_signs_in_again(browser: &Browser, gw: &Gateway, what: &str) {
    let launch = browser.get(&gw.url("/stores/us/launch")).await;
    assert_eq!(launch.status(), 303, "{what}: {}", browser.hops_text());
    assert_eq!(
        launch
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok()),
        Some("/login?return_to=%2Fstores%2Fus%2Flaunch"),
        "{what}"
    );
}

#[tokio::test]
async fn an_older_session_record_still_launches_and_an_unreadable_one_is_signed_out() {
    let (_op, redis, a, _b) = two_replicas().await;
    let browser = Browser::new();
    sign_in(&browser, &a).await;

    // As written before the sign-in became one JSON string: an object in the record.
    let (key, raw) = signed_in_record(&redis);
    let record: Value = serde_json::from_str(&raw).expect("a JSON session record");
    let encoded = record["data"]["auth"]
        .as_str()
        .expect("the sign-in is stored as one JSON string");
    let as_object: Value = serde_json::from_str(encoded).expect("a JSON sign-in");
    assert!(as_object.is_object());
    store_record(&redis, &key, &with_auth(&raw, &as_object));
    let launch = browser.get(&a.url("/stores/us/launch")).await;
    assert_eq!(
        launch.status(),
        302,
        "older record: {}",
        browser.hops_text()
    );
    let to_store = location(&launch).expect("to the storefront");
    assert!(
        to_store.path().contains("/login/token/"),
        "older record launches: {to_store}"
    );

    // A sign-in no version can read: signed out (sent to sign in again), not an error page.
    let (key, raw) = signed_in_record(&redis);
    store_record(
        &redis,
        &key,
        &with_auth(&raw, &Value::String("{\"identity\":".into())),
    );
    assert_launch_signs_in_again(&browser, &a, "unreadable sign-in").await;
    crate::harness::assert_not_signed_in(&browser, &a).await;

    // A whole record no version can read: the same.
    sign_in(&browser, &a).await;
    let (key, _) = signed_in_record(&redis);
    store_record(&redis, &key, "not a session record");
    assert_launch_signs_in_again(&browser, &a, "unreadable record").await;
    crate::harness::assert_not_signed_in(&browser, &a).await;

    let launches = a
        .audit_events()
        .await
        .into_iter()
        .filter(|e| e.event == storegate::audit::EventKind::Launch)
        .count();
    assert_eq!(launches, 1, "only the first launch was decided");
}
