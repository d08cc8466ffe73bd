//! This gateway's side of SAML: its key and certificate, its metadata, the HTTP-Redirect binding,
//! and `storegate certs`.

use std::io::Write;

use base64::Engine;
use openssl::pkey::{PKey, Private};
use samael::crypto::{Crypto, CryptoProvider};
use samael::metadata::{
    EncryptionMethod, EntityDescriptor, HTTP_POST_BINDING, HTTP_REDIRECT_BINDING, KeyDescriptor,
};
use samael::service_provider::ServiceProvider;
use samael::signature::{DigestAlgorithm, Signature};

use super::SamlError;
use super::settings::SamlSp;

pub use super::trust::SpKeys;

/// The NameID formats the SP understands (all are used as an opaque subject).
pub const NAMEID_FORMATS: &[&str] = &[
    "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent",
    "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress",
    "urn:oasis:names:tc:SAML:2.0:nameid-format:transient",
    "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified",
];

/// The SP metadata document (signed with the SP key when `sign_metadata`).
pub fn metadata_xml(spc: &SamlSp, keys: &SpKeys) -> Result<String, String> {
    use samael::traits::ToXml;
    let sp = ServiceProvider {
        entity_id: Some(spc.entity_id.clone()),
        certificate: Some(keys.cert.clone()),
        metadata_url: Some(spc.metadata_url.clone()),
        acs_url: Some(spc.acs_url.clone()),
        slo_url: Some(spc.slo_url.clone()),
        metadata_valid_duration: Some(chrono::Duration::days(7)),
        ..ServiceProvider::default()
    };
    let mut ed: EntityDescriptor = sp.metadata().map_err(|e| e.to_string())?;
    let cert_b64 = base64::engine::general_purpose::STANDARD.encode(keys.cert.der_data());
    let key_info = samael::key_info::KeyInfo {
        id: None,
        x509_data: Some(samael::key_info::X509Data {
            certificates: vec![cert_b64],
        }),
    };
    let enc = |alg: &str| EncryptionMethod {
        algorithm: alg.to_owned(),
    };
    for d in ed.sp_sso_descriptors.iter_mut().flatten() {
        d.key_descriptors = Some(vec![
            KeyDescriptor {
                key_use: Some("signing".into()),
                key_info: key_info.clone(),
                encryption_methods: None,
            },
            KeyDescriptor {
                key_use: Some("encryption".into()),
                key_info: key_info.clone(),
                encryption_methods: Some(vec![
                    enc("http://www.w3.org/2009/xmlenc11#aes128-gcm"),
                    enc("http://www.w3.org/2001/04/xmlenc#aes128-cbc"),
                    enc("http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p"),
                ]),
            },
        ]);
        d.authn_requests_signed = Some(spc.sign_authn_requests);
        d.want_assertions_signed = Some(true);
        d.name_id_formats = Some(NAMEID_FORMATS.iter().map(|s| (*s).to_owned()).collect());
        // /saml/slo takes LogoutRequests and LogoutResponses over both bindings.
        d.single_logout_services = Some(
            [HTTP_REDIRECT_BINDING, HTTP_POST_BINDING]
                .iter()
                .map(|b| samael::metadata::Endpoint {
                    binding: (*b).to_owned(),
                    location: spc.slo_url.clone(),
                    response_location: None,
                })
                .collect(),
        );
    }
    if !spc.sign_metadata {
        return ed.to_string().map_err(|e| e.to_string());
    }
    // samael's EntityDescriptor serializer writes neither an ID nor a Signature: add both to the
    // root start tag (the Signature must be its first child), then let xmlsec fill it in.
    let id = format!("_{}", super::random_hex(16));
    let mut sig = Signature::template(&id, &keys.cert);
    for r in &mut sig.signed_info.reference {
        r.digest_method.algorithm = DigestAlgorithm::Sha256;
    }
    let sig_xml = sig.to_string().map_err(|e| e.to_string())?;
    let sig_xml = sig_xml
        .strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>")
        .unwrap_or(&sig_xml);
    let plain = ed.to_string().map_err(|e| e.to_string())?;
    let start = plain
        .find("<md:EntityDescriptor")
        .ok_or("no EntityDescriptor in the metadata")?;
    let end = plain[start..]
        .find('>')
        .map(|i| start + i)
        .ok_or("unterminated EntityDescriptor")?;
    let (head, self_closing) = match plain[..end].strip_suffix('/') {
        Some(h) => (h, true),
        None => (&plain[..end], false),
    };
    if self_closing {
        return Err("empty EntityDescriptor".into());
    }
    let unsigned = format!("{head} ID=\"{id}\">{sig_xml}{}", &plain[end + 1..]);
    let der = keys
        .key
        .private_key_to_der()
        .map_err(|_| "cannot encode the SP key".to_owned())?;
    Crypto::sign_xml(unsigned, &der).map_err(|e| format!("cannot sign the metadata: {e:?}"))
}

/// SAML bindings 3.4.4.1: DEFLATE (raw), base64, URL-encode; with a key, `SigAlg` and
/// `Signature` over `SAMLRequest=..&RelayState=..&SigAlg=..` (RSA-SHA256).
pub fn redirect_url(
    endpoint: &str,
    param: &str,
    xml: &str,
    relay_state: &str,
    key: Option<&PKey<Private>>,
) -> Result<String, SamlError> {
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(xml.as_bytes())
        .map_err(|e| SamlError::Internal(e.to_string()))?;
    let deflated = enc
        .finish()
        .map_err(|e| SamlError::Internal(e.to_string()))?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(deflated);
    let mut url = url::Url::parse(endpoint)
        .map_err(|e| SamlError::Internal(format!("bad IdP endpoint: {e}")))?;
    url.query_pairs_mut().append_pair(param, &b64);
    if !relay_state.is_empty() {
        url.query_pairs_mut().append_pair("RelayState", relay_state);
    }
    let url = match key {
        Some(k) => samael::crypto::sign_url(url, k)
            .map_err(|e| SamlError::Internal(format!("cannot sign the request: {e}")))?,
        None => url,
    };
    Ok(url.to_string())
}

/// `storegate certs`: a fresh RSA-3072 key and a self-signed certificate (10 years), as PEM.
pub fn generate_key_and_cert(common_name: &str) -> Result<(String, String), String> {
    generate_rsa_key_and_cert(common_name, 3072)
}

/// A fresh RSA key of `bits` bits and a self-signed certificate (10 years), as PEM (PKCS#8 key).
/// Benches and the instruction-count example use 2048 bits, the size issue 15's ratio assumes.
pub fn generate_rsa_key_and_cert(common_name: &str, bits: u32) -> Result<(String, String), String> {
    use openssl::asn1::Asn1Time;
    use openssl::bn::{BigNum, MsbOption};
    use openssl::hash::MessageDigest;
    use openssl::rsa::Rsa;
    use openssl::x509::{X509Builder, X509NameBuilder};
    let e = |e: openssl::error::ErrorStack| e.to_string();
    let rsa = Rsa::generate(bits).map_err(e)?;
    let key = PKey::from_rsa(rsa).map_err(e)?;
    let mut name = X509NameBuilder::new().map_err(e)?;
    name.append_entry_by_text("CN", common_name).map_err(e)?;
    let name = name.build();
    let mut b = X509Builder::new().map_err(e)?;
    b.set_version(2).map_err(e)?;
    let mut serial = BigNum::new().map_err(e)?;
    serial.rand(127, MsbOption::MAYBE_ZERO, false).map_err(e)?;
    let serial = serial.to_asn1_integer().map_err(e)?;
    b.set_serial_number(&serial).map_err(e)?;
    b.set_subject_name(&name).map_err(e)?;
    b.set_issuer_name(&name).map_err(e)?;
    b.set_pubkey(&key).map_err(e)?;
    let not_before = Asn1Time::days_from_now(0).map_err(e)?;
    let not_after = Asn1Time::days_from_now(3650).map_err(e)?;
    b.set_not_before(&not_before).map_err(e)?;
    b.set_not_after(&not_after).map_err(e)?;
    b.sign(&key, MessageDigest::sha256()).map_err(e)?;
    let cert = b.build();
    let key_pem =
        String::from_utf8(key.private_key_to_pem_pkcs8().map_err(e)?).map_err(|x| x.to_string())?;
    let cert_pem = String::from_utf8(cert.to_pem().map_err(e)?).map_err(|x| x.to_string())?;
    Ok((key_pem, cert_pem))
}
