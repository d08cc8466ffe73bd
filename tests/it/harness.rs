//! A running gateway on 127.0.0.1 with the BigCommerce simulator behind it, configured through
//! the same TOML path as production (`config::load_str`), with the audit trail captured.

use std::sync::Mutex;

use storegate::audit::{AuditEvent, AuditLog};
use storegate::bigcommerce::sim::{SimChannel, SimConfig, SimHandle, SimStore, Simulator};
use storegate::clock::OffsetClock;
use storegate::config::{self, Environment};
use storegate::secret::Secret;
use storegate::web::{self, AppState};
use tokio::net::TcpListener;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;

pub const IDP: &str = "nam";
pub const MAIN_HASH: &str = "abc123";
pub const OUTLET_HASH: &str = "xyz789";

/// Environment with no variables: tests write literal values.
struct NoEnv;
impl Environment for NoEnv {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
    fn read_file(&self, p: &std::path::Path) -> std::io::Result<String> {
        std::fs::read_to_string(p)
    }
}

/// A gateway port taken before the IdP starts (the IdP must know the redirect URI).
pub struct Reserved {
    listener: TcpListener,
    pub base: String,
}

impl Reserved {
    pub async fn new() -> Reserved {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind gateway");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        Reserved { listener, base }
    }

    pub fn redirect_uri(&self) -> String {
        format!("{}/oidc/{IDP}/callback", self.base)
    }
}

pub struct Opts {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    pub redis_url: Option<String>,
    /// Extra lines appended to the `[[idp]]` table (e.g. claim mapping).
    pub idp_extra: String,
    /// Templates and rules replacing the default rules (stores us, eu, outlet stay).
    pub policy: Option<String>,
}

impl Opts {
    pub fn new(issuer: &str, client_id: &str, client_secret: &str) -> Opts {
        Opts {
            issuer: issuer.to_owned(),
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            redis_url: None,
            idp_extra: String::new(),
            policy: None,
        }
    }
}

pub struct Gateway {
    pub base: String,
    pub sim: SimHandle,
    pub sim_base: String,
    pub clock: OffsetClock,
    audit: Mutex<UnboundedReceiver<AuditEvent>>,
    seen: Mutex<Vec<AuditEvent>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn sim_store(hash: &str, name: &str, channels: &[(u64, &str)]) -> SimStore {
    SimStore {
        store_hash: hash.to_owned(),
        name: name.to_owned(),
        access_token: Secret::new(format!("token-{hash}")),
        client_id: format!("client-{hash}"),
        client_secret: Secret::new(format!("login-secret-{hash}")),
        channels: channels
            .iter()
            .map(|(id, n)| SimChannel {
                id: *id,
                name: (*n).to_owned(),
            })
            .collect(),
    }
}

/// The rules most tests use.
pub const DEFAULT_POLICY: &str = r#"[[rule]]
name = "contractors-never-eu"
effect = "deny"
groups_any = ["contractors"]
stores = ["eu"]

[[rule]]
name = "merchandisers-everywhere"
groups_any = ["bc-merchandisers"]
stores = ["*"]
role = "merchandiser"
customer_group = "Staff"

[[rule]]
name = "support-us"
groups_any = ["bc-support"]
stores = ["us"]
role = "support"
"#;

pub fn config_text(base: &str, sim_base: &str, o: &Opts) -> String {
    let session = match &o.redis_url {
        Some(url) => format!("store = \"redis\"\nredis_url = \"{url}\""),
        None => "store = \"memory\"".to_owned(),
    };
    format!(
        r#"
public_url = "{base}"
listen = "{listen}"
allow_insecure_http = true
support_contact = "the e-commerce team (ecom-access@example.com)"

[session]
{session}
idle_timeout = "30m"
absolute_timeout = "12h"

[[idp]]
id = "{IDP}"
display_name = "OpenText Access Manager"
protocol = "oidc"
issuer = "{issuer}"
client_id = "{client_id}"
client_secret = "{client_secret}"
clock_skew = "60s"
{idp_extra}

[[bigcommerce]]
id = "main"
store_hash = "{MAIN_HASH}"
api_base = "{sim_base}"
access_token = "token-{MAIN_HASH}"
client_id = "client-{MAIN_HASH}"
client_secret = "login-secret-{MAIN_HASH}"
b2b_access_token = "b2b-token-{MAIN_HASH}"
b2b_api_base = "{sim_base}/api/v3/io"

[[bigcommerce]]
id = "outlet"
store_hash = "{OUTLET_HASH}"
api_base = "{sim_base}"
access_token = "token-{OUTLET_HASH}"
client_id = "client-{OUTLET_HASH}"
client_secret = "login-secret-{OUTLET_HASH}"

[[store]]
id = "us"
name = "US Storefront"
bigcommerce = "main"
channel_id = 1
url = "{sim_base}/storefront/{MAIN_HASH}/1"

[[store]]
id = "eu"
name = "EU Storefront"
bigcommerce = "main"
channel_id = 2
url = "{sim_base}/storefront/{MAIN_HASH}/2"

[[store]]
id = "outlet"
name = "Outlet"
bigcommerce = "outlet"
channel_id = 1
url = "{sim_base}/storefront/{OUTLET_HASH}/1"

{policy}
"#,
        listen = base.trim_start_matches("http://"),
        issuer = o.issuer,
        client_id = o.client_id,
        client_secret = o.client_secret,
        idp_extra = o.idp_extra,
        policy = o.policy.as_deref().unwrap_or(DEFAULT_POLICY),
    )
}

impl Gateway {
    pub async fn start(reserved: Reserved, opts: Opts) -> Gateway {
        let clock = OffsetClock::default();
        let sim_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind sim");
        let sim_base = format!("http://{}", sim_listener.local_addr().expect("addr"));
        let (sim_router, sim) = Simulator::build(SimConfig::new(vec![
            sim_store(MAIN_HASH, "Main", &[(1, "US"), (2, "EU")]),
            sim_store(OUTLET_HASH, "Outlet", &[(1, "Outlet")]),
        ]));
        let sim_task = tokio::spawn(async move {
            let _ =
                storegate::server::serve_on(sim_listener, sim_router, std::future::pending()).await;
        });

        let text = config_text(&reserved.base, &sim_base, &opts);
        let cfg = match config::load_str(&text, "test.toml", &NoEnv) {
            Ok(c) => c,
            Err(d) => panic!("test config invalid:\n{d}"),
        };
        let (audit, rx) = AuditLog::channel();
        let state =
            AppState::build(cfg, std::sync::Arc::new(clock.clone()), audit).expect("build state");
        let app = web::router(state);
        let listener = reserved.listener;
        let gw_task = tokio::spawn(async move {
            let _ = storegate::server::serve_on(listener, app, std::future::pending()).await;
        });
        Gateway {
            base: reserved.base,
            sim,
            sim_base,
            clock,
            audit: Mutex::new(rx),
            seen: Mutex::new(Vec::new()),
            tasks: vec![sim_task, gw_task],
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Every audit event so far (events are written asynchronously: give them a moment).
    pub async fn audit_events(&self) -> Vec<AuditEvent> {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let mut rx = self.audit.lock().expect("audit lock");
        let mut seen = self.seen.lock().expect("seen lock");
        while let Ok(ev) = rx.try_recv() {
            seen.push(ev);
        }
        seen.clone()
    }

    /// No BigCommerce login token reached any storefront (neither accepted nor refused).
    pub fn assert_no_token_minted(&self) {
        assert!(
            self.sim.accepted_logins().is_empty(),
            "a login token was accepted: {:?}",
            self.sim.accepted_logins()
        );
        assert!(
            self.sim.rejected_logins().is_empty(),
            "a login token was presented: {:?}",
            self.sim.rejected_logins()
        );
    }
}

/// Asserts that the browser holds no signed-in session at this gateway.
pub async fn assert_not_signed_in(b: &crate::support::browser::Browser, gw: &Gateway) {
    let me = b.get(&gw.url("/api/me")).await;
    assert_eq!(me.status().as_u16(), 401, "expected no signed-in session");
}
