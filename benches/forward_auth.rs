//! Forward-auth decisions per second (issue 14), in process: the forwarded headers parsed, the
//! route found among 200 routes on 20 hosts (longest prefix), the conditions checked, and the
//! ES256 identity token signed, as `GET /auth/verify` does for every request behind nginx.
//! Plain `harness = false` timing.
//!
//! Run: `cargo bench --bench forward_auth` (or `make bench`). Under `cargo test --all-targets` it
//! runs a few iterations unoptimized as a smoke test: it checks the decision and that the token
//! verifies with the published JWKS, and prints no figure worth reading.
//!
//! Not measured yet: `/auth/verify` over HTTP with sessions, and proxied requests per second
//! against nginx proxying the same upstream (the built-in proxy is not implemented).

use std::hint::black_box;
use std::time::Instant;

use axum::http::{HeaderMap, HeaderValue};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use storegate::forward::keys::{KeySet, SigningKey};
use storegate::forward::request::ForwardedRequest;
use storegate::forward::token::{self, IdentityClaims};
use storegate::identity::{Identity, IdpId};
use storegate::policy::Conditions;
use storegate::policy::route::{RouteRule, RouteTable};

const HOSTS: usize = 20;
const PER_HOST: usize = 10;
const NOW: i64 = 1_796_000_000;

fn table() -> RouteTable {
    let mut routes = Vec::new();
    for h in 0..HOSTS {
        for p in 0..PER_HOST {
            let prefix = if p == 0 {
                "/".to_owned()
            } else {
                format!("/area{p}")
            };
            routes.push(RouteRule {
                name: format!("tool{h}-{p}"),
                host: format!("tool{h}.example.com"),
                path_prefix: prefix,
                conditions: Conditions {
                    groups_any: vec![format!("group-{h}-{p}"), "bc-staff".to_owned()],
                    ..Default::default()
                },
                require_acr: None,
            });
        }
    }
    RouteTable::new(routes)
}

fn person() -> Identity {
    Identity {
        subject: "u-1".into(),
        idp: IdpId::new("nam"),
        email: Some("lee@corp.example".into()),
        email_verified: true,
        given_name: None,
        family_name: None,
        name: Some("Lee".into()),
        groups: (0..200)
            .map(|i| format!("g{i}"))
            .chain(["bc-staff".to_owned()])
            .collect(),
        roles: vec![],
        attributes: Default::default(),
        auth: Default::default(),
        signed_in_at: NOW - 60,
    }
}

fn headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static("tool13.example.com"));
    h.insert(
        "x-original-uri",
        HeaderValue::from_static("/area7/orders/42?tab=lines"),
    );
    h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
    h
}

fn per_second(n: u32, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    f64::from(n) / start.elapsed().as_secs_f64()
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let routes = table();
    let id = person();
    let keys = KeySet::new(SigningKey::generate().expect("key"), Vec::new());
    let h = headers();

    // What is measured is right: the longest prefix decides, and the token verifies.
    let req = ForwardedRequest::from_headers(&h, None, "GET").expect("parse");
    let grant = routes
        .authorize(&id, &req.host, &req.uri, NOW)
        .expect("allowed");
    assert_eq!(grant.route(), "tool13-7");
    assert_eq!(grant.groups(), ["bc-staff".to_owned()]);
    let jwt =
        token::mint(keys.current(), "https://sso.example.com", &grant, &id, 300).expect("mint");
    let jwk = keys.jwks().keys[0].clone();
    let mut v = Validation::new(Algorithm::ES256);
    v.set_audience(&["tool13-7"]);
    v.set_issuer(&["https://sso.example.com"]);
    v.validate_exp = false;
    let claims = jsonwebtoken::decode::<IdentityClaims>(
        &jwt,
        &DecodingKey::from_ec_components(&jwk.x, &jwk.y).expect("jwk"),
        &v,
    )
    .expect("the token verifies with the JWKS key");
    assert_eq!(claims.claims.sub, "u-1");

    let n = if benching { 200_000 } else { 20 };
    let decisions = per_second(n, || {
        let req = ForwardedRequest::from_headers(black_box(&h), None, "GET").expect("parse");
        black_box(routes.authorize(&id, &req.host, &req.uri, NOW).is_ok());
    });
    let n = if benching { 20_000 } else { 5 };
    let with_token = per_second(n, || {
        let req = ForwardedRequest::from_headers(black_box(&h), None, "GET").expect("parse");
        let grant = routes
            .authorize(&id, &req.host, &req.uri, NOW)
            .expect("allowed");
        black_box(
            token::mint(keys.current(), "https://sso.example.com", &grant, &id, 300).expect("mint"),
        );
    });
    println!(
        "forward_auth: {} routes, {} groups: parse + decide {decisions:.0}/s; parse + decide + ES256 token {with_token:.0}/s (one core, in process)",
        HOSTS * PER_HOST,
        id.groups.len()
    );
}
