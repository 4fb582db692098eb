//! OpenTelemetry traces across processes: `mbprov publish` starts a trace, the worker's job span
//! continues it from the AMQP headers, and each Metabase request is a child of the job span.
//! The spans are collected by an OTLP/HTTP receiver in this test process (protobuf bodies
//! decoded with `opentelemetry-proto`), as a collector would receive them. Graph writes run in
//! the writer's own task: a batch of one job is that job's child, a batch of several links to
//! each job (checked in-process, where a batch of two can be formed deterministically).

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use mbprov::graph::access::db_perms;
use mbprov::graph::{DataAccess, DataChange, Features};
use mbprov::graph_writer::GraphWriter;
use opentelemetry::trace::{SpanContext, SpanId};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use prost::Message;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tracing::Instrument;

use crate::support::{API_KEY, Stack, eventually, tenant_created};

/// One received span, flattened.
#[derive(Clone, Debug)]
struct Got {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    attributes: Vec<(String, String)>,
}

impl Got {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

type Spans = Arc<Mutex<Vec<Got>>>;

fn text(value: Option<&AnyValue>) -> String {
    match value {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(n)) => n.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(f)) => f.to_string(),
        other => format!("{other:?}"),
    }
}

async fn receive(State(spans): State<Spans>, body: Bytes) -> &'static str {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
    let mut got = spans.lock().unwrap();
    for resource in request.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .map(|kv| text(kv.value.as_ref().and_then(|v| v.value.as_ref())))
            .unwrap_or_default();
        for scope in resource.scope_spans {
            for span in scope.spans {
                got.push(Got {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex::encode(span.trace_id),
                    span_id: hex::encode(span.span_id),
                    parent: hex::encode(span.parent_span_id),
                    attributes: span
                        .attributes
                        .iter()
                        .map(|kv| {
                            let v = text(kv.value.as_ref().and_then(|v| v.value.as_ref()));
                            (kv.key.clone(), v)
                        })
                        .collect(),
                });
            }
        }
    }
    ""
}

/// Starts the receiver; answers its endpoint and the spans it collects.
async fn collector() -> (String, Spans) {
    let spans: Spans = Arc::default();
    let app = Router::new()
        .route("/v1/traces", post(receive))
        .with_state(spans.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://127.0.0.1:{port}"), spans)
}

fn snapshot(spans: &Spans) -> Vec<Got> {
    spans.lock().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn one_trace_spans_publish_worker_and_metabase_requests() {
    let (endpoint, spans) = collector().await;
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let mut stack = Stack::start().await;
    stack.spawn_worker_with(&otel).await;

    // Through `mbprov publish`: W3C headers on the message.
    let envelope = json!({"id": "trace-1", "kind": "user.upserted", "payload": {
        "email": "ada@acme.test", "first_name": "Ada", "last_name": "Lovelace"}});
    let mut publish = stack.command(&["publish", "-"]);
    publish
        .envs(otel)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = publish.spawn().expect("spawn mbprov publish");
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(envelope.to_string().as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stack.wait_done("trace-1").await;

    // Without headers, the envelope's `metadata.trace_id` names the trace (the fallback).
    let fallback_trace = "0af7651916cd43dd8448eb211c80319c";
    let body = json!({"id": "trace-2", "kind": "user.deactivated",
        "metadata": {"trace_id": fallback_trace}, "payload": {"email": "nobody@acme.test"}});
    stack
        .publish_raw("user.deactivated", body.to_string().as_bytes())
        .await;
    stack.wait_done("trace-2").await;

    let job_id_is =
        |id: &'static str| move |s: &&Got| s.name == "job" && s.attr("job_id") == Some(id);
    let got = eventually("the spans of both jobs and their Metabase requests", || {
        let all = snapshot(&spans);
        async move {
            let job1 = all.iter().find(job_id_is("trace-1"))?;
            let job2 = all.iter().find(job_id_is("trace-2"))?;
            let children = |job: &Got| all.iter().filter(|s| s.parent == job.span_id).count();
            (children(job1) >= 2 && children(job2) >= 1).then(|| all.clone())
        }
    })
    .await;

    let publish = got
        .iter()
        .find(|s| s.name == "publish user.upserted")
        .unwrap_or_else(|| panic!("no publish span in {got:#?}"));
    let job = got.iter().find(job_id_is("trace-1")).unwrap();
    assert_eq!(publish.service, "mbprov");
    assert_eq!(
        job.trace_id, publish.trace_id,
        "the job continues the publisher's trace"
    );
    assert_eq!(
        job.parent, publish.span_id,
        "the job's parent is the publish span"
    );
    assert_eq!(job.attr("kind"), Some("user.upserted"));
    assert_eq!(job.attr("trace_id"), Some(job.trace_id.as_str()));

    let requests: Vec<&Got> = got.iter().filter(|s| s.parent == job.span_id).collect();
    for r in &requests {
        assert_eq!(r.trace_id, job.trace_id);
        let method = r.attr("http.request.method").expect("method");
        let route = r.attr("http.route").expect("route");
        assert_eq!(r.name, format!("{method} {route}"));
        assert!(route.starts_with("/api/"), "{r:?}");
        let status: u16 = r
            .attr("http.response.status_code")
            .expect("status")
            .parse()
            .unwrap();
        assert!((200..300).contains(&status), "{r:?}");
    }
    assert!(
        requests.iter().any(|r| r.name == "POST /api/user"),
        "the user was created inside the job's trace: {requests:#?}"
    );

    let fallback = got.iter().find(job_id_is("trace-2")).unwrap();
    assert_eq!(fallback.trace_id, fallback_trace);
    assert!(
        got.iter()
            .any(|s| s.parent == fallback.span_id && s.trace_id == fallback_trace)
    );

    // Nothing personal and no key leaves in a span name or attribute.
    for s in &got {
        let all = format!("{} {:?}", s.name, s.attributes);
        for secret in ["ada@", "Lovelace", "nobody@", API_KEY] {
            assert!(!all.contains(secret), "{secret} in {s:?}");
        }
    }

    // The worker's log lines inside the job carry its trace id.
    let log = stack.all_worker_logs();
    assert!(
        log.contains(&job.trace_id),
        "no trace_id in the worker log:\n{log}"
    );
    stack.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_jobs_graph_writes_are_children_of_its_span() {
    let (endpoint, spans) = collector().await;
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let mut stack = Stack::start().await;
    stack.spawn_worker_with(&otel).await;
    stack.publish(&[tenant_created(17)]).await;
    stack.wait_done("tenant-17-created").await;

    // The job span ends after every span inside it, and the SDK exports spans in the order
    // they end: once it has arrived, so have the graph writes it waited on.
    let (got, job) = eventually("the span of the tenant.created job", || {
        let all = snapshot(&spans);
        async move {
            let job = all
                .iter()
                .find(|s| s.name == "job" && s.attr("job_id") == Some("tenant-17-created"))?
                .clone();
            Some((all, job))
        }
    })
    .await;
    let by_id = |id: &str| got.iter().find(|s| s.span_id == id);
    for (graph, put) in [
        ("data", "PUT /api/permissions/graph"),
        ("collection", "PUT /api/collection/graph"),
    ] {
        let batch = got
            .iter()
            .find(|s| s.name == format!("graph write {graph}") && s.trace_id == job.trace_id)
            .unwrap_or_else(|| panic!("no {graph} write in the job's trace: {got:#?}"));
        assert_eq!(batch.parent, job.span_id, "a lone job's write is its child");
        assert_eq!(batch.attr("batch"), Some("1"));
        assert_eq!(batch.attr("graph"), Some(graph));
        let request = got
            .iter()
            .find(|s| s.name == put && s.parent == batch.span_id)
            .unwrap_or_else(|| panic!("no {put} under the {graph} write: {got:#?}"));
        assert_eq!(request.trace_id, job.trace_id);
        assert_eq!(request.attr("http.response.status_code"), Some("200"));
    }
    // No Metabase request of the job is left outside its tree: each hangs from the job or
    // from one of its writes.
    for r in got
        .iter()
        .filter(|s| s.trace_id == job.trace_id && s.attr("http.route").is_some())
    {
        let parent = by_id(&r.parent).unwrap_or_else(|| panic!("{r:?} has no parent"));
        assert!(
            parent.span_id == job.span_id || parent.parent == job.span_id,
            "{r:?} under {parent:?}"
        );
    }
    stack.teardown().await;
}

/// Keeps the spans of the in-process writer below.
#[derive(Clone, Debug, Default)]
struct Kept(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Kept {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().unwrap().extend(batch);
        Ok(())
    }
}

/// Yields to the other tasks until `done`, for at most 10 s.
async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        tokio::task::yield_now().await;
    }
}

/// Three jobs write the data graph through one in-process writer: the first alone (its write is
/// its child), the two others while the graph lock is held, so they queue together and form one
/// batch, whose span links to both (found through the traceparents queued with the changes). A current-thread runtime: the subscriber set here is this
/// thread's, and every task (writer, emulator, client) runs on it.
#[tokio::test]
async fn a_batch_of_several_jobs_links_to_each_of_them() {
    let kept = Kept::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(kept.clone())
        .build();
    let _traced = tracing::subscriber::set_default(mbprov::telemetry::subscriber(
        mbprov::telemetry::LogFormat::Json,
        tracing_subscriber::EnvFilter::new("off"),
        std::io::sink,
        false,
        Some(&provider),
    ));
    let env = crate::writer_support::writer_env("tr").await;
    let (mb, store) = (env.mb.clone(), env.store.clone());
    let writer = GraphWriter::start(
        mb.clone(),
        store.clone(),
        crate::writer_support::writer_config(Duration::from_secs(5), Duration::from_secs(20)),
    );
    let group = mb.create_group("Traced").await.unwrap().id;
    // mbprov exports only its own spans (target `mbprov...`), as a job's span is.
    let write = |name: &'static str, db: i64| {
        let (w, job) = (
            writer.clone(),
            tracing::info_span!(target: "mbprov::jobs", "job", job_id = name),
        );
        let change = DataChange::set(
            group,
            db,
            db_perms(DataAccess::ViewOnly, Features::default()),
        );
        tokio::spawn(async move { w.write_data(change).await }.instrument(job))
    };

    // The first alone: nothing else is queued while it is written.
    write("first", 1).await.unwrap().unwrap();
    assert_eq!(
        writer.data_batches(),
        1,
        "the first change is a batch of its own"
    );
    let lock = store
        .graph_lock("data", Duration::from_secs(5))
        .acquire(Duration::from_secs(5))
        .await
        .unwrap();
    let a = write("a", 1);
    wait_until("a waits", || writer.data_backlog() == 1).await;
    let b = write("b", 2);
    wait_until("a and b wait together", || writer.data_backlog() == 2).await;
    lock.release().await.unwrap();
    for job in [a, b] {
        job.await.unwrap().unwrap();
    }
    assert_eq!(writer.data_batches(), 2, "a and b went out as one batch");

    let spans = kept.0.lock().unwrap().clone();
    let job = |id: &str| {
        spans
            .iter()
            .find(|s| {
                s.name == "job"
                    && s.attributes
                        .iter()
                        .any(|kv| kv.key.as_str() == "job_id" && kv.value.as_str() == id)
            })
            .unwrap_or_else(|| panic!("no job {id} in {spans:#?}"))
    };
    let (first, a, b) = (job("first"), job("a"), job("b"));
    let writes: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.name == "graph write data")
        .collect();
    assert_eq!(writes.len(), 2, "{writes:#?}");
    let alone = writes
        .iter()
        .find(|w| w.parent_span_id == first.span_context.span_id())
        .unwrap_or_else(|| panic!("no write is the first job's child: {writes:#?}"));
    assert_eq!(alone.span_context.trace_id(), first.span_context.trace_id());
    assert!(alone.links.is_empty());
    let together = writes
        .iter()
        .find(|w| w.span_context != alone.span_context)
        .unwrap();
    // Compared by ids: a link made from a queued traceparent is a remote context.
    let ids = |c: &SpanContext| (c.trace_id(), c.span_id());
    let linked: Vec<_> = together
        .links
        .iter()
        .map(|l| ids(&l.span_context))
        .collect();
    assert_eq!(
        linked,
        [ids(&a.span_context), ids(&b.span_context)],
        "linked to both jobs, in arrival order"
    );
    assert_eq!(
        together.parent_span_id,
        SpanId::INVALID,
        "a root of its own"
    );
    let puts: Vec<&SpanData> = spans
        .iter()
        .filter(|s| {
            s.name == "PUT /api/permissions/graph"
                && s.parent_span_id == together.span_context.span_id()
        })
        .collect();
    assert_eq!(puts.len(), 1, "the merged write is one PUT: {spans:#?}");
    assert_eq!(
        puts[0].span_context.trace_id(),
        together.span_context.trace_id()
    );
}
