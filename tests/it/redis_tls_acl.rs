//! Redis over TLS (`rediss://`, a private CA given by `session.redis_ca_file`) with an ACL user and
//! password, against a real `redis-server` whose default user is switched off. Certificates are
//! made for the test with the `openssl` command line.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::harness::{Gateway, Opts, Reserved};
use crate::support::browser::Browser;
use crate::support::free_port;
use crate::support::redis::{ClusterSetup, ClusterTls, RedisServer, SentinelSetup, TlsFiles};
use crate::support::rogue_op::RogueOp;

const CLIENT: &str = "storegate";
const SECRET: &str = "tls-client-secret-0123456789";
const ACL_PASSWORD: &str = "acl-password-9f8e7d6c5b4a";

struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// A CA and a server certificate for 127.0.0.1 / localhost signed by it.
    fn make() -> Pki {
        let dir = std::env::temp_dir().join(format!(
            "storegate-redis-tls-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let ssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .expect("run openssl (install it, e.g. via `make deps`)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .expect("ext file");
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        ssl(&[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=storegate test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign",
            ],
        ]
        .concat());
        ssl(&[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        ]
        .concat());
        ssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ]);
        Pki { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `redis-server` with a TLS port and only the ACL user `storegate` (the default user is off).
fn tls_acl_redis(pki: &Pki, tls_port: u16) -> RedisServer {
    let tls_port = tls_port.to_string();
    let cert = pki.path("server.pem");
    let key = pki.path("server.key");
    let ca = pki.path("ca.pem");
    let user = format!(">{ACL_PASSWORD}");
    RedisServer::start_with(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &ca,
        "--tls-auth-clients",
        "no",
        "--user",
        "default",
        "off",
        "--user",
        "storegate",
        "on",
        &user,
        "~storegate:*",
        "+@all",
    ])
}

async fn gateway(op: &RogueOp, url: String, session_extra: String) -> Gateway {
    let mut opts = Opts::new(&op.issuer, CLIENT, SECRET);
    opts.redis_url = Some(url);
    opts.session_extra = session_extra;
    Gateway::start(Reserved::new().await, opts).await
}

async fn readyz(gw: &Gateway) -> (u16, Value) {
    let resp = reqwest::get(gw.url("/readyz")).await.expect("GET /readyz");
    (resp.status().as_u16(), resp.json().await.expect("JSON"))
}

fn ca_line(pki: &Pki) -> String {
    format!(
        "redis_ca_file = \"{}\"",
        Path::new(&pki.path("ca.pem")).display()
    )
}

#[tokio::test]
async fn rediss_with_a_private_ca_and_an_acl_user_carries_the_sessions() {
    let pki = Pki::make();
    let tls_port = free_port();
    let _redis = tls_acl_redis(&pki, tls_port);
    let op = RogueOp::start(CLIENT, SECRET).await;
    op.set_claims(json!({"email": "tls@corp.example", "groups": ["bc-merchandisers"]}));
    let url = format!("rediss://storegate:{ACL_PASSWORD}@127.0.0.1:{tls_port}/");
    let a = gateway(&op, url, ca_line(&pki)).await;
    let b = a.replica(Reserved::new().await).await;

    let (status, body) = readyz(&a).await;
    assert_eq!(status, 200, "{body}");
    let browser = Browser::new();
    let start = browser.get(&a.url("/login")).await;
    let done = browser.follow_while(start, |u| u.path() != "/").await;
    assert_eq!(done.status(), 303, "{}", browser.hops_text());
    // The session went through TLS to Redis: the replica finds it there.
    assert_eq!(browser.get(&b.url("/api/me")).await.status(), 200);
    assert_eq!(browser.get(&b.url("/stores/us/launch")).await.status(), 302);
}

#[tokio::test]
async fn a_wrong_acl_password_is_not_ready_and_grants_nothing() {
    let pki = Pki::make();
    let tls_port = free_port();
    let _redis = tls_acl_redis(&pki, tls_port);
    let op = RogueOp::start(CLIENT, SECRET).await;
    let wrong = "not-the-password-123";
    let url = format!("rediss://storegate:{wrong}@127.0.0.1:{tls_port}/");
    let gw = gateway(&op, url, ca_line(&pki)).await;

    let (status, body) = readyz(&gw).await;
    assert_eq!(status, 503, "{body}");
    let why = body["checks"]["session_store"]["error"].to_string();
    assert!(
        why.contains("WRONGPASS") || why.contains("uthentication"),
        "{why}"
    );
    assert!(
        !why.contains(wrong) && !why.contains(ACL_PASSWORD),
        "no password in {why}"
    );
    let resp = Browser::new().get(&gw.url("/login")).await;
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().get("location").is_none());
}

#[tokio::test]
async fn rediss_without_the_private_ca_is_refused() {
    let pki = Pki::make();
    let tls_port = free_port();
    let _redis = tls_acl_redis(&pki, tls_port);
    let op = RogueOp::start(CLIENT, SECRET).await;
    // The OS trust store does not know the test CA: the certificate check must fail.
    let url = format!("rediss://storegate:{ACL_PASSWORD}@127.0.0.1:{tls_port}/");
    let gw = gateway(&op, url, String::new()).await;
    let (status, body) = readyz(&gw).await;
    assert_eq!(
        status, 503,
        "an untrusted certificate is not accepted: {body}"
    );
    assert_eq!(body["checks"]["session_store"]["ok"], false, "{body}");
    let why = body["checks"]["session_store"]["error"].to_string();
    assert!(why.contains("certificate"), "names the certificate: {why}");
    assert!(!why.contains(ACL_PASSWORD), "no password in {why}");
    let resp = Browser::new().get(&gw.url("/login")).await;
    assert_eq!(resp.status(), 503);
    assert!(
        resp.headers().get("location").is_none(),
        "not sent to the IdP"
    );
    let page = resp.text().await.expect("page");
    assert!(page.contains("session store"), "{page}");
}

/// SCIM data and the provisioning queue keep their hash tags inside the `storegate:` prefix
/// (`storegate:{scim}`, `storegate:{prov}`), so the documented ACL pattern `~storegate:*` covers
/// every key the gateway writes: an ACL user limited to it can run both.
#[tokio::test]
async fn scim_and_the_provisioning_queue_work_under_the_acl_key_pattern() {
    use std::time::Duration;
    use storegate::provisioning::queue::WorkQueue;
    use storegate::provisioning::queue::redis::RedisQueue;
    use storegate::provisioning::reconcile::{Action, CustomerState};
    use storegate::secret::Secret;
    use storegate::store::{REDIS_PREFIX, RedisHandle};

    let pki = Pki::make();
    let tls_port = free_port();
    let _redis = tls_acl_redis(&pki, tls_port);
    let op = RogueOp::start(CLIENT, SECRET).await;
    let url = format!("rediss://storegate:{ACL_PASSWORD}@127.0.0.1:{tls_port}/");
    let mut opts = Opts::new(&op.issuer, CLIENT, SECRET);
    opts.redis_url = Some(url.clone());
    opts.session_extra = ca_line(&pki);
    opts.extra_toml = crate::scim::scim_toml_store("redis");
    let a = Gateway::start(Reserved::new().await, opts).await;
    let b = a.replica(Reserved::new().await).await;

    let http = reqwest::Client::new();
    let created = http
        .post(a.url("/scim/v2/Users"))
        .bearer_auth(crate::scim::TOKEN)
        .json(&json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "acl@corp.example",
            "externalId": "acl-1",
            "active": true
        }))
        .send()
        .await
        .expect("POST /Users");
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.expect("JSON")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let got = http
        .get(b.url(&format!("/scim/v2/Users/{id}")))
        .bearer_auth(crate::scim::TOKEN)
        .send()
        .await
        .expect("GET /Users/id");
    assert_eq!(
        got.status(),
        200,
        "the replica reads it through the ACL user"
    );

    let ca = std::fs::read(pki.path("ca.pem")).expect("CA");
    let handle =
        RedisHandle::with_ca(&Secret::new(url), Some(ca), Duration::from_secs(2)).expect("handle");
    let queue = RedisQueue::new(
        handle,
        REDIS_PREFIX,
        vec!["store1".into()],
        Duration::from_secs(60),
    );
    let delete = Action::Delete {
        account: "store1".into(),
        id: 7,
        email: "acl@corp.example".into(),
        before: CustomerState {
            first_name: "A".into(),
            last_name: "C".into(),
            channel_ids: Some(vec![1]),
            customer_group_id: 0,
        },
    };
    queue
        .enqueue("acl-run", vec![delete])
        .await
        .expect("enqueue under the ACL user");
    let stats = queue.stats().await.expect("stats under the ACL user");
    assert_eq!(
        (stats.waiting, stats.in_flight, stats.dead_letters),
        (1, 0, 0)
    );
    let lease = queue
        .lease()
        .await
        .expect("lease under the ACL user")
        .expect("the lease is free");
    lease.release().await;
}

/// Cluster over TLS with the ACL user: every node speaks TLS to clients and on the cluster bus,
/// the nodes announce their TLS ports, and the gateway (seeded with one node, given the private
/// CA) discovers the others, so a session signed in on A is read and launched from on B, and
/// its record sits on exactly one node.
#[tokio::test]
async fn a_tls_cluster_with_an_acl_user_carries_the_sessions() {
    let pki = Pki::make();
    let (cert, key, ca) = (
        pki.path("server.pem"),
        pki.path("server.key"),
        pki.path("ca.pem"),
    );
    let cluster = ClusterSetup::start_with(Some(&ClusterTls {
        cert: &cert,
        key: &key,
        ca: &ca,
        user: "storegate",
        password: ACL_PASSWORD,
    }));
    let op = RogueOp::start(CLIENT, SECRET).await;
    op.set_claims(json!({"email": "tls-cluster@corp.example", "groups": ["bc-merchandisers"]}));
    let node = |i: usize| {
        format!(
            "rediss://storegate:{ACL_PASSWORD}@127.0.0.1:{}",
            cluster.tls_ports[i]
        )
    };
    let mut opts = Opts::new(&op.issuer, CLIENT, SECRET);
    opts.redis_topology = Some(format!(
        "redis_mode = \"cluster\"\nredis_nodes = [\"{}\"]",
        node(0)
    ));
    opts.session_extra = ca_line(&pki);
    let a = Gateway::start(Reserved::new().await, opts).await;
    let b = a
        .replica_edited(Reserved::new().await, &node(0), &node(2))
        .await;
    let (status, body) = readyz(&a).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(readyz(&b).await.0, 200);

    let browser = Browser::new();
    let start = browser.get(&a.url("/login")).await;
    let done = browser.follow_while(start, |u| u.path() != "/").await;
    assert_eq!(done.status(), 303, "{}", browser.hops_text());
    let me = browser.get(&b.url("/api/me")).await;
    assert_eq!(me.status(), 200, "B reads the session A wrote over TLS");
    let cookies = browser.cookies_for(&a.base).expect("cookies");
    let id = cookies
        .split("; ")
        .find_map(|c| c.strip_prefix("storegate_session="))
        .expect("session cookie");
    let holders = cluster.nodes_holding(&format!("storegate:session:{id}"));
    assert_eq!(holders.len(), 1, "the record is on its slot's node only");
    let launch = browser.get(&b.url("/stores/us/launch")).await;
    assert_eq!(launch.status(), 302, "{}", browser.hops_text());
    assert_eq!(browser.follow(launch).await.status(), 200);
    assert_eq!(a.sim.accepted_logins().len(), 1, "one token, taken once");
}

/// Sentinel over TLS: the gateway asks the sentinel on its TLS port (`rediss://`, the private
/// CA) for the master, and talks TLS to the master it names. A session survives
/// `SENTINEL FAILOVER`: the gateway follows the sentinel to the promoted replica's TLS port.
#[tokio::test]
async fn a_tls_sentinel_setup_carries_the_sessions_across_a_failover() {
    let pki = Pki::make();
    let (cert, key, ca) = (
        pki.path("server.pem"),
        pki.path("server.key"),
        pki.path("ca.pem"),
    );
    let redis = SentinelSetup::start_tls(&TlsFiles {
        cert: &cert,
        key: &key,
        ca: &ca,
    });
    assert_eq!(
        redis.current_master_port(),
        Some(redis.master_client_port())
    );
    let op = RogueOp::start(CLIENT, SECRET).await;
    op.set_claims(json!({"email": "tls-sentinel@corp.example", "groups": ["bc-merchandisers"]}));
    let mut opts = Opts::new(&op.issuer, CLIENT, SECRET);
    opts.redis_topology = Some(format!(
        "redis_mode = \"sentinel\"\nredis_nodes = [\"{}\"]\nredis_sentinel_master = \"{}\"",
        redis.sentinel_url(),
        SentinelSetup::MASTER
    ));
    opts.session_extra = ca_line(&pki);
    let gw = Gateway::start(Reserved::new().await, opts).await;
    let (status, body) = readyz(&gw).await;
    assert_eq!(status, 200, "{body}");

    let browser = Browser::new();
    let start = browser.get(&gw.url("/login")).await;
    let done = browser.follow_while(start, |u| u.path() != "/").await;
    assert_eq!(done.status(), 303, "{}", browser.hops_text());
    assert_eq!(browser.get(&gw.url("/api/me")).await.status(), 200);
    redis.wait_replicated();

    redis.failover();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let mut seen = Vec::new();
    loop {
        let status = browser.get(&gw.url("/api/me")).await.status().as_u16();
        seen.push(status);
        if status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the session is not back after the failover: {seen:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        seen.iter().all(|s| *s == 200 || *s == 503),
        "only 503 while no master was known, never a sign-out: {seen:?}"
    );
    let launch = browser.get(&gw.url("/stores/us/launch")).await;
    assert_eq!(launch.status(), 302, "{}", browser.hops_text());
}
