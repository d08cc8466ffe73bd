//! The one place where the journeys' outcomes and refusals (`flows`) become responses: which
//! status, which page, which words, which hint. Handlers extract, call the flow, and return what
//! this module makes of the result.

use askama::Template;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};

use super::errors::AppError;
use super::{AppState, cookies, no_store};
use crate::federation::oidc::OidcError;
use crate::federation::saml::SamlError;
use crate::flows::control_panel::{ControlPanelError, Opened};
use crate::flows::forward_auth::Refused;
use crate::flows::launch::UpstreamFailure;
use crate::flows::sign_out::{SloAnswered, StorefrontLogout};
use crate::flows::{FlowError, LaunchError, Launched, SignInError, SignOutError, SignedOut};
use crate::policy::{ControlPanelRefusal, DenyReason, LaunchRefusal};
use crate::redirect::LocalPath;

/// A journey's outcome, as the browser gets it.
pub enum Answer {
    Launched(Launched),
    /// The portal's "Control panel" entry: 302 to the store's control panel.
    ControlPanel(Opened),
    /// An OIDC callback signed the person in: 302 back to where they were going.
    SignedInOidc {
        return_to: LocalPath,
    },
    /// The SAML ACS signed the person in: 303, so the browser follows with a GET, which carries
    /// the (Lax) session cookie just set.
    SignedInSaml {
        return_to: LocalPath,
    },
    /// `/logout` ended the session; `secure`: the binding cookie's `Secure` flag.
    SignedOut {
        outcome: SignedOut,
        secure: bool,
    },
    /// The signed-out page, noting that the IdP's sign-out (request `reference`) is unconfirmed.
    SignedOutUnconfirmed {
        reference: String,
    },
    /// An IdP's message at `/saml/slo` was answered (`reference`: this request's id).
    IdpSignOut {
        answered: SloAnswered,
        reference: String,
    },
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        match self {
            // 302 (the public contract) straight to the storefront.
            Answer::Launched(Launched::Storefront { login_url }) => {
                no_store((StatusCode::FOUND, [(header::LOCATION, login_url)]).into_response())
            }
            Answer::ControlPanel(Opened { url }) => {
                no_store((StatusCode::FOUND, [(header::LOCATION, url)]).into_response())
            }
            Answer::Launched(Launched::SignInAgain { target }) => {
                no_store(Redirect::to(&target).into_response())
            }
            Answer::SignedInOidc { return_to } => {
                no_store(Redirect::to(return_to.as_str()).into_response())
            }
            Answer::SignedInSaml { return_to } => (
                StatusCode::SEE_OTHER,
                [(header::LOCATION, return_to.as_str().to_owned())],
            )
                .into_response(),
            Answer::SignedOut {
                outcome: SignedOut::To { target },
                ..
            } => no_store(Redirect::to(&target).into_response()),
            Answer::SignedOut {
                outcome: SignedOut::SamlLogout { url, binding },
                secure,
            } => {
                let mut resp = Redirect::to(&url).into_response();
                if let Some(key) = binding {
                    cookies::logout_cookie(&mut resp, &key, secure);
                }
                no_store(resp)
            }
            Answer::SignedOutUnconfirmed { reference } => signed_out_page(Some(&reference)),
            Answer::IdpSignOut {
                answered: SloAnswered::Confirmed { signed_out },
                ..
            } => {
                // On to the signed-out page, which also ends the storefront sessions the
                // sign-out remembered (`flows::sign_out`).
                let target = match signed_out {
                    Some(k) => format!("/signed-out?state={}", crate::redirect::urlencode(&k)),
                    None => "/signed-out".to_owned(),
                };
                (StatusCode::SEE_OTHER, [(header::LOCATION, target)]).into_response()
            }
            Answer::IdpSignOut {
                answered: SloAnswered::Unconfirmed,
                reference,
            } => signed_out_page(Some(&reference)),
            Answer::IdpSignOut {
                answered: SloAnswered::Respond { url },
                ..
            } => Redirect::to(&url).into_response(),
        }
    }
}

#[derive(Template)]
#[template(path = "signed_out.html")]
struct SignedOutPage<'a> {
    /// Set when the IdP's sign-out could not be confirmed: the reference of that request.
    unconfirmed: Option<&'a str>,
    /// Storefronts whose sessions this page ends (each logout URL in a hidden frame).
    stores: &'a [StorefrontLogout],
}

/// The signed-out page; with `unconfirmed` (a request reference), it adds that the identity
/// provider's sign-out could not be confirmed.
pub fn signed_out_page(unconfirmed: Option<&str>) -> Response {
    signed_out_page_with(unconfirmed, &[])
}

/// The signed-out page that also ends `stores`' storefront sessions: each store's logout URL
/// loads in a hidden frame, and the page's Content-Security-Policy allows exactly those
/// origins as frames (nothing else changes: still no script, `frame-ancestors 'none'`).
pub fn signed_out_page_with(unconfirmed: Option<&str>, stores: &[StorefrontLogout]) -> Response {
    let mut resp = match (SignedOutPage {
        unconfirmed,
        stores,
    })
    .render()
    {
        Ok(p) => Html(p).into_response(),
        Err(_) => "You are signed out.".into_response(),
    };
    if let Some(csp) = signed_out_csp(stores)
        && let Ok(v) = header::HeaderValue::from_str(&csp)
    {
        resp.headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, v);
    }
    no_store(resp)
}

/// The gateway's policy plus `frame-src` for the storefronts' origins; `None` without stores
/// (the default policy applies).
pub fn signed_out_csp(stores: &[StorefrontLogout]) -> Option<String> {
    let mut origins: Vec<String> = stores
        .iter()
        .filter_map(|s| url::Url::parse(&s.logout_url).ok())
        .map(|u| u.origin().ascii_serialization())
        .filter(|o| o != "null")
        .collect();
    origins.sort();
    origins.dedup();
    if origins.is_empty() {
        return None;
    }
    Some(format!(
        "default-src 'none'; style-src 'self'; img-src 'self' data:; frame-src {}; frame-ancestors 'none'; base-uri 'none'",
        origins.join(" ")
    ))
}

/// A journey's refusal or failure with what its page needs (the request id as reference, and
/// whom to ask).
pub struct FlowFailed {
    error: FlowError,
    reference: String,
    support: String,
}

impl FlowFailed {
    pub fn new(error: impl Into<FlowError>, state: &AppState, reference: &str) -> Self {
        FlowFailed {
            error: error.into(),
            reference: reference.to_owned(),
            support: state.config.support_contact.clone(),
        }
    }
}

impl IntoResponse for FlowFailed {
    fn into_response(self) -> Response {
        AppError::from(self).into_response()
    }
}

impl From<FlowFailed> for AppError {
    fn from(f: FlowFailed) -> AppError {
        let rid = f.reference.as_str();
        match f.error {
            FlowError::Launch(e) => launch_page(e, rid, &f.support),
            FlowError::SignIn(e) => sign_in_page(e, rid),
            FlowError::SignOut(e) => sign_out_page(e, rid),
            FlowError::ControlPanel(e) => control_panel_page(e, rid, &f.support),
        }
    }
}

const DISABLED_BY_SCIM: &str =
    "Your account has been disabled by your organisation's identity management.";
const SCIM_STORE: &str = "The identity management data (SCIM store)";
const NEEDS_ADMIN: &str = "The store account needs an administrator";

fn launch_page(e: LaunchError, rid: &str, support: &str) -> AppError {
    match e {
        LaunchError::UnknownStore => AppError::not_found("There is no store with this name.", rid),
        LaunchError::BadRedirect { problem } => AppError::bad_request(
            format!("The storefront page to open must be a path on the store: {problem}."),
            rid,
        ),
        LaunchError::LeaverUnknown => AppError::unavailable(SCIM_STORE, rid),
        LaunchError::Leaver => AppError::new(
            StatusCode::FORBIDDEN,
            "No access to this store",
            DISABLED_BY_SCIM,
            rid,
        ),
        LaunchError::Refused { store, refusal } => {
            let (title, hint) = match &refusal {
                LaunchRefusal::Denied(DenyReason::Expired { .. }) => (
                    "Your access has expired",
                    format!("To renew it, ask {support}."),
                ),
                LaunchRefusal::PathNotAllowed { .. } => (
                    "This page of the store is not open to you",
                    format!("Open the store from the portal, or ask {support} for wider access."),
                ),
                _ => (
                    "No access to this store",
                    format!("If you need this store, ask {support}."),
                ),
            };
            AppError::new(
                StatusCode::FORBIDDEN,
                title,
                format!("You cannot open {store}: {}.", refusal.explain()),
                rid,
            )
            .with_hint(hint)
        }
        LaunchError::StepUpNotMet { store, refusal } => AppError::new(
            StatusCode::FORBIDDEN,
            "A stronger sign-in is needed",
            format!(
                "You cannot open {store} yet: {}. The identity provider did not confirm it when you signed in again.",
                refusal.explain()
            ),
            rid,
        )
        .with_hint(format!(
            "Sign in again with the required method, or ask {support}."
        ))
        .offer_sign_in(),
        LaunchError::AccountNotConfigured => {
            AppError::not_found("This store's BigCommerce account is not configured.", rid)
        }
        LaunchError::Upstream { store, failure, .. } => upstream_page(failure, &store, rid, support),
        LaunchError::SessionStore => AppError::session_store(rid),
        LaunchError::MintFailed => AppError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The store could not be opened",
            "The gateway could not create the sign-in token; the administrator can find the details under this reference.",
            rid,
        ),
    }
}

/// The launch's pages, for the same refusals of the control-panel entry.
fn control_panel_page(e: ControlPanelError, rid: &str, support: &str) -> AppError {
    match e {
        ControlPanelError::UnknownAccount => {
            AppError::not_found("There is no store with this name.", rid)
        }
        ControlPanelError::LeaverUnknown => AppError::unavailable(SCIM_STORE, rid),
        ControlPanelError::Leaver => AppError::new(
            StatusCode::FORBIDDEN,
            "No access to this store",
            DISABLED_BY_SCIM,
            rid,
        ),
        ControlPanelError::Refused { store, refusal } => {
            let (title, hint) = match &refusal {
                ControlPanelRefusal::Denied(DenyReason::Expired { .. }) => (
                    "Your access has expired",
                    format!("To renew it, ask {support}."),
                ),
                _ => (
                    "No access to this control panel",
                    format!("If you need to manage this store, ask {support}."),
                ),
            };
            AppError::new(
                StatusCode::FORBIDDEN,
                title,
                format!(
                    "You cannot open the control panel of {store}: {}.",
                    refusal.explain()
                ),
                rid,
            )
            .with_hint(hint)
        }
    }
}

/// BigCommerce's part of a launch failed or refused: 409 when an administrator must act, 503
/// when the store is unreachable, else 502.
fn upstream_page(failure: UpstreamFailure, store: &str, rid: &str, support: &str) -> AppError {
    match failure {
        UpstreamFailure::AdoptionNeedsVerifiedEmail => AppError::new(
            StatusCode::CONFLICT,
            NEEDS_ADMIN,
            format!(
                "{store} already has a customer account with your email address that is not linked to you yet, and your identity provider did not confirm that the address is yours, so the gateway will not sign you into it."
            ),
            rid,
        )
        .with_hint(format!(
            "Ask {support} to link the account: the identity provider must release email_verified, or be marked trust_email in the gateway's configuration if its directory owns the addresses."
        )),
        UpstreamFailure::B2bConflict { detail } => AppError::new(
            StatusCode::CONFLICT,
            NEEDS_ADMIN,
            format!("Your B2B access to {store} cannot be set up automatically: {detail}."),
            rid,
        )
        .with_hint(format!("Ask {support} to check the company in B2B Edition.")),
        UpstreamFailure::SubjectConflict => AppError::new(
            StatusCode::CONFLICT,
            NEEDS_ADMIN,
            format!(
                "{store} already has a customer account with your email address that belongs to another identity, so the gateway will not sign you into it."
            ),
            rid,
        )
        .with_hint(format!(
            "Ask {support} to resolve the duplicate account in BigCommerce."
        )),
        UpstreamFailure::Unavailable | UpstreamFailure::Failed { .. } => {
            let status = if matches!(failure, UpstreamFailure::Unavailable) {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::BAD_GATEWAY
            };
            let err = AppError::new(
                status,
                "The store could not be opened",
                format!(
                    "BigCommerce did not complete the sign-in to {store}. You have access; please try again shortly."
                ),
                rid,
            );
            match failure {
                UpstreamFailure::Failed { hint: Some(hint) } => err.with_hint(hint),
                _ => err,
            }
        }
    }
}

fn sign_in_page(e: SignInError, rid: &str) -> AppError {
    match e {
        // The same page as every other refused SAML response.
        SignInError::Replay => AppError::new(
            StatusCode::UNAUTHORIZED,
            "Sign-in refused",
            "The identity provider's answer did not pass the gateway's checks, so you were not signed in.",
            rid,
        )
        .offer_sign_in()
        .with_hint(format!("For the administrator: {}.", SamlError::Replay)),
        SignInError::UnknownIdp => AppError::not_found("There is no such sign-in method.", rid),
        SignInError::LeaverUnknown => AppError::unavailable(SCIM_STORE, rid),
        SignInError::Leaver => {
            AppError::new(StatusCode::FORBIDDEN, "Sign-in refused", DISABLED_BY_SCIM, rid)
        }
        SignInError::SessionStore => AppError::session_store(rid),
        SignInError::SamlNotConfigured => saml_not_configured(rid),
        SignInError::SamlResponseMissing => {
            AppError::bad_request("The sign-in response is incomplete.", rid).offer_sign_in()
        }
        SignInError::OidcStateMissing => {
            AppError::bad_request("The sign-in response is incomplete (no state).", rid)
                .offer_sign_in()
        }
        SignInError::OidcStateExpired => {
            AppError::bad_request("This sign-in took too long and has expired.", rid)
                .offer_sign_in()
        }
        SignInError::OidcRefused(e) => oidc_refused(rid, e),
        SignInError::SamlNotPending | SignInError::OidcStateUnknown => AppError::bad_request(
            "This sign-in response does not belong to a sign-in started in this browser, or it was already used.",
            rid,
        )
        .with_hint("Start again from the portal; do not reuse or share sign-in links.")
        .offer_sign_in(),
        SignInError::SamlRefused { error, .. } => saml_refused(rid, error.as_ref()),
    }
}

/// The page for a refused OIDC answer: the IdP unreachable (503), or its answer refused (401)
/// with a hint that says what to change where the fix is a setting.
fn oidc_refused(rid: &str, e: OidcError) -> AppError {
    if e.is_unavailable() {
        return AppError::unavailable("The identity provider", rid);
    }
    let err = AppError::new(
        StatusCode::UNAUTHORIZED,
        "Sign-in refused",
        "The identity provider's answer did not pass the gateway's checks, so you were not signed in.",
        rid,
    )
    .offer_sign_in();
    match e {
        // Admin-facing: the fix is a console setting, and the message says which.
        OidcError::UnsignedIdToken => err.with_hint(e.to_string()),
        OidcError::ProviderError { .. } => err.with_hint("The identity provider reported an error; the administrator can find the details in the audit log under this reference."),
        _ => err.with_hint("If this keeps happening, give the reference below to your administrator."),
    }
}

fn saml_not_configured(rid: &str) -> AppError {
    AppError::not_found("SAML is not configured on this gateway.", rid)
}

/// Every verifier stayed busy for the whole wait: nothing was wrong with the message.
fn saml_busy(rid: &str) -> AppError {
    AppError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "Busy",
        "The gateway is handling many sign-ins right now and could not check yours in time.",
        rid,
    )
    .with_hint("Try again in a moment.")
    .offer_sign_in()
}

/// The page for a refused SAML response: admin-useful (what did not match), never raw markup
/// (askama escapes it, and long values are cut).
fn saml_refused(rid: &str, e: Option<&SamlError>) -> AppError {
    if let Some(SamlError::Busy) = e {
        return saml_busy(rid);
    }
    let err = AppError::new(
        StatusCode::UNAUTHORIZED,
        "Sign-in refused",
        "The identity provider's answer did not pass the gateway's checks, so you were not signed in.",
        rid,
    )
    .offer_sign_in();
    match e {
        Some(e) => err.with_hint(format!("For the administrator: {}.", short(&e.to_string()))),
        None => err
            .with_hint("If this keeps happening, give the reference below to your administrator."),
    }
}

/// A refused SAML logout message: nothing was changed.
fn slo_refused(rid: &str, e: &SamlError) -> AppError {
    if let SamlError::Busy = e {
        return saml_busy(rid);
    }
    AppError::new(
        StatusCode::BAD_REQUEST,
        "Sign-out message refused",
        "The sign-out message did not pass the gateway's checks; nothing was changed.",
        rid,
    )
    .with_hint(format!("For the administrator: {}.", short(&e.to_string())))
}

/// At most 300 bytes of an error's words (cut on a character boundary), for a hint.
fn short(text: &str) -> String {
    let mut text = text.to_owned();
    if text.len() > 300 {
        let mut cut = 300;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

fn sign_out_page(e: SignOutError, rid: &str) -> AppError {
    match e {
        SignOutError::NotFromOurPage => AppError::new(
            StatusCode::FORBIDDEN,
            "Sign-out refused",
            "The sign-out request did not come from this site's own page.",
            rid,
        ),
        SignOutError::SessionStore => AppError::session_store(rid),
        SignOutError::SamlNotConfigured => saml_not_configured(rid),
        SignOutError::SloRefused(e) => slo_refused(rid, &e),
        SignOutError::SloCannotAnswer => AppError::unavailable("The identity provider", rid),
    }
}

/// How a front door wants "sign in first" said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignInMode {
    /// 401: nginx `auth_request` (its `error_page 401` sends the browser to sign in).
    Status401,
    /// 302 to sign-in: Traefik `forwardAuth`, Envoy `ext_authz` and the built-in proxy pass it
    /// to the browser.
    Redirect,
}

/// A forward-auth refusal (`flows::forward_auth`), as the front door (or, through the built-in
/// proxy, the browser) gets it: sign in (or step up) per `mode`, 403 naming the route, 400 for
/// an unreadable request, or an error.
pub fn forward_refused(
    refused: Refused,
    mode: SignInMode,
    state: &AppState,
    rid: &str,
) -> Response {
    match refused {
        Refused::NotConfigured => plain(StatusCode::NOT_FOUND, "no [[route]] is configured"),
        Refused::Unreadable(e) => plain(StatusCode::BAD_REQUEST, &e.to_string()),
        Refused::NoRoute => plain(
            StatusCode::FORBIDDEN,
            "no route covers this address (deny by default)",
        ),
        Refused::NotSignedIn {
            sign_in: Some(target),
        }
        | Refused::StepUp { target } => sign_in_answer(&target, mode),
        // Nowhere to come back to: no redirect.
        Refused::NotSignedIn { sign_in: None } => plain(StatusCode::UNAUTHORIZED, "sign in first"),
        Refused::Denied { route, refusal } => {
            let page = AppError::new(
                StatusCode::FORBIDDEN,
                "Access denied",
                refusal.explain(),
                rid,
            )
            .with_hint(format!("Ask {} for access.", state.config.support_contact));
            let mut resp = no_store(page.into_response());
            if let Ok(r) = HeaderValue::from_str(&route) {
                resp.headers_mut().insert("x-storegate-route", r);
            }
            resp
        }
        Refused::SessionStore => no_store(AppError::session_store(rid).into_response()),
        Refused::TokenMintFailed => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the identity token could not be signed",
        ),
        Refused::TokenNotHeader => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the identity token is not a header value",
        ),
    }
}

/// "Sign in at `target`": a 302 for front doors that pass it to the browser, a 401 for nginx;
/// both carry `X-Storegate-Sign-In` (nginx's `error_page 401` redirects to it).
fn sign_in_answer(target: &str, mode: SignInMode) -> Response {
    let mut resp = match mode {
        SignInMode::Redirect => {
            no_store((StatusCode::FOUND, [(header::LOCATION, target)]).into_response())
        }
        SignInMode::Status401 => plain(StatusCode::UNAUTHORIZED, "sign in first"),
    };
    if let Ok(v) = HeaderValue::from_str(target) {
        resp.headers_mut().insert("x-storegate-sign-in", v);
    }
    resp
}

/// A short plain-text answer that is never cached (forward auth speaks to front doors).
pub fn plain(status: StatusCode, text: &str) -> Response {
    no_store(
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            text.to_owned(),
        )
            .into_response(),
    )
}
