//! `storegate check --onboarding FILE` (issue 16): the sheet IT hands to the Access Manager team,
//! from the shipped example configuration, as Markdown and as HTML, without any secret.

use std::path::Path;
use std::process::Command;

use crate::cli::{BIN, TempDir};

const VARS: [(&str, &str); 10] = [
    ("REDIS_URL", "redis://:pw@127.0.0.1:6379/0"),
    ("NAM_CLIENT_SECRET", "nam-secret-value"),
    ("BC_MAIN_ACCESS_TOKEN", "main-token-value"),
    ("BC_MAIN_CLIENT_ID", "main-client"),
    ("BC_MAIN_CLIENT_SECRET", "main-secret-value"),
    ("BC_OUTLET_ACCESS_TOKEN", "outlet-token-value"),
    ("BC_OUTLET_CLIENT_ID", "outlet-client"),
    ("BC_OUTLET_CLIENT_SECRET", "outlet-secret-value"),
    ("BC_OUTLET_B2B_ACCESS_TOKEN", "outlet-b2b-token-value"),
    ("STOREGATE_SCIM_TOKEN", "scim-token-0123456789abcdef"),
];

fn sheet(dir: &TempDir, name: &str) -> String {
    let secret_file = dir.write("partners-client-secret", "partners-secret-value\n");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("storegate.example.toml");
    let out_file = dir.write(name, "");
    let mut cmd = Command::new(BIN);
    cmd.args(["check", "-c"])
        .arg(&example)
        .arg("--onboarding")
        .arg(&out_file)
        .env_remove("STOREGATE_CONFIG")
        .env("PARTNERS_CLIENT_SECRET_FILE", &secret_file);
    for (k, v) in VARS {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run storegate check --onboarding");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "onboarding sheet written to {}",
            out_file.display()
        )),
        "{stdout}"
    );
    let text = std::fs::read_to_string(&out_file).expect("the sheet");
    for secret in [
        "nam-secret-value",
        "partners-secret-value",
        "main-token-value",
        "main-secret-value",
        "outlet-secret-value",
        ":pw@",
    ] {
        assert!(!text.contains(secret), "{secret} leaked into:\n{text}");
    }
    text
}

#[test]
fn the_markdown_sheet_lists_what_to_register_per_idp() {
    let dir = TempDir::new("onboarding-md");
    let md = sheet(&dir, "onboarding.md");
    for want in [
        "# storegate onboarding: https://sso.example.com\n",
        "| Login redirect URI | https://sso.example.com/oidc/nam/callback |",
        "| Login redirect URI | https://sso.example.com/oidc/partners/callback |",
        "| Logout redirect URI | https://sso.example.com/signed-out |",
        "| Back-channel logout URI (backchannel_logout_uri, session required) | https://sso.example.com/oidc/nam/backchannel-logout |",
        "| Grant | authorization code with PKCE (S256); no implicit or hybrid flow |",
        "| Client secret | confidential client: the secret configured in `client_secret` (not shown here) |",
    ] {
        assert!(md.contains(want), "missing {want:?} in:\n{md}");
    }
    assert!(md.contains("| ID token signing algorithm | RS256"), "{md}");
    assert!(
        md.contains("| Claims to release (ID token or userinfo) | email, email_verified, "),
        "{md}"
    );
}

#[test]
fn the_html_sheet_is_a_standalone_page() {
    let dir = TempDir::new("onboarding-html");
    let html = sheet(&dir, "onboarding.html");
    assert!(
        html.starts_with("<!doctype html>\n<html lang=\"en\">"),
        "{html}"
    );
    assert!(
        html.contains("<tr><th scope=\"row\">Login redirect URI</th><td><code>https://sso.example.com/oidc/nam/callback</code></td></tr>"),
        "{html}"
    );
    assert!(
        !html.contains("<script") && !html.contains("http://") && !html.contains("<link"),
        "{html}"
    );
}
