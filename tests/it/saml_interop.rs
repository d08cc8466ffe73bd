//! SAML interoperability (issue 10), end to end against pysaml2 (tests/peers/saml) through the
//! peer driver of tests/support (saml_idp.rs, saml_peer.rs): step-up with `RequestedAuthnContext`, single logout answers
//! bound to the browser that asked, metadata trust (https only, signed metadata, `/readyz`), and a
//! shared PC where one person signs in over SAML and the next over OIDC.
//!
//! Every refusal asserts the exact outcome: status, the audit reason, the session state, and that
//! no BigCommerce token was minted.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use storegate::audit::Outcome;

use crate::harness::{Gateway, Opts, Reserved, assert_not_signed_in, config_text};
use crate::support::browser::{Browser, location};
use crate::support::peers::{OidcPeer, OidcPeerConfig, PeerClient};
use crate::support::saml_idp::{
    EMAIL_FORMAT, IDP_ORIGIN, IDP_SLO, Idp, MetadataServer, SAML_IDP, assert_refused,
    assert_signed_in, background_refreshes, begin, begin_at, cert_b64, give_sp_metadata, post,
    scratch, sign_in_with_key, slo_peer, slo_sign_in, start_gateway_with,
    start_gateway_with_metadata_url, user, write,
};

const PASSWORD: &str = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport";
const MFA: &str = "urn:corp:ac:mfa";
const HARDWARE_KEY: &str = "urn:corp:ac:hardware-key";

/// The US store needs MFA; the others do not.
const STEP_UP_POLICY: &str = r#"[[rule]]
name = "merchandisers-us-with-mfa"
groups_any = ["bc-merchandisers"]
stores = ["us"]
role = "merchandiser"
require_acr = "urn:corp:ac:mfa"
"#;

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn me(b: &Browser, gw: &Gateway) -> Value {
    let r = b.get(&gw.url("/api/me")).await;
    assert_eq!(r.status(), 200, "signed in");
    r.json().await.expect("me json")
}

/// The last audit event with `outcome` (events are written asynchronously).
async fn last_event(gw: &Gateway, outcome: Outcome) -> storegate::audit::AuditEvent {
    let events = gw.audit_events().await;
    events
        .iter()
        .rev()
        .find(|e| e.outcome == outcome)
        .cloned()
        .unwrap_or_else(|| panic!("no {outcome:?} event: {events:?}"))
}

// ---------------------------------------------------------------------------------------------
// 1. Step-up: RequestedAuthnContext out, AuthnContextClassRef checked

/// `RequestedAuthnContext` of an AuthnRequest: (Comparison, the class refs).
fn requested_context(xml: &str) -> Option<(String, Vec<String>)> {
    let start = xml.find("RequestedAuthnContext")?;
    let rest = &xml[start..];
    let end = rest.find("RequestedAuthnContext>")?;
    let el = &rest[..end];
    let cmp = el
        .split("Comparison=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_default()
        .to_owned();
    let classes = el
        .split("AuthnContextClassRef>")
        .skip(1)
        .step_by(2)
        .map(|s| {
            s.trim_end_matches("</saml2:")
                .trim_end_matches('<')
                .to_owned()
        })
        .map(|s| s.split('<').next().unwrap_or_default().to_owned())
        .collect();
    Some((cmp, classes))
}

/// Signs `b` in with the IdP answering `class`; asserts the ACS accepted it.
async fn saml_sign_in_with_class(idp: &Idp, gw: &Gateway, b: &Browser, class: &str) {
    let s = begin(b, gw, "/").await;
    assert!(
        requested_context(&s.request_xml).is_none(),
        "no step-up asked: {}",
        s.request_xml
    );
    let mut req = user(&s);
    req["authn_class"] = json!(class);
    let acs = post(b, &s, &idp.run(req)).await;
    assert_eq!(acs.status(), 303, "hops:\n{}", b.hops_text());
}

/// A launch of the US store by a session without MFA: the gateway sends the browser back to sign
/// in with `acr`; returns that `/login` path.
async fn launch_asks_for_step_up(b: &Browser, gw: &Gateway) -> String {
    // The launch's loop guard compares whole seconds (a sign-in at or after the last step-up
    // attempt counts as that attempt's answer): each launch here starts a later second.
    gw.clock.advance(2);
    let launch = b.get(&gw.url("/stores/us/launch")).await;
    assert_eq!(launch.status(), 303, "hops:\n{}", b.hops_text());
    let to = location(&launch).expect("to sign in again");
    assert_eq!(to.path(), "/login");
    let login = format!("/login?{}", to.query().expect("query"));
    assert!(
        login.contains(&format!("acr={}", urlencode(MFA))),
        "{login}"
    );
    login
}

#[tokio::test]
async fn saml_step_up_asks_for_the_class_exactly_and_refuses_another() {
    let idp = Idp::new("stepup-exact", 1);
    let gw = start_gateway_with(&idp, "", |o| o.policy = Some(STEP_UP_POLICY.into())).await;
    let b = Browser::new();
    saml_sign_in_with_class(&idp, &gw, &b, PASSWORD).await;
    assert_eq!(me(&b, &gw).await["acr"], PASSWORD);

    // The launch needs MFA: the AuthnRequest carries it, Comparison="exact".
    let login = launch_asks_for_step_up(&b, &gw).await;
    let s = begin_at(&b, &gw, &login).await;
    assert_eq!(
        requested_context(&s.request_xml),
        Some(("exact".to_owned(), vec![MFA.to_owned()])),
        "{}",
        s.request_xml
    );
    // The IdP answers with another class: refused, with the exact reason.
    let mut req = user(&s);
    req["authn_class"] = json!(PASSWORD);
    let acs = post(&b, &s, &idp.run(req)).await;
    assert_eq!(acs.status(), 401, "hops:\n{}", b.hops_text());
    let page = acs.text().await.expect("page");
    assert!(page.contains("asked for urn:corp:ac:mfa"), "{page}");
    let ev = last_event(&gw, Outcome::Deny).await;
    assert_eq!(ev.reason.as_deref(), Some("saml_authn_context"), "{ev:?}");
    assert_eq!(
        ev.detail.as_deref(),
        Some(
            "the assertion's authentication context class was urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport; this sign-in asked for urn:corp:ac:mfa (comparison exact)"
        )
    );
    // The earlier (weaker) session is untouched and still cannot launch; no token was minted.
    assert_eq!(me(&b, &gw).await["acr"], PASSWORD);
    gw.assert_no_token_minted();

    // The IdP answers with the class asked for: signed in with it, and the launch goes through.
    let login = launch_asks_for_step_up(&b, &gw).await;
    let s = begin_at(&b, &gw, &login).await;
    let mut req = user(&s);
    req["authn_class"] = json!(MFA);
    let acs = post(&b, &s, &idp.run(req)).await;
    assert_eq!(acs.status(), 303, "{:?}", gw.audit_events().await);
    let back = location(&acs).expect("back to the launch");
    assert_eq!(back.path(), "/stores/us/launch");
    assert_eq!(me(&b, &gw).await["acr"], MFA);
    let launch = b.get(back.as_str()).await;
    assert_eq!(launch.status(), 302, "hops:\n{}", b.hops_text());
    let landed = b.follow(launch).await;
    assert_eq!(landed.status(), 200);
    assert_eq!(gw.sim.accepted_logins().len(), 1);
}

#[tokio::test]
async fn saml_step_up_refusal_leaves_a_fresh_browser_signed_out() {
    let idp = Idp::new("stepup-fresh", 1);
    let gw = start_gateway_with(&idp, "", |o| o.policy = Some(STEP_UP_POLICY.into())).await;
    let b = Browser::new();
    let login = format!(
        "/login?idp={SAML_IDP}&acr={}&return_to=/stores/us/launch",
        urlencode(MFA)
    );
    let s = begin_at(&b, &gw, &login).await;
    let mut req = user(&s);
    req["authn_class"] = json!(PASSWORD);
    let acs = post(&b, &s, &idp.run(req)).await;
    assert_refused(&b, &gw, acs, 401, "saml_authn_context").await;
    // Without the AuthnContextClassRef at all: refused the same way.
    let s = begin_at(&b, &gw, &login).await;
    let mut req = user(&s);
    req["authn_class"] = json!("");
    let acs = post(&b, &s, &idp.run(req)).await;
    assert_refused(&b, &gw, acs, 401, "saml_authn_context").await;
}

#[tokio::test]
async fn saml_step_up_minimum_accepts_a_stronger_class_and_refuses_a_weaker_one() {
    let idp = Idp::new("stepup-minimum", 1);
    let order = format!(
        "authn_context_comparison = \"minimum\"\nauthn_context_order = [\"{PASSWORD}\", \"{MFA}\", \"{HARDWARE_KEY}\"]\n"
    );
    let gw = start_gateway_with(&idp, &order, |o| o.policy = Some(STEP_UP_POLICY.into())).await;
    let b = Browser::new();
    saml_sign_in_with_class(&idp, &gw, &b, PASSWORD).await;

    let login = launch_asks_for_step_up(&b, &gw).await;
    let s = begin_at(&b, &gw, &login).await;
    assert_eq!(
        requested_context(&s.request_xml),
        Some(("minimum".to_owned(), vec![MFA.to_owned()])),
        "{}",
        s.request_xml
    );
    // Weaker than asked: refused.
    let mut req = user(&s);
    req["authn_class"] = json!(PASSWORD);
    let acs = post(&b, &s, &idp.run(req)).await;
    assert_eq!(acs.status(), 401);
    let ev = last_event(&gw, Outcome::Deny).await;
    assert_eq!(ev.reason.as_deref(), Some("saml_authn_context"), "{ev:?}");
    assert!(
        ev.detail
            .as_deref()
            .is_some_and(|d| d.ends_with("asked for urn:corp:ac:mfa (comparison minimum)")),
        "{ev:?}"
    );
    gw.assert_no_token_minted();
    // Stronger than asked (later in the configured order): accepted, and the launch's
    // `require_acr = mfa` is met by the hardware key.
    let login = launch_asks_for_step_up(&b, &gw).await;
    let s = begin_at(&b, &gw, &login).await;
    let mut req = user(&s);
    req["authn_class"] = json!(HARDWARE_KEY);
    let acs = post(&b, &s, &idp.run(req)).await;
    assert_eq!(acs.status(), 303, "{:?}", gw.audit_events().await);
    assert_eq!(me(&b, &gw).await["acr"], HARDWARE_KEY);
    let launch = b.get(&gw.url("/stores/us/launch")).await;
    assert_eq!(launch.status(), 302, "hops:\n{}", b.hops_text());
    assert_eq!(b.follow(launch).await.status(), 200);
    assert_eq!(gw.sim.accepted_logins().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// 2. SLO: the LogoutResponse must answer this browser's LogoutRequest

/// Signs in, signs out at the gateway; returns the LogoutRequest's ID as the IdP reads it and the
/// `name=value` of the binding cookie.
async fn sign_out_through_the_idp(idp: &Idp, gw: &Gateway, b: &Browser) -> (String, String) {
    slo_sign_in(idp, gw, b).await;
    let portal = b.get(&gw.url("/")).await.text().await.expect("portal");
    let csrf = portal
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("csrf field")
        .to_owned();
    let out = b.post_form(&gw.url("/logout"), &[("csrf", &csrf)]).await;
    assert_eq!(out.status(), 303);
    let cookie = out
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("storegate_saml_logout="))
        .expect("logout binding cookie")
        .to_owned();
    assert!(
        cookie.contains("SameSite=None") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    assert!(cookie.contains("Path=/saml/slo"), "{cookie}");
    let to = location(&out).expect("to the IdP");
    assert!(to.as_str().starts_with(&format!("{IDP_SLO}?")), "{to}");
    assert_not_signed_in(b, gw).await;
    let seen = slo_peer(idp, json!({"op": "check", "url": to.as_str()}));
    let id = seen["id"].as_str().expect("request id").to_owned();
    (id, cookie.split(';').next().expect("name=value").to_owned())
}

/// The signed-out page with the note that the IdP's sign-out is not confirmed; the refusal is
/// audited with `reason`.
async fn assert_unconfirmed(b: &Browser, gw: &Gateway, resp: reqwest::Response, reason: &str) {
    assert_eq!(resp.status(), 200, "hops:\n{}", b.hops_text());
    assert_eq!(
        resp.headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let page = resp.text().await.expect("page");
    assert!(page.contains("You are signed out"), "{page}");
    assert!(
        page.contains("your identity provider's sign-out could not be confirmed"),
        "{page}"
    );
    assert_not_signed_in(b, gw).await;
    let ev = last_event(gw, Outcome::Deny).await;
    assert_eq!(ev.reason.as_deref(), Some(reason), "{ev:?}");
    assert_eq!(ev.idp.as_deref(), Some(SAML_IDP), "{ev:?}");
    let rid = ev.request_id.clone();
    assert!(
        page.contains(&rid),
        "the page names reference {rid}: {page}"
    );
}

#[tokio::test]
async fn saml_slo_logout_response_to_another_request_is_refused_with_the_signed_out_note() {
    let idp = Idp::new("slo-irt", 1);
    let gw = start_gateway_with(&idp, "", |_| {}).await;
    let b = Browser::new();
    let (_id, cookie) = sign_out_through_the_idp(&idp, &gw, &b).await;
    // Signed by the IdP, but answering another request: over Redirect (the browser's own
    // cookie) and over POST (only the SameSite=None binding cookie comes along).
    let other = slo_peer(
        &idp,
        json!({"op": "response", "binding": "redirect", "destination": gw.url("/saml/slo"),
               "in_response_to": "_a-request-of-someone-else"}),
    );
    let r = b.get(other["url"].as_str().expect("url")).await;
    assert_unconfirmed(&b, &gw, r, "saml_in_response_to").await;
    let other = slo_peer(
        &idp,
        json!({"op": "response", "binding": "post", "destination": gw.url("/saml/slo"),
               "in_response_to": "_a-request-of-someone-else"}),
    );
    let r = b
        .post_form_cross_site_with(
            &gw.url("/saml/slo"),
            IDP_ORIGIN,
            &[("SAMLResponse", other["SAMLResponse"].as_str().expect("msg"))],
            Some(&cookie),
        )
        .await;
    assert_unconfirmed(&b, &gw, r, "saml_in_response_to").await;
}

#[tokio::test]
async fn saml_slo_unsigned_logout_response_is_refused_with_the_signed_out_note() {
    let idp = Idp::new("slo-unsigned-resp", 1);
    let gw = start_gateway_with(&idp, "", |_| {}).await;
    let b = Browser::new();
    let (id, _) = sign_out_through_the_idp(&idp, &gw, &b).await;
    // SimpleSAMLphp's default: the right InResponseTo, no signature.
    let unsigned = slo_peer(
        &idp,
        json!({"op": "response", "binding": "redirect", "destination": gw.url("/saml/slo"),
               "in_response_to": id, "sign": false}),
    );
    let r = b.get(unsigned["url"].as_str().expect("url")).await;
    assert_unconfirmed(&b, &gw, r, "saml_signature").await;
}

#[tokio::test]
async fn saml_slo_signed_logout_response_to_this_request_ends_at_the_plain_signed_out_page() {
    let idp = Idp::new("slo-good-resp", 1);
    let gw = start_gateway_with(&idp, "", |_| {}).await;
    let b = Browser::new();
    let (id, _) = sign_out_through_the_idp(&idp, &gw, &b).await;
    let answer = slo_peer(
        &idp,
        json!({"op": "response", "binding": "redirect", "destination": gw.url("/saml/slo"),
               "in_response_to": id}),
    );
    let r = b.get(answer["url"].as_str().expect("url")).await;
    assert_eq!(r.status(), 303, "hops:\n{}", b.hops_text());
    assert_eq!(
        location(&r).map(|u| u.path().to_owned()).as_deref(),
        Some("/signed-out")
    );
    let page = b.follow(r).await.text().await.expect("page");
    assert!(page.contains("You are signed out"), "{page}");
    assert!(!page.contains("could not be confirmed"), "{page}");
    let ev = last_event(&gw, Outcome::Allow).await;
    assert_eq!(
        ev.detail.as_deref(),
        Some("SAML LogoutResponse: Success, answering this browser's LogoutRequest"),
        "{ev:?}"
    );
    assert!(
        !gw.audit_events()
            .await
            .iter()
            .any(|e| e.outcome == Outcome::Deny),
        "nothing refused"
    );
}

#[tokio::test]
async fn saml_slo_stray_logout_response_in_a_signed_in_browser_changes_nothing() {
    let idp = Idp::new("slo-stray", 1);
    let gw = start_gateway_with(&idp, "", |_| {}).await;
    let b = Browser::new();
    slo_sign_in(&idp, &gw, &b).await;
    // A validly signed LogoutResponse this browser never asked for (e.g. a link someone sent).
    let stray = slo_peer(
        &idp,
        json!({"op": "response", "binding": "redirect", "destination": gw.url("/saml/slo"),
               "in_response_to": "_never-sent"}),
    );
    let r = b.get(stray["url"].as_str().expect("url")).await;
    assert_eq!(r.status(), 400, "hops:\n{}", b.hops_text());
    assert_signed_in(&b, &gw).await;
    let ev = last_event(&gw, Outcome::Deny).await;
    assert_eq!(ev.reason.as_deref(), Some("saml_in_response_to"), "{ev:?}");
}

// ---------------------------------------------------------------------------------------------
// 3. Metadata trust

/// `md` with an `ID` on the EntityDescriptor and an enveloped RSA-SHA256 signature by `key`,
/// made by xmlsec1 (independent of samael).
fn sign_metadata(
    dir: &std::path::Path,
    md: &str,
    key: &std::path::Path,
    cert: &std::path::Path,
) -> String {
    let template = r##"<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo><ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/><ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/><ds:Reference URI="#_md1"><ds:Transforms><ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/><ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/></ds:Transforms><ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><ds:DigestValue></ds:DigestValue></ds:Reference></ds:SignedInfo><ds:SignatureValue></ds:SignatureValue></ds:Signature>"##;
    let with_id = md.replacen("entityID=", "ID=\"_md1\" entityID=", 1);
    let open_end = with_id
        .find("<md:IDPSSODescriptor")
        .expect("IDPSSODescriptor");
    let tmpl = format!(
        "{}{template}\n  {}",
        &with_id[..open_end],
        &with_id[open_end..]
    );
    let file = dir.join(format!(
        "md-template-{}.xml",
        storegate::federation::saml::random_hex(4)
    ));
    write(&file, &tmpl);
    let out = Command::new("xmlsec1")
        .args([
            "--sign",
            "--id-attr:ID",
            "urn:oasis:names:tc:SAML:2.0:metadata:EntityDescriptor",
        ])
        .arg("--privkey-pem")
        .arg(format!("{},{}", key.display(), cert.display()))
        .arg(&file)
        .output()
        .expect("run xmlsec1");
    assert!(
        out.status.success(),
        "xmlsec1 --sign: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let signed = String::from_utf8(out.stdout).expect("utf8");
    assert!(
        signed.contains("<ds:SignatureValue>") && !signed.contains("<ds:SignatureValue></"),
        "{signed}"
    );
    signed
}

/// The IdP's metadata naming only its second (rollover) certificate.
fn rolled_over(idp: &Idp, md: &str) -> String {
    let old = cert_b64(&std::fs::read_to_string(&idp.cert).expect("cert"));
    let new = cert_b64(&std::fs::read_to_string(&idp.other_cert).expect("cert"));
    assert!(md.contains(&old));
    md.replace(&old, &new)
}

/// A key pair that signs metadata (as a federation operator's would), written to the IdP's dir.
fn metadata_signer(idp: &Idp, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let (k, c) = storegate::federation::saml::sp::generate_key_and_cert(name).expect("key");
    let key = idp.dir.join(format!("{name}.key"));
    let cert = idp.dir.join(format!("{name}.crt"));
    write(&key, &k);
    write(&cert, &c);
    (key, cert)
}

/// The `/readyz` check of the SAML IdP.
async fn readyz_saml(gw: &Gateway) -> Value {
    let r = reqwest::get(gw.url("/readyz")).await.expect("readyz");
    let body: Value = r.json().await.expect("readyz json");
    body["checks"][format!("idp:{SAML_IDP}")].clone()
}

/// Waits (bounded) until `/readyz` shows the SAML IdP with `ok`.
async fn wait_ready_saml(gw: &Gateway, ok: bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..100 {
        last = readyz_saml(gw).await;
        let fetched = last["error"]
            .as_str()
            .is_none_or(|e| !e.ends_with("not fetched yet"));
        if last["ok"] == json!(ok) && fetched {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("/readyz never showed the SAML IdP with ok={ok}: {last}");
}

/// `storegate check` on the harness configuration with a SAML IdP at `metadata_url`.
fn check_with_metadata_url(idp: &Idp, url: &str, insecure_http: bool) -> (bool, String) {
    let mut text = config_text(
        "http://127.0.0.1:18080",
        "http://127.0.0.1:18081",
        &Opts::new("http://127.0.0.1:9/oidc", "client", "secret"),
    );
    text.push_str(&idp.toml("").replace(
        &format!("metadata_file = \"{}\"", idp.metadata.display()),
        &format!("metadata_url = \"{url}\""),
    ));
    if !insecure_http {
        text = text.replace("allow_insecure_http = true", "allow_insecure_http = false");
    }
    let dir = scratch("check-md-url");
    let file = dir.join("gw.toml");
    write(&file, &text);
    let out = Command::new(crate::cli::BIN)
        .arg("check")
        .arg("-c")
        .arg(&file)
        .env_remove("STOREGATE_CONFIG")
        .output()
        .expect("run storegate check");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .position(|l| l.starts_with("metadata_url = "))
        .expect("metadata_url line")
        + 1;
    (
        out.status.success(),
        printed.replace(&format!("{}:{line}:", file.display()), "FILE:LINE:"),
    )
}

#[test]
fn saml_check_refuses_a_plain_http_metadata_url() {
    let idp = Idp::new("check-http", 1);
    let want = "FILE:LINE: [[idp]] \"opentext-saml\": `metadata_url` must use https (plain http only on loopback, with `allow_insecure_http = true`, for tests)";
    // Another host over http: refused, even with allow_insecure_http.
    let (ok, out) =
        check_with_metadata_url(&idp, "http://iam.corp.example/nidp/saml2/metadata", true);
    assert!(!ok, "{out}");
    assert!(out.lines().any(|l| l == want), "{out}");
    // Loopback over http without allow_insecure_http: refused too.
    let (ok, out) = check_with_metadata_url(&idp, "http://127.0.0.1:9/nidp/saml2/metadata", false);
    assert!(!ok, "{out}");
    assert!(out.lines().any(|l| l == want), "{out}");
    // https anywhere, and loopback http with allow_insecure_http (tests), pass.
    for (url, insecure) in [
        ("https://iam.corp.example/nidp/saml2/metadata", true),
        ("http://127.0.0.1:9/nidp/saml2/metadata", true),
    ] {
        let (ok, out) = check_with_metadata_url(&idp, url, insecure);
        assert!(ok && !out.contains("metadata_url"), "{url}: {out}");
    }
}

#[tokio::test]
async fn saml_signed_metadata_is_accepted_and_tampered_unsigned_or_other_key_metadata_refused() {
    let idp = Idp::new("md-signed", 1);
    let (sign_key, sign_cert) = metadata_signer(&idp, "federation");
    let (rogue_key, rogue_cert) = metadata_signer(&idp, "rogue");
    let plain = std::fs::read_to_string(&idp.metadata).expect("md");
    let signed = sign_metadata(&idp.dir, &plain, &sign_key, &sign_cert);
    let server = MetadataServer::start(signed.clone()).await;
    let extra = format!(
        "metadata_refresh = \"1s\"\nmetadata_signing_cert = \"{}\"\n",
        sign_cert.display()
    );
    let gw = start_gateway_with_metadata_url(&idp, &server.url, &extra).await;
    // Signed by the configured key: loaded, and its signing certificate verifies responses.
    assert_eq!(wait_ready_saml(&gw, true).await, json!({"ok": true}));
    assert_eq!(
        sign_in_with_key(&idp, &gw, &idp.key, &idp.cert).await.1,
        303
    );

    // Each bad document names the IdP's second key instead; none may be installed: a response
    // signed with that key stays refused, one with the first key still passes.
    let rolled = rolled_over(&idp, &plain);
    let tampered = rolled_over(&idp, &signed);
    let cases = [
        ("tampered after signing", tampered),
        ("unsigned", rolled.clone()),
        (
            "signed by another key",
            sign_metadata(&idp.dir, &rolled, &rogue_key, &rogue_cert),
        ),
    ];
    for (what, doc) in cases {
        server.serve(200, doc);
        background_refreshes(&server).await;
        assert_eq!(
            sign_in_with_key(&idp, &gw, &idp.other_key, &idp.other_cert)
                .await
                .1,
            401,
            "{what}: its key must not be trusted"
        );
        let ev = last_event(&gw, Outcome::Deny).await;
        assert_eq!(
            ev.reason.as_deref(),
            Some("saml_signature"),
            "{what}: {ev:?}"
        );
        assert_eq!(
            sign_in_with_key(&idp, &gw, &idp.key, &idp.cert).await.1,
            303,
            "{what}: the last good metadata stays"
        );
    }
    // The same rollover, signed by the configured key: installed.
    server.serve(200, sign_metadata(&idp.dir, &rolled, &sign_key, &sign_cert));
    background_refreshes(&server).await;
    assert_eq!(
        sign_in_with_key(&idp, &gw, &idp.other_key, &idp.other_cert)
            .await
            .1,
        303
    );
}

#[tokio::test]
async fn saml_readyz_names_the_idp_whose_metadata_never_loaded() {
    let idp = Idp::new("md-readyz", 1);
    let (sign_key, sign_cert) = metadata_signer(&idp, "federation");
    let plain = std::fs::read_to_string(&idp.metadata).expect("md");
    // metadata_signing_cert is set, and the document is unsigned: it never loads.
    let server = MetadataServer::start(plain.clone()).await;
    let extra = format!(
        "metadata_refresh = \"1s\"\nmetadata_signing_cert = \"{}\"\n",
        sign_cert.display()
    );
    let gw = start_gateway_with_metadata_url(&idp, &server.url, &extra).await;
    let check = wait_ready_saml(&gw, false).await;
    let error = check["error"].as_str().expect("error");
    assert_eq!(
        error,
        format!(
            "SAML metadata never loaded from {}: the metadata is not signed by metadata_signing_cert (unsigned, signed by another key or with a refused algorithm, or modified)",
            server.url
        )
    );
    let r = reqwest::get(gw.url("/readyz")).await.expect("readyz");
    assert_eq!(r.status(), 503);
    // No sign-in either: the IdP is unavailable, never unverified.
    let b = Browser::new();
    let login = b.get(&gw.url(&format!("/login?idp={SAML_IDP}"))).await;
    assert_eq!(login.status(), 503);
    // Once a signed document is served, the IdP is ready.
    server.serve(200, sign_metadata(&idp.dir, &plain, &sign_key, &sign_cert));
    assert_eq!(wait_ready_saml(&gw, true).await, json!({"ok": true}));
}

// ---------------------------------------------------------------------------------------------
// 4. Shared PCs: a new sign-in starts from an empty session

/// A gateway with the OIDC peer (`nam`, account `ben`, a merchandiser) and the SAML IdP.
async fn shared_pc_gateway(name: &str, policy: Option<&str>) -> (Idp, OidcPeer, Gateway) {
    const CLIENT: &str = "storegate";
    const SECRET: &str = "peer-client-secret-0123456789";
    let idp = Idp::new(name, 1);
    let reserved = Reserved::new().await;
    let peer = OidcPeer::start(
        &OidcPeerConfig::new()
            .client(PeerClient::new(CLIENT, SECRET, &reserved.redirect_uri()))
            .account(
                "ben",
                json!({"email": "ben@corp.example", "given_name": "Ben", "family_name": "Buyer",
                       "groups": ["bc-merchandisers"]}),
            ),
    );
    let mut o = Opts::new(&peer.issuer, CLIENT, SECRET);
    o.idp_extra = r#"scopes = ["openid", "email", "profile", "groups"]"#.to_owned();
    o.extra_toml = idp.toml("");
    o.policy = policy.map(str::to_owned);
    let gw = Gateway::start(reserved, o).await;
    give_sp_metadata(&idp, &gw).await;
    (idp, peer, gw)
}

/// B signs in over OIDC (`ben`) in browser `b`.
async fn oidc_sign_in_ben(b: &Browser, gw: &Gateway) {
    let start = b.get(&gw.url("/login?idp=nam")).await;
    assert_eq!(start.status(), 303);
    let back = b.oidc_provider_login(start, "ben").await;
    let done = b.get(location(&back).expect("callback").as_str()).await;
    assert_eq!(done.status(), 303, "hops:\n{}", b.hops_text());
    let me_b = me(b, gw).await;
    assert_eq!(me_b["idp"], "nam");
    assert_eq!(me_b["email"], "ben@corp.example");
}

#[tokio::test]
async fn shared_pc_saml_then_oidc_sign_in_keeps_nothing_of_the_first_person() {
    let (idp, peer, gw) = shared_pc_gateway("shared-pc", None).await;

    // A signs in over SAML; B then signs in over OIDC in the same browser.
    let b = Browser::new();
    let a_index = slo_sign_in(&idp, &gw, &b).await;
    assert_eq!(me(&b, &gw).await["idp"], SAML_IDP);
    oidc_sign_in_ben(&b, &gw).await;

    // The IdP logs A out (by A's SessionIndex and NameID, in this very browser): B stays.
    let msg = slo_peer(
        &idp,
        json!({"op": "request", "binding": "redirect", "destination": gw.url("/saml/slo"),
               "name_id": "mia@corp.example", "name_id_format": EMAIL_FORMAT,
               "session_indexes": [a_index]}),
    );
    let r = b.get(msg["url"].as_str().expect("url")).await;
    assert_eq!(
        r.status(),
        303,
        "answered to the IdP; hops:\n{}",
        b.hops_text()
    );
    assert!(location(&r).is_some_and(|u| u.as_str().starts_with(IDP_SLO)));
    assert_eq!(
        me(&b, &gw).await["email"],
        "ben@corp.example",
        "B is still signed in"
    );

    // B signs out: B's own IdP is told (OIDC end-session), not A's SAML IdP.
    let portal = b.get(&gw.url("/")).await.text().await.expect("portal");
    let csrf = portal
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("csrf field")
        .to_owned();
    let out = b.post_form(&gw.url("/logout"), &[("csrf", &csrf)]).await;
    assert_eq!(out.status(), 303);
    let to = location(&out).expect("to B's IdP");
    assert!(
        to.as_str().starts_with(&peer.issuer),
        "B's sign-out goes to B's OIDC provider, not {to}"
    );
    assert!(
        !out.headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|c| c.starts_with("storegate_saml_logout=")),
        "no SAML LogoutRequest was sent for A"
    );
    assert_not_signed_in(&b, &gw).await;
    // The sign-out of B is audited as B's.
    let ev = last_event(&gw, Outcome::Allow).await;
    assert_eq!(ev.idp.as_deref(), Some("nam"), "{ev:?}");
}

#[tokio::test]
async fn shared_pc_a_step_up_attempt_of_the_first_person_does_not_reach_the_next() {
    let (idp, _peer, gw) = shared_pc_gateway("shared-pc-step-up", Some(STEP_UP_POLICY)).await;
    let b = Browser::new();
    // A (SAML, password only) opens the US store: sent to step up, and walks away instead.
    saml_sign_in_with_class(&idp, &gw, &b, PASSWORD).await;
    launch_asks_for_step_up(&b, &gw).await;
    // B signs in over OIDC in the same browser, in the same second, and opens the same store.
    oidc_sign_in_ben(&b, &gw).await;
    let launch = b.get(&gw.url("/stores/us/launch")).await;
    // B's own first refusal: a step-up at B's IdP, not A's "the IdP did not confirm it" page.
    assert_eq!(launch.status(), 303, "hops:\n{}", b.hops_text());
    let to = location(&launch).expect("to sign in");
    assert_eq!(to.path(), "/login");
    assert!(
        to.query().is_some_and(
            |q| q.contains("idp=nam") && q.contains(&format!("acr={}", urlencode(MFA)))
        ),
        "{to}"
    );
    gw.assert_no_token_minted();
}
