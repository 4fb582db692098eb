//! The OpenTelemetry tracer provider and its OTLP export, set up from the standard `OTEL_*`
//! variables.
//!
//! Spans are always made (so log lines carry a `trace_id` and the trace context travels on
//! with retried and replayed messages); they are exported only when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set, over OTLP/HTTP
//! with protobuf bodies (`http/protobuf`, the specification's default; gRPC is not built in,
//! to keep the dependency tree small). The exporter itself reads the other variables:
//! `OTEL_EXPORTER_OTLP[_TRACES]_HEADERS`, `_TIMEOUT`, `_COMPRESSION`, and the SDK reads
//! `OTEL_TRACES_SAMPLER[_ARG]`, `OTEL_BSP_*`, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`.
//! `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn export off.
//!
//! The HTTP requests go through the reqwest client the rest of mbprov uses, on the process's
//! tokio runtime, so no second HTTP stack or TLS library is linked in.

use opentelemetry::trace::TracerProvider;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{SpanExporter, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tokio::runtime::Handle;
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::registry::LookupSpan;

/// The service name when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` sets one.
pub const SERVICE_NAME: &str = "mbprov";

/// Whether spans leave the process, from the environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Export {
    /// Spans are made but kept in the process; the reason, for the start-up log.
    Off(&'static str),
    /// OTLP/HTTP to the endpoint the variables name.
    Otlp,
}

/// Reads the decision from `OTEL_*` variables (`get` looks one up; empty counts as unset).
pub fn export_from_env(get: impl Fn(&str) -> Option<String>) -> Export {
    let get = |key: &str| get(key).filter(|v| !v.trim().is_empty());
    if get("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Export::Off("OTEL_SDK_DISABLED is true");
    }
    if let Some(exporters) = get("OTEL_TRACES_EXPORTER") {
        let names: Vec<String> = exporters
            .split(',')
            .map(|n| n.trim().to_ascii_lowercase())
            .collect();
        if names.iter().any(|n| n == "none") {
            return Export::Off("OTEL_TRACES_EXPORTER is none");
        }
        if !names.iter().any(|n| n == "otlp") {
            return Export::Off("OTEL_TRACES_EXPORTER names no exporter mbprov has (only otlp)");
        }
    }
    if get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
        || get("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
    {
        Export::Otlp
    } else {
        Export::Off("OTEL_EXPORTER_OTLP_ENDPOINT is not set")
    }
}

/// The tracer provider, exporting when the environment asks for it. A misconfigured exporter
/// (say, `OTEL_EXPORTER_OTLP_PROTOCOL=grpc`) is reported and export left off: traces are an
/// aid, never a reason for the worker not to work.
pub fn provider(runtime: Option<Handle>) -> (SdkTracerProvider, Result<Export, String>) {
    let builder = SdkTracerProvider::builder().with_resource(resource());
    let export = export_from_env(|k| std::env::var(k).ok());
    let exporter = match (&export, runtime) {
        (Export::Off(_), _) => Ok(None),
        (Export::Otlp, None) => Err("no async runtime to send spans from".to_owned()),
        (Export::Otlp, Some(runtime)) => exporter(runtime).map(Some),
    };
    match exporter {
        Ok(Some(exporter)) => (builder.with_batch_exporter(exporter).build(), Ok(export)),
        Ok(None) => (builder.build(), Ok(export)),
        Err(e) => (builder.build(), Err(e)),
    }
}

fn exporter(runtime: Handle) -> Result<SpanExporter, String> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| format!("cannot build the OTLP HTTP client: {e}"))?;
    SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_http_client(OnRuntime { client, runtime })
        .build()
        .map_err(|e| format!("cannot set up the OTLP exporter: {e}"))
}

/// `service.name` = mbprov unless the standard variables name the service.
fn resource() -> Resource {
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
    let builder = Resource::builder();
    if named {
        builder.build()
    } else {
        builder.with_service_name(SERVICE_NAME).build()
    }
}

/// The `tracing` layer that turns mbprov's own spans into OpenTelemetry spans. Log events are
/// not exported as span events (they may name a person; logs have their own pipeline), and
/// other crates' spans (lapin, redis) are left out.
pub fn layer<S>(provider: &SdkTracerProvider) -> impl Layer<S> + Send + Sync + 'static
where
    S: Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("mbprov"))
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_level(false)
        .with_tracked_inactivity(false)
        .with_filter(filter_fn(|meta| {
            meta.is_span() && meta.target().starts_with("mbprov")
        }))
}

/// Sends OTLP requests with mbprov's reqwest client on the tokio runtime. The SDK's batch
/// processor exports from its own thread, outside the runtime, so the request is spawned onto
/// the runtime and awaited from there.
#[derive(Debug)]
struct OnRuntime {
    client: reqwest::Client,
    runtime: Handle,
}

#[async_trait::async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let (parts, body) = request.into_parts();
        let sent = self.runtime.spawn(async move {
            let response = client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await?;
            let status = response.status();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, body))
        });
        let (status, body) = sent.await??;
        Ok(Response::builder().status(status).body(body)?)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn export_follows_the_standard_variables() {
        let table: [(&[(&str, &str)], Export); 9] = [
            (&[], Export::Off("OTEL_EXPORTER_OTLP_ENDPOINT is not set")),
            (
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")],
                Export::Otlp,
            ),
            (
                &[(
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "http://c:4318/v1/traces",
                )],
                Export::Otlp,
            ),
            (
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")],
                Export::Off("OTEL_EXPORTER_OTLP_ENDPOINT is not set"),
            ),
            (
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                    ("OTEL_SDK_DISABLED", "TRUE"),
                ],
                Export::Off("OTEL_SDK_DISABLED is true"),
            ),
            (
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                    ("OTEL_SDK_DISABLED", "false"),
                ],
                Export::Otlp,
            ),
            (
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                    ("OTEL_TRACES_EXPORTER", "none"),
                ],
                Export::Off("OTEL_TRACES_EXPORTER is none"),
            ),
            (
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                    ("OTEL_TRACES_EXPORTER", "otlp"),
                ],
                Export::Otlp,
            ),
            (
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                    ("OTEL_TRACES_EXPORTER", "zipkin"),
                ],
                Export::Off("OTEL_TRACES_EXPORTER names no exporter mbprov has (only otlp)"),
            ),
        ];
        for (vars, want) in table {
            let env: HashMap<&str, &str> = vars.iter().copied().collect();
            let got = export_from_env(|k| env.get(k).map(|v| v.to_string()));
            assert_eq!(got, want, "{vars:?}");
        }
    }
}
