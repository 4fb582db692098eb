//! Process-wide logging: readable text for people, JSON lines for log pipelines.
//!
//! Logs go to stderr so stdout stays for command output (`publish`, `dlq`, `status`). In JSON
//! every line carries the fields of the spans it happened in (the job layer opens one with
//! `job_id`, `kind` and `tenant_id`), so one job's lines can be found without parsing messages.

use std::io::IsTerminal;

use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{FromEnvError, LevelFilter};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::{SubscriberInitExt, TryInitError};

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

/// Installs the global subscriber: levels from `RUST_LOG` (default `info`), output to stderr.
/// Call once, early in `main`; a second call returns [`TelemetryError::AlreadyInitialised`].
pub fn init(format: LogFormat) -> Result<(), TelemetryError> {
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .from_env()?;
    let ansi = std::io::stderr().is_terminal();
    subscriber(format, filter, std::io::stderr, ansi).try_init()?;
    Ok(())
}

/// The subscriber [`init`] installs, writing to `writer`; separate so tests can capture lines.
pub fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
    ansi: bool,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => Box::new(builder.with_ansi(ansi).finish()),
        LogFormat::Json => Box::new(
            builder
                .json()
                .with_current_span(true)
                .with_span_list(true)
                .flatten_event(true)
                .finish(),
        ),
    }
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
        let sub = subscriber(format, EnvFilter::new("info"), out.clone(), false);
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
