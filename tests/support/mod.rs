//! Test infrastructure shared by the integration tests: include with `mod support;`.
//!
//! - [`peers::OidcPeer`]: the independent OpenID provider (node `oidc-provider`) in `tests/peers/`.
//! - [`redis::RedisServer`]: a private `redis-server` per test, stoppable for fail-closed tests
//!   (benches/saml.rs includes it by path for its Redis-sessions row).
//! - [`browser::Browser`]: a cookie-keeping HTTP client that does not follow redirects by itself.
//! - [`rogue_op::RogueOp`]: a hostile OpenID provider whose ID tokens break one rule at a time.
//! - [`wait::until`]: wait for an event with a bound (no sleep-then-assert).
//! - [`tools::ToolSpec`]: a web tool behind the gateway (routes, a recording upstream) and the
//!   identity JWT checked with the JWKS, for the forward-auth and built-in proxy tests.
//! - [`harness::Gateway`]: the gateway on loopback with the BigCommerce simulator behind it, built
//!   from a TOML config ([`harness::Opts`], [`harness::config_text`]), its audit trail captured.
//! - [`provisioning`]: the simulator with three stores, a reconciler configuration, SCIM joiners,
//!   leavers and movers, and the queue cases every backend runs.
//! - [`saml_idp::Idp`]: a SAML IdP (keys, metadata) answering through [`saml_peer`], the one
//!   pysaml2 driver (benches/saml.rs includes it by path), and the browser's SAML steps.
//!
//! Each test binary uses only part of this, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod browser;
pub mod front_door;
pub mod harness;
pub mod peers;
pub mod postgres;
pub mod provisioning;
pub mod redis;
pub mod rogue_op;
pub mod saml_idp;
pub mod saml_peer;
pub mod tools;
pub mod traefik;
pub mod wait;

use std::net::TcpListener;

/// A TCP port on 127.0.0.1 that was free a moment ago. For servers that cannot bind port 0 and tell
/// us the port (redis-server); another process may take it in between, which is rare enough here.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0 to find a free port")
        .port()
}
