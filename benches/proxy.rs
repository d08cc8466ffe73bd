//! Proxied requests per second through the built-in proxy (`[[route]] upstream`, issue 14)
//! against nginx proxying the same upstream directly, in one run, with the upstream alone as
//! the ceiling. The gateway decides every request as `/auth/verify` would (session read, route,
//! conditions, ES256 identity token, audit event), then forwards it with hyper; nginx only
//! forwards (keep-alive to the upstream on both). The same closed-loop client (hyper,
//! keep-alive, 32 connections) drives all three over loopback.
//!
//! Run: `cargo bench --bench proxy` (also in `make bench`; needs nginx, which `make deps`
//! installs). Under `cargo test --bench proxy` it sends a few requests per target unoptimized
//! as a smoke test: it checks each answer (the upstream's body, and for the gateway a token the
//! JWKS verifies) and prints no figure worth reading.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use storegate::audit::AuditLog;
use storegate::config::{self, LiteralEnv};
use storegate::identity::{Identity, IdpId};
use storegate::session::browser::{AUTH_KEY, SignedInState};
use storegate::web;
use tokio::net::TcpListener;
use tower_sessions::SessionStore;

const CONNECTIONS: usize = 32;

/// The upstream: a small page that says which identity header it got.
async fn upstream() -> String {
    let app = axum::Router::new().fallback(|headers: HeaderMap| async move {
        let id = headers.contains_key("x-storegate-identity");
        format!("upstream page; identity={id}")
    });
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    base
}

/// The gateway with one proxied route, and the cookie of a signed-in session.
async fn gateway(upstream: &str) -> (String, String) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind gateway");
    let addr = listener.local_addr().expect("addr");
    let text = format!(
        r#"
public_url = "http://{addr}"
listen = "{addr}"
allow_insecure_http = true

[[idp]]
id = "nam"
protocol = "oidc"
issuer = "https://am.example.com"
client_id = "storegate"

[[route]]
name = "order-desk"
host = "{addr}"
path_prefix = "/tools/"
groups_any = ["bc-finance"]
upstream = "{upstream}"
"#
    );
    let cfg = config::load_str(&text, "bench.toml", &LiteralEnv).expect("config");
    let (audit, mut rx) = AuditLog::channel();
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let clock = Arc::new(storegate::clock::SystemClock);
    let state = storegate::app::build_state(cfg, clock, audit).expect("state");
    let now = time::OffsetDateTime::now_utc();
    let signed_in = SignedInState {
        identity: Identity {
            subject: "u-1".into(),
            idp: IdpId::new("nam"),
            email: Some("lee@corp.example".into()),
            email_verified: true,
            given_name: None,
            family_name: None,
            name: Some("Lee".into()),
            groups: vec!["bc-finance".into(), "bc-staff".into()],
            roles: vec![],
            attributes: Default::default(),
            auth: Default::default(),
            signed_in_at: now.unix_timestamp(),
        },
        csrf: "bench".into(),
        last_seen: now.unix_timestamp(),
        customers: Default::default(),
        launched: Default::default(),
    };
    let mut record = tower_sessions::session::Record {
        id: tower_sessions::session::Id::default(),
        data: [(
            AUTH_KEY.to_owned(),
            serde_json::Value::String(serde_json::to_string(&signed_in).expect("json")),
        )]
        .into_iter()
        .collect(),
        expiry_date: now + time::Duration::hours(1),
    };
    state.sessions.create(&mut record).await.expect("session");
    let cookie = format!("storegate_session={}", record.id);
    let app = web::router(state);
    tokio::spawn(async move {
        let _ = storegate::server::serve_on(listener, app, std::future::pending()).await;
    });
    (format!("http://{addr}"), cookie)
}

struct Nginx {
    child: Child,
    dir: PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// nginx proxying straight to `upstream` (keep-alive to it, as the gateway's pool does).
async fn nginx(upstream: &str) -> (Nginx, String) {
    let binary = ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("nginx is not installed: run scripts/test-deps.sh (make deps)");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let dir = std::env::temp_dir().join(format!("storegate-bench-nginx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("nginx dir");
    let d = dir.display();
    let up = upstream.trim_start_matches("http://");
    let conf = format!(
        r#"
worker_processes 1;
error_log {d}/error.log warn;
pid {d}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream tool {{ server {up}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://tool;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"#
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).expect("nginx conf");
    let child = Command::new(binary)
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(&path)
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx");
    let started = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "nginx did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (Nginx { child, dir }, format!("http://127.0.0.1:{port}"))
}

type Http = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

async fn get(client: &Http, url: &str, cookie: Option<&str>) -> (u16, Bytes) {
    let mut req = axum::http::Request::get(url);
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let resp = client
        .request(req.body(Empty::new()).expect("request"))
        .await
        .expect("an answer");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, body)
}

/// Requests per second over `duration` (or `count` requests in all in test mode).
async fn load(
    client: &Http,
    url: &str,
    cookie: Option<&str>,
    duration: Duration,
    count: u64,
) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..CONNECTIONS {
        let (client, url, cookie, done) = (
            client.clone(),
            url.to_owned(),
            cookie.map(str::to_owned),
            done.clone(),
        );
        workers.push(tokio::spawn(async move {
            while start.elapsed() < duration && done.load(Ordering::Relaxed) < count {
                let (status, _) = get(&client, &url, cookie.as_deref()).await;
                assert_eq!(status, 200);
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for w in workers {
        w.await.expect("worker");
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let up = upstream().await;
    let (gw, cookie) = gateway(&up).await;
    let (_nginx, front) = nginx(&up).await;
    let client: Http = Client::builder(TokioExecutor::new()).build_http();

    // What is measured is right: each path reaches the upstream, the gateway's with a token.
    let path = "/tools/orders/42?tab=lines";
    let (s, body) = get(&client, &format!("{gw}{path}"), Some(&cookie)).await;
    assert_eq!((s, &body[..]), (200, &b"upstream page; identity=true"[..]));
    let (s, _) = get(&client, &format!("{gw}{path}"), None).await;
    assert_eq!(s, 302, "no session: sign in first");
    let (s, body) = get(&client, &format!("{front}{path}"), None).await;
    assert_eq!((s, &body[..]), (200, &b"upstream page; identity=false"[..]));

    let (duration, count) = if benching {
        (Duration::from_secs(5), u64::MAX)
    } else {
        (Duration::from_secs(5), 64)
    };
    let direct = load(&client, &format!("{up}{path}"), None, duration, count).await;
    let via_nginx = load(&client, &format!("{front}{path}"), None, duration, count).await;
    let via_gateway = load(
        &client,
        &format!("{gw}{path}"),
        Some(&cookie),
        duration,
        count,
    )
    .await;
    println!(
        "proxy: {CONNECTIONS} connections, keep-alive: upstream alone {direct:.0} req/s; nginx proxying it {via_nginx:.0} req/s; storegate's built-in proxy (session + decision + ES256 token + audit + forward) {via_gateway:.0} req/s = {:.2}x nginx",
        via_gateway / via_nginx
    );
}
