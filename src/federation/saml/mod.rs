//! SAML 2.0 service provider: SP-initiated Web Browser SSO (HTTP-Redirect AuthnRequest, HTTP-POST
//! Response) verified with samael (libxmlsec1), producing [`VerifiedClaims`].
//!
//! # Why this verification path (docs/security.md, "SAML service provider")
//!
//! samael 0.0.22 offers two ways to check a signature:
//! - `CryptoProvider::verify_signed_xml` answers "some signature in this document is valid". It
//!   accepts wrapped documents (XSW): a valid signature over one element says nothing about the
//!   element a parser later reads. We never call it.
//! - `ServiceProvider::parse_xml_response_with_mode` with `ReduceMode::ValidateAndMarkNoAncestors`
//!   (its default) runs `reduce_xml_to_signed_with_allowed_algorithms`: libxmlsec verifies every
//!   Signature against the IdP's metadata certificates, then every node *not* covered by a
//!   verified Reference is deleted, and only that reduced document is parsed into the `Assertion`
//!   it returns. Whatever an attacker wraps around or beside the signed element is gone before
//!   parsing. This is the one we use, and the only place an [`Assertion`] comes from.
//!
//! samael skips verification entirely when the IdP has no signing certificate (it returns the
//! unreduced input); config validation and [`SamlProvider::new`] refuse such an IdP, and
//! [`SamlProvider::verify`] checks again before every call.
//!
//! samael checks the Response/Assertion against `Utc::now()`; the checks below repeat every time
//! window with the gateway's clock and the configured skew (and add what samael leaves optional:
//! Conditions and AudienceRestriction are required here, per the Web SSO profile).
//!
//! libxmlsec is blocking and samael's errors are not `Send`: verification runs in
//! `spawn_blocking` and maps every error to [`SamlError`] inside the closure.

pub mod prescan;
pub mod service;
pub mod settings;
pub mod slo;
pub mod sp;
pub mod trust;

pub use service::SamlState;
use settings::{AuthnContextRule, SamlIdp, SamlSp};
use std::sync::Arc;
pub use trust::{
    IdpMetadata, cert_der_from_pem, is_loopback, parse_idp_metadata, trusted_idp_metadata,
};

use base64::Engine;
use chrono::{DateTime, Utc};
use samael::crypto::ReduceMode;
use samael::schema::Assertion;
use samael::service_provider::{Error as SpError, ServiceProvider};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::VerifiedClaims;
use crate::clock::UnixTime;
use crate::identity::{AuthContext, IdpId};
use crate::redirect::LocalPath;

/// Why a SAML response was refused. Every variant has a stable reason code for the audit log.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SamlError {
    #[error("the SAMLResponse is not valid base64 or UTF-8")]
    Encoding,
    #[error("the response is malformed: {0}")]
    Malformed(String),
    #[error("the response carries a DTD or an entity reference (refused: XXE / entity expansion)")]
    Dtd,
    #[error("the response contains an XML comment (refused: comment injection)")]
    XmlComment,
    #[error("the response contains a CDATA section (refused)")]
    XmlCdata,
    #[error("the document is not UTF-8 ({0}); only UTF-8 is accepted")]
    NotUtf8(String),
    #[error("the signature is not one SAML allows: {0}")]
    SignatureShape(String),
    #[error("too many SAML messages are being verified right now; try again in a moment")]
    Busy,
    #[error("the response holds {0} assertions; exactly one is accepted (signature wrapping)")]
    MultipleAssertions(usize),
    #[error("signature or digest algorithm {0:?} is not allowed for this IdP")]
    WeakAlgorithm(String),
    #[error("the IdP answered with status {0}")]
    StatusNotSuccess(String),
    #[error("destination was {got:?}, expected {expected}")]
    Destination {
        got: Option<String>,
        expected: String,
    },
    #[error(
        "the signature did not verify with the IdP's metadata certificates (unsigned, signed by another key, modified, or wrapped)"
    )]
    Signature,
    #[error("issuer was {got:?}, expected {expected}")]
    Issuer {
        got: Option<String>,
        expected: String,
    },
    #[error("audience was {got:?}, expected {expected}")]
    Audience { got: Vec<String>, expected: String },
    #[error("recipient was {got:?}, expected {expected}")]
    Recipient {
        got: Option<String>,
        expected: String,
    },
    #[error("InResponseTo does not name the request this browser sent")]
    InResponseTo,
    #[error("the assertion is not valid yet (NotBefore {0}, with the allowed clock skew)")]
    NotYetValid(String),
    #[error("the assertion has expired (NotOnOrAfter {0}, with the allowed clock skew)")]
    Expired(String),
    #[error("the assertion lacks {0}, which the Web SSO profile requires")]
    Missing(&'static str),
    #[error("the encrypted assertion could not be decrypted with the SP key")]
    Decrypt,
    #[error("this assertion was already used (replay)")]
    Replay,
    #[error("unsolicited responses are not accepted from this IdP")]
    Unsolicited,
    #[error("the IdP's metadata is not loaded (yet): its metadata_url could not be fetched")]
    MetadataUnavailable,
    #[error(
        "the assertion's authentication context class was {}; this sign-in asked for {wanted} (comparison {comparison})",
        .got.as_deref().unwrap_or("(none)")
    )]
    AuthnContext {
        got: Option<String>,
        wanted: String,
        comparison: &'static str,
    },
    #[error("SAML verification failed: {0}")]
    Internal(String),
}

impl SamlError {
    /// Stable reason code for audit events.
    pub fn reason(&self) -> &'static str {
        match self {
            SamlError::Encoding => "saml_encoding",
            SamlError::Malformed(_) => "saml_malformed",
            SamlError::Dtd => "saml_dtd",
            SamlError::XmlComment => "saml_comment",
            SamlError::XmlCdata => "saml_cdata",
            SamlError::NotUtf8(_) => "saml_not_utf8",
            SamlError::SignatureShape(_) => "saml_signature_shape",
            SamlError::Busy => "saml_busy",
            SamlError::WeakAlgorithm(_) => "saml_weak_algorithm",
            SamlError::MultipleAssertions(_) => "saml_multiple_assertions",
            SamlError::StatusNotSuccess(_) => "saml_status",
            SamlError::Destination { .. } => "saml_destination",
            SamlError::Signature => "saml_signature",
            SamlError::Issuer { .. } => "saml_issuer",
            SamlError::Audience { .. } => "saml_audience",
            SamlError::Recipient { .. } => "saml_recipient",
            SamlError::InResponseTo => "saml_in_response_to",
            SamlError::NotYetValid(_) => "saml_not_yet_valid",
            SamlError::Expired(_) => "saml_expired",
            SamlError::Missing(_) => "saml_missing_element",
            SamlError::Decrypt => "saml_decrypt",
            SamlError::Replay => "saml_replay",
            SamlError::Unsolicited => "saml_unsolicited",
            SamlError::MetadataUnavailable => "saml_metadata_unavailable",
            SamlError::AuthnContext { .. } => "saml_authn_context",
            SamlError::Internal(_) => "saml_internal",
        }
    }
}

/// Maps samael's (non-`Send`) error into ours. Called inside the blocking closure.
fn map_sp_error(e: &SpError, expected_issuer: &str, acs: &str, audience: &str) -> SamlError {
    use SpError as E;
    match e {
        E::DestinationValidationError {
            response_destination,
            ..
        } => SamlError::Destination {
            got: response_destination.clone(),
            expected: acs.to_owned(),
        },
        E::AssertionExpired { time }
        | E::AssertionSubjectConfirmationExpired { time }
        | E::AssertionConditionExpired { time }
        | E::ResponseExpired { time } => SamlError::Expired(time.clone()),
        E::AssertionSubjectConfirmationExpiredBefore { time }
        | E::AssertionConditionExpiredBefore { time } => SamlError::NotYetValid(time.clone()),
        E::AssertionBearerSubjectConfirmationMissing | E::AssertionSubjectConfirmationMissing => {
            SamlError::Missing("a bearer SubjectConfirmation with NotOnOrAfter")
        }
        E::AssertionIssuerMismatch { issuer, .. } | E::ResponseIssuerMismatch { issuer, .. } => {
            SamlError::Issuer {
                got: issuer.clone(),
                expected: expected_issuer.to_owned(),
            }
        }
        E::AssertionConditionAudienceRestrictionFailed { .. } => SamlError::Audience {
            got: Vec::new(),
            expected: audience.to_owned(),
        },
        E::AssertionRecipientMismatch {
            assertion_recipient,
            ..
        } => SamlError::Recipient {
            got: assertion_recipient.clone(),
            expected: acs.to_owned(),
        },
        E::AssertionInResponseToInvalid { .. } | E::ResponseInResponseToInvalid { .. } => {
            SamlError::InResponseTo
        }
        E::ResponseBadStatusCode { code } => SamlError::StatusNotSuccess(code.clone()),
        E::FailedToValidateSignature => SamlError::Signature,
        E::MissingPrivateKeySP
        | E::MissingEncryptedKeyInfo
        | E::MissingEncryptedValueInfo
        | E::EncryptedAssertionKeyMethodUnsupported { .. }
        | E::EncryptedAssertionValueMethodUnsupported { .. }
        | E::EncryptedAssertionInvalid
        | E::FailedToDecryptAssertion => SamlError::Decrypt,
        E::FailedToParseSamlResponse(_)
        | E::FailedToParseSamlAssertion(_)
        | E::DeserializeResponseError => {
            SamlError::Malformed("the signed content is not a SAML Response or Assertion".into())
        }
        other => SamlError::Internal(other.to_string()),
    }
}

/// A sign-in in progress, kept server-side under the opaque key in the pending cookie.
#[derive(Clone, Serialize, Deserialize)]
pub struct PendingSaml {
    pub idp: String,
    /// The AuthnRequest ID: the only InResponseTo accepted.
    pub request_id: String,
    /// The opaque RelayState sent with the request (never the return path itself).
    pub relay_state: String,
    pub return_to: LocalPath,
    pub created_at: UnixTime,
    /// Step-up: the authentication context class asked for in the AuthnRequest.
    #[serde(default)]
    pub acr: Option<String>,
}

impl std::fmt::Debug for PendingSaml {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingSaml")
            .field("idp", &self.idp)
            .field("return_to", &self.return_to)
            .field("created_at", &self.created_at)
            .field("acr", &self.acr)
            .finish_non_exhaustive()
    }
}

/// The outcome of the full response check: only [`SamlProvider::verify`] builds one.
#[derive(Debug, Clone)]
pub struct VerifiedAssertion {
    pub claims: VerifiedClaims,
    /// The assertion's ID (for the replay cache).
    pub assertion_id: String,
    /// Until when the assertion could be presented (latest NotOnOrAfter plus skew): how long the
    /// replay cache must remember its ID.
    pub replay_until: UnixTime,
    pub name_id: String,
    pub name_id_format: Option<String>,
    pub session_index: Option<String>,
}

/// The IdP's current metadata and the samael SP built on it (replaced whole on refresh).
pub struct Loaded {
    pub meta: IdpMetadata,
    sp: ServiceProvider,
    /// When this metadata was installed (the console shows its age).
    at: std::time::Instant,
}

/// One SAML IdP as seen from this SP.
pub struct SamlProvider {
    idp: IdpId,
    cfg: SamlIdp,
    /// `None` until the metadata is known (a `metadata_url` without `metadata_file` before its
    /// first successful fetch): the IdP is then unavailable, never unverified.
    loaded: arc_swap::ArcSwapOption<Loaded>,
    /// samael's SP settings without the IdP metadata.
    template: ServiceProvider,
    /// Rate limit of metadata fetches forced by an unknown signing key (unix seconds).
    last_forced: std::sync::atomic::AtomicI64,
    /// Why the last metadata fetch or install failed (for `/readyz`), `None` after a success.
    last_metadata_error: std::sync::Mutex<Option<String>>,
    pub(crate) http: reqwest::Client,
    keys: Arc<sp::SpKeys>,
    entity_id: String,
    acs_url: String,
    slo_url: String,
    sign_requests: bool,
}

impl std::fmt::Debug for SamlProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SamlProvider")
            .field("idp", &self.idp)
            .field("entity_id", &self.entity_id())
            .finish_non_exhaustive()
    }
}

fn to_unix(t: DateTime<Utc>) -> UnixTime {
    t.timestamp()
}

/// A SAML time as the refusals name it, by the gateway's one formatter.
fn fmt_time(t: DateTime<Utc>) -> String {
    crate::clock::rfc3339(to_unix(t))
}

impl SamlProvider {
    pub fn new(
        idp: &IdpId,
        cfg: &SamlIdp,
        spc: &SamlSp,
        keys: Arc<sp::SpKeys>,
    ) -> Result<Self, String> {
        let skew =
            chrono::Duration::from_std(cfg.clock_skew).unwrap_or(chrono::Duration::seconds(60));
        // Explicit allow-list (samael allows every algorithm when this is None). samael has no
        // SHA-1 entry: with `allow_sha1` we pass None and rely on the prescan allow-list, which
        // then admits exactly RSA-SHA1/SHA-1 besides the strong ones.
        let allowed = if cfg.dangerous_allow_sha1 {
            None
        } else {
            Some(trust::STRONG_SIGNATURE_ALGORITHMS.to_vec())
        };
        let template = ServiceProvider {
            entity_id: Some(spc.entity_id.clone()),
            key: Some(keys.key.clone()),
            certificate: Some(keys.cert.clone()),
            metadata_url: Some(spc.metadata_url.clone()),
            acs_url: Some(spc.acs_url.clone()),
            slo_url: Some(spc.slo_url.clone()),
            authn_name_id_format: cfg.nameid_format.clone(),
            allow_idp_initiated: cfg.allow_unsolicited,
            max_issue_delay: chrono::Duration::seconds(90) + skew,
            max_clock_skew: skew,
            allowed_signature_algorithms: allowed,
            ..ServiceProvider::default()
        };
        let host = cfg
            .metadata_url
            .as_ref()
            .and_then(|u| u.host_str().map(str::to_owned));
        let http = metadata_client(host).map_err(|e| format!("[[idp]] {}: {e}", idp))?;
        let p = SamlProvider {
            idp: idp.clone(),
            cfg: cfg.clone(),
            loaded: arc_swap::ArcSwapOption::empty(),
            template,
            last_forced: std::sync::atomic::AtomicI64::new(i64::MIN / 2),
            last_metadata_error: std::sync::Mutex::new(None),
            http,
            keys,
            entity_id: spc.entity_id.clone(),
            acs_url: spc.acs_url.clone(),
            slo_url: spc.slo_url.clone(),
            sign_requests: spc.sign_authn_requests,
        };
        if !cfg.metadata_xml.is_empty() {
            p.install(&cfg.metadata_xml)
                .map_err(|e| format!("[[idp]] {}: {e}", idp))?;
        } else if cfg.metadata_url.is_none() {
            return Err(format!("[[idp]] {}: no metadata", idp));
        }
        Ok(p)
    }

    /// The current metadata, or [`SamlError::MetadataUnavailable`].
    pub fn loaded(&self) -> Result<Arc<Loaded>, SamlError> {
        self.loaded
            .load_full()
            .ok_or(SamlError::MetadataUnavailable)
    }

    /// Checks and installs a metadata document. The entity ID may not change; a document without
    /// a signing certificate is refused (the last good one stays). Returns whether the set of
    /// signing certificates changed.
    pub fn install(&self, xml: &str) -> Result<bool, String> {
        let meta = trusted_idp_metadata(xml, self.cfg.metadata_signing_cert.as_deref())?;
        let before = self.loaded.load_full();
        if let Some(b) = &before
            && b.meta.entity_id != meta.entity_id
        {
            return Err(format!(
                "the metadata names entity {:?}, not {:?}; kept the previous metadata",
                meta.entity_id, b.meta.entity_id
            ));
        }
        if !self.cfg.entity_id.is_empty() && self.cfg.entity_id != meta.entity_id {
            return Err(format!(
                "the metadata names entity {:?}, not {:?}",
                meta.entity_id, self.cfg.entity_id
            ));
        }
        let changed = before.as_ref().is_none_or(|b| b.meta.certs != meta.certs);
        let sp = ServiceProvider {
            idp_metadata: meta.descriptor.clone(),
            ..self.template.clone()
        };
        self.loaded.store(Some(Arc::new(Loaded {
            meta,
            sp,
            at: std::time::Instant::now(),
        })));
        Ok(changed)
    }

    /// Fetches `metadata_url` and installs it (see [`SamlProvider::install`]).
    pub async fn refresh(&self) -> Result<bool, String> {
        let Some(url) = &self.cfg.metadata_url else {
            return Ok(false);
        };
        let outcome = match fetch_metadata(&self.http, url).await {
            Ok(xml) => self.install(&xml),
            Err(e) => Err(e),
        };
        if let Ok(mut last) = self.last_metadata_error.lock() {
            *last = outcome.as_ref().err().cloned();
        }
        outcome
    }

    /// How long ago the metadata in use was installed, and its signing certificates (DER), for
    /// the console; `None` before it ever loaded.
    pub fn metadata_status(&self) -> Option<(std::time::Duration, Vec<Vec<u8>>)> {
        let l = self.loaded.load_full()?;
        Some((
            l.at.elapsed(),
            l.meta.certs.iter().map(|c| c.der_data().to_vec()).collect(),
        ))
    }

    /// For `/readyz`: an IdP whose metadata never loaded cannot sign anyone in.
    pub fn check_ready(&self) -> Result<(), String> {
        if self.loaded.load().is_some() {
            return Ok(());
        }
        let why = self
            .last_metadata_error
            .lock()
            .ok()
            .and_then(|l| l.clone())
            .unwrap_or_else(|| "not fetched yet".to_owned());
        let from = self
            .cfg
            .metadata_url
            .as_ref()
            .map(|u| u.to_string())
            .unwrap_or_default();
        Err(format!("SAML metadata never loaded from {from}: {why}"))
    }

    /// A signature did not verify: perhaps the IdP rolled over to a key its metadata (at
    /// `metadata_url`) names by now. Fetches at most once per [`FORCED_REFRESH_EVERY`] seconds;
    /// `true` when the signing certificates changed (the caller then verifies once more).
    pub async fn refresh_for_unknown_key(&self, now: UnixTime) -> bool {
        use std::sync::atomic::Ordering;
        if self.cfg.metadata_url.is_none() {
            return false;
        }
        let last = self.last_forced.load(Ordering::Relaxed);
        if now - last < FORCED_REFRESH_EVERY
            || self
                .last_forced
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return false;
        }
        match self.refresh().await {
            Ok(changed) => {
                tracing::info!(idp = %self.idp, changed, "IdP metadata fetched after an unknown signing key");
                changed
            }
            Err(e) => {
                tracing::warn!(idp = %self.idp, error = %e, "IdP metadata refresh failed; keeping the last good metadata");
                false
            }
        }
    }

    /// Background refresh of `metadata_url`: at once, then every `metadata_refresh` (every 10 s
    /// while no metadata was ever loaded). Stops when the provider is dropped.
    pub fn spawn_refresh(self: &Arc<Self>) {
        let Some(url) = self.cfg.metadata_url.clone() else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(idp = %self.idp, "no runtime: metadata_url is not refreshed");
            return;
        };
        let weak = Arc::downgrade(self);
        let every = self
            .cfg
            .metadata_refresh
            .max(std::time::Duration::from_secs(1));
        rt.spawn(async move {
            loop {
                let Some(p) = weak.upgrade() else { return };
                let wait = match p.refresh().await {
                    Ok(changed) => {
                        tracing::info!(idp = %p.idp, url = %url, changed, "IdP metadata fetched");
                        every
                    }
                    Err(e) => {
                        tracing::warn!(idp = %p.idp, url = %url, error = %e, "IdP metadata fetch failed; keeping the last good metadata");
                        if p.loaded.load().is_none() {
                            every.min(std::time::Duration::from_secs(10))
                        } else {
                            every
                        }
                    }
                };
                drop(p);
                tokio::time::sleep(wait).await;
            }
        });
    }

    pub fn idp_id(&self) -> &IdpId {
        &self.idp
    }
    /// The IdP's entity ID, once its metadata is known.
    pub fn entity_id(&self) -> Option<String> {
        self.loaded
            .load()
            .as_ref()
            .map(|l| l.meta.entity_id.clone())
    }
    pub fn allow_unsolicited(&self) -> bool {
        self.cfg.allow_unsolicited
    }

    /// Builds the AuthnRequest redirect. The request ID and the RelayState are fresh random
    /// values (samael's own IDs carry only 32 random bits); the return path stays server-side.
    ///
    /// Step-up: `acr` (a class some grant's `require_acr` names) goes out as
    /// `<RequestedAuthnContext Comparison="exact|minimum">` (SAML core 3.3.2.2.1), as OIDC sends
    /// `acr_values`; [`SamlProvider::check_authn_context`] then checks the assertion's class.
    pub fn begin(
        &self,
        return_to: LocalPath,
        acr: Option<&str>,
        now: UnixTime,
    ) -> Result<(String, PendingSaml), SamlError> {
        use samael::schema::{AuthnContextClassRef, AuthnContextComparison, RequestedAuthnContext};
        use samael::traits::ToXml;
        let l = self.loaded()?;
        let request_id = format!("_{}", random_hex(20));
        let relay_state = random_hex(16);
        let mut req =
            l.sp.make_authentication_request(&l.meta.sso_redirect)
                .map_err(|e| SamlError::Internal(format!("cannot build the AuthnRequest: {e}")))?;
        req.id = request_id.clone();
        if let Some(acr) = acr {
            req.requested_authn_context = Some(RequestedAuthnContext {
                authn_context_class_refs: Some(vec![AuthnContextClassRef {
                    value: Some(acr.to_owned()),
                }]),
                authn_context_decl_refs: None,
                comparison: Some(match self.cfg.authn_context {
                    AuthnContextRule::Exact => AuthnContextComparison::Exact,
                    AuthnContextRule::Minimum { .. } => AuthnContextComparison::Minimum,
                }),
            });
        }
        let xml = req
            .to_string()
            .map_err(|e| SamlError::Internal(format!("cannot serialize the AuthnRequest: {e}")))?;
        let url = sp::redirect_url(
            &l.meta.sso_redirect,
            "SAMLRequest",
            &xml,
            &relay_state,
            self.sign_requests.then_some(&self.keys.key),
        )?;
        Ok((
            url,
            PendingSaml {
                idp: self.idp.to_string(),
                request_id,
                relay_state,
                return_to,
                created_at: now,
                acr: acr.map(str::to_owned),
            },
        ))
    }

    /// Step-up, after the full response check: SAML core 3.3.2.2.1, "the resulting authentication
    /// context in the authentication statement MUST be the exact match of at least one of the
    /// authentication contexts specified" (`exact`), or "at least as strong as" one (`minimum`,
    /// strength from the IdP's configured `authn_context_order`). An IdP that answers with another
    /// class is refused here, whatever the grant; with `minimum` the classes the answered one
    /// meets are recorded, so the launch's `require_acr` check sees them.
    pub fn check_authn_context(
        &self,
        requested: Option<&str>,
        verified: &mut VerifiedAssertion,
    ) -> Result<(), SamlError> {
        let rule = &self.cfg.authn_context;
        let got = verified.claims.auth().acr.clone();
        if let Some(wanted) = requested
            && !rule.satisfies(wanted, got.as_deref())
        {
            return Err(SamlError::AuthnContext {
                got,
                wanted: wanted.to_owned(),
                comparison: rule.comparison(),
            });
        }
        if let Some(g) = got.as_deref() {
            verified.claims.set_acr_implies(rule.implied_by(g));
        }
        Ok(())
    }

    /// The full response check (see the module docs), off the async runtime.
    pub async fn verify(
        self: &Arc<Self>,
        saml_response: String,
        request_id: Option<String>,
        now: UnixTime,
    ) -> Result<VerifiedAssertion, SamlError> {
        let this = Arc::clone(self);
        run_verification(move || this.verify_blocking(&saml_response, request_id.as_deref(), now))
            .await
    }

    /// [`SamlProvider::verify`] without the runtime hop (also the `saml_response` fuzz entry).
    pub(crate) fn verify_blocking(
        &self,
        saml_response: &str,
        request_id: Option<&str>,
        now: UnixTime,
    ) -> Result<VerifiedAssertion, SamlError> {
        // Size before any decoding or parsing (base64 is 4/3 of the document, plus line breaks).
        if saml_response.len() > prescan::MAX_DOCUMENT_BYTES / 3 * 4 + 4096 {
            return Err(SamlError::Malformed(format!(
                "the response is larger than {} KiB",
                prescan::MAX_DOCUMENT_BYTES / 1024
            )));
        }
        let bytes = decode_base64_text(saml_response).map_err(|_| SamlError::Encoding)?;
        let xml = prescan::decode_document(bytes)?;

        // XML hygiene and algorithm allow-list before any tree is built.
        let pre = prescan::prescan(&xml, self.cfg.dangerous_allow_sha1)?;
        // SAML core 3.2.2: "Status [Required] A code representing the status of the request."
        // Anything but Success ends here, signed or not.
        if let Some(code) = pre.status_failure {
            return Err(SamlError::StatusNotSuccess(code));
        }
        // SAML bindings 3.5.5.2: "If the message is signed, the Destination XML attribute in the
        // root SAML element of the protocol message MUST contain the URL to which the sender has
        // instructed the user agent to deliver the message." We refuse any mismatch, signed or not.
        if let Some(d) = &pre.destination
            && d != &self.acs_url
        {
            return Err(SamlError::Destination {
                got: Some(d.clone()),
                expected: self.acs_url.clone(),
            });
        }
        if request_id.is_none() && !self.cfg.allow_unsolicited {
            return Err(SamlError::Unsolicited);
        }
        // Never call samael without keys: it would skip verification.
        let l = self.loaded()?;
        if l.meta.signing_certs == 0 {
            return Err(SamlError::Internal("no IdP signing certificate".into()));
        }
        let ids: Vec<&str> = request_id.into_iter().collect();
        let assertion = l
            .sp
            .parse_xml_response_with_mode(&xml, Some(&ids), ReduceMode::ValidateAndMarkNoAncestors)
            .map_err(|e| {
                match map_sp_error(&e, &l.meta.entity_id, &self.acs_url, &self.entity_id) {
                    // samael does not say which audience came; the admin needs it. Taken from
                    // the prescan (as sent), only for this message.
                    SamlError::Audience { got, expected } if got.is_empty() => {
                        SamlError::Audience {
                            got: pre.audiences.clone(),
                            expected,
                        }
                    }
                    other => other,
                }
            })?;
        self.check_assertion(&l.meta.entity_id, &assertion, request_id, now)
    }

    /// Our own checks on the verified assertion, with the gateway's clock (SAML profiles 4.1.4.2,
    /// "Web Browser SSO Profile: Response Usage"), then the claims.
    fn check_assertion(
        &self,
        idp_entity: &str,
        a: &Assertion,
        request_id: Option<&str>,
        now: UnixTime,
    ) -> Result<VerifiedAssertion, SamlError> {
        let skew = self.cfg.clock_skew.as_secs() as i64;
        // "The <Issuer> element ... MUST contain the unique identifier of the issuing identity provider"
        if a.issuer.value.as_deref() != Some(idp_entity) {
            return Err(SamlError::Issuer {
                got: a.issuer.value.clone(),
                expected: idp_entity.to_owned(),
            });
        }
        // "the assertion(s) containing a bearer subject confirmation MUST contain an
        // <AudienceRestriction> including the service provider's unique identifier as an <Audience>."
        let conditions = a
            .conditions
            .as_ref()
            .ok_or(SamlError::Missing("Conditions"))?;
        let audiences: Vec<String> = conditions
            .audience_restrictions
            .iter()
            .flatten()
            .flat_map(|r| r.audience.iter().cloned())
            .collect();
        if conditions
            .audience_restrictions
            .as_ref()
            .is_none_or(|r| r.is_empty())
        {
            return Err(SamlError::Missing("an AudienceRestriction"));
        }
        // Every AudienceRestriction must name us (SAML core 2.5.1.4: each one must be satisfied).
        let all_ok = conditions
            .audience_restrictions
            .iter()
            .flatten()
            .all(|r| r.audience.iter().any(|x| x == &self.entity_id));
        if !all_ok {
            return Err(SamlError::Audience {
                got: audiences,
                expected: self.entity_id.clone(),
            });
        }
        // SAML core 2.5.1.2: NotBefore / NotOnOrAfter of Conditions, with our skew.
        if let Some(nb) = conditions.not_before
            && now + skew < to_unix(nb)
        {
            return Err(SamlError::NotYetValid(fmt_time(nb)));
        }
        let mut replay_until = now + skew;
        if let Some(na) = conditions.not_on_or_after {
            if now - skew >= to_unix(na) {
                return Err(SamlError::Expired(fmt_time(na)));
            }
            replay_until = replay_until.max(to_unix(na) + skew);
        }
        // "at least one <SubjectConfirmation> element ... with a Method of bearer ... its
        // <SubjectConfirmationData> MUST contain a Recipient attribute containing the service
        // provider's assertion consumer service URL and a NotOnOrAfter attribute ... It MAY also
        // contain ... InResponseTo" (which must then be the request's ID).
        let subject = a.subject.as_ref().ok_or(SamlError::Missing("Subject"))?;
        let mut confirmed = None;
        let mut first_err = None;
        for sc in subject.subject_confirmations.iter().flatten() {
            if sc.method.as_deref() != Some("urn:oasis:names:tc:SAML:2.0:cm:bearer") {
                continue;
            }
            let Some(d) = sc.subject_confirmation_data.as_ref() else {
                continue;
            };
            let Some(na) = d.not_on_or_after else {
                first_err.get_or_insert(SamlError::Missing("SubjectConfirmationData NotOnOrAfter"));
                continue;
            };
            if now - skew >= to_unix(na) {
                first_err.get_or_insert(SamlError::Expired(fmt_time(na)));
                continue;
            }
            if let Some(nb) = d.not_before
                && now + skew < to_unix(nb)
            {
                first_err.get_or_insert(SamlError::NotYetValid(fmt_time(nb)));
                continue;
            }
            if d.recipient.as_deref() != Some(self.acs_url.as_str()) {
                first_err.get_or_insert(SamlError::Recipient {
                    got: d.recipient.clone(),
                    expected: self.acs_url.clone(),
                });
                continue;
            }
            match (request_id, d.in_response_to.as_deref()) {
                (Some(want), Some(got)) if want == got => {}
                (None, None) if self.cfg.allow_unsolicited => {}
                _ => {
                    first_err.get_or_insert(SamlError::InResponseTo);
                    continue;
                }
            }
            confirmed = Some(to_unix(na));
            break;
        }
        let Some(sc_until) = confirmed else {
            return Err(first_err.unwrap_or(SamlError::Missing("a bearer SubjectConfirmation")));
        };
        replay_until = replay_until.max(sc_until + skew);

        let name_id = subject
            .name_id
            .as_ref()
            .ok_or(SamlError::Missing("NameID"))?;
        let subject_value = name_id.value.trim().to_owned();
        if subject_value.is_empty() {
            return Err(SamlError::Missing("a NameID value"));
        }
        if a.id.is_empty() {
            return Err(SamlError::Missing("an assertion ID"));
        }

        let mut claims = Map::new();
        for st in a.attribute_statements.iter().flatten() {
            for attr in &st.attributes {
                let values: Vec<Value> = attr
                    .values
                    .iter()
                    .filter_map(|v| v.value.clone())
                    .map(Value::String)
                    .collect();
                for key in [attr.name.as_ref(), attr.friendly_name.as_ref()]
                    .into_iter()
                    .flatten()
                {
                    match claims.get_mut(key) {
                        Some(Value::Array(existing)) => existing.extend(values.iter().cloned()),
                        _ => {
                            claims.insert(key.clone(), Value::Array(values.clone()));
                        }
                    }
                }
            }
        }
        let statement = a.authn_statements.iter().flatten().next();
        let auth = AuthContext {
            auth_time: statement.and_then(|s| s.authn_instant).map(to_unix),
            acr: statement
                .and_then(|s| s.authn_context.as_ref())
                .and_then(|c| c.value.as_ref())
                .and_then(|r| r.value.clone()),
            amr: Vec::new(),
            acr_implies: Vec::new(),
        };
        Ok(VerifiedAssertion {
            claims: VerifiedClaims::new(self.idp.clone(), subject_value.clone(), claims, auth),
            assertion_id: a.id.clone(),
            replay_until,
            name_id: subject_value,
            name_id_format: name_id.format.clone(),
            session_index: statement.and_then(|s| s.session_index.clone()),
        })
    }
}

/// Standard base64 as SAML bindings carry it, line breaks and other ASCII whitespace ignored.
/// Filtered byte by byte: ASCII whitespace is never part of a UTF-8 sequence, and a
/// char-by-char `String` was ~2% of a verification (perf, issue 15).
pub(crate) fn decode_base64_text(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    let compact: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(compact)
}

/// How long a verification may wait for a free verifier before the sign-in is answered "busy".
const VERIFIER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Verifications admitted at once, across every IdP and message kind: one running per verifier
/// thread (one per core) and one waiting behind each, so that a verifier that finishes finds its
/// next message already queued instead of idling until a request task is scheduled to hand it
/// over. libxmlsec work is CPU-bound and cannot be cancelled once started, so a flood of posted
/// messages queues here (fairly, first come first served), not in the verifiers' queue.
fn verifier_permits() -> Arc<tokio::sync::Semaphore> {
    static PERMITS: std::sync::OnceLock<Arc<tokio::sync::Semaphore>> = std::sync::OnceLock::new();
    Arc::clone(PERMITS.get_or_init(|| {
        Arc::new(tokio::sync::Semaphore::new(
            VERIFICATIONS_PER_THREAD * verifier_threads(),
        ))
    }))
}

/// One verification running and one queued behind it, per verifier thread.
const VERIFICATIONS_PER_THREAD: usize = 2;

fn verifier_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

type VerifierJob = Box<dyn FnOnce() + Send>;

/// The verifiers: one long-lived thread per core, fed by a queue. Not tokio's blocking pool:
/// there, the next verification often starts on a new or another idle thread (the permit is
/// free before the previous thread is idle again), so verifications rotated over a dozen
/// threads, each with cold caches, its own allocator pages and its own copy of the IdP's key;
/// a verification under load cost ~1.7× what it costs on a warm thread (perf, issue 15).
fn verifier_queue() -> Option<&'static std::sync::mpsc::Sender<VerifierJob>> {
    static QUEUE: std::sync::OnceLock<Option<std::sync::mpsc::Sender<VerifierJob>>> =
        std::sync::OnceLock::new();
    QUEUE
        .get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel::<VerifierJob>();
            let rx = Arc::new(std::sync::Mutex::new(rx));
            let mut started = 0;
            for n in 0..verifier_threads() {
                let rx = Arc::clone(&rx);
                let spawned = std::thread::Builder::new()
                    .name(format!("saml-verifier-{n}"))
                    .spawn(move || run_verifier(&rx));
                match spawned {
                    Ok(_) => started += 1,
                    Err(e) => tracing::error!(error = %e, "cannot start a SAML verifier thread"),
                }
            }
            (started > 0).then_some(tx)
        })
        .as_ref()
}

fn run_verifier(jobs: &std::sync::Mutex<std::sync::mpsc::Receiver<VerifierJob>>) {
    loop {
        // The lock is held only while waiting for the next job, never while running one.
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        let Ok(job) = job else { return };
        // A panicking verification answers its own request with an error (its result sender is
        // dropped); the thread goes on serving the others.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
    }
}

/// Runs one verification on a verifier thread under [`verifier_permits`]. A request that went
/// away while it waited (the client disconnected, a timeout fired) never starts its verification,
/// so no verification outlives its request by more than the one in progress.
pub(crate) async fn run_verification<T, F>(verify: F) -> Result<T, SamlError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, SamlError> + Send + 'static,
{
    let permit = tokio::time::timeout(VERIFIER_WAIT, verifier_permits().acquire_owned())
        .await
        .map_err(|_| SamlError::Busy)?
        .map_err(|_| SamlError::Internal("the verifier pool is closed".into()))?;
    let queue = verifier_queue()
        .ok_or_else(|| SamlError::Internal("no SAML verifier thread could be started".into()))?;
    let waiting = Arc::new(());
    let requester = Arc::downgrade(&waiting);
    let (answer, outcome) = tokio::sync::oneshot::channel();
    let job: VerifierJob = Box::new(move || {
        let _permit = permit;
        let result = if requester.upgrade().is_none() {
            Err(SamlError::Busy)
        } else {
            verify()
        };
        let _ = answer.send(result);
    });
    queue
        .send(job)
        .map_err(|_| SamlError::Internal("the verifier pool is closed".into()))?;
    let outcome = outcome
        .await
        .map_err(|_| SamlError::Internal("the verifier stopped unexpectedly".into()))?;
    drop(waiting);
    outcome
}

/// Seconds between two metadata fetches forced by unknown signing keys.
pub const FORCED_REFRESH_EVERY: i64 = 60;
/// Largest metadata document accepted from `metadata_url`.
const MAX_METADATA_BYTES: usize = 1024 * 1024;

/// What the metadata client does with a redirect to `next` after `previous` (the original URL
/// first): docs/security.md: metadata is "never downgraded on redirect", so nothing once https
/// may continue over http; otherwise it follows at most 5 redirects, within the metadata host.
#[derive(Debug, PartialEq, Eq)]
enum MetadataRedirect {
    Follow,
    /// Another host, or too many hops: the 3xx answer itself is the (refused) result.
    Stop,
    Refuse(String),
}

fn metadata_redirect(
    next: &url::Url,
    previous: &[url::Url],
    host: Option<&str>,
) -> MetadataRedirect {
    if next.scheme() != "https" && previous.iter().any(|u| u.scheme() == "https") {
        return MetadataRedirect::Refuse(format!(
            "refused the redirect from https to {next}: metadata is never fetched over a downgraded connection"
        ));
    }
    if next.host_str() == host && previous.len() < 5 {
        MetadataRedirect::Follow
    } else {
        MetadataRedirect::Stop
    }
}

/// The client for `metadata_url`: timeouts, and redirects per [`metadata_redirect`].
fn metadata_client(host: Option<String>) -> Result<reqwest::Client, String> {
    metadata_client_builder(host)
        .build()
        .map_err(|e| format!("cannot build the metadata client: {e}"))
}

fn metadata_client_builder(host: Option<String>) -> reqwest::ClientBuilder {
    let policy = reqwest::redirect::Policy::custom(move |attempt| {
        match metadata_redirect(attempt.url(), attempt.previous(), host.as_deref()) {
            MetadataRedirect::Follow => attempt.follow(),
            MetadataRedirect::Stop => attempt.stop(),
            MetadataRedirect::Refuse(why) => attempt.error(why),
        }
    });
    reqwest::Client::builder()
        .redirect(policy)
        .timeout(std::time::Duration::from_secs(10))
        .connect_timeout(std::time::Duration::from_secs(5))
}

/// GETs the metadata document (2xx, at most [`MAX_METADATA_BYTES`]).
pub async fn fetch_metadata(http: &reqwest::Client, url: &url::Url) -> Result<String, String> {
    let mut resp = http.get(url.clone()).send().await.map_err(|e| {
        // reqwest's own message leaves out the cause (e.g. a refused redirect): add the chain.
        let mut text = format!("cannot fetch {url}: {e}");
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            text.push_str(&format!(": {c}"));
            cause = c.source();
        }
        text
    })?;
    if !resp.status().is_success() {
        return Err(format!("{url} answered {}", resp.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("cannot read {url}: {e}"))?
    {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_METADATA_BYTES {
            return Err(format!("{url}: the metadata is larger than 1 MiB"));
        }
    }
    String::from_utf8(body).map_err(|_| format!("{url}: the metadata is not UTF-8"))
}

/// `n` random bytes as hex.
pub fn random_hex(n: usize) -> String {
    use rand::RngCore;
    let mut b = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> url::Url {
        url::Url::parse(s).expect("url")
    }

    #[tokio::test]
    async fn verifications_run_on_the_same_few_long_lived_threads() {
        let mut names = std::collections::HashSet::new();
        for _ in 0..50 {
            let name =
                run_verification(|| Ok(std::thread::current().name().unwrap_or("").to_owned()))
                    .await
                    .expect("verification ran");
            assert!(name.starts_with("saml-verifier-"), "ran on {name:?}");
            names.insert(name);
        }
        assert!(names.len() <= verifier_threads(), "{names:?}");
    }

    #[tokio::test]
    async fn a_panicking_verification_is_an_error_and_the_verifiers_go_on() {
        for _ in 0..(verifier_threads() + 1) {
            let outcome = run_verification::<(), _>(|| panic!("a bug in a verification")).await;
            assert!(
                matches!(&outcome, Err(SamlError::Internal(m)) if m == "the verifier stopped unexpectedly"),
                "{outcome:?}"
            );
        }
        let after = run_verification(|| Ok(7)).await;
        assert!(matches!(after, Ok(7)), "{after:?}");
    }

    #[tokio::test]
    async fn a_verification_whose_requester_left_never_starts() {
        let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Hold every permit, so the next request waits in the queue; then drop it.
        let mut held = Vec::new();
        for _ in 0..VERIFICATIONS_PER_THREAD * verifier_threads() {
            held.push(verifier_permits().acquire_owned().await.expect("a permit"));
        }
        let flag = Arc::clone(&started);
        let waiting = tokio::spawn(run_verification(move || {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        waiting.abort();
        let _ = waiting.await;
        drop(held);
        // The next verification runs after the abandoned one would have.
        run_verification(|| Ok(())).await.expect("verification ran");
        assert!(!started.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[test]
    fn a_metadata_redirect_never_downgrades_from_https_to_http() {
        let start = [u("https://iam.corp.example/nidp/saml2/metadata")];
        let down = metadata_redirect(
            &u("http://iam.corp.example/nidp/saml2/metadata"),
            &start,
            Some("iam.corp.example"),
        );
        assert_eq!(
            down,
            MetadataRedirect::Refuse(
                "refused the redirect from https to http://iam.corp.example/nidp/saml2/metadata: metadata is never fetched over a downgraded connection".into()
            )
        );
        // Once https, always: also after an https hop.
        let two = [start[0].clone(), u("https://iam.corp.example/md2")];
        assert!(matches!(
            metadata_redirect(
                &u("http://iam.corp.example/md3"),
                &two,
                Some("iam.corp.example")
            ),
            MetadataRedirect::Refuse(_)
        ));
        assert_eq!(
            metadata_redirect(
                &u("https://iam.corp.example/md2"),
                &start,
                Some("iam.corp.example")
            ),
            MetadataRedirect::Follow
        );
    }

    /// The real client against an https server (`openssl s_server`, a self-signed certificate
    /// the test client accepts) that redirects to http: the fetch fails with the reason.
    #[tokio::test]
    async fn the_metadata_client_refuses_an_https_to_http_redirect_end_to_end() {
        let dir = std::env::temp_dir().join(format!(
            "storegate-md-redirect-{}-{}",
            std::process::id(),
            random_hex(4)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (key, cert) = sp::generate_key_and_cert("127.0.0.1").expect("key");
        std::fs::write(dir.join("key.pem"), key).expect("key file");
        std::fs::write(dir.join("cert.pem"), cert).expect("cert file");
        // `s_server -HTTP` sends the file named by the path as the whole HTTP response.
        std::fs::write(
            dir.join("md"),
            "HTTP/1.0 302 Found\r\nLocation: http://127.0.0.1:9/md\r\nContent-Length: 0\r\n\r\n",
        )
        .expect("response file");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut server = std::process::Command::new("openssl")
            .args([
                "s_server", "-quiet", "-HTTP", "-cert", "cert.pem", "-key", "key.pem",
            ])
            .args(["-accept", &format!("127.0.0.1:{port}")])
            .current_dir(&dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("run openssl s_server (make deps installs openssl)");
        let mut up = false;
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                up = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let client = metadata_client_builder(Some("127.0.0.1".into()))
            .danger_accept_invalid_certs(true)
            .build()
            .expect("client");
        let got = if up {
            fetch_metadata(&client, &u(&format!("https://127.0.0.1:{port}/md"))).await
        } else {
            Err("openssl s_server did not start within 5 s".into())
        };
        let _ = server.kill();
        let _ = server.wait();
        let _ = std::fs::remove_dir_all(&dir);
        let err = got.expect_err("the downgrade must fail");
        assert!(
            err.contains("refused the redirect from https to http://127.0.0.1:9/md: metadata is never fetched over a downgraded connection"),
            "{err}"
        );
    }

    #[test]
    fn a_metadata_redirect_stays_on_the_metadata_host_and_is_bounded() {
        let start = [u("https://iam.corp.example/md")];
        assert_eq!(
            metadata_redirect(
                &u("https://evil.example/md"),
                &start,
                Some("iam.corp.example")
            ),
            MetadataRedirect::Stop
        );
        let five: Vec<url::Url> = (0..5)
            .map(|i| u(&format!("https://iam.corp.example/{i}")))
            .collect();
        assert_eq!(
            metadata_redirect(
                &u("https://iam.corp.example/6"),
                &five,
                Some("iam.corp.example")
            ),
            MetadataRedirect::Stop
        );
        // Loopback http (tests, with allow_insecure_http) may redirect within http.
        assert_eq!(
            metadata_redirect(
                &u("http://127.0.0.1:9/b"),
                &[u("http://127.0.0.1:9/a")],
                Some("127.0.0.1")
            ),
            MetadataRedirect::Follow
        );
    }

    #[test]
    fn loopback_is_only_this_machine() {
        for yes in [
            "http://127.0.0.1:8/x",
            "http://[::1]/x",
            "http://localhost/x",
            "http://127.1.2.3/",
        ] {
            assert!(is_loopback(&u(yes)), "{yes}");
        }
        for no in [
            "http://10.0.0.1/x",
            "http://localhost.evil.example/x",
            "http://iam.corp.example/",
        ] {
            assert!(!is_loopback(&u(no)), "{no}");
        }
    }
}
