//! The access report for a seeded population, against rows computed by hand.
//!
//! Now is 2026-01-01T00:00:00Z; dormant after 30 days, expiring within 14.
//! - ann (merchandisers): us, eu, outlet. Launched us 2 days ago (active), eu 40 days ago
//!   (dormant), outlet never (dormant).
//! - pat (agency): us until 2026-01-11 (expiring), never launched (dormant).
//! - leo: disabled in SCIM, so no grant; his customer on `main` (channel 1 = us) is an orphan.
//! - tom: deleted (tombstone); launched eu 5 days ago (SCIM knows him: no `no_scim_record`
//!   row); his customer on `outlet` is an orphan.
//! - ghost: launched us a day ago, no SCIM record at all.
//! - ann's own bound customer is not an orphan.

use serde_json::json;

use super::sources::fold_line;
use super::*;
use crate::bigcommerce::api::{AttributeValue, Customer};
use crate::config::{LiteralEnv, load_str};
use crate::provisioning::scim::ScimData;
use crate::provisioning::scim::store::Kind;

const NOW: i64 = 1_767_225_600;
const DAY: i64 = 86_400;

const CONFIG: &str = r#"
public_url = "https://sso.example.com"

[[idp]]
id = "am"
protocol = "oidc"
issuer = "https://am.example.com"
client_id = "storegate"
client_secret = "s3cret-s3cret-s3cret"

[[bigcommerce]]
id = "main"
store_hash = "abc123"
access_token = "token-main"
client_id = "client-main"
client_secret = "login-secret-main"

[[bigcommerce]]
id = "outlet"
store_hash = "xyz789"
access_token = "token-outlet"
client_id = "client-outlet"
client_secret = "login-secret-outlet"

[[store]]
id = "us"
name = "US"
bigcommerce = "main"
channel_id = 1
url = "https://us.example.com"

[[store]]
id = "eu"
name = "EU"
bigcommerce = "main"
channel_id = 2
url = "https://eu.example.com"

[[store]]
id = "outlet"
name = "Outlet"
bigcommerce = "outlet"
channel_id = 1
url = "https://outlet.example.com"

[[rule]]
name = "merch"
groups_any = ["bc-merchandisers"]
stores = ["*"]
role = "merchandiser"
customer_group = "Staff"

[[rule]]
name = "agency-us"
groups_any = ["agency"]
stores = ["us"]
role = "agency"
not_after = "2026-01-11T00:00:00Z"
"#;

fn user(id: &str, ext: &str, email: &str, active: bool) -> (Kind, serde_json::Value) {
    (
        Kind::User,
        json!({"id": id, "userName": email, "externalId": ext, "active": active,
               "emails": [{"value": email, "primary": true}]}),
    )
}

fn scim() -> ScimData {
    ScimData::from_resources(vec![
        user("u1", "s-ann", "ann@corp.example", true),
        user("u2", "s-pat", "pat@agency.example", true),
        user("u3", "s-leo", "leo@corp.example", false),
        (
            Kind::Tombstone,
            json!({"id": "u4", "userName": "tom@corp.example", "externalId": "s-tom",
                   "emails": [{"value": "tom@corp.example"}]}),
        ),
        (
            Kind::Group,
            json!({"id": "g1", "displayName": "bc-merchandisers",
                   "members": [{"value": "u1"}, {"value": "u3"}]}),
        ),
        (
            Kind::Group,
            json!({"id": "g2", "displayName": "agency", "members": [{"value": "u2"}]}),
        ),
    ])
}

fn launch(subject: &str, store: &str, at: i64, outcome: &str) -> String {
    format!(
        r#"{{"seq":1,"writer":"gw","prev":"0","time":"{}","request_id":"r","event":"launch","outcome":"{outcome}","subject":"{subject}","idp":"am","email":"{subject}@corp.example","store":"{store}","rule":"merch","role":"merchandiser","hash":"x"}}"#,
        rfc3339(at)
    )
}

fn launches() -> Launches {
    let mut l = Launches::new();
    for line in [
        launch("s-ann", "us", NOW - 9 * DAY, "allow"),
        launch("s-ann", "us", NOW - 2 * DAY, "allow"),
        // A later refusal is not a use of the grant.
        launch("s-ann", "us", NOW - DAY, "deny"),
        launch("s-ann", "eu", NOW - 40 * DAY, "allow"),
        launch("s-tom", "eu", NOW - 5 * DAY, "allow"),
        launch("s-ghost", "us", NOW - DAY, "allow"),
        "{\"time\":".to_owned(),
        r#"{"time":"2025-12-31T00:00:00Z","event":"sign_in","outcome":"allow","subject":"s-x"}"#
            .to_owned(),
    ] {
        fold_line(line.as_bytes(), &mut l);
    }
    l
}

fn customer(id: u64, email: &str, channels: Option<Vec<u64>>, group: u64) -> Customer {
    Customer {
        id,
        email: email.into(),
        first_name: "F".into(),
        last_name: "L".into(),
        customer_group_id: group,
        channel_ids: channels,
        origin_channel_id: None,
        attributes: vec![AttributeValue {
            attribute_id: 1,
            attribute_value: "x".into(),
        }],
    }
}

fn bound() -> Vec<BoundCustomer> {
    vec![
        (
            "main".into(),
            customer(7, "leo@corp.example", Some(vec![1]), 3),
            "am:s-leo".into(),
        ),
        (
            "main".into(),
            customer(8, "ann@corp.example", None, 3),
            "am:s-ann".into(),
        ),
        (
            "outlet".into(),
            customer(9, "tom@corp.example", Some(vec![1]), 0),
            "am:s-tom".into(),
        ),
    ]
}

fn report() -> Report {
    let cfg = load_str(CONFIG, "t.toml", &LiteralEnv).expect("config");
    build(
        &cfg,
        &scim(),
        &launches(),
        &bound(),
        NOW,
        Windows::default(),
    )
}

const EXPECTED_CSV: &str = "\
id,kind,subject,idp,email,store,role,rule,template,customer_group,expires_at,expiring,last_launch_at,dormant,in_scim,customer_id\r
grant:am:s-ann:eu:merchandiser,grant,s-ann,am,ann@corp.example,eu,merchandiser,merch,,Staff,,false,2025-11-22T00:00:00Z,true,true,\r
grant:am:s-ann:outlet:merchandiser,grant,s-ann,am,ann@corp.example,outlet,merchandiser,merch,,Staff,,false,,true,true,\r
grant:am:s-ann:us:merchandiser,grant,s-ann,am,ann@corp.example,us,merchandiser,merch,,Staff,,false,2025-12-30T00:00:00Z,false,true,\r
grant:am:s-pat:us:agency,grant,s-pat,am,pat@agency.example,us,agency,agency-us,,,2026-01-11T00:00:00Z,true,,true,true,\r
no_scim_record:am:s-ghost:us:merchandiser,no_scim_record,s-ghost,am,s-ghost@corp.example,us,merchandiser,merch,,,,false,2025-12-31T00:00:00Z,false,false,\r
orphan_customer:main:7:us,orphan_customer,s-leo,am,leo@corp.example,us,,,,3,,false,,true,false,7\r
orphan_customer:outlet:9:outlet,orphan_customer,s-tom,am,tom@corp.example,outlet,,,,,,false,,true,false,9\r
";

#[test]
fn the_seeded_population_gives_the_hand_computed_csv() {
    assert_eq!(to_csv(&report().rows), EXPECTED_CSV);
}

#[test]
fn the_json_rows_carry_the_same_facts_with_nulls_for_absent_values() {
    let json: serde_json::Value =
        serde_json::from_str(&to_json(&report().rows)).expect("JSON array");
    let rows = json.as_array().expect("array");
    assert_eq!(rows.len(), 7);
    assert_eq!(
        rows[3],
        json!({
            "id": "grant:am:s-pat:us:agency", "kind": "grant", "subject": "s-pat", "idp": "am",
            "email": "pat@agency.example", "store": "us", "role": "agency", "rule": "agency-us",
            "template": null, "customer_group": null, "expires_at": "2026-01-11T00:00:00Z",
            "expiring": true, "last_launch_at": null, "dormant": true, "in_scim": true,
            "customer_id": null,
        })
    );
    assert_eq!(
        rows[0],
        json!({
            "id": "grant:am:s-ann:eu:merchandiser", "kind": "grant", "subject": "s-ann",
            "idp": "am", "email": "ann@corp.example", "store": "eu", "role": "merchandiser",
            "rule": "merch", "template": null, "customer_group": "Staff", "expires_at": null,
            "expiring": false, "last_launch_at": "2025-11-22T00:00:00Z", "dormant": true,
            "in_scim": true, "customer_id": null,
        })
    );
    // Same rows, same order, as the CSV.
    let csv_ids: Vec<&str> = EXPECTED_CSV
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap_or(""))
        .collect();
    let json_ids: Vec<&str> = rows.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(csv_ids, json_ids);
}

#[test]
fn windows_move_rows_in_and_out_of_dormant_and_expiring() {
    let cfg = load_str(CONFIG, "t.toml", &LiteralEnv).expect("config");
    let narrow = Windows {
        dormant_secs: DAY,
        expiring_secs: 9 * DAY,
    };
    let r = build(&cfg, &scim(), &launches(), &bound(), NOW, narrow);
    let row = |id: &str| r.rows.iter().find(|x| x.id == id).expect(id).clone();
    // Launched 2 days ago: dormant with a 1-day window; pat's grant ends in 10 days: not within 9.
    assert!(row("grant:am:s-ann:us:merchandiser").dormant);
    assert!(!row("grant:am:s-pat:us:agency").expiring);
}

#[test]
fn csv_fields_are_quoted_and_formulas_defused() {
    let mut out = String::new();
    csv_field(&mut out, "a,\"b\"");
    out.push('|');
    csv_field(&mut out, "=HYPERLINK(\"x\")");
    assert_eq!(out, "\"a,\"\"b\"\"\"|\"'=HYPERLINK(\"\"x\"\")\"");
}
