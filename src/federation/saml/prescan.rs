//! A strict lexical pass over a SAML message before any XML library builds a tree from it.
//!
//! It refuses what no IdP sends and what attacks need (docs/security.md, "SAML service provider"):
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

/// Every attribute of `e` checked (a broken or repeated one refuses the document), and the value
/// of its first `ID`, unescaped (none when that does not unescape), in one pass.
#[allow(deprecated)] // `unescape_value`: as in `attr`.
fn id_attribute(e: &quick_xml::events::BytesStart<'_>) -> Result<Option<String>, SamlError> {
    let mut id = None;
    for a in e.attributes() {
        let a = a.map_err(|bad| SamlError::Malformed(format!("bad attribute: {bad}")))?;
        if id.is_none() && a.key.as_ref() == b"ID" {
            id = Some(a.unescape_value().ok().map(|v| v.into_owned()));
        }
    }
    Ok(id.flatten())
}

fn is(ns: &ResolveResult<'_>, want: &[u8]) -> bool {
    matches!(ns, ResolveResult::Bound(n) if n.as_ref() == want)
}

/// Scans `xml`; `allow_sha1` widens the algorithm allow-list to RSA-SHA1 / SHA-1.
pub fn prescan(xml: &str, allow_sha1: bool) -> Result<Prescan, SamlError> {
    prescan_message(xml, allow_sha1, &["Response"])
}

/// Largest document the prescan looks at. The HTTP body limit is smaller; this bounds the other
/// entry points (an inflated Redirect message, metadata) the same way.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// Deeper than any SAML message nests; bounds recursion in every later XML pass.
const MAX_DEPTH: usize = 48;
/// Exclusive C14N's InclusiveNamespaces PrefixList: canonicalisation work grows with elements
/// times prefixes.
const MAX_INCLUSIVE_PREFIXES: usize = 32;
/// One signature on the protocol message and one on its assertion.
const MAX_SIGNATURES: usize = 2;

/// C14N methods accepted as `CanonicalizationMethod` and as reference transforms: inclusive 1.0,
/// 1.1 and exclusive, all without comments (the "WithComments" variants would let comments into
/// the digest, and the prescan refuses comments anyway).
pub const C14N_ALGS: &[&str] = &[
    "http://www.w3.org/2001/10/xml-exc-c14n#",
    "http://www.w3.org/TR/2001/REC-xml-c14n-20010315",
    "http://www.w3.org/2006/12/xml-c14n11",
];
pub const ENVELOPED_ALG: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
const EXC_C14N_NS: &[u8] = b"http://www.w3.org/2001/10/xml-exc-c14n#";
const XENC_NS: &[u8] = b"http://www.w3.org/2001/04/xmlenc#";
const XENC11_NS: &[u8] = b"http://www.w3.org/2009/xmlenc11#";

/// Where an element sits, as far as the signature rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Zone {
    /// Ordinary SAML content.
    Message,
    /// Inside a `ds:Signature`.
    Signature,
    /// Inside an `xenc:EncryptedData`/`EncryptedKey` (key transport lives here).
    Encrypted,
}

/// One open element.
#[derive(Debug)]
struct Open {
    zone: Zone,
    /// `Some(ID)` for the root and the Assertion: the elements a signature may cover.
    signable_id: Option<String>,
    is_root: bool,
    /// `ds:Signature`: how many `ds:Reference` it holds; `ds:Reference`: how many transforms.
    count: usize,
    dsig_local: Option<Vec<u8>>,
}

/// Refuses a document whose characters a later parser could read differently from this scan:
/// anything but UTF-8 (a BOM of another encoding, a declared `encoding` other than UTF-8, UTF-7's
/// `+/v`), and control characters XML 1.0 forbids (a NUL would end libxml2's copy early).
fn check_characters(xml: &str) -> Result<(), SamlError> {
    if xml.len() > MAX_DOCUMENT_BYTES {
        return Err(SamlError::Malformed(format!(
            "the document is larger than {} KiB",
            MAX_DOCUMENT_BYTES / 1024
        )));
    }
    let body = xml.strip_prefix('\u{feff}').unwrap_or(xml);
    if !body
        .trim_start_matches([' ', '\t', '\r', '\n'])
        .starts_with('<')
    {
        return Err(SamlError::NotUtf8(
            "the document does not start with markup (another encoding's byte-order mark, or UTF-7)"
                .into(),
        ));
    }
    if body.starts_with(char::is_whitespace) && body.trim_start().starts_with("<?xml") {
        return Err(SamlError::Malformed(
            "whitespace before the XML declaration".into(),
        ));
    }
    if let Some(c) = first_forbidden_character(xml) {
        return Err(SamlError::Malformed(format!(
            "the document contains the character U+{:04X}, which XML does not allow",
            c as u32
        )));
    }
    Ok(())
}

/// Characters XML 1.0 does not allow: C0 controls but tab, LF and CR; U+FFFE and U+FFFF.
fn is_forbidden(c: char) -> bool {
    matches!(c, '\0'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}')
}

/// The first character of `xml` that [`is_forbidden`], as a scan of every character finds it.
/// Done by 64-byte blocks without decoding (issue 15: decoding each character was 1.8% of a
/// sign-in): such a character starts with a control byte or with 0xEF (U+FFFE and U+FFFF, and
/// other characters of their block), so only a block holding one of those bytes is decoded,
/// from the character boundary at or before its start, for the characters that start in it.
fn first_forbidden_character(xml: &str) -> Option<char> {
    const BLOCK: usize = 64;
    let bytes = xml.as_bytes();
    let mut at = 0;
    while at < bytes.len() {
        let end = (at + BLOCK).min(bytes.len());
        // Non-short-circuit operators, so the block's test compiles to vector instructions.
        let suspicious = bytes[at..end].iter().fold(false, |seen, &b| {
            seen | ((b < 0x20) & (b != b'\t') & (b != b'\n') & (b != b'\r')) | (b == 0xEF)
        });
        if suspicious {
            let mut from = at;
            while !xml.is_char_boundary(from) {
                from -= 1;
            }
            let found = xml[from..]
                .char_indices()
                .take_while(|(i, _)| from + i < end)
                .map(|(_, c)| c)
                .find(|c| is_forbidden(*c));
            if found.is_some() {
                return found;
            }
        }
        at = end;
    }
    None
}

/// The decoded bytes of a message as text, refusing every encoding but UTF-8 before anything
/// parses them: a UTF-16 or UTF-32 byte-order mark is named as such, other bytes that are not
/// UTF-8 are an encoding error.
pub fn decode_document(bytes: Vec<u8>) -> Result<String, SamlError> {
    const OTHER_BOMS: &[(&[u8], &str)] = &[
        (&[0x00, 0x00, 0xFE, 0xFF], "UTF-32BE"),
        (&[0xFF, 0xFE, 0x00, 0x00], "UTF-32LE"),
        (&[0xFE, 0xFF], "UTF-16BE"),
        (&[0xFF, 0xFE], "UTF-16LE"),
        (b"+/v", "UTF-7"),
    ];
    if let Some((_, name)) = OTHER_BOMS.iter().find(|(bom, _)| bytes.starts_with(bom)) {
        return Err(SamlError::NotUtf8(format!("a {name} byte-order mark")));
    }
    if bytes.first() == Some(&0) || bytes.get(1) == Some(&0) {
        return Err(SamlError::NotUtf8(
            "UTF-16 or UTF-32 without a byte-order mark".into(),
        ));
    }
    String::from_utf8(bytes).map_err(|_| SamlError::Encoding)
}

fn malformed_sig(what: &str) -> SamlError {
    SamlError::SignatureShape(what.to_owned())
}

/// Like [`prescan`], for a protocol message whose root is one of `roots` (samlp local names).
pub fn prescan_message(xml: &str, allow_sha1: bool, roots: &[&str]) -> Result<Prescan, SamlError> {
    check_characters(xml)?;
    let mut reader = NsReader::from_str(xml);
    let mut out = Prescan::default();
    let mut stack: Vec<Open> = Vec::new();
    let mut root_seen = false;
    let mut in_issuer = false;
    let mut in_audience = false;
    let mut in_status = false;
    let mut status_code_seen = false;
    let mut signatures = 0usize;
    let mut ids: Vec<String> = Vec::new();
    loop {
        let (ns, ev) = reader
            .read_resolved_event()
            .map_err(|e| SamlError::Malformed(format!("not well-formed XML: {e}")))?;
        match ev {
            Event::Decl(ref d) => {
                // Only UTF-8 (declared or implied): the characters scanned here are the
                // characters libxml2 will parse.
                if let Some(enc) = d.encoding() {
                    let enc = enc.map_err(|_| SamlError::NotUtf8("unreadable".into()))?;
                    let enc = String::from_utf8_lossy(&enc).into_owned();
                    if !enc.eq_ignore_ascii_case("utf-8") {
                        return Err(SamlError::NotUtf8(enc));
                    }
                }
            }
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
                if stack.len() >= MAX_DEPTH {
                    return Err(SamlError::Malformed(format!(
                        "elements nest deeper than {MAX_DEPTH} levels"
                    )));
                }
                // A repeated or broken attribute is read one way here and another way (or not at
                // all) by libxml2: refused. The same pass takes the element's ID, the first `ID`
                // attribute (none if its value does not unescape), as `attr` would.
                let id = id_attribute(e)?;
                let parent_zone = stack.last().map_or(Zone::Message, |o| o.zone);
                let is_root = !root_seen;
                if is_root {
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
                // IDs must be unique: a reference by ID must have exactly one target.
                if let Some(id) = &id {
                    if ids.contains(id) {
                        return Err(malformed_sig("two elements carry the same ID"));
                    }
                    ids.push(id.clone());
                }
                let dsig = is(&ns, DSIG_NS);
                let mut zone = parent_zone;
                let mut signable_id = None;
                if is_root || (is(&ns, ASSERTION_NS) && local == b"Assertion") {
                    signable_id = Some(id.unwrap_or_default());
                }
                if (is(&ns, XENC_NS) || is(&ns, XENC11_NS))
                    && (local == b"EncryptedData" || local == b"EncryptedKey")
                    && zone == Zone::Message
                {
                    zone = Zone::Encrypted;
                }
                if dsig && local == b"Signature" {
                    // SAML core 5.4.1: the signature is enveloped in the element it signs, i.e. a
                    // direct child of the protocol message or of the assertion.
                    let parent = stack.last();
                    let parent_signable =
                        parent.is_some_and(|p| p.signable_id.is_some() && p.zone == Zone::Message);
                    if !parent_signable {
                        return Err(malformed_sig(
                            "a Signature outside the protocol message or assertion it signs",
                        ));
                    }
                    signatures += 1;
                    if signatures > MAX_SIGNATURES {
                        return Err(malformed_sig("more than two signatures"));
                    }
                    zone = Zone::Signature;
                } else if dsig && zone != Zone::Signature {
                    // ds: elements outside a Signature: only KeyInfo and what it holds, inside
                    // encrypted data (key transport). RetrievalMethod may only point at a sibling
                    // EncryptedKey in this document; Object, Manifest and a second
                    // SignedInfo never appear outside a Signature legitimately.
                    let ok = zone == Zone::Encrypted
                        && match local {
                            b"RetrievalMethod" => {
                                attr(e, b"URI").is_some_and(|u| u.starts_with('#'))
                            }
                            b"KeyInfo" | b"KeyName" | b"X509Data" | b"X509Certificate"
                            | b"X509IssuerSerial" | b"X509IssuerName" | b"X509SerialNumber"
                            | b"X509SubjectName" | b"X509SKI" | b"KeyValue" | b"RSAKeyValue"
                            | b"Modulus" | b"Exponent" | b"DigestMethod" => true,
                            _ => false,
                        };
                    if !ok {
                        return Err(malformed_sig(&format!(
                            "ds:{} outside a signature",
                            String::from_utf8_lossy(local)
                        )));
                    }
                }
                if zone == Zone::Signature && !(dsig && local == b"Signature") {
                    check_signature_element(&ns, local, e, &mut stack, allow_sha1)?;
                }
                if zone == Zone::Encrypted && dsig && local == b"DigestMethod" {
                    // Key transport (RSA-OAEP's DigestMethod, SHA-1 by default in
                    // rsa-oaep-mgf1p): not a signature, so SHA-1 is fine here.
                    let alg = attr(e, b"Algorithm").unwrap_or_default();
                    let ok = STRONG_DIGEST_ALGS.contains(&alg.as_str()) || alg == SHA1_DIGEST_ALG;
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
                if is(&ns, PROTOCOL_NS) && local == b"Status" && stack.len() == 1 {
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
                let open = Open {
                    zone,
                    signable_id,
                    is_root,
                    count: 0,
                    dsig_local: dsig.then(|| local.to_vec()),
                };
                if empty {
                    close(&open)?;
                } else {
                    stack.push(open);
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
                if let Some(open) = stack.pop() {
                    close(&open)?;
                }
                if stack.len() <= 1 {
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

/// Checks made when an element closes: a Signature holds exactly one Reference (SAML core
/// 5.4.2), a Reference at most two transforms.
fn close(open: &Open) -> Result<(), SamlError> {
    match open.dsig_local.as_deref() {
        Some(b"Signature") if open.count != 1 => {
            Err(malformed_sig("a Signature must hold exactly one Reference"))
        }
        _ => Ok(()),
    }
}

/// The rules for one element inside a `ds:Signature` (SAML core 5.4, XML-DSig): what a signature
/// may point at and which transforms it may run. libxmlsec enforces the URI types and transforms
/// again (vendor/samael), this refuses earlier and with a reason.
fn check_signature_element(
    ns: &ResolveResult<'_>,
    local: &[u8],
    e: &quick_xml::events::BytesStart<'_>,
    stack: &mut [Open],
    allow_sha1: bool,
) -> Result<(), SamlError> {
    let dsig = is(ns, DSIG_NS);
    let alg = || attr(e, b"Algorithm").unwrap_or_default();
    if !dsig {
        // Only exclusive C14N's InclusiveNamespaces, inside its Transform/CanonicalizationMethod.
        let parent_is_c14n = stack.last().is_some_and(|p| {
            matches!(
                p.dsig_local.as_deref(),
                Some(b"Transform") | Some(b"CanonicalizationMethod")
            )
        });
        if is(ns, EXC_C14N_NS) && local == b"InclusiveNamespaces" && parent_is_c14n {
            // IdPs list a few prefixes ("xs xsi"); C14N checks every element against every one.
            let prefixes = attr(e, b"PrefixList").unwrap_or_default();
            if prefixes.split_ascii_whitespace().count() > MAX_INCLUSIVE_PREFIXES {
                return Err(malformed_sig(&format!(
                    "more than {MAX_INCLUSIVE_PREFIXES} inclusive namespace prefixes"
                )));
            }
            return Ok(());
        }
        return Err(malformed_sig(&format!(
            "unexpected element {} inside a signature",
            String::from_utf8_lossy(local)
        )));
    }
    match local {
        b"SignedInfo" | b"SignatureValue" | b"KeyInfo" | b"X509Data" | b"X509Certificate"
        | b"X509IssuerSerial" | b"X509IssuerName" | b"X509SerialNumber" | b"X509SubjectName"
        | b"X509SKI" | b"KeyName" | b"KeyValue" | b"RSAKeyValue" | b"Modulus" | b"Exponent"
        | b"DigestValue" | b"Transforms" => Ok(()),
        b"CanonicalizationMethod" => {
            let a = alg();
            if C14N_ALGS.contains(&a.as_str()) {
                Ok(())
            } else {
                Err(malformed_sig(&format!(
                    "canonicalization {a:?} is not accepted"
                )))
            }
        }
        b"SignatureMethod" => {
            let a = alg();
            if STRONG_SIGNATURE_ALGS.contains(&a.as_str())
                || (allow_sha1 && a == SHA1_SIGNATURE_ALG)
            {
                Ok(())
            } else {
                Err(SamlError::WeakAlgorithm(a))
            }
        }
        b"DigestMethod" => {
            let a = alg();
            if STRONG_DIGEST_ALGS.contains(&a.as_str()) || (allow_sha1 && a == SHA1_DIGEST_ALG) {
                Ok(())
            } else {
                Err(SamlError::WeakAlgorithm(a))
            }
        }
        b"Reference" => {
            // The enclosing Signature is the nearest open ds:Signature; the element it signs is
            // that Signature's parent.
            let sig_at = stack
                .iter()
                .rposition(|o| o.dsig_local.as_deref() == Some(b"Signature"))
                .ok_or_else(|| malformed_sig("a Reference outside a Signature"))?;
            stack[sig_at].count += 1;
            if stack[sig_at].count > 1 {
                return Err(malformed_sig("a Signature must hold exactly one Reference"));
            }
            let signed = sig_at
                .checked_sub(1)
                .map(|i| &stack[i])
                .ok_or_else(|| malformed_sig("a Signature without a signed element"))?;
            let uri = attr(e, b"URI").unwrap_or_default();
            let names_parent = match uri.strip_prefix('#') {
                Some(id) => signed.signable_id.as_deref() == Some(id) && !id.is_empty(),
                // "" is the whole document: only meaningful for a signature on the root.
                None => uri.is_empty() && signed.is_root,
            };
            if !names_parent {
                return Err(malformed_sig(&format!(
                    "a Reference may only name the element its signature is in (\"#ID\" or \"\"), not {:?}",
                    short(&uri)
                )));
            }
            // A Type only hints what is referenced; Manifest/Object/SignatureProperties are
            // what this rule exists to keep out.
            if let Some(t) = attr(e, b"Type")
                && (t.contains("Manifest") || t.contains("Object") || t.contains("Properties"))
            {
                return Err(malformed_sig(&format!(
                    "a Reference of type {:?} is not accepted",
                    short(&t)
                )));
            }
            Ok(())
        }
        b"Transform" => {
            let a = alg();
            let ok = a == ENVELOPED_ALG || C14N_ALGS.contains(&a.as_str());
            if !ok {
                return Err(malformed_sig(&format!(
                    "transform {:?} is not accepted (only enveloped-signature and C14N)",
                    short(&a)
                )));
            }
            let reference = stack
                .iter_mut()
                .rev()
                .find(|o| o.dsig_local.as_deref() == Some(b"Reference"))
                .ok_or_else(|| malformed_sig("a Transform outside a Reference"))?;
            reference.count += 1;
            if reference.count > 2 {
                return Err(malformed_sig("more than two transforms in a Reference"));
            }
            Ok(())
        }
        other => Err(malformed_sig(&format!(
            "ds:{} is not accepted in a signature (no Object, Manifest, RetrievalMethod, XPath, SignatureProperties)",
            String::from_utf8_lossy(other)
        ))),
    }
}

/// At most 80 characters of an attacker-chosen value, for messages.
fn short(s: &str) -> String {
    s.chars().take(80).collect()
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
    fn refuses_a_repeated_or_broken_attribute_and_reads_the_id_unescaped() {
        let bad = |doc: &str| match prescan(doc, false) {
            Err(SamlError::Malformed(m)) => m,
            other => panic!("expected a refusal, got {other:?}"),
        };
        // libxml2 would keep one of the two: which one the checks read must not be a question.
        let two_ids = OK.replace("<saml:Issuer>", r#"<saml:Issuer ID="_a" ID="_b">"#);
        assert!(
            bad(&two_ids).starts_with("bad attribute"),
            "{}",
            bad(&two_ids)
        );
        let two_destinations = OK.replace(
            r#"Destination="https://sp/acs""#,
            r#"Destination="https://sp/acs" Destination="https://evil/acs""#,
        );
        assert!(bad(&two_destinations).starts_with("bad attribute"));
        let no_value = OK.replace("<saml:Issuer>", "<saml:Issuer ID>");
        assert!(bad(&no_value).starts_with("bad attribute"));
        // The ID is compared unescaped: `&#95;a` and `_a` are one ID.
        let escaped = OK
            .replace("<saml:Issuer>", r#"<saml:Issuer ID="&#95;a">"#)
            .replace("<samlp:Status>", r#"<samlp:Status ID="_a">"#);
        assert!(matches!(
            prescan(&escaped, false),
            Err(SamlError::SignatureShape(ref m)) if m.contains("same ID")
        ));
        let distinct = escaped.replace(r#"<samlp:Status ID="_a">"#, r#"<samlp:Status ID="_b">"#);
        prescan(&distinct, false).expect("two different IDs");
    }

    #[test]
    fn the_block_scan_finds_the_first_forbidden_character_a_character_scan_finds() {
        let by_chars = |s: &str| s.chars().find(|c| is_forbidden(*c));
        // At block edges, after multi-byte characters, and allowed characters led by 0xEF.
        let mut cases = vec![String::new(), "\u{fffe}".into(), "\u{ffff}".into()];
        for pad in [0usize, 1, 61, 62, 63, 64, 65, 127, 128] {
            for (lead, bad) in [
                ("", '\0'),
                ("é", '\u{1f}'),
                ("\u{fffd}", '\u{fffe}'),
                ("\u{f8ff}", '\u{b}'),
            ] {
                let text = format!("{}{lead}{bad}\u{ffff}", "x".repeat(pad));
                cases.push(text.clone());
                cases.push(text.replace(bad, "\t\n\r\u{fffd}\u{efff}"));
            }
        }
        for case in &cases {
            assert_eq!(first_forbidden_character(case), by_chars(case), "{case:?}");
        }
        proptest::proptest!(|(s in "[ -~\t\n\r\x00-\x1f\u{e000}-\u{ffff}é😀]{0,300}")| {
            proptest::prop_assert_eq!(first_forbidden_character(&s), by_chars(&s));
        });
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

    /// A Response with an assertion, each signable, and `sig` placed as the assertion's signature.
    fn signed(sig: &str) -> String {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_resp" Destination="https://sp/acs"><saml:Issuer>https://idp</saml:Issuer><samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status><saml:Assertion ID="_a1"><saml:Issuer>https://idp</saml:Issuer>{sig}<saml:Subject/></saml:Assertion></samlp:Response>"#
        )
    }

    fn signature(uri: &str, transforms: &str, extra: &str) -> String {
        format!(
            r##"<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo><ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/><ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/><ds:Reference URI="{uri}"><ds:Transforms>{transforms}</ds:Transforms><ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><ds:DigestValue>AA==</ds:DigestValue></ds:Reference></ds:SignedInfo><ds:SignatureValue>AA==</ds:SignatureValue><ds:KeyInfo><ds:X509Data><ds:X509Certificate>AA==</ds:X509Certificate></ds:X509Data></ds:KeyInfo>{extra}</ds:Signature>"##
        )
    }

    const STD: &str = r#"<ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/><ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"><ec:InclusiveNamespaces xmlns:ec="http://www.w3.org/2001/10/xml-exc-c14n#" PrefixList="xs"/></ds:Transform>"#;

    fn shape_err(doc: &str) -> String {
        match prescan(doc, false) {
            Err(SamlError::SignatureShape(m)) => m,
            other => panic!("expected a signature-shape refusal, got {other:?}"),
        }
    }

    #[test]
    fn accepts_the_signatures_saml_uses() {
        prescan(&signed(&signature("#_a1", STD, "")), false).expect("assertion signature");
        let on_response = signed("").replace(
            "<samlp:Status>",
            &format!("{}<samlp:Status>", signature("#_resp", STD, "")),
        );
        prescan(&on_response, false).expect("response signature");
        let whole_doc = signed("").replace(
            "<samlp:Status>",
            &format!("{}<samlp:Status>", signature("", STD, "")),
        );
        prescan(&whole_doc, false).expect("URI=\"\" on the root");
    }

    #[test]
    fn refuses_references_outside_the_signed_element() {
        for uri in [
            "http://169.254.169.254/latest/meta-data/",
            "https://evil.example/x",
            "file:///dev/zero",
            "file:///etc/passwd",
            "/etc/passwd",
            "_a1",
            "#_resp",
            "#xpointer(/)",
            "#xpointer(id('_a1'))",
            "#",
            "",
        ] {
            let m = shape_err(&signed(&signature(uri, STD, "")));
            assert!(m.contains("Reference may only name"), "{uri}: {m}");
        }
    }

    #[test]
    fn refuses_transforms_other_than_enveloped_and_c14n() {
        let cases = [
            r#"<ds:Transform Algorithm="http://www.w3.org/TR/1999/REC-xslt-19991116"><xsl:stylesheet xmlns:xsl="http://www.w3.org/1999/XSL/Transform" version="1.0"/></ds:Transform>"#,
            r#"<ds:Transform Algorithm="http://www.w3.org/TR/1999/REC-xpath-19991116"><ds:XPath>1</ds:XPath></ds:Transform>"#,
            r#"<ds:Transform Algorithm="http://www.w3.org/2002/06/xmldsig-filter2"/>"#,
            r#"<ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#WithComments"/>"#,
            r#"<ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#base64"/>"#,
        ];
        for t in cases {
            let m = shape_err(&signed(&signature("#_a1", t, "")));
            assert!(m.contains("transform"), "{t}: {m}");
        }
        let three =
            format!("{STD}<ds:Transform Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/>");
        assert!(shape_err(&signed(&signature("#_a1", &three, ""))).contains("more than two"));
        let prefixes = |n: usize| {
            let list: Vec<String> = (0..n).map(|i| format!("p{i}")).collect();
            STD.replace(
                "PrefixList=\"xs\"",
                &format!("PrefixList=\"{}\"", list.join(" ")),
            )
        };
        prescan(&signed(&signature("#_a1", &prefixes(32), "")), false).expect("32 prefixes");
        assert!(shape_err(&signed(&signature("#_a1", &prefixes(33), ""))).contains("prefixes"));
        let comments = signed(&signature("#_a1", STD, "")).replace(
            r#"<ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>"#,
            r#"<ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#WithComments"/>"#,
        );
        assert!(shape_err(&comments).contains("canonicalization"));
    }

    #[test]
    fn refuses_object_manifest_retrieval_method_and_stray_signatures() {
        let object = r#"<ds:Object Id="o"><ds:Manifest><ds:Reference URI="http://evil.example/"/></ds:Manifest></ds:Object>"#;
        assert!(shape_err(&signed(&signature("#_a1", STD, object))).contains("ds:Object"));
        let retrieval = signed(&signature("#_a1", STD, "")).replace(
            "<ds:X509Data>",
            r#"<ds:RetrievalMethod URI="http://evil.example/key"/><ds:X509Data>"#,
        );
        assert!(shape_err(&retrieval).contains("RetrievalMethod"));
        let typed = signed(&signature("#_a1", STD, "")).replace(
            r##"URI="#_a1""##,
            r##"URI="#_a1" Type="http://www.w3.org/2000/09/xmldsig#Manifest""##,
        );
        assert!(shape_err(&typed).contains("type"));
        let two_refs = signed(&signature("#_a1", STD, "")).replace(
            "</ds:SignedInfo>",
            r##"<ds:Reference URI="#_a1"><ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><ds:DigestValue>AA==</ds:DigestValue></ds:Reference></ds:SignedInfo>"##,
        );
        assert!(shape_err(&two_refs).contains("exactly one Reference"));
        let no_ref = signed(
            r#"<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo/></ds:Signature>"#,
        );
        assert!(shape_err(&no_ref).contains("exactly one Reference"));
        // A signature tucked into Extensions or the Subject signs nothing SAML reads.
        let stray = signed("").replace(
            "<saml:Subject/>",
            &format!(
                "<saml:Subject>{}</saml:Subject>",
                signature("#_a1", STD, "")
            ),
        );
        assert!(shape_err(&stray).contains("outside the protocol message"));
        let loose_ds = signed("").replace(
            "<saml:Subject/>",
            r#"<saml:Subject><ds:Object xmlns:ds="http://www.w3.org/2000/09/xmldsig#"/></saml:Subject>"#,
        );
        assert!(shape_err(&loose_ds).contains("outside a signature"));
        let dup_id = signed(&signature("#_a1", STD, ""))
            .replace("<saml:Subject/>", r#"<saml:Subject ID="_a1"/>"#);
        assert!(shape_err(&dup_id).contains("same ID"));
    }

    #[test]
    fn refuses_every_encoding_but_utf8() {
        let ok = signed(&signature("#_a1", STD, ""));
        for enc in [
            "UTF-7",
            "UTF-16",
            "utf-16le",
            "ISO-8859-1",
            "UTF-32",
            "EBCDIC-US",
        ] {
            let doc = ok.replace("encoding=\"UTF-8\"", &format!("encoding=\"{enc}\""));
            assert!(
                matches!(prescan(&doc, false), Err(SamlError::NotUtf8(ref e)) if e == enc),
                "{enc}"
            );
        }
        prescan(&ok.replace("UTF-8", "utf-8"), false).expect("utf-8 in any case");
        prescan(&format!("\u{feff}{ok}"), false).expect("a UTF-8 byte-order mark");
        assert!(matches!(
            prescan(&format!("+/v8-{ok}"), false),
            Err(SamlError::NotUtf8(_))
        ));
        assert!(matches!(
            prescan(&ok.replace("https://idp<", "https://idp\u{0}.evil<"), false),
            Err(SamlError::Malformed(ref m)) if m.contains("U+0000")
        ));
        for (bytes, name) in [
            (vec![0xFF, 0xFE, b'<', 0], "UTF-16LE"),
            (vec![0xFE, 0xFF, 0, b'<'], "UTF-16BE"),
            (b"+/v8-<x/>".to_vec(), "UTF-7"),
        ] {
            assert!(
                matches!(decode_document(bytes), Err(SamlError::NotUtf8(ref e)) if e.contains(name)),
                "{name}"
            );
        }
        assert!(matches!(
            decode_document(vec![b'<', 0, b'x', 0]),
            Err(SamlError::NotUtf8(_))
        ));
        assert_eq!(decode_document(b"<x/>".to_vec()).expect("utf-8"), "<x/>");
    }

    #[test]
    fn key_transport_may_use_sha1_while_signatures_may_not() {
        let enc = r#"<saml:EncryptedAssertion><xenc:EncryptedData xmlns:xenc="http://www.w3.org/2001/04/xmlenc#"><xenc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/><ds:KeyInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><xenc:EncryptedKey><xenc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p"><ds:DigestMethod Algorithm="http://www.w3.org/2000/09/xmldsig#sha1"/></xenc:EncryptionMethod><xenc:CipherData><xenc:CipherValue>AA==</xenc:CipherValue></xenc:CipherData></xenc:EncryptedKey></ds:KeyInfo><xenc:CipherData><xenc:CipherValue>AA==</xenc:CipherValue></xenc:CipherData></xenc:EncryptedData></saml:EncryptedAssertion>"#;
        let doc = OK.replace("</samlp:Response>", &format!("{enc}</samlp:Response>"));
        prescan(&doc, false).expect("RSA-OAEP with SHA-1 is key transport, not a signature");
        let md5 = doc.replace("xmldsig#sha1", "xmldsig-more#md5");
        assert!(matches!(
            prescan(&md5, false),
            Err(SamlError::WeakAlgorithm(_))
        ));
        let sha1_sig = signed(&signature("#_a1", STD, ""))
            .replace("http://www.w3.org/2001/04/xmlenc#sha256", SHA1_DIGEST_ALG);
        assert!(matches!(
            prescan(&sha1_sig, false),
            Err(SamlError::WeakAlgorithm(_))
        ));
        prescan(&sha1_sig, true).expect("SHA-1 digest with allow_sha1");
    }

    #[test]
    fn refuses_deep_nesting_and_oversized_documents() {
        let deep = OK.replace(
            "</samlp:Status>",
            &format!("{}{}</samlp:Status>", "<a>".repeat(60), "</a>".repeat(60)),
        );
        assert!(
            matches!(prescan(&deep, false), Err(SamlError::Malformed(ref m)) if m.contains("deeper"))
        );
        let big = OK.replace(
            "https://idp<",
            &format!("{}<", "x".repeat(MAX_DOCUMENT_BYTES)),
        );
        assert!(
            matches!(prescan(&big, false), Err(SamlError::Malformed(ref m)) if m.contains("larger"))
        );
        let dup_attr = OK.replace("Destination=", "Destination=\"https://evil/\" Destination=");
        assert!(matches!(
            prescan(&dup_attr, false),
            Err(SamlError::Malformed(_))
        ));
    }
}
