//! Logging setup: `tracing-subscriber` writing logfmt (`ts=… level=info msg="…" key=value`) or
//! JSON lines to stderr, filtered by `--log.level`.
//!
//! Stdout is left alone (it carries `--once` output). Nothing here may format a secret: callers
//! log `Secret` values only through their redacting `Display`.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use super::{LogFormat, LogLevel};

fn directive(level: LogLevel) -> &'static str {
    // Only this crate logs at the chosen level; dependencies stay at warn to keep noise down.
    match level {
        LogLevel::Debug => "warn,dli_exporter=debug",
        LogLevel::Info => "warn,dli_exporter=info",
        LogLevel::Warn => "warn",
        LogLevel::Error => "error",
    }
}

/// Installs the global subscriber. Safe to call once; later calls are ignored.
pub fn init(level: LogLevel, format: LogFormat) {
    let filter = EnvFilter::new(directive(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Logfmt => builder.event_format(Logfmt).try_init(),
    };
}

/// One logfmt line per event.
pub struct Logfmt;

impl<S, N> FormatEvent<S, N> for Logfmt
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let now = time::OffsetDateTime::now_utc();
        let ts = now
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let level = match *event.metadata().level() {
            Level::ERROR => "error",
            Level::WARN => "warn",
            Level::INFO => "info",
            Level::DEBUG => "debug",
            Level::TRACE => "trace",
        };
        let mut visitor = LogfmtVisitor::default();
        event.record(&mut visitor);
        write!(writer, "ts={ts} level={level}")?;
        if let Some(msg) = &visitor.message {
            write!(writer, " msg={}", quote(msg))?;
        }
        write!(writer, "{}", visitor.fields)?;
        writeln!(writer)
    }
}

#[derive(Default)]
struct LogfmtVisitor {
    message: Option<String>,
    fields: String,
}

impl Visit for LogfmtVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_string());
        } else {
            self.fields
                .push_str(&format!(" {}={}", field.name(), quote(value)));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        self.record_str(field, &text);
    }
}

/// Quotes a logfmt value when it needs it.
pub fn quote(v: &str) -> String {
    if !v.is_empty()
        && !v
            .chars()
            .any(|c| c == ' ' || c == '"' || c == '=' || c == '\\' || c.is_control())
    {
        return v.to_string();
    }
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn logfmt_quoting() {
        assert_eq!(quote("plain"), "plain");
        assert_eq!(quote("two words"), "\"two words\"");
        assert_eq!(quote("a\"b\nc"), "\"a\\\"b\\nc\"");
        assert_eq!(quote(""), "\"\"");
    }
}
