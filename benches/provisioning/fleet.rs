//! What users feel (issue 14): throughput by replica count, the time from publish to fully
//! provisioned, and the comparison with the article's sequential pattern, as markdown.

use std::fmt::Write;

use crate::baseline::Baseline;
use crate::report::Outcome;

/// Issue-14 targets.
pub const MIN_SPEEDUP_TWO_REPLICAS: f64 = 25.0;
pub const MIN_SCALING_FOUR_OVER_ONE: f64 = 2.0;
/// One tenant on an idle fleet, in multiples of the emulated latency.
pub const MAX_IDLE_LATENCIES: f64 = 15.0;

/// The `q`-quantile (0..=1) of `values` by nearest rank; `None` when empty.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

fn ms(v: Option<f64>) -> String {
    v.map_or("?".into(), |s| format!("{:.0} ms", s * 1000.0))
}

fn verdict(ok: bool) -> &'static str {
    if ok { "**met**" } else { "**not met**" }
}

/// The fleet table and the issue-14 verdicts.
pub fn markdown(outcomes: &[Outcome], baseline: Option<&Baseline>, latency_ms: u64) -> String {
    let mut s = String::new();
    s.push_str(
        "\n### Fleet: replicas, latency, and the article's sequential pattern (issue 14)\n\n",
    );
    if let Some(b) = baseline {
        let _ = writeln!(
            s,
            "Sequential pattern (`../shared/seed-article.txt`, one tenant at a time, whole-graph \
             read-modify-write): {} tenants in {:.2} s = {:.2} tenants/s, {:.1} requests per tenant.\n",
            b.tenants,
            b.seconds,
            b.tenants_per_second(),
            b.requests as f64 / f64::from(b.tenants.max(1)),
        );
    }
    s.push_str(
        "| existing | replicas | tenancy | new | tenants/s | × sequential | p50 publish→done | p99 publish→done | \
         one tenant, idle fleet | req/tenant | peak RSS (max replica) |\n\
         |---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for o in outcomes {
        let ratio = baseline.map_or("?".into(), |b| {
            format!(
                "{:.1}×",
                o.tenants_per_second() / b.tenants_per_second().max(1e-9)
            )
        });
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.1} | {ratio} | {} | {} | {} | {:.2} | {} |",
            o.existing,
            o.replicas,
            o.tenancy,
            o.new,
            o.tenants_per_second(),
            ms(quantile(&o.latencies, 0.5)),
            ms(quantile(&o.latencies, 0.99)),
            ms(o.idle_seconds),
            o.per_tenant(o.requests_total()),
            o.peak_rss_kib
                .map_or("?".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
        );
    }
    s.push_str("\n#### Issue-14 targets\n\n");
    let at = |replicas: u32| {
        outcomes
            .iter()
            .filter(|o| o.replicas == replicas && o.tenancy == "groups")
            // The replica-scaling scenarios are issue 14's.
            .max_by_key(|o| (o.issue == "14", o.existing))
    };
    match (at(2), baseline) {
        (Some(two), Some(b)) => {
            let ratio = two.tenants_per_second() / b.tenants_per_second().max(1e-9);
            let _ = writeln!(
                s,
                "- two replicas over the sequential pattern at {} existing: {ratio:.1}×; target ≥ {MIN_SPEEDUP_TWO_REPLICAS}×: {}",
                two.existing,
                verdict(ratio >= MIN_SPEEDUP_TWO_REPLICAS)
            );
        }
        _ => s.push_str("- two replicas over the sequential pattern: not measured in this run\n"),
    }
    match (at(1), at(4)) {
        (Some(one), Some(four)) => {
            let ratio = four.tenants_per_second() / one.tenants_per_second().max(1e-9);
            let _ = writeln!(
                s,
                "- four replicas over one: {ratio:.2}×; target ≥ {MIN_SCALING_FOUR_OVER_ONE}×: {}",
                verdict(ratio >= MIN_SCALING_FOUR_OVER_ONE)
            );
        }
        _ => s.push_str("- four replicas over one: not measured in this run\n"),
    }
    let idle = outcomes
        .iter()
        .filter_map(|o| o.idle_seconds)
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
    let bound = MAX_IDLE_LATENCIES * latency_ms as f64 / 1000.0;
    match idle {
        Some(worst) => {
            let _ = writeln!(
                s,
                "- one tenant on an idle fleet (worst scenario's median): {}; target ≤ {}: {}",
                ms(Some(worst)),
                ms(Some(bound)),
                verdict(worst <= bound)
            );
        }
        None => s.push_str("- one tenant on an idle fleet: not measured\n"),
    }
    s
}
