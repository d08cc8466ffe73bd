//! The HTTP edge: one state, thin handlers, one error mapping. No access decision is made here;
//! handlers unpack the request, call `federation`, `policy` or `bigcommerce`, and answer. The
//! state is built by the composition root, `app::build_state`.

pub mod admin;
pub mod answer;
pub mod auth;
pub mod backchannel;
pub mod client_ip;
mod cookies;
mod edge;
pub mod errors;
pub mod extract;
pub mod forward;
pub mod health;
pub mod launch;
pub mod login;
pub mod portal;
pub mod portal_prefs;
pub mod portal_tiles;
pub mod proxy;
pub mod ratelimit;
pub mod saml;
pub mod scim;
mod session_layer;
pub mod webhooks;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, Request, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::trace::TraceLayer;
use tower_sessions::Expiry;

use crate::audit::AuditLog;
use crate::bigcommerce::api::Customers;
use crate::bigcommerce::b2b::B2bApi;
use crate::bigcommerce::store_clock::StoreClock;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::federation::oidc::OidcProvider;
use crate::reload::{PolicySnapshot, SharedPolicy};
use crate::session;

/// Everything a handler may need. One `Arc`: axum clones the state for every handler call and
/// every `State` extractor, and cloning ~20 `Arc` fields (the metrics alone hold ten) per clone
/// was ~10% of a launch's CPU (perf, issue 6). Fields are read through `Deref`.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// Shares what the composition root built (`app::build_state`).
    pub(crate) fn new(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }

    /// Changes the state before it is shared (startup only: `app::open_scim`); clones the fields
    /// if a copy is already out, so a handle taken earlier keeps what it saw.
    pub(crate) fn make_mut(&mut self) -> &mut Shared {
        Arc::make_mut(&mut self.0)
    }
}

/// What [`AppState`] shares.
#[derive(Clone)]
pub struct Shared {
    /// The configuration the gateway started with. Decide with [`AppState::policy`], which a
    /// reload can replace; this copy's `policy` and `stores` are the startup ones.
    pub config: Arc<Config>,
    /// The running policy and stores (reloadable: SIGHUP or file change, see `reload`).
    pub policy: SharedPolicy,
    pub clock: SharedClock,
    pub providers: Arc<BTreeMap<String, Arc<OidcProvider>>>,
    /// BigCommerce Management API per `[[bigcommerce]]` id.
    pub bigcommerce: Arc<HashMap<String, Arc<dyn Customers>>>,
    /// B2B Edition API per `[[bigcommerce]]` id, for accounts that configure it.
    pub b2b: Arc<HashMap<String, Arc<dyn B2bApi>>>,
    pub store_clock: Arc<StoreClock>,
    pub audit: AuditLog,
    pub sessions: Arc<session::Store>,
    /// Which sessions each IdP session opened, for logouts the IdP starts (issue 14).
    pub session_index: session::index::SessionIndex,
    /// One-time values beside the sessions (replay caches, logout records), shared by replicas.
    pub one_time: session::one_time::OneTimeStore,
    /// Prometheus metrics (`GET /metrics`).
    pub metrics: crate::metrics::Metrics,
    /// The SAML service provider and its IdPs, when `[saml]` is configured.
    pub saml: Option<Arc<saml::SamlState>>,
    /// The SCIM service (issue 5), when `[scim]` is enabled; opened by `app::open_scim`.
    pub scim: Option<Arc<crate::provisioning::scim::ScimService>>,
    /// The BigCommerce webhook receiver (issue 13), when an account has a `webhook_secret`.
    pub webhooks: Option<Arc<webhooks::WebhookState>>,
    /// Pinned and recently opened stores per person, beside the sessions (issue 16).
    pub portal_prefs: portal_prefs::PrefsStore,
    /// Denials and hourly counts this process saw, for the IT console (issue 16).
    pub recent: admin::console::RecentActivity,

    /// Identity-token keys for `[[route]]`s (issue 14); `None` without routes.
    pub forward: Option<Arc<crate::flows::forward_auth::ForwardState>>,
}

impl AppState {
    /// The policy and stores in force now. Take it once per request: a reload in the middle of
    /// a request cannot mix two policies.
    pub fn policy(&self) -> Arc<PolicySnapshot> {
        self.policy.load_full()
    }

    /// What the journeys (`flows`) use of this state, for one request.
    pub fn gateway(&self) -> crate::flows::Gateway<'_> {
        crate::flows::Gateway {
            config: &self.config,
            clock: self.clock.as_ref(),
            audit: &self.audit,
            metrics: &self.metrics,
            scim: self.scim.as_deref(),
            bigcommerce: &self.bigcommerce,
            b2b: &self.b2b,
            store_clock: &self.store_clock,
            providers: &self.providers,
            saml: self.saml.as_deref(),
            policy: &self.policy,
            sessions: &self.sessions,
            session_index: &self.session_index,
            one_time: &self.one_time,
            forward: self.forward.as_deref(),
        }
    }
}

/// Marks a response that carries a token or a session change as not cacheable.
pub fn no_store(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

pub use crate::secret::random_token;

/// The largest request body accepted (SAML responses, SCIM resources).
pub const MAX_BODY: usize = 64 * 1024;

const STYLE_CSS: &str = include_str!("../../static/style.css");
const PORTAL_JS: &str = include_str!("../../static/portal.js");

async fn portal_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        PORTAL_JS,
    )
        .into_response()
}

async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLE_CSS,
    )
        .into_response()
}

/// The gateway's routes with every layer (sessions, security headers, request ids, limits).
pub fn router(state: AppState) -> Router {
    router_with(state, Router::new())
}

/// The gateway's routes plus `extra` routes (the demo's development IdP and storefronts) that
/// share its listener and layers.
pub fn router_with(state: AppState, extra: Router) -> Router {
    let cfg = &state.config.session;
    let idle = time::Duration::try_from(cfg.idle_timeout).unwrap_or(time::Duration::minutes(30));
    // HttpOnly, SameSite=Lax, Path=/, Secure unless `allow_insecure_http`.
    let sessions = session_layer::SessionLayer::new(
        state.sessions.clone(),
        session_layer::SessionCookie {
            name: cfg.cookie_name.clone(),
            secure: !state.config.allow_insecure_http,
            domain: cfg.cookie_domain.clone(),
            expiry: Expiry::OnInactivity(idle),
        },
    );
    let https = state.config.public_url.scheme() == "https";
    let config = state.config.clone();

    // Sign-in requests per client address (`[rate_limit]`): a token bucket whose default an
    // office behind one NAT address does not meet, tight enough that one client cannot flood the
    // IdP through us; off when the configuration says 0.
    let mut sign_in = Router::new()
        .route("/login", get(login::login))
        .route("/oidc/{idp}/callback", get(login::callback))
        .route("/saml/acs", post(saml::acs))
        // Signature checks per message: limited like the ACS.
        .route("/saml/slo", get(saml::slo_get).post(saml::slo_post));
    if let Some(l) = state.config.rate_limit.sign_in {
        let sign_in_limit = ratelimit::RateLimit::behind(
            l.per_minute,
            l.burst,
            state.config.trusted_proxies.clone(),
        );
        sign_in = sign_in.route_layer(axum::middleware::from_fn_with_state(
            sign_in_limit,
            ratelimit::limit,
        ));
    }
    let scim_routes = match state.config.scim {
        Some(_) => Router::new().nest("/scim/v2", scim::router(state.clone())),
        None => Router::new(),
    };
    // The console exists only when `[admin]` says who may use it; otherwise /admin is a 404.
    let admin_routes = match state.config.admin {
        Some(_) => admin::router(),
        None => Router::new(),
    };
    // The built-in proxy (`[[route]] upstream`) answers route hosts in front of everything.
    let proxy_edge = proxy::ProxyEdge::build(&state);
    let app = Router::new()
        .route("/", get(portal::portal))
        .merge(admin_routes)
        .merge(sign_in)
        .route("/saml/metadata", get(saml::metadata))
        .route("/logout", post(login::logout))
        .route("/signed-out", get(login::signed_out))
        .route(
            "/oidc/{idp}/backchannel-logout",
            post(backchannel::backchannel_logout),
        )
        .route("/stores/{store}/launch", get(launch::launch))
        .route("/control-panel/{account}", get(launch::control_panel))
        .route("/api/me", get(portal::me))
        .route("/webhooks/bigcommerce/{account}", post(webhooks::receive))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/auth/verify", get(forward::verify))
        .route(
            "/auth/verify/{*path}",
            axum::routing::any(forward::verify_envoy),
        )
        .route("/auth/continue", get(forward::continue_to))
        .route("/.well-known/jwks.json", get(forward::jwks))
        .route("/static/style.css", get(style))
        .route("/static/portal.js", get(portal_js))
        .route("/static/logos/{file}", get(portal::logo))
        .route("/portal/pins", post(portal::pin))
        .with_state(state)
        .merge(scim_routes)
        .merge(extra);

    // One `Router::layer` call with the whole stack (outermost first): each `Router::layer`
    // boxes every route again, and every box is cloned and its future allocated per request;
    // with a dozen separate calls that was ~14% of a launch's CPU (perf, issue 6).
    let stack = tower::ServiceBuilder::new()
        // The audit trail's request ids are ours: a client-sent x-request-id is replaced, and
        // the response carries ours.
        .layer(edge::RequestIdLayer)
        .layer(
            // The span names the path only: query strings carry codes and states. Fields are
            // recorded as `&str`, not through `Display` (`%`): the same JSON, without a
            // formatter pass per field and request.
            TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                let rid = req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                tracing::info_span!(
                    "request",
                    method = req.method().as_str(),
                    path = req.uri().path(),
                    request_id = rid
                )
            }),
        )
        // The request id follows the request into its BigCommerce calls (issue 13).
        .layer(edge::CorrelateLayer(config))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::GATEWAY_TIMEOUT,
            Duration::from_secs(30),
        ))
        // Outside the limit, which answers 413 with no body: SCIM clients get a SCIM error.
        .layer(edge::ScimTooLargeLayer)
        .layer(tower_http::limit::RequestBodyLimitLayer::new(MAX_BODY))
        // The limit wraps the body; what follows takes axum's body type again.
        .map_request(|req: Request<_>| req.map(axum::body::Body::new))
        // CSP, nosniff, no-referrer, DENY and, over https, HSTS, unless a handler set its own.
        .layer(edge::SecurityHeadersLayer { hsts: https })
        .layer(edge::SaveFailedPageLayer)
        .layer(sessions);
    let app = app.layer(stack);
    match proxy_edge {
        Some(p) => Router::new()
            .fallback_service(app)
            .layer(axum::middleware::from_fn_with_state(p, proxy::dispatch)),
        None => app,
    }
}
