//! The IT console's status page, `GET /admin/status` (issue 16), behind the [`Admin`] gate (so
//! every view is an `admin` audit event): the IdPs, the stores, the session store, SCIM, the
//! last 100 denials with their rules, and sign-ins, launches and denials per hour over the last
//! day as a server-rendered SVG chart (no script, no CDN).
//!
//! The recent activity is what this process saw (an audit observer), not the whole fleet's:
//! each replica shows its own; the audit trail remains the record.

use std::collections::VecDeque;
use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use parking_lot::Mutex;

use super::{Admin, render};
use crate::audit::{AuditEvent, EventKind, Outcome};
use crate::clock::{SharedClock, UnixTime};
use crate::config::Protocol;
use crate::web::AppState;

/// Denials kept for the table.
pub const MAX_DENIALS: usize = 100;
/// Hours in the chart.
pub const HOURS: usize = 24;

#[derive(Clone, Debug)]
pub struct Denial {
    pub time: String,
    pub event: &'static str,
    pub who: String,
    pub store: String,
    pub rule: String,
    pub reason: String,
}

#[derive(Clone, Copy, Default, Debug, PartialEq)]
pub struct Hour {
    /// Unix hour (seconds / 3600).
    pub hour: i64,
    pub sign_ins: u32,
    pub launches: u32,
    pub denials: u32,
}

#[derive(Default)]
struct Inner {
    denials: VecDeque<Denial>,
    hours: VecDeque<Hour>,
}

/// What this process saw lately, fed by the audit log's observer.
#[derive(Clone)]
pub struct RecentActivity {
    inner: Arc<Mutex<Inner>>,
    clock: SharedClock,
}

impl RecentActivity {
    pub fn new(clock: SharedClock) -> Self {
        RecentActivity {
            inner: Arc::default(),
            clock,
        }
    }

    pub fn observe(&self, ev: &AuditEvent) {
        let counted = matches!(ev.event, EventKind::SignIn | EventKind::Launch);
        let denied = ev.outcome == Outcome::Deny;
        if !counted && !denied {
            return;
        }
        let hour = self.clock.now().div_euclid(3600);
        let mut m = self.inner.lock();
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

fn event_name(e: EventKind) -> &'static str {
    match e {
        EventKind::SignIn => "sign-in",
        EventKind::Launch => "launch",
        EventKind::Admin => "admin",
        EventKind::Webhook => "webhook",
        EventKind::ControlPanelOpen => "control panel",
        _ => "other",
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

pub struct IdpRow {
    pub id: String,
    pub protocol: &'static str,
    pub status: String,
    pub ok: bool,
}

pub struct StoreRow {
    pub id: String,
    pub name: String,
    pub account: String,
}

#[derive(Template)]
#[template(path = "admin/status.html")]
struct Status<'a> {
    display_name: &'a str,
    idps: Vec<IdpRow>,
    stores: Vec<StoreRow>,
    session_kind: &'static str,
    session_status: String,
    session_ok: bool,
    scim: &'static str,
    series: Vec<Series>,
    denials: Vec<Denial>,
}

/// `GET /admin/status`.
pub async fn status(State(state): State<AppState>, admin: Admin) -> Response {
    let mut idps = Vec::new();
    for (id, p) in state.providers.iter() {
        let (ok, status) = match p.check_ready().await {
            Ok(()) => (true, "discovery answers".to_owned()),
            Err(e) => (false, e.to_string()),
        };
        idps.push(IdpRow {
            id: id.clone(),
            protocol: "OIDC",
            status,
            ok,
        });
    }
    for (id, p) in state.saml.iter().flat_map(|s| s.providers.iter()) {
        let (ok, status) = match p.check_ready() {
            Ok(()) => (true, "metadata loaded".to_owned()),
            Err(e) => (false, e),
        };
        idps.push(IdpRow {
            id: id.to_string(),
            protocol: "SAML",
            status,
            ok,
        });
    }
    // IdPs configured but not built (none today) would be missing above: list them too.
    for idp in &state.config.idps {
        if !idps.iter().any(|r| r.id == idp.id.as_str()) {
            let protocol = match idp.protocol {
                Protocol::Oidc(_) => "OIDC",
                Protocol::Saml(_) => "SAML",
            };
            idps.push(IdpRow {
                id: idp.id.to_string(),
                protocol,
                status: "not started".into(),
                ok: false,
            });
        }
    }
    let snap = state.policy();
    let stores = snap
        .stores
        .iter()
        .map(|s| StoreRow {
            id: s.id.to_string(),
            name: s.name.clone(),
            account: s.account.clone(),
        })
        .collect();
    let (session_ok, session_status) = match state.sessions.check().await {
        Ok(()) => (true, "answers".to_owned()),
        Err(e) => (false, e),
    };
    let hours = state.recent.hours(state.clock.now());
    let pick = |f: fn(&Hour) -> u32| hours.iter().map(f).collect::<Vec<u32>>();
    let series = vec![
        series("Sign-ins", "s-sign-in", &pick(|h| h.sign_ins), 0),
        series("Launches", "s-launch", &pick(|h| h.launches), 6),
        series("Denials", "s-denial", &pick(|h| h.denials), 12),
    ];
    let page = Status {
        display_name: admin.identity.display_name(),
        idps,
        stores,
        session_kind: state.sessions.kind(),
        session_status,
        session_ok,
        scim: if state.scim.is_some() {
            "enabled"
        } else {
            "off"
        },
        series,
        denials: state.recent.denials(),
    };
    render(&page, &admin.request_id)
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
}
