//! One reconcile pass: read desired state (SCIM + policy) and actual state (BigCommerce), plan,
//! then print the plan (`--dry-run`) or queue it and work the queue off.

use std::collections::HashMap;
use std::sync::Arc;

use super::bc::{BatchClient, CallError};
use super::queue::{Backoff, DrainReport, Executor, Queue};
use super::reconcile::{self, Action, Actual, GroupIds};
use super::scim::ScimData;
use crate::audit::AuditLog;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::config::provisioning::{Deprovision, ScimStorage};
use crate::policy::CustomerGroupRef;

/// Emails per lookup call (`GET /v3/customers?email:in=...`).
const LOOKUP: usize = 50;

pub struct Reconciler {
    pub config: Arc<Config>,
    pub clients: HashMap<String, Arc<BatchClient>>,
    pub executor: Arc<Executor>,
}

#[derive(Debug, Default)]
pub struct PassReport {
    pub run: String,
    pub plan: Vec<Action>,
    pub drain: DrainReport,
}

/// SCIM data as stored on disk (for `storegate reconcile` without a running gateway).
pub fn load_scim(cfg: &Config) -> anyhow::Result<ScimData> {
    match cfg.scim.as_ref().map(|s| &s.store) {
        Some(ScimStorage::File(dir)) => {
            let store = super::scim::store::FileStore::open(dir)?;
            Ok(ScimData::from_resources(store.load_blocking()?))
        }
        Some(ScimStorage::Memory) => anyhow::bail!(
            "scim.store is \"memory\": there is nothing stored to reconcile from outside the gateway"
        ),
        None => anyhow::bail!("[scim] is not enabled: there is no desired state to reconcile"),
    }
}

impl Reconciler {
    pub fn new(
        config: Arc<Config>,
        audit: AuditLog,
        clock: SharedClock,
        backoff: Backoff,
    ) -> anyhow::Result<Self> {
        let mut clients = HashMap::new();
        for a in &config.bigcommerce {
            clients.insert(a.id.clone(), Arc::new(BatchClient::new(a)?));
        }
        let queue = Arc::new(Queue::open(&config.provisioning.queue)?);
        let executor = Arc::new(Executor {
            queue,
            clients: clients.clone(),
            audit,
            clock,
            backoff,
        });
        Ok(Reconciler {
            config,
            clients,
            executor,
        })
    }

    /// A call retried through 429 and 5xx (lookups before planning).
    async fn retrying<T, F, Fut>(&self, f: F) -> anyhow::Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, CallError>>,
    {
        let b = self.executor.backoff;
        let mut failures = 0u32;
        loop {
            match f().await {
                Ok(v) => return Ok(v),
                Err(CallError::RateLimited { reset_ms }) => {
                    tokio::time::sleep(
                        reset_ms
                            .map(std::time::Duration::from_millis)
                            .unwrap_or(b.rate_limited_default),
                    )
                    .await;
                }
                Err(CallError::Transient(e)) if failures < b.give_up_after => {
                    failures += 1;
                    tracing::warn!(error = %e, "BigCommerce lookup failed; backing off");
                    tokio::time::sleep(b.first.saturating_mul(1 << failures.min(16)).min(b.max))
                        .await;
                }
                Err(e) => return Err(anyhow::anyhow!("BigCommerce: {e}")),
            }
        }
    }

    /// The customers of every account with the emails in question.
    async fn actual(&self, emails: &[String]) -> anyhow::Result<Actual> {
        let mut actual: Actual = HashMap::new();
        for (account, client) in &self.clients {
            let mut have = HashMap::new();
            for chunk in emails.chunks(LOOKUP) {
                let found = self
                    .retrying(|| async { client.find_by_emails(chunk).await.0 })
                    .await?;
                for c in found {
                    have.insert(c.email.to_lowercase(), c);
                }
            }
            actual.insert(account.clone(), have);
        }
        Ok(actual)
    }

    async fn groups(
        &self,
        desired: &reconcile::Desired,
        need_locked: bool,
    ) -> anyhow::Result<GroupIds> {
        let mut g = GroupIds::default();
        for d in &desired.customers {
            if let Some(CustomerGroupRef::Name(n)) = &d.group {
                let key = (d.account.clone(), n.clone());
                if g.named.contains_key(&key) {
                    continue;
                }
                if let Some(client) = self.clients.get(&d.account) {
                    let id = self.retrying(|| client.group_id(n)).await?;
                    g.named.insert(key, id);
                }
            }
        }
        if need_locked && self.config.provisioning.deprovision == Deprovision::Restrict {
            let name = &self.config.provisioning.locked_customer_group;
            for (account, client) in &self.clients {
                let id = self.retrying(|| client.group_id(name)).await?;
                g.locked.insert(account.clone(), id);
            }
        }
        Ok(g)
    }

    /// Plans a pass. Work left in the queue by an earlier run is finished first, so the plan reads
    /// an up-to-date BigCommerce.
    pub async fn plan(
        &self,
        data: &ScimData,
        now: crate::clock::UnixTime,
    ) -> anyhow::Result<Vec<Action>> {
        let desired = reconcile::desired_state(&self.config, data, now);
        let mut emails: Vec<String> = desired
            .customers
            .iter()
            .map(|d| d.email.to_lowercase())
            .chain(desired.leavers.iter().cloned())
            .collect();
        emails.sort();
        emails.dedup();
        let actual = self.actual(&emails).await?;
        let groups = self
            .groups(
                &desired,
                !desired.leavers.is_empty() || !desired.customers.is_empty(),
            )
            .await?;
        let accounts: Vec<String> = self
            .config
            .bigcommerce
            .iter()
            .map(|a| a.id.clone())
            .collect();
        Ok(reconcile::plan(
            &desired,
            &actual,
            &groups,
            &accounts,
            self.config.provisioning.deprovision,
        ))
    }

    /// A full pass: finish queued work, plan, queue, work it off.
    pub async fn pass(
        &self,
        data: &ScimData,
        now: crate::clock::UnixTime,
    ) -> anyhow::Result<PassReport> {
        let mut report = PassReport {
            run: uuid::Uuid::new_v4().to_string(),
            ..Default::default()
        };
        if !self.executor.queue.is_empty().await {
            let r = self.executor.drain(None).await;
            if !r.stalled.is_empty() {
                anyhow::bail!(
                    "BigCommerce kept failing for {:?}; queued work is kept for the next run",
                    r.stalled
                );
            }
        }
        report.plan = self.plan(data, now).await?;
        self.executor
            .queue
            .enqueue(&report.run, report.plan.clone())
            .await?;
        report.drain = self.executor.drain(None).await;
        Ok(report)
    }
}

/// The plan as text, one action a line.
pub fn render_plan(plan: &[Action]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for a in plan {
        let _ = match a {
            Action::Create {
                customer: c,
                group_id,
            } => writeln!(
                out,
                "create   {:<10} {} channels {:?} group {}",
                c.account,
                c.email,
                c.channel_ids,
                group_id
                    .map(|g| g.to_string())
                    .unwrap_or_else(|| "-".into())
            ),
            Action::Update {
                account,
                id,
                email,
                before,
                after,
            } => writeln!(
                out,
                "update   {account:<10} {email} (#{id}) channels {:?} -> {:?}, group {} -> {}",
                before.channel_ids,
                after.channel_ids,
                before.customer_group_id,
                after.customer_group_id
            ),
            Action::Restrict {
                account,
                id,
                email,
                before,
                after,
            } => writeln!(
                out,
                "restrict {account:<10} {email} (#{id}) channels {:?} -> {:?}, group {} -> {} (locked), random password",
                before.channel_ids,
                after.channel_ids,
                before.customer_group_id,
                after.customer_group_id
            ),
            Action::Delete {
                account, id, email, ..
            } => writeln!(out, "delete   {account:<10} {email} (#{id})"),
        };
    }
    let _ = writeln!(out, "{} action(s)", plan.len());
    out
}
