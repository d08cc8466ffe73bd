//! The IT console's status page (issue 16): admins see the IdPs (discovery age, certificate,
//! last sign-in), the BigCommerce stores (doctor's checks), the session store, SCIM, the queue,
//! the recent denials with their rules and the SVG charts; others get the gate's 403; every view
//! is an `admin` audit event.

use storegate::audit::{EventKind, Outcome};

use crate::admin::gateway_and_browser;
use crate::harness::MAIN_HASH;

const ADMIN: &str = "[admin]\nname = \"it-admins\"\ngroups_any = [\"storegate-admins\"]\n";

#[tokio::test]
async fn an_admin_sees_status_denials_with_rules_and_the_chart() {
    // A contractor-admin: denied on eu by "contractors-never-eu", admitted to the console.
    let (_op, gw, b) = gateway_and_browser(ADMIN, Some(&["storegate-admins", "contractors"])).await;
    assert_eq!(b.get(&gw.url("/stores/eu/launch")).await.status(), 403);
    let resp = b.get(&gw.url("/admin/status")).await;
    assert_eq!(resp.status(), 200);
    let html = resp.text().await.unwrap();
    assert!(
        html.contains(
            "<strong>nam</strong> (OIDC): <span class=\"ok\">OK</span>, discovery answers; discovery fetched "
        ),
        "{html}"
    );
    assert!(
        html.contains("Signing certificate: <span class=\"ok\">none to expire (tokens are checked with the JWKS keys)</span>."),
        "{html}"
    );
    let signed_in = gw
        .audit_now()
        .into_iter()
        .find(|e| e.event == EventKind::SignIn && e.outcome == Outcome::Allow)
        .expect("a sign-in");
    assert!(
        html.contains(&format!(
            "Last successful sign-in: {} (this replica).",
            signed_in.time
        )),
        "{html}"
    );
    assert!(
        html.contains(&format!(
            "<strong>main</strong> (store {MAIN_HASH}; US Storefront (us)"
        )),
        "{html}"
    );
    assert!(
        html.contains("<span class=\"ok\">OK</span>: the access token is accepted"),
        "{html}"
    );
    assert!(
        html.contains("<span class=\"ok\">OK</span>: scopes present: store_v2_customers"),
        "{html}"
    );
    assert!(html.contains("requests left in this window"), "{html}");
    assert!(
        html.contains("memory (this replica only): <span class=\"ok\">OK</span>, answers"),
        "{html}"
    );
    assert!(html.contains("<h2>SCIM</h2>"), "{html}");
    assert!(html.contains("<h2>Provisioning queue</h2>"), "{html}");
    assert!(
        html.contains("Sign-ins, launches and denials below are from this replica."),
        "{html}"
    );
    assert!(
        html.contains("viewBox=\"0 0 576 80\""),
        "the queue chart: {html}"
    );
    assert!(
        html.contains(
            "<td>launch</td><td>ida@corp.example</td><td>eu</td><td>contractors-never-eu</td>"
        ),
        "{html}"
    );
    assert!(html.contains("<svg class=\"chart\""), "{html}");
    assert!(
        html.contains("Sign-ins: 1. Launches: 0. Denials: 1."),
        "{html}"
    );
    assert!(html.contains("<rect class=\"s-denial\""), "{html}");
    let viewed = gw
        .audit_now()
        .into_iter()
        .find(|e| e.event == EventKind::Admin && e.target.as_deref() == Some("/admin/status"))
        .expect("the view is audited");
    assert_eq!(viewed.outcome, Outcome::Allow);
}

#[tokio::test]
async fn someone_else_gets_the_gates_refusal() {
    let (_op, gw, b) = gateway_and_browser(ADMIN, Some(&["bc-merchandisers"])).await;
    let resp = b.get(&gw.url("/admin/status")).await;
    assert_eq!(resp.status(), 403);
    let html = resp.text().await.unwrap();
    assert!(!html.contains("<svg class=\"chart\""), "{html}");
    let refused = gw
        .audit_now()
        .into_iter()
        .find(|e| e.event == EventKind::Admin && e.target.as_deref() == Some("/admin/status"))
        .expect("the refusal is audited");
    assert_eq!(refused.outcome, Outcome::Deny);
}
