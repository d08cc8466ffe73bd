//! `POST /webhooks/bigcommerce/{account}` (issue 13): checks the secret header in constant time,
//! drops retries already seen, answers at once, and correlates the event with storegate's own
//! recent changes in the background: what storegate did not do becomes an `external_change`
//! audit event (and, with `repair_drift`, a reconcile pass is requested).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;

use super::AppState;
use crate::audit::{AuditEvent, EventKind, Outcome};
use crate::bigcommerce::webhooks::sync::{self, HooksClient};
use crate::bigcommerce::webhooks::{
    Delivery, OwnChanges, SECRET_HEADER, SETTLE, Subject, classify,
};
use crate::config::BigCommerceAccount;

/// What the receiver shares: the own-change record, a `/v3/hooks` client per account with a
/// webhook secret, and the last look at BigCommerce's hooks (for readiness).
pub struct WebhookState {
    pub own: OwnChanges,
    clients: HashMap<String, Arc<HooksClient>>,
    /// Account -> (when checked, ids and scopes of our hooks BigCommerce deactivated).
    inactive: Mutex<HashMap<String, (std::time::Instant, Vec<String>)>>,
    /// Wakes the reconcile schedule (with `repair_drift`): a pass runs soon after an external change.
    pub reconcile_wake: Arc<tokio::sync::Notify>,
}

/// How often readiness asks BigCommerce about the hooks (each look is one API call per account).
const INACTIVE_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(300);

impl WebhookState {
    pub fn build(config: &crate::config::Config, own: OwnChanges) -> anyhow::Result<Self> {
        let mut clients = HashMap::new();
        for a in &config.bigcommerce {
            if a.webhook_secret.is_some() {
                clients.insert(a.id.clone(), Arc::new(HooksClient::new(a)?));
            }
        }
        Ok(WebhookState {
            own,
            clients,
            inactive: Mutex::new(HashMap::new()),
            reconcile_wake: Arc::new(tokio::sync::Notify::new()),
        })
    }

    /// Readiness warnings: per account with webhooks, our hooks BigCommerce deactivated, as of a
    /// look at most [`INACTIVE_CHECK_EVERY`] old. `Err` when BigCommerce could not be asked.
    pub async fn inactive_hooks(
        &self,
        state: &AppState,
    ) -> Vec<(String, Result<Vec<String>, String>)> {
        let mut out = Vec::new();
        for account in &state.config.bigcommerce {
            let Some(client) = self.clients.get(&account.id) else {
                continue;
            };
            let cached = self
                .inactive
                .lock()
                .get(&account.id)
                .filter(|(at, _)| at.elapsed() < INACTIVE_CHECK_EVERY)
                .map(|(_, v)| v.clone());
            let result = match cached {
                Some(v) => Ok(v),
                None => {
                    let dest = sync::destination(&state.config, account);
                    match client.list().await {
                        Ok(hooks) => {
                            let v: Vec<String> = hooks
                                .iter()
                                .filter(|h| h.destination == dest && !h.is_active)
                                .map(|h| format!("{} (hook {})", h.scope, h.id))
                                .collect();
                            state.metrics.set_inactive_webhooks(&account.id, v.len());
                            self.inactive
                                .lock()
                                .insert(account.id.clone(), (std::time::Instant::now(), v.clone()));
                            Ok(v)
                        }
                        Err(e) => Err(e),
                    }
                }
            };
            out.push((account.id.clone(), result));
        }
        out
    }
}

/// Constant time: see [`crate::secret::ct_eq`] (SHA-256 both sides first, so the length of the
/// secret leaks nothing either).
fn secret_matches(headers: &HeaderMap, want: &str) -> Result<(), &'static str> {
    let got = headers
        .get(SECRET_HEADER)
        .ok_or("webhook_secret_missing")?
        .to_str()
        .map_err(|_| "webhook_secret_invalid")?;
    if crate::secret::ct_eq(got, want) {
        Ok(())
    } else {
        Err("webhook_secret_invalid")
    }
}

fn refuse(
    state: &AppState,
    rid: &str,
    account: &str,
    status: StatusCode,
    reason: &str,
    detail: String,
) -> Response {
    let mut ev = AuditEvent::new(state.clock.now(), rid, EventKind::Webhook, Outcome::Deny);
    ev.actor = Some("bigcommerce:webhook".into());
    ev.store = Some(account.to_owned());
    ev.reason = Some(reason.to_owned());
    ev.detail = Some(detail);
    state.audit.record(ev);
    (status, format!("{reason}\n")).into_response()
}

fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

pub async fn receive(
    State(state): State<AppState>,
    Path(account_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let rid = request_id(&headers);
    let (Some(hooks), Some(account)) = (
        state.webhooks.as_ref(),
        state
            .config
            .account(&account_id)
            .filter(|a| a.webhook_secret.is_some()),
    ) else {
        return (StatusCode::NOT_FOUND, "no webhooks for this account\n").into_response();
    };
    let Some(secret) = &account.webhook_secret else {
        return (StatusCode::NOT_FOUND, "no webhooks for this account\n").into_response();
    };
    if let Err(reason) = secret_matches(&headers, secret.expose()) {
        state.metrics.observe_webhook(&account.id, "refused");
        tracing::warn!(account = %account.id, reason, "webhook refused");
        return refuse(
            &state,
            &rid,
            &account.id,
            StatusCode::UNAUTHORIZED,
            reason,
            format!("a webhook delivery without the right {SECRET_HEADER} header was refused"),
        );
    }
    let classified = match classify(&account.id, &account.store_hash, &body) {
        Ok(c) => c,
        Err(r) => {
            state.metrics.observe_webhook(&account.id, "invalid");
            let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST);
            return refuse(&state, &rid, &account.id, status, r.reason, r.detail);
        }
    };
    match hooks.own.first_delivery(&classified.dedup_key).await {
        Ok(true) => {}
        Ok(false) => {
            state.metrics.observe_webhook(&account.id, "duplicate");
            return (StatusCode::OK, "duplicate\n").into_response();
        }
        Err(e) => {
            // Without the de-duplication record a retry could become a second event: let
            // BigCommerce retry later instead.
            tracing::error!(error = %e, "webhook: the one-time store failed");
            return (StatusCode::SERVICE_UNAVAILABLE, "retry later\n").into_response();
        }
    }
    let Some(subject) = classified.subject else {
        state.metrics.observe_webhook(&account.id, "ignored");
        return (StatusCode::OK, "ignored\n").into_response();
    };
    // Answer BigCommerce now; correlating may wait for our own write to be recorded.
    let bg = state.clone();
    let account = account.clone();
    let delivery = classified.delivery;
    tokio::spawn(async move { correlate(bg, account, delivery, subject, rid).await });
    (StatusCode::OK, "accepted\n").into_response()
}

async fn correlate(
    state: AppState,
    account: BigCommerceAccount,
    delivery: Delivery,
    subject: Subject,
    rid: String,
) {
    let Some(hooks) = state.webhooks.as_ref() else {
        return;
    };
    if hooks
        .own
        .is_own(&account.store_hash, &subject, delivery.created_at)
        .await
        .unwrap_or(false)
    {
        state.metrics.observe_webhook(&account.id, "own");
        return;
    }
    match hooks.own.open_window(&account.store_hash, &subject).await {
        Ok(true) => {}
        Ok(false) => {
            // Another delivery about the same subject is already being looked at.
            state.metrics.observe_webhook(&account.id, "coalesced");
            return;
        }
        Err(e) => tracing::warn!(error = %e, "webhook: cannot open the coalescing window"),
    }
    tokio::time::sleep(SETTLE).await;
    match hooks
        .own
        .is_own(&account.store_hash, &subject, delivery.created_at)
        .await
    {
        Ok(true) => {
            state.metrics.observe_webhook(&account.id, "own");
            return;
        }
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(error = %e, "webhook: cannot read the own-change record; reporting the change as external")
        }
    }
    let mut ev = AuditEvent::new(
        state.clock.now(),
        &rid,
        EventKind::ExternalChange,
        Outcome::Allow,
    );
    ev.actor = Some("bigcommerce".into());
    ev.store = Some(account.id.clone());
    ev.reason = Some(delivery.reason_code());
    ev.detail = Some(format!(
        "BigCommerce reported {} at {} (store time); storegate made no change to it then",
        delivery.scope, delivery.created_at
    ));
    match subject {
        Subject::Customer { id, deleted } => {
            ev.customer_id = Some(id);
            ev.target = Some(format!("customer {id} on {}", account.id));
            if !deleted && let Some(client) = hooks.clients.get(&account.id) {
                match client.customer(id).await {
                    Ok(Some((c, bound))) => {
                        ev.email = Some(c.email.clone());
                        ev.subject = bound;
                        ev.after = serde_json::to_value(&c).ok();
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "webhook: cannot read the changed customer")
                    }
                }
            }
        }
        Subject::CompanyUser { id } => {
            ev.target = Some(format!("company user {id} on {}", account.id));
        }
    }
    state.audit.record(ev);
    state.metrics.observe_webhook(&account.id, "external");
    if state.config.provisioning.repair_drift {
        hooks.reconcile_wake.notify_one();
    }
}
