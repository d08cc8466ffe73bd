//! B2B Edition membership through the reconciler (issue 5), against the simulator: what a pass
//! costs in B2B calls, leavers and movers losing their company user, rate limits and failures
//! inside the B2B step, the dry run, and custom company roles.

use std::sync::Arc;

use storegate::audit::AuditLog;
use storegate::bigcommerce::sim::{SimCompany, SimHandle};
use storegate::clock::SystemClock;
use storegate::config::{self, Config, LiteralEnv};
use storegate::provisioning::b2b_sync::B2bChangeKind;
use storegate::provisioning::run::{PassReport, Reconciler};

use super::reconcile::{fast, scim_with_users, simulator, temp};

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

async fn b2b_setup(
    rules: &str,
    provisioning: &str,
    custom_roles: Vec<u64>,
) -> (
    SimHandle,
    Reconciler,
    tokio::sync::mpsc::UnboundedReceiver<storegate::audit::AuditEvent>,
) {
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
    let r = Reconciler::new(cfg, audit, Arc::new(SystemClock), fast()).unwrap();
    (sim, r, events)
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
