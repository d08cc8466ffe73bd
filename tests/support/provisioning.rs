//! Provisioning test helpers: the BigCommerce simulator with three stores, a configuration for the
//! reconciler, SCIM data with joiners, leavers and movers, and the checks every queue backend must
//! pass (shared by tests/it/reconcile.rs, reconcile_redis.rs, reconcile_b2b.rs and webhooks.rs).

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use storegate::audit::AuditLog;
use storegate::bigcommerce::sim::{SimConfig, SimHandle, SimStore, Simulator};
use storegate::clock::SystemClock;
use storegate::config::{self, Config, LiteralEnv};
use storegate::provisioning::queue::Backoff;
use storegate::provisioning::scim::ScimService;
use storegate::provisioning::scim::store::{Kind, MemoryStore};
use tokio::net::TcpListener;

pub const HASHES: [&str; 3] = ["store1", "store2", "store3"];

/// A simulator with three store hashes and a fast rate-limit window (so limits bite in seconds).
pub async fn simulator(per_window: u32, window_ms: u64) -> (SimHandle, String) {
    let stores = HASHES.iter().map(|h| SimStore::single_channel(h)).collect();
    let mut cfg = SimConfig::new(stores);
    cfg.requests_per_window = per_window;
    cfg.window_ms = window_ms;
    let (router, sim) = Simulator::build(cfg);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = storegate::server::serve_on(l, router, std::future::pending()).await;
    });
    (sim, base)
}

/// A configuration with `provisioning` as the `[provisioning]` body and `tail` (further tables)
/// after it.
pub fn config_text(sim_base: &str, provisioning: &str, tail: &str) -> Config {
    let t = config_toml(sim_base, "memory", provisioning, tail);
    config::load_str(&t, "reconcile.toml", &LiteralEnv).unwrap_or_else(|d| panic!("{d}"))
}

/// The text behind [`config_text`], with `scim_store` as `[scim] store` (`"memory"`, or
/// `"file:DIR"`, a folder that a test and the `storegate` binary both read): for tests that run the binary.
pub fn config_toml(sim_base: &str, scim_store: &str, provisioning: &str, tail: &str) -> String {
    let mut t = String::from(
        "public_url = \"http://127.0.0.1:1\"\nallow_insecure_http = true\n[[idp]]\nid = \"nam\"\nprotocol = \"oidc\"\nissuer = \"http://127.0.0.1:9/x\"\nclient_id = \"c\"\nclient_secret = \"s\"\n",
    );
    for h in HASHES {
        t += &format!(
            "[[bigcommerce]]\nid = \"{h}\"\nstore_hash = \"{h}\"\napi_base = \"{sim_base}\"\naccess_token = \"token-{h}\"\nclient_id = \"client-{h}\"\nclient_secret = \"secret-{h}\"\n[[store]]\nid = \"{h}\"\nname = \"{h}\"\nbigcommerce = \"{h}\"\nurl = \"{sim_base}/storefront/{h}/1\"\n"
        );
    }
    t += "[[rule]]\nname = \"staff-everywhere\"\ngroups_any = [\"staff\"]\nstores = [\"*\"]\nrole = \"staff\"\ncustomer_group = \"Staff\"\n";
    t += "[[rule]]\nname = \"outlet-only\"\ngroups_any = [\"outlet\"]\nstores = [\"store3\"]\nrole = \"outlet\"\n";
    t += &format!(
        "[scim]\nenabled = true\nbearer_token = \"0123456789abcdef0123\"\nstore = \"{scim_store}\"\n[provisioning]\n{provisioning}{tail}"
    );
    t
}

pub fn fast() -> Backoff {
    Backoff {
        first: Duration::from_millis(5),
        max: Duration::from_millis(100),
        give_up_after: 50,
        rate_limited_default: Duration::from_millis(50),
        dead_letter_after: 50,
    }
}

pub async fn scim_with_users(n: usize, group: &str) -> ScimService {
    let s = ScimService::open(Arc::new(MemoryStore), Arc::new(SystemClock))
        .await
        .unwrap();
    let mut members = Vec::new();
    for i in 0..n {
        let (u, _) = s
            .create(Kind::User, json!({"userName": format!("user{i:05}@corp.example"), "externalId": format!("guid-{i}"), "name": {"givenName": format!("U{i}"), "familyName": "Test"}}), "http://x")
            .await
            .unwrap();
        members.push(json!({"value": u["id"]}));
    }
    s.create(
        Kind::Group,
        json!({"displayName": group, "members": members}),
        "http://x",
    )
    .await
    .unwrap();
    s
}

/// A SCIM leaver: `active: false`, as Identity Manager sends it.
pub async fn deactivate(scim: &ScimService, user: &serde_json::Value) {
    let patch = serde_json::from_value(json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "replace", "value": {"active": false}}]})).unwrap();
    scim.patch(
        Kind::User,
        user["id"].as_str().unwrap(),
        patch,
        None,
        "http://x",
    )
    .await
    .unwrap();
}

/// A SCIM mover: `user` leaves every group they are a member of and becomes the only member of
/// a new group `name`.
pub async fn move_to_new_group(scim: &ScimService, user: &serde_json::Value, name: &str) {
    let id = user["id"].as_str().unwrap();
    let groups = scim
        .list(Kind::Group, &Default::default(), "http://x")
        .await
        .unwrap()
        .resources;
    let member = |g: &&serde_json::Value| {
        g["members"]
            .as_array()
            .is_some_and(|m| m.iter().any(|x| x["value"] == id))
    };
    for group in groups.iter().filter(member) {
        let patch = serde_json::from_value(json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "remove", "path": format!("members[value eq \"{id}\"]")}]})).unwrap();
        scim.patch(
            Kind::Group,
            group["id"].as_str().unwrap(),
            patch,
            None,
            "http://x",
        )
        .await
        .unwrap();
    }
    scim.create(
        Kind::Group,
        json!({"displayName": name, "members": [{"value": user["id"]}]}),
        "http://x",
    )
    .await
    .unwrap();
}

pub fn assert_exactly_once(sim: &SimHandle, n: usize) {
    for h in HASHES {
        let cs = sim.customers(h);
        let mut emails: Vec<String> = cs.iter().map(|c| c.email.to_lowercase()).collect();
        emails.sort();
        let before = emails.len();
        emails.dedup();
        assert_eq!(before, emails.len(), "{h}: duplicated customers");
        assert_eq!(emails.len(), n, "{h}: lost customers");
    }
}

pub fn temp(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("storegate-{tag}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// 25 joiners x 3 stores; between plan and work two of store1's emails appear, one without a
/// subject (adopted) and one bound to another subject (dead letter `subject_conflict`, reported
/// by every later pass). Shared by the file and the Redis queue.
pub async fn optimistic_creates_case(sim: &SimHandle, cfg: Config) {
    use storegate::audit::{EventKind, Outcome};
    use storegate::provisioning::drift::DriftKind;
    use storegate::provisioning::queue::QueueStats;
    use storegate::provisioning::render::render_drift;
    let cfg = Arc::new(cfg);
    let scim = scim_with_users(25, "staff").await;
    let (audit, mut rx) = AuditLog::channel();
    let r = storegate::app::reconciler(cfg, audit, Arc::new(SystemClock), fast()).unwrap();
    let now = || storegate::clock::Clock::now(&SystemClock);
    let plan = r
        .plan(&scim.snapshot().await.unwrap(), now())
        .await
        .unwrap();
    assert_eq!(plan.len(), 75, "25 joiners x 3 stores");
    // store1's creates go in batches of 10 in plan order; a batch holding a taken email costs
    // 3 calls (create refused with 422 naming it, look it up, create the rest), others 1.
    let store1: Vec<&str> = plan
        .iter()
        .filter(|a| a.account() == "store1")
        .map(|a| a.email())
        .collect();
    let taken = ["user00003@corp.example", "user00012@corp.example"];
    let create_calls: u64 = store1
        .chunks(10)
        .map(|b| {
            if b.iter().any(|e| taken.contains(e)) {
                3
            } else {
                1
            }
        })
        .sum();
    // Between plan and work, two of those emails appear on store1: one created in the control
    // panel (no subject), one bound to someone else.
    let panel = sim
        .add_customer(
            "store1",
            "user00003@corp.example",
            "Panel",
            "Made",
            Some(vec![1]),
        )
        .unwrap();
    let other = sim
        .add_customer(
            "store1",
            "user00012@corp.example",
            "Some",
            "One",
            Some(vec![1]),
        )
        .unwrap();
    sim.set_attribute_value("store1", other, "storegate_subject", "nam:someone-else");
    let calls_before: Vec<u64> = HASHES.iter().map(|h| sim.api_calls(h)).collect();
    r.executor.queue.enqueue("opt", plan).await.unwrap();
    let drain = r.executor.drain(None).await;
    assert!(drain.stalled.is_empty(), "{drain:?}");
    assert_eq!((drain.done, drain.failed), (74, 1), "{drain:?}");
    // store1: the creates, plus the adoption: one customer update and one attribute-values
    // write. The other stores: 3 creates each, no lookup.
    let calls: Vec<u64> = HASHES
        .iter()
        .zip(&calls_before)
        .map(|(h, b)| sim.api_calls(h) - b)
        .collect();
    assert_eq!(calls, vec![create_calls + 2, 3, 3]);
    assert_exactly_once(sim, 25);
    // The conflict is a refusal no retry fixes: one dead letter, with its reason.
    let dead = r.executor.queue.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(
        (dead[0].0.action.account(), dead[0].0.action.email()),
        ("store1", "user00012@corp.example")
    );
    assert!(
        dead[0].1.starts_with(&format!(
            "subject_conflict: customer #{other} has the email user00012@corp.example but is bound to nam:someone-else, not nam:guid-12"
        )),
        "{}",
        dead[0].1
    );
    assert_eq!(
        r.executor.queue.stats().await.unwrap(),
        QueueStats {
            waiting: 0,
            in_flight: 0,
            dead_letters: 1
        }
    );
    let staff = sim
        .customer_groups("store1")
        .into_iter()
        .find(|g| g.name == "Staff")
        .unwrap();
    let by_id = |id: u64| {
        sim.customers("store1")
            .into_iter()
            .find(|c| c.id == id)
            .unwrap()
    };
    // Adopted: desired fields, subject recorded.
    let adopted = by_id(panel);
    assert_eq!(
        (adopted.first_name.as_str(), adopted.customer_group_id),
        ("U3", staff.id)
    );
    assert_eq!(
        sim.attribute_value("store1", panel, "storegate_subject")
            .as_deref(),
        Some("nam:guid-3")
    );
    // Someone else's: untouched.
    let theirs = by_id(other);
    assert_eq!(
        (theirs.first_name.as_str(), theirs.customer_group_id),
        ("Some", 0)
    );
    assert_eq!(
        sim.attribute_value("store1", other, "storegate_subject")
            .as_deref(),
        Some("nam:someone-else")
    );
    let (mut adopt_events, mut conflict_events) = (0, 0);
    while let Ok(ev) = rx.try_recv() {
        if ev.event != EventKind::Provision {
            continue;
        }
        if ev.reason.as_deref() == Some("adopt") && ev.outcome == Outcome::Allow {
            assert_eq!(ev.customer_id, Some(panel));
            adopt_events += 1;
        }
        if ev.outcome == Outcome::Error {
            assert!(
                ev.detail
                    .as_deref()
                    .unwrap_or_default()
                    .starts_with("dead letter: subject_conflict: "),
                "{ev:?}"
            );
            assert_eq!(ev.reason.as_deref(), Some("create"), "{ev:?}");
            assert!(
                ev.detail
                    .as_deref()
                    .unwrap_or_default()
                    .contains("nam:someone-else"),
                "{ev:?}"
            );
            conflict_events += 1;
        }
    }
    assert_eq!((adopt_events, conflict_events), (1, 1));

    // Reconcile (dry run and pass) reports the conflict every time and plans nothing for it.
    let (plan, drift) = r
        .preview(&scim.snapshot().await.unwrap(), now())
        .await
        .unwrap();
    assert!(plan.is_empty(), "{plan:?}");
    assert_eq!(drift.len(), 1, "{drift:?}");
    assert_eq!(
        (
            drift[0].kind,
            drift[0].id,
            drift[0].subject.as_str(),
            drift[0].repaired
        ),
        (DriftKind::SubjectConflict, other, "nam:someone-else", false)
    );
    let printed = render_drift(&drift);
    assert!(
        printed.starts_with("conflict store1     user00012@corp.example"),
        "{printed}"
    );
    assert!(
        printed.contains("has the email of nam:guid-12 but is bound to nam:someone-else"),
        "{printed}"
    );
    let report = r
        .pass(&scim.snapshot().await.unwrap(), now())
        .await
        .unwrap();
    assert!(report.plan.is_empty(), "{:?}", report.plan);
    assert_eq!(report.drift, drift);
    let mut audited = 0;
    while let Ok(ev) = rx.try_recv() {
        if ev.event == EventKind::Drift {
            assert_eq!(ev.reason.as_deref(), Some("subject_conflict"));
            assert_eq!(ev.outcome, Outcome::Deny);
            assert_eq!(ev.customer_id, Some(other));
            audited += 1;
        }
    }
    assert_eq!(audited, 1);
    assert_eq!(by_id(other), theirs, "still untouched after the pass");
}
