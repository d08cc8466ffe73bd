//! A development-only OpenID provider, built into the binary so `storegate demo` runs with no
//! configuration and the gateway's real OIDC client code runs against real endpoints.
//!
//! **Not for production.** There are no passwords: whoever reaches the user picker can be anyone
//! in the static user list. The signing key is generated at start-up and lives only in memory.
//!
//! What it does implement faithfully, because the gateway relies on it:
//! - OpenID Connect Discovery 1.0 §3 metadata and a JWKS with a `kid` (RFC 7517, RFC 7638);
//! - the authorization-code flow (RFC 6749 §4.1) with exact `redirect_uri` matching, mandatory
//!   PKCE S256 (RFC 7636), one-time short-lived codes bound to client, `redirect_uri`, challenge
//!   and nonce, and the `iss` authorization-response parameter (RFC 9207);
//! - client authentication with `client_secret_basic` or `client_secret_post` (RFC 6749 §2.3.1),
//!   compared in constant time;
//! - RS256 ID tokens carrying the claims of OIDC Core §2 and §5.1 plus `groups`;
//! - the UserInfo endpoint (OIDC Core §5.3) and RP-initiated logout.
//!
//! The deciding code (`DevOp::begin_authorization`, `pick`, `exchange`, `userinfo`,
//! `end_session`) takes plain values and returns plain values; only the handlers at the bottom of
//! this file know about axum.
//!
//! Mounting: [`router`] serves paths relative to the issuer (`/authorize`, `/token`, ...), for
//! `Router::nest(op.mount_path(), ..)`; [`mounted_router`] does that nesting itself, so its result
//! can be merged into the gateway's root router or served alone on its own port.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::{FormRejection, RawFormRejection};
use axum::extract::{Form, RawForm, State};
use axum::http::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_SECURITY_POLICY, COOKIE, LOCATION, PRAGMA, SET_COOKIE,
    WWW_AUTHENTICATE, X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use parking_lot::Mutex;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use url::Url;

use crate::clock::{SharedClock, SystemClock, UnixTime};
use crate::secret::Secret;

/// A code is good for this long after the user picks an identity (RFC 6749 §4.1.2 recommends at
/// most ten minutes; a browser redirect takes well under one).
pub const CODE_TTL_SECS: i64 = 60;
/// How long the user picker page stays valid.
pub const PENDING_TTL_SECS: i64 = 600;
pub const ACCESS_TOKEN_TTL_SECS: i64 = 3600;
pub const ID_TOKEN_TTL_SECS: i64 = 600;
/// Bound on each of: pending picker pages, outstanding codes, live access tokens. A flood fills the
/// table and further requests are refused until entries expire; memory never grows without bound.
pub const MAX_OUTSTANDING: usize = 1024;
/// The `acr` value in every ID token: "picked from a list", the weakest assurance there is.
pub const DEV_ACR: &str = "urn:storegate:demo:dev-op:picked-from-list";
const CSRF_COOKIE: &str = "storegate_devop_csrf";

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct DevOpConfig {
    /// Exactly the issuer string the gateway is configured with, e.g. `http://127.0.0.1:8080/op`.
    /// Its path is where [`mounted_router`] mounts the endpoints.
    pub issuer: String,
    pub clients: Vec<DevClient>,
    pub users: Vec<DevUser>,
}

#[derive(Debug, Clone)]
pub struct DevClient {
    pub client_id: String,
    pub client_secret: Secret,
    /// Compared as exact strings (OAuth 2.0 Security BCP: no pattern or prefix matching).
    pub redirect_uris: Vec<String>,
    /// Where `/end_session` may send the browser back to; exact match, like `redirect_uris`.
    pub post_logout_redirect_uris: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevUser {
    pub sub: String,
    pub email: String,
    pub given_name: String,
    pub family_name: String,
    pub groups: Vec<String>,
    /// Shown on the picker so a demo user knows what this identity should see.
    pub description: String,
}

impl DevUser {
    pub fn name(&self) -> String {
        format!("{} {}", self.given_name, self.family_name)
    }
}

/// The demo cast: one identity per kind of outcome the gateway can produce.
pub fn demo_users() -> Vec<DevUser> {
    fn user(sub: &str, given: &str, family: &str, groups: &[&str], description: &str) -> DevUser {
        DevUser {
            sub: sub.to_owned(),
            email: format!(
                "{}.{}@example.com",
                given.to_lowercase(),
                family.to_lowercase()
            ),
            given_name: given.to_owned(),
            family_name: family.to_owned(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            description: description.to_owned(),
        }
    }
    vec![
        user(
            "demo-mia",
            "Mia",
            "Merchandiser",
            &["bc-merchandisers"],
            "Merchandiser: catalogue access to every store.",
        ),
        user(
            "demo-finn",
            "Finn",
            "Finance",
            &["bc-finance"],
            "Finance: orders and reports in every store.",
        ),
        user(
            "demo-sam",
            "Sam",
            "Support",
            &["bc-support"],
            "Support: customer service, limited to one store.",
        ),
        user(
            "demo-ava",
            "Ava",
            "Agency",
            &["agency-northwind"],
            "Agency staff: only the stores of the Northwind agency contract.",
        ),
        user(
            "demo-nora",
            "Nora",
            "Nobody",
            &[],
            "No groups: signs in, and sees the \"no stores\" page.",
        ),
        user(
            "demo-ivy",
            "Ivy",
            "Operations",
            &["storegate-admins"],
            "IT: the admin console at /admin (status, access review); no stores.",
        ),
    ]
}

#[derive(Debug, thiserror::Error)]
pub enum DevOpError {
    #[error("invalid development OP configuration: {}", .0.join("; "))]
    Config(Vec<String>),
    #[error("signing key: {0}")]
    Key(String),
}

// ---------------------------------------------------------------------------------------------
// Signing key
// ---------------------------------------------------------------------------------------------

/// The RS256 key the OP signs ID tokens with. Debug never shows key material.
#[derive(Clone)]
pub struct DevSigningKey {
    kid: String,
    n_b64: String,
    e_b64: String,
    encoding: jsonwebtoken::EncodingKey,
    decoding: jsonwebtoken::DecodingKey,
}

impl std::fmt::Debug for DevSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevSigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// !!! DEVELOPMENT ONLY: a PUBLIC private key, committed to the repository. !!!
///
/// Generating RSA-2048 takes 3-9 s in a debug build, too slow for `storegate demo` to start
/// instantly, so the demo OP signs with this fixed key. Anyone can forge tokens with it; it must
/// never be trusted by anything but a demo gateway talking to this built-in provider.
const DEMO_ONLY_KEY_PEM: &str = include_str!("dev_op_key.pem");

impl DevSigningKey {
    /// The committed, public, demo-only key (`src/demo/dev_op_key.pem`). Never use it outside
    /// `storegate demo` and tests.
    pub fn demo_only_embedded() -> Result<Self, DevOpError> {
        // The file starts with a warning in plain text; the PEM proper begins at its boundary.
        let start = DEMO_ONLY_KEY_PEM
            .find("-----BEGIN")
            .ok_or_else(|| DevOpError::Key("embedded demo key has no PEM block".to_owned()))?;
        Self::from_pkcs1_pem(&DEMO_ONLY_KEY_PEM[start..])
    }

    /// A fresh RSA-2048 key from the OS random source (slow in debug builds: seconds).
    pub fn generate() -> Result<Self, DevOpError> {
        let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048)
            .map_err(|e| DevOpError::Key(e.to_string()))?;
        Self::from_rsa(&key)
    }

    /// A key from a PKCS#1 PEM ("BEGIN RSA PRIVATE KEY").
    pub fn from_pkcs1_pem(pem: &str) -> Result<Self, DevOpError> {
        use rsa::pkcs1::DecodeRsaPrivateKey;
        let key =
            rsa::RsaPrivateKey::from_pkcs1_pem(pem).map_err(|e| DevOpError::Key(e.to_string()))?;
        Self::from_rsa(&key)
    }

    fn from_rsa(key: &rsa::RsaPrivateKey) -> Result<Self, DevOpError> {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::traits::PublicKeyParts;
        let der = key
            .to_pkcs1_der()
            .map_err(|e| DevOpError::Key(e.to_string()))?;
        let encoding = jsonwebtoken::EncodingKey::from_rsa_der(der.as_bytes());
        let n_b64 = B64URL.encode(key.n().to_bytes_be());
        let e_b64 = B64URL.encode(key.e().to_bytes_be());
        let decoding = jsonwebtoken::DecodingKey::from_rsa_components(&n_b64, &e_b64)
            .map_err(|e| DevOpError::Key(e.to_string()))?;
        // RFC 7638 JWK thumbprint: SHA-256 over the required members in lexicographic order.
        let thumbprint_input = format!(r#"{{"e":"{e_b64}","kty":"RSA","n":"{n_b64}"}}"#);
        let kid = B64URL.encode(Sha256::digest(thumbprint_input.as_bytes()));
        Ok(DevSigningKey {
            kid,
            n_b64,
            e_b64,
            encoding,
            decoding,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half as a JWK Set (RFC 7517 §5).
    pub fn jwks(&self) -> Value {
        json!({ "keys": [{
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid,
            "n": self.n_b64,
            "e": self.e_b64,
        }]})
    }
}

// ---------------------------------------------------------------------------------------------
// The provider
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
pub struct DevOp {
    inner: Arc<Inner>,
}

struct Inner {
    issuer: String,
    /// The issuer with any trailing '/' removed: endpoint URLs are `base + "/token"` etc.
    base: String,
    /// The issuer's path without a trailing '/': "" when the issuer is a bare origin.
    mount_path: String,
    clients: Vec<DevClient>,
    users: Vec<DevUser>,
    key: DevSigningKey,
    clock: SharedClock,
    state: Mutex<OpState>,
}

#[derive(Default)]
struct OpState {
    pending: HashMap<String, PendingAuthorization>,
    codes: HashMap<String, CodeGrant>,
    tokens: HashMap<String, AccessGrant>,
    /// Redeemed codes and the access token each produced: a replayed code revokes that token
    /// (RFC 6749 §4.1.2: "SHOULD revoke (when possible) all tokens previously issued").
    spent: HashMap<String, SpentCode>,
}

struct PendingAuthorization {
    client_id: String,
    redirect_uri: String,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: String,
    scope: String,
    csrf: String,
    expires_at: UnixTime,
}

struct CodeGrant {
    client_id: String,
    redirect_uri: String,
    code_challenge: String,
    nonce: Option<String>,
    scope: String,
    sub: String,
    auth_time: UnixTime,
    expires_at: UnixTime,
}

struct AccessGrant {
    client_id: String,
    sub: String,
    expires_at: UnixTime,
}

struct SpentCode {
    access_token: String,
    expires_at: UnixTime,
}

trait Expiring {
    fn expires_at(&self) -> UnixTime;
}
macro_rules! expiring {
    ($($t:ty),*) => { $(impl Expiring for $t { fn expires_at(&self) -> UnixTime { self.expires_at } })* };
}
expiring!(PendingAuthorization, CodeGrant, AccessGrant, SpentCode);

struct TableFull;

/// Inserts unless the table is full of unexpired entries.
fn insert_bounded<V: Expiring>(
    map: &mut HashMap<String, V>,
    key: String,
    value: V,
    now: UnixTime,
) -> Result<(), TableFull> {
    if map.len() >= MAX_OUTSTANDING {
        map.retain(|_, v| v.expires_at() > now);
    }
    if map.len() >= MAX_OUTSTANDING {
        return Err(TableFull);
    }
    map.insert(key, value);
    Ok(())
}

impl std::fmt::Debug for DevOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevOp")
            .field("issuer", &self.inner.issuer)
            .field("key", &self.inner.key)
            .finish_non_exhaustive()
    }
}

impl DevOp {
    /// A provider with the embedded demo-only key and the system clock.
    pub fn new(config: DevOpConfig) -> Result<Self, DevOpError> {
        Self::with_key_and_clock(
            config,
            DevSigningKey::demo_only_embedded()?,
            Arc::new(SystemClock),
        )
    }

    /// A provider with the given key and clock (tests fix both).
    pub fn with_key_and_clock(
        config: DevOpConfig,
        key: DevSigningKey,
        clock: SharedClock,
    ) -> Result<Self, DevOpError> {
        let mount_path = validate_config(&config).map_err(DevOpError::Config)?;
        let base = config.issuer.trim_end_matches('/').to_owned();
        Ok(DevOp {
            inner: Arc::new(Inner {
                issuer: config.issuer,
                base,
                mount_path,
                clients: config.clients,
                users: config.users,
                key,
                clock,
                state: Mutex::new(OpState::default()),
            }),
        })
    }

    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    /// The issuer's path ("" or e.g. "/op"): where the endpoints live on the listener.
    pub fn mount_path(&self) -> &str {
        &self.inner.mount_path
    }

    pub fn signing_key(&self) -> &DevSigningKey {
        &self.inner.key
    }

    fn endpoint(&self, name: &str) -> String {
        format!("{}/{name}", self.inner.base)
    }

    fn client(&self, client_id: &str) -> Option<&DevClient> {
        self.inner.clients.iter().find(|c| c.client_id == client_id)
    }

    /// OpenID Connect Discovery 1.0 §3 provider metadata.
    pub fn discovery(&self) -> Value {
        json!({
            "issuer": self.inner.issuer,
            "authorization_endpoint": self.endpoint("authorize"),
            "token_endpoint": self.endpoint("token"),
            "userinfo_endpoint": self.endpoint("userinfo"),
            "jwks_uri": self.endpoint("jwks"),
            "end_session_endpoint": self.endpoint("end_session"),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "scopes_supported": ["openid", "email", "profile", "groups"],
            "claims_supported": [
                "iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "acr", "azp", "at_hash",
                "email", "email_verified", "name", "given_name", "family_name", "groups"
            ],
            "acr_values_supported": [DEV_ACR],
            "authorization_response_iss_parameter_supported": true,
        })
    }

    // -- /authorize ---------------------------------------------------------------------------

    /// Validates an authorization request and records it until the user picks an identity.
    ///
    /// `csrf_cookie` is the browser's current CSRF cookie, reused if well-formed so that two tabs
    /// can sign in at once.
    ///
    /// Every refusal is a 400 page, never a redirect. For an unknown client or a redirect_uri that
    /// does not match, RFC 6749 §4.1.2.1 requires exactly that ("MUST NOT automatically redirect").
    /// For the other errors the RFC would redirect back with `error=`; a development OP that
    /// explains the mistake on the page is more useful, and this is a deliberate deviation.
    pub fn begin_authorization(
        &self,
        pairs: &[(String, String)],
        csrf_cookie: Option<&str>,
    ) -> Result<AuthorizeOutcome, AuthorizeError> {
        let p = Params::from_pairs(pairs).map_err(AuthorizeError::DuplicateParameter)?;
        // First the client and redirect_uri: until both are known good, nothing may redirect.
        let client_id = p.get("client_id").ok_or(AuthorizeError::MissingClientId)?;
        let client = self
            .client(client_id)
            .ok_or(AuthorizeError::UnknownClient)?;
        let redirect_uri = p
            .get("redirect_uri")
            .ok_or(AuthorizeError::MissingRedirectUri)?;
        if !client.redirect_uris.iter().any(|r| r == redirect_uri) {
            return Err(AuthorizeError::RedirectUriMismatch);
        }
        if p.get("response_type") != Some("code") {
            return Err(AuthorizeError::UnsupportedResponseType);
        }
        let scope = p.get("scope").unwrap_or_default();
        // OIDC Core §3.1.2.1: "OpenID Connect requests MUST contain the openid scope value."
        if !scope.split(' ').any(|s| s == "openid") {
            return Err(AuthorizeError::MissingOpenidScope);
        }
        // RFC 7636 §4.4.1: we require PKCE, and only S256. An absent method means "plain" (§4.3),
        // which we refuse too.
        let code_challenge = p
            .get("code_challenge")
            .ok_or(AuthorizeError::MissingCodeChallenge)?;
        if p.get("code_challenge_method") != Some("S256") {
            return Err(AuthorizeError::UnsupportedChallengeMethod);
        }
        // An S256 challenge is BASE64URL(SHA256(verifier)): exactly 43 characters.
        if code_challenge.len() != 43 || !is_base64url(code_challenge) {
            return Err(AuthorizeError::MalformedCodeChallenge);
        }
        let state = p.get("state").map(str::to_owned);
        let nonce = p.get("nonce").map(str::to_owned);

        // OIDC Core §3.1.2.6: with prompt=none and no session (we keep none), login_required.
        if p.get("prompt")
            .is_some_and(|pr| pr.split(' ').any(|v| v == "none"))
        {
            let url = self.authorization_response(
                redirect_uri,
                &[("error", "login_required")],
                state.as_deref(),
            )?;
            return Ok(AuthorizeOutcome::Redirect(url));
        }

        let (csrf, set_cookie) = match csrf_cookie {
            Some(c) if c.len() == 43 && is_base64url(c) => (c.to_owned(), false),
            _ => (random_token(), true),
        };
        let request_id = random_token();
        let now = self.inner.clock.now();
        let pending = PendingAuthorization {
            client_id: client.client_id.clone(),
            redirect_uri: redirect_uri.to_owned(),
            state,
            nonce,
            code_challenge: code_challenge.to_owned(),
            scope: scope.to_owned(),
            csrf: csrf.clone(),
            expires_at: now + PENDING_TTL_SECS,
        };
        insert_bounded(
            &mut self.inner.state.lock().pending,
            request_id.clone(),
            pending,
            now,
        )
        .map_err(|TableFull| AuthorizeError::TooManyOutstanding)?;
        Ok(AuthorizeOutcome::Pick(PickerView {
            request_id,
            csrf,
            set_cookie,
            client_id: client.client_id.clone(),
            redirect_uri: redirect_uri.to_owned(),
        }))
    }

    /// The user picked `sub` on the picker page: issue a one-time code and return the redirect
    /// (`redirect_uri?code=..&state=..&iss=..`).
    pub fn pick(
        &self,
        request_id: &str,
        form_csrf: &str,
        cookie_csrf: Option<&str>,
        sub: &str,
    ) -> Result<Url, AuthorizeError> {
        let now = self.inner.clock.now();
        let user = self
            .inner
            .users
            .iter()
            .find(|u| u.sub == sub)
            .ok_or(AuthorizeError::UnknownUser)?;
        let mut st = self.inner.state.lock();
        // The pending request is consumed whatever happens next: a picker page works once.
        let pending = st
            .pending
            .remove(request_id)
            .filter(|p| p.expires_at > now)
            .ok_or(AuthorizeError::UnknownOrExpiredRequest)?;
        // Double-submit: the form value must match both the one issued with this page and the
        // cookie this browser holds.
        let cookie_ok = cookie_csrf.is_some_and(|c| crate::secret::ct_eq(c, &pending.csrf));
        if !crate::secret::ct_eq(form_csrf, &pending.csrf) || !cookie_ok {
            return Err(AuthorizeError::CsrfMismatch);
        }
        let code = random_token();
        let grant = CodeGrant {
            client_id: pending.client_id,
            redirect_uri: pending.redirect_uri.clone(),
            code_challenge: pending.code_challenge,
            nonce: pending.nonce,
            scope: pending.scope,
            sub: user.sub.clone(),
            auth_time: now,
            expires_at: now + CODE_TTL_SECS,
        };
        let client_id = grant.client_id.clone();
        insert_bounded(&mut st.codes, code.clone(), grant, now)
            .map_err(|TableFull| AuthorizeError::TooManyOutstanding)?;
        drop(st);
        tracing::info!(sub = %user.sub, client_id = %client_id, "dev OP: issued authorization code");
        self.authorization_response(
            &pending.redirect_uri,
            &[("code", &code)],
            pending.state.as_deref(),
        )
    }

    /// `redirect_uri` plus response parameters, `state` and (RFC 9207 §2) `iss`.
    fn authorization_response(
        &self,
        redirect_uri: &str,
        params: &[(&str, &str)],
        state: Option<&str>,
    ) -> Result<Url, AuthorizeError> {
        let mut url = Url::parse(redirect_uri).map_err(|_| AuthorizeError::RedirectUriMismatch)?;
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in params {
                q.append_pair(k, v);
            }
            if let Some(state) = state {
                q.append_pair("state", state);
            }
            q.append_pair("iss", &self.inner.issuer);
        }
        Ok(url)
    }

    // -- /token -------------------------------------------------------------------------------

    /// The token endpoint (RFC 6749 §4.1.3, OIDC Core §3.1.3). `authorization` is the raw
    /// Authorization header, if any.
    pub fn exchange(
        &self,
        authorization: Option<&str>,
        pairs: &[(String, String)],
    ) -> Result<TokenSuccess, TokenError> {
        let p = Params::from_pairs(pairs)
            .map_err(|_| TokenError::InvalidRequest("a parameter was sent more than once"))?;
        let client = self.authenticate_client(authorization, &p)?;
        if p.get("grant_type") != Some("authorization_code") {
            return Err(TokenError::UnsupportedGrantType);
        }
        let code = p
            .get("code")
            .ok_or(TokenError::InvalidRequest("code is missing"))?;
        let now = self.inner.clock.now();
        let mut st = self.inner.state.lock();
        // Single use: the code leaves the table on its first redemption attempt, successful or not,
        // so a wrong code_verifier cannot be retried either.
        let Some(grant) = st.codes.remove(code) else {
            if let Some(spent) = st.spent.remove(code) {
                st.tokens.remove(&spent.access_token);
                tracing::warn!(client_id = %client.client_id, "dev OP: authorization code replayed; revoked its access token");
            }
            return Err(TokenError::InvalidGrant(
                "unknown, expired or already used code",
            ));
        };
        if grant.expires_at <= now {
            return Err(TokenError::InvalidGrant("code expired"));
        }
        // RFC 6749 §4.1.3: "ensure that the authorization code was issued to the authenticated
        // confidential client" and that redirect_uri is "identical" to the one in the request.
        if grant.client_id != client.client_id {
            return Err(TokenError::InvalidGrant(
                "code was issued to another client",
            ));
        }
        if p.get("redirect_uri") != Some(grant.redirect_uri.as_str()) {
            return Err(TokenError::InvalidGrant("redirect_uri does not match"));
        }
        // RFC 7636 §4.6: BASE64URL-ENCODE(SHA256(ASCII(code_verifier))) == code_challenge.
        let verifier = p
            .get("code_verifier")
            .ok_or(TokenError::InvalidRequest("code_verifier is missing"))?;
        if !(43..=128).contains(&verifier.len()) || !verifier.bytes().all(is_pkce_unreserved) {
            return Err(TokenError::InvalidGrant("code_verifier is malformed"));
        }
        let computed = B64URL.encode(Sha256::digest(verifier.as_bytes()));
        if !crate::secret::ct_eq(&computed, &grant.code_challenge) {
            return Err(TokenError::InvalidGrant("code_verifier does not match"));
        }
        let user = self
            .inner
            .users
            .iter()
            .find(|u| u.sub == grant.sub)
            .ok_or(TokenError::InvalidGrant("user no longer exists"))?;

        let access_token = random_token();
        insert_bounded(
            &mut st.tokens,
            access_token.clone(),
            AccessGrant {
                client_id: client.client_id.clone(),
                sub: user.sub.clone(),
                expires_at: now + ACCESS_TOKEN_TTL_SECS,
            },
            now,
        )
        .map_err(|TableFull| TokenError::TemporarilyUnavailable)?;
        // If the spent table is full the replay still fails; only the revocation is lost.
        let _ = insert_bounded(
            &mut st.spent,
            code.to_owned(),
            SpentCode {
                access_token: access_token.clone(),
                expires_at: now + ACCESS_TOKEN_TTL_SECS,
            },
            now,
        );
        drop(st);

        let claims = IdTokenClaims {
            iss: &self.inner.issuer,
            sub: &user.sub,
            aud: &client.client_id,
            azp: &client.client_id,
            exp: now + ID_TOKEN_TTL_SECS,
            iat: now,
            auth_time: grant.auth_time,
            nonce: grant.nonce.as_deref(),
            acr: DEV_ACR,
            at_hash: left_half_hash(&access_token),
            email: &user.email,
            email_verified: true,
            name: user.name(),
            given_name: &user.given_name,
            family_name: &user.family_name,
            groups: &user.groups,
        };
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(self.inner.key.kid.clone());
        let id_token = jsonwebtoken::encode(&header, &claims, &self.inner.key.encoding)
            .map_err(|_| TokenError::ServerError)?;
        tracing::info!(sub = %user.sub, client_id = %client.client_id, "dev OP: issued tokens");
        Ok(TokenSuccess {
            access_token: Secret::new(access_token),
            id_token: Secret::new(id_token),
            expires_in: ACCESS_TOKEN_TTL_SECS,
            scope: grant.scope,
        })
    }

    /// RFC 6749 §2.3.1: HTTP Basic (form-urlencoded id and secret) or both in the body; using
    /// both methods at once is refused (§2.3: "MUST NOT use more than one authentication method").
    fn authenticate_client(
        &self,
        authorization: Option<&str>,
        p: &Params,
    ) -> Result<&DevClient, TokenError> {
        let basic = match authorization {
            Some(h) => Some(parse_basic(h).ok_or(TokenError::InvalidClient)?),
            None => None,
        };
        let (client_id, secret) = match (basic, p.get("client_secret")) {
            (Some(_), Some(_)) => {
                return Err(TokenError::InvalidRequest(
                    "use one client authentication method, not two",
                ));
            }
            (Some((id, secret)), None) => {
                if p.get("client_id").is_some_and(|body_id| body_id != id) {
                    return Err(TokenError::InvalidClient);
                }
                (id, secret)
            }
            (None, Some(secret)) => (
                p.get("client_id")
                    .ok_or(TokenError::InvalidClient)?
                    .to_owned(),
                secret.to_owned(),
            ),
            (None, None) => return Err(TokenError::InvalidClient),
        };
        let client = self.client(&client_id);
        // Compare against something even for an unknown client, so timing says little either way.
        let expected = client.map_or("", |c| c.client_secret.expose());
        let secret_ok = crate::secret::ct_eq(&secret, expected);
        match client {
            Some(c) if secret_ok && !expected.is_empty() => Ok(c),
            _ => Err(TokenError::InvalidClient),
        }
    }

    // -- /userinfo ----------------------------------------------------------------------------

    /// OIDC Core §5.3 with an RFC 6750 §2.1 Bearer token.
    pub fn userinfo(&self, authorization: Option<&str>) -> Result<Value, BearerError> {
        let token = authorization
            .and_then(|h| strip_scheme(h, "Bearer"))
            .ok_or(BearerError::Missing)?;
        let now = self.inner.clock.now();
        let sub = {
            let st = self.inner.state.lock();
            let grant = st.tokens.get(token).ok_or(BearerError::InvalidToken)?;
            if grant.expires_at <= now {
                return Err(BearerError::InvalidToken);
            }
            grant.sub.clone()
        };
        let user = self
            .inner
            .users
            .iter()
            .find(|u| u.sub == sub)
            .ok_or(BearerError::InvalidToken)?;
        Ok(json!({
            "sub": user.sub,
            "email": user.email,
            "email_verified": true,
            "name": user.name(),
            "given_name": user.given_name,
            "family_name": user.family_name,
            "groups": user.groups,
        }))
    }

    // -- /end_session -------------------------------------------------------------------------

    /// RP-Initiated Logout 1.0 §2-3. The client is named by `client_id` or by a valid
    /// `id_token_hint` we signed (expired is fine); `post_logout_redirect_uri` is followed only if
    /// registered for that client. Access tokens of that user and client are revoked.
    pub fn end_session(&self, pairs: &[(String, String)]) -> EndSessionOutcome {
        let Ok(p) = Params::from_pairs(pairs) else {
            return EndSessionOutcome::SignedOut {
                note: Some("The logout request repeated a parameter; it was ignored."),
            };
        };
        let hint = p.get("id_token_hint").and_then(|t| self.verify_hint(t));
        let client_id = match (p.get("client_id"), &hint) {
            (Some(id), Some(h)) if id != h.aud => {
                return EndSessionOutcome::SignedOut {
                    note: Some("client_id and id_token_hint disagree; not redirecting."),
                };
            }
            (Some(id), _) => Some(id.to_owned()),
            (None, Some(h)) => Some(h.aud.clone()),
            (None, None) => None,
        };
        if let (Some(h), Some(cid)) = (&hint, &client_id) {
            self.inner
                .state
                .lock()
                .tokens
                .retain(|_, g| !(g.sub == h.sub && &g.client_id == cid));
        }
        let Some(target) = p.get("post_logout_redirect_uri") else {
            return EndSessionOutcome::SignedOut { note: None };
        };
        let registered = client_id
            .as_deref()
            .and_then(|id| self.client(id))
            .is_some_and(|c| c.post_logout_redirect_uris.iter().any(|u| u == target));
        if !registered {
            return EndSessionOutcome::SignedOut {
                note: Some("The return address is not registered for this client."),
            };
        }
        match Url::parse(target) {
            Ok(mut url) => {
                if let Some(state) = p.get("state") {
                    url.query_pairs_mut().append_pair("state", state);
                }
                EndSessionOutcome::Redirect(url)
            }
            Err(_) => EndSessionOutcome::SignedOut {
                note: Some("The return address is not a valid URL."),
            },
        }
    }

    fn verify_hint(&self, token: &str) -> Option<HintClaims> {
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        v.validate_exp = false;
        v.validate_aud = false;
        v.set_issuer(&[&self.inner.issuer]);
        jsonwebtoken::decode::<HintClaims>(token, &self.inner.key.decoding, &v)
            .ok()
            .map(|d| d.claims)
    }
}

fn validate_config(config: &DevOpConfig) -> Result<String, Vec<String>> {
    let mut errors = Vec::new();
    let mut mount_path = String::new();
    match Url::parse(&config.issuer) {
        Ok(url) => {
            if !matches!(url.scheme(), "http" | "https") {
                errors.push("issuer: must be an http or https URL".to_owned());
            }
            if url.query().is_some() || url.fragment().is_some() {
                errors.push("issuer: must not have a query or fragment".to_owned());
            }
            mount_path = url.path().trim_end_matches('/').to_owned();
        }
        Err(e) => errors.push(format!("issuer: not a URL ({e})")),
    }
    if config.clients.is_empty() {
        errors.push("clients: at least one client is required".to_owned());
    }
    for (i, c) in config.clients.iter().enumerate() {
        let at = format!("clients[{i}]");
        if c.client_id.is_empty() {
            errors.push(format!("{at}.client_id: empty"));
        }
        if config.clients[..i]
            .iter()
            .any(|o| o.client_id == c.client_id)
        {
            errors.push(format!("{at}.client_id: duplicate {:?}", c.client_id));
        }
        if c.client_secret.is_empty() {
            errors.push(format!("{at}.client_secret: empty"));
        }
        if c.redirect_uris.is_empty() {
            errors.push(format!("{at}.redirect_uris: at least one is required"));
        }
        let uris = c.redirect_uris.iter().map(|u| ("redirect_uris", u)).chain(
            c.post_logout_redirect_uris
                .iter()
                .map(|u| ("post_logout_redirect_uris", u)),
        );
        for (field, u) in uris {
            match Url::parse(u) {
                // RFC 6749 §3.1.2: absolute, and "MUST NOT include a fragment component".
                Ok(url) if url.fragment().is_some() => {
                    errors.push(format!("{at}.{field}: {u:?} has a fragment"));
                }
                Ok(_) => {}
                Err(e) => errors.push(format!("{at}.{field}: {u:?} is not absolute ({e})")),
            }
        }
    }
    if config.users.is_empty() {
        errors.push("users: at least one user is required".to_owned());
    }
    for (i, u) in config.users.iter().enumerate() {
        if u.sub.is_empty() {
            errors.push(format!("users[{i}].sub: empty"));
        }
        if config.users[..i].iter().any(|o| o.sub == u.sub) {
            errors.push(format!("users[{i}].sub: duplicate {:?}", u.sub));
        }
    }
    if errors.is_empty() {
        Ok(mount_path)
    } else {
        Err(errors)
    }
}

// ---------------------------------------------------------------------------------------------
// Outcomes and errors (plain values; translated to HTTP once, below)
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
pub enum AuthorizeOutcome {
    /// Show the user picker.
    Pick(PickerView),
    /// Send the browser back to the client (only for `prompt=none`: `error=login_required`).
    Redirect(Url),
}

#[derive(Debug)]
pub struct PickerView {
    pub request_id: String,
    pub csrf: String,
    /// The CSRF value is new: the response must set the cookie.
    pub set_cookie: bool,
    pub client_id: String,
    pub redirect_uri: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorizeError {
    #[error("the parameter {0:?} was sent more than once")]
    DuplicateParameter(String),
    #[error("client_id is missing")]
    MissingClientId,
    #[error("client_id is not a registered client")]
    UnknownClient,
    #[error("redirect_uri is missing")]
    MissingRedirectUri,
    #[error("redirect_uri is not registered for this client (exact match required)")]
    RedirectUriMismatch,
    #[error("response_type must be \"code\"")]
    UnsupportedResponseType,
    #[error("scope must include \"openid\"")]
    MissingOpenidScope,
    #[error("code_challenge is required: this provider requires PKCE (RFC 7636)")]
    MissingCodeChallenge,
    #[error("code_challenge_method must be \"S256\"")]
    UnsupportedChallengeMethod,
    #[error("code_challenge is not a base64url SHA-256 value")]
    MalformedCodeChallenge,
    #[error("too many sign-ins are in progress; try again in a few minutes")]
    TooManyOutstanding,
    #[error("this sign-in page has expired or was already used; start the sign-in again")]
    UnknownOrExpiredRequest,
    #[error("the form's CSRF value did not match this browser; start the sign-in again")]
    CsrfMismatch,
    #[error("no such user")]
    UnknownUser,
}

impl AuthorizeError {
    pub fn status(&self) -> StatusCode {
        match self {
            AuthorizeError::TooManyOutstanding => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

pub struct TokenSuccess {
    pub access_token: Secret,
    pub id_token: Secret,
    pub expires_in: i64,
    pub scope: String,
}

/// RFC 6749 §5.2 error responses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("invalid_request: {0}")]
    InvalidRequest(&'static str),
    #[error("invalid_client")]
    InvalidClient,
    #[error("invalid_grant: {0}")]
    InvalidGrant(&'static str),
    #[error("unsupported_grant_type")]
    UnsupportedGrantType,
    #[error("temporarily_unavailable")]
    TemporarilyUnavailable,
    #[error("server_error")]
    ServerError,
}

impl TokenError {
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::InvalidRequest(_) => "invalid_request",
            TokenError::InvalidClient => "invalid_client",
            TokenError::InvalidGrant(_) => "invalid_grant",
            TokenError::UnsupportedGrantType => "unsupported_grant_type",
            TokenError::TemporarilyUnavailable => "temporarily_unavailable",
            TokenError::ServerError => "server_error",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            // RFC 6749 §5.2: invalid_client "MAY return an HTTP 401"; we always do, with a
            // WWW-Authenticate challenge.
            TokenError::InvalidClient => StatusCode::UNAUTHORIZED,
            TokenError::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            TokenError::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    fn description(&self) -> &'static str {
        match self {
            TokenError::InvalidRequest(d) | TokenError::InvalidGrant(d) => d,
            TokenError::InvalidClient => "client authentication failed",
            TokenError::UnsupportedGrantType => "only authorization_code is supported",
            TokenError::TemporarilyUnavailable => "too many live tokens; try again later",
            TokenError::ServerError => "could not sign the ID token",
        }
    }
}

/// RFC 6750 §3.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BearerError {
    #[error("no Bearer token")]
    Missing,
    #[error("invalid_token")]
    InvalidToken,
}

#[derive(Debug)]
pub enum EndSessionOutcome {
    Redirect(Url),
    SignedOut { note: Option<&'static str> },
}

#[derive(Serialize)]
struct IdTokenClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    azp: &'a str,
    exp: UnixTime,
    iat: UnixTime,
    auth_time: UnixTime,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
    acr: &'a str,
    at_hash: String,
    email: &'a str,
    email_verified: bool,
    name: String,
    given_name: &'a str,
    family_name: &'a str,
    groups: &'a [String],
}

#[derive(Deserialize)]
struct HintClaims {
    sub: String,
    aud: String,
}

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

/// Request parameters, each at most once (RFC 6749 §3.1: "MUST NOT be included more than once";
/// "Parameters sent without a value MUST be treated as if they were omitted").
struct Params(HashMap<String, String>);

impl Params {
    fn from_pairs(pairs: &[(String, String)]) -> Result<Self, String> {
        let mut map = HashMap::new();
        for (k, v) in pairs {
            if v.is_empty() {
                continue;
            }
            if map.insert(k.clone(), v.clone()).is_some() {
                return Err(k.clone());
            }
        }
        Ok(Params(map))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

fn parse_pairs(raw: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw).into_owned().collect()
}

/// 256 bits from the OS, base64url: 43 characters.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    B64URL.encode(bytes)
}

fn is_base64url(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// RFC 7636 §4.1: `unreserved = ALPHA / DIGIT / "-" / "." / "_" / "~"`.
fn is_pkce_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// OIDC Core §3.1.3.6 `at_hash`: base64url of the left half of SHA-256 of the access token.
fn left_half_hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    B64URL.encode(&digest[..16])
}

/// The credentials of an auth scheme, matched case-insensitively (RFC 9110 §11.1).
fn strip_scheme<'a>(header: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = header.split_once(' ')?;
    let rest = rest.trim();
    (s.eq_ignore_ascii_case(scheme) && !rest.is_empty()).then_some(rest)
}

/// RFC 6749 §2.3.1: `Basic base64(urlencode(id) ":" urlencode(secret))`.
fn parse_basic(header: &str) -> Option<(String, String)> {
    let encoded = strip_scheme(header, "Basic")?;
    let decoded = String::from_utf8(B64.decode(encoded).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((form_decode(id)?, form_decode(secret)?))
}

/// application/x-www-form-urlencoded decoding of one value: '+' is a space, `%XX` a byte.
fn form_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s
                    .get(i + 1..i + 3)
                    .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| h.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

/// The endpoints at paths relative to the issuer; nest at [`DevOp::mount_path`].
pub fn router(op: DevOp) -> Router {
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery_handler))
        .route("/jwks", get(jwks_handler))
        .route("/authorize", get(authorize_handler))
        .route("/authorize/pick", post(pick_handler))
        .route("/token", post(token_handler))
        .route("/userinfo", get(userinfo_handler).post(userinfo_handler))
        .route(
            "/end_session",
            get(end_session_handler).post(end_session_handler),
        )
        .with_state(op)
}

/// [`router`] nested at the issuer's path: merge into a root router, or serve alone.
pub fn mounted_router(op: DevOp) -> Router {
    let path = op.mount_path().to_owned();
    if path.is_empty() {
        router(op)
    } else {
        Router::new().nest(&path, router(op))
    }
}

#[derive(askama::Template)]
#[template(path = "demo/op_pick.html")]
struct PickPage<'a> {
    view: &'a PickerView,
    users: &'a [DevUser],
    issuer: &'a str,
}

#[derive(askama::Template)]
#[template(path = "demo/op_message.html")]
struct MessagePage<'a> {
    title: &'a str,
    message: &'a str,
}

/// No framing (the picker is a one-click form), no caching, no scripts.
fn page(status: StatusCode, body: Result<String, askama::Error>) -> Response {
    let Ok(body) = body else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "template error").into_response();
    };
    let mut resp = (status, Html(body)).into_response();
    let h = resp.headers_mut();
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'self'; frame-ancestors 'none'"),
    );
    resp
}

fn message_page(status: StatusCode, title: &str, message: &str) -> Response {
    use askama::Template;
    page(status, MessagePage { title, message }.render())
}

fn redirect(url: &Url) -> Response {
    match HeaderValue::from_str(url.as_str()) {
        Ok(location) => (
            StatusCode::FOUND,
            [
                (LOCATION, location),
                (CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
        )
            .into_response(),
        Err(_) => message_page(
            StatusCode::BAD_REQUEST,
            "Cannot redirect",
            "The return address cannot be used in a redirect.",
        ),
    }
}

fn no_store_json(status: StatusCode, body: Value) -> Response {
    (
        status,
        [
            (CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (PRAGMA, HeaderValue::from_static("no-cache")),
        ],
        axum::Json(body),
    )
        .into_response()
}

fn header_str(headers: &HeaderMap, name: axum::http::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

impl IntoResponse for AuthorizeError {
    fn into_response(self) -> Response {
        message_page(self.status(), "Sign-in refused", &self.to_string())
    }
}

impl IntoResponse for TokenError {
    fn into_response(self) -> Response {
        let mut resp = no_store_json(
            self.status(),
            json!({ "error": self.code(), "error_description": self.description() }),
        );
        if self == TokenError::InvalidClient {
            resp.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"storegate-dev-op\""),
            );
        }
        resp
    }
}

impl IntoResponse for BearerError {
    fn into_response(self) -> Response {
        let challenge = match self {
            BearerError::Missing => "Bearer realm=\"storegate-dev-op\"",
            BearerError::InvalidToken => {
                "Bearer realm=\"storegate-dev-op\", error=\"invalid_token\""
            }
        };
        (
            StatusCode::UNAUTHORIZED,
            [(WWW_AUTHENTICATE, HeaderValue::from_static(challenge))],
        )
            .into_response()
    }
}

async fn discovery_handler(State(op): State<DevOp>) -> Response {
    axum::Json(op.discovery()).into_response()
}

async fn jwks_handler(State(op): State<DevOp>) -> Response {
    axum::Json(op.inner.key.jwks()).into_response()
}

async fn authorize_handler(
    State(op): State<DevOp>,
    headers: HeaderMap,
    form: Result<RawForm, RawFormRejection>,
) -> Response {
    let Ok(RawForm(raw)) = form else {
        return message_page(
            StatusCode::BAD_REQUEST,
            "Sign-in refused",
            "Unreadable request.",
        );
    };
    let cookie = cookie_value(&headers, CSRF_COOKIE);
    match op.begin_authorization(&parse_pairs(&raw), cookie.as_deref()) {
        Ok(AuthorizeOutcome::Redirect(url)) => redirect(&url),
        Ok(AuthorizeOutcome::Pick(view)) => {
            use askama::Template;
            let body = PickPage {
                view: &view,
                users: &op.inner.users,
                issuer: &op.inner.issuer,
            }
            .render();
            let mut resp = page(StatusCode::OK, body);
            if view.set_cookie {
                let path = if op.mount_path().is_empty() {
                    "/"
                } else {
                    op.mount_path()
                };
                let secure = if op.issuer().starts_with("https:") {
                    "; Secure"
                } else {
                    ""
                };
                let cookie = format!(
                    "{CSRF_COOKIE}={}; Path={path}; HttpOnly; SameSite=Lax{secure}",
                    view.csrf
                );
                if let Ok(v) = HeaderValue::from_str(&cookie) {
                    resp.headers_mut().insert(SET_COOKIE, v);
                }
            }
            resp
        }
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
struct PickForm {
    request: String,
    csrf: String,
    sub: String,
}

async fn pick_handler(
    State(op): State<DevOp>,
    headers: HeaderMap,
    form: Result<Form<PickForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return message_page(
            StatusCode::BAD_REQUEST,
            "Sign-in refused",
            "Unreadable form.",
        );
    };
    let cookie = cookie_value(&headers, CSRF_COOKIE);
    match op.pick(&form.request, &form.csrf, cookie.as_deref(), &form.sub) {
        Ok(url) => redirect(&url),
        Err(e) => e.into_response(),
    }
}

async fn token_handler(
    State(op): State<DevOp>,
    headers: HeaderMap,
    form: Result<RawForm, RawFormRejection>,
) -> Response {
    let Ok(RawForm(raw)) = form else {
        return TokenError::InvalidRequest("expected an application/x-www-form-urlencoded body")
            .into_response();
    };
    match op.exchange(header_str(&headers, AUTHORIZATION), &parse_pairs(&raw)) {
        Ok(t) => no_store_json(
            StatusCode::OK,
            json!({
                "access_token": t.access_token.expose(),
                "token_type": "Bearer",
                "expires_in": t.expires_in,
                "id_token": t.id_token.expose(),
                "scope": t.scope,
            }),
        ),
        Err(e) => e.into_response(),
    }
}

async fn userinfo_handler(State(op): State<DevOp>, headers: HeaderMap) -> Response {
    match op.userinfo(header_str(&headers, AUTHORIZATION)) {
        Ok(claims) => no_store_json(StatusCode::OK, claims),
        Err(e) => e.into_response(),
    }
}

async fn end_session_handler(
    State(op): State<DevOp>,
    form: Result<RawForm, RawFormRejection>,
) -> Response {
    let pairs = form
        .map(|RawForm(raw)| parse_pairs(&raw))
        .unwrap_or_default();
    match op.end_session(&pairs) {
        EndSessionOutcome::Redirect(url) => redirect(&url),
        EndSessionOutcome::SignedOut { note } => message_page(
            StatusCode::OK,
            "Signed out",
            note.unwrap_or("You are signed out of the development identity provider."),
        ),
    }
}

#[cfg(test)]
mod tests;
