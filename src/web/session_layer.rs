//! The session layer: the browser's session cookie in, a `tower_sessions::Session` for the
//! handlers, and the record saved and the cookie set (or removed) on the way out.
//!
//! It does what tower-sessions' `SessionManagerLayer` does, with the same cookie and the same
//! rules, without the `tower-cookies` jar under it: that parsed every cookie of every request into
//! a jar behind a mutex, cloned the cookie's name and opened a span per request, about 6% of a
//! launch (issue 15). Only our one cookie is read here, and only a changed session writes one.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use tower::{Layer, Service};
use tower_sessions::cookie::{Cookie, SameSite};
use tower_sessions::{Expiry, Session};

use crate::proxy::headers::cookie_value;
use crate::session::Store;

/// The session cookie's attributes.
#[derive(Debug, Clone)]
pub struct SessionCookie {
    pub name: String,
    /// `Secure` (off only with `allow_insecure_http`).
    pub secure: bool,
    /// `Domain`; host-only without one.
    pub domain: Option<String>,
    /// The idle timeout: the record's expiry and the cookie's `Max-Age`.
    pub expiry: Expiry,
}

#[derive(Clone)]
pub struct SessionLayer {
    store: Arc<Store>,
    cookie: Arc<SessionCookie>,
}

impl SessionLayer {
    pub fn new(store: Arc<Store>, cookie: SessionCookie) -> Self {
        SessionLayer {
            store,
            cookie: Arc::new(cookie),
        }
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = Sessions<S>;
    fn layer(&self, inner: S) -> Sessions<S> {
        Sessions {
            inner,
            store: self.store.clone(),
            cookie: self.cookie.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Sessions<S> {
    inner: S,
    store: Arc<Store>,
    cookie: Arc<SessionCookie>,
}

impl<S, B, RB> Service<Request<B>> for Sessions<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Send,
    S::Future: Send + 'static,
    RB: Default + Send,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<RB>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // Read as the built-in proxy reads the same cookie (name and value trimmed, as the
        // `cookie` crate parsed it for tower-sessions).
        let sent = cookie_value(req.headers(), &self.cookie.name);
        let had_cookie = sent.is_some();
        // An id that does not parse names no session: the request starts without one.
        let id = sent.and_then(|v| v.parse().ok());
        let session = Session::new(id, self.store.clone(), Some(self.cookie.expiry));
        req.extensions_mut().insert(session.clone());
        let cookie = self.cookie.clone();
        let response = self.inner.call(req);
        Box::pin(async move {
            let mut res = response.await?;
            let empty = session.is_empty().await;
            match had_cookie {
                // The browser sent a cookie for a session that is gone or was ended: remove it.
                true if empty => append(&mut res, removal(&cookie)),
                _ if session.is_modified() && !empty && !res.status().is_server_error() => {
                    if session.save().await.is_err() {
                        tracing::error!("the session could not be saved");
                        return Ok(server_error());
                    }
                    let Some(id) = session.id() else {
                        tracing::error!("a saved session has no id");
                        return Ok(server_error());
                    };
                    append(&mut res, issued(&cookie, id, session.expiry()));
                }
                _ => {}
            }
            Ok(res)
        })
    }
}

/// An empty 500: `SaveFailedPageLayer` turns it into the error page.
fn server_error<RB: Default>() -> Response<RB> {
    let mut res = Response::new(RB::default());
    *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    res
}

fn append<RB>(res: &mut Response<RB>, cookie: Cookie<'_>) {
    if let Ok(v) = HeaderValue::from_str(&cookie.to_string()) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// The cookie naming session `id`.
fn issued(
    c: &SessionCookie,
    id: tower_sessions::session::Id,
    expiry: Option<Expiry>,
) -> Cookie<'static> {
    let mut cookie = Cookie::build((c.name.clone(), id.to_string()))
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(c.secure)
        .path("/");
    cookie = match expiry {
        Some(Expiry::OnInactivity(idle)) => cookie.max_age(idle),
        Some(Expiry::AtDateTime(at)) => cookie.max_age(at - time::OffsetDateTime::now_utc()),
        Some(Expiry::OnSessionEnd) | None => cookie,
    };
    if let Some(domain) = &c.domain {
        cookie = cookie.domain(domain.clone());
    }
    cookie.build()
}

/// The cookie that makes the browser forget the one it sent (same name, path and domain; no
/// value, `Max-Age=0` and an `Expires` in the past).
fn removal(c: &SessionCookie) -> Cookie<'static> {
    let mut cookie = Cookie::build((c.name.clone(), "")).path("/");
    if let Some(domain) = &c.domain {
        cookie = cookie.domain(domain.clone());
    }
    let mut cookie = cookie.build();
    cookie.make_removal();
    cookie
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;
    use crate::session::MemorySessionStore;

    const IDLE: time::Duration = time::Duration::minutes(30);

    fn app(store: &Arc<Store>, secure: bool, domain: Option<&str>) -> Router {
        let layer = SessionLayer::new(
            store.clone(),
            SessionCookie {
                name: "sid".into(),
                secure,
                domain: domain.map(str::to_owned),
                expiry: Expiry::OnInactivity(IDLE),
            },
        );
        Router::new()
            .route("/read", get(|s: Session| async move { format!("{:?}", s.get::<u32>("n").await.ok().flatten()) }))
            .route("/write", get(|s: Session| async move { s.insert("n", 7u32).await.map(|_| "ok").map_err(|_| StatusCode::INTERNAL_SERVER_ERROR) }))
            .route("/write-then-fail", get(|s: Session| async move {
                let _ = s.insert("n", 8u32).await;
                StatusCode::BAD_GATEWAY
            }))
            .layer(layer)
    }

    async fn call(
        app: &Router,
        path: &str,
        cookie: Option<&str>,
    ) -> (StatusCode, Vec<String>, String) {
        let mut req = Request::get(path);
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        let res = app
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let cookies = res
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        let body = axum::body::to_bytes(res.into_body(), 1024).await.unwrap();
        (status, cookies, String::from_utf8_lossy(&body).into_owned())
    }

    fn memory() -> Arc<Store> {
        Arc::new(Store::Memory(MemorySessionStore::default()))
    }

    #[tokio::test]
    async fn a_changed_session_is_saved_and_named_by_a_cookie_with_every_attribute() {
        let store = memory();
        let app = app(&store, true, Some("shop.example"));
        let (status, cookies, _) = call(&app, "/write", None).await;
        assert_eq!(status, StatusCode::OK);
        let [cookie] = cookies.as_slice() else {
            panic!("one cookie expected: {cookies:?}")
        };
        let id = cookie
            .strip_prefix("sid=")
            .and_then(|c| c.split(';').next())
            .expect("sid=");
        for attribute in [
            "HttpOnly",
            "SameSite=Lax",
            "Secure",
            "Path=/",
            "Domain=shop.example",
            "Max-Age=1800",
        ] {
            assert!(
                cookie.split("; ").any(|a| a == attribute),
                "{attribute} missing: {cookie}"
            );
        }
        // The session it names holds what the handler wrote; reading it sets no cookie.
        let (_, cookies, body) = call(&app, "/read", Some(&format!("other=1; sid={id}"))).await;
        assert_eq!(body, "Some(7)");
        assert!(cookies.is_empty(), "an unchanged session set {cookies:?}");
        // Spaces around the `=` are read past, as the `cookie` crate under tower-sessions did.
        let (_, _, body) = call(&app, "/read", Some(&format!("other=1; sid = {id} "))).await;
        assert_eq!(body, "Some(7)");
    }

    #[tokio::test]
    async fn without_a_change_no_cookie_is_set_and_without_https_none_is_secure() {
        let store = memory();
        let app = app(&store, false, None);
        let (_, cookies, body) = call(&app, "/read", None).await;
        assert_eq!(body, "None");
        assert!(cookies.is_empty(), "{cookies:?}");
        let (_, cookies, _) = call(&app, "/write", None).await;
        assert!(
            !cookies[0].contains("Secure") && !cookies[0].contains("Domain"),
            "{cookies:?}"
        );
    }

    #[tokio::test]
    async fn a_cookie_for_no_session_is_removed_and_names_nothing() {
        let store = memory();
        let app = app(&store, true, Some("shop.example"));
        for sent in ["sid=9Nsl-g0pU9P2Kx8p6Q8mVw", "sid=not-an-id"] {
            let (_, cookies, body) = call(&app, "/read", Some(sent)).await;
            assert_eq!(body, "None", "{sent}");
            let [removal] = cookies.as_slice() else {
                panic!("{sent}: one removal cookie expected: {cookies:?}")
            };
            assert!(removal.starts_with("sid=;"), "{removal}");
            for attribute in ["Max-Age=0", "Path=/", "Domain=shop.example"] {
                assert!(
                    removal.split("; ").any(|a| a == attribute),
                    "{attribute} missing: {removal}"
                );
            }
        }
    }

    #[tokio::test]
    async fn a_change_answered_with_a_server_error_is_not_saved() {
        let store = memory();
        let app = app(&store, true, None);
        let (status, cookies, _) = call(&app, "/write-then-fail", None).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert!(cookies.is_empty(), "{cookies:?}");
        let Store::Memory(m) = &*store else {
            unreachable!()
        };
        assert!(m.is_empty(), "a session was stored");
    }
}
