//! The composition root: where the long-lived parts are built from the configuration and
//! handed to the flows. `serve`, `demo`, `reconcile` and the tests build their state here:
//! [`build_state`] and [`open_scim`] for the gateway, [`reconciler`] for provisioning.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crate::audit::AuditLog;
use crate::bigcommerce::api::{Customers, HttpCustomers};
use crate::bigcommerce::metered::{Caller, MeteredCustomers};
use crate::bigcommerce::quick_retry::{QuickRetry, RetryPolicy};
use crate::bigcommerce::store_clock::StoreClock;
use crate::bigcommerce::webhooks::{OwnChanges, RecordingCustomers};
use crate::clock::SharedClock;
use crate::config::provisioning::{QueueStorage, ScimConfig, ScimStorage};
use crate::config::{Config, Protocol};
use crate::federation::oidc::OidcProvider;
use crate::flows::provision::{self, Reconciler};
use crate::provisioning::executor::Executor;
use crate::provisioning::queue::file::FileQueue;
use crate::provisioning::queue::redis::RedisQueue;
use crate::provisioning::queue::{Backoff, WorkQueue};
use crate::provisioning::scim::redis_store::RedisScimStore;
use crate::provisioning::scim::store::{FileStore, MemoryStore, ScimStore};
use crate::provisioning::scim::{ScimData, ScimService};
use crate::reload::PolicySnapshot;
use crate::session;
use crate::store::RedisHandle;
use crate::web::{self, AppState, Shared};

/// The gateway's state, built from a validated configuration: the IdP clients, the BigCommerce
/// clients (with their webhook recording and metering layers), sessions, one-time values, SAML,
/// forward auth. Nothing is contacted yet: IdP discovery and Redis connect on first use, so the
/// gateway starts (and reports not-ready) while they are down. SCIM is opened by [`open_scim`].
pub fn build_state(
    config: Config,
    clock: SharedClock,
    audit: AuditLog,
) -> anyhow::Result<AppState> {
    let http = reqwest::Client::builder()
        // Never follow redirects from an IdP's back channel.
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(5))
        .build()?;
    let mut providers = BTreeMap::new();
    for idp in &config.idps {
        match &idp.protocol {
            Protocol::Oidc(o) => {
                let p = OidcProvider::new(idp, o, config.base_url(), http.clone(), clock.clone())?;
                providers.insert(idp.id.to_string(), Arc::new(p));
            }
            // Built below, with the SP.
            Protocol::Saml(_) => {}
        }
    }
    let metrics = crate::metrics::Metrics::new()?;
    // The metrics and the console's recent activity both watch every audit event.
    let recent = web::admin::console::RecentActivity::new(clock.clone());
    let audit = {
        let count = metrics.audit_observer();
        let watch = recent.clone();
        audit.with_observer(Arc::new(move |ev: &crate::audit::AuditEvent| {
            count(ev);
            watch.observe(ev);
        }))
    };
    let sessions = session::Store::from_config(&config.session).map_err(anyhow::Error::msg)?;
    // One-time values (SAML replay cache, pending SAML requests, seen webhooks, our own
    // recent changes) live beside the sessions: in Redis they are shared by every replica.
    let one_time = match &sessions {
        session::Store::Redis(s) => {
            session::one_time::OneTimeStore::redis(s.handle().clone(), crate::store::REDIS_PREFIX)
        }
        session::Store::Memory(_) => session::one_time::OneTimeStore::memory(),
    };
    let store_clock = Arc::new(StoreClock::new(clock.clone()));
    let webhooks = if config
        .bigcommerce
        .iter()
        .any(|a| a.webhook_secret.is_some())
    {
        // In memory (one process) the webhook records get their own bounded store: a burst
        // of deliveries filling the shared one would refuse SAML sign-ins. In Redis they
        // share the sessions' server, so every replica sees them.
        let hook_store = match &one_time {
            session::one_time::OneTimeStore::Memory(_) => session::one_time::OneTimeStore::memory(),
            redis => redis.clone(),
        };
        let own = crate::bigcommerce::webhooks::OwnChanges::new(hook_store, clock.clone())
            .with_store_clock(store_clock.clone());
        Some(Arc::new(web::webhooks::WebhookState::build(&config, own)?))
    } else {
        None
    };
    let layers = ClientLayers {
        own: webhooks.as_ref().map(|w| w.own.clone()),
        latency: Some(metrics.bigcommerce_latency()),
    };
    let mut bigcommerce: HashMap<String, Arc<dyn Customers>> = HashMap::new();
    for account in &config.bigcommerce {
        let api = customer_client(account, Caller::Launch, &layers)?;
        bigcommerce.insert(account.id.clone(), api);
    }
    let mut b2b = crate::bigcommerce::b2b::clients(&config)?;
    if let Some(w) = &webhooks {
        crate::bigcommerce::webhooks::RecordingB2bApi::wrap_all(&mut b2b, &config, &w.own);
    }
    if let session::Store::Redis(s) = &sessions {
        metrics.watch_redis(s.handle().clone())?;
    }
    let saml_idps = config.idps.iter().filter_map(|idp| match &idp.protocol {
        Protocol::Saml(s) => Some((&idp.id, s)),
        Protocol::Oidc(_) => None,
    });
    let saml = crate::federation::saml::SamlState::build(
        config.saml.as_ref(),
        saml_idps,
        one_time.clone(),
        !config.allow_insecure_http,
    )
    .map_err(anyhow::Error::msg)?
    .map(Arc::new);
    let forward = crate::flows::forward_auth::ForwardState::build(&config)?.map(Arc::new);
    // Which sessions each IdP session opened, beside the sessions (shared by replicas in Redis).
    let session_index = session::index::SessionIndex::beside(&sessions);
    Ok(AppState::new(Shared {
        forward,
        saml,
        policy: Arc::new(arc_swap::ArcSwap::from_pointee(
            PolicySnapshot::from_config(&config),
        )),
        store_clock,
        config: Arc::new(config),
        clock,
        providers: Arc::new(providers),
        bigcommerce: Arc::new(bigcommerce),
        b2b: Arc::new(b2b),
        audit,
        portal_prefs: web::portal_prefs::PrefsStore::beside(&sessions),
        recent,
        sessions: Arc::new(sessions),
        session_index,
        one_time,
        metrics,
        scim: None,
        webhooks,
    }))
}

/// Opens the SCIM service when `[scim]` is enabled (loads every stored resource).
pub async fn open_scim(mut state: AppState) -> anyhow::Result<AppState> {
    if let Some(cfg) = &state.config.scim {
        let redis = match &*state.sessions {
            session::Store::Redis(s) => Some(s.handle().clone()),
            session::Store::Memory(_) => None,
        };
        let service = Arc::new(open_scim_service(cfg, redis, state.clock.clone()).await?);
        state.make_mut().scim = Some(service);
    }
    Ok(state)
}

/// `redis` is the gateway's one Redis connection, when it has one.
pub async fn open_scim_service(
    cfg: &ScimConfig,
    redis: Option<RedisHandle>,
    clock: SharedClock,
) -> anyhow::Result<ScimService> {
    Ok(ScimService::open(open_scim_store(cfg, redis)?, clock).await?)
}

/// The configured store (`[scim] store`).
pub fn open_scim_store(
    cfg: &ScimConfig,
    redis: Option<RedisHandle>,
) -> anyhow::Result<Arc<dyn ScimStore>> {
    Ok(match &cfg.store {
        ScimStorage::Memory => Arc::new(MemoryStore),
        ScimStorage::File(dir) => Arc::new(FileStore::open(dir)?),
        ScimStorage::Redis => match redis {
            Some(h) => Arc::new(RedisScimStore::new(h, crate::store::REDIS_PREFIX)),
            None => anyhow::bail!(
                "scim.store is \"redis\" but the gateway has no Redis: set [session] store = \"redis\""
            ),
        },
    })
}

/// The layers stacked on a customer client besides the launch's quick retry.
#[derive(Clone, Default)]
pub struct ClientLayers {
    /// Records every customer the client writes, so its webhooks are known to be ours.
    pub own: Option<OwnChanges>,
    /// The `bigcommerce` latency histogram (`storegate_bigcommerce_request_duration_seconds`).
    pub latency: Option<prometheus::HistogramVec>,
}

/// The customer client of `account` for `caller`, with its layers, innermost first: the HTTP
/// client; the one quick retry (the launch only: the reconciler's queue decides itself);
/// own-change recording; metering outermost, so a retried call is one observation.
pub fn customer_client(
    account: &crate::config::BigCommerceAccount,
    caller: Caller,
    layers: &ClientLayers,
) -> anyhow::Result<Arc<dyn Customers>> {
    let http = HttpCustomers::new(account)
        .map_err(|e| anyhow::anyhow!("[[bigcommerce]] {}: {e}", account.id))?;
    let mut api: Arc<dyn Customers> = Arc::new(http);
    if caller == Caller::Launch {
        api = QuickRetry::wrap(api, RetryPolicy::default());
    }
    if let Some(own) = &layers.own {
        api = RecordingCustomers::wrap(api, own.clone());
    }
    if let Some(latency) = &layers.latency {
        api = MeteredCustomers::wrap(&account.id, caller, api, latency.clone());
    }
    Ok(api)
}

/// The reconciler of `storegate reconcile` and the tests: with its own Redis connection when
/// `[provisioning] queue = "redis"`; the gateway shares its own ([`reconciler_with_redis`]).
pub fn reconciler(
    config: Arc<Config>,
    audit: AuditLog,
    clock: SharedClock,
    backoff: Backoff,
) -> anyhow::Result<Reconciler> {
    reconciler_with_redis(
        config,
        audit,
        clock,
        backoff,
        None,
        &ClientLayers::default(),
    )
}

/// Like [`reconciler`], with the gateway's shared [`RedisHandle`](crate::store::RedisHandle)
/// for a Redis queue and the gateway's client layers (recording, metering).
pub fn reconciler_with_redis(
    config: Arc<Config>,
    audit: AuditLog,
    clock: SharedClock,
    backoff: Backoff,
    redis: Option<crate::store::RedisHandle>,
    layers: &ClientLayers,
) -> anyhow::Result<Reconciler> {
    let mut clients = HashMap::new();
    for a in &config.bigcommerce {
        clients.insert(
            a.id.clone(),
            customer_client(a, Caller::Reconciler, layers)?,
        );
    }
    let staff = staff_reconciler(&config, redis.clone(), audit.clone(), clock.clone())?;
    let queue = open_queue(&config, redis)?;
    let executor = Arc::new(Executor {
        queue,
        clients: clients.clone(),
        audit,
        clock,
        backoff,
    });
    let b2b = crate::bigcommerce::b2b::clients(&config)?;
    Ok(Reconciler {
        config,
        clients,
        b2b,
        executor,
        staff,
    })
}

/// The control-panel step (issue 12) when `[[account]]` is configured. Its budget: on the
/// `[session]` Redis when there is one (every replica shares it), else in a file beside the
/// provisioning queue file (`QUEUE.account-budget.json`), so a restart does not reset it.
pub fn staff_reconciler(
    config: &Config,
    redis: Option<crate::store::RedisHandle>,
    audit: AuditLog,
    clock: SharedClock,
) -> anyhow::Result<Option<Arc<crate::controlpanel::run::StaffReconciler>>> {
    use crate::controlpanel::budget::{CallBudget, FileBudget, HOURLY_LIMIT, RedisBudget};
    if config.accounts.is_empty() {
        return Ok(None);
    }
    let redis = match redis {
        Some(h) => Some(h),
        None => {
            match crate::session::Store::from_config(&config.session).map_err(anyhow::Error::msg)? {
                crate::session::Store::Redis(s) => Some(s.handle().clone()),
                crate::session::Store::Memory(_) => None,
            }
        }
    };
    let budget: Arc<dyn CallBudget> = match (redis, &config.provisioning.queue) {
        (Some(h), _) => Arc::new(RedisBudget::new(
            h,
            crate::store::REDIS_PREFIX,
            HOURLY_LIMIT,
        )),
        (None, QueueStorage::File(path)) => {
            let mut name = path.as_os_str().to_owned();
            name.push(".account-budget.json");
            Arc::new(FileBudget::open(name.into(), HOURLY_LIMIT)?)
        }
        (None, QueueStorage::Redis) => {
            anyhow::bail!("provisioning.queue = \"redis\" needs [session] store = \"redis\"")
        }
    };
    Ok(Some(Arc::new(
        crate::controlpanel::run::StaffReconciler::from_config(
            &config.accounts,
            budget,
            audit,
            clock,
        )?,
    )))
}

/// The configured queue: the file, or a Redis Stream on `redis` (else on a connection opened
/// from `[session]`).
pub fn open_queue(
    config: &Config,
    redis: Option<crate::store::RedisHandle>,
) -> anyhow::Result<Arc<dyn WorkQueue>> {
    match &config.provisioning.queue {
        QueueStorage::File(path) => Ok(Arc::new(FileQueue::open(path)?)),
        QueueStorage::Redis => {
            let handle = match redis {
                Some(h) => h,
                None => match crate::session::Store::from_config(&config.session)
                    .map_err(anyhow::Error::msg)?
                {
                    crate::session::Store::Redis(s) => s.handle().clone(),
                    crate::session::Store::Memory(_) => anyhow::bail!(
                        "provisioning.queue = \"redis\" needs [session] store = \"redis\""
                    ),
                },
            };
            let accounts = config.bigcommerce.iter().map(|a| a.id.clone()).collect();
            Ok(Arc::new(RedisQueue::new(
                handle,
                crate::store::REDIS_PREFIX,
                accounts,
                config.provisioning.queue_claim_after,
            )))
        }
    }
}

/// SCIM data as stored on disk or in Redis (for `storegate reconcile` without a running gateway).
pub async fn load_scim(cfg: &Config) -> anyhow::Result<ScimData> {
    match cfg.scim.as_ref().map(|s| &s.store) {
        Some(ScimStorage::File(dir)) => {
            let store = crate::provisioning::scim::store::FileStore::open(dir)?;
            Ok(ScimData::from_resources(store.load_blocking()?))
        }
        Some(ScimStorage::Redis) => {
            let crate::session::Store::Redis(s) =
                crate::session::Store::from_config(&cfg.session).map_err(anyhow::Error::msg)?
            else {
                anyhow::bail!("scim.store is \"redis\" but [session] has no Redis");
            };
            let store = crate::provisioning::scim::redis_store::RedisScimStore::new(
                s.handle().clone(),
                crate::store::REDIS_PREFIX,
            );
            use crate::provisioning::scim::store::ScimStore;
            let items = store
                .load()
                .await
                .map_err(|e| anyhow::anyhow!("cannot read the SCIM data from Redis: {e}"))?;
            Ok(ScimData::from_resources(items))
        }
        Some(ScimStorage::Memory) => anyhow::bail!(
            "scim.store is \"memory\": there is nothing stored to reconcile from outside the gateway"
        ),
        None => anyhow::bail!("[scim] is not enabled: there is no desired state to reconcile"),
    }
}

/// The scheduled reconcile (issue 5): with `[scim]` enabled, at least one `[[bigcommerce]]` and a
/// non-zero `[provisioning] reconcile_interval`, a pass runs every interval in the background.
pub fn start_reconcile_schedule(
    state: &AppState,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let (Some(scim), Some(interval)) = (
        state.scim.clone(),
        state.config.provisioning.reconcile_interval,
    ) else {
        return Ok(None);
    };
    if state.config.bigcommerce.is_empty() {
        return Ok(None);
    }
    // The Redis queue shares the gateway's one Redis connection.
    let redis = match state.sessions.as_ref() {
        crate::session::Store::Redis(s) => Some(s.handle().clone()),
        crate::session::Store::Memory(_) => None,
    };
    let mut r = reconciler_with_redis(
        state.config.clone(),
        state.audit.clone(),
        state.clock.clone(),
        Default::default(),
        redis,
        // The reconciler's writes are our own changes too: their webhooks are not external.
        &ClientLayers {
            own: state.webhooks.as_ref().map(|w| w.own.clone()),
            latency: Some(state.metrics.bigcommerce_latency()),
        },
    )?;
    state.metrics.watch_queue(r.executor.queue.clone())?;
    state.recent.watch_queue(r.executor.queue.clone());
    if let Some(staff) = &r.staff {
        staff.set_gauges(state.metrics.control_panel_gauges()?);
    }
    if let Some(w) = &state.webhooks {
        crate::bigcommerce::webhooks::RecordingB2bApi::wrap_all(&mut r.b2b, &state.config, &w.own);
    }
    tracing::info!(every = ?interval, "scheduled reconcile enabled");
    Ok(Some(provision::spawn_schedule(
        std::sync::Arc::new(r),
        scim,
        interval,
        state.webhooks.as_ref().map(|w| w.reconcile_wake.clone()),
    )))
}
