//! Prometheus metrics, served at `GET /metrics` in the text exposition format.
//!
//! One registry per gateway (not the crate's global one), so several gateways in one test process
//! never mix their counts. What is counted:
//!
//! | metric | labels | source |
//! |---|---|---|
//! | `storegate_sign_ins_total` | `outcome` (allow, deny, error) | the audit trail |
//! | `storegate_launches_total` | `outcome` | the audit trail |
//! | `storegate_denials_total` | `event`, `reason` (a stable reason code) | the audit trail |
//! | `storegate_failures_total` | `event`, `reason` | the audit trail (outcome error) |
//! | `storegate_idp_request_duration_seconds` | `idp`, `step` (begin, callback), `result` | around each IdP step |
//! | `storegate_bigcommerce_request_duration_seconds` | `account`, `call`, `result` | around each customer client call (launch and scheduled reconcile; `call` values in docs/operations.md) |
//! | `storegate_redis_errors_total` | none | every failed Redis connect or command |
//! | `storegate_config_reloads_total` | `result` (applied, refused) | each reload attempt (SIGHUP or file change) |
//! | `storegate_config_last_reload_success_timestamp_seconds` | none | Unix time of the last applied reload (0: none since start) |
//! | `storegate_provisioning_queue_depth` | none | items waiting in the provisioning queue |
//! | `storegate_provisioning_queue_in_flight` | none | items a worker took and has not settled (Redis: pending in the consumer group, every replica) |
//! | `storegate_provisioning_queue_dead_letters` | none | items given up on (refused by BigCommerce or failing too often) |
//! | `storegate_control_panel_calls_used` / `_calls_left` | `account` | the Account API's hourly budget, as of the last control-panel pass |
//! | `storegate_control_panel_pending_steps` | `account`, `kind` | control-panel steps not done yet (leaver, mover, addition) |
//! | `storegate_control_panel_oldest_pending_leaver_seconds` | `account` | since SCIM's change of the oldest leaver still pending |
//!
//! Labels are only values from fixed vocabularies or from the configuration (IdP and account
//! ids): never a subject, an email, a session id, a token or a URL. Reason codes pass through
//! [`label`], which keeps `[a-z0-9_]` codes and turns anything else into `other`, so a future
//! free-text reason could not smuggle user data (or unbounded cardinality) into a label.
//!
//! The queue gauges exist when `serve` runs the scheduled reconcile (it owns a queue then) and are
//! read from the queue at scrape time ([`Metrics::refresh`]): with the Redis queue they are the
//! shared queue's counts, the same on every replica.

use std::sync::Arc;
use std::time::Instant;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use crate::audit::{AuditEvent, AuditObserver, EventKind, Outcome};
use crate::clock::UnixTime;
use crate::provisioning::queue::WorkQueue;
use crate::store::RedisHandle;

/// Upstream latency buckets, in seconds: loopback-fast to the 10 s client timeout.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The gateway's metrics; cheap to clone (every field is shared).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    sign_ins: IntCounterVec,
    launches: IntCounterVec,
    denials: IntCounterVec,
    failures: IntCounterVec,
    idp_latency: HistogramVec,
    bigcommerce_latency: HistogramVec,
    config_reloads: IntCounterVec,
    last_reload_success: IntGauge,
    queue: Arc<std::sync::OnceLock<QueueGauges>>,
    webhooks: IntCounterVec,
    webhooks_inactive: prometheus::IntGaugeVec,
}

/// The provisioning queue and its gauges.
struct QueueGauges {
    queue: Arc<dyn WorkQueue>,
    depth: IntGauge,
    in_flight: IntGauge,
    dead_letters: IntGauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("storegate".into()), None)?;
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok::<_, prometheus::Error>(c)
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
                labels,
            )?;
            registry.register(Box::new(h.clone()))?;
            Ok::<_, prometheus::Error>(h)
        };
        let sign_ins = counter(
            "sign_ins_total",
            "Completed sign-in attempts by outcome (allow, deny, error).",
            &["outcome"],
        )?;
        let launches = counter(
            "launches_total",
            "Store launches by outcome (allow, deny, error).",
            &["outcome"],
        )?;
        let denials = counter(
            "denials_total",
            "Refusals by event and stable reason code.",
            &["event", "reason"],
        )?;
        let failures = counter(
            "failures_total",
            "Failures (an upstream or the gateway failed, not a policy refusal) by event and reason code.",
            &["event", "reason"],
        )?;
        let idp_latency = histogram(
            "idp_request_duration_seconds",
            "Time spent in each identity provider step: begin (discovery, authorization URL) and callback (token exchange, JWKS, verification, userinfo).",
            &["idp", "step", "result"],
        )?;
        let bigcommerce_latency = histogram(
            "bigcommerce_request_duration_seconds",
            "BigCommerce Management API calls by account, call and result.",
            &["account", "call", "result"],
        )?;
        let config_reloads = counter(
            "config_reloads_total",
            "Configuration reload attempts (SIGHUP or file change) by result: applied, or refused (invalid file or a change that needs a restart; the previous policy stays).",
            &["result"],
        )?;
        let last_reload_success = IntGauge::new(
            "config_last_reload_success_timestamp_seconds",
            "Unix time of the last applied configuration reload; 0 when none was applied since start.",
        )?;
        registry.register(Box::new(last_reload_success.clone()))?;
        let webhooks = counter(
            "webhooks_total",
            "BigCommerce webhook deliveries by account and result: refused (secret), invalid, duplicate (a retry already seen), own (storegate's own change), external (an external_change), ignored (a scope not acted on).",
            &["account", "result"],
        )?;
        let webhooks_inactive = prometheus::IntGaugeVec::new(
            Opts::new(
                "webhooks_inactive",
                "Hooks pointing at this gateway that BigCommerce deactivated (after 48 hours of failed deliveries), by account, as of the last readiness check; `storegate webhooks sync` re-enables them.",
            ),
            &["account"],
        )?;
        registry.register(Box::new(webhooks_inactive.clone()))?;
        // Pre-create the outcome series so dashboards see zeros, not gaps.
        for outcome in ["allow", "deny", "error"] {
            sign_ins.with_label_values(&[outcome]);
            launches.with_label_values(&[outcome]);
        }
        for result in ["applied", "refused"] {
            config_reloads.with_label_values(&[result]);
        }
        Ok(Metrics {
            registry,
            sign_ins,
            launches,
            denials,
            failures,
            idp_latency,
            bigcommerce_latency,
            config_reloads,
            last_reload_success,
            queue: Arc::default(),
            webhooks,
            webhooks_inactive,
        })
    }

    /// Counts one webhook delivery by its result (see `webhooks_total`).
    pub fn observe_webhook(&self, account: &str, result: &'static str) {
        self.webhooks.with_label_values(&[account, result]).inc();
    }

    /// How many of an account's hooks BigCommerce deactivated.
    pub fn set_inactive_webhooks(&self, account: &str, n: usize) {
        self.webhooks_inactive
            .with_label_values(&[account])
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Counts one configuration reload attempt; `applied_at` is the Unix time of an applied one.
    pub fn observe_reload(&self, applied_at: Option<UnixTime>) {
        match applied_at {
            Some(at) => {
                self.config_reloads.with_label_values(&["applied"]).inc();
                self.last_reload_success.set(at);
            }
            None => self.config_reloads.with_label_values(&["refused"]).inc(),
        }
    }

    /// Reports the provisioning queue's depth, in-flight and dead-letter counts (once; a second
    /// queue is ignored).
    pub fn watch_queue(&self, queue: Arc<dyn WorkQueue>) -> Result<(), prometheus::Error> {
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::with_opts(Opts::new(name, help))?;
            self.registry.register(Box::new(g.clone()))?;
            Ok::<_, prometheus::Error>(g)
        };
        if self.queue.get().is_some() {
            return Ok(());
        }
        let gauges = QueueGauges {
            queue,
            depth: gauge(
                "provisioning_queue_depth",
                "Provisioning items waiting for a worker (every replica, with the Redis queue).",
            )?,
            in_flight: gauge(
                "provisioning_queue_in_flight",
                "Provisioning items taken by a worker and not settled yet.",
            )?,
            dead_letters: gauge(
                "provisioning_queue_dead_letters",
                "Provisioning items given up on (see the audit trail and the dead-letter stream).",
            )?,
        };
        let _ = self.queue.set(gauges);
        Ok(())
    }

    /// Reads the queue counts into their gauges (before a scrape). A queue that cannot be read
    /// keeps the last values; the failure is logged (and counted as a Redis error).
    pub async fn refresh(&self) {
        let Some(g) = self.queue.get() else {
            return;
        };
        match g.queue.stats().await {
            Ok(s) => {
                g.depth.set(s.waiting as i64);
                g.in_flight.set(s.in_flight as i64);
                g.dead_letters.set(s.dead_letters as i64);
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cannot read the provisioning queue counts for /metrics")
            }
        }
    }

    /// The control-panel gauges (issue 12), registered once and set by each control-panel pass:
    /// `control_panel_calls_used` / `control_panel_calls_left` (the account's hourly Account API
    /// budget), `control_panel_pending_steps` by `kind` (leaver, mover, addition) and
    /// `control_panel_oldest_pending_leaver_seconds`, per `account`.
    pub fn control_panel_gauges(
        &self,
    ) -> Result<crate::controlpanel::run::Gauges, prometheus::Error> {
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = prometheus::IntGaugeVec::new(Opts::new(name, help), labels)?;
            self.registry.register(Box::new(g.clone()))?;
            Ok::<_, prometheus::Error>(g)
        };
        Ok(crate::controlpanel::run::Gauges {
            calls_used: gauge(
                "control_panel_calls_used",
                "Account API calls spent in the last hour (of 70), as of the last pass.",
                &["account"],
            )?,
            calls_left: gauge(
                "control_panel_calls_left",
                "Account API calls left in the hour, as of the last pass.",
                &["account"],
            )?,
            pending: gauge(
                "control_panel_pending_steps",
                "Control-panel steps planned and not done yet, by kind (leaver, mover, addition).",
                &["account", "kind"],
            )?,
            oldest_leaver: gauge(
                "control_panel_oldest_pending_leaver_seconds",
                "Age of the oldest leaver whose control-panel removal is still pending (0: none).",
                &["account"],
            )?,
        })
    }

    /// Counts Redis errors of `handle` (read when scraped).
    pub fn watch_redis(&self, handle: RedisHandle) -> Result<(), prometheus::Error> {
        self.registry.register(Box::new(RedisErrors::new(handle)?))
    }

    /// The audit observer that feeds the sign-in, launch, denial and failure counters.
    pub fn audit_observer(&self) -> AuditObserver {
        let m = self.clone();
        Arc::new(move |ev: &AuditEvent| m.observe(ev))
    }

    fn observe(&self, ev: &AuditEvent) {
        let outcome = match ev.outcome {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::Error => "error",
        };
        let event = match ev.event {
            EventKind::SignIn => {
                self.sign_ins.with_label_values(&[outcome]).inc();
                "sign_in"
            }
            EventKind::Launch => {
                self.launches.with_label_values(&[outcome]).inc();
                "launch"
            }
            EventKind::SignOut => "sign_out",
            EventKind::ScimChange => "scim_change",
            EventKind::Provision => "provision",
            EventKind::Reconcile => "reconcile",
            EventKind::Drift => "drift",
            EventKind::Webhook => "webhook",
            EventKind::ExternalChange => "external_change",
            EventKind::WebhookEcho => "webhook_echo",
            EventKind::Admin => "admin",
            EventKind::ForwardAuth => "forward_auth",
            EventKind::ControlPanelOpen => "control_panel_open",
        };
        let reason = label(ev.reason.as_deref().unwrap_or("unspecified"));
        match ev.outcome {
            Outcome::Allow => {}
            Outcome::Deny => self.denials.with_label_values(&[event, reason]).inc(),
            Outcome::Error => self.failures.with_label_values(&[event, reason]).inc(),
        }
    }

    /// Records how long one IdP step took.
    pub fn observe_idp(&self, idp: &str, step: &'static str, ok: bool, since: Instant) {
        self.idp_latency
            .with_label_values(&[idp, step, if ok { "ok" } else { "error" }])
            .observe(since.elapsed().as_secs_f64());
    }

    /// The histogram of BigCommerce call latencies, for the metering layer around the client
    /// ([`crate::bigcommerce::metered`]).
    pub fn bigcommerce_latency(&self) -> HistogramVec {
        self.bigcommerce_latency.clone()
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

/// A label value from a reason code: `[a-z0-9_]`, at most 48 characters, else `other`.
pub fn label(code: &str) -> &str {
    let ok = !code.is_empty()
        && code.len() <= 48
        && code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok { code } else { "other" }
}

/// `storegate_redis_errors_total`, read from the handle's own count at scrape time.
struct RedisErrors {
    handle: RedisHandle,
    template: IntCounter,
    desc: Vec<Desc>,
}

impl RedisErrors {
    fn new(handle: RedisHandle) -> Result<Self, prometheus::Error> {
        let template = Self::counter()?;
        let desc = template.desc().into_iter().cloned().collect();
        Ok(RedisErrors {
            handle,
            template,
            desc,
        })
    }

    fn counter() -> Result<IntCounter, prometheus::Error> {
        IntCounter::with_opts(
            // The registry adds the `storegate_` prefix.
            Opts::new(
                "redis_errors_total",
                "Failed Redis connection attempts and commands (sessions and every other Redis use).",
            ),
        )
    }
}

impl Collector for RedisErrors {
    fn desc(&self) -> Vec<&Desc> {
        self.desc.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let c = Self::counter().unwrap_or_else(|_| self.template.clone());
        c.reset();
        c.inc_by(self.handle.errors_total());
        c.collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_codes_pass_and_anything_else_is_other() {
        assert_eq!(label("not_entitled"), "not_entitled");
        assert_eq!(label("id_token_invalid"), "id_token_invalid");
        assert_eq!(label("lee@corp.example"), "other");
        assert_eq!(label("Bearer abc"), "other");
        assert_eq!(label(""), "other");
        assert_eq!(label(&"a".repeat(49)), "other");
    }

    #[test]
    fn reloads_are_counted_by_result_with_the_last_success_time() {
        let m = Metrics::new().unwrap();
        let text = m.render().unwrap();
        assert!(
            text.contains("storegate_config_reloads_total{result=\"applied\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("storegate_config_last_reload_success_timestamp_seconds 0"),
            "{text}"
        );
        m.observe_reload(Some(1_800_000_000));
        m.observe_reload(None);
        m.observe_reload(None);
        let text = m.render().unwrap();
        assert!(
            text.contains("storegate_config_reloads_total{result=\"applied\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("storegate_config_reloads_total{result=\"refused\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("storegate_config_last_reload_success_timestamp_seconds 1800000000"),
            "{text}"
        );
    }

    #[test]
    fn audit_events_feed_the_counters() {
        let m = Metrics::new().unwrap();
        let observe = m.audit_observer();
        let mut deny = AuditEvent::new(0, "rid", EventKind::Launch, Outcome::Deny);
        deny.reason = Some("not_entitled".into());
        deny.subject = Some("secret-subject".into());
        observe(&deny);
        observe(&AuditEvent::new(
            0,
            "rid",
            EventKind::SignIn,
            Outcome::Allow,
        ));
        let text = m.render().unwrap();
        assert!(
            text.contains("storegate_launches_total{outcome=\"deny\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("storegate_sign_ins_total{outcome=\"allow\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("storegate_denials_total{event=\"launch\",reason=\"not_entitled\"} 1"),
            "{text}"
        );
        assert!(!text.contains("secret-subject"));
        assert!(!text.contains("rid"));
    }
}
