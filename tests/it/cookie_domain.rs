//! `[session] cookie_domain` across host names (issue 14): the gateway at `sso.example.test`,
//! a proxied tool at `orders.example.test` (built-in proxy) and one behind a front door at
//! `catalogue.example.test` (forward-auth), every name reaching the gateway on 127.0.0.1 through
//! the browser's resolver, as DNS would. Signed in on the gateway's host, the session opens the
//! tools on the sibling hosts only when the cookie is scoped to the parent domain.

use std::net::SocketAddr;

use storegate::audit::{EventKind, Outcome};

use crate::harness::Reserved;
use crate::support::browser::{Browser, location, query_param};
use crate::support::tools::{
    COOKIE, IDENTITY, Tool, ToolSpec, bare, person, session_cookie, sign_in, verify_identity,
};

const GATEWAY: &str = "sso.example.test";
const ORDERS: &str = "orders.example.test";
const CATALOGUE: &str = "catalogue.example.test";

/// The gateway on `sso.example.test` (its `public_url`) with `session_extra`, the two tool
/// routes, and a browser that resolves all three names to it, signed in on the gateway's host.
async fn signed_in_on_the_gateway(session_extra: &str) -> (Tool, Browser, SocketAddr) {
    let reserved = Reserved::named(GATEWAY).await;
    let addr = reserved.addr();
    let mut spec = ToolSpec::new(person(&["bc-finance"]));
    spec.reserved = Some(reserved);
    spec.session_extra = session_extra.to_owned();
    let tool = spec
        .start(|h| {
            format!(
                r#"
[[route]]
name = "order-desk"
host = "{ORDERS}"
groups_any = ["bc-finance"]
upstream = "{upstream}"

[[route]]
name = "catalogue"
host = "{CATALOGUE}"
groups_any = ["bc-finance"]
"#,
                upstream = h.upstream
            )
        })
        .await;
    assert!(tool.gw.base.starts_with(&format!("http://{GATEWAY}:")));
    let b = Browser::resolving(&[GATEWAY, ORDERS, CATALOGUE], addr);
    sign_in(&b, &tool.gw).await;
    assert!(
        b.cookies_for(&tool.gw.url("/"))
            .is_some_and(|c| c.contains(COOKIE)),
        "signed in on the gateway's host"
    );
    (tool, b, addr)
}

/// `http://{host}:{the gateway's port}{path}`.
fn at(host: &str, addr: SocketAddr, path: &str) -> String {
    format!("http://{host}:{}{path}", addr.port())
}

/// `/auth/verify` as Traefik asks it for `host` and `uri`, with the `Cookie` header the browser
/// would send to that host (none when it has none for it). Sent to the gateway's address
/// directly: no cookie of the gateway's own host rides along.
async fn verify_for(b: &Browser, addr: SocketAddr, host: &str, uri: &str) -> reqwest::Response {
    let mut req = bare()
        .get(format!("http://{addr}/auth/verify"))
        .header("x-forwarded-method", "GET")
        .header("x-forwarded-proto", "http")
        .header("x-forwarded-host", format!("{host}:{}", addr.port()))
        .header("x-forwarded-uri", uri);
    if let Some(cookie) = b.cookies_for(&at(host, addr, "/")) {
        req = req.header("cookie", cookie);
    }
    req.send().await.expect("GET /auth/verify")
}

/// Verifies `jwt` with the gateway's JWKS (fetched from its address: the test process itself
/// does not resolve the example names), audience `route`, issuer the public URL.
async fn verified(tool: &Tool, addr: SocketAddr, jwt: &str, route: &str) {
    let jwks = bare()
        .get(format!("http://{addr}/.well-known/jwks.json"))
        .send()
        .await
        .expect("GET the JWKS")
        .json()
        .await
        .expect("JSON");
    let claims = verify_identity(&jwks, jwt, route, &tool.gw.url(""))
        .expect("the identity token verifies with the published JWKS");
    assert_eq!(claims.email.as_deref(), Some("lee@corp.example"));
}

fn forward_auth_events(tool: &Tool) -> Vec<(Outcome, Option<String>)> {
    tool.gw
        .audit_now()
        .into_iter()
        .filter(|e| e.event == EventKind::ForwardAuth)
        .map(|e| (e.outcome, e.rule))
        .collect()
}

#[tokio::test]
async fn with_cookie_domain_a_sign_in_on_the_gateway_opens_tools_on_sibling_hosts() {
    let (tool, b, addr) = signed_in_on_the_gateway("cookie_domain = \"example.test\"").await;
    // The browser sends the very session cookie to the tools' hosts.
    let ours = session_cookie(&b, &tool.gw);
    for host in [ORDERS, CATALOGUE] {
        let sent = b.cookies_for(&at(host, addr, "/")).unwrap_or_default();
        assert!(sent.split("; ").any(|c| c == ours), "{host}: {sent:?}");
    }

    // Built-in proxy on orders.example.test: admitted, no second sign-in.
    let r = b.get(&at(ORDERS, addr, "/reports?month=11")).await;
    assert_eq!(r.status(), 200, "{}", b.hops_text());
    assert!(
        r.text()
            .await
            .expect("page")
            .starts_with("upstream page; identity=ey")
    );
    let seen = tool.up.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/reports?month=11");
    verified(
        &tool,
        addr,
        seen[0].identity().expect("identity"),
        "order-desk",
    )
    .await;
    assert!(
        seen[0]
            .headers
            .get("cookie")
            .and_then(|v| v.to_str().ok())
            .is_none_or(|c| !c.contains(COOKIE)),
        "the session cookie reached the upstream"
    );

    // Forward-auth for catalogue.example.test: 200 with its token.
    let r = verify_for(&b, addr, CATALOGUE, "/items/7").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-storegate-route"], "catalogue");
    let jwt = r.headers()[IDENTITY].to_str().expect("ascii").to_owned();
    verified(&tool, addr, &jwt, "catalogue").await;

    assert_eq!(
        forward_auth_events(&tool),
        [
            (Outcome::Allow, Some("order-desk".to_owned())),
            (Outcome::Allow, Some("catalogue".to_owned())),
        ]
    );
}

#[tokio::test]
async fn without_cookie_domain_the_session_stays_on_the_gateway_s_host() {
    let (tool, b, addr) = signed_in_on_the_gateway("").await;
    for host in [ORDERS, CATALOGUE] {
        assert_eq!(b.cookies_for(&at(host, addr, "/")), None, "{host}");
    }

    // Built-in proxy: sent to sign in, the upstream never reached.
    let wanted = at(ORDERS, addr, "/reports");
    let r = b.get(&wanted).await;
    assert_eq!(r.status(), 302, "{}", b.hops_text());
    let to = location(&r).expect("to sign in");
    assert_eq!(
        to.as_str().split('?').next(),
        Some(tool.gw.url("/auth/continue").as_str())
    );
    assert_eq!(query_param(&to, "rd").as_deref(), Some(wanted.as_str()));
    // The gateway knows the browser and sends it straight back; back on the tool's host the
    // browser still has no session there: the same answer again, never the tool.
    let back = b.get(to.as_str()).await;
    assert_eq!(back.status(), 303, "{}", b.hops_text());
    assert_eq!(location(&back).map(|u| u.to_string()), Some(wanted.clone()));
    let again = b.get(&wanted).await;
    assert_eq!(again.status(), 302);
    assert!(tool.up.seen().is_empty(), "the upstream was reached");

    // Forward-auth: the front door is told to send the browser to sign in.
    let r = verify_for(&b, addr, CATALOGUE, "/items/7").await;
    assert_eq!(r.status(), 302);
    assert!(r.headers().get(IDENTITY).is_none());
    assert!(
        location(&r)
            .expect("to sign in")
            .as_str()
            .starts_with(&tool.gw.url("/auth/continue?rd="))
    );
    assert!(
        forward_auth_events(&tool)
            .iter()
            .all(|(outcome, _)| *outcome != Outcome::Allow),
        "{:?}",
        forward_auth_events(&tool)
    );
}
