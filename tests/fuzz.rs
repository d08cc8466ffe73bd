//! Fuzzing as part of `make test` (issue 10): the six targets of `storegate::fuzzing`, each for a
//! bounded time.
//!
//! Per target: (a) every committed file in `tests/fuzz/corpus/<target>/` is replayed, then (b)
//! inputs are mutated from that corpus until the time budget runs out: byte-level mutations
//! (bit flips, random bytes, inserts, deletions, duplicated ranges, splices of two entries,
//! truncations, tokens from a per-target dictionary) and structured ones (for XML: swapped
//! attribute values, duplicated or removed elements; for JSON: a value replaced, duplicated or
//! retyped; for TOML: lines duplicated, dropped or swapped). An input whose outcome label was
//! not seen before joins the pool (a poor man's coverage signal).
//!
//! Why a small mutator here instead of bolero or proptest: bolero's coverage needs a nightly
//! sanitizer build (its stable mode is random bytes), and proptest generates from strategies,
//! not from a corpus of real signed messages, so neither starts from the seeds that reach deep
//! into the verifier. The coverage-guided runs are cargo-fuzz's job (`fuzz/`, see its README),
//! on the same entry points; this runner makes `make test` replay their findings and keep
//! exploring a little on every run.
//!
//! A panic or an input that runs longer than the hang bound fails the test. The input is written
//! to `<target dir>/fuzz-failures/<target>/<sha256>` and printed in base64, ready to become a
//! corpus file. A hang ends the test process at once (exit code 101): the stuck thread cannot be
//! stopped, and the process's exit handlers would crash under it.
//!
//! Settings: `STOREGATE_FUZZ_SECONDS` (mutation time per target, default 30, or 8 for the quick
//! JSON and text parsers: see `default_seconds`; 0 replays the corpus only), `STOREGATE_FUZZ_HANG_SECONDS` (per input, default 5), `STOREGATE_FUZZ_SEED` (the
//! mutation seed; each run prints the one it used), `STOREGATE_FUZZ_PENDING=1` (also replay the
//! corpus files listed in `tests/fuzz/pending.txt`: known findings waiting for a fix).
//! `STOREGATE_FUZZ_VERBOSE=1` prints the outcome of every corpus file.
//! Executions and outcomes per target are printed at the end (`cargo test --test fuzz -- --nocapture`).

// The `storegate` binary's allocator (src/main.rs), which with its `override` feature also serves
// libxml2, libxmlsec and OpenSSL: hostile input meets the allocator that runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine;
use sha2::Digest;
use storegate::fuzzing::{Fuzz, FuzzKeys, Target};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz")
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// `target/file` entries of tests/fuzz/pending.txt (known findings, replayed only on request).
fn pending() -> Vec<String> {
    std::fs::read_to_string(fuzz_dir().join("pending.txt"))
        .unwrap_or_default()
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

/// The corpus of `target`, sorted by name, and how many pending entries were left out.
fn corpus(target: Target) -> (Vec<(String, Vec<u8>)>, usize) {
    let dir = fuzz_dir().join("corpus").join(target.name());
    let with_pending = std::env::var("STOREGATE_FUZZ_PENDING").is_ok_and(|v| v == "1");
    let pending = pending();
    let mut out = Vec::new();
    let mut skipped = 0;
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .flatten();
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        if !with_pending && pending.contains(&format!("{}/{name}", target.name())) {
            skipped += 1;
            continue;
        }
        let bytes = std::fs::read(e.path()).expect("corpus file");
        out.push((name, bytes));
    }
    out.sort();
    assert!(!out.is_empty(), "the corpus {} is empty", dir.display());
    (out, skipped)
}

/// xorshift64*: reproducible from the printed seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

const MAX_INPUT: usize = 128 * 1024;

/// Tokens worth inserting, per target.
fn dictionary(target: Target) -> &'static [&'static str] {
    match target {
        Target::SamlResponse | Target::SloRedirect => &[
            "<!---->",
            "<![CDATA[x]]>",
            "<!DOCTYPE r [<!ENTITY x \"y\">]>",
            "&x;",
            "&#0;",
            "&#x110000;",
            "&amp;",
            "<?pi x?>",
            " xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"",
            " xmlns=\"\"",
            " ID=\"_evil\"",
            " URI=\"\"",
            " URI=\"#_evil\"",
            " URI=\"file:///etc/hostname\"",
            "<ds:Object>",
            "</ds:Object>",
            "<ds:Manifest><ds:Reference URI=\"#x\"/></ds:Manifest>",
            "Algorithm=\"http://www.w3.org/TR/1999/REC-xpath-19991116\"",
            "Algorithm=\"http://www.w3.org/2000/09/xmldsig#rsa-sha1\"",
            "Algorithm=\"http://www.w3.org/2000/09/xmldsig#sha1\"",
            "urn:oasis:names:tc:SAML:2.0:assertion",
            "urn:oasis:names:tc:SAML:2.0:protocol",
            "<saml:Assertion xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\">",
            "</saml:Assertion>",
            "<?xml version=\"1.0\" encoding=\"UTF-16\"?>",
            "\u{feff}",
            "%00",
            "%25",
            "&",
            "=",
            "SAMLRequest=",
            "SAMLResponse=",
            "SigAlg=",
            "Signature=",
            "RelayState=",
            "2026-12-02T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "-999999-01-01T00:00:00Z",
        ],
        Target::ScimFilter | Target::ScimPatch | Target::ScimResource => &[
            " eq ",
            " ne ",
            " co ",
            " sw ",
            " ew ",
            " pr",
            " gt ",
            " ge ",
            " lt ",
            " le ",
            " and ",
            " or ",
            "not (",
            "(",
            ")",
            "[",
            "]",
            ".",
            "\"",
            "\\\"",
            "\\u0000",
            "emails[type eq \"work\"].value",
            "members[value eq \"u1\"]",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
            "urn:ietf:params:scim:schemas:core:2.0:User:name.givenName",
            "name.familyName",
            "meta.lastModified",
            "true",
            "false",
            "null",
            "1e999",
            "-0",
            "\"op\":\"remove\"",
            "\"op\":\"add\"",
            "\"op\":\"replace\"",
            "\"path\":\"members\"",
            "\"path\":\"id\"",
            "\"value\":[]",
            "\"value\":{}",
            "\"userName\":\" Mia@Corp.Example \",",
            "\"displayName\":\"BC-Merchandisers\",",
            "\"members\":[{\"value\":\"u1\"}],",
            "\"active\":\"False\",",
            "\"id\":\"x\",",
            "\"USERNAME\":\"x\",",
        ],
        Target::ReturnTo => &[
            "/",
            "//",
            "\\",
            "/\\",
            "..",
            "/../",
            "./",
            "%2e%2e",
            "%2E.",
            "%2f",
            "%5c",
            "%09",
            "@",
            ":",
            "https:",
            "javascript:",
            "evil.example",
            "?",
            "#",
            "\t",
            "\r\n",
            "\u{0}",
            "\u{a0}",
            "\u{3002}",
            "\u{ff0f}",
            "\u{2215}",
            "\u{202e}",
        ],
        Target::ClientIp => &[
            ", ",
            ",",
            "\n",
            "10.1.1.1",
            "198.51.100.7",
            "::ffff:10.1.1.1",
            "fd00::1",
            "[::1]",
            "1.2.3.4:80",
            "unknown",
            "0",
            "%25",
        ],
        Target::ForwardedRequest => &[
            "x-forwarded-host: ",
            "x-forwarded-uri: ",
            "x-original-uri: ",
            "x-forwarded-proto: https\n",
            "x-forwarded-method: ",
            "host: orders.example.com\n",
            "suffix: ",
            "%2e%2e",
            "%2f",
            "/../",
            "orders.example.com",
            ":443",
            "@",
            "\\",
            "?",
            "#",
            "/admin",
        ],
        Target::ProxyHeaders => &[
            "connection: ",
            "upgrade: websocket\n",
            "cookie: storegate_session=",
            "set-cookie: storegate_session=",
            "x-storegate-identity: ",
            "x-desk-user: ",
            "x-forwarded-for: ",
            "forwarded: ",
            "keep-alive",
            "proxy-authorization: ",
            "te: trailers\n",
            ", ",
            "; ",
            "=",
        ],
        Target::LogoutToken => &[
            "\"nonce\":\"n\",",
            "\"sid\":\"s\",",
            "\"sub\":\"u\",",
            "\"aud\":[\"storegate\",\"x\"],",
            "\"exp\":0,",
            "\"iat\":1796200000,",
            "\"events\":{\"http://schemas.openid.net/event/backchannel-logout\":{}},",
            "\"alg\":\"none\"",
            "\"alg\":\"HS256\"",
            "\"typ\":\"logout+jwt\"",
            "\"crit\":[\"b64\"]",
            "raw:",
            ".",
        ],
        Target::AccountApiDecode => &[
            "\"errors\":[{\"message\":\"x\"}],",
            "\"errors\":[],",
            "\"errors\":{},",
            "\"data\":null,",
            "\"data\":{},",
            "\"hasNextPage\":true",
            "\"hasNextPage\":false",
            "\"endCursor\":null",
            "\"endCursor\":\"\"",
            "\"cursor\":\"c\"",
            "\"edges\":[]",
            "\"node\":{}",
            "\"permissions\":[\"Manage_Users\"]",
            "\"storeHash\":\"h\"",
            "\"addUserToStore\":null",
            "\"addUserToStore\":{}",
            "\\u0000",
            "\\ud800",
            "1e999",
            "\u{80}",
            "\u{fe}",
        ],
        Target::WebhookPayload => &[
            "\"scope\":\"store/customer/updated\",",
            "\"scope\":\"store/customer/address/updated\",",
            "\"scope\":\"store/company/user/created\",",
            "\"producer\":\"stores/abc123\",",
            "\"producer\":\"stores/def456\",",
            "\"producer\":\"stores/\",",
            "\"created_at\":-9223372036854775808,",
            "\"created_at\":9223372036854775807,",
            "\"id\":18446744073709551615",
            "\"id\":-1",
            "\"data\":{},",
            "store/customer/",
            "stores/abc123",
            "\\u0000",
            "\\/",
        ],
        Target::ConfigLoader => &[
            "\n[saml]\nkey_file = \"sp.key\"\ncert_file = \"sp.crt\"\n",
            "\n[[idp]]\nid = \"s\"\nprotocol = \"saml\"\nmetadata_file = \"idp-metadata.xml\"\n",
            "\n[[store]]\n",
            "\n[[rule]]\n",
            "\n[[template]]\n",
            "\n[scim]\n",
            "\n[provisioning]\n",
            "\n[telemetry]\n",
            "\n[session]\n",
            "${NAME}",
            "${UNSET_VAR}",
            "${",
            "_file = \"secret.txt\"",
            " = \"\"",
            " = 0",
            " = -1",
            " = 18446744073709551615",
            " = \"0s\"",
            " = \"9999999999999d\"",
            " = []",
            " = {}",
            " = true",
            "\"\"\"",
            "'''",
            "\\u0000",
            "# ",
            "[",
            "]]",
            "\n",
            "=",
            ".",
        ],
    }
}

fn byte_mutation(rng: &mut Rng, data: &mut Vec<u8>, other: &[u8], dict: &[&str]) {
    let len = data.len();
    match rng.below(9) {
        0 if len > 0 => {
            let i = rng.below(len);
            data[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            data[i] = rng.next() as u8;
        }
        2 => {
            let at = rng.below(len + 1);
            let n = 1 + rng.below(8);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            data.splice(at..at, bytes);
        }
        3 if len > 0 => {
            let a = rng.below(len);
            let b = (a + 1 + rng.below(64)).min(len);
            data.drain(a..b);
        }
        4 if len > 0 => {
            let a = rng.below(len);
            let b = (a + 1 + rng.below(256)).min(len);
            let chunk = data[a..b].to_vec();
            let at = rng.below(len + 1);
            data.splice(at..at, chunk);
        }
        5 if !other.is_empty() => {
            // Splice: our head, the other's tail.
            let cut = rng.below(len + 1);
            let from = rng.below(other.len());
            data.truncate(cut);
            data.extend_from_slice(&other[from..]);
        }
        6 if len > 0 => data.truncate(rng.below(len)),
        _ => {
            let token = dict[rng.below(dict.len())];
            let at = rng.below(len + 1);
            data.splice(at..at, token.bytes());
        }
    }
}

/// Byte ranges `(start, end)` of every `="..."` attribute value.
fn attr_values(s: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(at) = s[i..].find("=\"") {
        let start = i + at + 2;
        match s[start..].find('"') {
            Some(end) => {
                out.push((start, start + end));
                i = start + end + 1;
            }
            None => break,
        }
    }
    out
}

/// The span of a random element (`<p:name ...>` to its `</p:name>`), if one is found.
fn element_span(rng: &mut Rng, s: &str) -> Option<(usize, usize)> {
    let opens: Vec<usize> = s
        .match_indices('<')
        .map(|(i, _)| i)
        .filter(|&i| {
            s[i + 1..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic())
        })
        .collect();
    let start = opens[rng
        .below(opens.len().max(1))
        .min(opens.len().checked_sub(1)?)];
    let name_end = s[start + 1..].find(|c: char| c.is_whitespace() || c == '>' || c == '/')?;
    let name = &s[start + 1..start + 1 + name_end];
    let tag_end = s[start..].find('>')? + start + 1;
    if s[..tag_end].ends_with("/>") {
        return Some((start, tag_end));
    }
    let close = format!("</{name}>");
    let end = s[tag_end..].find(&close)? + tag_end + close.len();
    Some((start, end))
}

fn xml_mutation(rng: &mut Rng, data: &mut Vec<u8>) -> bool {
    let Ok(s) = std::str::from_utf8(data) else {
        return false;
    };
    let s = s.to_owned();
    let out = match rng.below(4) {
        0 => {
            let vals = attr_values(&s);
            if vals.len() < 2 {
                return false;
            }
            let (mut a, mut b) = (vals[rng.below(vals.len())], vals[rng.below(vals.len())]);
            if a.0 > b.0 {
                std::mem::swap(&mut a, &mut b);
            }
            if a == b || a.1 > b.0 {
                return false;
            }
            format!(
                "{}{}{}{}{}",
                &s[..a.0],
                &s[b.0..b.1],
                &s[a.1..b.0],
                &s[a.0..a.1],
                &s[b.1..]
            )
        }
        1 => {
            let Some((a, b)) = element_span(rng, &s) else {
                return false;
            };
            format!("{}{}{}", &s[..b], &s[a..b], &s[b..])
        }
        2 => {
            let Some((a, b)) = element_span(rng, &s) else {
                return false;
            };
            format!("{}{}", &s[..a], &s[b..])
        }
        _ => {
            // Move an element somewhere else (the shape of signature wrapping).
            let Some((a, b)) = element_span(rng, &s) else {
                return false;
            };
            let elem = s[a..b].to_owned();
            let rest = format!("{}{}", &s[..a], &s[b..]);
            let spots: Vec<usize> = rest.match_indices('<').map(|(i, _)| i).collect();
            if spots.is_empty() {
                return false;
            }
            let at = spots[rng.below(spots.len())];
            format!("{}{}{}", &rest[..at], elem, &rest[at..])
        }
    };
    *data = out.into_bytes();
    true
}

fn mutate_json(rng: &mut Rng, v: &mut serde_json::Value, depth: usize) {
    use serde_json::Value;
    let replace = depth > 6 || rng.chance(3);
    if !replace {
        match v {
            Value::Array(a) if !a.is_empty() => {
                let i = rng.below(a.len());
                if rng.chance(4) {
                    let dup = a[i].clone();
                    a.push(dup);
                } else if rng.chance(6) {
                    a.remove(i);
                } else {
                    mutate_json(rng, &mut a[i], depth + 1);
                }
                return;
            }
            Value::Object(o) if !o.is_empty() => {
                let keys: Vec<String> = o.keys().cloned().collect();
                let k = &keys[rng.below(keys.len())];
                if rng.chance(6) {
                    o.remove(k);
                } else if rng.chance(6) {
                    let val = o[k].clone();
                    o.insert(k.to_ascii_uppercase(), val);
                } else if let Some(x) = o.get_mut(k) {
                    mutate_json(rng, x, depth + 1);
                }
                return;
            }
            _ => {}
        }
    }
    *v = match rng.below(8) {
        0 => Value::Null,
        1 => Value::Bool(rng.chance(2)),
        2 => serde_json::json!(rng.next() as i64),
        3 => serde_json::json!(-1.5e300),
        4 => Value::String(String::new()),
        5 => Value::Array(vec![v.clone(), v.clone()]),
        6 => serde_json::json!({ "value": v.clone() }),
        _ => Value::String(
            [
                "members",
                "emails[type eq \"work\"].value",
                "active",
                "id",
                "urn:x:y",
            ][rng.below(5)]
            .to_owned(),
        ),
    };
}

fn line_mutation(rng: &mut Rng, data: &mut Vec<u8>) -> bool {
    let text = String::from_utf8_lossy(data).into_owned();
    let mut lines: Vec<&str> = text.lines().collect();
    if lines.len() < 2 {
        return false;
    }
    let i = rng.below(lines.len());
    let j = rng.below(lines.len());
    match rng.below(3) {
        0 => lines.insert(j, lines[i]),
        1 => {
            lines.remove(i);
        }
        _ => lines.swap(i, j),
    }
    *data = lines.join("\n").into_bytes();
    true
}

fn mutate(rng: &mut Rng, target: Target, base: &[u8], other: &[u8]) -> Vec<u8> {
    let mut data = base.to_vec();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        // Structured rounds keep the input parseable for longer: one in three, and two in three
        // for PATCH bodies and Account API answers (JSON that no longer parses stops at serde).
        let structured_round = if matches!(
            target,
            Target::ScimPatch
                | Target::AccountApiDecode
                | Target::WebhookPayload
                | Target::ScimResource
        ) {
            !rng.chance(3)
        } else {
            rng.chance(3)
        };
        let structured = structured_round
            && match target {
                Target::SamlResponse | Target::SloRedirect => xml_mutation(rng, &mut data),
                Target::ScimPatch | Target::WebhookPayload => match serde_json::from_slice(&data) {
                    Ok(mut v) => {
                        mutate_json(rng, &mut v, 0);
                        data = serde_json::to_vec(&v).unwrap_or(data);
                        true
                    }
                    Err(_) => false,
                },
                Target::ConfigLoader
                | Target::ClientIp
                | Target::ForwardedRequest
                | Target::ProxyHeaders
                | Target::LogoutToken => line_mutation(rng, &mut data),
                // The first byte picks the document; the rest is JSON.
                Target::AccountApiDecode | Target::ScimResource => match data.split_first() {
                    Some((&pick, rest)) => match serde_json::from_slice(rest) {
                        Ok(mut v) => {
                            mutate_json(rng, &mut v, 0);
                            let mut out = vec![pick];
                            out.extend(serde_json::to_vec(&v).unwrap_or_default());
                            data = out;
                            true
                        }
                        Err(_) => false,
                    },
                    None => false,
                },
                Target::ScimFilter | Target::ReturnTo => false,
            };
        if !structured {
            byte_mutation(rng, &mut data, other, dictionary(target));
        }
    }
    data.truncate(MAX_INPUT);
    data
}

/// Runs inputs on a worker thread so that a hang is seen (and reported) instead of waited for.
struct Worker {
    to: mpsc::Sender<Vec<u8>>,
    from: mpsc::Receiver<std::thread::Result<&'static str>>,
}

impl Worker {
    fn start(target: Target) -> Worker {
        let keys = FuzzKeys::from_dir(&fuzz_dir().join("keys")).expect("fuzz keys");
        let fuzz = Fuzz::new(&keys).expect("fuzz targets");
        let (to, inputs) = mpsc::channel::<Vec<u8>>();
        let (outcomes, from) = mpsc::channel();
        std::thread::Builder::new()
            .name(format!("fuzz-{}", target.name()))
            .spawn(move || {
                for input in inputs {
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        fuzz.run(target, &input)
                    }));
                    let failed = r.is_err();
                    if outcomes.send(r).is_err() || failed {
                        return;
                    }
                }
            })
            .expect("worker thread");
        Worker { to, from }
    }

    fn run(&self, input: &[u8], hang: Duration) -> Result<&'static str, Failure> {
        if self.to.send(input.to_vec()).is_err() {
            return Err(Failure::Panicked("the worker stopped".into()));
        }
        match self.from.recv_timeout(hang) {
            Ok(Ok(label)) => Ok(label),
            Ok(Err(p)) => Err(Failure::Panicked(
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default(),
            )),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(Failure::Hung(hang)),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err(Failure::Panicked("the worker died".into()))
            }
        }
    }
}

enum Failure {
    Panicked(String),
    Hung(Duration),
}

impl Failure {
    fn describe(&self) -> String {
        match self {
            Failure::Panicked(m) => format!("panicked ({m})"),
            Failure::Hung(d) => format!("hung (no answer within {} s)", d.as_secs()),
        }
    }
}

/// Writes the failing input where it can be picked up, and fails the test with how to reproduce.
fn fail(target: Target, what: Failure, input: &[u8], origin: &str) -> ! {
    let hung = matches!(what, Failure::Hung(_));
    let hash = hex(&sha2::Sha256::digest(input));
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap_or(Path::new("target"))
        .join("fuzz-failures")
        .join(target.name());
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(&hash);
    let _ = std::fs::write(&path, input);
    let message = format!(
        "fuzz target {} {} on an input ({origin}).\n  written to {}\n  add it to tests/fuzz/corpus/{}/ once fixed\n  base64: {}",
        target.name(),
        what.describe(),
        path.display(),
        target.name(),
        base64::engine::general_purpose::STANDARD.encode(input)
    );
    if hung {
        // A thread stuck in native code (libxmlsec) cannot be stopped, and the process's exit
        // handlers (libxml2's cleanup) would run under its feet and crash. Leave at once, failed,
        // with the message written past libtest's capture (which _exit would discard).
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "\n{message}\n");
        let _ = out.flush();
        // SAFETY: _exit ends the process without running exit handlers; nothing is left to do.
        unsafe { libc::_exit(101) };
    }
    // On stdout too: with --nocapture the panic message goes to the diverted stderr.
    println!("{message}");
    panic!("{message}");
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// libxml2 and libxmlsec print every refusal straight to file descriptor 2 (a dozen lines per
/// bad signature): thousands of lines per run. They go to `<target dir>/fuzz-stderr.log` instead,
/// unless `STOREGATE_FUZZ_STDERR=1`. Test output and failures are on stdout.
fn divert_native_stderr() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var("STOREGATE_FUZZ_STDERR").is_ok_and(|v| v == "1") {
            return;
        }
        let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .unwrap_or(Path::new("target"))
            .join("fuzz-stderr.log");
        let Ok(file) = std::fs::File::create(&path) else {
            return;
        };
        use std::os::fd::AsRawFd;
        // SAFETY: dup2 onto fd 2 swaps what the descriptor refers to; `file` stays open (leaked)
        // for the life of the process, so fd 2 never dangles.
        let ok = unsafe { libc::dup2(file.as_raw_fd(), 2) } == 2;
        if ok {
            std::mem::forget(file);
            println!("fuzz: libxml2/libxmlsec messages go to {}", path.display());
        }
    });
}

/// Mutation seconds per target unless `STOREGATE_FUZZ_SECONDS` says: the parsers of small JSON
/// or text inputs run thousands of inputs a second and get a shorter default, so that each
/// new target adds seconds, not half a minute, to `make test`.
fn default_seconds(target: Target) -> u64 {
    match target {
        Target::AccountApiDecode
        | Target::WebhookPayload
        | Target::ScimResource
        | Target::ReturnTo
        | Target::ClientIp => 8,
        _ => 30,
    }
}

fn fuzz(target: Target) {
    divert_native_stderr();
    let seconds = env_u64("STOREGATE_FUZZ_SECONDS", default_seconds(target));
    let hang = Duration::from_secs(env_u64("STOREGATE_FUZZ_HANG_SECONDS", 5));
    let seed = env_u64(
        "STOREGATE_FUZZ_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    ) | 1;
    let (seeds, skipped) = corpus(target);
    let worker = Worker::start(target);
    let mut outcomes: BTreeMap<&'static str, u64> = BTreeMap::new();
    let started = Instant::now();

    let verbose = std::env::var("STOREGATE_FUZZ_VERBOSE").is_ok_and(|v| v == "1");
    for (name, input) in &seeds {
        match worker.run(input, hang) {
            Ok(label) => {
                if verbose {
                    println!("fuzz {}: {name}: {label}", target.name());
                }
                *outcomes.entry(label).or_default() += 1
            }
            Err(what) => fail(target, what, input, &format!("corpus file {name}")),
        }
    }
    let replayed = seeds.len();

    let mut rng = Rng(seed);
    let mut pool: Vec<Vec<u8>> = seeds.into_iter().map(|(_, b)| b).collect();
    let mut mutated = 0u64;
    let budget = Duration::from_secs(seconds);
    let mutation_start = Instant::now();
    while mutation_start.elapsed() < budget {
        let base = &pool[rng.below(pool.len())];
        let other = &pool[rng.below(pool.len())];
        let input = mutate(&mut rng, target, base, other);
        match worker.run(&input, hang) {
            Ok(label) => {
                let seen = outcomes.entry(label).or_default();
                if *seen == 0 && pool.len() < 4096 {
                    pool.push(input);
                }
                *seen += 1;
            }
            Err(what) => fail(
                target,
                what,
                &input,
                &format!("mutation {mutated} of seed {seed}"),
            ),
        }
        mutated += 1;
    }
    println!(
        "fuzz {}: {} executions in {:.1} s ({replayed} corpus files replayed, {skipped} pending skipped, {mutated} mutations, seed {seed}); outcomes: {:?}",
        target.name(),
        replayed as u64 + mutated,
        started.elapsed().as_secs_f64(),
        outcomes
    );
}

#[test]
fn fuzz_saml_response() {
    fuzz(Target::SamlResponse);
}

#[test]
fn fuzz_slo_redirect() {
    fuzz(Target::SloRedirect);
}

#[test]
fn fuzz_scim_filter() {
    fuzz(Target::ScimFilter);
}

#[test]
fn fuzz_scim_patch() {
    fuzz(Target::ScimPatch);
}

#[test]
fn fuzz_config_loader() {
    fuzz(Target::ConfigLoader);
}

#[test]
fn fuzz_forwarded_request() {
    fuzz(Target::ForwardedRequest);
}

#[test]
fn fuzz_proxy_headers() {
    fuzz(Target::ProxyHeaders);
}

#[test]
fn fuzz_logout_token() {
    fuzz(Target::LogoutToken);
}

#[test]
fn fuzz_account_api_decode() {
    fuzz(Target::AccountApiDecode);
}

#[test]
fn fuzz_webhook_payload() {
    fuzz(Target::WebhookPayload);
}

#[test]
fn fuzz_scim_resource() {
    fuzz(Target::ScimResource);
}

#[test]
fn fuzz_return_to() {
    fuzz(Target::ReturnTo);
}

#[test]
fn fuzz_client_ip() {
    fuzz(Target::ClientIp);
}
