//! SCIM resources in Redis, shared by every replica (`[scim] store = "redis"`), over the gateway's
//! one [`RedisHandle`].
//!
//! Three keys, all with the hash tag `PREFIX{scim}` so that each script's keys live in one Redis
//! Cluster slot:
//! - `PREFIX{scim}:head`: a hash with `epoch` (random, set by the first write into an empty
//!   Redis) and `rev` (one more for every change);
//! - `PREFIX{scim}:resources`: a hash, field `user:ID` / `group:ID` / `tombstone:ID` → the
//!   resource's JSON;
//! - `PREFIX{scim}:log`: the last [`LOG_LEN`] changes, each `[rev, [fields...]]`.
//!
//! Both operations are Lua scripts, so each is atomic. `commit` stores a change only when the
//! head is still the revision the replica decided on (optimistic concurrency over the whole data
//! set: a replica whose copy is stale is told so and decides again on a fresh copy, which is how
//! uniqueness and If-Match hold across replicas). `refresh` answers, in one round trip, "current",
//! the latest value of every resource changed since the caller's revision (from the log), or
//! "full" when the caller fell behind the log or the epoch changed. A full load is then read in
//! batches (`HSCAN ... COUNT 1000`), not in one reply from the script: at 100,000 users one
//! reply was tens of megabytes built inside Lua, with every other client of that Redis (every
//! replica's sessions and leaver checks) waiting until it was done. The batches are not one
//! snapshot; the changes made while they were read are in the log since the revision the load
//! started from, and taking their latest values afterwards gives the state at the newer revision.

use async_trait::async_trait;
use serde_json::Value;

use super::store::{Commit, Kind, Refresh, Revision, ScimStore, StoreError, Write};
use crate::store::{RedisHandle, describe};

/// Changes kept in the log; a replica further behind reloads everything.
pub const LOG_LEN: usize = 1000;

/// Resources asked for per `HSCAN` of a full load.
const SCAN_BATCH: usize = 1000;

/// Full loads tried when the data changes faster than the log keeps (more than [`LOG_LEN`]
/// changes while one load reads).
const LOAD_ATTEMPTS: usize = 4;

const REFRESH: &str = r#"
local h = redis.call('HMGET', KEYS[1], 'epoch', 'rev')
local epoch = h[1] or ''
local rev = tonumber(h[2] or '0')
local seen = tonumber(ARGV[2])
if epoch == ARGV[1] and rev == seen then
  return {'current', epoch, tostring(rev)}
end
local behind = rev - seen
if epoch == ARGV[1] and behind > 0 and behind <= tonumber(ARGV[3]) then
  local entries = redis.call('LRANGE', KEYS[3], -behind, -1)
  if #entries == behind and cjson.decode(entries[1])[1] == seen + 1 then
    local fields, seen_field = {}, {}
    for _, e in ipairs(entries) do
      for _, f in ipairs(cjson.decode(e)[2]) do
        if not seen_field[f] then
          seen_field[f] = true
          table.insert(fields, f)
        end
      end
    end
    -- unpack() is bounded by Lua's stack: many changed fields take the full path below.
    if #fields <= 4000 then
      local values = redis.call('HMGET', KEYS[2], unpack(fields))
      local out = {'changed', epoch, tostring(rev)}
      for i, f in ipairs(fields) do
        table.insert(out, f)
        table.insert(out, values[i] or '')
      end
      return out
    end
  end
end
return {'full', epoch, tostring(rev)}
"#;

const COMMIT: &str = r#"
local h = redis.call('HMGET', KEYS[1], 'epoch', 'rev')
local epoch = h[1] or ''
local rev = tonumber(h[2] or '0')
if epoch ~= ARGV[1] or rev ~= tonumber(ARGV[2]) then
  return {'stale', epoch, tostring(rev)}
end
if epoch == '' then
  epoch = ARGV[3]
  redis.call('DEL', KEYS[3])
end
rev = rev + 1
local fields = {}
for i = 5, #ARGV, 2 do
  if ARGV[i + 1] == '' then
    redis.call('HDEL', KEYS[2], ARGV[i])
  else
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  end
  table.insert(fields, ARGV[i])
end
redis.call('HSET', KEYS[1], 'epoch', epoch, 'rev', rev)
redis.call('RPUSH', KEYS[3], cjson.encode({rev, fields}))
redis.call('LTRIM', KEYS[3], -tonumber(ARGV[4]), -1)
return {'done', epoch, tostring(rev)}
"#;

pub struct RedisScimStore {
    redis: RedisHandle,
    keys: [String; 3],
    refresh: redis::Script,
    commit: redis::Script,
}

impl RedisScimStore {
    /// `prefix` is the gateway's Redis key prefix (`storegate:`).
    pub fn new(redis: RedisHandle, prefix: &str) -> Self {
        let tag = format!("{prefix}{{scim}}");
        RedisScimStore {
            redis,
            keys: [
                format!("{tag}:head"),
                format!("{tag}:resources"),
                format!("{tag}:log"),
            ],
            refresh: redis::Script::new(REFRESH),
            commit: redis::Script::new(COMMIT),
        }
    }

    async fn run(
        &self,
        script: &redis::Script,
        args: &[String],
    ) -> Result<Vec<String>, StoreError> {
        let mut conn = self.redis.conn().await.map_err(StoreError)?;
        let mut inv = script.prepare_invoke();
        for k in &self.keys {
            inv.key(k);
        }
        for a in args {
            inv.arg(a);
        }
        inv.invoke_async(&mut conn).await.map_err(|e| {
            self.redis.count_error();
            StoreError(format!("Redis: {}", describe(&e)))
        })
    }

    /// Every field of the resources hash, in batches; a field changed meanwhile may appear twice
    /// or with either value (the caller takes the log's latest values over these).
    async fn scan_all(&self) -> Result<std::collections::HashMap<String, String>, StoreError> {
        let mut conn = self.redis.conn().await.map_err(StoreError)?;
        let mut fields = std::collections::HashMap::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("HSCAN")
                .arg(&self.keys[1])
                .arg(cursor)
                .arg("COUNT")
                .arg(SCAN_BATCH)
                .query_async(&mut conn)
                .await
                .map_err(|e| {
                    self.redis.count_error();
                    StoreError(format!("Redis: {}", describe(&e)))
                })?;
            let mut pairs = batch.into_iter();
            while let (Some(f), Some(v)) = (pairs.next(), pairs.next()) {
                fields.insert(f, v);
            }
            if next == 0 {
                return Ok(fields);
            }
            cursor = next;
        }
    }

    /// Everything, as of a revision no older than `at` (the head when the refresh answered
    /// "full").
    async fn full_load(&self, mut at: Revision) -> Result<Refresh, StoreError> {
        for _ in 0..LOAD_ATTEMPTS {
            let mut fields = self.scan_all().await?;
            let [epoch, rev] = seen_args(Some(&at));
            let reply = self
                .run(&self.refresh, &[epoch, rev, LOG_LEN.to_string()])
                .await?;
            let (status, head, pairs) = parse_reply(&reply)?;
            match status {
                "current" => {}
                "changed" => {
                    for (f, v) in pairs {
                        if v.is_empty() {
                            fields.remove(f);
                        } else {
                            fields.insert(f.to_owned(), v.to_owned());
                        }
                    }
                    at = head;
                }
                // Behind the log already, or Redis was emptied: read it all again.
                _ => {
                    at = head;
                    continue;
                }
            }
            // Parsing 100,000 resources is CPU work: off the request threads. Each is made a
            // record as soon as it is parsed, and its text let go.
            let data = tokio::task::spawn_blocking(move || {
                let mut data = super::ScimData::default();
                for (f, v) in fields.drain() {
                    data.insert(parse_field(&f)?.0, &parse_json(&f, &v)?);
                }
                Ok::<_, StoreError>(data)
            })
            .await
            .map_err(|e| StoreError(e.to_string()))??;
            return Ok(Refresh::Loaded { at, data });
        }
        Err(StoreError(
            "the SCIM data in Redis changed faster than a full load could read it".into(),
        ))
    }

    async fn load_all(&self) -> Result<Vec<(Kind, Value)>, StoreError> {
        match self.refresh(None).await? {
            Refresh::Full { items, .. } => Ok(items),
            Refresh::Loaded { data, .. } => Ok(data.into_resources()),
            other => Err(StoreError(format!(
                "expected a full load from Redis, got {other:?}"
            ))),
        }
    }
}

/// The hash field of a resource: `user:ID`.
pub fn field(kind: Kind, id: &str) -> String {
    format!("{}:{id}", kind.tag())
}

fn parse_field(f: &str) -> Result<(Kind, &str), StoreError> {
    f.split_once(':')
        .and_then(|(k, id)| Some((Kind::from_tag(k)?, id)))
        .ok_or_else(|| StoreError(format!("unexpected SCIM field {f:?} in Redis")))
}

fn parse_json(f: &str, text: &str) -> Result<Value, StoreError> {
    serde_json::from_str(text)
        .map_err(|e| StoreError(format!("SCIM resource {f} in Redis is not JSON: {e}")))
}

/// `(epoch, rev)` as the scripts take them; no revision at all never matches a real one.
fn seen_args(seen: Option<&Revision>) -> [String; 2] {
    match seen {
        Some(r) => [r.epoch.clone(), r.number.to_string()],
        None => ["-".into(), "-1".into()],
    }
}

/// A script's answer: its status word, the head revision, and `(field, value)` pairs.
type Reply<'a> = (&'a str, Revision, Vec<(&'a str, &'a str)>);

/// Reads a script's answer: `[status, epoch, rev, field, value, field, value...]`.
pub fn parse_reply(reply: &[String]) -> Result<Reply<'_>, StoreError> {
    let bad = || StoreError(format!("unexpected answer from the SCIM script: {reply:?}"));
    let [status, epoch, rev, rest @ ..] = reply else {
        return Err(bad());
    };
    let number = rev.parse().map_err(|_| bad())?;
    if rest.len() % 2 != 0 {
        return Err(bad());
    }
    let pairs = rest
        .chunks(2)
        .map(|p| (p[0].as_str(), p[1].as_str()))
        .collect();
    Ok((
        status,
        Revision {
            epoch: epoch.clone(),
            number,
        },
        pairs,
    ))
}

/// A refresh answer as what the replica must do.
pub fn refresh_from_reply(reply: &[String]) -> Result<Refresh, StoreError> {
    let (status, at, pairs) = parse_reply(reply)?;
    match status {
        "current" => Ok(Refresh::Current),
        "changed" => {
            let mut writes = Vec::with_capacity(pairs.len());
            for (f, v) in pairs {
                let (kind, id) = parse_field(f)?;
                writes.push(Write {
                    kind,
                    id: id.to_owned(),
                    // An empty value: the resource was deleted since.
                    value: if v.is_empty() {
                        None
                    } else {
                        Some(parse_json(f, v)?)
                    },
                });
            }
            Ok(Refresh::Changed { at, writes })
        }
        "full" => {
            let mut items = Vec::with_capacity(pairs.len());
            for (f, v) in pairs {
                let (kind, _) = parse_field(f)?;
                items.push((kind, parse_json(f, v)?));
            }
            Ok(Refresh::Full { at, items })
        }
        other => Err(StoreError(format!("unexpected refresh status {other:?}"))),
    }
}

#[async_trait]
impl ScimStore for RedisScimStore {
    async fn load(&self) -> Result<Vec<(Kind, Value)>, StoreError> {
        self.load_all().await
    }

    async fn put(&self, kind: Kind, id: &str, resource: &Value) -> Result<(), StoreError> {
        let w = Write {
            kind,
            id: id.to_owned(),
            value: Some(resource.clone()),
        };
        self.unconditional(w).await
    }

    async fn delete(&self, kind: Kind, id: &str) -> Result<(), StoreError> {
        let w = Write {
            kind,
            id: id.to_owned(),
            value: None,
        };
        self.unconditional(w).await
    }

    fn shared(&self) -> bool {
        true
    }

    async fn refresh(&self, seen: Option<&Revision>) -> Result<Refresh, StoreError> {
        let [epoch, rev] = seen_args(seen);
        let reply = self
            .run(&self.refresh, &[epoch, rev, LOG_LEN.to_string()])
            .await?;
        match refresh_from_reply(&reply)? {
            Refresh::Full { at, .. } => self.full_load(at).await,
            other => Ok(other),
        }
    }

    async fn commit(
        &self,
        seen: Option<&Revision>,
        writes: &[Write],
    ) -> Result<Commit, StoreError> {
        if writes.is_empty() {
            return Ok(Commit::Done(seen.cloned()));
        }
        let [epoch, rev] = seen_args(seen);
        let mut args = vec![
            epoch,
            rev,
            uuid::Uuid::new_v4().simple().to_string(),
            LOG_LEN.to_string(),
        ];
        for w in writes {
            args.push(field(w.kind, &w.id));
            args.push(match &w.value {
                Some(v) => serde_json::to_string(v).map_err(|e| StoreError(e.to_string()))?,
                None => String::new(),
            });
        }
        let reply = self.run(&self.commit, &args).await?;
        let (status, at, _) = parse_reply(&reply)?;
        match status {
            "done" => Ok(Commit::Done(Some(at))),
            "stale" => Ok(Commit::Stale),
            other => Err(StoreError(format!("unexpected commit status {other:?}"))),
        }
    }
}

impl RedisScimStore {
    /// A single write on top of whatever is there (`put`/`delete`; the service uses `commit`).
    async fn unconditional(&self, w: Write) -> Result<(), StoreError> {
        for _ in 0..16 {
            // Asked with no revision, the script names the head and sends nothing else.
            let [epoch, rev] = seen_args(None);
            let reply = self
                .run(&self.refresh, &[epoch, rev, LOG_LEN.to_string()])
                .await?;
            let (_, seen, _) = parse_reply(&reply)?;
            if let Commit::Done(_) = self.commit(Some(&seen), std::slice::from_ref(&w)).await? {
                return Ok(());
            }
        }
        Err(StoreError(
            "the SCIM data in Redis kept changing; write not stored".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn current_reply_needs_no_change() {
        assert_eq!(
            refresh_from_reply(&s(&["current", "e1", "7"])).unwrap(),
            Refresh::Current
        );
    }

    #[test]
    fn changed_reply_lists_puts_and_deletes_at_the_new_revision() {
        let r = refresh_from_reply(&s(&[
            "changed",
            "e1",
            "9",
            "user:u1",
            r#"{"id":"u1","userName":"a"}"#,
            "group:g1",
            "",
        ]))
        .unwrap();
        assert_eq!(
            r,
            Refresh::Changed {
                at: Revision {
                    epoch: "e1".into(),
                    number: 9
                },
                writes: vec![
                    Write {
                        kind: Kind::User,
                        id: "u1".into(),
                        value: Some(serde_json::json!({"id":"u1","userName":"a"}))
                    },
                    Write {
                        kind: Kind::Group,
                        id: "g1".into(),
                        value: None
                    },
                ]
            }
        );
    }

    #[test]
    fn full_reply_is_every_resource() {
        let r =
            refresh_from_reply(&s(&["full", "", "0", "tombstone:t1", r#"{"id":"t1"}"#])).unwrap();
        assert_eq!(
            r,
            Refresh::Full {
                at: Revision {
                    epoch: String::new(),
                    number: 0
                },
                items: vec![(Kind::Tombstone, serde_json::json!({"id":"t1"}))]
            }
        );
    }

    #[test]
    fn malformed_replies_are_errors_not_guesses() {
        assert!(refresh_from_reply(&s(&["full", "e"])).is_err(), "too short");
        assert!(
            refresh_from_reply(&s(&["full", "e", "x"])).is_err(),
            "rev not a number"
        );
        assert!(
            refresh_from_reply(&s(&["full", "e", "1", "user:u1"])).is_err(),
            "odd pairs"
        );
        assert!(
            refresh_from_reply(&s(&["full", "e", "1", "robot:u1", "{}"])).is_err(),
            "unknown kind"
        );
        assert!(
            refresh_from_reply(&s(&["changed", "e", "1", "user:u1", "{not json"])).is_err(),
            "bad JSON"
        );
        assert!(refresh_from_reply(&s(&["what", "e", "1"])).is_err());
    }

    #[test]
    fn keys_share_one_hash_tag() {
        let url = crate::secret::Secret::new("redis://127.0.0.1:1/".to_owned());
        let h = RedisHandle::new(&url, std::time::Duration::from_secs(1)).unwrap();
        let st = RedisScimStore::new(h, "storegate:");
        for k in &st.keys {
            assert!(k.starts_with("storegate:{scim}:"), "{k}");
        }
        assert_eq!(field(Kind::Group, "g-1"), "group:g-1");
        assert_eq!(seen_args(None), ["-".to_owned(), "-1".to_owned()]);
    }
}
