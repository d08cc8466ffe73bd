//! Federation: turning what an identity provider says into a verified [`Identity`].
//!
//! Protocol adapters (`oidc`, later `saml`) verify what they receive and produce [`VerifiedClaims`],
//! which only this module tree can construct; `claims` maps them into the one normalized identity.

pub mod claims;
pub mod logout_token;
pub mod oidc;
pub mod saml;
pub mod settings;

use serde_json::{Map, Value};

use crate::identity::{AuthContext, IdpId};

/// Claims or attributes that passed the protocol's full verification. Only federation adapters can
/// build one, so an [`crate::identity::Identity`] cannot come from unverified input.
#[derive(Debug, Clone)]
pub struct VerifiedClaims {
    idp: IdpId,
    subject: String,
    claims: Map<String, Value>,
    auth: AuthContext,
    /// OIDC: the ID token as received, kept for `id_token_hint` at RP-initiated logout.
    id_token: Option<crate::secret::Secret>,
}

impl VerifiedClaims {
    pub(in crate::federation) fn new(
        idp: IdpId,
        subject: String,
        claims: Map<String, Value>,
        auth: AuthContext,
    ) -> Self {
        VerifiedClaims {
            idp,
            subject,
            claims,
            auth,
            id_token: None,
        }
    }

    /// The verified ID token these claims came from (OIDC).
    pub(in crate::federation) fn with_id_token(mut self, raw: String) -> Self {
        self.id_token = Some(crate::secret::Secret::new(raw));
        self
    }

    /// The ID token these claims came from (OIDC), for `id_token_hint` at logout.
    pub fn id_token(&self) -> Option<&crate::secret::Secret> {
        self.id_token.as_ref()
    }

    pub fn idp(&self) -> &IdpId {
        &self.idp
    }
    pub fn subject(&self) -> &str {
        &self.subject
    }
    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }
    pub fn auth(&self) -> &AuthContext {
        &self.auth
    }

    /// The classes the verified acr meets besides itself (SAML `minimum`, from configuration).
    pub(in crate::federation) fn set_acr_implies(&mut self, classes: Vec<String>) {
        self.auth.acr_implies = classes;
    }

    /// For tests of code downstream of federation (policy, web): claims that never went through a
    /// protocol check. The name says what it is.
    #[doc(hidden)]
    pub fn dangerous_unverified_for_tests(
        idp: IdpId,
        subject: String,
        claims: Map<String, Value>,
    ) -> Self {
        VerifiedClaims {
            idp,
            subject,
            claims,
            auth: AuthContext::default(),
            id_token: None,
        }
    }
}
