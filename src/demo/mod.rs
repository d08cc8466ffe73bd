//! `storegate demo`: everything needed to run the gateway with no configuration. Nothing in here is
//! for production use.

pub mod op;

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::bigcommerce::sim::{SimChannel, SimConfig, SimStore, Simulator};
use crate::clock::{SharedClock, SystemClock};
use crate::config::{self, LiteralEnv};
use crate::secret::Secret;
use crate::server::{open_audit, serve_on, shutdown_signal};
use crate::web;
use op::{DevClient, DevOp, DevOpConfig, demo_users, mounted_router};

/// The demo's IdP id (part of the redirect URI).
pub const IDP_ID: &str = "demo";
const CLIENT_ID: &str = "storegate-demo";

/// One simulated store hash and its storefront channels.
struct DemoStore {
    hash: &'static str,
    name: &'static str,
    channels: &'static [(u64, &'static str, &'static str)],
}

const STORES: [DemoStore; 2] = [
    DemoStore {
        hash: "northwind",
        name: "Northwind",
        channels: &[(1, "nw-us", "Northwind US"), (2, "nw-eu", "Northwind EU")],
    },
    DemoStore {
        hash: "contoso",
        name: "Contoso",
        channels: &[(1, "contoso", "Contoso Outlet")],
    },
];

/// The demo's secrets are made fresh at every start: nothing here is a credential worth keeping.
#[derive(Clone)]
struct Secrets {
    client_secret: String,
    tokens: Vec<(String, String, String)>, // (access token, login client id, login secret) per store hash
}

impl Secrets {
    fn fresh() -> Self {
        let r = crate::web::random_token;
        Secrets {
            client_secret: r(),
            tokens: STORES
                .iter()
                .map(|s| (r(), format!("demo-login-{}", s.hash), r()))
                .collect(),
        }
    }
}

/// The configuration `storegate demo` runs on: an ordinary config file's text, so the demo goes
/// through the same validation as production.
fn config_text(
    base: &str,
    sim_base: &str,
    listen: &str,
    secrets: &Secrets,
    agency_until: &str,
    redis_url: Option<&str>,
    audit_file: &str,
) -> String {
    let session = match redis_url {
        Some(url) => format!("store = \"redis\"\nredis_url = \"{url}\""),
        None => "store = \"memory\"".to_owned(),
    };
    let mut out = format!(
        r#"public_url = "{base}"
listen = "{listen}"
allow_insecure_http = true
support_contact = "the demo's e-commerce team (this is a demo: pick another user)"

[session]
{session}

[audit]
{audit_file}

[[idp]]
id = "{IDP_ID}"
display_name = "Development identity provider (demo only)"
protocol = "oidc"
issuer = "{base}/op"
client_id = "{CLIENT_ID}"
client_secret = "{secret}"
"#,
        secret = secrets.client_secret
    );
    for (s, (token, login_id, login_secret)) in STORES.iter().zip(&secrets.tokens) {
        out.push_str(&format!(
            "\n[[bigcommerce]]\nid = \"{h}\"\nstore_hash = \"{h}\"\napi_base = \"{sim_base}\"\naccess_token = \"{token}\"\nclient_id = \"{login_id}\"\nclient_secret = \"{login_secret}\"\n",
            h = s.hash
        ));
    }
    for s in &STORES {
        for (channel, id, name) in s.channels {
            out.push_str(&format!(
                "\n[[store]]\nid = \"{id}\"\nname = \"{name}\"\nbigcommerce = \"{h}\"\nchannel_id = {channel}\nurl = \"{sim_base}/storefront/{h}/{channel}\"\ndescription = \"{store} store, channel {channel} (simulated)\"\n",
                h = s.hash,
                store = s.name
            ));
        }
    }
    out.push_str(&format!(
        r#"
[[rule]]
name = "merchandisers-everywhere"
groups_any = ["bc-merchandisers"]
stores = ["*"]
role = "merchandiser"
customer_group = "Staff"

[[rule]]
name = "finance-everywhere"
groups_any = ["bc-finance"]
stores = ["*"]
role = "finance"
customer_group = "Finance"

[[rule]]
name = "support-us-only"
groups_any = ["bc-support"]
stores = ["nw-us"]
role = "support"
customer_group = "Support"

[[rule]]
name = "northwind-agency-contract"
groups_any = ["agency-northwind"]
stores = ["nw-us", "nw-eu"]
role = "agency"
customer_group = "Agency"
not_after = "{agency_until}"

# The IT console (/admin): the demo's IT user.
[admin]
name = "demo-it-admins"
groups_any = ["storegate-admins"]
"#
    ));
    out
}

/// A running demo: where to open it, and its parts for tests.
pub struct Demo {
    pub url: String,
    pub sim: crate::bigcommerce::sim::SimHandle,
    /// What a replica needs to run the same configuration (see [`Demo::start_replica`]).
    seed: ReplicaSeed,
}

/// The inputs of [`config_text`] apart from the audit file, kept so a replica runs the same
/// configuration (same public URL, IdP client, session store and simulated BigCommerce).
#[derive(Clone)]
struct ReplicaSeed {
    base: String,
    sim_base: String,
    listen: String,
    secrets: Secrets,
    agency_until: String,
    redis_url: Option<String>,
}

impl ReplicaSeed {
    fn config(&self, audit_file: &str) -> anyhow::Result<config::Config> {
        let text = config_text(
            &self.base,
            &self.sim_base,
            &self.listen,
            &self.secrets,
            &self.agency_until,
            self.redis_url.as_deref(),
            audit_file,
        );
        config::load_str(&text, "(demo)", &LiteralEnv)
            .map_err(|d| anyhow::anyhow!("the demo configuration is invalid:\n{d}"))
    }

    fn dev_op(&self) -> anyhow::Result<DevOp> {
        Ok(DevOp::new(DevOpConfig {
            issuer: format!("{}/op", self.base),
            clients: vec![DevClient {
                client_id: CLIENT_ID.to_owned(),
                client_secret: Secret::new(self.secrets.client_secret.clone()),
                redirect_uris: vec![format!("{}/oidc/{IDP_ID}/callback", self.base)],
                post_logout_redirect_uris: vec![format!("{}/signed-out", self.base)],
            }],
            users: demo_users(),
        })?)
    }
}

/// The `[audit]` table's body: the file as a TOML basic string (`-`: stdout), and `chain`.
fn audit_setting(audit_file: Option<&std::path::Path>, chain: bool) -> anyhow::Result<String> {
    let audit_file = match audit_file {
        None => "-",
        Some(p) => p
            .to_str()
            .with_context(|| format!("the audit file name {} is not UTF-8", p.display()))?,
    };
    let file = toml::Value::String(audit_file.to_owned());
    Ok(format!("file = {file}\nchain = {chain}"))
}

impl Demo {
    /// Starts a second gateway on `listen` running this demo's configuration: the same public URL,
    /// IdP client, session store and simulated BigCommerce, as a replica behind a load balancer
    /// would. With Redis sessions a session signed in on this demo works on the replica (cookies
    /// are per host, not per port). Only the audit destination differs. The replica's development
    /// OP is its own (sign in through the first gateway).
    pub async fn start_replica(
        &self,
        listen: &str,
        audit_file: Option<&std::path::Path>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<(String, tokio::task::JoinHandle<anyhow::Result<()>>)> {
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener.local_addr()?;
        // Its own writer id: the two gateways share a host name, and each chain needs its own.
        let audit = format!(
            "{}\nwriter_id = \"demo-replica\"",
            audit_setting(audit_file, true)?
        );
        let cfg = self.seed.config(&audit)?;
        let audit = open_audit(&cfg)?;
        let state = crate::app::build_state(cfg, Arc::new(SystemClock), audit)?;
        let app = web::router_with(state, mounted_router(self.seed.dev_op()?));
        let gateway = tokio::spawn(serve_on(listener, app, shutdown));
        Ok((format!("http://{addr}/"), gateway))
    }
}

/// Binds and starts everything; returns once it is serving. `shutdown` stops it.
/// `redis_url`: keep sessions in Redis instead of memory (benchmarks, replica experiments).
/// Audit events go to stdout.
pub async fn start(
    listen: &str,
    redis_url: Option<&str>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(Demo, tokio::task::JoinHandle<anyhow::Result<()>>)> {
    start_with_audit(listen, redis_url, None, shutdown).await
}

/// As [`start`], but audit events are appended to `audit_file` (`None`: stdout). The benchmark
/// uses this to keep one JSON line per launch off its report while still paying for writing it.
pub async fn start_with_audit(
    listen: &str,
    redis_url: Option<&str>,
    audit_file: Option<&std::path::Path>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(Demo, tokio::task::JoinHandle<anyhow::Result<()>>)> {
    start_with_audit_chain(listen, redis_url, audit_file, true, shutdown).await
}

/// As [`start_with_audit`], with the audit hash chain on or off (the launch bench compares).
pub async fn start_with_audit_chain(
    listen: &str,
    redis_url: Option<&str>,
    audit_file: Option<&std::path::Path>,
    chain: bool,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(Demo, tokio::task::JoinHandle<anyhow::Result<()>>)> {
    let audit_file = audit_setting(audit_file, chain)?;
    let listener = TcpListener::bind(listen).await.with_context(|| {
        format!(
            "cannot listen on {listen} (is another program using it? try --listen 127.0.0.1:8090)"
        )
    })?;
    let addr = listener.local_addr()?;
    let base = format!("http://{addr}");
    let sim_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot bind the storefront simulator")?;
    let sim_base = format!("http://{}", sim_listener.local_addr()?);

    let clock: SharedClock = Arc::new(SystemClock);
    let secrets = Secrets::fresh();
    let agency_until = crate::clock::rfc3339(clock.now() + 3 * 24 * 3600);
    let seed = ReplicaSeed {
        base: base.clone(),
        sim_base,
        listen: addr.to_string(),
        secrets: secrets.clone(),
        agency_until,
        redis_url: redis_url.map(str::to_owned),
    };
    let cfg = seed.config(&audit_file)?;

    let sim_config = SimConfig::new(
        STORES
            .iter()
            .zip(&secrets.tokens)
            .map(|(s, (token, login_id, login_secret))| SimStore {
                store_hash: s.hash.to_owned(),
                name: s.name.to_owned(),
                access_token: Secret::new(token.clone()),
                client_id: login_id.clone(),
                client_secret: Secret::new(login_secret.clone()),
                channels: s
                    .channels
                    .iter()
                    .map(|(id, _, name)| SimChannel {
                        id: *id,
                        name: (*name).to_owned(),
                    })
                    .collect(),
            })
            .collect(),
    );
    let (sim_router, sim) = Simulator::build(sim_config);

    let op = seed.dev_op()?;

    let audit = open_audit(&cfg)?;
    let state = crate::app::build_state(cfg, clock, audit)?;
    let app = web::router_with(state, mounted_router(op));

    tokio::spawn(async move {
        if let Err(e) = serve_on(sim_listener, sim_router, std::future::pending()).await {
            tracing::error!(error = %e, "the storefront simulator stopped");
        }
    });
    let gateway = tokio::spawn(serve_on(listener, app, shutdown));
    Ok((
        Demo {
            url: format!("{base}/"),
            sim,
            seed,
        },
        gateway,
    ))
}

/// `storegate demo`: runs until Ctrl-C.
pub async fn run(listen: &str) -> anyhow::Result<()> {
    let (demo, gateway) = start(listen, None, shutdown_signal()).await?;
    println!();
    println!(
        "  storegate demo is running. Open {} in your browser.",
        demo.url
    );
    println!();
    println!("  Sign in as one of the development users (no password):");
    for u in demo_users() {
        println!("    {:<18} {}", u.name(), u.description);
    }
    println!();
    println!(
        "  Storefronts are simulated; audit events are printed below as JSON lines. Ctrl-C stops."
    );
    println!();
    gateway.await.context("the gateway task failed")?
}
