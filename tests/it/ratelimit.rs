//! Issue 10: the sign-in rate limit per client address is configurable (`[rate_limit]`), off with
//! 0, and by default lets an office behind one NAT address sign in at 9:00. Every request here
//! comes from 127.0.0.1, one address.

use crate::harness::{Gateway, IDP, Opts, Reserved};
use crate::support::browser::Browser;
use crate::support::rogue_op::RogueOp;

const CLIENT: &str = "storegate";
const SECRET: &str = "ratelimit-client-secret-0123456789";

async fn gateway(extra_toml: &str) -> (RogueOp, Gateway) {
    let op = RogueOp::start(CLIENT, SECRET).await;
    let mut opts = Opts::new(&op.issuer, CLIENT, SECRET);
    opts.extra_toml = extra_toml.to_owned();
    let gw = Gateway::start(Reserved::new().await, opts).await;
    (op, gw)
}

#[tokio::test]
async fn the_configured_burst_passes_then_429_with_retry_after_of_one_token() {
    // 6 a minute: one request comes back every 10 s.
    let (_op, gw) =
        gateway("[rate_limit]\nper_address_per_minute = 6\nper_address_burst = 3\n").await;
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for i in 0..3 {
        let r = c.get(gw.url("/login")).send().await.unwrap();
        assert_eq!(r.status(), 303, "request {i} of the burst");
    }
    for path in [
        "/login".to_owned(),
        format!("/oidc/{IDP}/callback?code=x&state=y"),
    ] {
        let r = c.get(gw.url(&path)).send().await.unwrap();
        assert_eq!(r.status(), 429, "{path}");
        assert_eq!(r.headers()["retry-after"], "10", "{path}");
        assert!(
            r.text()
                .await
                .unwrap()
                .contains("Too many sign-in attempts from your address")
        );
    }
    // The portal and launches are not sign-in requests: not limited.
    let r = c.get(gw.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn zero_turns_the_limit_off() {
    // More than the default burst (1200) from one address: none refused.
    let (_op, gw) = gateway("[rate_limit]\nper_address_per_minute = 0\n").await;
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for i in 0..1300 {
        let r = c.get(gw.url("/login")).send().await.unwrap();
        assert_eq!(r.status(), 303, "request {i}");
    }
}

#[tokio::test]
async fn by_default_three_hundred_people_behind_one_address_sign_in_within_a_minute() {
    let (_op, gw) = gateway("").await;
    for person in 0..300 {
        let b = Browser::new();
        let start = b.get(&gw.url("/login")).await;
        let done = b.follow_while(start, |u| u.path() != "/").await;
        assert_eq!(done.status(), 303, "person {person}: {}", b.hops_text());
    }
    let sign_ins = gw
        .audit_events()
        .await
        .into_iter()
        .filter(|e| {
            e.event == storegate::audit::EventKind::SignIn
                && e.outcome == storegate::audit::Outcome::Allow
        })
        .count();
    assert_eq!(sign_ins, 300);
}
