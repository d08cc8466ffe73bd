//! One error type for every handler, translated once into a page (or JSON) at the edge.
//!
//! The page names what happened and what to do, with a reference id (the request id) that matches
//! the audit event. It never echoes raw input or internal details.

use askama::Template;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    message: &'a str,
    hint: Option<&'a str>,
    reference: &'a str,
    show_sign_in: bool,
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
        let page = ErrorPage {
            title: self.title,
            message: &self.message,
            hint: self.hint.as_deref(),
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
