//! The staff portal (issue 16): search without script, pins (CSRF-protected, shared by replicas
//! through Redis), recently opened stores first, and error pages whose reference is the audit
//! event's request id.

use std::time::Duration;

use serde_json::json;
use storegate::audit::{EventKind, Outcome};

use crate::harness::{Gateway, Opts, Reserved};
use crate::support::browser::Browser;
use crate::support::redis::RedisServer;
use crate::support::rogue_op::RogueOp;
use crate::support::wait;

const CLIENT: &str = "storegate";
const SECRET: &str = "portal-client-secret-0123456789";

fn opts(op: &RogueOp) -> Opts {
    op.set_claims(json!({"email": "pat@corp.example", "email_verified": true, "given_name": "Pat", "family_name": "Portal", "groups": ["bc-merchandisers"]}));
    Opts::new(&op.issuer, CLIENT, SECRET)
}

async fn sign_in(b: &Browser, gw: &Gateway) {
    let start = b.get(&gw.url("/login")).await;
    let done = b.follow_while(start, |u| u.path() != "/").await;
    assert_eq!(done.status(), 303, "signed in: {}", b.hops_text());
}

async fn page(b: &Browser, url: &str) -> String {
    let resp = b.get(url).await;
    assert_eq!(resp.status(), 200, "{url}");
    resp.text().await.expect("portal body")
}

/// The section headings, in page order.
fn headings(html: &str) -> Vec<String> {
    html.split("<h2 id=\"")
        .skip(1)
        .filter_map(|s| Some(s.split_once('>')?.1.split_once("</h2>")?.0.to_owned()))
        .collect()
}

/// The store ids of the tiles under the heading `heading`.
fn tiles_under(html: &str, heading: &str) -> Vec<String> {
    let Some(at) = html.find(&format!(">{heading}</h2>")) else {
        return Vec::new();
    };
    let section = &html[at..];
    let section = &section[..section.find("</section>").unwrap_or(section.len())];
    section
        .split("id=\"tile-")
        .skip(1)
        .filter_map(|s| s.split_once('"').map(|(id, _)| id.to_owned()))
        .collect()
}

/// Whether the tile of `store` is rendered hidden (by the search).
fn tile_hidden(html: &str, store: &str) -> bool {
    let at = html
        .find(&format!("id=\"tile-{store}\""))
        .unwrap_or_else(|| panic!("no tile {store}:\n{html}"));
    let tag_end = at + html[at..].find('>').expect("tag end");
    html[at..tag_end].contains(" hidden")
}

fn csrf_of(html: &str) -> String {
    html.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("csrf in page")
        .to_owned()
}

async fn pin(b: &Browser, gw: &Gateway, csrf: &str, store: &str, on: bool) -> reqwest::Response {
    let value = if on { "1" } else { "0" };
    b.post_form(
        &gw.url("/portal/pins"),
        &[("csrf", csrf), ("store", store), ("pin", value)],
    )
    .await
}

#[tokio::test]
async fn search_works_without_script_and_the_script_is_allowed_by_the_policy() {
    let op = RogueOp::start(CLIENT, SECRET).await;
    let gw = Gateway::start(Reserved::new().await, opts(&op)).await;
    let b = Browser::new();
    sign_in(&b, &gw).await;

    let resp = b.get(&gw.url("/?q=OUT")).await;
    let csp = resp
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(!csp.contains("http:") && !csp.contains("https:"), "{csp}");
    let html = resp.text().await.unwrap();
    assert!(!tile_hidden(&html, "outlet"), "{html}");
    assert!(
        tile_hidden(&html, "us") && tile_hidden(&html, "eu"),
        "{html}"
    );
    assert!(html.contains("1 of 3 stores match"), "{html}");
    assert!(
        html.contains("value=\"OUT\""),
        "the search stays in the box"
    );
    assert!(html.contains("<label for=\"q\">Find a store</label>"));

    let html = page(&b, &gw.url("/?q=storefront%20eu")).await;
    assert!(
        !tile_hidden(&html, "eu") && tile_hidden(&html, "us"),
        "{html}"
    );

    // Markup is escaped, never echoed.
    let html = page(&b, &gw.url("/?q=%3Cscript%3E")).await;
    assert!(!html.contains("<script>"), "{html}");
    assert!(html.contains("0 of 3 stores match"), "{html}");

    let js = b.get(&gw.url("/static/portal.js")).await;
    assert_eq!(js.status(), 200);
    assert!(
        js.text()
            .await
            .unwrap()
            .contains("addEventListener(\"input\"")
    );
}

#[tokio::test]
async fn pinning_needs_the_page_token_and_puts_the_store_first() {
    let op = RogueOp::start(CLIENT, SECRET).await;
    let gw = Gateway::start(Reserved::new().await, opts(&op)).await;
    let b = Browser::new();
    sign_in(&b, &gw).await;
    let html = page(&b, &gw.url("/")).await;
    assert_eq!(headings(&html), ["All your stores"]);
    let csrf = csrf_of(&html);

    // A forged form: refused, nothing pinned.
    let forged = pin(&b, &gw, "forged", "outlet", true).await;
    assert_eq!(forged.status(), 403);
    let body = forged.text().await.unwrap();
    assert!(body.contains("Change refused"), "{body}");
    let missing = b
        .post_form(
            &gw.url("/portal/pins"),
            &[("store", "outlet"), ("pin", "1")],
        )
        .await;
    assert_eq!(missing.status(), 403);
    assert_eq!(headings(&page(&b, &gw.url("/")).await), ["All your stores"]);

    // A store this person does not have cannot be pinned; a bad flag is refused.
    assert_eq!(pin(&b, &gw, &csrf, "nope", true).await.status(), 404);
    let odd = b
        .post_form(
            &gw.url("/portal/pins"),
            &[("csrf", &csrf), ("store", "us"), ("pin", "yes")],
        )
        .await;
    assert_eq!(odd.status(), 400);

    let ok = pin(&b, &gw, &csrf, "outlet", true).await;
    assert_eq!(ok.status(), 303);
    assert_eq!(
        ok.headers().get("location").unwrap().to_str().unwrap(),
        "/#tile-outlet"
    );
    let html = page(&b, &gw.url("/")).await;
    assert_eq!(headings(&html), ["Pinned", "Other stores"]);
    assert_eq!(tiles_under(&html, "Pinned"), ["outlet"]);
    assert_eq!(tiles_under(&html, "Other stores"), ["eu", "us"]);
    assert!(html.contains("Unpin<span class=\"visually-hidden\"> Outlet</span>"));

    // A second sign-in (a new session) keeps the pin: it belongs to the person.
    let b2 = Browser::new();
    sign_in(&b2, &gw).await;
    let html = page(&b2, &gw.url("/")).await;
    assert_eq!(tiles_under(&html, "Pinned"), ["outlet"]);

    assert_eq!(pin(&b, &gw, &csrf, "outlet", false).await.status(), 303);
    assert_eq!(headings(&page(&b, &gw.url("/")).await), ["All your stores"]);
}

#[tokio::test]
async fn a_launch_puts_the_store_among_the_recently_opened() {
    let op = RogueOp::start(CLIENT, SECRET).await;
    let gw = Gateway::start(Reserved::new().await, opts(&op)).await;
    let b = Browser::new();
    sign_in(&b, &gw).await;
    assert_eq!(b.get(&gw.url("/stores/eu/launch")).await.status(), 302);
    // Recorded beside the launch, not before its answer: poll.
    wait::until(
        "eu among the recently opened",
        Duration::from_secs(10),
        || async { tiles_under(&page(&b, &gw.url("/")).await, "Recently opened") == ["eu"] },
    )
    .await;
    // A refused launch records nothing.
    assert_eq!(b.get(&gw.url("/stores/nope/launch")).await.status(), 404);
    let html = page(&b, &gw.url("/")).await;
    assert_eq!(tiles_under(&html, "Recently opened"), ["eu"]);
    assert_eq!(tiles_under(&html, "Other stores"), ["outlet", "us"]);
}

#[tokio::test]
async fn replicas_share_pins_through_redis() {
    let op = RogueOp::start(CLIENT, SECRET).await;
    let redis = RedisServer::start();
    let mut o = opts(&op);
    o.redis_url = Some(redis.url());
    let a = Gateway::start(Reserved::new().await, o).await;
    let replica = a.replica(Reserved::new().await).await;
    let b = Browser::new();
    sign_in(&b, &a).await;
    let csrf = csrf_of(&page(&b, &a.url("/")).await);
    assert_eq!(pin(&b, &a, &csrf, "us", true).await.status(), 303);
    let html = page(&b, &replica.url("/")).await;
    assert_eq!(tiles_under(&html, "Pinned"), ["us"], "{html}");
    // Kept under a hashed key: no subject or email in Redis key names.
    let keys = crate::support::redis::cli(redis.port, &["KEYS", "storegate:portal:*"]);
    assert_eq!(keys.lines().count(), 1, "{keys}");
    assert!(!keys.contains("pat") && !keys.contains('@'), "{keys}");
}

/// Issue 15: a launch records the store without reading anything first, as a Redis list beside
/// the person's record; launches coalesced into one write keep their order, and a replica shows
/// it. A record from before the list (`recent` inside it) is still shown until the first launch.
#[tokio::test]
async fn launches_order_the_recently_opened_through_a_redis_list_without_a_read() {
    let op = RogueOp::start(CLIENT, SECRET).await;
    let redis = RedisServer::start();
    let mut o = opts(&op);
    o.redis_url = Some(redis.url());
    let a = Gateway::start(Reserved::new().await, o).await;
    let replica = a.replica(Reserved::new().await).await;
    let b = Browser::new();
    sign_in(&b, &a).await;

    // A record written by an earlier version, with `recent` inside.
    let csrf = csrf_of(&page(&b, &a.url("/")).await);
    assert_eq!(pin(&b, &a, &csrf, "us", true).await.status(), 303);
    assert_eq!(pin(&b, &a, &csrf, "us", false).await.status(), 303);
    let keys = crate::support::redis::cli(redis.port, &["KEYS", "storegate:portal:*"]);
    let record = keys.trim().to_owned();
    assert_eq!(keys.lines().count(), 1, "{keys}");
    crate::support::redis::cli(
        redis.port,
        &["SET", &record, r#"{"pinned":[],"recent":["outlet"]}"#],
    );
    let html = page(&b, &replica.url("/")).await;
    assert_eq!(tiles_under(&html, "Recently opened"), ["outlet"], "{html}");

    for store in ["eu", "us", "eu"] {
        let resp = b.get(&a.url(&format!("/stores/{store}/launch"))).await;
        assert_eq!(resp.status(), 302, "{store}");
    }
    wait::until(
        "eu, then us, among the recently opened on the replica",
        Duration::from_secs(10),
        || async {
            tiles_under(&page(&b, &replica.url("/")).await, "Recently opened") == ["eu", "us"]
        },
    )
    .await;
    let list = crate::support::redis::cli(
        redis.port,
        &["LRANGE", &format!("{{{record}}}:recent"), "0", "-1"],
    );
    assert_eq!(list.lines().collect::<Vec<_>>(), ["eu", "us"], "{list}");
    let ttl = crate::support::redis::cli(redis.port, &["TTL", &format!("{{{record}}}:recent")]);
    assert!(
        ttl.trim().parse::<i64>().is_ok_and(|t| t > 86_400),
        "the list expires like the record: {ttl}"
    );
    // A refused launch records nothing.
    assert_eq!(b.get(&a.url("/stores/nope/launch")).await.status(), 404);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let html = page(&b, &a.url("/")).await;
    assert_eq!(tiles_under(&html, "Recently opened"), ["eu", "us"]);
}

#[tokio::test]
async fn an_error_page_names_the_fix_whom_to_ask_and_the_audit_events_reference() {
    let op = RogueOp::start(CLIENT, SECRET).await;
    let gw = Gateway::start(Reserved::new().await, opts(&op)).await;
    let b = Browser::new();
    sign_in(&b, &gw).await;
    let resp = b.get(&gw.url("/stores/nope/launch")).await;
    assert_eq!(resp.status(), 404);
    let header_id = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let html = resp.text().await.unwrap();
    let reference = html
        .split("Reference: <code>")
        .nth(1)
        .and_then(|s| s.split("</code>").next())
        .expect("a reference on the page")
        .to_owned();
    assert_eq!(reference, header_id);
    assert!(html.contains("What happened"), "{html}");
    assert!(html.contains("There is no store with this name."), "{html}");
    assert!(html.contains("What you can do"), "{html}");
    assert!(html.contains("Whom to ask"), "{html}");
    assert!(
        html.contains("the e-commerce team (ecom-access@example.com)"),
        "{html}"
    );
    let events = gw.audit_events().await;
    let ev = events
        .iter()
        .find(|e| e.request_id == reference)
        .unwrap_or_else(|| panic!("no audit event with reference {reference}: {events:#?}"));
    assert_eq!(ev.event, EventKind::Launch);
    assert_eq!(ev.outcome, Outcome::Deny);
    assert_eq!(ev.reason.as_deref(), Some("unknown_store"));
}
