//! A real front door (nginx, Traefik) asking `/auth/verify` about every request to a protected
//! tool (issue 14), for tests/it/forward_auth.rs and tests/it/forward_auth_traefik.rs: the
//! child process in a private folder (stopped and removed on drop), the two routes both tests
//! protect, and the gateway, the recording upstream and the front door started together.

use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::harness::Gateway;
use super::rogue_op::RogueOp;
use super::tools::{Recorder, ToolSpec};

/// A front door's process, stopped on drop; its folder (config, logs) removed with it.
pub struct FrontDoor {
    name: &'static str,
    child: Child,
    pub dir: PathBuf,
}

impl Drop for FrontDoor {
    /// SIGTERM first: nginx's master then stops its workers (a SIGKILL left them running, one
    /// pair per test), Traefik closes its listeners. SIGKILL if it is still there after 5 s.
    fn drop(&mut self) {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fresh private folder for a front door listening on `port`.
pub fn private_dir(name: &str, port: u16) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("storegate-{name}-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create the front door's folder");
    dir
}

impl FrontDoor {
    /// Starts `cmd` (its output into `dir/output.log`); panics naming `name` if it cannot start.
    pub fn spawn(name: &'static str, mut cmd: Command, dir: PathBuf) -> FrontDoor {
        let log = std::fs::File::create(dir.join("output.log")).expect("create output.log");
        let err = log.try_clone().expect("clone the log handle");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("{name} did not start ({e}): run scripts/test-deps.sh"));
        FrontDoor { name, child, dir }
    }

    /// Panics with the process's output if it has exited: a front door that dies at start (a
    /// config it refuses) must fail the test, not leave it waiting.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited at start ({status}); its output:\n{}",
                self.name,
                self.output()
            );
        }
    }

    /// What the process wrote so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.dir.join("output.log")).unwrap_or_default()
    }

    /// Polls `ready` (at most 30 s) while checking that the process is still running.
    pub async fn wait_until<F, Fut>(&mut self, what: &str, mut ready: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let start = std::time::Instant::now();
        loop {
            self.assert_running();
            if ready().await {
                return;
            }
            if start.elapsed() > Duration::from_secs(30) {
                panic!(
                    "timed out waiting for {what}; {} wrote:\n{}",
                    self.name,
                    self.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until something accepts connections on `port`.
    pub async fn wait_listening(&mut self, port: u16) {
        let what = format!("{} to listen on {port}", self.name);
        self.wait_until(&what, || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
    }
}

/// The routes the front-door tests protect on `127.0.0.1:{front_port}`: "order-desk" (`/`,
/// bc-finance) and "order-admin" (`/admin`, bc-admins), after `extra` (e.g. `[forward_auth]`).
pub fn routes_toml(front_port: u16, extra: &str) -> String {
    format!(
        r#"
{extra}

[[route]]
name = "order-desk"
host = "127.0.0.1:{front_port}"
path_prefix = "/"
groups_any = ["bc-finance"]

[[route]]
name = "order-admin"
host = "127.0.0.1:{front_port}"
path_prefix = "/admin"
groups_any = ["bc-admins"]
"#
    )
}

/// The gateway's and upstream's addresses a front door is configured with.
pub struct Behind {
    /// The port the front door listens on (the routes' host is `127.0.0.1:{port}`).
    pub port: u16,
    /// The gateway's origin, `http://127.0.0.1:PORT`.
    pub gateway: String,
    /// The upstream's origin.
    pub upstream: String,
}

/// A tool behind a front door `D`, running.
pub struct Protected<D> {
    /// Kept alive: the gateway's IdP.
    pub op: RogueOp,
    pub gw: Gateway,
    pub door: D,
    /// The front door's origin, `http://127.0.0.1:PORT`: where browsers go.
    pub front: String,
    /// Every request that reached the upstream.
    pub seen: Recorder,
}

/// Starts the OP (signing in `spec.claims`), the upstream, the gateway with [`routes_toml`]
/// (after `forward_auth_table`), then the front door `start(behind)`.
pub async fn protected<D, F, Fut>(
    spec: ToolSpec,
    forward_auth_table: &str,
    start: F,
) -> Protected<D>
where
    F: FnOnce(Behind) -> Fut,
    Fut: Future<Output = D>,
{
    // The port stays bound while the OP, the upstream and the gateway start (each binds port 0,
    // and the kernel could hand out this one, which the door would then not get: a test once
    // reached the upstream directly and read its 200 as the door's), and is let go just before
    // the door binds it.
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let port = reserved.local_addr().expect("a bound port").port();
    let tool = spec.start(|_| routes_toml(port, forward_auth_table)).await;
    drop(reserved);
    let door = start(Behind {
        port,
        gateway: tool.gw.url("").trim_end_matches('/').to_owned(),
        upstream: tool.upstream.clone(),
    })
    .await;
    Protected {
        op: tool.op,
        gw: tool.gw,
        door,
        front: format!("http://127.0.0.1:{port}"),
        seen: tool.up,
    }
}

/// The key ids a JWKS lists, in order.
pub fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .expect("a key list")
        .iter()
        .map(|k| k["kid"].as_str().expect("a kid").to_owned())
        .collect()
}
