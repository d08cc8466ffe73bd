//! The extractor that requires a sign-in, and loading the signed-in state with its lifetimes
//! enforced. What the session holds is `session::browser`.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use tower_sessions::Session;

use super::AppState;
use super::errors::AppError;
use super::extract::RequestId;
use crate::federation::oidc::PendingLogin;
use crate::redirect::urlencode;
use crate::session::browser::{PENDING_KEY, SignedInState, read_signed_in, write_signed_in};

/// `last_seen` is rewritten at most this often, so a launch does not always cost a session write.
const SEEN_GRANULARITY: i64 = 60;

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
    let found = read_signed_in(session)
        .await
        .map_err(|_| AppError::session_store(reference))?;
    let Some(mut auth) = found else {
        return Ok(Err(NoSignIn::Absent));
    };
    let now = state.clock.now();
    let s = &state.config.session;
    let absolute_over = now - auth.identity.signed_in_at >= s.absolute_timeout.as_secs() as i64;
    let idle_over = now - auth.last_seen >= s.idle_timeout.as_secs() as i64;
    let ended_by_idp =
        crate::flows::sign_out::ended_by_idp(&state.gateway(), session, auth.identity.signed_in_at)
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
        write_signed_in(session, &auth)
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
