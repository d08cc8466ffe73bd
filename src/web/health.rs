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

/// `GET /readyz`: 200 when every check passes, 503 otherwise; the body lists each check. The
/// webhooks and the audit database only ever warn (sign-ins still work without them).
pub async fn readyz(State(state): State<AppState>) -> Response {
    let mut r = Readiness::default();
    session_store(&state, &mut r).await;
    oidc_idps(&state, &mut r).await;
    saml_idps(&state, &mut r);
    webhooks(&state, &mut r).await;
    audit_database(&state, &mut r);
    r.into_response()
}

/// The checks so far, and whether every one passed.
struct Readiness {
    checks: serde_json::Map<String, serde_json::Value>,
    ready: bool,
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness {
            checks: serde_json::Map::new(),
            ready: true,
        }
    }
}

impl Readiness {
    fn pass(&mut self, name: String, check: serde_json::Value) {
        self.checks.insert(name, check);
    }

    fn fail(&mut self, name: String, check: serde_json::Value) {
        self.ready = false;
        self.checks.insert(name, check);
    }
}

impl IntoResponse for Readiness {
    fn into_response(self) -> Response {
        let status = if self.ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (
            status,
            Json(json!({"ready": self.ready, "checks": self.checks})),
        )
            .into_response()
    }
}

async fn session_store(state: &AppState, r: &mut Readiness) {
    let kind = state.sessions.kind();
    match state.sessions.check().await {
        Ok(()) => r.pass("session_store".into(), json!({"ok": true, "kind": kind})),
        Err(e) => r.fail(
            "session_store".into(),
            json!({"ok": false, "kind": kind, "error": e}),
        ),
    }
}

async fn oidc_idps(state: &AppState, r: &mut Readiness) {
    for (id, p) in state.providers.iter() {
        match p.check_ready().await {
            Ok(()) => r.pass(format!("idp:{id}"), json!({"ok": true})),
            Err(e) => r.fail(
                format!("idp:{id}"),
                json!({"ok": false, "error": e.to_string()}),
            ),
        }
    }
}

/// A SAML IdP whose metadata never loaded (metadata_url unreachable, unsigned or refused)
/// cannot sign anyone in; once loaded, the last good metadata stays in use.
fn saml_idps(state: &AppState, r: &mut Readiness) {
    for (id, p) in state.saml.iter().flat_map(|s| s.providers.iter()) {
        match p.check_ready() {
            Ok(()) => r.pass(format!("idp:{id}"), json!({"ok": true})),
            Err(e) => r.fail(format!("idp:{id}"), json!({"ok": false, "error": e})),
        }
    }
}

/// A hook BigCommerce deactivated is a warning, not unreadiness: sign-ins still work, but
/// BigCommerce's side of the audit trail has gone quiet until `storegate webhooks sync`.
async fn webhooks(state: &AppState, r: &mut Readiness) {
    let Some(hooks) = &state.webhooks else {
        return;
    };
    for (account, result) in hooks.inactive_hooks(state).await {
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
        r.pass(format!("webhooks:{account}"), check);
    }
}

/// Events waiting in the spool are a warning: sign-ins go on, the central table lags.
fn audit_database(state: &AppState, r: &mut Readiness) {
    let Some(sink) = state.audit.postgres_stats() else {
        return;
    };
    let check = if sink.spooling.load(std::sync::atomic::Ordering::Relaxed) {
        json!({"ok": true, "warning": "the audit database cannot be reached; events are spooled locally and will be replayed"})
    } else {
        json!({"ok": true})
    };
    r.pass("audit_database".into(), check);
}
