//! `[[account]]`: a BigCommerce account (which owns several store hashes) whose control-panel users
//! storegate manages through the GraphQL Account API (issue 12). File shape and validated value;
//! the checks live in `validate/account.rs`.

use serde::Deserialize;
use url::Url;

use crate::secret::Secret;

/// The scopes the account-level API account needs (`storegate check` prints them). The docs
/// disagree on which of write/delete covers `removeUserFromAccount`, so both are asked for.
pub const ACCOUNT_SCOPES: [&str; 3] = [
    "account_users_read",
    "account_users_write",
    "account_users_delete",
];

#[derive(Debug, Deserialize)]
pub struct AccountFile {
    pub id: String,
    /// The account's UUID (Account settings > API accounts shows it).
    pub account_uuid: String,
    /// Token of an **account-level** API account (X-Auth-Token), or `access_token_file`.
    #[serde(default)]
    pub access_token: Option<String>,
    #[serde(default)]
    pub access_token_file: Option<String>,
    /// Default `https://api.bigcommerce.com`.
    #[serde(default)]
    pub api_base: Option<String>,
    /// The `[[bigcommerce]]` ids (store hashes) of this account whose staff storegate manages.
    #[serde(default)]
    pub stores: Vec<String>,
    /// A leaver is removed from every store but stays a user of the account. Default false.
    #[serde(default)]
    pub keep_account_on_leave: bool,
    /// Also remove users outside SCIM's population (otherwise only listed as unmanaged).
    /// Default false.
    #[serde(default)]
    pub manage_all: bool,
}

/// One store of an account: its `[[bigcommerce]]` id and store hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountStore {
    pub id: String,
    pub store_hash: String,
}

#[derive(Debug, Clone)]
pub struct ControlPanelAccount {
    pub id: String,
    pub account_uuid: String,
    pub access_token: Secret,
    pub api_base: Url,
    pub stores: Vec<AccountStore>,
    pub keep_account_on_leave: bool,
    pub manage_all: bool,
}

impl ControlPanelAccount {
    /// The store hash of the `[[bigcommerce]]` id `store`, when it belongs to this account.
    pub fn hash_of(&self, store: &str) -> Option<&str> {
        self.stores
            .iter()
            .find(|s| s.id == store)
            .map(|s| s.store_hash.as_str())
    }
}
