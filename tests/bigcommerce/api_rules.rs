//! The simulated Management API: authentication, rate limits, and the customer rules.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use storegate::bigcommerce::sim::SimConfig;

use super::fixture::*;

fn person(email: &str) -> Value {
    json!({ "email": email, "first_name": "A", "last_name": "B" })
}

#[tokio::test]
async fn missing_or_wrong_token_is_401_with_rate_limit_headers() {
    let sim = sim();
    for token in [None, Some("api-token-def")] {
        let mut req = Request::get(format!("/stores/{HASH}/v2/time"));
        if let Some(t) = token {
            req = req.header("X-Auth-Token", t);
        }
        let resp = sim.request(req.body(Body::empty()).unwrap()).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert!(resp.headers().contains_key("x-rate-limit-requests-left"));
    }
}

#[tokio::test]
async fn every_response_carries_the_four_rate_limit_headers() {
    let sim = sim();
    let (status, body, headers) = sim.api("GET", "/v2/time", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({ "time": NOW }));
    assert_eq!(headers["x-rate-limit-time-window-ms"], "30000");
    assert_eq!(headers["x-rate-limit-requests-quota"], "450");
    assert_eq!(headers["x-rate-limit-requests-left"], "449");
    assert!(headers.contains_key("x-rate-limit-time-reset-ms"));
}

#[tokio::test]
async fn time_follows_the_store_clock_offset() {
    let sim = sim();
    sim.handle.set_clock_offset(-42);
    assert_eq!(
        sim.api("GET", "/v2/time", None).await.1,
        json!({ "time": NOW - 42 })
    );
}

#[tokio::test]
async fn past_the_quota_in_the_window_is_429() {
    let sim = sim_with(SimConfig {
        requests_per_window: 2,
        ..config()
    });
    assert_eq!(sim.api("GET", "/v2/time", None).await.0, StatusCode::OK);
    assert_eq!(sim.api("GET", "/v2/time", None).await.0, StatusCode::OK);
    let (status, _, headers) = sim.api("GET", "/v2/time", None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers["x-rate-limit-requests-left"], "0");
    assert_eq!(sim.handle.api_calls(HASH), 3);
}

#[tokio::test]
async fn injected_failures_answer_the_given_status_then_stop() {
    let sim = sim();
    sim.handle.fail_next(1, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        sim.api("GET", "/v2/time", None).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(sim.api("GET", "/v2/time", None).await.0, StatusCode::OK);
}

#[tokio::test]
async fn create_more_than_10_customers_is_413() {
    let sim = sim();
    let batch: Vec<Value> = (0..11)
        .map(|i| person(&format!("u{i}@x.example")))
        .collect();
    assert_eq!(
        sim.api("POST", "/v3/customers", Some(json!(batch))).await.0,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert!(sim.handle.customers(HASH).is_empty());
}

#[tokio::test]
async fn create_without_required_fields_is_422() {
    let sim = sim();
    for field in ["email", "first_name", "last_name"] {
        let mut p = person("a@x.example");
        p.as_object_mut().unwrap().remove(field);
        let (status, body, _) = sim.api("POST", "/v3/customers", Some(json!([p]))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{field}");
        assert!(body["errors"].get(format!("0.{field}")).is_some(), "{body}");
    }
    assert!(sim.handle.customers(HASH).is_empty());
}

#[tokio::test]
async fn duplicate_email_is_422_with_a_bigcommerce_like_body() {
    let sim = sim();
    sim.customer(None);
    let (status, body, _) = sim
        .api(
            "POST",
            "/v3/customers",
            Some(json!([person("ADA@corp.example")])),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["status"], json!(422));
    assert!(body["title"].as_str().unwrap().contains("Unable to create"));
    assert!(
        body["errors"]["0.email"]
            .as_str()
            .unwrap()
            .contains("already in use")
    );
    assert_eq!(sim.handle.customers(HASH).len(), 1);
}

#[tokio::test]
async fn empty_channel_ids_is_422_on_create_and_update() {
    let sim = sim();
    let mut p = person("a@x.example");
    p["channel_ids"] = json!([]);
    assert_eq!(
        sim.api("POST", "/v3/customers", Some(json!([p]))).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let id = sim.customer(Some(vec![1]));
    let (status, _, _) = sim
        .api(
            "PUT",
            "/v3/customers",
            Some(json!([{ "id": id, "channel_ids": [] }])),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(sim.handle.customers(HASH)[0].channel_ids, Some(vec![1]));
}

#[tokio::test]
async fn create_returns_the_customers_and_list_filters_them() {
    let sim = sim();
    let mut p = person("a@x.example");
    p["channel_ids"] = json!([2]);
    let (status, body, _) = sim
        .api(
            "POST",
            "/v3/customers",
            Some(json!([p, person("b@x.example")])),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"][0]["channel_ids"], json!([2]));
    assert_eq!(body["data"][0]["origin_channel_id"], json!(2));
    assert_eq!(body["data"][1]["channel_ids"], Value::Null);
    let (_, found, _) = sim
        .api("GET", "/v3/customers?email:in=B@X.example", None)
        .await;
    assert_eq!(found["data"].as_array().unwrap().len(), 1);
    assert_eq!(found["data"][0]["email"], json!("b@x.example"));
    let (_, page, _) = sim.api("GET", "/v3/customers?limit=1&page=2", None).await;
    assert_eq!(page["data"][0]["email"], json!("b@x.example"));
    assert_eq!(page["meta"]["pagination"]["total"], json!(2));
    assert_eq!(page["meta"]["pagination"]["total_pages"], json!(2));
    let id = body["data"][0]["id"].as_u64().unwrap();
    let (_, by_id, _) = sim
        .api("GET", &format!("/v3/customers?id:in={id}"), None)
        .await;
    assert_eq!(by_id["data"][0]["email"], json!("a@x.example"));
    let (_, by_group, _) = sim
        .api("GET", "/v3/customers?customer_group_id:in=5", None)
        .await;
    assert_eq!(by_group["data"], json!([]));
}

#[tokio::test]
async fn update_rules_batch_id_and_immutable_origin_channel() {
    let sim = sim();
    let id = sim.customer(Some(vec![1]));
    let batch: Vec<Value> = (0..11).map(|_| json!({ "id": id })).collect();
    assert_eq!(
        sim.api("PUT", "/v3/customers", Some(json!(batch))).await.0,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(
        sim.api("PUT", "/v3/customers", Some(json!([{ "first_name": "X" }])))
            .await
            .0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let (status, body, _) = sim
        .api(
            "PUT",
            "/v3/customers",
            Some(json!([{ "id": id, "origin_channel_id": 2 }])),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["errors"]["0.origin_channel_id"].is_string());
    let (status, body, _) = sim
        .api(
            "PUT",
            "/v3/customers",
            Some(json!([{ "id": id, "channel_ids": [1, 2] }])),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"][0]["channel_ids"], json!([1, 2]));
    assert_eq!(sim.handle.customers(HASH)[0].origin_channel_id, 1);
}

#[tokio::test]
async fn delete_without_filter_is_204_and_deletes_nothing() {
    let sim = sim();
    let id = sim.customer(None);
    assert_eq!(
        sim.api("DELETE", "/v3/customers", None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(sim.handle.customers(HASH).len(), 1);
    assert_eq!(
        sim.api("DELETE", &format!("/v3/customers?id:in={id}"), None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert!(sim.handle.customers(HASH).is_empty());
}

#[tokio::test]
async fn customer_groups_by_name_204_when_missing_then_created_once() {
    let sim = sim();
    assert_eq!(
        sim.api("GET", "/v2/customer_groups?name=Staff", None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    let (status, group, _) = sim
        .api(
            "POST",
            "/v2/customer_groups",
            Some(json!({ "name": "Staff" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, found, _) = sim.api("GET", "/v2/customer_groups?name=Staff", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(found[0]["id"], group["id"]);
    assert_eq!(
        sim.api(
            "POST",
            "/v2/customer_groups",
            Some(json!({ "name": "Staff" }))
        )
        .await
        .0,
        StatusCode::CONFLICT
    );
    assert_eq!(sim.handle.customer_groups(HASH).len(), 1);
}

#[tokio::test]
async fn metafields_are_created_listed_updated_and_unique_per_key() {
    let sim = sim();
    let id = sim.customer(None);
    let path = format!("/v3/customers/{id}/metafields");
    let mf = json!({ "namespace": "storegate", "key": "idp_subject", "value": "a:1", "permission_set": "app_only" });
    let (status, created, _) = sim.api("POST", &path, Some(mf.clone())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        sim.api("POST", &path, Some(mf)).await.0,
        StatusCode::CONFLICT
    );
    let mid = created["data"]["id"].as_u64().unwrap();
    let (status, _, _) = sim
        .api(
            "PUT",
            &format!("{path}/{mid}"),
            Some(json!({ "value": "a:2" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, list, _) = sim
        .api(
            "GET",
            &format!("{path}?namespace=storegate&key=idp_subject"),
            None,
        )
        .await;
    assert_eq!(list["data"][0]["value"], json!("a:2"));
    assert_eq!(
        sim.handle.metafields(HASH, id)[0].permission_set,
        "app_only"
    );
    assert_eq!(
        sim.api("GET", "/v3/customers/999/metafields", None).await.0,
        StatusCode::NOT_FOUND
    );
}
