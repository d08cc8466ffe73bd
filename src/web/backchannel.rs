//! `POST /oidc/{idp}/backchannel-logout`: OIDC Back-Channel Logout 1.0, section 2.8 answers. The
//! journey is `flows::idp_logout`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::extract::RequestId;
use super::{AppState, no_store};
use crate::flows::idp_logout::{self, BackChannelRefused};

pub async fn backchannel_logout(
    State(state): State<AppState>,
    RequestId(rid): RequestId,
    Path(idp): Path<String>,
    body: Bytes,
) -> Response {
    // application/x-www-form-urlencoded; read by hand so every malformed body still gets the
    // spec's JSON error rather than a framework rejection.
    let token = url::form_urlencoded::parse(&body)
        .find(|(k, _)| k == "logout_token")
        .map(|(_, v)| v.into_owned());
    match idp_logout::back_channel(&state.gateway(), &rid, &idp, token.as_deref()).await {
        // 2.8: "If the logout succeeded, the RP MUST respond with HTTP 200 OK."
        Ok(_) => no_store(StatusCode::OK.into_response()),
        // "If the request was invalid or the logout failed, the RP MUST respond with 400 Bad
        // Request", optionally with an error in the JSON body (RFC 6749 5.2 shape).
        Err(e) => {
            let (error, description) = match &e {
                BackChannelRefused::UnknownIdp => ("invalid_request", "unknown identity provider"),
                BackChannelRefused::Token(_) => ("invalid_request", "the logout token was refused"),
                BackChannelRefused::SessionStore => (
                    "temporarily_unavailable",
                    "the sessions could not be ended; retry",
                ),
            };
            let mut resp = (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": error, "error_description": description})),
            )
                .into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            no_store(resp)
        }
    }
}
