//! The audit trail: one JSON line per sign-in, launch, denial and failure.
//!
//! BigCommerce keeps no login log (reference/BIGCOMMERCE.md), so this is the record of who had
//! access to which store and used it when. Events are typed; "deny" (policy said no) is kept apart
//! from "error" (something failed). No secret is ever a field of an event.

use std::io::Write;
use std::path::Path;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::clock::UnixTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    SignIn,
    Launch,
    SignOut,
    /// A SCIM create, replace, patch or delete (issue 5).
    ScimChange,
    /// One reconciler action on a BigCommerce customer (issue 5).
    Provision,
    /// One reconcile pass (scheduled or `storegate reconcile`), with its counts (issue 5).
    Reconcile,
    /// A BigCommerce customer that differs from the desired state outside a planned change (issue 5).
    Drift,
    /// A BigCommerce webhook delivery refused (wrong or missing secret, bad payload) (issue 13).
    Webhook,
    /// A change BigCommerce reported by webhook that storegate did not make (issue 13).
    ExternalChange,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Access granted / action done.
    Allow,
    /// Refused by policy or by a failed check.
    Deny,
    /// Something failed (IdP, store, BigCommerce unreachable).
    Error,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditEvent {
    /// RFC 3339 UTC.
    pub time: String,
    pub request_id: String,
    pub event: EventKind,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// The rule that decided (or `default-deny`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Stable reason code (`state_unknown`, `id_token_invalid`, `not_entitled`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A human-readable detail for the admin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<u64>,
    /// Who made a provisioning change (`scim:bearer`, `scim:basic:idm`, `reconcile`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// What a provisioning change was made to (`User/{id}`, `customer:{email}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The state before and after a provisioning change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<serde_json::Value>,
    /// The reconcile run a provisioning action belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
}

impl AuditEvent {
    pub fn new(now: UnixTime, request_id: &str, event: EventKind, outcome: Outcome) -> Self {
        let time = time::OffsetDateTime::from_unix_timestamp(now)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| now.to_string());
        AuditEvent {
            time,
            request_id: request_id.to_owned(),
            event,
            outcome,
            subject: None,
            idp: None,
            email: None,
            store: None,
            rule: None,
            role: None,
            reason: None,
            detail: None,
            customer_id: None,
            actor: None,
            target: None,
            before: None,
            after: None,
            run: None,
        }
    }

    pub fn who(mut self, id: &crate::identity::Identity) -> Self {
        self.subject = Some(id.subject.clone());
        self.idp = Some(id.idp.to_string());
        self.email = id.email.clone();
        self
    }
}

/// Something that sees every recorded event as it is recorded (the Prometheus counters).
pub type AuditObserver = std::sync::Arc<dyn Fn(&AuditEvent) + Send + Sync>;

/// How long a busy audit writer gathers events before it writes them (see [`AuditLog::open`]):
/// the most an event waits on its way to the file, and what a crash can lose beyond that.
const AUDIT_BATCH_WINDOW: std::time::Duration = std::time::Duration::from_millis(5);

fn write_event(out: &mut impl Write, ev: &AuditEvent) {
    match serde_json::to_writer(&mut *out, ev) {
        Ok(()) => {
            if out.write_all(b"\n").is_err() {
                tracing::error!("cannot write the audit log");
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot encode an audit event"),
    }
}

/// Sends events to a background writer so request handlers never wait on the disk.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::UnboundedSender<AuditEvent>,
    observer: Option<AuditObserver>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("observed", &self.observer.is_some())
            .finish()
    }
}

impl AuditLog {
    /// Opens the sink (`None` = stdout) and starts its writer task.
    pub fn open(file: Option<&Path>) -> std::io::Result<Self> {
        let out: Box<dyn Write + Send> = match file {
            Some(p) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ),
            None => Box::new(std::io::stdout()),
        };
        let (tx, mut rx) = mpsc::unbounded_channel::<AuditEvent>();
        tokio::task::spawn_blocking(move || {
            let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
            // The first event after a quiet spell is written at once. While events keep coming
            // the writer drains the queue once per `AUDIT_BATCH_WINDOW` instead of waiting on the
            // channel, so a sender wakes this thread once per burst, not once per event (that
            // wake-up was about a tenth of a launch's CPU under load). It goes back to waiting
            // after a window with nothing new. Every batch is flushed before the pause.
            while let Some(first) = rx.blocking_recv() {
                let mut pending = Some(first);
                loop {
                    let mut wrote = false;
                    while let Some(ev) = pending.take().or_else(|| rx.try_recv().ok()) {
                        write_event(&mut out, &ev);
                        wrote = true;
                    }
                    if !wrote {
                        break;
                    }
                    if out.flush().is_err() {
                        tracing::error!("cannot write the audit log");
                    }
                    std::thread::sleep(AUDIT_BATCH_WINDOW);
                }
            }
        });
        Ok(AuditLog { tx, observer: None })
    }

    /// An audit log that hands events to a channel (tests read them).
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<AuditEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (AuditLog { tx, observer: None }, rx)
    }

    /// The same log, with `observer` called on every event before it is written.
    pub fn with_observer(mut self, observer: AuditObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    pub fn record(&self, ev: AuditEvent) {
        if let Some(observe) = &self.observer {
            observe(&ev);
        }
        // Debug, not info: the audit trail itself is the record; at info every sign-in and
        // launch was written twice, once more as a log line in the hot path.
        tracing::debug!(
            target: "audit",
            event = ?ev.event,
            outcome = ?ev.outcome,
            store = ev.store.as_deref().unwrap_or(""),
            reason = ev.reason.as_deref().unwrap_or(""),
            "audit"
        );
        if self.tx.send(ev).is_err() {
            tracing::error!("the audit writer has stopped");
        }
    }
}
