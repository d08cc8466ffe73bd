//! B2B Edition membership through the reconciler (issue 5), against the simulator: what a pass
//! costs in B2B calls, leavers and movers losing their company user, rate limits and failures
//! inside the B2B step, the dry run, and custom company roles.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};
use storegate::audit::AuditLog;
use storegate::bigcommerce::api::ApiError;
use storegate::bigcommerce::b2b::{B2bApi, HttpB2bApi};
use storegate::bigcommerce::sim::{SimCompany, SimCompanyUser, SimHandle};
use storegate::clock::SystemClock;
use storegate::config::{self, Config, LiteralEnv};
use storegate::flows::provision::{PassReport, Reconciler};
use storegate::provisioning::b2b_sync::B2bChangeKind;
use storegate::provisioning::queue::Backoff;
use storegate::provisioning::reconcile::desired_state;
use storegate::provisioning::render::render_b2b;
use storegate::provisioning::scim::ScimService;
use storegate::provisioning::scim::store::Kind;
use storegate::secret::Secret;

use crate::support::provisioning::{fast, move_to_new_group, scim_with_users, simulator, temp};

/// store1 runs B2B Edition: `buyers` get company 42 as junior buyers; `rules` adds rules, and
/// `provisioning` lines go into `[provisioning]`.
fn b2b_config(sim_base: &str, queue: &std::path::Path, rules: &str, provisioning: &str) -> Config {
    let mut t = String::from(
        "public_url = \"http://127.0.0.1:1\"\nallow_insecure_http = true\n[[idp]]\nid = \"nam\"\nprotocol = \"oidc\"\nissuer = \"http://127.0.0.1:9/x\"\nclient_id = \"c\"\nclient_secret = \"s\"\n",
    );
    t += &format!(
        "[[bigcommerce]]\nid = \"store1\"\nstore_hash = \"store1\"\napi_base = \"{sim_base}\"\naccess_token = \"token-store1\"\nclient_id = \"client-store1\"\nclient_secret = \"secret-store1\"\nb2b_access_token = \"b2b-token-store1\"\nb2b_api_base = \"{sim_base}/api/v3/io\"\n[[store]]\nid = \"store1\"\nname = \"store1\"\nbigcommerce = \"store1\"\nurl = \"{sim_base}/storefront/store1/1\"\n"
    );
    t += "[[rule]]\nname = \"buyers\"\ngroups_any = [\"buyers\"]\nstores = [\"store1\"]\nrole = \"buyer\"\nb2b = { company_id = 42, role = \"junior_buyer\" }\n";
    t += rules;
    t += &format!(
        "[scim]\nenabled = true\nbearer_token = \"0123456789abcdef0123\"\nstore = \"memory\"\n[provisioning]\nqueue = \"file:{}\"\n{provisioning}",
        queue.display()
    );
    config::load_str(&t, "reconcile.toml", &LiteralEnv).unwrap_or_else(|d| panic!("{d}"))
}

fn acme(custom_roles: Vec<u64>) -> SimCompany {
    SimCompany {
        id: 42,
        name: "Acme".into(),
        status: 1,
        customer_group_id: 9,
        custom_roles,
    }
}

/// The step's outcome per email, sorted.
fn kinds(report: &PassReport) -> Vec<(String, B2bChangeKind)> {
    let mut k: Vec<(String, B2bChangeKind)> = report
        .b2b
        .iter()
        .map(|c| (c.email.clone(), c.kind.clone()))
        .collect();
    k.sort_by(|a, b| a.0.cmp(&b.0));
    k
}

fn now() -> storegate::clock::UnixTime {
    storegate::clock::Clock::now(&SystemClock)
}

type AuditEvents = tokio::sync::mpsc::UnboundedReceiver<storegate::audit::AuditEvent>;

async fn b2b_setup(
    rules: &str,
    provisioning: &str,
    custom_roles: Vec<u64>,
) -> (SimHandle, Reconciler, AuditEvents) {
    let (sim, _, r, events) = b2b_setup_with(rules, provisioning, custom_roles, fast()).await;
    (sim, r, events)
}

/// [`b2b_setup`] with its own back-off, also returning the configuration.
async fn b2b_setup_with(
    rules: &str,
    provisioning: &str,
    custom_roles: Vec<u64>,
    backoff: Backoff,
) -> (SimHandle, Arc<Config>, Reconciler, AuditEvents) {
    let (sim, base) = simulator(100_000, 1000).await;
    sim.enable_b2b("store1", "b2b-token-store1", vec![acme(custom_roles)]);
    let dir = temp("b2b");
    let cfg = Arc::new(b2b_config(
        &base,
        &dir.join("queue.json"),
        rules,
        provisioning,
    ));
    let (audit, events) = AuditLog::channel();
    let r = storegate::app::reconciler(cfg.clone(), audit, Arc::new(SystemClock), backoff).unwrap();
    (sim, cfg, r, events)
}

/// One try and one retry per call.
fn one_retry() -> Backoff {
    Backoff {
        give_up_after: 1,
        ..fast()
    }
}

/// Issue 5's cost target: a pass in which nothing changed reads each company once (its record and
/// its users, page by page), not two calls per person.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_pass_over_200_b2b_people_costs_3_b2b_calls() {
    let (sim, r, _events) = b2b_setup("", "", vec![]).await;
    let scim = scim_with_users(200, "buyers").await;
    let first = r
        .pass(&scim.snapshot().await.unwrap(), now())
        .await
        .unwrap();
    assert_eq!(first.b2b.len(), 200);
    assert!(
        first.b2b.iter().all(|c| c.kind == B2bChangeKind::Created),
        "{:?}",
        first.b2b.iter().find(|c| c.kind != B2bChangeKind::Created)
    );
    assert_eq!(sim.company_users("store1").len(), 200);
    // Joiners: company + one (empty) page, then per person user-by-customer + create.
    assert_eq!(sim.b2b_calls("store1"), 2 + 200 * 2);

    let before = sim.b2b_calls("store1");
    let second = r
        .pass(&scim.snapshot().await.unwrap(), now())
        .await
        .unwrap();
    let calls = sim.b2b_calls("store1") - before;
    eprintln!("B2B calls for an unchanged pass over 200 B2B people: {calls}");
    assert!(
        second
            .b2b
            .iter()
            .all(|c| c.kind == B2bChangeKind::Unchanged),
        "{:?}",
        kinds(&second)
    );
    // GET /companies/42, then GET /users?companyId=42 in pages of 100.
    assert_eq!(calls, 3);
}

/// The user with this externalId, as SCIM lists it.
async fn scim_user(scim: &ScimService, external_id: &str) -> serde_json::Value {
    scim.list(Kind::User, &Default::default(), "http://x")
        .await
        .unwrap()
        .resources
        .into_iter()
        .find(|u| u["externalId"] == external_id)
        .unwrap_or_else(|| panic!("user {external_id}"))
}

/// A SCIM mover: `external_id` leaves `buyers` and becomes the only member of a new group.
async fn leave_buyers_for(scim: &ScimService, external_id: &str, group: &str) {
    move_to_new_group(scim, &scim_user(scim, external_id).await, group).await;
}

/// `active: false` for the user with this externalId.
async fn deactivate(scim: &ScimService, external_id: &str) {
    crate::support::provisioning::deactivate(scim, &scim_user(scim, external_id).await).await;
}

type Events = tokio::sync::mpsc::UnboundedReceiver<storegate::audit::AuditEvent>;

/// The `b2b_*` audit events recorded so far: (email, reason, before, after), sorted by email.
fn b2b_events(events: &mut Events) -> Vec<(String, String, Option<Value>, Option<Value>)> {
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
    out.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    out
}

fn user(id: u64, customer_id: u64, company_id: u64, email: &str) -> SimCompanyUser {
    SimCompanyUser {
        id,
        customer_id,
        company_id,
        role: 2,
        company_role_id: None,
        email: email.into(),
    }
}

/// Sorted (email, company) of the store's company users.
fn memberships(sim: &SimHandle) -> Vec<(String, u64)> {
    let mut m: Vec<(String, u64)> = sim
        .company_users("store1")
        .into_iter()
        .map(|u| (u.email, u.company_id))
        .collect();
    m.sort();
    m
}

const PLAIN_RULE: &str = "[[rule]]\nname = \"plain\"\ngroups_any = [\"plain\"]\nstores = [\"store1\"]\nrole = \"plain\"\n";

/// Leavers (`active: false`, SCIM delete) and movers (grant without B2B, no store at all) lose the
/// company user storegate gave them; a customer storegate did not bind, and a bound leaver in a
/// company the policy does not name, keep theirs.
async fn leavers_and_movers_case(deprovision: &str) {
    let (sim, r, mut events) = b2b_setup(
        PLAIN_RULE,
        &format!("deprovision = \"{deprovision}\"\n"),
        vec![],
    )
    .await;
    // guid-5 is already a customer and a user of company 99, which no rule names.
    let c5 = sim
        .add_customer(
            "store1",
            "user00005@corp.example",
            "U5",
            "Test",
            Some(vec![1]),
        )
        .unwrap();
    sim.add_company_user("store1", user(900, c5, 99, "user00005@corp.example"));
    // Someone storegate never bound, in company 42.
    let stranger = sim
        .add_customer(
            "store1",
            "stranger@corp.example",
            "S",
            "Test",
            Some(vec![1]),
        )
        .unwrap();
    sim.add_company_user("store1", user(901, stranger, 42, "stranger@corp.example"));
    let scim = scim_with_users(6, "buyers").await;
    let first = r
        .pass(&scim.snapshot().await.unwrap(), now())
        .await
        .unwrap();
    assert_eq!(
        first
            .b2b
            .iter()
            .filter(|c| c.kind == B2bChangeKind::Created)
            .count(),
        5,
        "{:?}",
        kinds(&first)
    );
    let _ = b2b_events(&mut events);

    deactivate(&scim, "guid-0").await;
    let deleted = scim_user(&scim, "guid-1").await;
    scim.delete(Kind::User, deleted["id"].as_str().unwrap(), None)
        .await
        .unwrap();
    leave_buyers_for(&scim, "guid-2", "plain").await;
    leave_buyers_for(&scim, "guid-3", "nowhere").await;
    deactivate(&scim, "guid-5").await;

    let report = r
        .pass(&scim.snapshot().await.unwrap(), now())
        .await
        .unwrap();
    assert_eq!(report.drain.failed, 0, "{:?}", report.drain);
    assert_eq!(report.b2b_counts(), (4, 0), "4 removed, none failed");
    assert_eq!(
        kinds(&report),
        vec![
            ("user00000@corp.example".into(), B2bChangeKind::Removed),
            ("user00001@corp.example".into(), B2bChangeKind::Removed),
            ("user00002@corp.example".into(), B2bChangeKind::Removed),
            ("user00003@corp.example".into(), B2bChangeKind::Removed),
            ("user00004@corp.example".into(), B2bChangeKind::Unchanged),
        ]
    );
    let detail = |email: &str| {
        report
            .b2b
            .iter()
            .find(|c| c.email == email)
            .map(|c| c.detail.clone())
            .unwrap()
    };
    assert_eq!(
        detail("user00000@corp.example"),
        "leaver (bound to nam:guid-0)"
    );
    assert_eq!(
        detail("user00001@corp.example"),
        "leaver (bound to nam:guid-1)"
    );
    assert_eq!(
        detail("user00002@corp.example"),
        "mover: the grant on this store no longer gives B2B Edition membership (bound to nam:guid-2)"
    );
    assert_eq!(
        detail("user00003@corp.example"),
        "mover: no longer granted a store on this account (bound to nam:guid-3)"
    );
    assert_eq!(
        memberships(&sim),
        vec![
            ("stranger@corp.example".into(), 42),
            ("user00004@corp.example".into(), 42),
            ("user00005@corp.example".into(), 99),
        ]
    );
    let removed = |email: &str| {
        (
            email.to_owned(),
            "b2b_remove".to_owned(),
            Some(json!("junior buyer")),
            None,
        )
    };
    assert_eq!(
        b2b_events(&mut events),
        vec![
            removed("user00000@corp.example"),
            removed("user00001@corp.example"),
            removed("user00002@corp.example"),
            removed("user00003@corp.example"),
        ]
    );

    // Nothing left to do: the next pass changes and audits nothing.
    let again = r
        .pass(&scim.snapshot().await.unwrap(), now())
        .await
        .unwrap();
    assert_eq!(
        kinds(&again),
        vec![("user00004@corp.example".into(), B2bChangeKind::Unchanged)]
    );
    assert_eq!(b2b_events(&mut events), vec![]);
    assert_eq!(memberships(&sim).len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leavers_and_movers_lose_their_company_user_when_deprovisioning_restricts() {
    leavers_and_movers_case("restrict").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leavers_and_movers_lose_their_company_user_when_deprovisioning_deletes() {
    leavers_and_movers_case("delete").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_b2b_429_is_waited_out_within_the_pass() {
    let (sim, r, mut events) = b2b_setup("", "", vec![]).await;
    // The client reads the wait from Retry-After (seconds).
    sim.fail_next_b2b("store1", 1, StatusCode::TOO_MANY_REQUESTS, Some(7));
    let api = HttpB2bApi::new(
        &r.config.bigcommerce[0].b2b.as_ref().unwrap().api_base,
        "store1",
        Secret::new("b2b-token-store1"),
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(
        api.company(42).await,
        Err(ApiError::RateLimited {
            retry_after_ms: 7000
        })
    );

    let scim = scim_with_users(3, "buyers").await;
    // Retry-After 1 s; the test backoff caps every wait at 100 ms.
    sim.fail_next_b2b("store1", 3, StatusCode::TOO_MANY_REQUESTS, Some(1));
    let before = sim.b2b_calls("store1");
    let report = r
        .pass(&scim.snapshot().await.unwrap(), now())
        .await
        .unwrap();
    assert_eq!(
        kinds(&report),
        vec![
            ("user00000@corp.example".into(), B2bChangeKind::Created),
            ("user00001@corp.example".into(), B2bChangeKind::Created),
            ("user00002@corp.example".into(), B2bChangeKind::Created),
        ]
    );
    // 3 refused + company + one page + 3 x (user by customer + create).
    assert_eq!(sim.b2b_calls("store1") - before, 11);
    assert_eq!(memberships(&sim).len(), 3);
    let reasons: Vec<String> = b2b_events(&mut events).into_iter().map(|e| e.1).collect();
    assert_eq!(reasons, vec!["b2b_create"; 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_b2b_call_that_keeps_failing_is_reported_per_person_and_the_next_pass_repairs_it() {
    let (sim, _, r, mut events) = b2b_setup_with("", "", vec![], one_retry()).await;
    let scim = scim_with_users(2, "buyers").await;
    // Reading company 42 fails twice: the try and its one retry.
    sim.fail_next_b2b("store1", 2, StatusCode::SERVICE_UNAVAILABLE, None);
    let report = r
        .pass(&scim.snapshot().await.unwrap(), now())
        .await
        .unwrap();
    assert_eq!(report.drain.done, 2, "the customers were created");
    assert_eq!(report.b2b_counts(), (0, 2));
    assert_eq!(sim.b2b_calls("store1"), 2);
    assert_eq!(
        kinds(&report),
        vec![
            ("user00000@corp.example".into(), B2bChangeKind::Failed),
            ("user00001@corp.example".into(), B2bChangeKind::Failed),
        ]
    );
    assert_eq!(
        report.b2b[0].detail,
        "B2B Edition: BigCommerce failed on its side (503): B2B Edition: injected failure; retried next pass"
    );
    let reasons: Vec<String> = b2b_events(&mut events).into_iter().map(|e| e.1).collect();
    assert_eq!(reasons, vec!["b2b_failed"; 2]);
    assert_eq!(memberships(&sim), vec![]);

    let report = r
        .pass(&scim.snapshot().await.unwrap(), now())
        .await
        .unwrap();
    assert_eq!(
        kinds(&report),
        vec![
            ("user00000@corp.example".into(), B2bChangeKind::Created),
            ("user00001@corp.example".into(), B2bChangeKind::Created),
        ]
    );
    assert_eq!(memberships(&sim).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_customer_lookup_fails_only_its_people_in_the_b2b_step() {
    let (sim, cfg, r, mut events) = b2b_setup_with("", "", vec![], one_retry()).await;
    let scim = scim_with_users(2, "buyers").await;
    let data = scim.snapshot().await.unwrap();
    r.pass(&data, now()).await.unwrap();
    let _ = b2b_events(&mut events);

    // The one lookup (both emails) fails on the try and its one retry.
    sim.fail_next(2, StatusCode::INTERNAL_SERVER_ERROR);
    let desired = desired_state(&cfg, &data, now());
    let b2b_before = sim.b2b_calls("store1");
    let changes = r.b2b_step(&desired, &[], "run-1", now(), true).await;
    assert_eq!(changes.len(), 2);
    for c in &changes {
        assert_eq!(c.kind, B2bChangeKind::Failed);
        assert_eq!(
            c.detail,
            "BigCommerce customer lookup failed (BigCommerce failed on its side (500): HTTP 500 Internal Server Error); retried next pass"
        );
    }
    assert_eq!(
        sim.b2b_calls("store1") - b2b_before,
        2,
        "company + one page"
    );
    let reasons: Vec<String> = b2b_events(&mut events).into_iter().map(|e| e.1).collect();
    assert_eq!(reasons, vec!["b2b_failed"; 2]);
    assert_eq!(memberships(&sim).len(), 2, "nobody removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dry_run_prints_the_b2b_changes_and_makes_none() {
    let seniors = "[[rule]]\nname = \"seniors\"\ngroups_any = [\"seniors\"]\nstores = [\"store1\"]\nrole = \"senior\"\nb2b = { company_id = 42, role = \"senior_buyer\" }\n";
    let (sim, r, mut events) = b2b_setup(seniors, "", vec![]).await;
    let scim = scim_with_users(3, "buyers").await;
    let lines = |out: String| {
        let mut l: Vec<String> = out.lines().map(str::to_owned).collect();
        l.sort();
        l
    };
    let preview = r
        .preview_b2b(&scim.snapshot().await.unwrap(), now())
        .await
        .unwrap();
    assert_eq!(
        lines(render_b2b(&preview)),
        (0..3)
            .map(|i| format!("b2b-add  store1     user0000{i}@corp.example company 42 role - -> junior buyer: once the plan has created the customer"))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        sim.b2b_calls("store1"),
        2,
        "reads only: company 42 and one page"
    );
    assert_eq!(memberships(&sim), vec![]);
    r.pass(&scim.snapshot().await.unwrap(), now())
        .await
        .unwrap();
    let _ = b2b_events(&mut events);

    deactivate(&scim, "guid-0").await;
    move_to_new_group(&scim, &scim_user(&scim, "guid-1").await, "seniors").await;
    let before = memberships(&sim);
    let roles = sim.company_users("store1");
    let preview = r
        .preview_b2b(&scim.snapshot().await.unwrap(), now())
        .await
        .unwrap();
    assert_eq!(
        lines(render_b2b(&preview)),
        vec![
            "b2b-rm   store1     user00000@corp.example company 42 role junior buyer -> -: leaver (bound to nam:guid-0)".to_owned(),
            "b2b-role store1     user00001@corp.example company 42 role junior buyer -> senior buyer".to_owned(),
        ]
    );
    assert_eq!(memberships(&sim), before);
    assert_eq!(sim.company_users("store1"), roles, "no role changed");
    assert_eq!(b2b_events(&mut events), vec![], "a dry run audits nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_company_role_is_given_kept_and_changed_by_the_reconciler() {
    let custom = "[[rule]]\nname = \"custom\"\ngroups_any = [\"custom\"]\nstores = [\"store1\"]\nrole = \"custom\"\nb2b = { company_id = 42, company_role_id = 77 }\n";
    let (sim, r, mut events) = b2b_setup(custom, "", vec![77]).await;
    let scim = scim_with_users(2, "custom").await;
    let report = r
        .pass(&scim.snapshot().await.unwrap(), now())
        .await
        .unwrap();
    assert_eq!(
        kinds(&report),
        vec![
            ("user00000@corp.example".into(), B2bChangeKind::Created),
            ("user00001@corp.example".into(), B2bChangeKind::Created),
        ]
    );
    let roles = |sim: &SimHandle| {
        let mut r: Vec<(String, u8, Option<u64>)> = sim
            .company_users("store1")
            .into_iter()
            .map(|u| (u.email, u.role, u.company_role_id))
            .collect();
        r.sort();
        r
    };
    assert_eq!(
        roles(&sim),
        vec![
            ("user00000@corp.example".into(), 2, Some(77)),
            ("user00001@corp.example".into(), 2, Some(77)),
        ]
    );
    let created = |email: &str| {
        (
            email.to_owned(),
            "b2b_create".to_owned(),
            None,
            Some(json!("custom role #77")),
        )
    };
    assert_eq!(
        b2b_events(&mut events),
        vec![
            created("user00000@corp.example"),
            created("user00001@corp.example")
        ]
    );

    // Kept: the listed companyRoleId matches.
    let report = r
        .pass(&scim.snapshot().await.unwrap(), now())
        .await
        .unwrap();
    assert!(
        report
            .b2b
            .iter()
            .all(|c| c.kind == B2bChangeKind::Unchanged)
    );
    // Changed: user00001 moves to the junior buyers.
    move_to_new_group(&scim, &scim_user(&scim, "guid-1").await, "buyers").await;
    let report = r
        .pass(&scim.snapshot().await.unwrap(), now())
        .await
        .unwrap();
    assert_eq!(
        kinds(&report),
        vec![
            ("user00000@corp.example".into(), B2bChangeKind::Unchanged),
            ("user00001@corp.example".into(), B2bChangeKind::RoleChanged),
        ]
    );
    assert_eq!(
        roles(&sim),
        vec![
            ("user00000@corp.example".into(), 2, Some(77)),
            ("user00001@corp.example".into(), 2, None),
        ]
    );
    assert_eq!(
        b2b_events(&mut events),
        vec![(
            "user00001@corp.example".into(),
            "b2b_role".into(),
            Some(json!("custom role #77")),
            Some(json!("junior buyer"))
        )]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_bound_to_another_subject_is_never_made_a_buyer() {
    let (sim, r, mut events) = b2b_setup("", "", vec![]).await;
    let theirs = sim
        .add_customer(
            "store1",
            "user00000@corp.example",
            "U0",
            "Test",
            Some(vec![1]),
        )
        .unwrap();
    sim.set_attribute_value("store1", theirs, "storegate_subject", "nam:someone-else");
    let scim = scim_with_users(2, "buyers").await;
    let report = r
        .pass(&scim.snapshot().await.unwrap(), now())
        .await
        .unwrap();
    assert_eq!(
        kinds(&report),
        vec![
            ("user00000@corp.example".into(), B2bChangeKind::Conflict),
            ("user00001@corp.example".into(), B2bChangeKind::Created),
        ]
    );
    let conflict = report
        .b2b
        .iter()
        .find(|c| c.kind == B2bChangeKind::Conflict)
        .unwrap();
    assert_eq!(
        conflict.detail,
        format!(
            "customer {theirs} has this email but is bound to nam:someone-else, not nam:guid-0; left alone: an administrator must fix the company membership in B2B Edition"
        )
    );
    assert_eq!(
        memberships(&sim),
        vec![("user00001@corp.example".into(), 42)]
    );
    assert_eq!(
        b2b_events(&mut events),
        vec![
            (
                "user00000@corp.example".into(),
                "b2b_conflict".into(),
                None,
                Some(json!("junior buyer"))
            ),
            (
                "user00001@corp.example".into(),
                "b2b_create".into(),
                None,
                Some(json!("junior buyer"))
            ),
        ]
    );
}

/// guid-1 vanishes from SCIM without a tombstone: its customer is `not_desired` drift, and its
/// company user goes only with `repair_drift = true`.
async fn unknown_subject_case(repair: bool) -> (Vec<(String, B2bChangeKind)>, Vec<(String, u64)>) {
    let (sim, r, _events) = b2b_setup("", &format!("repair_drift = {repair}\n"), vec![]).await;
    let scim = scim_with_users(2, "buyers").await;
    r.pass(&scim.snapshot().await.unwrap(), now())
        .await
        .unwrap();
    let without_guid_1 = scim_with_users(1, "buyers").await;
    let report = r
        .pass(&without_guid_1.snapshot().await.unwrap(), now())
        .await
        .unwrap();
    assert_eq!(report.drift.len(), 1, "{:?}", report.drift);
    assert_eq!(report.drift[0].email, "user00001@corp.example");
    if repair {
        let removed = report
            .b2b
            .iter()
            .find(|c| c.kind == B2bChangeKind::Removed)
            .unwrap();
        assert_eq!(
            removed.detail,
            "not in the desired state (repair_drift) (bound to nam:guid-1)"
        );
    }
    (kinds(&report), memberships(&sim))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_scim_forgot_keeps_its_company_user_without_repair_drift() {
    assert_eq!(
        unknown_subject_case(false).await,
        (
            vec![("user00000@corp.example".into(), B2bChangeKind::Unchanged)],
            vec![
                ("user00000@corp.example".into(), 42),
                ("user00001@corp.example".into(), 42)
            ]
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_scim_forgot_loses_its_company_user_with_repair_drift() {
    assert_eq!(
        unknown_subject_case(true).await,
        (
            vec![
                ("user00000@corp.example".into(), B2bChangeKind::Unchanged),
                ("user00001@corp.example".into(), B2bChangeKind::Removed)
            ],
            vec![("user00000@corp.example".into(), 42)]
        )
    );
}
