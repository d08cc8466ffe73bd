//! Smoke tests for the test infrastructure itself (tests/support, tests/peers): each peer starts,
//! answers, and behaves the way the gateway's integration tests assume.

mod support;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::browser::{Browser, location, query_param};
use support::peers::{OidcPeer, OidcPeerConfig, PeerClient};
use support::redis::{RedisServer, ping};
use support::rogue_op::{Fault, KID_A, RogueOp};

const REDIRECT: &str = "http://127.0.0.1:9/oidc/test/callback";
const VERIFIER: &str = "smoke-test-code-verifier-0123456789-abcdefghijklmnop";

fn challenge() -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(VERIFIER.as_bytes()))
}

fn jwt_part(jwt: &str, index: usize) -> Value {
    let part = jwt.split('.').nth(index).expect("JWT part");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("JSON")
}

async fn redeem(token_endpoint: &str, code: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(token_endpoint)
        .basic_auth("gw", Some("s3cret"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .await
        .expect("token request")
}

#[tokio::test]
async fn oidc_peer_signs_in_through_dev_interactions_and_keeps_groups_in_userinfo() {
    let config = OidcPeerConfig::new()
        .client(PeerClient::new("gw", "s3cret", REDIRECT))
        .account(
            "bob",
            json!({
                "email": "bob@corp.example",
                "name": "Bob Builder",
                "groups": ["cn=bc-merchandisers,ou=groups,o=corp"],
                "mail": "bob@corp.example",
            }),
        )
        .userinfo_only("groups");
    let peer = OidcPeer::start(&config);
    let discovery: Value = reqwest::get(peer.discovery_url())
        .await
        .expect("discovery")
        .json()
        .await
        .expect("discovery JSON");
    assert_eq!(discovery["issuer"], json!(peer.issuer));
    assert_eq!(
        discovery["authorization_response_iss_parameter_supported"],
        json!(true)
    );

    let browser = Browser::new();
    let mut auth = url::Url::parse(discovery["authorization_endpoint"].as_str().unwrap()).unwrap();
    auth.query_pairs_mut()
        .append_pair("client_id", "gw")
        .append_pair("response_type", "code")
        .append_pair("scope", "openid email profile groups")
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("state", "st-1")
        .append_pair("nonce", "n-1")
        .append_pair("code_challenge", &challenge())
        .append_pair("code_challenge_method", "S256");
    // As if the gateway had answered /login with a redirect to the provider.
    let start = browser.get(auth.as_str()).await;
    let back = browser.oidc_provider_login(start, "bob").await;
    let callback = location(&back).expect("redirect to the client");
    assert!(
        callback.as_str().starts_with(REDIRECT),
        "{}",
        browser.hops_text()
    );
    assert_eq!(query_param(&callback, "state").as_deref(), Some("st-1"));
    assert_eq!(
        query_param(&callback, "iss").as_deref(),
        Some(peer.issuer.as_str())
    );
    let code = query_param(&callback, "code").expect("code");

    let token_endpoint = discovery["token_endpoint"].as_str().unwrap();
    let tokens: Value = redeem(token_endpoint, &code).await.json().await.unwrap();
    let id_token = tokens["id_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{tokens}"));
    let claims = jwt_part(id_token, 1);
    assert_eq!(claims["sub"], "bob");
    assert_eq!(claims["nonce"], "n-1");
    assert_eq!(claims["mail"], "bob@corp.example");
    assert!(claims.get("groups").is_none(), "groups is userinfo-only");

    let userinfo: Value = reqwest::Client::new()
        .get(discovery["userinfo_endpoint"].as_str().unwrap())
        .bearer_auth(tokens["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        userinfo["groups"],
        json!(["cn=bc-merchandisers,ou=groups,o=corp"])
    );

    let replay = redeem(token_endpoint, &code).await;
    assert_eq!(replay.status(), 400, "a code is redeemable once");
}

#[test]
fn redis_server_answers_ping_and_can_be_stopped_and_restarted() {
    let mut redis = RedisServer::start();
    assert!(redis.url().starts_with("redis://127.0.0.1:"));
    assert!(ping(redis.port));
    redis.stop();
    assert!(!ping(redis.port), "stopped server must not answer");
    redis.restart();
    assert!(ping(redis.port));
}

#[tokio::test]
async fn rogue_op_echoes_nonce_checks_pkce_and_applies_faults() {
    let op = RogueOp::start("gw", "s3cret").await;
    let discovery: Value = reqwest::get(op.discovery_url())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(discovery["issuer"], json!(op.issuer));
    let jwks: Value = reqwest::get(discovery["jwks_uri"].as_str().unwrap())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"][0]["kid"], KID_A);

    let browser = Browser::new();
    let sign_in = |nonce: &'static str| {
        let url = format!(
            "{}/authorize?client_id=gw&response_type=code&scope=openid&redirect_uri={REDIRECT}\
             &state=s&nonce={nonce}&code_challenge={}&code_challenge_method=S256",
            op.issuer,
            challenge()
        );
        let browser = &browser;
        async move {
            let resp = browser.get(&url).await;
            let back = location(&resp).expect("redirect back");
            query_param(&back, "code").expect("code")
        }
    };

    let code = sign_in("n-ok").await;
    let tokens: Value = redeem(&format!("{}/token", op.issuer), &code)
        .await
        .json()
        .await
        .unwrap();
    let id_token = tokens["id_token"].as_str().unwrap();
    assert_eq!(jwt_part(id_token, 0)["kid"], KID_A);
    assert_eq!(jwt_part(id_token, 1)["nonce"], "n-ok");
    assert_eq!(jwt_part(id_token, 1)["iss"], json!(op.issuer));
    assert_eq!(op.token_calls(), 1);
    assert_eq!(
        op.authorize_requests()[0].code_challenge.as_deref(),
        Some(challenge().as_str())
    );
    assert_eq!(
        redeem(&format!("{}/token", op.issuer), &code)
            .await
            .status(),
        400
    );

    op.set_fault(Fault::AlgNone);
    let code = sign_in("n-2").await;
    let tokens: Value = redeem(&format!("{}/token", op.issuer), &code)
        .await
        .json()
        .await
        .unwrap();
    let id_token = tokens["id_token"].as_str().unwrap();
    assert_eq!(jwt_part(id_token, 0)["alg"], "none");
    assert!(id_token.ends_with('.'));

    op.set_fault(Fault::MixUpIss);
    let resp = browser
        .get(&format!(
            "{}/authorize?redirect_uri={REDIRECT}&state=s",
            op.issuer
        ))
        .await;
    let back = location(&resp).unwrap();
    assert_eq!(
        query_param(&back, "iss").as_deref(),
        Some("https://other-op.example")
    );
    assert_eq!(op.token_calls(), 3);
}

/// Checks the rogue provider's tokens with openidconnect's default ID-token verifier: the valid
/// ones pass and each fault is refused. Faults that only a userinfo or callback check can catch
/// carry valid ID tokens. `IatFarFuture` needs the relying party's own `iat` check (the library
/// accepts any issue time by default), and `MultipleAudWrongAzp` is refused for the untrusted
/// extra audience before `azp` is looked at.
#[tokio::test]
async fn rogue_op_faults_break_exactly_the_intended_rule() {
    use openidconnect::core::{CoreIdToken, CoreIdTokenVerifier, CoreJsonWebKeySet};
    use openidconnect::{ClientId, ClientSecret, IssuerUrl, Nonce};

    let op = RogueOp::start("gw", "s3cret").await;
    let jwks: CoreJsonWebKeySet = reqwest::get(format!("{}/jwks", op.issuer))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let verifier = CoreIdTokenVerifier::new_confidential_client(
        ClientId::new("gw".into()),
        ClientSecret::new("s3cret".into()),
        IssuerUrl::new(op.issuer.clone()).unwrap(),
        jwks,
    );
    let browser = Browser::new();
    // `None`: the library accepts the token; `Some(text)`: it refuses, saying `text`.
    let sig = Some("Signature verification failed");
    let cases = [
        (Fault::None, None),
        (Fault::AlgNone, sig),
        (Fault::Hs256WithClientSecret, sig),
        (Fault::UnknownKid, sig),
        (Fault::WrongIss, Some("Invalid issuer")),
        (Fault::WrongAud, Some("must contain `gw`")),
        (Fault::MultipleAudWrongAzp, Some("not a trusted audience")),
        (Fault::Expired, Some("Expired")),
        (Fault::IatFarFuture, None),
        (Fault::NonceMissing, Some("missing nonce")),
        (Fault::NonceWrong, Some("nonce mismatch")),
        (Fault::TamperedPayload, sig),
        (Fault::UserinfoSubMismatch, None),
        (Fault::MixUpIss, None),
    ];
    for (fault, refusal) in cases {
        op.set_fault(fault);
        let url = format!(
            "{}/authorize?client_id=gw&response_type=code&scope=openid&redirect_uri={REDIRECT}\
             &state=s&nonce=n-{fault:?}&code_challenge={}&code_challenge_method=S256",
            op.issuer,
            challenge()
        );
        let back = location(&browser.get(&url).await).unwrap();
        let code = query_param(&back, "code").unwrap();
        let tokens: Value = redeem(&format!("{}/token", op.issuer), &code)
            .await
            .json()
            .await
            .unwrap();
        let raw = tokens["id_token"].as_str().unwrap();
        let verdict = raw
            .parse::<CoreIdToken>()
            .map_err(|e| e.to_string())
            .and_then(|t| {
                t.claims(&verifier, &Nonce::new(format!("n-{fault:?}")))
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            });
        let as_expected = match (&verdict, refusal) {
            (Ok(()), None) => true,
            (Err(e), Some(want)) => e.contains(want),
            _ => false,
        };
        assert!(
            as_expected,
            "{fault:?}: expected {refusal:?}, got {verdict:?} for {}",
            jwt_part(raw, 1)
        );
    }
}

/// A server on 127.0.0.1 answering every request with `answer` after recording it in `rec`.
async fn recording_server(
    rec: support::tools::Recorder,
    answer: fn(&axum::extract::Request) -> axum::response::Response,
) -> String {
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let rec = rec.clone();
        async move {
            rec.record(&req);
            answer(&req)
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    base
}

/// What tests/it/forward_auth_traefik.rs relies on, with a stand-in for the gateway: Traefik
/// asks `/auth/verify` with `X-Forwarded-*` of the real request (the client's dropped by the
/// entry point), passes a non-2xx answer (and its `Location`) to the browser, replaces the
/// client's identity header with the answer's, and never calls the upstream on a refusal.
#[tokio::test]
async fn traefik_forward_auth_sends_the_real_request_and_replaces_the_identity_header() {
    use axum::response::IntoResponse;
    let auth_seen = support::tools::Recorder::default();
    let up_seen = support::tools::Recorder::default();
    let auth = recording_server(auth_seen.clone(), |req| {
        let uri = req.headers().get("x-forwarded-uri");
        if uri.is_some_and(|u| u.as_bytes().starts_with(b"/deny")) {
            (
                axum::http::StatusCode::FOUND,
                [("location", "http://sign-in.example/continue")],
            )
                .into_response()
        } else {
            ([("x-storegate-identity", "from-auth")], "ok").into_response()
        }
    })
    .await;
    let upstream = recording_server(up_seen.clone(), |_| "upstream".into_response()).await;
    let port = support::free_port();
    let _traefik = support::traefik::Traefik::start(support::front_door::Behind {
        port,
        gateway: auth,
        upstream,
    })
    .await;
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let r = c
        .get(format!("http://127.0.0.1:{port}/deny/me?q=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "http://sign-in.example/continue");
    assert!(up_seen.seen().is_empty(), "the upstream was called");

    let r = c
        .post(format!("http://127.0.0.1:{port}/orders?x=1"))
        .header("x-forwarded-uri", "/elsewhere")
        .header("x-forwarded-host", "elsewhere.example")
        .header("x-forwarded-method", "GET")
        .header("x-storegate-identity", "forged")
        .header("cookie", "storegate_session=abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let asked = auth_seen.seen().pop().unwrap();
    assert_eq!(asked.path, "/auth/verify");
    let h = |k: &str| asked.headers.get(k).and_then(|v| v.to_str().ok());
    assert_eq!(h("x-forwarded-uri"), Some("/orders?x=1"));
    assert_eq!(h("x-forwarded-method"), Some("POST"));
    let host = format!("127.0.0.1:{port}");
    assert_eq!(h("x-forwarded-host"), Some(host.as_str()));
    assert_eq!(h("x-forwarded-proto"), Some("http"));
    assert_eq!(h("cookie"), Some("storegate_session=abc"));
    let got = up_seen.seen().pop().unwrap();
    assert_eq!(got.path, "/orders?x=1");
    assert_eq!(got.identity(), Some("from-auth"));
}
