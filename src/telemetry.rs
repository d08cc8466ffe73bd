//! Optional OpenTelemetry trace export over OTLP/HTTP (issue 6), switched on by `[telemetry]`.
//!
//! What leaves the process is decided here, by an allowlist: only *spans* whose target is this
//! crate (the `request` span of `web`, the `bigcommerce` call spans of `metrics`) are exported,
//! never log events (their fields can name a user) and never spans of dependencies (their fields
//! are not ours to vet). Our spans record a method, a route path, a request id and ids from the
//! configuration: no query string, token, code, cookie, email or subject.
//!
//! Incoming W3C `traceparent` headers are *not* honoured: every request starts a new trace. A
//! browser could otherwise choose trace ids (and the sampling decision) for the gateway's spans;
//! the request id (`x-request-id`, also ours alone) joins the spans with logs and the audit trail.

pub mod json_fields;

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::runtime;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{FilterFn, LevelFilter};
use tracing_subscriber::registry::LookupSpan;

use crate::config::telemetry::TelemetryConfig;

/// The instrumentation scope name of every exported span.
const SCOPE: &str = "storegate";

/// The log filter when `STOREGATE_LOG` is not set. `tower_sessions=warn` keeps its errors but
/// drops the field-less `call` span it opens around every request: our `request` span already
/// names the request, and that second span cost every launch a span allocation, a JSON field
/// render and an enter and exit per poll (issue 15).
pub const DEFAULT_LOG_FILTER: &str = "info,tower_http=warn,tower_sessions=warn";

/// A running exporter. Keep it until the server has drained, then [`Telemetry::shutdown`] it so
/// the last batch reaches the collector.
///
/// The batch processor and its HTTP exports run on a runtime of their own (one worker thread),
/// never on the gateway's: the SDK's flush and shutdown block the calling thread until that
/// worker answers, so on the caller's runtime a flush or a drop from a runtime thread (the
/// only thread, on a current-thread runtime) waits forever for a task that can no longer run.
pub struct Telemetry {
    provider: SdkTracerProvider,
    /// `None` once shut down. Dropped with `shutdown_background`, which may run anywhere.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Telemetry {
    /// Builds the batch exporter and starts its runtime. Nothing is sent until spans end; a
    /// collector that is down costs dropped spans, never requests.
    pub fn start(cfg: &TelemetryConfig) -> anyhow::Result<Telemetry> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("storegate-otlp")
            .enable_all()
            .build()
            .map_err(|e| anyhow::anyhow!("[telemetry] cannot start the exporter's thread: {e}"))?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        let headers: HashMap<String, String> = cfg
            .headers
            .iter()
            .map(|(name, value)| (name.clone(), value.expose().to_owned()))
            .collect();
        let exporter = SpanExporter::builder()
            .with_http()
            .with_http_client(http)
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(cfg.traces_url.as_str())
            .with_timeout(Duration::from_secs(10))
            .with_headers(headers)
            .build()
            .map_err(|e| {
                anyhow::anyhow!(
                    "[telemetry] cannot build the OTLP exporter for {}: {e}",
                    cfg.traces_url
                )
            })?;
        // The processor spawns its worker on the runtime entered here: the exporter's own.
        let processor = {
            let _entered = runtime.enter();
            BatchSpanProcessor::builder(exporter, runtime::Tokio).build()
        };
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            // No remote parent is ever extracted (see the module comment), so this is the ratio.
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                cfg.sample_ratio,
            ))))
            .with_resource(
                Resource::builder()
                    .with_service_name(cfg.service_name.clone())
                    .build(),
            )
            .build();
        Ok(Telemetry {
            provider,
            runtime: Some(runtime),
        })
    }

    /// The `tracing` layer that turns this crate's spans into exported OpenTelemetry spans.
    pub fn layer<S>(&self) -> impl Layer<S>
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    {
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer(SCOPE))
            // Thread names and ids say nothing useful across replicas.
            .with_threads(false)
            // The hint keeps the subscriber's maximum level at INFO (what the log filter usually
            // is), so debug and trace call sites stay as cheap as without export.
            .with_filter(FilterFn::new(exported).with_max_level_hint(LevelFilter::INFO))
    }

    /// Sends what is still buffered and stops the exporter. The SDK blocks while it flushes, so
    /// that runs on a blocking thread and never holds up one of the gateway's runtime threads.
    pub async fn shutdown(mut self) {
        let provider = self.provider.clone();
        let runtime = self.runtime.take();
        let stopped = tokio::task::spawn_blocking(move || stop(&provider, runtime)).await;
        match stopped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("telemetry: the last spans were not exported: {e}"),
            Err(e) => tracing::warn!("telemetry: the exporter did not stop cleanly: {e}"),
        }
    }

    /// Exports what is buffered now, without stopping (tests, and before a planned pause).
    pub async fn flush(&self) {
        let provider = self.provider.clone();
        match tokio::task::spawn_blocking(move || provider.force_flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("telemetry: spans were not exported: {e}"),
            Err(e) => tracing::warn!("telemetry: flushing did not finish: {e}"),
        }
    }
}

/// Flushes and stops the provider while its runtime still runs, then lets the runtime go.
fn stop(
    provider: &SdkTracerProvider,
    runtime: Option<tokio::runtime::Runtime>,
) -> opentelemetry_sdk::error::OTelSdkResult {
    let result = provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT);
    if let Some(runtime) = runtime {
        runtime.shutdown_background();
    }
    result
}

/// How long a shutdown may take to deliver the last batch.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

impl Drop for Telemetry {
    /// Without [`Telemetry::shutdown`] (an early return or a panic), stops the exporter here.
    /// This blocks for at most one export, which its own runtime completes; the provider's own
    /// drop, later, finds it stopped and does nothing.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            let _ = stop(&self.provider, Some(runtime));
        }
    }
}

/// The export allowlist: spans (not events) from this crate only, at INFO or above.
fn exported(meta: &tracing::Metadata<'_>) -> bool {
    meta.is_span()
        && *meta.level() <= tracing::Level::INFO
        && (meta.target() == SCOPE || meta.target().starts_with("storegate::"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_crates_spans_are_exported() {
        let ours = tracing::info_span!(target: "storegate::web", "request");
        let theirs = tracing::info_span!(target: "hyper::proto", "conn");
        let verbose = tracing::debug_span!(target: "storegate::web", "detail");
        // Without a subscriber the spans are disabled, but their metadata is what the filter sees.
        assert_eq!(ours.metadata().map(exported), Some(true));
        assert_eq!(theirs.metadata().map(exported), Some(false));
        assert_eq!(verbose.metadata().map(exported), Some(false));
    }
}
