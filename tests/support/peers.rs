//! The independent OpenID provider: node `oidc-provider` run from `tests/peers/oidc-provider`.
//! See `server.mjs` there for the config shape and for which claims end up in the ID token.

use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long node may take to print `READY` (a cold start takes about half a second).
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// One registered client. Serialized as oidc-provider client metadata.
#[derive(Clone, Debug, Serialize)]
pub struct PeerClient {
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    /// Any further oidc-provider client metadata, e.g. `id_token_signed_response_alg`.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl PeerClient {
    pub fn new(client_id: &str, client_secret: &str, redirect_uri: &str) -> Self {
        PeerClient {
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            redirect_uris: vec![redirect_uri.to_owned()],
            post_logout_redirect_uris: Vec::new(),
            extra: BTreeMap::new(),
        }
    }
}

/// Config handed to `server.mjs` as JSON. `Default` gives no clients and no accounts: the peer then
/// falls back to its own defaults (client `storegate`, account `alice`), which tests should not rely on.
#[derive(Clone, Debug, Default, Serialize)]
pub struct OidcPeerConfig {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub clients: Vec<PeerClient>,
    /// Login name -> claims (`sub` defaults to the login name).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub accounts: BTreeMap<String, Value>,
    /// Claims released in userinfo but never put in the ID token.
    pub userinfo_only: Vec<String>,
    /// `false` (ours): released claims in both ID token and userinfo. `true` (oidc-provider's
    /// default): claims of scopes other than `openid` only in userinfo. See `server.mjs`.
    pub conform_id_token_claims: bool,
    /// Scope -> claim names; `None` keeps the peer's map (openid, email, profile, groups).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claims: Option<BTreeMap<String, Vec<String>>>,
    /// oidc-provider `ttl` settings, e.g. `{"IdToken": 60}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Value>,
    /// Refuse authorization requests without PKCE. `new()` sets it.
    pub pkce_required: bool,
}

impl OidcPeerConfig {
    pub fn new() -> Self {
        OidcPeerConfig {
            pkce_required: true,
            ..Default::default()
        }
    }

    pub fn client(mut self, client: PeerClient) -> Self {
        self.clients.push(client);
        self
    }

    /// `claims` must be a JSON object, e.g. `json!({"email": "a@corp.example", "groups": ["g"]})`.
    pub fn account(mut self, login: &str, claims: Value) -> Self {
        assert!(claims.is_object(), "account claims must be a JSON object");
        self.accounts.insert(login.to_owned(), claims);
        self
    }

    pub fn userinfo_only(mut self, claim: &str) -> Self {
        self.userinfo_only.push(claim.to_owned());
        self
    }
}

/// A running `node server.mjs`, killed when dropped.
pub struct OidcPeer {
    /// `http://127.0.0.1:PORT`, exactly as the peer writes it in `iss`.
    pub issuer: String,
    pub port: u16,
    pub child: Child,
    stderr: Arc<Mutex<String>>,
}

impl OidcPeer {
    pub fn start(config: &OidcPeerConfig) -> OidcPeer {
        let dir = peer_dir();
        let json = serde_json::to_string(config).expect("serialize OidcPeerConfig");
        let node = std::env::var("STOREGATE_TEST_NODE").unwrap_or_else(|_| "node".to_owned());
        let mut child = Command::new(&node)
            .arg("server.mjs")
            .arg(&json)
            .current_dir(&dir)
            .env_remove("PORT")
            .env_remove("OIDC_PEER_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `{node}` (Node.js 20+ must be on PATH): {e}"));

        let stderr = Arc::new(Mutex::new(String::new()));
        let err_pipe = child.stderr.take().expect("piped stderr");
        let err_buf = Arc::clone(&stderr);
        std::thread::spawn(move || drain_into(err_pipe, &err_buf));

        // Read stdout on a thread so that waiting for READY can time out; keep draining afterwards.
        let (tx, rx) = mpsc::channel();
        let out_pipe = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out_pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });

        let mut peer = OidcPeer {
            issuer: String::new(),
            port: 0,
            child,
            stderr,
        };
        let deadline = std::time::Instant::now() + READY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(issuer) = line.strip_prefix("READY ") {
                        peer.issuer = issuer.trim().to_owned();
                        peer.port = url::Url::parse(&peer.issuer)
                            .ok()
                            .and_then(|u| u.port())
                            .unwrap_or_else(|| panic!("READY line without a port: {line}"));
                        return peer;
                    }
                }
                Err(_) => {
                    // Timed out, or stdout closed because node exited: give the stderr thread a moment.
                    std::thread::sleep(Duration::from_millis(100));
                    let status = peer.child.try_wait().ok().flatten();
                    panic!(
                        "oidc-provider peer did not print READY within {READY_TIMEOUT:?} (exit: {status:?}).\n\
                         --- peer stderr ---\n{}",
                        peer.stderr()
                    );
                }
            }
        }
    }

    /// What the peer wrote on stderr so far (warnings, stack traces). Useful in assertion messages.
    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr lock").clone()
    }

    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer)
    }
}

impl Drop for OidcPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn drain_into(pipe: impl Read, buf: &Mutex<String>) {
    for line in BufReader::new(pipe).lines().map_while(Result::ok) {
        let mut b = buf.lock().expect("stderr lock");
        b.push_str(&line);
        b.push('\n');
    }
}

/// `tests/peers/oidc-provider`, after checking that its npm dependencies are installed.
pub fn peer_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/oidc-provider");
    let module = dir.join("node_modules/oidc-provider/package.json");
    assert!(
        module.is_file(),
        "{} is missing: run `make test` (or `npm ci` in tests/peers/oidc-provider) to install the \
         test peer's dependencies",
        module.display()
    );
    dir
}
