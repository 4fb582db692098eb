//! OpenTelemetry traces: W3C trace context in AMQP headers, the job's place in its publisher's
//! trace, and the spans of Metabase requests.
//!
//! A message carries its trace context in the AMQP headers `traceparent` and `tracestate`
//! (W3C Trace Context, the same text as the HTTP headers). `mbprov publish` and `dlq replay`
//! write them ([`inject_current`]); the worker continues them ([`continue_trace`]): the job's
//! span becomes a child of the publisher's span, and each Metabase request a child of the job's.
//! A message without `traceparent` may name its trace in the envelope's `metadata.trace_id`
//! (32 hex digits, or a whole `traceparent` value); that fallback joins the trace but has no
//! parent span the publisher recorded, so the job shows as a root of that trace.
//!
//! Span names and attributes never hold the API key or a person's data: a Metabase request is
//! named by its method and route template (`GET /api/user/:id`), never by its concrete path
//! or query (which may hold an email), and log events are not exported as span events (see
//! [`otlp`]), so what a job logs stays in the logs.

pub mod otlp;

use lapin::types::FieldTable;
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::queue::headers;

/// The W3C `traceparent` header, in AMQP headers as in HTTP.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C `tracestate` header (vendor data that travels with `traceparent`).
pub const TRACESTATE: &str = "tracestate";

/// The trace context a message carries: the two W3C headers, as text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Carrier {
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

impl Carrier {
    /// Reads `traceparent` and `tracestate` from AMQP headers (any string type).
    pub fn from_headers(table: Option<&FieldTable>) -> Self {
        let get = |key| table.and_then(|t| headers::get_str(t, key));
        Carrier {
            traceparent: get(TRACEPARENT),
            tracestate: get(TRACESTATE),
        }
    }

    /// The context of the current `tracing` span, ready to travel with a message. Empty when no
    /// trace is being recorded (no OpenTelemetry layer installed).
    pub fn current() -> Self {
        let mut carrier = Carrier::default();
        let context = tracing::Span::current().context();
        TraceContextPropagator::new().inject_context(&context, &mut carrier);
        carrier
    }

    /// Writes the headers it holds into `table`, replacing older ones.
    pub fn write_to(&self, table: &mut FieldTable) {
        for (key, value) in [
            (TRACEPARENT, &self.traceparent),
            (TRACESTATE, &self.tracestate),
        ] {
            if let Some(value) = value {
                table.insert(key.into(), headers::long_string(value));
            }
        }
    }

    /// The remote parent this carrier names, if its `traceparent` is valid.
    pub fn parent(&self) -> Option<SpanContext> {
        let context = TraceContextPropagator::new().extract(self);
        let span = context.span().span_context().clone();
        span.is_valid().then_some(span)
    }
}

impl Extractor for Carrier {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => self.traceparent.as_deref(),
            TRACESTATE => self.tracestate.as_deref(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}

impl Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        match key {
            TRACEPARENT => self.traceparent = Some(value),
            TRACESTATE if !value.is_empty() => self.tracestate = Some(value),
            _ => {}
        }
    }
}

/// Puts the current span's trace context into a message's headers.
pub fn inject_current(table: &mut FieldTable) {
    Carrier::current().write_to(table);
}

/// The span of sending one message (`operation` is `publish` or `replay`), with its trace id
/// recorded for the log lines inside it. The job span of the worker that runs the message
/// becomes its child once [`inject`] has put it in the message's headers.
pub fn producer_span(operation: &str, kind: &str, job_id: Option<&str>) -> tracing::Span {
    let span = tracing::info_span!(
        "send",
        otel.name = %format_args!("{operation} {kind}"),
        otel.kind = "producer",
        job_id = job_id.unwrap_or("-"),
        kind,
        trace_id = tracing::field::Empty,
    );
    record_trace_id(&span);
    span
}

/// Puts `span`'s trace context into a message's headers, replacing any it carried: what
/// `mbprov publish` and `dlq replay` do to each message they send (a replayed dead letter
/// joins the replaying command's trace, not the one it died in).
pub fn inject(span: &tracing::Span, table: &mut FieldTable) {
    span.in_scope(|| inject_current(table));
}

/// The parent a job continues: the message's `traceparent`, else the envelope's
/// `metadata.trace_id` (a `traceparent` value or 32 hex digits), else none (a new trace).
pub fn parent_of(carrier: &Carrier, metadata_trace_id: Option<&str>) -> Option<SpanContext> {
    if let Some(parent) = carrier.parent() {
        return Some(parent);
    }
    let text = metadata_trace_id?.trim();
    let as_traceparent = Carrier {
        traceparent: Some(text.to_owned()),
        tracestate: None,
    };
    if let Some(parent) = as_traceparent.parent() {
        return Some(parent);
    }
    if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let trace_id = TraceId::from_hex(&text.to_ascii_lowercase()).ok()?;
    if trace_id == TraceId::INVALID {
        return None;
    }
    // No span of the publisher is known: a span id made from the trace id keeps retries of one
    // message under the same (absent) parent, so tracing UIs group them.
    let bytes = trace_id.to_bytes();
    let mut span = [0u8; 8];
    span.copy_from_slice(&bytes[8..]);
    span[0] |= 1;
    Some(SpanContext::new(
        trace_id,
        SpanId::from_bytes(span),
        TraceFlags::SAMPLED,
        true,
        TraceState::NONE,
    ))
}

/// Makes `span` continue the trace of its message (see [`parent_of`]) and records its trace id
/// in the span's `trace_id` field, so every log line inside it carries the id.
pub fn continue_trace(span: &tracing::Span, carrier: &Carrier, metadata_trace_id: Option<&str>) {
    if let Some(parent) = parent_of(carrier, metadata_trace_id) {
        // Fails only when the span was already started elsewhere, which a new span is not.
        let _ = span.set_parent(Context::new().with_remote_span_context(parent));
    }
    record_trace_id(span);
}

/// The span of one write of a graph writer's batch (`graph` is `data` or `collection`), made in
/// the writer's own task; the Metabase requests of the write are its children. `jobs` are the
/// spans of the jobs whose changes the batch carries. A batch of one job is a child of that
/// job's span, so the usual case (one job at a time) reads as one tree; a batch of several
/// starts its own trace and links to each job's span, as OpenTelemetry models batched work
/// (one parent cannot stand for many), and each job's trace shows the link back.
pub fn batch_span<'a>(
    graph: &'static str,
    jobs: impl IntoIterator<Item = &'a tracing::Span>,
) -> tracing::Span {
    let jobs: Vec<SpanContext> = jobs
        .into_iter()
        .map(|job| job.context().span().span_context().clone())
        .collect();
    span_for_batch(graph, jobs)
}

fn span_for_batch(graph: &'static str, jobs: Vec<SpanContext>) -> tracing::Span {
    // No parent from the writer task: the jobs are the only ancestry the write has.
    let span = tracing::info_span!(
        parent: None,
        "graph.write",
        otel.name = %format_args!("graph write {graph}"),
        otel.kind = "internal",
        graph,
        batch = jobs.len(),
        trace_id = tracing::field::Empty,
    );
    match jobs.as_slice() {
        [job] => {
            // Fails only without an OpenTelemetry layer, where there is nothing to connect.
            let _ = span.set_parent(Context::new().with_remote_span_context(job.clone()));
        }
        // Invalid contexts (a job recorded no trace) are skipped by `add_link`.
        jobs => jobs.iter().for_each(|job| span.add_link(job.clone())),
    }
    record_trace_id(&span);
    span
}

/// [`batch_span`] for jobs known by their `traceparent`s: a batch written by the replica
/// holding the lock carries the changes of jobs running on other replicas.
pub fn batch_span_of<'a>(
    graph: &'static str,
    traceparents: impl IntoIterator<Item = &'a str>,
) -> tracing::Span {
    let jobs: Vec<SpanContext> = traceparents
        .into_iter()
        .filter_map(|t| {
            Carrier {
                traceparent: Some(t.to_owned()),
                tracestate: None,
            }
            .parent()
        })
        .collect();
    span_for_batch(graph, jobs)
}

/// Records the span's OpenTelemetry trace id in its `trace_id` field (declared `Empty`).
pub fn record_trace_id(span: &tracing::Span) {
    let context = span.context();
    let id = context.span().span_context().trace_id();
    if id != TraceId::INVALID {
        span.record("trace_id", tracing::field::display(id));
    }
}

/// The span of one HTTP request to Metabase, a child of the current span. Its name and
/// attributes hold the method and the route template only.
pub fn metabase_request_span(method: &str, path: &str) -> tracing::Span {
    let route = route_template(path);
    tracing::info_span!(
        "metabase.request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
    )
}

/// Records a request's outcome on the current (Metabase request) span: the status, or `None`
/// when no response came back. 5xx and no response mark the span as an error, as the HTTP
/// semantic conventions ask of a client span.
pub fn record_response(status: Option<u16>) {
    let span = tracing::Span::current();
    match status {
        Some(status) => {
            span.record("http.response.status_code", status);
            if status >= 500 {
                span.record("otel.status_code", "error");
            }
        }
        None => {
            span.record("otel.status_code", "error");
        }
    }
}

/// A path with every segment that is not a fixed word of the API replaced by `:id`:
/// `/api/user/12` becomes `/api/user/:id`. Whatever is not a lowercase word (ids, emails,
/// names, anything with a digit, `@`, `.` or a capital) counts as a value, so nothing a
/// tenant sent can reach a span name; the query string is dropped.
pub fn route_template(path: &str) -> String {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let segments: Vec<&str> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|segment| {
            let word = segment.starts_with(|c: char| c.is_ascii_lowercase())
                && segment
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_' || c == '-');
            if word { segment } else { ":id" }
        })
        .collect();
    format!("/{}", segments.join("/"))
}

#[cfg(test)]
mod tests {
    use lapin::types::AMQPValue;

    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn route_templates_hide_values() {
        let table = [
            ("/api/user/12", "/api/user/:id"),
            ("api/user", "/api/user"),
            ("/api/permissions/group/3", "/api/permissions/group/:id"),
            (
                "/api/permissions/membership/7/clear",
                "/api/permissions/membership/:id/clear",
            ),
            ("/api/collection/root/items", "/api/collection/root/items"),
            (
                "/api/collection/graph?skip-graph=true",
                "/api/collection/graph",
            ),
            ("/api/user?query=ada@acme.test", "/api/user"),
            ("/api/user/ada@acme.test", "/api/user/:id"),
            (
                "/api/table/12/query_metadata",
                "/api/table/:id/query_metadata",
            ),
            ("/api/mt/gtap/5", "/api/mt/gtap/:id"),
            ("/api/ee/tenant/Acme", "/api/ee/tenant/:id"),
            ("/api/thing/a1", "/api/thing/:id"),
            ("/", "/"),
        ];
        for (path, want) in table {
            assert_eq!(route_template(path), want, "{path}");
        }
    }

    #[test]
    fn carriers_read_and_write_amqp_headers() {
        let mut table = FieldTable::default();
        table.insert(TRACEPARENT.into(), headers::long_string(PARENT));
        table.insert(TRACESTATE.into(), AMQPValue::ShortString("vendor=1".into()));
        let carrier = Carrier::from_headers(Some(&table));
        assert_eq!(carrier.traceparent.as_deref(), Some(PARENT));
        assert_eq!(carrier.tracestate.as_deref(), Some("vendor=1"));
        let mut out = FieldTable::default();
        carrier.write_to(&mut out);
        assert_eq!(Carrier::from_headers(Some(&out)), carrier);
        assert_eq!(Carrier::from_headers(None), Carrier::default());
    }

    #[test]
    fn the_parent_comes_from_headers_then_metadata() {
        let headers = Carrier {
            traceparent: Some(PARENT.into()),
            tracestate: Some("vendor=1".into()),
        };
        let bare = "0af7651916cd43dd8448eb211c80319c";
        let other_parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        // (carrier, metadata.trace_id, expected (trace id, parent span id when known))
        type Case<'a> = (
            &'a Carrier,
            Option<&'a str>,
            Option<(&'a str, Option<&'a str>)>,
        );
        let table: [Case; 8] = [
            (
                &headers,
                None,
                Some(("4bf92f3577b34da6a3ce929d0e0e4736", Some("00f067aa0ba902b7"))),
            ),
            (
                &headers,
                Some(bare),
                Some(("4bf92f3577b34da6a3ce929d0e0e4736", Some("00f067aa0ba902b7"))),
            ),
            (
                &Carrier::default(),
                Some(other_parent),
                Some(("0af7651916cd43dd8448eb211c80319c", Some("b7ad6b7169203331"))),
            ),
            (&Carrier::default(), Some(bare), Some((bare, None))),
            (
                &Carrier::default(),
                Some("0AF7651916CD43DD8448EB211C80319C"),
                Some((bare, None)),
            ),
            (
                &Carrier::default(),
                Some("00000000000000000000000000000000"),
                None,
            ),
            (&Carrier::default(), Some("order-42"), None),
            (&Carrier::default(), None, None),
        ];
        for (carrier, meta, want) in table {
            let got = parent_of(carrier, meta);
            match want {
                None => assert!(got.is_none(), "{carrier:?} {meta:?}: {got:?}"),
                Some((trace, span)) => {
                    let got = got.unwrap_or_else(|| panic!("{carrier:?} {meta:?}"));
                    assert_eq!(got.trace_id().to_string(), trace);
                    assert!(got.is_remote() && got.is_valid());
                    if let Some(span) = span {
                        assert_eq!(got.span_id().to_string(), span);
                    }
                }
            }
        }
        let broken = Carrier {
            traceparent: Some("00-zz-yy-01".into()),
            tracestate: None,
        };
        assert!(parent_of(&broken, None).is_none());
    }

    /// Keeps every finished span, for checking links without a collector.
    #[derive(Clone, Debug, Default)]
    struct Kept(std::sync::Arc<std::sync::Mutex<Vec<opentelemetry_sdk::trace::SpanData>>>);

    impl opentelemetry_sdk::trace::SpanExporter for Kept {
        async fn export(
            &self,
            batch: Vec<opentelemetry_sdk::trace::SpanData>,
        ) -> opentelemetry_sdk::error::OTelSdkResult {
            self.0.lock().unwrap().extend(batch);
            Ok(())
        }
    }

    #[test]
    fn publish_job_and_request_spans_link_up_through_headers() {
        let kept = Kept::default();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_simple_exporter(kept.clone())
            .build();
        let filter = tracing_subscriber::EnvFilter::new("off");
        let sub = crate::telemetry::subscriber(
            crate::telemetry::LogFormat::Json,
            filter,
            std::io::sink,
            false,
            Some(&provider),
        );
        tracing::subscriber::with_default(sub, || {
            let send = producer_span("publish", "user.upserted", Some("j-1"));
            let mut table = FieldTable::default();
            inject(&send, &mut table);
            drop(send);
            // What the worker does with the delivery's headers.
            let carrier = Carrier::from_headers(Some(&table));
            let job = tracing::info_span!("job", trace_id = tracing::field::Empty);
            continue_trace(&job, &carrier, Some("0af7651916cd43dd8448eb211c80319c"));
            job.in_scope(|| {
                let _request = metabase_request_span("GET", "/api/user/12").entered();
                record_response(Some(200));
            });
        });
        let spans = kept.0.lock().unwrap().clone();
        let named = |name: &str| {
            spans
                .iter()
                .find(|s| s.name == name)
                .unwrap_or_else(|| panic!("no span {name} in {spans:#?}"))
        };
        let (send, job, request) = (
            named("publish user.upserted"),
            named("job"),
            named("GET /api/user/:id"),
        );
        let trace = send.span_context.trace_id();
        assert_eq!(
            job.span_context.trace_id(),
            trace,
            "headers win over metadata"
        );
        assert_eq!(job.parent_span_id, send.span_context.span_id());
        assert_eq!(request.span_context.trace_id(), trace);
        assert_eq!(request.parent_span_id, job.span_context.span_id());
        assert_eq!(request.span_kind, opentelemetry::trace::SpanKind::Client);
        let attribute = |key: &str| {
            request
                .attributes
                .iter()
                .find(|kv| kv.key.as_str() == key)
                .map(|kv| kv.value.to_string())
        };
        assert_eq!(attribute("http.route").as_deref(), Some("/api/user/:id"));
        assert_eq!(
            attribute("http.response.status_code").as_deref(),
            Some("200")
        );
    }

    /// Spans made by `run` under an OpenTelemetry layer that keeps them.
    fn kept_spans(run: impl FnOnce()) -> Vec<opentelemetry_sdk::trace::SpanData> {
        let kept = Kept::default();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_simple_exporter(kept.clone())
            .build();
        let sub = crate::telemetry::subscriber(
            crate::telemetry::LogFormat::Json,
            tracing_subscriber::EnvFilter::new("off"),
            std::io::sink,
            false,
            Some(&provider),
        );
        tracing::subscriber::with_default(sub, run);
        kept.0.lock().unwrap().clone()
    }

    #[test]
    fn a_batch_of_one_job_is_its_child_and_of_several_links_to_each() {
        let spans = kept_spans(|| {
            let (a, b) = (tracing::info_span!("job a"), tracing::info_span!("job b"));
            // The writer's task is not inside any job: the batch span must not rely on that.
            let alone = batch_span("data", [&a]);
            alone.in_scope(|| {
                let _put = metabase_request_span("PUT", "/api/permissions/graph").entered();
            });
            drop(alone);
            let _batch = batch_span("collection", [&a, &b]);
        });
        let named = |name: &str| {
            spans
                .iter()
                .find(|s| s.name == name)
                .unwrap_or_else(|| panic!("no span {name} in {spans:#?}"))
        };
        let (a, b) = (named("job a"), named("job b"));
        let (alone, put) = (
            named("graph write data"),
            named("PUT /api/permissions/graph"),
        );
        assert_eq!(alone.span_context.trace_id(), a.span_context.trace_id());
        assert_eq!(alone.parent_span_id, a.span_context.span_id());
        assert!(alone.links.is_empty());
        assert_eq!(alone.span_kind, opentelemetry::trace::SpanKind::Internal);
        assert_eq!(put.span_context.trace_id(), a.span_context.trace_id());
        assert_eq!(put.parent_span_id, alone.span_context.span_id());

        let batch = named("graph write collection");
        assert_eq!(batch.parent_span_id, SpanId::INVALID, "a root of its own");
        let linked: Vec<&SpanContext> = batch.links.iter().map(|l| &l.span_context).collect();
        assert_eq!(linked, [&a.span_context, &b.span_context]);
        let batch_size = batch
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == "batch")
            .map(|kv| kv.value.to_string());
        assert_eq!(batch_size.as_deref(), Some("2"));
    }

    #[test]
    fn no_trace_no_headers() {
        // Without an OpenTelemetry layer the current span has no context: nothing is injected.
        let mut table = FieldTable::default();
        inject_current(&mut table);
        assert!(table.inner().is_empty());
    }
}
