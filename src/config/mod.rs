//! Configuration: a file shape ([`file`]), then a validated value ([`Config`]).
//!
//! [`load_str`] is pure: text + environment in, every problem with its line out. Nothing here opens
//! a socket or builds a client; `serve` does that from the validated value.

pub mod account;
pub mod conditions;
pub mod diag;
pub mod file;
pub mod permission_set;
pub mod provisioning;
pub mod rate_limit;
pub mod route;
pub mod telemetry;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

use crate::identity::StoreId;
use crate::policy::Policy;
use crate::redirect::LocalPath;
use crate::secret::Secret;

pub use diag::{Diagnostic, Diagnostics};

#[derive(Debug, Clone)]
pub struct Config {
    pub public_url: Url,
    pub listen: SocketAddr,
    pub allow_insecure_http: bool,
    pub support_contact: String,
    /// Proxies whose `X-Forwarded-For` is believed (see `file::FileConfig::trusted_proxies`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub session: SessionConfig,
    pub audit: AuditTarget,
    /// `[audit]` chain, writer id and rotation.
    pub audit_trail: crate::audit::TrailConfig,
    /// `[audit] postgres_url`: the central sink, when set.
    pub audit_postgres: Option<crate::audit::postgres::SinkConfig>,
    /// The SAML service provider, when `[saml]` is configured.
    pub saml: Option<SamlSp>,
    pub idps: Vec<IdpConfig>,
    pub bigcommerce: Vec<BigCommerceAccount>,
    pub stores: Vec<Store>,
    /// `[[account]]`: control-panel users managed through the Account API (issue 12).
    pub accounts: Vec<account::ControlPanelAccount>,
    pub policy: Policy,
    /// `[scim]`: `None` when SCIM is off.
    pub scim: Option<provisioning::ScimConfig>,
    pub provisioning: provisioning::ProvisioningConfig,
    /// `[telemetry]`: `None` when trace export is off.
    pub telemetry: Option<telemetry::TelemetryConfig>,
    /// `[rate_limit]`: the sign-in limit per client address.
    pub rate_limit: rate_limit::RateLimitConfig,
    /// `[admin]`: who may use `/admin`; `None` = no console (404).
    pub admin: Option<crate::policy::admin::AdminRule>,
    /// `[[route]]` and `[forward_auth]`: forward authentication and the built-in proxy.
    pub forward_auth: route::ForwardAuthConfig,
    /// Things `storegate check` warns about (file line + message); none stop the gateway.
    pub warnings: Vec<Diagnostic>,
}

#[derive(Debug, Clone)]
pub enum SessionBackend {
    Memory,
    Redis(RedisTopology),
}

/// `session.redis_mode`: how the gateway finds its Redis. Every URL may carry an ACL user and
/// password, so all of them are secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTopology {
    /// `redis_url`: one server (or a managed endpoint that fails over behind one address).
    Standalone { url: Secret },
    /// `redis_nodes` are the sentinels (their URLs' user and password authenticate to the
    /// sentinels); the master named `redis_sentinel_master` is asked of them, and asked again
    /// after a failover. `redis_username` / `redis_password` authenticate to the master.
    /// `rediss://` sentinels mean TLS to the sentinels and to the master.
    Sentinel {
        sentinels: Vec<Secret>,
        master: String,
        username: Option<String>,
        password: Option<Secret>,
    },
    /// `redis_nodes` are seed nodes of a Redis Cluster; the rest is discovered (the crate follows
    /// MOVED and ASK). User, password and TLS come from the first node's URL.
    Cluster { nodes: Vec<Secret> },
}

impl RedisTopology {
    /// `standalone`, `sentinel` or `cluster`, as written in `session.redis_mode`.
    pub fn mode(&self) -> &'static str {
        match self {
            RedisTopology::Standalone { .. } => "standalone",
            RedisTopology::Sentinel { .. } => "sentinel",
            RedisTopology::Cluster { .. } => "cluster",
        }
    }

    /// One line for `storegate check`: mode, addresses and TLS, never a user or password.
    pub fn summary(&self) -> String {
        let hosts = |urls: &[Secret]| {
            urls.iter()
                .map(|u| match url::Url::parse(u.expose()) {
                    Ok(p) => format!(
                        "{}:{}",
                        p.host_str().unwrap_or("?"),
                        p.port().unwrap_or(6379)
                    ),
                    Err(_) => "(unparsable URL)".to_owned(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let tls = if self.uses_tls() { "TLS" } else { "no TLS" };
        match self {
            RedisTopology::Standalone { url } => format!(
                "standalone, {} ({tls})",
                if url.expose().starts_with("redis+unix://") {
                    "Unix socket".to_owned()
                } else {
                    hosts(std::slice::from_ref(url))
                }
            ),
            RedisTopology::Sentinel {
                sentinels, master, ..
            } => format!(
                "sentinel, master \"{master}\" through {} sentinel(s) {} ({tls})",
                sentinels.len(),
                hosts(sentinels)
            ),
            RedisTopology::Cluster { nodes } => format!(
                "cluster, {} seed node(s) {} ({tls})",
                nodes.len(),
                hosts(nodes)
            ),
        }
    }

    /// Whether the connections use TLS (`rediss://`).
    pub fn uses_tls(&self) -> bool {
        match self {
            RedisTopology::Standalone { url } => url.expose().starts_with("rediss://"),
            RedisTopology::Sentinel { sentinels: n, .. } | RedisTopology::Cluster { nodes: n } => n
                .first()
                .is_some_and(|u| u.expose().starts_with("rediss://")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub backend: SessionBackend,
    /// `session.redis_ca_file`: extra CA certificates for `rediss://` (else the OS trust store).
    pub redis_ca_file: Option<PathBuf>,
    pub idle_timeout: Duration,
    pub absolute_timeout: Duration,
    pub cookie_name: String,
    /// `session.cookie_domain`, lower-cased; `public_url`'s host is inside it.
    pub cookie_domain: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditTarget {
    Stdout,
    File(PathBuf),
}

// The identity providers' settings are defined beside their user, `federation`, so that it
// needs nothing from `config` (which imports it to check SAML metadata and keys).
pub use crate::federation::saml::settings::{AuthnContextRule, SamlIdp, SamlSp};
pub use crate::federation::settings::{
    ClaimMapping, IdpConfig, OidcIdp, Protocol, TokenAuthMethod,
};

#[derive(Debug, Clone)]
pub struct BigCommerceAccount {
    pub id: String,
    pub store_hash: String,
    pub api_base: Url,
    pub access_token: Secret,
    pub client_id: String,
    pub client_secret: Secret,
    pub timeout: Duration,
    /// B2B Edition API access, when configured.
    pub b2b: Option<B2bAccess>,
    /// The webhooks' shared secret (`X-Storegate-Hook-Secret`), when webhooks are configured.
    pub webhook_secret: Option<Secret>,
}

#[derive(Debug, Clone)]
pub struct B2bAccess {
    pub api_base: Url,
    pub access_token: Secret,
}

#[derive(Debug, Clone)]
pub struct Store {
    pub id: StoreId,
    pub name: String,
    /// Id of the `[[bigcommerce]]` account.
    pub account: String,
    pub channel_id: u64,
    pub url: Url,
    pub description: Option<String>,
    pub default_path: LocalPath,
    pub bind_request_ip: bool,
    /// Lower-cased tags rules select (`store_tags`).
    pub tags: Vec<String>,
    pub template: Option<String>,
    /// The portal tile's picture (`logo`); none means initials.
    pub logo: Option<Logo>,
}

/// Where a store's logo comes from (`[[store]] logo`).
#[derive(Debug, Clone, PartialEq)]
pub enum Logo {
    /// An `https://` image the browser loads itself (its origin joins the portal's `img-src`).
    Url(Url),
    /// An SVG document read from disk at load time, served at `/static/logos/{store}.svg`.
    Svg(std::sync::Arc<str>),
}

impl Config {
    pub fn store(&self, id: &StoreId) -> Option<&Store> {
        self.stores.iter().find(|s| &s.id == id)
    }
    pub fn account(&self, id: &str) -> Option<&BigCommerceAccount> {
        self.bigcommerce.iter().find(|a| a.id == id)
    }
    pub fn idp(&self, id: &str) -> Option<&IdpConfig> {
        self.idps.iter().find(|i| i.id.as_str() == id)
    }
    /// Base URL without a trailing slash.
    pub fn base_url(&self) -> &str {
        self.public_url.as_str().trim_end_matches('/')
    }
    /// Where the IdP sends the browser after sign-out (register it as the logout redirect URI).
    pub fn logout_uri(&self) -> String {
        format!("{}/signed-out", self.base_url())
    }
}

/// Where `${NAME}` references and `*_file` paths are resolved.
pub trait Environment {
    fn var(&self, name: &str) -> Option<String>;
    fn read_file(&self, path: &Path) -> std::io::Result<String>;
}

/// No environment variables, files read as given: for configuration text generated in code (the
/// demo, tests), where every value is literal.
pub struct LiteralEnv;

impl Environment for LiteralEnv {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
    fn read_file(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

/// The process environment and file system.
pub struct ProcessEnv {
    /// `*_file` paths are relative to the configuration file's folder.
    pub base_dir: PathBuf,
}

impl Environment for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
    fn read_file(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(self.base_dir.join(path))
    }
}

/// Loads and validates a configuration file from disk.
pub fn load_file(path: &Path) -> Result<Config, Diagnostics> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Diagnostics {
        file: name.clone(),
        items: vec![Diagnostic {
            line: 1,
            message: format!("cannot read the file: {e}"),
        }],
    })?;
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    load_str(&text, &name, &ProcessEnv { base_dir })
}

/// Parses and validates configuration text; every problem is reported, each with its line.
pub fn load_str(text: &str, file_name: &str, env: &dyn Environment) -> Result<Config, Diagnostics> {
    validate::load(text, env).map_err(|items| Diagnostics {
        file: file_name.to_owned(),
        items,
    })
}

#[cfg(test)]
mod tests;
