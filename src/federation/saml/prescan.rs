//! A strict lexical pass over a SAML message before any XML library builds a tree from it.
//!
//! It refuses what no legitimate IdP sends and what attacks need (SECURITY.md, "XML"):
//! - a DOCTYPE: no DTD, so no external entities (XXE) and no entity expansion ("billion laughs");
//! - entity references other than the five predefined ones and character references;
//! - comments and CDATA: exclusive C14N drops comments and flattens CDATA, so both can be inserted
//!   into signed text without breaking the signature. A parser that stops at the comment would read
//!   `user@corp.example<!---->.evil.example` as `user@corp.example` (the 2018 comment-injection
//!   class). We never read a truncated value because we never accept such a document;
//! - processing instructions other than the XML declaration;
//! - signature or digest algorithms outside the allow-list (SHA-256 or stronger unless SHA-1 is
//!   explicitly allowed for this IdP), before any cryptography runs.
//!
//! It also reports the root element's `Destination` and `Issuer`, which the caller uses only to
//! refuse (a mismatch is a reason to stop even where it is unsigned) or to pick which IdP's keys
//! verify an unsolicited response, never to accept.

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

use super::SamlError;

const DSIG_NS: &[u8] = b"http://www.w3.org/2000/09/xmldsig#";
const PROTOCOL_NS: &[u8] = b"urn:oasis:names:tc:SAML:2.0:protocol";
const ASSERTION_NS: &[u8] = b"urn:oasis:names:tc:SAML:2.0:assertion";

/// SignatureMethod algorithms accepted by default.
pub const STRONG_SIGNATURE_ALGS: &[&str] = &[
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512",
];
/// DigestMethod algorithms accepted by default.
pub const STRONG_DIGEST_ALGS: &[&str] = &[
    "http://www.w3.org/2001/04/xmlenc#sha256",
    "http://www.w3.org/2001/04/xmldsig-more#sha384",
    "http://www.w3.org/2001/04/xmlenc#sha512",
];
pub const SHA1_SIGNATURE_ALG: &str = "http://www.w3.org/2000/09/xmldsig#rsa-sha1";
pub const SHA1_DIGEST_ALG: &str = "http://www.w3.org/2000/09/xmldsig#sha1";

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Prescan {
    /// `Destination` of the root `samlp:Response`, if any.
    pub destination: Option<String>,
    /// Text of the first `saml:Issuer` (of the Response, else of the first Assertion).
    pub issuer: Option<String>,
    /// Whether a top-level `StatusCode` other than Success was seen.
    pub status_failure: Option<String>,
    /// How many `saml:Assertion` and `saml:EncryptedAssertion` elements the document holds.
    pub assertions: usize,
    /// Every `saml:Audience` text, unverified: only for the admin's error message.
    pub audiences: Vec<String>,
    /// Local name of the root element (`Response`, `LogoutRequest`, `LogoutResponse`).
    pub root: String,
    /// The root element's `NotOnOrAfter` (LogoutRequest), as sent.
    pub not_on_or_after: Option<String>,
}

#[allow(deprecated)] // `unescape_value` is the plain, entity-free unescape we want here.
fn attr(e: &quick_xml::events::BytesStart<'_>, name: &[u8]) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.as_ref() == name)
        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
}

fn is(ns: &ResolveResult<'_>, want: &[u8]) -> bool {
    matches!(ns, ResolveResult::Bound(n) if n.as_ref() == want)
}

/// Scans `xml`; `allow_sha1` widens the algorithm allow-list to RSA-SHA1 / SHA-1.
pub fn prescan(xml: &str, allow_sha1: bool) -> Result<Prescan, SamlError> {
    prescan_message(xml, allow_sha1, &["Response"])
}

/// Like [`prescan`], for a protocol message whose root is one of `roots` (samlp local names).
pub fn prescan_message(xml: &str, allow_sha1: bool, roots: &[&str]) -> Result<Prescan, SamlError> {
    let mut reader = NsReader::from_str(xml);
    let mut out = Prescan::default();
    let mut depth = 0usize;
    let mut root_seen = false;
    let mut in_issuer = false;
    let mut in_audience = false;
    let mut in_status = false;
    let mut status_code_seen = false;
    loop {
        let (ns, ev) = reader
            .read_resolved_event()
            .map_err(|e| SamlError::Malformed(format!("not well-formed XML: {e}")))?;
        match ev {
            Event::DocType(_) => return Err(SamlError::Dtd),
            Event::Comment(_) => return Err(SamlError::XmlComment),
            Event::CData(_) => return Err(SamlError::XmlCdata),
            Event::PI(_) => {
                return Err(SamlError::Malformed(
                    "processing instructions are not accepted".into(),
                ));
            }
            Event::GeneralRef(r) => {
                // Only the five predefined entities and character references: anything else would
                // need a DTD to mean something.
                let name: &[u8] = r.as_ref();
                let ok = matches!(name, b"lt" | b"gt" | b"amp" | b"apos" | b"quot")
                    || name.first() == Some(&b'#');
                if !ok {
                    return Err(SamlError::Dtd);
                }
            }
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(ev, Event::Empty(_));
                let local = e.local_name();
                let local = local.as_ref();
                if !root_seen {
                    root_seen = true;
                    if !(is(&ns, PROTOCOL_NS) && roots.iter().any(|r| r.as_bytes() == local)) {
                        return Err(SamlError::Malformed(format!(
                            "the document is not a samlp:{}",
                            roots.join(" or samlp:")
                        )));
                    }
                    out.root = String::from_utf8_lossy(local).into_owned();
                    out.destination = attr(e, b"Destination");
                    out.not_on_or_after = attr(e, b"NotOnOrAfter");
                }
                if is(&ns, DSIG_NS) && local == b"SignatureMethod" {
                    let alg = attr(e, b"Algorithm").unwrap_or_default();
                    let ok = STRONG_SIGNATURE_ALGS.contains(&alg.as_str())
                        || (allow_sha1 && alg == SHA1_SIGNATURE_ALG);
                    if !ok {
                        return Err(SamlError::WeakAlgorithm(alg));
                    }
                }
                if is(&ns, DSIG_NS) && local == b"DigestMethod" {
                    let alg = attr(e, b"Algorithm").unwrap_or_default();
                    let ok = STRONG_DIGEST_ALGS.contains(&alg.as_str())
                        || (allow_sha1 && alg == SHA1_DIGEST_ALG);
                    if !ok {
                        return Err(SamlError::WeakAlgorithm(alg));
                    }
                }
                if is(&ns, ASSERTION_NS) && local == b"Issuer" && out.issuer.is_none() && !empty {
                    in_issuer = true;
                }
                if is(&ns, ASSERTION_NS)
                    && (local == b"Assertion" || local == b"EncryptedAssertion")
                {
                    out.assertions += 1;
                }
                if is(&ns, ASSERTION_NS) && local == b"Audience" && !empty {
                    in_audience = true;
                    out.audiences.push(String::new());
                }
                if is(&ns, PROTOCOL_NS) && local == b"Status" && depth == 1 {
                    in_status = true;
                }
                // The top-level StatusCode (the first one inside Status).
                if in_status && is(&ns, PROTOCOL_NS) && local == b"StatusCode" && !status_code_seen
                {
                    status_code_seen = true;
                    let v = attr(e, b"Value").unwrap_or_default();
                    if v != "urn:oasis:names:tc:SAML:2.0:status:Success" {
                        out.status_failure = Some(v);
                    }
                }
                if !empty {
                    depth += 1;
                }
            }
            Event::Text(ref t) if in_issuer => {
                let text = t
                    .decode()
                    .map_err(|e| SamlError::Malformed(format!("bad text: {e}")))?;
                out.issuer
                    .get_or_insert_with(String::new)
                    .push_str(text.trim());
            }
            Event::Text(ref t) if in_audience => {
                let text = t
                    .decode()
                    .map_err(|e| SamlError::Malformed(format!("bad text: {e}")))?;
                if let Some(last) = out.audiences.last_mut() {
                    last.push_str(text.trim());
                }
            }
            Event::End(_) => {
                in_issuer = false;
                in_audience = false;
                depth = depth.saturating_sub(1);
                if depth <= 1 {
                    in_status = false;
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !root_seen {
        return Err(SamlError::Malformed("empty document".into()));
    }
    // One response, one assertion. Every signature-wrapping variant (XSW1-8) needs a second
    // Assertion somewhere (beside, around, inside an Extensions or a ds:Object); samael's
    // reduction would keep only the signed one, but a document built to confuse is refused
    // outright, which also keeps "which assertion did we read" a non-question.
    if out.assertions > 1 {
        return Err(SamlError::MultipleAssertions(out.assertions));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"<?xml version="1.0"?><samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" Destination="https://sp/acs"><saml:Issuer>https://idp</saml:Issuer><samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status></samlp:Response>"#;

    #[test]
    fn reads_destination_issuer_and_status() {
        let p = prescan(OK, false).unwrap();
        assert_eq!(p.destination.as_deref(), Some("https://sp/acs"));
        assert_eq!(p.issuer.as_deref(), Some("https://idp"));
        assert_eq!(p.status_failure, None);
    }

    #[test]
    fn refuses_doctype_entities_comments_cdata() {
        let dtd = OK.replace(
            "<?xml version=\"1.0\"?>",
            "<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY x \"y\">]>",
        );
        assert!(matches!(prescan(&dtd, false), Err(SamlError::Dtd)));
        let ent = OK.replace("https://idp<", "&x;<");
        assert!(matches!(prescan(&ent, false), Err(SamlError::Dtd)));
        let comment = OK.replace("https://idp<", "https://idp<!---->.evil<");
        assert!(matches!(
            prescan(&comment, false),
            Err(SamlError::XmlComment)
        ));
        let cdata = OK.replace("https://idp<", "<![CDATA[x]]><");
        assert!(matches!(prescan(&cdata, false), Err(SamlError::XmlCdata)));
        let predefined = OK.replace("https://idp<", "a&amp;b&#65;<");
        assert!(prescan(&predefined, false).is_ok());
    }

    #[test]
    fn refuses_sha1_unless_allowed() {
        let sig = format!(
            r#"<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo><ds:SignatureMethod Algorithm="{SHA1_SIGNATURE_ALG}"/><ds:Reference><ds:DigestMethod Algorithm="{SHA1_DIGEST_ALG}"/></ds:Reference></ds:SignedInfo></ds:Signature></samlp:Response>"#
        );
        let doc = OK.replace("</samlp:Response>", &sig);
        assert!(matches!(
            prescan(&doc, false),
            Err(SamlError::WeakAlgorithm(_))
        ));
        assert!(prescan(&doc, true).is_ok());
    }

    #[test]
    fn reports_a_failed_status() {
        let doc = OK.replace("status:Success", "status:Responder");
        let p = prescan(&doc, false).unwrap();
        assert_eq!(
            p.status_failure.as_deref(),
            Some("urn:oasis:names:tc:SAML:2.0:status:Responder")
        );
    }
}
