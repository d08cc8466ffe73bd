//! The simulated accounts' memory (GraphQL Account API, issue 12): users, store memberships with
//! their permissions, the hourly request log and the record of calls.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::Serialize;

use crate::clock::UnixTime;
use crate::secret::Secret;

/// BigCommerce's limit: 70 requests per hour per account, across every `/accounts` path.
pub const ACCOUNT_REQUESTS_PER_HOUR: usize = 70;
/// The largest `first` a connection accepts in the simulator (the docs name none).
pub const MAX_FIRST: i64 = 500;
/// The code every store user holds.
pub const NO_PERMISSION_REQUIRED: &str = "No_Permission_Required";

/// An account with an account-level API account (one token for every store of the account).
#[derive(Debug, Clone)]
pub struct SimAccount {
    pub uuid: String,
    pub access_token: Secret,
    /// Store hashes of the account.
    pub stores: Vec<String>,
}

impl SimAccount {
    /// Token `account-token-{uuid}`.
    pub fn new(uuid: &str, stores: &[&str]) -> Self {
        SimAccount {
            uuid: uuid.to_owned(),
            access_token: Secret::new(format!("account-token-{uuid}")),
            stores: stores.iter().map(|s| (*s).to_owned()).collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimStaff {
    pub id: u64,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
}

/// A user's membership of one store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimMembership {
    pub permissions: BTreeSet<String>,
    /// The store owner cannot be removed from the store.
    pub owner: bool,
}

/// One request to `/accounts/{uuid}/graphql`, as tests assert it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimAccountCall {
    pub at: UnixTime,
    /// `addUserToStore`, `account.users`, ..., or `unknown`.
    pub operation: String,
    /// `email`, `email store`, `userId store` or the read's arguments.
    pub args: String,
    /// 200, 401 or 429.
    pub status: u16,
    /// The answer carried `errors[]`.
    pub refused: bool,
}

impl SimAccountCall {
    /// `operation(args)`, with ` -> error` or ` -> 429` when it did not succeed.
    pub fn describe(&self) -> String {
        let tail = match (self.status, self.refused) {
            (200, false) => String::new(),
            (200, true) => " -> error".into(),
            (s, _) => format!(" -> {s}"),
        };
        format!("{}({}){tail}", self.operation, self.args)
    }
}

#[derive(Default)]
pub(super) struct AccountData {
    pub users: BTreeMap<u64, SimStaff>,
    next_user: u64,
    /// Store hash -> user id -> membership.
    pub members: BTreeMap<String, BTreeMap<u64, SimMembership>>,
    pub calls: Vec<SimAccountCall>,
    /// When each counted request of the last hour came.
    pub window: VecDeque<UnixTime>,
    pub throttle_next: u32,
}

impl AccountData {
    pub fn new(stores: &[String]) -> Self {
        AccountData {
            next_user: 1,
            members: stores
                .iter()
                .map(|s| (s.clone(), BTreeMap::new()))
                .collect(),
            ..Default::default()
        }
    }

    pub fn user_by_email(&self, email: &str) -> Option<&SimStaff> {
        self.users
            .values()
            .find(|u| u.email.eq_ignore_ascii_case(email))
    }

    pub fn insert_user(&mut self, email: &str, first: &str, last: &str) -> u64 {
        let id = self.next_user.max(1);
        self.next_user = id + 1;
        self.users.insert(
            id,
            SimStaff {
                id,
                email: email.to_owned(),
                first_name: first.to_owned(),
                last_name: last.to_owned(),
            },
        );
        id
    }

    /// Sliding hour: true when this request may run (and counts it).
    pub fn admit(&mut self, now: UnixTime) -> Result<(), u64> {
        while self.window.front().is_some_and(|t| *t <= now - 3600) {
            self.window.pop_front();
        }
        if self.throttle_next > 0 {
            self.throttle_next -= 1;
            return Err(60);
        }
        if self.window.len() >= ACCOUNT_REQUESTS_PER_HOUR {
            let oldest = self.window.front().copied().unwrap_or(now);
            return Err(u64::try_from(oldest + 3600 - now).unwrap_or(1).max(1));
        }
        self.window.push_back(now);
        Ok(())
    }
}

pub(super) fn user_node_id(id: u64) -> String {
    format!("bc/account/user/{id}")
}

pub(super) fn parse_user_node_id(s: &str) -> Option<u64> {
    s.strip_prefix("bc/account/user/")?.parse().ok()
}
