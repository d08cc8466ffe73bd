//! What the browser's server-side session holds, and the extractor that requires a sign-in.

use std::collections::BTreeMap;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};
use tower_sessions::Session;

use super::AppState;
use super::errors::AppError;
use super::extract::RequestId;
use crate::clock::UnixTime;
use crate::federation::oidc::PendingLogin;
use crate::identity::Identity;

pub const AUTH_KEY: &str = "auth";
pub const PENDING_KEY: &str = "pending";
/// Logins a browser may have in flight at once (several tabs). Oldest dropped first, so state
/// never piles up (mod_auth_openidc's state cookies did).
pub const MAX_PENDING: usize = 5;
/// A login not completed within this many seconds is forgotten.
pub const PENDING_TTL: i64 = 600;
/// `last_seen` is rewritten at most this often, so a launch does not always cost a session write.
const SEEN_GRANULARITY: i64 = 60;

/// A launch that sent the browser back to the IdP (step-up, or a fresh sign-in for a grant with a
/// maximum session age), so that a second refusal shows a page instead of a redirect loop.
pub const STEP_UP_KEY: &str = "step_up";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepUpAttempt {
    /// The launch URL the sign-in returns to.
    pub return_to: String,
    pub at: UnixTime,
}

/// The signed-in state of one browser.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignedInState {
    pub identity: Identity,
    /// Per-session token for state-changing forms (logout).
    pub csrf: String,
    pub last_seen: UnixTime,
    /// BigCommerce customer ids already ensured, keyed by account id and channel set, so a
    /// repeated launch makes no API call.
    #[serde(default)]
    pub customers: BTreeMap<String, u64>,
}

/// Why there is no usable sign-in.
pub enum NoSignIn {
    Absent,
    Expired,
}

/// Loads the signed-in state, enforcing the idle and absolute lifetimes with the gateway's clock.
pub async fn load(
    session: &Session,
    state: &AppState,
    reference: &str,
) -> Result<Result<SignedInState, NoSignIn>, AppError> {
    let found: Option<SignedInState> = session
        .get(AUTH_KEY)
        .await
        .map_err(|_| AppError::session_store(reference))?;
    let Some(mut auth) = found else {
        return Ok(Err(NoSignIn::Absent));
    };
    let now = state.clock.now();
    let s = &state.config.session;
    let absolute_over = now - auth.identity.signed_in_at >= s.absolute_timeout.as_secs() as i64;
    let idle_over = now - auth.last_seen >= s.idle_timeout.as_secs() as i64;
    let ended_by_idp = super::saml::ended_by_idp(state, session, auth.identity.signed_in_at)
        .await
        .map_err(|_| AppError::session_store(reference))?;
    if absolute_over || idle_over || ended_by_idp {
        session
            .flush()
            .await
            .map_err(|_| AppError::session_store(reference))?;
        return Ok(Err(NoSignIn::Expired));
    }
    if now - auth.last_seen >= SEEN_GRANULARITY {
        auth.last_seen = now;
        session
            .insert(AUTH_KEY, &auth)
            .await
            .map_err(|_| AppError::session_store(reference))?;
    }
    Ok(Ok(auth))
}

pub async fn pending_logins(
    session: &Session,
    reference: &str,
) -> Result<Vec<PendingLogin>, AppError> {
    session
        .get::<Vec<PendingLogin>>(PENDING_KEY)
        .await
        .map(Option::unwrap_or_default)
        .map_err(|_| AppError::session_store(reference))
}

/// A page that needs a signed-in user: without one the browser is sent to sign in and brought
/// back here afterwards.
pub struct SignedIn {
    pub session: Session,
    pub auth: SignedInState,
    pub request_id: String,
}

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let RequestId(request_id) = RequestId::from_request_parts(parts, state)
            .await
            .map_err(|e| match e {})?;
        let session = Session::from_request_parts(parts, state)
            .await
            .map_err(|_| AppError::session_store(&request_id).into_response())?;
        match load(&session, state, &request_id).await {
            Ok(Ok(auth)) => Ok(SignedIn {
                session,
                auth,
                request_id,
            }),
            Ok(Err(_)) => {
                let here = parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/");
                let target = if here == "/" {
                    "/login".to_owned()
                } else {
                    format!("/login?return_to={}", urlencode(here))
                };
                Err(Redirect::to(&target).into_response())
            }
            Err(e) => Err(e.into_response()),
        }
    }
}

pub fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
