//! storegate: an SSO federation gateway between OpenText Identity and Access Management and
//! BigCommerce. See docs/architecture.md for the path of a request.

#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod access_review;
pub mod app;
pub mod audit;
pub mod bigcommerce;
pub mod clock;
pub mod config;
pub mod controlpanel;
/// `storegate demo` and its development OpenID provider; only with the `devkit` feature.
#[cfg(feature = "devkit")]
pub mod demo;
pub mod doctor;
pub mod explain;
pub mod federation;
pub mod flows;
pub mod forward;
#[doc(hidden)]
pub mod fuzzing;
pub mod identity;
pub mod metrics;
pub mod onboarding;
pub mod policy;
pub mod provisioning;
pub mod proxy;
pub mod redirect;
pub mod reload;
pub mod secret;
pub mod server;
pub mod session;
pub mod store;
pub mod telemetry;
pub mod web;
