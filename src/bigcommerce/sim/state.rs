//! The simulator's memory: customers, groups, metafields, rate-limit windows, seen token ids,
//! storefront sessions and the record of logins.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use axum::http::StatusCode;
use serde::Serialize;

use super::SimConfig;
use super::verify::LoginRejection;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimCustomer {
    pub id: u64,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub customer_group_id: u64,
    /// `None`: every channel that allows global logins.
    pub channel_ids: Option<Vec<u64>>,
    pub origin_channel_id: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimCustomerGroup {
    pub id: u64,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimMetafield {
    pub id: u64,
    #[serde(rename = "resource_id")]
    pub customer_id: u64,
    pub namespace: String,
    pub key: String,
    pub value: String,
    pub permission_set: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedLogin {
    pub store_hash: String,
    pub channel_id: u64,
    pub customer_id: u64,
    pub redirect_to: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedLogin {
    pub store_hash: String,
    pub channel_id: u64,
    pub reason: LoginRejection,
}

pub(super) struct Session {
    pub store_hash: String,
    pub channel_id: u64,
    pub customer_id: u64,
}

pub(super) struct StoreData {
    pub customers: BTreeMap<u64, SimCustomer>,
    next_customer: u64,
    pub groups: Vec<SimCustomerGroup>,
    pub metafields: Vec<SimMetafield>,
    next_id: u64,
    pub window_start: Instant,
    pub used_in_window: u32,
    pub api_calls: u64,
    /// Customer id -> how often `authentication.new_password` was set (the value is not kept).
    pub password_changes: HashMap<u64, u32>,
    /// B2B Edition, when installed.
    pub b2b: super::b2b::B2bData,
}

impl StoreData {
    fn new() -> Self {
        StoreData {
            customers: BTreeMap::new(),
            next_customer: 1,
            groups: Vec::new(),
            metafields: Vec::new(),
            next_id: 1,
            window_start: Instant::now(),
            used_in_window: 0,
            api_calls: 0,
            password_changes: HashMap::new(),
            b2b: Default::default(),
        }
    }

    pub fn insert_customer(&mut self, mut c: SimCustomer) -> u64 {
        c.id = self.next_customer;
        self.next_customer += 1;
        let id = c.id;
        self.customers.insert(id, c);
        id
    }

    pub fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    pub fn email_taken(&self, email: &str, except: Option<u64>) -> bool {
        self.customers
            .values()
            .any(|c| c.email.eq_ignore_ascii_case(email) && Some(c.id) != except)
    }
}

pub(super) struct State {
    pub stores: HashMap<String, StoreData>,
    /// `jti`s ever presented with a valid signature, across all stores.
    pub seen_jti: HashSet<String>,
    pub accepted: Vec<AcceptedLogin>,
    pub rejected: Vec<RejectedLogin>,
    pub sessions: HashMap<String, Session>,
    pub fail_next: Option<(u32, StatusCode)>,
    pub clock_offset: i64,
}

impl State {
    pub fn new(config: &SimConfig) -> Self {
        State {
            stores: config
                .stores
                .iter()
                .map(|s| (s.store_hash.clone(), StoreData::new()))
                .collect(),
            seen_jti: HashSet::new(),
            accepted: Vec::new(),
            rejected: Vec::new(),
            sessions: HashMap::new(),
            fail_next: None,
            clock_offset: config.clock_offset_secs,
        }
    }

    /// Takes one injected failure, if any is pending.
    pub fn take_failure(&mut self) -> Option<StatusCode> {
        let (n, status) = self.fail_next?;
        self.fail_next = if n > 1 { Some((n - 1, status)) } else { None };
        Some(status)
    }
}
