//! A two-store simulator on a manual clock, token crafting and request helpers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response, StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};
use storegate::bigcommerce::sim::{
    LoginRejection, SimChannel, SimConfig, SimHandle, SimStore, Simulator,
};
use storegate::clock::{ManualClock, UnixTime};
use storegate::config::BigCommerceAccount;
use storegate::secret::Secret;
use tower::ServiceExt;

pub const NOW: UnixTime = 1_760_000_000;
pub const HASH: &str = "abc123";
pub const OTHER_HASH: &str = "def456";
pub const TOKEN: &str = "api-token-abc";
pub const CLIENT_ID: &str = "client-1";
pub const SECRET: &str = "s3cret-key";
pub const HEADER: &str = r#"{"typ":"JWT","alg":"HS256"}"#;
pub const BROWSER: &str = "198.51.100.7";

pub struct Sim {
    pub router: Router,
    pub handle: SimHandle,
    pub clock: ManualClock,
}

pub fn config() -> SimConfig {
    SimConfig::new(vec![
        SimStore {
            store_hash: HASH.into(),
            name: "Corp Shop".into(),
            access_token: Secret::new(TOKEN),
            client_id: CLIENT_ID.into(),
            client_secret: Secret::new(SECRET),
            channels: vec![
                SimChannel {
                    id: 1,
                    name: "Main".into(),
                },
                SimChannel {
                    id: 2,
                    name: "Wholesale".into(),
                },
            ],
        },
        SimStore {
            store_hash: OTHER_HASH.into(),
            name: "Other Shop".into(),
            access_token: Secret::new("api-token-def"),
            client_id: "client-2".into(),
            client_secret: Secret::new("other-secret"),
            channels: vec![SimChannel {
                id: 1,
                name: "Main".into(),
            }],
        },
    ])
}

pub fn sim_with(config: SimConfig) -> Sim {
    let clock = ManualClock::at(NOW);
    let (router, handle) = Simulator::with_clock(config, Arc::new(clock.clone()));
    Sim {
        router,
        handle,
        clock,
    }
}

pub fn sim() -> Sim {
    sim_with(config())
}

pub fn account(api_base: &str) -> BigCommerceAccount {
    BigCommerceAccount {
        id: "main".into(),
        store_hash: HASH.into(),
        api_base: url::Url::parse(api_base).unwrap(),
        access_token: Secret::new(TOKEN),
        client_id: CLIENT_ID.into(),
        client_secret: Secret::new(SECRET),
        timeout: Duration::from_secs(5),
        b2b: None,
        webhook_secret: None,
    }
}

/// A token with any header and claims, signed HS256 with `secret`.
pub fn craft(header: &str, claims: &Value, secret: &str) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap())
    );
    let sig = jsonwebtoken::crypto::sign(
        input.as_bytes(),
        &EncodingKey::from_secret(secret.as_bytes()),
        Algorithm::HS256,
    )
    .unwrap();
    format!("{input}.{sig}")
}

pub fn claims(customer_id: u64, channel_id: u64) -> Value {
    json!({
        "iss": CLIENT_ID,
        "iat": NOW,
        "jti": uuid::Uuid::new_v4().to_string(),
        "operation": "customer_login",
        "store_hash": HASH,
        "customer_id": customer_id,
        "channel_id": channel_id,
        "redirect_to": "/cart.php",
    })
}

pub fn prefix(channel: u64) -> String {
    format!("/storefront/{HASH}/{channel}")
}

impl Sim {
    pub fn customer(&self, channels: Option<Vec<u64>>) -> u64 {
        self.handle
            .add_customer(HASH, "ada@corp.example", "Ada", "Lovelace", channels)
            .unwrap()
    }

    pub async fn request(&self, req: Request<Body>) -> Response<Body> {
        self.router.clone().oneshot(req).await.unwrap()
    }

    /// A browser GET from [`BROWSER`], with an optional cookie.
    pub async fn browse(&self, path: &str, cookie: Option<&str>) -> Response<Body> {
        let mut req = Request::get(path);
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        let mut req = req.body(Body::empty()).unwrap();
        let addr: SocketAddr = format!("{BROWSER}:50000").parse().unwrap();
        req.extensions_mut().insert(ConnectInfo(addr));
        self.request(req).await
    }

    pub async fn present(&self, channel: u64, token: &str) -> Response<Body> {
        self.browse(&format!("{}/login/token/{token}", prefix(channel)), None)
            .await
    }

    /// Asserts the storefront said "Invalid login" for exactly `reason`, and made no session.
    pub async fn assert_rejected(
        &self,
        channel: u64,
        resp: Response<Body>,
        reason: LoginRejection,
    ) {
        assert_eq!(resp.status(), StatusCode::FOUND);
        assert_eq!(location(&resp), format!("{}/login.php", prefix(channel)));
        assert!(
            resp.headers().get(header::SET_COOKIE).is_none(),
            "no session on rejection"
        );
        assert_eq!(
            self.handle.rejected_logins().last().map(|r| r.reason),
            Some(reason)
        );
        assert!(self.handle.accepted_logins().is_empty());
        let page = text(self.browse(&location(&resp), None).await).await;
        assert!(page.contains("Invalid login"), "{page}");
    }

    pub async fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value, axum::http::HeaderMap) {
        let req = Request::builder()
            .method(method)
            .uri(format!("/stores/{HASH}{path}"))
            .header("X-Auth-Token", TOKEN)
            .header("Content-Type", "application/json")
            .body(body.map(|b| Body::from(b.to_string())).unwrap_or_default())
            .unwrap();
        let resp = self.request(req).await;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, value, headers)
    }
}

pub fn location(resp: &Response<Body>) -> String {
    resp.headers()
        .get(header::LOCATION)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

pub fn set_cookie(resp: &Response<Body>) -> Option<String> {
    resp.headers()
        .get(header::SET_COOKIE)
        .map(|v| v.to_str().unwrap().to_owned())
}

pub async fn text(resp: Response<Body>) -> String {
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}
