//! A hostile OpenID provider for refusal tests that a conforming provider cannot produce. Each
//! [`Fault`] breaks exactly one rule of OIDC Core 3.1.3.7 (ID token validation), 5.3.2 (userinfo
//! `sub`) or RFC 9207 (`iss` response parameter); everything else stays valid, so a refusal proves
//! that one check. `Fault::None` is a correct provider, for the positive control.
//!
//! `/authorize` shows no page: it redirects straight back with a code. `/token` checks client
//! authentication, single use of the code and PKCE (S256) before answering.

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use openidconnect::PrivateSigningKey;
use openidconnect::core::{CoreHmacKey, CoreJwsSigningAlgorithm, CoreRsaPrivateSigningKey};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::task::JoinHandle;

/// Test-only keys (see tests/data/README.md). A is in the JWKS; B only when [`RogueOp::publish_key_b`].
const KEY_A_PEM: &str = include_str!("../data/rogue-op-test-key-a.pem");
const KEY_B_PEM: &str = include_str!("../data/rogue-op-test-key-b.pem");
pub const KID_A: &str = "rogue-a";
pub const KID_B: &str = "rogue-b";

/// The single rule the provider breaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fault {
    /// A correct provider.
    #[default]
    None,
    /// `alg: none`, empty signature.
    AlgNone,
    /// HS256 with the client secret as key (no `kid`), when RS256 is what the client expects.
    Hs256WithClientSecret,
    /// RS256 by key B with `kid: rogue-b`, which the JWKS does not publish (unless `publish_key_b`).
    UnknownKid,
    /// `iss` is another issuer.
    WrongIss,
    /// `aud` is another client only.
    WrongAud,
    /// `aud` = [client, other] with `azp` = other.
    MultipleAudWrongAzp,
    /// `exp` ten minutes ago.
    Expired,
    /// `iat` an hour in the future.
    IatFarFuture,
    /// No `nonce` claim although the request sent one.
    NonceMissing,
    /// A `nonce` different from the one sent.
    NonceWrong,
    /// A valid signature over a payload, but the token carries a modified payload (`sub` changed).
    TamperedPayload,
    /// ID token valid; userinfo answers with another `sub`.
    UserinfoSubMismatch,
    /// ID token valid; the authorization response's `iss` names another provider (mix-up).
    MixUpIss,
}

/// What `/authorize` received (the gateway's authorization request).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct AuthorizeRequest {
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub response_type: Option<String>,
    pub scope: Option<String>,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub acr_values: Option<String>,
}

/// What `/token` received.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct TokenRequest {
    pub grant_type: Option<String>,
    pub code: Option<String>,
    pub redirect_uri: Option<String>,
    pub code_verifier: Option<String>,
    pub client_id: Option<String>,
    #[serde(skip)]
    pub basic_auth: bool,
}

struct Inner {
    issuer: String,
    client_id: String,
    client_secret: String,
    key_a: CoreRsaPrivateSigningKey,
    key_b: CoreRsaPrivateSigningKey,
    s: Mutex<Mutable>,
}

#[derive(Default)]
struct Mutable {
    fault: Fault,
    send_iss: bool,
    /// Answer `acr_values` with that `acr` in the ID token, as Access Manager does when the
    /// requested contract was performed.
    echo_acr: bool,
    publish_key_b: bool,
    sub: String,
    claims: Map<String, Value>,
    codes: HashMap<String, AuthorizeRequest>,
    access_tokens: HashMap<String, String>,
    authorize_requests: Vec<AuthorizeRequest>,
    token_requests: Vec<TokenRequest>,
    token_calls: usize,
    jwks_calls: usize,
    userinfo_calls: usize,
}

pub struct RogueOp {
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub issuer: String,
    inner: Arc<Inner>,
    task: JoinHandle<()>,
}

impl RogueOp {
    /// Starts on 127.0.0.1:0 with `Fault::None`, `iss` in authorization responses, subject
    /// `rogue-user` and a few profile claims. Needs a tokio runtime.
    pub async fn start(client_id: &str, client_secret: &str) -> RogueOp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind rogue OP");
        let issuer = format!("http://{}", listener.local_addr().expect("local addr"));
        let key = |pem, kid: &str| {
            CoreRsaPrivateSigningKey::from_pem(
                pem,
                Some(openidconnect::JsonWebKeyId::new(kid.into())),
            )
            .expect("test key in tests/data is PKCS#1 PEM")
        };
        let claims = json!({
            "email": "rogue@corp.example",
            "name": "Rogue User",
            "given_name": "Rogue",
            "family_name": "User",
            "groups": ["bc-merchandisers"],
        });
        let inner = Arc::new(Inner {
            issuer: issuer.clone(),
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            key_a: key(KEY_A_PEM, KID_A),
            key_b: key(KEY_B_PEM, KID_B),
            s: Mutex::new(Mutable {
                send_iss: true,
                echo_acr: true,
                sub: "rogue-user".to_owned(),
                claims: claims.as_object().cloned().unwrap_or_default(),
                ..Default::default()
            }),
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .route("/userinfo", get(userinfo))
            .with_state(Arc::clone(&inner));
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("rogue OP server");
        });
        RogueOp {
            issuer,
            inner,
            task,
        }
    }

    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer)
    }

    pub fn set_fault(&self, fault: Fault) {
        self.lock().fault = fault;
    }

    /// Whether `/authorize` adds `iss` to its redirect (RFC 9207). Default true.
    pub fn set_send_iss(&self, send: bool) {
        self.lock().send_iss = send;
    }

    /// Also publish key B (`kid: rogue-b`) in the JWKS: a key rotation the client learns by refetching.
    pub fn publish_key_b(&self, publish: bool) {
        self.lock().publish_key_b = publish;
    }

    pub fn set_sub(&self, sub: &str) {
        self.lock().sub = sub.to_owned();
    }

    /// Claims besides the protocol ones, in both the ID token and userinfo. Must be an object.
    /// Whether a requested `acr_values` comes back as the ID token's `acr` (default true).
    pub fn set_echo_acr(&self, echo: bool) {
        self.lock().echo_acr = echo;
    }

    pub fn set_claims(&self, claims: Value) {
        self.lock().claims = claims.as_object().cloned().expect("claims object");
    }

    pub fn token_calls(&self) -> usize {
        self.lock().token_calls
    }

    pub fn jwks_calls(&self) -> usize {
        self.lock().jwks_calls
    }

    pub fn userinfo_calls(&self) -> usize {
        self.lock().userinfo_calls
    }

    pub fn authorize_requests(&self) -> Vec<AuthorizeRequest> {
        self.lock().authorize_requests.clone()
    }

    pub fn token_requests(&self) -> Vec<TokenRequest> {
        self.lock().token_requests.clone()
    }

    /// A JWT over `claims` signed RS256 by key A (`kid: rogue-a`, in the JWKS) or, with
    /// `by_key_b`, by key B under kid A (a signature no published key verifies). For hand-made
    /// logout tokens.
    pub fn sign_jwt(&self, header: Value, claims: &Value, by_key_b: bool) -> String {
        let rs256 = CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256;
        let input = format!("{}.{}", b64json(&header), b64json(claims));
        let key = if by_key_b {
            &self.inner.key_b
        } else {
            &self.inner.key_a
        };
        let sig = key.sign(&rs256, input.as_bytes()).expect("RS256 sign");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    pub fn client_id(&self) -> String {
        self.inner.client_id.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Mutable> {
        self.inner.s.lock().expect("rogue OP state lock")
    }
}

impl Drop for RogueOp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn discovery(State(op): State<Arc<Inner>>) -> Json<Value> {
    let i = &op.issuer;
    Json(json!({
        "issuer": i,
        "authorization_endpoint": format!("{i}/authorize"),
        "token_endpoint": format!("{i}/token"),
        "userinfo_endpoint": format!("{i}/userinfo"),
        "jwks_uri": format!("{i}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": ["openid", "email", "profile", "groups"],
        "claims_supported": ["sub", "email", "name", "given_name", "family_name", "groups"],
        "authorization_response_iss_parameter_supported": true,
    }))
}

async fn jwks(State(op): State<Arc<Inner>>) -> Json<Value> {
    let mut s = op.s.lock().expect("lock");
    s.jwks_calls += 1;
    let mut keys = vec![op.key_a.as_verification_key()];
    if s.publish_key_b {
        keys.push(op.key_b.as_verification_key());
    }
    Json(json!({ "keys": keys }))
}

async fn authorize(State(op): State<Arc<Inner>>, Query(req): Query<AuthorizeRequest>) -> Response {
    let Some(redirect_uri) = req.redirect_uri.clone() else {
        return (StatusCode::BAD_REQUEST, "redirect_uri missing").into_response();
    };
    let Ok(mut to) = url::Url::parse(&redirect_uri) else {
        return (StatusCode::BAD_REQUEST, "redirect_uri is not a URL").into_response();
    };
    let code = uuid::Uuid::new_v4().simple().to_string();
    let mut s = op.s.lock().expect("lock");
    s.authorize_requests.push(req.clone());
    s.codes.insert(code.clone(), req.clone());
    {
        let mut q = to.query_pairs_mut();
        q.append_pair("code", &code);
        if let Some(state) = &req.state {
            q.append_pair("state", state);
        }
        if s.fault == Fault::MixUpIss {
            q.append_pair("iss", "https://other-op.example");
        } else if s.send_iss {
            q.append_pair("iss", &op.issuer);
        }
    }
    Redirect::to(to.as_str()).into_response()
}

fn oauth_error(status: StatusCode, error: &str) -> Response {
    (status, Json(json!({ "error": error }))).into_response()
}

async fn token(
    State(op): State<Arc<Inner>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let field = |k: &str| form.get(k).cloned();
    let req = TokenRequest {
        grant_type: field("grant_type"),
        code: field("code"),
        redirect_uri: field("redirect_uri"),
        code_verifier: field("code_verifier"),
        client_id: field("client_id"),
        basic_auth: basic.is_some(),
    };

    let mut s = op.s.lock().expect("lock");
    s.token_calls += 1;
    s.token_requests.push(req.clone());

    // RFC 6749 2.3.1: client_secret_basic, or client_secret_post.
    let (id, secret) = match &basic {
        Some(pair) => pair
            .split_once(':')
            .map(|(a, b)| (a.to_owned(), b.to_owned())),
        None => field("client_id").zip(field("client_secret")),
    }
    .unwrap_or_default();
    if id != op.client_id || secret != op.client_secret {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    if req.grant_type.as_deref() != Some("authorization_code") {
        return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type");
    }
    // Codes are single use: a second redemption fails like at a real provider.
    let Some(auth) = req.code.as_ref().and_then(|c| s.codes.remove(c)) else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
    };
    if auth.redirect_uri != req.redirect_uri {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
    }
    // RFC 7636 4.6: S256 only.
    if let Some(challenge) = &auth.code_challenge {
        let ok = auth.code_challenge_method.as_deref() == Some("S256")
            && req.code_verifier.as_deref().is_some_and(|v| {
                URL_SAFE_NO_PAD.encode(Sha256::digest(v.as_bytes())) == *challenge
            });
        if !ok {
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
        }
    }

    let access_token = uuid::Uuid::new_v4().simple().to_string();
    let sub = s.sub.clone();
    s.access_tokens.insert(access_token.clone(), sub);
    let id_token = id_token(&op, &s, &auth, &access_token);
    Json(json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": auth.scope.unwrap_or_else(|| "openid".to_owned()),
        "id_token": id_token,
    }))
    .into_response()
}

async fn userinfo(State(op): State<Arc<Inner>>, headers: HeaderMap) -> Response {
    let mut s = op.s.lock().expect("lock");
    s.userinfo_calls += 1;
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(sub) = token.and_then(|t| s.access_tokens.get(t)).cloned() else {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer error=\"invalid_token\"")],
        )
            .into_response();
    };
    let mut body = s.claims.clone();
    let sub = if s.fault == Fault::UserinfoSubMismatch {
        "someone-else".to_owned()
    } else {
        sub
    };
    body.insert("sub".into(), Value::String(sub));
    Json(Value::Object(body)).into_response()
}

fn now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    i64::try_from(secs).expect("time fits i64")
}

fn b64json(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("serialize JWT part"))
}

/// Builds the ID token for this fault. Claims per OIDC Core 2; `at_hash` per 3.1.3.6.
fn id_token(op: &Inner, s: &Mutable, auth: &AuthorizeRequest, access_token: &str) -> String {
    let now = now();
    let digest = Sha256::digest(access_token.as_bytes());
    let mut c = s.claims.clone();
    let mut set = |k: &str, v: Value| {
        c.insert(k.to_owned(), v);
    };
    set("iss", json!(op.issuer));
    set("sub", json!(s.sub));
    set("aud", json!(op.client_id));
    set("iat", json!(now));
    set("exp", json!(now + 300));
    set("auth_time", json!(now));
    set("at_hash", json!(URL_SAFE_NO_PAD.encode(&digest[..16])));
    if let Some(nonce) = &auth.nonce {
        set("nonce", json!(nonce));
    }
    // OIDC Core 3.1.2.1: `acr_values` is a space-separated list in order of preference.
    if s.echo_acr
        && let Some(acr) = auth.acr_values.as_deref().and_then(|v| v.split(' ').next())
    {
        set("acr", json!(acr));
    }
    match s.fault {
        Fault::WrongIss => set("iss", json!("https://other-op.example")),
        Fault::WrongAud => set("aud", json!("another-client")),
        Fault::MultipleAudWrongAzp => {
            set("aud", json!([op.client_id, "another-client"]));
            set("azp", json!("another-client"));
        }
        Fault::Expired => {
            set("iat", json!(now - 1200));
            set("auth_time", json!(now - 1200));
            set("exp", json!(now - 600));
        }
        Fault::IatFarFuture => {
            set("iat", json!(now + 3600));
            set("exp", json!(now + 7200));
        }
        Fault::NonceMissing => {
            c.remove("nonce");
        }
        Fault::NonceWrong => set("nonce", json!("not-the-nonce-that-was-sent")),
        _ => {}
    }
    let payload = Value::Object(c);

    let rs256 = CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256;
    let signed = |header: Value, payload: &Value, key: &dyn Fn(&[u8]) -> Vec<u8>| {
        let input = format!("{}.{}", b64json(&header), b64json(payload));
        let sig = URL_SAFE_NO_PAD.encode(key(input.as_bytes()));
        format!("{input}.{sig}")
    };
    let by_a = |m: &[u8]| op.key_a.sign(&rs256, m).expect("RS256 sign");
    match s.fault {
        Fault::AlgNone => format!(
            "{}.{}.",
            b64json(&json!({"alg": "none", "typ": "JWT"})),
            b64json(&payload)
        ),
        Fault::Hs256WithClientSecret => {
            let hmac = CoreHmacKey::new(op.client_secret.as_bytes());
            let by_secret = |m: &[u8]| {
                hmac.sign(&CoreJwsSigningAlgorithm::HmacSha256, m)
                    .expect("HS256 sign")
            };
            signed(json!({"alg": "HS256", "typ": "JWT"}), &payload, &by_secret)
        }
        Fault::UnknownKid => {
            let by_b = |m: &[u8]| op.key_b.sign(&rs256, m).expect("RS256 sign");
            signed(
                json!({"alg": "RS256", "typ": "JWT", "kid": KID_B}),
                &payload,
                &by_b,
            )
        }
        Fault::TamperedPayload => {
            let header = json!({"alg": "RS256", "typ": "JWT", "kid": KID_A});
            let genuine = signed(header, &payload, &by_a);
            let mut forged = payload.clone();
            forged["sub"] = json!("admin");
            let mut parts = genuine.split('.');
            let (h, _, sig) = (parts.next(), parts.next(), parts.next());
            format!(
                "{}.{}.{}",
                h.unwrap_or_default(),
                b64json(&forged),
                sig.unwrap_or_default()
            )
        }
        _ => signed(
            json!({"alg": "RS256", "typ": "JWT", "kid": KID_A}),
            &payload,
            &by_a,
        ),
    }
}
