//! The answers' shapes (camelCase, as the Account API sends them), and the pages the client
//! hands out.

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountUser {
    /// `bc/account/user/{id}`.
    pub id: String,
    pub email: String,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StoreUser {
    pub id: String,
    pub email: String,
    #[serde(default)]
    pub permissions: Vec<String>,
    #[serde(default)]
    pub status: Option<String>,
}

/// One page of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// The cursor to ask for the next page with, when there is one.
    pub next: Option<String>,
}

/// One store of a page of `account.stores`, with one page of its users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreUsers {
    pub store_hash: String,
    /// The cursor of this store's edge (to ask for this store alone: `after` the one before).
    pub cursor: String,
    pub users: Page<StoreUser>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorePage {
    pub stores: Vec<StoreUsers>,
    pub next: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PageInfo {
    has_next_page: bool,
    #[serde(default)]
    end_cursor: Option<String>,
}

#[derive(Deserialize)]
struct Edge<T> {
    node: T,
    #[serde(default)]
    cursor: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Connection<T> {
    page_info: PageInfo,
    edges: Vec<Edge<T>>,
}

fn next_of(p: &PageInfo) -> Option<String> {
    p.end_cursor.clone().filter(|_| p.has_next_page)
}

impl<T> Connection<T> {
    pub(super) fn into_page(self) -> Page<T> {
        Page {
            next: next_of(&self.page_info),
            items: self.edges.into_iter().map(|e| e.node).collect(),
        }
    }
}

#[derive(Deserialize)]
pub(super) struct AccountUsersData {
    pub account: AccountUsersAccount,
}

#[derive(Deserialize)]
pub(super) struct AccountUsersAccount {
    pub users: Connection<AccountUser>,
}

#[derive(Deserialize)]
pub(super) struct StoreUsersData {
    account: StoresAccount,
}

#[derive(Deserialize)]
struct StoresAccount {
    stores: Connection<StoreNode>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoreNode {
    store_hash: String,
    users: Connection<StoreUser>,
}

impl StoreUsersData {
    pub(super) fn into_page(self) -> StorePage {
        let c = self.account.stores;
        StorePage {
            next: next_of(&c.page_info),
            stores: c
                .edges
                .into_iter()
                .map(|e| StoreUsers {
                    store_hash: e.node.store_hash,
                    cursor: e.cursor.unwrap_or_default(),
                    users: e.node.users.into_page(),
                })
                .collect(),
        }
    }
}
