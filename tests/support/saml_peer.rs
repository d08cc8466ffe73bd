//! The pysaml2 peer: the scripts in tests/peers/saml (`idp.py` answers AuthnRequests, `slo.py`
//! plays the IdP's side of single logout, `sp_bench.py` is the SAML bench's baseline SP), run by
//! the interpreter of the venv scripts/test-deps.sh installs. Each reads one JSON request on stdin
//! and answers on stdout. The one driver for the integration tests (through
//! [`super::saml_idp`]) and for benches/saml.rs, which includes this file by path.
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's interpreter, which may not be installed (see [`python`]).
pub fn python_path() -> PathBuf {
    repo().join("tests/peers/saml/.venv/bin/python")
}

/// The venv's interpreter; panics, naming the command that installs it, when it is missing.
pub fn python() -> PathBuf {
    let p = python_path();
    assert!(
        p.exists(),
        "pysaml2 is not installed: run scripts/test-deps.sh (make deps)"
    );
    p
}

/// Starts tests/peers/saml/`script` with `req` on its stdin (several may run in parallel).
pub fn spawn(script: &str, req: &Value) -> Child {
    let mut child = Command::new(python())
        .arg(repo().join("tests/peers/saml").join(script))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run pysaml2 ({script}): {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(req.to_string().as_bytes())
        .expect("write request");
    child
}

/// Waits for `script`'s answer (its stdout); panics with its stderr when it failed.
pub fn output(script: &str, child: Child) -> String {
    let out = child.wait_with_output().expect("pysaml2 output");
    assert!(
        out.status.success(),
        "pysaml2 ({script}) failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8")
}

/// Runs `script` with `req` and returns its answer.
pub fn run(script: &str, req: &Value) -> String {
    output(script, spawn(script, req))
}
