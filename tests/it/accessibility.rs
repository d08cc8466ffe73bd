//! The pages people see, in headless Chromium (issue 16): axe-core finds no serious or critical
//! violation on the portal, the sign-in chooser, an error page, the signed-out page and the IT
//! console (`/admin`, `/admin/status`, `/admin/access`), at
//! desktop width and at 320 px; the portal and the console are usable by keyboard alone (skip
//! link, focus order, visible focus, search as you type, pin with Enter, the console's filter
//! and CSV download with Enter).
//!
//! Chromium is driven by tests/peers/axe/browse.mjs over the DevTools pipe; axe-core comes from
//! npm into tests/peers/axe/node_modules (scripts/test-deps.sh). Nothing downloads here.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

use crate::harness::{DEFAULT_POLICY, Gateway, Opts, Reserved};
use crate::support::browser::Browser;
use crate::support::rogue_op::RogueOp;

const CLIENT: &str = "storegate";
const SECRET: &str = "a11y-client-secret-0123456789";

fn peer_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/axe")
}

/// Runs `steps` in a fresh headless Chromium; one JSON value per step. On a blocking thread:
/// the gateway under test answers Chromium from this test's runtime meanwhile.
async fn browse(steps: &Value) -> Vec<Value> {
    let steps = steps.clone();
    tokio::task::spawn_blocking(move || browse_blocking(&steps))
        .await
        .expect("browse thread")
}

fn browse_blocking(steps: &Value) -> Vec<Value> {
    let dir = peer_dir();
    assert!(
        dir.join("node_modules/axe-core/axe.min.js").exists(),
        "axe-core is missing: run scripts/test-deps.sh"
    );
    let out = Command::new("node")
        .arg(dir.join("browse.mjs"))
        .arg(steps.to_string())
        .output()
        .expect("run node tests/peers/axe/browse.mjs");
    assert!(
        out.status.success(),
        "browse.mjs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Value = serde_json::from_slice(&out.stdout).expect("browse.mjs prints JSON");
    results.as_array().expect("one result per step").clone()
}

/// A gateway with two IdPs (so `/login` shows the chooser), signed in as a merchandiser.
async fn signed_in() -> (RogueOp, Gateway, Browser) {
    let op = RogueOp::start(CLIENT, SECRET).await;
    op.set_claims(json!({"email": "ana@corp.example", "email_verified": true, "given_name": "Ana", "family_name": "Keys", "groups": ["bc-merchandisers", "storegate-admins"]}));
    let mut opts = Opts::new(&op.issuer, CLIENT, SECRET);
    opts.policy = Some(format!(
        "{DEFAULT_POLICY}\n[admin]\nname = \"it-admins\"\ngroups_any = [\"storegate-admins\"]\n"
    ));
    opts.extra_toml = format!(
        "[[idp]]\nid = \"partners\"\ndisplay_name = \"Partner sign-in\"\nprotocol = \"oidc\"\nissuer = \"{}\"\nclient_id = \"partners\"\nclient_secret = \"partners-secret-0123456789\"\n",
        op.issuer
    );
    let gw = Gateway::start(Reserved::new().await, opts).await;
    let b = Browser::new();
    let start = b.get(&gw.url("/login?idp=nam")).await;
    let done = b.follow_while(start, |u| u.path() != "/").await;
    assert_eq!(done.status(), 303, "signed in: {}", b.hops_text());
    (op, gw, b)
}

/// The browser's session cookie as a DevTools `Network.setCookie` step.
fn cookie_step(b: &Browser, gw: &Gateway) -> Value {
    let header = b.cookies_for(&gw.url("/")).expect("a session cookie");
    let (name, value) = header
        .split("; ")
        .next()
        .and_then(|c| c.split_once('='))
        .expect("name=value");
    json!({"cookie": {"name": name, "value": value, "url": gw.url("/")}})
}

/// The serious and critical violations in an axe result, as readable lines.
fn serious(violations: &Value) -> Vec<String> {
    violations
        .as_array()
        .expect("violations")
        .iter()
        .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
        .map(|v| {
            format!(
                "{} ({}): {} {}",
                v["id"], v["impact"], v["help"], v["nodes"]
            )
        })
        .collect()
}

#[tokio::test]
async fn axe_finds_no_serious_violation_on_the_pages_people_see() {
    let (_op, gw, b) = signed_in().await;
    // One pinned store, so the page has both pin states.
    let html = b.get(&gw.url("/")).await.text().await.unwrap();
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_owned();
    let pinned = b
        .post_form(
            &gw.url("/portal/pins"),
            &[("csrf", &csrf), ("store", "eu"), ("pin", "1")],
        )
        .await;
    assert_eq!(pinned.status(), 303);

    let pages = [
        "/",
        "/?q=outlet",
        "/login",
        "/stores/nope/launch",
        "/signed-out",
        "/admin",
        "/admin/status",
        "/admin/access",
    ];
    for width in [1280, 320] {
        let mut steps = vec![
            cookie_step(&b, &gw),
            json!({"viewport": {"width": width, "height": 800}}),
        ];
        for p in pages {
            steps.push(json!({"goto": gw.url(p)}));
            steps.push(json!({"axe": true}));
            // Nothing wider than the screen: no sideways scrolling at 320 px.
            steps.push(json!({"eval": "document.documentElement.scrollWidth"}));
        }
        let results = browse(&Value::Array(steps)).await;
        for (i, p) in pages.iter().enumerate() {
            let at = 2 + i * 3;
            let found = serious(&results[at + 1]);
            assert!(found.is_empty(), "{p} at {width} px:\n{}", found.join("\n"));
            let scroll = results[at + 2].as_u64().expect("scrollWidth");
            assert!(
                scroll <= width,
                "{p} is {scroll} px wide on a {width} px screen"
            );
        }
    }
}

/// axe-core itself must be able to fail here: a page with an unlabelled field and an image
/// without text has critical violations.
#[tokio::test]
async fn axe_reports_a_broken_page() {
    let page = "data:text/html,<html><body><img src=x><input type=text></body></html>";
    let results = browse(&json!([{"goto": page}, {"axe": true}])).await;
    let found = serious(&results[1]);
    assert!(found.iter().any(|f| f.contains("image-alt")), "{found:#?}");
    assert!(found.iter().any(|f| f.contains("label")), "{found:#?}");
}

#[tokio::test]
async fn the_portal_works_by_keyboard_alone() {
    let (_op, gw, b) = signed_in().await;
    let focused = "(() => { const e = document.activeElement; return [e.tagName, e.id || e.className, (e.textContent || '').trim().slice(0, 40), getComputedStyle(e).outlineStyle]; })()";
    let results = browse(&json!([
        cookie_step(&b, &gw),
        {"goto": gw.url("/")},
        {"key": "Tab"}, {"eval": focused},
        {"key": "Tab"}, {"eval": focused},
        {"key": "Tab"}, {"eval": focused},
        {"key": "Tab"}, {"eval": focused},
        // Search as you type: the list narrows without a page load.
        {"type": "outl"},
        {"eval": "[document.querySelectorAll('li[data-search]:not([hidden])').length, document.getElementById('filter-status').textContent, location.search]"},
        {"key": "Tab"}, {"eval": focused},
        {"key": "Tab"}, {"eval": focused},
        {"key": "Tab"}, {"eval": focused},
        // Pin with Enter: the form posts, the page comes back with the store pinned.
        {"key": "Enter", "waitForLoad": true},
        {"eval": "[...document.querySelectorAll('h2')].map(h => h.textContent)"},
        {"eval": "[...document.querySelectorAll('section.stores')][0].querySelector('li').id"},
        // Escape clears the search.
        {"goto": gw.url("/?q=outlet")},
        {"eval": "document.getElementById('q').focus(); document.getElementById('filter-status').textContent"},
        {"key": "Escape"},
        {"eval": "[document.getElementById('q').value, document.getElementById('filter-status').textContent]"},
    ]))
    .await;
    let f = |i: usize| results[i].as_array().expect("focused element").clone();
    // Skip link first, then the header, then the search box.
    assert_eq!(f(3)[2], "Skip to content", "{results:#?}");
    assert_eq!(f(5)[2], "storegate", "{results:#?}");
    assert_eq!(f(7)[0], "BUTTON");
    assert_eq!(f(7)[2], "Sign out");
    assert_eq!(f(9)[1], "q", "the search box: {results:#?}");
    // Focus is visible on each (an outline, not `none`).
    for i in [3, 5, 7, 9] {
        assert_ne!(f(i)[3], "none", "focus outline of {:?}", f(i));
    }
    assert_eq!(results[11], json!([1, "1 of 3 stores match", ""]));
    // Past the "Show" button, the only visible tile: its link, then its pin button.
    assert_eq!(f(13)[2], "Show");
    assert_eq!(f(15)[0], "A");
    assert!(f(15)[2].as_str().unwrap().contains("Outlet"), "{:?}", f(15));
    assert_eq!(f(17)[0], "BUTTON");
    assert_eq!(f(17)[2], "Pin Outlet");
    assert_eq!(results[19], json!(["Pinned", "Other stores"]));
    assert_eq!(results[20], "tile-outlet");
    assert_eq!(results[22], "1 of 3 stores match");
    assert_eq!(results[24], json!(["", "3 stores"]));
}

/// Steps for browse.mjs, each push returning the index of its result.
#[derive(Default)]
struct Steps(Vec<Value>);

impl Steps {
    fn push(&mut self, step: Value) -> usize {
        self.0.push(step);
        self.0.len() - 1
    }

    /// Presses Tab `n` times, reading the focused element after each; returns those results.
    fn tabs(&mut self, n: usize) -> Vec<usize> {
        (0..n)
            .map(|_| {
                self.push(json!({"key": "Tab"}));
                self.push(json!({"eval": FOCUSED}))
            })
            .collect()
    }
}

/// The focused element: tag, id, name (its `aria-labelledby` text, else its own text),
/// whether it matches `:focus-visible`, and its outline style and box shadow there.
const FOCUSED: &str = "(() => { const e = document.activeElement; const s = getComputedStyle(e); const by = e.getAttribute('aria-labelledby'); const name = by ? document.getElementById(by).textContent : e.textContent; return [e.tagName, e.id, (name || '').trim().replace(/\\s+/g, ' ').slice(0, 40), e.matches(':focus-visible'), s.outlineStyle, s.boxShadow]; })()";

/// The landmarks: how many `main`, the labels of the `nav`s, the `h1`, the page the console's
/// navigation marks current.
const LANDMARKS: &str = "[document.querySelectorAll('main').length, [...document.querySelectorAll('nav')].map(n => n.getAttribute('aria-label')), document.querySelector('h1')?.textContent, document.querySelector('nav [aria-current=page]')?.textContent]";

/// Issue 16: the IT console by keyboard alone. On `/admin`, `/admin/status` and
/// `/admin/access`, Tab reaches every control in reading order (skip link, header, the
/// console's navigation, then the page), focus is visible on each, and the landmarks are there;
/// the access review's filter applies with Enter and its CSV downloads with Enter.
#[tokio::test]
async fn the_console_works_by_keyboard_alone() {
    let (_op, gw, b) = signed_in().await;
    let mut s = Steps::default();
    s.push(cookie_step(&b, &gw));
    let header = [
        "Skip to content",
        "storegate",
        "Overview",
        "Status",
        "Access review",
    ];
    let pages: [(&str, &str, &str, &[&str]); 3] = [
        (
            "/admin",
            "Admin console",
            "Overview",
            &["Status", "Access review"],
        ),
        ("/admin/status", "Status", "Status", &["Last 0 denials"]),
        (
            "/admin/access",
            "Access review",
            "Access review",
            &["", "", "Apply", "Download CSV", "Entitlements"],
        ),
    ];
    let mut visits = Vec::new();
    for (path, _, _, rest) in pages {
        s.push(json!({"goto": gw.url(path)}));
        let landmarks = s.push(json!({"eval": LANDMARKS}));
        let focus = s.tabs(header.len() + rest.len());
        visits.push((landmarks, focus));
    }
    // The filter: Tab to "dormant", type over it, Enter submits.
    s.push(json!({"goto": gw.url("/admin/access")}));
    let dormant = s.tabs(header.len() + 1);
    s.push(json!({"type": "7d"}));
    s.push(json!({"key": "Enter", "waitForLoad": true}));
    let filtered = s.push(json!({"eval": "[location.search, document.getElementById('dormant').value, document.querySelector('a[href^=\"/admin/access.csv\"]').getAttribute('href')]"}));
    // The CSV: Tab to its link, Enter downloads it.
    let csv_link = s.tabs(header.len() + 4);
    let download = s.push(json!({"key": "Enter", "waitForDownload": true}));
    let r = browse(&Value::Array(s.0)).await;

    let text = |i: usize| r[i][2].as_str().unwrap_or("").to_owned();
    for ((path, h1, current, rest), (landmarks, focus)) in pages.iter().zip(&visits) {
        assert_eq!(
            r[*landmarks],
            json!([1, ["Admin console"], h1, current]),
            "{path}: landmarks"
        );
        let order: Vec<String> = focus.iter().map(|i| text(*i)).collect();
        let want: Vec<&str> = header.iter().chain(rest.iter()).copied().collect();
        assert_eq!(order, want, "{path}: focus order\n{r:#?}");
        for i in focus {
            let f = &r[*i];
            assert_eq!(f[3], true, "{path}: {f} is focused by keyboard");
            assert!(
                f[4] != "none" || f[5] != "none",
                "{path}: no visible focus on {f}"
            );
        }
    }
    let ids: Vec<&str> = visits[2].1[5..7]
        .iter()
        .map(|i| r[*i][1].as_str().unwrap_or(""))
        .collect();
    assert_eq!(ids, ["dormant", "expiring"], "the filter's fields");
    assert_eq!(r[*dormant.last().expect("tabs")][1], "dormant");
    assert_eq!(
        r[filtered],
        json!([
            "?dormant=7d&expiring=14d",
            "7d",
            "/admin/access.csv?dormant=7d&expiring=14d"
        ])
    );
    assert_eq!(text(*csv_link.last().expect("tabs")), "Download CSV");
    let got = &r[download];
    assert_eq!(got["filename"], "storegate-access.csv", "{got}");
    assert_eq!(
        got["url"],
        gw.url("/admin/access.csv?dormant=7d&expiring=14d")
    );
    assert!(
        got["text"].as_str().is_some_and(|t| t.starts_with("id,")),
        "{got}"
    );
}
