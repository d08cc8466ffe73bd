//! SCIM 2.0 at `/scim/v2` (issue 5): the independent compliance checker (PyPI `scim2-tester`, run
//! from `.venv`, see scripts/test-deps.sh) and the HTTP-level rules it does not cover.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

use crate::harness::{Gateway, Opts, Reserved};

pub const TOKEN: &str = "scim-test-token-0123456789";

/// `[scim]` for tests: a bearer token and a fresh file store in a temporary folder.
pub fn scim_toml(dir: &std::path::Path) -> String {
    scim_toml_store(&format!("file:{}", dir.display()))
}

/// `[scim]` for tests with `store` as given (`"redis"` needs a gateway with Redis sessions).
pub fn scim_toml_store(store: &str) -> String {
    format!(
        "[scim]\nenabled = true\nbearer_token = \"{TOKEN}\"\nbasic_user = \"idm\"\nbasic_password = \"basic-secret-password\"\nstore = \"{store}\"\n"
    )
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("storegate-{tag}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

pub async fn scim_gateway(extra: &str) -> (Gateway, PathBuf) {
    let dir = temp_dir("scim");
    let mut opts = Opts::new("http://127.0.0.1:9/no-idp", "client", "secret");
    opts.extra_toml = format!("{}\n{extra}", scim_toml(&dir.join("scim-data")));
    (Gateway::start(Reserved::new().await, opts).await, dir)
}

fn venv_python() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scim2_tester_reports_no_error_or_critical() {
    let (gw, _dir) = scim_gateway("").await;
    run_scim2_tester(&gw).await;
}

/// The independent compliance checker against `gw`: no ERROR or CRITICAL finding.
pub async fn run_scim2_tester(gw: &Gateway) {
    let python = venv_python();
    assert!(
        python.exists(),
        "{} is missing: run scripts/test-deps.sh (installs scim2-tester)",
        python.display()
    );
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/scim/check.py");
    let base = gw.url("/scim/v2");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .arg(base)
            .arg(TOKEN)
            .output()
            .expect("run check.py")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "scim2-tester found problems:\n{stdout}"
    );
    assert!(stdout.contains("0 ERROR/CRITICAL"), "{stdout}");
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

#[tokio::test]
async fn scim_requires_credentials_with_www_authenticate() {
    let (gw, _dir) = scim_gateway("").await;
    let r = client().get(gw.url("/scim/v2/Users")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let challenges: Vec<_> = r
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert!(
        challenges.iter().any(|c| c.starts_with("Bearer")),
        "{challenges:?}"
    );
    assert!(
        challenges.iter().any(|c| c.starts_with("Basic")),
        "{challenges:?}"
    );
    assert_eq!(r.headers()["content-type"], "application/scim+json");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "401");
    let r = client()
        .get(gw.url("/scim/v2/Users"))
        .bearer_auth("scim-test-token-0123456788")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client()
        .get(gw.url("/scim/v2/Users"))
        .basic_auth("idm", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client()
        .get(gw.url("/scim/v2/Users"))
        .basic_auth("idm", Some("basic-secret-password"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn scim_etag_if_match_and_error_bodies() {
    let (gw, _dir) = scim_gateway("").await;
    let c = client();
    let r = c.post(gw.url("/scim/v2/Users")).bearer_auth(TOKEN)
        .json(&json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "ann@example.com", "externalId": "ann"}))
        .send().await.unwrap();
    assert_eq!(r.status(), 201);
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    assert!(r.headers().contains_key("location"));
    let u: Value = r.json().await.unwrap();
    let url = gw.url(&format!("/scim/v2/Users/{}", u["id"].as_str().unwrap()));
    let patch = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "replace", "path": "active", "value": false}]});
    let r = c
        .patch(&url)
        .bearer_auth(TOKEN)
        .header("if-match", "W/\"stale\"")
        .json(&patch)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 412);
    let r = c
        .patch(&url)
        .bearer_auth(TOKEN)
        .header("if-match", &etag)
        .json(&patch)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["active"], false);
    let r = c
        .get(gw.url("/scim/v2/Users?filter=userName%20eq"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["scimType"],
        "invalidFilter"
    );
    let r = c
        .post(gw.url("/scim/v2/Users"))
        .bearer_auth(TOKEN)
        .json(&json!({"userName": "ANN@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(r.json::<Value>().await.unwrap()["scimType"], "uniqueness");
    let r = c
        .post(gw.url("/scim/v2/Users"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/scim+json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["scimType"], "invalidSyntax", "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("the body is not valid JSON: ")),
        "{body}"
    );
    let big = "x".repeat(200 * 1024);
    let r = c
        .post(gw.url("/scim/v2/Users"))
        .bearer_auth(TOKEN)
        .json(&json!({"userName": big}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413, "bodies above the limit are refused");
    assert_eq!(r.headers()["content-type"], "application/scim+json");
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
            "status": "413",
            "detail": "the request body is larger than 64 KiB"
        })
    );
    let events = gw.audit_events().await;
    assert!(
        events
            .iter()
            .any(|e| e.actor.as_deref() == Some("scim:bearer")
                && e.reason.as_deref() == Some("patch")
                && e.before.is_some()
                && e.after.is_some())
    );
}

/// Issue 10: `remove` of `members` with a value (Entra ID's object form and list form, and the
/// filter form) takes out only the members named; the others stay in the group.
#[tokio::test]
async fn removing_named_members_over_http_keeps_the_other_members() {
    let (gw, _dir) = scim_gateway("").await;
    let c = client();
    let mut ids = Vec::new();
    for name in ["m1", "m2", "m3", "m4", "m5"] {
        let r = c
            .post(gw.url("/scim/v2/Users"))
            .bearer_auth(TOKEN)
            .json(&json!({"userName": format!("{name}@example.com"), "externalId": name}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        ids.push(
            r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let all: Vec<Value> = ids.iter().map(|id| json!({"value": id})).collect();
    let r = c
        .post(gw.url("/scim/v2/Groups"))
        .bearer_auth(TOKEN)
        .json(&json!({"displayName": "bc-merchandisers", "members": all}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let gid = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = gw.url(&format!("/scim/v2/Groups/{gid}"));
    let patch = |op: Value| {
        c.patch(&url)
            .bearer_auth(TOKEN)
            .json(&json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [op]}))
            .send()
    };
    let members = |g: &Value| -> Vec<String> {
        g["members"]
            .as_array()
            .map(|m| {
                m.iter()
                    .map(|x| x["value"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let r = patch(json!({"op": "remove", "path": "members", "value": {"value": ids[0]}}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(members(&r.json().await.unwrap()), ids[1..].to_vec());
    let r = patch(
        json!({"op": "remove", "path": "members", "value": [{"value": ids[1]}, {"value": ids[2]}]}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(members(&r.json().await.unwrap()), ids[3..].to_vec());
    let r = patch(json!({"op": "remove", "path": format!("members[value eq \"{}\"]", ids[3])}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(members(&r.json().await.unwrap()), vec![ids[4].clone()]);
    // What a later reader sees, and the user's side of the membership.
    let g: Value = c
        .get(&url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(members(&g), vec![ids[4].clone()]);
    let u: Value = c
        .get(gw.url(&format!("/scim/v2/Users/{}", ids[4])))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(u["groups"][0]["display"], "bc-merchandisers");
    // Issue 15: the audit trail names the members that came and went; a group's before and
    // after leave the member list out (a group of 20,000 is not copied into every event).
    let events = gw.audit_events().await;
    let group_events: Vec<_> = events
        .iter()
        .filter(|e| {
            e.target
                .as_deref()
                .is_some_and(|t| t.starts_with(&format!("Group/{gid} ")))
        })
        .collect();
    let delta = |e: &storegate::audit::AuditEvent| {
        (
            e.reason.clone().unwrap_or_default(),
            e.members_added.clone().unwrap_or_default(),
            e.members_removed.clone().unwrap_or_default(),
        )
    };
    let none: Vec<String> = Vec::new();
    assert_eq!(
        group_events.iter().map(|e| delta(e)).collect::<Vec<_>>(),
        vec![
            ("create".to_owned(), ids.clone(), none.clone()),
            ("patch".to_owned(), none.clone(), vec![ids[0].clone()]),
            ("patch".to_owned(), none.clone(), ids[1..3].to_vec()),
            ("patch".to_owned(), none.clone(), vec![ids[3].clone()]),
        ]
    );
    for e in &group_events {
        let after = e.after.as_ref().expect("after");
        assert_eq!(after["displayName"], "bc-merchandisers");
        assert!(after.get("members").is_none(), "{after}");
        if let Some(before) = &e.before {
            assert!(before.get("members").is_none(), "{before}");
        }
    }
}
