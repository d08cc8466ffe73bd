//! `[[route]]` and `[forward_auth]`: the web tools the gateway protects through its forward-auth
//! endpoint (`GET /auth/verify`) or proxies itself (`upstream`). See docs/reverse-proxy.md.

use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::conditions::ConditionsFile;
use crate::policy::route::RouteTable;

/// The identity header sent to upstreams unless a route names another.
pub const DEFAULT_IDENTITY_HEADER: &str = "X-Storegate-Identity";

/// One protected web tool (a host and a path prefix).
#[derive(Debug, Deserialize)]
pub struct RouteFile {
    /// Unique; the identity token's audience and the name audit events and 403 pages give.
    pub name: String,
    /// The tool's host name as browsers use it (`orders.example.com`, or `host:port`). Required.
    pub host: String,
    /// The path prefix this route covers; the longest matching prefix on a host wins. Default `/`.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Conditions, as in `[[rule]]`: all set kinds must hold (values inside one kind OR-ed).
    /// Default none (every signed-in person).
    #[serde(flatten)]
    pub conditions: ConditionsFile,
    /// Authentication contract (acr) the session must carry. Default none.
    #[serde(default)]
    pub require_acr: Option<String>,
    /// `http(s)://host:port` the built-in proxy forwards to. Default none (forward-auth only).
    #[serde(default)]
    pub upstream: Option<String>,
    /// The header carrying the signed identity token. Default `X-Storegate-Identity`.
    #[serde(default)]
    pub identity_header: Option<String>,
    /// Built-in proxy, this route only: `[forward_auth] upstream_timeout` for its upstream
    /// (`"30s"`). Default `[forward_auth]`'s. Needs `upstream`.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Built-in proxy, this route only: `[forward_auth] max_body` (`"10MiB"`). Default
    /// `[forward_auth]`'s. Needs `upstream`.
    #[serde(default)]
    pub max_body: Option<String>,
}

/// `[forward_auth]`: the identity tokens and the built-in proxy's limits.
#[derive(Debug, Default, Deserialize)]
pub struct ForwardAuthFile {
    /// PEM EC P-256 private key (PKCS#8 or SEC1) that signs identity tokens (ES256). Default: a
    /// key generated at start (one process only: replicas must share a file).
    #[serde(default)]
    pub signing_key_file: Option<String>,
    /// Public or private PEM keys of earlier signing keys, still published in the JWKS so tokens
    /// they signed verify until they expire (key rotation). Default none.
    #[serde(default)]
    pub previous_key_files: Vec<String>,
    /// Lifetime of an identity token. Default 5m (at most 1h).
    #[serde(default)]
    pub token_lifetime: Option<String>,
    /// Built-in proxy: the upstream's response head must arrive within this, and its body may
    /// pause no longer than this between two pieces (a long download is fine, a hung one is
    /// not). Connecting may take at most 5s of it. Default 60s.
    #[serde(default)]
    pub upstream_timeout: Option<String>,
    /// Built-in proxy: largest request body forwarded (`"10MiB"`, bytes). Default 10 MiB.
    #[serde(default)]
    pub max_body: Option<String>,
}

/// A route's proxy-side settings, by route name (the decision is in [`RouteTable`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTarget {
    pub name: String,
    pub upstream: Option<Url>,
    /// Lower-cased header name.
    pub identity_header: String,
    /// This route's own upstream timeout and body limit; `None`: `[forward_auth]`'s.
    pub limits: RouteLimits,
}

/// A route's own `timeout` and `max_body` (built-in proxy); `None` falls back to
/// `[forward_auth]`'s `upstream_timeout` and `max_body`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteLimits {
    pub timeout: Option<Duration>,
    pub max_body: Option<usize>,
}

/// `[forward_auth]` and every `[[route]]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardAuthConfig {
    pub routes: RouteTable,
    pub targets: Vec<RouteTarget>,
    /// The PEM of `signing_key_file` (checked to be a P-256 key); `None`: generate one at start.
    pub signing_key_pem: Option<crate::secret::Secret>,
    /// The public JWKs of `previous_key_files`, published beside the current key.
    pub previous_keys: Vec<crate::forward::keys::PublicJwk>,
    pub token_lifetime: Duration,
    pub upstream_timeout: Duration,
    pub max_body: usize,
}

impl Default for ForwardAuthConfig {
    fn default() -> Self {
        ForwardAuthConfig {
            routes: RouteTable::default(),
            targets: Vec::new(),
            signing_key_pem: None,
            previous_keys: Vec::new(),
            token_lifetime: Duration::from_secs(300),
            upstream_timeout: Duration::from_secs(60),
            max_body: 10 * 1024 * 1024,
        }
    }
}

impl ForwardAuthConfig {
    pub fn target(&self, route: &str) -> Option<&RouteTarget> {
        self.targets.iter().find(|t| t.name == route)
    }

    /// The upstream timeout of `target`: its own, else `[forward_auth]`'s.
    pub fn timeout_of(&self, target: &RouteTarget) -> Duration {
        target.limits.timeout.unwrap_or(self.upstream_timeout)
    }

    /// The request body limit of `target`: its own, else `[forward_auth]`'s.
    pub fn max_body_of(&self, target: &RouteTarget) -> usize {
        target.limits.max_body.unwrap_or(self.max_body)
    }

    /// The shortest upstream timeout of any route (the pooled client's connect bound).
    pub fn shortest_timeout(&self) -> Duration {
        self.targets
            .iter()
            .filter_map(|t| t.limits.timeout)
            .fold(self.upstream_timeout, Duration::min)
    }

    /// Every identity header name some route uses (stripped from every incoming request).
    pub fn identity_headers(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .targets
            .iter()
            .map(|t| t.identity_header.clone())
            .chain(std::iter::once(
                DEFAULT_IDENTITY_HEADER.to_ascii_lowercase(),
            ))
            .collect();
        out.sort();
        out.dedup();
        out
    }
}
