//! The two short-lived cookies that bind a SAML exchange to the browser that started it.
//!
//! Both are `SameSite=None` (the IdP answers with a cross-site POST, which carries no Lax
//! cookie), `HttpOnly`, `Secure` unless `allow_insecure_http`, limited to the one path that reads
//! them, and hold only an opaque key to a server-side record.

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;

use crate::session::browser::PENDING_TTL;

/// Binds a pending SAML sign-in to the browser (path `/saml/acs`).
pub const PENDING_COOKIE: &str = "storegate_saml_pending";
/// Binds a LogoutRequest this gateway sent to the browser (path `/saml/slo`), so that the IdP's
/// LogoutResponse is accepted only as the answer to it (InResponseTo).
pub const LOGOUT_COOKIE: &str = "storegate_saml_logout";

/// The value of cookie `name` in the request, if any.
pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn set(resp: &mut Response, name: &str, path: &str, value: &str, max_age: i64, secure: bool) {
    let secure = if secure { "; Secure" } else { "" };
    let c =
        format!("{name}={value}; Path={path}; HttpOnly; SameSite=None; Max-Age={max_age}{secure}");
    if let Ok(v) = HeaderValue::from_str(&c) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

pub fn pending_cookie(resp: &mut Response, key: &str, secure: bool) {
    set(resp, PENDING_COOKIE, "/saml/acs", key, PENDING_TTL, secure);
}

pub fn clear_pending_cookie(resp: &mut Response, secure: bool) {
    set(resp, PENDING_COOKIE, "/saml/acs", "", 0, secure);
}

pub fn logout_cookie(resp: &mut Response, key: &str, secure: bool) {
    set(resp, LOGOUT_COOKIE, "/saml/slo", key, PENDING_TTL, secure);
}

pub fn clear_logout_cookie(resp: &mut Response, secure: bool) {
    set(resp, LOGOUT_COOKIE, "/saml/slo", "", 0, secure);
}
