//! The portal's "Control panel" entry (issue 12): shown on a tile only when the person holds a
//! control-panel grant for that store's hash; `GET /control-panel/{account}` decides again,
//! audits the open and sends the browser to the store's control panel; refusals answer like a
//! launch (same pages, statuses and audit reasons), and no login token is ever minted.

use serde_json::{Value, json};
use storegate::audit::{AuditEvent, EventKind, Outcome};

use crate::harness::{Gateway, MAIN_HASH, OUTLET_HASH, Opts, Reserved};
use crate::leaver::{deactivate, scim_person};
use crate::scim::{scim_toml, temp_dir};
use crate::support::browser::{Browser, location};
use crate::support::rogue_op::RogueOp;

const CLIENT: &str = "storegate";
const SECRET: &str = "cp-portal-client-secret-0123456789";

/// Stores us and eu share the `main` hash; outlet is its own.
const POLICY: &str = r#"
[[permission_set]]
name = "merchandiser"
permissions = ["Manage_Products", "Create_Product", "Manage_Categories"]

[[permission_set]]
name = "finance"
permissions = ["Manage_Orders", "Refund_Orders"]

[[rule]]
name = "contractors-never-main"
effect = "deny"
groups_any = ["contractors"]
stores = ["us", "eu"]

[[rule]]
name = "merchandisers-everywhere"
groups_any = ["bc-merchandisers"]
stores = ["*"]
role = "merchandiser"
control_panel = "merchandiser"

[[rule]]
name = "finance-eu"
groups_any = ["bc-finance"]
stores = ["eu"]
role = "finance"
control_panel = "finance"

[[rule]]
name = "buyers"
groups_any = ["bc-buyers"]
stores = ["us", "outlet"]
role = "buyer"
"#;

fn opts(op: &RogueOp, groups: &[&str]) -> Opts {
    op.set_claims(json!({"email": "cara@corp.example", "email_verified": true, "given_name": "Cara", "family_name": "Panel", "groups": groups}));
    let mut o = Opts::new(&op.issuer, CLIENT, SECRET);
    o.policy = Some(POLICY.to_owned());
    o
}

async fn sign_in(b: &Browser, gw: &Gateway) {
    let start = b.get(&gw.url("/login")).await;
    let done = b.follow_while(start, |u| u.path() != "/").await;
    assert_eq!(done.status(), 303, "signed in: {}", b.hops_text());
}

async fn signed_in(groups: &[&str]) -> (RogueOp, Gateway, Browser) {
    let op = RogueOp::start(CLIENT, SECRET).await;
    let gw = Gateway::start(Reserved::new().await, opts(&op, groups)).await;
    let b = Browser::new();
    sign_in(&b, &gw).await;
    (op, gw, b)
}

/// The markup of the tile of `store`, or `None` when the portal has no such tile.
fn tile(html: &str, store: &str) -> Option<String> {
    let at = html.find(&format!("id=\"tile-{store}\""))?;
    let rest = &html[at..];
    Some(rest[..rest.find("</li>").unwrap_or(rest.len())].to_owned())
}

/// The tile's "Control panel" link target, if it has one.
fn entry(tile: &str) -> Option<String> {
    let href = tile.split("class=\"cp\" href=\"").nth(1)?;
    Some(href.split('"').next()?.replace("&#x2f;", "/"))
}

fn cp_events(gw: &Gateway) -> Vec<AuditEvent> {
    gw.audit_now()
        .into_iter()
        .filter(|e| e.event == EventKind::ControlPanelOpen)
        .collect()
}

#[tokio::test]
async fn the_tile_offers_the_control_panel_only_for_a_granted_hash() {
    // Finance on eu (hash main, with a set); buyer on us (main) and outlet (no set anywhere).
    let (_op, gw, b) = signed_in(&["bc-finance", "bc-buyers"]).await;
    let resp = b.get(&gw.url("/")).await;
    assert_eq!(resp.status(), 200);
    let html = resp.text().await.expect("portal");
    let eu = tile(&html, "eu").expect("eu tile");
    let us = tile(&html, "us").expect("us tile");
    let outlet = tile(&html, "outlet").expect("outlet tile");
    // The control panel belongs to the hash: both channels of `main` offer it.
    assert_eq!(entry(&eu).as_deref(), Some("/control-panel/main"), "{eu}");
    assert_eq!(entry(&us).as_deref(), Some("/control-panel/main"), "{us}");
    assert!(eu.contains("Control panel<span class=\"visually-hidden\"> of EU Storefront"));
    assert_eq!(entry(&outlet), None, "a storefront-only grant: {outlet}");

    // /api/me says the same.
    let me: Value = b.get(&gw.url("/api/me")).await.json().await.expect("json");
    let by_id = |id: &str| {
        me["stores"]
            .as_array()
            .expect("stores")
            .iter()
            .find(|s| s["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} in {me}"))
    };
    assert_eq!(by_id("eu")["control_panel"], "/control-panel/main");
    assert_eq!(by_id("outlet").get("control_panel"), None);

    // Nothing was opened by showing the page.
    assert!(cp_events(&gw).is_empty());

    // A buyer only: no entry at all.
    let (_op2, gw2, b2) = signed_in(&["bc-buyers"]).await;
    let html = b2.get(&gw2.url("/")).await.text().await.expect("portal");
    assert!(!html.contains("class=\"cp\""), "{html}");
}

#[tokio::test]
async fn opening_redirects_to_the_stores_control_panel_and_is_audited() {
    let (_op, gw, b) = signed_in(&["bc-merchandisers", "bc-finance"]).await;
    let resp = b.get(&gw.url("/control-panel/main")).await;
    assert_eq!(resp.status(), 302, "{}", b.hops_text());
    assert_eq!(
        location(&resp).map(|u| u.to_string()).as_deref(),
        Some(format!("https://store-{MAIN_HASH}.mybigcommerce.com/manage").as_str())
    );
    assert_eq!(
        resp.headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let events = cp_events(&gw);
    assert_eq!(events.len(), 1, "{events:?}");
    let ev = &events[0];
    assert_eq!(ev.outcome, Outcome::Allow);
    assert_eq!(ev.subject.as_deref(), Some("rogue-user"));
    assert_eq!(ev.email.as_deref(), Some("cara@corp.example"));
    assert_eq!(ev.store.as_deref(), Some("main"));
    // us and eu both give `merchandiser` by the first rule; eu's finance rule is overridden by
    // file order, so the union is the merchandiser set alone.
    assert_eq!(ev.role.as_deref(), Some("merchandiser"));
    assert_eq!(ev.rule.as_deref(), Some("merchandisers-everywhere"));
    assert_eq!(
        serde_json::to_value(ev).expect("json")["event"],
        "control_panel_open"
    );
    // The other hash, its own URL.
    let outlet = b.get(&gw.url("/control-panel/outlet")).await;
    assert_eq!(outlet.status(), 302);
    assert_eq!(
        location(&outlet).map(|u| u.to_string()),
        Some(format!(
            "https://store-{OUTLET_HASH}.mybigcommerce.com/manage"
        ))
    );
    // Opening the control panel mints no customer login token and creates no customer.
    gw.assert_no_token_minted();
    assert!(gw.sim.customers(MAIN_HASH).is_empty());
}

#[tokio::test]
async fn a_denied_person_gets_the_launch_403_naming_the_rule() {
    let (_op, gw, b) = signed_in(&["bc-merchandisers", "contractors"]).await;
    // The portal offers the outlet's control panel, not main's (its tiles are not even shown).
    let html = b.get(&gw.url("/")).await.text().await.expect("portal");
    assert!(tile(&html, "us").is_none() && tile(&html, "eu").is_none());
    assert_eq!(
        entry(&tile(&html, "outlet").expect("outlet tile")).as_deref(),
        Some("/control-panel/outlet")
    );

    // Typing the URL anyway: 403, the deny rule named, no redirect.
    let resp = b.get(&gw.url("/control-panel/main")).await;
    assert_eq!(resp.status(), 403);
    assert!(location(&resp).is_none());
    let page = resp.text().await.expect("page");
    assert!(
        page.contains("contractors-never-main") && page.contains("denies this store"),
        "{page}"
    );
    let events = cp_events(&gw);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].outcome, Outcome::Deny);
    assert_eq!(events[0].rule.as_deref(), Some("contractors-never-main"));
    assert_eq!(events[0].reason.as_deref(), Some("not_entitled"));
    assert_eq!(events[0].store.as_deref(), Some("main"));
    gw.assert_no_token_minted();
}

#[tokio::test]
async fn storefront_only_and_unknown_hashes_are_refused_exactly() {
    let (_op, gw, b) = signed_in(&["bc-buyers"]).await;
    // Granted the outlet storefront, but no permission set: 403, not a redirect.
    let resp = b.get(&gw.url("/control-panel/outlet")).await;
    assert_eq!(resp.status(), 403);
    let page = resp.text().await.expect("page");
    assert!(
        page.contains("the rule &quot;buyers&quot; gives you the storefront but no control-panel permission set")
            || page.contains("the rule &#34;buyers&#34; gives you the storefront but no control-panel permission set"),
        "{page}"
    );
    // No such account: 404, as an unknown store is for a launch.
    let resp = b.get(&gw.url("/control-panel/nope")).await;
    assert_eq!(resp.status(), 404);
    let events = cp_events(&gw);
    let reasons: Vec<(Outcome, Option<&str>, Option<&str>)> = events
        .iter()
        .map(|e| (e.outcome, e.reason.as_deref(), e.rule.as_deref()))
        .collect();
    assert_eq!(
        reasons,
        [
            (
                Outcome::Deny,
                Some("no_control_panel_grant"),
                Some("buyers")
            ),
            (Outcome::Deny, Some("unknown_store"), Some("unknown-store")),
        ]
    );
}

#[tokio::test]
async fn without_a_session_the_entry_sends_the_browser_to_sign_in() {
    let op = RogueOp::start(CLIENT, SECRET).await;
    let gw = Gateway::start(Reserved::new().await, opts(&op, &["bc-merchandisers"])).await;
    let b = Browser::new();
    let resp = b.get(&gw.url("/control-panel/main")).await;
    assert_eq!(resp.status(), 303);
    let to = location(&resp).expect("to sign-in");
    assert_eq!(to.path(), "/login");
    assert_eq!(
        to.query_pairs()
            .find(|(k, _)| k == "return_to")
            .map(|(_, v)| v.into_owned())
            .as_deref(),
        Some("/control-panel/main"),
        "comes back to the entry after signing in"
    );
    assert!(cp_events(&gw).is_empty(), "nothing opened, nothing decided");
}

#[tokio::test]
async fn a_leaver_is_refused_the_control_panel_at_once() {
    let op = RogueOp::start(CLIENT, SECRET).await;
    let dir = temp_dir("cp-leaver");
    let mut o = opts(&op, &["bc-merchandisers"]);
    o.extra_toml = scim_toml(&dir.join("scim-data"));
    let gw = Gateway::start(Reserved::new().await, o).await;
    let id = scim_person(&gw, "rogue-user", &["cara@corp.example"]).await;
    let b = Browser::new();
    sign_in(&b, &gw).await;
    assert_eq!(b.get(&gw.url("/control-panel/main")).await.status(), 302);

    deactivate(&gw, &id).await;
    let resp = b.get(&gw.url("/control-panel/main")).await;
    assert_eq!(resp.status(), 403);
    assert!(location(&resp).is_none());
    let events = cp_events(&gw);
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[1].outcome, Outcome::Deny);
    assert_eq!(events[1].reason.as_deref(), Some("deprovisioned"));
    assert_eq!(events[1].rule.as_deref(), Some("deprovisioned"));
}
