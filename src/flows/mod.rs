//! The journeys a newcomer asks about, one file each, read top to bottom:
//!
//! - [`sign_in`]: the end every protocol's sign-in shares (SAML replay check, leaver check,
//!   identity, a fresh session, audit). `web::login` (OIDC) and `web::saml` (SAML) run the
//!   protocol and call it.
//! - [`launch`]: opening a store (leaver check, entitlement, BigCommerce customer, login token).
//! - [`control_panel`]: opening a store's control panel from the portal (leaver check, the
//!   control-panel grant decided again, audit, redirect).
//! - [`sign_out`]: local sign-out, OIDC RP-initiated logout, and the SAML single-logout records.
//! - [`provision`]: a SCIM change reaching BigCommerce (the timer, the lease, the pass: desired
//!   state, BigCommerce read, plan and drift, queue, executor, B2B).
//! - [`forward_auth`]: may this browser open this address of a `[[route]]` (asked by
//!   `/auth/verify` for a front door and by the built-in proxy before it forwards).
//!
//! [`signed_in`] loads the browser's sign-in with its lifetimes enforced, for every journey that
//! needs one.
//!
//! Each returns a typed outcome, or a typed error that names its audit reason; `web` turns both
//! into responses in one place (`web::answer`). The journeys know no HTTP framework: they take the
//! [`Gateway`] (borrowed from the web state) and the browser's session.

pub mod control_panel;
pub mod forward_auth;
pub mod idp_logout;
pub mod launch;
mod leaver;
pub mod provision;
pub mod sign_in;
pub mod sign_out;
pub mod signed_in;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::audit::AuditLog;
use crate::bigcommerce::api::Customers;
use crate::bigcommerce::b2b::B2bApi;
use crate::bigcommerce::store_clock::StoreClock;
use crate::clock::{Clock, UnixTime};
use crate::config::Config;
use crate::federation::oidc::OidcProvider;
use crate::federation::saml::SamlState;
use crate::provisioning::scim::ScimService;
use crate::reload::{PolicySnapshot, SharedPolicy};

pub use launch::{LaunchError, Launched};
pub use sign_in::{SignInError, SignedIn};
pub use sign_out::{SignOutError, SignedOut};

/// What the journeys use of the running gateway, borrowed for one request.
pub struct Gateway<'a> {
    pub config: &'a Config,
    pub clock: &'a dyn Clock,
    pub audit: &'a AuditLog,
    /// Latencies of the IdPs' steps.
    pub metrics: &'a crate::metrics::Metrics,
    pub scim: Option<&'a ScimService>,
    pub bigcommerce: &'a HashMap<String, Arc<dyn Customers>>,
    pub b2b: &'a HashMap<String, Arc<dyn B2bApi>>,
    pub store_clock: &'a StoreClock,
    pub providers: &'a BTreeMap<String, Arc<OidcProvider>>,
    pub saml: Option<&'a SamlState>,
    pub policy: &'a SharedPolicy,
    /// The session records, for ending sessions other than the current browser's.
    pub sessions: &'a crate::session::Store,
    pub session_index: &'a crate::session::index::SessionIndex,
    pub one_time: &'a crate::session::one_time::OneTimeStore,
    /// The identity-token keys, when any `[[route]]` is configured.
    pub forward: Option<&'a forward_auth::ForwardState>,
}

impl Gateway<'_> {
    /// The policy and stores in force now; take it once per request (a reload in the middle of
    /// a request cannot mix two policies).
    pub fn policy(&self) -> Arc<PolicySnapshot> {
        self.policy.load_full()
    }

    pub fn now(&self) -> UnixTime {
        self.clock.now()
    }
}

/// Any journey's refusal or failure, for the one translation at the edge.
#[derive(Debug)]
pub enum FlowError {
    SignIn(SignInError),
    Launch(LaunchError),
    SignOut(SignOutError),
    ControlPanel(control_panel::ControlPanelError),
}

impl From<control_panel::ControlPanelError> for FlowError {
    fn from(e: control_panel::ControlPanelError) -> Self {
        FlowError::ControlPanel(e)
    }
}

impl From<SignOutError> for FlowError {
    fn from(e: SignOutError) -> Self {
        FlowError::SignOut(e)
    }
}

impl From<SignInError> for FlowError {
    fn from(e: SignInError) -> Self {
        FlowError::SignIn(e)
    }
}

impl From<LaunchError> for FlowError {
    fn from(e: LaunchError) -> Self {
        FlowError::Launch(e)
    }
}
