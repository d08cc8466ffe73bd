//! The simulated GraphQL Account API (control-panel users, issue 12): what it enforces.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use storegate::bigcommerce::account_api::ops;
use storegate::bigcommerce::sim::{SimAccount, SimConfig};

use super::fixture::{HASH, OTHER_HASH, Sim, config, sim_with};

const UUID: &str = "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b";

fn account_sim() -> Sim {
    sim_with(SimConfig {
        accounts: vec![SimAccount::new(UUID, &[HASH, OTHER_HASH])],
        ..config()
    })
}

impl Sim {
    async fn gql_as(
        &self,
        token: &str,
        query: &str,
        variables: Value,
    ) -> (StatusCode, Value, Option<String>) {
        let req = Request::builder()
            .method("POST")
            .uri(format!("/accounts/{UUID}/graphql"))
            .header("X-Auth-Token", token)
            .header("Content-Type", "application/json")
            .body(Body::from(
                json!({"query": query, "variables": variables}).to_string(),
            ))
            .unwrap();
        let resp = self.request(req).await;
        let status = resp.status();
        let retry = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 22)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            retry,
        )
    }

    async fn gql(&self, query: &str, variables: Value) -> Value {
        let token = format!("account-token-{UUID}");
        let (status, body, _) = self.gql_as(&token, query, variables).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }
}

fn error(body: &Value) -> &str {
    body["errors"][0]["message"].as_str().unwrap_or("")
}

#[tokio::test]
async fn a_wrong_token_is_401_and_changes_nothing() {
    let sim = account_sim();
    let (status, body, _) = sim
        .gql_as(
            "store-level-token",
            ops::ADD_USER_TO_ACCOUNT,
            json!({"email": "ada@corp.example"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error(&body), "Invalid X-Auth-Token");
    assert!(sim.handle.staff(UUID).is_empty());
    assert_eq!(
        sim.handle.account_mutations(UUID),
        ["unauthenticated() -> 401"]
    );
}

#[tokio::test]
async fn a_user_is_added_to_the_account_then_to_a_store_by_email() {
    let sim = account_sim();
    let b = sim
        .gql(
            ops::ADD_USER_TO_ACCOUNT,
            json!({"email": "ada@corp.example"}),
        )
        .await;
    assert_eq!(
        b["data"]["account"]["addUserToAccount"]["account"]["id"],
        format!("bc/account/account/{UUID}")
    );
    let b = sim
        .gql(
            ops::ADD_USER_TO_STORE,
            json!({"email": "ADA@corp.example", "storeId": HASH}),
        )
        .await;
    assert_eq!(b["data"]["user"]["addUserToStore"]["storeId"], HASH);
    let staff = sim.handle.store_staff(UUID, HASH);
    assert_eq!(
        staff["ada@corp.example"].iter().collect::<Vec<_>>(),
        ["No_Permission_Required"]
    );
    // Twice is refused with errors[] and HTTP 200, the field null.
    let b = sim
        .gql(
            ops::ADD_USER_TO_STORE,
            json!({"email": "ada@corp.example", "storeId": HASH}),
        )
        .await;
    assert_eq!(error(&b), "The user already has access to this store");
    assert_eq!(b["data"]["user"]["addUserToStore"], Value::Null);
    assert_eq!(b["errors"][0]["path"], json!(["user", "addUserToStore"]));
    // Someone not in the account cannot be added to a store.
    let b = sim
        .gql(
            ops::ADD_USER_TO_STORE,
            json!({"email": "bob@corp.example", "storeId": HASH}),
        )
        .await;
    assert_eq!(
        error(&b),
        "No user with this email in the account: add them to the account first"
    );
    let b = sim
        .gql(
            ops::ADD_USER_TO_STORE,
            json!({"email": "ada@corp.example", "storeId": "nostore"}),
        )
        .await;
    assert_eq!(error(&b), "Store not found in this account");
    assert_eq!(
        sim.handle.account_mutations(UUID),
        [
            "addUserToAccount(ada@corp.example)",
            "addUserToStore(ADA@corp.example abc123)",
            "addUserToStore(ada@corp.example abc123) -> error",
            "addUserToStore(bob@corp.example abc123) -> error",
            "addUserToStore(ada@corp.example nostore) -> error",
        ]
    );
}

#[tokio::test]
async fn the_id_form_and_unknown_documents_are_refused_and_permissions_cannot_be_written() {
    let sim = account_sim();
    let id = sim
        .handle
        .seed_staff(UUID, "ada@corp.example", &[HASH], false)
        .unwrap();
    let b = sim
        .gql(
            "mutation AddUserToStore($userId: ID!, $storeId: String!) { user { addUserToStore(input: { user: { id: $userId }, storeId: $storeId }) { storeId } } }",
            json!({"userId": id, "storeId": OTHER_HASH}),
        )
        .await;
    assert_eq!(
        error(&b),
        "Identify the user by email: the id form is only kept for API accounts created before the 2024 security fix"
    );
    let b = sim
        .gql(
            "mutation { user { updateUserPermissions(input: { storeId: \"abc123\", permissions: [\"Manage_Users\"] }) { storeId } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        error(&b),
        "Cannot parse or validate the document: not an operation of this API"
    );
    assert_eq!(b["data"], Value::Null);
    let b = sim.gql("{ account { users", json!({})).await;
    assert_eq!(
        error(&b),
        "Cannot parse or validate the document: not an operation of this API"
    );
    assert!(sim.handle.store_staff(UUID, OTHER_HASH).is_empty());
    // Only the control panel (the simulator's own control) sets permissions.
    assert!(
        sim.handle
            .set_staff_permissions(UUID, HASH, "ada@corp.example", &["Manage_Users"])
    );
    assert!(!sim.handle.set_staff_permissions(
        UUID,
        OTHER_HASH,
        "ada@corp.example",
        &["Manage_Users"]
    ));
    let b = sim
        .gql(ops::STORE_USERS, json!({"stores": 10, "first": 10}))
        .await;
    let store = &b["data"]["account"]["stores"]["edges"][0]["node"];
    assert_eq!(store["storeHash"], HASH);
    assert_eq!(
        store["users"]["edges"][0]["node"]["permissions"],
        json!(["Manage_Users", "No_Permission_Required"])
    );
}

#[tokio::test]
async fn connections_page_with_cursors_and_refuse_bad_windows() {
    let sim = account_sim();
    for i in 0..7 {
        sim.handle
            .seed_staff(UUID, &format!("u{i}@corp.example"), &[HASH], false);
    }
    let b = sim.gql(ops::ACCOUNT_USERS, json!({"first": 3})).await;
    let users = &b["data"]["account"]["users"];
    assert_eq!(users["collectionInfo"]["totalItems"], 7);
    assert_eq!(users["pageInfo"]["hasNextPage"], true);
    assert_eq!(users["edges"].as_array().unwrap().len(), 3);
    let cursor = users["pageInfo"]["endCursor"].as_str().unwrap().to_owned();
    let b = sim
        .gql(ops::ACCOUNT_USERS, json!({"first": 3, "after": cursor}))
        .await;
    assert_eq!(
        b["data"]["account"]["users"]["edges"][0]["node"]["email"],
        "u3@corp.example"
    );
    let b = sim
        .gql(
            ops::ACCOUNT_USERS,
            json!({"first": 10, "after": "nonsense"}),
        )
        .await;
    assert_eq!(error(&b), "Invalid cursor \"nonsense\"");
    for first in [json!(0), json!(501), json!("3"), Value::Null] {
        let b = sim.gql(ops::ACCOUNT_USERS, json!({"first": first})).await;
        assert_eq!(
            error(&b),
            "`first` must be an integer from 1 to 500",
            "{first}"
        );
    }
    // A store's users page within a page of stores: one store at a time after a store cursor.
    let b = sim
        .gql(ops::STORE_USERS, json!({"stores": 1, "first": 5}))
        .await;
    let stores = &b["data"]["account"]["stores"];
    assert_eq!(stores["pageInfo"]["hasNextPage"], true);
    let users = &stores["edges"][0]["node"]["users"];
    assert_eq!(users["collectionInfo"]["totalItems"], 7);
    assert_eq!(users["edges"].as_array().unwrap().len(), 5);
    let after = users["pageInfo"]["endCursor"].as_str().unwrap();
    let b = sim
        .gql(
            ops::STORE_USERS,
            json!({"stores": 1, "first": 5, "after": after}),
        )
        .await;
    let rest = &b["data"]["account"]["stores"]["edges"][0]["node"]["users"];
    assert_eq!(rest["edges"].as_array().unwrap().len(), 2);
    assert_eq!(rest["pageInfo"]["hasNextPage"], false);
}

#[tokio::test]
async fn seventy_requests_an_hour_then_429_with_retry_after() {
    let sim = account_sim();
    for _ in 0..35 {
        sim.gql(ops::ACCOUNT_USERS, json!({"first": 1})).await;
    }
    sim.clock.advance(1800);
    for _ in 0..35 {
        sim.gql(ops::ACCOUNT_USERS, json!({"first": 1})).await;
    }
    let token = format!("account-token-{UUID}");
    let (status, body, retry) = sim
        .gql_as(
            &token,
            ops::ADD_USER_TO_ACCOUNT,
            json!({"email": "ada@corp.example"}),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(error(&body), "Too many requests: 70 per hour per account");
    assert_eq!(retry.as_deref(), Some("1800"));
    assert!(sim.handle.staff(UUID).is_empty(), "a 429 takes no effect");
    // The first 35 leave the hour 3600 s after they came.
    sim.clock.advance(1800);
    let b = sim
        .gql(
            ops::ADD_USER_TO_ACCOUNT,
            json!({"email": "ada@corp.example"}),
        )
        .await;
    assert!(b.get("errors").is_none(), "{b}");
    assert_eq!(sim.handle.account_peak_hourly_requests(UUID), 70);
}

#[tokio::test]
async fn the_store_owner_cannot_be_removed_and_removal_from_the_account_leaves_every_store() {
    let sim = account_sim();
    let owner = sim
        .handle
        .seed_staff(UUID, "owner@corp.example", &[HASH], true)
        .unwrap();
    let ada = sim
        .handle
        .seed_staff(UUID, "ada@corp.example", &[HASH, OTHER_HASH], false)
        .unwrap();
    let b = sim
        .gql(
            ops::REMOVE_USER_FROM_STORE,
            json!({"userId": owner, "storeId": HASH}),
        )
        .await;
    assert_eq!(error(&b), "The store owner cannot be removed");
    let b = sim
        .gql(
            ops::REMOVE_USER_FROM_ACCOUNT,
            json!({"email": "owner@corp.example"}),
        )
        .await;
    assert_eq!(error(&b), "The store owner cannot be removed");
    let b = sim
        .gql(
            ops::REMOVE_USER_FROM_STORE,
            json!({"userId": ada, "storeId": HASH}),
        )
        .await;
    assert_eq!(
        b["data"]["user"]["removeUserFromStore"]["user"]["email"],
        "ada@corp.example"
    );
    let b = sim
        .gql(
            ops::REMOVE_USER_FROM_STORE,
            json!({"userId": "42", "storeId": HASH}),
        )
        .await;
    assert_eq!(error(&b), "`userId` is not a user id (bc/account/user/N)");
    let b = sim
        .gql(
            ops::REMOVE_USER_FROM_ACCOUNT,
            json!({"email": "ada@corp.example"}),
        )
        .await;
    assert_eq!(b["data"]["account"]["removeUserFromAccount"]["userId"], ada);
    assert!(sim.handle.store_staff(UUID, OTHER_HASH).is_empty());
    assert_eq!(
        sim.handle
            .staff(UUID)
            .iter()
            .map(|s| s.email.as_str())
            .collect::<Vec<_>>(),
        ["owner@corp.example"]
    );
    let b = sim
        .gql(ops::REMOVE_USER_FROM_ACCOUNT, json!({"email": ""}))
        .await;
    assert_eq!(
        error(&b),
        "Variable \"$email\" of required type was not provided or is not a non-empty string"
    );
}
