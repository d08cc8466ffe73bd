//! Fixtures shared by the unit tests of this module: a tiny policy, an identity, an account.

use std::time::Duration;

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
