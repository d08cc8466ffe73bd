//! One error type for every handler, translated once into a page (or JSON) at the edge.
//!
//! The page says what happened, what the person can do and whom to ask (`support_contact`), with
//! a reference id (the request id) that matches the audit event. It never echoes raw input or
//! internal details.

use askama::Template;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    /// What happened.
    message: &'a str,
    /// What the person can do.
    next_step: String,
    /// Whom to ask (`support_contact`).
    contact: String,
    reference: &'a str,
    show_sign_in: bool,
}

tokio::task_local! {
    /// The configured `support_contact`, for error pages built far from the configuration.
    static SUPPORT_CONTACT: std::sync::Arc<crate::config::Config>;
}

/// Runs `f` with `config`'s support contact named on every error page it produces. A plain
/// future type (not an `async fn`) so the middleware can name it (`web::edge`).
pub fn with_contact<F: std::future::Future>(
    config: std::sync::Arc<crate::config::Config>,
    f: F,
) -> tokio::task::futures::TaskLocalFuture<std::sync::Arc<crate::config::Config>, F> {
    SUPPORT_CONTACT.scope(config, f)
}

/// Whom an error page says to ask: the configured contact, or a generic one outside a request.
fn contact() -> String {
    SUPPORT_CONTACT
        .try_with(|c| c.support_contact.clone())
        .unwrap_or_else(|_| "your IT service desk".to_owned())
}

/// What a person can do about an error of this status when the handler gave no specific hint.
fn default_next_step(status: StatusCode, contact: &str) -> String {
    match status.as_u16() {
        401 => "Sign in again, then retry.".to_owned(),
        403 => format!("If you need this access, ask {contact} and quote the reference below."),
        404 => "Check the address, or go back to your stores and choose from there.".to_owned(),
        409 => format!("This needs an administrator: send the reference below to {contact}."),
        429 => "Wait a minute, then try again.".to_owned(),
        400..=499 => "Go back to your stores and start again from there.".to_owned(),
        503 | 504 => format!(
            "Try again in a minute. If it keeps happening, tell {contact} and quote the reference below."
        ),
        _ => {
            format!("Try again. If it happens again, tell {contact} and quote the reference below.")
        }
    }
}

#[derive(Debug, Clone)]
pub struct AppError {
    pub status: StatusCode,
    pub title: &'static str,
    pub message: String,
    pub hint: Option<String>,
    /// The request id, shown as the page's reference.
    pub reference: String,
    pub show_sign_in: bool,
}

impl AppError {
    pub fn new(
        status: StatusCode,
        title: &'static str,
        message: impl Into<String>,
        reference: &str,
    ) -> Self {
        AppError {
            status,
            title,
            message: message.into(),
            hint: None,
            reference: reference.to_owned(),
            show_sign_in: false,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn offer_sign_in(mut self) -> Self {
        self.show_sign_in = true;
        self
    }

    pub fn unavailable(what: &str, reference: &str) -> Self {
        AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Temporarily unavailable",
            format!(
                "{what} cannot be reached right now, so nobody can be signed in or sent to a store. Please try again in a minute."
            ),
            reference,
        )
    }

    pub fn session_store(reference: &str) -> Self {
        AppError::unavailable("The session store", reference)
    }

    pub fn bad_request(message: impl Into<String>, reference: &str) -> Self {
        AppError::new(
            StatusCode::BAD_REQUEST,
            "This request cannot be used",
            message,
            reference,
        )
    }

    pub fn not_found(message: impl Into<String>, reference: &str) -> Self {
        AppError::new(StatusCode::NOT_FOUND, "Not found", message, reference)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let contact = contact();
        let page = ErrorPage {
            title: self.title,
            message: &self.message,
            next_step: self
                .hint
                .clone()
                .unwrap_or_else(|| default_next_step(self.status, &contact)),
            contact,
            reference: &self.reference,
            show_sign_in: self.show_sign_in,
        };
        let body = page
            .render()
            .unwrap_or_else(|_| format!("{} (reference {})", self.title, self.reference));
        let mut resp = (self.status, Html(body)).into_response();
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn page(err: AppError) -> String {
        let resp = err.into_response();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn an_error_page_says_what_happened_what_to_do_whom_to_ask_and_the_reference() {
        let html = page(AppError::not_found(
            "There is no store with this name.",
            "rid-1",
        ))
        .await;
        assert!(html.contains("There is no store with this name."), "{html}");
        assert!(
            html.contains("Check the address, or go back to your stores"),
            "{html}"
        );
        assert!(html.contains("your IT service desk"), "{html}");
        assert!(html.contains("<code>rid-1</code>"), "{html}");
    }

    #[tokio::test]
    async fn the_configured_contact_is_named_and_a_hint_replaces_the_default_step() {
        let text = "public_url = \"https://sso.example.com\"\n[[idp]]\nid = \"am\"\nprotocol = \"oidc\"\nissuer = \"https://am.example.com\"\nclient_id = \"storegate\"\n";
        let mut cfg = crate::config::load_str(text, "t.toml", &crate::config::LiteralEnv).unwrap();
        cfg.support_contact = "the web team (web@example.com)".into();
        let err = AppError::new(StatusCode::FORBIDDEN, "No access", "Denied.", "rid-2")
            .with_hint("Ask for the bc-support group.");
        let html = with_contact(std::sync::Arc::new(cfg), page(err)).await;
        assert!(html.contains("the web team (web@example.com)"), "{html}");
        assert!(html.contains("Ask for the bc-support group."), "{html}");
        assert!(!html.contains("If you need this access"), "{html}");
    }
}
