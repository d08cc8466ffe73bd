//! BigCommerce: the Customer Login JWT minter, the store clock, the Management API client behind a
//! small trait, customer provisioning, and the simulator that stands in for BigCommerce in tests
//! and in `storegate demo`.
//!
//! The clients, all over one HTTP exchange ([`transport::StoreHttp`]: credentials, the
//! correlation header, the rate-limit headers and the classification of transport failures live
//! there once) and all failing with one error, [`api::ApiError`], whose `class()` says who must
//! act:
//!
//! - [`api::Customers`], one batch-shaped trait implemented once over HTTP
//!   ([`api::HttpCustomers`]: at most ten customers a write, no retry, the rate-limit headers
//!   returned so the reconciler's queue can pace itself). The launch path uses slices of one
//!   ([`api::one`]). Layers implement the same trait and are stacked by the composition root:
//!   the launch's one quick retry ([`quick_retry`]), own-change recording
//!   (`webhooks::RecordingCustomers`) and metering ([`metered`]), the last two for the
//!   reconciler too.
//! - [`b2b::B2bApi`] (`b2b::HttpB2bApi`): B2B Edition company users, for both.
//!
//! The facts relied on are in `docs/bigcommerce.md`; each check cites the rule it
//! enforces where it is enforced.

pub mod account_api;
pub mod api;
pub mod b2b;
pub mod customers;
pub mod login_jwt;
pub mod metered;
pub mod quick_retry;
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
