//! The full ACS path over HTTP: a gateway built from a configuration (one SAML IdP, memory or
//! Redis sessions, sign-in rate limit off), N sign-ins started with `GET /login` (each keeps its
//! binding cookie, RelayState and AuthnRequest ID), then N unique Responses POSTed to
//! `/saml/acs`, each once, by 16 keep-alive connections.
//!
//! The client is in this process, on 16 OS threads with blocking sockets (a few µs of CPU per
//! request, against about a millisecond for the ACS). Their CPU time is measured per thread
//! (`CLOCK_THREAD_CPUTIME_ID`) and subtracted from the process's, so the gateway's CPU column is
//! the gateway's alone.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use storegate::clock::SystemClock;
use storegate::config::{LiteralEnv, load_str};

pub const IDP_ID: &str = "opentext-saml";
const PENDING_COOKIE: &str = "storegate_saml_pending";
const SESSION_COOKIE: &str = "storegate_session";

/// Sessions kept in memory, or on a private redis-server at this URL.
#[derive(Clone)]
pub enum Sessions {
    Memory,
    Redis(String),
}

/// The gateway's configuration; `dir` holds sp.key, sp.crt and idp-metadata.xml.
pub fn config_text(dir: &Path, sessions: &Sessions, audit: &Path) -> String {
    let session = match sessions {
        Sessions::Memory => "store = \"memory\"".to_owned(),
        Sessions::Redis(url) => format!("store = \"redis\"\nredis_url = \"{url}\""),
    };
    format!(
        r#"
public_url = "{public}"
listen = "127.0.0.1:9"
support_contact = "the e-commerce team (ecom-access@example.com)"

[session]
{session}
idle_timeout = "30m"
absolute_timeout = "12h"

[audit]
file = "{audit}"

# The bench is one client address: the per-address limit would refuse most of it.
[rate_limit]
per_address_per_minute = 0

[saml]
key_file = "{dir}/sp.key"
cert_file = "{dir}/sp.crt"

[[idp]]
id = "{IDP_ID}"
display_name = "OpenText (SAML)"
protocol = "saml"
metadata_file = "{dir}/idp-metadata.xml"
clock_skew = "60s"
nameid_format = "{email}"
[idp.attributes]
email = "mail"
given_name = "givenName"
family_name = "sn"
groups = "groupMembership"
group_dn_to_name = true

[[bigcommerce]]
id = "main"
store_hash = "abc123"
api_base = "http://127.0.0.1:9"
access_token = "token"
client_id = "client"
client_secret = "login-secret"

[[store]]
id = "us"
name = "US Storefront"
bigcommerce = "main"
channel_id = 1
url = "https://us.shop.example"

[[rule]]
name = "merch"
groups_any = ["bc-merchandisers"]
stores = ["us"]
role = "merchandiser"
customer_group = "Staff"
"#,
        public = super::PUBLIC,
        email = super::EMAIL_FORMAT,
        audit = audit.display(),
        dir = dir.display()
    )
}

/// A gateway serving on 127.0.0.1 in the current tokio runtime, until dropped.
pub struct Gateway {
    pub addr: SocketAddr,
    pub audit: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Gateway {
    pub async fn start(dir: &Path, sessions: &Sessions, name: &str) -> Gateway {
        let audit = dir.join(format!("audit-{name}.jsonl"));
        let text = config_text(dir, sessions, &audit);
        let cfg = load_str(&text, "saml-bench.toml", &LiteralEnv)
            .unwrap_or_else(|d| panic!("the bench's gateway configuration:\n{d}"));
        let log = storegate::server::open_audit(&cfg).expect("audit log");
        let state = storegate::app::build_state(cfg, std::sync::Arc::new(SystemClock), log)
            .expect("gateway state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(storegate::server::serve_on(
            listener,
            storegate::web::router(state),
            async move {
                let _ = rx.await;
            },
        ));
        Gateway {
            addr,
            audit,
            stop: Some(tx),
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A sign-in started with `GET /login`: what the browser keeps until the IdP answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub cookie: String,
    pub relay_state: String,
    pub request_id: String,
}

/// One HTTP/1.1 answer: status and headers (names lower-cased); the body is read and dropped.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value this answer sets for cookie `name`, if it sets one (non-empty).
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == "set-cookie")
            .filter_map(|(_, v)| v.split(';').next())
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, v)| *k == name && !v.is_empty())
            .map(|(_, v)| v)
    }
}

/// Reads the status line and headers from `head` (up to and excluding the blank line).
pub fn parse_head(head: &str) -> Result<Answer, String> {
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or("empty answer")?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.split_once(':')
                .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
                .ok_or_else(|| format!("bad header line {l:?}"))
        })
        .collect::<Result<_, _>>()?;
    Ok(Answer { status, headers })
}

/// Sends `request` on `stream` and reads one answer (Content-Length or chunked body).
pub fn exchange(
    stream: &mut TcpStream,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> Result<Answer, String> {
    stream
        .write_all(request)
        .map_err(|e| format!("send: {e}"))?;
    buf.clear();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let got = stream.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
        if got == 0 {
            return Err("the gateway closed the connection".into());
        }
        buf.extend_from_slice(&chunk[..got]);
    };
    let answer = parse_head(&String::from_utf8_lossy(&buf[..head_end]))?;
    let body_start = head_end + 4;
    let chunked = answer
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let done = |b: &[u8]| -> bool {
        if chunked {
            b[body_start..].ends_with(b"0\r\n\r\n")
        } else {
            let len: usize = answer
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            b.len() >= body_start + len
        }
    };
    while !done(buf) {
        let got = stream
            .read(&mut chunk)
            .map_err(|e| format!("read body: {e}"))?;
        if got == 0 {
            return Err("the gateway closed the connection in a body".into());
        }
        buf.extend_from_slice(&chunk[..got]);
    }
    Ok(answer)
}

/// The AuthnRequest ID and RelayState in the `Location` of `GET /login`'s answer (HTTP-Redirect
/// binding: SAMLRequest is raw-deflated, then base64).
pub fn authn_request(location: &str) -> Result<(String, String), String> {
    let url = url::Url::parse(location).map_err(|e| format!("Location {location:?}: {e}"))?;
    let (mut request, mut relay) = (None, None);
    for (k, v) in url.query_pairs() {
        match k.as_ref() {
            "SAMLRequest" => request = Some(v.into_owned()),
            "RelayState" => relay = Some(v.into_owned()),
            _ => {}
        }
    }
    let request = request.ok_or("no SAMLRequest in the Location")?;
    let deflated = base64::engine::general_purpose::STANDARD
        .decode(request.as_bytes())
        .map_err(|e| format!("SAMLRequest base64: {e}"))?;
    let mut xml = String::new();
    flate2::read::DeflateDecoder::new(&deflated[..])
        .read_to_string(&mut xml)
        .map_err(|e| format!("SAMLRequest inflate: {e}"))?;
    let at = xml.find(" ID=\"").ok_or("no ID in the AuthnRequest")? + 5;
    let len = xml[at..].find('"').ok_or("unterminated ID")?;
    Ok((
        xml[at..at + len].to_owned(),
        relay.ok_or("no RelayState in the Location")?,
    ))
}

/// Starts `n` sign-ins with `GET /login?idp=...` over `connections` keep-alive connections.
pub fn begin_sign_ins(addr: SocketAddr, n: usize, connections: usize) -> Vec<Pending> {
    let request = format!(
        "GET /login?idp={IDP_ID} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: saml-bench\r\n\r\n"
    );
    let share = n.div_ceil(connections.max(1));
    let mut all = Vec::with_capacity(n);
    std::thread::scope(|s| {
        let parts: Vec<_> = (0..connections)
            .map(|c| {
                let count = share.min(n.saturating_sub(c * share));
                let request = request.as_bytes();
                s.spawn(move || {
                    let mut stream = TcpStream::connect(addr).expect("connect to the gateway");
                    let _ = stream.set_nodelay(true);
                    let mut buf = Vec::new();
                    (0..count)
                        .map(|_| {
                            let a = exchange(&mut stream, request, &mut buf)
                                .unwrap_or_else(|e| panic!("GET /login: {e}"));
                            pending_from(&a).unwrap_or_else(|e| panic!("GET /login: {e}"))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for p in parts {
            all.extend(p.join().expect("a sign-in starter panicked"));
        }
    });
    all
}

/// What a browser keeps from `GET /login`'s redirect to the IdP.
pub fn pending_from(a: &Answer) -> Result<Pending, String> {
    if !matches!(a.status, 302 | 303 | 307) {
        return Err(format!(
            "answered {} instead of a redirect to the IdP",
            a.status
        ));
    }
    let location = a.header("location").ok_or("a redirect without Location")?;
    let (request_id, relay_state) = authn_request(location)?;
    let cookie = a
        .cookie(PENDING_COOKIE)
        .ok_or("no binding cookie in the answer")?
        .to_owned();
    Ok(Pending {
        cookie,
        relay_state,
        request_id,
    })
}

/// The ACS POST for `p` carrying `response` (base64).
pub fn acs_request(addr: SocketAddr, p: &Pending, response: &str) -> Vec<u8> {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("SAMLResponse", response)
        .append_pair("RelayState", &p.relay_state)
        .finish();
    format!(
        "POST /saml/acs HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: saml-bench\r\nCookie: {PENDING_COOKIE}={}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        p.cookie,
        body.len()
    )
    .into_bytes()
}

/// A successful sign-in: 303 to the portal (the return address `/login` had, `/`), with a
/// session cookie.
pub fn signed_in(a: &Answer) -> Result<(), String> {
    if a.status != 303 || a.header("location") != Some("/") {
        return Err(format!(
            "answered {} (Location {:?}) instead of 303 to /",
            a.status,
            a.header("location")
        ));
    }
    if a.cookie(SESSION_COOKIE).is_none() {
        return Err("signed in without a session cookie".into());
    }
    Ok(())
}

/// The timed part's outcome.
pub struct Posted {
    pub ok: u64,
    pub failed: u64,
    /// The first few refusals, to say why.
    pub failures: Vec<String>,
    pub elapsed: Duration,
    /// CPU seconds of the 16 client threads.
    pub client_cpu: f64,
    /// Per-request latencies in µs, sorted.
    pub latencies_us: Vec<u64>,
}

/// CPU seconds of the calling thread.
fn thread_cpu() -> f64 {
    // SAFETY: clock_gettime only writes the struct we pass.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// POSTs every request once, `connections` keep-alive connections in parallel (request i on
/// connection i mod `connections`); the clock runs from the first send to the last answer.
pub fn post_all(addr: SocketAddr, requests: &[Vec<u8>], connections: usize) -> Posted {
    let connections = connections.max(1);
    let start = std::sync::Barrier::new(connections + 1);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..connections)
            .map(|c| {
                let start = &start;
                s.spawn(move || {
                    let mut stream = TcpStream::connect(addr).expect("connect to the gateway");
                    let _ = stream.set_nodelay(true);
                    let mut buf = Vec::with_capacity(8192);
                    let (mut ok, mut failed, mut failures, mut lat) =
                        (0, 0, Vec::new(), Vec::new());
                    start.wait();
                    let cpu0 = thread_cpu();
                    for r in requests.iter().skip(c).step_by(connections) {
                        let t = Instant::now();
                        let outcome =
                            exchange(&mut stream, r, &mut buf).and_then(|a| signed_in(&a));
                        lat.push(t.elapsed().as_micros() as u64);
                        match outcome {
                            Ok(()) => ok += 1,
                            Err(e) => {
                                failed += 1;
                                if failures.len() < 3 {
                                    failures.push(e);
                                }
                                // A closed connection: open another for the rest.
                                if let Ok(fresh) = TcpStream::connect(addr) {
                                    stream = fresh;
                                }
                            }
                        }
                    }
                    (ok, failed, failures, lat, thread_cpu() - cpu0)
                })
            })
            .collect();
        start.wait();
        let t0 = Instant::now();
        let mut out = Posted {
            ok: 0,
            failed: 0,
            failures: Vec::new(),
            elapsed: Duration::ZERO,
            client_cpu: 0.0,
            latencies_us: Vec::with_capacity(requests.len()),
        };
        for w in workers {
            let (ok, failed, failures, lat, cpu) = w.join().expect("a client thread panicked");
            out.ok += ok;
            out.failed += failed;
            out.failures.extend(failures);
            out.latencies_us.extend(lat);
            out.client_cpu += cpu;
        }
        out.elapsed = t0.elapsed();
        out.latencies_us.sort_unstable();
        out
    })
}

/// Granted sign-ins the audit file at `path` records (after its writer caught up).
pub async fn audited_sign_ins(path: &Path) -> u64 {
    let count = || {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(r#""event":"sign_in""#) && l.contains(r#""outcome":"allow""#))
            .count() as u64
    };
    // The writer is asynchronous: wait until the count stops moving.
    let mut last = count();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = count();
        if now == last {
            break;
        }
        last = now;
    }
    last
}

/// Nearest-rank percentile of sorted values (0 when empty).
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
