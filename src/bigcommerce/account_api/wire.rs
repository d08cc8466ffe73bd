//! The answers' shapes (camelCase, as the Account API sends them), and the pages the client
//! hands out.

use serde::Deserialize;

use super::{AccountApiError, MAX_CURSOR};

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

/// The cursor of the next page, when there is one. A page that says there is more but gives no
/// usable cursor is refused: reading would stop there and take a partial list for the whole
/// (a managed user on a later page would look absent).
fn next_of(p: &PageInfo) -> Result<Option<String>, AccountApiError> {
    if !p.has_next_page {
        return Ok(None);
    }
    match &p.end_cursor {
        Some(c) if !c.is_empty() => cursor(c).map(|c| Some(c.to_owned())),
        _ => Err(AccountApiError::Unexpected(
            "a page says more follow but gives no endCursor".into(),
        )),
    }
}

fn cursor(c: &str) -> Result<&str, AccountApiError> {
    if c.len() > MAX_CURSOR {
        return Err(AccountApiError::Unexpected(format!(
            "a page cursor of {} bytes (at most {MAX_CURSOR})",
            c.len()
        )));
    }
    Ok(c)
}

/// More items than asked for is not the documented answer (and would let one answer grow the
/// plan without bound).
fn bounded<T>(edges: &[T], asked: u32, what: &str) -> Result<(), AccountApiError> {
    if edges.len() > usize::try_from(asked).unwrap_or(usize::MAX) {
        return Err(AccountApiError::Unexpected(format!(
            "{} {what} in a page of at most {asked}",
            edges.len()
        )));
    }
    Ok(())
}

impl<T> Connection<T> {
    /// The page, provided it holds at most `asked` items and its cursor is usable.
    pub(super) fn into_page(self, asked: u32) -> Result<Page<T>, AccountApiError> {
        bounded(&self.edges, asked, "users")?;
        Ok(Page {
            next: next_of(&self.page_info)?,
            items: self.edges.into_iter().map(|e| e.node).collect(),
        })
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
    /// The page, provided it holds at most `stores` stores of at most `users` users each.
    pub(super) fn into_page(self, stores: u32, users: u32) -> Result<StorePage, AccountApiError> {
        let c = self.account.stores;
        bounded(&c.edges, stores, "stores")?;
        let next = next_of(&c.page_info)?;
        let mut out = Vec::with_capacity(c.edges.len());
        for e in c.edges {
            let cursor = cursor(e.cursor.as_deref().unwrap_or_default())?.to_owned();
            out.push(StoreUsers {
                store_hash: e.node.store_hash,
                cursor,
                users: e.node.users.into_page(users)?,
            });
        }
        Ok(StorePage { stores: out, next })
    }
}
