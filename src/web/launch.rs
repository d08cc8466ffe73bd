//! `GET /stores/{store}/launch?to=/path`: the journey is `flows::launch`; this handler unpacks
//! the request, runs it, and answers.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use super::answer::{Answer, FlowFailed};
use super::auth::SignedIn;
use super::extract::ClientIp;
use crate::flows::launch::{self, LaunchRequest};

#[derive(Debug, Deserialize)]
pub struct LaunchQuery {
    to: Option<String>,
}

pub async fn launch(
    State(state): State<AppState>,
    Path(store_id): Path<String>,
    Query(q): Query<LaunchQuery>,
    ClientIp(client_ip): ClientIp,
    signed_in: SignedIn,
) -> Result<Response, FlowFailed> {
    let SignedIn {
        session,
        mut auth,
        request_id: rid,
    } = signed_in;
    let request = LaunchRequest {
        store_id: &store_id,
        to: q.to.as_deref(),
        client_ip,
        request_id: &rid,
    };
    match launch::launch(&state.gateway(), &session, &mut auth, request).await {
        Ok(launched) => {
            super::portal::remember_opened(&state, &auth.identity, &store_id);
            Ok(Answer::Launched(launched).into_response())
        }
        Err(e) => Err(FlowFailed::new(e, &state, &rid)),
    }
}
