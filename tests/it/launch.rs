//! Launch refusals and open-redirect attempts. Sign-in goes through the hostile OP in its
//! well-behaved mode (fast, no node), with the groups each test needs.

use serde_json::json;
use storegate::audit::{EventKind, Outcome};

use crate::harness::{Gateway, MAIN_HASH, Opts, Reserved};
use crate::support::browser::{Browser, location};
use crate::support::rogue_op::RogueOp;

const CLIENT: &str = "storegate";
const SECRET: &str = "launch-client-secret-0123456789";

async fn signed_in(groups: &[&str]) -> (RogueOp, Gateway, Browser) {
    let op = RogueOp::start(CLIENT, SECRET).await;
    // The IdP vouches for the address: an existing customer with it may be adopted (issue 10).
    op.set_claims(json!({"email": "lee@corp.example", "email_verified": true, "given_name": "Lee", "family_name": "Tester", "groups": groups}));
    let gw = Gateway::start(Reserved::new().await, Opts::new(&op.issuer, CLIENT, SECRET)).await;
    let b = Browser::new();
    let start = b.get(&gw.url("/login")).await;
    let done = b.follow_while(start, |u| u.path() != "/").await;
    assert_eq!(done.status(), 303, "signed in: {}", b.hops_text());
    assert_eq!(b.get(&gw.url("/api/me")).await.status(), 200);
    (op, gw, b)
}

/// The refusal tests' "no token minted" must see a token even when the browser never takes it
/// to the store (the test browser follows no redirect by itself): each of its three witnesses.
#[tokio::test]
async fn no_token_minted_catches_a_launch_the_browser_did_not_follow() {
    let (_op, gw, b) = signed_in(&["bc-merchandisers"]).await;
    gw.assert_no_token_minted(); // signing in mints nothing
    let launch = b.get(&gw.url("/stores/us/launch")).await;
    assert_eq!(launch.status(), 302, "{}", b.hops_text());
    let traces = gw.login_token_traces();
    assert_eq!(traces.len(), 2, "{traces:#?}");
    assert!(
        traces[0].starts_with("left the gateway: GET /stores/us/launch -> 302: in header location"),
        "{traces:#?}"
    );
    assert!(
        traces[1].starts_with("audit: launch granted on store Some(\"us\")"),
        "{traces:#?}"
    );
    let assertion =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| gw.assert_no_token_minted()));
    assert!(assertion.is_err(), "an unfollowed launch went unnoticed");

    // Taken to the store, the token is also on the storefront's record.
    let landed = b.follow(launch).await;
    assert_eq!(landed.status(), 200);
    let traces = gw.login_token_traces();
    assert_eq!(traces.len(), 3, "{traces:#?}");
    assert!(
        traces[2].starts_with("storefront accepted a token"),
        "{traces:#?}"
    );
}

/// The `jti` of the token a launch hands out, read from its redirect to the storefront.
fn launch_jti(resp: &reqwest::Response) -> String {
    use base64::Engine as _;
    let to = location(resp).expect("a launch redirects to the storefront");
    let jwt = to
        .path()
        .rsplit_once("/login/token/")
        .map(|(_, t)| t.to_owned())
        .expect("a storefront login URL");
    let payload = jwt.split('.').nth(1).expect("a compact JWT");
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64url payload"),
    )
    .expect("JSON claims");
    claims["jti"].as_str().expect("a jti claim").to_owned()
}

/// docs/bigcommerce.md: `jti` fresh per token. Two launches of one store by one person, at the same
/// second, carry two different random (v4) token ids, and the storefront takes both.
#[tokio::test]
async fn every_launch_mints_a_token_with_a_fresh_random_jti() {
    let (_op, gw, b) = signed_in(&["bc-merchandisers"]).await;
    let first = b.get(&gw.url("/stores/us/launch")).await;
    let second = b.get(&gw.url("/stores/us/launch")).await;
    let (j1, j2) = (launch_jti(&first), launch_jti(&second));
    assert_ne!(j1, j2, "one token id per token");
    for j in [&j1, &j2] {
        let id = uuid::Uuid::parse_str(j).expect("the jti is a UUID");
        assert_eq!(id.get_version(), Some(uuid::Version::Random), "{j}");
    }
    assert_eq!(b.follow(first).await.status(), 200);
    assert_eq!(b.follow(second).await.status(), 200);
    assert_eq!(gw.sim.accepted_logins().len(), 2);
    assert!(gw.sim.rejected_logins().is_empty());
}

#[tokio::test]
async fn open_redirects_in_to_are_refused_without_minting() {
    let (_op, gw, b) = signed_in(&["bc-merchandisers"]).await;
    for evil in [
        "//evil.example",
        "/\\evil.example",
        "https://evil.example",
        "/ok%0d%0aSet-Cookie:x=y",
        "%2F%2Fevil.example",
        "javascript:alert(1)",
    ] {
        let resp = b
            .get(&gw.url(&format!("/stores/us/launch?to={evil}")))
            .await;
        assert_eq!(resp.status(), 400, "to={evil}");
        assert!(location(&resp).is_none(), "no redirect for to={evil}");
    }
    gw.assert_no_token_minted();
    assert!(
        gw.sim.customers(MAIN_HASH).is_empty(),
        "the refusal comes before any BigCommerce call"
    );
}

#[tokio::test]
async fn open_redirects_in_return_to_are_refused() {
    let (_op, gw, b) = signed_in(&["bc-merchandisers"]).await;
    for evil in [
        "//evil.example",
        "/%5Cevil.example",
        "https://evil.example",
        "/a%0d%0aLocation:%20//evil",
        "evil",
    ] {
        let resp = b.get(&gw.url(&format!("/login?return_to={evil}"))).await;
        assert_eq!(resp.status(), 400, "return_to={evil}");
        assert!(location(&resp).is_none());
    }
    let backslash = b.get(&gw.url("/login?return_to=/%5C%5Cevil.example")).await;
    assert_eq!(backslash.status(), 400);
}

#[tokio::test]
async fn launch_without_entitlement_is_403_with_the_reason() {
    let (_op, gw, b) = signed_in(&["bc-support"]).await;
    let resp = b.get(&gw.url("/stores/eu/launch")).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(
        resp.headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let page = resp.text().await.expect("page");
    assert!(
        page.contains("EU Storefront") && page.contains("no rule grants you this store"),
        "{page}"
    );
    gw.assert_no_token_minted();
    assert!(gw.sim.customers(MAIN_HASH).is_empty());
    let events = gw.audit_events().await;
    let denial = events
        .iter()
        .find(|e| e.event == EventKind::Launch)
        .expect("launch event");
    assert_eq!(denial.outcome, Outcome::Deny);
    assert_eq!(denial.rule.as_deref(), Some("default-deny"));
    assert_eq!(denial.store.as_deref(), Some("eu"));
    // The entitled store still works.
    let ok = b.get(&gw.url("/stores/us/launch")).await;
    assert_eq!(ok.status(), 302);
}

#[tokio::test]
async fn a_deny_rule_wins_over_an_allow() {
    let (_op, gw, b) = signed_in(&["bc-merchandisers", "contractors"]).await;
    let resp = b.get(&gw.url("/stores/eu/launch")).await;
    assert_eq!(resp.status(), 403);
    let page = resp.text().await.expect("page");
    assert!(
        page.contains("contractors-never-eu"),
        "names the deciding rule: {page}"
    );
    gw.assert_no_token_minted();
    let portal = b.get(&gw.url("/")).await.text().await.expect("portal");
    assert!(portal.contains("US Storefront") && !portal.contains("EU Storefront"));
}

#[tokio::test]
async fn unknown_store_is_404() {
    let (_op, gw, b) = signed_in(&["bc-merchandisers"]).await;
    let resp = b.get(&gw.url("/stores/nope/launch")).await;
    assert_eq!(resp.status(), 404);
    gw.assert_no_token_minted();
    let events = gw.audit_events().await;
    assert!(
        events
            .iter()
            .any(|e| e.event == EventKind::Launch && e.reason.as_deref() == Some("unknown_store"))
    );
}

#[tokio::test]
async fn launch_is_refused_once_the_session_is_idle_too_long() {
    let (_op, gw, b) = signed_in(&["bc-merchandisers"]).await;
    gw.clock.advance(31 * 60);
    let resp = b.get(&gw.url("/stores/us/launch")).await;
    assert_eq!(resp.status(), 303);
    assert_eq!(
        location(&resp).map(|u| u.path().to_owned()).as_deref(),
        Some("/login")
    );
    gw.assert_no_token_minted();
}

#[tokio::test]
async fn launch_is_refused_after_the_absolute_lifetime() {
    let (_op, gw, b) = signed_in(&["bc-merchandisers"]).await;
    // Stay active (under the 30-minute idle limit) for 11.6 hours: signed in all along.
    for step in 1..=24 {
        gw.clock.advance(29 * 60);
        let me = b.get(&gw.url("/api/me")).await;
        assert_eq!(
            me.status(),
            200,
            "still signed in after {} minutes of activity",
            step * 29
        );
    }
    // 29 minutes more, idle for less than the idle limit: 12 h 5 min after sign-in.
    gw.clock.advance(29 * 60);
    let resp = b.get(&gw.url("/stores/us/launch")).await;
    assert_eq!(resp.status(), 303);
    assert_eq!(
        location(&resp).map(|u| u.path().to_owned()).as_deref(),
        Some("/login")
    );
    gw.assert_no_token_minted();
}

#[tokio::test]
async fn session_cookie_is_httponly_lax_and_rotated_at_sign_in() {
    let op = RogueOp::start(CLIENT, SECRET).await;
    let gw = Gateway::start(Reserved::new().await, Opts::new(&op.issuer, CLIENT, SECRET)).await;
    let b = Browser::new();
    let start = b.get(&gw.url("/login")).await;
    let before = start
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("storegate_session="))
        .map(str::to_owned)
        .expect("pre-login session cookie");
    assert!(
        before.contains("HttpOnly") && before.contains("SameSite=Lax") && before.contains("Path=/"),
        "{before}"
    );
    assert!(
        !before.to_ascii_lowercase().contains("domain="),
        "host-only cookie: {before}"
    );
    let at_op = b.get(location(&start).expect("to op").as_str()).await;
    let cb = b.get(location(&at_op).expect("back").as_str()).await;
    let after = cb
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("storegate_session="))
        .map(str::to_owned)
        .expect("rotated cookie");
    let id = |c: &str| c.split(';').next().unwrap_or_default().to_owned();
    assert_ne!(id(&before), id(&after), "session id rotated at sign-in");
}

#[tokio::test]
async fn pages_carry_security_headers() {
    let op = RogueOp::start(CLIENT, SECRET).await;
    let gw = Gateway::start(Reserved::new().await, Opts::new(&op.issuer, CLIENT, SECRET)).await;
    let b = Browser::new();
    let resp = b.get(&gw.url("/signed-out")).await;
    let h = resp.headers();
    let csp = h
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(
        h.get("x-content-type-options")
            .and_then(|v| v.to_str().ok()),
        Some("nosniff")
    );
    assert_eq!(
        h.get("referrer-policy").and_then(|v| v.to_str().ok()),
        Some("no-referrer")
    );
    assert!(h.get("x-request-id").is_some());
}

#[tokio::test]
async fn logout_needs_the_csrf_token() {
    let (_op, gw, b) = signed_in(&["bc-merchandisers"]).await;
    let resp = b.post_form(&gw.url("/logout"), &[("csrf", "forged")]).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(
        b.get(&gw.url("/api/me")).await.status(),
        200,
        "still signed in"
    );
}

#[tokio::test]
async fn an_existing_customer_is_adopted_once_and_never_handed_to_another_identity() {
    let (op, gw, b) = signed_in(&["bc-merchandisers"]).await;
    // Created in the control panel before the gateway existed.
    let id = gw
        .sim
        .add_customer(
            MAIN_HASH,
            "lee@corp.example",
            "Lee",
            "Tester",
            Some(vec![1]),
        )
        .expect("seed");
    let ok = b.get(&gw.url("/stores/us/launch")).await;
    assert_eq!(ok.status(), 302, "adopted by email on first launch");
    assert_eq!(
        gw.sim
            .attribute_value(MAIN_HASH, id, "storegate_subject")
            .as_deref(),
        Some("nam:rogue-user")
    );

    // Another identity at the IdP now claims the same email address.
    op.set_sub("someone-else");
    let other = Browser::new();
    let start = other.get(&gw.url("/login")).await;
    let done = other.follow_while(start, |u| u.path() != "/").await;
    assert_eq!(done.status(), 303);
    let accepted_before = gw.sim.accepted_logins().len();
    let resp = other.get(&gw.url("/stores/us/launch")).await;
    assert_eq!(resp.status(), 409);
    assert!(location(&resp).is_none());
    assert_eq!(
        gw.sim.accepted_logins().len(),
        accepted_before,
        "no token minted for the conflicting identity"
    );
    let events = gw.audit_events().await;
    let conflict = events
        .iter()
        .rev()
        .find(|e| e.event == EventKind::Launch)
        .expect("launch event");
    assert_eq!(conflict.outcome, Outcome::Error);
    assert!(
        conflict
            .detail
            .as_deref()
            .is_some_and(|d| d.contains("belongs to another identity")),
        "{conflict:?}"
    );
}

#[tokio::test]
async fn request_ids_are_the_gateway_s_own_never_the_client_s() {
    let (_op, gw, b) = signed_in(&["bc-merchandisers"]).await;
    let resp = b
        .client()
        .get(gw.url("/stores/us/launch"))
        .header("x-request-id", "forged-by-client")
        .send()
        .await
        .expect("launch");
    assert_eq!(resp.status(), 302);
    let echoed = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_ne!(echoed, "forged-by-client");
    let events = gw.audit_events().await;
    let launch = events
        .iter()
        .find(|e| e.event == EventKind::Launch)
        .expect("launch event");
    assert_eq!(
        launch.request_id, echoed,
        "the audit event carries the id the response names"
    );
}
