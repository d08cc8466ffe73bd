//! `storegate demo` smoke test through the real binary: start it on a free port, sign in as a
//! demo user through the built-in development OP's picker page, see the portal, launch a store and
//! land signed in on the simulated storefront.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use url::Url;

use crate::support::browser::Browser;

const BIN: &str = env!("CARGO_BIN_EXE_storegate");

/// The running demo process; killed when dropped, so a failed assertion does not leave it behind.
struct DemoProcess {
    child: Child,
    /// Everything the process printed so far (stdout and stderr), for failure messages.
    output: Arc<Mutex<String>>,
}

impl DemoProcess {
    fn start(listen: &str) -> DemoProcess {
        let mut child = Command::new(BIN)
            .args(["demo", "--listen", listen])
            .env("STOREGATE_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn storegate demo");
        let output = Arc::new(Mutex::new(String::new()));
        // Drain both pipes so the child never blocks on a full pipe.
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        drain(stdout, Arc::clone(&output));
        drain(stderr, Arc::clone(&output));
        DemoProcess { child, output }
    }

    fn output(&self) -> String {
        self.output.lock().map(|o| o.clone()).unwrap_or_default()
    }

    /// The URL the demo tells the user to open, once printed.
    fn printed_url(&self) -> Option<String> {
        let out = self.output();
        let line = out.lines().find(|l| l.contains("Open http"))?;
        let start = line.find("http")?;
        let url = line[start..].split_whitespace().next()?;
        Some(url.to_owned())
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for DemoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn drain(pipe: impl Read + Send + 'static, into: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if let Ok(mut out) = into.lock() {
                out.push_str(&line);
                out.push('\n');
            }
        }
    });
}

/// The hidden inputs and action of the `<form>` that contains `marker`.
fn form_containing(html: &str, marker: &str) -> (String, Vec<(String, String)>) {
    let at = html
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} not in page:\n{html}"));
    let start = html[..at].rfind("<form").expect("<form before the marker");
    let end = start + html[start..].find("</form>").expect("</form>");
    let form = &html[start..end];
    let form_tag = &form[..form.find('>').expect("end of <form>")];
    let action = attr(form_tag, "action").expect("form action");
    let mut fields = Vec::new();
    let mut rest = form;
    while let Some(i) = rest.find("<input") {
        let tag_end = i + rest[i..].find('>').expect("end of <input>");
        let tag = &rest[i..tag_end];
        if attr(tag, "type").as_deref() == Some("hidden")
            && let (Some(name), Some(value)) = (attr(tag, "name"), attr(tag, "value"))
        {
            fields.push((name, value));
        }
        rest = &rest[tag_end..];
    }
    (action, fields)
}

/// A double-quoted attribute of one tag, with the usual HTML escapes undone.
fn attr(tag: &str, name: &str) -> Option<String> {
    let needle = format!(" {name}=\"");
    let start = tag.find(&needle)? + needle.len();
    let len = tag[start..].find('"')?;
    Some(
        tag[start..start + len]
            .replace("&quot;", "\"")
            .replace("&#x27;", "'")
            .replace("&#39;", "'")
            .replace("&#x2f;", "/")
            .replace("&#x2F;", "/")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

#[tokio::test]
async fn demo_signs_mia_in_and_launches_her_into_a_storefront() {
    // Port 0: the demo binds a port of its own and prints it, so no other test can take the port
    // between choosing it and binding it (that race made this test flaky in parallel runs).
    let mut demo = DemoProcess::start("127.0.0.1:0");

    // Wait for the printed URL and for /healthz to answer.
    let deadline = Instant::now() + Duration::from_secs(15);
    let probe = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("client");
    let base = loop {
        if let Some(status) = demo.exited() {
            panic!("storegate demo exited early ({status}):\n{}", demo.output());
        }
        if let Some(url) = demo.printed_url() {
            let healthy = probe
                .get(format!("{url}healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == StatusCode::OK);
            if healthy {
                break url;
            }
        }
        assert!(
            Instant::now() < deadline,
            "storegate demo did not come up within 15 s:\n{}",
            demo.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let port = base
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches('/')
        .parse::<u16>()
        .unwrap_or(0);
    assert!(port != 0, "the printed URL names the bound port: {base}");
    let url = |path: &str| format!("{}{}", base.trim_end_matches('/'), path);

    let b = Browser::new();
    // /login sends the browser to the development OP's picker.
    let start = b.get(&url("/login")).await;
    assert!(start.status().is_redirection(), "{}", b.hops_text());
    let picker = b.follow(start).await;
    let picker_url = picker.url().clone();
    assert_eq!(picker.status(), StatusCode::OK, "{}", b.hops_text());
    assert_eq!(picker_url.path(), "/op/authorize", "{}", b.hops_text());
    let sets_op_cookie = picker
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|c| c.contains("Path=/op") && c.contains("HttpOnly"));
    assert!(sets_op_cookie, "the picker sets its CSRF cookie");
    let html = picker.text().await.expect("picker page");

    // Pick Mia with the form's own fields (request id, CSRF token, subject).
    let (action, fields) = form_containing(&html, "value=\"demo-mia\"");
    let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["request", "csrf", "sub"], "{html}");
    let action: Url = picker_url.join(&action).expect("form action");
    let form: Vec<(&str, &str)> = fields
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let picked = b.post_form(action.as_str(), &form).await;
    assert!(picked.status().is_redirection(), "{}", b.hops_text());

    // Back through the callback to the portal.
    let portal = b.follow(picked).await;
    assert_eq!(portal.status(), StatusCode::OK, "{}", b.hops_text());
    assert_eq!(portal.url().path(), "/", "{}", b.hops_text());
    assert!(
        b.hops()
            .iter()
            .any(|h| h.url.path() == "/oidc/demo/callback"),
        "signed in through the callback: {}",
        b.hops_text()
    );
    let page = portal.text().await.expect("portal");
    for tile in ["Northwind US", "Northwind EU", "Contoso Outlet"] {
        assert!(page.contains(tile), "tile {tile} missing:\n{page}");
    }
    assert!(page.contains("merchandiser"), "{page}");
    assert!(page.contains("Mia Merchandiser"), "{page}");
    assert!(page.contains("/stores/nw-us/launch"), "{page}");

    // Launch: the gateway redirects to the storefront's /login/token/{jwt}, which signs Mia in.
    let launch = b.get(&url("/stores/nw-us/launch")).await;
    assert!(launch.status().is_redirection(), "{}", b.hops_text());
    let store = b.follow(launch).await;
    assert_eq!(store.status(), StatusCode::OK, "{}", b.hops_text());
    assert!(
        store.url().path().starts_with("/storefront/northwind/1/"),
        "{}",
        b.hops_text()
    );
    assert!(
        b.hops().iter().any(|h| h
            .url
            .path()
            .starts_with("/storefront/northwind/1/login/token/")),
        "{}",
        b.hops_text()
    );
    let page = store.text().await.expect("storefront page");
    assert!(
        page.contains("Signed in as Mia Merchandiser"),
        "{page}\n{}",
        b.hops_text()
    );

    drop(demo);
}

/// Issue 10: `make demo` on a fresh Debian machine must install the build dependencies itself
/// (bindgen needs libclang, the SAML verifier the xmlsec/libxml2 headers), the same way `make
/// test` does: both go through scripts/build-deps.sh. Read with `make -n`, which runs nothing.
#[test]
fn make_demo_installs_the_build_dependencies_before_building() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dry = Command::new("make")
        .args(["-n", "demo"])
        .current_dir(root)
        .env("CARGO", "cargo")
        .output()
        .expect("run make -n demo");
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    let steps: Vec<String> = String::from_utf8_lossy(&dry.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    let deps = steps.iter().position(|l| l == "scripts/build-deps.sh");
    let run = steps.iter().position(|l| l.starts_with("cargo run"));
    assert!(
        matches!((deps, run), (Some(d), Some(r)) if d < r),
        "build-deps must run before the build: {steps:?}"
    );
    // The demo's development OP and simulator are only in builds with the `devkit` feature; the
    // production build's `storegate demo` refuses and points here.
    let run_line = &steps[run.expect("cargo run step")];
    assert!(
        run_line.contains("--features devkit") && run_line.ends_with("-- demo"),
        "make demo must build with the devkit feature: {run_line}"
    );
    let script = std::fs::read_to_string(root.join("scripts/build-deps.sh")).expect("script");
    let list = script
        .lines()
        .find(|l| l.starts_with("BUILD_PACKAGES=("))
        .expect("BUILD_PACKAGES");
    for pkg in [
        "libclang-dev",
        "libxmlsec1-dev",
        "libxml2-dev",
        "libssl-dev",
        "pkg-config",
    ] {
        assert!(list.contains(pkg), "{pkg} missing from {list}");
    }
    // `make test` installs them through the same script.
    let tests = std::fs::read_to_string(root.join("scripts/test-deps.sh")).expect("script");
    assert!(
        tests
            .lines()
            .any(|l| l.starts_with("scripts/build-deps.sh ")),
        "scripts/test-deps.sh does not run scripts/build-deps.sh"
    );
}
