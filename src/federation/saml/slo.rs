//! Single logout (SAML profiles 4.4): LogoutRequest / LogoutResponse over HTTP-Redirect (signed
//! query string, bindings 3.4.4.1) and HTTP-POST (enveloped XML signature, bindings 3.5).
//!
//! Inbound messages are verified before anything is read from them:
//! - Redirect: the signature covers the query string *as sent* (`SAMLRequest=..&RelayState=..&
//!   SigAlg=..`, each value in its original URL encoding); it is checked with openssl against every
//!   signing certificate of the IdP's metadata, with the same algorithm allow-list as responses.
//!   Unsigned messages are refused. The (signed) DEFLATEd message is then inflated with a size cap.
//! - POST: samael's `reduce_xml_to_signed_with_allowed_algorithms` (libxmlsec) verifies every
//!   Signature against the metadata certificates and keeps only the signed element; only that
//!   reduced document is parsed, and it must still be the LogoutRequest/LogoutResponse root.
//!
//! In both cases the strict prescan (no DTD, comments, CDATA, PIs; algorithm allow-list) runs
//! first, and one namespace-aware parser reads the signed message.

use std::io::Read;

use chrono::{DateTime, Utc};
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;
use samael::crypto::{Crypto, CryptoProvider, ReduceMode};

use super::{SamlError, SamlProvider, prescan, random_hex};
use crate::clock::UnixTime;

const PROTOCOL_NS: &[u8] = b"urn:oasis:names:tc:SAML:2.0:protocol";
const ASSERTION_NS: &[u8] = b"urn:oasis:names:tc:SAML:2.0:assertion";
const SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";
/// An inflated Redirect message larger than this is refused (DEFLATE bombs).
const MAX_INFLATED: u64 = 64 * 1024;
/// A LogoutRequest older than this (plus the skew) is refused, whatever its NotOnOrAfter.
pub const MAX_REQUEST_AGE: i64 = 300;

/// How the message arrived.
#[derive(Debug, Clone)]
pub enum Inbound {
    /// The raw (still URL-encoded) query string of the GET.
    Redirect(String),
    /// The form fields of the POST.
    Post {
        message: String,
        is_request: bool,
        relay_state: Option<String>,
    },
}

impl Inbound {
    /// Whether the message is (claims to be) a LogoutResponse: the answer to a LogoutRequest this
    /// gateway sent, after the local session already ended. Read from the parameter name only.
    pub fn is_response(&self) -> bool {
        match self {
            Inbound::Redirect(query) => raw_params(query)
                .is_ok_and(|params| params.iter().any(|(k, _)| k == "SAMLResponse")),
            Inbound::Post { is_request, .. } => !is_request,
        }
    }
}

/// A LogoutRequest this gateway sent: where to send the browser, and the ID the IdP's
/// LogoutResponse must name in `InResponseTo`.
#[derive(Debug, Clone)]
pub struct LogoutRequestOut {
    pub url: String,
    pub id: String,
}

/// A verified LogoutRequest from the IdP.
#[derive(Debug, Clone)]
pub struct LogoutRequestIn {
    pub id: String,
    pub name_id: String,
    pub session_indexes: Vec<String>,
    pub relay_state: Option<String>,
}

/// A verified LogoutResponse from the IdP.
#[derive(Debug, Clone)]
pub struct LogoutResponseIn {
    pub in_response_to: Option<String>,
    /// `None` for Success, else the top-level status code.
    pub status_failure: Option<String>,
}

impl LogoutResponseIn {
    /// Whether this (verified) LogoutResponse confirms the sign-out this browser asked for.
    /// SAML core 3.2.2: InResponseTo is "the identifier of the request to which the response
    /// corresponds"; only the ID of the LogoutRequest sent from this browser (`sent`) is
    /// accepted, then the status must be Success (core 3.7.3.2: the IdP could not end every
    /// session otherwise).
    pub fn confirms(&self, sent: Option<&str>) -> Result<(), SamlError> {
        match (sent, self.in_response_to.as_deref()) {
            (Some(want), Some(got)) if want == got => {}
            _ => return Err(SamlError::InResponseTo),
        }
        match &self.status_failure {
            Some(code) => Err(SamlError::StatusNotSuccess(code.clone())),
            None => Ok(()),
        }
    }
}

#[derive(Debug, Clone)]
pub enum SloMessage {
    Request(LogoutRequestIn),
    Response(LogoutResponseIn),
}

/// What the namespace-aware parser reads from the (verified) message.
#[derive(Debug, Default)]
struct Parsed {
    root: String,
    id: Option<String>,
    issue_instant: Option<String>,
    in_response_to: Option<String>,
    issuer: Option<String>,
    name_id: Option<String>,
    session_indexes: Vec<String>,
}

fn ns_is(ns: &ResolveResult<'_>, want: &[u8]) -> bool {
    matches!(ns, ResolveResult::Bound(n) if n.as_ref() == want)
}

#[allow(deprecated)]
fn attr(e: &quick_xml::events::BytesStart<'_>, name: &[u8]) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.as_ref() == name)
        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
}

fn parse(xml: &str) -> Result<Parsed, SamlError> {
    let mut r = NsReader::from_str(xml);
    let mut out = Parsed::default();
    let mut depth = 0usize;
    // Which direct child of the root we are in: 1 Issuer, 2 NameID, 3 SessionIndex.
    let mut field = 0u8;
    let bad = |e: String| SamlError::Malformed(format!("not well-formed XML: {e}"));
    loop {
        let (ns, ev) = r.read_resolved_event().map_err(|e| bad(e.to_string()))?;
        match ev {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(ev, Event::Empty(_));
                let local = e.local_name();
                let local = local.as_ref();
                if depth == 0 {
                    out.root = String::from_utf8_lossy(local).into_owned();
                    out.id = attr(e, b"ID");
                    out.issue_instant = attr(e, b"IssueInstant");
                    out.in_response_to = attr(e, b"InResponseTo");
                } else if depth == 1 {
                    field = if ns_is(&ns, ASSERTION_NS) && local == b"Issuer" {
                        1
                    } else if ns_is(&ns, ASSERTION_NS) && local == b"NameID" {
                        if out.name_id.is_some() {
                            return Err(SamlError::Malformed("two NameIDs".into()));
                        }
                        out.name_id = Some(String::new());
                        2
                    } else if ns_is(&ns, PROTOCOL_NS) && local == b"SessionIndex" {
                        out.session_indexes.push(String::new());
                        3
                    } else {
                        0
                    };
                    if field == 1 {
                        out.issuer.get_or_insert_with(String::new);
                    }
                    if empty {
                        field = 0;
                    }
                }
                if !empty {
                    depth += 1;
                }
            }
            Event::Text(ref t) if depth == 2 && field != 0 => {
                let text = t.decode().map_err(|e| bad(e.to_string()))?;
                let slot = match field {
                    1 => out.issuer.as_mut(),
                    2 => out.name_id.as_mut(),
                    _ => out.session_indexes.last_mut(),
                };
                if let Some(s) = slot {
                    s.push_str(&text);
                }
            }
            Event::GeneralRef(ref g) if depth == 2 && field != 0 => {
                // Only the predefined entities and character references pass the prescan.
                let name: &[u8] = g.as_ref();
                let ch = match name {
                    b"lt" => Some('<'),
                    b"gt" => Some('>'),
                    b"amp" => Some('&'),
                    b"apos" => Some('\''),
                    b"quot" => Some('"'),
                    _ => g.resolve_char_ref().ok().flatten(),
                };
                let Some(ch) = ch else {
                    return Err(SamlError::Dtd);
                };
                let slot = match field {
                    1 => out.issuer.as_mut(),
                    2 => out.name_id.as_mut(),
                    _ => out.session_indexes.last_mut(),
                };
                if let Some(s) = slot {
                    s.push(ch);
                }
            }
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                if depth <= 1 {
                    field = 0;
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(out)
}

/// The Issuer of an inbound message, unverified: only to choose whose keys verify it. A message
/// the prescan refuses (hostile markup, another encoding, a signature pointing outside the
/// document) is refused here with that reason, before any key is looked up.
pub fn unverified_issuer(inbound: &Inbound) -> Result<Option<String>, SamlError> {
    let xml = match inbound {
        Inbound::Redirect(query) => {
            let params = raw_params(query)?;
            let Some(raw) = params
                .iter()
                .find(|(k, _)| k == "SAMLRequest" || k == "SAMLResponse")
                .map(|(_, v)| url_decode(v))
            else {
                return Ok(None);
            };
            let deflated = super::decode_base64_text(&raw).map_err(|_| SamlError::Encoding)?;
            let mut bytes = Vec::new();
            flate2::read::DeflateDecoder::new(&deflated[..])
                .take(MAX_INFLATED + 1)
                .read_to_end(&mut bytes)
                .map_err(|_| SamlError::Encoding)?;
            if bytes.len() as u64 > MAX_INFLATED {
                return Err(SamlError::Malformed("the message is too large".into()));
            }
            prescan::decode_document(bytes)?
        }
        Inbound::Post { message, .. } => {
            if message.len() > prescan::MAX_DOCUMENT_BYTES / 3 * 4 + 4096 {
                return Err(SamlError::Malformed("the message is too large".into()));
            }
            let bytes = super::decode_base64_text(message).map_err(|_| SamlError::Encoding)?;
            prescan::decode_document(bytes)?
        }
    };
    Ok(prescan::prescan_message(&xml, true, &["LogoutRequest", "LogoutResponse"])?.issuer)
}

fn parse_time(s: &str) -> Result<UnixTime, SamlError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc).timestamp())
        .map_err(|_| SamlError::Malformed(format!("bad time {s:?}")))
}

/// Splits a raw query string into its raw (still encoded) values; a repeated key is refused.
fn raw_params(query: &str) -> Result<Vec<(String, String)>, SamlError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for part in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let key: String = url::form_urlencoded::parse(format!("{k}=").as_bytes())
            .next()
            .map(|(k, _)| k.into_owned())
            .unwrap_or_default();
        if out.iter().any(|(x, _)| *x == key) {
            return Err(SamlError::Malformed(format!(
                "the parameter {key} is repeated"
            )));
        }
        out.push((key, v.to_owned()));
    }
    Ok(out)
}

fn url_decode(raw: &str) -> String {
    url::form_urlencoded::parse(format!("v={raw}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn digest_for(sig_alg: &str, allow_sha1: bool) -> Result<openssl::hash::MessageDigest, SamlError> {
    use openssl::hash::MessageDigest;
    match sig_alg {
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256" => Ok(MessageDigest::sha256()),
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384" => Ok(MessageDigest::sha384()),
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512" => Ok(MessageDigest::sha512()),
        prescan::SHA1_SIGNATURE_ALG if allow_sha1 => Ok(MessageDigest::sha1()),
        other => Err(SamlError::WeakAlgorithm(other.to_owned())),
    }
}

fn xml_escape(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

impl SamlProvider {
    /// SP-initiated logout: a signed (RSA-SHA256) HTTP-Redirect LogoutRequest naming the NameID
    /// and SessionIndex of the session that just ended. `None` when the IdP has no SLO endpoint.
    pub fn logout_request_url(
        &self,
        name_id: &str,
        name_id_format: Option<&str>,
        session_index: Option<&str>,
        now: UnixTime,
    ) -> Result<Option<LogoutRequestOut>, SamlError> {
        let l = self.loaded()?;
        let Some(dest) = l.meta.slo_redirect.as_deref() else {
            return Ok(None);
        };
        let id = format!("_{}", random_hex(20));
        let format = name_id_format
            .map(|f| format!(" Format=\"{}\"", xml_escape(f)))
            .unwrap_or_default();
        let index = session_index
            .map(|i| format!("<samlp:SessionIndex>{}</samlp:SessionIndex>", xml_escape(i)))
            .unwrap_or_default();
        let xml = format!(
            "<samlp:LogoutRequest xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"{id}\" Version=\"2.0\" IssueInstant=\"{}\" Destination=\"{}\" NotOnOrAfter=\"{}\"><saml:Issuer>{}</saml:Issuer><saml:NameID{format}>{}</saml:NameID>{index}</samlp:LogoutRequest>",
            crate::clock::rfc3339(now),
            xml_escape(dest),
            crate::clock::rfc3339(now + MAX_REQUEST_AGE),
            xml_escape(&self.entity_id),
            xml_escape(name_id),
        );
        let url = super::sp::redirect_url(dest, "SAMLRequest", &xml, "", Some(&self.keys.key))?;
        Ok(Some(LogoutRequestOut { url, id }))
    }

    /// The signed HTTP-Redirect LogoutResponse (Success) to the IdP's logout request `in_response_to`.
    pub fn logout_response_url(
        &self,
        in_response_to: &str,
        relay_state: Option<&str>,
        now: UnixTime,
    ) -> Result<String, SamlError> {
        let l = self.loaded()?;
        let dest = l.meta.slo_response_redirect.as_deref().ok_or_else(|| {
            SamlError::Internal("the IdP metadata has no SingleLogoutService".into())
        })?;
        let xml = format!(
            "<samlp:LogoutResponse xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"_{}\" Version=\"2.0\" IssueInstant=\"{}\" Destination=\"{}\" InResponseTo=\"{}\"><saml:Issuer>{}</saml:Issuer><samlp:Status><samlp:StatusCode Value=\"{SUCCESS}\"/></samlp:Status></samlp:LogoutResponse>",
            random_hex(20),
            crate::clock::rfc3339(now),
            xml_escape(dest),
            xml_escape(in_response_to),
            xml_escape(&self.entity_id),
        );
        super::sp::redirect_url(
            dest,
            "SAMLResponse",
            &xml,
            relay_state.unwrap_or(""),
            Some(&self.keys.key),
        )
    }

    /// Verifies an inbound SLO message (see the module docs), off the async runtime.
    pub async fn verify_slo(
        self: &std::sync::Arc<Self>,
        inbound: Inbound,
        now: UnixTime,
    ) -> Result<SloMessage, SamlError> {
        let this = std::sync::Arc::clone(self);
        super::run_verification(move || this.verify_slo_blocking(inbound, now)).await
    }

    /// [`SamlProvider::verify_slo`] without the runtime hop (also the `slo_redirect` fuzz entry).
    pub(crate) fn verify_slo_blocking(
        &self,
        inbound: Inbound,
        now: UnixTime,
    ) -> Result<SloMessage, SamlError> {
        let l = self.loaded()?;
        if l.meta.certs.is_empty() {
            return Err(SamlError::Internal("no IdP signing certificate".into()));
        }
        let allow_sha1 = self.cfg.dangerous_allow_sha1;
        let roots = ["LogoutRequest", "LogoutResponse"];
        let (xml, relay_state) = match inbound {
            Inbound::Redirect(query) => {
                let params = raw_params(&query)?;
                let get = |k: &str| params.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str());
                let (name, raw_msg) = match (get("SAMLRequest"), get("SAMLResponse")) {
                    (Some(m), None) => ("SAMLRequest", m),
                    (None, Some(m)) => ("SAMLResponse", m),
                    _ => {
                        return Err(SamlError::Malformed(
                            "exactly one of SAMLRequest and SAMLResponse is expected".into(),
                        ));
                    }
                };
                // Unsigned Redirect messages are refused: nothing else authenticates them.
                let (Some(raw_alg), Some(raw_sig)) = (get("SigAlg"), get("Signature")) else {
                    return Err(SamlError::Signature);
                };
                let digest = digest_for(&url_decode(raw_alg), allow_sha1)?;
                let mut signed = format!("{name}={raw_msg}");
                let raw_relay = get("RelayState");
                if let Some(rs) = raw_relay {
                    signed.push_str(&format!("&RelayState={rs}"));
                }
                signed.push_str(&format!("&SigAlg={raw_alg}"));
                let sig = super::decode_base64_text(&url_decode(raw_sig))
                    .map_err(|_| SamlError::Signature)?;
                let ok = l.meta.certs.iter().any(|c| {
                    let Ok(x) = openssl::x509::X509::from_der(c.der_data()) else {
                        return false;
                    };
                    let Ok(pk) = x.public_key() else {
                        return false;
                    };
                    let Ok(mut v) = openssl::sign::Verifier::new(digest, &pk) else {
                        return false;
                    };
                    v.verify_oneshot(&sig, signed.as_bytes()).unwrap_or(false)
                });
                if !ok {
                    return Err(SamlError::Signature);
                }
                let deflated = super::decode_base64_text(&url_decode(raw_msg))
                    .map_err(|_| SamlError::Encoding)?;
                let mut bytes = Vec::new();
                flate2::read::DeflateDecoder::new(&deflated[..])
                    .take(MAX_INFLATED + 1)
                    .read_to_end(&mut bytes)
                    .map_err(|_| SamlError::Encoding)?;
                if bytes.len() as u64 > MAX_INFLATED {
                    return Err(SamlError::Malformed("the message is too large".into()));
                }
                let xml = prescan::decode_document(bytes)?;
                prescan::prescan_message(&xml, allow_sha1, &roots)?;
                (xml, raw_relay.map(url_decode))
            }
            Inbound::Post {
                message,
                is_request,
                relay_state,
            } => {
                if message.len() > prescan::MAX_DOCUMENT_BYTES / 3 * 4 + 4096 {
                    return Err(SamlError::Malformed("the message is too large".into()));
                }
                let bytes = super::decode_base64_text(&message).map_err(|_| SamlError::Encoding)?;
                let raw = prescan::decode_document(bytes)?;
                let want = if is_request {
                    "LogoutRequest"
                } else {
                    "LogoutResponse"
                };
                prescan::prescan_message(&raw, allow_sha1, &[want])?;
                let reduced = Crypto::reduce_xml_to_signed_with_allowed_algorithms(
                    &raw,
                    &l.meta.certs,
                    ReduceMode::ValidateAndMarkNoAncestors,
                    self.template.allowed_signature_algorithms.as_deref(),
                )
                .map_err(|_| SamlError::Signature)?;
                // Only the signed element survives; it must still be the message itself.
                let pre = prescan::prescan_message(&reduced, allow_sha1, &[want])
                    .map_err(|_| SamlError::Signature)?;
                if pre.root != want {
                    return Err(SamlError::Signature);
                }
                (reduced, relay_state)
            }
        };
        // Bindings 3.4.3 / 3.5.3: RelayState "MUST NOT exceed 80 bytes". It is echoed to the
        // IdP, and over POST nothing signs it.
        if relay_state.as_ref().is_some_and(|r| r.len() > 80) {
            return Err(SamlError::Malformed(
                "RelayState is longer than 80 bytes".into(),
            ));
        }
        self.check_slo(&l.meta.entity_id, &xml, relay_state, now)
    }

    /// Issuer, Destination and time checks on the verified message.
    fn check_slo(
        &self,
        idp_entity: &str,
        xml: &str,
        relay_state: Option<String>,
        now: UnixTime,
    ) -> Result<SloMessage, SamlError> {
        let skew = self.cfg.clock_skew.as_secs() as i64;
        let pre = prescan::prescan_message(
            xml,
            self.cfg.dangerous_allow_sha1,
            &["LogoutRequest", "LogoutResponse"],
        )?;
        let p = parse(xml)?;
        let issuer = p.issuer.as_deref().map(str::trim);
        if issuer != Some(idp_entity) {
            return Err(SamlError::Issuer {
                got: p.issuer.clone(),
                expected: idp_entity.to_owned(),
            });
        }
        // Bindings 3.4.5.2 / 3.5.5.2: a signed message MUST carry the Destination it was sent to.
        if pre.destination.as_deref() != Some(self.slo_url.as_str()) {
            return Err(SamlError::Destination {
                got: pre.destination.clone(),
                expected: self.slo_url.clone(),
            });
        }
        let issued = p
            .issue_instant
            .as_deref()
            .ok_or(SamlError::Missing("IssueInstant"))
            .and_then(parse_time)?;
        if issued - skew > now {
            return Err(SamlError::NotYetValid(crate::clock::rfc3339(issued)));
        }
        if now - skew >= issued + MAX_REQUEST_AGE {
            return Err(SamlError::Expired(crate::clock::rfc3339(
                issued + MAX_REQUEST_AGE,
            )));
        }
        if p.root == "LogoutResponse" {
            return Ok(SloMessage::Response(LogoutResponseIn {
                in_response_to: p.in_response_to,
                status_failure: pre.status_failure,
            }));
        }
        if let Some(na) = pre.not_on_or_after.as_deref() {
            let na = parse_time(na)?;
            if now - skew >= na {
                return Err(SamlError::Expired(crate::clock::rfc3339(na)));
            }
        }
        let id =
            p.id.filter(|s| !s.is_empty())
                .ok_or(SamlError::Missing("an ID"))?;
        let name_id = p
            .name_id
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .ok_or(SamlError::Missing("NameID"))?;
        Ok(SloMessage::Request(LogoutRequestIn {
            id,
            name_id,
            session_indexes: p
                .session_indexes
                .into_iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
            relay_state,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_logout_request() {
        let xml = r#"<samlp:LogoutRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_1" IssueInstant="2026-01-01T00:00:00Z"><saml:Issuer>idp</saml:Issuer><saml:NameID Format="x">mia&amp;co@corp.example</saml:NameID><samlp:SessionIndex>s1</samlp:SessionIndex><samlp:SessionIndex>s2</samlp:SessionIndex></samlp:LogoutRequest>"#;
        let p = parse(xml).unwrap();
        assert_eq!(p.root, "LogoutRequest");
        assert_eq!(p.issuer.as_deref(), Some("idp"));
        assert_eq!(p.name_id.as_deref(), Some("mia&co@corp.example"));
        assert_eq!(p.session_indexes, vec!["s1", "s2"]);
    }

    #[test]
    fn a_logout_response_confirms_only_the_request_this_browser_sent() {
        let ok = LogoutResponseIn {
            in_response_to: Some("_sent".into()),
            status_failure: None,
        };
        assert!(ok.confirms(Some("_sent")).is_ok());
        for sent in [Some("_other"), None] {
            assert!(matches!(ok.confirms(sent), Err(SamlError::InResponseTo)));
        }
        let none = LogoutResponseIn {
            in_response_to: None,
            status_failure: None,
        };
        assert!(matches!(
            none.confirms(Some("_sent")),
            Err(SamlError::InResponseTo)
        ));
        let failed = LogoutResponseIn {
            in_response_to: Some("_sent".into()),
            status_failure: Some("urn:oasis:names:tc:SAML:2.0:status:Responder".into()),
        };
        assert!(matches!(
            failed.confirms(Some("_sent")),
            Err(SamlError::StatusNotSuccess(_))
        ));
    }

    #[test]
    fn the_message_kind_is_read_from_the_parameter_name() {
        assert!(Inbound::Redirect("SAMLResponse=x&SigAlg=y".into()).is_response());
        assert!(!Inbound::Redirect("SAMLRequest=x&RelayState=SAMLResponse".into()).is_response());
        // Keys are read decoded, as the verifier reads them.
        assert!(Inbound::Redirect("SAMLRespons%65=x".into()).is_response());
    }

    #[test]
    fn raw_params_refuse_repeats() {
        assert!(raw_params("a=1&a=2").is_err());
        let p = raw_params("SAMLRequest=a%2Bb&SigAlg=x").unwrap();
        assert_eq!(p[0], ("SAMLRequest".into(), "a%2Bb".into()));
    }
}
