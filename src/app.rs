//! The composition root: where the long-lived parts are built from the configuration and
//! handed to the flows. `serve`, `demo`, `reconcile` and the tests build their state here.

use std::collections::HashMap;
use std::sync::Arc;

use crate::audit::AuditLog;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::config::provisioning::{QueueStorage, ScimStorage};
use crate::flows::provision::{self, Reconciler};
use crate::provisioning::bc::BatchClient;
use crate::provisioning::executor::Executor;
use crate::provisioning::queue::file::FileQueue;
use crate::provisioning::queue::redis::RedisQueue;
use crate::provisioning::queue::{Backoff, WorkQueue};
use crate::provisioning::scim::ScimData;
use crate::web::AppState;

/// The reconciler of `storegate reconcile` and the tests: with its own Redis connection when
/// `[provisioning] queue = "redis"`; the gateway shares its own ([`reconciler_with_redis`]).
pub fn reconciler(
    config: Arc<Config>,
    audit: AuditLog,
    clock: SharedClock,
    backoff: Backoff,
) -> anyhow::Result<Reconciler> {
    reconciler_with_redis(config, audit, clock, backoff, None)
}

/// Like [`reconciler`], with the gateway's shared [`RedisHandle`](crate::store::RedisHandle)
/// for a Redis queue.
pub fn reconciler_with_redis(
    config: Arc<Config>,
    audit: AuditLog,
    clock: SharedClock,
    backoff: Backoff,
    redis: Option<crate::store::RedisHandle>,
) -> anyhow::Result<Reconciler> {
    let mut clients = HashMap::new();
    for a in &config.bigcommerce {
        clients.insert(a.id.clone(), Arc::new(BatchClient::new(a)?));
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
    )?;
    state.metrics.watch_queue(r.executor.queue.clone())?;
    if let Some(staff) = &r.staff {
        staff.set_gauges(state.metrics.control_panel_gauges()?);
    }
    // The reconciler's writes are our own changes too: their webhooks are not external.
    if let Some(w) = &state.webhooks {
        for client in r.clients.values() {
            client.record_own_changes(w.own.clone());
        }
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
