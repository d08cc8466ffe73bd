//! OpenID Connect relying party (authorization code + PKCE S256), built on `openidconnect`.
//!
//! The library's typestate client and ID-token verifier do the heavy lifting; this adapter adds
//! what the library leaves to the caller, each check citing the clause it enforces:
//! - RFC 9207 `iss` authorization-response parameter (mix-up defence);
//! - OIDC Core 3.1.3.7 step 5 `azp` (openidconnect leaves it to us);
//! - an explicit asymmetric algorithm allowlist (never HS* with the client secret, never `none`);
//! - `iat` not in the future beyond the skew; `exp` with the configured skew;
//! - userinfo `sub` equal to the ID token `sub` (OIDC Core 5.3.2);
//! - one JWKS refresh, rate-limited, when a token names an unknown `kid` (key rotation).

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthenticationFlow, CoreClaimName, CoreClaimType, CoreClient,
    CoreClientAuthMethod, CoreGrantType, CoreIdToken, CoreIdTokenVerifier, CoreJsonWebKey,
    CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm, CoreJwsSigningAlgorithm,
    CoreResponseMode, CoreResponseType, CoreSubjectIdentifierType,
};
use openidconnect::{
    AdditionalProviderMetadata, AuthType, AuthenticationContextClass, AuthorizationCode, ClientId,
    ClientSecret, CsrfToken, IssuerUrl, JsonWebKeySet, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, PkceCodeVerifier, ProviderMetadata, RedirectUrl, Scope,
    SignatureVerificationError, TokenResponse,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::RwLock;

use super::VerifiedClaims;
use super::logout_token::{self, LogoutTokenError};
use super::settings::{IdpConfig, OidcIdp, TokenAuthMethod};
use crate::clock::{SharedClock, UnixTime};
use crate::identity::{AuthContext, IdpId};
use crate::redirect::LocalPath;

/// Discovery fields the core types drop: RFC 9207 section 3.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IssParameterMetadata {
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: Option<bool>,
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
}
impl AdditionalProviderMetadata for IssParameterMetadata {}

type Metadata = ProviderMetadata<
    IssParameterMetadata,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

/// A sign-in in progress, kept server-side in the browser's session until the callback.
#[derive(Clone, Serialize, Deserialize)]
pub struct PendingLogin {
    pub idp: IdpId,
    pub state: String,
    nonce: String,
    pkce_verifier: String,
    pub return_to: LocalPath,
    pub created_at: UnixTime,
}

impl std::fmt::Debug for PendingLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // state, nonce and verifier are bearer values for this login: never printed.
        f.debug_struct("PendingLogin")
            .field("idp", &self.idp)
            .field("return_to", &self.return_to)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// What the IdP sent back to the redirect URI.
#[derive(Debug, Default, Deserialize)]
pub struct CallbackParams {
    pub code: Option<String>,
    pub state: Option<String>,
    pub iss: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// Why a sign-in failed. `reason()` is the stable code for audit events and metrics; `Display`
/// is the message for the admin (logs, audit); `user_message()` is what the browser is shown.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("identity provider discovery failed for {issuer}: {detail}")]
    Discovery { issuer: String, detail: String },
    #[error("identity provider {issuer} unreachable: {detail}")]
    Unreachable { issuer: String, detail: String },
    #[error("the identity provider returned an error: {error}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    ProviderError {
        error: String,
        description: Option<String>,
    },
    #[error("the callback carried no authorization code")]
    MissingCode,
    #[error(
        "RFC 9207: the authorization response names issuer {got}, expected {expected} (possible IdP mix-up)"
    )]
    IssuerMismatch { got: String, expected: String },
    #[error(
        "RFC 9207: the provider advertises the iss response parameter but the response has none"
    )]
    IssuerMissing,
    #[error("the token request failed: {0}")]
    TokenRequest(String),
    #[error("the token response carried no ID token")]
    NoIdToken,
    #[error(
        "the identity provider sent an unsigned ID token (alg none). In Access Manager, open the OAuth client and set \"ID Token Signed Response Algorithm\" to RS256"
    )]
    UnsignedIdToken,
    #[error("ID token rejected: {0}")]
    IdTokenInvalid(String),
    #[error("ID token rejected: azp {got:?} is not this client's id")]
    AzpMismatch { got: Option<String> },
    #[error("ID token rejected: iat is {secs}s in the future")]
    IssuedInFuture { secs: i64 },
    #[error("userinfo request failed: {0}")]
    Userinfo(String),
    #[error("userinfo sub {userinfo:?} does not match the ID token sub {id_token:?}")]
    UserinfoSubjectMismatch { id_token: String, userinfo: String },
    #[error("configuration: {0}")]
    Config(String),
}

impl OidcError {
    pub fn reason(&self) -> &'static str {
        match self {
            OidcError::Discovery { .. } | OidcError::Unreachable { .. } => "idp_unreachable",
            OidcError::ProviderError { .. } => "idp_error",
            OidcError::MissingCode => "missing_code",
            OidcError::IssuerMismatch { .. } => "iss_mismatch",
            OidcError::IssuerMissing => "iss_missing",
            OidcError::TokenRequest(_) => "token_request_failed",
            OidcError::NoIdToken => "no_id_token",
            OidcError::UnsignedIdToken => "id_token_unsigned",
            OidcError::IdTokenInvalid(_) => "id_token_invalid",
            OidcError::AzpMismatch { .. } => "azp_mismatch",
            OidcError::IssuedInFuture { .. } => "iat_in_future",
            OidcError::Userinfo(_) => "userinfo_failed",
            OidcError::UserinfoSubjectMismatch { .. } => "userinfo_sub_mismatch",
            OidcError::Config(_) => "config",
        }
    }

    /// True when the IdP could not be reached: a 503, not a refusal.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            OidcError::Discovery { .. } | OidcError::Unreachable { .. }
        )
    }
}

struct Discovered {
    metadata: Metadata,
    /// The same document in the core type the library's client wants, converted once here
    /// rather than on every sign-in.
    core: openidconnect::core::CoreProviderMetadata,
    jwks: JsonWebKeySet<CoreJsonWebKey>,
    /// When the document was fetched (the console shows its age).
    at: Instant,
}

/// One configured OpenID provider.
pub struct OidcProvider {
    id: IdpId,
    cfg: OidcIdp,
    redirect_uri: RedirectUrl,
    http: reqwest::Client,
    clock: SharedClock,
    discovered: RwLock<Option<Arc<Discovered>>>,
    last_jwks_refresh: Mutex<Option<Instant>>,
    last_probe: Mutex<Option<(Instant, Result<(), String>)>>,
}

/// At most one JWKS refresh per this interval, so a flood of tokens with made-up `kid`s cannot
/// turn the gateway into a load generator against the IdP.
const JWKS_REFRESH_MIN_INTERVAL: Duration = Duration::from_secs(30);

/// How long a readiness probe of the IdP is reused.
const READY_PROBE_INTERVAL: Duration = Duration::from_secs(10);

impl OidcProvider {
    pub fn new(
        idp: &IdpConfig,
        cfg: &OidcIdp,
        public_base: &str,
        http: reqwest::Client,
        clock: SharedClock,
    ) -> Result<Self, OidcError> {
        let redirect = format!("{public_base}/oidc/{}/callback", idp.id);
        let redirect_uri = RedirectUrl::new(redirect)
            .map_err(|e| OidcError::Config(format!("redirect URI: {e}")))?;
        Ok(OidcProvider {
            id: idp.id.clone(),
            cfg: cfg.clone(),
            redirect_uri,
            http,
            clock,
            discovered: RwLock::new(None),
            last_jwks_refresh: Mutex::new(None),
            last_probe: Mutex::new(None),
        })
    }

    pub fn id(&self) -> &IdpId {
        &self.id
    }

    pub fn client_id(&self) -> &str {
        &self.cfg.client_id
    }

    pub fn issuer(&self) -> &str {
        &self.cfg.issuer
    }

    async fn discovered(&self) -> Result<Arc<Discovered>, OidcError> {
        if let Some(d) = self.discovered.read().await.as_ref() {
            return Ok(d.clone());
        }
        let fresh = Arc::new(self.discover().await?);
        *self.discovered.write().await = Some(fresh.clone());
        Ok(fresh)
    }

    async fn discover(&self) -> Result<Discovered, OidcError> {
        let err = |detail: String| OidcError::Discovery {
            issuer: self.cfg.issuer.clone(),
            detail,
        };
        let issuer = IssuerUrl::new(self.cfg.issuer.clone()).map_err(|e| err(e.to_string()))?;
        // discover_async also checks that the document's issuer equals the configured one.
        let metadata = Metadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| err(error_chain(&e)))?;
        let jwks = metadata.jwks().clone();
        let core = core_metadata(&metadata)?;
        Ok(Discovered {
            metadata,
            core,
            jwks,
            at: Instant::now(),
        })
    }

    /// How long ago the discovery document in use was fetched; `None` before the first fetch.
    pub async fn discovery_age(&self) -> Option<Duration> {
        self.discovered
            .read()
            .await
            .as_ref()
            .map(|d| d.at.elapsed())
    }

    /// Readiness: the provider's discovery document answers now (probed at most every
    /// [`READY_PROBE_INTERVAL`], so probes from an orchestrator do not load the IdP), and the
    /// metadata has been loaded. Discovery is cached for sign-ins, so this probe is what turns
    /// readiness red when the IdP goes away later.
    pub async fn check_ready(&self) -> Result<(), OidcError> {
        let cached = self.last_probe.lock().clone();
        let outcome = match cached {
            Some((at, outcome)) if at.elapsed() < READY_PROBE_INTERVAL => outcome,
            _ => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    self.cfg.issuer.trim_end_matches('/')
                );
                let outcome = match self.http.get(&url).send().await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(format!("discovery answered HTTP {}", r.status())),
                    Err(e) => Err(error_chain(&e)),
                };
                *self.last_probe.lock() = Some((Instant::now(), outcome.clone()));
                outcome
            }
        };
        outcome.map_err(|detail| OidcError::Discovery {
            issuer: self.cfg.issuer.clone(),
            detail,
        })?;
        self.discovered().await.map(|_| ())
    }

    /// Where RP-initiated logout sends the browser: `end_session_url` when configured (Access
    /// Manager tenants whose discovery does not advertise it), else the advertised endpoint.
    pub async fn end_session_url(&self) -> Option<url::Url> {
        if let Some(u) = &self.cfg.end_session_url {
            return Some(u.clone());
        }
        let advertised = self.end_session_endpoint().await?;
        url::Url::parse(&advertised).ok()
    }

    /// The end-session endpoint, when the provider advertises one.
    pub async fn end_session_endpoint(&self) -> Option<String> {
        let d = self.discovered().await.ok()?;
        d.metadata
            .additional_metadata()
            .end_session_endpoint
            .clone()
    }

    fn client(&self, d: &Discovered) -> Result<CoreClientFor, OidcError> {
        let secret = self
            .cfg
            .client_secret
            .as_ref()
            .map(|s| ClientSecret::new(s.expose().to_owned()));
        let auth = match self.cfg.auth_method {
            TokenAuthMethod::ClientSecretBasic => AuthType::BasicAuth,
            TokenAuthMethod::ClientSecretPost => AuthType::RequestBody,
        };
        Ok(CoreClient::from_provider_metadata(
            d.core.clone(),
            ClientId::new(self.cfg.client_id.clone()),
            secret,
        )
        .set_redirect_uri(self.redirect_uri.clone())
        .set_auth_type(auth))
    }

    /// Starts a sign-in: the authorization URL to send the browser to, and the state to keep.
    pub async fn begin(
        &self,
        return_to: LocalPath,
        acr_values: Option<&str>,
    ) -> Result<(String, PendingLogin), OidcError> {
        let d = self.discovered().await?;
        let client = self.client(&d)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut req = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for scope in self.cfg.scopes.iter().filter(|s| *s != "openid") {
            req = req.add_scope(Scope::new(scope.clone()));
        }
        if let Some(acr) = acr_values {
            req = req.add_auth_context_value(AuthenticationContextClass::new(acr.to_owned()));
        }
        let (url, state, nonce) = req.url();
        let pending = PendingLogin {
            idp: self.id.clone(),
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
            return_to,
            created_at: self.clock.now(),
        };
        Ok((url.to_string(), pending))
    }

    /// Completes a sign-in. The caller has already matched `params.state` to `pending` (the
    /// pending login was found in this browser's own session by that state).
    pub async fn complete(
        &self,
        pending: PendingLogin,
        params: &CallbackParams,
    ) -> Result<VerifiedClaims, OidcError> {
        if let Some(error) = &params.error {
            return Err(OidcError::ProviderError {
                error: error.clone(),
                description: params.error_description.clone(),
            });
        }
        let d = self.discovered().await?;
        // RFC 9207 section 2.4: "clients MUST compare the iss parameter ... to the issuer of the
        // authorization server where the authorization request was sent", and reject a response
        // without it when the metadata says the server sends it.
        match &params.iss {
            Some(iss) if iss != d.metadata.issuer().as_str() => {
                return Err(OidcError::IssuerMismatch {
                    got: iss.clone(),
                    expected: d.metadata.issuer().to_string(),
                });
            }
            Some(_) => {}
            None if d
                .metadata
                .additional_metadata()
                .authorization_response_iss_parameter_supported
                == Some(true) =>
            {
                return Err(OidcError::IssuerMissing);
            }
            None => {}
        }
        let code = params.code.clone().ok_or(OidcError::MissingCode)?;
        let client = self.client(&d)?;
        let token = client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|e| OidcError::Config(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier.clone()))
            .request_async(&self.http)
            .await
            .map_err(|e| match e {
                // The IdP could not be reached: a 503 for the user, an error (not a deny) in audit.
                openidconnect::RequestTokenError::Request(ref inner) => OidcError::Unreachable {
                    issuer: self.cfg.issuer.clone(),
                    detail: format!("token endpoint: {}", error_chain(inner)),
                },
                other => OidcError::TokenRequest(error_chain(&other)),
            })?;
        let id_token = token.id_token().ok_or(OidcError::NoIdToken)?;
        let nonce = Nonce::new(pending.nonce.clone());
        let (subject, mut claims, auth) = self.verify_id_token(&d, id_token, &nonce).await?;

        if self.cfg.userinfo
            && let Some(endpoint) = d.metadata.userinfo_endpoint()
        {
            let info = self
                .userinfo(endpoint.as_str(), token.access_token().secret())
                .await?;
            // OIDC Core 5.3.2: "The sub Claim in the UserInfo Response MUST be verified to exactly
            // match the sub Claim in the ID Token; if they do not match, the UserInfo Response
            // values MUST NOT be used."
            let info_sub = info.get("sub").and_then(Value::as_str).unwrap_or_default();
            if info_sub != subject {
                return Err(OidcError::UserinfoSubjectMismatch {
                    id_token: subject,
                    userinfo: info_sub.to_owned(),
                });
            }
            for (k, v) in info {
                claims.entry(k).or_insert(v);
            }
        }
        Ok(VerifiedClaims::new(self.id.clone(), subject, claims, auth)
            .with_id_token(id_token.to_string()))
    }

    fn verifier<'a>(&'a self, d: &Discovered) -> CoreIdTokenVerifier<'a> {
        let now = self.clock.now();
        let skew = self.cfg.clock_skew.as_secs() as i64;
        let algs: Vec<CoreJwsSigningAlgorithm> = self
            .cfg
            .id_token_algs
            .iter()
            .filter_map(|a| serde_json::from_value(Value::String(a.clone())).ok())
            .collect();
        // A public-client verifier never knows the client secret, so an HS256 token "signed" with
        // it cannot verify even if an allowlist mistake let HS256 through.
        CoreIdTokenVerifier::new_public_client(
            ClientId::new(self.cfg.client_id.clone()),
            d.metadata.issuer().clone(),
            d.jwks.clone(),
        )
        .set_allowed_algs(algs)
        // exp is checked against this time: shifting it back by the skew tolerates a fast IdP.
        .set_time_fn(move || chrono_from_unix(now - skew))
    }

    async fn verify_id_token(
        &self,
        d: &Discovered,
        id_token: &CoreIdToken,
        nonce: &Nonce,
    ) -> Result<(String, Map<String, Value>, AuthContext), OidcError> {
        let raw = id_token.to_string();
        if header_alg(&raw).as_deref() == Some("none") {
            return Err(OidcError::UnsignedIdToken);
        }
        let verified = {
            let verifier = self.verifier(d);
            id_token.claims(&verifier, nonce).cloned()
        };
        let claims = match verified {
            Ok(c) => c,
            Err(openidconnect::ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) => {
                // A kid we have not seen: the IdP may have rotated its keys. Refresh once.
                let refreshed = self.refresh_jwks(d).await?;
                let verifier = self.verifier(&refreshed);
                id_token
                    .claims(&verifier, nonce)
                    .cloned()
                    .map_err(|e| OidcError::IdTokenInvalid(e.to_string()))?
            }
            Err(e) => return Err(OidcError::IdTokenInvalid(e.to_string())),
        };
        let client_id = self.cfg.client_id.as_str();
        // OIDC Core 3.1.3.7 step 4/5: with several audiences azp should be present; when present it
        // MUST be this client. openidconnect leaves this check to the caller.
        let azp = claims.authorized_party().map(|a| a.to_string());
        if claims.audiences().len() > 1 && azp.is_none()
            || azp.as_deref().is_some_and(|a| a != client_id)
        {
            return Err(OidcError::AzpMismatch { got: azp });
        }
        let now = self.clock.now();
        let skew = self.cfg.clock_skew.as_secs() as i64;
        let iat = claims.issue_time().timestamp();
        if iat > now + skew {
            return Err(OidcError::IssuedInFuture { secs: iat - now });
        }
        let subject = claims.subject().to_string();
        // The signature covers the payload bytes, so the raw claims (custom and XPath-named ones
        // included) are as verified as the typed ones.
        let raw_claims = payload_claims(&raw).map_err(OidcError::IdTokenInvalid)?;
        let auth = AuthContext {
            auth_time: claims.auth_time().map(|t| t.timestamp()),
            acr: claims.auth_context_ref().map(|a| a.to_string()),
            amr: claims
                .auth_method_refs()
                .map(|m| m.iter().map(|x| x.to_string()).collect())
                .unwrap_or_default(),
            acr_implies: Vec::new(),
        };
        Ok((subject, raw_claims, auth))
    }

    /// OIDC Back-Channel Logout 1.0 section 2.6: a `logout_token` this IdP signed for this
    /// client, checked like an ID token (signature with the IdP's keys and an allowed asymmetric
    /// algorithm, iss, aud, iat, exp) plus the logout rules ([`logout_token::check_claims`]).
    /// The `jti` replay check (step 8) needs the shared store: the caller does it.
    pub async fn verify_logout_token(
        &self,
        raw: &str,
        max_age: i64,
    ) -> Result<logout_token::LogoutOrder, LogoutTokenError> {
        let parsed = logout_token::parse(raw)?;
        // 2. "Validate the Logout Token signature in the same way that an ID Token signature is
        //    validated": the algorithm allowlist first, then the IdP's keys (one rate-limited
        //    JWKS refresh for an unknown kid, as for ID tokens).
        logout_token::check_header(&parsed, &self.cfg.id_token_algs)?;
        let d = self
            .discovered()
            .await
            .map_err(|_| LogoutTokenError::KeysUnavailable)?;
        let d = match signature_check(&d.jwks, &parsed) {
            KeyCheck::Valid => d,
            KeyCheck::Invalid => return Err(LogoutTokenError::Signature),
            KeyCheck::NoKey => {
                let fresh = self
                    .refresh_jwks(&d)
                    .await
                    .map_err(|_| LogoutTokenError::Signature)?;
                if signature_check(&fresh.jwks, &parsed) != KeyCheck::Valid {
                    return Err(LogoutTokenError::Signature);
                }
                fresh
            }
        };
        // 3-7 on the verified claims.
        logout_token::check_claims(
            &parsed.claims,
            &logout_token::Expected {
                issuer: d.metadata.issuer().as_str(),
                client_id: &self.cfg.client_id,
                now: self.clock.now(),
                skew: self.cfg.clock_skew.as_secs() as i64,
                max_age,
            },
        )
    }

    async fn refresh_jwks(&self, d: &Discovered) -> Result<Arc<Discovered>, OidcError> {
        {
            let mut last = self.last_jwks_refresh.lock();
            if last.is_some_and(|t| t.elapsed() < JWKS_REFRESH_MIN_INTERVAL) {
                return Err(OidcError::IdTokenInvalid(
                    "the ID token's key id is not in the provider's key set".into(),
                ));
            }
            *last = Some(Instant::now());
        }
        let jwks = JsonWebKeySet::fetch_async(d.metadata.jwks_uri(), &self.http)
            .await
            .map_err(|e| OidcError::Discovery {
                issuer: self.cfg.issuer.clone(),
                detail: error_chain(&e),
            })?;
        // A JWKS refresh keeps the discovery document, and its age.
        let fresh = Arc::new(Discovered {
            metadata: d.metadata.clone(),
            core: d.core.clone(),
            jwks,
            at: d.at,
        });
        *self.discovered.write().await = Some(fresh.clone());
        Ok(fresh)
    }

    async fn userinfo(
        &self,
        endpoint: &str,
        access_token: &str,
    ) -> Result<Map<String, Value>, OidcError> {
        let resp = self
            .http
            .get(endpoint)
            .bearer_auth(access_token)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| OidcError::Unreachable {
                issuer: self.cfg.issuer.clone(),
                detail: format!("userinfo endpoint: {}", error_chain(&e)),
            })?;
        if !resp.status().is_success() {
            return Err(OidcError::Userinfo(format!("HTTP {}", resp.status())));
        }
        let is_json = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if !is_json {
            return Err(OidcError::Userinfo(
                "the userinfo response is not JSON (signed or encrypted userinfo is not supported; turn it off for this client)".into(),
            ));
        }
        resp.json::<Map<String, Value>>()
            .await
            .map_err(|e| OidcError::Userinfo(format!("invalid JSON: {e}")))
    }
}

#[derive(Debug, PartialEq, Eq)]
enum KeyCheck {
    Valid,
    /// No key of the set has the token's kid (or fits its algorithm): maybe a rotation.
    NoKey,
    Invalid,
}

/// Whether a key of `jwks` (the one named by the token's `kid`, or any when it names none)
/// verifies the token's signature with its header algorithm.
fn signature_check(
    jwks: &JsonWebKeySet<CoreJsonWebKey>,
    p: &logout_token::ParsedLogoutToken,
) -> KeyCheck {
    use openidconnect::JsonWebKey;
    let Ok(alg) = serde_json::from_value::<CoreJwsSigningAlgorithm>(Value::String(p.alg.clone()))
    else {
        return KeyCheck::Invalid;
    };
    let candidates: Vec<&CoreJsonWebKey> = jwks
        .keys()
        .iter()
        .filter(|k| match &p.kid {
            Some(kid) => k.key_id().is_some_and(|id| id.as_str() == kid),
            None => true,
        })
        .collect();
    if candidates.is_empty() {
        return KeyCheck::NoKey;
    }
    let valid = candidates.iter().any(|k| {
        k.verify_signature(&alg, p.signing_input.as_bytes(), &p.signature)
            .is_ok()
    });
    if valid {
        KeyCheck::Valid
    } else {
        KeyCheck::Invalid
    }
}

type CoreClientFor = openidconnect::Client<
    openidconnect::EmptyAdditionalClaims,
    CoreAuthDisplay,
    openidconnect::core::CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    openidconnect::core::CoreAuthPrompt,
    openidconnect::StandardErrorResponse<openidconnect::core::CoreErrorResponseType>,
    openidconnect::core::CoreTokenResponse,
    openidconnect::core::CoreTokenIntrospectionResponse,
    openidconnect::core::CoreRevocableToken,
    openidconnect::core::CoreRevocationErrorResponse,
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

/// The core client wants core metadata; ours differs only in the additional fields.
fn core_metadata(m: &Metadata) -> Result<openidconnect::core::CoreProviderMetadata, OidcError> {
    // Both types serialize to the same discovery document.
    serde_json::to_value(m)
        .and_then(serde_json::from_value)
        .map_err(|e| OidcError::Config(format!("provider metadata: {e}")))
}

fn chrono_from_unix(t: UnixTime) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(t, 0).unwrap_or_default()
}

fn header_alg(jwt: &str) -> Option<String> {
    let header = jwt.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.get("alg")?.as_str().map(str::to_owned)
}

fn payload_claims(jwt: &str) -> Result<Map<String, Value>, String> {
    let payload = jwt.split('.').nth(1).ok_or("malformed ID token")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|e| format!("ID token payload: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("ID token payload: {e}"))
}

/// An error and its sources on one line, for messages an admin can act on.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        source = s.source();
    }
    out
}

impl FromStr for TokenAuthMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "client_secret_basic" => Ok(TokenAuthMethod::ClientSecretBasic),
            "client_secret_post" => Ok(TokenAuthMethod::ClientSecretPost),
            other => Err(format!("unknown token auth method {other}")),
        }
    }
}
