//! Evidence for the development OP: the full code flow against openidconnect-rs (an independent
//! client implementation), and each refusal with its exact outcome.

use super::*;
use crate::clock::ManualClock;
use axum::body::Body;
use axum::http::{Request, header};
use tower::ServiceExt;

const CLIENT_ID: &str = "storegate";
/// Characters that RFC 6749 §2.3.1 form-urlencoding changes, to prove Basic decoding.
const SECRET: &str = "s3cret: with space&plus+percent%";
const REDIRECT: &str = "http://127.0.0.1:9/auth/callback";
const LOGGED_OUT: &str = "http://127.0.0.1:9/signed-out";
const ISSUER: &str = "http://127.0.0.1:9/op";
const T0: UnixTime = 1_700_000_000;

fn config(issuer: &str) -> DevOpConfig {
    DevOpConfig {
        issuer: issuer.to_owned(),
        clients: vec![
            DevClient {
                client_id: CLIENT_ID.to_owned(),
                client_secret: Secret::new(SECRET),
                redirect_uris: vec![REDIRECT.to_owned()],
                post_logout_redirect_uris: vec![LOGGED_OUT.to_owned()],
            },
            DevClient {
                client_id: "other".to_owned(),
                client_secret: Secret::new("other-secret"),
                redirect_uris: vec!["http://127.0.0.1:9/other/callback".to_owned()],
                post_logout_redirect_uris: vec![],
            },
        ],
        users: demo_users(),
    }
}

fn key() -> DevSigningKey {
    static KEY: std::sync::OnceLock<DevSigningKey> = std::sync::OnceLock::new();
    KEY.get_or_init(|| DevSigningKey::demo_only_embedded().unwrap())
        .clone()
}

fn op_at(clock: &ManualClock) -> DevOp {
    DevOp::with_key_and_clock(config(ISSUER), key(), Arc::new(clock.clone())).unwrap()
}

struct Pkce {
    verifier: String,
    challenge: String,
}

fn pkce() -> Pkce {
    let verifier = random_token();
    let challenge = B64URL.encode(Sha256::digest(verifier.as_bytes()));
    Pkce {
        verifier,
        challenge,
    }
}

fn authorize_query(challenge: Option<&str>, redirect_uri: &str) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    q.append_pair("response_type", "code")
        .append_pair("client_id", CLIENT_ID)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("scope", "openid email profile")
        .append_pair("state", "st<ate>")
        .append_pair("nonce", "n-0S6_WzA2Mj");
    if let Some(c) = challenge {
        q.append_pair("code_challenge", c)
            .append_pair("code_challenge_method", "S256");
    }
    q.finish()
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn location(&self) -> Url {
        Url::parse(self.headers[LOCATION].to_str().unwrap()).unwrap()
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

async fn call(app: &Router, req: Request<Body>) -> Reply {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    Reply {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

async fn fetch(app: &Router, uri: &str) -> Reply {
    call(app, Request::get(uri).body(Body::empty()).unwrap()).await
}

fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).unwrap() + marker.len();
    let len = html[start..].find('"').unwrap();
    html[start..start + len].to_owned()
}

fn form_action(html: &str) -> String {
    let marker = "action=\"";
    let start = html.find(marker).unwrap() + marker.len();
    let len = html[start..].find('"').unwrap();
    html[start..start + len].to_owned()
}

fn set_cookie(reply: &Reply) -> String {
    let v = reply.headers[SET_COOKIE].to_str().unwrap();
    v.split(';').next().unwrap().to_owned()
}

/// GET /authorize, then pick `sub` with the page's form values and cookie: the redirect reply.
async fn sign_in(app: &Router, challenge: &str, sub: &str) -> Reply {
    let page = fetch(
        app,
        &format!(
            "/op/authorize?{}",
            authorize_query(Some(challenge), REDIRECT)
        ),
    )
    .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("request", &hidden(&page.body, "request"))
        .append_pair("csrf", &hidden(&page.body, "csrf"))
        .append_pair("sub", sub)
        .finish();
    call(
        app,
        Request::post("/op/authorize/pick")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::COOKIE, set_cookie(&page))
            .body(Body::from(form))
            .unwrap(),
    )
    .await
}

async fn code_for(app: &Router, challenge: &str) -> String {
    let reply = sign_in(app, challenge, "demo-mia").await;
    assert_eq!(reply.status, StatusCode::FOUND, "{}", reply.body);
    query_param(&reply.location(), "code").unwrap()
}

fn query_param(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn basic(id: &str, secret: &str) -> String {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!(
        "Basic {}",
        B64.encode(format!("{}:{}", enc(id), enc(secret)))
    )
}

async fn redeem(app: &Router, auth: Option<&str>, fields: &[(&str, &str)]) -> Reply {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish();
    let mut req = Request::post("/op/token")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(a) = auth {
        req = req.header(header::AUTHORIZATION, a);
    }
    call(app, req.body(Body::from(body)).unwrap()).await
}

async fn redeem_basic(app: &Router, code: &str, verifier: &str) -> Reply {
    redeem(
        app,
        Some(&basic(CLIENT_ID, SECRET)),
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
        ],
    )
    .await
}

fn app_at(clock: &ManualClock) -> Router {
    mounted_router(op_at(clock))
}

fn assert_token_error(reply: &Reply, status: StatusCode, error: &str) {
    assert_eq!(reply.status, status, "{}", reply.body);
    assert_eq!(reply.json()["error"], error, "{}", reply.body);
    assert_eq!(reply.headers[CACHE_CONTROL], "no-store");
}

// ---------------------------------------------------------------------------------------------
// Interoperability: openidconnect-rs as the client, over a real socket.
// ---------------------------------------------------------------------------------------------

mod interop {
    use super::*;
    use openidconnect::core::{
        CoreClient, CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
        CoreProviderMetadata, CoreResponseType,
    };
    use openidconnect::{
        AccessTokenHash, AdditionalClaims, AuthenticationFlow, AuthorizationCode, ClientId,
        ClientSecret, CsrfToken, IdToken, IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge,
        RedirectUrl, Scope, TokenResponse,
    };

    #[derive(Debug, Clone, Serialize, Deserialize)]
    struct GroupsClaims {
        groups: Vec<String>,
    }
    impl AdditionalClaims for GroupsClaims {}
    type GroupsIdToken = IdToken<
        GroupsClaims,
        CoreGenderClaim,
        CoreJweContentEncryptionAlgorithm,
        CoreJwsSigningAlgorithm,
    >;

    /// Serves the OP on 127.0.0.1:0 with the issuer path `path` ("" or "/op"); returns the issuer.
    async fn serve(path: &str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}{path}", listener.local_addr().unwrap());
        let op = DevOp::with_key_and_clock(config(&issuer), key(), Arc::new(SystemClock)).unwrap();
        // A gateway-like root router with the OP merged in, as `storegate demo` will do.
        let app = Router::new()
            .route("/healthz", axum::routing::get(|| async { "ok" }))
            .merge(mounted_router(op));
        tokio::spawn(async move { axum::serve(listener, app).await });
        issuer
    }

    async fn full_code_flow(path: &str) {
        let issuer = serve(path).await;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let meta =
            CoreProviderMetadata::discover_async(IssuerUrl::new(issuer.clone()).unwrap(), &http)
                .await
                .unwrap();
        let client = CoreClient::from_provider_metadata(
            meta,
            ClientId::new(CLIENT_ID.to_owned()),
            Some(ClientSecret::new(SECRET.to_owned())),
        )
        .set_redirect_uri(RedirectUrl::new(REDIRECT.to_owned()).unwrap());
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (auth_url, state, nonce) = client
            .authorize_url(
                AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new("email".to_owned()))
            .add_scope(Scope::new("profile".to_owned()))
            .set_pkce_challenge(challenge)
            .url();

        let page = http.get(auth_url.clone()).send().await.unwrap();
        assert_eq!(page.status(), 200);
        let cookie = page.headers()[SET_COOKIE].to_str().unwrap().to_owned();
        let cookie = cookie.split(';').next().unwrap().to_owned();
        let html = page.text().await.unwrap();
        assert!(html.contains("Development identity provider — not for production"));
        let picked = http
            // Where a browser would post the form: its action resolved against the page URL.
            .post(auth_url.join(&form_action(&html)).unwrap())
            .header(header::COOKIE, cookie)
            .form(&[
                ("request", hidden(&html, "request")),
                ("csrf", hidden(&html, "csrf")),
                ("sub", "demo-mia".to_owned()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(picked.status(), 302);
        let location = Url::parse(picked.headers()[LOCATION].to_str().unwrap()).unwrap();
        assert!(location.as_str().starts_with(REDIRECT));
        assert_eq!(
            query_param(&location, "state").as_deref(),
            Some(state.secret().as_str())
        );
        // RFC 9207: the iss parameter is exactly the issuer from discovery.
        assert_eq!(
            query_param(&location, "iss").as_deref(),
            Some(issuer.as_str())
        );
        let code = query_param(&location, "code").unwrap();

        let tokens = client
            .exchange_code(AuthorizationCode::new(code))
            .unwrap()
            .set_pkce_verifier(verifier)
            .request_async(&http)
            .await
            .unwrap();
        let id_token = tokens.id_token().unwrap();
        let verifier = client.id_token_verifier();
        // openidconnect checks signature against the served JWKS, iss, aud, azp, exp, nonce.
        let claims = id_token.claims(&verifier, &nonce).unwrap();
        assert_eq!(claims.issuer().as_str(), issuer);
        assert_eq!(claims.subject().as_str(), "demo-mia");
        assert_eq!(
            claims.email().map(|e| e.as_str()),
            Some("mia.merchandiser@example.com")
        );
        assert_eq!(
            claims
                .given_name()
                .and_then(|n| n.get(None))
                .map(|n| n.as_str()),
            Some("Mia")
        );
        assert_eq!(claims.auth_context_ref().map(|a| a.as_str()), Some(DEV_ACR));
        assert!(claims.auth_time().is_some());
        let at_hash = AccessTokenHash::from_token(
            tokens.access_token(),
            id_token.signing_alg().unwrap(),
            id_token.signing_key(&verifier).unwrap(),
        )
        .unwrap();
        assert_eq!(claims.access_token_hash(), Some(&at_hash));

        // The same token through a client type that knows the groups claim.
        let grouped: GroupsIdToken = id_token.to_string().parse().unwrap();
        let grouped = grouped.claims(&verifier, &nonce).unwrap();
        assert_eq!(grouped.additional_claims().groups, ["bc-merchandisers"]);

        let info: Value = http
            .get(format!("{issuer}/userinfo"))
            .bearer_auth(tokens.access_token().secret())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(info["sub"], "demo-mia");
        assert_eq!(info["groups"], json!(["bc-merchandisers"]));
    }

    #[tokio::test]
    async fn openidconnect_client_completes_code_flow_with_op_under_path_prefix() {
        full_code_flow("/op").await;
    }

    #[tokio::test]
    async fn openidconnect_client_completes_code_flow_with_op_at_bare_origin() {
        full_code_flow("").await;
    }
}

// ---------------------------------------------------------------------------------------------
// Discovery and keys
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn discovery_advertises_code_flow_pkce_s256_and_rfc9207() {
    let app = app_at(&ManualClock::at(T0));
    let d = fetch(&app, "/op/.well-known/openid-configuration")
        .await
        .json();
    assert_eq!(d["issuer"], ISSUER);
    assert_eq!(d["authorization_endpoint"], format!("{ISSUER}/authorize"));
    assert_eq!(d["token_endpoint"], format!("{ISSUER}/token"));
    assert_eq!(d["userinfo_endpoint"], format!("{ISSUER}/userinfo"));
    assert_eq!(d["jwks_uri"], format!("{ISSUER}/jwks"));
    assert_eq!(d["end_session_endpoint"], format!("{ISSUER}/end_session"));
    assert_eq!(d["response_types_supported"], json!(["code"]));
    assert_eq!(d["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(d["id_token_signing_alg_values_supported"], json!(["RS256"]));
    assert_eq!(
        d["token_endpoint_auth_methods_supported"],
        json!(["client_secret_basic", "client_secret_post"])
    );
    assert_eq!(d["authorization_response_iss_parameter_supported"], true);
}

#[tokio::test]
async fn jwks_serves_public_key_only_with_thumbprint_kid() {
    let app = app_at(&ManualClock::at(T0));
    let jwks = fetch(&app, "/op/jwks").await.json();
    let k = &jwks["keys"][0];
    assert_eq!(k["kty"], "RSA");
    assert_eq!(k["alg"], "RS256");
    assert_eq!(k["kid"], key().kid());
    assert!(k.get("d").is_none() && k.get("p").is_none());
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
}

#[test]
fn signing_key_debug_shows_no_key_material() {
    let dbg = format!("{:?}", key());
    assert!(dbg.starts_with("DevSigningKey { kid: "), "{dbg}");
    assert!(!dbg.contains("BEGIN"));
}

// ---------------------------------------------------------------------------------------------
// /authorize refusals
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn authorize_refuses_unregistered_redirect_uri_with_400_and_no_redirect() {
    let app = app_at(&ManualClock::at(T0));
    let p = pkce();
    for wrong in [
        "http://127.0.0.1:9/auth/callback/",
        "http://127.0.0.1:9/auth/callback?x=1",
        "http://evil.example/auth/callback",
        "http://127.0.0.1:9/other/callback", // registered, but for another client
    ] {
        let r = fetch(
            &app,
            &format!(
                "/op/authorize?{}",
                authorize_query(Some(&p.challenge), wrong)
            ),
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{wrong}");
        assert!(r.headers.get(LOCATION).is_none(), "{wrong}");
        assert!(r.body.contains("redirect_uri is not registered"), "{wrong}");
    }
}

#[tokio::test]
async fn authorize_refuses_unknown_client_with_400() {
    let app = app_at(&ManualClock::at(T0));
    let q = authorize_query(Some(&pkce().challenge), REDIRECT).replace(CLIENT_ID, "nobody");
    let r = fetch(&app, &format!("/op/authorize?{q}")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.headers.get(LOCATION).is_none());
}

#[tokio::test]
async fn authorize_refuses_missing_pkce_with_400() {
    let app = app_at(&ManualClock::at(T0));
    let r = fetch(
        &app,
        &format!("/op/authorize?{}", authorize_query(None, REDIRECT)),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.headers.get(LOCATION).is_none());
    assert!(r.body.contains("code_challenge is required"));
}

#[test]
fn authorize_refuses_plain_pkce_and_malformed_challenge() {
    let op = op_at(&ManualClock::at(T0));
    let base = |extra: &[(&str, &str)]| {
        let mut v: Vec<(String, String)> = [
            ("response_type", "code"),
            ("client_id", CLIENT_ID),
            ("redirect_uri", REDIRECT),
            ("scope", "openid"),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        v.sort();
        v
    };
    let challenge = pkce().challenge;
    let cases: [(&[(&str, &str)], AuthorizeError); 4] = [
        (
            &[("code_challenge", &challenge)],
            AuthorizeError::UnsupportedChallengeMethod,
        ),
        (
            &[
                ("code_challenge", &challenge),
                ("code_challenge_method", "plain"),
            ],
            AuthorizeError::UnsupportedChallengeMethod,
        ),
        (
            &[
                ("code_challenge", "too-short"),
                ("code_challenge_method", "S256"),
            ],
            AuthorizeError::MalformedCodeChallenge,
        ),
        (
            &[
                ("code_challenge", &challenge),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
            ],
            AuthorizeError::DuplicateParameter("code_challenge".to_owned()),
        ),
    ];
    for (extra, expected) in cases {
        let got = op.begin_authorization(&base(extra), None).unwrap_err();
        assert_eq!(got, expected, "{extra:?}");
    }
}

#[test]
fn authorize_refuses_request_without_openid_scope_or_code_response_type() {
    let op = op_at(&ManualClock::at(T0));
    let challenge = pkce().challenge;
    let req = |response_type: &str, scope: &str| -> Vec<(String, String)> {
        [
            ("response_type", response_type),
            ("client_id", CLIENT_ID),
            ("redirect_uri", REDIRECT),
            ("scope", scope),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
    };
    assert_eq!(
        op.begin_authorization(&req("code", "email profile"), None)
            .unwrap_err(),
        AuthorizeError::MissingOpenidScope
    );
    assert_eq!(
        op.begin_authorization(&req("token", "openid"), None)
            .unwrap_err(),
        AuthorizeError::UnsupportedResponseType
    );
}

#[tokio::test]
async fn prompt_none_redirects_with_login_required_state_and_iss() {
    let app = app_at(&ManualClock::at(T0));
    let q = format!(
        "{}&prompt=none",
        authorize_query(Some(&pkce().challenge), REDIRECT)
    );
    let r = fetch(&app, &format!("/op/authorize?{q}")).await;
    assert_eq!(r.status, StatusCode::FOUND);
    let loc = r.location();
    assert_eq!(
        query_param(&loc, "error").as_deref(),
        Some("login_required")
    );
    assert_eq!(query_param(&loc, "state").as_deref(), Some("st<ate>"));
    assert_eq!(query_param(&loc, "iss").as_deref(), Some(ISSUER));
    assert!(query_param(&loc, "code").is_none());
}

// ---------------------------------------------------------------------------------------------
// The picker
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn picker_lists_users_with_groups_and_escapes_everything() {
    let clock = ManualClock::at(T0);
    let mut cfg = config(ISSUER);
    cfg.users[0].description = "<script>alert(1)</script>".to_owned();
    let app = mounted_router(DevOp::with_key_and_clock(cfg, key(), Arc::new(clock)).unwrap());
    let r = fetch(
        &app,
        &format!(
            "/op/authorize?{}",
            authorize_query(Some(&pkce().challenge), REDIRECT)
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(!r.body.contains("<script>"));
    assert!(r.body.contains("&#60;script&#62;") || r.body.contains("&lt;script&gt;"));
    assert!(
        r.body
            .contains("Development identity provider — not for production")
    );
    for u in demo_users() {
        assert!(r.body.contains(&u.given_name), "{}", u.sub);
    }
    assert!(r.body.contains("bc-merchandisers") && r.body.contains("agency-northwind"));
    assert_eq!(r.headers[X_FRAME_OPTIONS], "DENY");
    assert_eq!(r.headers[CACHE_CONTROL], "no-store");
    let cookie = r.headers[SET_COOKIE].to_str().unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"));
    assert!(cookie.contains("Path=/op"));
}

#[tokio::test]
async fn pick_redirects_with_code_state_and_iss() {
    let app = app_at(&ManualClock::at(T0));
    let r = sign_in(&app, &pkce().challenge, "demo-nora").await;
    assert_eq!(r.status, StatusCode::FOUND);
    let loc = r.location();
    assert!(loc.as_str().starts_with(REDIRECT));
    assert_eq!(query_param(&loc, "state").as_deref(), Some("st<ate>"));
    assert_eq!(query_param(&loc, "iss").as_deref(), Some(ISSUER));
    assert_eq!(query_param(&loc, "code").map(|c| c.len()), Some(43));
}

#[test]
fn pick_refuses_wrong_or_missing_csrf_and_works_once() {
    let op = op_at(&ManualClock::at(T0));
    let req: Vec<(String, String)> =
        url::form_urlencoded::parse(authorize_query(Some(&pkce().challenge), REDIRECT).as_bytes())
            .into_owned()
            .collect();
    let begin = || match op.begin_authorization(&req, None).unwrap() {
        AuthorizeOutcome::Pick(v) => v,
        AuthorizeOutcome::Redirect(u) => panic!("unexpected redirect {u}"),
    };
    let v = begin();
    assert_eq!(
        op.pick(&v.request_id, &v.csrf, None, "demo-mia"),
        Err(AuthorizeError::CsrfMismatch)
    );
    let v = begin();
    let other = random_token();
    assert_eq!(
        op.pick(&v.request_id, &other, Some(&other), "demo-mia"),
        Err(AuthorizeError::CsrfMismatch)
    );
    let v = begin();
    assert_eq!(
        op.pick(&v.request_id, &v.csrf, Some(&v.csrf), "nobody"),
        Err(AuthorizeError::UnknownUser)
    );
    let v = begin();
    assert!(
        op.pick(&v.request_id, &v.csrf, Some(&v.csrf), "demo-mia")
            .is_ok()
    );
    assert_eq!(
        op.pick(&v.request_id, &v.csrf, Some(&v.csrf), "demo-mia"),
        Err(AuthorizeError::UnknownOrExpiredRequest)
    );
}

#[test]
fn picker_reuses_a_well_formed_csrf_cookie_so_two_tabs_work() {
    let op = op_at(&ManualClock::at(T0));
    let req: Vec<(String, String)> =
        url::form_urlencoded::parse(authorize_query(Some(&pkce().challenge), REDIRECT).as_bytes())
            .into_owned()
            .collect();
    let existing = random_token();
    let AuthorizeOutcome::Pick(v) = op.begin_authorization(&req, Some(&existing)).unwrap() else {
        panic!("expected the picker");
    };
    assert_eq!(v.csrf, existing);
    assert!(!v.set_cookie);
    let AuthorizeOutcome::Pick(v) = op.begin_authorization(&req, Some("junk")).unwrap() else {
        panic!("expected the picker");
    };
    assert_ne!(v.csrf, "junk");
    assert!(v.set_cookie);
}

#[test]
fn outstanding_requests_are_bounded_until_they_expire() {
    let clock = ManualClock::at(T0);
    let op = op_at(&clock);
    let req: Vec<(String, String)> =
        url::form_urlencoded::parse(authorize_query(Some(&pkce().challenge), REDIRECT).as_bytes())
            .into_owned()
            .collect();
    for _ in 0..MAX_OUTSTANDING {
        op.begin_authorization(&req, None).unwrap();
    }
    assert_eq!(
        op.begin_authorization(&req, None).unwrap_err(),
        AuthorizeError::TooManyOutstanding
    );
    clock.advance(PENDING_TTL_SECS);
    assert!(op.begin_authorization(&req, None).is_ok());
}

// ---------------------------------------------------------------------------------------------
// /token
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn token_refuses_wrong_code_verifier_with_invalid_grant_and_burns_the_code() {
    let app = app_at(&ManualClock::at(T0));
    let p = pkce();
    let code = code_for(&app, &p.challenge).await;
    let r = redeem_basic(&app, &code, &pkce().verifier).await;
    assert_token_error(&r, StatusCode::BAD_REQUEST, "invalid_grant");
    let r = redeem_basic(&app, &code, &p.verifier).await;
    assert_token_error(&r, StatusCode::BAD_REQUEST, "invalid_grant");
}

#[tokio::test]
async fn token_refuses_code_reuse_with_invalid_grant_and_revokes_the_first_access_token() {
    let app = app_at(&ManualClock::at(T0));
    let p = pkce();
    let code = code_for(&app, &p.challenge).await;
    let first = redeem_basic(&app, &code, &p.verifier).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.json()["token_type"], "Bearer");
    let access = first.json()["access_token"].as_str().unwrap().to_owned();
    let userinfo = |token: String| {
        Request::get("/op/userinfo")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(
        call(&app, userinfo(access.clone())).await.status,
        StatusCode::OK
    );

    let second = redeem_basic(&app, &code, &p.verifier).await;
    assert_token_error(&second, StatusCode::BAD_REQUEST, "invalid_grant");
    let after = call(&app, userinfo(access)).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn token_refuses_bad_client_secret_with_401_invalid_client_without_burning_the_code() {
    let app = app_at(&ManualClock::at(T0));
    let p = pkce();
    let code = code_for(&app, &p.challenge).await;
    let fields = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", p.verifier.as_str()),
    ];
    let r = redeem(&app, Some(&basic(CLIENT_ID, "wrong")), &fields).await;
    assert_token_error(&r, StatusCode::UNAUTHORIZED, "invalid_client");
    assert!(
        r.headers[WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    // Unknown client, no credentials, or a secret for another client: the same answer.
    for auth in [
        Some(basic("nobody", SECRET)),
        None,
        Some(basic(CLIENT_ID, "other-secret")),
        Some("Basic !!!not-base64".to_owned()),
    ] {
        let r = redeem(&app, auth.as_deref(), &fields).await;
        assert_token_error(&r, StatusCode::UNAUTHORIZED, "invalid_client");
    }
    // Failed client authentication did not consume the code.
    let ok = redeem_basic(&app, &code, &p.verifier).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
}

#[tokio::test]
async fn token_accepts_client_secret_post_and_refuses_two_methods_at_once() {
    let app = app_at(&ManualClock::at(T0));
    let p = pkce();
    let code = code_for(&app, &p.challenge).await;
    let fields = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", p.verifier.as_str()),
        ("client_id", CLIENT_ID),
        ("client_secret", SECRET),
    ];
    let both = redeem(&app, Some(&basic(CLIENT_ID, SECRET)), &fields).await;
    assert_token_error(&both, StatusCode::BAD_REQUEST, "invalid_request");
    let post = redeem(&app, None, &fields).await;
    assert_eq!(post.status, StatusCode::OK, "{}", post.body);
    assert_eq!(post.headers[CACHE_CONTROL], "no-store");
    assert!(post.json()["id_token"].as_str().unwrap().split('.').count() == 3);
}

#[tokio::test]
async fn code_is_bound_to_its_client_and_redirect_uri() {
    let app = app_at(&ManualClock::at(T0));
    let p = pkce();
    let code = code_for(&app, &p.challenge).await;
    let r = redeem(
        &app,
        Some(&basic("other", "other-secret")),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &p.verifier),
        ],
    )
    .await;
    assert_token_error(&r, StatusCode::BAD_REQUEST, "invalid_grant");

    let code = code_for(&app, &p.challenge).await;
    let r = redeem(
        &app,
        Some(&basic(CLIENT_ID, SECRET)),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1:9/auth/other"),
            ("code_verifier", &p.verifier),
        ],
    )
    .await;
    assert_token_error(&r, StatusCode::BAD_REQUEST, "invalid_grant");
}

#[tokio::test]
async fn code_expires_after_its_ttl() {
    let clock = ManualClock::at(T0);
    let app = app_at(&clock);
    let p = pkce();
    let code = code_for(&app, &p.challenge).await;
    clock.advance(CODE_TTL_SECS - 1);
    assert_eq!(
        redeem_basic(&app, &code, &p.verifier).await.status,
        StatusCode::OK
    );

    clock.set(T0);
    let code = code_for(&app, &p.challenge).await;
    clock.advance(CODE_TTL_SECS);
    let r = redeem_basic(&app, &code, &p.verifier).await;
    assert_token_error(&r, StatusCode::BAD_REQUEST, "invalid_grant");
}

#[tokio::test]
async fn token_refuses_other_grant_types_and_missing_verifier() {
    let app = app_at(&ManualClock::at(T0));
    let auth = basic(CLIENT_ID, SECRET);
    let r = redeem(&app, Some(&auth), &[("grant_type", "client_credentials")]).await;
    assert_token_error(&r, StatusCode::BAD_REQUEST, "unsupported_grant_type");
    let p = pkce();
    let code = code_for(&app, &p.challenge).await;
    let r = redeem(
        &app,
        Some(&auth),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await;
    assert_token_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
}

#[tokio::test]
async fn id_token_claims_carry_nonce_times_and_groups() {
    let clock = ManualClock::at(T0);
    let app = app_at(&clock);
    let p = pkce();
    let code = code_for(&app, &p.challenge).await;
    clock.advance(5);
    let r = redeem_basic(&app, &code, &p.verifier).await;
    let id_token = r.json()["id_token"].as_str().unwrap().to_owned();
    let payload = id_token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(&B64URL.decode(payload).unwrap()).unwrap();
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["aud"], CLIENT_ID);
    assert_eq!(claims["nonce"], "n-0S6_WzA2Mj");
    assert_eq!(claims["auth_time"], T0);
    assert_eq!(claims["iat"], T0 + 5);
    assert_eq!(claims["exp"], T0 + 5 + ID_TOKEN_TTL_SECS);
    assert_eq!(claims["name"], "Mia Merchandiser");
    assert_eq!(claims["groups"], json!(["bc-merchandisers"]));
    let header: Value =
        serde_json::from_slice(&B64URL.decode(id_token.split('.').next().unwrap()).unwrap())
            .unwrap();
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["kid"], key().kid());
}

// ---------------------------------------------------------------------------------------------
// /userinfo and /end_session
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn userinfo_refuses_missing_unknown_and_expired_tokens_with_401() {
    let clock = ManualClock::at(T0);
    let app = app_at(&clock);
    let r = fetch(&app, "/op/userinfo").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let with = |t: &str| {
        Request::get("/op/userinfo")
            .header(header::AUTHORIZATION, format!("Bearer {t}"))
            .body(Body::empty())
            .unwrap()
    };
    let r = call(&app, with("made-up")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.headers[WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );

    let p = pkce();
    let code = code_for(&app, &p.challenge).await;
    let access = redeem_basic(&app, &code, &p.verifier).await.json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let ok = call(&app, with(&access)).await;
    assert_eq!(ok.json()["email"], "mia.merchandiser@example.com");
    clock.advance(ACCESS_TOKEN_TTL_SECS);
    assert_eq!(
        call(&app, with(&access)).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn end_session_redirects_only_to_a_registered_post_logout_uri() {
    let app = app_at(&ManualClock::at(T0));
    let q = |uri: &str| {
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("client_id", CLIENT_ID)
            .append_pair("post_logout_redirect_uri", uri)
            .append_pair("state", "bye")
            .finish()
    };
    let r = fetch(&app, &format!("/op/end_session?{}", q(LOGGED_OUT))).await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(r.location().as_str(), format!("{LOGGED_OUT}?state=bye"));

    let r = fetch(
        &app,
        &format!("/op/end_session?{}", q("http://evil.example/")),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers.get(LOCATION).is_none());
    assert!(r.body.contains("Signed out"));

    let r = fetch(&app, "/op/end_session").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("signed out"));
}

#[tokio::test]
async fn end_session_with_id_token_hint_revokes_that_users_access_tokens() {
    let app = app_at(&ManualClock::at(T0));
    let p = pkce();
    let code = code_for(&app, &p.challenge).await;
    let t = redeem_basic(&app, &code, &p.verifier).await.json();
    let hint = t["id_token"].as_str().unwrap();
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("id_token_hint", hint)
        .append_pair("post_logout_redirect_uri", LOGGED_OUT)
        .finish();
    let r = fetch(&app, &format!("/op/end_session?{q}")).await;
    assert_eq!(r.status, StatusCode::FOUND);
    let info = call(
        &app,
        Request::get("/op/userinfo")
            .header(
                header::AUTHORIZATION,
                format!("Bearer {}", t["access_token"].as_str().unwrap()),
            )
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(info.status, StatusCode::UNAUTHORIZED);
}

// ---------------------------------------------------------------------------------------------
// Configuration and helpers
// ---------------------------------------------------------------------------------------------

#[test]
fn config_validation_reports_every_problem() {
    let mut cfg = config("ftp://x/op?q");
    cfg.clients[1].client_id = CLIENT_ID.to_owned();
    cfg.clients[1].client_secret = Secret::new("");
    cfg.clients[1].redirect_uris = vec!["/relative".to_owned(), "http://x/cb#frag".to_owned()];
    cfg.users.push(cfg.users[0].clone());
    let duplicate_user = format!("users[{}].sub: duplicate", cfg.users.len() - 1);
    let Err(DevOpError::Config(errors)) =
        DevOp::with_key_and_clock(cfg, key(), Arc::new(SystemClock))
    else {
        panic!("expected configuration errors");
    };
    let all = errors.join("\n");
    for expected in [
        "issuer: must be an http or https URL",
        "issuer: must not have a query",
        "clients[1].client_id: duplicate",
        "clients[1].client_secret: empty",
        "clients[1].redirect_uris: \"/relative\" is not absolute",
        "clients[1].redirect_uris: \"http://x/cb#frag\" has a fragment",
        duplicate_user.as_str(),
    ] {
        assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
    }
}

#[test]
fn basic_credentials_are_form_urldecoded() {
    assert_eq!(
        parse_basic(&basic("a b", SECRET)),
        Some(("a b".to_owned(), SECRET.to_owned()))
    );
    assert_eq!(
        parse_basic("basic Og=="),
        Some((String::new(), String::new()))
    );
    assert_eq!(parse_basic("Bearer abc"), None);
    assert_eq!(form_decode("%zz"), None);
    assert_eq!(form_decode("%+1"), None);
}

#[test]
fn demo_users_cover_each_outcome() {
    let users = demo_users();
    let groups: Vec<_> = users.iter().map(|u| u.groups.join(",")).collect();
    assert_eq!(
        groups,
        [
            "bc-merchandisers",
            "bc-finance",
            "bc-support",
            "agency-northwind",
            "",
            "storegate-admins"
        ]
    );
}
