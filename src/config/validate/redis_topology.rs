//! Validation of the Redis keys of `[session]`: `redis_mode`, `redis_url`, `redis_nodes`,
//! `redis_sentinel_master`, `redis_username`, `redis_password`.

use super::super::RedisTopology;
use super::super::diag::{Seg, key};
use super::super::file::SessionFile;
use super::Checker;
use crate::secret::Secret;

const SCHEMES: &str = "redis://, rediss:// or redis+unix://";

/// The topology `store = "redis"` runs on, or `None` after reporting every problem found.
pub(super) fn topology(c: &mut Checker<'_>, s: &SessionFile) -> Option<RedisTopology> {
    let at = |k: &'static str| [key("session"), key(k)];
    // Keys that belong to another mode are refused rather than ignored: a sentinel list left in
    // a standalone file would otherwise look like failover that is not there.
    let misplaced = |c: &mut Checker<'_>, k: &'static str, set: bool, modes: &str| {
        if set {
            c.error(
                &at(k),
                format!(
                    "`session.{k}` is only used with `session.redis_mode = {modes}` (it is \"{}\")",
                    s.redis_mode
                ),
            );
        }
    };
    let sentinel_only = [
        ("redis_sentinel_master", s.redis_sentinel_master.is_some()),
        ("redis_username", s.redis_username.is_some()),
        ("redis_password", s.redis_password.is_some()),
    ];
    match s.redis_mode.as_str() {
        "standalone" => {
            misplaced(
                c,
                "redis_nodes",
                !s.redis_nodes.is_empty(),
                "\"sentinel\" or \"cluster\"",
            );
            for (k, set) in sentinel_only {
                misplaced(c, k, set, "\"sentinel\"");
            }
            let Some(raw) = &s.redis_url else {
                c.error(
                    &at("store"),
                    "`session.store = \"redis\"` needs `session.redis_url` (or `session.redis_mode = \"sentinel\"` or \"cluster\" with `session.redis_nodes`)",
                );
                return None;
            };
            let url = c.interpolate(&at("redis_url"), raw)?;
            if !has_scheme(&url, true) {
                c.error(
                    &at("redis_url"),
                    format!("`session.redis_url` must start with {SCHEMES}"),
                );
            }
            Some(RedisTopology::Standalone {
                url: Secret::new(url),
            })
        }
        "sentinel" => {
            misplaced(c, "redis_url", s.redis_url.is_some(), "\"standalone\"");
            let sentinels = nodes(c, s, "sentinel")?;
            let master = match s.redis_sentinel_master.as_deref() {
                Some(m) if !m.is_empty() && !m.contains(char::is_whitespace) => m.to_owned(),
                Some(_) => {
                    c.error(
                        &at("redis_sentinel_master"),
                        "`session.redis_sentinel_master` must be the master name the sentinels monitor (no spaces)",
                    );
                    return None;
                }
                None => {
                    c.error(
                        &at("redis_mode"),
                        "`session.redis_mode = \"sentinel\"` needs `session.redis_sentinel_master` (the name in the sentinels' `sentinel monitor` line)",
                    );
                    return None;
                }
            };
            let password = match &s.redis_password {
                Some(raw) => Some(Secret::new(c.interpolate(&at("redis_password"), raw)?)),
                None => None,
            };
            Some(RedisTopology::Sentinel {
                sentinels,
                master,
                username: s.redis_username.clone(),
                password,
            })
        }
        "cluster" => {
            misplaced(c, "redis_url", s.redis_url.is_some(), "\"standalone\"");
            for (k, set) in sentinel_only {
                misplaced(c, k, set, "\"sentinel\"");
            }
            Some(RedisTopology::Cluster {
                nodes: nodes(c, s, "cluster")?,
            })
        }
        other => {
            c.error(
                &at("redis_mode"),
                format!(
                    "`session.redis_mode`: \"{other}\" is not \"standalone\", \"sentinel\" or \"cluster\""
                ),
            );
            None
        }
    }
}

/// `redis_nodes`, interpolated: at least one, all `redis://` or all `rediss://` (the crate takes
/// TLS and credentials for every node from one setting), no Unix sockets (cluster and sentinel
/// answers name TCP addresses).
fn nodes(c: &mut Checker<'_>, s: &SessionFile, mode: &str) -> Option<Vec<Secret>> {
    if s.redis_nodes.is_empty() {
        c.error(
            &[key("session"), key("redis_mode")],
            format!(
                "`session.redis_mode = \"{mode}\"` needs `session.redis_nodes` (at least one {} URL)",
                if mode == "sentinel" {
                    "sentinel"
                } else {
                    "cluster node"
                }
            ),
        );
        return None;
    }
    let mut out = Vec::with_capacity(s.redis_nodes.len());
    let mut ok = true;
    for (i, raw) in s.redis_nodes.iter().enumerate() {
        let p = [key("session"), key("redis_nodes"), Seg::Index(i)];
        let Some(url) = c.interpolate(&p, raw) else {
            ok = false;
            continue;
        };
        if !has_scheme(&url, false) {
            c.error(
                &p,
                format!("`session.redis_nodes[{i}]` must start with redis:// or rediss:// (a TCP address; Unix sockets cannot be used with {mode})"),
            );
            ok = false;
        }
        out.push(Secret::new(url));
    }
    let tls = |u: &Secret| u.expose().starts_with("rediss://");
    if ok && out.iter().any(tls) && !out.iter().all(tls) {
        c.error(
            &[key("session"), key("redis_nodes")],
            "`session.redis_nodes` mixes redis:// and rediss:// URLs: use TLS for all nodes or for none",
        );
        ok = false;
    }
    if ok && mode == "cluster" {
        let creds = |u: &Secret| {
            url::Url::parse(u.expose())
                .map(|p| (p.username().to_owned(), p.password().map(str::to_owned)))
                .ok()
        };
        let first = creds(&out[0]);
        if out.iter().any(|u| creds(u) != first) {
            c.error(
                &[key("session"), key("redis_nodes")],
                "`session.redis_nodes`: every cluster node URL must carry the same user and password (or none)",
            );
            ok = false;
        }
    }
    ok.then_some(out)
}

fn has_scheme(url: &str, unix_ok: bool) -> bool {
    url.starts_with("redis://")
        || url.starts_with("rediss://")
        || (unix_ok && url.starts_with("redis+unix://"))
}
