//! BigCommerce webhooks (issue 13), end to end: `webhooks sync` registers the hooks on the
//! simulator, the simulator delivers them to the gateway, and the gateway tells its own changes
//! from changes made in the control panel.

use std::time::Duration;

use serde_json::json;
use storegate::audit::{AuditEvent, EventKind, Outcome};
use storegate::bigcommerce::webhooks::sync::{self, Step};

use crate::harness::{Gateway, IDP, MAIN_HASH, Opts, Reserved};
use crate::support::browser::Browser;
use crate::support::postgres::PostgresServer;
use crate::support::rogue_op::RogueOp;
use crate::support::wait;

const CLIENT: &str = "storegate";
const SECRET: &str = "webhooks-client-secret-0123456789";
const HOOK_SECRET: &str = "hook-secret-0123456789abcdefghij";
const WITHIN: Duration = Duration::from_secs(20);

async fn gateway() -> (RogueOp, Gateway) {
    gateway_with("").await
}

/// [`gateway`] with `extra_toml` (e.g. an `[audit]` table) appended to its configuration.
async fn gateway_with(extra_toml: &str) -> (RogueOp, Gateway) {
    let op = RogueOp::start(CLIENT, SECRET).await;
    op.set_claims(json!({"email": "lee@corp.example", "email_verified": true, "given_name": "Lee", "family_name": "Tester", "groups": ["bc-merchandisers"]}));
    let mut opts = Opts::new(&op.issuer, CLIENT, SECRET);
    opts.bigcommerce_extra = format!("webhook_secret = \"{HOOK_SECRET}\"");
    opts.extra_toml = extra_toml.to_owned();
    let gw = Gateway::start(Reserved::new().await, opts).await;
    // The test gateway listens on plain-http loopback; BigCommerce itself takes https:443 only.
    gw.sim.dangerously_allow_loopback_http_hook_destinations();
    (op, gw)
}

/// Registers the hooks the way `storegate webhooks sync` does; returns its steps for `main`.
async fn sync_hooks(gw: &Gateway) -> Vec<Step> {
    let reports = sync::run(&gw.config()).await;
    assert_eq!(reports.len(), 1, "only `main` has a webhook secret");
    assert_eq!(reports[0].error, None, "{}", sync::render(&reports));
    reports[0].steps.clone()
}

async fn metric(gw: &Gateway, result: &str) -> u64 {
    let text = reqwest::get(gw.url("/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body");
    let prefix = format!("storegate_webhooks_total{{account=\"main\",result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().parse().expect("a counter"))
        .unwrap_or(0)
}

fn external_changes(gw: &Gateway) -> Vec<AuditEvent> {
    gw.audit_now()
        .into_iter()
        .filter(|e| e.event == EventKind::ExternalChange)
        .collect()
}

fn delivery(customer_id: u64, scope: &str) -> serde_json::Value {
    json!({
        "scope": scope,
        "store_id": "1000001",
        "data": {"type": "customer", "id": customer_id},
        "hash": "3f1c0b",
        "created_at": 1_764_000_000,
        "producer": format!("stores/{MAIN_HASH}"),
    })
}

async fn post(
    gw: &Gateway,
    account: &str,
    secret: Option<&str>,
    body: &serde_json::Value,
) -> (u16, String) {
    let mut req = reqwest::Client::new()
        .post(gw.url(&format!("/webhooks/bigcommerce/{account}")))
        .json(body);
    if let Some(s) = secret {
        req = req.header("X-Storegate-Hook-Secret", s);
    }
    let resp = req.send().await.expect("POST webhook");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

#[tokio::test]
async fn a_delivery_with_a_missing_or_wrong_secret_is_refused_with_401_and_audited() {
    let (_op, gw) = gateway().await;
    let id = gw
        .sim
        .add_customer(MAIN_HASH, "someone@corp.example", "Some", "One", None)
        .expect("customer");
    let body = delivery(id, "store/customer/updated");

    let cases = [
        (None, "webhook_secret_missing"),
        (
            Some("hook-secret-0123456789abcdefghiX"),
            "webhook_secret_invalid",
        ),
        (Some(""), "webhook_secret_invalid"),
    ];
    for (secret, reason) in cases {
        let (status, text) = post(&gw, "main", secret, &body).await;
        assert_eq!(status, 401, "{secret:?}: {text}");
        assert_eq!(text.trim(), reason);
        let refusals: Vec<AuditEvent> = gw
            .audit_now()
            .into_iter()
            .filter(|e| e.event == EventKind::Webhook && e.reason.as_deref() == Some(reason))
            .collect();
        assert!(!refusals.is_empty(), "{reason} audited");
        assert!(
            refusals
                .iter()
                .all(|e| e.outcome == Outcome::Deny && e.store.as_deref() == Some("main"))
        );
    }
    assert_eq!(metric(&gw, "refused").await, 3);
    // An account without a webhook secret has no receiver at all.
    let (status, _) = post(&gw, "outlet", Some(HOOK_SECRET), &body).await;
    assert_eq!(status, 404);
    // A delivery claiming another store is refused even with the secret.
    let mut other = body.clone();
    other["producer"] = json!("stores/somebodyelse");
    let (status, text) = post(&gw, "main", Some(HOOK_SECRET), &other).await;
    assert_eq!((status, text.trim()), (400, "webhook_wrong_store"));
    // None of these became an external change; a right one does (so the check above can fail).
    assert!(external_changes(&gw).is_empty());
    let (status, _) = post(&gw, "main", Some(HOOK_SECRET), &body).await;
    assert_eq!(status, 200);
    wait::until("the external change", WITHIN, || async {
        external_changes(&gw).len() == 1
    })
    .await;
}

#[tokio::test]
async fn a_retried_delivery_is_deduplicated_into_one_external_change() {
    let (_op, gw) = gateway().await;
    let id = gw
        .sim
        .add_customer(MAIN_HASH, "someone@corp.example", "Some", "One", None)
        .expect("customer");
    let body = delivery(id, "store/customer/updated");
    let (first, text) = post(&gw, "main", Some(HOOK_SECRET), &body).await;
    assert_eq!((first, text.trim()), (200, "accepted"));
    // BigCommerce retries the same body (for 48 hours) when it did not see our 200.
    for _ in 0..3 {
        let (again, text) = post(&gw, "main", Some(HOOK_SECRET), &body).await;
        assert_eq!((again, text.trim()), (200, "duplicate"));
    }
    wait::until("the external change", WITHIN, || async {
        metric(&gw, "external").await == 1
    })
    .await;
    assert_eq!(metric(&gw, "duplicate").await, 3);
    let events = external_changes(&gw);
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0].customer_id, Some(id));
    assert_eq!(events[0].email.as_deref(), Some("someone@corp.example"));
    assert_eq!(events[0].reason.as_deref(), Some("customer_updated"));
    // A retry after the event was recorded is still a duplicate.
    let (again, text) = post(&gw, "main", Some(HOOK_SECRET), &body).await;
    assert_eq!((again, text.trim()), (200, "duplicate"));
}

/// The "done when" of issue 13: the gateway's own change (a launch creating and binding the
/// customer) produces no `external_change`; an edit made directly in the control panel produces
/// exactly one, naming the customer's bound subject, even though BigCommerce sends two hooks
/// for it (`updated` and `channel/login/access/updated`).
#[tokio::test]
async fn an_edit_in_the_control_panel_is_exactly_one_external_change_and_our_own_changes_none() {
    let (_op, gw) = gateway().await;
    let steps = sync_hooks(&gw).await;
    assert_eq!(
        steps,
        vec![
            Step::Create {
                scope: "store/customer/*".into()
            },
            Step::Create {
                scope: "store/company/user/*".into()
            }
        ]
    );
    let hooks = gw.sim.hooks(MAIN_HASH);
    assert_eq!(hooks.len(), 2);
    assert!(hooks.iter().all(|h| h.is_active
        && h.destination == gw.url("/webhooks/bigcommerce/main")
        && h.headers.get("X-Storegate-Hook-Secret").map(String::as_str) == Some(HOOK_SECRET)));

    // Our own change: a launch creates the customer (with its bound subject).
    let b = Browser::new();
    let start = b.get(&gw.url("/login")).await;
    let done = b.follow_while(start, |u| u.path() != "/").await;
    assert_eq!(done.status(), 303, "signed in: {}", b.hops_text());
    let launch = b.get(&gw.url("/stores/us/launch")).await;
    assert_eq!(launch.status(), 302, "{}", b.hops_text());
    let customer = gw
        .sim
        .customers(MAIN_HASH)
        .into_iter()
        .find(|c| c.email == "lee@corp.example")
        .expect("the launch created the customer");
    wait::until(
        "BigCommerce's hook about our own change",
        WITHIN,
        || async { metric(&gw, "own").await >= 1 },
    )
    .await;
    assert!(
        external_changes(&gw).is_empty(),
        "{:#?}",
        external_changes(&gw)
    );

    // Two minutes later on the store's clock, staff edit the customer in the control panel:
    // two hooks, one change.
    gw.sim.set_clock_offset(120);
    assert!(
        gw.sim
            .edit_customer_in_control_panel(MAIN_HASH, customer.id, |c| {
                c.last_name = "Edited-By-Staff".into();
                c.channel_ids = Some(vec![1]);
            })
    );
    let settled = tokio::time::timeout(WITHIN, async {
        while !(metric(&gw, "external").await == 1 && metric(&gw, "coalesced").await == 1) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    if settled.is_err() {
        let text = reqwest::get(gw.url("/metrics"))
            .await
            .expect("m")
            .text()
            .await
            .expect("t");
        let lines: Vec<&str> = text.lines().filter(|l| l.contains("webhooks")).collect();
        panic!(
            "no single external change: {lines:#?}\n{:#?}\n{:#?}",
            gw.sim.hook_deliveries(),
            gw.audit_now()
        );
    }
    let events = external_changes(&gw);
    assert_eq!(events.len(), 1, "{events:#?}");
    let ev = &events[0];
    assert_eq!(ev.outcome, Outcome::Allow);
    assert_eq!(ev.customer_id, Some(customer.id));
    assert_eq!(ev.store.as_deref(), Some("main"));
    assert!(
        ev.subject
            .as_deref()
            .is_some_and(|s| s.starts_with(&format!("{IDP}:"))),
        "{ev:#?}"
    );
    assert_eq!(ev.email.as_deref(), Some("lee@corp.example"));
    assert_eq!(
        ev.after.as_ref().and_then(|a| a["last_name"].as_str()),
        Some("Edited-By-Staff")
    );
    let deliveries = gw.sim.hook_deliveries();
    assert!(
        deliveries.iter().all(|d| d.status == Some(200)),
        "{deliveries:#?}"
    );
}

#[tokio::test]
async fn sync_is_idempotent_reenables_a_deactivated_hook_and_removes_stale_ones() {
    let (_op, gw) = gateway().await;
    sync_hooks(&gw).await;
    let again = sync_hooks(&gw).await;
    assert!(
        again.iter().all(|s| matches!(s, Step::Keep { .. })),
        "{again:?}"
    );

    // BigCommerce gave up on one of ours; another app has its own hook; a stale one of ours.
    let ours = gw.sim.hooks(MAIN_HASH);
    let customer_hook = ours
        .iter()
        .find(|h| h.scope == "store/customer/*")
        .expect("hook");
    gw.sim.set_hook_active(MAIN_HASH, customer_hook.id, false);
    let client = reqwest::Client::new();
    let token = format!("token-{MAIN_HASH}");
    for (scope, dest) in [
        ("store/company/*", gw.url("/webhooks/bigcommerce/main")),
        (
            "store/customer/*",
            "https://other-app.example/hooks".to_owned(),
        ),
    ] {
        let r = client
            .post(format!("{}/stores/{MAIN_HASH}/v3/hooks", gw.sim_base))
            .header("X-Auth-Token", &token)
            .json(&json!({"scope": scope, "destination": dest, "is_active": true}))
            .send()
            .await
            .expect("create hook");
        assert_eq!(r.status(), 200);
    }

    // Readiness warns (and stays ready), and the gauge shows it.
    let ready = reqwest::get(gw.url("/readyz")).await.expect("readyz");
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.expect("json");
    let warning = body["checks"]["webhooks:main"]["warning"]
        .as_str()
        .unwrap_or("");
    assert!(
        warning.contains("store/customer/*") && warning.contains("webhooks sync"),
        "{body}"
    );
    let text = reqwest::get(gw.url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        text.contains("storegate_webhooks_inactive{account=\"main\"} 1"),
        "{text}"
    );

    let steps = sync_hooks(&gw).await;
    assert!(
        steps.contains(&Step::Repair {
            id: customer_hook.id,
            scope: "store/customer/*".into(),
            reactivate: true
        }),
        "{steps:?}"
    );
    assert!(
        steps
            .iter()
            .any(|s| matches!(s, Step::Delete { scope, .. } if scope == "store/company/*")),
        "{steps:?}"
    );
    let after = gw.sim.hooks(MAIN_HASH);
    assert_eq!(after.len(), 3, "ours (2) and the other app's: {after:#?}");
    assert!(after.iter().all(|h| h.is_active));
    assert!(
        after
            .iter()
            .any(|h| h.destination == "https://other-app.example/hooks")
    );
}

/// With `repair_drift`, the receiver wakes the reconcile schedule: a pass runs long before its
/// interval (an hour here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wake_runs_a_reconcile_pass_before_the_interval() {
    use std::sync::Arc;
    use storegate::flows::provision::spawn_schedule;
    let (_sim, base) = crate::support::provisioning::simulator(1000, 1000).await;
    let dir = crate::support::provisioning::temp("hook-wake");
    let cfg = crate::support::provisioning::config_text(
        &base,
        &format!(
            "queue = \"file:{}\"\nrepair_drift = true\n",
            dir.join("q.json").display()
        ),
        "",
    );
    let scim = Arc::new(crate::support::provisioning::scim_with_users(1, "staff").await);
    let (audit, mut rx) = storegate::audit::AuditLog::channel();
    let r = Arc::new(
        storegate::app::reconciler(
            Arc::new(cfg),
            audit,
            Arc::new(storegate::clock::SystemClock),
            crate::support::provisioning::fast(),
        )
        .expect("reconciler"),
    );
    let wake = Arc::new(tokio::sync::Notify::new());
    let task = spawn_schedule(r, scim, Duration::from_secs(3600), Some(wake.clone()));
    wake.notify_one();
    let mut ran = false;
    wait::until("a woken reconcile pass", WITHIN, || {
        while let Ok(ev) = rx.try_recv() {
            ran |= ev.event == EventKind::Reconcile && ev.outcome == Outcome::Allow;
        }
        let done = ran;
        async move { done }
    })
    .await;
    task.abort();
}

/// The reconciler's writes are recorded as our own: an event BigCommerce stamps at the time of
/// the write is ours, one stamped two minutes later is not.
#[tokio::test]
async fn the_reconcilers_writes_are_recorded_as_own_changes() {
    use std::sync::Arc;
    use storegate::app::{ClientLayers, customer_client};
    use storegate::bigcommerce::metered::Caller;
    use storegate::bigcommerce::webhooks::{OwnChanges, Subject};
    let (sim, base) = crate::support::provisioning::simulator(1000, 1000).await;
    let cfg = crate::support::provisioning::config_text(&base, "", "");
    let account = &cfg.bigcommerce[0];
    let id = sim
        .add_customer(&account.store_hash, "r@corp.example", "R", "One", None)
        .expect("customer");
    let clock = storegate::clock::ManualClock::at(1_800_000_000);
    let own = OwnChanges::new(
        storegate::session::one_time::OneTimeStore::memory(),
        Arc::new(clock.clone()),
    );
    let client =
        customer_client(account, Caller::Reconciler, &ClientLayers::default()).expect("client");
    let subject = Subject::Customer { id, deleted: false };
    // Without the record the write is not ours.
    let (r, _) = client
        .update(&[json!({"id": id, "last_name": "Two"})])
        .await;
    r.expect("update");
    assert!(
        !own.is_own(&account.store_hash, &subject, 1_800_000_000)
            .await
            .unwrap()
    );
    // The reconciler's client as the gateway builds it: with the recording layer.
    let layers = ClientLayers {
        own: Some(own.clone()),
        latency: None,
    };
    let client = customer_client(account, Caller::Reconciler, &layers).expect("client");
    // As the executor runs a batch: inside the pass's correlation scope, which the record keeps.
    let (r, _) = storegate::audit::correlation::scope(
        "reconcile-r7".to_owned(),
        client.update(&[json!({"id": id, "last_name": "Three"})]),
    )
    .await;
    r.expect("update");
    let write = own
        .own_write(&account.store_hash, &subject, 1_800_000_000)
        .await
        .unwrap()
        .expect("the write is recorded");
    assert_eq!(write.request_id.as_deref(), Some("reconcile-r7"));
    assert!(
        own.is_own(&account.store_hash, &subject, 1_800_000_000)
            .await
            .unwrap()
    );
    assert!(
        !own.is_own(&account.store_hash, &subject, 1_800_000_120)
            .await
            .unwrap()
    );
}

/// `storegate webhooks sync -c FILE`, the binary: creates the hooks, then reports them as in
/// place; the secret never appears in its output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhooks_sync_command_registers_the_hooks_once() {
    let (op, gw) = gateway().await;
    let mut opts = Opts::new(&op.issuer, CLIENT, SECRET);
    opts.bigcommerce_extra = format!("webhook_secret = \"{HOOK_SECRET}\"");
    let dir = crate::cli::TempDir::new("webhooks-sync");
    let path = dir.write(
        "storegate.toml",
        &crate::harness::config_text(&gw.base, &gw.sim_base, &opts),
    );
    let run = || async {
        tokio::process::Command::new(crate::cli::BIN)
            .args(["webhooks", "sync", "-c"])
            .arg(&path)
            .output()
            .await
            .expect("run storegate webhooks sync")
    };
    let first = run().await;
    let out = String::from_utf8_lossy(&first.stdout).to_string();
    assert!(
        first.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(out.contains("created   store/customer/*"), "{out}");
    assert!(out.contains("created   store/company/user/*"), "{out}");
    assert!(!out.contains(HOOK_SECRET));
    let second = run().await;
    let out = String::from_utf8_lossy(&second.stdout).to_string();
    assert!(second.status.success(), "{out}");
    assert_eq!(out.matches("  ok ").count(), 2, "{out}");
    assert_eq!(gw.sim.hooks(MAIN_HASH).len(), 2);
}

/// Signs Lee in and launches the `us` store, which creates Lee's customer on `main`; returns it.
async fn launch_creating_the_customer(gw: &Gateway) -> storegate::bigcommerce::sim::SimCustomer {
    let b = Browser::new();
    let start = b.get(&gw.url("/login")).await;
    let done = b.follow_while(start, |u| u.path() != "/").await;
    assert_eq!(done.status(), 303, "signed in: {}", b.hops_text());
    let launch = b.get(&gw.url("/stores/us/launch")).await;
    assert_eq!(launch.status(), 302, "{}", b.hops_text());
    gw.sim
        .customers(MAIN_HASH)
        .into_iter()
        .find(|c| c.email == "lee@corp.example")
        .expect("the launch created the customer")
}

/// The trail file's events, as JSON.
fn trail(file: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// docs/audit.md, "Correlation": a launch, the customer changes it made and the webhooks that
/// echo them, in one query over the central table (every replica's events).
const JOIN_QUERY: &str = "\
SELECT l.line::jsonb->>'request_id', l.line::jsonb->>'idp', l.line::jsonb->>'subject', \
       l.line::jsonb->>'store', c.line::jsonb->>'reason', c.line::jsonb->>'customer_id', \
       e.line::jsonb->>'reason', e.line::jsonb->>'subject' \
FROM audit_events l \
JOIN audit_events c ON c.event = 'provision' \
 AND c.line::jsonb->>'request_id' = l.line::jsonb->>'request_id' \
JOIN audit_events e ON e.event = 'webhook_echo' \
 AND e.line::jsonb->>'request_id' = l.line::jsonb->>'request_id' \
 AND e.line::jsonb->>'customer_id' = c.line::jsonb->>'customer_id' \
WHERE l.event = 'launch' AND l.line::jsonb->>'outcome' = 'allow' \
ORDER BY l.time";

/// Issue 13, "correlation ids end to end": the launch that creates a customer, the customer
/// change it made and the webhook BigCommerce sends about it carry one request id, in the
/// trail file and in the PostgreSQL table, where one query joins the three rows. BigCommerce
/// saw the same id on the create call. A replay of the echo is a duplicate: no second event.
#[tokio::test]
async fn a_launch_its_customer_change_and_the_echoing_webhook_share_one_request_id() {
    let pg = PostgresServer::start();
    let dir = std::env::temp_dir().join(format!("sg-hook-corr-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("audit.jsonl");
    let (_op, gw) = gateway_with(&format!(
        "[audit]\nfile = \"{}\"\npostgres_url = \"{}\"\nwriter_id = \"gw-corr\"\n",
        file.display(),
        pg.url()
    ))
    .await;
    sync_hooks(&gw).await;
    let customer = launch_creating_the_customer(&gw).await;
    // The echo may be recorded before the launch's own event (BigCommerce is quick).
    wait::until("the launch and the echo in the trail", WITHIN, || async {
        let t = trail(&file);
        t.iter().any(|e| e["event"] == "webhook_echo") && t.iter().any(|e| e["event"] == "launch")
    })
    .await;

    let events = trail(&file);
    let launch = events
        .iter()
        .find(|e| e["event"] == "launch" && e["outcome"] == "allow")
        .expect("the launch");
    let rid = launch["request_id"].as_str().expect("request id");
    assert!(!rid.is_empty());
    let joined: Vec<&serde_json::Value> =
        events.iter().filter(|e| e["request_id"] == rid).collect();
    let mut kinds: Vec<(&str, &str)> = joined
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap_or(""),
                e["reason"].as_str().unwrap_or(""),
            )
        })
        .collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        [
            ("launch", ""),
            ("provision", "create"),
            ("webhook_echo", "customer_created")
        ],
        "{joined:#?}"
    );
    assert!(
        joined.iter().all(|e| e["customer_id"] == customer.id),
        "{joined:#?}"
    );
    let bound = format!("{IDP}:{}", launch["subject"].as_str().expect("subject"));
    let of = |kind: &str| {
        joined
            .iter()
            .find(|e| e["event"] == kind)
            .copied()
            .expect("joined above")
    };
    let (change, echo) = (of("provision"), of("webhook_echo"));
    assert_eq!(change["actor"], "launch");
    assert_eq!(change["subject"], launch["subject"]);
    assert_eq!(change["store"], "us");
    assert_eq!(echo["subject"], bound.as_str());
    assert_eq!(echo["store"], "main");
    assert_eq!(echo["outcome"], "allow");
    assert!(
        echo["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("own change confirmed")),
        "{echo:#?}"
    );
    assert!(
        events.iter().all(|e| e["event"] != "external_change"),
        "{events:#?}"
    );
    assert!(
        gw.sim.request_ids(MAIN_HASH).iter().any(|r| r == rid),
        "BigCommerce saw the request id: {:?}",
        gw.sim.request_ids(MAIN_HASH)
    );

    // BigCommerce retries the echo byte for byte: a duplicate, and no second event.
    let sent = gw
        .sim
        .hook_deliveries()
        .into_iter()
        .find(|d| d.scope == "store/customer/created")
        .expect("the simulator's delivery");
    let (status, text) = post(&gw, "main", Some(HOOK_SECRET), &sent.payload).await;
    assert_eq!((status, text.trim()), (200, "duplicate"));
    assert_eq!(metric(&gw, "duplicate").await, 1);
    assert_eq!(metric(&gw, "own").await, 1);

    // The central table: one query joins the three rows.
    let want = format!(
        "{rid}|{IDP}|{}|us|create|{}|customer_created|{bound}",
        launch["subject"].as_str().unwrap_or(""),
        customer.id
    );
    let mut rows = String::new();
    let joined_in_table = tokio::time::timeout(WITHIN, async {
        loop {
            rows = pg.psql("postgres", JOIN_QUERY).unwrap_or_default();
            if !rows.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(joined_in_table.is_ok(), "nothing joined in the table");
    assert_eq!(rows, want);
    // The join's probes can use the request_id index (migration V3): on a table this small the
    // planner would scan anyway, so scans and the other join kinds are switched off to show
    // that the index matches the query's expression.
    let plan = pg
        .psql(
            "postgres",
            &format!(
                "SET enable_seqscan = off; SET enable_hashjoin = off; SET enable_mergejoin = off; EXPLAIN {JOIN_QUERY}"
            ),
        )
        .unwrap_or_else(|e| e);
    assert!(
        plan.contains("audit_events_request_id"),
        "the documented join does not use the request_id index:\n{plan}"
    );
    let echoes = trail(&file)
        .iter()
        .filter(|e| e["event"] == "webhook_echo")
        .count();
    assert_eq!(echoes, 1, "the replay added no event");
}

/// The echo of our own change arriving after its record expired (BigCommerce retrying for
/// hours while the gateway was away) is reported as exactly one `external_change`, a false
/// alarm rather than a missed change; the same echo in time is a `webhook_echo`.
#[tokio::test]
async fn an_echo_whose_own_change_record_expired_is_one_external_change() {
    use storegate::bigcommerce::webhooks::OWN_CHANGE_RECORD_SECS;
    use storegate::clock::Clock;
    // No hooks registered: the test delivers by hand, when it chooses.
    let (_op, gw) = gateway().await;
    let written_at = gw.clock.now();
    let customer = launch_creating_the_customer(&gw).await;
    let launch_rid = gw
        .audit_now()
        .into_iter()
        .find(|e| e.event == EventKind::Launch && e.outcome == Outcome::Allow)
        .map(|e| e.request_id)
        .expect("the launch");
    let at = |scope: &str| {
        let mut d = delivery(customer.id, scope);
        d["created_at"] = json!(written_at);
        d
    };

    // In time: the echo of our change.
    let (status, _) = post(
        &gw,
        "main",
        Some(HOOK_SECRET),
        &at("store/customer/created"),
    )
    .await;
    assert_eq!(status, 200);
    wait::until("the echo", WITHIN, || async {
        metric(&gw, "own").await == 1
    })
    .await;
    let echoes: Vec<AuditEvent> = gw
        .audit_now()
        .into_iter()
        .filter(|e| e.event == EventKind::WebhookEcho)
        .collect();
    assert_eq!(echoes.len(), 1, "{echoes:#?}");
    assert_eq!(echoes[0].request_id, launch_rid);

    // Past the record's lifetime, another delivery about the same write.
    gw.clock.advance(OWN_CHANGE_RECORD_SECS + 1);
    let late = at("store/customer/updated");
    let (status, _) = post(&gw, "main", Some(HOOK_SECRET), &late).await;
    assert_eq!(status, 200);
    wait::until("the external change", WITHIN, || async {
        metric(&gw, "external").await == 1
    })
    .await;
    let events = external_changes(&gw);
    assert_eq!(events.len(), 1, "{events:#?}");
    let ev = &events[0];
    assert_eq!(ev.outcome, Outcome::Allow);
    assert_eq!(ev.reason.as_deref(), Some("customer_updated"));
    assert_eq!(ev.customer_id, Some(customer.id));
    assert_eq!(ev.store.as_deref(), Some("main"));
    assert_eq!(ev.email.as_deref(), Some("lee@corp.example"));
    assert!(
        ev.subject
            .as_deref()
            .is_some_and(|s| s.starts_with(&format!("{IDP}:"))),
        "{ev:#?}"
    );
    assert_ne!(ev.request_id, launch_rid, "no longer joined to the launch");
    assert_eq!(
        ev.target.as_deref(),
        Some(format!("customer {} on main", customer.id).as_str())
    );
    let echoes = gw
        .audit_now()
        .into_iter()
        .filter(|e| e.event == EventKind::WebhookEcho)
        .count();
    assert_eq!(echoes, 1, "the late delivery is no echo");
}
