//! The extractor that requires a sign-in, and loading the signed-in state with its lifetimes
//! enforced. What the session holds is `session::browser`.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use tower_sessions::Session;

use super::AppState;
use super::errors::AppError;
use super::extract::RequestId;
use crate::federation::oidc::PendingLogin;
use crate::redirect::urlencode;
use crate::session::browser::{PENDING_KEY, SignedInState};

pub use crate::flows::signed_in::NoSignIn;

/// Loads the signed-in state (`flows::signed_in::load`), a store failure as the error page.
pub async fn load(
    session: &Session,
    state: &AppState,
    reference: &str,
) -> Result<Result<Arc<SignedInState>, NoSignIn>, AppError> {
    crate::flows::signed_in::load(&state.gateway(), session)
        .await
        .map_err(|_| AppError::session_store(reference))
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
    /// Shared with the decode cache: `Arc::make_mut` to change it.
    pub auth: Arc<SignedInState>,
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
