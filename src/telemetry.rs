//! Process-wide logging: readable text for people, JSON lines for log pipelines.
//!
//! Logs go to stderr so stdout stays for command output (`publish`, `dlq`, `status`). In JSON
//! every line carries the fields of the spans it happened in (the job layer opens one with
//! `job_id`, `kind`, `tenant_id` and `trace_id`), so one job's lines can be found without
//! parsing messages. The same spans feed OpenTelemetry ([`crate::trace`]), exported over OTLP
//! when the `OTEL_*` variables ask for it.

use std::io::IsTerminal;

use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_subscriber::filter::{FromEnvError, LevelFilter};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::{SubscriberInitExt, TryInitError};
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::trace::otlp;

/// How log lines are written (`MBPROV_LOG_FORMAT`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Text,
    /// One JSON object per line, with the current span and the span list.
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("RUST_LOG is not a valid filter (e.g. `info` or `mbprov=debug,lapin=warn`): {0}")]
    Filter(#[from] FromEnvError),
    #[error("logging was already set up in this process: {0}")]
    AlreadyInitialised(#[from] TryInitError),
}

/// What [`init`] set up and `main` ends: flushes the spans not yet exported.
#[must_use = "call shutdown before the runtime stops, or the last spans are lost"]
pub struct Telemetry {
    traces: SdkTracerProvider,
}

impl Telemetry {
    /// Exports the spans still buffered and stops the exporter. Call from outside the async
    /// runtime, while it still runs (the exporter sends on it).
    pub fn shutdown(self) {
        // Nothing to report when nothing was exported, or the collector is gone.
        let _ = self.traces.shutdown();
    }
}

/// Installs the global subscriber: levels from `RUST_LOG` (default `info`), output to stderr,
/// spans to OpenTelemetry (exported through `runtime` when `OTEL_*` asks for it). Call once,
/// early in `main`; a second call returns [`TelemetryError::AlreadyInitialised`].
pub fn init(
    format: LogFormat,
    runtime: Option<tokio::runtime::Handle>,
) -> Result<Telemetry, TelemetryError> {
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .from_env()?;
    let ansi = std::io::stderr().is_terminal();
    let (traces, export) = otlp::provider(runtime);
    subscriber(format, filter, std::io::stderr, ansi, Some(&traces)).try_init()?;
    // Silent when export is simply off: commands' stderr stays theirs.
    match export {
        Ok(otlp::Export::Otlp) => tracing::debug!("exporting traces over OTLP/HTTP"),
        Ok(otlp::Export::Off(_)) => {}
        Err(error) => tracing::warn!(%error, "not exporting traces"),
    }
    Ok(Telemetry { traces })
}

/// The subscriber [`init`] installs, writing to `writer`; separate so tests can capture lines.
/// `filter` applies to log lines only: spans reach `traces` whatever the log level.
pub fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
    ansi: bool,
    traces: Option<&SdkTracerProvider>,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer);
    let lines: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Text => fmt.with_ansi(ansi).with_filter(filter).boxed(),
        LogFormat::Json => fmt
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .flatten_event(true)
            .with_filter(filter)
            .boxed(),
    };
    let spans = traces.map(otlp::layer);
    Box::new(Registry::default().with(lines).with(spans))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Captured {
        type Writer = Captured;
        fn make_writer(&'w self) -> Self::Writer {
            self.clone()
        }
    }

    fn log_one_job_line(format: LogFormat) -> String {
        let out = Captured::default();
        let sub = subscriber(format, EnvFilter::new("info"), out.clone(), false, None);
        tracing::subscriber::with_default(sub, || {
            let span = tracing::info_span!(
                "job",
                job_id = "j-1",
                kind = "tenant.created",
                tenant_id = "42"
            );
            let _entered = span.enter();
            tracing::info!(attempt = 3, "calling metabase");
            tracing::debug!("filtered out");
        });
        String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn json_lines_carry_span_fields() {
        let text = log_one_job_line(LogFormat::Json);
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let line: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(line["message"], "calling metabase");
        assert_eq!(line["attempt"], 3);
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["span"]["job_id"], "j-1");
        assert_eq!(line["span"]["kind"], "tenant.created");
        assert_eq!(line["span"]["tenant_id"], "42");
        assert_eq!(line["spans"][0]["name"], "job");
    }

    #[test]
    fn text_lines_are_readable() {
        let text = log_one_job_line(LogFormat::Text);
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("INFO"), "{text}");
        assert!(text.contains("job_id=\"j-1\""), "{text}");
        assert!(text.contains("calling metabase attempt=3"), "{text}");
    }

    #[test]
    fn formats_parse_from_their_names() {
        use clap::ValueEnum;
        let cases = [
            ("text", Some(LogFormat::Text)),
            ("json", Some(LogFormat::Json)),
            ("xml", None),
        ];
        for (input, expected) in cases {
            assert_eq!(LogFormat::from_str(input, false).ok(), expected, "{input}");
        }
    }
}
