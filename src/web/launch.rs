//! `GET /stores/{store}/launch?to=/path` and `GET /control-panel/{account}`: the journeys are
//! `flows::launch` and `flows::control_panel`; these handlers unpack the request, run it, and
//! answer.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use super::answer::{Answer, FlowFailed};
use super::auth::SignedIn;
use super::extract::ClientIp;
use crate::flows::control_panel;
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

/// The portal's "Control panel" entry of one `[[bigcommerce]]` account (store hash).
pub async fn control_panel(
    State(state): State<AppState>,
    Path(account): Path<String>,
    signed_in: SignedIn,
) -> Result<Response, FlowFailed> {
    let rid = signed_in.request_id;
    match control_panel::open(&state.gateway(), &signed_in.auth.identity, &account, &rid).await {
        Ok(opened) => Ok(Answer::ControlPanel(opened).into_response()),
        Err(e) => Err(FlowFailed::new(e, &state, &rid)),
    }
}
