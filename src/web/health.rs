//! `/healthz` (the process answers) and `/readyz` (it can serve sign-ins: session store, every
//! OIDC IdP's discovery, every SAML IdP's metadata).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;

pub async fn healthz() -> Response {
    (StatusCode::OK, "ok\n").into_response()
}

/// `GET /metrics`: Prometheus text format. Carries no secret or per-user value; still, expose it
/// to the monitoring network only (see docs/operations.md).
pub async fn metrics(State(state): State<AppState>) -> Response {
    state.metrics.refresh().await;
    match state.metrics.render() {
        Ok(mut text) => {
            if let Some(sink) = state.audit.postgres_stats() {
                text.push_str(&sink.prometheus());
            }
            (
                StatusCode::OK,
                [(
                    axum::http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                text,
            )
                .into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot render the metrics");
            (StatusCode::INTERNAL_SERVER_ERROR, "metrics unavailable\n").into_response()
        }
    }
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    let mut checks = serde_json::Map::new();
    let mut ready = true;
    match state.sessions.check().await {
        Ok(()) => {
            checks.insert(
                "session_store".into(),
                json!({"ok": true, "kind": state.sessions.kind()}),
            );
        }
        Err(e) => {
            ready = false;
            checks.insert(
                "session_store".into(),
                json!({"ok": false, "kind": state.sessions.kind(), "error": e}),
            );
        }
    }
    for (id, p) in state.providers.iter() {
        match p.check_ready().await {
            Ok(()) => {
                checks.insert(format!("idp:{id}"), json!({"ok": true}));
            }
            Err(e) => {
                ready = false;
                checks.insert(
                    format!("idp:{id}"),
                    json!({"ok": false, "error": e.to_string()}),
                );
            }
        }
    }
    // A SAML IdP whose metadata never loaded (metadata_url unreachable, unsigned or refused)
    // cannot sign anyone in; once loaded, the last good metadata stays in use.
    for (id, p) in state.saml.iter().flat_map(|s| s.providers.iter()) {
        match p.check_ready() {
            Ok(()) => {
                checks.insert(format!("idp:{id}"), json!({"ok": true}));
            }
            Err(e) => {
                ready = false;
                checks.insert(format!("idp:{id}"), json!({"ok": false, "error": e}));
            }
        }
    }
    // A hook BigCommerce deactivated is a warning, not unreadiness: sign-ins still work, but
    // BigCommerce's side of the audit trail has gone quiet until `storegate webhooks sync`.
    if let Some(hooks) = &state.webhooks {
        for (account, result) in hooks.inactive_hooks(&state).await {
            let check = match result {
                Ok(inactive) if inactive.is_empty() => json!({"ok": true}),
                Ok(inactive) => json!({
                    "ok": true,
                    "warning": format!(
                        "BigCommerce deactivated {}: external changes are not reported; run `storegate webhooks sync`",
                        inactive.join(", ")
                    ),
                }),
                Err(e) => json!({"ok": true, "warning": format!("cannot list the hooks: {e}")}),
            };
            checks.insert(format!("webhooks:{account}"), check);
        }
    }
    // Events waiting in the spool are a warning: sign-ins go on, the central table lags.
    if let Some(sink) = state.audit.postgres_stats() {
        let spooling = sink.spooling.load(std::sync::atomic::Ordering::Relaxed);
        let check = if spooling {
            json!({"ok": true, "warning": "the audit database cannot be reached; events are spooled locally and will be replayed"})
        } else {
            json!({"ok": true})
        };
        checks.insert("audit_database".into(), check);
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({"ready": ready, "checks": checks}))).into_response()
}
