//! Unique signed Responses, fast: one pysaml2 Response (tests/peers/saml/idp.py, `"xml": true`)
//! is the template; each copy gets fresh Response and Assertion IDs and its own InResponseTo,
//! then is signed again with libxmlsec through the vendored samael's `sign_xml` (Assertion first,
//! then the Response, whose digest covers the Assertion's signature: what pysaml2 does).
//!
//! Why not pysaml2 itself: it signs through the xmlsec1 program, two runs per Response, about 20
//! Responses a second; the ACS rows need thousands within samael's 150 s freshness window.

use base64::Engine;
use samael::crypto::{Crypto, CryptoProvider};

/// Marks where the Response's Signature goes back once the Assertion is signed.
const RESPONSE_SIGNATURE_SLOT: &str = "<!--storegate-bench-response-signature-->";

/// A pysaml2 Response taken apart for re-signing.
pub struct Template {
    /// The Response with the Response's Signature replaced by [`RESPONSE_SIGNATURE_SLOT`], both
    /// signatures' DigestValue and SignatureValue emptied.
    body: String,
    /// The Response's Signature element, values emptied.
    response_signature: String,
    response_id: String,
    assertion_id: String,
    request_id: String,
    /// The IdP's private key (DER), as xmlsec loads it.
    key_der: Vec<u8>,
}

/// The text between `open` and the next `close` after it, from `from` on, as a byte range
/// including both.
fn element(xml: &str, open: &str, close: &str, from: usize) -> Result<(usize, usize), String> {
    let start = xml[from..]
        .find(open)
        .map(|i| i + from)
        .ok_or_else(|| format!("no {open:?} in the template"))?;
    let end = xml[start..]
        .find(close)
        .map(|i| i + start + close.len())
        .ok_or_else(|| format!("no {close:?} after {open:?} in the template"))?;
    Ok((start, end))
}

/// The value of the first `ID="..."` at or after `from`.
fn id_after(xml: &str, from: usize) -> Result<String, String> {
    let at = xml[from..]
        .find(" ID=\"")
        .map(|i| i + from + 5)
        .ok_or("no ID attribute in the template")?;
    let len = xml[at..].find('"').ok_or("unterminated ID attribute")?;
    Ok(xml[at..at + len].to_owned())
}

/// Empties every `<ns2:NAME>...</ns2:NAME>` (pysaml2's prefix for xmldsig).
fn empty_all(xml: &str, name: &str) -> String {
    let (open, close) = (format!("<ns2:{name}>"), format!("</ns2:{name}>"));
    let mut out = String::with_capacity(xml.len());
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = i + open.len();
        match rest[after..].find(&close) {
            Some(j) => {
                out.push_str(&rest[..after]);
                out.push_str(&close);
                rest = &rest[after + j + close.len()..];
            }
            None => break,
        }
    }
    out.push_str(rest);
    out
}

impl Template {
    /// Takes apart `xml`, a Response pysaml2 signed (Response and Assertion), answering
    /// `request_id`.
    pub fn new(xml: &str, request_id: &str, key_der: Vec<u8>) -> Result<Template, String> {
        let response_id = id_after(xml, 0)?;
        let assertion_at = xml
            .find(":Assertion ")
            .ok_or("no Assertion in the template")?;
        let assertion_id = id_after(xml, assertion_at)?;
        let (s, e) = element(xml, "<ns2:Signature", "</ns2:Signature>", 0)?;
        if s > assertion_at {
            return Err("the template's Response is not signed".into());
        }
        if !xml[assertion_at..].contains("<ns2:Signature") {
            return Err("the template's Assertion is not signed".into());
        }
        if xml.matches(request_id).count() != 2 {
            return Err(format!(
                "the template names {request_id:?} {} times, expected 2 (Response and SubjectConfirmationData)",
                xml.matches(request_id).count()
            ));
        }
        let response_signature = empty_all(&empty_all(&xml[s..e], "DigestValue"), "SignatureValue");
        let body = format!("{}{RESPONSE_SIGNATURE_SLOT}{}", &xml[..s], &xml[e..]);
        let body = empty_all(&empty_all(&body, "DigestValue"), "SignatureValue");
        Ok(Template {
            body,
            response_signature,
            response_id,
            assertion_id,
            request_id: request_id.to_owned(),
            key_der,
        })
    }

    /// A new Response answering `request_id`, fresh IDs, both signatures made; base64 as the
    /// HTTP-POST binding carries it.
    pub fn sign(&self, request_id: &str) -> Result<String, String> {
        let (rid, aid) = (
            format!("id-{}", storegate::federation::saml::random_hex(16)),
            format!("id-{}", storegate::federation::saml::random_hex(16)),
        );
        let fresh = |s: &str| {
            s.replace(&self.response_id, &rid)
                .replace(&self.assertion_id, &aid)
                .replace(&self.request_id, request_id)
        };
        // xmlsec signs the first Signature template in document order: the Assertion's while
        // the Response's is out, then the Response's once it is back.
        let assertion_signed = Crypto::sign_xml(fresh(&self.body), &self.key_der)
            .map_err(|e| format!("signing the Assertion: {e}"))?;
        let with_slot =
            assertion_signed.replacen(RESPONSE_SIGNATURE_SLOT, &fresh(&self.response_signature), 1);
        if with_slot.len() == assertion_signed.len() {
            return Err("libxml2 dropped the Response signature's slot".into());
        }
        let signed = Crypto::sign_xml(with_slot, &self.key_der)
            .map_err(|e| format!("signing the Response: {e}"))?;
        Ok(base64::engine::general_purpose::STANDARD.encode(signed))
    }
}

/// Signs one Response per request ID with `threads` threads; in the order of `request_ids`.
pub fn sign_all(
    template: &Template,
    request_ids: &[String],
    threads: usize,
) -> Result<Vec<String>, String> {
    let chunk = request_ids.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|s| {
        let parts: Vec<_> = request_ids
            .chunks(chunk)
            .map(|ids| {
                s.spawn(move || {
                    ids.iter()
                        .map(|id| template.sign(id))
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        let mut all = Vec::with_capacity(request_ids.len());
        for p in parts {
            all.extend(p.join().map_err(|_| "a signing thread panicked")??);
        }
        Ok(all)
    })
}
