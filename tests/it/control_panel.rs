//! Control-panel users end to end (issue 12): SCIM in, a control-panel pass, the simulated
//! GraphQL Account API's state and the exact calls; leavers before additions under the
//! 70-per-hour budget, two replicas sharing it through Redis, a restart, a 429, unmanaged users,
//! and permission drift.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use storegate::audit::{AuditEvent, AuditLog, EventKind};
use storegate::bigcommerce::sim::{SimAccount, SimConfig, SimHandle, SimStore, Simulator};
use storegate::clock::{ManualClock, SystemClock};
use storegate::config::Config;
use storegate::controlpanel::budget::{CallBudget, FileBudget, HOURLY_LIMIT, RedisBudget};
use storegate::controlpanel::desired::{Grants, desired_staff};
use storegate::controlpanel::model::DesiredStaffState;
use storegate::controlpanel::run::{AccountReport, StaffReconciler};
use storegate::identity::Identity;
use storegate::provisioning::scim::ScimService;
use storegate::provisioning::scim::store::{Kind, MemoryStore};
use storegate::secret::Secret;
use tokio::net::TcpListener;

use crate::support::provisioning::{config_text, deactivate, move_to_new_group};
use crate::support::redis::RedisServer;

/// (email, store, high-risk, excess, missing) of one drift finding.
type DriftRow = (String, String, Vec<String>, Vec<String>, Vec<String>);

const UUID: &str = "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b";
const NOW: i64 = 1_790_000_000;
const MERCH: &[&str] = &[
    "Manage_Products",
    "Create_Product",
    "Edit_Products",
    "Manage_Categories",
    "Manage_PriceLists",
];

struct World {
    sim: SimHandle,
    clock: ManualClock,
    cfg: Config,
    scim: ScimService,
}

async fn world(extra: &str) -> World {
    let stores = ["store1", "store2", "store3"]
        .iter()
        .map(|h| SimStore::single_channel(h))
        .collect();
    let mut sc = SimConfig::new(stores);
    sc.accounts = vec![SimAccount::new(UUID, &["store1", "store2"])];
    let clock = ManualClock::at(NOW);
    let (router, sim) = Simulator::with_clock(sc, Arc::new(clock.clone()));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = storegate::server::serve_on(l, router, std::future::pending()).await;
    });
    let cfg = config_text(
        &base,
        "",
        &format!(
            "[[account]]\nid = \"acme\"\naccount_uuid = \"{UUID}\"\naccess_token = \"account-token-{UUID}\"\napi_base = \"{base}\"\nstores = [\"store1\", \"store2\"]\n{extra}"
        ),
    );
    let scim = ScimService::open(Arc::new(MemoryStore), Arc::new(SystemClock))
        .await
        .unwrap();
    World {
        sim,
        clock,
        cfg,
        scim,
    }
}

/// The policy's control-panel grants as the tests configure them: group `cp-merch` gives the
/// merchandiser set on both stores, `cp-eu` on store2 only.
fn grants(id: &Identity) -> Grants {
    let merch: BTreeSet<String> = MERCH.iter().map(|s| (*s).to_owned()).collect();
    let mut out = BTreeMap::new();
    if id.groups.iter().any(|g| g == "cp-merch") {
        out.insert("store1".to_owned(), merch.clone());
        out.insert("store2".to_owned(), merch.clone());
    }
    if id.groups.iter().any(|g| g == "cp-eu") {
        out.insert("store2".to_owned(), merch);
    }
    out
}

impl World {
    fn reconciler(
        &self,
        budget: Arc<dyn CallBudget>,
    ) -> (
        StaffReconciler,
        tokio::sync::mpsc::UnboundedReceiver<AuditEvent>,
    ) {
        let (audit, rx) = AuditLog::channel();
        let r = StaffReconciler::from_config(
            &self.cfg.accounts,
            budget,
            audit,
            Arc::new(self.clock.clone()),
        )
        .unwrap();
        (r, rx)
    }

    async fn desired(&self) -> DesiredStaffState {
        let data = self.scim.snapshot().await.unwrap();
        desired_staff(&self.cfg, &data, grants)
    }

    async fn pass(&self, r: &StaffReconciler) -> AccountReport {
        let d = self.desired().await;
        r.pass(&d, "test", true).await.accounts.remove(0)
    }

    /// SCIM users `emails` in a new group `group`; returns the users.
    async fn people(&self, group: &str, emails: &[String]) -> Vec<Value> {
        let mut users = Vec::new();
        for e in emails {
            let (u, _) = self
                .scim
                .create(Kind::User, json!({"userName": e, "externalId": format!("guid-{e}"), "emails": [{"value": e, "primary": true}], "name": {"givenName": "G", "familyName": "F"}}), "http://x")
                .await
                .unwrap();
            users.push(u);
        }
        let members: Vec<Value> = users.iter().map(|u| json!({"value": u["id"]})).collect();
        self.scim
            .create(
                Kind::Group,
                json!({"displayName": group, "members": members}),
                "http://x",
            )
            .await
            .unwrap();
        users
    }

    fn mutations(&self) -> Vec<String> {
        self.sim.account_mutations(UUID)
    }

    fn store(&self, hash: &str) -> Vec<String> {
        self.sim.store_staff(UUID, hash).into_keys().collect()
    }

    fn user_id(&self, email: &str) -> String {
        let s = self.sim.staff(UUID);
        let u = s.iter().find(|s| s.email == email).unwrap();
        format!("bc/account/user/{}", u.id)
    }
}

fn emails(prefix: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("{prefix}{i:03}@corp.example"))
        .collect()
}

fn memory_budget() -> Arc<dyn CallBudget> {
    Arc::new(FileBudget::memory(HOURLY_LIMIT))
}

#[tokio::test]
async fn joiner_mover_and_leaver_reach_the_control_panel_with_exactly_these_calls() {
    let w = world("").await;
    // The store owner is not in SCIM: unmanaged, never touched.
    w.sim
        .seed_staff(UUID, "owner@corp.example", &["store1", "store2"], true);
    let mut people = w
        .people(
            "cp-merch",
            &["ada@corp.example".into(), "bob@corp.example".into()],
        )
        .await;
    let (ada, bob) = (people.remove(0), people.remove(0));
    let (r, _rx) = w.reconciler(memory_budget());

    let joined = w.pass(&r).await;
    assert_eq!(joined.reads, 2, "one page of account users, one of stores");
    assert_eq!(
        w.mutations(),
        [
            "addUserToAccount(ada@corp.example)",
            "addUserToStore(ada@corp.example store1)",
            "addUserToStore(ada@corp.example store2)",
            "addUserToAccount(bob@corp.example)",
            "addUserToStore(bob@corp.example store1)",
            "addUserToStore(bob@corp.example store2)",
        ]
    );
    assert_eq!(joined.plan.unmanaged.len(), 1);
    assert_eq!(joined.plan.unmanaged[0].email, "owner@corp.example");
    assert_eq!(
        w.store("store1"),
        ["ada@corp.example", "bob@corp.example", "owner@corp.example"]
    );

    // Mover: bob keeps only store2. The cached read has no id for bob: read again first.
    move_to_new_group(&w.scim, &bob, "cp-eu").await;
    let before = w.mutations().len();
    let moved = w.pass(&r).await;
    assert_eq!(moved.reads, 2);
    assert_eq!(
        w.mutations()[before..],
        [format!(
            "removeUserFromStore({} store1)",
            w.user_id("bob@corp.example")
        )]
    );
    assert_eq!(
        w.store("store1"),
        ["ada@corp.example", "owner@corp.example"]
    );
    assert_eq!(
        w.store("store2"),
        ["ada@corp.example", "bob@corp.example", "owner@corp.example"]
    );

    // Leaver: ada is removed from both stores, then from the account; the cached read is used.
    deactivate(&w.scim, &ada).await;
    let ada_id = w.user_id("ada@corp.example");
    let before = w.mutations().len();
    let left = w.pass(&r).await;
    assert_eq!(left.reads, 0, "the read of the previous pass is reused");
    assert_eq!(
        w.mutations()[before..],
        [
            format!("removeUserFromStore({ada_id} store1)"),
            format!("removeUserFromStore({ada_id} store2)"),
            "removeUserFromAccount(ada@corp.example)".to_owned(),
        ]
    );
    assert!(
        w.sim
            .staff(UUID)
            .iter()
            .all(|s| s.email != "ada@corp.example")
    );
    // Nothing left to do; the owner was never touched.
    let idle = w.pass(&r).await;
    assert!(idle.plan.steps.is_empty());
    assert!(w.mutations().iter().all(|m| !m.contains("owner")));
    assert_eq!(w.store("store1"), ["owner@corp.example"]);
}

#[tokio::test]
async fn leavers_are_removed_before_any_addition_with_a_large_backlog() {
    let w = world("").await;
    let leavers = emails("leaver", 20);
    for e in &leavers {
        w.sim.seed_staff(UUID, e, &["store1"], false);
    }
    let gone = w.people("cp-merch", &leavers).await;
    for u in &gone {
        deactivate(&w.scim, u).await;
    }
    w.people("cp-eu", &emails("joiner", 100)).await;
    let (r, _rx) = w.reconciler(memory_budget());

    let first = w.pass(&r).await;
    // 2 reads + 40 leaver calls + 28 of the 200 additions; then the budget pauses the pass.
    assert_eq!(first.calls, 70);
    assert_eq!(first.done.len(), 68);
    assert_eq!(first.paused_until, Some(NOW + 3600));
    assert!(first.error.is_none() && first.failed.is_empty());
    let m = w.mutations();
    assert_eq!(m.len(), 68);
    assert!(m[..40].iter().all(|c| c.starts_with("remove")), "{m:?}");
    assert!(m[40..].iter().all(|c| c.starts_with("add")), "{m:?}");
    assert!(
        w.store("store1").is_empty(),
        "every leaver removed in the first pass"
    );
    assert!(
        m.iter().all(|c| !c.contains("-> 429")),
        "the budget stops before BigCommerce does"
    );

    // An hour later the additions go on (the read, an hour old, is read again: 2 calls); the
    // 172 left take three more hours.
    let mut hours = 0;
    loop {
        w.clock.advance(3600);
        hours += 1;
        let r2 = w.pass(&r).await;
        if r2.pending().is_empty() {
            break;
        }
        assert!(hours < 4, "{r2:?}");
    }
    assert_eq!(hours, 3);
    assert_eq!(w.store("store2").len(), 100);
    assert!(w.sim.account_peak_hourly_requests(UUID) <= 70);
}

#[tokio::test]
async fn two_replicas_sharing_the_budget_never_exceed_seventy_calls_in_any_hour() {
    let redis = RedisServer::start();
    let w = world("").await;
    w.people("cp-merch", &emails("joiner", 60)).await;
    let handle =
        storegate::store::RedisHandle::new(&Secret::new(redis.url()), Duration::from_secs(5))
            .unwrap();
    let budget = || -> Arc<dyn CallBudget> {
        Arc::new(RedisBudget::new(handle.clone(), "cptest:", HOURLY_LIMIT))
    };
    let (a, _ra) = w.reconciler(budget());
    let (b, _rb) = w.reconciler(budget());
    // Half a simulated day: both replicas run a pass every 10 minutes, at the same moment (they
    // plan the same steps, so some of the second one's are refused: wasted, but counted).
    for _ in 0..72 {
        let (ra, rb) = tokio::join!(w.pass(&a), w.pass(&b));
        assert!(ra.error.is_none() && rb.error.is_none(), "{ra:?} {rb:?}");
        w.clock.advance(600);
    }
    let calls = w.sim.account_calls(UUID);
    assert!(
        calls.iter().all(|c| c.status == 200),
        "no 429: the shared budget stopped first"
    );
    assert_eq!(w.sim.account_peak_hourly_requests(UUID), 70);
    assert_eq!(w.store("store1").len(), 60);
    assert_eq!(w.store("store2").len(), 60);
    assert!(
        budget()
            .used("acme", storegate::clock::Clock::now(&w.clock))
            .await
            .unwrap()
            <= 70
    );
}

#[tokio::test]
async fn a_restart_loses_no_planned_change_and_keeps_the_spent_budget() {
    let w = world("").await;
    w.people("cp-merch", &emails("joiner", 40)).await;
    let dir = std::env::temp_dir().join(format!("sg-cp-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("budget.json");
    let (r, _rx) = w.reconciler(Arc::new(
        FileBudget::open(path.clone(), HOURLY_LIMIT).unwrap(),
    ));
    let first = w.pass(&r).await;
    assert_eq!(first.calls, 70);
    assert!(first.paused_until.is_some());
    let pending = first.pending().len();
    assert_eq!(pending, 120 - 68);
    drop(r);

    // A new process: same budget file, no cache. Right away nothing is sent (the hour is spent).
    let (r, _rx) = w.reconciler(Arc::new(
        FileBudget::open(path.clone(), HOURLY_LIMIT).unwrap(),
    ));
    let calls = w.sim.account_calls(UUID).len();
    let again = w.pass(&r).await;
    assert_eq!(again.calls, 0);
    assert_eq!(w.sim.account_calls(UUID).len(), calls);
    w.clock.advance(3600);
    let done = w.pass(&r).await;
    assert!(done.pending().is_empty(), "{done:?}");
    assert_eq!(done.done.len(), pending);
    assert_eq!(w.store("store1").len(), 40);
    assert_eq!(w.store("store2").len(), 40);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_429_pauses_the_pass_without_failing_it() {
    let w = world("").await;
    w.people("cp-merch", &["ada@corp.example".into()]).await;
    let (r, _rx) = w.reconciler(memory_budget());
    w.sim.throttle_account_next(UUID, 1);
    let paused = w.pass(&r).await;
    assert_eq!(paused.paused_until, Some(NOW + 60));
    assert!(paused.error.is_none() && paused.failed.is_empty() && paused.done.is_empty());
    assert!(w.sim.staff(UUID).is_empty());
    w.clock.advance(60);
    let done = w.pass(&r).await;
    assert_eq!(done.done.len(), 3);
    assert_eq!(w.store("store1"), ["ada@corp.example"]);
}

#[tokio::test]
async fn drift_reports_missing_excess_and_high_risk_permissions_exactly_and_sets_nothing() {
    let w = world("").await;
    w.people("cp-merch", &["ada@corp.example".into()]).await;
    w.people("cp-eu", &["eve@corp.example".into()]).await;
    let (r, mut rx) = w.reconciler(memory_budget());
    w.pass(&r).await;
    assert!(w.sim.set_staff_permissions(
        UUID,
        "store1",
        "ada@corp.example",
        &[
            "Manage_Products",
            "Create_Product",
            "Manage_Users",
            "Manage_Orders"
        ]
    ));
    assert!(w.sim.set_staff_permissions(
        UUID,
        "store2",
        "eve@corp.example",
        &[
            "Manage_Products",
            "Create_Product",
            "Edit_Products",
            "Manage_Categories",
            "Manage_PriceLists",
            "Statistics_Overview"
        ]
    ));
    w.clock.advance(3600); // the cache expires: the administrator's change is read
    let report = w.pass(&r).await;
    let drift: Vec<DriftRow> = report
        .drift
        .iter()
        .map(|d| {
            (
                d.email.clone(),
                d.store.clone(),
                d.high_risk.clone(),
                d.excess.clone(),
                d.missing.clone(),
            )
        })
        .collect();
    let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        drift,
        [
            (
                "ada@corp.example".into(),
                "store1".into(),
                s(&["Manage_Users"]),
                s(&["Manage_Orders", "Manage_Users"]),
                s(&["Edit_Products", "Manage_Categories", "Manage_PriceLists"])
            ),
            (
                "ada@corp.example".into(),
                "store2".into(),
                s(&[]),
                s(&[]),
                s(&[
                    "Create_Product",
                    "Edit_Products",
                    "Manage_Categories",
                    "Manage_PriceLists",
                    "Manage_Products"
                ])
            ),
            (
                "eve@corp.example".into(),
                "store2".into(),
                s(&[]),
                s(&["Statistics_Overview"]),
                s(&[])
            ),
        ]
    );
    let mut events = Vec::new();
    while let Ok(ev) = rx.try_recv() {
        if ev.event == EventKind::Drift {
            events.push((
                ev.email.unwrap(),
                ev.store.unwrap(),
                ev.reason.unwrap(),
                ev.detail.unwrap(),
            ));
        }
    }
    assert_eq!(
        events,
        [
            ("ada@corp.example".into(), "store1".into(), "cp_permission_high_risk".into(), "high-risk excess Manage_Users; excess Manage_Orders; missing Edit_Products Manage_Categories Manage_PriceLists".to_owned()),
            ("ada@corp.example".into(), "store2".into(), "cp_permission_missing".into(), "missing Create_Product Edit_Products Manage_Categories Manage_PriceLists Manage_Products".to_owned()),
            ("eve@corp.example".into(), "store2".into(), "cp_permission_excess".into(), "excess Statistics_Overview".to_owned()),
        ]
    );
    // Nothing was written: no call other than the reads, the permissions as the admin left them.
    assert!(report.plan.steps.is_empty());
    assert_eq!(report.calls, report.reads);
    assert!(w.sim.store_staff(UUID, "store1")["ada@corp.example"].contains("Manage_Users"));

    // The next passes find the same drift and say nothing new; a day after it was audited, it
    // is audited again (a daily review of the trail still sees it).
    let drift_events = |rx: &mut tokio::sync::mpsc::UnboundedReceiver<AuditEvent>| {
        let mut n = 0;
        while let Ok(ev) = rx.try_recv() {
            n += usize::from(ev.event == EventKind::Drift);
        }
        n
    };
    w.clock.advance(3600);
    assert_eq!(w.pass(&r).await.drift.len(), 3);
    assert_eq!(drift_events(&mut rx), 0);
    w.clock.advance(23 * 3600);
    assert_eq!(w.pass(&r).await.drift.len(), 3);
    assert_eq!(drift_events(&mut rx), 3);
}

/// Joiner, mover and leaver with the grants from a real policy file: `[[permission_set]]`s, a
/// template role and an allow rule carrying `control_panel` (crate::control_panel_cli::POLICY),
/// loaded and validated like any configuration, the desired state from
/// `controlpanel::desired::from_config` (the policy's `control_panel_grants`), as `reconcile` and
/// the gateway's scheduled pass compute it. Every call to the Account API is asserted, reads
/// included.
#[tokio::test]
async fn a_policy_file_drives_joiner_mover_and_leaver_with_exactly_these_calls() {
    use storegate::controlpanel::desired::from_config;
    let w = world(crate::control_panel_cli::POLICY).await;
    w.sim
        .seed_staff(UUID, "owner@corp.example", &["store1", "store2"], true);
    let mut merch = w
        .people(
            "cp-merch",
            &["ada@corp.example".into(), "bob@corp.example".into()],
        )
        .await;
    let (ada, bob) = (merch.remove(0), merch.remove(0));
    let (r, _rx) = w.reconciler(memory_budget());
    let pass = || async {
        let data = w.scim.snapshot().await.unwrap();
        let desired = from_config(&w.cfg, &data, NOW);
        r.pass(&desired, "policy", true).await.accounts.remove(0)
    };
    let calls = |from: usize| -> Vec<String> {
        w.sim.account_calls(UUID)[from..]
            .iter()
            .map(|c| c.describe())
            .collect()
    };
    const READS: [&str; 2] = [
        "account.users(first 500 after -)",
        "account.stores.users(stores 50 after - users 500 after -)",
    ];

    // Joiners: the template role `merchandiser` (set "merchandiser") on both stores.
    let joined = pass().await;
    assert!(
        joined.failed.is_empty() && joined.error.is_none(),
        "{joined:?}"
    );
    assert_eq!(
        calls(0),
        [
            READS[0],
            READS[1],
            "addUserToAccount(ada@corp.example)",
            "addUserToStore(ada@corp.example store1)",
            "addUserToStore(ada@corp.example store2)",
            "addUserToAccount(bob@corp.example)",
            "addUserToStore(bob@corp.example store1)",
            "addUserToStore(bob@corp.example store2)",
        ]
    );
    assert_eq!(
        w.store("store1"),
        ["ada@corp.example", "bob@corp.example", "owner@corp.example"]
    );
    assert_eq!(
        w.store("store2"),
        ["ada@corp.example", "bob@corp.example", "owner@corp.example"]
    );

    // Mover: bob leaves cp-merch for cp-finance, whose allow rule carries `control_panel =
    // "finance"` on store2 only: store1 is lost (removed; his id is read first), store2 stays,
    // now expected to hold the finance set, which the drift shows.
    move_to_new_group(&w.scim, &bob, "cp-finance").await;
    let before = w.sim.account_calls(UUID).len();
    let moved = pass().await;
    assert_eq!(
        calls(before),
        [
            READS[0].to_owned(),
            READS[1].to_owned(),
            format!(
                "removeUserFromStore({} store1)",
                w.user_id("bob@corp.example")
            ),
        ]
    );
    assert_eq!(
        w.store("store1"),
        ["ada@corp.example", "owner@corp.example"]
    );
    let bob_drift: Vec<(String, Vec<String>)> = moved
        .drift
        .iter()
        .filter(|d| d.email == "bob@corp.example")
        .map(|d| (d.store.clone(), d.missing.clone()))
        .collect();
    assert_eq!(
        bob_drift,
        [(
            "store2".to_owned(),
            vec!["Manage_Orders".to_owned(), "Refund_Orders".to_owned()]
        )]
    );

    // Leaver: ada is deactivated: out of both stores, then out of the account (cached read).
    deactivate(&w.scim, &ada).await;
    let ada_id = w.user_id("ada@corp.example");
    let before = w.sim.account_calls(UUID).len();
    let left = pass().await;
    assert_eq!(left.reads, 0);
    assert_eq!(
        calls(before),
        [
            format!("removeUserFromStore({ada_id} store1)"),
            format!("removeUserFromStore({ada_id} store2)"),
            "removeUserFromAccount(ada@corp.example)".to_owned(),
        ]
    );
    assert_eq!(w.store("store1"), ["owner@corp.example"]);
    assert_eq!(
        w.store("store2"),
        ["bob@corp.example", "owner@corp.example"]
    );
    assert!(
        w.sim
            .staff(UUID)
            .iter()
            .all(|s| s.email != "ada@corp.example")
    );
    // The owner, outside SCIM, was listed every pass and never touched.
    assert_eq!(left.plan.unmanaged.len(), 1);
    assert!(calls(0).iter().all(|c| !c.contains("owner")));
}

/// A budget that grants calls but cannot say how many were used (a Redis that answers the
/// spend script but not the count, say).
struct BudgetWithoutCount(FileBudget);

#[async_trait::async_trait]
impl CallBudget for BudgetWithoutCount {
    async fn take(
        &self,
        account: &str,
        now: storegate::clock::UnixTime,
    ) -> Result<storegate::controlpanel::budget::Spend, String> {
        self.0.take(account, now).await
    }
    async fn used(&self, _account: &str, _now: storegate::clock::UnixTime) -> Result<u32, String> {
        Err("connection refused".into())
    }
}

#[tokio::test]
async fn an_unreadable_budget_count_is_reported_as_spent_not_as_zero() {
    let w = world("").await;
    w.people("cp-merch", &["ada@corp.example".into()]).await;
    let (r, _rx) = w.reconciler(Arc::new(BudgetWithoutCount(FileBudget::memory(
        HOURLY_LIMIT,
    ))));
    let report = w.pass(&r).await;
    assert_eq!(
        report.used_last_hour, HOURLY_LIMIT,
        "an unknown count must not read as a full hour left"
    );
    assert_eq!(
        report.error.as_deref(),
        Some(
            "the Account API budget cannot be read, so calls used in the last hour are unknown (counted as all 70): connection refused"
        )
    );
}
