//! Fixtures shared by the unit tests of this module: a tiny policy, an identity, an account.

use std::time::Duration;

use serde_json::Value;

use super::api::{ApiError, Created, Customer, Customers, Paced, RateInfo, StoreTime};

use crate::clock::UnixTime;
use crate::config::BigCommerceAccount;
use crate::identity::{AuthContext, Identity, IdpId, StoreId};
use crate::policy::{
    Conditions, CustomerGroupRef, GrantSpec, LaunchDecision, Policy, Rule, StoreSelector,
};
use crate::redirect::LocalPath;
use crate::secret::Secret;

pub const NOW: UnixTime = 1_760_000_000;

pub fn identity(email: Option<&str>) -> Identity {
    Identity {
        subject: "u-123".into(),
        idp: IdpId::new("opentext"),
        email: email.map(str::to_owned),
        // The IdP vouches (adoption tests that need it unverified say so).
        email_verified: email.is_some(),
        given_name: Some("Ada".into()),
        family_name: Some("Lovelace".into()),
        name: None,
        groups: vec!["staff".into()],
        roles: vec![],
        attributes: Default::default(),
        auth: AuthContext::default(),
        signed_in_at: NOW,
    }
}

pub fn policy(group: Option<CustomerGroupRef>) -> Policy {
    Policy::with_plain_stores(
        vec![StoreId::new("shop")],
        vec![Rule {
            conditions: Conditions {
                groups_any: vec!["staff".into()],
                ..Default::default()
            },
            grant: GrantSpec {
                customer_group: group,
                ..Default::default()
            },
            ..Rule::allow("staff-shop", "buyer", StoreSelector::All)
        }],
    )
}

pub fn decision(group: Option<CustomerGroupRef>) -> LaunchDecision {
    policy(group)
        .authorize_launch(
            &identity(Some("ada@corp.example")),
            &StoreId::new("shop"),
            NOW,
            &LocalPath::root(),
        )
        .expect("the fixture policy allows the fixture identity")
}

pub fn account() -> BigCommerceAccount {
    BigCommerceAccount {
        id: "main".into(),
        store_hash: "abc123".into(),
        api_base: url::Url::parse("https://api.bigcommerce.com/").expect("static url"),
        access_token: Secret::new("api-token"),
        client_id: "client-1".into(),
        client_secret: Secret::new("s3cret-key"),
        timeout: Duration::from_secs(5),
        b2b: None,
        webhook_secret: None,
    }
}

/// A [`Customers`] answering every call with the next of a script (`Ok(())`: an empty success),
/// counting the calls: for the layers' tests, which care how often a call reaches the client.
pub struct Scripted {
    script: parking_lot::Mutex<std::collections::VecDeque<Result<(), ApiError>>>,
    calls: std::sync::atomic::AtomicU32,
}

impl Scripted {
    pub fn new(script: Vec<Result<(), ApiError>>) -> Self {
        Scripted {
            script: parking_lot::Mutex::new(script.into()),
            calls: Default::default(),
        }
    }

    pub fn calls(&self) -> u32 {
        self.calls.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The next answer (a success once the script is used up).
    fn next<T: Default>(&self) -> Result<T, ApiError> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.script
            .lock()
            .pop_front()
            .unwrap_or(Ok(()))
            .map(|()| T::default())
    }
}

#[async_trait::async_trait]
impl StoreTime for Scripted {
    async fn store_time(&self) -> Result<UnixTime, ApiError> {
        self.next()
    }
}

#[async_trait::async_trait]
impl Customers for Scripted {
    fn store_hash(&self) -> &str {
        "abc123"
    }
    async fn find_by_emails(&self, _: &[String]) -> Paced<Vec<Customer>> {
        (self.next(), RateInfo::default())
    }
    async fn find_by_ids(&self, _: &[u64]) -> Result<Vec<Customer>, ApiError> {
        self.next()
    }
    async fn create(&self, _: &[Value]) -> Paced<Created> {
        (
            self.next::<Vec<Customer>>().map(Created::All),
            RateInfo::default(),
        )
    }
    async fn update(&self, _: &[Value]) -> Paced<Vec<Customer>> {
        (self.next(), RateInfo::default())
    }
    async fn delete(&self, _: &[u64]) -> Paced<()> {
        (self.next(), RateInfo::default())
    }
    async fn set_subjects(&self, _: u64, _: &[(u64, String)]) -> Paced<()> {
        (self.next(), RateInfo::default())
    }
    async fn subject_values(&self, _: u64) -> Result<Vec<(u64, String)>, ApiError> {
        self.next()
    }
    async fn subject_attribute_id(&self, _: bool) -> Result<Option<u64>, ApiError> {
        self.next()
    }
    async fn customer_group_id(&self, _: &str, _: bool) -> Result<Option<u64>, ApiError> {
        self.next()
    }
}
