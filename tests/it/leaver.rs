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
    scim_person(gw, "rogue-user", &["rogue@corp.example"]).await
}

pub(crate) async fn deactivate(gw: &Gateway, id: &str) {
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

pub(crate) async fn scim_person(gw: &Gateway, subject: &str, emails: &[&str]) -> String {
    let emails: Vec<Value> = emails
        .iter()
        .enumerate()
        .map(|(i, e)| json!({"value": e, "primary": i == 0}))
        .collect();
    let r = reqwest::Client::new()
        .post(gw.url("/scim/v2/Users"))
        .bearer_auth(TOKEN)
        .json(&json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": format!("{subject}@corp.example"),
            "externalId": subject,
            "emails": emails,
            "active": true
        }))
        .send()
        .await
        .expect("create SCIM user");
    assert_eq!(r.status(), 201);
    let u: Value = r.json().await.expect("json");
    u["id"].as_str().expect("id").to_owned()
}

/// Issue 10: X leaves; X's address is also an alias on Y's active record. The leaver check
/// decides by subject first, so Y's record does not let X in: X's launch in a live session and
/// X's next sign-in are refused (403, `deprovisioned`, no token, no session); Y still works.
#[tokio::test]
async fn a_leaver_sharing_an_email_alias_with_an_active_person_is_refused() {
    let (op, gw, _dir) = setup().await;
    let x = scim_person(&gw, "sub-x", &["x@corp.example"]).await;
    scim_person(&gw, "sub-y", &["y@corp.example", "x@corp.example"]).await;
    let as_x = || {
        op.set_sub("sub-x");
        op.set_claims(json!({"email": "x@corp.example", "email_verified": true, "groups": ["bc-merchandisers"]}));
    };
    let as_y = || {
        op.set_sub("sub-y");
        op.set_claims(json!({"email": "y@corp.example", "email_verified": true, "groups": ["bc-merchandisers"]}));
    };

    as_x();
    let bx = Browser::new();
    assert_eq!(
        sign_in(&bx, &gw).await.status(),
        303,
        "X signs in while active"
    );
    deactivate(&gw, &x).await;

    let before = gw.audit_events().await.len();
    let refused = bx.get(&gw.url("/stores/us/launch")).await;
    assert_eq!(refused.status(), 403, "X's launch in the live session");
    assert!(location(&refused).is_none(), "no redirect to the store");
    gw.assert_no_token_minted();
    let events = gw.audit_events().await;
    let ev = events[before..]
        .iter()
        .find(|e| e.event == EventKind::Launch)
        .expect("launch event");
    assert_eq!(ev.outcome, Outcome::Deny);
    assert_eq!(ev.reason.as_deref(), Some("deprovisioned"));
    assert_eq!(ev.subject.as_deref(), Some("sub-x"));

    let before = gw.audit_events().await.len();
    let bx2 = Browser::new();
    assert_eq!(sign_in(&bx2, &gw).await.status(), 403, "X's new sign-in");
    assert_not_signed_in(&bx2, &gw).await;
    let events = gw.audit_events().await;
    let ev = events[before..]
        .iter()
        .find(|e| e.event == EventKind::SignIn)
        .expect("sign-in event");
    assert_eq!(ev.outcome, Outcome::Deny);
    assert_eq!(ev.reason.as_deref(), Some("deprovisioned"));
    gw.assert_no_token_minted();

    as_y();
    let by = Browser::new();
    assert_eq!(sign_in(&by, &gw).await.status(), 303, "Y signs in");
    let ok = by.get(&gw.url("/stores/us/launch")).await;
    assert_eq!(ok.status(), 302, "Y launches");
}
