//! `storegate doctor -c FILE`: the live checks an operator (or a Kubernetes init container) runs
//! before serving, one line per check, each failure with the exact fix.
//!
//! Read-only by design: it sends GETs and a Redis PING, never writes (no customer, no hook, no
//! key), and keeps nothing on disk, so it is safe to run against production at any time.

use std::time::Duration;

use crate::clock::UnixTime;
use crate::config::{BigCommerceAccount, Config, IdpConfig, Protocol, SessionBackend};
use crate::federation::saml;

/// A signing certificate expiring sooner than this fails the check (the 30 days).
pub const CERT_WARNING_DAYS: i64 = 30;
/// A store clock further than this from ours fails: login tokens are dated by the store clock,
/// but an offset this large means one of the two clocks is wrong.
pub const MAX_CLOCK_OFFSET_SECS: i64 = 60;

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Pass(String),
    Fail { problem: String, fix: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// What was checked: "idp nam", "bigcommerce main", "session store".
    pub subject: String,
    pub outcome: Outcome,
}

impl Check {
    fn pass(subject: &str, what: impl Into<String>) -> Check {
        Check {
            subject: subject.to_owned(),
            outcome: Outcome::Pass(what.into()),
        }
    }

    fn fail(subject: &str, problem: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            subject: subject.to_owned(),
            outcome: Outcome::Fail {
                problem: problem.into(),
                fix: fix.into(),
            },
        }
    }

    pub fn passed(&self) -> bool {
        matches!(self.outcome, Outcome::Pass(_))
    }

    /// `PASS idp nam: ...` or `FAIL bigcommerce main: ... -> fix: ...`.
    pub fn line(&self) -> String {
        match &self.outcome {
            Outcome::Pass(what) => format!("PASS {}: {what}", self.subject),
            Outcome::Fail { problem, fix } => {
                format!("FAIL {}: {problem} -> fix: {fix}", self.subject)
            }
        }
    }
}

/// Every check of `cfg`, in a stable order: IdPs, BigCommerce accounts, the session store,
/// SCIM and the provisioning queue (when `[scim]` is on).
pub async fn run(cfg: &Config, now: UnixTime) -> Vec<Check> {
    let http = match http_client() {
        Ok(c) => c,
        Err(check) => return vec![check],
    };
    let mut out = Vec::new();
    for idp in &cfg.idps {
        out.push(idp_check(&http, idp, now).await);
    }
    for account in &cfg.bigcommerce {
        out.extend(bigcommerce_checks(&http, account, now).await);
    }
    out.push(session_store_check(cfg).await);
    if cfg.scim.is_some() {
        out.push(scim_check(cfg).await);
        out.push(queue_check(cfg).await);
    }
    out
}

/// What the SCIM data holds: for `doctor` and the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScimSummary {
    pub active_users: usize,
    pub users: usize,
    pub groups: usize,
    /// The newest `meta.lastModified` of any user or group (RFC 3339), if any.
    pub last_write: Option<String>,
}

impl ScimSummary {
    pub fn of(data: &crate::provisioning::scim::ScimData) -> ScimSummary {
        let last_write = data
            .users
            .values()
            .chain(data.groups.values())
            .filter_map(|r| {
                r.get("meta")?
                    .get("lastModified")?
                    .as_str()
                    .map(str::to_owned)
            })
            .filter_map(|t| {
                time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339)
                    .ok()
                    .map(|at| (at, t))
            })
            .max_by_key(|(at, _)| *at)
            .map(|(_, t)| t);
        ScimSummary {
            active_users: data
                .users
                .values()
                .filter(|u| crate::provisioning::scim::user_active(&u.value()))
                .count(),
            users: data.users.len(),
            groups: data.groups.len(),
            last_write,
        }
    }

    /// `12 active users of 14, 3 groups, last write 2026-12-02T10:00:00Z`.
    pub fn describe(&self) -> String {
        format!(
            "{} active user(s) of {}, {} group(s), last write {}",
            self.active_users,
            self.users,
            self.groups,
            self.last_write.as_deref().unwrap_or("never")
        )
    }
}

async fn scim_check(cfg: &Config) -> Check {
    use crate::config::provisioning::ScimStorage;
    let subject = "scim";
    let Some(scim) = &cfg.scim else {
        return Check::pass(subject, "off");
    };
    let (kind, fix) = match &scim.store {
        ScimStorage::Memory => {
            return Check::pass(subject, "memory (this process only; nothing stored to read)");
        }
        ScimStorage::File(dir) => (
            format!("file {}", dir.display()),
            format!(
                "check that `scim.store` names a directory this user may read ({})",
                dir.display()
            ),
        ),
        ScimStorage::Redis => (
            "Redis".to_owned(),
            "check `session.redis_url` (SCIM data lives in the session Redis) and that this host reaches Redis".to_owned(),
        ),
    };
    match crate::app::load_scim(cfg).await {
        Ok(data) => Check::pass(
            subject,
            format!("{kind}: {}", ScimSummary::of(&data).describe()),
        ),
        Err(e) => Check::fail(
            subject,
            format!("the SCIM data cannot be read ({e:#})"),
            fix,
        ),
    }
}

/// The provisioning queue's counts: for `doctor` and the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSummary {
    pub stats: crate::provisioning::queue::QueueStats,
    /// When the oldest queued item was queued (unix seconds).
    pub oldest_at: Option<UnixTime>,
}

impl QueueSummary {
    pub async fn read(
        queue: &dyn crate::provisioning::queue::WorkQueue,
    ) -> Result<QueueSummary, crate::provisioning::queue::QueueError> {
        Ok(QueueSummary {
            stats: queue.stats().await?,
            oldest_at: queue.oldest_queued_at().await?,
        })
    }

    /// `2 waiting, 1 in flight, oldest queued 2026-12-02T10:00:00Z, 0 dead letter(s)`.
    pub fn describe(&self) -> String {
        format!(
            "{} waiting, {} in flight, oldest queued {}, {} dead letter(s)",
            self.stats.waiting,
            self.stats.in_flight,
            self.oldest_at
                .map(crate::clock::rfc3339)
                .unwrap_or_else(|| "-".to_owned()),
            self.stats.dead_letters
        )
    }
}

/// Reads the queue (never takes an item). Dead letters do not fail the check: they are a
/// matter for the `dead_letter` audit events, not a reason to hold a deployment.
async fn queue_check(cfg: &Config) -> Check {
    use crate::config::provisioning::QueueStorage;
    let subject = "provisioning queue";
    let (kind, fix) = match &cfg.provisioning.queue {
        QueueStorage::File(p) => (
            format!("file {}", p.display()),
            format!(
                "check `provisioning.queue`: {} must be a storegate queue file this user may read (move a damaged one away; the next reconcile pass plans again)",
                p.display()
            ),
        ),
        QueueStorage::Redis => (
            "Redis".to_owned(),
            "check `session.redis_url` (the queue lives in the session Redis) and that this host reaches Redis".to_owned(),
        ),
    };
    let read = match crate::app::open_queue(cfg, None) {
        Ok(q) => QueueSummary::read(q.as_ref()).await.map_err(Into::into),
        Err(e) => Err(e),
    };
    match read {
        Ok(q) => {
            let mut what = format!("{kind}: {}", q.describe());
            if q.stats.dead_letters > 0 {
                what.push_str(" (see the `dead_letter` audit events for why)");
            }
            Check::pass(subject, what)
        }
        Err(e) => Check::fail(subject, format!("the queue cannot be read ({e:#})"), fix),
    }
}

fn http_client() -> Result<reqwest::Client, Check> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(3))
        .build()
        .map_err(|e| {
            Check::fail(
                "doctor",
                format!("cannot build an HTTP client: {e}"),
                "check the system's TLS root certificates",
            )
        })
}

/// The BigCommerce checks alone (the console shows them per store, cached).
pub async fn bigcommerce(accounts: &[BigCommerceAccount], now: UnixTime) -> Vec<Check> {
    let http = match http_client() {
        Ok(c) => c,
        Err(check) => return vec![check],
    };
    let mut out = Vec::new();
    for account in accounts {
        out.extend(bigcommerce_checks(&http, account, now).await);
    }
    out
}

async fn idp_check(http: &reqwest::Client, idp: &IdpConfig, now: UnixTime) -> Check {
    let subject = format!("idp {}", idp.id);
    match &idp.protocol {
        Protocol::Oidc(o) => {
            let url = format!(
                "{}/.well-known/openid-configuration",
                o.issuer.trim_end_matches('/')
            );
            let fix = format!(
                "check `issuer` of [[idp]] {} and that this host reaches it (DNS, proxy, firewall)",
                idp.id
            );
            let doc = match http.get(&url).send().await {
                Ok(r) if r.status().is_success() => r.json::<serde_json::Value>().await,
                Ok(r) => {
                    return Check::fail(
                        &subject,
                        format!("discovery {url} answered HTTP {}", r.status().as_u16()),
                        fix,
                    );
                }
                Err(e) => {
                    return Check::fail(
                        &subject,
                        format!(
                            "discovery {url} unreachable ({})",
                            crate::federation::oidc::error_chain(&e)
                        ),
                        fix,
                    );
                }
            };
            match doc {
                Ok(d) if d["issuer"].as_str() == Some(o.issuer.as_str()) => {
                    Check::pass(&subject, format!("discovery answers at {url}"))
                }
                Ok(d) => Check::fail(
                    &subject,
                    format!(
                        "discovery names issuer {}, not the configured {}",
                        d["issuer"], o.issuer
                    ),
                    format!(
                        "set `issuer` of [[idp]] {} to exactly the issuer the provider publishes",
                        idp.id
                    ),
                ),
                Err(e) => Check::fail(&subject, format!("discovery {url} is not JSON ({e})"), fix),
            }
        }
        Protocol::Saml(s) => {
            let xml = match &s.metadata_url {
                Some(url) => match saml::fetch_metadata(http, url).await {
                    Ok(x) => x,
                    Err(e) => {
                        return Check::fail(
                            &subject,
                            format!("metadata {url} unreachable ({e})"),
                            format!(
                                "check `metadata_url` of [[idp]] {} and that this host reaches it",
                                idp.id
                            ),
                        );
                    }
                },
                None => s.metadata_xml.clone(),
            };
            let meta = match saml::parse_idp_metadata(&xml) {
                Ok(m) => m,
                Err(e) => {
                    return Check::fail(
                        &subject,
                        format!("metadata cannot be read ({e})"),
                        "ask the IdP team for its current SAML metadata",
                    );
                }
            };
            let mut soonest: Option<i64> = None;
            for der in &meta.certs {
                match cert_not_after(der.der_data()) {
                    Ok(t) => soonest = Some(soonest.map_or(t, |s: i64| s.min(t))),
                    Err(e) => {
                        return Check::fail(
                            &subject,
                            format!("a signing certificate cannot be read ({e})"),
                            "ask the IdP team for its current SAML metadata",
                        );
                    }
                }
            }
            match soonest {
                None => Check::fail(
                    &subject,
                    "the metadata has no signing certificate",
                    "ask the IdP team to publish its signing certificate in the metadata",
                ),
                Some(t) => cert_verdict(&subject, t, now),
            }
        }
    }
}

/// The verdict on a signing certificate that expires at `not_after` (unix seconds).
pub fn cert_verdict(subject: &str, not_after: UnixTime, now: UnixTime) -> Check {
    let date = time::OffsetDateTime::from_unix_timestamp(not_after)
        .map(|d| d.date().to_string())
        .unwrap_or_else(|_| not_after.to_string());
    let days = (not_after - now).div_euclid(86_400);
    let fix = format!(
        "ask the IdP team to roll the signing certificate and publish the new one in the metadata before {date}, then reload the gateway"
    );
    if not_after <= now {
        Check::fail(
            subject,
            format!("the signing certificate expired on {date}"),
            fix,
        )
    } else if days < CERT_WARNING_DAYS {
        Check::fail(
            subject,
            format!("the signing certificate expires on {date}, in {days} day(s)"),
            fix,
        )
    } else {
        Check::pass(
            subject,
            format!("metadata loads; signing certificate valid until {date}"),
        )
    }
}

pub fn cert_not_after(der: &[u8]) -> Result<UnixTime, String> {
    let x = openssl::x509::X509::from_der(der).map_err(|e| e.to_string())?;
    let epoch = openssl::asn1::Asn1Time::from_unix(0).map_err(|e| e.to_string())?;
    let diff = epoch.diff(x.not_after()).map_err(|e| e.to_string())?;
    Ok(i64::from(diff.days) * 86_400 + i64::from(diff.secs))
}

async fn bigcommerce_checks(
    http: &reqwest::Client,
    account: &BigCommerceAccount,
    now: UnixTime,
) -> Vec<Check> {
    let subject = format!("bigcommerce {}", account.id);
    let base = format!(
        "{}/stores/{}",
        account.api_base.as_str().trim_end_matches('/'),
        account.store_hash
    );
    let get = |path: &str| {
        http.get(format!("{base}{path}"))
            .header("X-Auth-Token", account.access_token.expose())
            .header("Accept", "application/json")
            .send()
    };
    let unreachable = |e: reqwest::Error| {
        Check::fail(
            &subject,
            format!(
                "the API at {} is unreachable ({})",
                account.api_base,
                crate::federation::oidc::error_chain(&e)
            ),
            "check `api_base` and that this host reaches api.bigcommerce.com (proxy, firewall)",
        )
    };
    // The store clock needs a valid token and no scope: it tells a wrong token from a scope.
    let headroom;
    let store_time = match get("/v2/time").await {
        Ok(r) if r.status().as_u16() == 401 => {
            return vec![Check::fail(
                &subject,
                format!(
                    "the access token is refused (HTTP 401) for store {}",
                    account.store_hash
                ),
                format!(
                    "create an API account for store {} in Settings > API accounts and put its access token in `access_token` of [[bigcommerce]] {}",
                    account.store_hash, account.id
                ),
            )];
        }
        Ok(r) if r.status().is_success() => {
            let header = |n: &str| {
                r.headers()
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
            };
            headroom =
                header("x-rate-limit-requests-left").zip(header("x-rate-limit-requests-quota"));
            match r.json::<serde_json::Value>().await {
                Ok(v) => v["time"].as_i64(),
                Err(_) => None,
            }
        }
        Ok(r) => {
            return vec![Check::fail(
                &subject,
                format!("GET /v2/time answered HTTP {}", r.status().as_u16()),
                "check `store_hash` and BigCommerce's status page",
            )];
        }
        Err(e) => return vec![unreachable(e)],
    };
    let mut out = vec![Check::pass(&subject, "the access token is accepted")];
    // Read-only probes of the scopes the gateway uses. A read shows the scope is granted; that
    // it is granted with `modify` only a write would show, which doctor never makes.
    let scopes = [
        ("/v3/customers?limit=1", "store_v2_customers", "Customers"),
        (
            "/v2/customer_groups?limit=1",
            "store_v2_customers",
            "Customers",
        ),
    ];
    let mut missing = Vec::new();
    for (path, scope, label) in scopes {
        match get(path).await {
            Ok(r) if r.status().as_u16() == 403 => {
                if !missing.contains(&(scope, label)) {
                    missing.push((scope, label));
                }
            }
            Ok(r) if r.status().is_success() => {}
            Ok(r) => {
                out.push(Check::fail(
                    &subject,
                    format!("GET {path} answered HTTP {}", r.status().as_u16()),
                    "retry; if it persists, check BigCommerce's status page",
                ));
            }
            Err(e) => out.push(unreachable(e)),
        }
    }
    if missing.is_empty() {
        out.push(Check::pass(&subject, "scopes present: store_v2_customers"));
    }
    for (scope, label) in missing {
        out.push(Check::fail(
            &subject,
            format!("the API account lacks `{scope}` ({label})"),
            format!("add {label}: modify to the API account in Settings > API accounts, then put the new access token in `access_token` of [[bigcommerce]] {}", account.id),
        ));
    }
    match store_time {
        Some(t) if (t - now).abs() > MAX_CLOCK_OFFSET_SECS => out.push(Check::fail(
            &subject,
            format!("the store clock is {}s from this host's", t - now),
            "synchronise this host's clock (NTP); if it is right, tell BigCommerce support",
        )),
        Some(t) => out.push(Check::pass(
            &subject,
            format!("store clock offset {}s", t - now),
        )),
        None => out.push(Check::fail(
            &subject,
            "GET /v2/time gave no time",
            "check `api_base` points at the BigCommerce API",
        )),
    }
    // What is left of the store's request quota in the current window, as the store counts it
    // (shared by every client of the API account, this gateway's replicas included).
    match headroom {
        Some((0, quota)) => out.push(Check::fail(
            &subject,
            format!("the rate limit is spent: 0 of {quota} requests left in this window"),
            "find what else uses this API account (another app, a script) or ask BigCommerce for a higher plan; provisioning pauses until the window resets",
        )),
        Some((left, quota)) => out.push(Check::pass(
            &subject,
            format!("rate-limit headroom {left} of {quota} requests left in this window"),
        )),
        None => {}
    }
    out
}

async fn session_store_check(cfg: &Config) -> Check {
    let subject = "session store";
    if let SessionBackend::Memory = cfg.session.backend {
        return Check::pass(subject, "memory (this process only; nothing to reach)");
    }
    let store = match crate::session::Store::from_config(&cfg.session) {
        Ok(s) => s,
        Err(e) => {
            return Check::fail(
                subject,
                format!("Redis cannot be set up ({e})"),
                "fix `[session]` redis settings",
            );
        }
    };
    match store.check().await {
        Ok(()) => Check::pass(subject, "Redis answers PING"),
        Err(e) => Check::fail(
            subject,
            format!("Redis does not answer ({e})"),
            "check `session.redis_url` (or the Sentinel/Cluster nodes), the password, and that this host reaches Redis",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_verdicts() {
        let day = 86_400;
        let now = 1_767_225_600; // 2026-01-01
        let ok = cert_verdict("idp x", now + 90 * day, now);
        assert_eq!(
            ok.line(),
            "PASS idp x: metadata loads; signing certificate valid until 2026-04-01"
        );
        let soon = cert_verdict("idp x", now + 10 * day, now);
        assert_eq!(
            soon.line(),
            "FAIL idp x: the signing certificate expires on 2026-01-11, in 10 day(s) -> fix: ask the IdP team to roll the signing certificate and publish the new one in the metadata before 2026-01-11, then reload the gateway"
        );
        let gone = cert_verdict("idp x", now - day, now);
        assert!(!gone.passed());
        assert!(
            gone.line()
                .starts_with("FAIL idp x: the signing certificate expired on 2025-12-31")
        );
    }

    #[test]
    fn not_after_is_read_from_the_certificate() {
        use openssl::asn1::Asn1Time;
        use openssl::pkey::PKey;
        use openssl::rsa::Rsa;
        use openssl::x509::X509Builder;
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let mut b = X509Builder::new().unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::from_unix(1_000_000_000).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::from_unix(1_767_225_600).unwrap())
            .unwrap();
        b.sign(&key, openssl::hash::MessageDigest::sha256())
            .unwrap();
        let der = b.build().to_der().unwrap();
        assert_eq!(cert_not_after(&der).unwrap(), 1_767_225_600);
    }
}
