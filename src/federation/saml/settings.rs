//! What the SAML service provider and each SAML IdP are configured with, as plain settings:
//! `config` validates the file into these, `federation::saml` uses them, and nothing here
//! reaches back into `config` (re-exported there as `config::{SamlSp, SamlIdp,
//! AuthnContextRule}`).

use std::time::Duration;

use url::Url;

use crate::secret::Secret;

/// `[saml]`, validated: the key and certificate were read and parse.
#[derive(Debug, Clone)]
pub struct SamlSp {
    pub entity_id: String,
    /// `{public_url}/saml/acs`: the only Destination and Recipient accepted.
    pub acs_url: String,
    /// `{public_url}/saml/slo`.
    pub slo_url: String,
    /// `{public_url}/saml/metadata`.
    pub metadata_url: String,
    pub key_pem: Secret,
    pub cert_pem: String,
    pub sign_metadata: bool,
    pub sign_authn_requests: bool,
}

/// A SAML IdP, validated: its metadata was read and names at least one signing certificate.
#[derive(Debug, Clone)]
pub struct SamlIdp {
    /// The metadata document (from `metadata_file`); empty when only `metadata_url` is set (the
    /// gateway fetches it at start-up, refreshes it, and keeps the last good one).
    pub metadata_xml: String,
    pub metadata_url: Option<Url>,
    pub metadata_refresh: Duration,
    /// From `metadata_file`; empty until fetched when only `metadata_url` is set.
    pub entity_id: String,
    /// DANGER: RSA-SHA1 / SHA-1 digests accepted (`dangerous_allow_sha1`, old name `allow_sha1`).
    pub dangerous_allow_sha1: bool,
    /// DANGER: IdP-initiated responses accepted.
    pub allow_unsolicited: bool,
    pub clock_skew: Duration,
    pub nameid_format: Option<String>,
    /// How a requested authentication context (step-up) is compared.
    pub authn_context: AuthnContextRule,
    /// PEM of `metadata_signing_cert`: metadata from `metadata_url` must carry a valid signature
    /// by this certificate's key.
    pub metadata_signing_cert: Option<String>,
}

/// SAML core 3.3.2.2.1 `<RequestedAuthnContext Comparison>`, as configured for one IdP.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AuthnContextRule {
    /// The assertion's class must be the requested one.
    #[default]
    Exact,
    /// The assertion's class must be the requested one or stronger; `order` lists the classes
    /// from weakest to strongest.
    Minimum { order: Vec<String> },
}

impl AuthnContextRule {
    /// The `Comparison` attribute value.
    pub fn comparison(&self) -> &'static str {
        match self {
            AuthnContextRule::Exact => "exact",
            AuthnContextRule::Minimum { .. } => "minimum",
        }
    }

    /// The classes an authentication of class `got` meets besides `got` itself: with `minimum`,
    /// those listed before it in the order (weaker ones); with `exact`, none.
    pub fn implied_by(&self, got: &str) -> Vec<String> {
        match self {
            AuthnContextRule::Exact => Vec::new(),
            AuthnContextRule::Minimum { order } => match order.iter().position(|c| c == got) {
                Some(at) => order[..at].to_vec(),
                None => Vec::new(),
            },
        }
    }

    /// Whether an assertion of class `got` satisfies a request for `wanted`.
    pub fn satisfies(&self, wanted: &str, got: Option<&str>) -> bool {
        got.is_some_and(|g| g == wanted || self.implied_by(g).iter().any(|c| c == wanted))
    }
}
