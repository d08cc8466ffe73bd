//! `[telemetry]`: the spans of a sign-in and a launch reach an OTLP/HTTP collector (a fake one
//! here, decoding the protobuf with the `opentelemetry-proto` types), and none of them carries a
//! secret or personal data.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::json;
use storegate::telemetry::Telemetry;
use tokio::net::TcpListener;
use tracing_subscriber::layer::SubscriberExt;

use crate::cli::{BIN, TempDir, VALID};
use crate::harness::{Gateway, MAIN_HASH, Opts, Reserved};
use crate::support::browser::{Browser, location, query_param};
use crate::support::peers::{OidcPeer, OidcPeerConfig, PeerClient};

const CLIENT: &str = "storegate";
const SECRET: &str = "peer-client-secret-0123456789";
const EMAIL: &str = "Otto.Tracer@Corp.Example";
const COLLECTOR_KEY: &str = "collector-key-0123456789";

/// One `POST /v1/traces` as the collector received it.
struct Export {
    content_type: String,
    /// The `x-api-key` header, as a collector needing authentication would check it.
    api_key: Option<String>,
    body: Bytes,
    request: ExportTraceServiceRequest,
}

/// A minimal OTLP/HTTP collector: accepts protobuf trace exports and keeps them.
struct Collector {
    base: String,
    exports: Arc<Mutex<Vec<Export>>>,
}

impl Collector {
    async fn start() -> Collector {
        let exports: Arc<Mutex<Vec<Export>>> = Arc::default();
        let kept = Arc::clone(&exports);
        let app = axum::Router::new().route(
            "/v1/traces",
            post(move |headers: HeaderMap, body: Bytes| {
                let kept = Arc::clone(&kept);
                async move {
                    let Ok(request) = ExportTraceServiceRequest::decode(body.clone()) else {
                        return StatusCode::BAD_REQUEST;
                    };
                    let content_type = headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    let api_key = headers
                        .get("x-api-key")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    kept.lock().expect("collector lock").push(Export {
                        content_type,
                        api_key,
                        body,
                        request,
                    });
                    StatusCode::OK
                }
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind collector");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Collector { base, exports }
    }

    fn spans(&self) -> Vec<Span> {
        let exports = self.exports.lock().expect("collector lock");
        exports
            .iter()
            .flat_map(|e| &e.request.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| s.spans.clone())
            .collect()
    }
}

fn text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| text(&kv.value))
}

#[tokio::test(flavor = "current_thread")]
async fn a_sign_in_and_launch_are_exported_as_request_spans_without_secrets() {
    let collector = Collector::start().await;
    let reserved = Reserved::new().await;
    let peer = OidcPeer::start(
        &OidcPeerConfig::new()
            .client(PeerClient::new(CLIENT, SECRET, &reserved.redirect_uri()))
            .account(
                "otto",
                json!({"email": EMAIL, "given_name": "Otto", "family_name": "Tracer", "groups": ["bc-merchandisers"]}),
            ),
    );
    let mut opts = Opts::new(&peer.issuer, CLIENT, SECRET);
    opts.idp_extra = r#"scopes = ["openid", "email", "profile", "groups"]"#.to_owned();
    opts.extra_toml = format!(
        "[telemetry]\notlp_endpoint = \"{}\"\nservice_name = \"storegate-it\"\nheaders = \"x-api-key={COLLECTOR_KEY}\"\n",
        collector.base
    );
    let gw = Gateway::start(reserved, opts).await;
    let telemetry = gw.config().telemetry.expect("[telemetry] is configured");
    assert_eq!(
        telemetry.traces_url.as_str(),
        format!("{}/v1/traces", collector.base)
    );
    let exporter = Telemetry::start(&telemetry).expect("start the exporter");
    // This test's thread only (the runtime is current-thread, so the gateway's tasks run here):
    // other tests' spans never reach this collector.
    let _guard = export_on_this_thread(&exporter);

    let b = Browser::new();
    let start = b.get(&gw.url("/login")).await;
    assert_eq!(start.status(), 303);
    let back = b.oidc_provider_login(start, "otto").await;
    let callback = location(&back).expect("redirect to the callback");
    let code = query_param(&callback, "code").expect("authorization code");
    let done = b.get(callback.as_str()).await;
    assert_eq!(done.status(), 303, "callback accepted");
    let cookie = b
        .cookies_for(&gw.url("/"))
        .and_then(|c| {
            c.split("; ")
                .find_map(|kv| kv.strip_prefix("storegate_session=").map(str::to_owned))
        })
        .expect("session cookie");
    let launch = b.get(&gw.url("/stores/us/launch?to=/cart.php")).await;
    assert_eq!(launch.status(), 302);
    let to_store = location(&launch).expect("to the storefront");
    let prefix = format!("{}/storefront/{MAIN_HASH}/1/login/token/", gw.sim_base);
    let jwt = to_store
        .as_str()
        .strip_prefix(&prefix)
        .expect("a Customer Login JWT")
        .to_owned();
    // A browser-chosen trace id is not adopted (see src/telemetry.rs).
    let forged = "4bf92f3577b34da6a3ce929d0e0e4736";
    let probe = reqwest::Client::new()
        .get(gw.url("/signed-out"))
        .header("traceparent", format!("00-{forged}-00f067aa0ba902b7-01"))
        .send()
        .await
        .expect("probe");
    assert_eq!(probe.status(), 200);

    // A request's span ends when the server has finished the response, which may be just after
    // the client read it: flush until the four request spans are in (bounded), then check.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        exporter.flush().await;
        let requests = collector
            .spans()
            .iter()
            .filter(|s| s.name == "request")
            .count();
        if requests >= 4 || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let exports = collector.exports.lock().expect("lock").len();
    assert!(exports >= 1, "the collector received nothing");
    for e in collector.exports.lock().expect("lock").iter() {
        assert_eq!(e.content_type, "application/x-protobuf");
        assert_eq!(
            e.api_key.as_deref(),
            Some(COLLECTOR_KEY),
            "the configured header"
        );
        let names: Vec<String> = e
            .request
            .resource_spans
            .iter()
            .map(|r| {
                let attrs = r
                    .resource
                    .as_ref()
                    .map(|r| r.attributes.as_slice())
                    .unwrap_or(&[]);
                attr(attrs, "service.name").unwrap_or_default()
            })
            .collect();
        assert!(
            !names.is_empty() && names.iter().all(|n| n == "storegate-it"),
            "{names:?}"
        );
    }

    let all = collector.spans();
    let (spans, calls): (Vec<Span>, Vec<Span>) = all.into_iter().partition(|s| s.name == "request");
    let mut paths: Vec<(String, String, String)> = spans
        .iter()
        .map(|s| {
            (
                s.name.clone(),
                attr(&s.attributes, "method").unwrap_or_default(),
                attr(&s.attributes, "path").unwrap_or_default(),
            )
        })
        .collect();
    paths.sort();
    let want = |p: &str| ("request".to_owned(), "GET".to_owned(), p.to_owned());
    assert_eq!(
        paths,
        vec![
            want("/login"),
            want("/oidc/nam/callback"),
            want("/signed-out"),
            want("/stores/us/launch"),
        ],
        "exactly one request span per gateway request"
    );
    for s in &spans {
        let rid = attr(&s.attributes, "request_id").unwrap_or_default();
        assert_eq!(rid.len(), 36, "a request id (uuid) on every span: {rid:?}");
        assert!(s.parent_span_id.is_empty(), "every request span is a root");
        assert_eq!(s.trace_id.len(), 16);
        assert_ne!(
            hex(&s.trace_id),
            forged,
            "a client's traceparent was adopted"
        );
    }
    // The launch's BigCommerce calls are its children, named by account and call only.
    let launch_span = spans
        .iter()
        .find(|s| attr(&s.attributes, "path").as_deref() == Some("/stores/us/launch"))
        .expect("the launch span");
    let mut call_names: Vec<String> = Vec::new();
    for c in &calls {
        assert_eq!(
            c.name, "bigcommerce",
            "only request and bigcommerce spans are exported"
        );
        assert_eq!(
            c.parent_span_id, launch_span.span_id,
            "a child of the launch"
        );
        assert_eq!(c.trace_id, launch_span.trace_id);
        assert_eq!(attr(&c.attributes, "account").as_deref(), Some("main"));
        call_names.push(attr(&c.attributes, "call").unwrap_or_default());
    }
    assert!(
        call_names.iter().any(|c| c == "find_customer"),
        "the launch looked the customer up: {call_names:?}"
    );
    let mut trace_ids: Vec<&[u8]> = spans.iter().map(|s| s.trace_id.as_slice()).collect();
    trace_ids.sort();
    trace_ids.dedup();
    assert_eq!(trace_ids.len(), 4, "one trace per request");

    // Nothing secret or personal anywhere in what left the process: not in a span name, an
    // attribute, an event, nor in the raw protobuf bytes.
    let email_lower = EMAIL.to_ascii_lowercase();
    let secrets = [
        ("session cookie", cookie.as_str()),
        ("Customer Login JWT", jwt.as_str()),
        ("authorization code", code.as_str()),
        ("email", EMAIL),
        ("email (normalised)", email_lower.as_str()),
        ("client secret", SECRET),
        ("collector key", COLLECTOR_KEY),
    ];
    for e in collector.exports.lock().expect("lock").iter() {
        let decoded = format!("{:?}", e.request);
        for (what, value) in secrets {
            assert!(value.len() >= 8, "{what} is long enough to search for");
            assert!(!decoded.contains(value), "the {what} was exported");
            assert!(
                !e.body.windows(value.len()).any(|w| w == value.as_bytes()),
                "the {what} is in the exported bytes"
            );
        }
        assert!(!decoded.contains("cart.php"), "a query string was exported");
    }
    for s in &spans {
        assert!(
            s.events.is_empty(),
            "log events are not exported: {:?}",
            s.events
        );
        for kv in &s.attributes {
            let v = text(&kv.value);
            assert!(!v.contains('?'), "{}={v} carries a query string", kv.key);
        }
    }
    exporter.shutdown().await;
}

/// Makes `exporter`'s layer this thread's subscriber while the guard lives.
///
/// tracing caches each call site's interest for the whole process, decided when the site is
/// first reached. While only one dispatcher exists, tracing-core decides it with the reaching
/// thread's own default (tokio-rs/tracing#3611): another test's thread, with no subscriber,
/// reaching the gateway's `request` span first would silence it here for good (this test once
/// saw no spans at all). A second dispatcher kept alive puts tracing on its general path, which
/// asks every live dispatcher, ours included; the rebuild redoes sites already decided.
fn export_on_this_thread(exporter: &Telemetry) -> ExportGuard {
    let second = tracing::Dispatch::new(tracing_subscriber::registry());
    let guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(exporter.layer()));
    tracing::callsite::rebuild_interest_cache();
    ExportGuard {
        _guard: guard,
        _second: second,
    }
}

struct ExportGuard {
    _guard: tracing::subscriber::DefaultGuard,
    _second: tracing::Dispatch,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The real binary: `storegate serve` with `[telemetry]` exports its request spans, and the last
/// batch reaches the collector when SIGTERM ends the process. The SDK's batch delay is 5 s; the
/// process is stopped well before that, so only the flush after the drain can deliver the span.
#[tokio::test]
async fn serve_flushes_the_last_spans_to_the_collector_on_sigterm() {
    let collector = Collector::start().await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        l.local_addr().expect("addr").port()
    };
    let dir = TempDir::new("otlp-serve");
    let first = "public_url = \"https://sso.example.com\"";
    let text = format!(
        "{}\n[telemetry]\notlp_endpoint = \"{}\"\n",
        VALID.replacen(first, &format!("{first}\nlisten = \"127.0.0.1:{port}\""), 1),
        collector.base
    );
    let path = dir.write("storegate.toml", &text);
    let mut child = std::process::Command::new(BIN)
        .arg("serve")
        .arg("-c")
        .arg(&path)
        .env_remove("STOREGATE_CONFIG")
        .env_remove("OTEL_EXPORTER_OTLP_HEADERS")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start storegate serve");
    // Wait for the listener with bare TCP connects (they make no request span).
    let addr = format!("127.0.0.1:{port}");
    let mut up = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(&addr).await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    if !up {
        let _ = child.kill();
        panic!("storegate serve did not listen on {addr}");
    }
    let page = reqwest::get(format!("http://{addr}/signed-out"))
        .await
        .expect("GET /signed-out");
    assert_eq!(page.status(), 200);
    let pid = i32::try_from(child.id()).expect("pid");
    // SAFETY: kill(2) on the child this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait for storegate serve");
    assert!(status.success(), "storegate serve ended with {status}");

    let spans = collector.spans();
    let got: Vec<(String, Option<String>)> = spans
        .iter()
        .map(|s| (s.name.clone(), attr(&s.attributes, "path")))
        .collect();
    assert_eq!(
        got,
        vec![("request".to_owned(), Some("/signed-out".to_owned()))]
    );
    let exports = collector.exports.lock().expect("lock");
    let service: Vec<Option<String>> = exports
        .iter()
        .flat_map(|e| &e.request.resource_spans)
        .map(|r| {
            let attrs = r
                .resource
                .as_ref()
                .map(|r| r.attributes.as_slice())
                .unwrap_or(&[]);
            attr(attrs, "service.name")
        })
        .collect();
    assert_eq!(
        service,
        vec![Some("storegate".to_owned())],
        "the default service name"
    );
}

/// Spans made in this test under a subscriber exporting with `ratio`; returns how many arrived.
async fn exported_with_ratio(ratio: f64, spans: usize) -> usize {
    let collector = Collector::start().await;
    let cfg = storegate::config::telemetry::TelemetryConfig {
        traces_url: url::Url::parse(&format!("{}/v1/traces", collector.base)).expect("url"),
        service_name: "storegate-ratio".to_owned(),
        sample_ratio: ratio,
        headers: Vec::new(),
    };
    let exporter = Telemetry::start(&cfg).expect("start the exporter");
    {
        let _guard = export_on_this_thread(&exporter);
        for _ in 0..spans {
            let span = tracing::info_span!(target: "storegate::web", "request", path = "/");
            span.in_scope(|| {});
        }
    }
    exporter.flush().await;
    let n = collector.spans().len();
    exporter.shutdown().await;
    n
}

#[tokio::test(flavor = "current_thread")]
async fn sample_ratio_zero_exports_nothing_and_one_exports_every_request() {
    assert_eq!(exported_with_ratio(0.0, 20).await, 0);
    assert_eq!(exported_with_ratio(1.0, 20).await, 20);
}

/// An exporter dropped without `shutdown` (a panic or an early return) on the thread of a
/// current-thread runtime still delivers its spans and returns. The SDK blocks the dropping
/// thread until the export is done, which works only because the export runs on the exporter's
/// own thread: on the caller's runtime this drop waited forever (it hung CI once). The collector
/// runs on a runtime of its own, and a watchdog turns a hang into a failure.
#[test]
fn dropping_a_live_exporter_on_a_runtime_thread_flushes_and_returns() {
    let collector_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("collector runtime");
    let collector = collector_rt.block_on(Collector::start());
    let cfg = storegate::config::telemetry::TelemetryConfig {
        traces_url: url::Url::parse(&format!("{}/v1/traces", collector.base)).expect("url"),
        service_name: "storegate-drop".to_owned(),
        sample_ratio: 1.0,
        headers: Vec::new(),
    };
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("test runtime");
        rt.block_on(async move {
            let exporter = Telemetry::start(&cfg).expect("start the exporter");
            {
                let _guard = export_on_this_thread(&exporter);
                for _ in 0..3 {
                    tracing::info_span!(target: "storegate::web", "request", path = "/")
                        .in_scope(|| {});
                }
            }
            drop(exporter);
        });
        let _ = done.send(());
    });
    finished
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("dropping the exporter returned within 30 s");
    assert_eq!(collector.spans().len(), 3, "the drop delivered the spans");
}
