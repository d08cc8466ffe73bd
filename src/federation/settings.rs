//! What each identity provider is configured with, as plain settings: `config` validates the
//! file into these (and re-exports them as `config::{IdpConfig, OidcIdp, Protocol, ClaimMapping,
//! TokenAuthMethod}`), `federation` uses them, and nothing here reaches back into `config`.

use std::time::Duration;

use url::Url;

use super::saml::settings::SamlIdp;
use crate::identity::IdpId;
use crate::secret::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenAuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
}

#[derive(Debug, Clone)]
pub struct OidcIdp {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<Secret>,
    pub auth_method: TokenAuthMethod,
    pub scopes: Vec<String>,
    pub id_token_algs: Vec<String>,
    pub clock_skew: Duration,
    pub userinfo: bool,
    /// `end_session_url`: RP-initiated logout goes here when discovery advertises no
    /// `end_session_endpoint` (Access Manager: `{issuer}/../v1/nam/end_session`).
    pub end_session_url: Option<Url>,
}

#[derive(Debug, Clone)]
pub enum Protocol {
    Oidc(OidcIdp),
    Saml(SamlIdp),
}

/// Which claim (or attribute) carries which identity fact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimMapping {
    pub email: String,
    pub given_name: String,
    pub family_name: String,
    pub name: String,
    pub groups: String,
    pub roles: String,
    pub group_dn_to_name: bool,
    /// The claim in which the IdP says it verified the email (OIDC Core 5.1 `email_verified`).
    /// `None` for SAML, which has no such statement: there only `trust_email` vouches.
    pub email_verified: Option<String>,
    /// `[[idp]] trust_email`: the IdP's directory owns the addresses it releases, so every email
    /// from it counts as verified.
    pub trust_email: bool,
}

impl Default for ClaimMapping {
    fn default() -> Self {
        ClaimMapping {
            email: "email".into(),
            given_name: "given_name".into(),
            family_name: "family_name".into(),
            name: "name".into(),
            groups: "groups".into(),
            roles: "roles".into(),
            group_dn_to_name: false,
            email_verified: Some("email_verified".into()),
            trust_email: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct IdpConfig {
    pub id: IdpId,
    pub display_name: String,
    pub protocol: Protocol,
    pub claims: ClaimMapping,
}

impl IdpConfig {
    /// The redirect URI IT registers in Access Manager for this IdP.
    /// OIDC Back-Channel Logout 1.0: the `backchannel_logout_uri` to register with the IdP.
    pub fn backchannel_logout_uri(&self, public_url: &Url) -> String {
        format!(
            "{}/oidc/{}/backchannel-logout",
            public_url.as_str().trim_end_matches('/'),
            self.id
        )
    }

    pub fn redirect_uri(&self, public_url: &Url) -> String {
        format!(
            "{}/oidc/{}/callback",
            public_url.as_str().trim_end_matches('/'),
            self.id
        )
    }
}
