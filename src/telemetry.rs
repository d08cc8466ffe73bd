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

/// A running exporter. Keep it until the server has drained, then [`Telemetry::shutdown`] it so
/// the last batch reaches the collector.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Builds the batch exporter on the current tokio runtime (call from inside it). Nothing is
    /// sent until spans end; a collector that is down costs dropped spans, never requests.
    pub fn start(cfg: &TelemetryConfig) -> anyhow::Result<Telemetry> {
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
        let processor = BatchSpanProcessor::builder(exporter, runtime::Tokio).build();
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
        Ok(Telemetry { provider })
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
    /// that runs on a blocking thread and the runtime keeps driving the export task meanwhile.
    pub async fn shutdown(self) {
        let provider = self.provider;
        match tokio::task::spawn_blocking(move || provider.shutdown()).await {
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
