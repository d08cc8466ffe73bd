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

/// The binding of a BigCommerce customer to one person: `"{idp}:{subject}"`, the value of the
/// `storegate_subject` customer attribute. Launch records it when it creates or adopts a
/// customer, and provisioning plans with it; both spell it through this type, so the two can
/// never disagree about whose customer it is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BoundSubject(String);

impl BoundSubject {
    pub fn new(idp: &IdpId, subject: &str) -> Self {
        BoundSubject(format!("{idp}:{subject}"))
    }

    /// The binding of this person.
    pub fn of(identity: &Identity) -> Self {
        BoundSubject::new(&identity.idp, &identity.subject)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    /// How a customer that carries `recorded` stands towards this person.
    pub fn against<'a>(&self, recorded: Option<&'a str>) -> SubjectMatch<'a> {
        SubjectMatch::of(recorded, &self.0)
    }
}

impl fmt::Display for BoundSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The subject-conflict rule: email alone never hands over a customer. A customer found by a
/// person's email is theirs only if it carries their binding; one that carries none may be adopted
/// (launch also wants a verified email for that); one bound to someone else is a conflict an
/// administrator must resolve, never something the gateway overwrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectMatch<'a> {
    /// Bound to this person already.
    Ours,
    /// Bound to nobody yet: may be adopted.
    Unbound,
    /// Bound to another person (`recorded`): leave it alone.
    Conflict { recorded: &'a str },
}

impl<'a> SubjectMatch<'a> {
    /// `recorded`: the binding the customer carries, if any; `wanted`: the person's binding
    /// (a [`BoundSubject`] string).
    pub fn of(recorded: Option<&'a str>, wanted: &str) -> Self {
        match recorded {
            None => SubjectMatch::Unbound,
            Some(r) if r == wanted => SubjectMatch::Ours,
            Some(recorded) => SubjectMatch::Conflict { recorded },
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binding_is_idp_colon_subject() {
        let b = BoundSubject::new(&IdpId::new("opentext"), "u-1:x");
        assert_eq!(b.as_str(), "opentext:u-1:x");
        assert_eq!(b.to_string(), "opentext:u-1:x");
        assert_eq!(serde_json::to_string(&b).unwrap(), "\"opentext:u-1:x\"");
    }

    #[test]
    fn a_customer_is_ours_only_with_our_exact_binding() {
        let b = BoundSubject::new(&IdpId::new("opentext"), "u-1");
        assert_eq!(b.against(Some("opentext:u-1")), SubjectMatch::Ours);
        assert_eq!(b.against(None), SubjectMatch::Unbound);
        assert_eq!(
            b.against(Some("opentext:u-2")),
            SubjectMatch::Conflict {
                recorded: "opentext:u-2"
            }
        );
        // Same subject at another IdP is another person; case matters.
        assert!(matches!(
            b.against(Some("other:u-1")),
            SubjectMatch::Conflict { .. }
        ));
        assert!(matches!(
            b.against(Some("OpenText:u-1")),
            SubjectMatch::Conflict { .. }
        ));
        // (`Customer::attribute` already reads an empty value as none.)
        assert!(matches!(b.against(Some("")), SubjectMatch::Conflict { .. }));
    }
}
