//! A web tool the gateway protects (issue 14), for the forward-auth, built-in proxy and
//! cookie-domain tests: the hostile OP signing in one person, a gateway with the test's
//! `[[route]]`s, and a small upstream that records every request reaching it; plus the check
//! every such test makes, the identity JWT verified with the published JWKS as an upstream would.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Request;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};
use storegate::forward::token::IdentityClaims;

use super::browser::Browser;
use super::harness::{Gateway, Opts, Reserved};
use super::rogue_op::RogueOp;

pub const CLIENT: &str = "storegate";
pub const SECRET: &str = "protected-tool-client-secret-0123";
/// The gateway's session cookie (the default `session.cookie_name`).
pub const COOKIE: &str = "storegate_session";
/// The header the upstream reads the identity token from (the default `identity_header`).
pub const IDENTITY: &str = "x-storegate-identity";

/// What the upstream saw of one request.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Path and query.
    pub path: String,
    pub headers: HeaderMap,
}

impl Seen {
    /// The identity token the upstream got, if any.
    pub fn identity(&self) -> Option<&str> {
        self.headers.get(IDENTITY).and_then(|v| v.to_str().ok())
    }
}

/// Every request that reached the upstream, oldest first.
#[derive(Clone, Default)]
pub struct Recorder(Arc<Mutex<Vec<Seen>>>);

impl Recorder {
    pub fn record(&self, req: &Request) {
        self.0.lock().expect("recorder lock").push(Seen {
            path: req.uri().to_string(),
            headers: req.headers().clone(),
        });
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.0.lock().expect("recorder lock").clone()
    }
}

/// Claims of the person the OP signs in: Lee, verified email, `groups`.
pub fn person(groups: &[&str]) -> Value {
    json!({"email": "lee@corp.example", "email_verified": true, "name": "Lee Tester", "groups": groups})
}

/// Where the routes a test writes point: the gateway's own `host:port` and the upstream's origin.
pub struct Hosts<'a> {
    pub gateway: &'a str,
    pub upstream: &'a str,
}

/// A protected tool, running.
pub struct Tool {
    pub op: RogueOp,
    pub gw: Gateway,
    pub up: Recorder,
    /// The upstream's origin, `http://127.0.0.1:PORT`.
    pub upstream: String,
    /// The gateway's `host:port` as browsers use it.
    pub host: String,
}

/// How to start a [`Tool`]; `start` takes the `[forward_auth]`/`[[route]]` text.
pub struct ToolSpec {
    pub claims: Value,
    /// The gateway's port (and public host name); default a fresh one on 127.0.0.1.
    pub reserved: Option<Reserved>,
    /// The upstream's own routes, each recording what it got in `recorder`; every other path
    /// is answered `upstream page; identity=<the identity header>` (and recorded too).
    pub upstream_routes: axum::Router,
    /// Where the upstream records every request (the one `upstream_routes` record in).
    pub recorder: Recorder,
    /// Top-level configuration keys (e.g. `trusted_proxies`).
    pub root_extra: String,
    /// Lines of the `[session]` table (e.g. `cookie_domain`).
    pub session_extra: String,
    /// Sessions in this Redis (replicas then share them); default the memory store.
    pub redis_url: Option<String>,
}

impl ToolSpec {
    pub fn new(claims: Value) -> ToolSpec {
        ToolSpec {
            claims,
            reserved: None,
            upstream_routes: axum::Router::new(),
            recorder: Recorder::default(),
            root_extra: String::new(),
            session_extra: String::new(),
            redis_url: None,
        }
    }

    /// Starts the OP, the upstream and the gateway whose extra configuration is `routes(hosts)`.
    pub async fn start(self, routes: impl FnOnce(&Hosts<'_>) -> String) -> Tool {
        let op = RogueOp::start(CLIENT, SECRET).await;
        op.set_claims(self.claims);
        let reserved = match self.reserved {
            Some(r) => r,
            None => Reserved::new().await,
        };
        let host = reserved.base.trim_start_matches("http://").to_owned();
        let up = self.recorder;
        let upstream = start_upstream(self.upstream_routes, &up).await;
        let mut opts = Opts::new(&op.issuer, CLIENT, SECRET);
        opts.extra_toml = routes(&Hosts {
            gateway: &host,
            upstream: &upstream,
        });
        opts.root_extra = self.root_extra;
        opts.session_extra = self.session_extra;
        opts.redis_url = self.redis_url;
        let gw = Gateway::start(reserved, opts).await;
        Tool {
            op,
            gw,
            up,
            upstream,
            host,
        }
    }
}

/// Serves `routes` and, for any other path, a page naming the identity header it got.
async fn start_upstream(routes: axum::Router, rec: &Recorder) -> String {
    let echo_rec = rec.clone();
    let app = routes.fallback(move |req: Request| {
        let rec = echo_rec.clone();
        async move {
            rec.record(&req);
            let id = req
                .headers()
                .get(IDENTITY)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            format!("upstream page; identity={id}").into_response()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the upstream");
    let base = format!("http://{}", listener.local_addr().expect("upstream addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    base
}

/// The identity token in an echo page's body (`upstream page; identity=...`).
pub fn identity_in(body: &str) -> String {
    body.split_once("identity=")
        .map(|(_, t)| t.to_owned())
        .unwrap_or_default()
}

/// Signs `b` in at `gw` (the hostile OP answers at once): ends on the portal's redirect.
pub async fn sign_in(b: &Browser, gw: &Gateway) {
    let start = b.get(&gw.url("/login")).await;
    let done = b.follow_while(start, |u| u.path() != "/").await;
    assert_eq!(done.status(), 303, "signed in: {}", b.hops_text());
}

/// `name=value` of the gateway's session cookie in `b`, as it would send it to `gw`.
pub fn session_cookie(b: &Browser, gw: &Gateway) -> String {
    let all = b.cookies_for(&gw.url("/")).expect("a session cookie");
    all.split("; ")
        .find(|c| c.starts_with(&format!("{COOKIE}=")))
        .expect("the session cookie")
        .to_owned()
}

/// A client without a cookie jar or redirects, to send exactly the headers a test names.
pub fn bare() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .expect("build a reqwest client")
}

/// `GET /.well-known/jwks.json`.
pub async fn jwks(gw: &Gateway) -> Value {
    reqwest::get(gw.url("/.well-known/jwks.json"))
        .await
        .expect("GET the JWKS")
        .json()
        .await
        .expect("the JWKS is JSON")
}

/// Verifies `jwt` as an upstream would: ES256 with the published key its `kid` names, audience
/// = the route, issuer = the gateway's public URL.
pub fn verify_identity(
    jwks: &Value,
    jwt: &str,
    route: &str,
    issuer: &str,
) -> Result<IdentityClaims, jsonwebtoken::errors::Error> {
    let kid = jsonwebtoken::decode_header(jwt)?.kid.expect("a kid");
    let key = jwks["keys"]
        .as_array()
        .expect("a key list")
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .expect("the token's kid is published");
    let decoding = DecodingKey::from_ec_components(
        key["x"].as_str().expect("x"),
        key["y"].as_str().expect("y"),
    )?;
    let mut v = Validation::new(Algorithm::ES256);
    v.set_audience(&[route]);
    v.set_issuer(&[issuer.trim_end_matches('/')]);
    Ok(jsonwebtoken::decode::<IdentityClaims>(jwt, &decoding, &v)?.claims)
}

/// [`verify_identity`] with `gw`'s JWKS fetched now; panics when it does not verify.
pub async fn verified(gw: &Gateway, jwt: &str, route: &str) -> IdentityClaims {
    verify_identity(&jwks(gw).await, jwt, route, &gw.url(""))
        .expect("the identity token verifies with the published JWKS")
}

/// A fresh P-256 key: (private PEM, public PEM).
pub fn p256_pem() -> (String, String) {
    let group =
        openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).expect("P-256");
    let key = openssl::ec::EcKey::generate(&group).expect("generate a key");
    (
        String::from_utf8(key.private_key_to_pem().expect("private PEM")).expect("utf-8"),
        String::from_utf8(key.public_key_to_pem().expect("public PEM")).expect("utf-8"),
    )
}
