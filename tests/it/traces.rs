//! OpenTelemetry traces across processes: `mbprov publish` starts a trace, the worker's job span
//! continues it from the AMQP headers, and each Metabase request is a child of the job span.
//! The spans are collected by an OTLP/HTTP receiver in this test process (protobuf bodies
//! decoded with `opentelemetry-proto`), as a collector would receive them. Graph writes run in
//! the writer's own task: a batch of one job is that job's child, a batch of several links to
//! each job (checked in-process, where a batch of two can be formed deterministically).

use std::process::Stdio;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use serde_json::json;
use tokio::io::AsyncWriteExt;

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
