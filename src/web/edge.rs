//! Hand-written layers of the gateway's middleware stack (`web::router_with`). Each one calls
//! the next service directly and wraps its future in a named type. `axum::middleware::from_fn`
//! did the same work per request only after cloning the whole rest of the stack, boxing that
//! clone and boxing a future; with three such layers that was about 7% of a Redis launch's
//! instructions (issue 15).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http::{HeaderValue, Request, Response as HttpResponse, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::future::{FutureExt, Map};
use tokio::task::futures::TaskLocalFuture;
use tower::{Layer, Service};

use crate::config::Config;

/// The header carrying the gateway's own request id.
const REQUEST_ID: &str = "x-request-id";

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
            .get(REQUEST_ID)
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
        let rid = req.headers().get(REQUEST_ID).cloned();
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
