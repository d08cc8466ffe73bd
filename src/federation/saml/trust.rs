//! What checking the SAML material needs, and nothing of the configuration: the SP's key pair,
//! certificates, IdP metadata as trusted. `config::validate` checks a file with these, and
//! `federation::saml` runs with them, so neither imports the other through this module.

use openssl::pkey::{PKey, Private};
use samael::crypto::{AllowedSignatureAlgorithm, CertificateDer, ReduceMode};
use samael::metadata::{EntityDescriptor, HTTP_REDIRECT_BINDING};
use samael::service_provider::ServiceProvider;

/// The SP's RSA key (signs requests and metadata, decrypts assertions) and its certificate.
pub struct SpKeys {
    pub key: PKey<Private>,
    pub cert: CertificateDer,
}

impl std::fmt::Debug for SpKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SpKeys(redacted)")
    }
}

impl SpKeys {
    pub fn from_pem(key_pem: &str, cert_pem: &str) -> Result<SpKeys, String> {
        let key = PKey::private_key_from_pem(key_pem.as_bytes())
            .map_err(|_| "the SP key is not a PEM private key".to_owned())?;
        if key.rsa().is_err() {
            return Err("the SP key must be an RSA key".into());
        }
        let x = openssl::x509::X509::from_pem(cert_pem.as_bytes())
            .map_err(|_| "the SP certificate is not a PEM certificate".to_owned())?;
        let matches = x.public_key().map(|p| p.public_eq(&key)).unwrap_or(false);
        if !matches {
            return Err("the SP certificate does not belong to the SP key".into());
        }
        let cert = x
            .to_der()
            .map(CertificateDer::from)
            .map_err(|_| "cannot encode the SP certificate".to_owned())?;
        Ok(SpKeys { key, cert })
    }
}

/// What the IdP's metadata says, checked: entity ID, SSO endpoint and at least one signing key.
#[derive(Debug, Clone)]
pub struct IdpMetadata {
    pub entity_id: String,
    pub sso_redirect: String,
    pub slo_redirect: Option<String>,
    /// Where LogoutResponses go (the Redirect SingleLogoutService's ResponseLocation, else its
    /// Location).
    pub slo_response_redirect: Option<String>,
    pub signing_certs: usize,
    pub certs: Vec<CertificateDer>,
    pub descriptor: EntityDescriptor,
}

/// Parses IdP metadata. An EntityDescriptor that also carries an SPSSODescriptor (as Access
/// Manager's does) is fine; one without a signing certificate is refused, because samael would
/// then skip verification altogether.
pub fn parse_idp_metadata(xml: &str) -> Result<IdpMetadata, String> {
    if xml.contains("<!DOCTYPE") || xml.contains("<!ENTITY") {
        return Err("the metadata contains a DTD, which is not accepted".into());
    }
    let descriptor: EntityDescriptor = xml
        .parse()
        .map_err(|e| format!("not a SAML EntityDescriptor: {e}"))?;
    let entity_id = descriptor
        .entity_id
        .clone()
        .filter(|s| !s.is_empty())
        .ok_or("the metadata has no entityID")?;
    let idps = descriptor
        .idp_sso_descriptors
        .as_deref()
        .unwrap_or_default();
    if idps.is_empty() {
        return Err("the metadata has no IDPSSODescriptor".into());
    }
    let probe = ServiceProvider {
        idp_metadata: descriptor.clone(),
        ..ServiceProvider::default()
    };
    let certs = probe
        .idp_signing_certs()
        .map_err(|e| format!("a signing certificate in the metadata does not parse: {e}"))?
        .unwrap_or_default();
    if certs.is_empty() {
        return Err(
            "the IdP metadata has no signing certificate (KeyDescriptor use=\"signing\"): responses could not be verified"
                .into(),
        );
    }
    let sso_redirect = probe
        .sso_binding_location(HTTP_REDIRECT_BINDING)
        .ok_or("the metadata has no SingleSignOnService with the HTTP-Redirect binding")?;
    let slo_response_redirect = idps
        .iter()
        .flat_map(|d| d.single_logout_services.iter())
        .find(|e| e.binding == HTTP_REDIRECT_BINDING)
        .map(|e| {
            e.response_location
                .clone()
                .unwrap_or_else(|| e.location.clone())
        });
    Ok(IdpMetadata {
        entity_id,
        sso_redirect,
        slo_redirect: probe.slo_binding_location(HTTP_REDIRECT_BINDING),
        slo_response_redirect,
        signing_certs: certs.len(),
        certs,
        descriptor,
    })
}

/// The signature algorithms accepted without `dangerous_allow_sha1`; signed metadata never accepts
/// more (`dangerous_allow_sha1` is for an IdP's responses, not for the document that names its keys).
pub(super) const STRONG_SIGNATURE_ALGORITHMS: [AllowedSignatureAlgorithm; 6] = [
    AllowedSignatureAlgorithm::RsaSha256,
    AllowedSignatureAlgorithm::RsaSha384,
    AllowedSignatureAlgorithm::RsaSha512,
    AllowedSignatureAlgorithm::EcdsaSha256,
    AllowedSignatureAlgorithm::EcdsaSha384,
    AllowedSignatureAlgorithm::EcdsaSha512,
];

/// IdP metadata as trusted: with `signing_cert_pem` (`metadata_signing_cert`), the document must
/// carry a signature by that key, as Shibboleth's signature metadata filter demands. libxmlsec
/// verifies every Signature (samael's reduce-to-signed path, with an explicit algorithm
/// allow-list; an unsigned document, another key, or a modified one fails), every node not
/// covered by a verified Reference is dropped, and only that reduced document is parsed: it must
/// itself be the signed EntityDescriptor. Without a certificate, the document is parsed as is.
pub fn trusted_idp_metadata(
    xml: &str,
    signing_cert_pem: Option<&str>,
) -> Result<IdpMetadata, String> {
    use samael::crypto::{Crypto, CryptoProvider};
    let Some(pem) = signing_cert_pem else {
        return parse_idp_metadata(xml);
    };
    if xml.contains("<!DOCTYPE") || xml.contains("<!ENTITY") {
        return Err("the metadata contains a DTD, which is not accepted".into());
    }
    let cert = cert_der_from_pem(pem).map_err(|e| format!("metadata_signing_cert: {e}"))?;
    let reduced = Crypto::reduce_xml_to_signed_with_allowed_algorithms(
        xml,
        &[cert],
        ReduceMode::ValidateAndMarkNoAncestors,
        Some(&STRONG_SIGNATURE_ALGORITHMS),
    )
    .map_err(|_| {
        "the metadata is not signed by metadata_signing_cert (unsigned, signed by another key or with a refused algorithm, or modified)".to_owned()
    })?;
    parse_idp_metadata(&reduced).map_err(|e| format!("the signed part of the metadata: {e}"))
}

/// Whether `url` names this machine (plain http is tolerated there, for tests).
pub fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

/// A certificate as DER, from PEM text.
pub fn cert_der_from_pem(pem: &str) -> Result<CertificateDer, String> {
    let x = openssl::x509::X509::from_pem(pem.as_bytes())
        .map_err(|_| "not a PEM certificate".to_owned())?;
    x.to_der()
        .map(CertificateDer::from)
        .map_err(|_| "cannot encode the certificate".to_owned())
}
