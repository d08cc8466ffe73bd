//! The control-panel commands through the `storegate` binary (issue 12), against the simulated
//! GraphQL Account API with a seeded population whose permissions an administrator set in the
//! control panel (the simulator-only control):
//! - `storegate access-report --control-panel`: the exact rows (csv and json), read through the
//!   reconciler's budget; a spent budget (all of it, or part way through the read) and a refused
//!   token fail with the exact message, exit 1 and nothing on stdout;
//! - `storegate reconcile --dry-run`: only reads (the simulator's call log), and it says what
//!   those reads cost.
//!
//! The population (`store1`, `store2` of account `acme`; policy [`POLICY`]):
//! - ada (`cp-merch`: merchandiser on both): store1 holds Manage_Users and lacks three codes
//!   (flagged drift); store2 holds exactly the set;
//! - bob (`cp-finance`: finance on store2): in store1 without a grant (to remove), in store2
//!   with Manage_Customers and without Refund_Orders (drift);
//! - cat (`cp-merch`): in no store yet (pending additions);
//! - dan (`cp-merch`, then a SCIM leaver): in store1 with Create_Store_API_Tokens (to remove,
//!   flagged);
//! - owner: not in SCIM, the stores' owner with a high-risk permission: unmanaged, not flagged.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Value, json};
use storegate::bigcommerce::sim::{SimAccount, SimConfig, SimHandle, SimStore, Simulator};
use storegate::clock::{Clock, SystemClock, rfc3339};
use storegate::provisioning::scim::ScimService;
use storegate::provisioning::scim::store::{FileStore, Kind};
use tokio::net::TcpListener;

use crate::cli::{BIN, TempDir};
use crate::support::provisioning::{HASHES, config_toml, deactivate};

const UUID: &str = "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b";

/// Permission sets, a template role and an allow rule that grant the control panel: the
/// configuration shape of docs/control-panel.md (shared with the end-to-end test in
/// control_panel.rs).
pub(crate) const POLICY: &str = r#"
[[permission_set]]
name = "merchandiser"
permissions = ["Manage_Products", "Create_Product", "Edit_Products", "Manage_Categories", "Manage_PriceLists"]

[[permission_set]]
name = "finance"
permissions = ["Manage_Orders", "Refund_Orders"]

[[template]]
name = "staff"
[template.roles.merchandiser]
control_panel = "merchandiser"

[[rule]]
name = "cp-merch"
groups_any = ["cp-merch"]
stores = ["store1", "store2"]
role = "merchandiser"
template = "staff"

[[rule]]
name = "cp-finance"
groups_any = ["cp-finance"]
stores = ["store2"]
role = "finance"
control_panel = "finance"
"#;

const MERCH: &[&str] = &[
    "Manage_Products",
    "Create_Product",
    "Edit_Products",
    "Manage_Categories",
    "Manage_PriceLists",
];

struct Setup {
    sim: SimHandle,
    dir: TempDir,
    config: PathBuf,
    budget: PathBuf,
}

/// SCIM people with emails, in a new group `group`; returns the users.
pub(crate) async fn people(scim: &ScimService, group: &str, emails: &[&str]) -> Vec<Value> {
    let mut users = Vec::new();
    for e in emails {
        let (u, _) = scim
            .create(Kind::User, json!({"userName": e, "externalId": format!("guid-{e}"), "emails": [{"value": e, "primary": true}], "name": {"givenName": "G", "familyName": "F"}}), "http://x")
            .await
            .expect("SCIM user");
        users.push(u);
    }
    let members: Vec<Value> = users.iter().map(|u| json!({"value": u["id"]})).collect();
    scim.create(
        Kind::Group,
        json!({"displayName": group, "members": members}),
        "http://x",
    )
    .await
    .expect("SCIM group");
    users
}

/// The simulator (system clock: the binary's), the population, and a configuration file whose
/// SCIM store is a folder both this test and the binary read. `token` is the `[[account]]`
/// token written into the file.
async fn setup(token: &str) -> Setup {
    let stores = HASHES.iter().map(|h| SimStore::single_channel(h)).collect();
    let mut sc = SimConfig::new(stores);
    sc.accounts = vec![SimAccount::new(UUID, &["store1", "store2"])];
    let (router, sim) = Simulator::build(sc);
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", l.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = storegate::server::serve_on(l, router, std::future::pending()).await;
    });

    let dir = TempDir::new("cp-cli");
    let scim_dir = dir.join("scim");
    let scim = ScimService::open(
        Arc::new(FileStore::open(&scim_dir).expect("SCIM folder")),
        Arc::new(SystemClock),
    )
    .await
    .expect("SCIM service");
    people(&scim, "cp-merch", &["ada@corp.example", "cat@corp.example"]).await;
    people(&scim, "cp-finance", &["bob@corp.example"]).await;
    let dan = people(&scim, "cp-merch-2", &["dan@corp.example"]).await;
    deactivate(&scim, &dan[0]).await;

    // The control panel as administrators left it (user ids 1..4 in this order).
    let seed = |email: &str, stores: &[&str], owner: bool| {
        sim.seed_staff(UUID, email, stores, owner).expect("seed");
    };
    seed("owner@corp.example", &["store1", "store2"], true);
    seed("ada@corp.example", &["store1", "store2"], false);
    seed("bob@corp.example", &["store1", "store2"], false);
    seed("dan@corp.example", &["store1"], false);
    let set = |store: &str, email: &str, perms: &[&str]| {
        assert!(sim.set_staff_permissions(UUID, store, email, perms));
    };
    set(
        "store1",
        "owner@corp.example",
        &["Grant_High_Risk_Store_Permissions"],
    );
    set(
        "store1",
        "ada@corp.example",
        &["Manage_Products", "Create_Product", "Manage_Users"],
    );
    set("store2", "ada@corp.example", MERCH);
    set("store1", "bob@corp.example", &["Manage_Orders"]);
    set(
        "store2",
        "bob@corp.example",
        &["Manage_Orders", "Manage_Customers"],
    );
    set("store1", "dan@corp.example", &["Create_Store_API_Tokens"]);

    let queue = dir.join("queue.json");
    let budget = queue.with_file_name("queue.json.account-budget.json");
    let audit = queue.with_file_name("audit.jsonl");
    let text = config_toml(
        &base,
        &format!("file:{}", scim_dir.display()),
        &format!("queue = \"file:{}\"\n", queue.display()),
        &format!(
            "{POLICY}\n[[account]]\nid = \"acme\"\naccount_uuid = \"{UUID}\"\naccess_token = \"{token}\"\napi_base = \"{base}\"\nstores = [\"store1\", \"store2\"]\n\n[audit]\nfile = \"{}\"\n",
            audit.display()
        ),
    );
    let config = dir.write("storegate.toml", &text);
    Setup {
        sim,
        dir,
        config,
        budget,
    }
}

fn good_token() -> String {
    format!("account-token-{UUID}")
}

struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn storegate(args: &[&str], config: &PathBuf) -> Ran {
    let out = tokio::process::Command::new(BIN)
        .args(args)
        .arg("-c")
        .arg(config)
        .env_remove("STOREGATE_CONFIG")
        .env_remove("STOREGATE_LOG")
        .output()
        .await
        .expect("run storegate");
    Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn now() -> i64 {
    SystemClock.now()
}

/// The calls the simulated Account API received, as `operation(args)`.
fn calls(sim: &SimHandle) -> Vec<String> {
    sim.account_calls(UUID)
        .iter()
        .map(|c| c.describe())
        .collect()
}

const READS: [&str; 2] = [
    "account.users(first 500 after -)",
    "account.stores.users(stores 50 after - users 500 after -)",
];

/// The expected CSV, with `{T}` for the time of the read.
const EXPECTED_CSV: &str = "id,kind,flagged,account,store,store_hash,subject,email,user_id,expected_sets,expected,held,missing,excess,high_risk,reason,read_at\r\n\
control_panel:acme:store1:ada@corp.example,drift,true,acme,store1,store1,nam:guid-ada@corp.example,ada@corp.example,bc/account/user/2,merchandiser,Create_Product Edit_Products Manage_Categories Manage_PriceLists Manage_Products,Create_Product Manage_Products Manage_Users,Edit_Products Manage_Categories Manage_PriceLists,Manage_Users,Manage_Users,,{T}\r\n\
control_panel:acme:store1:dan@corp.example,to_remove,true,acme,store1,store1,,dan@corp.example,bc/account/user/4,,,Create_Store_API_Tokens,,Create_Store_API_Tokens,Create_Store_API_Tokens,leaver,{T}\r\n\
control_panel:acme:store1:bob@corp.example,to_remove,false,acme,store1,store1,nam:guid-bob@corp.example,bob@corp.example,bc/account/user/3,,,Manage_Orders,,Manage_Orders,,no_grant,{T}\r\n\
control_panel:acme:store1:cat@corp.example,pending_addition,false,acme,store1,store1,nam:guid-cat@corp.example,cat@corp.example,,merchandiser,Create_Product Edit_Products Manage_Categories Manage_PriceLists Manage_Products,,,,,,{T}\r\n\
control_panel:acme:store1:owner@corp.example,unmanaged,false,acme,store1,store1,,owner@corp.example,bc/account/user/1,,,Grant_High_Risk_Store_Permissions,,,,,{T}\r\n\
control_panel:acme:store2:ada@corp.example,ok,false,acme,store2,store2,nam:guid-ada@corp.example,ada@corp.example,bc/account/user/2,merchandiser,Create_Product Edit_Products Manage_Categories Manage_PriceLists Manage_Products,Create_Product Edit_Products Manage_Categories Manage_PriceLists Manage_Products,,,,,{T}\r\n\
control_panel:acme:store2:bob@corp.example,drift,false,acme,store2,store2,nam:guid-bob@corp.example,bob@corp.example,bc/account/user/3,finance,Manage_Orders Refund_Orders,Manage_Customers Manage_Orders,Refund_Orders,Manage_Customers,,,{T}\r\n\
control_panel:acme:store2:cat@corp.example,pending_addition,false,acme,store2,store2,nam:guid-cat@corp.example,cat@corp.example,,merchandiser,Create_Product Edit_Products Manage_Categories Manage_PriceLists Manage_Products,,,,,,{T}\r\n\
control_panel:acme:store2:owner@corp.example,unmanaged,false,acme,store2,store2,,owner@corp.example,bc/account/user/1,,,,,,,,{T}\r\n";

/// The one read time every row carries, checked to lie within the run.
fn read_at(rows_text: &str, before: i64, after: i64) -> String {
    let t = rows_text
        .lines()
        .nth(1)
        .and_then(|l| l.rsplit(',').next())
        .expect("a row")
        .to_owned();
    let at = time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339)
        .expect("read_at is RFC 3339")
        .unix_timestamp();
    assert!((before..=after).contains(&at), "{t} not within the run");
    t
}

#[tokio::test]
async fn the_control_panel_report_lists_every_person_and_store_high_risk_first() {
    let s = setup(&good_token()).await;
    let before = now();
    let csv = storegate(
        &["access-report", "--control-panel", "--format", "csv"],
        &s.config,
    )
    .await;
    let after = now();
    assert_eq!(csv.code, Some(0), "{}", csv.stderr);
    let t = read_at(&csv.stdout, before, after);
    assert_eq!(csv.stdout, EXPECTED_CSV.replace("{T}", &t));
    assert_eq!(
        csv.stderr,
        format!(
            "storegate access-report: [[account]] \"acme\": permissions read at {t} with 2 Account API call(s); 2 of 70 calls used in the last hour\n"
        )
    );
    // Two reads, spent from the reconciler's budget file; nothing written, nothing set.
    assert_eq!(calls(&s.sim), READS);
    let spent: Value =
        serde_json::from_str(&std::fs::read_to_string(&s.budget).expect("budget file"))
            .expect("budget JSON");
    assert_eq!(spent["acme"].as_array().map(Vec::len), Some(2));
    assert!(
        s.sim.store_staff(UUID, "store1")["ada@corp.example"].contains("Manage_Users"),
        "the report reports; it never changes a permission"
    );

    // JSON: the same rows in the same order, the same names, lists as arrays.
    let js = storegate(
        &["access-report", "--control-panel", "--format", "json"],
        &s.config,
    )
    .await;
    assert_eq!(js.code, Some(0), "{}", js.stderr);
    let rows: Vec<Value> = serde_json::from_str(&js.stdout).expect("JSON rows");
    let ids: Vec<&str> = rows.iter().filter_map(|r| r["id"].as_str()).collect();
    let csv_ids: Vec<String> = csv
        .stdout
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(ids, csv_ids);
    let t2 = rows[0]["read_at"].as_str().expect("read_at").to_owned();
    assert_eq!(
        rows[0],
        json!({
            "id": "control_panel:acme:store1:ada@corp.example",
            "kind": "drift",
            "flagged": true,
            "account": "acme",
            "store": "store1",
            "store_hash": "store1",
            "subject": "nam:guid-ada@corp.example",
            "email": "ada@corp.example",
            "user_id": "bc/account/user/2",
            "expected_sets": ["merchandiser"],
            "expected": ["Create_Product", "Edit_Products", "Manage_Categories", "Manage_PriceLists", "Manage_Products"],
            "held": ["Create_Product", "Manage_Products", "Manage_Users"],
            "missing": ["Edit_Products", "Manage_Categories", "Manage_PriceLists"],
            "excess": ["Manage_Users"],
            "high_risk": ["Manage_Users"],
            "reason": null,
            "read_at": t2,
        })
    );
    assert_eq!(
        rows[4],
        json!({
            "id": "control_panel:acme:store1:owner@corp.example",
            "kind": "unmanaged",
            "flagged": false,
            "account": "acme",
            "store": "store1",
            "store_hash": "store1",
            "subject": null,
            "email": "owner@corp.example",
            "user_id": "bc/account/user/1",
            "expected_sets": [],
            "expected": [],
            "held": ["Grant_High_Risk_Store_Permissions"],
            "missing": [],
            "excess": [],
            "high_risk": [],
            "reason": null,
            "read_at": t2,
        })
    );
    let names: Vec<&String> = rows[0].as_object().expect("object").keys().collect();
    let mut columns: Vec<&str> = storegate::controlpanel::access::COLUMNS.to_vec();
    columns.sort_unstable();
    assert_eq!(names, columns);
    // The second report spent two more calls of the same budget.
    assert_eq!(calls(&s.sim).len(), 4);
    drop(s.dir);
}

/// A budget file holding `n` calls spent 60 s ago.
fn spend(budget: &PathBuf, n: usize, at: i64) {
    std::fs::write(budget, json!({ "acme": vec![at; n] }).to_string()).expect("budget file");
}

#[tokio::test]
async fn a_spent_budget_fails_the_report_before_any_call_and_says_when_to_run_it_again() {
    let s = setup(&good_token()).await;
    let at = now() - 60;
    spend(&s.budget, 70, at);
    let out = storegate(&["access-report", "--control-panel"], &s.config).await;
    assert_eq!(out.code, Some(1));
    assert_eq!(out.stdout, "", "no partial report");
    assert_eq!(
        out.stderr,
        format!(
            "storegate: [[account]] \"acme\": the Account API budget is spent (70 calls per hour, shared with `storegate reconcile` and every replica, or BigCommerce answered 429); the next call is free at {}. No report was printed: run it again after that time\n",
            rfc3339(at + 3600)
        )
    );
    assert!(
        calls(&s.sim).is_empty(),
        "the budget stopped it, not BigCommerce"
    );
}

#[tokio::test]
async fn a_budget_spent_part_way_through_the_read_prints_no_partial_report() {
    let s = setup(&good_token()).await;
    let at = now() - 60;
    spend(&s.budget, 69, at);
    let out = storegate(&["access-report", "--control-panel"], &s.config).await;
    assert_eq!(out.code, Some(1));
    assert_eq!(out.stdout, "", "the account users alone are not a report");
    assert_eq!(
        out.stderr,
        format!(
            "storegate: [[account]] \"acme\": the Account API budget is spent (70 calls per hour, shared with `storegate reconcile` and every replica, or BigCommerce answered 429); the next call is free at {}. No report was printed: run it again after that time\n",
            rfc3339(at + 3600)
        )
    );
    assert_eq!(calls(&s.sim), READS[..1]);
}

#[tokio::test]
async fn a_refused_account_token_fails_the_report_with_what_to_fix() {
    let s = setup("not-the-account-token").await;
    let out = storegate(&["access-report", "--control-panel"], &s.config).await;
    assert_eq!(out.code, Some(1));
    assert_eq!(out.stdout, "");
    assert_eq!(
        out.stderr,
        "storegate: [[account]] \"acme\": the Account API refused the token (401: Invalid X-Auth-Token). Set `access_token` to the token of an account-level API account of this account with the scope account_users_read. No report was printed\n"
    );
    assert!(!out.stderr.contains("not-the-account-token"));
    assert_eq!(calls(&s.sim), ["unauthenticated() -> 401"]);
}

#[tokio::test]
async fn a_dry_run_only_reads_and_says_what_its_reads_cost() {
    let s = setup(&good_token()).await;
    let out = storegate(&["reconcile", "--dry-run"], &s.config).await;
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    // Exactly the two paged reads: not one mutation.
    assert_eq!(calls(&s.sim), READS);
    assert!(s.sim.account_mutations(UUID).is_empty());
    // The Management API side of the dry run wrote nothing either: no customer was created.
    for h in HASHES {
        assert!(s.sim.customers(h).is_empty(), "{h}");
    }
    let block = out
        .stdout
        .find("control panel [acme]")
        .map(|i| &out.stdout[i..])
        .unwrap_or_else(|| panic!("no control-panel block in:\n{}", out.stdout));
    let expected = [
        "control panel [acme]: 6 step(s) planned, 2 call(s) this pass (2 page(s) read), 2 of 70 calls used in the last hour",
        "  leaver   removeUserFromStore dan@corp.example store store1",
        "  leaver   removeUserFromAccount dan@corp.example",
        "  mover    removeUserFromStore bob@corp.example store store1",
        "  addition addUserToAccount cat@corp.example",
        "  addition addUserToStore cat@corp.example store store1",
        "  addition addUserToStore cat@corp.example store store2",
        "  cost: 1 leaver(s) removed: 2 call(s), now at 70 calls/hour",
        "  cost: 1 mover(s) removed from lost stores: 1 call(s), now at 70 calls/hour",
        "  cost: 1 person(s) added: 3 call(s), now at 70 calls/hour",
        "  dry run: no write call sent; its reads used 2 of this hour's 70 Account API calls (2 used in the last hour, 68 left)",
        "  unmanaged (not in SCIM, left alone): owner@corp.example stores [store1, store2]",
        "  drift ada@corp.example store store1: high-risk excess Manage_Users; missing Edit_Products Manage_Categories Manage_PriceLists (permissions are not writable by API: fix in the control panel)",
        "  drift bob@corp.example store store2: excess Manage_Customers; missing Refund_Orders (permissions are not writable by API: fix in the control panel)",
    ];
    assert_eq!(block.lines().collect::<Vec<_>>(), expected, "{block}");
    assert!(block.ends_with('\n'));
    // The reads were real calls: spent from the shared budget.
    let spent: Value =
        serde_json::from_str(&std::fs::read_to_string(&s.budget).expect("budget file"))
            .expect("budget JSON");
    assert_eq!(spent["acme"].as_array().map(Vec::len), Some(2));
}
