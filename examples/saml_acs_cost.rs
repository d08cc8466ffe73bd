//! Instruction counts of the SAML ACS path, for callgrind (issue 15; docs/performance.md, "SAML
//! sign-in cost in instructions"). Wall-clock figures on a shared machine are meaningless;
//! instruction counts do not depend on the load.
//!
//! `saml_acs_cost acs [N]` (default N = 50): builds a gateway state from a configuration (memory
//! sessions, memory one-time store, one SAML IdP with an RSA-2048 signing key, as in the issue),
//! has pysaml2 (tests/peers/saml/idp.py, in one batch) sign N unique Responses (Response and
//! Assertion signed, RSA-SHA256, SHA-256 digests), each answering its own pending AuthnRequest,
//! then runs N sign-ins through `flows::sign_in::saml_response` (what `POST /saml/acs` calls:
//! pending record taken, base64, prescan, samael's verification and signed-content reduction,
//! our checks, the replay cache, identity, leaver check, a fresh session saved and indexed,
//! audit event queued). Only that loop is counted: the client requests below zero callgrind's
//! counters before it and dump them after it, into the part file `callgrind.out.<pid>.1`.
//!
//! `saml_acs_cost rsa [N]`: N RSA-2048 PKCS#1 v1.5 SHA-256 verifications of a 32-byte message
//! with OpenSSL (the `openssl` crate, as xmlsec's backend uses it), counted the same way: one
//! `openssl speed rsa2048` verify for the ratio.
//!
//! ```text
//! CARGO_PROFILE_RELEASE_DEBUG=line-tables-only cargo build --release --example saml_acs_cost
//! valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=cg.%p \
//!     target/release/examples/saml_acs_cost acs 50
//! callgrind_annotate --inclusive=yes cg.<pid>.1 | head -80
//! ```
//! Outside valgrind the client requests are no-ops and it just runs (a quick check that every
//! sign-in succeeds).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;
use storegate::audit::AuditLog;
use storegate::clock::SystemClock;
use storegate::config::{LiteralEnv, load_str};
use storegate::federation::saml::PendingSaml;
use storegate::federation::saml::sp::generate_rsa_key_and_cert;
use storegate::flows::sign_in::{self, SamlPost};
use storegate::redirect::LocalPath;

// The same allocator as the `storegate` binary (src/main.rs), so that the counts are those of
// the binary that runs (with its `override` feature, libxml2's and libxmlsec's allocations too).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const IDP_ENTITY: &str = "https://iam.corp.example/nidp/saml2/metadata";
const IDP_SSO: &str = "https://iam.corp.example/nidp/saml2/sso";
const PUBLIC: &str = "https://gateway.corp.example";
const EMAIL_FORMAT: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress";

#[path = "../benches/support/callgrind.rs"]
mod callgrind;

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn config_text(dir: &Path) -> String {
    format!(
        r#"
public_url = "{PUBLIC}"
listen = "127.0.0.1:9"
support_contact = "the e-commerce team (ecom-access@example.com)"

[session]
store = "memory"
idle_timeout = "30m"
absolute_timeout = "12h"

[saml]
key_file = "{dir}/sp.key"
cert_file = "{dir}/sp.crt"

[[idp]]
id = "opentext-saml"
display_name = "OpenText (SAML)"
protocol = "saml"
metadata_file = "{dir}/idp-metadata.xml"
clock_skew = "60s"
nameid_format = "{EMAIL_FORMAT}"
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
        dir = dir.display()
    )
}

fn rsa(n: usize) {
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    use openssl::sign::{Signer, Verifier};
    let key = PKey::from_rsa(Rsa::generate(2048).expect("rsa")).expect("pkey");
    let public = PKey::public_key_from_der(&key.public_key_to_der().expect("der")).expect("pub");
    let msg = [7u8; 32];
    let mut signer = Signer::new(MessageDigest::sha256(), &key).expect("signer");
    signer.update(&msg).expect("update");
    let sig = signer.sign_to_vec().expect("sign");
    callgrind::request(callgrind::START_INSTRUMENTATION);
    callgrind::request(callgrind::ZERO_STATS);
    let mut ok = 0;
    for _ in 0..n {
        let mut v = Verifier::new(MessageDigest::sha256(), &public).expect("verifier");
        v.update(&msg).expect("update");
        if v.verify(&sig).expect("verify") {
            ok += 1;
        }
    }
    callgrind::request(callgrind::DUMP_STATS);
    callgrind::request(callgrind::STOP_INSTRUMENTATION);
    assert_eq!(ok, n);
    println!("{n} RSA-2048 SHA-256 verifications");
}

fn acs(n: usize) {
    let dir = std::env::temp_dir().join(format!("storegate-acs-cost-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (idp_key, idp_cert) = generate_rsa_key_and_cert("idp", 2048).expect("IdP key");
    let (sp_key, sp_cert) = generate_rsa_key_and_cert("sp", 2048).expect("SP key");
    write(&dir.join("idp.key"), &idp_key);
    write(&dir.join("idp.crt"), &idp_cert);
    write(&dir.join("sp.key"), &sp_key);
    write(&dir.join("sp.crt"), &sp_cert);
    let cert_b64: String = idp_cert
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let md = format!(
        r#"<?xml version="1.0"?>
<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="{IDP_ENTITY}">
  <md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol" WantAuthnRequestsSigned="true">
    <md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{cert_b64}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>
    <md:NameIDFormat>{EMAIL_FORMAT}</md:NameIDFormat>
    <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="{IDP_SSO}"/>
    <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="{IDP_SSO}"/>
  </md:IDPSSODescriptor>
</md:EntityDescriptor>
"#
    );
    write(&dir.join("idp-metadata.xml"), &md);
    let cfg = load_str(&config_text(&dir), "acs-cost.toml", &LiteralEnv)
        .unwrap_or_else(|d| panic!("config:\n{d}"));
    let (audit, _audit_rx) = AuditLog::channel();
    let state =
        storegate::app::build_state(cfg, Arc::new(SystemClock), audit).expect("build state");
    let saml = state.saml.as_ref().expect("[saml]");
    write(&dir.join("sp-metadata.xml"), &saml.metadata);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let gw = state.gateway();

    // N pending requests, as /login leaves them, and their binding keys.
    let mut pending = Vec::new();
    for _ in 0..n {
        let p = PendingSaml {
            idp: "opentext-saml".into(),
            request_id: format!("_{}", storegate::federation::saml::random_hex(20)),
            relay_state: storegate::federation::saml::random_hex(16),
            return_to: LocalPath::root(),
            created_at: chrono_now(),
            acr: None,
        };
        let key = rt
            .block_on(sign_in::remember_saml_request(&gw, &p))
            .expect("pending");
        pending.push((key, p));
    }
    // N unique signed responses from pysaml2, in one batch (samael refuses a response issued
    // more than 150 s ago, so they must all be made just before the loop).
    let ids: Vec<&str> = pending.iter().map(|(_, p)| p.request_id.as_str()).collect();
    let req = json!({
        "idp_entity_id": IDP_ENTITY,
        "idp_key": dir.join("idp.key"),
        "idp_cert": dir.join("idp.crt"),
        "sp_metadata": dir.join("sp-metadata.xml"),
        "acs": format!("{PUBLIC}/saml/acs"),
        "sp_entity_id": format!("{PUBLIC}/saml/metadata"),
        "in_response_to_each": ids,
        "name_id": "mia@corp.example",
        "name_id_format": EMAIL_FORMAT,
        "attributes": {
            "mail": ["Mia@Corp.Example"],
            "givenName": ["Mia"],
            "sn": ["Merch"],
            "groupMembership": ["cn=bc-merchandisers,ou=groups,o=corp"],
        },
        "sign_assertion": true,
        "sign_response": true,
    });
    let out = run_idp(&req);
    let responses: Vec<String> = out.lines().map(str::to_owned).collect();
    assert_eq!(
        responses.len(),
        n,
        "pysaml2 made {} responses",
        responses.len()
    );
    let bytes: usize = responses.iter().map(String::len).sum();

    let sessions = state.sessions.clone();
    let posts: Vec<(String, String, String)> = pending
        .into_iter()
        .zip(responses)
        .map(|((key, p), r)| (key, r, p.relay_state))
        .collect();

    callgrind::request(callgrind::START_INSTRUMENTATION);
    callgrind::request(callgrind::ZERO_STATS);
    let ok = rt.block_on(async {
        let mut ok = 0usize;
        for (key, response, relay_state) in posts {
            let session = tower_sessions::Session::new(None, sessions.clone(), None);
            let post = SamlPost {
                binding: Some(&key),
                response: Some(response),
                relay_state: Some(relay_state),
            };
            match sign_in::saml_response(&gw, &session, "acs-cost", post).await {
                Ok(_) => ok += 1,
                Err(e) => eprintln!("sign-in refused: {e:?}"),
            }
        }
        ok
    });
    callgrind::request(callgrind::DUMP_STATS);
    callgrind::request(callgrind::STOP_INSTRUMENTATION);
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "{ok} of {n} sign-ins succeeded (responses of {} bytes of base64 on average)",
        bytes / n.max(1)
    );
    assert_eq!(ok, n, "every sign-in must succeed");
}

fn chrono_now() -> i64 {
    use storegate::clock::Clock;
    SystemClock.now()
}

fn run_idp(req: &serde_json::Value) -> String {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(repo().join("tests/peers/saml/.venv/bin/python"))
        .arg(repo().join("tests/peers/saml/idp.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pysaml2 (scripts/test-deps.sh installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(req.to_string().as_bytes())
        .expect("request");
    let out = child.wait_with_output().expect("pysaml2");
    assert!(
        out.status.success(),
        "pysaml2 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8")
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "acs".into());
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(50);
    match mode.as_str() {
        "acs" => acs(n),
        "rsa" => rsa(n),
        other => panic!("unknown mode {other:?}: acs or rsa"),
    }
}
