//! A running gateway on 127.0.0.1 with the BigCommerce simulator behind it, configured through
//! the same TOML path as production (`config::load_str`), with the audit trail captured.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use storegate::app;
use storegate::audit::{AuditEvent, AuditLog, EventKind, Outcome};
use storegate::bigcommerce::sim::{SimChannel, SimConfig, SimHandle, SimStore, Simulator};
use storegate::clock::OffsetClock;
use storegate::config::{self, LiteralEnv};
use storegate::secret::Secret;
use storegate::web;
use tokio::net::TcpListener;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const IDP: &str = "nam";
pub const MAIN_HASH: &str = "abc123";
pub const OUTLET_HASH: &str = "xyz789";

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

    /// A port on 127.0.0.1 whose public URL names `host` instead (`http://{host}:PORT`): the
    /// test's client resolves `host` to [`Self::addr`] (see `Browser::resolving`).
    pub async fn named(host: &str) -> Reserved {
        let mut r = Reserved::new().await;
        r.base = format!("http://{host}:{}", r.addr().port());
        r
    }

    /// The address the gateway will listen on.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.listener.local_addr().expect("addr")
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
    /// The Redis keys of `[session]` (after `store = "redis"`) for Sentinel or Cluster, e.g.
    /// `redis_mode = "cluster"` and `redis_nodes = [...]`; takes precedence over `redis_url`.
    pub redis_topology: Option<String>,
    /// Extra lines appended to the `[[idp]]` table (e.g. claim mapping).
    pub idp_extra: String,
    /// Extra lines appended to the `[session]` table (e.g. `redis_ca_file`).
    pub session_extra: String,
    /// Extra TOML appended at the end of the file (more tables, e.g. `[saml]` and a SAML IdP).
    pub extra_toml: String,
    /// Templates and rules replacing the default rules (stores us, eu, outlet stay).
    pub policy: Option<String>,
    /// Extra lines appended to the `main` `[[bigcommerce]]` table (e.g. `webhook_secret`).
    pub bigcommerce_extra: String,
    /// Extra top-level keys, before the first table (e.g. `trusted_proxies`).
    pub root_extra: String,
}

impl Opts {
    pub fn new(issuer: &str, client_id: &str, client_secret: &str) -> Opts {
        Opts {
            issuer: issuer.to_owned(),
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            redis_url: None,
            redis_topology: None,
            idp_extra: String::new(),
            session_extra: String::new(),
            extra_toml: String::new(),
            policy: None,
            bigcommerce_extra: String::new(),
            root_extra: String::new(),
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
    /// The configuration text this gateway runs (a replica runs the same).
    config_text: String,
    /// The delay before every BigCommerce simulator answer and the count of requests it got.
    sim_steering: SimSteering,
    /// Every gateway answer (of this gateway and its replicas) that carried a Customer Login JWT.
    tokens_out: TokenSightings,
    shutdown: Mutex<Option<oneshot::Sender<()>>>,
    stopped: Mutex<Option<oneshot::Receiver<()>>>,
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
    let mut session = match (&o.redis_topology, &o.redis_url) {
        (Some(lines), _) => format!("store = \"redis\"\n{lines}"),
        (None, Some(url)) => format!("store = \"redis\"\nredis_url = \"{url}\""),
        (None, None) => "store = \"memory\"".to_owned(),
    };
    if !o.session_extra.is_empty() {
        session.push('\n');
        session.push_str(&o.session_extra);
    }
    // The harness binds the listener itself; `listen` only has to be an address, also when
    // `public_url` names a host (`Reserved::named`).
    let port = url::Url::parse(base)
        .ok()
        .and_then(|u| u.port())
        .unwrap_or_default();
    let listen = format!("127.0.0.1:{port}");
    format!(
        r#"
public_url = "{base}"
listen = "{listen}"
allow_insecure_http = true
support_contact = "the e-commerce team (ecom-access@example.com)"
{root_extra}

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
{bigcommerce_extra}

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

{extra_toml}
"#,
        issuer = o.issuer,
        client_id = o.client_id,
        client_secret = o.client_secret,
        idp_extra = o.idp_extra,
        extra_toml = o.extra_toml,
        policy = o.policy.as_deref().unwrap_or(DEFAULT_POLICY),
        bigcommerce_extra = o.bigcommerce_extra,
        root_extra = o.root_extra,
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
        let sim_delay_ms = Arc::new(AtomicU64::new(0));
        let sim_requests = Arc::new(AtomicU64::new(0));
        let delay = Arc::clone(&sim_delay_ms);
        let arrived = Arc::clone(&sim_requests);
        let sim_router = sim_router.layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let ms = delay.load(Ordering::SeqCst);
                arrived.fetch_add(1, Ordering::SeqCst);
                async move {
                    if ms > 0 {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                    }
                    next.run(req).await
                }
            },
        ));
        let sim_task = tokio::spawn(async move {
            let _ =
                storegate::server::serve_on(sim_listener, sim_router, std::future::pending()).await;
        });

        let text = config_text(&reserved.base, &sim_base, &opts);
        let mut gw = Self::serve(
            reserved,
            text,
            sim,
            sim_base,
            clock,
            SimSteering {
                delay_ms: sim_delay_ms,
                requests: sim_requests,
            },
            TokenSightings::default(),
        )
        .await;
        gw.tasks.insert(0, sim_task);
        gw
    }

    /// Another gateway process on `reserved`'s port with this one's configuration (the same
    /// public URL, IdP, session store and BigCommerce simulator): a second replica behind the
    /// same load balancer. The test's browser reaches it by its own port; cookies are per host,
    /// not per port, so the browser's session cookie goes to both, as behind a load balancer.
    pub async fn replica(&self, reserved: Reserved) -> Gateway {
        Self::serve(
            reserved,
            self.config_text.clone(),
            self.sim.clone(),
            self.sim_base.clone(),
            self.clock.clone(),
            self.sim_steering.clone(),
            self.tokens_out.clone(),
        )
        .await
    }

    /// Like [`Self::replica`], with `from` replaced by `to` in its configuration (e.g. another
    /// Redis seed node); panics if `from` is not there.
    pub async fn replica_edited(&self, reserved: Reserved, from: &str, to: &str) -> Gateway {
        assert!(self.config_text.contains(from), "{from} not in the config");
        Self::serve(
            reserved,
            self.config_text.replace(from, to),
            self.sim.clone(),
            self.sim_base.clone(),
            self.clock.clone(),
            self.sim_steering.clone(),
            self.tokens_out.clone(),
        )
        .await
    }

    async fn serve(
        reserved: Reserved,
        text: String,
        sim: SimHandle,
        sim_base: String,
        clock: OffsetClock,
        sim_steering: SimSteering,
        tokens_out: TokenSightings,
    ) -> Gateway {
        let cfg = match config::load_str(&text, "test.toml", &LiteralEnv) {
            Ok(c) => c,
            Err(d) => panic!("test config invalid:\n{d}"),
        };
        // With `[audit] file` the gateway writes the real trail (and the PostgreSQL sink of
        // `postgres_url`) as `storegate serve` does; its events are then read from the file or
        // the table, and `audit_now` sees none.
        let (audit, rx) = match &cfg.audit {
            config::AuditTarget::File(_) => (
                storegate::server::open_audit(&cfg).expect("open the audit trail"),
                AuditLog::channel().1,
            ),
            config::AuditTarget::Stdout => AuditLog::channel(),
        };
        let state =
            app::build_state(cfg, std::sync::Arc::new(clock.clone()), audit).expect("build state");
        let state = app::open_scim(state).await.expect("open SCIM");
        let app = web::router(state).layer(axum::middleware::from_fn_with_state(
            tokens_out.clone(),
            watch_for_login_tokens,
        ));
        let listener = reserved.listener;
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let (stopped_tx, stopped_rx) = oneshot::channel::<()>();
        let gw_task = tokio::spawn(async move {
            let signal = async move {
                let _ = shutdown_rx.await;
            };
            let _ = storegate::server::serve_on(listener, app, signal).await;
            let _ = stopped_tx.send(());
        });
        Gateway {
            base: reserved.base,
            sim,
            sim_base,
            clock,
            audit: Mutex::new(rx),
            seen: Mutex::new(Vec::new()),
            tasks: vec![gw_task],
            config_text: text,
            sim_steering,
            tokens_out,
            shutdown: Mutex::new(Some(shutdown_tx)),
            stopped: Mutex::new(Some(stopped_rx)),
        }
    }

    /// Every BigCommerce simulator answer waits this long first (0 = none).
    pub fn set_sim_delay(&self, delay: Duration) {
        self.sim_steering
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Requests the BigCommerce simulator has received so far (counted on arrival, before any
    /// delay): a launch in flight shows here while it waits for its answer.
    pub fn sim_requests(&self) -> u64 {
        self.sim_steering.requests.load(Ordering::SeqCst)
    }

    /// Starts a graceful shutdown (as SIGTERM does) without waiting for it.
    pub fn begin_shutdown(&self) {
        if let Some(tx) = self.shutdown.lock().expect("shutdown lock").take() {
            let _ = tx.send(());
        }
    }

    /// Waits until the server has drained and stopped; panics after `limit`.
    pub async fn wait_stopped(&self, limit: Duration) {
        let rx = self.stopped.lock().expect("stopped lock").take();
        if let Some(rx) = rx {
            tokio::time::timeout(limit, rx)
                .await
                .expect("the gateway did not finish draining in time")
                .ok();
        }
    }

    /// The validated configuration this gateway runs.
    pub fn config(&self) -> storegate::config::Config {
        match config::load_str(&self.config_text, "test.toml", &LiteralEnv) {
            Ok(c) => c,
            Err(d) => panic!("test config invalid:\n{d}"),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Every audit event so far. No pause is needed (see [`Self::audit_now`]); async only for
    /// its callers' sake.
    pub async fn audit_events(&self) -> Vec<AuditEvent> {
        self.audit_now()
    }

    /// Every audit event recorded so far, without waiting: the gateway records a request's events
    /// before it answers, so after a response they are all here.
    pub fn audit_now(&self) -> Vec<AuditEvent> {
        let mut rx = self.audit.lock().expect("audit lock");
        let mut seen = self.seen.lock().expect("seen lock");
        while let Ok(ev) = rx.try_recv() {
            seen.push(ev);
        }
        seen.clone()
    }

    /// Every trace of a Customer Login JWT, each as one line saying where it was seen:
    /// - leaving the gateway (this one or a replica): a `Location`, another header or a body
    ///   that carried one, whether or not the browser followed it;
    /// - this gateway's audit trail: a granted launch (recorded right after the token is minted);
    /// - the simulated storefronts: a token presented, accepted or refused.
    pub fn login_token_traces(&self) -> Vec<String> {
        let mut traces: Vec<String> = self
            .tokens_out
            .0
            .lock()
            .expect("token sightings lock")
            .iter()
            .map(|s| format!("left the gateway: {s}"))
            .collect();
        traces.extend(
            self.audit_now()
                .iter()
                .filter(|e| e.event == EventKind::Launch && e.outcome == Outcome::Allow)
                .map(|e| {
                    format!(
                        "audit: launch granted on store {:?} by rule {:?} (request {})",
                        e.store, e.rule, e.request_id
                    )
                }),
        );
        traces.extend(
            self.sim
                .accepted_logins()
                .iter()
                .map(|l| format!("storefront accepted a token: {l:?}")),
        );
        traces.extend(
            self.sim
                .rejected_logins()
                .iter()
                .map(|l| format!("storefront was presented a token: {l:?}")),
        );
        traces
    }

    /// No Customer Login JWT was minted: none left the gateway (in any answer, followed or
    /// not), no launch was granted, and none reached a storefront (see [`Self::login_token_traces`]).
    pub fn assert_no_token_minted(&self) {
        let traces = self.login_token_traces();
        assert!(
            traces.is_empty(),
            "a login token was minted:\n{}",
            traces.join("\n")
        );
    }
}

/// Shared by a gateway and its replicas: a delay added to every BigCommerce simulator answer (to
/// hold a launch in flight) and the count of requests the simulator received.
#[derive(Clone)]
struct SimSteering {
    delay_ms: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
}

/// Where gateway answers carried a Customer Login JWT (`METHOD path -> status: where`); shared by
/// a gateway and its replicas. Never the token itself.
#[derive(Clone, Default)]
struct TokenSightings(Arc<Mutex<Vec<String>>>);

/// Records any answer that hands a Customer Login JWT out, wherever in the answer it is: the
/// assertion must not depend on the test browser following the redirect to the storefront.
async fn watch_for_login_tokens(
    axum::extract::State(seen): axum::extract::State<TokenSightings>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let what = format!("{} {}", req.method(), req.uri().path());
    let resp = next.run(req).await;
    // A body of unknown length is streamed (a tool's answer through the built-in proxy, which
    // may only end once the test has read its first piece): passed on unread. The gateway's
    // own answers (pages, redirects) all have a known length.
    if http_body::Body::size_hint(resp.body()).exact().is_none() {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    // Test answers are small; an unreadable body is itself a failure worth seeing.
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .expect("read a gateway answer");
    let mut places = Vec::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        let storefront_login =
            name == axum::http::header::LOCATION && value.contains("/login/token/");
        if storefront_login || has_login_jwt(&value) {
            places.push(format!("header {name}"));
        }
    }
    if has_login_jwt(&String::from_utf8_lossy(&bytes)) {
        places.push("body".to_owned());
    }
    if !places.is_empty() {
        seen.0.lock().expect("token sightings lock").push(format!(
            "{what} -> {}: in {}",
            parts.status.as_u16(),
            places.join(", ")
        ));
    }
    axum::response::Response::from_parts(parts, axum::body::Body::from(bytes))
}

/// Whether `text` holds a compact JWT whose payload is a BigCommerce Customer Login
/// (`"operation": "customer_login"`); other JWTs (the identity JWT of `/auth/verify`) do not count.
pub fn has_login_jwt(text: &str) -> bool {
    use base64::Engine as _;
    static JWT: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let jwt = JWT.get_or_init(|| {
        regex::Regex::new(r"[A-Za-z0-9_-]{8,}\.([A-Za-z0-9_-]{8,})\.[A-Za-z0-9_-]+").expect("regex")
    });
    jwt.captures_iter(text).any(|c| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&c[1])
            .ok()
            .and_then(|p| serde_json::from_slice::<serde_json::Value>(&p).ok())
            .is_some_and(|claims| claims["operation"] == "customer_login")
    })
}

/// Asserts that the browser holds no signed-in session at this gateway.
pub async fn assert_not_signed_in(b: &crate::support::browser::Browser, gw: &Gateway) {
    let me = b.get(&gw.url("/api/me")).await;
    assert_eq!(me.status().as_u16(), 401, "expected no signed-in session");
}
