//! Integration tests, compiled as one binary (faster to build, one place to look).
//!
//! Each test runs the real gateway over loopback against independent peers: node `oidc-provider`
//! (installed by `make test`), a hostile OP for refusals, a private `redis-server`, and the
//! BigCommerce simulator.

#[path = "../support/mod.rs"]
mod support;

mod entitlements;
mod harness;
mod launch;
mod oidc_peer;
mod oidc_refusals;
