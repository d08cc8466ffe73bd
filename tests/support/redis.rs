//! A private `redis-server` per test: no persistence, killed on drop, and stoppable and restartable on
//! the same port so that fail-closed behaviour (store unreachable) can be tested.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const READY_TIMEOUT: Duration = Duration::from_secs(10);

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    /// Extra `redis-server` arguments (TLS, ACL users), kept for restarts.
    extra: Vec<String>,
    /// Its working directory. `--save ""` keeps a master from writing, but a replica still
    /// stores the RDB of its full sync: never in the checkout.
    dir: std::path::PathBuf,
}

impl RedisServer {
    /// Starts `redis-server` (from PATH, or `$STOREGATE_TEST_REDIS`) on a free port and waits for PING.
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// Like [`Self::start`], with extra `redis-server` arguments (e.g. `--tls-port`, `--user`).
    /// Readiness is then any answer on the plain port (an ACL may refuse the default user's PING).
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        Self::start_with_second_port(|_| extra.clone()).0
    }

    /// Like [`Self::start_with`], for arguments that name a second port of their own (a TLS
    /// port): each attempt picks that port afresh too, so a taken one is not tried five times.
    /// Returns the server and its second port. The ports are free when chosen, but a test
    /// running in parallel may take one before redis-server binds it: then redis-server exits
    /// at once, and other ports are tried.
    pub fn start_with_second_port(extra: impl Fn(u16) -> Vec<String>) -> (RedisServer, u16) {
        let mut last = String::new();
        for _ in 0..5 {
            let second = super::free_port();
            let mut server = RedisServer {
                port: super::free_port(),
                child: None,
                extra: extra(second),
                dir: private_dir("redis"),
            };
            match server.try_spawn() {
                Ok(()) => return (server, second),
                Err(e) => last = e,
            }
        }
        panic!("{last}");
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The server's process id while it runs (benches read its CPU time in /proc).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server (as a crash would); connections drop and new ones are refused.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty (nothing was saved).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    fn spawn(&mut self) {
        if let Err(e) = self.try_spawn() {
            panic!("{e}");
        }
    }

    fn try_spawn(&mut self) -> Result<(), String> {
        let bin =
            std::env::var("STOREGATE_TEST_REDIS").unwrap_or_else(|_| "redis-server".to_owned());
        let child = Command::new(&bin)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--loglevel", "warning"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run `{bin}` (install redis-server, e.g. via `make deps`): {e}")
            });
        self.child = Some(child);

        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Err(format!(
                    "redis-server on port {} exited early: {status}",
                    self.port
                ));
            }
            if ping(self.port) || (!self.extra.is_empty() && answers(self.port)) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "redis-server on port {} did not answer PING within {READY_TIMEOUT:?}",
            self.port
        ))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// True when something on `port` answers an inline `PING` with `+PONG`.
pub fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    stream.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

/// True when something on `port` answers an inline `PING` at all (`+PONG` or an error such as
/// `-NOAUTH`).
pub fn answers(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 1];
    stream.read_exact(&mut buf).is_ok() && (buf[0] == b'+' || buf[0] == b'-')
}

/// Runs `redis-cli -p PORT ARGS...` (from PATH, Debian package redis-tools) and returns its
/// standard output.
pub fn cli(port: u16, args: &[&str]) -> String {
    cli_auth(port, None, args)
}

/// [`cli`] authenticating with `password` (`requirepass`) when given.
pub fn cli_auth(port: u16, password: Option<&str>, args: &[&str]) -> String {
    let mut cmd = Command::new("redis-cli");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()]);
    if let Some(p) = password {
        cmd.args(["-a", p, "--no-auth-warning"]);
    }
    let out = cmd
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run `redis-cli` (install redis-tools, e.g. via `make deps`): {e}")
        });
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `check` every 50 ms until it holds or `within` passed; panics with `what` otherwise.
pub fn wait_until(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {within:?} waiting for {what}");
}

/// A directory of its own under the system temp dir (removed on drop by its owner).
fn private_dir(kind: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "storegate-{kind}-{}-{}",
        std::process::id(),
        super::free_port()
    ));
    std::fs::create_dir_all(&dir).expect("create a temp dir");
    dir
}

/// A master, one replica and one sentinel watching them under [`SentinelSetup::MASTER`]. One
/// sentinel suffices to fail over (quorum 1, and it is its own majority); a real deployment runs
/// three. Failure detection is tuned down to 1 s so that a killed master is replaced quickly.
pub struct SentinelSetup {
    pub master: RedisServer,
    pub replica: RedisServer,
    pub sentinel_port: u16,
    sentinel: Option<Child>,
    dir: std::path::PathBuf,
    /// `requirepass` of master and replica, and of the sentinel.
    data_password: Option<String>,
    sentinel_password: Option<String>,
    /// With TLS: the TLS ports clients use (the sentinel names these).
    tls: Option<SentinelTlsPorts>,
}

/// Certificate files for a TLS sentinel setup: master, replica and sentinel serve clients and
/// replicate over TLS only through their TLS ports (the plain ports stay for the test's own
/// `redis-cli` checks). The server certificate also serves as the client certificate.
pub struct TlsFiles<'a> {
    pub cert: &'a str,
    pub key: &'a str,
    pub ca: &'a str,
}

struct SentinelTlsPorts {
    master: u16,
    replica: u16,
    sentinel: u16,
}

fn tls_server_args(files: &TlsFiles<'_>, port: u16) -> Vec<String> {
    [
        "--tls-port",
        &port.to_string(),
        "--tls-cert-file",
        files.cert,
        "--tls-key-file",
        files.key,
        "--tls-ca-cert-file",
        files.ca,
        "--tls-auth-clients",
        "no",
        "--tls-replication",
        "yes",
    ]
    .map(str::to_owned)
    .to_vec()
}

impl SentinelSetup {
    pub const MASTER: &'static str = "storegate-test";

    pub fn start() -> SentinelSetup {
        Self::start_with_passwords(None, None)
    }

    /// Like [`Self::start`]; `data` is the `requirepass` of master and replica (also their
    /// `masterauth`, and the sentinel's `auth-pass`), `sentinel` the sentinel's own `requirepass`.
    pub fn start_with_passwords(data: Option<&str>, sentinel: Option<&str>) -> SentinelSetup {
        Self::start_inner(data, sentinel, None)
    }

    /// Like [`Self::start`], every client and replication link over TLS (see [`TlsFiles`]).
    pub fn start_tls(files: &TlsFiles<'_>) -> SentinelSetup {
        Self::start_inner(None, None, Some(files))
    }

    fn start_inner(
        data: Option<&str>,
        sentinel: Option<&str>,
        tls: Option<&TlsFiles<'_>>,
    ) -> SentinelSetup {
        let auth: Vec<&str> = match data {
            Some(p) => vec!["--requirepass", p, "--masterauth", p],
            None => Vec::new(),
        };
        let tls_ports = tls.map(|_| SentinelTlsPorts {
            master: super::free_port(),
            replica: super::free_port(),
            sentinel: super::free_port(),
        });
        let tls_args = |port: fn(&SentinelTlsPorts) -> u16| -> Vec<String> {
            match (tls, &tls_ports) {
                (Some(files), Some(ports)) => tls_server_args(files, port(ports)),
                _ => Vec::new(),
            }
        };
        let master_tls = tls_args(|p| p.master);
        let master_tls: Vec<&str> = master_tls.iter().map(String::as_str).collect();
        let master = RedisServer::start_with(&[&auth[..], &master_tls[..]].concat());
        // With TLS, replication and the sentinel use the master's TLS port.
        let master_port = tls_ports
            .as_ref()
            .map_or(master.port, |p| p.master)
            .to_string();
        let replica_tls = tls_args(|p| p.replica);
        let replica_tls: Vec<&str> = replica_tls.iter().map(String::as_str).collect();
        let replica = RedisServer::start_with(
            &[
                &auth[..],
                &replica_tls[..],
                &["--replicaof", "127.0.0.1", &master_port],
            ]
            .concat(),
        );
        wait_until("the replica to sync", Duration::from_secs(10), || {
            cli_auth(replica.port, data, &["INFO", "replication"]).contains("master_link_status:up")
        });
        let mut extra_conf = String::new();
        if let Some(p) = data {
            extra_conf.push_str(&format!("sentinel auth-pass {} {p}\n", Self::MASTER));
        }
        if let Some(p) = sentinel {
            extra_conf.push_str(&format!("requirepass {p}\n"));
        }
        if let (Some(files), Some(ports)) = (tls, &tls_ports) {
            extra_conf.push_str(&format!(
                "tls-port {}\ntls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\n\
                 tls-auth-clients no\ntls-replication yes\n",
                ports.sentinel, files.cert, files.key, files.ca
            ));
        }
        let dir = private_dir("sentinel");
        let mut last = String::new();
        for _ in 0..5 {
            let port = super::free_port();
            let conf = dir.join(format!("sentinel-{port}.conf"));
            // Sentinel rewrites its configuration file, so it must be a writable file of its own.
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                     sentinel monitor {m} 127.0.0.1 {master_port} 1\n\
                     sentinel down-after-milliseconds {m} 1000\n\
                     sentinel failover-timeout {m} 10000\n\
                     sentinel parallel-syncs {m} 1\n{extra_conf}",
                    dir = dir.display(),
                    m = Self::MASTER
                ),
            )
            .expect("write sentinel.conf");
            let bin =
                std::env::var("STOREGATE_TEST_REDIS").unwrap_or_else(|_| "redis-server".to_owned());
            let mut child = Command::new(&bin)
                .arg(&conf)
                .arg("--sentinel")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run `{bin} --sentinel`: {e}"));
            let deadline = Instant::now() + READY_TIMEOUT;
            let mut up = false;
            while Instant::now() < deadline {
                if let Ok(Some(status)) = child.try_wait() {
                    last = format!("redis sentinel on port {port} exited early: {status}");
                    break;
                }
                if ping(port) || (sentinel.is_some() && answers(port)) {
                    up = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if !up {
                let _ = child.kill();
                let _ = child.wait();
                continue;
            }
            let setup = SentinelSetup {
                master,
                replica,
                sentinel_port: port,
                sentinel: Some(child),
                dir,
                data_password: data.map(str::to_owned),
                sentinel_password: sentinel.map(str::to_owned),
                tls: tls_ports,
            };
            // Sentinel learns of replicas from the master's INFO; a failover needs one it knows.
            let replica_addr = format!("127.0.0.1:{}", setup.replica_client_port());
            wait_until(
                "the sentinel to see the replica",
                Duration::from_secs(15),
                || {
                    setup
                        .sentinel_cli(&["SENTINEL", "REPLICAS", Self::MASTER])
                        .lines()
                        .any(|l| l.trim() == replica_addr)
                },
            );
            return setup;
        }
        panic!("{last}");
    }

    /// The port clients (and the sentinel) use for the master: its TLS port with TLS.
    pub fn master_client_port(&self) -> u16 {
        self.tls.as_ref().map_or(self.master.port, |t| t.master)
    }

    /// The port clients (and the sentinel) use for the replica: its TLS port with TLS.
    pub fn replica_client_port(&self) -> u16 {
        self.tls.as_ref().map_or(self.replica.port, |t| t.replica)
    }

    /// `redis://[:PASSWORD@]127.0.0.1:PORT` of the sentinel; `rediss://` on its TLS port with TLS.
    pub fn sentinel_url(&self) -> String {
        if let Some(t) = &self.tls {
            return format!("rediss://127.0.0.1:{}", t.sentinel);
        }
        match &self.sentinel_password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}", self.sentinel_port),
            None => format!("redis://127.0.0.1:{}", self.sentinel_port),
        }
    }

    /// `redis-cli` against the sentinel (authenticated when it has a password).
    pub fn sentinel_cli(&self, args: &[&str]) -> String {
        cli_auth(self.sentinel_port, self.sentinel_password.as_deref(), args)
    }

    /// `redis-cli` against master or replica `port` (authenticated when they have a password).
    pub fn node_cli(&self, port: u16, args: &[&str]) -> String {
        cli_auth(port, self.data_password.as_deref(), args)
    }

    /// The master's port as the sentinel reports it now.
    pub fn current_master_port(&self) -> Option<u16> {
        let out = self.sentinel_cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", Self::MASTER]);
        out.lines().nth(1).and_then(|p| p.trim().parse().ok())
    }

    /// Waits until every write the master took so far is on the replica (a write, then `WAIT`
    /// on the same connection: replication is in order).
    pub fn wait_replicated(&self) {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &self.master.port.to_string()]);
        if let Some(p) = &self.data_password {
            cmd.args(["-a", p, "--no-auth-warning"]);
        }
        let out = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                if let Some(mut stdin) = c.stdin.take() {
                    stdin.write_all(b"SET storegate-test:replication-mark 1\nWAIT 1 5000\n")?;
                }
                c.wait_with_output()
            })
            .expect("run redis-cli");
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            text.lines().nth(1),
            Some("1"),
            "one replica acknowledged: {text}"
        );
    }

    /// `SENTINEL FAILOVER`: the replica is promoted and the old master demoted to its replica
    /// (the sentinel also disconnects the old master's clients). Returns once the sentinel names
    /// the replica as master and the replica says it is one.
    pub fn failover(&self) {
        // The sentinel learns of the replica from the master's INFO, which it polls every 10 s:
        // until it has, FAILOVER answers NOGOODSLAVE and does nothing, so it is asked again
        // (seen once in a full run: "NOGOODSLAVE No suitable replica to promote").
        let mut answer = String::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            answer = self.sentinel_cli(&["SENTINEL", "FAILOVER", Self::MASTER]);
            if !answer.trim().starts_with("NOGOODSLAVE") {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        assert_eq!(answer.trim(), "OK", "SENTINEL FAILOVER answered {answer}");
        let new = self.replica_client_port();
        wait_until(
            "the sentinel to name the new master",
            Duration::from_secs(20),
            || self.current_master_port() == Some(new),
        );
        wait_until(
            "the replica to become master",
            Duration::from_secs(20),
            || self.node_cli(self.replica.port, &["ROLE"]).lines().next() == Some("master"),
        );
    }
}

impl Drop for SentinelSetup {
    fn drop(&mut self) {
        if let Some(mut c) = self.sentinel.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster of three masters (no replicas), slots spread by `redis-cli --cluster create`.
pub struct ClusterSetup {
    pub nodes: Vec<RedisServer>,
    dirs: Vec<std::path::PathBuf>,
    /// `redis-cli` options for the nodes' plain ports (ACL user and password, when set).
    cli_auth: Vec<String>,
    /// The TLS client ports, when the cluster speaks TLS (`tls-cluster yes`): then the nodes
    /// announce these in `CLUSTER SLOTS`, and clients must use them.
    pub tls_ports: Vec<u16>,
}

/// A TLS cluster's certificate files (the server certificate also serves as the client
/// certificate of the cluster bus, so it needs both extended key usages) and its one ACL user.
pub struct ClusterTls<'a> {
    pub cert: &'a str,
    pub key: &'a str,
    pub ca: &'a str,
    pub user: &'a str,
    pub password: &'a str,
}

impl ClusterSetup {
    pub fn start() -> ClusterSetup {
        Self::start_with(None)
    }

    /// Three masters; with `tls`, every node serves clients, replication and the cluster bus
    /// over TLS only for the ACL user (the default user is off), and the plain port answers
    /// only that user too (kept for the test's own `redis-cli` checks).
    pub fn start_with(tls: Option<&ClusterTls<'_>>) -> ClusterSetup {
        let mut nodes = Vec::new();
        let mut dirs = Vec::new();
        let mut tls_ports = Vec::new();
        let acl = tls.map(|t| format!(">{}", t.password));
        for _ in 0..3 {
            // Each node keeps its `nodes.conf` in a directory of its own.
            let dir = private_dir("cluster");
            let d = dir.display().to_string();
            let args: Vec<String> = [
                "--cluster-enabled",
                "yes",
                "--cluster-node-timeout",
                "2000",
                "--dir",
                &d,
            ]
            .map(str::to_owned)
            .to_vec();
            if let (Some(t), Some(acl)) = (tls, &acl) {
                // The TLS port is picked afresh on each attempt, with the node's own port.
                let (node, port) = RedisServer::start_with_second_port(|port| {
                    let port = port.to_string();
                    let mut args = args.clone();
                    args.extend(
                        [
                            "--tls-port",
                            &port,
                            "--tls-cert-file",
                            t.cert,
                            "--tls-key-file",
                            t.key,
                            "--tls-ca-cert-file",
                            t.ca,
                            "--tls-auth-clients",
                            "no",
                            "--tls-cluster",
                            "yes",
                            "--tls-replication",
                            "yes",
                            "--user",
                            "default",
                            "off",
                            "--user",
                            t.user,
                            "on",
                            acl,
                            "~storegate:*",
                            "+@all",
                        ]
                        .map(str::to_owned),
                    );
                    args
                });
                tls_ports.push(port);
                nodes.push(node);
            } else {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                nodes.push(RedisServer::start_with(&args));
            }
            dirs.push(dir);
        }
        let cli_auth: Vec<String> = match tls {
            Some(t) => vec![
                "--user".into(),
                t.user.into(),
                "--pass".into(),
                t.password.into(),
                "--no-auth-warning".into(),
            ],
            None => Vec::new(),
        };
        let mut create = Command::new("redis-cli");
        create.args(&cli_auth);
        let addrs: Vec<String> = match tls {
            Some(t) => {
                create.args(["--tls", "--cacert", t.ca]);
                tls_ports.iter().map(|p| format!("127.0.0.1:{p}")).collect()
            }
            None => nodes
                .iter()
                .map(|n| format!("127.0.0.1:{}", n.port))
                .collect(),
        };
        let out = create
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = ClusterSetup {
            nodes,
            dirs,
            cli_auth,
            tls_ports,
        };
        cluster.wait_ok();
        cluster
    }

    /// `redis-cli` on node port `port` with this cluster's credentials.
    fn cli(&self, port: u16, args: &[&str]) -> String {
        let mut all: Vec<&str> = self.cli_auth.iter().map(String::as_str).collect();
        all.extend_from_slice(args);
        cli(port, &all)
    }

    /// Waits until every node reports `cluster_state:ok` (after creation, or after a node
    /// returned: each node has its own view until gossip converges).
    pub fn wait_ok(&self) {
        for n in &self.nodes {
            wait_until(
                "cluster_state:ok on every node",
                Duration::from_secs(20),
                || {
                    self.cli(n.port, &["CLUSTER", "INFO"])
                        .contains("cluster_state:ok")
                },
            );
        }
    }

    /// `redis://127.0.0.1:PORT` of node `i`.
    pub fn node_url(&self, i: usize) -> String {
        format!("redis://127.0.0.1:{}", self.nodes[i].port)
    }

    /// The ports of the nodes on which `key` exists (asked of each node directly, without
    /// following redirects: only the slot's owner can answer 1).
    pub fn nodes_holding(&self, key: &str) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| self.cli(n.port, &["EXISTS", key]).trim() == "1")
            .map(|n| n.port)
            .collect()
    }
}

impl Drop for ClusterSetup {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.stop();
        }
        for d in &self.dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// What a server is sent, as `MONITOR` reports it: for tests that count the commands a request
/// costs, and its round trips (the commands a client sent, not those its scripts ran).
pub struct Monitor {
    stream: TcpStream,
    reader: std::thread::JoinHandle<Vec<Sent>>,
}

/// One command `MONITOR` reported.
#[derive(Debug, Clone)]
pub struct Sent {
    /// Upper case, as sent.
    pub command: String,
    /// The first argument (the key, for most commands).
    pub key: String,
    /// Run by a Lua script rather than sent by a client.
    pub by_script: bool,
}

impl Monitor {
    /// Starts monitoring the server on `port`; returns once the server confirmed.
    pub fn start(port: u16) -> Monitor {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to redis");
        stream.write_all(b"MONITOR\r\n").expect("send MONITOR");
        let mut ok = [0u8; 5];
        stream.read_exact(&mut ok).expect("MONITOR answer");
        assert_eq!(&ok, b"+OK\r\n", "MONITOR refused");
        let reading = stream.try_clone().expect("clone the monitor socket");
        let reader = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let lines = std::io::BufRead::lines(std::io::BufReader::new(reading));
            for line in lines.map_while(Result::ok) {
                // +1796400448.339390 [0 127.0.0.1:48998] "GETDEL" "storegate:saml-pending:..."
                // +1796400448.339391 [0 lua] "SET" "storegate:session:..." (run by a script)
                let by_script = line.contains(" lua] ");
                let mut quoted = line.split('"').skip(1).step_by(2);
                if let Some(command) = quoted.next() {
                    let key = quoted.next().unwrap_or_default();
                    seen.push(Sent {
                        command: command.to_ascii_uppercase(),
                        key: key.to_owned(),
                        by_script,
                    });
                }
            }
            seen
        });
        Monitor { stream, reader }
    }

    /// Stops monitoring after a moment (the server's feed may trail the replies a client has
    /// already had) and returns every command seen, in order.
    pub fn stop(self) -> Vec<Sent> {
        std::thread::sleep(Duration::from_millis(300));
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        self.reader.join().expect("monitor reader")
    }
}
