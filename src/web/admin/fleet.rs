//! The console's activity from the central audit table (`[audit] postgres_url`): every
//! replica's sign-ins, launches and denials, where the in-process observer sees only this
//! replica's. Read on each view with the time index (migration V2); `time` is RFC 3339 UTC
//! text, so comparing text compares instants.

use std::collections::BTreeMap;

use super::activity::{Denial, HOURS, Hour, MAX_DENIALS, event_label};
use crate::audit::postgres::AuditStoreError;
use crate::clock::{UnixTime, rfc3339};

/// How far back the last denials and the last sign-in per IdP are looked for.
pub const LOOK_BACK_DAYS: i64 = 30;

/// What the table says about the last day (and the last [`LOOK_BACK_DAYS`] for sign-ins).
#[derive(Debug, Default)]
pub struct FleetActivity {
    pub hours: Vec<Hour>,
    pub denials: Vec<Denial>,
    /// IdP id → time of its last allowed sign-in.
    pub last_sign_in: BTreeMap<String, String>,
}

/// One denial line of the table as the console shows it.
pub fn denial_of_line(line: &str) -> Option<Denial> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
    Some(Denial {
        time: s("time")?,
        event: event_label(&s("event")?),
        who: s("email").or_else(|| s("subject")).unwrap_or_default(),
        store: s("store").unwrap_or_default(),
        rule: s("rule").unwrap_or_default(),
        reason: s("reason").unwrap_or_default(),
    })
}

/// The [`HOURS`] hours ending with `now`'s, oldest first, from `(hour prefix, event, outcome,
/// count)` rows (`hour prefix` = the time's first 13 characters, `2026-12-02T10`).
pub fn hours_of(rows: &[(String, String, String, i64)], now: UnixTime) -> Vec<Hour> {
    let this_hour = now.div_euclid(3600);
    (0..HOURS as i64)
        .rev()
        .map(|back| {
            let hour = this_hour - back;
            let prefix: String = rfc3339(hour * 3600).chars().take(13).collect();
            let mut h = Hour {
                hour,
                ..Hour::default()
            };
            for (p, event, outcome, n) in rows {
                if *p != prefix {
                    continue;
                }
                let n = u32::try_from(*n).unwrap_or(u32::MAX);
                match (event.as_str(), outcome.as_str()) {
                    (_, "deny") => h.denials += n,
                    ("sign_in", "allow") => h.sign_ins += n,
                    ("launch", "allow") => h.launches += n,
                    _ => {}
                }
            }
            h
        })
        .collect()
}

/// Reads the table. One short-lived connection per view: the console is not a hot path.
pub async fn read(url: &str, now: UnixTime) -> Result<FleetActivity, AuditStoreError> {
    let client = crate::audit::postgres::connect(url).await?;
    let day = rfc3339((now.div_euclid(3600) - HOURS as i64 + 1) * 3600);
    let back = rfc3339(now - LOOK_BACK_DAYS * 86_400);
    let counts = client
        .query(
            "SELECT substr(time, 1, 13), event, line::jsonb->>'outcome', count(*) \
             FROM audit_events WHERE time >= $1 GROUP BY 1, 2, 3",
            &[&day],
        )
        .await
        .map_err(AuditStoreError::Read)?;
    let rows: Vec<(String, String, String, i64)> = counts
        .iter()
        .filter_map(|r| {
            Some((
                r.try_get(0).ok()?,
                r.try_get(1).ok()?,
                r.try_get::<_, Option<String>>(2).ok()??,
                r.try_get(3).ok()?,
            ))
        })
        .collect();
    let denials = client
        .query(
            "SELECT line FROM audit_events WHERE time >= $1 AND line::jsonb->>'outcome' = 'deny' \
             ORDER BY time DESC, writer, seq DESC LIMIT $2",
            &[&back, &(MAX_DENIALS as i64)],
        )
        .await
        .map_err(AuditStoreError::Read)?
        .iter()
        .filter_map(|r| r.try_get::<_, String>(0).ok())
        .filter_map(|l| denial_of_line(&l))
        .collect();
    let last_sign_in = client
        .query(
            "SELECT line::jsonb->>'idp', max(time) FROM audit_events \
             WHERE time >= $1 AND event = 'sign_in' AND line::jsonb->>'outcome' = 'allow' \
             GROUP BY 1",
            &[&back],
        )
        .await
        .map_err(AuditStoreError::Read)?
        .iter()
        .filter_map(|r| {
            Some((
                r.try_get::<_, Option<String>>(0).ok()??,
                r.try_get::<_, String>(1).ok()?,
            ))
        })
        .collect();
    Ok(FleetActivity {
        hours: hours_of(&rows, now),
        denials,
        last_sign_in,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hourly_rows_land_in_their_hour_and_denials_count_for_any_event() {
        let now = 1_796_205_600 + 1800; // 2026-12-02T10:30:00Z
        let row = |p: &str, e: &str, o: &str, n| (p.to_owned(), e.to_owned(), o.to_owned(), n);
        let rows = [
            row("2026-12-02T10", "sign_in", "allow", 3),
            row("2026-12-02T10", "launch", "allow", 2),
            row("2026-12-02T10", "launch", "deny", 1),
            row("2026-12-02T10", "admin", "deny", 1),
            row("2026-12-02T09", "launch", "allow", 5),
            row("2026-12-02T10", "sign_in", "error", 7),
            row("2026-11-30T10", "launch", "allow", 9),
        ];
        let h = hours_of(&rows, now);
        assert_eq!(h.len(), HOURS);
        let last = h[HOURS - 1];
        assert_eq!((last.sign_ins, last.launches, last.denials), (3, 2, 2));
        assert_eq!(h[HOURS - 2].launches, 5);
        assert_eq!(
            h.iter().map(|h| h.launches).sum::<u32>(),
            7,
            "older rows left out"
        );
    }

    #[test]
    fn a_denial_line_names_who_what_and_the_rule() {
        let d = denial_of_line(r#"{"time":"2026-12-02T10:00:00Z","request_id":"r","event":"launch","outcome":"deny","subject":"s1","email":"ann@corp.example","store":"eu","rule":"contractors-never-eu","reason":"not_entitled","seq":4,"writer":"gw","prev":"x","hash":"y"}"#)
            .expect("a denial");
        assert_eq!(d.event, "launch");
        assert_eq!(d.who, "ann@corp.example");
        assert_eq!(d.rule, "contractors-never-eu");
        assert_eq!(d.reason, "not_entitled");
        assert!(denial_of_line("not json").is_none());
    }
}
