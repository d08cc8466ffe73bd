//! SCIM and the reconciler at 100,000 people (issue 15): 100,000 users, 5,000 groups, three of
//! them with 20,000 members. Each row is printed with the target it is held to and whether it
//! holds (the targets and why: docs/performance.md, "SCIM at 100,000 people").
//!
//! - `filter=userName eq` (any letter case) p99: a list answered from the index, rendered page
//!   and all (what the handler serialises).
//! - `GET /Groups/{id}` of a 20,000-member group, p99, rendered and serialised to JSON.
//! - PATCH add and remove of one member of that group, p99.
//! - The leaver check p99 while writers PATCH users as fast as they can, against a store that
//!   takes 1 ms per commit (a disk sync or a Redis round trip): the check must not queue
//!   behind them.
//! - The reconciler's pass over the population: snapshot, desired state (policy for every user,
//!   group names included) and the plan against an empty BigCommerce simulator (one store, no
//!   rate limit: what is measured is the gateway, not BigCommerce's quota), time and peak RSS.
//!   The pass runs in a child process (this binary again, [`CHILD_VAR`] set) that holds what a
//!   gateway running the reconciler holds, so its peak RSS (`VmHWM`) is the gateway's, not this
//!   bench's (which keeps the population, a second store and a Redis replica besides). The child
//!   generates the population itself and hands it to `ScimService::open` through a store that
//!   gives its resources away on load, as a file store's load does: the decoded JSON values are
//!   consumed into the SCIM copy (compact records, `ResourceIndex`, the leaver check's index) and
//!   not kept. Its peak therefore includes that load, then the pass: the snapshot (a second
//!   `ScimData`), the reconciler's desired state and plan, and the in-process BigCommerce
//!   simulator (one empty store). Nothing else of this bench is in it.
//! - Replica start-up: a second gateway's first leaver check loads everything from Redis (a
//!   private `redis-server`, `BENCH_REDIS_SERVER`, default from PATH), time and RSS it added.
//!
//! - Live heap of one SCIM copy, by part (users' records, groups' records, `ResourceIndex`,
//!   the leaver check's index), counted by this bench's global allocator: requested bytes, so
//!   the figure does not depend on the build or the allocator's slack.
//!
//! Run: `cargo bench --bench scim_scale` (in `make bench`). BENCH_USERS (100000), BENCH_GROUPS
//! (5000), BENCH_BIG_MEMBERS (20000); BENCH_MEMORY_ONLY=1 stops after the live-heap figures.
//! Under `cargo test --all-targets` it runs the same steps on 2,000 users and 100 groups (groups
//! of 500) and checks the answers, not the times.

use std::alloc::{GlobalAlloc, Layout};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use mimalloc::MiMalloc;
use serde_json::{Value, json};
use storegate::clock::{ManualClock, SystemClock};
use storegate::config::{self, Environment};
use storegate::provisioning::scim::redis_store::{RedisScimStore, field};
use storegate::provisioning::scim::store::{
    Commit, Kind, Revision, ScimStore, StoreError, Write as StoreWrite,
};
use storegate::provisioning::scim::wire::{ListQuery, PATCH_SCHEMA, PatchOperation, PatchRequest};
use storegate::provisioning::scim::{ScimData, ScimService};

/// The `storegate` binary's allocator (mimalloc, src/main.rs), counting the bytes live (requested
/// sizes) for the live-heap figures: the times and RSS measured are those of the allocator that runs.
struct Counting;

static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);

// SAFETY: every call is passed to `MiMalloc` unchanged; only a counter is kept beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(l.size() as i64, Ordering::Relaxed);
        // SAFETY: the caller's contract is MiMalloc's.
        unsafe { MiMalloc.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(l.size() as i64, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { MiMalloc.alloc_zeroed(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE_BYTES.fetch_sub(l.size() as i64, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { MiMalloc.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new as i64 - l.size() as i64, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { MiMalloc.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live_bytes() -> i64 {
    LIVE_BYTES.load(Ordering::Relaxed)
}

const BASE: &str = "https://sso.corp.example/scim/v2";
const BIG_GROUPS: usize = 3;

struct Scale {
    users: usize,
    groups: usize,
    big_members: usize,
    rounds: usize,
    storm: Duration,
}

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if let Ok(spec) = std::env::var(CHILD_VAR) {
        let s = child_scale(&spec);
        runtime().block_on(reconcile_child(s));
        return;
    }
    let benching = std::env::args().any(|a| a == "--bench");
    let scale = if benching {
        Scale {
            users: env_num("BENCH_USERS", 100_000),
            groups: env_num("BENCH_GROUPS", 5_000),
            big_members: env_num("BENCH_BIG_MEMBERS", 20_000),
            rounds: 2_000,
            storm: Duration::from_secs(5),
        }
    } else {
        Scale {
            users: 2_000,
            groups: 100,
            big_members: 500,
            rounds: 50,
            storm: Duration::from_millis(300),
        }
    };
    runtime().block_on(run(scale, benching));
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("cannot start the tokio runtime")
}

/// One printed row.
struct Row {
    name: String,
    measured: String,
    target: String,
    holds: bool,
}

impl Row {
    fn print(&self) {
        println!(
            "{:<58} {:>14}   target {:<14} {}",
            self.name,
            self.measured,
            self.target,
            if self.holds { "holds" } else { "does not hold" }
        );
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v.get((v.len() * 99 / 100).min(v.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

/// `VmRSS` and `VmHWM` (peak) of this process, KiB.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn mib(kib: u64) -> String {
    format!("{:.0} MiB", kib as f64 / 1024.0)
}

/// The population as stored: users `u-N` (every tenth disabled) with two addresses, groups
/// `g-N`; each user is in 3 of the small groups, and the first [`BIG_GROUPS`] groups hold
/// `big_members` users each.
fn population(s: &Scale) -> Vec<(Kind, Value)> {
    let meta = |i: usize, kind: &str| {
        json!({"resourceType": kind, "created": format!("2026-01-01T00:00:{:02}Z", i % 60),
               "lastModified": "2026-01-01T00:00:00Z", "version": format!("W/\"v{i}\"")})
    };
    let small = s.groups.saturating_sub(BIG_GROUPS).max(1);
    let mut members: Vec<Vec<Value>> = vec![Vec::new(); s.groups];
    for u in 0..s.users {
        for k in 0..3 {
            let g = BIG_GROUPS + (u * 7 + k * 131) % small;
            if g < s.groups {
                members[g].push(
                    json!({"value": format!("u-{u}"), "display": format!("user{u}@corp.example")}),
                );
            }
        }
    }
    for (g, list) in members
        .iter_mut()
        .enumerate()
        .take(BIG_GROUPS.min(s.groups))
    {
        *list = (0..s.big_members.min(s.users))
            .map(|u| json!({"value": format!("u-{}", (u * 3 + g) % s.users)}))
            .collect();
        list.dedup();
    }
    let users = (0..s.users).map(|i| {
        (
            Kind::User,
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "id": format!("u-{i}"),
                "externalId": format!("sub-{i}"),
                "userName": format!("user{i}@corp.example"),
                "name": {"givenName": format!("Given{i}"), "familyName": format!("Family{i}")},
                "emails": [{"value": format!("user{i}@corp.example"), "primary": true, "type": "work"},
                           {"value": format!("u{i}@alias.example")}],
                "active": !i.is_multiple_of(10),
                "meta": meta(i, "User"),
            }),
        )
    });
    let groups = members.into_iter().enumerate().map(|(g, m)| {
        let mut v = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "id": format!("g-{g}"),
            "displayName": format!("group-{g}"),
            "meta": meta(g, "Group"),
        });
        if !m.is_empty() {
            v["members"] = Value::Array(m);
        }
        (Kind::Group, v)
    });
    users.chain(groups).collect()
}

/// A store that starts full and takes `delay` per commit (a disk sync, a Redis round trip).
struct Slow {
    items: Vec<(Kind, Value)>,
    delay: Duration,
}

#[async_trait]
impl ScimStore for Slow {
    async fn load(&self) -> Result<Vec<(Kind, Value)>, StoreError> {
        Ok(self.items.clone())
    }
    async fn put(&self, _: Kind, _: &str, _: &Value) -> Result<(), StoreError> {
        Ok(())
    }
    async fn delete(&self, _: Kind, _: &str) -> Result<(), StoreError> {
        Ok(())
    }
    async fn commit(&self, _: Option<&Revision>, _: &[StoreWrite]) -> Result<Commit, StoreError> {
        tokio::time::sleep(self.delay).await;
        Ok(Commit::Done(None))
    }
}

fn patch(op: &str, path: &str, value: Value) -> PatchRequest {
    PatchRequest {
        schemas: vec![PATCH_SCHEMA.into()],
        operations: vec![PatchOperation {
            op: op.into(),
            path: Some(path.into()),
            value: Some(value),
        }],
    }
}

async fn run(s: Scale, benching: bool) {
    println!(
        "SCIM at scale: {} users, {} groups ({BIG_GROUPS} of {} members)",
        s.users, s.groups, s.big_members
    );
    // -- The reconcile pass in a gateway-sized child process, first: the child's figures do not
    // depend on this process, and the machine does not hold this process's population meanwhile.
    let memory_only = std::env::var("BENCH_MEMORY_ONLY").is_ok_and(|v| v == "1");
    let pass = if memory_only {
        None
    } else {
        let (users, groups, big) = (s.users, s.groups, s.big_members);
        Some(
            tokio::task::spawn_blocking(move || reconcile_in_child(users, groups, big))
                .await
                .expect("the reconcile child's runner panicked"),
        )
    };

    let items = population(&s);
    let mut rows = Vec::new();

    // -- Replica start-up from Redis, first: the RSS it adds is read before anything else
    // of this process has grown and shrunk.
    let redis = if memory_only {
        None
    } else {
        RedisServer::start()
    };
    match redis {
        Some(redis) => {
            let (secs, added) = replica_start(&redis, &items).await;
            rows.push(Row {
                name: "replica start-up: full load from Redis".into(),
                measured: format!("{secs:.2} s"),
                target: "< 10 s".into(),
                holds: secs < 10.0,
            });
            rows.push(Row {
                name: "RSS a replica's SCIM copy adds".into(),
                measured: mib(added),
                target: "< 1024 MiB".into(),
                holds: added < 1024 * 1024,
            });
        }
        None => println!(
            "replica start-up: not measured (BENCH_MEMORY_ONLY, or no redis-server: install it or set BENCH_REDIS_SERVER)"
        ),
    }

    // -- Live heap of one copy, by part (after the replica's RSS was read: building and
    // dropping these copies grows and shrinks the process).
    let copy = live_copy(&items, s.users).await;
    rows.push(Row {
        name: "live heap of one SCIM copy (records and indexes)".into(),
        measured: format!("{:.0} MiB", copy as f64 / (1024.0 * 1024.0)),
        target: "< 1024 MiB".into(),
        holds: copy < 1024 * 1024 * 1024,
    });
    if memory_only {
        for r in &rows {
            r.print();
        }
        return;
    }

    // -- One gateway: open (full load from its store), lists, reads, PATCH of a big group.
    let (rss_before, _) = rss_kib();
    let started = Instant::now();
    let scim = Arc::new(
        ScimService::open(
            Arc::new(Slow {
                items: items.clone(),
                delay: Duration::from_millis(1),
            }),
            Arc::new(ManualClock::at(1_800_000_000)),
        )
        .await
        .expect("open the SCIM service"),
    );
    assert!(!scim.is_deprovisioned("sub-1", None).await.expect("answers"));
    let opened = started.elapsed();
    let (rss_open, _) = rss_kib();
    println!(
        "opened from a local store in {} ({} resident after, {} more than before)",
        ms(opened),
        mib(rss_open),
        mib(rss_open.saturating_sub(rss_before))
    );

    // filter=userName eq, in another letter case than stored.
    let mut lat = Vec::with_capacity(s.rounds);
    for r in 0..s.rounds {
        let i = (r * 7919) % s.users;
        let q = ListQuery {
            filter: Some(format!("userName eq \"USER{i}@Corp.Example\"")),
            ..Default::default()
        };
        let t = Instant::now();
        let page = scim.list(Kind::User, &q, BASE).await.expect("list");
        let body = serde_json::to_vec(&page).expect("serialise");
        lat.push(t.elapsed());
        assert_eq!(page.total_results, 1, "userName eq finds exactly one");
        assert_eq!(page.resources[0]["id"], json!(format!("u-{i}")));
        assert!(
            page.resources[0]["groups"]
                .as_array()
                .is_some_and(|g| !g.is_empty())
        );
        std::hint::black_box(body);
    }
    let d = p99(lat);
    rows.push(Row {
        name: "SCIM filter=userName eq, p99 (rendered, serialised)".into(),
        measured: ms(d),
        target: "< 5 ms".into(),
        holds: d < Duration::from_millis(5),
    });

    // GET /Groups/{id} of the largest group.
    let mut lat = Vec::new();
    for _ in 0..(s.rounds / 20).max(5) {
        let t = Instant::now();
        let g = scim.get(Kind::Group, "g-0", BASE).await.expect("get");
        let body = serde_json::to_vec(&g).expect("serialise");
        lat.push(t.elapsed());
        assert_eq!(
            g["members"].as_array().map(Vec::len),
            Some(s.big_members.min(s.users))
        );
        std::hint::black_box(body);
    }
    let d = p99(lat);
    rows.push(Row {
        name: format!(
            "GET /Groups/{{id}} of a {}-member group, p99",
            s.big_members
        ),
        measured: ms(d),
        target: "< 50 ms".into(),
        holds: d < Duration::from_millis(50),
    });

    // PATCH add and remove of one member of the largest group (commit takes 1 ms).
    let mut lat = Vec::new();
    for r in 0..(s.rounds / 20).max(5) {
        let who = format!("u-{}", s.users - 1 - r % 100);
        for op in ["add", "remove"] {
            let t = Instant::now();
            scim.patch(
                Kind::Group,
                "g-1",
                patch(op, "members", json!([{"value": who}])),
                None,
                BASE,
            )
            .await
            .expect("patch");
            lat.push(t.elapsed());
        }
    }
    let d = p99(lat);
    rows.push(Row {
        name: format!(
            "PATCH add/remove 1 member of {}, p99 (1 ms store)",
            s.big_members
        ),
        measured: ms(d),
        target: "< 50 ms".into(),
        holds: d < Duration::from_millis(50),
    });

    // -- The leaver check during a write storm.
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (scim, stop, writes) = (Arc::clone(&scim), Arc::clone(&stop), Arc::clone(&writes));
        let users = s.users;
        writers.push(tokio::spawn(async move {
            let mut n = w;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("u-{}", (n * 104_729) % users);
                let _ = scim
                    .patch(
                        Kind::User,
                        &id,
                        patch("replace", "title", json!(format!("t{n}"))),
                        None,
                        BASE,
                    )
                    .await;
                writes.fetch_add(1, Ordering::Relaxed);
                n += 4;
            }
        }));
    }
    let storm_started = Instant::now();
    let mut lat = Vec::new();
    let mut r = 0usize;
    while storm_started.elapsed() < s.storm {
        let i = (r * 7919) % s.users;
        let t = Instant::now();
        let leaver = scim
            .is_deprovisioned(&format!("sub-{i}"), Some(&format!("user{i}@corp.example")))
            .await
            .expect("answers");
        lat.push(t.elapsed());
        assert_eq!(leaver, i.is_multiple_of(10), "sub-{i}");
        r += 1;
        tokio::task::yield_now().await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.await;
    }
    let storm_secs = storm_started.elapsed().as_secs_f64();
    let d = p99(lat);
    println!(
        "write storm: {:.0} PATCH/s from 4 writers while {r} leaver checks ran",
        writes.load(Ordering::Relaxed) as f64 / storm_secs
    );
    rows.push(Row {
        name: "leaver check p99 during a SCIM write storm".into(),
        measured: ms(d),
        target: "< 1 ms".into(),
        holds: d < Duration::from_millis(1),
    });

    // -- The reconcile pass, as the child measured it.
    drop(scim);
    if let Some(p) = pass {
        println!(
            "reconcile (child process {}): {} actions planned ({:.2} s after the snapshot); \
             peak RSS {} ({} after loading the SCIM copy, {} before the population was built)",
            p.pid,
            p.actions,
            p.plan_secs,
            mib(p.hwm_after_kib),
            mib(p.hwm_loaded_kib),
            mib(p.hwm_start_kib)
        );
        rows.push(Row {
            name: "reconcile pass (snapshot, desired state, plan), time".into(),
            measured: format!("{:.2} s", p.secs),
            target: "< 60 s".into(),
            holds: p.secs < 60.0,
        });
        rows.push(Row {
            name: "reconcile pass, peak RSS of a gateway process (VmHWM)".into(),
            measured: mib(p.hwm_after_kib),
            target: "< 2048 MiB".into(),
            holds: p.hwm_after_kib < 2048 * 1024,
        });
    }

    println!();
    for r in &rows {
        r.print();
    }
    if !benching {
        println!("(test mode: a small population; the times are not the issue's)");
    }
}

/// Live heap bytes of one SCIM copy, by part, printed per user; returns the whole copy's bytes.
/// Each part is what stays allocated once it is built from a copy of the population.
async fn live_copy(items: &[(Kind, Value)], users: usize) -> i64 {
    let of = |kind: Kind| -> Vec<(Kind, Value)> {
        items.iter().filter(|(k, _)| *k == kind).cloned().collect()
    };
    // Counted from before the input is copied: the copy's values are moved into the records
    // or freed, and what stays is what the records hold.
    let counted = |input: &dyn Fn() -> Vec<(Kind, Value)>| {
        let before = live_bytes();
        let data = ScimData::from_resources(input());
        (live_bytes() - before, data)
    };
    let (user_bytes, only_users) = counted(&|| of(Kind::User));
    drop(only_users);
    let (group_bytes, only_groups) = counted(&|| of(Kind::Group));
    drop(only_groups);
    let (data_bytes, data) = counted(&|| items.to_vec());
    let before = live_bytes();
    let index = storegate::provisioning::scim::index::ResourceIndex::build(&data);
    let index_bytes = live_bytes() - before;
    drop((index, data));
    let store = Arc::new(Slow {
        items: items.to_vec(),
        delay: Duration::ZERO,
    });
    let before = live_bytes();
    let scim = ScimService::open(store, Arc::new(ManualClock::at(1_800_000_000)))
        .await
        .expect("open the SCIM service");
    let whole = live_bytes() - before;
    drop(scim);
    let per_user = |b: i64| b as f64 / users.max(1) as f64;
    println!(
        "live heap per user: users' records {:.0} B, groups' records {:.0}, ResourceIndex {:.0}, \
         leaver-check index {:.0} (the rest); whole copy {:.0} B/user, {:.0} MiB \
         (all records {:.0} B/user built together)",
        per_user(user_bytes),
        per_user(group_bytes),
        per_user(index_bytes),
        per_user(whole - data_bytes - index_bytes),
        per_user(whole),
        whole as f64 / (1024.0 * 1024.0),
        per_user(data_bytes),
    );
    whole
}

struct NoEnv;
impl Environment for NoEnv {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
    fn read_file(&self, p: &std::path::Path) -> std::io::Result<String> {
        std::fs::read_to_string(p)
    }
}

/// The reconciler's plan for `data` against an empty simulated store (no rate limit): the
/// number of actions and the seconds it took.
async fn reconcile_pass(data: &ScimData, users: usize) -> (usize, f64) {
    use storegate::bigcommerce::sim::{SimConfig, SimStore, Simulator};
    let mut sc = SimConfig::new(vec![SimStore::single_channel("store1")]);
    sc.requests_per_window = u32::MAX;
    let (router, _sim) = Simulator::build(sc);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the simulator");
    let base = format!("http://{}", l.local_addr().expect("address"));
    tokio::spawn(async move {
        let _ = storegate::server::serve_on(l, router, std::future::pending()).await;
    });
    let dir = std::env::temp_dir().join(format!("storegate-scim-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let t = format!(
        "public_url = \"http://127.0.0.1:1\"\nallow_insecure_http = true\n[[idp]]\nid = \"nam\"\nprotocol = \"oidc\"\nissuer = \"http://127.0.0.1:9/x\"\nclient_id = \"c\"\nclient_secret = \"s\"\n\
         [[bigcommerce]]\nid = \"store1\"\nstore_hash = \"store1\"\napi_base = \"{base}\"\naccess_token = \"token-store1\"\nclient_id = \"client-store1\"\nclient_secret = \"secret-store1\"\n\
         [[store]]\nid = \"store1\"\nname = \"store1\"\nbigcommerce = \"store1\"\nurl = \"{base}/storefront/store1/1\"\n\
         [[rule]]\nname = \"big-group\"\ngroups_any = [\"group-0\"]\nstores = [\"*\"]\nrole = \"staff\"\n\
         [scim]\nenabled = true\nbearer_token = \"0123456789abcdef0123\"\nstore = \"memory\"\n[provisioning]\nqueue = \"file:{}\"\n",
        dir.join("queue.json").display()
    );
    let cfg = config::load_str(&t, "bench.toml", &NoEnv).expect("bench configuration");
    let r = storegate::app::reconciler(
        Arc::new(cfg),
        storegate::audit::AuditLog::channel().0,
        Arc::new(SystemClock),
        Default::default(),
    )
    .expect("reconciler");
    let t = Instant::now();
    let (plan, _) = r
        .preview(data, storegate::clock::Clock::now(&SystemClock))
        .await
        .expect("plan");
    let secs = t.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        !plan.is_empty() && plan.len() <= users,
        "{} actions",
        plan.len()
    );
    (plan.len(), secs)
}

/// Set (to `reconcile USERS GROUPS BIG_MEMBERS`) in the child this bench starts to measure a
/// reconcile pass in a process of a gateway's size ([`reconcile_in_child`]).
const CHILD_VAR: &str = "BENCH_SCIM_CHILD";

/// How the child's one line of figures starts; the rest is `key=value` words.
const CHILD_LINE: &str = "scim-scale-child reconcile:";

fn child_scale(spec: &str) -> Scale {
    let words: Vec<&str> = spec.split_whitespace().collect();
    let num = |i: usize| -> usize {
        words
            .get(i)
            .and_then(|w| w.parse().ok())
            .unwrap_or_else(|| {
                panic!("{CHILD_VAR}={spec:?}: expected `reconcile USERS GROUPS BIG_MEMBERS`")
            })
    };
    assert_eq!(
        words.first().copied(),
        Some("reconcile"),
        "{CHILD_VAR}={spec:?}: expected `reconcile USERS GROUPS BIG_MEMBERS`"
    );
    Scale {
        users: num(1),
        groups: num(2),
        big_members: num(3),
        rounds: 0,
        storm: Duration::ZERO,
    }
}

/// A local store that gives its resources away on the first load, as a file store's load hands
/// over the values it decoded: the service consumes them into its copy and nothing else keeps
/// them.
struct Handover(std::sync::Mutex<Vec<(Kind, Value)>>);

#[async_trait]
impl ScimStore for Handover {
    async fn load(&self) -> Result<Vec<(Kind, Value)>, StoreError> {
        let mut items = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(std::mem::take(&mut *items))
    }
    async fn put(&self, _: Kind, _: &str, _: &Value) -> Result<(), StoreError> {
        Ok(())
    }
    async fn delete(&self, _: Kind, _: &str) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The child's whole run: build the population, open the SCIM service on it (the population is
/// consumed), answer one leaver check (every index built), then the pass as a gateway runs it
/// (`flows::provision`: a snapshot, then the reconciler on it). Prints one [`CHILD_LINE`].
async fn reconcile_child(s: Scale) {
    let (_, hwm_start) = rss_kib();
    assert!(hwm_start > 0, "VmHWM cannot be read from /proc/self/status");
    let store = Handover(std::sync::Mutex::new(population(&s)));
    let scim = ScimService::open(Arc::new(store), Arc::new(SystemClock))
        .await
        .expect("open the SCIM service");
    assert!(!scim.is_deprovisioned("sub-1", None).await.expect("answers"));
    let (_, hwm_loaded) = rss_kib();
    let t = Instant::now();
    let data = scim.snapshot().await.expect("snapshot");
    assert_eq!(data.users.len(), s.users, "the snapshot holds every user");
    let (actions, plan_secs) = reconcile_pass(&data, s.users).await;
    let secs = t.elapsed().as_secs_f64();
    let (_, hwm_after) = rss_kib();
    println!(
        "{CHILD_LINE} actions={actions} secs={secs:.6} plan_secs={plan_secs:.6} \
         hwm_start_kib={hwm_start} hwm_loaded_kib={hwm_loaded} hwm_after_kib={hwm_after}"
    );
}

/// The figures of one reconcile pass measured in a child process.
struct ChildPass {
    pid: u32,
    actions: usize,
    secs: f64,
    plan_secs: f64,
    hwm_start_kib: u64,
    hwm_loaded_kib: u64,
    hwm_after_kib: u64,
}

/// Runs [`reconcile_child`] in a new process of this binary and reads its figures. Panics (the
/// bench fails) when the child cannot be started, fails, or prints no complete line: there is
/// then no figure to print.
fn reconcile_in_child(users: usize, groups: usize, big_members: usize) -> ChildPass {
    let exe = std::env::current_exe().expect("the path of this bench's binary");
    let child = Command::new(&exe)
        .env(
            CHILD_VAR,
            format!("reconcile {users} {groups} {big_members}"),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the reconcile child {}: {e}", exe.display()));
    let pid = child.id();
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("cannot wait for the reconcile child {pid}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the reconcile child {pid} failed ({}); it printed:\n{stdout}",
        out.status
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(CHILD_LINE))
        .unwrap_or_else(|| panic!("the reconcile child {pid} printed no figures:\n{stdout}"));
    let value_of = |key: &str| -> &str {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
            .unwrap_or_else(|| panic!("the reconcile child's line has no {key}: {line}"))
    };
    let num = |key: &str| -> u64 {
        value_of(key)
            .parse()
            .unwrap_or_else(|e| panic!("the reconcile child's {key} is not a number ({e}): {line}"))
    };
    let secs = |key: &str| -> f64 {
        value_of(key)
            .parse()
            .unwrap_or_else(|e| panic!("the reconcile child's {key} is not a number ({e}): {line}"))
    };
    let p = ChildPass {
        pid,
        actions: num("actions") as usize,
        secs: secs("secs"),
        plan_secs: secs("plan_secs"),
        hwm_start_kib: num("hwm_start_kib"),
        hwm_loaded_kib: num("hwm_loaded_kib"),
        hwm_after_kib: num("hwm_after_kib"),
    };
    // A peak only grows; anything else means the figures were not read as printed.
    assert!(
        0 < p.hwm_start_kib
            && p.hwm_start_kib <= p.hwm_loaded_kib
            && p.hwm_loaded_kib <= p.hwm_after_kib,
        "the reconcile child's peaks are not in order: {line}"
    );
    assert!(
        p.actions > 0 && p.actions <= users,
        "the reconcile child planned {} actions for {users} users",
        p.actions
    );
    p
}

/// Writes the population into Redis as the shared store keeps it, then opens a replica on it
/// and lets its first leaver check load everything: seconds, and KiB of RSS it added.
async fn replica_start(redis: &RedisServer, items: &[(Kind, Value)]) -> (f64, u64) {
    let client = redis::Client::open(redis.url()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to the private redis-server");
    let tag = format!("{}{{scim}}", storegate::store::REDIS_PREFIX);
    for chunk in items.chunks(1000) {
        let mut pipe = redis::pipe();
        for (kind, v) in chunk {
            let id = v["id"].as_str().unwrap_or_default();
            pipe.hset(format!("{tag}:resources"), field(*kind, id), v.to_string())
                .ignore();
        }
        let () = pipe
            .query_async(&mut conn)
            .await
            .expect("HSET the population");
    }
    let () = redis::cmd("HSET")
        .arg(format!("{tag}:head"))
        .arg("epoch")
        .arg("bench")
        .arg("rev")
        .arg(1)
        .query_async(&mut conn)
        .await
        .map(|_: i64| ())
        .expect("set the head");
    let handle = storegate::store::RedisHandle::new(
        &storegate::secret::Secret::new(redis.url()),
        Duration::from_secs(10),
    )
    .expect("Redis handle");
    let (before, _) = rss_kib();
    let t = Instant::now();
    let replica = ScimService::open(
        Arc::new(RedisScimStore::new(handle, storegate::store::REDIS_PREFIX)),
        Arc::new(SystemClock),
    )
    .await
    .expect("open a replica");
    // The first request loads everything.
    assert!(
        replica
            .is_deprovisioned("sub-0", None)
            .await
            .expect("answers")
    );
    let secs = t.elapsed().as_secs_f64();
    let (after, _) = rss_kib();
    let n = replica
        .list(Kind::User, &ListQuery::default(), BASE)
        .await
        .expect("list")
        .total_results;
    assert_eq!(n, items.iter().filter(|(k, _)| *k == Kind::User).count());
    println!(
        "replica: loaded {} resources from Redis in {secs:.2} s, {} resident after ({} more)",
        items.len(),
        mib(after),
        mib(after.saturating_sub(before))
    );
    (secs, after.saturating_sub(before))
}

/// A private `redis-server` (no persistence), killed on drop.
struct RedisServer {
    port: u16,
    child: Child,
}

impl RedisServer {
    fn start() -> Option<RedisServer> {
        let program =
            std::env::var("BENCH_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .ok()?;
        let child = Command::new(&program)
            .args([
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(std::env::temp_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let mut server = RedisServer { port, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                let mut buf = [0u8; 16];
                if s.write_all(b"PING\r\n").is_ok() && s.read(&mut buf).is_ok_and(|n| n > 0) {
                    return Some(server);
                }
            }
            if matches!(server.child.try_wait(), Ok(Some(_))) || Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
