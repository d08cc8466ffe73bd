//! The leaver end to end through the real HTTP stack (issue 5): a user signed in through OIDC
//! launches; Identity Manager PATCHes `active: false` over `/scim/v2`; the very next launch is
//! refused with 403 and no token, the audit says `deprovisioned`, and signing in again is refused.

use serde_json::{Value, json};
use storegate::audit::{EventKind, Outcome};

use crate::harness::{Gateway, Opts, Reserved, assert_not_signed_in};
use crate::scim::{TOKEN, scim_toml, temp_dir};
use crate::support::browser::{Browser, location};
use crate::support::rogue_op::RogueOp;

const CLIENT: &str = "storegate";
const SECRET: &str = "leaver-client-secret-0123456789";

async fn setup() -> (RogueOp, Gateway, std::path::PathBuf) {
    let op = RogueOp::start(CLIENT, SECRET).await;
    let dir = temp_dir("leaver");
    let mut opts = Opts::new(&op.issuer, CLIENT, SECRET);
    opts.extra_toml = scim_toml(&dir.join("scim-data"));
    let gw = Gateway::start(Reserved::new().await, opts).await;
    (op, gw, dir)
}

/// `/login` → OP → callback; returns the callback's answer.
async fn sign_in(b: &Browser, gw: &Gateway) -> reqwest::Response {
    let start = b.get(&gw.url("/login")).await;
    assert_eq!(start.status(), 303, "login redirects to the IdP");
    let at_op = b.get(location(&start).expect("to op").as_str()).await;
    let callback = location(&at_op).expect("op redirects back");
    b.get(callback.as_str()).await
}

async fn scim_user(gw: &Gateway) -> String {
    let r = reqwest::Client::new()
        .post(gw.url("/scim/v2/Users"))
        .bearer_auth(TOKEN)
        .json(&json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "rogue@corp.example",
            "externalId": "rogue-user",
            "emails": [{"value": "rogue@corp.example", "primary": true}],
            "active": true
        }))
        .send()
        .await
        .expect("create SCIM user");
    assert_eq!(r.status(), 201);
    let u: Value = r.json().await.expect("json");
    u["id"].as_str().expect("id").to_owned()
}

async fn deactivate(gw: &Gateway, id: &str) {
    let r = reqwest::Client::new()
        .patch(gw.url(&format!("/scim/v2/Users/{id}")))
        .bearer_auth(TOKEN)
        .header("content-type", "application/scim+json")
        .json(&json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "active", "value": false}]
        }))
        .send()
        .await
        .expect("PATCH");
    assert!(
        r.status().is_success(),
        "PATCH active:false: {}",
        r.status()
    );
}

fn launch_token_count(gw: &Gateway) -> usize {
    gw.sim.accepted_logins().len() + gw.sim.rejected_logins().len()
}

#[tokio::test]
async fn leaver_patched_inactive_over_scim_cannot_launch_again() {
    let (_op, gw, _dir) = setup().await;
    let id = scim_user(&gw).await;
    let b = Browser::new();
    assert_eq!(sign_in(&b, &gw).await.status(), 303, "signed in");

    // Before: the launch works (302 to the storefront's login URL, and the token is accepted).
    let ok = b.get(&gw.url("/stores/us/launch")).await;
    assert_eq!(ok.status(), 302, "an active user launches");
    let to_store = location(&ok).expect("to the storefront");
    let _ = b.get(to_store.as_str()).await;
    assert_eq!(
        gw.sim.accepted_logins().len(),
        1,
        "the first launch's token was used"
    );

    deactivate(&gw, &id).await;

    // The very next launch, same session: 403, no redirect, no new token anywhere.
    let before = gw.audit_events().await.len();
    let refused = b.get(&gw.url("/stores/us/launch")).await;
    assert_eq!(refused.status(), 403);
    assert!(location(&refused).is_none(), "no redirect to the store");
    assert_eq!(
        launch_token_count(&gw),
        1,
        "no token minted after the PATCH"
    );
    let events = gw.audit_events().await;
    let ev = events[before..]
        .iter()
        .find(|e| e.event == EventKind::Launch)
        .expect("launch event");
    assert_eq!(ev.outcome, Outcome::Deny);
    assert_eq!(ev.reason.as_deref(), Some("deprovisioned"));

    // Another store, too.
    let outlet = b.get(&gw.url("/stores/outlet/launch")).await;
    assert_eq!(outlet.status(), 403);
    assert_eq!(launch_token_count(&gw), 1);
}

#[tokio::test]
async fn a_deprovisioned_user_cannot_sign_in() {
    let (_op, gw, _dir) = setup().await;
    let id = scim_user(&gw).await;
    deactivate(&gw, &id).await;
    let b = Browser::new();
    let before = gw.audit_events().await.len();
    let resp = sign_in(&b, &gw).await;
    assert_eq!(resp.status(), 403, "sign-in refused");
    assert_not_signed_in(&b, &gw).await;
    let events = gw.audit_events().await;
    let ev = events[before..]
        .iter()
        .find(|e| e.event == EventKind::SignIn)
        .expect("sign-in event");
    assert_eq!(ev.outcome, Outcome::Deny);
    assert_eq!(ev.reason.as_deref(), Some("deprovisioned"));
    // And a launch attempt only leads back to sign-in: no token.
    let launch = b.get(&gw.url("/stores/us/launch")).await;
    assert_eq!(launch.status(), 303);
    gw.assert_no_token_minted();
}

#[tokio::test]
async fn an_active_scim_user_signs_in_and_launches() {
    let (_op, gw, _dir) = setup().await;
    scim_user(&gw).await;
    let b = Browser::new();
    assert_eq!(sign_in(&b, &gw).await.status(), 303);
    assert_eq!(b.get(&gw.url("/stores/us/launch")).await.status(), 302);
}
