//! Forward authentication behind a real nginx (`auth_request`), issue 14: allowed, not signed
//! in, not allowed, header spoofing refused, the upstream verifying the identity JWT with the
//! published JWKS, an open redirect refused, and key rotation. nginx runs as a child with a
//! private prefix and config on free ports (`scripts/test-deps.sh` installs it); a test without
//! nginx on the machine fails and says so.

use std::process::Command;

use storegate::audit::{EventKind, Outcome};

use crate::harness::Reserved;
use crate::support::browser::{Browser, location};
use crate::support::free_port;
use crate::support::front_door::{Behind, FrontDoor, Protected, private_dir, protected};
use crate::support::tools::{
    ToolSpec, identity_in, jwks, p256_pem, person, verified, verify_identity,
};

fn nginx_binary() -> &'static str {
    for p in ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"] {
        if std::path::Path::new(p).exists() {
            return p;
        }
    }
    panic!("nginx is not installed: run scripts/test-deps.sh (make deps)");
}

/// The documented snippet (docs/reverse-proxy.md), on `port`, in front of `upstream`.
fn nginx_conf(dir: &std::path::Path, port: u16, gateway: &str, upstream: &str) -> String {
    let d = dir.display();
    format!(
        r#"
worker_processes 1;
error_log {d}/error.log info;
pid {d}/nginx.pid;
events {{ worker_connections 128; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location = /_storegate_verify {{
            internal;
            proxy_pass {gateway}/auth/verify;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Original-URI $request_uri;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
        location / {{
            auth_request /_storegate_verify;
            auth_request_set $storegate_identity $upstream_http_x_storegate_identity;
            auth_request_set $storegate_sign_in $upstream_http_x_storegate_sign_in;
            proxy_set_header X-Storegate-Identity $storegate_identity;
            proxy_pass {upstream};
            error_page 401 = @storegate_sign_in;
        }}
        location @storegate_sign_in {{
            return 302 $storegate_sign_in;
        }}
    }}
}}
"#
    )
}

async fn start_nginx(behind: Behind) -> FrontDoor {
    let dir = private_dir("nginx", behind.port);
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        nginx_conf(&dir, behind.port, &behind.gateway, &behind.upstream),
    )
    .unwrap();
    let mut cmd = Command::new(nginx_binary());
    cmd.arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(&conf)
        .args(["-g", "daemon off;"]);
    let mut nginx = FrontDoor::spawn("nginx", cmd, dir);
    nginx.wait_listening(behind.port).await;
    nginx
}

async fn setup(groups: &[&str], forward_auth_table: &str) -> Protected<FrontDoor> {
    protected(
        ToolSpec::new(person(groups)),
        forward_auth_table,
        start_nginx,
    )
    .await
}

#[tokio::test]
async fn nginx_sends_a_stranger_to_sign_in_and_back_then_the_upstream_verifies_the_jwt() {
    let s = setup(&["bc-finance", "hr-confidential"], "").await;
    let b = Browser::new();
    let first = b.get(&format!("{}/orders/42?tab=lines", s.front)).await;
    assert_eq!(first.status(), 302, "{}", b.hops_text());
    let to = location(&first).unwrap();
    assert_eq!(to.path(), "/auth/continue");
    assert!(to.as_str().starts_with(&s.gw.url("/auth/continue?rd=")));
    assert!(
        s.seen.seen().is_empty(),
        "the upstream was reached without a session"
    );

    // Sign-in, and back to the tool: the upstream answers with our token.
    let landed = b.follow(first).await;
    assert_eq!(landed.status(), 200, "{}", b.hops_text());
    let hops = b.hops_text();
    assert!(hops.contains("/orders/42?tab=lines"), "{hops}");
    let jwt = identity_in(&landed.text().await.unwrap());
    let claims = verified(&s.gw, &jwt, "order-desk").await;
    assert_eq!(claims.email.as_deref(), Some("lee@corp.example"));
    assert_eq!(claims.name.as_deref(), Some("Lee Tester"));
    // Only the groups the route names, never the whole list.
    assert_eq!(claims.groups, vec!["bc-finance".to_owned()]);
    assert!(claims.exp - claims.iat <= 300);

    // Another route's upstream refuses it (audience), and a tampered token fails.
    let jwks = jwks(&s.gw).await;
    let issuer = s.gw.url("");
    assert!(verify_identity(&jwks, &jwt, "order-admin", &issuer).is_err());
    let mut tampered = jwt.clone();
    tampered.insert(jwt.rfind('.').unwrap() + 1, 'A');
    assert!(verify_identity(&jwks, &tampered, "order-desk", &issuer).is_err());

    let events = s.gw.audit_now();
    let allow = events
        .iter()
        .find(|e| e.event == EventKind::ForwardAuth && e.outcome == Outcome::Allow)
        .expect("an allow event");
    assert_eq!(allow.rule.as_deref(), Some("order-desk"));
}

#[tokio::test]
async fn nginx_refuses_a_signed_in_person_the_route_does_not_admit() {
    let s = setup(&["bc-finance"], "").await;
    let b = Browser::new();
    let landed = b.follow(b.get(&format!("{}/", s.front)).await).await;
    assert_eq!(landed.status(), 200, "{}", b.hops_text());
    let before = s.seen.seen().len();

    let admin = b.get(&format!("{}/admin/users", s.front)).await;
    assert_eq!(admin.status(), 403);
    assert_eq!(s.seen.seen().len(), before, "the upstream was reached");
    let events = s.gw.audit_now();
    let deny = events
        .iter()
        .rev()
        .find(|e| e.event == EventKind::ForwardAuth && e.outcome == Outcome::Deny)
        .expect("a deny event");
    assert_eq!(deny.rule.as_deref(), Some("order-admin"));
    assert_eq!(deny.reason.as_deref(), Some("not_entitled"));
    assert!(deny.subject.is_some());

    // The gateway's own answer names the route.
    let direct = b
        .client()
        .get(s.gw.url("/auth/verify"))
        .header("host", s.front.trim_start_matches("http://"))
        .header("x-original-uri", "/admin/users")
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 403);
    assert_eq!(direct.headers()["x-storegate-route"], "order-admin");
    assert!(direct.headers().get("x-storegate-identity").is_none());
    assert!(direct.text().await.unwrap().contains("order-admin"));
}

#[tokio::test]
async fn a_spoofed_identity_header_never_reaches_the_upstream() {
    let s = setup(&["bc-finance"], "").await;
    let forged = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.";

    // Not signed in: the forged header gets nobody in, and the upstream never sees it.
    let stranger = Browser::new();
    let r = stranger
        .client()
        .get(format!("{}/orders", s.front))
        .header("x-storegate-identity", forged)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert!(s.seen.seen().is_empty());
    // Nor does the gateway itself read it.
    let r = stranger
        .client()
        .get(s.gw.url("/auth/verify"))
        .header("host", s.front.trim_start_matches("http://"))
        .header("x-original-uri", "/orders")
        .header("x-storegate-identity", forged)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("x-storegate-identity").is_none());

    // Signed in: the upstream gets the gateway's token, not the forged one.
    let b = Browser::new();
    let landed = b.follow(b.get(&format!("{}/", s.front)).await).await;
    assert_eq!(landed.status(), 200, "{}", b.hops_text());
    let r = b
        .client()
        .get(format!("{}/orders", s.front))
        .header("x-storegate-identity", forged)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = identity_in(&r.text().await.unwrap());
    assert_ne!(got, forged);
    verified(&s.gw, &got, "order-desk").await;
    assert!(
        s.seen.seen().iter().all(|h| h.identity() != Some(forged)),
        "the forged header reached the upstream"
    );
}

#[tokio::test]
async fn traefik_style_requests_get_a_redirect_and_no_route_is_denied() {
    let s = setup(&["bc-finance"], "").await;
    let host = s.front.trim_start_matches("http://").to_owned();
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = c
        .get(s.gw.url("/auth/verify"))
        .header("x-forwarded-method", "GET")
        .header("x-forwarded-proto", "http")
        .header("x-forwarded-host", &host)
        .header("x-forwarded-uri", "/orders?x=1&y=2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let to = location(&r).unwrap();
    assert_eq!(to.path(), "/auth/continue");
    let rd = to
        .query_pairs()
        .find(|(k, _)| k == "rd")
        .map(|(_, v)| v.into_owned());
    assert_eq!(
        rd.as_deref(),
        Some(format!("http://{host}/orders?x=1&y=2").as_str())
    );

    // A host no route serves: 403, no redirect (it could not come back).
    let r = c
        .get(s.gw.url("/auth/verify"))
        .header("x-forwarded-method", "GET")
        .header("x-forwarded-host", "elsewhere.example")
        .header("x-forwarded-uri", "/")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.headers().get("location").is_none());

    // A path that would resolve elsewhere upstream: refused before any decision.
    let r = c
        .get(s.gw.url("/auth/verify"))
        .header("x-forwarded-host", &host)
        .header("x-forwarded-uri", "/public/%2e%2e/admin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn continue_refuses_an_open_redirect_after_sign_in() {
    let s = setup(&["bc-finance"], "").await;
    let b = Browser::new();
    let landed = b
        .follow(
            b.get(&s.gw.url(&format!(
                "/auth/continue?rd={}",
                storegate::redirect::urlencode("https://evil.example/")
            )))
            .await,
        )
        .await;
    assert_eq!(landed.status(), 400, "{}", b.hops_text());
    assert!(location(&landed).is_none());
    assert!(!b.hops_text().contains("evil.example/ ->"));
    // The same browser, now signed in, is sent on to a route host.
    let ok = b
        .get(&s.gw.url(&format!(
            "/auth/continue?rd={}",
            storegate::redirect::urlencode(&format!("{}/orders", s.front))
        )))
        .await;
    assert_eq!(ok.status(), 303);
    assert_eq!(
        location(&ok).unwrap().as_str(),
        format!("{}/orders", s.front)
    );
}

/// Rotation: a token signed with the old key still verifies with the JWKS of a gateway that
/// now signs with a new key and lists the old one in `previous_key_files`.
#[tokio::test]
async fn a_rotated_key_stays_published_and_its_tokens_verify() {
    let dir = std::env::temp_dir().join(format!(
        "storegate-keys-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (old_private, _) = p256_pem();
    let (new_private, _) = p256_pem();
    let old_file = dir.join("old.pem");
    let new_file = dir.join("new.pem");
    std::fs::write(&old_file, &old_private).unwrap();
    std::fs::write(&new_file, &new_private).unwrap();
    let before = format!(
        "[forward_auth]\nsigning_key_file = \"{}\"",
        old_file.display()
    );
    let s = setup(&["bc-finance"], &before).await;
    let b = Browser::new();
    let landed = b.follow(b.get(&format!("{}/", s.front)).await).await;
    assert_eq!(landed.status(), 200, "{}", b.hops_text());
    let old_token = identity_in(&landed.text().await.unwrap());
    let old_kid = jsonwebtoken::decode_header(&old_token)
        .unwrap()
        .kid
        .unwrap();

    let after = format!(
        "[forward_auth]\nsigning_key_file = \"{}\"\nprevious_key_files = [\"{}\"]",
        new_file.display(),
        old_file.display()
    );
    let rotated =
        s.gw.replica_edited(Reserved::new().await, &before, &after)
            .await;
    let jwks = jwks(&rotated).await;
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids.len(), 2, "{jwks}");
    assert_ne!(kids[0], old_kid, "the new key signs");
    assert_eq!(kids[1], old_kid, "the old key is still published");
    // The replica has the old gateway's issuer (same public_url): the old token verifies there.
    verify_identity(&jwks, &old_token, "order-desk", &s.gw.url(""))
        .expect("a token of the previous key verifies with the rotated JWKS");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Envoy `ext_authz` (HTTP service) shape: the original path appended to `path_prefix`
/// (`/auth/verify/<path>`), the original `Host`, method and `Cookie`. No Envoy binary in Debian,
/// so the requests are made by hand exactly as Envoy sends them.
#[tokio::test]
async fn envoy_style_requests_are_decided_on_the_appended_path() {
    let s = setup(&["bc-finance"], "").await;
    let host = s.front.trim_start_matches("http://").to_owned();
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = c
        .get(s.gw.url("/auth/verify/orders/42?tab=lines"))
        .header("host", &host)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let to = location(&r).unwrap();
    let rd = to
        .query_pairs()
        .find(|(k, _)| k == "rd")
        .map(|(_, v)| v.into_owned());
    assert_eq!(
        rd.as_deref(),
        Some(format!("http://{host}/orders/42?tab=lines").as_str())
    );

    let b = Browser::new();
    let landed = b.follow(b.get(&format!("{}/", s.front)).await).await;
    assert_eq!(landed.status(), 200, "{}", b.hops_text());
    let cookie = b.cookies_for(&s.gw.url("/")).expect("cookie");
    let r = c
        .post(s.gw.url("/auth/verify/orders/42"))
        .header("host", &host)
        .header("cookie", &cookie)
        .header("x-storegate-identity", "forged")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let jwt = r.headers()["x-storegate-identity"]
        .to_str()
        .unwrap()
        .to_owned();
    verified(&s.gw, &jwt, "order-desk").await;
    let r = c
        .get(s.gw.url("/auth/verify/admin/users"))
        .header("host", &host)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["x-storegate-route"], "order-admin");
}
