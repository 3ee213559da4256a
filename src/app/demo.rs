//! `--demo`: an embedded simulator with two lively queues (and two SQL queues discovery leaves
//! out), and the settings that make the real client discover and poll them over loopback with the
//! simulator's demo credentials.
//!
//! Nothing here is a shortcut around the client: the demo exercises signing, paging and
//! aggregation exactly as a real account would. It must never be used with real credentials.

use std::time::Duration;

use crate::config::{
    Credentials, DiscoveryConfig, MetricsConfig, PollConfig, Project, QueueFilter, Settings,
    WebConfig,
};
use crate::secret::Secret;
use crate::sim::{
    DEMO_ACCESS_KEY, DEMO_PROJECT_ID, DEMO_QUEUES, DEMO_REGION, DEMO_SECRET_KEY, Simulator,
};

/// How often the demo world moves its jobs along.
pub const DEMO_TICK: Duration = Duration::from_secs(2);

/// The poll schedule of the demo: quick, so the dashboards move within a minute.
pub fn demo_poll() -> PollConfig {
    PollConfig {
        interval: Duration::from_secs(5),
        timeout: Duration::from_secs(4),
        request_timeout: Duration::from_secs(2),
        page_size: 20,
        stale_after: Duration::from_secs(60),
        ..PollConfig::default()
    }
}

/// The queue list is fetched every 30 s, so CU usage moves on the dashboard.
pub fn demo_discovery() -> DiscoveryConfig {
    DiscoveryConfig {
        interval: Duration::from_secs(30),
        ..DiscoveryConfig::default()
    }
}

/// The demo's `metrics.job_names`: its recurring jobs, one through a regex. The demo world's other
/// jobs have names like `daily_orders_etl_57`, which these leave out (regexes match whole names).
pub fn demo_job_names() -> Vec<String> {
    vec![
        "daily_.*_etl".into(),
        "hourly_metrics_rollup".into(),
        "user_profile_agg".into(),
        "fraud_features".into(),
    ]
}

/// Settings that poll `sim` with the demo credentials.
pub fn settings_for(sim: &Simulator) -> Settings {
    Settings {
        web: WebConfig::default(),
        poll: demo_poll(),
        metrics: MetricsConfig {
            job_names: demo_job_names(),
            ..MetricsConfig::default()
        },
        discovery: demo_discovery(),
        projects: vec![Project {
            project_id: DEMO_PROJECT_ID.to_string(),
            project_id_from_region: false,
            region: Some(DEMO_REGION.to_string()),
            endpoint: sim.base_url(),
            iam_endpoint: Some(sim.base_url()),
            // `queues = ["*"]`: the demo finds its queues as a real account's are found.
            queues: Vec::new(),
            discover: Some(QueueFilter::default()),
            credentials: Credentials::AkSk {
                access_key: Secret::new(DEMO_ACCESS_KEY),
                secret_key: Secret::new(DEMO_SECRET_KEY),
                security_token: None,
            },
            ca_file: None,
            proxy: None,
        }],
        source: None,
    }
}

/// Starts the demo simulator on a loopback port and returns it with the settings to poll it.
pub async fn start() -> std::io::Result<(Simulator, Settings)> {
    let sim = Simulator::start_lively(DEMO_TICK).await?;
    let settings = settings_for(&sim);
    tracing::info!(simulator = %sim.base_url(), expected_queues = ?DEMO_QUEUES,
        "demo: discovering and polling the queues of the embedded DLI simulator");
    Ok((sim, settings))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::JobNameFilter;
    use crate::sim::LIVELY_RECURRING_JOBS;

    #[test]
    fn the_demo_selects_its_recurring_jobs_and_nothing_else() {
        let filter = JobNameFilter::new(&demo_job_names(), 100)
            .expect("valid")
            .expect("on");
        for name in LIVELY_RECURRING_JOBS {
            assert!(filter.matches(name), "{name}");
        }
        for name in ["daily_orders_etl_57", "fraud_features_3", "job-1234"] {
            assert!(!filter.matches(name), "{name}");
        }
    }
}
