//! Entitlements over HTTP: step-up to a stronger authentication contract, grants that expire
//! during a session, and partner path scoping. Sign-in goes through the hostile OP in its
//! well-behaved mode, which echoes a requested `acr_values` as the ID token's `acr`.

use serde_json::json;
use storegate::audit::{EventKind, Outcome};

use crate::harness::{Gateway, Opts, Reserved};
use crate::support::browser::{Browser, location, query_param};
use crate::support::rogue_op::RogueOp;

const CLIENT: &str = "storegate";
const SECRET: &str = "entitlements-client-secret-0123";
const MFA: &str = "urn:example:contract:mfa";
const PASSWORD: &str = "urn:example:contract:password";

/// Agencies: a template role that needs MFA and opens only /b2b/ and the account page; the
/// grant ends at the time Identity Governance released in `accessExpires`.
const AGENCY_POLICY: &str = r#"
[[template]]
name = "standard"
[template.roles.merchandiser]
customer_group = "Staff"
[template.roles.agency]
customer_group = "Agencies"
allowed_paths = ["/b2b/", "/account.php"]
require_acr = "urn:example:contract:mfa"

[[rule]]
name = "agency-us"
groups_any = ["agency"]
stores = ["us"]
role = "agency"
template = "standard"
expires_claim = "accessExpires"

[[rule]]
name = "merch"
groups_any = ["bc-merchandisers"]
stores = ["*"]
role = "merchandiser"
template = "standard"
"#;

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

async fn signed_in(claims: serde_json::Value) -> (RogueOp, Gateway, Browser) {
    let op = RogueOp::start(CLIENT, SECRET).await;
    op.set_claims(claims);
    let mut opts = Opts::new(&op.issuer, CLIENT, SECRET);
    opts.policy = Some(AGENCY_POLICY.to_owned());
    let gw = Gateway::start(Reserved::new().await, opts).await;
    let b = Browser::new();
    let start = b.get(&gw.url("/login")).await;
    let done = b.follow_while(start, |u| u.path() != "/").await;
    assert_eq!(done.status(), 303, "signed in: {}", b.hops_text());
    (op, gw, b)
}

fn agency(acr: &str, expires_in: i64) -> serde_json::Value {
    json!({
        "email": "pat@agency.example", "given_name": "Pat", "family_name": "Partner",
        "groups": ["agency"], "acr": acr, "accessExpires": (now() + expires_in).to_string(),
    })
}

#[tokio::test]
async fn step_up_sends_acr_values_to_the_idp_and_then_completes_the_launch() {
    let (op, gw, b) = signed_in(agency(PASSWORD, 86_400)).await;
    let me: serde_json::Value = b.get(&gw.url("/api/me")).await.json().await.expect("me");
    assert_eq!(me["acr"], PASSWORD);

    let launch = b.get(&gw.url("/stores/us/launch?to=/b2b/quotes")).await;
    assert_eq!(launch.status(), 303);
    let to = location(&launch).expect("redirect");
    assert_eq!(to.path(), "/login");
    assert_eq!(query_param(&to, "acr").as_deref(), Some(MFA));
    assert_eq!(query_param(&to, "idp").as_deref(), Some("nam"));
    assert_eq!(
        query_param(&to, "return_to").as_deref(),
        Some("/stores/us/launch?to=%2Fb2b%2Fquotes")
    );
    gw.assert_no_token_minted();

    // Follow everything up to the storefront: IdP with acr_values, callback, the launch again.
    let landed = b.follow(launch).await;
    assert!(landed.status().is_success(), "landed: {}", b.hops_text());
    let asked = op.authorize_requests();
    assert_eq!(asked.len(), 2, "one sign-in, one step-up");
    assert_eq!(asked[0].acr_values, None);
    assert_eq!(asked[1].acr_values.as_deref(), Some(MFA));
    let logins = gw.sim.accepted_logins();
    assert_eq!(logins.len(), 1, "{logins:?}");
    assert_eq!(logins[0].redirect_to, "/b2b/quotes");
    let me: serde_json::Value = b.get(&gw.url("/api/me")).await.json().await.expect("me");
    assert_eq!(me["acr"], MFA);

    let events = gw.audit_events().await;
    let launches: Vec<_> = events
        .iter()
        .filter(|e| e.event == EventKind::Launch)
        .collect();
    assert_eq!(launches[0].outcome, Outcome::Deny);
    assert_eq!(launches[0].reason.as_deref(), Some("step_up_required"));
    assert_eq!(launches[0].rule.as_deref(), Some("agency-us"));
    assert_eq!(launches[1].outcome, Outcome::Allow);
}

#[tokio::test]
async fn an_idp_that_does_not_perform_the_contract_gets_one_round_trip_then_a_403() {
    let (op, gw, b) = signed_in(agency(PASSWORD, 86_400)).await;
    op.set_echo_acr(false);
    let launch = b.get(&gw.url("/stores/us/launch?to=/b2b/")).await;
    let page = b.follow(launch).await;
    assert_eq!(page.status(), 403, "{}", b.hops_text());
    let text = page.text().await.expect("page");
    assert!(text.contains(MFA) && text.contains("agency-us"), "{text}");
    gw.assert_no_token_minted();
    assert_eq!(op.authorize_requests().len(), 2, "no redirect loop");
}

#[tokio::test]
async fn unknown_acr_values_are_refused_at_login() {
    let (_op, gw, b) = signed_in(agency(MFA, 86_400)).await;
    let resp = b
        .get(&gw.url("/login?idp=nam&acr=urn:evil&return_to=/"))
        .await;
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn partner_paths_outside_the_grant_are_403_without_a_token() {
    let (_op, gw, b) = signed_in(agency(MFA, 86_400)).await;
    for bad in ["/admin", "/b2b", "/b2b/../admin", "/account.phpx"] {
        let resp = b.get(&gw.url(&format!("/stores/us/launch?to={bad}"))).await;
        assert_eq!(resp.status(), 403, "to={bad}");
        let text = resp.text().await.expect("page");
        assert!(text.contains("/b2b/, /account.php"), "{text}");
    }
    gw.assert_no_token_minted();
    // No `to`: the store's default (/account.php) is inside the grant.
    let ok = b.get(&gw.url("/stores/us/launch")).await;
    assert_eq!(ok.status(), 302);
    let events = gw.audit_events().await;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("path_not_allowed"))
    );
}

#[tokio::test]
async fn a_grant_that_expires_during_the_session_vanishes_and_launches_are_refused() {
    let (_op, gw, b) = signed_in(agency(MFA, 630)).await;
    let portal = b.get(&gw.url("/")).await.text().await.expect("portal");
    assert!(portal.contains("US Storefront"), "{portal}");
    assert!(portal.contains("expires in 10 minutes"), "{portal}");
    let launched = b.get(&gw.url("/stores/us/launch")).await;
    assert_eq!(launched.status(), 302);
    assert!(b.follow(launched).await.status().is_success());

    gw.clock.advance(631);
    let portal = b.get(&gw.url("/")).await.text().await.expect("portal");
    assert!(!portal.contains("US Storefront"), "{portal}");
    let resp = b.get(&gw.url("/stores/us/launch")).await;
    assert_eq!(resp.status(), 403);
    let text = resp.text().await.expect("page");
    assert!(
        text.contains("Your access has expired")
            && text.contains("your access through the rule &#34;agency-us&#34; expired at"),
        "{text}"
    );
    assert_eq!(
        gw.sim.accepted_logins().len(),
        1,
        "only the launch before expiry"
    );
    let events = gw.audit_events().await;
    let last = events
        .iter()
        .rev()
        .find(|e| e.event == EventKind::Launch)
        .expect("launch");
    assert_eq!(last.reason.as_deref(), Some("grant_expired"));
    assert_eq!(last.rule.as_deref(), Some("agency-us"));
}

// ---------------------------------------------------------------------------------------------
// B2B Edition: the launch puts the customer into the grant's company with the grant's role
// ---------------------------------------------------------------------------------------------

const B2B_POLICY: &str = r#"
[[rule]]
name = "sales-ops-b2b"
groups_any = ["sales-ops"]
stores = ["us"]
role = "buyer"
b2b = { company_id = 42, role = "junior_buyer" }

[[rule]]
name = "account-managers-b2b"
groups_any = ["account-managers"]
stores = ["eu"]
role = "account manager"
b2b = { company_id = 42, company_role_id = 77 }

[[rule]]
name = "inactive-company"
groups_any = ["sales-ops"]
stores = ["eu"]
role = "buyer"
b2b = { company_id = 43, role = "admin" }
"#;

use storegate::bigcommerce::sim::{SimCompany, SimCompanyUser};

use crate::harness::MAIN_HASH;

async fn b2b_signed_in(groups: &[&str]) -> (RogueOp, Gateway, Browser) {
    let op = RogueOp::start(CLIENT, SECRET).await;
    op.set_claims(json!({"email": "sam@corp.example", "given_name": "Sam", "family_name": "Sales", "groups": groups}));
    let mut opts = Opts::new(&op.issuer, CLIENT, SECRET);
    opts.policy = Some(B2B_POLICY.to_owned());
    let gw = Gateway::start(Reserved::new().await, opts).await;
    gw.sim.enable_b2b(
        MAIN_HASH,
        &format!("b2b-token-{MAIN_HASH}"),
        vec![
            SimCompany {
                id: 42,
                name: "Acme".into(),
                status: 1,
                customer_group_id: 9,
                custom_roles: vec![77],
            },
            SimCompany {
                id: 43,
                name: "Gone".into(),
                status: 3,
                customer_group_id: 10,
                custom_roles: vec![],
            },
        ],
    );
    let b = Browser::new();
    let start = b.get(&gw.url("/login")).await;
    let done = b.follow_while(start, |u| u.path() != "/").await;
    assert_eq!(done.status(), 303, "signed in: {}", b.hops_text());
    (op, gw, b)
}

#[tokio::test]
async fn b2b_launch_creates_the_company_user_with_the_grant_role() {
    let (_op, gw, b) = b2b_signed_in(&["sales-ops", "account-managers"]).await;
    let landed = b.follow(b.get(&gw.url("/stores/us/launch")).await).await;
    assert!(landed.status().is_success(), "{}", b.hops_text());
    let users = gw.sim.company_users(MAIN_HASH);
    assert_eq!(users.len(), 1, "{users:?}");
    let customer = &gw.sim.customers(MAIN_HASH)[0];
    assert_eq!(
        (
            users[0].company_id,
            users[0].role,
            users[0].company_role_id,
            users[0].customer_id
        ),
        (42, 2, None, customer.id)
    );
    assert_eq!(
        customer.customer_group_id, 9,
        "the company's customer group"
    );
    assert_eq!(gw.sim.accepted_logins().len(), 1);

    // Another store of the same hash with a custom company role: the role is changed in place.
    let landed = b.follow(b.get(&gw.url("/stores/eu/launch")).await).await;
    assert!(landed.status().is_success(), "{}", b.hops_text());
    let users = gw.sim.company_users(MAIN_HASH);
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].company_role_id, Some(77));
}

#[tokio::test]
async fn b2b_launch_into_another_company_or_an_inactive_one_is_409_without_a_token() {
    let (_op, gw, b) = b2b_signed_in(&["sales-ops"]).await;
    let resp = b.get(&gw.url("/stores/eu/launch")).await;
    assert_eq!(resp.status(), 409);
    let text = resp.text().await.expect("page");
    assert!(
        text.contains("B2B company 43 is not approved (companyStatus 3)"),
        "{text}"
    );
    assert!(gw.sim.company_users(MAIN_HASH).is_empty());

    // A customer who already belongs to another company is never moved.
    let customer = gw.sim.customers(MAIN_HASH)[0].id;
    gw.sim.add_company_user(
        MAIN_HASH,
        SimCompanyUser {
            id: 500,
            customer_id: customer,
            company_id: 99,
            role: 0,
            company_role_id: None,
            email: "sam@corp.example".into(),
        },
    );
    let resp = b.get(&gw.url("/stores/us/launch")).await;
    assert_eq!(resp.status(), 409);
    let text = resp.text().await.expect("page");
    assert!(text.contains("user of B2B company 99, not 42"), "{text}");
    gw.assert_no_token_minted();
    assert_eq!(
        gw.sim.company_users(MAIN_HASH)[0].company_id,
        99,
        "never moved"
    );
}

#[tokio::test]
async fn a_partner_session_older_than_the_grant_allows_signs_in_again_before_launching() {
    let op = RogueOp::start(CLIENT, SECRET).await;
    op.set_claims(json!({"email": "pat@agency.example", "groups": ["agency"]}));
    let mut opts = Opts::new(&op.issuer, CLIENT, SECRET);
    opts.policy = Some(
        r#"
[[rule]]
name = "agency-short-sessions"
groups_any = ["agency"]
stores = ["us"]
role = "agency"
max_session_age = "5s"
"#
        .to_owned(),
    );
    let gw = Gateway::start(Reserved::new().await, opts).await;
    let b = Browser::new();
    let start = b.get(&gw.url("/login")).await;
    assert_eq!(
        b.follow_while(start, |u| u.path() != "/").await.status(),
        303
    );
    assert_eq!(b.get(&gw.url("/api/me")).await.status(), 200);
    // (No launch before the clock moves: the gateway caches the store clock's offset, and a jump
    // of its own clock would then mint tokens "from the future", which no real clock does.)

    // The OP signs with the real clock, so the gateway may only move a little ahead of it (a
    // fresh ID token must still verify): a 5 s grant keeps the test quick and honest.
    gw.clock.advance(5);
    let launch = b.get(&gw.url("/stores/us/launch")).await;
    let to = location(&launch).expect("redirect");
    assert_eq!(to.path(), "/login", "sent to sign in again");
    assert_eq!(query_param(&to, "acr"), None);
    let landed = b.follow(launch).await;
    assert!(landed.status().is_success(), "{}", b.hops_text());
    assert_eq!(op.authorize_requests().len(), 2);
    assert_eq!(
        gw.sim.accepted_logins().len(),
        1,
        "launched after the fresh sign-in: {:?}\n{}",
        gw.sim.rejected_logins(),
        b.hops_text()
    );
    let events = gw.audit_events().await;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("session_too_old"))
    );
}
