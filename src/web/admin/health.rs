//! The console's status rows, one job each: the IdPs (discovery or metadata age, signing
//! certificate, last sign-in), the BigCommerce stores (`storegate doctor`'s checks), SCIM
//! (population, last write) and the provisioning queue (depth, oldest item, dead letters).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::clock::{UnixTime, rfc3339};
use crate::config::Protocol;
use crate::config::provisioning::{QueueStorage, ScimStorage};
use crate::doctor::{CERT_WARNING_DAYS, Check, Outcome, QueueSummary, ScimSummary};
use crate::web::AppState;

pub struct IdpRow {
    pub id: String,
    pub protocol: &'static str,
    pub status: String,
    pub ok: bool,
    /// "fetched 12 min ago" / "not loaded yet".
    pub age: String,
    pub cert: String,
    /// False when the certificate expired or expires within [`CERT_WARNING_DAYS`].
    pub cert_ok: bool,
    /// "2026-12-02T10:00:00Z (every replica)" or "none seen (this replica)".
    pub last_sign_in: String,
}

/// `12 s`, `5 min`, `3 h`, `2 d` ago.
pub fn age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s} s ago"),
        60..3600 => format!("{} min ago", s / 60),
        3600..86_400 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86_400),
    }
}

/// The soonest-expiring certificate of `ders` as the console words it, and whether it is fine.
pub fn cert_state(ders: &[Vec<u8>], now: UnixTime) -> (String, bool) {
    let soonest = ders
        .iter()
        .filter_map(|d| crate::doctor::cert_not_after(d).ok())
        .min();
    let Some(t) = soonest else {
        return ("no signing certificate in the metadata".to_owned(), false);
    };
    let date = rfc3339(t).chars().take(10).collect::<String>();
    let days = (t - now).div_euclid(86_400);
    if t <= now {
        (format!("expired on {date}"), false)
    } else if days < CERT_WARNING_DAYS {
        (
            format!("expires on {date}, in {days} day(s): ask the IdP team to roll it"),
            false,
        )
    } else {
        (format!("valid until {date}"), true)
    }
}

pub async fn idp_rows(
    state: &AppState,
    now: UnixTime,
    last_sign_in: &BTreeMap<String, String>,
    scope: &str,
) -> Vec<IdpRow> {
    let last = |id: &str| match last_sign_in.get(id) {
        Some(t) => format!("{t} ({scope})"),
        None => format!("none seen ({scope})"),
    };
    let mut rows = Vec::new();
    for (id, p) in state.providers.iter() {
        let (ok, status) = match p.check_ready().await {
            Ok(()) => (true, "discovery answers".to_owned()),
            Err(e) => (false, e.to_string()),
        };
        rows.push(IdpRow {
            id: id.clone(),
            protocol: "OIDC",
            status,
            ok,
            age: p
                .discovery_age()
                .await
                .map_or("not fetched yet".to_owned(), |d| {
                    format!("discovery fetched {}", age(d))
                }),
            cert: "none to expire (tokens are checked with the JWKS keys)".to_owned(),
            cert_ok: true,
            last_sign_in: last(id),
        });
    }
    for (id, p) in state.saml.iter().flat_map(|s| s.providers.iter()) {
        let (ok, status) = match p.check_ready() {
            Ok(()) => (true, "metadata loaded".to_owned()),
            Err(e) => (false, e),
        };
        let (age_text, (cert, cert_ok)) = match p.metadata_status() {
            Some((d, certs)) => (
                format!("metadata loaded {}", age(d)),
                cert_state(&certs, now),
            ),
            None => ("not loaded yet".to_owned(), ("unknown".to_owned(), false)),
        };
        rows.push(IdpRow {
            id: id.to_string(),
            protocol: "SAML",
            status,
            ok,
            age: age_text,
            cert,
            cert_ok,
            last_sign_in: last(id.as_str()),
        });
    }
    for idp in &state.config.idps {
        if !rows.iter().any(|r| r.id == idp.id.as_str()) {
            let protocol = match idp.protocol {
                Protocol::Oidc(_) => "OIDC",
                Protocol::Saml(_) => "SAML",
            };
            rows.push(IdpRow {
                id: idp.id.to_string(),
                protocol,
                status: "not started".into(),
                ok: false,
                age: "not loaded".into(),
                cert: "unknown".into(),
                cert_ok: false,
                last_sign_in: last(idp.id.as_str()),
            });
        }
    }
    rows
}

pub struct CheckLine {
    pub ok: bool,
    pub text: String,
}

/// One `[[bigcommerce]]` account (one BigCommerce store) and the storefronts it serves.
pub struct StoreHealth {
    pub account: String,
    pub store_hash: String,
    pub checks: Vec<CheckLine>,
    /// `name (id)` of each `[[store]]` on this account.
    pub stores: Vec<String>,
}

pub fn store_rows(state: &AppState, checks: &[Check]) -> Vec<StoreHealth> {
    let snap = state.policy();
    state
        .config
        .bigcommerce
        .iter()
        .map(|a| {
            let subject = format!("bigcommerce {}", a.id);
            StoreHealth {
                account: a.id.clone(),
                store_hash: a.store_hash.clone(),
                checks: checks
                    .iter()
                    .filter(|c| c.subject == subject || c.subject == "doctor")
                    .map(|c| match &c.outcome {
                        Outcome::Pass(what) => CheckLine {
                            ok: true,
                            text: what.clone(),
                        },
                        Outcome::Fail { problem, fix } => CheckLine {
                            ok: false,
                            text: format!("{problem}. Fix: {fix}"),
                        },
                    })
                    .collect(),
                stores: snap
                    .stores
                    .iter()
                    .filter(|s| s.account == a.id)
                    .map(|s| format!("{} ({})", s.name, s.id))
                    .collect(),
            }
        })
        .collect()
}

pub struct ScimRow {
    pub ok: bool,
    pub text: String,
    pub scope: &'static str,
}

pub async fn scim_row(state: &AppState) -> ScimRow {
    let scope = match state.config.scim.as_ref().map(|s| &s.store) {
        Some(ScimStorage::Redis) => "every replica (Redis)",
        _ => "this replica",
    };
    let Some(scim) = &state.scim else {
        return ScimRow {
            ok: true,
            text: "off".to_owned(),
            scope,
        };
    };
    match scim.snapshot().await {
        Ok(data) => ScimRow {
            ok: true,
            text: ScimSummary::of(&data).describe(),
            scope,
        },
        Err(e) => ScimRow {
            ok: false,
            text: format!("cannot be read: {}", e.detail),
            scope,
        },
    }
}

pub struct QueueRow {
    pub ok: bool,
    pub text: String,
    pub scope: &'static str,
}

pub async fn queue_row(state: &AppState) -> QueueRow {
    let scope = match state.config.provisioning.queue {
        QueueStorage::Redis => "every replica (Redis)",
        QueueStorage::File(_) => "this replica",
    };
    let Some(queue) = state.recent.queue() else {
        return QueueRow {
            ok: true,
            text: "no scheduled reconcile on this replica".to_owned(),
            scope,
        };
    };
    match QueueSummary::read(queue.as_ref()).await {
        Ok(q) => QueueRow {
            ok: q.stats.dead_letters == 0,
            text: q.describe(),
            scope,
        },
        Err(e) => QueueRow {
            ok: false,
            text: format!("cannot be read: {e:#}"),
            scope,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_naturally() {
        assert_eq!(age(Duration::from_secs(5)), "5 s ago");
        assert_eq!(age(Duration::from_secs(600)), "10 min ago");
        assert_eq!(age(Duration::from_secs(7200)), "2 h ago");
        assert_eq!(age(Duration::from_secs(3 * 86_400)), "3 d ago");
    }

    fn cert(not_after: i64) -> Vec<u8> {
        use openssl::asn1::Asn1Time;
        use openssl::pkey::PKey;
        use openssl::rsa::Rsa;
        use openssl::x509::X509Builder;
        let key = PKey::from_rsa(Rsa::generate(2048).expect("rsa")).expect("key");
        let mut b = X509Builder::new().expect("builder");
        b.set_pubkey(&key).expect("pubkey");
        b.set_not_before(&Asn1Time::from_unix(1_000_000_000).expect("time"))
            .expect("not before");
        b.set_not_after(&Asn1Time::from_unix(not_after).expect("time"))
            .expect("not after");
        b.sign(&key, openssl::hash::MessageDigest::sha256())
            .expect("sign");
        b.build().to_der().expect("der")
    }

    #[test]
    fn the_soonest_certificate_decides_with_a_warning_30_days_ahead() {
        let day = 86_400;
        let now = 1_767_225_600; // 2026-01-01
        let far = cert(now + 90 * day);
        let soon = cert(now + 10 * day);
        assert_eq!(
            cert_state(std::slice::from_ref(&far), now),
            ("valid until 2026-04-01".to_owned(), true)
        );
        assert_eq!(
            cert_state(&[far.clone(), soon], now),
            (
                "expires on 2026-01-11, in 10 day(s): ask the IdP team to roll it".to_owned(),
                false
            )
        );
        assert_eq!(
            cert_state(&[cert(now - day)], now),
            ("expired on 2025-12-31".to_owned(), false)
        );
        assert_eq!(
            cert_state(&[], now),
            ("no signing certificate in the metadata".to_owned(), false)
        );
    }
}
