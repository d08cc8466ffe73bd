//! The audit trail: one JSON line per sign-in, launch, denial and failure.
//!
//! BigCommerce keeps no login log (docs/bigcommerce.md), so this is the record of who had
//! access to which store and used it when. Events are typed; "deny" (policy said no) is kept apart
//! from "error" (something failed). No secret is ever a field of an event.
//!
//! Written to a file, every event is sealed into its writer's hash chain ([`chain`]), the file
//! rotates by size or age and reopens on SIGHUP ([`rotate`]), and `storegate audit verify`
//! checks a set of files ([`verify`]).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::clock::UnixTime;

pub mod chain;
pub mod postgres;
pub mod rotate;
pub mod verify;

use chain::{Chain, ChainHead};
use rotate::FileSink;
pub use rotate::RotatePolicy;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    SignIn,
    Launch,
    SignOut,
    /// A SCIM create, replace, patch or delete (issue 5).
    ScimChange,
    /// One action on a BigCommerce customer: the reconciler's (issue 5, actor `reconcile`), or
    /// the create, adoption or update a launch made (issue 13, actor `launch`, the launch's
    /// request id).
    Provision,
    /// One reconcile pass (scheduled or `storegate reconcile`), with its counts (issue 5).
    Reconcile,
    /// A BigCommerce customer that differs from the desired state outside a planned change (issue 5).
    Drift,
    /// A BigCommerce webhook delivery refused (wrong or missing secret, bad payload) (issue 13).
    Webhook,
    /// A change BigCommerce reported by webhook that storegate did not make (issue 13).
    ExternalChange,
    /// A webhook that echoes one of storegate's own changes (issue 13): its `request_id` is the
    /// request that made the change, so the launch, the change and the echo join on it.
    WebhookEcho,
    /// A request to the IT console under `/admin`, admitted or refused by `[admin]` (issue 13);
    /// `target` is the path asked for.
    Admin,
    /// A forward-auth or built-in-proxy decision on a `[[route]]` (issue 14).
    ForwardAuth,
    /// The portal's "Control panel" entry opened (or refused) for a store hash (issue 12);
    /// `store` is the `[[bigcommerce]]` id, `role` the permission sets.
    ControlPanelOpen,
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
    /// A group change: the members (user ids) that came and that went; `before` and `after`
    /// leave the member list out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members_added: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members_removed: Option<Vec<String>>,
    /// The reconcile run a provisioning action belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
}

impl AuditEvent {
    pub fn new(now: UnixTime, request_id: &str, event: EventKind, outcome: Outcome) -> Self {
        let time = crate::clock::rfc3339(now);
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
            members_added: None,
            members_removed: None,
            run: None,
        }
    }

    pub fn with_rule(mut self, rule: &str) -> Self {
        self.rule = Some(rule.to_owned());
        self
    }

    pub fn with_target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
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

/// `[audit]` apart from the destination: chain, writer id, rotation (issue 13).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrailConfig {
    /// `chain`: seal every event into the writer's hash chain. Default on.
    pub chain: bool,
    /// `writer_id`; `None` = [`default_writer_id`].
    pub writer_id: Option<String>,
    /// `rotate_size` / `rotate_every` (files only).
    pub rotate: RotatePolicy,
}

impl Default for TrailConfig {
    fn default() -> Self {
        TrailConfig {
            chain: true,
            writer_id: None,
            rotate: RotatePolicy::default(),
        }
    }
}

/// The writer id when `writer_id` is not set. For a file: the host name, which stays the same
/// across restarts (so a restart continues the chain) and differs between replicas on different
/// hosts or pods. On stdout no restart can continue a chain, so each run is its own writer:
/// host name and process id.
pub fn default_writer_id(to_stdout: bool) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "storegate".to_owned());
    let host: String = host
        .chars()
        .map(|c| if valid_writer_char(c) { c } else { '-' })
        .take(64)
        .collect();
    if to_stdout {
        format!("{host}-{}", std::process::id())
    } else {
        host
    }
}

/// The characters a writer id may use (checked by config validation).
pub fn valid_writer_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':')
}

enum Sink {
    Stdout(std::io::Stdout),
    File(FileSink),
}

/// The writer thread's state: where lines go, the chain (when on), reusable buffers.
struct Writer {
    sink: Sink,
    chain: Option<Chain>,
    reopen: Arc<AtomicBool>,
    json: Vec<u8>,
    batch: Vec<u8>,
    /// The central PostgreSQL sink, when `audit.postgres_url` is set: every sealed line too.
    postgres: Option<postgres::Feed>,
}

impl Writer {
    /// Adds one event to the batch, rotating first when the file is due.
    fn add(&mut self, ev: &AuditEvent, now: SystemTime) {
        self.json.clear();
        if let Err(e) = serde_json::to_writer(&mut self.json, ev) {
            tracing::error!(error = %e, "cannot encode an audit event");
            return;
        }
        if let Sink::File(f) = &self.sink {
            // The chain fields add about 200 bytes; the size limit is a soft one anyway.
            let next = (self.json.len() + 200) as u64;
            if f.rotation_due(self.batch.len() as u64, next, now) {
                self.write_batch();
                self.rotate(now);
            }
        }
        match &mut self.chain {
            Some(chain) => {
                let start = self.batch.len();
                chain.seal(&self.json, &mut self.batch);
                if let Some(feed) = &self.postgres {
                    // Without the newline; the push never waits.
                    feed.push(&self.batch[start..self.batch.len() - 1]);
                }
            }
            None => {
                self.batch.extend_from_slice(&self.json);
                self.batch.push(b'\n');
            }
        }
    }

    fn write_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let result = match &mut self.sink {
            Sink::Stdout(out) => out.write_all(&self.batch).and_then(|()| out.flush()),
            Sink::File(f) => f.write(&self.batch),
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "cannot write the audit log");
        }
        self.batch.clear();
    }

    fn rotate(&mut self, now: SystemTime) {
        let Sink::File(f) = &mut self.sink else {
            return;
        };
        match f.rotate(now) {
            // The head is logged so a copy of it exists outside the file (an anchor for
            // `audit verify --anchor`).
            Ok(to) => match &self.chain {
                Some(c) => {
                    tracing::info!(rotated_to = %to.display(), writer = %c.writer_id(), seq = c.head().seq, hash = %c.head().hash, "audit file rotated; chain head")
                }
                None => tracing::info!(rotated_to = %to.display(), "audit file rotated"),
            },
            Err(e) => {
                tracing::error!(file = %f.path().display(), error = %e, "cannot rotate the audit file; still writing to it")
            }
        }
    }

    /// SIGHUP: open the path again (logrotate moved the file away).
    fn reopen_if_asked(&mut self, now: SystemTime) {
        if !self.reopen.swap(false, Ordering::Relaxed) {
            return;
        }
        let Sink::File(f) = &mut self.sink else {
            return;
        };
        self.batch.clear();
        match f.reopen(now) {
            Ok(()) => match &self.chain {
                Some(c) => {
                    tracing::info!(file = %f.path().display(), writer = %c.writer_id(), seq = c.head().seq, hash = %c.head().hash, "audit file reopened; chain head")
                }
                None => tracing::info!(file = %f.path().display(), "audit file reopened"),
            },
            Err(e) => {
                tracing::error!(file = %f.path().display(), error = %e, "cannot reopen the audit file; still writing to the old one")
            }
        }
    }

    /// The loop of the writer thread. The first event after a quiet spell is written at once.
    /// While events keep coming the writer drains the queue once per `AUDIT_BATCH_WINDOW`
    /// instead of waiting on the channel, so a sender wakes this thread once per burst, not once
    /// per event (that wake-up was about a tenth of a launch's CPU under load). It goes back to
    /// waiting after a window with nothing new. Every batch is written before the pause.
    fn run(mut self, mut rx: mpsc::UnboundedReceiver<AuditEvent>) {
        while let Some(first) = rx.blocking_recv() {
            let mut pending = Some(first);
            loop {
                let now = SystemTime::now();
                self.reopen_if_asked(now);
                let mut wrote = false;
                while let Some(ev) = pending.take().or_else(|| rx.try_recv().ok()) {
                    self.add(&ev, now);
                    wrote = true;
                }
                if !wrote {
                    break;
                }
                self.write_batch();
                std::thread::sleep(AUDIT_BATCH_WINDOW);
            }
        }
    }
}

/// Sends events to a background writer so request handlers never wait on the disk.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::UnboundedSender<AuditEvent>,
    observer: Option<AuditObserver>,
    /// Set to make the writer reopen its file before the next batch (SIGHUP).
    reopen: Option<Arc<AtomicBool>>,
    /// What the PostgreSQL sink did, when there is one.
    postgres: Option<Arc<postgres::SinkStats>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("observed", &self.observer.is_some())
            .finish()
    }
}

impl AuditLog {
    /// Opens the sink (`None` = stdout) and starts its writer task. With the chain on, a file's
    /// chain continues from this writer's last event in it (see [`rotate::recover_head`]). On
    /// SIGHUP the file is reopened.
    pub fn open(file: Option<&Path>, trail: &TrailConfig) -> std::io::Result<Self> {
        Self::open_with_handle(file, trail).map(|(log, _)| log)
    }

    /// As [`Self::open`], also returning the writer task, which ends once every clone of the log
    /// is dropped and everything is written (tests and benches wait on it).
    pub fn open_with_handle(
        file: Option<&Path>,
        trail: &TrailConfig,
    ) -> std::io::Result<(Self, tokio::task::JoinHandle<()>)> {
        Self::open_with_sink(file, trail, None)
    }

    /// As [`Self::open_with_handle`], every sealed line also handed to the PostgreSQL sink's
    /// `feed` (needs the chain: the table is keyed by writer and seq).
    pub fn open_with_sink(
        file: Option<&Path>,
        trail: &TrailConfig,
        feed: Option<postgres::Feed>,
    ) -> std::io::Result<(Self, tokio::task::JoinHandle<()>)> {
        let writer_id = trail
            .writer_id
            .clone()
            .unwrap_or_else(|| default_writer_id(file.is_none()));
        let (sink, head) = match file {
            Some(p) => {
                let head = if trail.chain {
                    rotate::recover_head(p, &writer_id)?
                } else {
                    None
                };
                let sink = FileSink::open(p, trail.rotate, SystemTime::now())?;
                (Sink::File(sink), head)
            }
            None => (Sink::Stdout(std::io::stdout()), None),
        };
        let chain = trail.chain.then(|| {
            if let Some(h) = &head {
                tracing::info!(writer = %writer_id, seq = h.seq, hash = %h.hash, "the audit chain continues from the last event in the file");
            }
            Chain::new(&writer_id, head.unwrap_or_else(ChainHead::genesis))
        });
        let reopen = Arc::new(AtomicBool::new(false));
        if matches!(sink, Sink::File(_)) {
            spawn_reopen_on_hangup(reopen.clone());
        }
        let writer = Writer {
            sink,
            chain,
            reopen: reopen.clone(),
            json: Vec::with_capacity(1024),
            batch: Vec::with_capacity(64 * 1024),
            postgres: feed,
        };
        let (tx, rx) = mpsc::unbounded_channel::<AuditEvent>();
        let handle = tokio::task::spawn_blocking(move || writer.run(rx));
        Ok((
            AuditLog {
                tx,
                observer: None,
                reopen: Some(reopen),
                postgres: None,
            },
            handle,
        ))
    }

    /// The same log, reporting the PostgreSQL sink's `stats` (metrics, readiness).
    pub fn with_postgres_stats(mut self, stats: Arc<postgres::SinkStats>) -> Self {
        self.postgres = Some(stats);
        self
    }

    /// What the PostgreSQL sink did, when `audit.postgres_url` is set.
    pub fn postgres_stats(&self) -> Option<&postgres::SinkStats> {
        self.postgres.as_deref()
    }

    /// Makes the writer reopen its file before its next batch, as SIGHUP does.
    pub fn reopen(&self) {
        if let Some(flag) = &self.reopen {
            flag.store(true, Ordering::Relaxed);
        }
    }

    /// An audit log that hands events to a channel (tests read them).
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<AuditEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            AuditLog {
                tx,
                observer: None,
                reopen: None,
                postgres: None,
            },
            rx,
        )
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

/// SIGHUP makes the writer reopen its file (after logrotate). The policy reload listens to the
/// same signal (src/reload.rs); tokio delivers it to both.
fn spawn_reopen_on_hangup(flag: Arc<AtomicBool>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(mut hangups) => {
                while hangups.recv().await.is_some() {
                    flag.store(true, Ordering::Relaxed);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; the audit file will not be reopened on it")
            }
        }
    });
    #[cfg(not(unix))]
    let _ = flag;
}

/// Correlation ids end to end (issue 13): the request id of the request being served, carried
/// in a task-local so the BigCommerce clients can send it as `X-Request-Id` (BigCommerce ignores
/// it; a proxy's or the simulator's logs show it) without every call taking it as a parameter.
/// The same id is the audit events' `request_id`, so a launch, the BigCommerce calls it made and
/// its audit event join on one value.
pub mod correlation {
    tokio::task_local! {
        static REQUEST_ID: String;
    }

    /// The header BigCommerce calls carry the id in.
    pub const HEADER: &str = "X-Request-Id";

    /// Runs `f` with `id` as the current request id. A plain future type (not an `async fn`)
    /// so the middleware can name it instead of boxing it (`web::edge`).
    pub fn scope<F: std::future::Future>(
        id: String,
        f: F,
    ) -> tokio::task::futures::TaskLocalFuture<String, F> {
        REQUEST_ID.scope(id, f)
    }

    /// The current request id, when inside [`scope`].
    pub fn current() -> Option<String> {
        REQUEST_ID.try_with(Clone::clone).ok()
    }

    /// Adds the `X-Request-Id` header to an outgoing call when a request id is current.
    pub fn tag(req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match current() {
            Some(id) => req.header(HEADER, id),
            None => req,
        }
    }

    tokio::task_local! {
        static ON_BEHALF_OF: String;
    }

    /// Runs `f` with `subject` (a bound subject, `idp:subject`) as the person the BigCommerce
    /// writes inside are made for: the own-change record keeps it, so the webhook that echoes
    /// a write can name the person without reading the customer back (one API call per echo).
    pub async fn on_behalf_of<F: std::future::Future>(subject: String, f: F) -> F::Output {
        ON_BEHALF_OF.scope(subject, f).await
    }

    /// The bound subject of [`on_behalf_of`], when inside it.
    pub fn subject() -> Option<String> {
        ON_BEHALF_OF.try_with(Clone::clone).ok()
    }
}
