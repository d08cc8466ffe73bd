//! The reconciler against the BigCommerce simulator (issue 5): a 1,000-user joiner wave over three
//! stores under rate limits, injected 429s and 5xx, a crash in the middle that resumes, and a leaver.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use storegate::audit::AuditLog;
use storegate::clock::SystemClock;
use storegate::config::{self, Config, LiteralEnv};
use storegate::provisioning::scim::store::{Kind, MemoryStore};
use storegate::provisioning::scim::{ScimData, ScimService};

use crate::support::provisioning::{
    HASHES, assert_exactly_once, config_text, deactivate, fast, move_to_new_group,
    optimistic_creates_case, scim_with_users, simulator, temp,
};

fn config(sim_base: &str, queue: &std::path::Path, extra: &str) -> Config {
    config_text(
        sim_base,
        &format!("queue = \"file:{}\"\n{extra}", queue.display()),
        "",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joiner_wave_of_1000_over_3_stores_with_429s_and_5xx_loses_and_duplicates_nothing() {
    let (sim, base) = simulator(200, 250).await;
    let dir = temp("wave");
    let cfg = Arc::new(config(&base, &dir.join("queue.json"), ""));
    let scim = scim_with_users(1000, "staff").await;
    let (audit, mut rx) = AuditLog::channel();
    let r = storegate::app::reconciler(cfg, audit, Arc::new(SystemClock), fast()).unwrap();
    let now = storegate::clock::Clock::now(&SystemClock);
    let plan = r.plan(&scim.snapshot().await.unwrap(), now).await.unwrap();
    assert_eq!(plan.len(), 3000);
    r.executor.queue.enqueue("wave", plan).await.unwrap();
    let answered_429 = || -> u64 { HASHES.iter().map(|h| sim.rate_limited_answers(h)).sum() };
    let planning_429 = answered_429();
    // Another app on the stores spends the shared quota: the wave's first 40 calls are answered
    // 429 (reset in 20 ms). Then a BigCommerce hiccup: 25 calls refused with 503, then 5 that
    // take effect but whose answer is lost (502): those creates happened, and the retry must
    // find them rather than create them twice.
    sim.rate_limit_next(40, 20);
    sim.fail_next(25, axum::http::StatusCode::SERVICE_UNAVAILABLE);
    sim.fail_next_after_effect(5, axum::http::StatusCode::BAD_GATEWAY);
    let started = std::time::Instant::now();
    let drain = r.executor.drain(None).await;
    println!("wave: {drain:?} in {:?}", started.elapsed());
    assert!(drain.stalled.is_empty(), "{drain:?}");
    assert_eq!(drain.done, 3000, "{drain:?}");
    assert_eq!(drain.failed, 0, "{drain:?}");
    assert_eq!(
        drain.retried, 30,
        "each injected 5xx retried once: {drain:?}"
    );
    assert_eq!(sim.injected_rate_limits(), 40, "every injected 429 was met");
    // Every 429 the stores answered during the wave (the 40, and any of the quota's own) was
    // seen as one and waited out, not retried as a failure or dropped.
    assert_eq!(
        drain.rate_limited,
        answered_429() - planning_429,
        "{drain:?}"
    );
    assert_exactly_once(&sim, 1000);
    for h in HASHES {
        let c = &sim.customers(h)[0];
        assert_eq!(c.channel_ids, Some(vec![1]));
        assert_ne!(c.customer_group_id, 0, "customer group Staff assigned");
        assert!(
            sim.attribute_value(h, c.id, "storegate_subject")
                .is_some_and(|v| v.starts_with("nam:guid-")),
            "IdP subject recorded"
        );
    }
    let mut audited = 0;
    while let Ok(ev) = rx.try_recv() {
        if ev.reason.as_deref() == Some("create") && ev.run.as_deref() == Some("wave") {
            audited += 1;
        }
    }
    assert_eq!(audited, 3000, "one audit event per created customer");
    // A second pass has nothing to do.
    let again = r
        .pass(
            &scim.snapshot().await.unwrap(),
            storegate::clock::Clock::now(&SystemClock),
        )
        .await
        .unwrap();
    assert!(
        again.plan.is_empty(),
        "{:?}",
        &again.plan[..again.plan.len().min(3)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_in_the_middle_of_a_run_resumes_without_duplicates() {
    let (sim, base) = simulator(400, 250).await;
    let dir = temp("restart");
    let queue = dir.join("queue.json");
    let scim = scim_with_users(300, "staff").await;
    let data: ScimData = scim.snapshot().await.unwrap();
    let cfg = Arc::new(config(&base, &queue, ""));
    let r = storegate::app::reconciler(
        cfg.clone(),
        AuditLog::channel().0,
        Arc::new(SystemClock),
        fast(),
    )
    .unwrap();
    let plan = r
        .plan(&data, storegate::clock::Clock::now(&SystemClock))
        .await
        .unwrap();
    r.executor.queue.enqueue("run-1", plan).await.unwrap();
    // "Crash": the worker is killed at an arbitrary point, possibly between a call and the write.
    let ex = r.executor.clone();
    let worker = tokio::spawn(async move { ex.drain(None).await });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while sim.customers("store1").len() < 100 {
        assert!(
            !worker.is_finished() && std::time::Instant::now() < deadline,
            "the worker stopped or stalled before 100 customers on store1"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    worker.abort();
    let _ = worker.await;
    drop(r);
    let partial: usize = HASHES.iter().map(|h| sim.customers(h).len()).sum();
    assert!(partial < 900, "the crash happened mid-run ({partial})");
    // A new process reads the queue file and resumes.
    let r = storegate::app::reconciler(cfg, AuditLog::channel().0, Arc::new(SystemClock), fast())
        .unwrap();
    assert!(
        !r.executor.queue.is_empty().await.unwrap(),
        "work survived the crash"
    );
    let report = r.executor.drain(None).await;
    assert!(report.stalled.is_empty());
    assert!(r.executor.queue.is_empty().await.unwrap());
    assert_exactly_once(&sim, 300);
    let again = r
        .plan(&data, storegate::clock::Clock::now(&SystemClock))
        .await
        .unwrap();
    assert!(again.is_empty(), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaver_is_locked_out_in_one_pass_and_a_mover_loses_stores() {
    let (sim, base) = simulator(1000, 1000).await;
    let dir = temp("leaver");
    let cfg = Arc::new(config(
        &base,
        &dir.join("queue.json"),
        "deprovision = \"restrict\"\nlocked_customer_group = \"Locked\"\n",
    ));
    let scim = scim_with_users(3, "staff").await;
    let r = storegate::app::reconciler(cfg, AuditLog::channel().0, Arc::new(SystemClock), fast())
        .unwrap();
    r.pass(
        &scim.snapshot().await.unwrap(),
        storegate::clock::Clock::now(&SystemClock),
    )
    .await
    .unwrap();
    assert_exactly_once(&sim, 3);
    let users = scim
        .list(Kind::User, &Default::default(), "http://x")
        .await
        .unwrap()
        .resources;
    // The list order is the store's, not creation order: pick the two by externalId.
    let by_external = |id: &str| {
        users
            .iter()
            .find(|u| u["externalId"] == id)
            .unwrap_or_else(|| panic!("user {id}"))
    };
    let (leaver, mover) = (by_external("guid-0"), by_external("guid-1"));
    // Leaver: active false (as Identity Manager sends it).
    deactivate(&scim, leaver).await;
    assert!(
        scim.is_deprovisioned("guid-0", None).await.unwrap(),
        "the gateway refuses the leaver at once"
    );
    // Mover: from staff (every store) to outlet (store3 only).
    move_to_new_group(&scim, mover, "outlet").await;

    let report = r
        .pass(
            &scim.snapshot().await.unwrap(),
            storegate::clock::Clock::now(&SystemClock),
        )
        .await
        .unwrap();
    assert!(
        report.drain.stalled.is_empty() && report.drain.failed == 0,
        "{:?}",
        report.drain
    );
    for h in HASHES {
        let locked = sim
            .customer_groups(h)
            .into_iter()
            .find(|g| g.name == "Locked")
            .expect("locked group")
            .id;
        let find = |email: &str| {
            sim.customers(h)
                .into_iter()
                .find(|c| c.email == email)
                .expect("customer kept")
        };
        let l = find("user00000@corp.example");
        assert_eq!(
            l.customer_group_id, locked,
            "{h}: leaver in the locked group"
        );
        assert_eq!(l.channel_ids, Some(vec![l.origin_channel_id]));
        assert_eq!(
            sim.password_changes(h, l.id),
            1,
            "{h}: leaver's password randomised"
        );
        let m = find("user00001@corp.example");
        if h == "store3" {
            assert_ne!(m.customer_group_id, locked, "the mover keeps store3");
        } else {
            assert_eq!(
                m.customer_group_id, locked,
                "{h}: the mover lost this store"
            );
        }
        let stay = find("user00002@corp.example");
        assert_ne!(stay.customer_group_id, locked);
    }
    // Nothing left to do: deprovisioning is not repeated every pass.
    let again = r
        .pass(
            &scim.snapshot().await.unwrap(),
            storegate::clock::Clock::now(&SystemClock),
        )
        .await
        .unwrap();
    assert!(again.plan.is_empty(), "{:?}", again.plan);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_creates_no_customer_group_and_no_customer() {
    let (sim, base) = simulator(1000, 1000).await;
    let dir = temp("dry");
    let cfg = Arc::new(config(&base, &dir.join("queue.json"), ""));
    let scim = scim_with_users(3, "staff").await;
    let r = storegate::app::reconciler(cfg, AuditLog::channel().0, Arc::new(SystemClock), fast())
        .unwrap();
    let (plan, drift) = r
        .preview(
            &scim.snapshot().await.unwrap(),
            storegate::clock::Clock::now(&SystemClock),
        )
        .await
        .unwrap();
    assert_eq!(plan.len(), 9, "3 users x 3 stores");
    assert!(drift.is_empty());
    for h in HASHES {
        assert!(
            sim.customer_groups(h).iter().all(|g| g.name != "Staff"),
            "{h}: dry run created a group"
        );
        assert!(sim.customers(h).is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_reported_and_repaired_only_with_repair_drift() {
    use storegate::provisioning::drift::DriftKind;
    let (sim, base) = simulator(1000, 1000).await;
    let dir = temp("drift");
    let queue = dir.join("queue.json");
    let now = || storegate::clock::Clock::now(&SystemClock);
    let scim = scim_with_users(2, "staff").await;
    let r = storegate::app::reconciler(
        Arc::new(config(&base, &queue, "")),
        AuditLog::channel().0,
        Arc::new(SystemClock),
        fast(),
    )
    .unwrap();
    r.pass(&scim.snapshot().await.unwrap(), now())
        .await
        .unwrap();
    assert_exactly_once(&sim, 2);
    // SCIM forgets everyone without a tombstone (a store reset, a user deleted out of band):
    // the customers still carry the storegate subject, but nobody wants them.
    let empty = ScimService::open(Arc::new(MemoryStore), Arc::new(SystemClock))
        .await
        .unwrap();
    let (audit, mut rx) = AuditLog::channel();
    let report = r
        .pass(&empty.snapshot().await.unwrap(), now())
        .await
        .unwrap();
    drop(r);
    assert_eq!(report.drift.len(), 6, "{:?}", report.drift);
    assert!(
        report
            .drift
            .iter()
            .all(|d| d.kind == DriftKind::NotDesired && !d.repaired)
    );
    assert!(report.plan.is_empty(), "report only: {:?}", report.plan);
    assert_exactly_once(&sim, 2);
    // With repair_drift they are locked; the pass after that finds nothing.
    let r = storegate::app::reconciler(
        Arc::new(config(&base, &queue, "repair_drift = true\n")),
        audit,
        Arc::new(SystemClock),
        fast(),
    )
    .unwrap();
    let report = r
        .pass(&empty.snapshot().await.unwrap(), now())
        .await
        .unwrap();
    assert_eq!(report.drift.len(), 6);
    assert!(report.drift.iter().all(|d| d.repaired));
    assert_eq!(report.drain.done, 6, "{:?}", report.drain);
    let mut drift_events = 0;
    while let Ok(ev) = rx.try_recv() {
        if ev.event == storegate::audit::EventKind::Drift {
            assert_eq!(ev.reason.as_deref(), Some("not_desired"));
            drift_events += 1;
        }
    }
    assert_eq!(drift_events, 6);
    for h in HASHES {
        let locked = sim
            .customer_groups(h)
            .into_iter()
            .find(|g| g.name == "Locked")
            .expect("locked group");
        assert!(
            sim.customers(h)
                .iter()
                .all(|c| c.customer_group_id == locked.id)
        );
    }
    let again = r
        .pass(&empty.snapshot().await.unwrap(), now())
        .await
        .unwrap();
    assert!(again.drift.is_empty() && again.plan.is_empty(), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedule_runs_passes_and_audits_them() {
    let (sim, base) = simulator(1000, 1000).await;
    let dir = temp("sched");
    let cfg = Arc::new(config(&base, &dir.join("queue.json"), ""));
    let scim = Arc::new(scim_with_users(2, "staff").await);
    let (audit, mut rx) = AuditLog::channel();
    let r =
        Arc::new(storegate::app::reconciler(cfg, audit, Arc::new(SystemClock), fast()).unwrap());
    let spawned = std::time::Instant::now();
    let task =
        storegate::flows::provision::spawn_schedule(r, scim, Duration::from_millis(300), None);
    let mut passes = Vec::new();
    let deadline = spawned + Duration::from_secs(10);
    while passes.len() < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        while let Ok(ev) = rx.try_recv() {
            if ev.event == storegate::audit::EventKind::Reconcile
                && ev.outcome == storegate::audit::Outcome::Allow
            {
                passes.push(spawned.elapsed());
            }
        }
    }
    task.abort();
    assert!(passes.len() >= 2, "two scheduled passes: {passes:?}");
    // Nothing at start: the first pass is one interval later. A lower bound, which a loaded
    // machine can only make later, never earlier.
    assert!(
        passes[0] >= Duration::from_millis(300),
        "the first pass ran before one interval had passed: {passes:?}"
    );
    assert_exactly_once(&sim, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimistic_creates_adopt_taken_emails_and_leave_another_subjects_customer_alone() {
    let (sim, base) = simulator(1000, 1000).await;
    let dir = temp("optimistic");
    let cfg = config(&base, &dir.join("queue.json"), "");
    optimistic_creates_case(&sim, cfg).await;
}

/// A configuration whose store1 account runs B2B Edition: `buyers` get company 42 as junior
/// buyers, `seniors` as senior buyers.
fn b2b_config(sim_base: &str, queue: &std::path::Path) -> Config {
    let mut t = String::from(
        "public_url = \"http://127.0.0.1:1\"\nallow_insecure_http = true\n[[idp]]\nid = \"nam\"\nprotocol = \"oidc\"\nissuer = \"http://127.0.0.1:9/x\"\nclient_id = \"c\"\nclient_secret = \"s\"\n",
    );
    t += &format!(
        "[[bigcommerce]]\nid = \"store1\"\nstore_hash = \"store1\"\napi_base = \"{sim_base}\"\naccess_token = \"token-store1\"\nclient_id = \"client-store1\"\nclient_secret = \"secret-store1\"\nb2b_access_token = \"b2b-token-store1\"\nb2b_api_base = \"{sim_base}/api/v3/io\"\n[[store]]\nid = \"store1\"\nname = \"store1\"\nbigcommerce = \"store1\"\nurl = \"{sim_base}/storefront/store1/1\"\n"
    );
    t += "[[rule]]\nname = \"buyers\"\ngroups_any = [\"buyers\"]\nstores = [\"store1\"]\nrole = \"buyer\"\nb2b = { company_id = 42, role = \"junior_buyer\" }\n";
    t += "[[rule]]\nname = \"seniors\"\ngroups_any = [\"seniors\"]\nstores = [\"store1\"]\nrole = \"senior\"\nb2b = { company_id = 42, role = \"senior_buyer\" }\n";
    t += &format!(
        "[scim]\nenabled = true\nbearer_token = \"0123456789abcdef0123\"\nstore = \"memory\"\n[provisioning]\nqueue = \"file:{}\"\n",
        queue.display()
    );
    config::load_str(&t, "reconcile.toml", &LiteralEnv).unwrap_or_else(|d| panic!("{d}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b2b_membership_is_reconciled_without_a_launch_and_another_company_is_left_alone() {
    use storegate::bigcommerce::sim::{SimCompany, SimCompanyUser};
    use storegate::provisioning::b2b_sync::B2bChangeKind;

    let (sim, base) = simulator(1000, 1000).await;
    sim.enable_b2b(
        "store1",
        "b2b-token-store1",
        vec![SimCompany {
            id: 42,
            name: "Acme".into(),
            status: 1,
            customer_group_id: 9,
            custom_roles: vec![],
        }],
    );
    // user00002 already is a customer and a user of company 99 (set up by someone else).
    let other = sim
        .add_customer(
            "store1",
            "user00002@corp.example",
            "U2",
            "Test",
            Some(vec![1]),
        )
        .unwrap();
    sim.add_company_user(
        "store1",
        SimCompanyUser {
            id: 500,
            customer_id: other,
            company_id: 99,
            role: 0,
            company_role_id: None,
            email: "user00002@corp.example".into(),
        },
    );
    let dir = temp("b2b");
    let cfg = Arc::new(b2b_config(&base, &dir.join("queue.json")));
    let (audit, mut events) = AuditLog::channel();
    let r = storegate::app::reconciler(cfg, audit, Arc::new(SystemClock), fast()).unwrap();
    let scim = scim_with_users(3, "buyers").await;
    let now = || storegate::clock::Clock::now(&SystemClock);

    // Joiners: one pass, no launch.
    let report = r
        .pass(&scim.snapshot().await.unwrap(), now())
        .await
        .unwrap();
    assert_eq!(report.drain.failed, 0, "{:?}", report.drain);
    let kinds = |report: &storegate::flows::provision::PassReport| {
        let mut k: Vec<(String, B2bChangeKind)> = report
            .b2b
            .iter()
            .map(|c| (c.email.clone(), c.kind.clone()))
            .collect();
        k.sort_by(|a, b| a.0.cmp(&b.0));
        k
    };
    assert_eq!(
        kinds(&report),
        vec![
            ("user00000@corp.example".into(), B2bChangeKind::Created),
            ("user00001@corp.example".into(), B2bChangeKind::Created),
            ("user00002@corp.example".into(), B2bChangeKind::Conflict),
        ]
    );
    let users = sim.company_users("store1");
    assert_eq!(users.len(), 3, "{users:?}");
    for email in ["user00000@corp.example", "user00001@corp.example"] {
        let u: Vec<_> = users.iter().filter(|u| u.email == email).collect();
        assert_eq!(u.len(), 1, "{email}: exactly one company user");
        assert_eq!(
            (u[0].company_id, u[0].role, u[0].company_role_id),
            (42, 2, None)
        );
    }
    let left = users.iter().find(|u| u.customer_id == other).unwrap();
    assert_eq!(
        (left.id, left.company_id, left.role),
        (500, 99, 0),
        "never moved"
    );

    let b2b_events =
        |events: &mut tokio::sync::mpsc::UnboundedReceiver<storegate::audit::AuditEvent>| {
            let mut out = Vec::new();
            while let Ok(ev) = events.try_recv() {
                if let Some(reason) = ev.reason.as_deref().filter(|r| r.starts_with("b2b_")) {
                    out.push((
                        ev.email.clone().unwrap_or_default(),
                        reason.to_owned(),
                        ev.before.clone(),
                        ev.after.clone(),
                    ));
                }
            }
            out.sort_by(|a, b| a.0.cmp(&b.0));
            out
        };
    assert_eq!(
        b2b_events(&mut events),
        vec![
            (
                "user00000@corp.example".into(),
                "b2b_create".into(),
                None,
                Some(json!("junior buyer"))
            ),
            (
                "user00001@corp.example".into(),
                "b2b_create".into(),
                None,
                Some(json!("junior buyer"))
            ),
            (
                "user00002@corp.example".into(),
                "b2b_conflict".into(),
                None,
                Some(json!("junior buyer"))
            ),
        ]
    );
    let conflict = report
        .b2b
        .iter()
        .find(|c| c.kind == B2bChangeKind::Conflict)
        .unwrap();
    assert!(
        conflict
            .detail
            .contains("is a user of B2B company 99, not 42"),
        "{}",
        conflict.detail
    );

    // Mover: user00001 leaves buyers for seniors; the next pass changes the role in place.
    let all = scim
        .list(Kind::User, &Default::default(), "http://x")
        .await
        .unwrap()
        .resources;
    let mover = all.iter().find(|u| u["externalId"] == "guid-1").unwrap();
    move_to_new_group(&scim, mover, "seniors").await;
    let report = r
        .pass(&scim.snapshot().await.unwrap(), now())
        .await
        .unwrap();
    assert_eq!(
        kinds(&report),
        vec![
            ("user00000@corp.example".into(), B2bChangeKind::Unchanged),
            ("user00001@corp.example".into(), B2bChangeKind::RoleChanged),
            ("user00002@corp.example".into(), B2bChangeKind::Conflict),
        ]
    );
    let users = sim.company_users("store1");
    assert_eq!(users.len(), 3, "no user added: {users:?}");
    let moved = users
        .iter()
        .find(|u| u.email == "user00001@corp.example")
        .unwrap();
    assert_eq!((moved.company_id, moved.role), (42, 1), "senior buyer now");
    let stayed = users
        .iter()
        .find(|u| u.email == "user00000@corp.example")
        .unwrap();
    assert_eq!(stayed.role, 2);
    assert_eq!(
        users
            .iter()
            .find(|u| u.customer_id == other)
            .unwrap()
            .company_id,
        99
    );
    assert_eq!(
        b2b_events(&mut events),
        vec![
            (
                "user00001@corp.example".into(),
                "b2b_role".into(),
                Some(json!("junior buyer")),
                Some(json!("senior buyer"))
            ),
            (
                "user00002@corp.example".into(),
                "b2b_conflict".into(),
                None,
                Some(json!("junior buyer"))
            ),
        ]
    );
}
