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
}

impl RedisServer {
    /// Starts `redis-server` (from PATH, or `$STOREGATE_TEST_REDIS`) on a free port and waits for PING.
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// Like [`Self::start`], with extra `redis-server` arguments (e.g. `--tls-port`, `--user`).
    /// Readiness is then any answer on the plain port (an ACL may refuse the default user's PING).
    pub fn start_with(extra: &[&str]) -> RedisServer {
        // The port is free when chosen, but a test running in parallel may take it before
        // redis-server binds it: then redis-server exits at once, and another port is tried.
        let mut last = String::new();
        for _ in 0..5 {
            let mut server = RedisServer {
                port: super::free_port(),
                child: None,
                extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            };
            match server.try_spawn() {
                Ok(()) => return server,
                Err(e) => last = e,
            }
        }
        panic!("{last}");
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
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
