//! storegate: an SSO federation gateway between OpenText Identity and Access Management and
//! BigCommerce. See ARCHITECTURE in the README for the path of a request.

#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod clock;
pub mod config;
pub mod demo;
pub mod identity;
pub mod policy;
pub mod redirect;
pub mod secret;
