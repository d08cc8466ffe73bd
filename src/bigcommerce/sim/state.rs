//! The simulator's memory: customers, groups, customer attributes and their values, rate-limit windows, seen token ids,
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

/// A customer attribute definition (`/v3/customers/attributes`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimAttribute {
    pub id: u64,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// One customer's value of one attribute, shaped like `include=attributes` and
/// `/v3/customers/attribute-values` answer it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimAttributeValue {
    pub id: u64,
    pub customer_id: u64,
    pub attribute_id: u64,
    pub attribute_value: String,
}

/// BigCommerce's limit on customer attributes per store (docs/bigcommerce.md).
pub const MAX_ATTRIBUTES: usize = 50;

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
    pub attributes: Vec<SimAttribute>,
    /// Keyed by (customer id, attribute id): one value per customer and attribute.
    pub attribute_values: BTreeMap<(u64, u64), SimAttributeValue>,
    next_id: u64,
    pub window_start: Instant,
    pub used_in_window: u32,
    pub api_calls: u64,
    /// The `X-Request-Id` of each API call that carried one, in order (correlation, issue 13).
    pub request_ids: Vec<String>,
    /// API requests answered 429 (the quota spent, or injected).
    pub rate_limited: u64,
    /// Customer id -> how often `authentication.new_password` was set (the value is not kept).
    pub password_changes: HashMap<u64, u32>,
    /// B2B Edition, when installed.
    pub b2b: super::b2b_state::B2bData,
    /// Webhooks registered with `/v3/hooks`, by id.
    pub hooks: BTreeMap<u64, super::hooks::SimHook>,
}

impl StoreData {
    fn new() -> Self {
        StoreData {
            customers: BTreeMap::new(),
            next_customer: 1,
            groups: Vec::new(),
            attributes: Vec::new(),
            attribute_values: BTreeMap::new(),
            next_id: 1,
            window_start: Instant::now(),
            used_in_window: 0,
            api_calls: 0,
            request_ids: Vec::new(),
            rate_limited: 0,
            password_changes: HashMap::new(),
            b2b: Default::default(),
            hooks: BTreeMap::new(),
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

    /// Sets (upserts) a customer's attribute value.
    pub fn set_attribute_value(&mut self, customer_id: u64, attribute_id: u64, value: String) {
        let id = match self.attribute_values.get(&(customer_id, attribute_id)) {
            Some(v) => v.id,
            None => self.next_id(),
        };
        self.attribute_values.insert(
            (customer_id, attribute_id),
            SimAttributeValue {
                id,
                customer_id,
                attribute_id,
                attribute_value: value,
            },
        );
    }

    /// A customer's attribute values, in attribute order.
    pub fn attribute_values_of(&self, customer_id: u64) -> Vec<SimAttributeValue> {
        self.attribute_values
            .range((customer_id, 0)..=(customer_id, u64::MAX))
            .map(|(_, v)| v.clone())
            .collect()
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
    /// Failures answered after the request took effect (a lost answer: 5xx, timeout, reset).
    pub fail_after: Option<(u32, StatusCode)>,
    /// Injected 429s: how many more, and the `X-Rate-Limit-Time-Reset-Ms` they carry.
    pub throttle_next: Option<(u32, u64)>,
    /// Injected 429s answered so far.
    pub throttled: u64,
    pub clock_offset: i64,
    /// Every webhook delivery attempt, in order.
    pub deliveries: Vec<super::hooks::HookDelivery>,
    /// Test override: hooks may point at `http://127.0.0.1` (see `hooks`).
    pub loopback_hooks: bool,
    /// OAuth scopes the API accounts lack (`revoke_scope`): their endpoints answer 403, as
    /// BigCommerce does for a token without the scope.
    pub revoked_scopes: HashSet<String>,
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
            fail_after: None,
            throttle_next: None,
            throttled: 0,
            clock_offset: config.clock_offset_secs,
            deliveries: Vec::new(),
            loopback_hooks: false,
            revoked_scopes: HashSet::new(),
        }
    }

    /// Takes one injected failure, if any is pending.
    pub fn take_failure(&mut self) -> Option<StatusCode> {
        let (n, status) = self.fail_next?;
        self.fail_next = if n > 1 { Some((n - 1, status)) } else { None };
        Some(status)
    }

    /// Takes one injected 429, if any is pending: its reset in milliseconds.
    pub fn take_throttle(&mut self) -> Option<u64> {
        let (n, reset_ms) = self.throttle_next?;
        self.throttle_next = if n > 1 { Some((n - 1, reset_ms)) } else { None };
        self.throttled += 1;
        Some(reset_ms)
    }

    /// Takes one injected after-the-fact failure, if any is pending.
    pub fn take_failure_after(&mut self) -> Option<StatusCode> {
        let (n, status) = self.fail_after?;
        self.fail_after = if n > 1 { Some((n - 1, status)) } else { None };
        Some(status)
    }
}
