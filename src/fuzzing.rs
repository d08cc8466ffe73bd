//! Fuzz entry points (issue 10, "make every hostile input harmless"): one per attack surface, each
//! calling the production code an attacker's bytes reach, not a copy of it.
//!
//! Two runners drive them: `tests/fuzz.rs` (part of `make test`: replays the committed corpus in
//! `tests/fuzz/corpus/<target>/`, then mutates it for a bounded time) and the cargo-fuzz crate in
//! `fuzz/` (coverage-guided libFuzzer, for longer runs). A panic or a hang is a finding.
//!
//! Every entry returns an outcome label (a reason code, "accepted", ...) so the runners can show
//! how deep the inputs got. Where an outcome would mean a broken check, the entry panics (an
//! oracle): a mutated SAML message accepted with a subject no seed signed, a SCIM PATCH that
//! changed a resource's id.
//!
//! The SAML entries use a [`SamlProvider`] built from the test-only keys in `tests/fuzz/keys`
//! (passed in, so the library carries no key). Its clock skew is a century wide: samael checks
//! issue and expiry times against the wall clock, and the committed responses must stay inside
//! those windows for as long as the corpus lives. The time checks themselves are tested in
//! tests/it/saml.rs; here they must only not crash.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use openssl::pkey::{PKey, Private};
use serde_json::{Value, json};

use crate::clock::{ManualClock, UnixTime};
use crate::config::{self, ClaimMapping, IdpConfig, Protocol, SamlIdp, SamlSp};
use crate::federation::saml::slo::{Inbound, SloMessage};
use crate::federation::saml::{SamlProvider, sp::SpKeys};
use crate::identity::IdpId;
use crate::provisioning::scim::store::{Kind, MemoryStore};
use crate::provisioning::scim::wire::PatchRequest;
use crate::provisioning::scim::{ScimService, filter};
use crate::secret::Secret;

pub const IDP_ENTITY: &str = "https://iam.corp.example/nidp/saml2/metadata";
pub const SP_ENTITY: &str = "https://sso.corp.example/saml/metadata";
pub const ACS: &str = "https://sso.corp.example/saml/acs";
pub const SLO: &str = "https://sso.corp.example/saml/slo";
/// The AuthnRequest ID every seed response answers.
pub const REQUEST_ID: &str = "_fuzz-request-1";
/// The only subject the seed messages carry (signed by the fuzz IdP key).
pub const SIGNED_SUBJECT: &str = "mia@corp.example";
/// The gateway's clock during a fuzz run (December 2026, when the seeds were signed).
pub const NOW: UnixTime = 1_796_200_000;
const WIDE_SKEW: Duration = Duration::from_secs(100 * 365 * 86_400);
const SHA256_SIG: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";

/// The fuzz targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    SamlResponse,
    SloRedirect,
    ScimFilter,
    ScimPatch,
    ConfigLoader,
    /// `GET /auth/verify`: forwarded headers and URI (issue 14).
    ForwardedRequest,
    /// The built-in proxy's header rewriting, both ways (issue 14).
    ProxyHeaders,
    /// `POST /oidc/{idp}/backchannel-logout`: the logout token's parser and claim checks (issue 14).
    LogoutToken,
    /// The GraphQL Account API's answers: `account_api::decode_*` (issue 12).
    AccountApiDecode,
    /// `POST /webhooks/bigcommerce/{id}` after the secret check: `bigcommerce::webhooks::classify` (issue 13).
    WebhookPayload,
    /// `POST /scim/v2/Users|Groups` and `PUT .../{id}`: `ScimService::create` and `replace`.
    ScimResource,
    /// `return_to` (after sign-in) and `to` (launch): `redirect::LocalPath::parse`.
    ReturnTo,
    /// The client address behind trusted proxies: `web::client_ip` (`X-Forwarded-For`).
    ClientIp,
}

impl Target {
    pub const ALL: [Target; 13] = [
        Target::SamlResponse,
        Target::SloRedirect,
        Target::ScimFilter,
        Target::ScimPatch,
        Target::ConfigLoader,
        Target::ForwardedRequest,
        Target::ProxyHeaders,
        Target::LogoutToken,
        Target::AccountApiDecode,
        Target::WebhookPayload,
        Target::ScimResource,
        Target::ReturnTo,
        Target::ClientIp,
    ];

    /// The corpus folder name (`tests/fuzz/corpus/<name>`) and the cargo-fuzz target name.
    pub fn name(self) -> &'static str {
        match self {
            Target::SamlResponse => "saml_response",
            Target::SloRedirect => "slo_redirect",
            Target::ScimFilter => "scim_filter",
            Target::ScimPatch => "scim_patch",
            Target::ConfigLoader => "config_loader",
            Target::ForwardedRequest => "forwarded_request",
            Target::ProxyHeaders => "proxy_headers",
            Target::LogoutToken => "logout_token",
            Target::AccountApiDecode => "account_api_decode",
            Target::WebhookPayload => "webhook_payload",
            Target::ScimResource => "scim_resource",
            Target::ReturnTo => "return_to",
            Target::ClientIp => "client_ip",
        }
    }
}

/// The test-only key material (PEM text) and IdP metadata from `tests/fuzz/keys`.
#[derive(Clone)]
pub struct FuzzKeys {
    pub idp_key_pem: String,
    pub idp_cert_pem: String,
    pub idp_metadata_xml: String,
    pub sp_key_pem: String,
    pub sp_cert_pem: String,
}

impl FuzzKeys {
    /// Reads `idp.key`, `idp.crt`, `idp-metadata.xml`, `sp.key` and `sp.crt` from `dir`.
    pub fn from_dir(dir: &Path) -> Result<FuzzKeys, String> {
        let read = |n: &str| {
            std::fs::read_to_string(dir.join(n))
                .map_err(|e| format!("cannot read {}: {e}", dir.join(n).display()))
        };
        Ok(FuzzKeys {
            idp_key_pem: read("idp.key")?,
            idp_cert_pem: read("idp.crt")?,
            idp_metadata_xml: read("idp-metadata.xml")?,
            sp_key_pem: read("sp.key")?,
            sp_cert_pem: read("sp.crt")?,
        })
    }
}

/// Everything the targets need, built once per process.
pub struct Fuzz {
    saml: SamlProvider,
    idp_key: PKey<Private>,
    files: BTreeMap<&'static str, String>,
}

impl Fuzz {
    pub fn new(keys: &FuzzKeys) -> Result<Fuzz, String> {
        let idp = IdpConfig {
            id: IdpId::new("fuzz-saml"),
            display_name: "fuzz".into(),
            protocol: Protocol::Saml(saml_idp(keys)),
            claims: ClaimMapping::default(),
        };
        let Protocol::Saml(cfg) = &idp.protocol else {
            return Err("not a SAML IdP".into());
        };
        let spc = SamlSp {
            entity_id: SP_ENTITY.into(),
            acs_url: ACS.into(),
            slo_url: SLO.into(),
            metadata_url: SP_ENTITY.into(),
            key_pem: Secret::new(keys.sp_key_pem.clone()),
            cert_pem: keys.sp_cert_pem.clone(),
            sign_metadata: true,
            sign_authn_requests: true,
        };
        let sp_keys = Arc::new(SpKeys::from_pem(&keys.sp_key_pem, &keys.sp_cert_pem)?);
        let saml = SamlProvider::new(&idp.id, cfg, &spc, sp_keys)?;
        let idp_key = PKey::private_key_from_pem(keys.idp_key_pem.as_bytes())
            .map_err(|e| format!("the fuzz IdP key: {e}"))?;
        let files = BTreeMap::from([
            ("sp.key", keys.sp_key_pem.clone()),
            ("sp.crt", keys.sp_cert_pem.clone()),
            ("idp.crt", keys.idp_cert_pem.clone()),
            ("idp-metadata.xml", keys.idp_metadata_xml.clone()),
            ("secret.txt", "fuzz-secret-from-a-file\n".into()),
        ]);
        Ok(Fuzz {
            saml,
            idp_key,
            files,
        })
    }

    /// Runs one input through `target`; returns its outcome label.
    pub fn run(&self, target: Target, data: &[u8]) -> &'static str {
        match target {
            Target::SamlResponse => self.saml_response(data),
            Target::SloRedirect => self.slo_redirect(data),
            Target::ScimFilter => scim_filter(data),
            Target::ScimPatch => scim_patch(data),
            Target::ConfigLoader => self.config_loader(data),
            Target::ForwardedRequest => forwarded_request(data),
            Target::ProxyHeaders => proxy_headers(data),
            Target::LogoutToken => logout_token(data),
            Target::AccountApiDecode => account_api_decode(data),
            Target::WebhookPayload => webhook_payload(data),
            Target::ScimResource => scim_resource(data),
            Target::ReturnTo => return_to(data),
            Target::ClientIp => client_ip(data),
        }
    }

    /// The ACS path: `data` is the Response XML (base64-encoded here, as a browser posts it), or
    /// `b64:` followed by the form value as sent. Prescan, samael/libxmlsec verification and our
    /// checks, exactly as `POST /saml/acs` runs them.
    pub fn saml_response(&self, data: &[u8]) -> &'static str {
        let form_value = match data.strip_prefix(b"b64:") {
            Some(raw) => String::from_utf8_lossy(raw).into_owned(),
            None => base64::engine::general_purpose::STANDARD.encode(data),
        };
        match self
            .saml
            .verify_blocking(&form_value, Some(REQUEST_ID), NOW)
        {
            Ok(v) => {
                // Oracle: only the fuzz IdP's key signs, and it signed only this subject. Any
                // other accepted subject is a signature bypass.
                assert_eq!(
                    v.name_id, SIGNED_SUBJECT,
                    "a SAML response was accepted with a subject no seed signed"
                );
                "accepted"
            }
            Err(e) => e.reason(),
        }
    }

    /// The SLO endpoint. `data` is the raw query string of a Redirect GET; or `xml:` + a logout
    /// message that is deflated and signed here with the IdP key (a valid signature, so the
    /// inflate cap, prescan and checks behind the signature are reached); or `post:` + XML for
    /// the POST binding (libxmlsec).
    pub fn slo_redirect(&self, data: &[u8]) -> &'static str {
        let (inbound, oracle) = if let Some(xml) = data.strip_prefix(b"xml:") {
            match self.signed_redirect(xml) {
                Ok(q) => (Inbound::Redirect(q), false),
                Err(_) => return "harness_sign_failed",
            }
        } else if let Some(xml) = data.strip_prefix(b"post:") {
            let is_request = !contains(xml, b"LogoutResponse");
            (
                Inbound::Post {
                    message: base64::engine::general_purpose::STANDARD.encode(xml),
                    is_request,
                    relay_state: Some("idp-state-1".into()),
                },
                true,
            )
        } else {
            (
                Inbound::Redirect(String::from_utf8_lossy(data).into_owned()),
                true,
            )
        };
        match self.saml.verify_slo_blocking(inbound, NOW) {
            Ok(SloMessage::Request(r)) => {
                if oracle {
                    assert_eq!(
                        r.name_id, SIGNED_SUBJECT,
                        "a LogoutRequest was accepted for a subject no seed signed"
                    );
                }
                "accepted_request"
            }
            Ok(SloMessage::Response(_)) => "accepted_response",
            Err(e) => e.reason(),
        }
    }

    /// What an IdP sends: `SAMLRequest` (or `SAMLResponse`) = base64(DEFLATE(xml)), RelayState,
    /// SigAlg, and the RSA-SHA256 signature over them with the IdP key.
    fn signed_redirect(&self, xml: &[u8]) -> Result<String, String> {
        let e = |e: std::io::Error| e.to_string();
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(xml).map_err(e)?;
        let deflated = z.finish().map_err(e)?;
        let msg = base64::engine::general_purpose::STANDARD.encode(deflated);
        let name = if contains(xml, b"LogoutResponse") {
            "SAMLResponse"
        } else {
            "SAMLRequest"
        };
        let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let signed = format!(
            "{name}={}&RelayState=idp-state-1&SigAlg={}",
            enc(&msg),
            enc(SHA256_SIG)
        );
        let o = |e: openssl::error::ErrorStack| e.to_string();
        let mut signer =
            openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &self.idp_key)
                .map_err(o)?;
        let sig = signer.sign_oneshot_to_vec(signed.as_bytes()).map_err(o)?;
        let sig = base64::engine::general_purpose::STANDARD.encode(sig);
        Ok(format!("{signed}&Signature={}", enc(&sig)))
    }

    /// `storegate check` / start-up: TOML text through the file shape, validation and
    /// diagnostics. Files and environment variables come from memory (the fuzz keys and
    /// metadata), so no input touches the file system.
    pub fn config_loader(&self, data: &[u8]) -> &'static str {
        let text = String::from_utf8_lossy(data);
        let env = MemoryEnv { files: &self.files };
        match config::load_str(&text, "fuzz.toml", &env) {
            Ok(c) => {
                for w in &c.warnings {
                    let _ = w.message.len();
                }
                "valid"
            }
            Err(d) => {
                // Rendering maps every problem to its line: part of the path under test.
                let rendered = d.to_string();
                assert!(!d.items.is_empty(), "refused without a diagnostic");
                let _ = rendered.len();
                "invalid"
            }
        }
    }
}

fn saml_idp(keys: &FuzzKeys) -> SamlIdp {
    SamlIdp {
        metadata_xml: keys.idp_metadata_xml.clone(),
        metadata_url: None,
        metadata_refresh: Duration::from_secs(3600),
        entity_id: IDP_ENTITY.into(),
        dangerous_allow_sha1: false,
        allow_unsolicited: false,
        clock_skew: WIDE_SKEW,
        nameid_format: None,
        authn_context: config::AuthnContextRule::default(),
        metadata_signing_cert: None,
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Environment variables and files from memory.
struct MemoryEnv<'a> {
    files: &'a BTreeMap<&'static str, String>,
}

impl config::Environment for MemoryEnv<'_> {
    fn var(&self, name: &str) -> Option<String> {
        // Every `${NAME}` is set, with a value that suits the key it is likely used in.
        let upper = name.to_ascii_uppercase();
        if upper.contains("REDIS") {
            Some("redis://127.0.0.1:6379".into())
        } else if upper.contains("URL") || upper.contains("ISSUER") || upper.contains("BASE") {
            Some("https://env.example/".into())
        } else if upper.contains("UNSET") {
            None
        } else {
            Some("fuzz-secret-from-the-environment".into())
        }
    }
    fn read_file(&self, path: &Path) -> std::io::Result<String> {
        // The fuzz keys and metadata by file name; any other path holds a secret, unless its
        // name says it is missing.
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        match self.files.get(name) {
            Some(text) => Ok(text.clone()),
            None if name.contains("missing") => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "not in the fuzz file set",
            )),
            None => Ok("fuzz-secret-from-a-file\n".into()),
        }
    }
}

/// A user and a group the way the SCIM service renders them, for filters to match against.
fn sample_resources() -> [Value; 2] {
    [
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User",
                        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
            "id": "u1", "externalId": "sub-1", "userName": "mia@corp.example", "active": true,
            "name": {"givenName": "Mia", "familyName": "Merch", "formatted": "Mia Merch"},
            "displayName": "Mia Merch", "title": null,
            "emails": [{"value": "mia@corp.example", "type": "work", "primary": true},
                       {"value": "mia@home.example", "type": "home"}],
            "groups": [{"value": "g1", "display": "bc-merchandisers"}],
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":
                {"employeeNumber": "42", "department": "Merch", "manager": {"value": "u2"}},
            "meta": {"resourceType": "User", "created": "2026-01-01T00:00:00Z",
                     "lastModified": "2026-01-02T00:00:00Z", "version": "W/\"1\""}
        }),
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "id": "g1", "displayName": "bc-merchandisers", "externalId": "cn=bc-merchandisers",
            "members": [{"value": "u1", "display": "mia@corp.example", "type": "User"}],
            "meta": {"resourceType": "Group", "created": "2026-01-01T00:00:00Z"}
        }),
    ]
}

/// `POST /oidc/{idp}/backchannel-logout`: `data` is either `raw:` and the form value as sent, or
/// three lines (header JSON, payload JSON, signature text) that are base64url-encoded and joined
/// here, so mutations reach the claim checks instead of breaking the base64. Parse, header check
/// and claim checks, as the receiver runs them before the signature (which needs the IdP's
/// keys; the checks after it are the ones exercised here). Oracle: nothing with a nonce, without
/// the logout event or without sid and sub is ever accepted.
pub fn logout_token(data: &[u8]) -> &'static str {
    use crate::federation::logout_token::{
        BACKCHANNEL_EVENT, Expected, check_claims, check_header, parse,
    };
    let text = String::from_utf8_lossy(data);
    let raw = match text.strip_prefix("raw:") {
        Some(r) => r.to_owned(),
        None => {
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let mut lines = text.splitn(3, '\n');
            let header = lines.next().unwrap_or_default();
            let payload = lines.next().unwrap_or_default();
            let sig = lines.next().unwrap_or_default();
            format!(
                "{}.{}.{}",
                b64.encode(header),
                b64.encode(payload),
                b64.encode(sig)
            )
        }
    };
    let parsed = match parse(&raw) {
        Ok(p) => p,
        Err(e) => return e.reason(),
    };
    if let Err(e) = check_header(&parsed, &["RS256".to_owned(), "ES256".to_owned()]) {
        return e.reason();
    }
    let expected = Expected {
        issuer: "https://iam.corp.example/nidp/oauth/nam",
        client_id: "storegate",
        now: NOW,
        skew: 60,
        max_age: 300,
    };
    match check_claims(&parsed.claims, &expected) {
        Err(e) => e.reason(),
        Ok(order) => {
            let c = &parsed.claims;
            assert!(
                !c.contains_key("nonce"),
                "accepted a logout token with a nonce"
            );
            assert!(
                c.get("events")
                    .and_then(|e| e.get(BACKCHANNEL_EVENT))
                    .is_some(),
                "accepted a logout token without the back-channel event"
            );
            assert!(
                order.sid.is_some() || order.sub.is_some(),
                "accepted without sid and sub"
            );
            "accepted"
        }
    }
}

/// `GET /auth/verify`: `data` is header lines (`name: value`), then an optional line
/// `suffix: /path` (Envoy's path form). The parser, then the route decision's lookup and the
/// return-URL check on what it produced, as the handler runs them.
pub fn forwarded_request(data: &[u8]) -> &'static str {
    use crate::forward::request::ForwardedRequest;
    use crate::forward::return_url::RouteReturn;
    use crate::policy::route::{RouteRule, RouteTable};
    let text = String::from_utf8_lossy(data);
    let mut headers = axum::http::HeaderMap::new();
    let mut suffix = None;
    for line in text.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name == "suffix" {
            suffix = Some(value.trim().to_owned());
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            axum::http::HeaderName::from_bytes(name.trim().as_bytes()),
            axum::http::HeaderValue::from_bytes(value.trim().as_bytes()),
        ) {
            headers.append(n, v);
        }
    }
    let routes = RouteTable::new(vec![
        RouteRule {
            name: "desk".into(),
            host: "orders.example.com".into(),
            path_prefix: "/".into(),
            conditions: Default::default(),
            require_acr: None,
        },
        RouteRule {
            name: "admin".into(),
            host: "orders.example.com".into(),
            path_prefix: "/admin".into(),
            conditions: Default::default(),
            require_acr: None,
        },
    ]);
    match ForwardedRequest::from_headers(&headers, suffix.as_deref(), "GET") {
        Err(e) => e.code(),
        Ok(req) => {
            let route = routes.find(&req.host, &req.uri).map(|r| r.name.as_str());
            let back = RouteReturn::parse(&req.original_url(), &routes, true);
            // A return URL must land on the host the request named (a default port aside).
            if let Ok(b) = &back {
                let host = crate::policy::route::strip_port(&req.host);
                assert!(
                    b.as_str().contains(host),
                    "return URL {} left host {}",
                    b.as_str(),
                    req.host
                );
            }
            match (route, back.is_ok()) {
                (Some("admin"), _) => "route_admin",
                (Some(_), true) => "route_desk",
                (Some(_), false) => "route_no_return",
                (None, _) => "no_route",
            }
        }
    }
}

/// The built-in proxy: `data` is a browser's header lines (`name: value`), rewritten for the
/// upstream from an untrusted peer, then the same lines as an upstream's answer rewritten for
/// the browser. Oracles: the upstream gets exactly the gateway's identity token, the peer as
/// `X-Forwarded-For`, the route's host, no session cookie and no header `Connection` named;
/// the browser gets no cookie of the session's name.
pub fn proxy_headers(data: &[u8]) -> &'static str {
    use crate::proxy::headers::{self, Hop};
    use axum::http::{HeaderMap, HeaderName, HeaderValue};
    let text = String::from_utf8_lossy(data);
    let mut incoming = HeaderMap::new();
    for line in text.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_bytes(value.trim().as_bytes()),
        ) {
            incoming.append(n, v);
        }
    }
    let ids = vec!["x-storegate-identity".to_owned(), "x-desk-user".to_owned()];
    let name = HeaderName::from_static("x-desk-user");
    let token = HeaderValue::from_static("the.gateway.token");
    let upgrade = headers::wants_upgrade(&incoming);
    let hop = Hop {
        peer: Some(std::net::IpAddr::from([203, 0, 113, 9])),
        peer_trusted: false,
        proto: "https",
        host: "orders.example.com",
        session_cookie: "storegate_session",
        identity_headers: &ids,
        identity: (&name, &token),
        request_id: "fuzz",
        upgrade,
    };
    let out = headers::to_upstream(&incoming, &hop);
    let all = |h: &HeaderMap, n: &str| -> Vec<String> {
        h.get_all(n)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    };
    assert_eq!(all(&out, "x-desk-user"), ["the.gateway.token"]);
    assert!(out.get("x-storegate-identity").is_none());
    assert_eq!(all(&out, "x-forwarded-for"), ["203.0.113.9"]);
    assert_eq!(all(&out, "x-forwarded-host"), ["orders.example.com"]);
    assert!(
        headers::cookie_value(&out, "storegate_session").is_none(),
        "the session cookie reached the upstream"
    );
    for gone in [
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "proxy-authorization",
    ] {
        assert!(out.get(gone).is_none(), "{gone} reached the upstream");
    }
    if !upgrade {
        assert!(out.get("connection").is_none() && out.get("upgrade").is_none());
    }
    let mut back = incoming;
    headers::to_browser(&mut back, false, "storegate_session");
    assert!(back.get_all("set-cookie").iter().all(|c| {
        c.to_str()
            .ok()
            .and_then(|c| c.split('=').next())
            .map(str::trim)
            != Some("storegate_session")
    }));
    if upgrade { "upgrade" } else { "rewritten" }
}

/// `GET /scim/v2/Users?filter=...`: the filter parser, then matching against a user and a group.
pub fn scim_filter(data: &[u8]) -> &'static str {
    let text = String::from_utf8_lossy(data);
    let _ = filter::parse_attr_path(&text);
    match filter::parse(&text) {
        Ok(f) => {
            let hits = sample_resources()
                .iter()
                .filter(|r| filter::matches(&f, r))
                .count();
            if hits > 0 { "parsed_match" } else { "parsed" }
        }
        Err(_) => "refused",
    }
}

thread_local! {
    static RUNTIME: Option<tokio::runtime::Runtime> =
        tokio::runtime::Builder::new_current_thread().enable_all().build().ok();
}

/// `PATCH /scim/v2/Users/{id}` and `/Groups/{id}`: the JSON body, then [`ScimService::patch`]
/// (every operation, then the resource's validation) on a stored user and on a stored group,
/// then the patched resources read back and listed with a filter.
pub fn scim_patch(data: &[u8]) -> &'static str {
    let Ok(req) = serde_json::from_slice::<PatchRequest>(data) else {
        return "not_a_patch_request";
    };
    RUNTIME.with(|rt| {
        let Some(rt) = rt else {
            panic!("cannot build the tokio runtime of the scim_patch target");
        };
        rt.block_on(patch_both(req))
    })
}

async fn patch_both(req: PatchRequest) -> &'static str {
    const BASE: &str = "https://sso.corp.example/scim/v2";
    let Ok(s) = ScimService::open(Arc::new(MemoryStore), Arc::new(ManualClock::at(NOW))).await
    else {
        panic!("the in-memory SCIM store did not open");
    };
    let [user, group] = sample_resources();
    let strip = |mut v: Value| {
        if let Some(o) = v.as_object_mut() {
            for k in ["id", "meta", "groups"] {
                o.remove(k);
            }
        }
        v
    };
    let (Ok((u, _)), Ok((g, _))) = (
        s.create(Kind::User, strip(user), BASE).await,
        s.create(
            Kind::Group,
            json!({"displayName": "bc-merchandisers"}),
            BASE,
        )
        .await,
    ) else {
        panic!("the SCIM fixtures were refused");
    };
    let uid = u["id"].as_str().unwrap_or_default().to_owned();
    let gid = g["id"].as_str().unwrap_or_default().to_owned();
    let mut group = strip(group);
    group["members"] = json!([{ "value": uid }]);
    if s.replace(Kind::Group, &gid, group, None, BASE)
        .await
        .is_err()
    {
        panic!("the SCIM group fixture was refused");
    }
    let mut applied = 0;
    for (kind, id) in [(Kind::User, &uid), (Kind::Group, &gid)] {
        if let Ok((v, _)) = s.patch(kind, id, req.clone(), None, BASE).await {
            // Oracle: `id` is read-only, whatever the operations say.
            assert_eq!(v["id"].as_str(), Some(id.as_str()), "PATCH changed an id");
            let read = s.get(kind, id, BASE).await;
            assert!(read.is_ok(), "a patched resource cannot be read back");
            applied += 1;
        }
    }
    let q = crate::provisioning::scim::wire::ListQuery {
        filter: Some("userName sw \"m\" or displayName pr".into()),
        ..Default::default()
    };
    let _ = s.list(Kind::User, &q, BASE).await;
    let _ = s.list(Kind::Group, &q, BASE).await;
    match applied {
        0 => "refused",
        1 => "applied_to_one",
        _ => "applied_to_both",
    }
}

/// The GraphQL Account API client's decoding of an answer (issue 12): the first byte picks the
/// document (`byte % 6`: `0` account users, `1` store users, `2`..`5` the four mutations) and,
/// from 0x80 up, a non-200 status (`byte % 5` of 400, 401, 403, 429, 500); the rest is the body.
/// Oracles: a non-200 answer or a body with a non-empty top-level `errors[]` (any occurrence of
/// the key, found by a second reading independent of the decoder's) is never a success; pages
/// hold at most what was asked, cursors are non-empty and bounded; messages are clipped.
pub fn account_api_decode(data: &[u8]) -> &'static str {
    use crate::bigcommerce::account_api::{
        self as api, AccountApiError, MAX_CURSOR, MAX_MESSAGE, MAX_MESSAGES, PAGE_SIZE,
        STORE_PAGE_SIZE, ops,
    };
    let Some((&pick, body)) = data.split_first() else {
        return "empty";
    };
    let status = if pick < 0x80 {
        200
    } else {
        [400, 401, 403, 429, 500][usize::from(pick) % 5]
    };
    let retry = Some("120");
    let cursor_ok = |c: &Option<String>| {
        c.as_ref()
            .is_none_or(|c| !c.is_empty() && c.len() <= MAX_CURSOR)
    };
    let result: Result<&'static str, AccountApiError> = match pick % 6 {
        0 => api::decode_account_users(status, retry, body).map(|p| {
            assert!(p.items.len() <= PAGE_SIZE as usize, "an oversized page");
            assert!(cursor_ok(&p.next), "an empty or oversized cursor");
            "users_page"
        }),
        1 => api::decode_store_users(status, retry, body, STORE_PAGE_SIZE).map(|p| {
            assert!(
                p.stores.len() <= STORE_PAGE_SIZE as usize,
                "an oversized page"
            );
            assert!(cursor_ok(&p.next), "an empty or oversized cursor");
            for s in &p.stores {
                assert!(
                    s.users.items.len() <= PAGE_SIZE as usize,
                    "an oversized page"
                );
                assert!(cursor_ok(&s.users.next) && s.cursor.len() <= MAX_CURSOR);
            }
            "stores_page"
        }),
        k => {
            let field = [
                ops::ADD_USER_TO_ACCOUNT_RESULT,
                ops::REMOVE_USER_FROM_ACCOUNT_RESULT,
                ops::ADD_USER_TO_STORE_RESULT,
                ops::REMOVE_USER_FROM_STORE_RESULT,
            ][usize::from(k - 2)];
            api::decode_mutation(status, retry, body, field).map(|()| "mutated")
        }
    };
    match result {
        Ok(label) => {
            assert_eq!(status, 200, "a {status} answer decoded as a success");
            assert!(
                !has_graphql_errors(body),
                "a body with errors[] decoded as a success"
            );
            label
        }
        Err(e) => {
            if let AccountApiError::GraphQl { messages } = &e {
                assert!(messages.len() <= MAX_MESSAGES);
                assert!(messages.iter().all(|m| m.chars().count() <= MAX_MESSAGE));
            }
            match e {
                AccountApiError::RateLimited { .. } => "rate_limited",
                AccountApiError::Transient(_) => "transient",
                AccountApiError::Refused { .. } => "refused",
                AccountApiError::GraphQl { .. } => "graphql_errors",
                AccountApiError::Unexpected(_) => "unexpected",
            }
        }
    }
}

/// Whether any top-level `errors` member of a JSON object is a non-empty array: every
/// occurrence of the key, read without the decoder's code (a duplicate key must not hide one).
fn has_graphql_errors(body: &[u8]) -> bool {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
    struct Scan;
    impl<'de> Visitor<'de> for Scan {
        type Value = bool;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
            let mut found = false;
            while let Some(key) = map.next_key::<String>()? {
                if key == "errors" {
                    let v: Value = map.next_value()?;
                    found |= v.as_array().is_some_and(|a| !a.is_empty());
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(found)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    de.deserialize_map(Scan).unwrap_or(false)
}

/// `POST /webhooks/bigcommerce/{id}` once the secret matched: `data` is the body, classified as
/// the handler does ([`classify`](crate::bigcommerce::webhooks::classify)) for account `main`
/// (store `abc123`), and again for `outlet` (store `def456`) and for an account without a store
/// hash. Oracles: only the scopes listed here (BigCommerce's, written out independently of the
/// code's list) are acted on; a delivery is accepted for at most one store, its producer's, and
/// never for an empty hash; the de-duplication key is the same for the same bytes and differs
/// between accounts; `created_at` compared with our writes neither panics nor wraps.
pub fn webhook_payload(data: &[u8]) -> &'static str {
    use crate::bigcommerce::webhooks::{
        OWN_CHANGE_TOLERANCE_SECS, Subject, classify, dedup_key, stamped_near,
    };
    const ACTED_ON: [&str; 7] = [
        "store/customer/created",
        "store/customer/updated",
        "store/customer/deleted",
        "store/customer/channel/login/access/updated",
        "store/company/user/created",
        "store/company/user/updated",
        "store/company/user/deleted",
    ];
    let main = classify("main", "abc123", data);
    let outlet = classify("outlet", "def456", data);
    assert!(
        classify("blank", "", data).is_err(),
        "a delivery was accepted for an account without a store hash"
    );
    let c = match main {
        Err(r) => {
            assert!(
                matches!(
                    (r.status, r.reason),
                    (413, "webhook_too_large")
                        | (400, "webhook_payload_invalid")
                        | (400, "webhook_wrong_store")
                ),
                "an undocumented refusal {r:?}"
            );
            if let Ok(o) = &outlet {
                assert_eq!(o.delivery.producer, "stores/def456");
                return "other_store";
            }
            return r.reason;
        }
        Ok(c) => c,
    };
    assert_eq!(c.delivery.producer, "stores/abc123");
    assert!(outlet.is_err(), "one delivery was accepted for two stores");
    // The de-duplication key: a function of the account and the bytes, nothing else.
    assert_eq!(c.dedup_key, dedup_key("main", data));
    assert_ne!(c.dedup_key, dedup_key("outlet", data));
    let scope = c.delivery.scope.as_str();
    let Some(subject) = c.subject else {
        assert!(
            !ACTED_ON.contains(&scope),
            "the documented scope {scope:?} was ignored"
        );
        return "ignored";
    };
    assert!(
        ACTED_ON.contains(&scope),
        "the scope {scope:?} was acted on"
    );
    let created = c.delivery.created_at;
    for write in [
        NOW,
        0,
        i64::MIN,
        i64::MAX,
        created.wrapping_add(11),
        created,
    ] {
        let near = (i128::from(created) - i128::from(write)).abs()
            <= i128::from(OWN_CHANGE_TOLERANCE_SECS);
        assert_eq!(
            stamped_near(created, write),
            near,
            "created_at {created} against a write at {write}"
        );
    }
    match subject {
        Subject::Customer { id, deleted } => {
            assert_eq!(id, c.delivery.data.id);
            assert_eq!(deleted, scope == "store/customer/deleted");
            "customer"
        }
        Subject::CompanyUser { id } => {
            assert_eq!(id, c.delivery.data.id);
            "company_user"
        }
    }
}

/// `POST /scim/v2/Users|Groups` and `PUT .../{id}`: the first byte picks the kind (`g` or `G`: a
/// Group, anything else: a User), the rest is the JSON body. [`ScimService::create`], then the
/// same body as a PUT over a stored fixture, each read back and found by a filter on its name.
/// Oracles: what a create answers is what a read returns and what the name filter lists; a
/// second create with the name in another (ASCII) case, or a create of the fixture's name, is
/// refused with 409 `uniqueness`; a PUT keeps the id.
pub fn scim_resource(data: &[u8]) -> &'static str {
    let Some((&pick, body)) = data.split_first() else {
        return "empty";
    };
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return "not_json";
    };
    let kind = if pick.eq_ignore_ascii_case(&b'g') {
        Kind::Group
    } else {
        Kind::User
    };
    RUNTIME.with(|rt| {
        let Some(rt) = rt else {
            panic!("cannot build the tokio runtime of the scim_resource target");
        };
        rt.block_on(create_and_replace(kind, body))
    })
}

/// The attribute a kind is unique by.
fn unique_attr(kind: Kind) -> &'static str {
    if kind == Kind::User {
        "userName"
    } else {
        "displayName"
    }
}

/// `s` with the case of every ASCII letter swapped.
fn swap_ascii_case(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_lowercase() {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

async fn create_and_replace(kind: Kind, body: Value) -> &'static str {
    use crate::provisioning::scim::wire::{ListQuery, ScimType};
    const BASE: &str = "https://sso.corp.example/scim/v2";
    let Ok(s) = ScimService::open(Arc::new(MemoryStore), Arc::new(ManualClock::at(NOW))).await
    else {
        panic!("the in-memory SCIM store did not open");
    };
    let fixture = if kind == Kind::User {
        json!({"userName": SIGNED_SUBJECT, "emails": [{"value": SIGNED_SUBJECT, "primary": true}]})
    } else {
        json!({"displayName": "bc-merchandisers"})
    };
    let Ok((fixture, _)) = s.create(kind, fixture, BASE).await else {
        panic!("the SCIM fixture was refused");
    };
    let fixture_id = fixture["id"].as_str().unwrap_or_default().to_owned();
    let fixture_name = fixture[unique_attr(kind)]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // The service reads the name under any case of its key; with two such keys which one wins
    // is the service's business, so the oracle judges only a body with one.
    let names: Vec<&Value> = body
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(unique_attr(kind)))
                .map(|(_, v)| v)
                .collect()
        })
        .unwrap_or_default();
    let taken = matches!(names.as_slice(), [n] if n
        .as_str()
        .is_some_and(|n| n.trim().eq_ignore_ascii_case(&fixture_name)));
    let mut label: &'static str = match s.create(kind, body.clone(), BASE).await {
        Err(e) => {
            if taken {
                // Oracle: the fixture's name, in any ASCII case, is taken (a body that is
                // invalid for another reason may be refused for that first, with a 400).
                assert!(
                    (e.status, e.scim_type) == (409, Some(ScimType::Uniqueness)) || e.status == 400,
                    "a create of a taken name was refused with another error: {e}"
                );
            }
            "create_refused"
        }
        Ok((created, _)) => {
            assert!(!taken, "a second resource was created with a taken name");
            let id = created["id"].as_str().unwrap_or_default().to_owned();
            // Oracle: the create's answer is what is stored.
            let Ok(read) = s.get(kind, &id, BASE).await else {
                panic!("a created resource cannot be read back");
            };
            assert_eq!(read, created, "a created resource reads back differently");
            let stored = read[unique_attr(kind)]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            // Oracle: the name filter finds it (the index agrees with the data).
            let q = ListQuery {
                filter: Some(format!(
                    "{} eq {}",
                    unique_attr(kind),
                    Value::String(stored.clone())
                )),
                ..Default::default()
            };
            if let Ok(list) = s.list(kind, &q, BASE).await {
                assert!(
                    list.resources.iter().any(|r| r["id"] == read["id"]),
                    "a created resource is not found by its {}",
                    unique_attr(kind)
                );
            }
            // Oracle: uniqueness ignores ASCII case.
            let mut again = body.clone();
            if let Some(o) = again.as_object_mut() {
                o.retain(|k, _| !k.eq_ignore_ascii_case(unique_attr(kind)));
                o.insert(unique_attr(kind).into(), json!(swap_ascii_case(&stored)));
            }
            match s.create(kind, again, BASE).await {
                Ok(_) => panic!(
                    "a second {} was created with the {} {:?} in another case",
                    kind_label(kind),
                    unique_attr(kind),
                    swap_ascii_case(&stored)
                ),
                Err(e) => assert_eq!(
                    (e.status, e.scim_type),
                    (409, Some(ScimType::Uniqueness)),
                    "a second create with the same name in another case: {e}"
                ),
            }
            "created"
        }
    };
    // The same body as a PUT over the fixture.
    match s.replace(kind, &fixture_id, body, None, BASE).await {
        Ok((put, _)) => {
            // Oracle: a name another resource holds cannot be taken over by a PUT either.
            assert_ne!(label, "created", "a PUT took over another resource's name");
            assert_eq!(
                put["id"].as_str(),
                Some(fixture_id.as_str()),
                "PUT changed an id"
            );
            let Ok(read) = s.get(kind, &fixture_id, BASE).await else {
                panic!("a replaced resource cannot be read back");
            };
            assert_eq!(read, put, "a replaced resource reads back differently");
            label = "replaced";
        }
        Err(e) if label == "created" => assert_eq!(
            (e.status, e.scim_type),
            (409, Some(ScimType::Uniqueness)),
            "a PUT to another resource's name: {e}"
        ),
        Err(_) => {}
    }
    label
}

fn kind_label(kind: Kind) -> &'static str {
    if kind == Kind::User { "User" } else { "Group" }
}

/// `return_to` (`GET /login`) and `to` (`GET /launch/{store}`): the raw query value, after the
/// query string's decoding, through [`LocalPath::parse`](crate::redirect::LocalPath::parse), the
/// one parser both go through. Oracles, on an independent (WHATWG, as browsers) URL parser: an
/// accepted path resolves on the gateway's own origin and on a store's, with no userinfo, and
/// never to a scheme-relative path (`//host`) after dot segments are removed; it holds no control
/// character or backslash, and is a valid `Location` header value.
pub fn return_to(data: &[u8]) -> &'static str {
    use crate::redirect::{LocalPath, NotLocal};
    let Ok(raw) = std::str::from_utf8(data) else {
        // The query extractor refuses what is not UTF-8 before any handler runs.
        return "not_utf8";
    };
    match LocalPath::parse(raw) {
        Err(NotLocal::Empty) => "empty",
        Err(NotLocal::NotAbsolutePath) => "not_absolute",
        Err(NotLocal::OtherHost) => "other_host",
        Err(NotLocal::ForbiddenCharacter) => "forbidden_character",
        Err(NotLocal::TooLong) => "too_long",
        Ok(p) => {
            let path = p.as_str();
            assert!(
                !path.chars().any(|c| c.is_control() || c == '\\'),
                "accepted a control character or backslash: {path:?}"
            );
            assert!(
                axum::http::HeaderValue::from_str(path).is_ok(),
                "accepted a path that is no Location value: {path:?}"
            );
            for base in [
                "https://sso.corp.example/login",
                "https://store-abc123.mybigcommerce.com/",
            ] {
                let Ok(base) = url::Url::parse(base) else {
                    panic!("the oracle's base URL does not parse");
                };
                let Ok(to) = base.join(path) else {
                    panic!("an accepted path does not resolve: {path:?}");
                };
                assert_eq!(
                    to.origin(),
                    base.origin(),
                    "accepted {path:?}, which leaves for {to}"
                );
                assert!(
                    to.username().is_empty() && to.password().is_none(),
                    "accepted {path:?} with userinfo ({to})"
                );
                assert!(
                    !to.path().starts_with("//"),
                    "accepted {path:?}, which normalises to the scheme-relative {}",
                    to.path()
                );
            }
            "accepted"
        }
    }
}

/// The client address the rate limits and the audit trail use: the first byte picks the TCP peer
/// (even: an untrusted 203.0.113.9, odd: the trusted proxy 10.2.2.2), each further line is one
/// `X-Forwarded-For` header value. Oracles: an untrusted peer is the client whatever it sends;
/// behind a trusted proxy the answer is the peer or a hop of the header, every hop to its right
/// is a trusted proxy, and it is never a trusted address other than the peer itself.
pub fn client_ip(data: &[u8]) -> &'static str {
    use axum::http::{HeaderMap, HeaderValue};
    use std::net::IpAddr;
    let Some((&pick, rest)) = data.split_first() else {
        return "empty";
    };
    let trusted: Vec<ipnet::IpNet> = ["10.0.0.0/8", "fd00::/8"]
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    let peer = IpAddr::from(if pick % 2 == 0 {
        [203, 0, 113, 9]
    } else {
        [10, 2, 2, 2]
    });
    let mut headers = HeaderMap::new();
    for line in rest.split(|&b| b == b'\n') {
        if let Ok(v) = HeaderValue::from_bytes(line) {
            headers.append("x-forwarded-for", v);
        }
    }
    let Some(got) = crate::web::client_ip::client_ip(Some(peer), &headers, &trusted) else {
        panic!("no client address with a peer");
    };
    if !is_trusted(&peer) {
        assert_eq!(got, peer, "an untrusted peer chose its address");
        return "untrusted_peer";
    }
    if got == peer {
        return "the_proxy";
    }
    assert!(
        !is_trusted(&got),
        "a trusted address {got} taken for the client"
    );
    // Every hop to the right of the answer is a trusted proxy.
    let hops: Vec<String> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|t| t.split(',').map(|p| p.trim().to_owned()))
        .collect();
    let Some(at) = hops
        .iter()
        .rposition(|h| h.parse::<IpAddr>().ok() == Some(got))
    else {
        panic!("the client {got} is not a hop of the header");
    };
    assert!(
        hops[at + 1..]
            .iter()
            .all(|h| h.parse::<IpAddr>().is_ok_and(|ip| is_trusted(&ip))),
        "an untrusted hop right of the client {got}"
    );
    "forwarded_hop"
}
