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

/// Defines the string attribute `name`; returns its id.
async fn attribute(sim: &Sim, name: &str) -> u64 {
    let (status, body, _) = sim
        .api(
            "POST",
            "/v3/customers/attributes",
            Some(json!([{ "name": name, "type": "string" }])),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"][0]["id"].as_u64().unwrap()
}

#[tokio::test]
async fn attributes_are_listed_by_name_unique_and_at_most_50_per_store() {
    let sim = sim();
    let id = attribute(&sim, "storegate_subject").await;
    let (status, list, _) = sim
        .api(
            "GET",
            "/v3/customers/attributes?name=storegate_subject",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        list["data"],
        json!([{ "id": id, "name": "storegate_subject", "type": "string" }])
    );
    let (_, none, _) = sim
        .api("GET", "/v3/customers/attributes?name=other", None)
        .await;
    assert_eq!(none["data"], json!([]));
    // The same name twice: 422.
    let (status, _, _) = sim
        .api(
            "POST",
            "/v3/customers/attributes",
            Some(json!([{ "name": "storegate_subject", "type": "string" }])),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // Up to 50 per store; the request that would pass 50 is refused as a whole.
    for n in 1..49 {
        attribute(&sim, &format!("a{n}")).await;
    }
    assert_eq!(sim.handle.attributes(HASH).len(), 49);
    let (status, body, _) = sim
        .api(
            "POST",
            "/v3/customers/attributes",
            Some(json!([{ "name": "x1", "type": "string" }, { "name": "x2", "type": "string" }])),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["errors"]["attributes"]
            .as_str()
            .unwrap()
            .contains("at most 50")
    );
    assert_eq!(sim.handle.attributes(HASH).len(), 49, "nothing created");
    attribute(&sim, "x1").await;
    assert_eq!(sim.handle.attributes(HASH).len(), 50);
    let (status, _, _) = sim
        .api(
            "POST",
            "/v3/customers/attributes",
            Some(json!([{ "name": "x2", "type": "string" }])),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // Another store has its own 50.
    assert!(sim.handle.attributes(OTHER_HASH).is_empty());
}

#[tokio::test]
async fn attribute_values_upsert_10_per_call_413_above_422_on_unknown() {
    let sim = sim();
    let attr = attribute(&sim, "storegate_subject").await;
    let ada = sim.customer(None);
    let value = |customer: u64, attribute: u64, v: &str| json!({ "customer_id": customer, "attribute_id": attribute, "value": v });
    let path = "/v3/customers/attribute-values";
    let eleven: Vec<Value> = (0..11).map(|_| value(ada, attr, "x")).collect();
    assert_eq!(
        sim.api("PUT", path, Some(json!(eleven))).await.0,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    // An unknown attribute or customer fails the whole batch: the valid item is not written.
    for bad in [value(ada, attr + 100, "x"), value(999, attr, "x")] {
        let (status, body, _) = sim
            .api("PUT", path, Some(json!([value(ada, attr, "nam:a"), bad])))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(
            body["errors"].get("1.attribute_id").is_some()
                || body["errors"].get("1.customer_id").is_some(),
            "{body}"
        );
        assert!(sim.handle.attribute_values(HASH, ada).is_empty());
    }
    let (status, first, _) = sim
        .api("PUT", path, Some(json!([value(ada, attr, "nam:a")])))
        .await;
    assert_eq!(status, StatusCode::OK);
    // An upsert: the same row, a new value.
    let (_, second, _) = sim
        .api("PUT", path, Some(json!([value(ada, attr, "nam:b")])))
        .await;
    assert_eq!(first["data"][0]["id"], second["data"][0]["id"]);
    let values = sim.handle.attribute_values(HASH, ada);
    assert_eq!(values.len(), 1);
    assert_eq!(values[0].attribute_value, "nam:b");
    let (_, listed, _) = sim
        .api("GET", &format!("{path}?attribute_id:in={attr}"), None)
        .await;
    assert_eq!(
        listed["data"],
        json!([{ "id": values[0].id, "customer_id": ada, "attribute_id": attr, "attribute_value": "nam:b" }])
    );
}

#[tokio::test]
async fn inline_attributes_on_create_are_validated_and_returned_with_include() {
    let sim = sim();
    let attr = attribute(&sim, "storegate_subject").await;
    let with = |email: &str, id: u64| {
        let mut p = person(email);
        p["attributes"] =
            json!([{ "attribute_id": id, "attribute_value": format!("nam:{email}") }]);
        p
    };
    // An unknown attribute id fails the whole batch.
    let (status, body, _) = sim
        .api(
            "POST",
            "/v3/customers",
            Some(json!([
                with("a@x.example", attr),
                with("b@x.example", attr + 7)
            ])),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["errors"].get("1.attributes").is_some(), "{body}");
    assert!(sim.handle.customers(HASH).is_empty());
    let (status, created, _) = sim
        .api(
            "POST",
            "/v3/customers",
            Some(json!([with("a@x.example", attr), person("c@x.example")])),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let a = created["data"][0]["id"].as_u64().unwrap();
    assert_eq!(
        created["data"][0]["attributes"][0]["attribute_value"],
        json!("nam:a@x.example")
    );
    assert_eq!(
        sim.handle
            .attribute_value(HASH, a, "storegate_subject")
            .as_deref(),
        Some("nam:a@x.example")
    );
    let (_, plain, _) = sim
        .api("GET", "/v3/customers?email:in=a@x.example", None)
        .await;
    assert!(
        plain["data"][0].get("attributes").is_none(),
        "only with include=attributes"
    );
    let (_, with_attrs, _) = sim
        .api(
            "GET",
            "/v3/customers?email:in=a@x.example,c@x.example&include=attributes",
            None,
        )
        .await;
    let data = with_attrs["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    let attrs_of = |email: &str| {
        data.iter()
            .find(|c| c["email"] == json!(email))
            .map(|c| c["attributes"].clone())
            .unwrap()
    };
    assert_eq!(attrs_of("a@x.example")[0]["attribute_id"], json!(attr));
    assert_eq!(attrs_of("c@x.example"), json!([]));
}

#[tokio::test]
async fn a_taken_email_refuses_the_whole_batch_naming_each_duplicate() {
    let sim = sim();
    sim.customer(None); // ada@corp.example
    sim.handle
        .add_customer(HASH, "bob@corp.example", "Bob", "B", None)
        .unwrap();
    let (status, body, _) = sim
        .api(
            "POST",
            "/v3/customers",
            Some(json!([
                person("new@corp.example"),
                person("ADA@corp.example"),
                person("bob@corp.example")
            ])),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let errors = body["errors"].as_object().unwrap();
    assert_eq!(errors.len(), 2, "{body}");
    assert!(
        errors["1.email"]
            .as_str()
            .unwrap()
            .contains("ADA@corp.example")
    );
    assert!(
        errors["2.email"]
            .as_str()
            .unwrap()
            .contains("bob@corp.example")
    );
    assert_eq!(
        sim.handle.customers(HASH).len(),
        2,
        "new@ was not created either"
    );
}
