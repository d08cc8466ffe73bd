//! `[[route]]` and `[forward_auth]`: what loads, and every refusal on its line.

use super::*;

fn with(extra: &str) -> String {
    format!("{}{extra}", MINIMAL)
}

#[test]
fn routes_load_with_defaults() {
    let cfg = load_with(
        &with(
            r#"
[[route]]
name = "order-desk"
host = "Orders.Example.com"
groups_any = ["bc-finance"]
upstream = "http://127.0.0.1:9000"

[[route]]
name = "order-admin"
host = "orders.example.com"
path_prefix = "/admin"
identity_header = "X-Desk-Identity"
"#,
        ),
        &FakeEnv::default(),
    )
    .unwrap();
    let fa = &cfg.forward_auth;
    assert_eq!(fa.routes.routes().len(), 2);
    assert_eq!(fa.routes.routes()[0].host, "orders.example.com");
    assert_eq!(fa.routes.routes()[0].path_prefix, "/");
    assert_eq!(
        fa.target("order-desk").unwrap().identity_header,
        "x-storegate-identity"
    );
    assert_eq!(
        fa.target("order-admin").unwrap().identity_header,
        "x-desk-identity"
    );
    assert_eq!(fa.token_lifetime, std::time::Duration::from_secs(300));
    assert!(fa.signing_key_pem.is_none());
    assert_eq!(
        fa.routes
            .find("orders.example.com", "/admin/x")
            .unwrap()
            .name,
        "order-admin"
    );
}

#[test]
fn duplicate_route_names_are_refused_on_their_line() {
    let text = with(
        r#"
[[route]]
name = "desk"
host = "a.example.com"

[[route]]
name = "desk"
host = "b.example.com"
"#,
    );
    // MINIMAL is 7 lines after doc(); the second `name` is on line 14.
    assert_one(&errors(&text), 14, "duplicate [[route]] name \"desk\"");
}

#[test]
fn overlapping_host_and_prefix_are_refused() {
    let text = with(
        r#"
[[route]]
name = "a"
host = "a.example.com"
path_prefix = "/x/"

[[route]]
name = "b"
host = "A.example.com"
path_prefix = "/x"
"#,
    );
    assert_one(&errors(&text), 17, "overlaps an earlier route");
}

#[test]
fn bad_upstreams_are_refused() {
    for bad in [
        "ftp://127.0.0.1:9000",
        "http://127.0.0.1:9000/path",
        "http://user:pw@127.0.0.1:9000",
        "not a url",
        "http://127.0.0.1:9000/?q=1",
    ] {
        let text = with(&format!(
            "\n[[route]]\nname = \"a\"\nhost = \"a.example.com\"\nupstream = \"{bad}\"\n"
        ));
        assert_one(&errors(&text), 12, "must be an http(s) origin");
    }
}

#[test]
fn bad_hosts_prefixes_and_headers_are_refused() {
    let cases = [
        ("host = \"a.example.com/x\"", "is not a host name"),
        ("host = \"u@a.example.com\"", "is not a host name"),
        (
            "host = \"a.example.com\"\npath_prefix = \"admin\"",
            "must be a path starting with /",
        ),
        (
            "host = \"a.example.com\"\npath_prefix = \"/a/../b\"",
            "must be a path starting with /",
        ),
        (
            "host = \"a.example.com\"\nidentity_header = \"Cookie\"",
            "is not a usable header name",
        ),
        (
            "host = \"a.example.com\"\nidentity_header = \"bad header\"",
            "is not a usable header name",
        ),
    ];
    for (lines, needle) in cases {
        let text = with(&format!("\n[[route]]\nname = \"a\"\n{lines}\n"));
        let out = errors(&text);
        assert!(out.contains(needle), "{lines}: {out}");
        assert_eq!(parsed(&out).len(), 1, "{out}");
    }
}

#[test]
fn signing_keys_are_read_and_checked() {
    let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap();
    let key = openssl::ec::EcKey::generate(&group).unwrap();
    let pem = String::from_utf8(key.private_key_to_pem().unwrap()).unwrap();
    let public = String::from_utf8(key.public_key_to_pem().unwrap()).unwrap();
    let env = FakeEnv::default()
        .file("keys/now.pem", &pem)
        .file("keys/old.pem", &public);
    let text = with(
        r#"
[forward_auth]
signing_key_file = "keys/now.pem"
previous_key_files = ["keys/old.pem"]
token_lifetime = "2m"

[[route]]
name = "a"
host = "a.example.com"
"#,
    );
    let cfg = load_with(&text, &env).unwrap();
    assert!(cfg.forward_auth.signing_key_pem.is_some());
    assert_eq!(cfg.forward_auth.previous_keys.len(), 1);
    assert_eq!(cfg.forward_auth.token_lifetime.as_secs(), 120);
    // The key never prints.
    assert!(!format!("{cfg:?}").contains("PRIVATE KEY"));

    let env = FakeEnv::default()
        .file("keys/now.pem", "not a key")
        .file("keys/old.pem", &public);
    assert_one(&errors_with(&text, &env), 10, "not a PEM EC key");
    let env = FakeEnv::default().file("keys/now.pem", &pem);
    assert_one(
        &errors_with(&text, &env),
        11,
        "cannot read the previous key file keys/old.pem",
    );
    let long = text.replace("\"2m\"", "\"2h\"");
    let env = FakeEnv::default()
        .file("keys/now.pem", &pem)
        .file("keys/old.pem", &public);
    assert_one(&errors_with(&long, &env), 12, "between 1s and 1h");
}

#[test]
fn a_proxied_route_on_the_gateway_s_own_host_must_not_take_its_paths() {
    for bad in [
        "/",
        "/auth",
        "/auth/tools/",
        "/login",
        "/oidc/x",
        "/static/",
    ] {
        let text = with(&format!(
            "\n[[route]]\nname = \"t\"\nhost = \"sso.example.com\"\npath_prefix = \"{bad}\"\nupstream = \"http://127.0.0.1:9000\"\n"
        ));
        assert_one(&errors(&text), 12, "would proxy the gateway's own");
    }
    // A prefix of its own on the gateway's host is fine, and so is any prefix on another host
    // or a forward-auth-only route on the gateway's host.
    for (host, prefix, upstream) in [
        ("sso.example.com", "/tools/desk/", true),
        ("sso.example.com:443", "/login-help/", true),
        ("desk.example.com", "/", true),
        ("sso.example.com", "/", false),
    ] {
        let up = if upstream {
            "upstream = \"http://127.0.0.1:9000\"\n"
        } else {
            ""
        };
        let text = with(&format!(
            "\n[[route]]\nname = \"t\"\nhost = \"{host}\"\npath_prefix = \"{prefix}\"\n{up}"
        ));
        load_with(&text, &FakeEnv::default()).unwrap_or_else(|d| panic!("{host}{prefix}: {d}"));
    }
}

#[test]
fn cookie_domain_must_contain_the_gateway_s_host() {
    for ok in ["example.com", ".Example.com", "sso.example.com"] {
        let text = with(&format!("\n[session]\ncookie_domain = \"{ok}\"\n"));
        let cfg = load_with(&text, &FakeEnv::default()).unwrap_or_else(|d| panic!("{ok}: {d}"));
        let want = ok.trim_start_matches('.').to_ascii_lowercase();
        assert_eq!(cfg.session.cookie_domain.as_deref(), Some(want.as_str()));
    }
    for bad in [
        "com",
        "other.com",
        "xample.com",
        "example.com:443",
        "https://example.com",
        "1.2.3.4",
        "",
    ] {
        let text = with(&format!("\n[session]\ncookie_domain = \"{bad}\"\n"));
        assert_one(&errors(&text), 10, "`session.cookie_domain`");
    }
    let cfg = load_with(&with(""), &FakeEnv::default()).unwrap();
    assert!(cfg.session.cookie_domain.is_none());
}

#[test]
fn a_proxied_route_may_have_its_own_timeout_and_body_limit() {
    let cfg = load_with(
        &with(
            r#"
[forward_auth]
upstream_timeout = "20s"
max_body = "2MiB"

[[route]]
name = "uploads"
host = "files.example.com"
upstream = "http://127.0.0.1:9000"
timeout = "5m"
max_body = "100MiB"

[[route]]
name = "desk"
host = "desk.example.com"
upstream = "http://127.0.0.1:9001"
"#,
        ),
        &FakeEnv::default(),
    )
    .unwrap();
    let fa = &cfg.forward_auth;
    let uploads = fa.target("uploads").unwrap();
    assert_eq!(fa.timeout_of(uploads), std::time::Duration::from_secs(300));
    assert_eq!(fa.max_body_of(uploads), 100 * 1024 * 1024);
    // Without its own, a route has [forward_auth]'s.
    let desk = fa.target("desk").unwrap();
    assert_eq!(fa.timeout_of(desk), std::time::Duration::from_secs(20));
    assert_eq!(fa.max_body_of(desk), 2 * 1024 * 1024);
    assert_eq!(fa.shortest_timeout(), std::time::Duration::from_secs(20));
}

#[test]
fn bad_route_limits_are_refused_on_their_line() {
    // The route starts on line 9 (MINIMAL is 7 lines); its fourth line is 12.
    let route = |lines: &str| {
        with(&format!(
            "\n[[route]]\nname = \"a\"\nhost = \"a.example.com\"\n{lines}\n"
        ))
    };
    let up = "upstream = \"http://127.0.0.1:9000\"\n";
    for (lines, line, needle) in [
        (
            format!("{up}timeout = \"0s\""),
            13,
            "route \"a\": `timeout` must not be 0",
        ),
        (
            format!("{up}timeout = \"soon\""),
            13,
            "`route[0].timeout`: \"soon\" is not a duration",
        ),
        (
            format!("{up}max_body = \"lots\""),
            13,
            "`route[0].max_body`: \"lots\" is not a size like \"10MiB\"",
        ),
        (
            format!("{up}max_body = \"0\""),
            13,
            "`route[0].max_body`: \"0\" is not a size",
        ),
        (
            "timeout = \"30s\"".to_owned(),
            12,
            "route \"a\": `timeout` applies to the built-in proxy only",
        ),
        (
            "max_body = \"1MiB\"".to_owned(),
            12,
            "route \"a\": `max_body` applies to the built-in proxy only",
        ),
    ] {
        assert_one(&errors(&route(&lines)), line, needle);
    }
}
