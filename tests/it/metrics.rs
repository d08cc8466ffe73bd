//! `GET /metrics` after a sign-in, a launch and a denial: the counters and latency histograms move,
//! and nothing user- or session-specific appears in the exposition.

use serde_json::json;

use crate::harness::{Gateway, Opts, Reserved};
use crate::support::browser::Browser;
use crate::support::redis::RedisServer;
use crate::support::rogue_op::RogueOp;

const CLIENT: &str = "storegate";
const SECRET: &str = "metrics-client-secret-0123456789";

async fn scrape(gw: &Gateway) -> String {
    let resp = reqwest::get(gw.url("/metrics"))
        .await
        .expect("GET /metrics");
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/plain; version=0.0.4")),
        "Prometheus text format"
    );
    resp.text().await.expect("body")
}

/// The value of the sample whose line starts with `series` (name and labels exactly as exposed).
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

#[tokio::test]
async fn metrics_count_sign_ins_launches_denials_and_upstream_latency() {
    let op = RogueOp::start(CLIENT, SECRET).await;
    op.set_claims(json!({"email": "mo@corp.example", "given_name": "Mo", "family_name": "Metric", "groups": ["bc-support"]}));
    let redis = RedisServer::start();
    let mut opts = Opts::new(&op.issuer, CLIENT, SECRET);
    opts.redis_url = Some(redis.url());
    let gw = Gateway::start(Reserved::new().await, opts).await;

    let before = scrape(&gw).await;
    assert_eq!(
        value(&before, "storegate_sign_ins_total{outcome=\"allow\"}"),
        0.0
    );
    assert_eq!(value(&before, "storegate_redis_errors_total"), 0.0);

    let b = Browser::new();
    let start = b.get(&gw.url("/login")).await;
    let done = b.follow_while(start, |u| u.path() != "/").await;
    assert_eq!(done.status(), 303, "{}", b.hops_text());
    let launch = b.get(&gw.url("/stores/us/launch")).await;
    assert_eq!(launch.status(), 302);
    let denied = b.get(&gw.url("/stores/eu/launch")).await;
    assert_eq!(denied.status(), 403);
    let session_cookie = b.cookies_for(&gw.base).expect("session cookie");

    let text = scrape(&gw).await;
    assert_eq!(
        value(&text, "storegate_sign_ins_total{outcome=\"allow\"}"),
        1.0
    );
    assert_eq!(
        value(&text, "storegate_launches_total{outcome=\"allow\"}"),
        1.0
    );
    assert_eq!(
        value(&text, "storegate_launches_total{outcome=\"deny\"}"),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "storegate_denials_total{event=\"launch\",reason=\"not_entitled\"}"
        ),
        1.0
    );
    assert!(
        value(
            &text,
            "storegate_idp_request_duration_seconds_count{idp=\"nam\",result=\"ok\",step=\"callback\"}"
        ) >= 1.0
    );
    assert!(
        value(
            &text,
            "storegate_bigcommerce_request_duration_seconds_count{account=\"main\",call=\"store_time\",result=\"ok\"}"
        ) >= 1.0
    );
    assert!(text.contains("call=\"find_customer\""), "{text}");

    // No user, session or secret in any label or value.
    let session_id = session_cookie
        .split(';')
        .find_map(|c| c.trim().split_once('=').map(|(_, v)| v.to_owned()))
        .expect("cookie value");
    for forbidden in [
        "mo@corp.example",
        "rogue-user",
        session_id.as_str(),
        SECRET,
        "token-abc123",
        "login-secret",
        redis.url().as_str(),
    ] {
        assert!(
            !text.contains(forbidden),
            "{forbidden} leaked into /metrics"
        );
    }

    // Redis errors are counted.
    let mut redis = redis;
    redis.stop();
    assert_eq!(b.get(&gw.url("/api/me")).await.status(), 503);
    let text = scrape(&gw).await;
    assert!(
        value(&text, "storegate_redis_errors_total") >= 1.0,
        "{text}"
    );
}
