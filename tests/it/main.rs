//! Integration tests, compiled as one binary (faster to build, one place to look).
//!
//! Each test runs the real gateway over loopback against independent peers: node `oidc-provider`
//! (installed by `make test`), a hostile OP for refusals, a private `redis-server`, and the
//! BigCommerce simulator; forward authentication behind a real nginx and Traefik
//! (`forward_auth`, `forward_auth_traefik`). `cli` and `demo` run the built `storegate` binary itself
//! (`storegate check`, `storegate demo`) and need no peer.

// The `storegate` binary's allocator (src/main.rs), which with its `override` feature also serves
// libxml2, libxmlsec and OpenSSL: the gateway under test allocates as the one that runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../support/mod.rs"]
mod support;
// The running gateway (tests/support/harness.rs), under the name the test files use.
use support::harness;

mod accessibility;
mod admin;
mod adoption;
mod audit_chain;
mod audit_postgres;
mod backend_conformance;
mod builtin_proxy;
mod cli;
mod console;
mod control_panel;
mod control_panel_cli;
mod control_panel_portal;
mod cookie_domain;
mod demo;
mod deploy_config;
mod doctor;
mod entitlements;
mod forward_auth;
mod forward_auth_traefik;
mod launch;
mod leaver;
mod metrics;
mod oidc_peer;
mod oidc_refusals;
mod onboarding;
mod portal;
mod ratelimit;
mod reconcile;
mod reconcile_b2b;
mod reconcile_redis;
mod redis_tls_acl;
mod redis_topology;
mod replicas;
mod saml;
mod saml_hostile;
mod saml_interop;
mod scim;
mod scim_replicas;
mod signout;
mod telemetry;
mod webhooks;
