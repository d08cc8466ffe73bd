//! The simulator's `/v3/hooks` rules (docs/bigcommerce.md, "Webhooks and logs"): https on port 443
//! only, known scopes, headers sent back on delivery, retries on non-2xx, and deactivation when
//! the retries run out.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use parking_lot::Mutex;
use serde_json::{Value, json};

use super::fixture::{HASH, sim};

#[tokio::test]
async fn a_hook_destination_must_be_https_on_port_443() {
    let s = sim();
    for (dest, ok) in [
        ("https://hooks.example.com/bc", true),
        ("https://hooks.example.com:443/bc", true),
        ("http://hooks.example.com/bc", false),
        ("https://hooks.example.com:8443/bc", false),
        // Loopback plain http only with the test override.
        ("http://127.0.0.1:9/bc", false),
        ("not a url", false),
    ] {
        let (status, body, _) = s
            .api(
                "POST",
                "/v3/hooks",
                Some(json!({"scope": "store/customer/*", "destination": dest, "is_active": true})),
            )
            .await;
        let want = if ok {
            StatusCode::OK
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        assert_eq!(status, want, "{dest}: {body}");
    }
    s.handle.dangerously_allow_loopback_http_hook_destinations();
    let (status, _, _) = s
        .api(
            "POST",
            "/v3/hooks",
            Some(json!({"scope": "store/customer/*", "destination": "http://127.0.0.1:9/bc"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.handle.hooks(HASH).len(), 3);
}

#[tokio::test]
async fn an_unknown_scope_is_refused_and_hooks_need_the_api_token() {
    let s = sim();
    let (status, _, _) = s
        .api(
            "POST",
            "/v3/hooks",
            Some(
                json!({"scope": "store/customer/teleported", "destination": "https://h.example/x"}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let req = axum::http::Request::get(format!("/stores/{HASH}/v3/hooks"))
        .header("X-Auth-Token", "wrong")
        .body(axum::body::Body::empty())
        .unwrap();
    assert_eq!(s.request(req).await.status(), StatusCode::UNAUTHORIZED);
}

/// A receiver on loopback that answers `status` and records what it got.
async fn receiver(status: Arc<AtomicU16>) -> (String, Arc<Mutex<Vec<(HeaderMap, Value)>>>) {
    let got: Arc<Mutex<Vec<(HeaderMap, Value)>>> = Arc::default();
    let seen = Arc::clone(&got);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::Json<Value>| {
            let seen = Arc::clone(&seen);
            let status = Arc::clone(&status);
            async move {
                seen.lock().push((headers, body.0));
                StatusCode::from_u16(status.load(Ordering::SeqCst)).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, got)
}

async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_change_through_the_api_is_delivered_with_the_hooks_headers_and_payload_shape() {
    let s = sim();
    s.handle.dangerously_allow_loopback_http_hook_destinations();
    let (url, got) = receiver(Arc::new(AtomicU16::new(200))).await;
    let (status, _, _) = s
        .api(
            "POST",
            "/v3/hooks",
            Some(
                json!({"scope": "store/customer/updated", "destination": url, "is_active": true,
                        "headers": {"X-Storegate-Hook-Secret": "s3cret"}}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let id = s.customer(None);
    // Seeding the customer sent nothing; an update through the API is delivered.
    let (status, _, _) = s
        .api(
            "PUT",
            "/v3/customers",
            Some(json!([{"id": id, "last_name": "Byron"}])),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    wait_for("the delivery", || !got.lock().is_empty()).await;
    let (headers, body) = got.lock()[0].clone();
    assert_eq!(headers.get("x-storegate-hook-secret").unwrap(), "s3cret");
    assert_eq!(body["scope"], "store/customer/updated");
    assert_eq!(body["data"], json!({"type": "customer", "id": id}));
    assert_eq!(body["producer"], format!("stores/{HASH}"));
    assert!(body["store_id"].is_string() && body["hash"].is_string());
    assert!(body["created_at"].is_i64());
    assert_eq!(got.lock().len(), 1, "only the matching scope");
}

#[tokio::test]
async fn a_failing_destination_is_retried_then_the_hook_is_deactivated() {
    let s = sim();
    s.handle.dangerously_allow_loopback_http_hook_destinations();
    let answer = Arc::new(AtomicU16::new(500));
    let (url, got) = receiver(Arc::clone(&answer)).await;
    s.api(
        "POST",
        "/v3/hooks",
        Some(json!({"scope": "store/customer/*", "destination": url})),
    )
    .await;
    let id = s.customer(None);
    assert!(
        s.handle
            .edit_customer_in_control_panel(HASH, id, |c| c.first_name = "Augusta".into())
    );
    let attempts = 1 + storegate::bigcommerce::sim::HOOK_RETRY_DELAYS.len();
    wait_for("the hook to be deactivated", || {
        s.handle.hooks(HASH).iter().all(|h| !h.is_active)
    })
    .await;
    assert_eq!(got.lock().len(), attempts, "first try and every retry");
    let bodies: Vec<Value> = got.lock().iter().map(|(_, b)| b.clone()).collect();
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "a retry is the same body"
    );
    // A deactivated hook gets nothing more.
    answer.store(200, Ordering::SeqCst);
    assert!(
        s.handle
            .edit_customer_in_control_panel(HASH, id, |c| c.first_name = "Ada".into())
    );
    tokio::task::yield_now().await;
    assert_eq!(
        s.handle.hook_deliveries().len(),
        attempts,
        "nothing sent to an inactive hook"
    );
}
