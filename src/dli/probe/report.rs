//! [`ProbeReport`]: what `--probe` found about one queue, and its two renderings: the readable
//! text and the machine-readable `probe …` line whose keys and order are the contract
//! (docs/architecture.md, "--probe").
//!
//! Plain data and formatting; it sends nothing and must not print a credential (it holds none).

use crate::dli::detect::{Order, ParamSupport, SizeCap, TimeFilter, TotalMeaning};

/// What the probe of one queue found. Keys it could not tell are `Unknown`, with a note why.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    pub project_id: String,
    pub queue: String,
    /// Distinct jobs seen, by id (plus jobs without an id on the plain list's pages).
    pub jobs: u64,
    pub total: TotalMeaning,
    pub size_cap: SizeCap,
    pub default_order: Order,
    pub order_param: ParamSupport,
    pub state_filter: ParamSupport,
    pub time_filter: TimeFilter,
    /// Latency of the requests that got an answer, whole milliseconds (`None`: no answer).
    pub p50_ms: Option<u64>,
    pub p99_ms: Option<u64>,
    /// ListBatches requests sent, retries included.
    pub requests: u32,
    /// Pages of the plain list walked, and whether the walk reached its end.
    pub pages: u32,
    pub complete_walk: bool,
    /// What each reading rests on, and why a key is unknown; one sentence each.
    pub notes: Vec<String>,
    /// Why the probe did not complete (auth, unreachable, ...); `None` when it did.
    pub error: Option<String>,
}

impl ProbeReport {
    /// The probe answered every question it could ask (keys may still be unknown).
    pub fn completed(&self) -> bool {
        self.error.is_none()
    }

    /// The machine-readable line (docs/architecture.md, "--probe").
    pub fn line(&self) -> String {
        let ms = |v: Option<u64>| v.map_or_else(|| "unknown".to_string(), |v| v.to_string());
        format!(
            "probe project_id={} queue={} jobs={} total={} size_cap={} default_order={} order_param={} state_filter={} time_filter={} p50_ms={} p99_ms={}",
            self.project_id,
            self.queue,
            self.jobs,
            self.total.as_str(),
            self.size_cap.label(),
            self.default_order.as_str(),
            self.order_param.as_str(),
            self.state_filter.as_str(),
            self.time_filter.as_str(),
            ms(self.p50_ms),
            ms(self.p99_ms),
        )
    }

    /// The readable report of this queue (several lines, no trailing newline).
    pub fn text(&self) -> String {
        let mut out = format!(
            "project {} queue {}: {} ({} requests; {} pages of the plain list, {})",
            self.project_id,
            self.queue,
            if self.completed() {
                "probe completed"
            } else {
                "probe DID NOT complete"
            },
            self.requests,
            self.pages,
            if self.complete_walk {
                "walked to its end"
            } else {
                "not to its end"
            }
        );
        if let Some(e) = &self.error {
            out.push_str(&format!("\n  error: {e}"));
        }
        let latency = match (self.p50_ms, self.p99_ms) {
            (Some(p50), Some(p99)) => format!("p50 {p50} ms, p99 {p99} ms"),
            _ => "no answer".to_string(),
        };
        for (key, value) in [
            ("jobs seen", self.jobs.to_string()),
            ("total means", self.total.as_str().to_string()),
            ("size cap", self.size_cap.label()),
            ("default order", self.default_order.as_str().to_string()),
            ("order parameter", self.order_param.as_str().to_string()),
            ("state filter", self.state_filter.as_str().to_string()),
            ("start/end filter", self.time_filter.as_str().to_string()),
            ("page latency", latency),
        ] {
            out.push_str(&format!("\n  {key:<17} {value}"));
        }
        for note in &self.notes {
            out.push_str(&format!("\n  - {note}"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_has_every_key_in_order() {
        let report = ProbeReport {
            project_id: "p".into(),
            queue: "q".into(),
            jobs: 3,
            total: TotalMeaning::Full,
            size_cap: SizeCap::Capped(50),
            default_order: Order::Desc,
            order_param: ParamSupport::Honoured,
            state_filter: ParamSupport::Ignored,
            time_filter: TimeFilter::CreateTime,
            p50_ms: Some(12),
            p99_ms: None,
            requests: 9,
            pages: 2,
            complete_walk: true,
            notes: vec!["a note".into()],
            error: None,
        };
        assert_eq!(
            report.line(),
            "probe project_id=p queue=q jobs=3 total=full size_cap=50 default_order=create_time_desc order_param=honoured state_filter=ignored time_filter=create_time p50_ms=12 p99_ms=unknown"
        );
        let text = report.text();
        assert!(
            text.contains("probe completed") && text.contains("- a note"),
            "{text}"
        );
    }
}
