//! Per-client rate limit for the sign-in endpoints (`/login`, the callbacks).
//!
//! A fixed window per client address, in process memory: enough to stop one client from turning
//! the gateway into a load generator against the IdP (every `/login` costs a discovery lookup and a
//! state entry). It is per replica; a shared limit belongs in front of the gateway.
//! Written here because the well-known crate (tower_governor) lags axum releases; this is small.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;

#[derive(Clone)]
pub struct RateLimit {
    inner: Arc<Mutex<Window>>,
    trusted_proxies: Arc<Vec<ipnet::IpNet>>,
    per_window: u32,
    window: Duration,
}

struct Window {
    started: Instant,
    counts: HashMap<IpAddr, u32>,
}

impl RateLimit {
    pub fn new(per_window: u32, window: Duration) -> Self {
        Self::behind(per_window, window, Vec::new())
    }

    /// A limit that counts per real client behind the given trusted proxies.
    pub fn behind(per_window: u32, window: Duration, trusted: Vec<ipnet::IpNet>) -> Self {
        RateLimit {
            trusted_proxies: Arc::new(trusted),
            inner: Arc::new(Mutex::new(Window {
                started: Instant::now(),
                counts: HashMap::new(),
            })),
            per_window,
            window,
        }
    }

    /// Counts one request from `ip`; false when it is over the limit.
    pub fn allow(&self, ip: IpAddr) -> bool {
        let mut w = self.inner.lock();
        if w.started.elapsed() >= self.window {
            w.started = Instant::now();
            w.counts.clear();
        }
        let n = w.counts.entry(ip).or_insert(0);
        *n = n.saturating_add(1);
        *n <= self.per_window
    }

    fn retry_after(&self) -> u64 {
        let w = self.inner.lock();
        self.window
            .saturating_sub(w.started.elapsed())
            .as_secs()
            .max(1)
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
    use super::*;

    #[test]
    fn allows_up_to_the_limit_per_address_then_refuses() {
        let rl = RateLimit::new(3, Duration::from_secs(60));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(rl.allow(a) && rl.allow(a) && rl.allow(a));
        assert!(!rl.allow(a), "fourth request in the window is refused");
        assert!(rl.allow(b), "another address has its own budget");
    }

    #[test]
    fn a_new_window_resets_the_counts() {
        let rl = RateLimit::new(1, Duration::from_millis(0));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(rl.allow(a));
        assert!(rl.allow(a), "window of zero length restarts every time");
    }
}
