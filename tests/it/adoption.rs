//! Issue 10: an existing BigCommerce customer that storegate never bound is adopted only on an
//! email the IdP vouches for (OIDC `email_verified: true`, or `trust_email` on the `[[idp]]`), and
//! rules on `email_domains` need the same trust. Sign-in goes through the hostile OP in its
//! well-behaved mode, which releases exactly the claims each test sets.

use serde_json::{Value, json};
use storegate::audit::{AuditEvent, EventKind, Outcome};

use crate::harness::{Gateway, MAIN_HASH, Opts, Reserved};
use crate::support::browser::{Browser, location};
use crate::support::rogue_op::RogueOp;

const CLIENT: &str = "storegate";
const SECRET: &str = "adoption-client-secret-0123456789";
const EMAIL: &str = "lee@corp.example";

async fn gateway(idp_extra: &str, policy: Option<&str>) -> (RogueOp, Gateway) {
    let op = RogueOp::start(CLIENT, SECRET).await;
    let mut opts = Opts::new(&op.issuer, CLIENT, SECRET);
    opts.idp_extra = idp_extra.to_owned();
    opts.policy = policy.map(str::to_owned);
    let gw = Gateway::start(Reserved::new().await, opts).await;
    (op, gw)
}

/// Signs in with these claims besides the protocol ones; returns the signed-in browser.
async fn sign_in(op: &RogueOp, gw: &Gateway, claims: Value) -> Browser {
    op.set_claims(claims);
    let b = Browser::new();
    let start = b.get(&gw.url("/login")).await;
    let done = b.follow_while(start, |u| u.path() != "/").await;
    assert_eq!(done.status(), 303, "signed in: {}", b.hops_text());
    b
}

fn claims(email_verified: Option<bool>) -> Value {
    let mut c = json!({"email": EMAIL, "given_name": "Lee", "family_name": "Tester", "groups": ["bc-merchandisers"]});
    if let Some(v) = email_verified {
        c["email_verified"] = json!(v);
    }
    c
}

/// A customer made in the control panel before the gateway existed: no recorded subject.
fn seed_customer(gw: &Gateway) -> u64 {
    gw.sim
        .add_customer(MAIN_HASH, EMAIL, "Lee", "Tester", Some(vec![1]))
        .expect("seed")
}

fn subject_of(gw: &Gateway, id: u64) -> Option<String> {
    gw.sim.attribute_value(MAIN_HASH, id, "storegate_subject")
}

async fn launch_events(gw: &Gateway) -> Vec<AuditEvent> {
    gw.audit_events()
        .await
        .into_iter()
        .filter(|e| e.event == EventKind::Launch)
        .collect()
}

#[tokio::test]
async fn an_unverified_email_does_not_adopt_an_unbound_customer() {
    for email_verified in [Some(false), None] {
        let (op, gw) = gateway("", None).await;
        let id = seed_customer(&gw);
        let before = gw.sim.customers(MAIN_HASH);
        let b = sign_in(&op, &gw, claims(email_verified)).await;

        let resp = b.get(&gw.url("/stores/us/launch")).await;
        assert_eq!(resp.status(), 409, "email_verified {email_verified:?}");
        assert!(location(&resp).is_none(), "no redirect to the store");
        let body = resp.text().await.unwrap_or_default();
        assert!(
            body.contains("did not confirm that the address is yours"),
            "{body}"
        );
        gw.assert_no_token_minted();
        let events = launch_events(&gw).await;
        assert!(
            events.iter().all(|e| e.outcome != Outcome::Allow),
            "no launch was allowed (no token minted): {events:?}"
        );
        let ev = events.last().expect("launch event");
        assert_eq!(ev.outcome, Outcome::Deny);
        assert_eq!(ev.reason.as_deref(), Some("adoption_needs_verified_email"));
        assert!(
            ev.detail.as_deref().is_some_and(
                |d| d.contains(&format!("customer {id}")) && d.contains("email_verified")
            ),
            "{ev:?}"
        );
        // The customer is exactly as it was: not bound, no channel or group changed.
        assert_eq!(subject_of(&gw, id), None);
        assert_eq!(gw.sim.customers(MAIN_HASH), before);
    }
}

#[tokio::test]
async fn a_verified_email_adopts_the_unbound_customer() {
    let (op, gw) = gateway("", None).await;
    let id = seed_customer(&gw);
    let b = sign_in(&op, &gw, claims(Some(true))).await;
    let resp = b.get(&gw.url("/stores/us/launch")).await;
    assert_eq!(resp.status(), 302, "adopted on first launch");
    assert_eq!(subject_of(&gw, id).as_deref(), Some("nam:rogue-user"));
    assert_eq!(gw.sim.customers(MAIN_HASH).len(), 1, "no second customer");
}

#[tokio::test]
async fn an_idp_marked_trust_email_adopts_without_email_verified() {
    let (op, gw) = gateway("trust_email = true", None).await;
    let id = seed_customer(&gw);
    let b = sign_in(&op, &gw, claims(None)).await;
    let resp = b.get(&gw.url("/stores/us/launch")).await;
    assert_eq!(resp.status(), 302);
    assert_eq!(subject_of(&gw, id).as_deref(), Some("nam:rogue-user"));
}

const BY_DOMAIN: &str = r#"[[rule]]
name = "corp-staff-by-domain"
email_domains = ["corp.example"]
stores = ["us"]
role = "staff"
"#;

#[tokio::test]
async fn an_email_domains_rule_does_not_match_an_unverified_address() {
    let (op, gw) = gateway("", Some(BY_DOMAIN)).await;
    let b = sign_in(&op, &gw, claims(Some(false))).await;
    let resp = b.get(&gw.url("/stores/us/launch")).await;
    assert_eq!(resp.status(), 403);
    assert!(location(&resp).is_none());
    let body = resp.text().await.unwrap_or_default();
    assert!(
        body.contains("corp-staff-by-domain"),
        "the page names the rule: {body}"
    );
    gw.assert_no_token_minted();
    assert!(
        gw.sim.customers(MAIN_HASH).is_empty(),
        "no customer created"
    );
    let ev = launch_events(&gw).await.pop().expect("launch event");
    assert_eq!(ev.outcome, Outcome::Deny);
    assert_eq!(ev.rule.as_deref(), Some("corp-staff-by-domain"));
    assert_eq!(ev.reason.as_deref(), Some("email_not_verified"));
}

#[tokio::test]
async fn an_email_domains_rule_matches_a_verified_or_trusted_address() {
    for (idp_extra, email_verified) in [("", Some(true)), ("trust_email = true", None)] {
        let (op, gw) = gateway(idp_extra, Some(BY_DOMAIN)).await;
        let b = sign_in(&op, &gw, claims(email_verified)).await;
        let resp = b.get(&gw.url("/stores/us/launch")).await;
        assert_eq!(resp.status(), 302, "{idp_extra:?} {email_verified:?}");
        let ev = launch_events(&gw).await.pop().expect("launch event");
        assert_eq!(ev.outcome, Outcome::Allow);
        assert_eq!(ev.rule.as_deref(), Some("corp-staff-by-domain"));
    }
}
