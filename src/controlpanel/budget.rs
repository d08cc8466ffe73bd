//! The Account API budget: 70 requests per hour per account (BigCommerce's limit, across every
//! `/accounts` path), shared by every replica and durable across restarts.
//!
//! A sliding hour: a call is allowed when fewer than 70 were spent in the hour before `now`, so
//! no hour ever holds more than 70, whichever replica spent them. Each call is spent *before* it
//! is sent (a call that then fails still counted at BigCommerce).
//! - [`RedisBudget`] (`[session] store = "redis"`): a sorted set per account, checked and spent
//!   in one script, so two replicas cannot both take the 70th call.
//! - [`FileBudget`] (one gateway): the same log in a small JSON file beside the provisioning
//!   queue file, rewritten (write + rename) on every spend, so a restart does not reset it.
//!
//! The clock is the caller's (`now`): tests run an hour in milliseconds.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::LazyLock;

use async_trait::async_trait;
use parking_lot::Mutex;

use crate::clock::UnixTime;
use crate::store::{RedisHandle, describe};

/// BigCommerce's limit per account and hour.
pub const HOURLY_LIMIT: u32 = 70;
const HOUR: i64 = 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spend {
    /// One call may be sent now.
    Granted,
    /// The hour's calls are spent: the next one is free at `retry_at`.
    Exhausted { retry_at: UnixTime },
}

#[async_trait]
pub trait CallBudget: Send + Sync {
    /// Spends one call of `account`'s budget at `now`, or says when one is free again.
    async fn take(&self, account: &str, now: UnixTime) -> Result<Spend, String>;
    /// Calls spent in the hour before `now`.
    async fn used(&self, account: &str, now: UnixTime) -> Result<u32, String>;
}

/// The pure sliding-hour log behind [`FileBudget`].
fn take_in(log: &mut VecDeque<UnixTime>, limit: u32, now: UnixTime) -> Spend {
    while log.front().is_some_and(|t| *t <= now - HOUR) {
        log.pop_front();
    }
    if log.len() >= limit as usize {
        let oldest = log.front().copied().unwrap_or(now);
        return Spend::Exhausted {
            retry_at: oldest + HOUR,
        };
    }
    log.push_back(now);
    Spend::Granted
}

fn used_in(log: &VecDeque<UnixTime>, now: UnixTime) -> u32 {
    u32::try_from(log.iter().filter(|t| **t > now - HOUR).count()).unwrap_or(u32::MAX)
}

/// The budget of one gateway, kept in memory and (with `path`) in a file.
pub struct FileBudget {
    limit: u32,
    path: Option<PathBuf>,
    logs: Mutex<BTreeMap<String, VecDeque<UnixTime>>>,
}

/// Why [`FileBudget::open`] refused: starting with an empty budget instead would allow calls
/// the hour has already spent.
#[derive(Debug, thiserror::Error)]
pub enum BudgetFileError {
    /// Not a budget (damaged, or another file): fix or remove it once the hour it covers is over.
    #[error("the Account API budget file {} is damaged: {detail}", path.display())]
    Damaged { path: PathBuf, detail: String },
    /// The file exists but cannot be read (permissions).
    #[error("cannot read the Account API budget file {}: {error}", path.display())]
    Unreadable {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl FileBudget {
    /// A budget kept in memory only (tests, `--dry-run` of a configuration without a file queue).
    pub fn memory(limit: u32) -> Self {
        FileBudget {
            limit,
            path: None,
            logs: Mutex::new(BTreeMap::new()),
        }
    }

    /// A budget kept in `path` (created when missing); an unreadable file is an error, not a
    /// fresh budget (that would allow 70 more calls).
    pub fn open(path: PathBuf, limit: u32) -> Result<Self, BudgetFileError> {
        let logs = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| BudgetFileError::Damaged {
                path: path.clone(),
                detail: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(error) => return Err(BudgetFileError::Unreadable { path, error }),
        };
        Ok(FileBudget {
            limit,
            path: Some(path),
            logs: Mutex::new(logs),
        })
    }

    fn save(&self, logs: &BTreeMap<String, VecDeque<UnixTime>>) -> Result<(), String> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let text = serde_json::to_string(logs).map_err(|e| e.to_string())?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| {
                format!(
                    "cannot write the Account API budget file {}: {e}",
                    path.display()
                )
            })
    }
}

#[async_trait]
impl CallBudget for FileBudget {
    async fn take(&self, account: &str, now: UnixTime) -> Result<Spend, String> {
        let mut logs = self.logs.lock();
        let spend = take_in(logs.entry(account.to_owned()).or_default(), self.limit, now);
        if spend == Spend::Granted {
            // Not kept, not spent: a call is sent only once its spending is on disk.
            if let Err(e) = self.save(&logs) {
                if let Some(l) = logs.get_mut(account) {
                    l.pop_back();
                }
                return Err(e);
            }
        }
        Ok(spend)
    }

    async fn used(&self, account: &str, now: UnixTime) -> Result<u32, String> {
        Ok(self
            .logs
            .lock()
            .get(account)
            .map(|l| used_in(l, now))
            .unwrap_or(0))
    }
}

/// Spends one call if fewer than ARGV[2] were spent in the hour before ARGV[1]: -1 when spent,
/// else the time the oldest call leaves the hour.
static TAKE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 3600)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('EXPIRE', KEYS[1], 7200)
  return -1
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return tonumber(oldest[2]) + 3600
",
    )
});

/// The budget shared by every replica on the gateway's Redis: key
/// `PREFIX{cp}:budget:ACCOUNT`, a sorted set of the calls of the last hour (score: time).
pub struct RedisBudget {
    redis: RedisHandle,
    prefix: String,
    limit: u32,
}

impl RedisBudget {
    pub fn new(redis: RedisHandle, prefix: &str, limit: u32) -> Self {
        RedisBudget {
            redis,
            prefix: prefix.to_owned(),
            limit,
        }
    }

    fn key(&self, account: &str) -> String {
        format!("{}{{cp}}:budget:{account}", self.prefix)
    }
}

#[async_trait]
impl CallBudget for RedisBudget {
    async fn take(&self, account: &str, now: UnixTime) -> Result<Spend, String> {
        let mut conn = self.redis.conn().await?;
        let member = format!("{now}-{}", uuid::Uuid::new_v4());
        let r: i64 = TAKE
            .key(self.key(account))
            .arg(now)
            .arg(self.limit)
            .arg(member)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| {
                self.redis.count_error();
                describe(&e)
            })?;
        Ok(if r < 0 {
            Spend::Granted
        } else {
            Spend::Exhausted { retry_at: r }
        })
    }

    async fn used(&self, account: &str, now: UnixTime) -> Result<u32, String> {
        let mut conn = self.redis.conn().await?;
        let n: u32 = redis::cmd("ZCOUNT")
            .arg(self.key(account))
            .arg(format!("({}", now - HOUR))
            .arg("+inf")
            .query_async(&mut conn)
            .await
            .map_err(|e| describe(&e))?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn no_hour_holds_more_than_the_limit_and_the_next_call_waits_for_the_oldest() {
        let b = FileBudget::memory(3);
        for t in [0, 10, 20] {
            assert_eq!(b.take("a", t).await, Ok(Spend::Granted));
        }
        assert_eq!(
            b.take("a", 30).await,
            Ok(Spend::Exhausted { retry_at: 3600 })
        );
        // Another account has its own budget.
        assert_eq!(b.take("b", 30).await, Ok(Spend::Granted));
        assert_eq!(b.used("a", 3599).await, Ok(3));
        assert_eq!(b.take("a", 3600).await, Ok(Spend::Granted));
        assert_eq!(b.used("a", 3600).await, Ok(3));
    }

    #[tokio::test]
    async fn a_restart_keeps_the_spent_calls() {
        let dir = std::env::temp_dir().join(format!("sg-budget-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("budget.json");
        let b = FileBudget::open(path.clone(), 2).unwrap();
        assert_eq!(b.take("a", 100).await, Ok(Spend::Granted));
        assert_eq!(b.take("a", 101).await, Ok(Spend::Granted));
        drop(b);
        let again = FileBudget::open(path.clone(), 2).unwrap();
        assert_eq!(again.used("a", 200).await, Ok(2));
        assert_eq!(
            again.take("a", 200).await,
            Ok(Spend::Exhausted { retry_at: 3700 })
        );
        std::fs::write(&path, "{not json").unwrap();
        assert!(FileBudget::open(path, 2).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_damaged_budget_file_is_refused_naming_the_file() {
        let dir = std::env::temp_dir().join(format!("sg-budget-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("budget.json");
        std::fs::write(&path, "[]").unwrap();
        let Err(e) = FileBudget::open(path.clone(), 2) else {
            panic!("a damaged budget must not open as a fresh one");
        };
        assert!(matches!(&e, BudgetFileError::Damaged { path: p, .. } if *p == path));
        assert!(
            e.to_string().starts_with(&format!(
                "the Account API budget file {} is damaged: ",
                path.display()
            )),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
