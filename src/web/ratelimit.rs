//! Per-client rate limit for the sign-in endpoints (`/login`, the callbacks, the SAML ACS and SLO).
//!
//! A token bucket per client address, in process memory: each address may send `burst` requests
//! at once and `per_minute` a minute after that. Enough to stop one client from turning the
//! gateway into a load generator against the IdP (every `/login` costs a state entry and an IdP
//! round trip), while an office behind one NAT address signing in at 9:00 is not locked out (the
//! old fixed 60 a minute did exactly that; issue 10). `[rate_limit]` sets both numbers; 0 turns
//! the limit off. It is per replica; a shared limit belongs in front of the gateway.
//! Written here because the well-known crate (tower_governor) lags axum releases; this is small.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;

/// Addresses tracked before buckets that have refilled completely (idle clients) are dropped.
const SWEEP_AT: usize = 10_000;
/// Hard bound on tracked addresses (a client rotating IPv6 addresses must not grow it forever):
/// past it every bucket is forgotten, which only ever lets requests through.
const MAX_TRACKED: usize = 200_000;

#[derive(Clone)]
pub struct RateLimit {
    inner: Arc<Mutex<HashMap<IpAddr, Bucket>>>,
    trusted_proxies: Arc<Vec<ipnet::IpNet>>,
    /// Tokens added per second.
    refill_per_sec: f64,
    burst: f64,
    /// Seconds one token takes to come back, rounded up: the `Retry-After` of a refusal.
    retry_after_secs: u64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimit {
    /// `per_minute` requests a minute per address after a first `burst`. Both must be at least 1
    /// (the configuration turns the limit off with 0 by not installing it).
    pub fn new(per_minute: u32, burst: u32) -> Self {
        Self::behind(per_minute, burst, Vec::new())
    }

    /// A limit that counts per real client behind the given trusted proxies.
    pub fn behind(per_minute: u32, burst: u32, trusted: Vec<ipnet::IpNet>) -> Self {
        let per_minute = per_minute.max(1);
        RateLimit {
            inner: Arc::new(Mutex::new(HashMap::new())),
            trusted_proxies: Arc::new(trusted),
            refill_per_sec: f64::from(per_minute) / 60.0,
            burst: f64::from(burst.max(1)),
            retry_after_secs: 60_u64.div_ceil(u64::from(per_minute)),
        }
    }

    /// Counts one request from `ip`; false when it is over the limit.
    pub fn allow(&self, ip: IpAddr) -> bool {
        self.allow_at(ip, Instant::now())
    }

    /// [`Self::allow`] at a given instant (the clock passed in, for tests).
    pub fn allow_at(&self, ip: IpAddr, now: Instant) -> bool {
        let mut buckets = self.inner.lock();
        if buckets.len() >= SWEEP_AT && !buckets.contains_key(&ip) {
            buckets.retain(|_, b| self.level(b, now) < self.burst);
            if buckets.len() >= MAX_TRACKED {
                tracing::warn!(
                    tracked = buckets.len(),
                    "sign-in rate limit: too many client addresses tracked; forgetting them all"
                );
                buckets.clear();
            }
        }
        let bucket = buckets.entry(ip).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let tokens = self.level(bucket, now);
        *bucket = Bucket { tokens, at: now };
        if tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// The bucket's level at `now`: what it held plus the refill since, up to the burst.
    fn level(&self, b: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        (b.tokens + elapsed * self.refill_per_sec).min(self.burst)
    }

    /// Seconds after which a refused client surely has a token again (one token's refill time;
    /// a partly refilled bucket needs less, so this never invites a second refusal).
    fn retry_after(&self) -> u64 {
        self.retry_after_secs.max(1)
    }
}

pub async fn limit(State(rl): State<RateLimit>, req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let ip = super::client_ip::client_ip(peer, req.headers(), &rl.trusted_proxies);
    match ip {
        Some(ip) if !rl.allow(ip) => {
            let mut resp = (
                StatusCode::TOO_MANY_REQUESTS,
                "Too many sign-in attempts from your address. Wait a minute and try again.\n",
            )
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&rl.retry_after().to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            resp
        }
        _ => next.run(req).await,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn allows_the_burst_per_address_then_refuses() {
        let rl = RateLimit::new(60, 3);
        let t = Instant::now();
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        assert!(rl.allow_at(a, t) && rl.allow_at(a, t) && rl.allow_at(a, t));
        assert!(!rl.allow_at(a, t), "fourth request at once is refused");
        assert!(rl.allow_at(b, t), "another address has its own bucket");
    }

    #[test]
    fn tokens_come_back_at_the_configured_rate_up_to_the_burst() {
        // 6 a minute: one token every 10 s.
        let rl = RateLimit::new(6, 2);
        let a = ip("10.0.0.1");
        let t = Instant::now();
        assert!(rl.allow_at(a, t) && rl.allow_at(a, t));
        assert!(!rl.allow_at(a, t + Duration::from_millis(9_999)));
        assert!(rl.allow_at(a, t + Duration::from_secs(10)));
        assert!(!rl.allow_at(a, t + Duration::from_secs(10)));
        assert_eq!(rl.retry_after(), 10);
        // A long pause refills to the burst, not beyond.
        let later = t + Duration::from_secs(3600);
        assert!(rl.allow_at(a, later) && rl.allow_at(a, later));
        assert!(!rl.allow_at(a, later));
    }

    #[test]
    fn the_default_lets_three_hundred_sign_ins_from_one_address_through_in_a_minute() {
        let d = crate::config::rate_limit::SignInLimit::default();
        let rl = RateLimit::new(d.per_minute, d.burst);
        let a = ip("192.0.2.7");
        let t = Instant::now();
        // A sign-in is two limited requests (`/login`, then the callback or ACS), all in the
        // first second: the 9:00 rush.
        for i in 0..600 {
            assert!(rl.allow_at(a, t), "request {i} refused");
        }
        // And again a minute later: the rate sustains 300 sign-ins a minute.
        let t1 = t + Duration::from_secs(60);
        for i in 0..600 {
            assert!(
                rl.allow_at(a, t1),
                "request {i} of the second minute refused"
            );
        }
    }

    #[test]
    fn idle_addresses_are_forgotten_once_many_are_tracked() {
        let rl = RateLimit::new(60, 1);
        let t = Instant::now();
        for i in 0..SWEEP_AT as u32 {
            assert!(rl.allow_at(IpAddr::from(i.to_be_bytes()), t));
        }
        // A minute on, every bucket has refilled: the next new address sweeps them all out.
        assert!(rl.allow_at(ip("198.51.100.1"), t + Duration::from_secs(60)));
        assert_eq!(rl.inner.lock().len(), 1);
    }
}
