//! Sign-out that really signs out (issue 14):
//!
//! - OIDC Back-Channel Logout 1.0 from node oidc-provider: signing out at the IdP ends the
//!   gateway session on both replicas (one Redis) within a second, the record deleted at once;
//! - hand-made logout tokens, each breaking one rule: refused with 400, audited with the reason,
//!   and no session changes; a valid one ends the sessions, a replay of it is refused;
//! - RP-initiated logout with `id_token_hint`, `post_logout_redirect_uri` and `state`, through
//!   node oidc-provider and back to `/signed-out`, and through `end_session_url` where discovery
//!   advertises none;
//! - the signed-out page ends the storefront sessions the gateway session opened (hidden frames,
//!   a CSP allowing exactly those origins); in headless Chromium the simulator storefront shows
//!   signed out afterwards.

use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use storegate::audit::{AuditEvent, EventKind, Outcome};
use url::Url;

use crate::harness::{Gateway, IDP, MAIN_HASH, Opts, Reserved};
use crate::support::browser::{Browser, location, query_param};
use crate::support::peers::{OidcPeer, OidcPeerConfig, PeerClient};
use crate::support::redis::{RedisServer, cli};
use crate::support::rogue_op::{KID_A, RogueOp};

const CLIENT: &str = "storegate";
const SECRET: &str = "signout-client-secret-0123456789";
const EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
const SID: &str = "rogue-sid-1";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

async fn me_status(b: &Browser, gw: &Gateway) -> u16 {
    b.get(&gw.url("/api/me")).await.status().as_u16()
}

/// The browser's CSRF token, from the portal's sign-out form.
async fn csrf(b: &Browser, gw: &Gateway) -> String {
    let portal = b.get(&gw.url("/")).await.text().await.expect("portal");
    portal
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("csrf field")
        .to_owned()
}

/// The session records in the shared Redis.
fn session_records(redis: &RedisServer) -> usize {
    cli(redis.port, &["--scan", "--pattern", "storegate:session:*"])
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

/// Back-channel refusals and successes at `gw`, oldest first: (outcome, reason).
fn back_channel_events(gw: &Gateway) -> Vec<(Outcome, Option<String>)> {
    gw.audit_now()
        .iter()
        .filter(|e| e.event == EventKind::SignOut && e.actor.as_deref() == Some("idp:backchannel"))
        .map(|e: &AuditEvent| (e.outcome, e.reason.clone()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// node oidc-provider with its backChannelLogout feature

/// The peer, with the gateway registered for back-channel logout (session required: `sid` in the
/// ID token and the logout token) and for RP-initiated logout back to `/signed-out`.
fn peer_with_back_channel(reserved: &Reserved) -> OidcPeer {
    let mut client = PeerClient::new(CLIENT, SECRET, &reserved.redirect_uri());
    client.post_logout_redirect_uris = vec![format!("{}/signed-out", reserved.base)];
    client.extra.insert(
        "backchannel_logout_uri".into(),
        json!(format!("{}/oidc/nam/backchannel-logout", reserved.base)),
    );
    client
        .extra
        .insert("backchannel_logout_session_required".into(), json!(true));
    OidcPeer::start(
        &OidcPeerConfig::new().client(client).account(
            "mia",
            json!({"email": "mia@corp.example", "given_name": "Mia", "family_name": "Merchant", "groups": ["bc-merchandisers"]}),
        ),
    )
}

fn peer_opts(peer: &OidcPeer) -> Opts {
    let mut o = Opts::new(&peer.issuer, CLIENT, SECRET);
    o.idp_extra = r#"scopes = ["openid", "email", "profile", "groups"]"#.to_owned();
    o
}

async fn sign_in_at_peer(b: &Browser, gw: &Gateway) {
    let start = b.get(&gw.url("/login")).await;
    let back = b.oidc_provider_login(start, "mia").await;
    let callback = location(&back).expect("redirect to callback");
    let done = b.get(callback.as_str()).await;
    assert_eq!(done.status(), 303, "signed in: {}", b.hops_text());
}

/// The peer's logout confirmation: `page` is its `/session/end` form; posts "yes, everywhere".
async fn confirm_peer_logout(
    b: &Browser,
    peer: &OidcPeer,
    page: reqwest::Response,
) -> reqwest::Response {
    let status = page.status();
    let html = page.text().await.expect("logout page");
    assert_eq!(status, 200, "{html}");
    let xsrf = html
        .split("name=\"xsrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_else(|| panic!("no xsrf in the peer's logout page:\n{html}"))
        .to_owned();
    b.post_form(
        &format!("{}/session/end/confirm", peer.issuer),
        &[("xsrf", &xsrf), ("logout", "yes")],
    )
    .await
}

/// The IdP sessions (`sid`) the gateway indexed its sessions under, from the shared Redis.
fn indexed_sids(redis: &RedisServer) -> Vec<String> {
    let prefix = format!("storegate:sidx:{IDP}:sid:");
    cli(redis.port, &["--scan", "--pattern", &format!("{prefix}*")])
        .lines()
        .filter_map(|l| l.trim().strip_prefix(&prefix).map(str::to_owned))
        .collect()
}

/// Polls until the session records are gone; `false` once `deadline` has passed.
async fn sessions_gone_by(redis: &RedisServer, deadline: Instant) -> bool {
    loop {
        if session_records(redis) == 0 {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Until 2026-12-02 this was ignored: oidc-provider's SSRF guard refused to connect to the
/// gateway on 127.0.0.1, and said so only through an event nobody listened to (the peer now
/// allows loopback and logs every back-channel delivery on stderr; see server.mjs).
#[tokio::test]
async fn signing_out_at_the_idp_ends_the_session_on_both_replicas_within_a_second() {
    let redis = RedisServer::start();
    let reserved = Reserved::new().await;
    let peer = peer_with_back_channel(&reserved);
    let mut opts = peer_opts(&peer);
    opts.redis_url = Some(redis.url());
    let a = Gateway::start(reserved, opts).await;
    let b_gw = a.replica(Reserved::new().await).await;
    let browser = Browser::new();
    sign_in_at_peer(&browser, &a).await;
    for gw in [&a, &b_gw] {
        assert_eq!(me_status(&browser, gw).await, 200, "{}: signed in", gw.base);
    }
    assert_eq!(session_records(&redis), 1);
    // The gateway kept the ID token's sid: its session is indexed under that IdP session.
    let sids = indexed_sids(&redis);
    assert_eq!(sids.len(), 1, "{sids:?}");
    let sid = sids[0].clone();

    // The person signs out at the IdP itself (another application's sign-out link, say): the
    // gateway is not in this conversation at all, only told over the back channel.
    let page = browser.get(&format!("{}/session/end", peer.issuer)).await;
    let confirmed = confirm_peer_logout(&browser, &peer, page).await;
    // The clock starts when the peer's confirmation arrives: from here the person believes
    // they are signed out everywhere. (oidc-provider posts the logout tokens before it
    // answers, so on a healthy run the record is already gone.)
    let confirmed_at = Instant::now();
    assert_eq!(
        confirmed.status(),
        303,
        "peer logout confirmed\n{}",
        peer.stderr()
    );
    let gone = sessions_gone_by(&redis, confirmed_at + Duration::from_secs(1)).await;
    let took = confirmed_at.elapsed();
    assert!(
        gone,
        "the session record was still in Redis {took:?} after the peer's logout confirmation\n\
         --- peer stderr ---\n{}\n--- audit at A ---\n{:#?}",
        peer.stderr(),
        a.audit_now()
    );
    assert!(
        indexed_sids(&redis).is_empty(),
        "the index entry went with it"
    );
    println!("peer's logout confirmation to the session gone from Redis: {took:?}");

    // The peer says it delivered the logout token for that very IdP session (its stderr is
    // read by a thread, hence the wait).
    let delivered = format!("backchannel.success client={CLIENT} sub=mia sid={sid}");
    crate::support::wait::until("the peer's delivery line", Duration::from_secs(5), || {
        let seen = peer.stderr().contains(&delivered);
        async move { seen }
    })
    .await;

    // Audited at A (the replica the logout token was posted to): one allow, naming the sid.
    let done: Vec<AuditEvent> = a
        .audit_now()
        .into_iter()
        .filter(|e| e.event == EventKind::SignOut && e.actor.as_deref() == Some("idp:backchannel"))
        .collect();
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(done[0].outcome, Outcome::Allow);
    assert_eq!(done[0].reason, None);
    assert_eq!(done[0].idp.as_deref(), Some(IDP));
    assert_eq!(done[0].subject.as_deref(), Some("mia"));
    assert_eq!(
        done[0].detail.as_deref(),
        Some(
            format!("back-channel logout of IdP session sid {sid:?}: 1 session(s) ended").as_str()
        )
    );
    assert!(back_channel_events(&b_gw).is_empty(), "B was not asked");

    // The next request on each replica is signed out: no identity, and the portal sends the
    // browser to sign in.
    for gw in [&a, &b_gw] {
        assert_eq!(me_status(&browser, gw).await, 401, "{}", gw.base);
        let portal = browser.get(&gw.url("/")).await;
        assert!(portal.status().is_redirection(), "{}", portal.status());
        assert_eq!(
            location(&portal).map(|u| u.path().to_owned()).as_deref(),
            Some("/login")
        );
    }
    assert_eq!(session_records(&redis), 0, "no request brought it back");
}

#[tokio::test]
async fn rp_initiated_logout_goes_to_the_peer_with_the_id_token_hint_and_comes_back_with_state() {
    let reserved = Reserved::new().await;
    let peer = peer_with_back_channel(&reserved);
    let gw = Gateway::start(reserved, peer_opts(&peer)).await;
    let b = Browser::new();
    sign_in_at_peer(&b, &gw).await;
    let launched = b.get(&gw.url("/stores/us/launch")).await;
    assert_eq!(launched.status(), 302);
    b.follow(launched).await;

    let token = csrf(&b, &gw).await;
    let out = b.post_form(&gw.url("/logout"), &[("csrf", &token)]).await;
    assert_eq!(out.status(), 303);
    assert_eq!(
        out.headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let to_idp = location(&out).expect("to the peer's end_session");
    assert!(
        to_idp
            .as_str()
            .starts_with(&format!("{}/session/end", peer.issuer)),
        "{to_idp}"
    );
    let hint = query_param(&to_idp, "id_token_hint").expect("id_token_hint");
    let claims = jwt_claims(&hint);
    assert_eq!(claims["sub"], "mia");
    assert_eq!(claims["aud"], CLIENT);
    assert!(
        claims["sid"].is_string(),
        "the peer put sid in the ID token: {claims}"
    );
    assert_eq!(
        query_param(&to_idp, "post_logout_redirect_uri").as_deref(),
        Some(gw.url("/signed-out").as_str())
    );
    assert_eq!(query_param(&to_idp, "client_id").as_deref(), Some(CLIENT));
    let state = query_param(&to_idp, "state").expect("state");

    // The peer accepts the hint (it would refuse one it did not sign for this client) and, once
    // confirmed, sends the browser back with the same state.
    let page = b.get(to_idp.as_str()).await;
    let confirmed = confirm_peer_logout(&b, &peer, page).await;
    let back = location(&confirmed).expect("back to the gateway");
    assert_eq!(back.path(), "/signed-out", "{back}");
    assert_eq!(query_param(&back, "state").as_deref(), Some(state.as_str()));
    let page = b.get(back.as_str()).await;
    let csp = page
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let html = page.text().await.expect("signed-out page");
    assert!(html.contains("US Storefront"), "{html}");
    assert!(
        html.contains(&format!(
            "src=\"{}/storefront/{MAIN_HASH}/1/login.php?action=logout\"",
            gw.sim_base
        )),
        "{html}"
    );
    assert!(
        csp.contains(&format!("frame-src {};", gw.sim_base)),
        "{csp}"
    );
    assert!(
        csp.contains("frame-ancestors 'none'") && !csp.contains("script-src"),
        "{csp}"
    );
    assert_eq!(me_status(&b, &gw).await, 401);
}

fn jwt_claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("JWT payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

// ---------------------------------------------------------------------------------------------
// Hand-made logout tokens (the hostile OP's keys), one broken rule each

/// One OP whose ID tokens carry `sid`, one Redis, gateway A and its replica B.
async fn two_replicas() -> (RogueOp, RedisServer, Gateway, Gateway) {
    let op = RogueOp::start(CLIENT, SECRET).await;
    op.set_claims(json!({"email": "kim@corp.example", "given_name": "Kim", "family_name": "Replica", "groups": ["bc-merchandisers"], "sid": SID}));
    let redis = RedisServer::start();
    let mut opts = Opts::new(&op.issuer, CLIENT, SECRET);
    opts.redis_url = Some(redis.url());
    let a = Gateway::start(Reserved::new().await, opts).await;
    let b = a.replica(Reserved::new().await).await;
    (op, redis, a, b)
}

async fn sign_in(browser: &Browser, gw: &Gateway) {
    let start = browser.get(&gw.url("/login")).await;
    let done = browser.follow_while(start, |u| u.path() != "/").await;
    assert_eq!(done.status(), 303, "signed in: {}", browser.hops_text());
}

/// The hostile OP, one gateway in front of it (`idp_extra` appended to its `[[idp]]`), and a
/// browser signed in there.
async fn signed_in_at_rogue(idp_extra: &str) -> (RogueOp, Gateway, Browser) {
    let op = RogueOp::start(CLIENT, SECRET).await;
    let mut opts = Opts::new(&op.issuer, CLIENT, SECRET);
    opts.idp_extra = idp_extra.replace("{issuer}", &op.issuer);
    let gw = Gateway::start(Reserved::new().await, opts).await;
    let b = Browser::new();
    sign_in(&b, &gw).await;
    (op, gw, b)
}

fn valid_claims(op: &RogueOp) -> Value {
    json!({
        "iss": op.issuer,
        "aud": CLIENT,
        "iat": now(),
        "jti": uuid::Uuid::new_v4().to_string(),
        "sid": SID,
        "sub": "rogue-user",
        "events": { EVENT: {} },
    })
}

/// `claims` with `edit`'s members set over them; a null member removes the claim.
fn edited(mut claims: Value, edit: &Value) -> Value {
    let (Some(c), Some(e)) = (claims.as_object_mut(), edit.as_object()) else {
        panic!("claims and edit must be JSON objects");
    };
    for (k, v) in e {
        if v.is_null() {
            c.remove(k);
        } else {
            c.insert(k.clone(), v.clone());
        }
    }
    claims
}

fn header() -> Value {
    json!({"alg": "RS256", "typ": "logout+jwt", "kid": KID_A})
}

async fn post_logout_token(gw: &Gateway, token: &str) -> (u16, Option<String>, Value) {
    let resp = reqwest::Client::new()
        .post(gw.url("/oidc/nam/backchannel-logout"))
        .form(&[("logout_token", token)])
        .send()
        .await
        .expect("POST backchannel-logout");
    let status = resp.status().as_u16();
    let cache = resp
        .headers()
        .get("cache-control")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, cache, body)
}

#[tokio::test]
async fn each_broken_logout_token_is_refused_audited_and_changes_nothing() {
    let (op, redis, a, b) = two_replicas().await;
    let browser = Browser::new();
    sign_in(&browser, &a).await;
    assert_eq!(session_records(&redis), 1);

    let sign = |claims: &Value| op.sign_jwt(header(), claims, false);
    // Each case: claims set over the valid ones (null removes the claim).
    let edits = [
        ("logout_token_aud", json!({"aud": "another-client"})),
        (
            "logout_token_iss",
            json!({"iss": "https://other-op.example"}),
        ),
        ("logout_token_nonce", json!({"nonce": "n-1"})),
        ("logout_token_events", json!({"events": null})),
        (
            "logout_token_events",
            json!({"events": {"http://schemas.openid.net/event/other": {}}}),
        ),
        (
            "logout_token_no_sid_or_sub",
            json!({"sid": null, "sub": null}),
        ),
        ("logout_token_iat", json!({"iat": now() - 3600})),
        ("logout_token_expired", json!({"exp": now() - 600})),
        ("logout_token_no_jti", json!({"jti": null})),
    ];
    let mut cases: Vec<(&str, String)> = vec![(
        "logout_token_signature",
        op.sign_jwt(header(), &valid_claims(&op), true),
    )];
    cases.extend(
        edits
            .iter()
            .map(|(reason, edit)| (*reason, sign(&edited(valid_claims(&op), edit)))),
    );
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    cases.push((
        "logout_token_alg",
        format!(
            "{}.{}.",
            b64(&json!({"alg": "none"})),
            b64(&valid_claims(&op))
        ),
    ));
    cases.push(("logout_token_malformed", "not-a-jwt".to_owned()));
    cases.push(("logout_token_missing", String::new()));

    for (i, (reason, token)) in cases.iter().enumerate() {
        let (status, cache, body) = post_logout_token(&a, token).await;
        assert_eq!(status, 400, "{reason}");
        assert_eq!(cache.as_deref(), Some("no-store"), "{reason}");
        assert_eq!(body["error"], "invalid_request", "{reason}: {body}");
        let events = back_channel_events(&a);
        assert_eq!(events.len(), i + 1, "{reason}: {events:?}");
        assert_eq!(
            events.last(),
            Some(&(Outcome::Deny, Some((*reason).to_owned()))),
            "{reason}"
        );
        assert_eq!(session_records(&redis), 1, "{reason}: nothing ended");
    }
    assert_eq!(me_status(&browser, &a).await, 200);
    assert_eq!(me_status(&browser, &b).await, 200);
    // An unknown IdP: refused the same way.
    let resp = reqwest::Client::new()
        .post(a.url("/oidc/nobody/backchannel-logout"))
        .form(&[("logout_token", sign(&valid_claims(&op)))])
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), 400);
    assert_eq!(
        back_channel_events(&a).last(),
        Some(&(Outcome::Deny, Some("unknown_idp".to_owned())))
    );
    assert_eq!(me_status(&browser, &a).await, 200);
}

#[tokio::test]
async fn a_valid_logout_token_ends_the_sessions_on_both_replicas_and_its_replay_is_refused() {
    let (op, redis, a, b) = two_replicas().await;
    // Two browsers of the same IdP session (sid), a third of another sid.
    let (one, two) = (Browser::new(), Browser::new());
    sign_in(&one, &a).await;
    sign_in(&two, &b).await;
    op.set_claims(json!({"email": "kim@corp.example", "given_name": "Kim", "family_name": "Replica", "groups": ["bc-merchandisers"], "sid": "another-sid"}));
    let other = Browser::new();
    sign_in(&other, &a).await;
    assert_eq!(session_records(&redis), 3);

    let token = op.sign_jwt(header(), &valid_claims(&op), false);
    let t0 = Instant::now();
    let (status, cache, _) = post_logout_token(&b, &token).await;
    assert_eq!(status, 200);
    assert_eq!(cache.as_deref(), Some("no-store"));
    assert_eq!(
        session_records(&redis),
        1,
        "deleted at once, not at the next request"
    );
    for gw in [&a, &b] {
        assert_eq!(me_status(&one, gw).await, 401);
        assert_eq!(me_status(&two, gw).await, 401);
        assert_eq!(
            me_status(&other, gw).await,
            200,
            "another IdP session stays"
        );
    }
    println!(
        "back-channel logout answered with both replicas signed out: {:?}",
        t0.elapsed()
    );
    assert_eq!(back_channel_events(&b), [(Outcome::Allow, None)]);

    // The same token again, on the other replica, after the person signed in anew with the
    // same sid: refused as a replay, and the new session stays.
    op.set_claims(json!({"email": "kim@corp.example", "given_name": "Kim", "family_name": "Replica", "groups": ["bc-merchandisers"], "sid": SID}));
    sign_in(&one, &a).await;
    let (status, _, body) = post_logout_token(&a, &token).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        back_channel_events(&a),
        [(Outcome::Deny, Some("logout_token_replay".to_owned()))]
    );
    assert_eq!(me_status(&one, &b).await, 200);
    assert_eq!(session_records(&redis), 2);

    // sub only: every session of that person at this IdP ends.
    let by_sub = edited(valid_claims(&op), &json!({"sid": null}));
    let (status, _, _) = post_logout_token(&a, &op.sign_jwt(header(), &by_sub, false)).await;
    assert_eq!(status, 200);
    assert_eq!(me_status(&one, &a).await, 401);
    assert_eq!(me_status(&other, &b).await, 401);
    assert_eq!(session_records(&redis), 0);
}

// ---------------------------------------------------------------------------------------------
// RP-initiated logout where discovery advertises no end_session_endpoint

#[tokio::test]
async fn end_session_url_is_used_with_the_hint_when_discovery_has_none() {
    let (op, gw, b) =
        signed_in_at_rogue("end_session_url = \"{issuer}/nidp/oauth/v1/nam/end_session\"").await;
    let token = csrf(&b, &gw).await;
    let out = b.post_form(&gw.url("/logout"), &[("csrf", &token)]).await;
    assert_eq!(out.status(), 303);
    let to: Url = location(&out).expect("to the end-session URL");
    assert_eq!(
        format!("{}{}", to.origin().ascii_serialization(), to.path()),
        format!("{}/nidp/oauth/v1/nam/end_session", op.issuer)
    );
    let hint = query_param(&to, "id_token_hint").expect("hint");
    assert_eq!(jwt_claims(&hint)["sub"], "rogue-user");
    assert!(query_param(&to, "state").is_some());
    assert_eq!(me_status(&b, &gw).await, 401);
}

#[tokio::test]
async fn without_an_end_session_endpoint_sign_out_lands_on_the_signed_out_page_naming_the_stores() {
    let (_op, gw, b) = signed_in_at_rogue("").await;
    for store in ["us", "eu", "us"] {
        let l = b.get(&gw.url(&format!("/stores/{store}/launch"))).await;
        assert_eq!(l.status(), 302, "{store}");
    }
    let token = csrf(&b, &gw).await;
    let out = b.post_form(&gw.url("/logout"), &[("csrf", &token)]).await;
    let to = location(&out).expect("to /signed-out");
    assert_eq!(to.path(), "/signed-out");
    let page = b.get(to.as_str()).await;
    let csp = page
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let html = page.text().await.expect("page");
    assert_eq!(
        html.matches("class=\"storefront-logout\"").count(),
        2,
        "{html}"
    );
    assert!(
        html.contains("US Storefront") && html.contains("EU Storefront"),
        "{html}"
    );
    assert!(!html.contains("Outlet"), "never launched: {html}");
    // Exactly the storefronts' origin (both on the simulator here) may be framed.
    assert!(
        csp.contains(&format!("frame-src {};", gw.sim_base)),
        "{csp}"
    );
    let audit = gw.audit_now();
    let sign_out = audit
        .iter()
        .find(|e| e.event == EventKind::SignOut)
        .expect("sign-out audited");
    assert_eq!(
        sign_out.detail.as_deref(),
        Some("storefront sign-out: eu, us")
    );

    // A made-up or spent key shows the plain page with the default policy.
    let plain = b.get(&gw.url("/signed-out?state=made-up")).await;
    let plain_csp = plain
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(!plain_csp.contains("frame-src"), "{plain_csp}");
    assert!(
        !plain
            .text()
            .await
            .expect("page")
            .contains("storefront-logout")
    );
}

// ---------------------------------------------------------------------------------------------
// Headless Chromium: the storefront session really ends

/// Runs browse.mjs steps in headless Chromium (see tests/it/accessibility.rs).
async fn chromium(steps: Value) -> Vec<Value> {
    tokio::task::spawn_blocking(move || {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/axe");
        let out = std::process::Command::new("node")
            .arg(dir.join("browse.mjs"))
            .arg(steps.to_string())
            .output()
            .expect("run node tests/peers/axe/browse.mjs");
        assert!(
            out.status.success(),
            "browse.mjs failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("browse.mjs prints JSON");
        v.as_array().expect("results").clone()
    })
    .await
    .expect("browse thread")
}

#[tokio::test]
async fn in_chromium_the_storefront_is_signed_out_after_the_gateway_sign_out() {
    let (_op, gw, b) = signed_in_at_rogue("").await;
    let cookie = b.cookies_for(&gw.url("/")).expect("session cookie");
    let (name, value) = cookie
        .split("; ")
        .next()
        .and_then(|c| c.split_once('='))
        .expect("name=value");
    let account = format!("{}/storefront/{MAIN_HASH}/1/account.php", gw.sim_base);
    let text = "document.body.innerText";
    let r = chromium(json!([
        {"cookie": {"name": name, "value": value, "url": gw.url("/")}},
        {"goto": gw.url("/stores/us/launch")},
        {"eval": text},
        {"goto": gw.url("/")},
        {"click": "form.signout button"},
        {"eval": text},
        {"eval": "[...document.querySelectorAll('iframe.storefront-logout')].map(f => f.src)"},
        {"goto": account},
        {"eval": text},
    ]))
    .await;
    let s = |i: usize| r[i].as_str().unwrap_or_default().to_owned();
    assert!(s(2).contains("Signed in as"), "after launch: {}", s(2));
    assert!(
        s(4).starts_with("/signed-out?state="),
        "after sign-out: {}",
        s(4)
    );
    assert!(
        s(5).contains("You are also signed out of these stores") && s(5).contains("US Storefront"),
        "{}",
        s(5)
    );
    assert_eq!(
        r[6],
        json!([format!(
            "{}/storefront/{MAIN_HASH}/1/login.php?action=logout",
            gw.sim_base
        )])
    );
    assert!(
        s(8).contains("Not signed in"),
        "storefront after sign-out: {}",
        s(8)
    );
    assert_eq!(me_status(&b, &gw).await, 401);
}

// ---------------------------------------------------------------------------------------------
// The session index: one behaviour, memory and Redis

async fn index_behaves(ix: storegate::session::index::SessionIndex) {
    use storegate::identity::IdpId;
    use storegate::session::index::IndexKey::{Sid, Sub};
    let nam = IdpId::new("nam");
    let t = now();
    ix.add(
        &nam,
        &[Sid("s1".into()), Sub("ada".into())],
        "a",
        t + 600,
        t,
    )
    .await
    .expect("add a");
    ix.add(
        &nam,
        &[Sid("s2".into()), Sub("ada".into())],
        "b",
        t + 600,
        t,
    )
    .await
    .expect("add b");
    ix.add(&IdpId::new("other"), &[Sid("s1".into())], "c", t + 600, t)
        .await
        .expect("add c");
    assert_eq!(
        ix.take(&nam, &Sid("s1".into()), t).await.expect("take"),
        ["a"]
    );
    assert!(
        ix.take(&nam, &Sid("s1".into()), t)
            .await
            .expect("take")
            .is_empty(),
        "once"
    );
    let mut by_sub = ix.take(&nam, &Sub("ada".into()), t).await.expect("take");
    by_sub.sort();
    assert_eq!(by_sub, ["a", "b"]);
    assert_eq!(
        ix.take(&IdpId::new("other"), &Sid("s1".into()), t)
            .await
            .expect("take"),
        ["c"],
        "another IdP's key is its own"
    );
    assert!(
        ix.take(&nam, &Sid("nobody".into()), t)
            .await
            .expect("take")
            .is_empty()
    );
}

/// The gateway's Redis session store on `redis`, with the gateway's key prefix.
fn redis_session_store(redis: &RedisServer) -> storegate::session::RedisSessionStore {
    let handle = storegate::store::RedisHandle::new(
        &storegate::secret::Secret::new(redis.url()),
        Duration::from_secs(2),
    )
    .expect("redis handle");
    storegate::session::RedisSessionStore::new(handle, "storegate:")
}

#[tokio::test]
async fn the_session_index_behaves_the_same_in_memory_and_in_redis() {
    let memory = storegate::session::Store::Memory(Default::default());
    index_behaves(storegate::session::index::SessionIndex::beside(&memory)).await;
    let redis = RedisServer::start();
    let store = storegate::session::Store::Redis(Box::new(redis_session_store(&redis)));
    let ix = storegate::session::index::SessionIndex::beside(&store);
    index_behaves(ix.clone()).await;
    // Redis forgets a key with the sessions' absolute lifetime.
    let t = now();
    ix.add(
        &storegate::identity::IdpId::new("nam"),
        &[storegate::session::index::IndexKey::Sub("kim".into())],
        "k",
        t + 600,
        t,
    )
    .await
    .expect("add");
    let ttl: i64 = cli(redis.port, &["TTL", "storegate:sidx:nam:sub:kim"])
        .trim()
        .parse()
        .expect("TTL");
    assert!((590..=601).contains(&ttl), "ttl {ttl}");
}

/// Issue 15: a save of exactly the bytes this replica last read or wrote for a session sends no
/// SET (a sign-in stored its new session, and the session layer saved the same bytes again); a
/// changed record is written; and a record deleted meanwhile is still never written back.
#[tokio::test]
async fn an_unchanged_session_is_not_written_again_and_a_deleted_one_never_comes_back() {
    use tower_sessions::SessionStore;
    use tower_sessions::session::{Id, Record};

    let redis = RedisServer::start();
    let store = redis_session_store(&redis);
    let sets = || -> u64 {
        let stats = cli(redis.port, &["INFO", "commandstats"]);
        stats
            .lines()
            .find_map(|l| l.strip_prefix("cmdstat_set:calls="))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse().expect("calls"))
    };
    let mut record = Record {
        id: Id::default(),
        data: [("k".to_owned(), json!("v"))].into_iter().collect(),
        expiry_date: time::OffsetDateTime::now_utc() + time::Duration::hours(1),
    };
    store.create(&mut record).await.expect("create");
    assert_eq!(sets(), 1);

    // The same bytes again: no SET.
    store.save(&record).await.expect("save");
    assert_eq!(sets(), 1);

    // The same data with the expiry a moment later (the session layer saving at the end of a
    // request what the request had just saved itself): no SET either.
    record.expiry_date += time::Duration::seconds(1);
    store.save(&record).await.expect("save");
    assert_eq!(sets(), 1);
    // An expiry moved further is written.
    record.expiry_date += time::Duration::minutes(10);
    store.save(&record).await.expect("save");
    assert_eq!(sets(), 2);
    assert!(
        cli(
            redis.port,
            &["PEXPIRETIME", &format!("storegate:session:{}", record.id)]
        )
        .trim()
        .parse::<i128>()
        .expect("PEXPIRETIME")
            >= (record.expiry_date.unix_timestamp_nanos() / 1_000_000) - 1,
        "Redis forgets the record at its new expiry"
    );

    // Another value: written.
    record.data.insert("k".into(), json!("w"));
    store.save(&record).await.expect("save");
    assert_eq!(sets(), 3);
    let stored = store.load(&record.id).await.expect("load").expect("stored");
    assert_eq!(stored.data.get("k"), Some(&json!("w")));

    // Deleted elsewhere (a logout on another replica): neither the same bytes nor new ones come
    // back.
    let key = format!("storegate:session:{}", record.id);
    assert_eq!(cli(redis.port, &["EXISTS", &key]).trim(), "1");
    cli(redis.port, &["DEL", &key]);
    store.save(&record).await.expect("save");
    record.data.insert("k".into(), json!("x"));
    store.save(&record).await.expect("save");
    assert_eq!(cli(redis.port, &["EXISTS", &key]).trim(), "0");
}

/// Issue 15: a new session's record and its session-index entries are stored by one script; an
/// id that collides with a stored session is neither overwritten nor indexed (the record gets a
/// fresh id, which is); and a save that is not a create leaves the entries to the caller.
#[tokio::test]
async fn a_new_session_is_stored_and_indexed_in_one_step_and_a_colliding_id_indexes_nothing() {
    use storegate::identity::IdpId;
    use storegate::session::index::IndexKey::{Sid, Sub};
    use storegate::session::index::with_index_on_create;
    use tower_sessions::SessionStore;
    use tower_sessions::session::{Id, Record};

    let redis = RedisServer::start();
    let store = storegate::session::Store::Redis(Box::new(redis_session_store(&redis)));
    let ix = storegate::session::index::SessionIndex::beside(&store);
    let idp = IdpId::new("nam");
    let keys = [Sid("s-7".into()), Sub("kim".into())];
    let t = now();
    let members = |key: &str| -> Vec<String> {
        let mut m: Vec<String> = cli(redis.port, &["SMEMBERS", key])
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect();
        m.sort();
        m
    };

    // Another session already holds this id.
    let taken = Id::default();
    let taken_key = format!("storegate:session:{taken}");
    cli(redis.port, &["SET", &taken_key, "someone else's record"]);
    let mut record = Record {
        id: taken,
        data: [("k".to_owned(), json!("v"))].into_iter().collect(),
        expiry_date: time::OffsetDateTime::now_utc() + time::Duration::hours(1),
    };
    let entries = ix
        .on_create(&idp, &keys, t + 600, t)
        .expect("a Redis index");
    with_index_on_create(entries.clone(), store.create(&mut record))
        .await
        .expect("create");
    assert!(entries.written(), "the store wrote the index entries");
    assert_ne!(record.id, taken, "a fresh id after the collision");
    assert_eq!(
        cli(redis.port, &["GET", &taken_key]).trim(),
        "someone else's record"
    );
    let id = record.id.to_string();
    for key in ["storegate:sidx:nam:sid:s-7", "storegate:sidx:nam:sub:kim"] {
        assert_eq!(members(key), [id.as_str()], "{key}: the new id only");
        let ttl: i64 = cli(redis.port, &["TTL", key]).trim().parse().expect("TTL");
        assert!((590..=601).contains(&ttl), "{key}: ttl {ttl}");
    }
    let stored = store.load(&record.id).await.expect("load").expect("stored");
    assert_eq!(stored.data.get("k"), Some(&json!("v")));
    // The IdP's logout finds it through the index.
    assert_eq!(
        ix.take(&idp, &Sid("s-7".into()), t).await.expect("take"),
        [id.as_str()]
    );

    // A save of an existing record is not a create: the entries are left to the caller.
    record.data.insert("k".into(), json!("w"));
    let entries = ix
        .on_create(&idp, &keys, t + 600, t)
        .expect("a Redis index");
    with_index_on_create(entries.clone(), store.save(&record))
        .await
        .expect("save");
    assert!(!entries.written());
    assert_eq!(members("storegate:sidx:nam:sid:s-7"), Vec::<String>::new());
}

/// A record holding a sign-in as the gateway writes it: `auth` as one JSON string, and for a SAML
/// sign-in what single logout needs.
fn signed_in_record(
    subject: &str,
    last_seen: i64,
    saml: Option<Value>,
) -> tower_sessions::session::Record {
    let auth = json!({
        "identity": {
            "subject": subject, "idp": "nam", "email": "kim@example.com", "email_verified": true,
            "given_name": "Kim", "family_name": null, "name": null, "groups": ["staff"],
            "roles": [], "attributes": {}, "auth": {"auth_time": null, "acr": null, "amr": []}, "signed_in_at": now() - 60,
        },
        "csrf": "csrf-token",
        "last_seen": last_seen,
        "customers": {},
    });
    let mut data: std::collections::HashMap<String, Value> =
        [("auth".to_owned(), Value::String(auth.to_string()))]
            .into_iter()
            .collect();
    if let Some(saml) = saml {
        data.insert("saml".into(), saml);
    }
    tower_sessions::session::Record {
        id: tower_sessions::session::Id::default(),
        data,
        expiry_date: time::OffsetDateTime::now_utc() + time::Duration::hours(1),
    }
}

/// The sign-in `store` reads under `id`; there must be one.
async fn a_sign_in(
    store: &storegate::session::Store,
    id: &tower_sessions::session::Id,
) -> storegate::session::browser::SignedInRecord {
    store.signed_in(id).await.expect("read").expect("a sign-in")
}

/// Issue 15: a signed-in request reads its sign-in straight from the stored record, in memory
/// and in Redis, and reads only what is stored now: a record changed by another replica is
/// decoded afresh, a deleted or expired one is no sign-in, and anything it cannot read (no
/// sign-in, an unreadable one, unreadable SAML logout details) is left to the session's own
/// read, which handles it as before.
#[tokio::test]
async fn the_sign_in_is_read_from_the_stored_record_and_only_as_stored_now() {
    use tower_sessions::SessionStore;

    let redis = RedisServer::start();
    let memory = storegate::session::Store::Memory(Default::default());
    let in_redis = storegate::session::Store::Redis(Box::new(redis_session_store(&redis)));
    // Another replica's store on the same Redis: its writes are what this one must not miss.
    let other_replica = redis_session_store(&redis);
    for store in [&memory, &in_redis] {
        let kind = store.kind();
        let saml = json!({"idp": "nam", "name_id": "kim@nam", "name_id_format": null,
                          "session_index": "idx-1"});
        let mut record = signed_in_record("kim", now(), Some(saml));
        store.create(&mut record).await.expect("create");
        let id = record.id;

        let read = a_sign_in(store, &id).await;
        assert_eq!(read.auth.identity.subject, "kim", "{kind}");
        let logout = read.saml.as_deref().expect("the SAML logout details");
        assert_eq!(
            (logout.name_id.as_str(), logout.session_index.as_deref()),
            ("kim@nam", Some("idx-1")),
            "{kind}"
        );
        // Read again unchanged: the same decoded sign-in, shared, not decoded again.
        let again = a_sign_in(store, &id).await;
        assert!(
            std::sync::Arc::ptr_eq(&read.auth, &again.auth),
            "{kind}: decoded twice"
        );

        // Changed by another request or replica: the new text is what is read.
        let mut changed = signed_in_record("kim-2", now() + 5, None);
        changed.id = id;
        match store {
            storegate::session::Store::Redis(_) => other_replica.save(&changed).await,
            _ => store.save(&changed).await,
        }
        .expect("save");
        let read = a_sign_in(store, &id).await;
        assert_eq!(
            read.auth.identity.subject, "kim-2",
            "{kind}: a stale sign-in was read"
        );
        assert!(read.saml.is_none(), "{kind}");

        // What this path cannot read, it leaves to the session: no sign-in, an unreadable one,
        // unreadable SAML logout details, an object where the text was expected to be.
        for (what, edit) in [
            ("no sign-in", None),
            (
                "an unreadable sign-in",
                Some(("auth", json!("{\"identity\":"))),
            ),
            ("unreadable SAML details", Some(("saml", json!({"idp": 7})))),
        ] {
            let mut bad = signed_in_record("kim", now(), None);
            bad.id = id;
            match edit {
                None => {
                    bad.data.remove("auth");
                }
                Some((key, value)) => {
                    bad.data.insert(key.into(), value);
                }
            }
            store.save(&bad).await.expect("save");
            assert!(
                store.signed_in(&id).await.expect("read").is_none(),
                "{kind}: {what} was read as a sign-in"
            );
        }

        // Deleted (a logout on any replica): nothing.
        store.save(&changed).await.expect("save");
        assert!(
            store.signed_in(&id).await.expect("read").is_some(),
            "{kind}"
        );
        store.delete(&id).await.expect("delete");
        assert!(
            store.signed_in(&id).await.expect("read").is_none(),
            "{kind}: a deleted sign-in was read"
        );
    }

    // Memory sessions: an expired record is no sign-in (Redis forgets it by itself).
    let mut expired = signed_in_record("kim", now(), None);
    memory.create(&mut expired).await.expect("create");
    expired.expiry_date = time::OffsetDateTime::now_utc() - time::Duration::seconds(1);
    memory.save(&expired).await.expect("save");
    assert!(
        memory.signed_in(&expired.id).await.expect("read").is_none(),
        "an expired sign-in was read"
    );
}
