//! SCIM with several replicas (issue 5, `[scim] store = "redis"`): two gateways share one private
//! `redis-server`. What one replica writes, the other reads at once; uniqueness and If-Match hold
//! across them; the leaver check on one sees a deactivation through the other immediately; a
//! restart loses nothing; Redis down is a SCIM 503 and service resumes without a restart.

use serde_json::{Value, json};
use storegate::audit::{EventKind, Outcome};

use crate::harness::{Gateway, Opts, Reserved, assert_not_signed_in};
use crate::scim::{TOKEN, run_scim2_tester, scim_toml_store};
use crate::support::browser::{Browser, location};
use crate::support::redis::RedisServer;
use crate::support::rogue_op::RogueOp;

const CLIENT: &str = "storegate";
const SECRET: &str = "scim-replica-secret-0123456789";
const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";

/// One OP (whose user is `rogue-user` / rogue@corp.example), one Redis, gateway A and replica B.
async fn two_replicas() -> (RogueOp, RedisServer, Gateway, Gateway) {
    let op = RogueOp::start(CLIENT, SECRET).await;
    let redis = RedisServer::start();
    let mut opts = Opts::new(&op.issuer, CLIENT, SECRET);
    opts.redis_url = Some(redis.url());
    opts.extra_toml = scim_toml_store("redis");
    let a = Gateway::start(Reserved::new().await, opts).await;
    let b = a.replica(Reserved::new().await).await;
    (op, redis, a, b)
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn create_user(gw: &Gateway, user_name: &str, external_id: &str) -> reqwest::Response {
    client()
        .post(gw.url("/scim/v2/Users"))
        .bearer_auth(TOKEN)
        .json(&json!({
            "schemas": [USER_SCHEMA],
            "userName": user_name,
            "externalId": external_id,
            "emails": [{"value": user_name, "primary": true}],
            "active": true
        }))
        .send()
        .await
        .expect("POST /Users")
}

async fn patch_active(
    gw: &Gateway,
    id: &str,
    active: bool,
    if_match: Option<&str>,
) -> reqwest::Response {
    let mut req = client()
        .patch(gw.url(&format!("/scim/v2/Users/{id}")))
        .bearer_auth(TOKEN)
        .json(&json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "active", "value": active}]
        }));
    if let Some(etag) = if_match {
        req = req.header("if-match", etag);
    }
    req.send().await.expect("PATCH /Users/{id}")
}

async fn get_json(gw: &Gateway, path: &str) -> (u16, Value) {
    let r = client()
        .get(gw.url(path))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("GET");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// `/login` → OP → callback; returns the callback's answer.
async fn sign_in(b: &Browser, gw: &Gateway) -> reqwest::Response {
    let start = b.get(&gw.url("/login")).await;
    assert_eq!(start.status(), 303, "login redirects to the IdP");
    let at_op = b.get(location(&start).expect("to op").as_str()).await;
    let callback = location(&at_op).expect("op redirects back");
    b.get(callback.as_str()).await
}

async fn ready_status(gw: &Gateway) -> u16 {
    reqwest::get(gw.url("/readyz"))
        .await
        .expect("GET /readyz")
        .status()
        .as_u16()
}

fn tokens_presented(gw: &Gateway) -> usize {
    gw.sim.accepted_logins().len() + gw.sim.rejected_logins().len()
}

#[tokio::test]
async fn a_user_created_on_a_is_read_and_filtered_on_b_at_once() {
    let (_op, _redis, a, b) = two_replicas().await;
    let r = create_user(&a, "ann@corp.example", "ann").await;
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let id = created["id"].as_str().unwrap();

    let (status, got) = get_json(&b, &format!("/scim/v2/Users/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(got["userName"], "ann@corp.example");
    assert_eq!(got["meta"]["version"], created["meta"]["version"]);

    let (status, list) = get_json(
        &b,
        "/scim/v2/Users?filter=userName%20eq%20%22ann%40corp.example%22",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(list["totalResults"], 1);
    assert_eq!(list["Resources"][0]["id"], id);

    // A group created on B with A's user as member shows on A, and on the user through A.
    let r = client()
        .post(b.url("/scim/v2/Groups"))
        .bearer_auth(TOKEN)
        .json(&json!({"displayName": "bc-support", "members": [{"value": id}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let (_, user_on_a) = get_json(&a, &format!("/scim/v2/Users/{id}")).await;
    assert_eq!(user_on_a["groups"][0]["display"], "bc-support");
    // The group name is unique across replicas too.
    let r = client()
        .post(a.url("/scim/v2/Groups"))
        .bearer_auth(TOKEN)
        .json(&json!({"displayName": "BC-Support"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(r.json::<Value>().await.unwrap()["scimType"], "uniqueness");

    // Deleted through B: gone on A at once.
    let r = client()
        .delete(b.url(&format!("/scim/v2/Users/{id}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(get_json(&a, &format!("/scim/v2/Users/{id}")).await.0, 404);
    let (_, groups) = get_json(&a, "/scim/v2/Groups").await;
    assert_eq!(groups["totalResults"], 1);
    assert!(
        groups["Resources"][0].get("members").is_none(),
        "the deleted user left the group: {groups}"
    );
}

#[tokio::test]
async fn deactivated_through_b_is_refused_on_a_at_once() {
    let (_op, _redis, a, b) = two_replicas().await;
    let r = create_user(&a, "rogue@corp.example", "rogue-user").await;
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Signed in through A, launches through A.
    let browser = Browser::new();
    assert_eq!(sign_in(&browser, &a).await.status(), 303, "signed in");
    let ok = browser.get(&a.url("/stores/us/launch")).await;
    assert_eq!(ok.status(), 302, "an active user launches");
    let _ = browser.get(location(&ok).expect("to store").as_str()).await;
    assert_eq!(a.sim.accepted_logins().len(), 1);

    // Identity Manager's PATCH reaches B.
    let r = patch_active(&b, &id, false, None).await;
    assert_eq!(r.status(), 200);

    // A's very next launch, same session: 403, no redirect, no new token.
    let before = a.audit_events().await.len();
    let refused = browser.get(&a.url("/stores/us/launch")).await;
    assert_eq!(refused.status(), 403);
    assert!(location(&refused).is_none(), "no redirect to the store");
    assert_eq!(tokens_presented(&a), 1, "no token minted after the PATCH");
    let events = a.audit_events().await;
    let ev = events[before..]
        .iter()
        .find(|e| e.event == EventKind::Launch)
        .expect("launch event");
    assert_eq!(ev.outcome, Outcome::Deny);
    assert_eq!(ev.reason.as_deref(), Some("deprovisioned"));

    // A fresh sign-in through A is refused too: no session.
    let other = Browser::new();
    let before = a.audit_events().await.len();
    assert_eq!(sign_in(&other, &a).await.status(), 403, "sign-in refused");
    assert_not_signed_in(&other, &a).await;
    let events = a.audit_events().await;
    let ev = events[before..]
        .iter()
        .find(|e| e.event == EventKind::SignIn)
        .expect("sign-in event");
    assert_eq!(ev.outcome, Outcome::Deny);
    assert_eq!(ev.reason.as_deref(), Some("deprovisioned"));
    assert_eq!(tokens_presented(&a), 1);

    // Reactivated through A: B lets them sign in again.
    assert_eq!(patch_active(&a, &id, true, None).await.status(), 200);
    let again = Browser::new();
    assert_eq!(sign_in(&again, &b).await.status(), 303);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_of_one_user_name_on_a_and_b_give_one_201_and_one_409() {
    let (_op, _redis, a, b) = two_replicas().await;
    const ROUNDS: usize = 20;
    for i in 0..ROUNDS {
        let name = format!("race-{i}@corp.example");
        let (ext_a, ext_b) = (format!("race-a-{i}"), format!("race-b-{i}"));
        let (ra, rb) = tokio::join!(
            create_user(&a, &name, &ext_a),
            create_user(&b, &name, &ext_b)
        );
        let mut statuses = [ra.status().as_u16(), rb.status().as_u16()];
        statuses.sort();
        assert_eq!(statuses, [201, 409], "round {i}");
        let loser = if ra.status() == 409 { ra } else { rb };
        assert_eq!(
            loser.json::<Value>().await.unwrap()["scimType"],
            "uniqueness",
            "round {i}"
        );
    }
    for gw in [&a, &b] {
        let (_, list) = get_json(gw, "/scim/v2/Users?count=1000").await;
        assert_eq!(list["totalResults"], ROUNDS);
        let mut names: Vec<&str> = list["Resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["userName"].as_str().unwrap())
            .collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ROUNDS, "no duplicate userName");
    }
}

#[tokio::test]
async fn a_stale_etag_on_b_after_a_write_on_a_is_a_412() {
    let (_op, _redis, a, b) = two_replicas().await;
    let r = create_user(&a, "eve@corp.example", "eve").await;
    assert_eq!(r.status(), 201);
    let first_etag = r.headers()["etag"].to_str().unwrap().to_owned();
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let r = patch_active(&a, &id, false, Some(&first_etag)).await;
    assert_eq!(r.status(), 200);
    let second_etag = r.headers()["etag"].to_str().unwrap().to_owned();
    assert_ne!(first_etag, second_etag);

    let r = patch_active(&b, &id, true, Some(&first_etag)).await;
    assert_eq!(r.status(), 412);
    assert_eq!(r.headers()["content-type"], "application/scim+json");
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "412");
    let (_, user) = get_json(&b, &format!("/scim/v2/Users/{id}")).await;
    assert_eq!(user["active"], false, "the stale write changed nothing");

    let r = patch_active(&b, &id, true, Some(&second_etag)).await;
    assert_eq!(r.status(), 200);
    let (_, user) = get_json(&a, &format!("/scim/v2/Users/{id}")).await;
    assert_eq!(user["active"], true);
}

#[tokio::test]
async fn a_restarted_replica_loses_nothing() {
    let (_op, _redis, a, b) = two_replicas().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let r = create_user(&a, &format!("keep-{i}@corp.example"), &format!("keep-{i}")).await;
        assert_eq!(r.status(), 201);
        ids.push(
            r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(patch_active(&b, &ids[0], false, None).await.status(), 200);
    let r = client()
        .delete(b.url(&format!("/scim/v2/Users/{}", ids[1])))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);

    // Both replicas go away; a new one starts on the same Redis.
    let c = a.replica(Reserved::new().await).await;
    drop(b);
    drop(a);
    let (_, list) = get_json(&c, "/scim/v2/Users").await;
    assert_eq!(list["totalResults"], 4);
    let (_, user) = get_json(&c, &format!("/scim/v2/Users/{}", ids[0])).await;
    assert_eq!(user["active"], false);
    assert_eq!(
        get_json(&c, &format!("/scim/v2/Users/{}", ids[1])).await.0,
        404
    );
    // A deleted user's name is free again; a live user's is not.
    assert_eq!(
        create_user(&c, "keep-1@corp.example", "keep-1")
            .await
            .status(),
        201
    );
    assert_eq!(
        create_user(&c, "keep-2@corp.example", "dup").await.status(),
        409
    );
}

#[tokio::test]
async fn redis_down_is_a_scim_503_and_service_resumes_without_restart() {
    let (_op, mut redis, a, b) = two_replicas().await;
    assert_eq!(
        create_user(&a, "before@corp.example", "before")
            .await
            .status(),
        201
    );

    redis.stop();
    for gw in [&a, &b] {
        let r = create_user(gw, "during@corp.example", "during").await;
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["content-type"], "application/scim+json");
        let body: Value = r.json().await.unwrap();
        assert_eq!(
            body["schemas"],
            json!(["urn:ietf:params:scim:api:messages:2.0:Error"])
        );
        assert_eq!(body["status"], "503");
        let (status, body) = get_json(gw, "/scim/v2/Users").await;
        assert_eq!(status, 503);
        assert_eq!(body["status"], "503");
    }
    // Sign-in is refused with a 503 page, never granted.
    let browser = Browser::new();
    let start = browser.get(&a.url("/login")).await;
    assert_eq!(start.status(), 503);
    assert_not_signed_in(&browser, &a).await;
    a.assert_no_token_minted();

    // The private Redis comes back empty (it had no persistence): the replicas notice the new
    // data set and serve it, without a restart.
    redis.restart();
    // As for sessions: the first request after Redis is back reconnects (readiness shows when).
    let mut ready = false;
    for _ in 0..50 {
        if ready_status(&a).await == 200 && ready_status(&b).await == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(ready, "both replicas ready again");
    let r = create_user(&b, "after@corp.example", "after").await;
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, list) = get_json(&a, "/scim/v2/Users").await;
    assert_eq!(status, 200);
    assert_eq!(list["totalResults"], 1);
    assert_eq!(list["Resources"][0]["id"], id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scim2_tester_reports_no_error_or_critical_with_the_redis_store() {
    let (_op, _redis, a, _b) = two_replicas().await;
    run_scim2_tester(&a).await;
}

/// The SCIM store on a Redis Cluster (three masters): its keys share one hash tag, so its Lua
/// scripts run on one node. A user created through A is read and filtered through B, a
/// deactivation through B is refused at once on A, and a userName taken through A is a 409 on B.
#[tokio::test]
async fn on_a_redis_cluster_scim_writes_on_one_replica_hold_on_the_other() {
    let cluster = crate::support::redis::ClusterSetup::start();
    let op = RogueOp::start(CLIENT, SECRET).await;
    let mut opts = Opts::new(&op.issuer, CLIENT, SECRET);
    opts.redis_topology = Some(format!(
        "redis_mode = \"cluster\"\nredis_nodes = [\"{}\"]",
        cluster.node_url(0)
    ));
    opts.extra_toml = scim_toml_store("redis");
    let a = Gateway::start(Reserved::new().await, opts).await;
    let b = a
        .replica_edited(
            Reserved::new().await,
            &cluster.node_url(0),
            &cluster.node_url(2),
        )
        .await;

    let r = create_user(&a, "rogue@corp.example", "rogue-user").await;
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, found) = get_json(
        &b,
        "/scim/v2/Users?filter=userName%20eq%20%22rogue@corp.example%22",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(found["totalResults"], 1, "{found}");
    assert_eq!(
        create_user(&b, "ROGUE@corp.example", "other")
            .await
            .status(),
        409,
        "the userName is taken across replicas"
    );

    let browser = Browser::new();
    assert_eq!(sign_in(&browser, &a).await.status(), 303, "signed in");
    assert_eq!(browser.get(&a.url("/stores/us/launch")).await.status(), 302);
    assert_eq!(patch_active(&b, &id, false, None).await.status(), 200);
    let refused = browser.get(&a.url("/stores/us/launch")).await;
    assert_eq!(refused.status(), 403, "deactivated through B, refused on A");
    assert!(location(&refused).is_none(), "no redirect to the store");
    // Every SCIM key sits on the one node that owns the `{scim}` slot.
    let holders = cluster.nodes_holding("storegate:{scim}:head");
    assert_eq!(holders.len(), 1, "{holders:?}");
}
