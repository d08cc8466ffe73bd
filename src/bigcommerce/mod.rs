//! BigCommerce: the Customer Login JWT minter, the store clock, the Management API client behind a
//! small trait, customer provisioning, and the simulator that stands in for BigCommerce in tests
//! and in `storegate demo`.
//!
//! Every client talks HTTP through [`transport::StoreHttp`]: credentials, the correlation
//! header, the rate-limit headers and the classification of transport failures live there once.
//!
//! The facts relied on are in `docs/bigcommerce.md`; each check cites the rule it
//! enforces where it is enforced.

pub mod account_api;
pub mod api;
pub mod b2b;
pub mod customers;
pub mod login_jwt;
pub mod metered;
/// The BigCommerce simulator; only with the `devkit` feature (tests, benches, `storegate demo`).
#[cfg(feature = "devkit")]
pub mod sim;
pub mod store_clock;
#[cfg(test)]
mod test_support;
pub mod transport;
pub mod webhooks;

use crate::config::BigCommerceAccount;

/// The HTTP client for one account's store API: its timeout, and redirects never followed (a
/// redirect would carry the access token to wherever it points).
pub fn store_api_client(account: &BigCommerceAccount) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(account.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// `{api_base}/stores/{store_hash}`, the root of every store API path.
pub fn store_api_base(account: &BigCommerceAccount) -> String {
    format!(
        "{}/stores/{}",
        account.api_base.as_str().trim_end_matches('/'),
        account.store_hash
    )
}
