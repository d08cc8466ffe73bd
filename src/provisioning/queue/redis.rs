//! `queue = "redis"`: the queue shared by every replica, on the gateway's one [`RedisHandle`].
//!
//! Keys (all under one hash tag, `PREFIX{prov}`, so the multi-key scripts run in one Redis
//! Cluster slot):
//! - `PREFIX{prov}:q:ACCOUNT`: one Stream per BigCommerce account, one entry per item (field
//!   `item`, the item as JSON), read through the consumer group `executors`. Every queue object
//!   is its own consumer (`HOST-PID-RANDOM`).
//! - `PREFIX{prov}:dead`: the dead letters (fields `item`, `reason`), capped near 10,000.
//! - `PREFIX{prov}:paused:ACCOUNT`: "paused until", as a key that expires when the pause ends.
//! - `PREFIX{prov}:lease`: the scheduled pass lease (`SET NX PX`, renewed, released).
//!
//! Batching: each action is its own entry (so one failure, retry or dead letter concerns one
//! customer). A worker reads up to 10 entries at a time and sends the first together with the
//! ones of the same kind; the others stay pending to this consumer and come first next time
//! (XREADGROUP with id `0` re-reads them).
//!
//! Delivery: an entry is XACKed (and deleted) only in [`WorkQueue::settle`], after BigCommerce
//! confirmed the effect. A new stage or a failed attempt replaces the entry (XACK + XADD in one
//! script, only while the old entry is still unacknowledged: the first consumer to settle an
//! entry wins). Entries a consumer left pending for longer than `claim_after` (it crashed or
//! stopped) are taken over by another with XAUTOCLAIM and treated as uncertain (creates look
//! before they create). Right before its call, a worker confirms it still owns its batch (and
//! resets the entries' idle time), so a slow consumer does not send what another took over.

use std::collections::HashSet;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};

use super::{BATCH, Item, PassLease, QueueError, QueueStats, WorkQueue, pick_batch};
use crate::provisioning::reconcile::Action;
use crate::store::{RedisHandle, describe};

const GROUP: &str = "executors";
/// How long a scheduled pass's lease lives without renewal; renewed every third of it.
pub const LEASE_TTL: Duration = Duration::from_secs(30);
/// Entries read from a consumer's own pending list at once.
const OWN_PENDING: usize = 100;
/// Dead letters kept (approximately).
const DEAD_KEEP: usize = 10_000;

/// Confirms which of the given entries this consumer still owns and resets their idle time.
static TOUCH: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local owned = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    owned[#owned + 1] = ARGV[i]
  end
end
return owned
",
    )
});

/// Settles entries of one stream: done (ack), dead (ack + dead letter), changed (ack + re-add).
/// An entry already acknowledged by another consumer is left alone (its settlement won).
static SETTLE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local g = ARGV[1]
local keep = tonumber(ARGV[2])
local i = 3
local n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  redis.call('XACK', KEYS[1], g, ARGV[i])
  redis.call('XDEL', KEYS[1], ARGV[i])
  i = i + 1
end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  if redis.call('XACK', KEYS[1], g, ARGV[i]) == 1 then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', keep, '*', 'item', ARGV[i + 1], 'reason', ARGV[i + 2])
  end
  redis.call('XDEL', KEYS[1], ARGV[i])
  i = i + 3
end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  if redis.call('XACK', KEYS[1], g, ARGV[i]) == 1 then
    redis.call('XADD', KEYS[1], '*', 'item', ARGV[i + 1])
  end
  redis.call('XDEL', KEYS[1], ARGV[i])
  i = i + 2
end
return 1
",
    )
});

static RENEW: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
",
    )
});

static RELEASE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
",
    )
});

pub struct RedisQueue {
    redis: RedisHandle,
    /// `PREFIX{prov}`.
    tag: String,
    accounts: Vec<String>,
    consumer: String,
    claim_after: Duration,
    /// Streams whose consumer group this process created (or found).
    grouped: std::sync::Mutex<HashSet<String>>,
    /// Entries (`STREAM ID`: entry ids repeat across streams) handed to a worker and not
    /// settled: read back from the own pending list, they may have taken effect already.
    taken: std::sync::Mutex<HashSet<String>>,
}

/// The `taken` key of entry `id` of stream `key`.
fn taken_key(key: &str, id: &str) -> String {
    format!("{key} {id}")
}

fn redis_err(redis: &RedisHandle, command: &'static str, e: &redis::RedisError) -> QueueError {
    redis.count_error();
    QueueError::Command {
        command,
        detail: describe(e),
    }
}

impl RedisQueue {
    /// `prefix` is the gateway's Redis key prefix (`storegate:`); `accounts` the configured
    /// `[[bigcommerce]]` ids; entries pending longer than `claim_after` are taken over.
    pub fn new(
        redis: RedisHandle,
        prefix: &str,
        accounts: Vec<String>,
        claim_after: Duration,
    ) -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "storegate".into());
        let random = uuid::Uuid::new_v4().simple().to_string();
        RedisQueue {
            redis,
            tag: format!("{prefix}{{prov}}"),
            accounts,
            consumer: format!("{host}-{}-{}", std::process::id(), &random[..8]),
            claim_after,
            grouped: Default::default(),
            taken: Default::default(),
        }
    }

    /// This queue's consumer name in the group.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    pub fn stream(&self, account: &str) -> String {
        format!("{}:q:{account}", self.tag)
    }

    pub fn dead_key(&self) -> String {
        format!("{}:dead", self.tag)
    }

    fn pause_key(&self, account: &str) -> String {
        format!("{}:paused:{account}", self.tag)
    }

    pub fn lease_key(&self) -> String {
        format!("{}:lease", self.tag)
    }

    async fn conn(&self) -> Result<impl redis::aio::ConnectionLike + Clone + Send, QueueError> {
        self.redis.conn().await.map_err(QueueError::Unavailable)
    }

    /// Creates the consumer group (and the stream) once per stream and process.
    async fn ensure_group(&self, key: &str) -> Result<(), QueueError> {
        if self.grouped.lock().is_ok_and(|g| g.contains(key)) {
            return Ok(());
        }
        let mut c = self.conn().await?;
        let r: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(key)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut c)
            .await;
        match r {
            Ok(()) => {}
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => return Err(redis_err(&self.redis, "XGROUP CREATE", &e)),
        }
        if let Ok(mut g) = self.grouped.lock() {
            g.insert(key.to_owned());
        }
        Ok(())
    }

    /// A Redis that restarted empty lost the group: forget it so the next call recreates it.
    fn forget_group(&self, key: &str, e: &redis::RedisError) {
        if e.code() == Some("NOGROUP")
            && let Ok(mut g) = self.grouped.lock()
        {
            g.remove(key);
        }
    }

    /// Appends the items of `entries` to `out`; returns the ids of entries that are not
    /// storegate items (they go to the dead letters, so they cannot hold the queue forever).
    fn parse(
        &self,
        key: &str,
        entries: Vec<StreamId>,
        uncertain: bool,
        out: &mut Vec<Item>,
    ) -> Vec<String> {
        let mut bad = Vec::new();
        for e in entries {
            let text = e
                .map
                .get("item")
                .and_then(|raw| redis::from_redis_value::<String>(raw).ok())
                .unwrap_or_default();
            match serde_json::from_str::<Item>(&text) {
                Ok(mut item) => {
                    let tk = taken_key(key, &e.id);
                    item.uncertain |= match self.taken.lock() {
                        // Taken over from another consumer: now pending here, and uncertain
                        // until settled, also when it is not in this batch but read back later.
                        Ok(mut t) if uncertain => {
                            t.insert(tk);
                            true
                        }
                        Ok(t) => t.contains(&tk),
                        Err(_) => true,
                    };
                    item.entry = Some(e.id);
                    if !out.iter().any(|o| o.entry == item.entry) {
                        out.push(item);
                    }
                }
                Err(err) => {
                    tracing::error!(
                        entry = %e.id,
                        error = %err,
                        "provisioning queue entry is not a storegate item; moved to the dead letters (written by another program or version?)"
                    );
                    bad.push(e.id);
                }
            }
        }
        bad
    }

    /// Moves entries that are not storegate items to the dead letters.
    async fn dead_letter_raw(&self, key: &str, ids: Vec<String>) -> Result<(), QueueError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for id in &ids {
            pipe.cmd("XADD")
                .arg(self.dead_key())
                .arg("*")
                .arg("entry")
                .arg(id)
                .arg("reason")
                .arg("not a storegate item")
                .ignore();
            pipe.cmd("XACK").arg(key).arg(GROUP).arg(id).ignore();
            pipe.cmd("XDEL").arg(key).arg(id).ignore();
        }
        let mut c = self.conn().await?;
        pipe.query_async::<()>(&mut c)
            .await
            .map_err(|e| redis_err(&self.redis, "dead-lettering unreadable entries", &e))
    }

    async fn read_group(
        &self,
        key: &str,
        id: &str,
        count: usize,
    ) -> Result<Vec<StreamId>, QueueError> {
        let mut c = self.conn().await?;
        let r: redis::RedisResult<Option<StreamReadReply>> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(count)
            .arg("STREAMS")
            .arg(key)
            .arg(id)
            .query_async(&mut c)
            .await;
        match r {
            Ok(reply) => Ok(reply
                .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
                .unwrap_or_default()),
            Err(e) => {
                self.forget_group(key, &e);
                Err(redis_err(&self.redis, "XREADGROUP", &e))
            }
        }
    }

    async fn pending_count(&self, key: &str) -> Result<u64, QueueError> {
        let mut c = self.conn().await?;
        let r: redis::RedisResult<redis::Value> = redis::cmd("XPENDING")
            .arg(key)
            .arg(GROUP)
            .query_async(&mut c)
            .await;
        match r {
            Ok(redis::Value::Array(v)) => Ok(v
                .first()
                .and_then(|n| redis::from_redis_value::<u64>(n).ok())
                .unwrap_or(0)),
            Ok(_) => Ok(0),
            // No stream or no group yet: nothing is pending.
            Err(e) if e.code() == Some("NOGROUP") => Ok(0),
            Err(e) => Err(redis_err(&self.redis, "XPENDING", &e)),
        }
    }

    async fn xlen(&self, key: &str) -> Result<u64, QueueError> {
        let mut c = self.conn().await?;
        redis::cmd("XLEN")
            .arg(key)
            .query_async(&mut c)
            .await
            .map_err(|e| redis_err(&self.redis, "XLEN", &e))
    }
}

/// The lease of one scheduled pass, renewed in the background until released or dropped.
struct RedisLease {
    redis: RedisHandle,
    key: String,
    token: String,
    renew: tokio::task::JoinHandle<()>,
}

impl Drop for RedisLease {
    fn drop(&mut self) {
        self.renew.abort();
    }
}

#[async_trait]
impl PassLease for RedisLease {
    async fn release(self: Box<Self>) {
        self.renew.abort();
        let Ok(mut c) = self.redis.conn().await else {
            // It expires by itself within LEASE_TTL.
            return;
        };
        let r: redis::RedisResult<i64> = RELEASE
            .key(&self.key)
            .arg(&self.token)
            .invoke_async(&mut c)
            .await;
        if let Err(e) = r {
            self.redis.count_error();
            tracing::warn!(error = %describe(&e), "cannot release the reconcile lease; it expires by itself");
        }
    }
}

#[async_trait]
impl WorkQueue for RedisQueue {
    async fn enqueue(&self, run: &str, actions: Vec<Action>) -> Result<(), QueueError> {
        if actions.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        let mut streams = HashSet::new();
        for action in actions {
            let key = self.stream(action.account());
            let item =
                serde_json::to_string(&Item::new(run, action)).map_err(QueueError::Encode)?;
            pipe.cmd("XADD")
                .arg(&key)
                .arg("*")
                .arg("item")
                .arg(item)
                .ignore();
            streams.insert(key);
        }
        for key in &streams {
            self.ensure_group(key).await?;
        }
        let mut c = self.conn().await?;
        pipe.query_async::<()>(&mut c)
            .await
            .map_err(|e| redis_err(&self.redis, "XADD", &e))
    }

    async fn len(&self) -> Result<u64, QueueError> {
        let mut n = 0;
        for a in &self.accounts {
            n += self.xlen(&self.stream(a)).await?;
        }
        Ok(n)
    }

    async fn accounts(&self) -> Result<Vec<String>, QueueError> {
        let mut out = Vec::new();
        for a in &self.accounts {
            if self.xlen(&self.stream(a)).await? > 0 {
                out.push(a.clone());
            }
        }
        Ok(out)
    }

    async fn next_batch(&self, account: &str) -> Result<Vec<Item>, QueueError> {
        let key = self.stream(account);
        self.ensure_group(&key).await?;
        let mut items = Vec::new();
        let own = self.read_group(&key, "0", OWN_PENDING).await?;
        let mut bad = self.parse(&key, own, false, &mut items);
        if items.len() < BATCH {
            let mut c = self.conn().await?;
            let claimed: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
                .arg(&key)
                .arg(GROUP)
                .arg(&self.consumer)
                .arg(self.claim_after.as_millis() as u64)
                .arg("0-0")
                .arg("COUNT")
                .arg(BATCH)
                .query_async(&mut c)
                .await
                .map_err(|e| redis_err(&self.redis, "XAUTOCLAIM", &e))?;
            if !claimed.claimed.is_empty() {
                tracing::info!(
                    account,
                    entries = claimed.claimed.len(),
                    "took over provisioning work a stopped consumer left pending"
                );
            }
            bad.extend(self.parse(&key, claimed.claimed, true, &mut items));
        }
        if items.len() < BATCH {
            let new = self.read_group(&key, ">", BATCH).await?;
            bad.extend(self.parse(&key, new, false, &mut items));
        }
        self.dead_letter_raw(&key, bad).await?;
        let mut batch = pick_batch(&items);
        if batch.is_empty() {
            return Ok(batch);
        }
        let mut c = self.conn().await?;
        let mut touch = TOUCH.prepare_invoke();
        touch.key(&key).arg(GROUP).arg(&self.consumer);
        for i in &batch {
            touch.arg(i.entry.as_deref().unwrap_or_default());
        }
        let owned: Vec<String> = touch
            .invoke_async(&mut c)
            .await
            .map_err(|e| redis_err(&self.redis, "claiming the batch", &e))?;
        batch.retain(|i| i.entry.as_ref().is_some_and(|e| owned.contains(e)));
        if let Ok(mut t) = self.taken.lock() {
            t.extend(owned.iter().map(|id| taken_key(&key, id)));
        }
        Ok(batch)
    }

    async fn held_elsewhere(&self, account: &str) -> Result<bool, QueueError> {
        Ok(self.pending_count(&self.stream(account)).await? > 0)
    }

    async fn settle(
        &self,
        done: &[Item],
        dead: &[(Item, String)],
        changed: Vec<Item>,
    ) -> Result<(), QueueError> {
        let mut accounts: Vec<&str> = done
            .iter()
            .chain(dead.iter().map(|(i, _)| i))
            .chain(changed.iter())
            .map(|i| i.action.account())
            .collect();
        accounts.sort_unstable();
        accounts.dedup();
        let entry = |i: &Item| i.entry.clone().unwrap_or_default();
        let taken = |i: &Item| taken_key(&self.stream(i.action.account()), &entry(i));
        let mut c = self.conn().await?;
        let mut settled = Vec::new();
        for account in accounts {
            let mine = |i: &&Item| i.action.account() == account;
            let mut inv = SETTLE.prepare_invoke();
            inv.key(self.stream(account))
                .key(self.dead_key())
                .arg(GROUP)
                .arg(DEAD_KEEP);
            let d: Vec<&Item> = done.iter().filter(mine).collect();
            inv.arg(d.len());
            for i in d {
                inv.arg(entry(i));
                settled.push(taken(i));
            }
            let x: Vec<&(Item, String)> = dead.iter().filter(|(i, _)| mine(&i)).collect();
            inv.arg(x.len());
            for (i, why) in x {
                inv.arg(entry(i))
                    .arg(serde_json::to_string(i).map_err(QueueError::Encode)?)
                    .arg(why);
                settled.push(taken(i));
            }
            let ch: Vec<&Item> = changed.iter().filter(mine).collect();
            inv.arg(ch.len());
            for i in ch {
                inv.arg(entry(i))
                    .arg(serde_json::to_string(i).map_err(QueueError::Encode)?);
                settled.push(taken(i));
            }
            let _: i64 = inv
                .invoke_async(&mut c)
                .await
                .map_err(|e| redis_err(&self.redis, "settling a batch", &e))?;
        }
        if let Ok(mut t) = self.taken.lock() {
            for e in settled {
                t.remove(&e);
            }
        }
        Ok(())
    }

    async fn pause(&self, account: &str, wait: Duration) -> Result<(), QueueError> {
        let ms = wait.as_millis().max(1) as u64;
        let mut c = self.conn().await?;
        redis::cmd("SET")
            .arg(self.pause_key(account))
            .arg("1")
            .arg("PX")
            .arg(ms)
            .query_async::<()>(&mut c)
            .await
            .map_err(|e| redis_err(&self.redis, "SET (pause)", &e))
    }

    async fn paused_for(&self, account: &str) -> Result<Option<Duration>, QueueError> {
        let mut c = self.conn().await?;
        let ms: i64 = redis::cmd("PTTL")
            .arg(self.pause_key(account))
            .query_async(&mut c)
            .await
            .map_err(|e| redis_err(&self.redis, "PTTL (pause)", &e))?;
        Ok((ms > 0).then(|| Duration::from_millis(ms as u64)))
    }

    async fn lease(&self) -> Result<Option<Box<dyn PassLease>>, QueueError> {
        let key = self.lease_key();
        let token = format!("{}-{}", self.consumer, uuid::Uuid::new_v4().simple());
        let mut c = self.conn().await?;
        let got: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(LEASE_TTL.as_millis() as u64)
            .query_async(&mut c)
            .await
            .map_err(|e| redis_err(&self.redis, "SET NX (reconcile lease)", &e))?;
        if got.is_none() {
            return Ok(None);
        }
        let (redis, k, t) = (self.redis.clone(), key.clone(), token.clone());
        let renew = tokio::spawn(async move {
            loop {
                tokio::time::sleep(LEASE_TTL / 3).await;
                let Ok(mut c) = redis.conn().await else {
                    continue;
                };
                let r: redis::RedisResult<i64> = RENEW
                    .key(&k)
                    .arg(&t)
                    .arg(LEASE_TTL.as_millis() as u64)
                    .invoke_async(&mut c)
                    .await;
                match r {
                    Ok(1) => {}
                    Ok(_) => {
                        tracing::warn!(
                            "the reconcile lease expired while the pass ran (Redis unreachable for too long?); another replica may plan too"
                        );
                        return;
                    }
                    Err(e) => {
                        redis.count_error();
                        tracing::warn!(error = %describe(&e), "cannot renew the reconcile lease");
                    }
                }
            }
        });
        Ok(Some(Box::new(RedisLease {
            redis: self.redis.clone(),
            key,
            token,
            renew,
        })))
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        let mut s = QueueStats::default();
        for a in &self.accounts {
            let key = self.stream(a);
            let len = self.xlen(&key).await?;
            let pending = self.pending_count(&key).await?;
            s.in_flight += pending;
            s.waiting += len.saturating_sub(pending);
        }
        s.dead_letters = self.xlen(&self.dead_key()).await?;
        Ok(s)
    }

    /// The oldest entry of every account's stream: its id starts with the milliseconds Redis
    /// added it at.
    async fn oldest_queued_at(&self) -> Result<Option<i64>, QueueError> {
        let mut c = self.conn().await?;
        let mut oldest: Option<i64> = None;
        for a in &self.accounts {
            let r: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
                .arg(self.stream(a))
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(1)
                .query_async(&mut c)
                .await
                .map_err(|e| redis_err(&self.redis, "XRANGE (oldest)", &e))?;
            let at = r
                .ids
                .first()
                .and_then(|e| e.id.split('-').next())
                .and_then(|ms| ms.parse::<i64>().ok())
                .map(|ms| ms / 1000);
            oldest = match (oldest, at) {
                (Some(o), Some(a)) => Some(o.min(a)),
                (o, a) => o.or(a),
            };
        }
        Ok(oldest)
    }

    async fn dead_letters(&self) -> Result<Vec<(Item, String)>, QueueError> {
        let mut c = self.conn().await?;
        let r: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(self.dead_key())
            .arg("-")
            .arg("+")
            .query_async(&mut c)
            .await
            .map_err(|e| redis_err(&self.redis, "XRANGE (dead letters)", &e))?;
        let mut out = Vec::new();
        for e in r.ids {
            let field = |k: &str| {
                e.map
                    .get(k)
                    .and_then(|v| redis::from_redis_value::<String>(v).ok())
            };
            if let (Some(item), Some(reason)) = (field("item"), field("reason"))
                && let Ok(item) = serde_json::from_str::<Item>(&item)
            {
                out.push((item, reason));
            }
        }
        Ok(out)
    }
}
