//! The Prometheus series the worker exports, by name, type and label keys, against the list
//! below: adding, removing or relabelling a metric fails here until the list (and the README's
//! metrics table) is updated. The names are also checked against Prometheus' naming
//! conventions: `mbprov_` prefix, snake case, `_total` on counters and only there, a unit
//! suffix on histograms, and no label that could take unbounded values (tenant, user, job).
//!
//! The contract's metrics (CONTRACT.md section 7) keep their names whatever these rules say;
//! today all of them follow the rules.

use std::collections::BTreeMap;

use mbprov::ops::metrics;

/// (name, type, label keys): every series family `/metrics` serves.
const EXPORTED: &[(&str, &str, &[&str])] = &[
    ("mbprov_dead_lettered_total", "counter", &[]),
    ("mbprov_graph_write_conflicts_total", "counter", &["graph"]),
    ("mbprov_graph_writes_total", "counter", &["graph"]),
    ("mbprov_intake_closed", "gauge", &["reason"]),
    ("mbprov_intake_open", "gauge", &[]),
    (
        "mbprov_intake_probes_total",
        "counter",
        &["probe", "result"],
    ),
    ("mbprov_job_deadline_exceeded_total", "counter", &["kind"]),
    ("mbprov_job_duration_seconds", "histogram", &["kind"]),
    ("mbprov_jobs_returned_total", "counter", &["reason"]),
    ("mbprov_jobs_total", "counter", &["kind", "outcome"]),
    ("mbprov_lock_wait_seconds", "histogram", &[]),
    ("mbprov_metabase_budget_wait_seconds", "histogram", &[]),
    (
        "mbprov_metabase_requests_total",
        "counter",
        &["method", "status"],
    ),
    ("mbprov_retries_total", "counter", &[]),
];

/// Label keys whose values grow with the data (one series per tenant, user or job): never.
const UNBOUNDED: &[&str] = &[
    "tenant",
    "tenant_id",
    "email",
    "user",
    "user_id",
    "job",
    "job_id",
    "id",
    "group",
    "group_id",
    "collection",
    "collection_id",
    "route",
    "path",
    "url",
    "error",
    "message",
];

/// Units a histogram or gauge name may end with (base units, as Prometheus asks).
const UNITS: &[&str] = &[
    "_seconds",
    "_bytes",
    "_ratio",
    "_requests",
    "_jobs",
    "_messages",
];

/// Gauges that hold a 0/1 state (like Prometheus' own `up`): a state has no unit.
const STATES: &[&str] = &["mbprov_intake_open", "mbprov_intake_closed"];

type Families = BTreeMap<String, (String, Vec<String>)>;

/// Parses Prometheus text: `# TYPE` lines give the families, sample lines their label keys
/// (the histogram's own `le` left out).
fn families(text: &str) -> Families {
    let mut out: Families = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            out.insert(name.to_owned(), (kind.to_owned(), Vec::new()));
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let series = line.split_whitespace().next().unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|base| out.get(*base).is_some_and(|(k, _)| k == "histogram"))
            })
            .unwrap_or(name);
        let keys: Vec<String> = labels
            .split(',')
            .filter_map(|kv| kv.split_once('=').map(|(k, _)| k.to_owned()))
            .filter(|k| k != "le")
            .collect();
        let entry = out
            .get_mut(family)
            .unwrap_or_else(|| panic!("a sample without # TYPE: {line}"));
        for k in keys {
            if !entry.1.contains(&k) {
                entry.1.push(k);
            }
        }
    }
    for (_, keys) in out.values_mut() {
        keys.sort();
    }
    out
}

#[test]
fn the_exported_series_are_the_listed_ones() {
    let handle = metrics::install().unwrap();
    // `install` registers every family at zero, so all render before any event (recording one
    // here would race with `ops_server`'s before/after counts in this process).
    let got = families(&handle.render());
    let want: Families = EXPORTED
        .iter()
        .map(|(n, k, l)| {
            let mut labels: Vec<String> = l.iter().map(|s| s.to_string()).collect();
            labels.sort();
            (n.to_string(), (k.to_string(), labels))
        })
        .collect();
    assert_eq!(
        got, want,
        "the exported metrics changed: update EXPORTED here and the README's metrics table"
    );
}

#[test]
fn the_listed_series_follow_prometheus_naming() {
    for (name, kind, labels) in EXPORTED {
        assert!(name.starts_with("mbprov_"), "{name}: no mbprov_ prefix");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{name}: not snake case"
        );
        match *kind {
            "counter" => assert!(name.ends_with("_total"), "{name}: a counter ends in _total"),
            _ => {
                assert!(
                    !name.ends_with("_total"),
                    "{name}: only counters end in _total"
                );
                assert!(
                    UNITS.iter().any(|u| name.ends_with(u))
                        || (*kind == "gauge" && STATES.contains(name)),
                    "{name}: a {kind} names its unit"
                );
            }
        }
        for label in *labels {
            assert!(
                !UNBOUNDED.contains(label),
                "{name}: label {label} is unbounded"
            );
        }
    }
}

#[test]
fn the_parser_reads_families_and_label_keys() {
    let text = "# HELP a_total x\n# TYPE a_total counter\na_total{kind=\"k\",outcome=\"o\"} 1\n\
                # TYPE h_seconds histogram\nh_seconds_bucket{kind=\"k\",le=\"0.1\"} 0\n\
                h_seconds_sum{kind=\"k\"} 0\nh_seconds_count{kind=\"k\"} 0\n\
                # TYPE b_total counter\nb_total 0\n";
    let got = families(text);
    assert_eq!(
        got["a_total"],
        ("counter".into(), vec!["kind".into(), "outcome".into()])
    );
    assert_eq!(got["h_seconds"], ("histogram".into(), vec!["kind".into()]));
    assert_eq!(got["b_total"], ("counter".into(), vec![]));
    assert_eq!(got.len(), 3);
}
