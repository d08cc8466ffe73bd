//! BigCommerce: the Customer Login JWT minter, the store clock, the Management API client behind a
//! small trait, customer provisioning, and the simulator that stands in for BigCommerce in tests
//! and in `storegate demo`.
//!
//! The facts relied on are in `shared/reference/BIGCOMMERCE.md`; each check cites the rule it
//! enforces where it is enforced.

pub mod api;
pub mod b2b;
pub mod customers;
pub mod login_jwt;
pub mod sim;
pub mod store_clock;
#[cfg(test)]
mod test_support;
pub mod webhooks;
