//! Reading an access end date the IdP releases (an Identity Governance grant with an expiration
//! date), for rules with `expires_claim`.

use crate::clock::UnixTime;
use crate::identity::Identity;

/// Values above this are read as milliseconds: read as seconds they would lie thousands of years
/// ahead, which would quietly make a time-bound grant permanent.
const MILLIS_THRESHOLD: i64 = 100_000_000_000;

/// Parses an expiry value: RFC 3339 (`2026-12-01T00:00:00Z`), LDAP generalized time as
/// eDirectory stores it (`20261201000000Z`), or Unix time (seconds; milliseconds when too large to
/// be seconds). Anything else is `None`.
pub fn parse_expiry(raw: &str) -> Option<UnixTime> {
    use time::format_description::well_known::Rfc3339;
    let raw = raw.trim();
    if let Ok(t) = time::OffsetDateTime::parse(raw, &Rfc3339) {
        return Some(t.unix_timestamp());
    }
    if let Some(digits) = raw.strip_suffix('Z').or_else(|| raw.strip_suffix('z'))
        && digits.len() == 14
        && digits.bytes().all(|b| b.is_ascii_digit())
    {
        let n = |a: usize, b: usize| digits[a..b].parse::<i32>().ok();
        let month = time::Month::try_from(u8::try_from(n(4, 6)?).ok()?).ok()?;
        let date =
            time::Date::from_calendar_date(n(0, 4)?, month, u8::try_from(n(6, 8)?).ok()?).ok()?;
        let t = time::Time::from_hms(
            u8::try_from(n(8, 10)?).ok()?,
            u8::try_from(n(10, 12)?).ok()?,
            u8::try_from(n(12, 14)?).ok()?,
        )
        .ok()?;
        return Some(date.with_time(t).assume_utc().unix_timestamp());
    }
    let n: i64 = raw.parse().ok()?;
    if n < 0 {
        return None;
    }
    Some(if n > MILLIS_THRESHOLD { n / 1000 } else { n })
}

/// The identity's expiry from `claim`: the earliest readable value; `None` when the claim is
/// absent, or any of its values is unreadable (fail closed: a garbled date grants nothing).
pub fn read_expiry(id: &Identity, claim: &str) -> Option<UnixTime> {
    let values = id.attributes.get(claim)?;
    let mut earliest: Option<UnixTime> = None;
    for v in values {
        let t = parse_expiry(v)?;
        earliest = Some(earliest.map_or(t, |e| e.min(t)));
    }
    earliest
}
