//! Validation of `[telemetry]`.

use url::Url;

use super::super::diag::key;
use super::super::file::FileConfig;
use super::super::telemetry::{TelemetryConfig, parse_headers, traces_url};
use super::Checker;

pub(super) fn telemetry(c: &mut Checker<'_>, f: &FileConfig) -> Option<TelemetryConfig> {
    let t = &f.telemetry;
    let at = |k: &str| [key("telemetry"), key(k)];
    let Some(raw) = &t.otlp_endpoint else {
        let set = t.service_name.is_some()
            || t.sample_ratio.is_some()
            || t.headers.is_some()
            || t.headers_file.is_some();
        if set {
            c.error(
                &[key("telemetry")],
                "`[telemetry]` has settings but no `otlp_endpoint`: set it (e.g. \"http://collector:4318\") or remove the table",
            );
        }
        return None;
    };
    let endpoint = c.interpolate(&at("otlp_endpoint"), raw);
    let traces = endpoint.and_then(|e| match Url::parse(e.trim()) {
        Ok(u) if !matches!(u.scheme(), "http" | "https") => {
            c.error(
                &at("otlp_endpoint"),
                format!("`telemetry.otlp_endpoint`: scheme \"{}\" is not http or https (OTLP/HTTP only; gRPC is not supported)", u.scheme()),
            );
            None
        }
        Ok(u) if !u.username().is_empty() || u.password().is_some() => {
            c.error(
                &at("otlp_endpoint"),
                "`telemetry.otlp_endpoint` carries credentials: put them in `headers` (or `headers_file`), which are kept secret",
            );
            None
        }
        Ok(u) if u.query().is_some() || u.fragment().is_some() => {
            c.error(
                &at("otlp_endpoint"),
                "`telemetry.otlp_endpoint` has a query or fragment: give the collector's base URL, e.g. \"http://collector:4318\"",
            );
            None
        }
        Ok(u) => Some(traces_url(u)),
        // Quotes the value as written (before `${ENV}` expansion).
        Err(e) => {
            c.error(
                &at("otlp_endpoint"),
                format!("`telemetry.otlp_endpoint`: \"{}\" is not a URL ({e}); expected e.g. \"http://collector:4318\"", raw),
            );
            None
        }
    });
    let service_name = match t.service_name.as_deref().map(str::trim) {
        None => "storegate".to_owned(),
        Some("") => {
            c.error(&at("service_name"), "`telemetry.service_name` is empty");
            String::new()
        }
        Some(s) => s.to_owned(),
    };
    let sample_ratio = t.sample_ratio.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&sample_ratio) {
        c.error(
            &at("sample_ratio"),
            format!("`telemetry.sample_ratio` is {sample_ratio}: use a share between 0.0 (none) and 1.0 (every request)"),
        );
    }
    let table = [key("telemetry")];
    let headers = match c.secret(&table, "headers", &t.headers, Some(&t.headers_file), false) {
        None => Vec::new(),
        Some(s) => match parse_headers(s.expose()) {
            Ok(h) => h,
            Err(e) => {
                let k = if t.headers.is_some() {
                    "headers"
                } else {
                    "headers_file"
                };
                c.error(&at(k), format!("`telemetry.{k}`: {e}"));
                Vec::new()
            }
        },
    };
    Some(TelemetryConfig {
        traces_url: traces?,
        service_name,
        sample_ratio,
        headers,
    })
}
