//! Reading the Prometheus text exposition the exporter serves: the value of one series, and the
//! names of the per-queue series of the demo project. Shared by the integration tests
//! (tests/common) and the benchmarks (benches/common includes this file by path), so it uses
//! nothing but the library's public constants and asserts nothing about the exporter.

use dli_exporter::sim::DEMO_PROJECT_ID;

/// The value of the series written exactly as `series` (name and labels), if present.
pub fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?.strip_prefix(' ')?;
        Some(rest.trim().parse().expect("sample value"))
    })
}

/// `name{project_id="…",queue="queue"}` of the demo project: a per-queue poll or counter series.
pub fn queue_series(name: &str, queue: &str) -> String {
    format!("{name}{{project_id=\"{DEMO_PROJECT_ID}\",queue=\"{queue}\"}}")
}

/// `name{project_id="…",queue="queue",state="state"}` of the demo project.
pub fn state_series(name: &str, queue: &str, state: &str) -> String {
    format!("{name}{{project_id=\"{DEMO_PROJECT_ID}\",queue=\"{queue}\",state=\"{state}\"}}")
}

/// The `dli_batch_jobs` series of `queue` and `state` in the demo project.
pub fn jobs_series(queue: &str, state: &str) -> String {
    state_series("dli_batch_jobs", queue, state)
}
