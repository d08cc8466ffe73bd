//! `storegate doctor` (issue 16) against the BigCommerce simulator, an OpenID provider, a SAML
//! IdP's metadata and a private Redis, each failure injected once: wrong token, missing scope,
//! IdP down, expired signing certificate, Redis down, unreadable SCIM data, a damaged queue.
//! The exact lines are asserted; the binary exits 1 on any failure and 0 when all pass.

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

/// Takes the headroom line of `account` out of `got`, checking its shape and numbers: some of
/// the simulator's quota spent, some left.
fn take_headroom(got: &mut Vec<String>, account: &str) {
    let prefix = format!("PASS bigcommerce {account}: rate-limit headroom ");
    let i = got
        .iter()
        .position(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no headroom line for {account}: {got:#?}"));
    let line = got.remove(i);
    let nums: Vec<u64> = line[prefix.len()..]
        .trim_end_matches(" requests left in this window")
        .split(" of ")
        .map(|n| n.parse().expect("a number"))
        .collect();
    assert!(
        nums.len() == 2 && nums[0] > 0 && nums[0] < nums[1],
        "{line}"
    );
}

#[tokio::test]
async fn every_check_passes_on_a_healthy_setup_and_the_binary_exits_0() {
    let op = RogueOp::start(CLIENT, SECRET).await;
    let redis = RedisServer::start();
    let gw = Gateway::start(Reserved::new().await, opts(&op, Some(&redis))).await;
    let mut got = lines(&gw, &gw.config()).await;
    take_headroom(&mut got, "main");
    take_headroom(&mut got, "outlet");
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
    assert_eq!(stdout.lines().count(), 10, "{stdout}");
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

#[tokio::test]
async fn an_expired_saml_signing_certificate_is_named_with_who_must_roll_it() {
    use crate::support::saml_idp::{Idp, SAML_IDP, cert_b64};
    let op = RogueOp::start(CLIENT, SECRET).await;
    let gw = Gateway::start(Reserved::new().await, opts(&op, None)).await;
    let idp = Idp::new("doctor-expired", 1);
    // The metadata's certificate, replaced by one that expired on 2020-01-01.
    let expired = {
        use openssl::asn1::Asn1Time;
        use openssl::pkey::PKey;
        use openssl::rsa::Rsa;
        use openssl::x509::X509Builder;
        let key = PKey::from_rsa(Rsa::generate(2048).expect("rsa")).expect("key");
        let mut b = X509Builder::new().expect("builder");
        b.set_pubkey(&key).expect("pubkey");
        b.set_not_before(&Asn1Time::from_unix(1_500_000_000).expect("t"))
            .expect("not before");
        b.set_not_after(&Asn1Time::from_unix(1_577_836_800).expect("t"))
            .expect("not after");
        b.sign(&key, openssl::hash::MessageDigest::sha256())
            .expect("sign");
        String::from_utf8(b.build().to_pem().expect("pem")).expect("utf8")
    };
    let current = std::fs::read_to_string(&idp.cert).expect("cert");
    let md = std::fs::read_to_string(&idp.metadata).expect("metadata");
    std::fs::write(
        &idp.metadata,
        md.replace(&cert_b64(&current), &cert_b64(&expired)),
    )
    .expect("write metadata");
    let mut o = opts(&op, None);
    o.extra_toml = idp.toml("");
    let dir = TempDir::new("doctor-cert");
    let file = dir.write("storegate.toml", &config_text(&gw.base, &gw.sim_base, &o));
    let want = format!(
        "FAIL idp {SAML_IDP}: the signing certificate expired on 2020-01-01 -> fix: ask the IdP team to roll the signing certificate and publish the new one in the metadata before 2020-01-01, then reload the gateway"
    );
    let out = run_doctor(file).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.lines().any(|l| l == want),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}");
}

fn with_scim(
    cfg: &mut storegate::config::Config,
    store: storegate::config::provisioning::ScimStorage,
    queue: storegate::config::provisioning::QueueStorage,
) {
    cfg.scim = Some(storegate::config::provisioning::ScimConfig {
        bearer_token: Some(Secret::new("doctor-scim-token-0123".to_owned())),
        basic: None,
        store,
    });
    cfg.provisioning.queue = queue;
}

#[tokio::test]
async fn scim_and_the_queue_are_read_and_reported_without_writing() {
    use storegate::config::provisioning::{QueueStorage, ScimStorage};
    let op = RogueOp::start(CLIENT, SECRET).await;
    let gw = Gateway::start(Reserved::new().await, opts(&op, None)).await;
    let dir = TempDir::new("doctor-scim");
    let base = dir
        .write("readme", "doctor test")
        .parent()
        .expect("temp dir")
        .to_path_buf();
    let scim_dir = base.join("scim-data");
    std::fs::create_dir_all(&scim_dir).expect("scim dir");
    let queue = base.join("queue.json");
    let mut cfg = gw.config();
    with_scim(
        &mut cfg,
        ScimStorage::File(scim_dir.clone()),
        QueueStorage::File(queue.clone()),
    );
    let got = lines(&gw, &cfg).await;
    let n = got.len();
    assert_eq!(
        &got[n - 2..],
        [
            format!(
                "PASS scim: file {}: 0 active user(s) of 0, 0 group(s), last write never",
                scim_dir.display()
            ),
            format!(
                "PASS provisioning queue: file {}: 0 waiting, 0 in flight, oldest queued -, 0 dead letter(s)",
                queue.display()
            ),
        ]
    );
    assert!(!queue.exists(), "doctor creates no queue file");

    // A damaged queue file and a SCIM store that is not a directory.
    std::fs::write(&queue, "not a queue").expect("queue");
    let not_a_dir = dir.write("scim-file", "x");
    with_scim(
        &mut cfg,
        ScimStorage::File(not_a_dir.clone()),
        QueueStorage::File(queue.clone()),
    );
    let got = lines(&gw, &cfg).await;
    let n = got.len();
    assert!(
        got[n - 2].starts_with("FAIL scim: the SCIM data cannot be read ("),
        "{got:#?}"
    );
    assert!(
        got[n - 2].ends_with(&format!(
            "-> fix: check that `scim.store` names a directory this user may read ({})",
            not_a_dir.display()
        )),
        "{got:#?}"
    );
    assert_eq!(
        got[n - 1],
        format!(
            "FAIL provisioning queue: the queue cannot be read ({q} is not a storegate queue: expected ident at line 1 column 2) -> fix: check `provisioning.queue`: {q} must be a storegate queue file this user may read (move a damaged one away; the next reconcile pass plans again)",
            q = queue.display()
        )
    );
}

#[tokio::test]
async fn a_redis_queue_and_scim_with_redis_down_are_named_with_the_setting_to_check() {
    use storegate::config::provisioning::{QueueStorage, ScimStorage};
    let op = RogueOp::start(CLIENT, SECRET).await;
    let mut redis = RedisServer::start();
    let gw = Gateway::start(Reserved::new().await, opts(&op, Some(&redis))).await;
    let mut cfg = gw.config();
    with_scim(&mut cfg, ScimStorage::Redis, QueueStorage::Redis);
    let got = lines(&gw, &cfg).await;
    let n = got.len();
    assert_eq!(
        &got[n - 2..],
        [
            "PASS scim: Redis: 0 active user(s) of 0, 0 group(s), last write never".to_owned(),
            "PASS provisioning queue: Redis: 0 waiting, 0 in flight, oldest queued -, 0 dead letter(s)".to_owned(),
        ]
    );
    redis.stop();
    let got = lines(&gw, &cfg).await;
    let n = got.len();
    for (line, what) in [
        (&got[n - 2], "scim: the SCIM data"),
        (&got[n - 1], "provisioning queue: the queue"),
    ] {
        assert!(
            line.starts_with(&format!("FAIL {what} cannot be read (")),
            "{got:#?}"
        );
    }
    assert!(
        got[n - 2].ends_with("-> fix: check `session.redis_url` (SCIM data lives in the session Redis) and that this host reaches Redis"),
        "{got:#?}"
    );
    assert!(
        got[n - 1].ends_with("-> fix: check `session.redis_url` (the queue lives in the session Redis) and that this host reaches Redis"),
        "{got:#?}"
    );
}
