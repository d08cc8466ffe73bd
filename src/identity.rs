//! The one normalized identity, whatever the protocol.
//!
//! An [`Identity`] is built by `federation` from verified input only (an ID token that passed the
//! verifier, later a SAML assertion that passed the full response check). Everything downstream —
//! policy, portal, launch, audit — reads this type and never a raw claim.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::clock::UnixTime;

macro_rules! id_type {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(s: impl Into<String>) -> Self {
                $name(s.into())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// The configured id of an identity provider (`[[idp]] id`).
    IdpId
);
id_type!(
    /// The configured id of a storefront (`[[store]] id`).
    StoreId
);

/// How the user authenticated: the facts step-up and audits need.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthContext {
    /// When the IdP says the user authenticated (`auth_time`, or AuthnInstant).
    pub auth_time: Option<UnixTime>,
    /// The authentication context class (`acr`), an OpenText authentication contract URI.
    pub acr: Option<String>,
    /// Authentication methods (`amr`).
    pub amr: Vec<String>,
    /// Weaker classes `acr` also meets, by the IdP's configured order (SAML step-up with
    /// `authn_context_comparison = "minimum"`); empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acr_implies: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The IdP's stable subject (`sub` or NameID).
    pub subject: String,
    pub idp: IdpId,
    pub email: Option<String>,
    /// Whether the IdP vouches that `email` belongs to this person: OIDC `email_verified: true`,
    /// or an IdP configured with `trust_email` (its directory owns the addresses). Only then may
    /// the email adopt an existing BigCommerce customer or match a rule's `email_domains`.
    /// Sessions from before this field read as false (fail closed: sign in again).
    #[serde(default)]
    pub email_verified: bool,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    /// Display name (`name`), or given + family when the IdP sends no display name.
    pub name: Option<String>,
    /// Group names (DNs reduced to their first RDN value when configured).
    pub groups: Vec<String>,
    pub roles: Vec<String>,
    /// Every released claim or attribute, flattened to strings, for rules over arbitrary facts.
    pub attributes: BTreeMap<String, Vec<String>>,
    pub auth: AuthContext,
    /// When the gateway accepted the sign-in.
    pub signed_in_at: UnixTime,
}

impl Identity {
    /// The name to show: display name, else email, else subject.
    pub fn display_name(&self) -> &str {
        self.name
            .as_deref()
            .or(self.email.as_deref())
            .unwrap_or(&self.subject)
    }

    /// The email domain, lower-cased, for rules that match on it.
    pub fn email_domain(&self) -> Option<String> {
        self.email
            .as_deref()
            .and_then(|e| e.rsplit_once('@'))
            .map(|(_, d)| d.to_ascii_lowercase())
    }
}
