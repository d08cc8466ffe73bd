//! The JSON log's span fields, written without a `serde_json::Value` per field.
//!
//! The JSON formatter renders a span's fields when the span opens, whether or not anything is
//! logged inside it. `tracing_subscriber`'s `JsonFields` does that through a `BTreeMap` of
//! `serde_json::Value`s, which was about 6,000 instructions of every request's `request` span
//! (issue 15). [`JsonSpanFields`] writes strings, integers and booleans straight out, in the same
//! order (sorted by name, the last of a repeated name winning) and with the same escaping, so
//! the text is identical; a span with any other kind of field is left to `JsonFields`.

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::{JsonFields, Writer};

/// A drop-in for `JsonFields` (`fmt().json().fmt_fields(JsonSpanFields)`): same text, less work.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonSpanFields;

/// One field already written as JSON.
struct Rendered {
    name: &'static str,
    json: String,
}

/// Collects the fields it can write itself; gives up on the first it cannot.
#[derive(Default)]
struct Collect {
    fields: Vec<Rendered>,
    other: bool,
}

impl Collect {
    fn push(&mut self, field: &Field, json: String) {
        self.fields.push(Rendered {
            name: field.name(),
            json,
        });
    }
}

impl Visit for Collect {
    fn record_str(&mut self, field: &Field, value: &str) {
        match serde_json::to_string(value) {
            Ok(json) => self.push(field, json),
            Err(_) => self.other = true,
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, value.to_string());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field, value.to_string());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, if value { "true" } else { "false" }.to_owned());
    }

    /// Debug and Display values, floats, bytes and errors: `JsonFields` renders these (and its
    /// name rules for `r#` and `log.` fields apply only here).
    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {
        self.other = true;
    }

    fn record_f64(&mut self, _: &Field, _: f64) {
        self.other = true;
    }

    fn record_bytes(&mut self, _: &Field, _: &[u8]) {
        self.other = true;
    }
}

impl<'writer> FormatFields<'writer> for JsonSpanFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> std::fmt::Result {
        let mut collect = Collect::default();
        fields.record(&mut collect);
        if collect.other {
            return JsonFields::new().format_fields(writer, fields);
        }
        // `JsonFields` keeps a map: sorted by name, a later value replacing an earlier one.
        collect.fields.sort_by_key(|f| f.name);
        writer.write_char('{')?;
        let mut first = true;
        for (i, f) in collect.fields.iter().enumerate() {
            if collect
                .fields
                .get(i + 1)
                .is_some_and(|next| next.name == f.name)
            {
                continue;
            }
            if !first {
                writer.write_char(',')?;
            }
            first = false;
            let name = serde_json::to_string(f.name).map_err(|_| std::fmt::Error)?;
            writer.write_str(&name)?;
            writer.write_char(':')?;
            writer.write_str(&f.json)?;
        }
        writer.write_char('}')
    }

    /// Fields recorded after the span opened: merged as `JsonFields` merges them (parse, add,
    /// write the whole map again), so the text stays what it would have produced.
    fn add_fields(
        &self,
        current: &'writer mut tracing_subscriber::fmt::FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> std::fmt::Result {
        if current.is_empty() {
            return self.format_fields(current.as_writer(), fields);
        }
        let mut added = String::new();
        JsonFields::new().format_fields(Writer::new(&mut added), fields)?;
        let mut map: std::collections::BTreeMap<String, serde_json::Value> =
            serde_json::from_str(current).map_err(|_| std::fmt::Error)?;
        let added: std::collections::BTreeMap<String, serde_json::Value> =
            serde_json::from_str(&added).map_err(|_| std::fmt::Error)?;
        map.extend(added);
        current.fields = serde_json::to_string(&map).map_err(|_| std::fmt::Error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    /// Everything a JSON subscriber writes, as text.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    /// The log lines `spans` produce with one field formatter, the time stamps removed.
    fn log_with<N>(fields: N, spans: fn()) -> String
    where
        N: for<'w> FormatFields<'w> + Send + Sync + 'static,
    {
        let out = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .without_time()
            .fmt_fields(fields)
            .with_writer(out.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, spans);
        let bytes = out.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8(bytes).unwrap_or_default()
    }

    #[test]
    fn span_fields_are_written_exactly_as_json_fields_writes_them() {
        fn spans() {
            let rid = "r-1 \"quoted\" \\ \u{1}é";
            let outer = tracing::info_span!(
                "request",
                method = "GET",
                path = "/stores/a/launch",
                request_id = rid,
                n = 3u64,
                d = -4i64,
                ok = true
            );
            let _o = outer.enter();
            let shown = tracing::info_span!("debug", value = ?Some(1), text = %"x", f = 1.5);
            let _s = shown.enter();
            let late = tracing::info_span!("late", a = "1", b = tracing::field::Empty);
            late.record("b", "2");
            late.record("a", "3");
            let _l = late.enter();
            let empty = tracing::info_span!("empty");
            let _e = empty.enter();
            tracing::info!(event = "launch", "inside");
        }
        let ours = log_with(JsonSpanFields, spans);
        let theirs = log_with(JsonFields::new(), spans);
        assert!(ours.contains(r#""name":"request""#), "{ours}");
        assert!(ours.contains(r#""a":"3","b":"2""#), "{ours}");
        assert_eq!(ours, theirs);
    }
}
