//! `POST /webhooks/bigcommerce/{account}` (issue 13): checks the secret header in constant time,
//! drops retries already seen, answers at once, and correlates the event with storegate's own
//! recent changes in the background: what storegate did not do becomes an `external_change`
//! audit event (and, with `repair_drift`, a reconcile pass is requested); the echo of its own
//! change becomes a `webhook_echo` event under the request id of the request that made it.

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
    Classified, Delivery, OwnChanges, OwnWrite, SECRET_HEADER, SETTLE, Subject,
    classify as classify_body,
};
use crate::clock::UnixTime;
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
    pub fn build(
        config: &crate::config::Config,
        own: OwnChanges,
    ) -> Result<Self, crate::bigcommerce::api::AccountError> {
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
) -> Early {
    let mut ev = AuditEvent::new(state.clock.now(), rid, EventKind::Webhook, Outcome::Deny);
    ev.actor = Some("bigcommerce:webhook".into());
    ev.store = Some(account.to_owned());
    ev.reason = Some(reason.to_owned());
    ev.detail = Some(detail);
    state.audit.record(ev);
    (status, format!("{reason}\n"))
}

/// A step's early answer to BigCommerce: the status and a one-line body.
type Early = (StatusCode, String);

fn early(status: StatusCode, text: &str) -> Early {
    (status, format!("{text}\n"))
}

fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// `POST /webhooks/bigcommerce/{account}`: the steps below in order; any of them may answer.
pub async fn receive(
    State(state): State<AppState>,
    Path(account_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let rid = request_id(&headers);
    let Some((hooks, account)) = receiver(&state, &account_id) else {
        return (StatusCode::NOT_FOUND, "no webhooks for this account\n").into_response();
    };
    let checked = authenticate(&state, &rid, account, &headers)
        .and_then(|()| parse(&state, &rid, account, &body));
    let classified = match checked {
        Ok(c) => c,
        Err(refused) => return refused.into_response(),
    };
    if let Err(answer) = deduplicate(&state, hooks, account, &classified.dedup_key).await {
        return answer.into_response();
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

/// The account's receiver: only an account with a `webhook_secret` has one.
fn receiver<'a>(
    state: &'a AppState,
    account_id: &str,
) -> Option<(&'a WebhookState, &'a BigCommerceAccount)> {
    let hooks = state.webhooks.as_deref()?;
    let account = state
        .config
        .account(account_id)
        .filter(|a| a.webhook_secret.is_some())?;
    Some((hooks, account))
}

/// Step 1: the secret header, in constant time; a refusal is a 401 and an audit event.
fn authenticate(
    state: &AppState,
    rid: &str,
    account: &BigCommerceAccount,
    headers: &HeaderMap,
) -> Result<(), Early> {
    let Some(secret) = &account.webhook_secret else {
        return Err(early(StatusCode::NOT_FOUND, "no webhooks for this account"));
    };
    secret_matches(headers, secret.expose()).map_err(|reason| {
        state.metrics.observe_webhook(&account.id, "refused");
        tracing::warn!(account = %account.id, reason, "webhook refused");
        refuse(
            state,
            rid,
            &account.id,
            StatusCode::UNAUTHORIZED,
            reason,
            format!("a webhook delivery without the right {SECRET_HEADER} header was refused"),
        )
    })
}

/// Step 2: the body, as a BigCommerce delivery from this account's store (the pure
/// [`classify_body`], which the `webhook_payload` fuzz target runs too); a refusal is audited.
fn parse(
    state: &AppState,
    rid: &str,
    account: &BigCommerceAccount,
    body: &[u8],
) -> Result<Classified, Early> {
    classify_body(&account.id, &account.store_hash, body).map_err(|r| {
        state.metrics.observe_webhook(&account.id, "invalid");
        let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST);
        refuse(state, rid, &account.id, status, r.reason, r.detail)
    })
}

/// Step 3: a retry BigCommerce sends again is answered `duplicate` and goes no further.
async fn deduplicate(
    state: &AppState,
    hooks: &WebhookState,
    account: &BigCommerceAccount,
    dedup_key: &str,
) -> Result<(), Early> {
    match hooks.own.first_delivery(dedup_key).await {
        Ok(true) => Ok(()),
        Ok(false) => {
            state.metrics.observe_webhook(&account.id, "duplicate");
            Err(early(StatusCode::OK, "duplicate"))
        }
        Err(e) => {
            // Without the de-duplication record a retry could become a second event: let
            // BigCommerce retry later instead.
            tracing::error!(error = %e, "webhook: the one-time store failed");
            Err(early(StatusCode::SERVICE_UNAVAILABLE, "retry later"))
        }
    }
}

/// What a delivery turned out to be.
#[derive(Debug)]
enum Verdict {
    /// The echo of this recorded write of ours.
    Own(OwnWrite),
    /// Folded into another delivery about the same subject being looked at.
    Coalesced,
    /// Nothing we did.
    External,
}

/// Step 4 (in the background): ours, or not. A delivery that is not ours yet waits
/// [`SETTLE`] for our write to be recorded (its answer may come after BigCommerce's hook).
async fn classify(
    own: &OwnChanges,
    store_hash: &str,
    delivery: &Delivery,
    subject: &Subject,
) -> Verdict {
    if let Ok(Some(write)) = own
        .own_write(store_hash, subject, delivery.created_at)
        .await
    {
        return Verdict::Own(write);
    }
    match own.open_window(store_hash, subject).await {
        Ok(true) => {}
        Ok(false) => return Verdict::Coalesced,
        Err(e) => tracing::warn!(error = %e, "webhook: cannot open the coalescing window"),
    }
    tokio::time::sleep(SETTLE).await;
    match own
        .own_write(store_hash, subject, delivery.created_at)
        .await
    {
        Ok(Some(write)) => Verdict::Own(write),
        Ok(None) => Verdict::External,
        Err(e) => {
            tracing::warn!(error = %e, "webhook: cannot read the own-change record; reporting the change as external");
            Verdict::External
        }
    }
}

/// Steps 4 and 5: classify, then audit (and, for an external change with `repair_drift`, wake
/// the reconciler).
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
    match classify(&hooks.own, &account.store_hash, &delivery, &subject).await {
        Verdict::Own(write) => {
            let now = state.clock.now();
            let ev = echo_event(now, &account.id, &delivery, &subject, &write, &rid);
            state.audit.record(ev);
            state.metrics.observe_webhook(&account.id, "own");
        }
        Verdict::Coalesced => state.metrics.observe_webhook(&account.id, "coalesced"),
        Verdict::External => {
            let ev = external_event(&state, hooks, &account, &delivery, subject, &rid).await;
            state.audit.record(ev);
            state.metrics.observe_webhook(&account.id, "external");
            if state.config.provisioning.repair_drift {
                hooks.reconcile_wake.notify_one();
            }
        }
    }
}

/// Where a delivery's subject is, for `target`.
fn target(account_id: &str, subject: &Subject) -> String {
    match subject {
        Subject::Customer { id, .. } => format!("customer {id} on {account_id}"),
        Subject::CompanyUser { id } => format!("company user {id} on {account_id}"),
    }
}

/// The `webhook_echo` event: under the request id of the request that made the change (the
/// webhook's own when the write was recorded outside a request), so the launch, its change
/// and this echo share one `request_id`.
fn echo_event(
    now: UnixTime,
    account_id: &str,
    delivery: &Delivery,
    subject: &Subject,
    write: &OwnWrite,
    webhook_rid: &str,
) -> AuditEvent {
    let rid = write.request_id.as_deref().unwrap_or(webhook_rid);
    let mut ev = AuditEvent::new(now, rid, EventKind::WebhookEcho, Outcome::Allow);
    ev.actor = Some("bigcommerce".into());
    ev.store = Some(account_id.to_owned());
    ev.reason = Some(delivery.reason_code());
    ev.subject = write.subject.clone();
    ev.target = Some(target(account_id, subject));
    if let Subject::Customer { id, .. } = subject {
        ev.customer_id = Some(*id);
    }
    let by = match &write.request_id {
        Some(r) => format!("request {r}"),
        None => "the reconciler".to_owned(),
    };
    ev.detail = Some(format!(
        "own change confirmed: BigCommerce reported {} at {} (store time), storegate's write by {by} at {}; webhook request {webhook_rid}",
        delivery.scope, delivery.created_at, write.at
    ));
    ev
}

/// The `external_change` event, with the customer as BigCommerce has it now (its email and
/// bound subject) unless it was deleted.
async fn external_event(
    state: &AppState,
    hooks: &WebhookState,
    account: &BigCommerceAccount,
    delivery: &Delivery,
    subject: Subject,
    rid: &str,
) -> AuditEvent {
    let mut ev = AuditEvent::new(
        state.clock.now(),
        rid,
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
    ev.target = Some(target(&account.id, &subject));
    let Subject::Customer { id, deleted } = subject else {
        return ev;
    };
    ev.customer_id = Some(id);
    if deleted {
        return ev;
    }
    let Some(client) = hooks.clients.get(&account.id) else {
        return ev;
    };
    match client.customer(id).await {
        Ok(Some((c, bound))) => {
            ev.email = Some(c.email.clone());
            ev.subject = bound;
            ev.after = serde_json::to_value(&c).ok();
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "webhook: cannot read the changed customer"),
    }
    ev
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(scope: &str) -> Delivery {
        serde_json::from_value(serde_json::json!({
            "scope": scope, "store_id": "1", "data": {"type": "customer", "id": 7},
            "hash": "x", "created_at": 1_700_000_003, "producer": "stores/abc"
        }))
        .unwrap()
    }

    /// The echo carries the request id of the write it echoes (so it joins the launch), the
    /// customer, the store and the bound subject; a write the reconciler recorded outside any
    /// request falls back to the webhook's own request id.
    #[test]
    fn the_echo_joins_the_request_that_made_the_change() {
        let customer = Subject::Customer {
            id: 7,
            deleted: false,
        };
        let write = OwnWrite {
            at: 1_700_000_000,
            request_id: Some("launch-rid".into()),
            subject: Some("nam:lee".into()),
        };
        let ev = echo_event(
            1_700_000_010,
            "main",
            &delivery("store/customer/created"),
            &customer,
            &write,
            "hook-rid",
        );
        assert_eq!(ev.event, EventKind::WebhookEcho);
        assert_eq!(ev.outcome, Outcome::Allow);
        assert_eq!(ev.request_id, "launch-rid");
        assert_eq!(ev.customer_id, Some(7));
        assert_eq!(ev.store.as_deref(), Some("main"));
        assert_eq!(ev.subject.as_deref(), Some("nam:lee"));
        assert_eq!(ev.reason.as_deref(), Some("customer_created"));
        assert_eq!(ev.target.as_deref(), Some("customer 7 on main"));
        assert!(
            ev.detail
                .as_deref()
                .is_some_and(|d| d.starts_with("own change confirmed") && d.contains("hook-rid")),
            "{ev:?}"
        );

        let unattributed = OwnWrite {
            request_id: None,
            subject: None,
            ..write
        };
        let ev = echo_event(
            1_700_000_010,
            "main",
            &delivery("store/company/user/updated"),
            &Subject::CompanyUser { id: 9 },
            &unattributed,
            "hook-rid",
        );
        assert_eq!(ev.request_id, "hook-rid");
        assert_eq!(ev.customer_id, None);
        assert_eq!(ev.subject, None);
        assert_eq!(ev.target.as_deref(), Some("company user 9 on main"));
    }
}
