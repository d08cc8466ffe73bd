//! The built-in reverse proxy (`[[route]] upstream`, issue 14), end to end: the gateway on
//! 127.0.0.1 proxies `/tools/...` on its own host and the whole of `desk.test` (by `Host`) to a
//! small upstream that records what it received. Allowed, not signed in (sign-in and back), not
//! allowed, step-up, spoofed identity and forwarding headers, the identity JWT verified with
//! the published JWKS (and a rotated key), hop-by-hop headers, bodies streamed both ways (each
//! side waits for the other's first piece, so a buffering proxy deadlocks), the body limit,
//! WebSocket echo, upstream down (502) and silent (504).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use storegate::audit::{EventKind, Outcome};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::Gateway;
use crate::support::browser::{Browser, location, query_param};
use crate::support::free_port;
use crate::support::rogue_op::RogueOp;
use crate::support::tools::{
    Recorder, ToolSpec, bare, jwks, p256_pem, person, session_cookie, sign_in, verified,
    verify_identity,
};

const MFA: &str = "urn:example:contract:mfa";
const FORGED: &str = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.";

/// The upstream's handlers beyond the echo page: each records its request; the streaming ones
/// wait for the test.
#[derive(Clone, Default)]
struct Upstream {
    rec: Recorder,
    /// The upload handler got its first piece.
    upload_first: Arc<Notify>,
    /// The test got the download's first piece: the upstream may send the rest.
    download_go: Arc<Notify>,
}

impl Upstream {
    fn record(&self, req: &Request) {
        self.rec.record(req);
    }
}

async fn upload(State(up): State<Upstream>, req: Request) -> Response {
    up.record(&req);
    let mut stream = req.into_body().into_data_stream();
    let mut total = 0usize;
    let mut first = true;
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            return (StatusCode::BAD_REQUEST, "body broken").into_response();
        };
        total += chunk.len();
        if first {
            first = false;
            up.upload_first.notify_one();
        }
    }
    total.to_string().into_response()
}

async fn download(State(up): State<Upstream>, req: Request) -> Response {
    up.record(&req);
    let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    let go = up.download_go.clone();
    tokio::spawn(async move {
        let _ = tx.send(Ok(Bytes::from_static(b"first piece;"))).await;
        go.notified().await;
        let _ = tx.send(Ok(Bytes::from_static(b"second piece"))).await;
    });
    Body::from_stream(rx).into_response()
}

/// Answers after `?ms=` milliseconds (default 4000).
async fn slow(State(up): State<Upstream>, req: Request) -> Response {
    up.record(&req);
    let ms = req
        .uri()
        .query()
        .and_then(|q| q.strip_prefix("ms="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    format!("answered after {ms} ms").into_response()
}

async fn hop_headers(State(up): State<Upstream>, req: Request) -> Response {
    up.record(&req);
    (
        [
            ("connection", "x-upstream-hop"),
            ("x-upstream-hop", "1"),
            ("set-cookie", "storegate_session=planted; Path=/"),
            ("set-cookie", "tool_pref=1; Path=/"),
        ],
        "hops",
    )
        .into_response()
}

/// A WebSocket echo: the handshake answered here, the frames by tungstenite.
async fn ws_echo(State(up): State<Upstream>, mut req: Request) -> Response {
    up.record(&req);
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return (StatusCode::BAD_REQUEST, "not a websocket").into_response();
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let on = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on.await else { return };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            hyper_util::rt::TokioIo::new(upgraded),
            tokio_tungstenite::tungstenite::protocol::Role::Server,
            None,
        )
        .await;
        while let Some(Ok(msg)) = ws.next().await {
            if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                break;
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", accept)
        .body(Body::empty())
        .unwrap()
}

/// The upstream's own routes (everything else is the echo page).
fn upstream_routes(up: &Upstream) -> axum::Router {
    axum::Router::new()
        .route("/tools/orders/upload", axum::routing::post(upload))
        .route("/tools/orders/download", axum::routing::get(download))
        .route("/tools/orders/slow", axum::routing::get(slow))
        .route("/tools/patient/slow", axum::routing::get(slow))
        .route("/tools/patient/upload", axum::routing::post(upload))
        .route("/tools/orders/hops", axum::routing::get(hop_headers))
        .route("/tools/orders/ws", axum::routing::get(ws_echo))
        .with_state(up.clone())
}

struct Setup {
    op: RogueOp,
    gw: Gateway,
    up: Upstream,
    /// `127.0.0.1:port`, the gateway's host and the `/tools/` routes'.
    host: String,
}

fn routes(host: &str, upstream: &str, down: &str) -> String {
    format!(
        r#"
[forward_auth]
upstream_timeout = "1s"
max_body = "1MiB"

[[route]]
name = "order-desk"
host = "{host}"
path_prefix = "/tools/orders/"
groups_any = ["bc-finance"]
upstream = "{upstream}"

[[route]]
name = "order-admin"
host = "{host}"
path_prefix = "/tools/orders/admin"
groups_any = ["bc-admins"]
upstream = "{upstream}"

[[route]]
name = "strong-desk"
host = "{host}"
path_prefix = "/tools/strong/"
require_acr = "{MFA}"
upstream = "{upstream}"

[[route]]
name = "gone-tool"
host = "{host}"
path_prefix = "/tools/gone/"
upstream = "{down}"

[[route]]
name = "sales-desk"
host = "desk.test"
groups_any = ["bc-finance"]
upstream = "{upstream}"

[[route]]
name = "patient-desk"
host = "{host}"
path_prefix = "/tools/patient/"
upstream = "{upstream}"
timeout = "3s"
max_body = "1KiB"
"#
    )
}

async fn setup_with(claims: Value, forward_auth_extra: &str, root_extra: &str) -> Setup {
    let up = Upstream::default();
    let mut spec = ToolSpec::new(claims);
    spec.upstream_routes = upstream_routes(&up);
    spec.recorder = up.rec.clone();
    spec.root_extra = root_extra.to_owned();
    let down = format!("http://127.0.0.1:{}", free_port());
    let tool = spec
        .start(|h| {
            routes(h.gateway, h.upstream, &down).replace(
                "max_body = \"1MiB\"",
                &format!("max_body = \"1MiB\"\n{forward_auth_extra}"),
            )
        })
        .await;
    Setup {
        op: tool.op,
        gw: tool.gw,
        up,
        host: tool.host,
    }
}

async fn setup(groups: &[&str]) -> Setup {
    setup_with(person(groups), "", "").await
}

fn header<'h>(h: &'h HeaderMap, name: &str) -> Option<&'h str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn a_stranger_signs_in_and_comes_back_to_the_tool() {
    let s = setup(&["bc-finance", "hr-confidential"]).await;
    let b = Browser::new();
    let first = b.get(&s.gw.url("/tools/orders/42?tab=lines")).await;
    assert_eq!(first.status(), 302, "{}", b.hops_text());
    let to = location(&first).unwrap();
    assert_eq!(to.path(), "/auth/continue");
    assert_eq!(
        query_param(&to, "rd").as_deref(),
        Some(s.gw.url("/tools/orders/42?tab=lines").as_str())
    );
    assert!(
        s.up.rec.seen().is_empty(),
        "the upstream was reached without a session"
    );

    let landed = b.follow(first).await;
    assert_eq!(landed.status(), 200, "{}", b.hops_text());
    let body = landed.text().await.unwrap();
    assert!(body.starts_with("upstream page"), "{body}");
    let seen = s.up.rec.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/tools/orders/42?tab=lines");
    let jwt = seen[0].identity().unwrap();
    let claims = verified(&s.gw, jwt, "order-desk").await;
    assert_eq!(claims.email.as_deref(), Some("lee@corp.example"));
    // Only the groups the route names travel on.
    assert_eq!(claims.groups, vec!["bc-finance".to_owned()]);
    let allow =
        s.gw.audit_now()
            .into_iter()
            .find(|e| e.event == EventKind::ForwardAuth && e.outcome == Outcome::Allow)
            .expect("an allow event");
    assert_eq!(allow.rule.as_deref(), Some("order-desk"));
}

#[tokio::test]
async fn a_signed_in_person_the_route_does_not_admit_gets_a_403_naming_it() {
    let s = setup(&["bc-finance"]).await;
    let b = Browser::new();
    sign_in(&b, &s.gw).await;
    let r = b.get(&s.gw.url("/tools/orders/admin/users")).await;
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["x-storegate-route"], "order-admin");
    assert!(r.headers().get("x-storegate-identity").is_none());
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    assert!(r.text().await.unwrap().contains("order-admin"));
    assert!(s.up.rec.seen().is_empty(), "the upstream was reached");
    let deny =
        s.gw.audit_now()
            .into_iter()
            .rev()
            .find(|e| e.event == EventKind::ForwardAuth && e.outcome == Outcome::Deny)
            .expect("a deny event");
    assert_eq!(deny.rule.as_deref(), Some("order-admin"));
    assert_eq!(deny.reason.as_deref(), Some("not_entitled"));

    // A path hiding a segment in an encoded slash is refused before any decision, never
    // proxied. (A client's URL parser already resolves `..` and `%2e%2e` itself.)
    let c = bare();
    let r = c
        .get(s.gw.url("/tools/orders/x%2f..%2fadmin/users"))
        .header("cookie", session_cookie(&b, &s.gw))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(s.up.rec.seen().is_empty());
}

#[tokio::test]
async fn spoofed_identity_forwarding_and_hop_by_hop_headers_never_reach_the_upstream() {
    let s = setup(&["bc-finance"]).await;
    let b = Browser::new();
    sign_in(&b, &s.gw).await;
    let c = bare();

    // Not signed in, the forged header gets nobody in.
    let r = c
        .get(s.gw.url("/tools/orders/x"))
        .header("x-storegate-identity", FORGED)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert!(s.up.rec.seen().is_empty());

    let r = c
        .get(s.gw.url("/tools/orders/x"))
        .header(
            "cookie",
            format!("theme=dark; {}; lang=en", session_cookie(&b, &s.gw)),
        )
        .header("x-storegate-identity", FORGED)
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-host", "evil.example")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-user", "admin")
        .header("forwarded", "for=6.6.6.6;proto=https")
        .header("x-real-ip", "6.6.6.6")
        .header("x-request-id", "client-chosen")
        .header("connection", "x-hop-secret")
        .header("x-hop-secret", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic YWRtaW46YWRtaW4=")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let seen = s.up.rec.seen();
    assert_eq!(seen.len(), 1);
    let h = &seen[0].headers;
    let jwt = header(h, "x-storegate-identity").unwrap();
    assert_ne!(jwt, FORGED);
    assert_eq!(h.get_all("x-storegate-identity").iter().count(), 1);
    verified(&s.gw, jwt, "order-desk").await;
    assert_eq!(header(h, "x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(header(h, "x-forwarded-proto"), Some("http"));
    assert_eq!(header(h, "x-forwarded-host"), Some(s.host.as_str()));
    assert_eq!(header(h, "x-request-id"), Some(rid.as_str()));
    assert_eq!(header(h, "cookie"), Some("theme=dark; lang=en"));
    for gone in [
        "x-forwarded-user",
        "forwarded",
        "x-real-ip",
        "x-hop-secret",
        "keep-alive",
        "proxy-authorization",
    ] {
        assert!(h.get(gone).is_none(), "{gone} reached the upstream: {h:?}");
    }

    // The way back: the upstream's hop-by-hop headers and a cookie of the session's name stop.
    let r = c
        .get(s.gw.url("/tools/orders/hops"))
        .header("cookie", session_cookie(&b, &s.gw))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-upstream-hop").is_none());
    let cookies: Vec<_> = r.headers().get_all("set-cookie").iter().collect();
    assert_eq!(cookies, vec!["tool_pref=1; Path=/"]);
}

#[tokio::test]
async fn a_trusted_proxy_s_chain_is_appended_and_its_scheme_believed() {
    let s = setup_with(
        person(&["bc-finance"]),
        "",
        "trusted_proxies = [\"127.0.0.1/32\"]",
    )
    .await;
    let b = Browser::new();
    sign_in(&b, &s.gw).await;
    let r = bare()
        .get(s.gw.url("/tools/orders/y"))
        .header("cookie", session_cookie(&b, &s.gw))
        .header("x-forwarded-for", "198.51.100.7")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = s.up.rec.seen();
    let h = &seen[0].headers;
    assert_eq!(
        header(h, "x-forwarded-for"),
        Some("198.51.100.7, 127.0.0.1")
    );
    assert_eq!(header(h, "x-forwarded-proto"), Some("https"));
}

#[tokio::test]
async fn routes_are_chosen_by_host_header() {
    let s = setup(&["bc-finance"]).await;
    let b = Browser::new();
    sign_in(&b, &s.gw).await;
    let c = bare();
    // Every path of desk.test is the tool's, even one the gateway has itself.
    let r = c
        .get(s.gw.url("/api/me"))
        .header("host", "desk.test")
        .header("cookie", session_cookie(&b, &s.gw))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = s.up.rec.seen();
    assert_eq!(seen[0].path, "/api/me");
    verified(&s.gw, seen[0].identity().unwrap(), "sales-desk").await;
    assert_eq!(
        header(&seen[0].headers, "x-forwarded-host"),
        Some("desk.test")
    );
    // The gateway's own host still serves the gateway.
    let me: Value = b.get(&s.gw.url("/api/me")).await.json().await.unwrap();
    assert_eq!(me["email"], "lee@corp.example");
    assert_eq!(s.up.rec.seen().len(), 1);
}

/// A front door that asks `/auth/verify` with a tool's `Host` (nginx `Host $http_host`) gets the
/// gateway's decision for the address it names, even on a host whose every path is proxied: the
/// question never reaches the proxied tool (which could answer 200 for any path).
#[tokio::test]
async fn auth_verify_on_a_proxied_host_stays_the_gateway_s() {
    let reports = r#"
[[route]]
name = "desk-reports"
host = "desk.test"
path_prefix = "/reports/"
groups_any = ["bc-admins"]
"#;
    let s = setup_with(person(&["bc-finance"]), reports, "").await;
    let b = Browser::new();
    sign_in(&b, &s.gw).await;
    let c = bare();
    let verify = |uri: &'static str| {
        c.get(s.gw.url("/auth/verify"))
            .header("host", "desk.test")
            .header("x-original-uri", uri)
            .header("cookie", session_cookie(&b, &s.gw))
            .send()
    };
    // The forward-auth-only route refuses this person: 403 naming it, not the tool's answer.
    let r = verify("/reports/q3").await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        header(r.headers(), "x-storegate-route"),
        Some("desk-reports")
    );
    // The proxied route admits: the front door gets the token, the tool gets nothing.
    let r = verify("/orders").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(r.headers(), "x-storegate-route"), Some("sales-desk"));
    let token = header(r.headers(), "x-storegate-identity")
        .unwrap()
        .to_owned();
    verified(&s.gw, &token, "sales-desk").await;
    assert!(s.up.rec.seen().is_empty(), "/auth/verify reached the tool");
}

#[tokio::test]
async fn a_route_requiring_mfa_steps_up_then_admits() {
    let s = setup(&["bc-finance"]).await;
    let b = Browser::new();
    sign_in(&b, &s.gw).await;
    let r = b.get(&s.gw.url("/tools/strong/report")).await;
    assert_eq!(r.status(), 302);
    let to = location(&r).unwrap();
    assert_eq!(to.path(), "/login");
    assert_eq!(query_param(&to, "acr").as_deref(), Some(MFA));
    assert_eq!(query_param(&to, "idp").as_deref(), Some("nam"));
    let landed = b.follow(r).await;
    assert_eq!(landed.status(), 200, "{}", b.hops_text());
    let asked = s.op.authorize_requests();
    assert_eq!(asked.len(), 2, "one sign-in, one step-up");
    assert_eq!(asked[1].acr_values.as_deref(), Some(MFA));
    let seen = s.up.rec.seen();
    let claims = verified(&s.gw, seen[0].identity().unwrap(), "strong-desk").await;
    assert_eq!(claims.acr.as_deref(), Some(MFA));
}

#[tokio::test]
async fn an_idp_that_does_not_step_up_gets_one_round_trip_then_a_403() {
    let s = setup(&["bc-finance"]).await;
    let b = Browser::new();
    sign_in(&b, &s.gw).await;
    s.op.set_echo_acr(false);
    let r = b.get(&s.gw.url("/tools/strong/report")).await;
    let page = b.follow(r).await;
    assert_eq!(page.status(), 403, "{}", b.hops_text());
    let text = page.text().await.unwrap();
    assert!(text.contains(MFA) && text.contains("strong-desk"), "{text}");
    assert_eq!(s.op.authorize_requests().len(), 2, "no redirect loop");
    assert!(s.up.rec.seen().is_empty());
    let deny =
        s.gw.audit_now()
            .into_iter()
            .rev()
            .find(|e| e.event == EventKind::ForwardAuth && e.outcome == Outcome::Deny)
            .unwrap();
    assert_eq!(deny.reason.as_deref(), Some("step_up_required"));
}

#[tokio::test]
async fn bodies_stream_both_ways_and_the_limit_is_413() {
    let s = setup(&["bc-finance"]).await;
    let b = Browser::new();
    sign_in(&b, &s.gw).await;
    let cookie = session_cookie(&b, &s.gw);

    // Upload: the second half is only sent once the upstream has the first.
    let (mut tx, rx) =
        futures::channel::mpsc::channel::<Result<http_body::Frame<Bytes>, std::io::Error>>(1);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::StreamBody<_>>();
    let req = axum::http::Request::post(s.gw.url("/tools/orders/upload"))
        .header("cookie", &cookie)
        .body(http_body_util::StreamBody::new(rx))
        .unwrap();
    let sent = tokio::spawn(client.request(req));
    tx.send(Ok(http_body::Frame::data(Bytes::from(vec![
        b'a';
        64 * 1024
    ]))))
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(10), s.up.upload_first.notified())
        .await
        .expect("the upstream got the first piece while the upload was still going");
    tx.send(Ok(http_body::Frame::data(Bytes::from(vec![
        b'b';
        64 * 1024
    ]))))
    .await
    .unwrap();
    drop(tx);
    let resp = sent.await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    let total = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(&total[..], b"131072");

    // Download: the upstream sends its second piece only once the browser has the first.
    let mut r = bare()
        .get(s.gw.url("/tools/orders/download"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let first = tokio::time::timeout(Duration::from_secs(10), r.chunk())
        .await
        .expect("the first piece arrived on its own")
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], b"first piece;");
    s.up.download_go.notify_one();
    let mut rest = Vec::new();
    while let Some(c) = r.chunk().await.unwrap() {
        rest.extend_from_slice(&c);
    }
    assert_eq!(rest, b"second piece");

    // A declared length over the limit: 413 before the upstream is contacted.
    // (The body is announced but never sent: the answer cannot have waited for it.)
    let before = s.up.rec.seen().len();
    let (_held, rx) =
        futures::channel::mpsc::channel::<Result<http_body::Frame<Bytes>, std::io::Error>>(1);
    let req = axum::http::Request::post(s.gw.url("/tools/orders/upload"))
        .header("cookie", &cookie)
        .header("content-length", (1024 * 1024 + 1).to_string())
        .body(http_body_util::StreamBody::new(rx))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .expect("answered without the body")
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(s.up.rec.seen().len(), before);
    // A streamed body that grows past the limit: 413 too.
    let (mut tx, rx) =
        futures::channel::mpsc::channel::<Result<http_body::Frame<Bytes>, std::io::Error>>(4);
    let req = axum::http::Request::post(s.gw.url("/tools/orders/upload"))
        .header("cookie", &cookie)
        .body(http_body_util::StreamBody::new(rx))
        .unwrap();
    let sent = tokio::spawn(client.request(req));
    for _ in 0..20 {
        if tx
            .send(Ok(http_body::Frame::data(Bytes::from(vec![
                b'c';
                128 * 1024
            ]))))
            .await
            .is_err()
        {
            break;
        }
    }
    drop(tx);
    let resp = sent.await.unwrap().expect("an answer");
    assert_eq!(resp.status(), 413);
}

#[tokio::test]
async fn a_websocket_echoes_through_the_proxy() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let s = setup(&["bc-finance"]).await;
    let b = Browser::new();
    sign_in(&b, &s.gw).await;
    let mut req = format!("ws://{}/tools/orders/ws", s.host)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("cookie", session_cookie(&b, &s.gw).parse().unwrap());
    req.headers_mut()
        .insert("x-storegate-identity", FORGED.parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("upgraded");
    assert_eq!(resp.status(), 101);
    ws.send(Message::text("hello through the gateway"))
        .await
        .unwrap();
    let back = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("an echo")
        .unwrap()
        .unwrap();
    assert_eq!(
        back.into_text().unwrap().as_str(),
        "hello through the gateway"
    );
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    let back = ws.next().await.unwrap().unwrap();
    assert_eq!(back.into_data().as_ref(), &[1u8, 2, 3]);
    let seen = s.up.rec.seen();
    let jwt = seen[0].identity().unwrap();
    assert_ne!(jwt, FORGED);
    verified(&s.gw, jwt, "order-desk").await;

    // Without a session, no upgrade: the sign-in redirect.
    let bad = tokio_tungstenite::connect_async(format!("ws://{}/tools/orders/ws", s.host)).await;
    match bad {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 302),
        other => panic!("expected a refused handshake, got {other:?}"),
    }
}

#[tokio::test]
async fn an_upstream_down_is_a_502_page_and_a_silent_one_a_504() {
    let s = setup(&["bc-finance"]).await;
    let b = Browser::new();
    sign_in(&b, &s.gw).await;
    let r = b.get(&s.gw.url("/tools/gone/x")).await;
    assert_eq!(r.status(), 502);
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let text = r.text().await.unwrap();
    assert!(text.contains("gone-tool") && text.contains(&rid), "{text}");

    let started = std::time::Instant::now();
    let r = b.get(&s.gw.url("/tools/orders/slow")).await;
    assert_eq!(r.status(), 504);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let events = s.gw.audit_now();
    let reasons: Vec<_> = events
        .iter()
        .filter(|e| e.event == EventKind::ForwardAuth && e.outcome == Outcome::Error)
        .map(|e| {
            (
                e.rule.clone().unwrap_or_default(),
                e.reason.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        vec![
            ("gone-tool".to_owned(), "upstream_unreachable".to_owned()),
            ("order-desk".to_owned(), "upstream_timeout".to_owned()),
        ]
    );
}

/// After a rotation the proxy signs with the new key, and the JWKS still lists the old one.
#[tokio::test]
async fn after_a_key_rotation_the_proxy_signs_with_the_new_key() {
    let dir = std::env::temp_dir().join(format!(
        "storegate-proxy-keys-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (old, new) = (dir.join("old.pem"), dir.join("new.pem"));
    std::fs::write(&old, p256_pem().0).unwrap();
    std::fs::write(&new, p256_pem().0).unwrap();
    let keys = format!(
        "signing_key_file = \"{}\"\nprevious_key_files = [\"{}\"]",
        new.display(),
        old.display()
    );
    let s = setup_with(person(&["bc-finance"]), &keys, "").await;
    let b = Browser::new();
    sign_in(&b, &s.gw).await;
    assert_eq!(b.get(&s.gw.url("/tools/orders/z")).await.status(), 200);
    let set = jwks(&s.gw).await;
    let kids: Vec<&str> = set["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids.len(), 2, "{set}");
    let seen = s.up.rec.seen();
    let jwt = seen[0].identity().unwrap();
    let kid = jsonwebtoken::decode_header(jwt).unwrap().kid.unwrap();
    assert_eq!(kid, kids[0], "the new key signs");
    verify_identity(&set, jwt, "order-desk", &s.gw.url(""))
        .expect("the new key's token verifies with the JWKS");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `[[route]] timeout` and `max_body` replace `[forward_auth]`'s (1 s, 1 MiB here) for that
/// route alone: "patient-desk" waits 3 s for its upstream and forwards at most 1 KiB.
#[tokio::test]
async fn a_route_s_own_timeout_and_body_limit_apply_to_it_alone() {
    let s = setup(&["bc-finance"]).await;
    let b = Browser::new();
    sign_in(&b, &s.gw).await;
    let cookie = session_cookie(&b, &s.gw);
    let c = bare();

    // 1.5 s: past [forward_auth]'s 1 s, within the route's 3 s.
    let r = b.get(&s.gw.url("/tools/patient/slow?ms=1500")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "answered after 1500 ms");
    let r = b.get(&s.gw.url("/tools/orders/slow?ms=1500")).await;
    assert_eq!(
        r.status(),
        504,
        "order-desk keeps the 1 s of [forward_auth]"
    );

    // 6 s: past the route's 3 s. The 504 page comes at the route's bound, not [forward_auth]'s
    // (a lower bound only: the machine may be slow, never fast).
    let started = std::time::Instant::now();
    let r = b.get(&s.gw.url("/tools/patient/slow?ms=6000")).await;
    let took = started.elapsed();
    assert_eq!(r.status(), 504);
    assert!(took >= Duration::from_secs(3), "{took:?}");
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let text = r.text().await.unwrap();
    assert!(
        text.contains("did not answer in time")
            && text.contains("patient-desk")
            && text.contains(&rid),
        "{text}"
    );

    // 2 KiB: over the route's 1 KiB (413 before the upstream is contacted), within order-desk's 1 MiB.
    let before = s.up.rec.seen().len();
    let body = vec![b'x'; 2048];
    let r = c
        .post(s.gw.url("/tools/patient/upload"))
        .header("cookie", &cookie)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("larger than the 1024 bytes") && text.contains("patient-desk"),
        "{text}"
    );
    assert_eq!(s.up.rec.seen().len(), before, "the upstream was reached");
    let r = c
        .post(s.gw.url("/tools/orders/upload"))
        .header("cookie", &cookie)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "2048");
    // Within the route's limit, the route forwards.
    let r = c
        .post(s.gw.url("/tools/patient/upload"))
        .header("cookie", &cookie)
        .body(vec![b'y'; 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "1024");

    let errors: Vec<_> =
        s.gw.audit_now()
            .into_iter()
            .filter(|e| e.event == EventKind::ForwardAuth && e.outcome == Outcome::Error)
            .map(|e| (e.rule.unwrap_or_default(), e.reason.unwrap_or_default()))
            .collect();
    assert_eq!(
        errors,
        [
            ("order-desk".to_owned(), "upstream_timeout".to_owned()),
            ("patient-desk".to_owned(), "upstream_timeout".to_owned()),
            ("patient-desk".to_owned(), "body_too_large".to_owned()),
        ]
    );
}
