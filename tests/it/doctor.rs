//! `storegate doctor` (issue 16) against the BigCommerce simulator, an OpenID provider and a
//! private Redis, each failure injected once: wrong token, missing scope, IdP down, Redis down.
//! The exact lines are asserted; the binary exits 1 on any failure and 0 when all pass. (An
//! expiring or expired SAML signing certificate is covered by src/doctor.rs's unit tests.)

use std::process::Command;

use serde_json::json;
use storegate::clock::Clock;
use storegate::config::{Protocol, SessionBackend};
use storegate::doctor;
use storegate::secret::Secret;

use crate::cli::{BIN, TempDir};
use crate::harness::{Gateway, MAIN_HASH, OUTLET_HASH, Opts, Reserved, config_text};
use crate::support::redis::RedisServer;
use crate::support::rogue_op::RogueOp;

const CLIENT: &str = "storegate";
const SECRET: &str = "doctor-client-secret-0123456789";

fn opts(op: &RogueOp, redis: Option<&RedisServer>) -> Opts {
    op.set_claims(json!({"email": "doc@corp.example", "groups": []}));
    let mut o = Opts::new(&op.issuer, CLIENT, SECRET);
    o.redis_url = redis.map(RedisServer::url);
    o
}

/// Runs the binary on a blocking thread: the simulator and the IdP it checks answer from this
/// test's runtime meanwhile.
async fn run_doctor(file: std::path::PathBuf) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["doctor", "-c"])
            .arg(&file)
            .output()
            .expect("run storegate doctor")
    })
    .await
    .expect("doctor thread")
}

async fn lines(gw: &Gateway, cfg: &storegate::config::Config) -> Vec<String> {
    doctor::run(cfg, gw.clock.now())
        .await
        .iter()
        .map(doctor::Check::line)
        .collect()
}

#[tokio::test]
async fn every_check_passes_on_a_healthy_setup_and_the_binary_exits_0() {
    let op = RogueOp::start(CLIENT, SECRET).await;
    let redis = RedisServer::start();
    let gw = Gateway::start(Reserved::new().await, opts(&op, Some(&redis))).await;
    let got = lines(&gw, &gw.config()).await;
    let discovery = format!("{}/.well-known/openid-configuration", op.issuer);
    assert_eq!(
        got,
        [
            format!("PASS idp nam: discovery answers at {discovery}"),
            "PASS bigcommerce main: the access token is accepted".to_owned(),
            "PASS bigcommerce main: scopes present: store_v2_customers".to_owned(),
            "PASS bigcommerce main: store clock offset 0s".to_owned(),
            "PASS bigcommerce outlet: the access token is accepted".to_owned(),
            "PASS bigcommerce outlet: scopes present: store_v2_customers".to_owned(),
            "PASS bigcommerce outlet: store clock offset 0s".to_owned(),
            "PASS session store: Redis answers PING".to_owned(),
        ]
    );
    // Read-only: the probes created nothing in the store.
    assert!(gw.sim.customers(MAIN_HASH).is_empty());
    assert!(gw.sim.customer_groups(MAIN_HASH).is_empty());

    let dir = TempDir::new("doctor-ok");
    let file = dir.write(
        "storegate.toml",
        &config_text(&gw.base, &gw.sim_base, &opts(&op, Some(&redis))),
    );
    let out = run_doctor(file).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert_eq!(stdout.lines().count(), 8, "{stdout}");
}

#[tokio::test]
async fn a_wrong_token_is_named_with_where_to_get_a_new_one() {
    let op = RogueOp::start(CLIENT, SECRET).await;
    let gw = Gateway::start(Reserved::new().await, opts(&op, None)).await;
    let mut cfg = gw.config();
    cfg.bigcommerce[1].access_token = Secret::new("not-the-token".to_owned());
    let got = lines(&gw, &cfg).await;
    assert!(
        got.contains(&format!("FAIL bigcommerce outlet: the access token is refused (HTTP 401) for store {OUTLET_HASH} -> fix: create an API account for store {OUTLET_HASH} in Settings > API accounts and put its access token in `access_token` of [[bigcommerce]] outlet")),
        "{got:#?}"
    );
    assert!(
        got.contains(&"PASS bigcommerce main: the access token is accepted".to_owned()),
        "{got:#?}"
    );
}

#[tokio::test]
async fn a_missing_scope_is_named_with_the_setting_that_adds_it() {
    let op = RogueOp::start(CLIENT, SECRET).await;
    let gw = Gateway::start(Reserved::new().await, opts(&op, None)).await;
    gw.sim.revoke_scope("store_v2_customers");
    let got = lines(&gw, &gw.config()).await;
    assert!(
        got.contains(&"FAIL bigcommerce main: the API account lacks `store_v2_customers` (Customers) -> fix: add Customers: modify to the API account in Settings > API accounts, then put the new access token in `access_token` of [[bigcommerce]] main".to_owned()),
        "{got:#?}"
    );
    assert!(
        !got.iter().any(|l| l.contains("scopes present")),
        "{got:#?}"
    );

    // The binary says so with exit code 1.
    let dir = TempDir::new("doctor-scope");
    let file = dir.write(
        "storegate.toml",
        &config_text(&gw.base, &gw.sim_base, &opts(&op, None)),
    );
    let out = run_doctor(file).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL bigcommerce main: the API account lacks `store_v2_customers`"),
        "{stdout}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("2 check(s) failed"),
        "{:?}",
        out.stderr
    );
}

#[tokio::test]
async fn an_idp_that_is_down_is_named_with_the_setting_to_check() {
    let op = RogueOp::start(CLIENT, SECRET).await;
    let gw = Gateway::start(Reserved::new().await, opts(&op, None)).await;
    let mut cfg = gw.config();
    let port = crate::support::free_port();
    let down = format!("http://127.0.0.1:{port}");
    match &mut cfg.idps[0].protocol {
        Protocol::Oidc(o) => o.issuer = down.clone(),
        Protocol::Saml(_) => unreachable!("the harness IdP is OIDC"),
    }
    let got = lines(&gw, &cfg).await;
    let line = &got[0];
    let prefix =
        format!("FAIL idp nam: discovery {down}/.well-known/openid-configuration unreachable (");
    assert!(line.starts_with(&prefix), "{line}");
    assert!(
        line.ends_with("-> fix: check `issuer` of [[idp]] nam and that this host reaches it (DNS, proxy, firewall)"),
        "{line}"
    );
}

#[tokio::test]
async fn a_store_clock_far_off_fails() {
    let op = RogueOp::start(CLIENT, SECRET).await;
    let gw = Gateway::start(Reserved::new().await, opts(&op, None)).await;
    gw.sim.set_clock_offset(600);
    let got = lines(&gw, &gw.config()).await;
    assert!(
        got.contains(&"FAIL bigcommerce main: the store clock is 600s from this host's -> fix: synchronise this host's clock (NTP); if it is right, tell BigCommerce support".to_owned()),
        "{got:#?}"
    );
}

#[tokio::test]
async fn redis_down_is_named_with_the_settings_to_check() {
    let op = RogueOp::start(CLIENT, SECRET).await;
    let mut redis = RedisServer::start();
    let gw = Gateway::start(Reserved::new().await, opts(&op, Some(&redis))).await;
    redis.stop();
    let cfg = gw.config();
    assert!(matches!(cfg.session.backend, SessionBackend::Redis(_)));
    let got = lines(&gw, &cfg).await;
    let last = got.last().expect("a session store line");
    assert!(
        last.starts_with("FAIL session store: Redis does not answer (cannot connect to Redis"),
        "{last}"
    );
    assert!(
        last.ends_with("-> fix: check `session.redis_url` (or the Sentinel/Cluster nodes), the password, and that this host reaches Redis"),
        "{last}"
    );
}
