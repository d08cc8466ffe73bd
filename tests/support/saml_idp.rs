//! The SAML IdP side of a sign-in, for the integration tests: the IdP's keys and metadata, its
//! answers through pysaml2 ([`super::saml_peer`]), a gateway configured for it, and the browser's
//! steps (begin at `/login`, post to the ACS cross-site like an auto-submit form, single logout).
//! Moved here from tests/it/saml.rs so that the SAML test files hold tests only.

use std::io::Read;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::{Value, json};
use storegate::audit::Outcome;

use super::browser::{Browser, location, query_param};
use super::harness::{Gateway, Opts, Reserved, assert_not_signed_in};
use super::redis::RedisServer;
use super::saml_peer;
use super::wait;

pub const IDP_ENTITY: &str = "https://iam.corp.example/nidp/saml2/metadata";
pub const IDP_SSO: &str = "https://iam.corp.example/nidp/saml2/sso";
pub const IDP_ORIGIN: &str = "https://iam.corp.example";
pub const SAML_IDP: &str = "opentext-saml";
pub const EMAIL_FORMAT: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress";

/// A scratch folder per test.
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "storegate-saml-{name}-{}-{}",
        std::process::id(),
        storegate::federation::saml::random_hex(4)
    ));
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

pub fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

pub fn cert_b64(pem: &str) -> String {
    pem.lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<String>()
}

/// The IdP's keys and metadata, and a way to have pysaml2 answer.
pub struct Idp {
    pub dir: PathBuf,
    pub key: PathBuf,
    pub cert: PathBuf,
    /// A second key pair, not in the metadata unless `rollover`.
    pub other_key: PathBuf,
    pub other_cert: PathBuf,
    pub metadata: PathBuf,
}

impl Idp {
    /// `signing_certs`: which certificates the metadata names: 0 = none, 1 = the main one, 2 =
    /// the main one and the second (rollover).
    pub fn new(name: &str, signing_certs: usize) -> Idp {
        let dir = scratch(name);
        let (k, c) =
            storegate::federation::saml::sp::generate_key_and_cert("idp").expect("idp key");
        let (k2, c2) =
            storegate::federation::saml::sp::generate_key_and_cert("idp-2").expect("idp key 2");
        let key = dir.join("idp.key");
        let cert = dir.join("idp.crt");
        let other_key = dir.join("idp2.key");
        let other_cert = dir.join("idp2.crt");
        write(&key, &k);
        write(&cert, &c);
        write(&other_key, &k2);
        write(&other_cert, &c2);
        let kd = |pem: &str| {
            format!(
                r#"<md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>"#,
                cert_b64(pem)
            )
        };
        let keys = match signing_certs {
            0 => String::new(),
            1 => kd(&c),
            _ => format!("{}{}", kd(&c), kd(&c2)),
        };
        // Like Access Manager's, the EntityDescriptor also carries an SPSSODescriptor.
        let md = format!(
            r#"<?xml version="1.0"?>
<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="{IDP_ENTITY}">
  <md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol" WantAuthnRequestsSigned="true">
    {keys}
    <md:SingleLogoutService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://iam.corp.example/nidp/saml2/slo"/>
    <md:NameIDFormat>{EMAIL_FORMAT}</md:NameIDFormat>
    <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="{IDP_SSO}"/>
    <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="{IDP_SSO}"/>
  </md:IDPSSODescriptor>
  <md:SPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
    <md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="https://iam.corp.example/nidp/saml2/spassertion_consumer" index="0"/>
  </md:SPSSODescriptor>
</md:EntityDescriptor>
"#
        );
        let metadata = dir.join("idp-metadata.xml");
        write(&metadata, &md);
        Idp {
            dir,
            key,
            cert,
            other_key,
            other_cert,
            metadata,
        }
    }

    /// `[saml]` and the SAML `[[idp]]`, with the SP key and certificate in the same folder.
    pub fn toml(&self, idp_extra: &str) -> String {
        let sp_key = self.dir.join("sp.key");
        let sp_cert = self.dir.join("sp.crt");
        if !sp_key.exists() {
            let (k, c) =
                storegate::federation::saml::sp::generate_key_and_cert("sp").expect("sp key");
            write(&sp_key, &k);
            write(&sp_cert, &c);
        }
        format!(
            r#"
[saml]
key_file = "{}"
cert_file = "{}"

[[idp]]
id = "{SAML_IDP}"
display_name = "OpenText (SAML)"
protocol = "saml"
metadata_file = "{}"
clock_skew = "60s"
nameid_format = "{EMAIL_FORMAT}"
{idp_extra}
[idp.attributes]
email = "mail"
given_name = "givenName"
family_name = "sn"
groups = "groupMembership"
group_dn_to_name = true
"#,
            sp_key.display(),
            sp_cert.display(),
            self.metadata.display()
        )
    }

    /// Runs pysaml2 with `req` (see tests/peers/saml/idp.py); returns its stdout.
    pub fn run(&self, mut req: Value) -> String {
        let obj = req.as_object_mut().expect("object");
        obj.entry("idp_entity_id").or_insert(json!(IDP_ENTITY));
        obj.entry("idp_key").or_insert(json!(self.key));
        obj.entry("idp_cert").or_insert(json!(self.cert));
        obj.entry("sp_metadata")
            .or_insert(json!(self.dir.join("sp-metadata.xml")));
        saml_peer::run("idp.py", &req)
    }
}

/// A SAML sign-in started at the gateway, waiting for the IdP's answer.
pub struct Started {
    pub request_id: String,
    pub relay_state: String,
    /// `name=value` of the pending cookie (SameSite=None).
    pub pending_cookie: String,
    pub acs: String,
    pub sp_entity: String,
    /// The AuthnRequest as the IdP reads it (inflated).
    pub request_xml: String,
}

pub fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

pub async fn start_gateway(idp: &Idp, idp_extra: &str, redis: Option<&RedisServer>) -> Gateway {
    start_gateway_with(idp, idp_extra, |o| o.redis_url = redis.map(|r| r.url())).await
}

/// Like [`start_gateway`], with the session store set by `session` (e.g. a Redis Cluster).
pub async fn start_gateway_with(
    idp: &Idp,
    idp_extra: &str,
    session: impl Fn(&mut Opts),
) -> Gateway {
    let reserved = Reserved::new().await;
    let mut o = Opts::new("http://127.0.0.1:9/unused-oidc", "unused", "unused-secret");
    o.extra_toml = idp.toml(idp_extra);
    session(&mut o);
    let gw = Gateway::start(reserved, o).await;
    give_sp_metadata(idp, &gw).await;
    gw
}

/// The IdP learns the SP from its published metadata, as Access Manager does.
pub async fn give_sp_metadata(idp: &Idp, gw: &Gateway) {
    let md = reqwest::get(gw.url("/saml/metadata"))
        .await
        .expect("metadata")
        .text()
        .await
        .expect("metadata text");
    write(&idp.dir.join("sp-metadata.xml"), &md);
}

pub async fn begin(b: &Browser, gw: &Gateway, return_to: &str) -> Started {
    let login = format!("/login?idp={SAML_IDP}&return_to={return_to}");
    begin_at(b, gw, &login).await
}

/// As [`begin`], from the gateway path `login` (e.g. a step-up `/login?..&acr=..`).
pub async fn begin_at(b: &Browser, gw: &Gateway, login: &str) -> Started {
    let resp = b.get(&gw.url(login)).await;
    assert_eq!(resp.status(), 303, "login redirects to the IdP");
    let cookie_header = resp
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("storegate_saml_pending="))
        .expect("pending cookie")
        .to_owned();
    assert!(cookie_header.contains("SameSite=None"), "{cookie_header}");
    assert!(cookie_header.contains("HttpOnly"), "{cookie_header}");
    let pending_cookie = cookie_header
        .split(';')
        .next()
        .expect("name=value")
        .to_owned();
    let to = location(&resp).expect("redirect");
    assert!(to.as_str().starts_with(IDP_SSO), "{to}");
    let relay_state = query_param(&to, "RelayState").expect("RelayState");
    assert!(
        !relay_state.contains('/'),
        "RelayState is an opaque reference, not the return path"
    );
    assert_eq!(
        query_param(&to, "SigAlg").as_deref(),
        Some("http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"),
        "the AuthnRequest is signed with RSA-SHA256"
    );
    let req = query_param(&to, "SAMLRequest").expect("SAMLRequest");
    let deflated = base64::engine::general_purpose::STANDARD
        .decode(req)
        .expect("base64");
    let mut xml = String::new();
    flate2::read::DeflateDecoder::new(&deflated[..])
        .read_to_string(&mut xml)
        .expect("inflate");
    let id_at = xml.find(" ID=\"").expect("ID attribute") + 5;
    let request_id = xml[id_at..xml[id_at..].find('"').expect("end") + id_at].to_owned();
    Started {
        request_id,
        relay_state,
        pending_cookie,
        acs: gw.url("/saml/acs"),
        sp_entity: gw.url("/saml/metadata"),
        request_xml: xml,
    }
}

pub fn user(s: &Started) -> Value {
    json!({
        "acs": s.acs,
        "sp_entity_id": s.sp_entity,
        "in_response_to": s.request_id,
        "name_id": "mia@corp.example",
        "name_id_format": EMAIL_FORMAT,
        "attributes": {
            "mail": ["Mia@Corp.Example"],
            "givenName": ["Mia"],
            "sn": ["Merch"],
            "groupMembership": ["cn=bc-merchandisers,ou=groups,o=corp"],
        },
        "sign_assertion": true,
        "sign_response": false,
    })
}

/// Posts `saml_response` to the ACS like the IdP's auto-submit form (cross-site).
pub async fn post(b: &Browser, s: &Started, saml_response: &str) -> reqwest::Response {
    b.post_form_cross_site_with(
        &s.acs,
        IDP_ORIGIN,
        &[
            ("SAMLResponse", saml_response),
            ("RelayState", &s.relay_state),
        ],
        Some(&s.pending_cookie),
    )
    .await
}

/// Asserts a refusal: status, no session, no token, and the audit reason.
pub async fn assert_refused(
    b: &Browser,
    gw: &Gateway,
    resp: reqwest::Response,
    status: u16,
    reason: &str,
) -> String {
    assert_eq!(resp.status().as_u16(), status, "hops:\n{}", b.hops_text());
    assert_eq!(
        resp.headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let body = resp.text().await.unwrap_or_default();
    assert_not_signed_in(b, gw).await;
    gw.assert_no_token_minted();
    let events = gw.audit_events().await;
    let ev = events
        .iter()
        .rev()
        .find(|e| e.outcome == Outcome::Deny && e.reason.is_some())
        .unwrap_or_else(|| panic!("no denial audited; events: {events:?}"));
    assert_eq!(ev.reason.as_deref(), Some(reason), "audit: {ev:?}");
    body
}

pub fn signed_xml(idp: &Idp, s: &Started, f: impl Fn(&mut Value)) -> String {
    let mut r = user(s);
    r["xml"] = json!(true);
    f(&mut r);
    idp.run(r)
}

pub const IDP_SLO: &str = "https://iam.corp.example/nidp/saml2/slo";

/// Runs tests/peers/saml/slo.py with `req` and parses its JSON answer.
pub fn slo_peer(idp: &Idp, mut req: Value) -> Value {
    let obj = req.as_object_mut().expect("object");
    obj.entry("idp_entity_id").or_insert(json!(IDP_ENTITY));
    obj.entry("idp_key").or_insert(json!(idp.key));
    obj.entry("idp_cert").or_insert(json!(idp.cert));
    obj.entry("sp_metadata")
        .or_insert(json!(idp.dir.join("sp-metadata.xml")));
    serde_json::from_str(&saml_peer::run("slo.py", &req)).expect("json")
}

/// Signs `b` in through the IdP; returns the SessionIndex the IdP put in the assertion.
pub async fn slo_sign_in(idp: &Idp, gw: &Gateway, b: &Browser) -> String {
    let s = begin(b, gw, "/").await;
    let mut req = user(&s);
    req["xml"] = json!(true);
    let xml = idp.run(req);
    let at = xml.find("SessionIndex=\"").expect("SessionIndex") + 14;
    let index = xml[at..at + xml[at..].find('"').expect("end")].to_owned();
    let acs = post(b, &s, &b64(&xml)).await;
    assert_eq!(acs.status(), 303, "hops:\n{}", b.hops_text());
    assert_signed_in(b, gw).await;
    index
}

pub async fn assert_signed_in(b: &Browser, gw: &Gateway) {
    let me = b.get(&gw.url("/api/me")).await;
    assert_eq!(me.status(), 200, "still signed in");
}

pub fn logout_request(gw: &Gateway, binding: &str, extra: Value) -> Value {
    let mut req = json!({
        "op": "request",
        "binding": binding,
        "destination": gw.url("/saml/slo"),
        "name_id": "mia@corp.example",
        "name_id_format": EMAIL_FORMAT,
        "relay_state": "idp-state-1",
    });
    for (k, v) in extra.as_object().expect("object") {
        req[k] = v.clone();
    }
    req
}

/// Serves IdP metadata from memory, as Access Manager serves /nidp/saml2/metadata.
pub struct MetadataServer {
    pub url: String,
    body: std::sync::Arc<std::sync::Mutex<(u16, String)>>,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl MetadataServer {
    pub async fn start(initial: String) -> MetadataServer {
        use axum::http::StatusCode;
        let body = std::sync::Arc::new(std::sync::Mutex::new((200u16, initial)));
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (b, h) = (body.clone(), hits.clone());
        let app = axum::Router::new().route(
            "/nidp/saml2/metadata",
            axum::routing::get(move || {
                let (b, h) = (b.clone(), h.clone());
                async move {
                    h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let (status, text) = b.lock().expect("lock").clone();
                    (StatusCode::from_u16(status).expect("status"), text)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        MetadataServer {
            url: format!("http://{addr}/nidp/saml2/metadata"),
            body,
            hits,
        }
    }

    pub fn serve(&self, status: u16, text: String) {
        *self.body.lock().expect("lock") = (status, text);
    }

    pub fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A gateway whose SAML IdP has `metadata_url` (and no `metadata_file`).
pub async fn start_gateway_with_metadata_url(idp: &Idp, url: &str, idp_extra: &str) -> Gateway {
    let reserved = Reserved::new().await;
    let mut o = Opts::new("http://127.0.0.1:9/unused-oidc", "unused", "unused-secret");
    o.extra_toml = idp.toml(idp_extra).replace(
        &format!("metadata_file = \"{}\"", idp.metadata.display()),
        &format!("metadata_url = \"{url}\""),
    );
    assert!(o.extra_toml.contains("metadata_url"));
    let gw = Gateway::start(reserved, o).await;
    give_sp_metadata(idp, &gw).await;
    gw
}

/// Waits until the gateway has fetched and handled the metadata `server` serves now: two more
/// fetches (the background refresh is sequential, so the first of them was fully handled
/// before the second started).
pub async fn background_refreshes(server: &MetadataServer) {
    background_refreshes_from(server, server.hits()).await;
}

/// Waits until `server` has counted two fetches more than `h`.
pub async fn background_refreshes_from(server: &MetadataServer, h: usize) {
    wait::until(
        "two background metadata fetches",
        std::time::Duration::from_secs(15),
        || async { server.hits() >= h + 2 },
    )
    .await;
}

/// Signs a fresh browser in with the IdP key `key`/`cert`; returns the ACS answer.
pub async fn sign_in_with_key(idp: &Idp, gw: &Gateway, key: &Path, cert: &Path) -> (Browser, u16) {
    let b = Browser::new();
    let s = begin(&b, gw, "/").await;
    let mut req = user(&s);
    req["idp_key"] = json!(key);
    req["idp_cert"] = json!(cert);
    let resp = idp.run(req);
    let acs = post(&b, &s, &resp).await;
    let status = acs.status().as_u16();
    (b, status)
}
