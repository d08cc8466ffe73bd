//! Hostile SAML input (issue 10): a signature may only cover this document.
//!
//! Two layers are proved separately, so that each one's check can fail on its own:
//! - **libxmlsec itself** (the vendored samael, `vendor/samael/STOREGATE.md`): documents whose
//!   `ds:Reference` points at a URL, a local file, or runs XSLT/XPath, given straight to samael's
//!   signed-content reduction (no prescan in front). Nothing is fetched or opened, the call
//!   returns an error at once.
//! - **the gateway** (`POST /saml/acs`, `POST`/`GET /saml/slo`): the same classes, plus other
//!   encodings, refused by the prescan with an exact reason, while the process stays up and a
//!   local listener standing in for the internal network receives nothing.
//!
//! The gateway runs in this test process: a crash in libxml2/libxmlsec would end the test run.

use std::io::Write;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use base64::Engine;
use samael::crypto::{Crypto, CryptoProvider, ReduceMode};
use serde_json::json;

use crate::harness::Gateway;
use crate::support::browser::Browser;
use crate::support::saml_idp::{
    IDP_ENTITY, IDP_ORIGIN, Idp, Started, assert_refused, b64, begin, post, signed_xml,
    start_gateway,
};

/// A listener standing in for an internal service or a cloud metadata endpoint: it must never see
/// a connection.
struct Canary {
    listener: TcpListener,
}

impl Canary {
    fn new() -> Canary {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind canary");
        listener.set_nonblocking(true).expect("nonblocking");
        Canary { listener }
    }
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listener.local_addr().expect("addr"))
    }
    /// Connections made so far (accepted here, so each is counted once).
    fn connections(&self) -> usize {
        let mut n = 0;
        while self.listener.accept().is_ok() {
            n += 1;
        }
        n
    }
}

/// A file large enough that reading it would show: the test binary itself.
fn large_local_file() -> String {
    let exe = std::env::current_exe().expect("current exe");
    let len = std::fs::metadata(&exe).expect("metadata").len();
    assert!(
        len > 10 * 1024 * 1024,
        "the test binary is large ({len} bytes)"
    );
    format!("file://{}", exe.display())
}

const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";

fn transform(alg: &str, body: &str) -> String {
    format!(r#"<ds:Transform Algorithm="{alg}">{body}</ds:Transform>"#)
}

/// A Response whose root carries `signature` (as a real response-level signature would).
fn response_with(signature: &str) -> String {
    format!(
        r#"<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" ID="_r1" Version="2.0" IssueInstant="2026-01-01T00:00:00Z"><saml:Issuer>{IDP_ENTITY}</saml:Issuer>{signature}<samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status><saml:Assertion ID="_a1" Version="2.0" IssueInstant="2026-01-01T00:00:00Z"><saml:Issuer>{IDP_ENTITY}</saml:Issuer></saml:Assertion></samlp:Response>"#
    )
}

/// A `ds:Signature` with one Reference to `uri` running `transforms`, and `key_info`/`extra`
/// (Object, ...) inside. Digest and signature values are junk: libxmlsec dereferences and digests
/// every Reference *before* it checks the signature value, which is what the attacks rely on.
fn signature(uri: &str, transforms: &str, key_info: &str, extra: &str) -> String {
    format!(
        r#"<ds:Signature><ds:SignedInfo><ds:CanonicalizationMethod Algorithm="{EXC_C14N}"/><ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/><ds:Reference URI="{uri}"><ds:Transforms>{transforms}</ds:Transforms><ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><ds:DigestValue>AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=</ds:DigestValue></ds:Reference></ds:SignedInfo><ds:SignatureValue>AAAA</ds:SignatureValue><ds:KeyInfo>{key_info}</ds:KeyInfo>{extra}</ds:Signature>"#
    )
}

fn xslt_fetching(url: &str) -> String {
    transform(
        "http://www.w3.org/TR/1999/REC-xslt-19991116",
        &format!(
            r#"<xsl:stylesheet xmlns:xsl="http://www.w3.org/1999/XSL/Transform" version="1.0"><xsl:template match="/"><xsl:copy-of select="document('{url}')"/></xsl:template></xsl:stylesheet>"#
        ),
    )
}

fn xpath_transform() -> String {
    transform(
        "http://www.w3.org/TR/1999/REC-xpath-19991116",
        "<ds:XPath>count(//. | //@* | //namespace::*) &gt; 0</ds:XPath>",
    )
}

/// The hostile classes, as (name, signature element).
fn hostile_signatures(canary: &Canary) -> Vec<(&'static str, String)> {
    let std_t = format!("{}{}", transform(ENVELOPED, ""), transform(EXC_C14N, ""));
    vec![
        (
            "http reference",
            signature(&canary.url("/ssrf"), &transform(EXC_C14N, ""), "", ""),
        ),
        (
            "file:///dev/zero reference",
            signature("file:///dev/zero", &transform(EXC_C14N, ""), "", ""),
        ),
        (
            "large local file reference",
            signature(&large_local_file(), &transform(EXC_C14N, ""), "", ""),
        ),
        (
            "Manifest in an Object",
            signature(
                "#obj",
                "",
                "",
                &format!(
                    r#"<ds:Object Id="obj"><ds:Manifest Id="m"><ds:Reference URI="{}"><ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><ds:DigestValue>AAAA</ds:DigestValue></ds:Reference></ds:Manifest></ds:Object>"#,
                    canary.url("/manifest")
                ),
            ),
        ),
        (
            "XSLT transform",
            signature("", &xslt_fetching(&canary.url("/xslt")), "", ""),
        ),
        ("XPath transform", signature("", &xpath_transform(), "", "")),
        (
            "RetrievalMethod",
            signature(
                "#_r1",
                &std_t,
                &format!(
                    r#"<ds:RetrievalMethod URI="{}" Type="http://www.w3.org/2000/09/xmldsig#X509Data"/>"#,
                    canary.url("/key")
                ),
                "",
            ),
        ),
    ]
}

fn idp_cert() -> samael::crypto::CertificateDer {
    let (_, pem) =
        storegate::federation::saml::sp::generate_key_and_cert("hostile-idp").expect("cert");
    storegate::federation::saml::cert_der_from_pem(&pem).expect("der")
}

#[test]
fn libxmlsec_never_dereferences_or_transforms_outside_the_document() {
    let canary = Canary::new();
    let cert = idp_cert();
    for (name, sig) in hostile_signatures(&canary) {
        let doc = response_with(&sig);
        let started = Instant::now();
        let outcome = Crypto::reduce_xml_to_signed_with_allowed_algorithms(
            &doc,
            std::slice::from_ref(&cert),
            ReduceMode::ValidateAndMarkNoAncestors,
            None,
        );
        let took = started.elapsed();
        assert!(outcome.is_err(), "{name}: refused inside libxmlsec");
        assert!(took < Duration::from_secs(1), "{name}: took {took:?}");
        assert_eq!(canary.connections(), 0, "{name}: nothing fetched");
    }
}

/// The same restriction holds on the plain `verify_signed_xml` path and for a signature whose
/// Reference is to a remote URL with no transforms at all.
#[test]
fn libxmlsec_refuses_a_bare_remote_reference_on_every_entry_point() {
    let canary = Canary::new();
    let cert = idp_cert();
    let doc = response_with(&signature(&canary.url("/bare"), "", "", ""));
    assert!(Crypto::verify_signed_xml(&doc, &cert, Some("ID")).is_err());
    assert!(
        Crypto::reduce_xml_to_signed_with_allowed_algorithms(
            &doc,
            std::slice::from_ref(&cert),
            ReduceMode::PreDigest,
            None
        )
        .is_err()
    );
    assert_eq!(canary.connections(), 0);
}

/// Replaces the Reference of the first signature in `xml` by `sig_from(original signature)`.
fn swap_signature(xml: &str, new_sig: impl Fn(&str) -> String) -> String {
    let start = xml.find("<ns2:Signature").expect("a signature");
    let end = xml[start..].find("</ns2:Signature>").expect("end") + start + 16;
    format!(
        "{}{}{}",
        &xml[..start],
        new_sig(&xml[start..end]),
        &xml[end..]
    )
}

/// The signed assertion's `URI="#..."` replaced by `uri`.
fn with_reference(sig: &str, uri: &str) -> String {
    let at = sig.find("URI=\"").expect("URI") + 5;
    let end = sig[at..].find('"').expect("end") + at;
    format!("{}{}{}", &sig[..at], uri, &sig[end..])
}

async fn healthy(gw: &Gateway) {
    let r = reqwest::get(gw.url("/healthz")).await.expect("healthz");
    assert_eq!(r.status(), 200, "the gateway is alive");
}

/// One started sign-in per variant, the IdP's real signed response changed by `mutate`, posted;
/// refused with `reason`, in under a second, nothing fetched, the gateway alive.
async fn acs_refuses(
    idp: &Idp,
    gw: &Gateway,
    canary: &Canary,
    variants: Vec<Variant>,
    reason: &str,
) {
    for (name, mutate) in variants {
        let b = Browser::new();
        let s = begin(&b, gw, "/").await;
        let xml = signed_xml(idp, &s, |_| {});
        let hostile = mutate(&xml);
        assert_ne!(hostile, xml, "{name}: the variant changed the response");
        let started = Instant::now();
        let resp = post(&b, &s, &b64(&hostile)).await;
        let took = started.elapsed();
        assert_refused(&b, gw, resp, 401, reason).await;
        assert!(took < Duration::from_secs(1), "{name}: took {took:?}");
        assert_eq!(canary.connections(), 0, "{name}: nothing fetched");
        healthy(gw).await;
    }
}

type Variant = (String, Box<dyn Fn(&str) -> String>);

fn variant(name: &str, f: impl Fn(&str) -> String + 'static) -> Variant {
    (name.to_owned(), Box::new(f))
}

#[tokio::test]
async fn acs_refuses_references_outside_the_document_without_fetching_anything() {
    let canary = Canary::new();
    let idp = Idp::new("hostile-refs", 1);
    let gw = start_gateway(&idp, "", None).await;
    let mut variants = Vec::new();
    for uri in [
        canary.url("/latest/meta-data/"),
        "file:///dev/zero".to_owned(),
        large_local_file(),
        "#_another_id".to_owned(),
        "#xpointer(/)".to_owned(),
    ] {
        variants.push(variant(&format!("reference {uri}"), move |xml| {
            swap_signature(xml, |sig| with_reference(sig, &uri))
        }));
    }
    acs_refuses(&idp, &gw, &canary, variants, "saml_signature_shape").await;
}

#[tokio::test]
async fn acs_refuses_object_manifest_xslt_xpath_and_retrieval_method() {
    let canary = Canary::new();
    let idp = Idp::new("hostile-shapes", 1);
    let gw = start_gateway(&idp, "", None).await;
    let manifest = format!(
        r#"<ns2:Object Id="obj"><ns2:Manifest><ns2:Reference URI="{}"><ns2:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><ns2:DigestValue>AAAA</ns2:DigestValue></ns2:Reference></ns2:Manifest></ns2:Object></ns2:Signature>"#,
        canary.url("/manifest")
    );
    let xslt = xslt_fetching(&canary.url("/xslt")).replace("ds:", "ns2:");
    let xpath = xpath_transform().replace("ds:", "ns2:");
    let retrieval = format!(
        r#"<ns2:KeyInfo><ns2:RetrievalMethod URI="{}"/>"#,
        canary.url("/key")
    );
    let variants = vec![
        variant("Manifest in an Object", move |xml| {
            swap_signature(xml, |sig| sig.replace("</ns2:Signature>", &manifest))
        }),
        variant("XSLT transform", move |xml| {
            swap_signature(xml, |sig| {
                sig.replace("<ns2:Transforms>", &format!("<ns2:Transforms>{xslt}"))
            })
        }),
        variant("XPath transform", move |xml| {
            swap_signature(xml, |sig| {
                sig.replace("<ns2:Transforms>", &format!("<ns2:Transforms>{xpath}"))
            })
        }),
        variant("RetrievalMethod", move |xml| {
            swap_signature(xml, |sig| sig.replace("<ns2:KeyInfo>", &retrieval))
        }),
    ];
    acs_refuses(&idp, &gw, &canary, variants, "saml_signature_shape").await;
}

#[tokio::test]
async fn acs_refuses_documents_in_another_encoding() {
    let canary = Canary::new();
    let idp = Idp::new("hostile-encoding", 1);
    let gw = start_gateway(&idp, "", None).await;
    let declared = |enc: &'static str| {
        variant(&format!("declared {enc}"), move |xml| {
            let body = xml.find("?>").map_or(xml, |i| &xml[i + 2..]);
            format!("<?xml version=\"1.0\" encoding=\"{enc}\"?>{body}")
        })
    };
    let variants = vec![
        declared("UTF-7"),
        declared("UTF-16"),
        declared("ISO-8859-1"),
    ];
    acs_refuses(&idp, &gw, &canary, variants, "saml_not_utf8").await;

    // Really UTF-16 (with its byte-order mark): refused before any parser sees it.
    let b = Browser::new();
    let s = begin(&b, &gw, "/").await;
    let xml = signed_xml(&idp, &s, |_| {});
    let mut utf16 = vec![0xFF, 0xFE];
    for unit in xml.encode_utf16() {
        utf16.extend_from_slice(&unit.to_le_bytes());
    }
    let resp = post(
        &b,
        &s,
        &base64::engine::general_purpose::STANDARD.encode(utf16),
    )
    .await;
    assert_refused(&b, &gw, resp, 401, "saml_not_utf8").await;
    healthy(&gw).await;
}

/// A client bound to its own loopback address (127.0.0.0/8 is all local): the many addresses of
/// a distributed attack, each within the per-address sign-in rate limit.
fn client_from(n: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 1, n]))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// One anonymous hostile sign-in: start one (which anyone can), then post `saml_response`.
async fn hostile_post(gw: &Gateway, n: u8, saml_response: String) -> u16 {
    let c = client_from(n);
    let login = c
        .get(gw.url(&format!(
            "/login?idp={}",
            crate::support::saml_idp::SAML_IDP
        )))
        .send()
        .await
        .expect("login");
    let cookie = login
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("storegate_saml_pending="))
        .and_then(|v| v.split(';').next())
        .expect("pending cookie")
        .to_owned();
    let to = login
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| reqwest::Url::parse(v).ok())
        .expect("redirect to the IdP");
    let relay = to
        .query_pairs()
        .find(|(k, _)| k == "RelayState")
        .map(|(_, v)| v.into_owned())
        .expect("RelayState");
    c.post(gw.url("/saml/acs"))
        .header(reqwest::header::COOKIE, cookie)
        .header(reqwest::header::ORIGIN, IDP_ORIGIN)
        .form(&[("SAMLResponse", saml_response), ("RelayState", relay)])
        .send()
        .await
        .expect("post")
        .status()
        .as_u16()
}

#[tokio::test]
async fn fifty_concurrent_hostile_posts_do_not_starve_a_normal_sign_in() {
    let canary = Canary::new();
    let idp = Idp::new("hostile-flood", 1);
    let gw = start_gateway(&idp, "", None).await;
    let b = Browser::new();
    let s: Started = begin(&b, &gw, "/").await;
    let good = b64(&signed_xml(&idp, &s, |_| {}));

    // Hostile inputs of every kind that reaches the verifier or the prescan: a document near the
    // size limit whose signature is well formed but wrong (the most work an anonymous post can
    // cause: parse, digest, one RSA check per metadata key), remote and /dev/zero references.
    // Signed with a key the metadata does not name, padded to ~40 KB.
    let mut forged = signed_xml(&idp, &s, |r| {
        r["idp_key"] = json!(idp.other_key);
        r["idp_cert"] = json!(idp.other_cert);
        r["attributes"]["padding"] = json!(vec!["x".repeat(1000); 36]);
    });
    assert!(
        forged.len() > 40_000,
        "near the 64 KiB body limit once base64-encoded"
    );
    forged = forged.replace("mia@corp.example", "boss@corp.example");
    let zero = swap_signature(&forged, |sig| with_reference(sig, "file:///dev/zero"));
    let remote = swap_signature(&forged, |sig| with_reference(sig, &canary.url("/flood")));

    let mut attackers = Vec::new();
    for n in 0..50u8 {
        let doc = match n % 3 {
            0 => forged.clone(),
            1 => zero.clone(),
            _ => remote.clone(),
        };
        attackers.push((n, b64(&doc)));
    }
    let gw = std::sync::Arc::new(gw);
    let mut tasks = tokio::task::JoinSet::new();
    for (n, doc) in attackers {
        let gw = std::sync::Arc::clone(&gw);
        tasks.spawn(async move { hostile_post(&gw, 10 + n, doc).await });
    }
    // The person signing in meanwhile.
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Not starved means served, not turned away as busy (503 saml_busy) or timed out; how long
    // it took is a figure for the benches, not an assertion on a shared machine.
    let resp = post(&b, &s, &good).await;
    assert_eq!(resp.status(), 303, "hops:\n{}", b.hops_text());
    let mut statuses = Vec::new();
    while let Some(r) = tasks.join_next().await {
        statuses.push(r.expect("attacker task"));
    }
    assert_eq!(statuses.len(), 50);
    assert!(
        statuses.iter().all(|s| *s == 401),
        "every hostile post refused with 401: {statuses:?}"
    );
    assert_eq!(canary.connections(), 0, "nothing fetched");
    let events = gw.audit_events().await;
    let refused = |reason: &str| {
        events
            .iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .count()
    };
    assert_eq!(refused("saml_signature"), 17, "forged: wrong key");
    assert_eq!(refused("saml_signature_shape"), 33, "references outside");
    healthy(&gw).await;
}

/// A LogoutRequest naming the IdP (its entity ID is public), with `signature` inside.
fn logout_request(gw: &Gateway, signature: &str) -> String {
    format!(
        r#"<samlp:LogoutRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" ID="_lr1" Version="2.0" IssueInstant="{}" Destination="{}"><saml:Issuer>{IDP_ENTITY}</saml:Issuer>{signature}<saml:NameID>mia@corp.example</saml:NameID></samlp:LogoutRequest>"#,
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        gw.url("/saml/slo")
    )
}

fn deflate_b64(xml: &str) -> String {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(xml.as_bytes()).expect("deflate");
    base64::engine::general_purpose::STANDARD.encode(e.finish().expect("deflate"))
}

async fn assert_slo_refused(gw: &Gateway, resp: reqwest::Response, reason: &str, what: &str) {
    assert_eq!(resp.status(), 400, "{what}");
    let events = gw.audit_events().await;
    let ev = events.last().unwrap_or_else(|| panic!("{what}: audited"));
    assert_eq!(ev.reason.as_deref(), Some(reason), "{what}: {ev:?}");
}

#[tokio::test]
async fn slo_refuses_the_same_classes_over_post_and_redirect_without_a_cookie() {
    let canary = Canary::new();
    let idp = Idp::new("hostile-slo", 1);
    let gw = start_gateway(&idp, "", None).await;
    let anonymous = client_from(200);
    let mut classes = hostile_signatures(&canary);
    // On a LogoutRequest the root is `_lr1`: give the shapes that name the root its ID.
    for (_, sig) in classes.iter_mut() {
        *sig = sig.replace("#_r1", "#_lr1");
    }
    for (name, sig) in classes {
        let doc = logout_request(&gw, &sig);
        let started = Instant::now();
        let resp = anonymous
            .post(gw.url("/saml/slo"))
            .header(reqwest::header::ORIGIN, IDP_ORIGIN)
            .form(&[("SAMLRequest", b64(&doc))])
            .send()
            .await
            .expect("post");
        assert!(started.elapsed() < Duration::from_secs(1), "{name}");
        assert_slo_refused(&gw, resp, "saml_signature_shape", &format!("POST {name}")).await;

        // Redirect: the query signature is checked before the XML is read, but the Issuer is
        // read first to pick the keys: the prescan refuses the same shapes there.
        let query = format!(
            "SAMLRequest={}&SigAlg={}&Signature=AAAA",
            urlencode(&deflate_b64(&doc)),
            urlencode("http://www.w3.org/2001/04/xmldsig-more#rsa-sha256")
        );
        let resp = anonymous
            .get(gw.url(&format!("/saml/slo?{query}")))
            .send()
            .await
            .expect("get");
        assert_slo_refused(&gw, resp, "saml_signature_shape", &format!("GET {name}")).await;
        assert_eq!(canary.connections(), 0, "{name}: nothing fetched");
        healthy(&gw).await;
    }
    // Other encodings, both bindings.
    let utf7 = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-7\"?>{}",
        logout_request(&gw, "")
    );
    let resp = anonymous
        .post(gw.url("/saml/slo"))
        .form(&[("SAMLRequest", b64(&utf7))])
        .send()
        .await
        .expect("post");
    assert_slo_refused(&gw, resp, "saml_not_utf8", "POST UTF-7").await;
    let resp = anonymous
        .get(gw.url(&format!(
            "/saml/slo?SAMLRequest={}",
            urlencode(&deflate_b64(&utf7.replace("UTF-7", "UTF-16")))
        )))
        .send()
        .await
        .expect("get");
    assert_slo_refused(&gw, resp, "saml_not_utf8", "GET UTF-16").await;
    healthy(&gw).await;
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The costliest documents an anonymous POST can make the verifier work on stay within a small
/// multiple of a normal response: every element, namespace declaration and C14N prefix costs
/// linear work, and the size limit bounds them all. (A bound against hangs, not a benchmark: the
/// figures are printed for the record.)
#[test]
fn pathological_documents_cost_about_what_a_normal_one_costs() {
    let cert = idp_cert();
    let verify = |doc: &str| {
        let started = Instant::now();
        let pre = storegate::federation::saml::prescan::prescan(doc, false);
        let reduced = pre.is_ok().then(|| {
            Crypto::reduce_xml_to_signed_with_allowed_algorithms(
                doc,
                std::slice::from_ref(&cert),
                ReduceMode::ValidateAndMarkNoAncestors,
                None,
            )
        });
        assert!(
            !matches!(reduced, Some(Ok(_))),
            "a junk signature never verifies"
        );
        (started.elapsed(), pre.is_ok())
    };
    let std_t = format!("{}{}", transform(ENVELOPED, ""), transform(EXC_C14N, ""));
    let normal = response_with(&signature("#_r1", &std_t, "", ""));
    // What fits in the 64 KiB POST body once base64-encoded (the prescan's own limit, 256 KiB,
    // bounds the other entry points).
    let limit = 46 * 1024;
    // Many small elements, each declaring namespaces, just under the size limit.
    let many = (0..)
        .map(|i| format!(r#"<saml:AttributeValue xmlns:a{i}="urn:x:{i}" xmlns:b{i}="urn:y:{i}">v</saml:AttributeValue>"#))
        .scan(0usize, |len, e| {
            *len += e.len();
            (*len < limit - 8 * 1024).then_some(e)
        })
        .collect::<String>();
    let wide = response_with(&signature("#_r1", &std_t, "", "")).replace(
        "<saml:Issuer>https://iam.corp.example/nidp/saml2/metadata</saml:Issuer></saml:Assertion>",
        &format!(
            "<saml:Issuer>{IDP_ENTITY}</saml:Issuer><saml:AttributeStatement><saml:Attribute Name=\"x\">{many}</saml:Attribute></saml:AttributeStatement></saml:Assertion>"
        ),
    );
    // The longest exclusive-C14N prefix list the prescan accepts, over the same elements (a
    // longer one is refused: C14N work grows with elements times prefixes).
    let prefixes = (0..32).map(|i| format!("a{i} ")).collect::<String>();
    let prefix_t = format!(
        "{}{}",
        transform(ENVELOPED, ""),
        transform(
            EXC_C14N,
            &format!(r#"<ec:InclusiveNamespaces xmlns:ec="{EXC_C14N}" PrefixList="{prefixes}"/>"#)
        )
    );
    let wide_prefixes = wide
        .replace(&std_t, &prefix_t)
        .replacen(&many[..many.len() / 2], "", 1);
    // Nesting to the depth limit.
    let deep = normal.replace(
        "</saml:Assertion>",
        &format!(
            "{}{}</saml:Assertion>",
            "<saml:Advice>".repeat(40),
            "</saml:Advice>".repeat(40)
        ),
    );
    let (base, ok) = verify(&normal);
    assert!(ok, "the normal shape passes the prescan");
    let mut worst = base;
    for (name, doc) in [
        ("wide", &wide),
        ("prefixes", &wide_prefixes),
        ("deep", &deep),
    ] {
        assert!(doc.len() <= limit, "{name}: within the limit");
        let (took, passed) = verify(doc);
        eprintln!(
            "{name}: {} bytes, prescan {}, {took:?} (normal {base:?})",
            doc.len(),
            if passed { "passed" } else { "refused" }
        );
        assert!(took < Duration::from_secs(1), "{name}: {took:?}");
        worst = worst.max(took);
    }
    eprintln!(
        "worst / normal: {:.1}x",
        worst.as_secs_f64() / base.as_secs_f64()
    );
}

/// libxml2 reads every document as the same UTF-8 characters, every time, on every thread. The
/// vendored samael once passed libxml2 an encoding name that had already been freed: about one
/// parse in hundreds then read garbage as the encoding (seen as an SP that could not sign its own
/// metadata). A non-ASCII character under the signature makes any other reading fail the digest.
#[test]
fn libxml2_reads_documents_as_utf8_on_every_parse() {
    let (key_pem, cert_pem) =
        storegate::federation::saml::sp::generate_key_and_cert("utf8").expect("key");
    let key = openssl::pkey::PKey::private_key_from_pem(key_pem.as_bytes()).expect("key");
    let cert = storegate::federation::saml::cert_der_from_pem(&cert_pem).expect("der");
    let template = format!(
        r##"<r xmlns="urn:x" ID="_x"><ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo><ds:CanonicalizationMethod Algorithm="{EXC_C14N}"/><ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/><ds:Reference URI="#_x"><ds:Transforms><ds:Transform Algorithm="{ENVELOPED}"/><ds:Transform Algorithm="{EXC_C14N}"/></ds:Transforms><ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><ds:DigestValue></ds:DigestValue></ds:Reference></ds:SignedInfo><ds:SignatureValue></ds:SignatureValue></ds:Signature><v>Zoë Ångström 東京</v></r>"##
    );
    let signed =
        Crypto::sign_xml(&template, &key.private_key_to_der().expect("der")).expect("signs");
    let signed = std::sync::Arc::new(signed);
    let cert = std::sync::Arc::new(cert);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (signed, cert) = (signed.clone(), cert.clone());
            std::thread::spawn(move || {
                (0..500)
                    .filter(|_| {
                        // Churn the allocator between parses, as a busy server does.
                        let noise: Vec<String> = (0..16).map(|i| "x".repeat(i * 7)).collect();
                        drop(noise);
                        Crypto::verify_signed_xml(signed.as_bytes(), &cert, Some("ID")).is_err()
                    })
                    .count()
            })
        })
        .collect();
    let failures: usize = threads.into_iter().map(|t| t.join().expect("thread")).sum();
    assert_eq!(failures, 0, "of 2,000 verifications of one signed document");
}
