//! `storegate check` through the real binary: the shipped example passes, and the operator reads
//! exact `FILE:LINE: message` lines (exit code 1) for broken files. Every error class is covered by
//! the unit tests in src/config/tests.rs; these few prove the binary prints them as documented.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_storegate");

/// A fresh directory under the system temp dir, removed when dropped.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(label: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "storegate-cli-{label}-{}-{n}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    /// `name` inside the directory (not created).
    pub(crate) fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    pub(crate) fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `storegate check -c path` with a controlled environment: no `STOREGATE_CONFIG`, plus `vars`.
fn check(path: &Path, vars: &[(&str, &str)], unset: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("check").arg("-c").arg(path);
    cmd.env_remove("STOREGATE_CONFIG");
    for name in unset {
        cmd.env_remove(name);
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().expect("run storegate check")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn the_example_configuration_passes_check_and_prints_the_registration_values() {
    let dir = TempDir::new("example");
    let secret_file = dir.write("partners-client-secret", "partners-secret\n");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("storegate.example.toml");
    let secret_file = secret_file.to_string_lossy().into_owned();
    let vars = [
        ("REDIS_URL", "redis://:pw@127.0.0.1:6379/0"),
        ("NAM_CLIENT_SECRET", "nam-secret"),
        ("PARTNERS_CLIENT_SECRET_FILE", secret_file.as_str()),
        ("BC_MAIN_ACCESS_TOKEN", "main-token"),
        ("BC_MAIN_CLIENT_ID", "main-client"),
        ("BC_MAIN_CLIENT_SECRET", "main-secret"),
        ("BC_OUTLET_ACCESS_TOKEN", "outlet-token"),
        ("BC_OUTLET_CLIENT_ID", "outlet-client"),
        ("BC_OUTLET_CLIENT_SECRET", "outlet-secret"),
        ("BC_OUTLET_B2B_ACCESS_TOKEN", "outlet-b2b-token"),
        ("STOREGATE_SCIM_TOKEN", "scim-token-0123456789abcdef"),
    ];
    let out = check(&example, &vars, &[]);
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{text}\nstderr:\n{}",
        stderr(&out)
    );
    assert!(
        text.contains("OK (2 IdP(s), 2 BigCommerce account(s), 3 store(s), "),
        "{text}"
    );
    // The Redis topology, without the password that is in REDIS_URL.
    assert!(
        text.contains("\nsession store: redis, standalone, 127.0.0.1:6379 (no TLS)\n"),
        "{text}"
    );
    assert!(!text.contains(":pw@"), "{text}");
    for want in [
        "Login redirect URI:  https://sso.example.com/oidc/nam/callback",
        "Login redirect URI:  https://sso.example.com/oidc/partners/callback",
        "Logout redirect URI: https://sso.example.com/signed-out",
        "Back-channel logout URI: https://sso.example.com/oidc/nam/backchannel-logout",
        "store hash abc123",
        "store hash xyz789",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    // No secret is echoed.
    for (_, secret) in &vars[1..] {
        if secret.contains('/') {
            continue; // the secret file's path, not a secret
        }
        assert!(!text.contains(secret), "{secret} printed:\n{text}");
    }
    assert!(!text.contains("partners-secret"), "{text}");
}

#[test]
fn the_example_without_its_environment_names_each_missing_variable() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("storegate.example.toml");
    let out = check(&example, &[], &["REDIS_URL", "NAM_CLIENT_SECRET"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("refers to the environment variable REDIS_URL, which is not set"),
        "{text}"
    );
}

/// A small valid configuration; each error test breaks one line of it.
pub(crate) const VALID: &str = r#"public_url = "https://sso.example.com"

[session]
idle_timeout = "15m"

[[idp]]
id = "nam"
protocol = "oidc"
issuer = "https://login.example.com/nidp/oauth/nam"
client_id = "storegate"
client_secret = "literal-secret"

[[bigcommerce]]
id = "main"
store_hash = "abc123"
access_token = "token"
client_id = "bc-client"
client_secret = "bc-secret"

[[store]]
id = "us"
name = "US"
bigcommerce = "main"
url = "https://shop.example.com"

[[rule]]
name = "staff"
groups_any = ["staff"]
stores = ["us"]
role = "staff"
"#;

/// Writes `text` into a fresh temp dir, runs check, and asserts exit code 1, the exact stdout
/// (one `FILE:LINE: message` line) and the problem count on stderr.
fn assert_one_problem(label: &str, text: &str, line: usize, message: &str, unset: &[&str]) {
    let dir = TempDir::new(label);
    let path = dir.write("storegate.toml", text);
    let out = check(&path, &[], unset);
    assert_eq!(
        stdout(&out),
        format!("{}:{line}: {message}\n", path.display()),
        "stderr:\n{}",
        stderr(&out)
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "1 problem(s) found\n");
}

#[test]
fn the_valid_baseline_passes() {
    let dir = TempDir::new("baseline");
    let path = dir.write("storegate.toml", VALID);
    let out = check(&path, &[], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("https://sso.example.com/oidc/nam/callback"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn an_unknown_key_is_reported_with_its_line() {
    let text = VALID.replace("idle_timeout = \"15m\"", "idle_timout = \"15m\"");
    assert_one_problem(
        "unknown-key",
        &text,
        4,
        "unknown key `session.idle_timout`",
        &[],
    );
}

#[test]
fn a_missing_environment_variable_is_reported_with_its_line() {
    let text = VALID.replace(
        "client_secret = \"literal-secret\"",
        "client_secret = \"${STOREGATE_CLI_TEST_UNSET}\"",
    );
    assert_one_problem(
        "missing-env",
        &text,
        11,
        "`idp[0].client_secret` refers to the environment variable STOREGATE_CLI_TEST_UNSET, which is not set",
        &["STOREGATE_CLI_TEST_UNSET"],
    );
}

#[test]
fn a_rule_naming_an_unknown_store_is_reported_with_its_line() {
    let text = VALID.replace("stores = [\"us\"]", "stores = [\"us\", \"mars\"]");
    assert_one_problem(
        "unknown-store",
        &text,
        29,
        "rule \"staff\" names store \"mars\", which is not configured",
        &[],
    );
}

#[test]
fn an_http_public_url_needs_allow_insecure_http() {
    let text = VALID.replace("https://sso.example.com", "http://sso.example.com");
    assert_one_problem(
        "http-public-url",
        &text,
        1,
        "`public_url` is http: session cookies would travel in clear text. Use https, or set `allow_insecure_http = true` for development only",
        &[],
    );
}

/// `[telemetry]` appended to the valid baseline; returns the text and the table's first line.
fn with_telemetry(table: &str) -> (String, usize) {
    let first = VALID.lines().count() + 2;
    (format!("{VALID}\n[telemetry]\n{table}"), first)
}

#[test]
fn a_telemetry_endpoint_that_is_not_a_url_is_reported_with_its_line() {
    let (text, line) = with_telemetry("otlp_endpoint = \"collector 4318\"\n");
    assert_one_problem(
        "otlp-not-url",
        &text,
        line + 1,
        "`telemetry.otlp_endpoint`: \"collector 4318\" is not a URL (relative URL without a base); expected e.g. \"http://collector:4318\"",
        &[],
    );
}

#[test]
fn a_grpc_telemetry_endpoint_is_refused() {
    let (text, line) = with_telemetry("otlp_endpoint = \"grpc://collector:4317\"\n");
    assert_one_problem(
        "otlp-grpc",
        &text,
        line + 1,
        "`telemetry.otlp_endpoint`: scheme \"grpc\" is not http or https (OTLP/HTTP only; gRPC is not supported)",
        &[],
    );
}

#[test]
fn a_telemetry_sample_ratio_above_one_is_reported_with_its_line() {
    let (text, line) =
        with_telemetry("otlp_endpoint = \"http://collector:4318\"\nsample_ratio = 1.5\n");
    assert_one_problem(
        "otlp-ratio",
        &text,
        line + 2,
        "`telemetry.sample_ratio` is 1.5: use a share between 0.0 (none) and 1.0 (every request)",
        &[],
    );
}

#[test]
fn a_malformed_telemetry_header_is_reported_without_its_value() {
    let (text, line) = with_telemetry(
        "otlp_endpoint = \"http://collector:4318\"\nheaders = \"x-api-key:s3cret-collector-key\"\n",
    );
    assert_one_problem(
        "otlp-header",
        &text,
        line + 2,
        "`telemetry.headers`: header 1 has no `=` (expected name=value)",
        &[],
    );
}

#[test]
fn check_prints_the_telemetry_target_and_header_names_but_no_header_value() {
    let dir = TempDir::new("otlp-summary");
    let (text, _) = with_telemetry(
        "otlp_endpoint = \"https://otel.example:4318\"\nservice_name = \"sso-gw\"\nsample_ratio = 0.25\nheaders = \"${STOREGATE_CLI_OTLP_HEADERS}\"\n",
    );
    let path = dir.write("storegate.toml", &text);
    let out = check(
        &path,
        &[(
            "STOREGATE_CLI_OTLP_HEADERS",
            "x-api-key=s3cret-collector-key",
        )],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let printed = stdout(&out);
    assert_eq!(
        printed
            .lines()
            .filter(|l| l.starts_with("Telemetry: "))
            .collect::<Vec<_>>(),
        vec![
            "Telemetry: OTLP/HTTP traces to https://otel.example:4318/v1/traces as service \"sso-gw\", sample ratio 0.25, collector headers: x-api-key (values hidden)"
        ]
    );
    assert!(!printed.contains("s3cret"), "{printed}");
    assert!(!stderr(&out).contains("s3cret"));
}

#[test]
fn a_cookie_domain_that_does_not_cover_the_public_url_s_host_is_reported_with_its_line() {
    let text = VALID.replace(
        "idle_timeout = \"15m\"",
        "idle_timeout = \"15m\"\ncookie_domain = \"example.net\"",
    );
    assert_one_problem(
        "cookie-domain-elsewhere",
        &text,
        5,
        "`session.cookie_domain` \"example.net\" must be a domain name (like \"example.com\") that public_url's host is in",
        &[],
    );
    // The parent domain of public_url's host passes.
    let dir = TempDir::new("cookie-domain-parent");
    let path = dir.write(
        "storegate.toml",
        &VALID.replace(
            "idle_timeout = \"15m\"",
            "idle_timeout = \"15m\"\ncookie_domain = \"example.com\"",
        ),
    );
    let out = check(&path, &[], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}
