//! BigCommerce: the Customer Login JWT minter, the store clock, the Management API client behind a
//! small trait, customer provisioning, and the simulator that stands in for BigCommerce in tests
//! and in `storegate demo`.
//!
//! The clients, all over one HTTP exchange ([`transport::StoreHttp`]: credentials, the
//! correlation header, the rate-limit headers and the classification of transport failures live
//! there once) and all failing with one error, [`api::ApiError`], whose `class()` says who must
//! act:
//!
//! - [`api::CustomerApi`] (`api::HttpCustomerApi`): the launch path, one customer at a time with
//!   one quick retry; the composition root stacks the metering layer ([`metered`]) and the
//!   own-change recording layer (`webhooks::RecordingCustomerApi`) on it.
//! - [`batch::BatchClient`]: the reconciler, ten customers a call, no retry (the queue decides),
//!   the rate-limit headers returned so the queue can pace itself.
//! - [`b2b::B2bApi`] (`b2b::HttpB2bApi`): B2B Edition company users, for both.
//!
//! The facts relied on are in `docs/bigcommerce.md`; each check cites the rule it
//! enforces where it is enforced.

pub mod account_api;
pub mod api;
pub mod b2b;
pub mod batch;
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
