//! Hand-written layers of the gateway's middleware stack (`web::router_with`). Each one calls
//! the next service directly and wraps its future in a named type. `axum::middleware::from_fn`
//! did the same work per request only after cloning the whole rest of the stack, boxing that
//! clone and boxing a future; with three such layers that was about 5% of a Redis launch's
//! instructions (issue 15).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http::{HeaderName, HeaderValue, Request, Response as HttpResponse, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::future::{FutureExt, Map};
use tokio::task::futures::TaskLocalFuture;
use tower::{Layer, Service};

use crate::config::Config;

/// The header carrying the gateway's own request id. A `HeaderName`, not a `&str`: a name that
/// is not one of `http`'s standard headers is copied into a new allocation every time a `&str`
/// of it is inserted (two per request, issue 15).
static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Makes the request's id the current one for the BigCommerce clients (`audit::correlation`),
/// and the configured support contact the one error pages name (`errors::with_contact`).
#[derive(Clone)]
pub struct CorrelateLayer(pub Arc<Config>);

impl<S> Layer<S> for CorrelateLayer {
    type Service = Correlate<S>;
    fn layer(&self, inner: S) -> Correlate<S> {
        Correlate {
            inner,
            config: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Correlate<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S, B> Service<Request<B>> for Correlate<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = TaskLocalFuture<Arc<Config>, TaskLocalFuture<String, S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    /// The inner `call` runs outside the two scopes; only the future runs inside them. Nothing
    /// below reads them before its future is polled: the layers down to the session layer do
    /// no such work in `call`, and the session layer and every handler box an `async` block.
    fn call(&mut self, req: Request<B>) -> Self::Future {
        let rid = req
            .headers()
            .get(&REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let run = crate::audit::correlation::scope(rid, self.inner.call(req));
        super::errors::with_contact(self.config.clone(), run)
    }
}

/// A 413 on a SCIM path becomes a SCIM error (`scim::too_large_as_scim_error`); the body
/// limit it wraps answers a bare one. Other paths only have their body made axum's.
#[derive(Clone, Copy)]
pub struct ScimTooLargeLayer;

impl<S> Layer<S> for ScimTooLargeLayer {
    type Service = ScimTooLarge<S>;
    fn layer(&self, inner: S) -> ScimTooLarge<S> {
        ScimTooLarge(inner)
    }
}

#[derive(Clone)]
pub struct ScimTooLarge<S>(S);

type ToResponse<B, E> = fn(Result<HttpResponse<B>, E>) -> Result<Response, E>;

fn plain<B, E>(r: Result<HttpResponse<B>, E>) -> Result<Response, E>
where
    HttpResponse<B>: IntoResponse,
{
    r.map(IntoResponse::into_response)
}

fn scim<B, E>(r: Result<HttpResponse<B>, E>) -> Result<Response, E>
where
    HttpResponse<B>: IntoResponse,
{
    r.map(|resp| super::scim::too_large_as_scim_error(resp.into_response()))
}

impl<S, B, RB> Service<Request<B>> for ScimTooLarge<S>
where
    S: Service<Request<B>, Response = HttpResponse<RB>>,
    HttpResponse<RB>: IntoResponse,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Map<S::Future, ToResponse<RB, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let then: ToResponse<RB, S::Error> = if super::scim::is_scim_path(req.uri().path()) {
            scim
        } else {
            plain
        };
        self.0.call(req).map(then)
    }
}

/// The session layer answers a failed end-of-request save (the store went away between load
/// and save, or a first write with no cookie yet) with a bare, header-less 500. That already
/// grants nothing (no cookie, no `Location`), but the user should get the same 503 page as every
/// other store failure: this turns exactly that bare 500 into it. Handler errors always carry a
/// body type, so they are never touched.
#[derive(Clone, Copy)]
pub struct SaveFailedPageLayer;

impl<S> Layer<S> for SaveFailedPageLayer {
    type Service = SaveFailedPage<S>;
    fn layer(&self, inner: S) -> SaveFailedPage<S> {
        SaveFailedPage(inner)
    }
}

#[derive(Clone)]
pub struct SaveFailedPage<S>(S);

impl<S, B> Service<Request<B>> for SaveFailedPage<S>
where
    S: Service<Request<B>, Response = Response>,
    S::Future: Unpin,
{
    type Response = Response;
    type Error = S::Error;
    type Future = SaveFailedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The header value, not its text: a reference count, read only on a failure.
        let rid = req.headers().get(&REQUEST_ID).cloned();
        SaveFailedFuture {
            inner: self.0.call(req),
            rid,
        }
    }
}

/// [`SaveFailedPage`]'s future. The session layer's future is a box, so no pinning is needed.
pub struct SaveFailedFuture<F> {
    inner: F,
    rid: Option<HeaderValue>,
}

impl<F, E> Future for SaveFailedFuture<F>
where
    F: Future<Output = Result<Response, E>> + Unpin,
{
    type Output = Result<Response, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let resp = match Pin::new(&mut self.inner).poll(cx) {
            Poll::Ready(Ok(resp)) => resp,
            other => return other,
        };
        if resp.status() == StatusCode::INTERNAL_SERVER_ERROR
            && resp.headers().get(header::CONTENT_TYPE).is_none()
            && resp.headers().get(header::LOCATION).is_none()
        {
            let rid = self
                .rid
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            tracing::warn!(request_id = %rid, "the session store failed to save; answered 503");
            return Poll::Ready(Ok(
                super::errors::AppError::session_store(rid).into_response()
            ));
        }
        Poll::Ready(Ok(resp))
    }
}

/// The security headers of every response from the session layer inward, each added unless
/// the response already has it (as `SetResponseHeaderLayer::if_not_present` did, one layer per
/// header): one layer, one future and one lookup per header. Added in the order the former
/// layers added them (innermost first), so the response's header order is unchanged.
#[derive(Clone, Copy)]
pub struct SecurityHeadersLayer {
    /// `Strict-Transport-Security` too (the public URL is `https`).
    pub hsts: bool,
}

const SECURITY_HEADERS: [(header::HeaderName, HeaderValue); 4] = [
    (
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'",
        ),
    ),
    (
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    ),
    (
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    ),
    (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
];

const HSTS: HeaderValue = HeaderValue::from_static("max-age=31536000; includeSubDomains");

impl<S> Layer<S> for SecurityHeadersLayer {
    type Service = SecurityHeaders<S>;
    fn layer(&self, inner: S) -> SecurityHeaders<S> {
        SecurityHeaders {
            inner,
            hsts: self.hsts,
        }
    }
}

#[derive(Clone)]
pub struct SecurityHeaders<S> {
    inner: S,
    hsts: bool,
}

type AddHeaders<B, E> = fn(Result<HttpResponse<B>, E>) -> Result<HttpResponse<B>, E>;

fn add_security_headers<B>(resp: &mut HttpResponse<B>) {
    let headers = resp.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        headers.entry(name).or_insert(value);
    }
}

fn secure<B, E>(r: Result<HttpResponse<B>, E>) -> Result<HttpResponse<B>, E> {
    r.map(|mut resp| {
        add_security_headers(&mut resp);
        resp
    })
}

fn secure_with_hsts<B, E>(r: Result<HttpResponse<B>, E>) -> Result<HttpResponse<B>, E> {
    r.map(|mut resp| {
        add_security_headers(&mut resp);
        resp.headers_mut()
            .entry(header::STRICT_TRANSPORT_SECURITY)
            .or_insert(HSTS);
        resp
    })
}

impl<S, B, RB> Service<Request<B>> for SecurityHeaders<S>
where
    S: Service<Request<B>, Response = HttpResponse<RB>>,
{
    type Response = HttpResponse<RB>;
    type Error = S::Error;
    type Future = Map<S::Future, AddHeaders<RB, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let then: AddHeaders<RB, S::Error> = if self.hsts { secure_with_hsts } else { secure };
        self.inner.call(req).map(then)
    }
}

/// The gateway's own request id, on the request and on its response: a client-sent
/// `x-request-id` is replaced (the audit trail's ids are ours), and a response that carries
/// none gets the request's. One layer for what `map_request`, `SetRequestIdLayer` and
/// `PropagateRequestIdLayer` did, without their `RequestId` extensions, which nothing reads.
#[derive(Clone, Copy)]
pub struct RequestIdLayer;

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestId<S>;
    fn layer(&self, inner: S) -> RequestId<S> {
        RequestId(inner)
    }
}

#[derive(Clone)]
pub struct RequestId<S>(S);

/// A new request id: a random (v4) uuid, hyphenated, lower case.
fn new_request_id() -> HeaderValue {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
    // A uuid's text is always a valid header value; the fallback is never taken.
    HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static("no-request-id"))
}

impl<S, B, RB> Service<Request<B>> for RequestId<S>
where
    S: Service<Request<B>, Response = HttpResponse<RB>>,
{
    type Response = HttpResponse<RB>;
    type Error = S::Error;
    type Future = RequestIdFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let id = new_request_id();
        // `insert` drops every value the client sent under this name.
        req.headers_mut().insert(&REQUEST_ID, id.clone());
        RequestIdFuture {
            inner: self.0.call(req),
            id: Some(id),
        }
    }
}

pin_project_lite::pin_project! {
    /// [`RequestId`]'s future: the response gets the id unless it names one.
    pub struct RequestIdFuture<F> {
        #[pin]
        inner: F,
        id: Option<HeaderValue>,
    }
}

impl<F, B, E> Future for RequestIdFuture<F>
where
    F: Future<Output = Result<HttpResponse<B>, E>>,
{
    type Output = Result<HttpResponse<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut resp = match this.inner.poll(cx) {
            Poll::Ready(Ok(resp)) => resp,
            other => return other,
        };
        if let Some(id) = this.id.take() {
            resp.headers_mut().entry(&REQUEST_ID).or_insert(id);
        }
        Poll::Ready(Ok(resp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    /// A response through [`SecurityHeadersLayer`] from a handler that set `preset` itself.
    async fn secured(hsts: bool, preset: Option<(&'static str, &'static str)>) -> HttpResponse<()> {
        let handler = tower::service_fn(move |_: Request<()>| async move {
            let mut resp = HttpResponse::new(());
            if let Some((name, value)) = preset {
                resp.headers_mut()
                    .insert(name, HeaderValue::from_static(value));
            }
            Ok::<_, std::convert::Infallible>(resp)
        });
        let svc = SecurityHeadersLayer { hsts }.layer(handler);
        match svc.oneshot(Request::new(())).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        }
    }

    #[tokio::test]
    async fn every_security_header_is_added_unless_the_handler_set_its_own() {
        let resp = secured(false, Some(("x-frame-options", "SAMEORIGIN"))).await;
        let names: Vec<&str> = resp.headers().keys().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "x-frame-options",
                "content-security-policy",
                "x-content-type-options",
                "referrer-policy"
            ]
        );
        assert_eq!(resp.headers()["x-frame-options"], "SAMEORIGIN");
        assert_eq!(resp.headers()["referrer-policy"], "no-referrer");

        let resp = secured(true, None).await;
        assert_eq!(resp.headers()["x-frame-options"], "DENY");
        assert_eq!(
            resp.headers()["strict-transport-security"],
            "max-age=31536000; includeSubDomains"
        );
        assert_eq!(resp.headers().len(), 5);
    }

    /// What the handler saw as the request id, and the response's.
    async fn ids(client: &[&'static str], handler_sets: Option<&'static str>) -> (String, String) {
        let handler = tower::service_fn(move |req: Request<()>| async move {
            let seen: Vec<_> = req.headers().get_all(&REQUEST_ID).iter().cloned().collect();
            assert_eq!(seen.len(), 1, "{seen:?}");
            let mut resp = HttpResponse::new(seen[0].to_str().unwrap_or("").to_owned());
            if let Some(id) = handler_sets {
                resp.headers_mut()
                    .insert(&REQUEST_ID, HeaderValue::from_static(id));
            }
            Ok::<_, std::convert::Infallible>(resp)
        });
        let mut req = Request::new(());
        for id in client {
            req.headers_mut()
                .append(&REQUEST_ID, HeaderValue::from_static(id));
        }
        match RequestIdLayer.layer(handler).oneshot(req).await {
            Ok(resp) => {
                let answered = resp.headers()[&REQUEST_ID]
                    .to_str()
                    .unwrap_or("")
                    .to_owned();
                (resp.into_body(), answered)
            }
            Err(never) => match never {},
        }
    }

    #[tokio::test]
    async fn the_request_id_is_ours_and_the_response_carries_it() {
        let (seen, answered) = ids(&["client-1", "client-2"], None).await;
        assert!(uuid::Uuid::parse_str(&seen).is_ok(), "{seen}");
        assert_eq!(seen.len(), 36);
        assert_eq!(seen, seen.to_lowercase());
        assert_eq!(answered, seen);
        let (other, _) = ids(&[], None).await;
        assert_ne!(other, seen);
        // A response that names its own id keeps it.
        let (_, answered) = ids(&[], Some("upstream-id")).await;
        assert_eq!(answered, "upstream-id");
    }
}
