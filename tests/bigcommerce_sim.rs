//! BigCommerce simulator, login JWT and customer provisioning, as one test binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bigcommerce {
    mod account_rules;
    mod api_rules;
    mod b2b_rules;
    mod client;
    pub mod fixture;
    mod hook_rules;
    mod login_rules;
}
