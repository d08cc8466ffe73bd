//! The BigCommerce simulator: the Management API slice the gateway uses and Multi-Storefront
//! storefronts that accept Customer Login JWTs, enforcing what docs/bigcommerce.md says BigCommerce
//! enforces. Used by the tests and by `storegate demo`; never a source of truth about BigCommerce.
//!
//! Layout: `/stores/{hash}/...` is the API (see [`api`]), `/storefront/{hash}/{channel_id}/...` is a
//! storefront (see [`storefront`]). [`SimHandle`] inspects and steers a running simulator.

mod account;
mod account_state;
mod api;
mod b2b;
mod b2b_state;
mod hooks;
mod state;
mod storefront;
mod verify;

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use parking_lot::Mutex;

use crate::clock::{SharedClock, SystemClock, UnixTime};
use crate::secret::Secret;

pub use account_state::{
    ACCOUNT_REQUESTS_PER_HOUR, NO_PERMISSION_REQUIRED, SimAccount, SimAccountCall, SimStaff,
};
pub use b2b_state::{SimCompany, SimCompanyUser};
pub use hooks::{
    HookDelivery, KNOWN_SCOPES as HOOK_SCOPES, RETRY_DELAYS as HOOK_RETRY_DELAYS, SimHook,
};
pub use state::{
    AcceptedLogin, MAX_ATTRIBUTES, RejectedLogin, SimAttribute, SimAttributeValue, SimCustomer,
    SimCustomerGroup,
};
pub use verify::LoginRejection;

#[derive(Debug, Clone)]
pub struct SimChannel {
    pub id: u64,
    pub name: String,
}

/// One store hash with its API account (store-level: one token, one client id and secret).
#[derive(Debug, Clone)]
pub struct SimStore {
    pub store_hash: String,
    pub name: String,
    pub access_token: Secret,
    pub client_id: String,
    pub client_secret: Secret,
    pub channels: Vec<SimChannel>,
}

impl SimStore {
    /// A store hash with one channel (1, "main") and credentials derived from the hash
    /// (`token-HASH`, `client-HASH`, `secret-HASH`): the provisioning tests' and bench's stores.
    pub fn single_channel(hash: &str) -> Self {
        SimStore {
            store_hash: hash.into(),
            name: hash.into(),
            access_token: Secret::new(format!("token-{hash}")),
            client_id: format!("client-{hash}"),
            client_secret: Secret::new(format!("secret-{hash}")),
            channels: vec![SimChannel {
                id: 1,
                name: "main".into(),
            }],
        }
    }
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub stores: Vec<SimStore>,
    /// Accounts served by the GraphQL Account API (control-panel users).
    pub accounts: Vec<SimAccount>,
    /// API requests per store and window (Pro plan: 450).
    pub requests_per_window: u32,
    /// The rate-limit window (30 s).
    pub window_ms: u64,
    /// How far the stores' clock runs from the simulator's clock.
    pub clock_offset_secs: i64,
}

impl SimConfig {
    pub fn new(stores: Vec<SimStore>) -> Self {
        SimConfig {
            stores,
            accounts: Vec::new(),
            requests_per_window: 450,
            window_ms: 30_000,
            clock_offset_secs: 0,
        }
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig::new(Vec::new())
    }
}

pub struct Simulator;

impl Simulator {
    /// A simulator on the system clock.
    pub fn build(config: SimConfig) -> (Router, SimHandle) {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    /// A simulator whose store clocks read `clock` plus the configured offset.
    pub fn with_clock(config: SimConfig, clock: SharedClock) -> (Router, SimHandle) {
        let accounts = config
            .accounts
            .iter()
            .map(|a| (a.uuid.clone(), account_state::AccountData::new(&a.stores)))
            .collect();
        let handle = SimHandle(Arc::new(Inner {
            state: Mutex::new(state::State::new(&config)),
            accounts: Mutex::new(accounts),
            config,
            clock,
        }));
        let router = api::router(handle.clone())
            .merge(b2b::router(handle.clone()))
            .merge(storefront::router(handle.clone()))
            .merge(account::router(handle.clone()));
        (router, handle)
    }
}

struct Inner {
    config: SimConfig,
    clock: SharedClock,
    state: Mutex<state::State>,
    /// The Account API's accounts, by UUID.
    accounts: Mutex<std::collections::BTreeMap<String, account_state::AccountData>>,
}

/// Inspection and fault injection for a running simulator. Cheap to clone.
#[derive(Clone)]
pub struct SimHandle(Arc<Inner>);

impl SimHandle {
    fn store(&self, hash: &str) -> Option<&SimStore> {
        self.0.config.stores.iter().find(|s| s.store_hash == hash)
    }

    /// The stores' clock: the simulator's clock plus the offset.
    pub fn store_now(&self) -> UnixTime {
        self.0.clock.now() + self.0.state.lock().clock_offset
    }

    pub fn set_clock_offset(&self, secs: i64) {
        self.0.state.lock().clock_offset = secs;
    }

    /// The API accounts lose the OAuth scope `scope` (e.g. `store_v2_customers`): every endpoint
    /// needing it answers 403 "You don't have a required scope", as BigCommerce does.
    pub fn revoke_scope(&self, scope: &str) {
        self.0.state.lock().revoked_scopes.insert(scope.to_owned());
    }

    /// The next `n` authenticated API calls answer `status` (e.g. 500, 503) instead of running.
    pub fn fail_next(&self, n: u32, status: StatusCode) {
        self.0.state.lock().fail_next = Some((n, status));
    }

    /// The next `n` authenticated API calls that get through run normally, then answer `status`
    /// instead of their result: the change happened but the caller cannot know (an ambiguous
    /// failure).
    pub fn fail_next_after_effect(&self, n: u32, status: StatusCode) {
        self.0.state.lock().fail_after = Some((n, status));
    }

    /// The next `n` authenticated API calls answer 429 with `X-Rate-Limit-Requests-Left: 0` and
    /// `X-Rate-Limit-Time-Reset-Ms: reset_ms` and take no effect (another app on the store spent
    /// the shared quota); they spend none of the quota and come before [`Self::fail_next`]'s.
    pub fn rate_limit_next(&self, n: u32, reset_ms: u64) {
        self.0.state.lock().throttle_next = (n > 0).then_some((n, reset_ms));
    }

    /// How many 429s [`Self::rate_limit_next`] injected so far (every store).
    pub fn injected_rate_limits(&self) -> u64 {
        self.0.state.lock().throttled
    }

    /// Every API call to this store answered 429, the quota's and the injected ones.
    pub fn rate_limited_answers(&self, store_hash: &str) -> u64 {
        self.0
            .state
            .lock()
            .stores
            .get(store_hash)
            .map(|s| s.rate_limited)
            .unwrap_or(0)
    }

    pub fn customers(&self, store_hash: &str) -> Vec<SimCustomer> {
        self.0
            .state
            .lock()
            .stores
            .get(store_hash)
            .map(|s| s.customers.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn customer_groups(&self, store_hash: &str) -> Vec<SimCustomerGroup> {
        self.0
            .state
            .lock()
            .stores
            .get(store_hash)
            .map(|s| s.groups.clone())
            .unwrap_or_default()
    }

    /// The customer attributes defined on a store.
    pub fn attributes(&self, store_hash: &str) -> Vec<SimAttribute> {
        self.0
            .state
            .lock()
            .stores
            .get(store_hash)
            .map(|s| s.attributes.clone())
            .unwrap_or_default()
    }

    /// A customer's attribute values.
    pub fn attribute_values(&self, store_hash: &str, customer_id: u64) -> Vec<SimAttributeValue> {
        self.0
            .state
            .lock()
            .stores
            .get(store_hash)
            .map(|s| s.attribute_values_of(customer_id))
            .unwrap_or_default()
    }

    /// The value of the attribute named `name` on a customer, if set.
    pub fn attribute_value(
        &self,
        store_hash: &str,
        customer_id: u64,
        name: &str,
    ) -> Option<String> {
        let st = self.0.state.lock();
        let store = st.stores.get(store_hash)?;
        let attr = store.attributes.iter().find(|a| a.name == name)?;
        store
            .attribute_values
            .get(&(customer_id, attr.id))
            .map(|v| v.attribute_value.clone())
    }

    /// Seeds an attribute value directly (as if set in the control panel), defining the string
    /// attribute `name` when missing.
    pub fn set_attribute_value(&self, store_hash: &str, customer_id: u64, name: &str, value: &str) {
        let mut st = self.0.state.lock();
        let Some(store) = st.stores.get_mut(store_hash) else {
            return;
        };
        let attr = match store.attributes.iter().find(|a| a.name == name) {
            Some(a) => a.id,
            None => {
                let id = store.next_id();
                store.attributes.push(SimAttribute {
                    id,
                    name: name.to_owned(),
                    kind: "string".into(),
                });
                id
            }
        };
        store.set_attribute_value(customer_id, attr, value.to_owned());
    }

    /// Seeds a customer directly (as if created in the control panel); returns its id.
    pub fn add_customer(
        &self,
        store_hash: &str,
        email: &str,
        first_name: &str,
        last_name: &str,
        channel_ids: Option<Vec<u64>>,
    ) -> Option<u64> {
        let mut st = self.0.state.lock();
        let store = st.stores.get_mut(store_hash)?;
        let origin = channel_ids
            .as_ref()
            .and_then(|c| c.first().copied())
            .unwrap_or(1);
        Some(store.insert_customer(SimCustomer {
            id: 0,
            email: email.to_owned(),
            first_name: first_name.to_owned(),
            last_name: last_name.to_owned(),
            customer_group_id: 0,
            channel_ids,
            origin_channel_id: origin,
        }))
    }

    /// How often a customer's password was set through `authentication.new_password`.
    pub fn password_changes(&self, store_hash: &str, customer_id: u64) -> u32 {
        self.0
            .state
            .lock()
            .stores
            .get(store_hash)
            .and_then(|s| s.password_changes.get(&customer_id).copied())
            .unwrap_or(0)
    }

    pub fn accepted_logins(&self) -> Vec<AcceptedLogin> {
        self.0.state.lock().accepted.clone()
    }

    pub fn rejected_logins(&self) -> Vec<RejectedLogin> {
        self.0.state.lock().rejected.clone()
    }

    /// The `X-Request-Id` of every API request to this store that carried one, in order.
    pub fn request_ids(&self, store_hash: &str) -> Vec<String> {
        self.0
            .state
            .lock()
            .stores
            .get(store_hash)
            .map(|s| s.request_ids.clone())
            .unwrap_or_default()
    }

    /// Test-only: lets `/v3/hooks` accept plain-http loopback destinations (BigCommerce takes
    /// https on port 443 only), so a test gateway on 127.0.0.1 can receive deliveries.
    pub fn dangerously_allow_loopback_http_hook_destinations(&self) {
        self.0.state.lock().loopback_hooks = true;
    }

    fn loopback_hooks_allowed(&self) -> bool {
        self.0.state.lock().loopback_hooks
    }

    /// The store's numeric id, as webhook payloads carry it.
    pub fn store_id(&self, store_hash: &str) -> String {
        hooks::numeric_store_id(store_hash)
    }

    /// The webhooks registered on a store.
    pub fn hooks(&self, store_hash: &str) -> Vec<SimHook> {
        self.0
            .state
            .lock()
            .stores
            .get(store_hash)
            .map(|s| s.hooks.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Sets a hook's `is_active` directly (as BigCommerce does after 48 hours of failures).
    pub fn set_hook_active(&self, store_hash: &str, hook_id: u64, active: bool) {
        let mut st = self.0.state.lock();
        if let Some(h) = st
            .stores
            .get_mut(store_hash)
            .and_then(|s| s.hooks.get_mut(&hook_id))
        {
            h.is_active = active;
        }
    }

    /// Every webhook delivery attempt so far (every store).
    pub fn hook_deliveries(&self) -> Vec<HookDelivery> {
        self.0.state.lock().deliveries.clone()
    }

    /// Test-only: a change made by staff in the control panel (not through the API): `edit`
    /// changes the customer, and the store's hooks get `store/customer/updated` (and
    /// `store/customer/channel/login/access/updated` when `channel_ids` changed). False when
    /// there is no such customer.
    pub fn edit_customer_in_control_panel(
        &self,
        store_hash: &str,
        customer_id: u64,
        edit: impl FnOnce(&mut SimCustomer),
    ) -> bool {
        let channels_changed = {
            let mut st = self.0.state.lock();
            let Some(c) = st
                .stores
                .get_mut(store_hash)
                .and_then(|s| s.customers.get_mut(&customer_id))
            else {
                return false;
            };
            let before = c.channel_ids.clone();
            edit(c);
            before != c.channel_ids
        };
        self.customer_changed(store_hash, customer_id, "store/customer/updated");
        if channels_changed {
            self.customer_changed(
                store_hash,
                customer_id,
                "store/customer/channel/login/access/updated",
            );
        }
        true
    }

    /// Sends `scope` about a customer to the store's hooks.
    fn customer_changed(&self, store_hash: &str, customer_id: u64, scope: &str) {
        hooks::fire(self, store_hash, scope, "customer", customer_id);
    }

    /// Every API request made to this store (including refused and rate-limited ones).
    pub fn api_calls(&self, store_hash: &str) -> u64 {
        self.0
            .state
            .lock()
            .stores
            .get(store_hash)
            .map(|s| s.api_calls)
            .unwrap_or(0)
    }
}
