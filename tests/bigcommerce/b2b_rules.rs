//! The simulated B2B Edition API: listing a company's users page by page, deleting a user, and
//! injected failures (what the reconciler's B2B step relies on).

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use storegate::bigcommerce::sim::{SimCompany, SimCompanyUser};

use super::fixture::*;

const B2B_TOKEN: &str = "b2b-token";

fn with_b2b(users: u64) -> Sim {
    let sim = sim();
    let company = |id| SimCompany {
        id,
        name: format!("Company {id}"),
        status: 1,
        customer_group_id: 0,
        custom_roles: vec![],
    };
    sim.handle
        .enable_b2b(HASH, B2B_TOKEN, vec![company(42), company(99)]);
    for i in 1..=users {
        sim.handle.add_company_user(
            HASH,
            SimCompanyUser {
                id: i,
                customer_id: 1000 + i,
                // Every third user belongs to company 99.
                company_id: if i % 3 == 0 { 99 } else { 42 },
                role: 2,
                company_role_id: None,
                email: format!("u{i}@corp.example"),
            },
        );
    }
    sim
}

async fn b2b(sim: &Sim, method: &str, path: &str, token: &str) -> (StatusCode, Value, String) {
    let req = Request::builder()
        .method(method)
        .uri(format!("/api/v3/io{path}"))
        .header("X-Auth-Token", token)
        .header("X-Store-Hash", HASH)
        .body(Body::empty())
        .unwrap();
    let resp = sim.request(req).await;
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        retry_after,
    )
}

fn ids(page: &Value) -> Vec<u64> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn a_company_s_users_are_listed_page_by_page_with_the_total() {
    let sim = with_b2b(9);
    let (status, first, _) = b2b(&sim, "GET", "/users?companyId=42&limit=4", B2B_TOKEN).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&first), vec![1, 2, 4, 5]);
    assert_eq!(
        first["meta"]["pagination"],
        json!({"totalCount": 6, "offset": 0, "limit": 4})
    );
    assert_eq!(first["data"][0]["customerId"], 1001);
    assert_eq!(first["data"][0]["companyId"], 42);
    let (_, second, _) = b2b(
        &sim,
        "GET",
        "/users?companyId=42&offset=4&limit=4",
        B2B_TOKEN,
    )
    .await;
    assert_eq!(ids(&second), vec![7, 8]);
    let (_, other, _) = b2b(&sim, "GET", "/users?companyId=99", B2B_TOKEN).await;
    assert_eq!(ids(&other), vec![3, 6, 9]);
    assert_eq!(other["meta"]["pagination"]["limit"], 10, "the default");
}

#[tokio::test]
async fn a_deleted_user_is_gone_and_a_second_delete_is_404() {
    let sim = with_b2b(3);
    let (status, _, _) = b2b(&sim, "DELETE", "/users/2", B2B_TOKEN).await;
    assert_eq!(status, StatusCode::OK);
    let left: Vec<u64> = sim
        .handle
        .company_users(HASH)
        .iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(left, vec![1, 3]);
    let (status, body, _) = b2b(&sim, "DELETE", "/users/2", B2B_TOKEN).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["data"]["errMsg"], "user not found");
}

#[tokio::test]
async fn listing_and_deleting_need_the_b2b_token() {
    let sim = with_b2b(3);
    for (method, path) in [("GET", "/users?companyId=42"), ("DELETE", "/users/1")] {
        let (status, body, _) = b2b(&sim, method, path, "api-token-abc").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
        assert_eq!(body["data"]["errMsg"], "invalid X-Auth-Token");
    }
    assert_eq!(sim.handle.company_users(HASH).len(), 3, "nothing deleted");
}

#[tokio::test]
async fn an_injected_429_carries_retry_after_and_takes_no_effect() {
    let sim = with_b2b(3);
    sim.handle
        .fail_next_b2b(HASH, 1, StatusCode::TOO_MANY_REQUESTS, Some(3));
    let (status, _, retry_after) = b2b(&sim, "DELETE", "/users/1", B2B_TOKEN).await;
    assert_eq!(
        (status, retry_after.as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "3")
    );
    assert_eq!(sim.handle.company_users(HASH).len(), 3);
    let (status, _, retry_after) = b2b(&sim, "DELETE", "/users/1", B2B_TOKEN).await;
    assert_eq!((status, retry_after.as_str()), (StatusCode::OK, ""));
    assert_eq!(sim.handle.b2b_calls(HASH), 2);
}
