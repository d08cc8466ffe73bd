//! The exchange with the upstream: hyper's pooled client (http, or https with the webpki
//! roots), bodies streamed both ways frame by frame, the request body capped, and two clocks:
//! the response head must arrive within `upstream_timeout`, and a streaming response body may
//! pause at most that long between frames (so a long download is fine, a hung one is not).

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, Body>;

/// The longest a TCP (and TLS) connection to an upstream may take to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One pooled client for every upstream.
pub fn client(connect_timeout: Duration) -> UpstreamClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(https)
}

/// Why the upstream gave no usable answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// The request body grew past `max_body` while streaming (413).
    BodyTooLarge,
    /// No response head within the timeout, or the connection took too long to open (504).
    Timeout,
    /// Refused, reset, or not HTTP (502).
    Unreachable,
}

impl UpstreamFailure {
    pub fn code(self) -> &'static str {
        match self {
            UpstreamFailure::BodyTooLarge => "body_too_large",
            UpstreamFailure::Timeout => "upstream_timeout",
            UpstreamFailure::Unreachable => "upstream_unreachable",
        }
    }
}

/// Sends `req` and waits for the response head at most `timeout`.
pub async fn send(
    client: &UpstreamClient,
    req: axum::http::Request<Body>,
    timeout: Duration,
    body_tripped: &AtomicBool,
) -> Result<axum::http::Response<hyper::body::Incoming>, UpstreamFailure> {
    match tokio::time::timeout(timeout, client.request(req)).await {
        Err(_) => Err(UpstreamFailure::Timeout),
        Ok(Ok(resp)) => Ok(resp),
        Ok(Err(_)) if body_tripped.load(Ordering::SeqCst) => Err(UpstreamFailure::BodyTooLarge),
        Ok(Err(e)) if e.is_connect() && is_timeout(&e) => Err(UpstreamFailure::Timeout),
        Ok(Err(_)) => Err(UpstreamFailure::Unreachable),
    }
}

fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// A request body that fails once more than `max` bytes have passed, and says so in `tripped`
/// (the client's error does not keep our error's type).
pub struct CappedBody {
    inner: Body,
    seen: u64,
    max: u64,
    tripped: Arc<AtomicBool>,
}

impl CappedBody {
    pub fn new(inner: Body, max: u64, tripped: Arc<AtomicBool>) -> Self {
        CappedBody {
            inner,
            seen: 0,
            max,
            tripped,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the request body is larger than the limit")]
pub struct TooLarge;

impl http_body::Body for CappedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    if this.seen > this.max {
                        this.tripped.store(true, Ordering::SeqCst);
                        return Poll::Ready(Some(Err(Box::new(TooLarge))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the upstream paused longer than the timeout in its response body")]
pub struct IdleTimeout;

/// A response body that ends in an error when the upstream sends nothing for `idle`.
pub struct IdleBody<B> {
    inner: B,
    idle: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl<B> IdleBody<B> {
    pub fn new(inner: B, idle: Duration) -> Self {
        IdleBody {
            inner,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
        }
    }
}

impl<B> http_body::Body for IdleBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(r) => {
                let deadline = tokio::time::Instant::now() + this.idle;
                this.timer.as_mut().reset(deadline);
                Poll::Ready(r.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(IdleTimeout)))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_body_past_the_cap_fails_and_says_so() {
        let tripped = Arc::new(AtomicBool::new(false));
        let body = CappedBody::new(Body::from(vec![0u8; 11]), 10, tripped.clone());
        assert!(body.collect().await.is_err());
        assert!(tripped.load(Ordering::SeqCst));

        let tripped = Arc::new(AtomicBool::new(false));
        let body = CappedBody::new(Body::from(vec![0u8; 10]), 10, tripped.clone());
        assert_eq!(body.collect().await.unwrap().to_bytes().len(), 10);
        assert!(!tripped.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_silent_upstream_body_times_out_a_talking_one_does_not() {
        let (mut tx, rx) =
            futures::channel::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
        let body = IdleBody::new(
            http_body_util::StreamBody::new(rx),
            Duration::from_millis(500),
        );
        let reader = tokio::spawn(async move {
            match body.collect().await {
                Ok(c) => Ok(c.to_bytes()),
                Err(e) => Err(e.is::<IdleTimeout>()),
            }
        });
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            futures::SinkExt::send(&mut tx, Ok(Frame::data(Bytes::from_static(b"x"))))
                .await
                .unwrap();
        }
        // 0.9 s in all, never 0.5 s of silence: the body continues; then silence ends it.
        let got = reader.await.unwrap();
        assert_eq!(got, Err(true), "ended by the idle timeout");
    }
}
