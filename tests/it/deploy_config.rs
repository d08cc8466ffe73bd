//! The configuration shipped under deploy/ (and its ConfigMap copy, kept equal by
//! scripts/check-deploy.sh) passes the gateway's own validation.

use storegate::config::{self, Environment, SessionBackend};

struct DeployEnv;
impl Environment for DeployEnv {
    fn var(&self, name: &str) -> Option<String> {
        (name == "STOREGATE_REDIS_URL")
            .then(|| "rediss://storegate:pw-0123456789@redis.internal:6380/0".to_owned())
    }
    fn read_file(&self, p: &std::path::Path) -> std::io::Result<String> {
        assert!(
            p.starts_with("/run/secrets/storegate"),
            "secret file outside the mount: {}",
            p.display()
        );
        Ok("secret-value-0123456789abcdefghij".to_owned())
    }
}

#[test]
fn the_deploy_sample_configuration_is_valid_and_uses_redis() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/storegate.toml");
    let text = std::fs::read_to_string(path).expect("deploy/storegate.toml");
    let cfg = match config::load_str(&text, "deploy/storegate.toml", &DeployEnv) {
        Ok(c) => c,
        Err(d) => panic!("deploy/storegate.toml is invalid:\n{d}"),
    };
    assert!(matches!(cfg.session.backend, SessionBackend::Redis(..)));
    assert!(!cfg.allow_insecure_http);
}
