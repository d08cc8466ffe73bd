//! Sign-in -> portal -> launch against the independent OpenID provider (node oidc-provider).

use serde_json::{Value, json};
use storegate::audit::{EventKind, Outcome};

use crate::harness::{Gateway, MAIN_HASH, Opts, Reserved, assert_not_signed_in};
use crate::support::browser::{Browser, location, query_param};
use crate::support::peers::{OidcPeer, OidcPeerConfig, PeerClient};
use crate::support::redis::RedisServer;

const CLIENT: &str = "storegate";
const SECRET: &str = "peer-client-secret-0123456789";

fn peer_for(reserved: &Reserved) -> OidcPeer {
    OidcPeer::start(
        &OidcPeerConfig::new()
            .client(PeerClient::new(CLIENT, SECRET, &reserved.redirect_uri()))
            .account(
                "mia",
                json!({
                    "email": "Mia.Merch@Corp.Example",
                    "given_name": "Mia",
                    "family_name": "Merchant",
                    "groups": ["bc-merchandisers"],
                }),
            )
            .account("sam", json!({"email": "sam@corp.example", "given_name": "Sam", "family_name": "Support", "groups": ["bc-support"]}))
            .account("nora", json!({"email": "nora@corp.example", "given_name": "Nora", "family_name": "Nobody", "groups": []}))
            // Access Manager releases many attributes only in userinfo: so does the peer here.
            .userinfo_only("groups"),
    )
}

/// Walks `/login` through the peer's pages and back; returns the gateway's answer to the callback.
async fn sign_in(
    b: &Browser,
    gw: &Gateway,
    account: &str,
    return_to: Option<&str>,
) -> reqwest::Response {
    let start = match return_to {
        Some(rt) => {
            b.get(&gw.url(&format!("/login?return_to={}", urlencode(rt))))
                .await
        }
        None => b.get(&gw.url("/login")).await,
    };
    assert_eq!(start.status(), 303, "login redirects to the IdP");
    let to_idp = location(&start).expect("location");
    assert_eq!(
        query_param(&to_idp, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert!(query_param(&to_idp, "nonce").is_some() && query_param(&to_idp, "state").is_some());
    let back = b.oidc_provider_login(start, account).await;
    let callback = location(&back).expect("redirect to callback");
    assert!(
        callback.as_str().starts_with(&gw.url("/oidc/nam/callback")),
        "{callback}"
    );
    assert!(
        query_param(&callback, "iss").is_some(),
        "RFC 9207 iss is sent by the peer"
    );
    b.get(callback.as_str()).await
}

/// The peer releases `groups` under a scope of that name, as Access Manager does with an
/// attribute set bound to a scope.
fn opts(peer: &OidcPeer) -> Opts {
    let mut o = Opts::new(&peer.issuer, CLIENT, SECRET);
    o.idp_extra = r#"scopes = ["openid", "email", "profile", "groups"]"#.to_owned();
    o
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn full_flow(redis: Option<&RedisServer>) {
    let reserved = Reserved::new().await;
    let peer = peer_for(&reserved);
    let mut opts = opts(&peer);
    opts.redis_url = redis.map(|r| r.url());
    let gw = Gateway::start(reserved, opts).await;
    let b = Browser::new();

    // Without a session the portal sends the browser to sign in.
    let portal = b.get(&gw.url("/")).await;
    assert_eq!(portal.status(), 303);
    assert_eq!(
        location(&portal).map(|u| u.path().to_owned()).as_deref(),
        Some("/login")
    );

    let done = sign_in(&b, &gw, "mia", None).await;
    assert_eq!(done.status(), 303, "callback accepted");
    assert_eq!(
        location(&done).map(|u| u.path().to_owned()).as_deref(),
        Some("/")
    );
    assert_eq!(
        done.headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );

    let portal = b.get(&gw.url("/")).await;
    assert_eq!(portal.status(), 200);
    let html = portal.text().await.expect("portal");
    for store in ["US Storefront", "EU Storefront", "Outlet"] {
        assert!(html.contains(store), "tile {store} missing:\n{html}");
    }
    assert!(html.contains("merchandiser"));
    assert!(html.contains("/stores/us/launch"));

    let me: Value = b.get(&gw.url("/api/me")).await.json().await.expect("json");
    assert_eq!(me["email"], "mia.merch@corp.example");
    assert_eq!(me["idp"], "nam");
    assert_eq!(
        me["groups"],
        json!(["bc-merchandisers"]),
        "groups merged from userinfo"
    );
    assert_eq!(me["stores"].as_array().map(Vec::len), Some(3));
    assert_eq!(me["stores"][0]["id"], "us");
    assert_eq!(me["stores"][0]["role"], "merchandiser");

    // Launch: customer created, token minted, storefront signs the user in.
    let launch = b.get(&gw.url("/stores/us/launch?to=/cart.php")).await;
    assert_eq!(launch.status(), 302);
    assert_eq!(
        launch
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let to_store = location(&launch).expect("to storefront");
    assert!(
        to_store.as_str().starts_with(&format!(
            "{}/storefront/{MAIN_HASH}/1/login/token/",
            gw.sim_base
        )),
        "{to_store}"
    );
    let landed = b.follow(launch).await;
    assert_eq!(landed.status(), 200);
    assert_eq!(
        landed.url().path(),
        format!("/storefront/{MAIN_HASH}/1/cart.php")
    );
    let page = landed.text().await.expect("store page");
    assert!(page.contains("Signed in as Mia Merchant"), "{page}");

    let accepted = gw.sim.accepted_logins();
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].redirect_to, "/cart.php");
    let customers = gw.sim.customers(MAIN_HASH);
    assert_eq!(customers.len(), 1);
    assert_eq!(customers[0].email, "mia.merch@corp.example");
    assert_eq!(
        customers[0].channel_ids,
        Some(vec![1, 2]),
        "both entitled channels of the store hash"
    );
    let groups = gw.sim.customer_groups(MAIN_HASH);
    let staff = groups
        .iter()
        .find(|g| g.name == "Staff")
        .expect("Staff group created");
    assert_eq!(customers[0].customer_group_id, staff.id);
    assert_eq!(
        gw.sim
            .attribute_value(MAIN_HASH, customers[0].id, "storegate_subject")
            .as_deref(),
        Some("nam:mia")
    );

    // A repeated launch makes no API call: customer id and store clock are remembered.
    let calls = gw.sim.api_calls(MAIN_HASH);
    let again = b.get(&gw.url("/stores/us/launch")).await;
    assert_eq!(again.status(), 302);
    assert_eq!(gw.sim.api_calls(MAIN_HASH), calls);
    let landed = b.follow(again).await;
    assert_eq!(
        landed.url().path(),
        format!("/storefront/{MAIN_HASH}/1/account.php"),
        "default path"
    );
    assert_eq!(gw.sim.accepted_logins().len(), 2);

    let events = gw.audit_events().await;
    let sign_in = events
        .iter()
        .find(|e| e.event == EventKind::SignIn)
        .expect("sign-in event");
    assert_eq!(sign_in.outcome, Outcome::Allow);
    assert_eq!(sign_in.subject.as_deref(), Some("mia"));
    let launches: Vec<_> = events
        .iter()
        .filter(|e| e.event == EventKind::Launch)
        .collect();
    assert_eq!(launches.len(), 2);
    assert!(
        launches.iter().all(|e| e.outcome == Outcome::Allow
            && e.rule.as_deref() == Some("merchandisers-everywhere"))
    );
    assert!(launches.iter().all(|e| !e.request_id.is_empty()));
    let all = serde_json::to_string(&events).expect("json");
    assert!(
        !all.contains(SECRET) && !all.contains("login-secret-"),
        "no secret in audit events"
    );

    // Sign out: the session is gone.
    let portal = b.get(&gw.url("/")).await.text().await.expect("portal");
    let csrf = portal
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("csrf field")
        .to_owned();
    let out = b.post_form(&gw.url("/logout"), &[("csrf", &csrf)]).await;
    assert_eq!(out.status(), 303);
    assert_not_signed_in(&b, &gw).await;
}

#[tokio::test]
async fn sign_in_portal_and_launch_with_memory_sessions() {
    full_flow(None).await;
}

#[tokio::test]
async fn sign_in_portal_and_launch_with_redis_sessions() {
    let redis = RedisServer::start();
    full_flow(Some(&redis)).await;
}

#[tokio::test]
async fn return_to_is_honoured_after_sign_in() {
    let reserved = Reserved::new().await;
    let peer = peer_for(&reserved);
    let gw = Gateway::start(reserved, opts(&peer)).await;
    let b = Browser::new();
    // A launch without a session goes through sign-in and lands on the launch again.
    let first = b.get(&gw.url("/stores/us/launch?to=/cart.php")).await;
    assert_eq!(first.status(), 303);
    let login = location(&first).expect("to login");
    assert_eq!(login.path(), "/login");
    assert_eq!(
        query_param(&login, "return_to").as_deref(),
        Some("/stores/us/launch?to=/cart.php")
    );
    let done = sign_in(&b, &gw, "sam", Some("/stores/us/launch?to=/cart.php")).await;
    assert_eq!(
        location(&done).map(|u| u.as_str().to_owned()),
        Some(gw.url("/stores/us/launch?to=/cart.php"))
    );
}

#[tokio::test]
async fn user_without_entitlement_sees_whom_to_ask() {
    let reserved = Reserved::new().await;
    let peer = peer_for(&reserved);
    let gw = Gateway::start(reserved, opts(&peer)).await;
    let b = Browser::new();
    assert_eq!(sign_in(&b, &gw, "nora", None).await.status(), 303);
    let portal = b.get(&gw.url("/")).await;
    assert_eq!(portal.status(), 200);
    let html = portal.text().await.expect("page");
    assert!(html.contains("No stores yet"), "{html}");
    assert!(html.contains("the e-commerce team (ecom-access@example.com)"));
    // And a launch is refused with the reason, no token minted.
    let launch = b.get(&gw.url("/stores/us/launch")).await;
    assert_eq!(launch.status(), 403);
    let page = launch.text().await.expect("page");
    assert!(page.contains("no rule grants you this store"), "{page}");
    gw.assert_no_token_minted();
    assert!(
        gw.sim.customers(MAIN_HASH).is_empty(),
        "no customer created"
    );
}

#[tokio::test]
async fn callback_state_missing_reused_or_from_another_browser_is_refused() {
    let reserved = Reserved::new().await;
    let peer = peer_for(&reserved);
    let gw = Gateway::start(reserved, opts(&peer)).await;

    // From another browser: B presents the callback A's sign-in produced.
    let a = Browser::new();
    let start = a.get(&gw.url("/login")).await;
    let back = a.oidc_provider_login(start, "mia").await;
    let callback = location(&back).expect("callback");
    let other = Browser::new();
    let resp = other.get(callback.as_str()).await;
    assert_eq!(resp.status(), 400);
    assert_not_signed_in(&other, &gw).await;

    // The rightful browser still completes (the foreign attempt did not consume its state).
    let ok = a.get(callback.as_str()).await;
    assert_eq!(ok.status(), 303);

    // Reused: the same callback a second time.
    let again = a.get(callback.as_str()).await;
    assert_eq!(again.status(), 400);

    // Missing state.
    let fresh = Browser::new();
    let mut no_state = callback.clone();
    no_state.set_query(Some(&format!(
        "code={}",
        query_param(&callback, "code").unwrap_or_default()
    )));
    let resp = fresh.get(no_state.as_str()).await;
    assert_eq!(resp.status(), 400);
    assert_not_signed_in(&fresh, &gw).await;

    // A code replayed under a fresh state of the same browser fails at the token endpoint, cleanly.
    let c = Browser::new();
    let start = c.get(&gw.url("/login")).await;
    let fresh_state = query_param(&location(&start).expect("to idp"), "state").expect("state");
    let mut replay = callback.clone();
    replay
        .query_pairs_mut()
        .clear()
        .append_pair("code", &query_param(&callback, "code").unwrap_or_default())
        .append_pair("state", &fresh_state)
        .append_pair("iss", &peer.issuer);
    let resp = c.get(replay.as_str()).await;
    assert_eq!(resp.status(), 401);
    assert_not_signed_in(&c, &gw).await;

    let events = gw.audit_events().await;
    let reasons: Vec<_> = events.iter().filter_map(|e| e.reason.clone()).collect();
    assert!(reasons.contains(&"state_unknown".to_owned()), "{reasons:?}");
    assert!(reasons.contains(&"state_missing".to_owned()), "{reasons:?}");
    assert!(
        reasons.contains(&"token_request_failed".to_owned()),
        "{reasons:?}"
    );
    gw.assert_no_token_minted();
}
