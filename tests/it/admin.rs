//! The admin gate (issue 13): `[admin]` decides who may use `/admin`, through the policy engine,
//! and every console request is an `admin` audit event. Sign-in goes through the hostile OP in
//! its well-behaved mode.

use serde_json::json;
use storegate::audit::{EventKind, Outcome};

use crate::harness::{DEFAULT_POLICY, Gateway, Opts, Reserved};
use crate::support::browser::{Browser, location};
use crate::support::rogue_op::RogueOp;

const CLIENT: &str = "storegate";
const SECRET: &str = "admin-gate-client-secret-0123";

const ADMIN: &str = r#"
[admin]
name = "it-admins"
groups_any = ["storegate-admins"]
"#;

/// A gateway with `[admin]` (or without, when `admin` is empty) and a browser signed in with
/// `groups`, or not signed in when `groups` is `None`.
pub async fn gateway_and_browser(
    admin: &str,
    groups: Option<&[&str]>,
) -> (RogueOp, Gateway, Browser) {
    let op = RogueOp::start(CLIENT, SECRET).await;
    let mut opts = Opts::new(&op.issuer, CLIENT, SECRET);
    opts.policy = Some(format!("{DEFAULT_POLICY}\n{admin}"));
    let gw = Gateway::start(Reserved::new().await, opts).await;
    let b = Browser::new();
    if let Some(groups) = groups {
        op.set_claims(json!({
            "email": "ida@corp.example", "email_verified": true, "given_name": "Ida",
            "groups": groups,
        }));
        let start = b.get(&gw.url("/login")).await;
        let done = b.follow_while(start, |u| u.path() != "/").await;
        assert_eq!(done.status(), 303, "signed in: {}", b.hops_text());
    }
    (op, gw, b)
}

fn admin_events(gw: &Gateway) -> Vec<storegate::audit::AuditEvent> {
    gw.audit_now()
        .into_iter()
        .filter(|e| e.event == EventKind::Admin)
        .collect()
}

#[tokio::test]
async fn without_a_session_the_console_sends_the_browser_to_sign_in_and_back() {
    let (_op, gw, b) = gateway_and_browser(ADMIN, None).await;
    let resp = b.get(&gw.url("/admin")).await;
    assert_eq!(resp.status(), 303);
    let to = location(&resp).expect("Location");
    assert_eq!(to.path(), "/login");
    assert_eq!(to.query(), Some("return_to=%2Fadmin"));
    assert!(admin_events(&gw).is_empty(), "nobody to audit yet");
}

#[tokio::test]
async fn a_signed_in_person_outside_the_admin_rule_gets_403_naming_the_rule_and_is_audited() {
    let (_op, gw, b) = gateway_and_browser(ADMIN, Some(&["bc-merchandisers"])).await;
    let resp = b.get(&gw.url("/admin")).await;
    assert_eq!(resp.status(), 403);
    let rid = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("request id")
        .to_owned();
    let body = resp.text().await.expect("body");
    assert!(body.contains("it-admins"), "the rule is named: {body}");
    assert!(
        !body.contains("Admin console"),
        "no console content: {body}"
    );
    let events = admin_events(&gw);
    assert_eq!(events.len(), 1, "{events:?}");
    let ev = &events[0];
    assert_eq!(ev.outcome, Outcome::Deny);
    assert_eq!(ev.reason.as_deref(), Some("not_admin"));
    assert_eq!(ev.rule.as_deref(), Some("it-admins"));
    assert_eq!(ev.target.as_deref(), Some("/admin"));
    assert_eq!(ev.email.as_deref(), Some("ida@corp.example"));
    assert_eq!(ev.request_id, rid);
}

#[tokio::test]
async fn a_member_of_the_admin_group_gets_the_console_and_the_view_is_audited() {
    let (_op, gw, b) = gateway_and_browser(ADMIN, Some(&["storegate-admins"])).await;
    let resp = b.get(&gw.url("/admin")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let body = resp.text().await.expect("body");
    assert!(body.contains("Admin console"), "{body}");
    let events = admin_events(&gw);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].outcome, Outcome::Allow);
    assert_eq!(events[0].rule.as_deref(), Some("it-admins"));
    assert_eq!(events[0].target.as_deref(), Some("/admin"));
}

#[tokio::test]
async fn without_an_admin_table_there_is_no_console() {
    let (_op, gw, b) = gateway_and_browser("", Some(&["storegate-admins"])).await;
    let resp = b.get(&gw.url("/admin")).await;
    assert_eq!(resp.status(), 404);
    assert!(admin_events(&gw).is_empty());
}

#[tokio::test]
async fn the_access_review_is_a_table_and_a_csv_download_for_admins_only_and_each_view_is_audited()
{
    let (_op, gw, b) = gateway_and_browser(ADMIN, Some(&["storegate-admins"])).await;
    let page = b.get(&gw.url("/admin/access?dormant=7d")).await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("body");
    assert!(html.contains("<h1>Access review</h1>"), "{html}");
    assert!(
        html.contains("/admin/access.csv?dormant=7d&#38;expiring=14d"),
        "{html}"
    );
    // The harness's gateway writes its trail to a channel, not a file: the page says so.
    assert!(html.contains("Partial report"), "{html}");

    let csv = b.get(&gw.url("/admin/access.csv")).await;
    assert_eq!(csv.status(), 200);
    let header = |name: &str| {
        csv.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(
        header("content-type").as_deref(),
        Some("text/csv; charset=utf-8")
    );
    assert_eq!(
        header("content-disposition").as_deref(),
        Some("attachment; filename=\"storegate-access.csv\"")
    );
    let body = csv.text().await.expect("body");
    assert!(
        body.starts_with("id,kind,subject,idp,email,store,role,rule,template,customer_group,expires_at,expiring,last_launch_at,dormant,in_scim,customer_id\r\n"),
        "{body}"
    );

    let bad = b.get(&gw.url("/admin/access?dormant=soon")).await;
    assert_eq!(bad.status(), 400);

    let targets: Vec<String> = admin_events(&gw)
        .into_iter()
        .filter(|e| e.outcome == Outcome::Allow)
        .filter_map(|e| e.target)
        .collect();
    assert_eq!(
        targets,
        ["/admin/access", "/admin/access.csv", "/admin/access"],
        "every view audited, the refused window included"
    );
}

#[tokio::test]
async fn the_access_csv_is_refused_to_a_non_admin_without_any_row() {
    let (_op, gw, b) = gateway_and_browser(ADMIN, Some(&["bc-merchandisers"])).await;
    let resp = b.get(&gw.url("/admin/access.csv")).await;
    assert_eq!(resp.status(), 403);
    let body = resp.text().await.expect("body");
    assert!(!body.contains("id,kind,subject"), "{body}");
    let events = admin_events(&gw);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].outcome, Outcome::Deny);
    assert_eq!(events[0].target.as_deref(), Some("/admin/access.csv"));
}
