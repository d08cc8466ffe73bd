//! `[telemetry]`: optional OpenTelemetry trace export (issue 6), the file shape and the validated
//! value. Off unless `otlp_endpoint` is set.

use serde::Deserialize;
use url::Url;

use crate::secret::Secret;

#[derive(Debug, Default, Deserialize)]
pub struct TelemetryFile {
    /// Base URL of an OTLP/HTTP (protobuf) collector, e.g. `http://collector:4318`; spans go to
    /// `{otlp_endpoint}/v1/traces`. Default: none (no export).
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans. Default `storegate`.
    #[serde(default)]
    pub service_name: Option<String>,
    /// Share of requests traced, 0.0 to 1.0. Default 1.0.
    #[serde(default)]
    pub sample_ratio: Option<f64>,
    /// Headers sent to the collector (e.g. its API key), as `name=value,name2=value2`; better a
    /// `${ENV}` reference, or `headers_file`. A secret: never printed or logged. Default: none.
    #[serde(default)]
    pub headers: Option<String>,
    #[serde(default)]
    pub headers_file: Option<String>,
}

/// Validated `[telemetry]`; present only when export is on.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// Where spans are POSTed: the configured base with `/v1/traces`.
    pub traces_url: Url,
    pub service_name: String,
    pub sample_ratio: f64,
    /// Header name and (secret) value for the collector.
    pub headers: Vec<(String, Secret)>,
}

/// The OTLP/HTTP traces path (OTLP specification, "OTLP/HTTP Request").
pub const TRACES_PATH: &str = "/v1/traces";

/// `{base}/v1/traces`, unless the base already names that path.
pub fn traces_url(mut base: Url) -> Url {
    if !base.path().ends_with(TRACES_PATH) {
        let path = format!("{}{TRACES_PATH}", base.path().trim_end_matches('/'));
        base.set_path(&path);
    }
    base
}

/// Parses `name=value,name2=value2` (the `OTEL_EXPORTER_OTLP_HEADERS` format). The error never
/// quotes a value: it may be the collector's key.
pub fn parse_headers(raw: &str) -> Result<Vec<(String, Secret)>, String> {
    let mut out = Vec::new();
    for (i, pair) in raw.split(',').enumerate() {
        let n = i + 1;
        let Some((name, value)) = pair.split_once('=') else {
            return Err(format!("header {n} has no `=` (expected name=value)"));
        };
        let name = name.trim();
        let value = value.trim();
        if axum::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(format!("header {n}: \"{name}\" is not a valid header name"));
        }
        if value.is_empty() || axum::http::HeaderValue::from_str(value).is_err() {
            return Err(format!(
                "header {n} ({name}): the value is empty or not a valid header value"
            ));
        }
        out.push((name.to_ascii_lowercase(), Secret::new(value)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_path_is_added_once() {
        let url = |s: &str| traces_url(Url::parse(s).unwrap()).to_string();
        assert_eq!(
            url("http://collector:4318"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            url("http://collector:4318/"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            url("https://otel.example/tenant-a/"),
            "https://otel.example/tenant-a/v1/traces"
        );
        assert_eq!(url("http://c:4318/v1/traces"), "http://c:4318/v1/traces");
    }

    #[test]
    fn headers_parse_as_name_value_pairs_and_errors_never_quote_a_value() {
        let h = parse_headers("X-Api-Key = k-123, authorization=Basic abc=").unwrap();
        let got: Vec<(&str, &str)> = h.iter().map(|(n, v)| (n.as_str(), v.expose())).collect();
        assert_eq!(
            got,
            vec![("x-api-key", "k-123"), ("authorization", "Basic abc=")]
        );
        assert_eq!(
            parse_headers("x-api-key").unwrap_err(),
            "header 1 has no `=` (expected name=value)"
        );
        let e = parse_headers("a=1,bad name=s3cret-value").unwrap_err();
        assert_eq!(e, "header 2: \"bad name\" is not a valid header name");
        let e = parse_headers("a=s3\u{1}cret").unwrap_err();
        assert!(!e.contains("s3cret"), "{e}");
        assert_eq!(
            e,
            "header 1 (a): the value is empty or not a valid header value"
        );
    }
}
