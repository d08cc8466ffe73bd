//! The IT console's status page, `GET /admin/status` (issue 16), behind the [`Admin`] gate (so
//! every view is an `admin` audit event): the IdPs, the stores, the session store, SCIM, the
//! last 100 denials with their rules, and sign-ins, launches and denials per hour over the last
//! day as a server-rendered SVG chart (no script, no CDN).
//!
//! Each part says whose view it is. With `[audit] postgres_url` the activity (hourly counts,
//! denials, last sign-in per IdP) is read from the central table: every replica's ([`fleet`]).
//! Without it, it is what this process saw (an audit observer). SCIM, the queue and the session
//! store are fleet-wide when they live in Redis. The per-IdP, per-store, SCIM and queue rows
//! are built in [`health`]; the store rows are `storegate doctor`'s checks, cached a minute.
//!
//! [`fleet`]: super::fleet
//! [`health`]: super::health

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use parking_lot::Mutex;

use super::activity::{Denial, HOURS, Hour, MAX_DENIALS, event_name};
use super::health::{self, IdpRow, QueueRow, ScimRow, StoreHealth};
use super::{Admin, render};
use crate::audit::{AuditEvent, EventKind, Outcome};
use crate::clock::{SharedClock, UnixTime};
use crate::doctor::Check;
use crate::provisioning::queue::WorkQueue;
use crate::web::AppState;

/// How often the queue depth is sampled for its chart.
pub const QUEUE_SAMPLE_EVERY: Duration = Duration::from_secs(300);
/// Queue samples kept: a day's worth.
pub const QUEUE_SAMPLES: usize = 288;
/// How long the BigCommerce checks are reused: a console left open must not spend the stores'
/// request quota.
pub const PROBE_TTL: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Inner {
    denials: VecDeque<Denial>,
    hours: VecDeque<Hour>,
    /// IdP id → time of the last allowed sign-in this process saw.
    last_sign_in: BTreeMap<String, String>,
    /// (5-minute slot, items waiting or in flight), oldest first.
    queue_depth: VecDeque<(i64, u64)>,
}

/// The BigCommerce checks last run, and when.
type Probes = Option<(Instant, Vec<Check>)>;

/// What this process saw lately (fed by the audit log's observer), the queue it samples, and
/// the console's cached store checks.
#[derive(Clone)]
pub struct RecentActivity {
    inner: Arc<Mutex<Inner>>,
    clock: SharedClock,
    queue: Arc<OnceLock<Arc<dyn WorkQueue>>>,
    probes: Arc<tokio::sync::Mutex<Probes>>,
}

impl RecentActivity {
    pub fn new(clock: SharedClock) -> Self {
        RecentActivity {
            inner: Arc::default(),
            clock,
            queue: Arc::default(),
            probes: Arc::default(),
        }
    }

    /// Shows `queue` on the console and samples its depth every [`QUEUE_SAMPLE_EVERY`] (once;
    /// a second queue is ignored).
    pub fn watch_queue(&self, queue: Arc<dyn WorkQueue>) {
        if self.queue.set(queue.clone()).is_err() {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                match queue.stats().await {
                    Ok(s) => me.record_queue_depth(me.clock.now(), s.waiting + s.in_flight),
                    Err(e) => {
                        tracing::debug!(error = %format!("{e:#}"), "cannot sample the provisioning queue depth")
                    }
                }
                tokio::time::sleep(QUEUE_SAMPLE_EVERY).await;
            }
        });
    }

    pub fn queue(&self) -> Option<Arc<dyn WorkQueue>> {
        self.queue.get().cloned()
    }

    /// One depth sample at `now` (the last one of a slot wins).
    pub fn record_queue_depth(&self, now: UnixTime, depth: u64) {
        let slot = now.div_euclid(QUEUE_SAMPLE_EVERY.as_secs() as i64);
        let mut m = self.inner.lock();
        match m.queue_depth.back_mut() {
            Some(last) if last.0 == slot => last.1 = depth,
            _ => m.queue_depth.push_back((slot, depth)),
        }
        while m.queue_depth.len() > QUEUE_SAMPLES {
            m.queue_depth.pop_front();
        }
    }

    /// The last day's depth per slot ending with `now`'s, oldest first; `None` = not sampled.
    pub fn queue_depth(&self, now: UnixTime) -> Vec<Option<u64>> {
        let this = now.div_euclid(QUEUE_SAMPLE_EVERY.as_secs() as i64);
        let m = self.inner.lock();
        (0..QUEUE_SAMPLES as i64)
            .rev()
            .map(|back| {
                let slot = this - back;
                m.queue_depth
                    .iter()
                    .find(|(s, _)| *s == slot)
                    .map(|(_, d)| *d)
            })
            .collect()
    }

    /// The BigCommerce checks, run again when older than [`PROBE_TTL`].
    pub async fn store_checks(&self, accounts: &[crate::config::BigCommerceAccount]) -> Vec<Check> {
        let mut cached = self.probes.lock().await;
        if let Some((at, checks)) = cached.as_ref()
            && at.elapsed() < PROBE_TTL
        {
            return checks.clone();
        }
        let checks = crate::doctor::bigcommerce(accounts, self.clock.now()).await;
        *cached = Some((Instant::now(), checks.clone()));
        checks
    }

    /// IdP id → the last allowed sign-in this process saw.
    pub fn last_sign_in(&self) -> BTreeMap<String, String> {
        self.inner.lock().last_sign_in.clone()
    }

    pub fn observe(&self, ev: &AuditEvent) {
        let counted = matches!(ev.event, EventKind::SignIn | EventKind::Launch);
        let denied = ev.outcome == Outcome::Deny;
        if !counted && !denied {
            return;
        }
        let hour = self.clock.now().div_euclid(3600);
        let mut m = self.inner.lock();
        if ev.event == EventKind::SignIn
            && ev.outcome == Outcome::Allow
            && let Some(idp) = &ev.idp
        {
            m.last_sign_in.insert(idp.clone(), ev.time.clone());
        }
        if m.hours.back().is_none_or(|h| h.hour != hour) {
            m.hours.push_back(Hour {
                hour,
                ..Hour::default()
            });
            while m.hours.len() > HOURS {
                m.hours.pop_front();
            }
        }
        if let Some(h) = m.hours.back_mut() {
            match (ev.event, denied) {
                (_, true) => h.denials += 1,
                (EventKind::SignIn, false) if ev.outcome == Outcome::Allow => h.sign_ins += 1,
                (EventKind::Launch, false) if ev.outcome == Outcome::Allow => h.launches += 1,
                _ => {}
            }
        }
        if denied {
            m.denials.push_front(Denial {
                time: ev.time.clone(),
                event: event_name(ev.event),
                who: ev
                    .email
                    .clone()
                    .or_else(|| ev.subject.clone())
                    .unwrap_or_default(),
                store: ev.store.clone().unwrap_or_default(),
                rule: ev.rule.clone().unwrap_or_default(),
                reason: ev.reason.clone().unwrap_or_default(),
            });
            m.denials.truncate(MAX_DENIALS);
        }
    }

    /// The last [`HOURS`] hours ending with the current one, oldest first (empty hours zero).
    pub fn hours(&self, now: UnixTime) -> Vec<Hour> {
        let this_hour = now.div_euclid(3600);
        let m = self.inner.lock();
        (0..HOURS as i64)
            .rev()
            .map(|back| {
                let hour = this_hour - back;
                m.hours
                    .iter()
                    .find(|h| h.hour == hour)
                    .copied()
                    .unwrap_or(Hour {
                        hour,
                        ..Hour::default()
                    })
            })
            .collect()
    }

    pub fn denials(&self) -> Vec<Denial> {
        self.inner.lock().denials.iter().cloned().collect()
    }
}

/// One bar of the chart, in SVG user units.
pub struct Bar {
    pub x: u32,
    pub y: u32,
    pub height: u32,
    pub label: String,
}

pub struct Series {
    pub name: &'static str,
    pub class: &'static str,
    pub total: u32,
    pub bars: Vec<Bar>,
}

const CHART_H: u32 = 60;

/// Bars for one count per hour, scaled to the largest; `offset` places the series side by side.
fn series(name: &'static str, class: &'static str, values: &[u32], offset: u32) -> Series {
    let max = values.iter().copied().max().unwrap_or(0).max(1);
    let bars = values
        .iter()
        .enumerate()
        .filter(|(_, v)| **v > 0)
        .map(|(i, v)| {
            let height = (v * CHART_H).div_ceil(max);
            Bar {
                x: i as u32 * 18 + offset,
                y: CHART_H - height,
                height,
                label: format!("{v}"),
            }
        })
        .collect();
    Series {
        name,
        class,
        total: values.iter().sum(),
        bars,
    }
}

/// The queue-depth chart: one bar per sampled slot, 2 units apart, scaled to the deepest.
pub fn queue_series(depths: &[Option<u64>]) -> Series {
    let max = depths.iter().flatten().copied().max().unwrap_or(0).max(1);
    let bars = depths
        .iter()
        .enumerate()
        .filter_map(|(i, d)| d.map(|d| (i, d)))
        .filter(|(_, d)| *d > 0)
        .map(|(i, d)| {
            let height = u32::try_from((d * u64::from(CHART_H)).div_ceil(max)).unwrap_or(CHART_H);
            Bar {
                x: i as u32 * 2,
                y: CHART_H - height,
                height,
                label: format!("{d}"),
            }
        })
        .collect();
    Series {
        name: "Queue depth",
        class: "s-queue",
        total: depths
            .iter()
            .rev()
            .flatten()
            .next()
            .map_or(0, |d| u32::try_from(*d).unwrap_or(u32::MAX)),
        bars,
    }
}

#[derive(Template)]
#[template(path = "admin/status.html")]
struct Status<'a> {
    display_name: &'a str,
    idps: Vec<IdpRow>,
    stores: Vec<StoreHealth>,
    session_kind: &'static str,
    session_scope: &'static str,
    session_status: String,
    session_ok: bool,
    scim: ScimRow,
    queue: QueueRow,
    queue_chart: Series,
    /// "every replica (the audit table)" or "this replica".
    activity_scope: String,
    activity_warning: Option<String>,
    series: Vec<Series>,
    denials: Vec<Denial>,
}

/// `GET /admin/status`.
pub async fn status(State(state): State<AppState>, admin: Admin) -> Response {
    let now = state.clock.now();
    let activity = activity(&state, now).await;
    let idps = health::idp_rows(&state, now, &activity.last_sign_in, activity.idp_scope()).await;
    let checks = state.recent.store_checks(&state.config.bigcommerce).await;
    let stores = health::store_rows(&state, &checks);
    let (session_ok, session_status) = match state.sessions.check().await {
        Ok(()) => (true, "answers".to_owned()),
        Err(e) => (false, e),
    };
    let page = Status {
        display_name: admin.identity.display_name(),
        idps,
        stores,
        session_kind: state.sessions.kind(),
        session_scope: match state.sessions.as_ref() {
            crate::session::Store::Redis(..) => "shared by every replica",
            crate::session::Store::Memory(_) => "this replica only",
        },
        session_status,
        session_ok,
        scim: health::scim_row(&state).await,
        queue: health::queue_row(&state).await,
        queue_chart: queue_series(&state.recent.queue_depth(now)),
        series: activity_chart(&activity.hours),
        activity_scope: activity.scope,
        activity_warning: activity.warning,
        denials: activity.denials,
    };
    render(&page, &admin.request_id)
}

/// The activity the page shows, and whose view it is.
struct Activity {
    /// "every replica (the audit table)" or "this replica".
    scope: String,
    /// Set when the audit table was configured but could not be read.
    warning: Option<String>,
    fleet_wide: bool,
    hours: Vec<Hour>,
    denials: Vec<Denial>,
    last_sign_in: BTreeMap<String, String>,
}

impl Activity {
    /// Whose sign-ins the IdP rows' "last sign-in" covers.
    fn idp_scope(&self) -> &'static str {
        if self.fleet_wide {
            "every replica"
        } else {
            "this replica"
        }
    }
}

/// Every replica's activity from the central audit table when `[audit] postgres_url` is set and
/// readable; else what this process saw (with a warning when the table could not be read).
async fn activity(state: &AppState, now: UnixTime) -> Activity {
    let local = |warning| Activity {
        scope: "this replica".to_owned(),
        warning,
        fleet_wide: false,
        hours: state.recent.hours(now),
        denials: state.recent.denials(),
        last_sign_in: state.recent.last_sign_in(),
    };
    let Some(sink) = &state.config.audit_postgres else {
        return local(None);
    };
    match super::fleet::read(sink.url.expose(), now).await {
        Ok(f) => Activity {
            scope: "every replica (the audit table)".to_owned(),
            warning: None,
            fleet_wide: true,
            hours: f.hours,
            denials: f.denials,
            last_sign_in: f.last_sign_in,
        },
        Err(e) => local(Some(format!(
            "The audit table could not be read ({e}); showing what this replica saw."
        ))),
    }
}

/// Sign-ins, launches and denials per hour, side by side.
fn activity_chart(hours: &[Hour]) -> Vec<Series> {
    let pick = |f: fn(&Hour) -> u32| hours.iter().map(f).collect::<Vec<u32>>();
    vec![
        series("Sign-ins", "s-sign-in", &pick(|h| h.sign_ins), 0),
        series("Launches", "s-launch", &pick(|h| h.launches), 6),
        series("Denials", "s-denial", &pick(|h| h.denials), 12),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::OffsetClock;

    #[test]
    fn denials_are_kept_newest_first_and_hours_counted() {
        let clock = OffsetClock::default();
        let shared: SharedClock = Arc::new(clock.clone());
        let r = RecentActivity::new(shared.clone());
        let now = shared.now();
        let mut ev = AuditEvent::new(now, "r1", EventKind::Launch, Outcome::Deny);
        ev.rule = Some("contractors-never-eu".into());
        ev.store = Some("eu".into());
        r.observe(&ev);
        r.observe(&AuditEvent::new(
            now,
            "r2",
            EventKind::SignIn,
            Outcome::Allow,
        ));
        r.observe(&AuditEvent::new(
            now,
            "r3",
            EventKind::Launch,
            Outcome::Allow,
        ));
        let d = r.denials();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].rule, "contractors-never-eu");
        let h = r.hours(now);
        assert_eq!(h.len(), HOURS);
        let last = h[HOURS - 1];
        assert_eq!((last.sign_ins, last.launches, last.denials), (1, 1, 1));
        for _ in 0..150 {
            r.observe(&ev);
        }
        assert_eq!(r.denials().len(), MAX_DENIALS);
    }

    #[test]
    fn the_last_sign_in_is_kept_per_idp() {
        let shared: SharedClock = Arc::new(OffsetClock::default());
        let r = RecentActivity::new(shared.clone());
        let now = shared.now();
        let mut ok = AuditEvent::new(now, "r1", EventKind::SignIn, Outcome::Allow);
        ok.idp = Some("nam".into());
        r.observe(&ok);
        let mut refused = AuditEvent::new(now + 60, "r2", EventKind::SignIn, Outcome::Deny);
        refused.idp = Some("nam".into());
        r.observe(&refused);
        let mut other = AuditEvent::new(now + 120, "r3", EventKind::SignIn, Outcome::Allow);
        other.idp = Some("partners".into());
        r.observe(&other);
        let last = r.last_sign_in();
        assert_eq!(
            last.get("nam"),
            Some(&ok.time),
            "a refused sign-in is not a success"
        );
        assert_eq!(last.get("partners"), Some(&other.time));
    }

    #[test]
    fn queue_depth_is_kept_per_slot_for_a_day_and_charted() {
        let r = RecentActivity::new(Arc::new(OffsetClock::default()));
        let slot = QUEUE_SAMPLE_EVERY.as_secs() as i64;
        let now = 1_796_205_600;
        r.record_queue_depth(now - 2 * slot, 4);
        r.record_queue_depth(now - slot, 10);
        r.record_queue_depth(now - slot + 1, 8); // the same slot: the last sample wins
        r.record_queue_depth(now, 0);
        let d = r.queue_depth(now);
        assert_eq!(d.len(), QUEUE_SAMPLES);
        assert_eq!(&d[QUEUE_SAMPLES - 3..], &[Some(4), Some(8), Some(0)]);
        assert_eq!(d[0], None, "not sampled");
        let chart = queue_series(&d);
        assert_eq!(chart.total, 0, "the legend shows the depth now");
        let heights: Vec<(u32, u32)> = chart.bars.iter().map(|b| (b.x, b.height)).collect();
        let x = |back: u32| (QUEUE_SAMPLES as u32 - 1 - back) * 2;
        assert_eq!(heights, [(x(2), 30), (x(1), 60)], "scaled to the deepest");
        for _ in 0..QUEUE_SAMPLES + 5 {
            r.record_queue_depth(now + 10 * slot, 1);
        }
        r.record_queue_depth(now + (QUEUE_SAMPLES as i64 + 10) * slot, 1);
        assert!(r.inner.lock().queue_depth.len() <= QUEUE_SAMPLES);
    }
}
