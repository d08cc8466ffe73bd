//! Control-panel users at the 70-calls-an-hour budget (issue 12): a 500-person onboarding plus 50
//! leavers in one BigCommerce account of 3 stores, against the project's Account API simulator,
//! through the real control-panel step (SCIM snapshot, desired state from the policy's
//! `control_panel` grants, `StaffReconciler::pass`: read, plan, budget, mutations) on a simulated
//! clock: a pass every 15 minutes (the default `reconcile_interval`), the clock moved by hand, so
//! an hour of budget takes milliseconds and the load of the machine does not change any count.
//!
//! The minimum is computed here from the population alone, not read back from the planner: one
//! call per needed change (a leaver: one `removeUserFromStore` per store they are in, then
//! `removeUserFromAccount`; a joiner: `addUserToAccount`, then one `addUserToStore` per store
//! their groups grant) plus the paged read of the account at the start (`account.users` in pages
//! of 500, `account.stores.users` in pages of 50 stores, 500 users each). The reconciler reads
//! the account again each hour while the wave runs (its cached read is at most an hour old, so an
//! administrator's change in the control panel is seen within the hour): those re-reads are the
//! calls above the minimum, printed apart.
//!
//! Printed: calls used vs that minimum; simulated time until every leaver is removed and until
//! the whole wave is done, each beside its floor at 70 calls an hour; the number of passes; wall
//! time and process CPU time per pass (the reconciler and the in-process simulator answering
//! it); and the dry-run's prediction made before the wave. Checked in both modes: every leaver is
//! removed before any addition, no sliding hour holds more than 70 calls (and BigCommerce never
//! answered 429), exactly the needed mutations were sent (none twice, none refused), the end
//! state is the desired one and the unmanaged users (store owner, a BigCommerce support user)
//! are untouched.
//!
//! Run: `cargo bench --bench control_panel` (in `make bench`). Under `cargo test --all-targets`
//! the same runs on 30 joiners and 25 leavers (the leavers alone need more than an hour) and
//! also checks that calls used == minimum + one 2-page re-read per further hour of budget.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use storegate::audit::{AuditLog, EventKind};
use storegate::bigcommerce::account_api::{PAGE_SIZE, STORE_PAGE_SIZE};
use storegate::bigcommerce::sim::{SimAccount, SimAccountCall, SimConfig, SimStore, Simulator};
use storegate::clock::{Clock, ManualClock};
use storegate::config::{self, Config, LiteralEnv};
use storegate::controlpanel::budget::{FileBudget, HOURLY_LIMIT};
use storegate::controlpanel::desired;
use storegate::controlpanel::render;
use storegate::controlpanel::run::{AccountReport, StaffReconciler};
use storegate::provisioning::scim::ScimService;
use storegate::provisioning::scim::store::{Kind, MemoryStore};

const UUID: &str = "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b";
const STORES: [&str; 3] = ["store1", "store2", "store3"];
const START: i64 = 1_790_000_000;
const HOUR: i64 = 3600;
/// The default `reconcile_interval`.
const PASS_EVERY: i64 = 15 * 60;
/// A wave that needs longer than this is a failure, not a figure.
const GIVE_UP_AFTER_HOURS: i64 = 24 * 7;
const OWNER: &str = "owner@corp.example";
const BC_SUPPORT: &str = "support@bigcommerce.example";

/// SCIM group -> (permission set, its codes, the `[[store]]` ids its rule grants). The policy
/// text and the expected stores of each person both come from this one table.
const GRANTS: [(&str, &str, &[&str], &[&str]); 3] = [
    (
        "cp-merch",
        "merchandiser",
        &["Manage_Products", "Create_Product", "Edit_Products"],
        &["store1", "store2", "store3"],
    ),
    (
        "cp-finance",
        "finance",
        &["Manage_Orders", "Refund_Orders"],
        &["store1"],
    ),
    (
        "cp-support",
        "support",
        &["Manage_Orders", "Manage_Customers"],
        &["store2", "store3"],
    ),
];

struct Person {
    email: String,
    groups: Vec<&'static str>,
}

impl Person {
    /// The stores this person's groups grant (the union over their groups).
    fn stores(&self) -> BTreeSet<&'static str> {
        GRANTS
            .iter()
            .filter(|(g, ..)| self.groups.contains(g))
            .flat_map(|(.., stores)| stores.iter().copied())
            .collect()
    }
}

/// Person `i`'s groups: 40% merchandisers (every store), 20% finance (store1), 40% support
/// (store2 and store3); every seventh person is in finance as well.
fn groups_of(i: usize) -> Vec<&'static str> {
    let mut g = vec![match i % 5 {
        0 | 1 => "cp-merch",
        2 => "cp-finance",
        _ => "cp-support",
    }];
    if i.is_multiple_of(7) && !g.contains(&"cp-finance") {
        g.push("cp-finance");
    }
    g
}

fn people(prefix: &str, n: usize) -> Vec<Person> {
    (0..n)
        .map(|i| Person {
            email: format!("{prefix}{i:04}@corp.example"),
            groups: groups_of(i),
        })
        .collect()
}

fn config_text(base: &str) -> String {
    let mut t = String::from(
        "public_url = \"http://127.0.0.1:1\"\nallow_insecure_http = true\n[[idp]]\nid = \"nam\"\nprotocol = \"oidc\"\nissuer = \"http://127.0.0.1:9/x\"\nclient_id = \"c\"\nclient_secret = \"s\"\n",
    );
    for h in STORES {
        t += &format!(
            "[[bigcommerce]]\nid = \"{h}\"\nstore_hash = \"{h}\"\napi_base = \"{base}\"\naccess_token = \"token-{h}\"\nclient_id = \"client-{h}\"\nclient_secret = \"secret-{h}\"\n[[store]]\nid = \"{h}\"\nname = \"{h}\"\nbigcommerce = \"{h}\"\nurl = \"{base}/storefront/{h}/1\"\n"
        );
    }
    for (group, set, perms, stores) in GRANTS {
        let list = |v: &[&str]| {
            v.iter()
                .map(|s| format!("\"{s}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        t += &format!(
            "[[permission_set]]\nname = \"{set}\"\npermissions = [{}]\n[[rule]]\nname = \"{group}\"\ngroups_any = [\"{group}\"]\nstores = [{}]\nrole = \"{set}\"\ncontrol_panel = \"{set}\"\n",
            list(perms),
            list(stores)
        );
    }
    t += "[scim]\nenabled = true\nbearer_token = \"0123456789abcdef0123\"\nstore = \"memory\"\n[provisioning]\n";
    t += &format!(
        "[[account]]\nid = \"acme\"\naccount_uuid = \"{UUID}\"\naccess_token = \"account-token-{UUID}\"\napi_base = \"{base}\"\nstores = [{}]\n",
        STORES.map(|s| format!("\"{s}\"")).join(", ")
    );
    t
}

/// The wave's population as the simulator and SCIM hold it before the first pass.
struct Population {
    joiners: Vec<Person>,
    leavers: Vec<Person>,
    /// Leaver email -> user node id in the account (`bc/account/user/N`).
    leaver_ids: BTreeMap<String, String>,
}

impl Population {
    /// Every mutation the wave needs, as the simulator logs it ([`SimAccountCall::describe`]).
    fn needed_changes(&self) -> Vec<String> {
        let mut out = Vec::new();
        for p in &self.leavers {
            let id = &self.leaver_ids[&p.email];
            for s in p.stores() {
                out.push(format!("removeUserFromStore({id} {s})"));
            }
            out.push(format!("removeUserFromAccount({})", p.email));
        }
        for p in &self.joiners {
            out.push(format!("addUserToAccount({})", p.email));
            for s in p.stores() {
                out.push(format!("addUserToStore({} {s})", p.email));
            }
        }
        out
    }

    fn leaver_changes(&self) -> usize {
        self.leavers.iter().map(|p| p.stores().len() + 1).sum()
    }

    /// Pages of the first read: the account's users, then the stores with their users.
    fn first_read_pages(&self, unmanaged: &[(&str, &[&str])]) -> usize {
        let account_users = self.leavers.len() + unmanaged.len();
        let mut pages = pages(account_users, PAGE_SIZE) + pages(STORES.len(), STORE_PAGE_SIZE);
        for s in STORES {
            let users = self
                .leavers
                .iter()
                .filter(|p| p.stores().contains(s))
                .count()
                + unmanaged.iter().filter(|(_, st)| st.contains(&s)).count();
            // The first page of a store's users comes with the stores' page.
            pages += pages_of_users(users) - 1;
        }
        pages
    }
}

/// Pages of at least one for `n` items in pages of `size`.
fn pages(n: usize, size: u32) -> usize {
    n.div_ceil(size as usize).max(1)
}

fn pages_of_users(n: usize) -> usize {
    pages(n, PAGE_SIZE)
}

/// The people outside SCIM, with their stores: never to be touched.
const UNMANAGED: [(&str, &[&str]); 2] = [(OWNER, &STORES), (BC_SUPPORT, &["store1"])];

/// User + system CPU time of this process.
fn cpu_time() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we own; RUSAGE_SELF is always valid.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// `2 h 0 min`.
fn hours(secs: i64) -> String {
    format!("{} h {} min", secs / HOUR, (secs % HOUR) / 60)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// The floor of the time until the `n`-th call of a wave at 70 calls an hour: the first 70 at
/// once, then the next 70 an hour later, ...
fn floor_secs(n: usize) -> i64 {
    i64::try_from(n.saturating_sub(1) / HOURLY_LIMIT as usize).unwrap_or(i64::MAX) * HOUR
}

struct Row {
    name: &'static str,
    measured: String,
    target: String,
    holds: bool,
}

impl Row {
    fn print(&self) {
        println!(
            "{:<46} {:>22}   target {:<34} {}",
            self.name,
            self.measured,
            self.target,
            if self.holds { "holds" } else { "does not hold" }
        );
    }
}

struct PassTiming {
    wall: Duration,
    cpu: Duration,
    calls: u32,
}

fn main() -> anyhow::Result<()> {
    let benching = std::env::args().any(|a| a == "--bench");
    let (joiners, leavers) = if benching { (500, 50) } else { (30, 25) };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(wave(joiners, leavers, !benching))
}

async fn scim_user(scim: &ScimService, p: &Person) -> anyhow::Result<Value> {
    let (u, _) = scim
        .create(
            Kind::User,
            json!({"userName": p.email, "externalId": format!("guid-{}", p.email), "emails": [{"value": p.email, "primary": true}], "name": {"givenName": "Staff", "familyName": "Member"}}),
            "http://x",
        )
        .await
        .map_err(|e| anyhow::anyhow!("SCIM create of {}: {e:?}", p.email))?;
    Ok(u)
}

/// SCIM holds the joiners (active, in their groups) and the leavers (45 of 50 deactivated, as
/// Identity Manager does, the rest deleted); the simulator holds the leavers with the stores
/// they were granted, the store owner and a BigCommerce support user.
async fn populate(
    scim: &ScimService,
    sim: &storegate::bigcommerce::sim::SimHandle,
    joiners: usize,
    leavers: usize,
) -> anyhow::Result<Population> {
    let pop_joiners = people("joiner", joiners);
    let pop_leavers = people("leaver", leavers);
    let mut members: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    let mut leaver_users = Vec::new();
    for (p, leaving) in pop_joiners
        .iter()
        .map(|p| (p, false))
        .chain(pop_leavers.iter().map(|p| (p, true)))
    {
        let u = scim_user(scim, p).await?;
        for g in &p.groups {
            members
                .entry(g)
                .or_default()
                .push(json!({"value": u["id"]}));
        }
        if leaving {
            leaver_users.push(u);
        }
    }
    for (group, m) in members {
        scim.create(
            Kind::Group,
            json!({"displayName": group, "members": m}),
            "http://x",
        )
        .await
        .map_err(|e| anyhow::anyhow!("SCIM group {group}: {e:?}"))?;
    }
    for (i, u) in leaver_users.iter().enumerate() {
        let id = u["id"].as_str().unwrap_or_default();
        if i % 10 == 9 {
            scim.delete(Kind::User, id, None)
                .await
                .map_err(|e| anyhow::anyhow!("SCIM delete: {e:?}"))?;
        } else {
            let patch = serde_json::from_value(
                json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "replace", "value": {"active": false}}]}),
            )?;
            scim.patch(Kind::User, id, patch, None, "http://x")
                .await
                .map_err(|e| anyhow::anyhow!("SCIM deactivate: {e:?}"))?;
        }
    }
    for (email, stores) in UNMANAGED {
        sim.seed_staff(UUID, email, stores, email == OWNER)
            .ok_or_else(|| anyhow::anyhow!("cannot seed {email}"))?;
    }
    let mut leaver_ids = BTreeMap::new();
    for p in &pop_leavers {
        let stores: Vec<&str> = p.stores().into_iter().collect();
        let id = sim
            .seed_staff(UUID, &p.email, &stores, false)
            .ok_or_else(|| anyhow::anyhow!("cannot seed {}", p.email))?;
        leaver_ids.insert(p.email.clone(), id);
    }
    Ok(Population {
        joiners: pop_joiners,
        leavers: pop_leavers,
        leaver_ids,
    })
}

async fn wave(joiners: usize, leavers: usize, test_mode: bool) -> anyhow::Result<()> {
    let clock = ManualClock::at(START);
    let mut sc = SimConfig::new(STORES.iter().map(|h| SimStore::single_channel(h)).collect());
    sc.accounts = vec![SimAccount::new(UUID, &STORES)];
    let (router, sim) = Simulator::with_clock(sc, Arc::new(clock.clone()));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", l.local_addr()?);
    tokio::spawn(async move {
        let _ = storegate::server::serve_on(l, router, std::future::pending()).await;
    });
    let cfg: Config =
        config::load_str(&config_text(&base), "control_panel_bench.toml", &LiteralEnv)
            .map_err(|d| anyhow::anyhow!("{d}"))?;
    let scim = ScimService::open(Arc::new(MemoryStore), Arc::new(clock.clone())).await?;
    let pop = populate(&scim, &sim, joiners, leavers).await?;

    let dir = std::env::temp_dir().join(format!("storegate-cp-bench-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir)?;
    // The budget a single gateway keeps: a file rewritten on every spend.
    let budget = Arc::new(FileBudget::open(dir.join("budget.json"), HOURLY_LIMIT)?);
    let (audit, mut rx) = AuditLog::channel();
    let provision_events = Arc::new(AtomicUsize::new(0));
    let drift_events = Arc::new(AtomicUsize::new(0));
    let counters = (provision_events.clone(), drift_events.clone());
    tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            match ev.event {
                EventKind::Provision => counters.0.fetch_add(1, Ordering::Relaxed),
                EventKind::Drift => counters.1.fetch_add(1, Ordering::Relaxed),
                _ => 0,
            };
        }
    });
    let reconciler =
        StaffReconciler::from_config(&cfg.accounts, budget, audit, Arc::new(clock.clone()))?;

    println!(
        "control-panel wave: {joiners} joiners + {leavers} leavers ({} deleted in SCIM), {} stores in one account, {HOURLY_LIMIT} calls/hour, a pass every {} min (simulated clock)",
        leavers / 10,
        STORES.len(),
        PASS_EVERY / 60
    );
    let mut timings = Vec::new();
    let mut first: Option<AccountReport> = None;
    loop {
        let now = clock.now();
        anyhow::ensure!(
            now - START <= GIVE_UP_AFTER_HOURS * HOUR,
            "the wave is not done after {GIVE_UP_AFTER_HOURS} simulated hours"
        );
        let (wall0, cpu0) = (Instant::now(), cpu_time());
        let data = scim.snapshot().await?;
        let want = desired::from_config(&cfg, &data, now);
        let mut report = reconciler
            .pass(&want, &format!("bench-{}", timings.len()), true)
            .await;
        let r = report
            .accounts
            .pop()
            .ok_or_else(|| anyhow::anyhow!("the pass reported no account"))?;
        timings.push(PassTiming {
            wall: wall0.elapsed(),
            cpu: cpu_time().saturating_sub(cpu0),
            calls: r.calls,
        });
        anyhow::ensure!(
            r.error.is_none() && r.failed.is_empty(),
            "pass at +{} failed: {:?} {:?}",
            hours(now - START),
            r.error,
            r.failed
        );
        let done = r.pending().is_empty();
        if first.is_none() {
            first = Some(r);
        }
        if done {
            break;
        }
        clock.advance(PASS_EVERY);
    }
    // Let the audit drain see the last events.
    tokio::time::sleep(Duration::from_millis(50)).await;

    let calls = sim.account_calls(UUID);
    let check = check(&pop, &calls, &sim)?;
    let first = first.ok_or_else(|| anyhow::anyhow!("no pass ran"))?;
    report(
        &pop,
        &check,
        &first,
        &timings,
        &provision_events,
        &drift_events,
    );
    if test_mode {
        // Every read of this population is 2 pages (under 500 users per store and in the
        // account, 3 stores), so each hour of budget carries 68 changes and the wave needs
        // ceil(changes / 68) hours, each starting with a read.
        let changes = check.needed;
        let per_hour = HOURLY_LIMIT as usize - 2;
        let hours_needed = changes.div_ceil(per_hour);
        anyhow::ensure!(
            check.first_read == 2,
            "first read {} pages",
            check.first_read
        );
        anyhow::ensure!(
            check.used == check.minimum + 2 * (hours_needed - 1),
            "calls used {} != minimum {} + 2 x {} hourly re-reads",
            check.used,
            check.minimum,
            hours_needed - 1
        );
        anyhow::ensure!(
            check.wave_secs == floor_secs(check.minimum + 2 * (hours_needed - 1)),
            "the wave took {} s",
            check.wave_secs
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// What the simulator's call log says about the wave, each invariant checked.
struct Checked {
    needed: usize,
    leaver_changes: usize,
    first_read: usize,
    minimum: usize,
    used: usize,
    reads: usize,
    peak_hour: usize,
    leavers_secs: i64,
    wave_secs: i64,
}

fn check(
    pop: &Population,
    calls: &[SimAccountCall],
    sim: &storegate::bigcommerce::sim::SimHandle,
) -> anyhow::Result<Checked> {
    let needed = pop.needed_changes();
    let first_read = pop.first_read_pages(&UNMANAGED);
    anyhow::ensure!(
        calls.iter().all(|c| c.status == 200),
        "BigCommerce answered {:?}: the budget must stop first",
        calls.iter().find(|c| c.status != 200).map(|c| c.describe())
    );
    let is_read = |c: &&SimAccountCall| c.operation.starts_with("account.");
    let mutations: Vec<&SimAccountCall> = calls.iter().filter(|c| !is_read(c)).collect();
    let mut sent: Vec<String> = mutations.iter().map(|c| c.describe()).collect();
    let mut want = needed.clone();
    sent.sort();
    want.sort();
    anyhow::ensure!(
        sent == want,
        "the mutations sent are not exactly the needed changes: {} sent, {} needed; first difference {:?}",
        sent.len(),
        want.len(),
        sent.iter().zip(&want).find(|(a, b)| a != b)
    );
    // Leavers first: every removal before any addition.
    let last_removal = mutations
        .iter()
        .rposition(|c| c.operation.starts_with("remove"));
    let first_addition = mutations
        .iter()
        .position(|c| c.operation.starts_with("add"));
    if let (Some(r), Some(a)) = (last_removal, first_addition) {
        anyhow::ensure!(
            r < a,
            "an addition (call {a}) was sent before a leaver's removal (call {r})"
        );
    }
    let at_start = calls
        .iter()
        .filter(|c| c.at == START)
        .filter(is_read)
        .count();
    anyhow::ensure!(
        at_start == first_read,
        "the first read took {at_start} pages, the population needs {first_read}"
    );
    let peak_hour = sim.account_peak_hourly_requests(UUID);
    anyhow::ensure!(
        peak_hour <= HOURLY_LIMIT as usize,
        "{peak_hour} calls in one hour"
    );
    // The end state: each joiner in exactly their stores, no leaver left, unmanaged untouched.
    for s in STORES {
        let got: BTreeSet<String> = sim.store_staff(UUID, s).into_keys().collect();
        let mut expected: BTreeSet<String> = pop
            .joiners
            .iter()
            .filter(|p| p.stores().contains(s))
            .map(|p| p.email.clone())
            .collect();
        expected.extend(
            UNMANAGED
                .iter()
                .filter(|(_, st)| st.contains(&s))
                .map(|(e, _)| (*e).to_owned()),
        );
        anyhow::ensure!(got == expected, "{s} does not hold the desired staff");
    }
    let staff: BTreeSet<String> = sim.staff(UUID).into_iter().map(|u| u.email).collect();
    anyhow::ensure!(
        staff.len() == pop.joiners.len() + UNMANAGED.len(),
        "the account holds {} users",
        staff.len()
    );
    anyhow::ensure!(
        mutations
            .iter()
            .all(|c| !UNMANAGED.iter().any(|(e, _)| c.args.contains(e))),
        "an unmanaged user was touched"
    );
    let leavers_at = mutations
        .iter()
        .filter(|c| c.operation.starts_with("remove"))
        .map(|c| c.at)
        .max()
        .unwrap_or(START);
    let wave_at = mutations.iter().map(|c| c.at).max().unwrap_or(START);
    Ok(Checked {
        needed: needed.len(),
        leaver_changes: pop.leaver_changes(),
        first_read,
        minimum: needed.len() + first_read,
        used: calls.len(),
        reads: calls.iter().filter(is_read).count(),
        peak_hour,
        leavers_secs: leavers_at - START,
        wave_secs: wave_at - START,
    })
}

fn report(
    pop: &Population,
    c: &Checked,
    first: &AccountReport,
    timings: &[PassTiming],
    provision_events: &AtomicUsize,
    drift_events: &AtomicUsize,
) {
    let working = timings.iter().filter(|t| t.calls > 0).count();
    let mean = |f: fn(&PassTiming) -> Duration| {
        timings.iter().map(f).sum::<Duration>() / u32::try_from(timings.len().max(1)).unwrap_or(1)
    };
    let max = |f: fn(&PassTiming) -> Duration| timings.iter().map(f).max().unwrap_or_default();
    let leaver_floor = floor_secs(c.leaver_changes + c.first_read);
    let wave_floor = floor_secs(c.minimum);
    let rows = [
        Row {
            name: "calls used (reads + mutations)",
            measured: format!("{} ({:.3}x)", c.used, c.used as f64 / c.minimum as f64),
            target: format!("minimum {}", c.minimum),
            holds: c.used == c.minimum,
        },
        Row {
            name: "  mutations sent",
            measured: c.used.saturating_sub(c.reads).to_string(),
            target: format!("= needed changes {}", c.needed),
            holds: c.used.saturating_sub(c.reads) == c.needed,
        },
        Row {
            name: "  pages read",
            measured: format!(
                "{} = {} + {} re-read",
                c.reads,
                c.first_read,
                c.reads.saturating_sub(c.first_read)
            ),
            target: format!("one read of {} pages", c.first_read),
            holds: c.reads == c.first_read,
        },
        Row {
            name: "most calls in any sliding hour",
            measured: c.peak_hour.to_string(),
            target: format!("<= {HOURLY_LIMIT}, no 429"),
            holds: c.peak_hour <= HOURLY_LIMIT as usize,
        },
        Row {
            name: "every leaver removed, before any addition",
            measured: hours(c.leavers_secs),
            target: format!(
                "floor {} ({} calls + read)",
                hours(leaver_floor),
                c.leaver_changes
            ),
            holds: c.leavers_secs <= leaver_floor,
        },
        Row {
            name: "whole wave done (simulated)",
            measured: hours(c.wave_secs),
            target: format!("floor {} at {HOURLY_LIMIT}/h", hours(wave_floor)),
            holds: c.wave_secs <= wave_floor,
        },
    ];
    for r in &rows {
        r.print();
    }
    println!(
        "the {} calls over the minimum are the account read again at the start of each further hour of the wave (a cached read is used for at most {} s, so an administrator's change shows within the hour); every mutation was a needed change, sent once",
        c.used.saturating_sub(c.minimum),
        storegate::controlpanel::run::CACHE_MAX_AGE_SECS
    );
    println!(
        "passes: {} (one every {} min), {working} of them sent calls; per pass (SCIM snapshot, desired state, plan, calls; CPU includes the in-process simulator): wall mean {} max {}, CPU mean {} max {}; the first pass (read + plan of the whole backlog + 70 calls): wall {} CPU {}",
        timings.len(),
        PASS_EVERY / 60,
        ms(mean(|t| t.wall)),
        ms(max(|t| t.wall)),
        ms(mean(|t| t.cpu)),
        ms(max(|t| t.cpu)),
        ms(timings.first().map(|t| t.wall).unwrap_or_default()),
        ms(timings.first().map(|t| t.cpu).unwrap_or_default()),
    );
    println!(
        "dry-run before the wave (`reconcile --dry-run`'s estimate for {} leavers and {} joiners): {}",
        pop.leavers.len(),
        pop.joiners.len(),
        render::cost(&first.plan.steps, 0).join("; ")
    );
    println!(
        "audit: {} provisioning events (one per mutation), {} permission-drift events over all passes",
        provision_events.load(Ordering::Relaxed),
        drift_events.load(Ordering::Relaxed)
    );
}
