//! `--probe` (docs/architecture.md, "--probe"): what the ListBatches API of one queue really
//! does, found with at most [`MAX_PROBE_REQUESTS`] read-only requests: what `total` means, the
//! cap on `size`, the default order, whether `order`, `state` and `start`/`end` are honoured,
//! and the page latency. The readings come from [`super::detect`], the classifiers the walker
//! uses too.
//!
//! Layout: this file asks the questions; `report.rs` holds [`ProbeReport`] and its two renderings.
//! It only sends ListBatches requests through [`DliClient`] and reports; it must not publish,
//! walk for the exporter, or show a credential (reports name the project, queue, URLs without
//! credentials and HTTP details only).

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

mod report;

pub use report::ProbeReport;

use super::client::DliClient;
use super::detect::{
    Order, ParamSupport, SizeCap, TimeFilter, TotalMeaning, order_param_support,
    state_filter_support, time_filter_support,
};
use super::error::{DliError, FailureReason};
use super::model::{BatchJob, BatchPage, ListBatchesQuery};
use super::retry::RetryPolicy;

/// ListBatches requests one queue's probe may send, retries included.
pub const MAX_PROBE_REQUESTS: u32 = 50;

/// Requests kept back from the walk of the plain list for the other questions (`total` with
/// `size=1`, a larger `size`, `order` twice, `state`, `start`/`end`).
const RESERVED: u32 = 6;

/// The largest `size` asked for to see a cap above `poll.page_size`.
const LARGE_SIZE: u32 = 1000;

/// How one queue is probed.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// `poll.page_size`: the size the walk asks for.
    pub page_size: u32,
    /// At most this many requests (default [`MAX_PROBE_REQUESTS`]).
    pub max_requests: u32,
    /// Retries of transient failures; each retry counts toward `max_requests`.
    pub retry: RetryPolicy,
}

impl ProbeOptions {
    pub fn new(page_size: u32, retries: u32) -> Self {
        ProbeOptions {
            page_size,
            max_requests: MAX_PROBE_REQUESTS,
            retry: RetryPolicy::new(retries),
        }
    }
}

/// Probes `queue` through `client` (see the module doc). Never fails: a probe that could not
/// complete says why in [`ProbeReport::error`].
pub async fn probe_queue(client: &DliClient, queue: &str, options: &ProbeOptions) -> ProbeReport {
    let mut p = Prober {
        client,
        queue,
        options,
        requests: 0,
        latencies: Vec::new(),
        ids: HashSet::new(),
    };
    let mut found = Found::default();
    let error = p.run(&mut found).await.err();
    let (p50_ms, p99_ms) = percentiles(&p.latencies);
    let mut notes = found.notes;
    if let Some(Refused::Budget) = &error {
        notes.push(format!(
            "the request budget ({}) ran out; the questions left are unknown",
            options.max_requests
        ));
    }
    ProbeReport {
        project_id: client.project_id().to_string(),
        queue: queue.to_string(),
        jobs: (p.ids.len() as u64).saturating_add(found.without_id),
        total: found.total,
        size_cap: found.size_cap,
        default_order: found.default_order,
        order_param: found.order_param,
        state_filter: found.state_filter,
        time_filter: found.time_filter,
        p50_ms,
        p99_ms,
        requests: p.requests,
        pages: found.pages,
        complete_walk: found.complete,
        notes,
        error: match error {
            Some(Refused::Error(e)) => Some(e.to_string()),
            _ => None,
        },
    }
}

/// Why a request was not answered with a page.
enum Refused {
    /// The probe's request budget is spent.
    Budget,
    Error(DliError),
}

/// What the probe has found so far.
struct Found {
    total: TotalMeaning,
    size_cap: SizeCap,
    default_order: Order,
    order_param: ParamSupport,
    state_filter: ParamSupport,
    time_filter: TimeFilter,
    pages: u32,
    complete: bool,
    /// Jobs came after an empty page: the walk's count is not the list's.
    gap: bool,
    without_id: u64,
    notes: Vec<String>,
}

impl Default for Found {
    fn default() -> Self {
        Found {
            total: TotalMeaning::Unknown,
            size_cap: SizeCap::Unknown,
            default_order: Order::Unknown,
            order_param: ParamSupport::Unknown,
            state_filter: ParamSupport::Unknown,
            time_filter: TimeFilter::Unknown,
            pages: 0,
            complete: false,
            gap: false,
            without_id: 0,
            notes: Vec::new(),
        }
    }
}

/// One page of the plain list as the walk got it.
struct WalkedPage {
    asked: u32,
    total: Option<i64>,
    jobs: Vec<BatchJob>,
}

struct Prober<'a> {
    client: &'a DliClient,
    queue: &'a str,
    options: &'a ProbeOptions,
    requests: u32,
    latencies: Vec<Duration>,
    /// Every job id seen in any answer.
    ids: HashSet<String>,
}

impl Prober<'_> {
    fn query(&self, from: u64, size: u32) -> ListBatchesQuery {
        ListBatchesQuery::page(self.queue, from, size)
    }

    /// One page, retried within the budget for transient failures.
    async fn send(&mut self, query: &ListBatchesQuery) -> Result<BatchPage, Refused> {
        let mut attempt = 0;
        loop {
            if self.requests >= self.options.max_requests {
                return Err(Refused::Budget);
            }
            self.requests += 1;
            let started = Instant::now();
            let outcome = self.client.list_batches(query).await;
            let elapsed = started.elapsed();
            match outcome {
                Ok(page) => {
                    self.latencies.push(elapsed);
                    for id in page.sessions.iter().filter_map(|j| j.id.as_ref()) {
                        self.ids.insert(id.clone());
                    }
                    return Ok(page);
                }
                Err(e) => {
                    if e.status().is_some() {
                        self.latencies.push(elapsed);
                    }
                    let wait = e
                        .retry_after()
                        .unwrap_or_default()
                        .max(self.options.retry.backoff(attempt))
                        .min(Duration::from_secs(30));
                    if !e.is_retryable() || attempt >= self.options.retry.retries {
                        return Err(Refused::Error(e));
                    }
                    tracing::debug!(queue = self.queue, attempt, error = %e, "probe request failed; retrying");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        }
    }

    /// A request whose refusal with a 4xx (not auth, not throttling) is an answer: `Ok(None)`.
    /// Other failures end the probe.
    async fn ask(&mut self, query: &ListBatchesQuery) -> Result<Option<BatchPage>, Refused> {
        match self.send(query).await {
            Ok(page) => Ok(Some(page)),
            Err(Refused::Error(e)) if e.reason() == FailureReason::Http4xx => {
                tracing::debug!(queue = self.queue, error = %e, "probe request refused");
                Ok(None)
            }
            Err(other) => Err(other),
        }
    }

    async fn run(&mut self, found: &mut Found) -> Result<(), Refused> {
        let size = self.options.page_size.max(1);
        let walked = self.walk(size, found).await?;
        // The plain list as walked, each job once (where pages overlap, its first place).
        let mut once: HashSet<&str> = HashSet::new();
        let list: Vec<&BatchJob> = walked
            .iter()
            .flat_map(|p| p.jobs.iter())
            .filter(|j| j.id.as_deref().is_none_or(|id| once.insert(id)))
            .collect();
        let seen = self.ids.len().saturating_add(found.without_id as usize);
        let known_count = (found.complete && !found.gap).then_some(seen as u64);
        found.default_order = Order::of_times(list.iter().map(|j| j.create_time));
        if found.default_order == Order::Unknown {
            found.notes.push(
                "default order: fewer than two distinct create_time values among the jobs seen"
                    .into(),
            );
        }

        // total: every page of the plain list, and one page of one job (which tells the two
        // meanings apart whenever the queue has two jobs or more).
        let mut readings: Vec<(TotalMeaning, usize)> = walked
            .iter()
            .map(|p| {
                let r = TotalMeaning::of_page(p.total, p.jobs.len(), known_count);
                (r, p.jobs.len())
            })
            .collect();
        if seen >= 2 {
            match self.ask(&self.query(0, 1)).await {
                Ok(Some(p)) => readings.push((
                    TotalMeaning::of_page(p.total, p.sessions.len(), known_count),
                    p.sessions.len(),
                )),
                Ok(None) => found.notes.push("size=1 was refused with a 4xx".into()),
                Err(Refused::Error(e)) if e.is_inconsistent() => found.notes.push(
                    "asked for size=1, the server returned more jobs: it ignores size".into(),
                ),
                Err(e) => return Err(e),
            }
        }
        found.total = total_meaning(&readings, known_count, &mut found.notes);

        // size cap: the walk's pages, and one larger page when the queue has more jobs than a
        // walk page and the walk saw no cap.
        // Pages of one size combine (a full page shows there is no cap at that size, whatever a
        // short page elsewhere says); a cap seen at the larger size wins over them.
        let mut cap = SizeCap::Unknown;
        let mut after = seen;
        for p in &walked {
            after = after.saturating_sub(p.jobs.len());
            cap = cap.combine(SizeCap::of_page(p.asked, p.jobs.len(), after > 0));
        }
        let larger = size.saturating_add(1);
        let large = size.saturating_mul(5).clamp(larger, LARGE_SIZE.max(larger));
        if seen > size as usize && !matches!(cap, SizeCap::Capped(_)) {
            match self.ask(&self.query(0, large)).await {
                Ok(Some(p)) => {
                    let n = p.sessions.len();
                    cap = cap.largest_cap(SizeCap::of_page(large, n, seen > n));
                }
                Ok(None) => found
                    .notes
                    .push(format!("size={large} was refused with a 4xx")),
                Err(e) => return Err(e),
            }
        }
        if cap == SizeCap::Unknown {
            found.notes.push(format!(
                "size cap: the queue has fewer jobs ({seen}) than a page of {size}, so no page could show one"
            ));
        }
        found.size_cap = cap;

        self.order(size, &list, found).await?;
        self.state(size, &list, found).await?;
        let first_len = walked.first().map_or(0, |p| p.jobs.len());
        self.time(size, &list, first_len, found).await
    }

    /// Walks the plain list (no `order`) from offset 0 until an empty page, a page without a
    /// new id, or the budget less [`RESERVED`].
    async fn walk(&mut self, size: u32, found: &mut Found) -> Result<Vec<WalkedPage>, Refused> {
        let mut pages: Vec<WalkedPage> = Vec::new();
        let mut from = 0u64;
        // The offset of an empty page the walk looked past.
        let mut looked_past: Option<u64> = None;
        let walk_budget = self.options.max_requests.saturating_sub(RESERVED).max(1);
        while self.requests < walk_budget {
            let before = self.ids.len();
            let page = self.send(&self.query(from, size)).await?;
            found.pages += 1;
            let n = page.sessions.len();
            found.without_id += page.sessions.iter().filter(|j| j.id.is_none()).count() as u64;
            let new_ids = self.ids.len() - before;
            let step = pages.first().map_or(n, |p| p.jobs.len());
            if let Some(prev) = pages.last()
                && prev.jobs.len() < step
                && !prev.jobs.is_empty()
                && n > 0
            {
                found.notes.push(format!(
                    "a short page was followed by more jobs at from={from}: the list has gaps the walk must not take as its end"
                ));
            }
            pages.push(WalkedPage {
                asked: size,
                total: page.total,
                jobs: page.sessions,
            });
            if let Some(empty_at) = looked_past.filter(|_| n > 0) {
                found.gap = true;
                found.notes.push(format!(
                    "an empty page at from={empty_at} was followed by {n} jobs at from={from}: the list has gaps the walk must not take as its end"
                ));
                looked_past = None;
            }
            if n == 0 {
                // One look past the first empty page: a list that goes on after it has a gap.
                if from == 0 || looked_past.is_some() || found.gap {
                    found.complete = true;
                    return Ok(pages);
                }
                looked_past = Some(from);
                from = from.saturating_add(step.max(1) as u64);
                continue;
            }
            looked_past = None;
            if from > 0 && new_ids == 0 && n > 0 {
                found.notes.push(format!(
                    "page from={from} brought no new job id: the server seems to ignore `from`"
                ));
                return Ok(pages);
            }
            from = from.saturating_add(n as u64);
        }
        found.notes.push(format!(
            "the plain list was walked for {} pages, not to its end; jobs counts the jobs seen",
            pages.len()
        ));
        Ok(pages)
    }

    async fn order(
        &mut self,
        size: u32,
        list: &[&BatchJob],
        found: &mut Found,
    ) -> Result<(), Refused> {
        let mut pages = Vec::new();
        for order in ["CREATE_TIME_DESC", "CREATE_TIME_ASC"] {
            let query = ListBatchesQuery {
                order: Some(order.to_string()),
                ..self.query(0, size)
            };
            pages.push(self.ask(&query).await?.map(|p| p.sessions));
        }
        let times: Vec<i64> = list.iter().filter_map(|j| j.create_time).collect();
        let extremes = (found.complete && !found.gap).then(|| {
            let newest = times.iter().max().copied().unwrap_or(0);
            let oldest = times.iter().min().copied().unwrap_or(0);
            (newest, oldest)
        });
        found.order_param = order_param_support(pages[0].as_deref(), pages[1].as_deref(), extremes);
        if found.order_param == ParamSupport::Unknown {
            found.notes.push(
                "order parameter: the pages asked with CREATE_TIME_DESC/ASC hold too few distinct create_time values to tell".into(),
            );
        }
        Ok(())
    }

    async fn state(
        &mut self,
        size: u32,
        list: &[&BatchJob],
        found: &mut Found,
    ) -> Result<(), Refused> {
        let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
        for j in list {
            if let Some(s) = j.state.as_deref() {
                *by_state.entry(s).or_default() += 1;
            }
        }
        // The rarest state present: its answer differs most from the unfiltered page.
        let asked = by_state
            .iter()
            .min_by_key(|(_, n)| **n)
            .map_or("running", |(s, _)| *s)
            .to_string();
        let in_state = by_state.get(asked.as_str()).copied().unwrap_or(0);
        let others = list.len().saturating_sub(in_state);
        let query = ListBatchesQuery {
            state: Some(asked.clone()),
            ..self.query(0, size)
        };
        let answer = self.ask(&query).await?.map(|p| p.sessions);
        found.state_filter = state_filter_support(&asked, answer.as_deref(), in_state, others);
        if found.state_filter == ParamSupport::Unknown {
            found.notes.push(format!(
                "state filter: asked state={asked}; the jobs seen ({} in it, {others} in other states) cannot tell",
                in_state
            ));
        }
        Ok(())
    }

    async fn time(
        &mut self,
        size: u32,
        list: &[&BatchJob],
        unfiltered_len: usize,
        found: &mut Found,
    ) -> Result<(), Refused> {
        let mut times: Vec<i64> = list.iter().filter_map(|j| j.create_time).collect();
        times.sort_unstable();
        times.dedup();
        // A window over the middle third of the creation times seen; with too few, a window
        // that only tells whether the parameters are refused.
        let window = if times.len() >= 3 {
            (times[times.len() / 3], times[2 * times.len() / 3])
        } else {
            (0, i64::MAX / 2)
        };
        let inside = list
            .iter()
            .filter(|j| {
                j.create_time
                    .is_some_and(|t| t >= window.0 && t <= window.1)
            })
            .count();
        let query = ListBatchesQuery {
            start: Some(window.0),
            end: Some(window.1),
            ..self.query(0, size)
        };
        let answer = self.ask(&query).await?.map(|p| p.sessions);
        found.time_filter = time_filter_support(
            window,
            answer.as_deref(),
            inside,
            list.len().saturating_sub(inside),
            unfiltered_len,
        );
        if found.time_filter == TimeFilter::Unknown {
            found.notes.push(if times.len() < 3 {
                "start/end: fewer than three distinct create_time values among the jobs seen".to_string()
            } else {
                format!(
                    "start/end: asked for jobs created from {} to {} (unix ms); the answer fits neither create_time nor no filter (another time?)",
                    window.0, window.1
                )
            });
        }
        Ok(())
    }
}

/// `total`'s meaning from every reading (and the page length it was read on): one meaning when
/// they agree, unknown when a page contradicts it (`total` missing, constant or wrong).
fn total_meaning(
    readings: &[(TotalMeaning, usize)],
    known_count: Option<u64>,
    notes: &mut Vec<String>,
) -> TotalMeaning {
    let mut meaning = TotalMeaning::Unknown;
    let mut contradicted = false;
    for (r, len) in readings {
        // A page holding the whole list reads the same under both meanings.
        let whole = known_count.is_some_and(|n| n == *len as u64);
        if *r == TotalMeaning::Unknown && !whole {
            contradicted = true;
        }
        let combined = meaning.combine(*r);
        contradicted |= meaning != TotalMeaning::Unknown
            && *r != TotalMeaning::Unknown
            && combined == TotalMeaning::Unknown;
        meaning = combined;
    }
    if contradicted {
        notes.push("total: some page's total is neither its length nor the job count (missing, constant or wrong)".into());
        return TotalMeaning::Unknown;
    }
    if meaning == TotalMeaning::Unknown {
        notes.push("total: every page held the whole list, so its two meanings agree".into());
    }
    meaning
}

/// p50 and p99 (nearest rank) in whole milliseconds.
fn percentiles(latencies: &[Duration]) -> (Option<u64>, Option<u64>) {
    let mut ms: Vec<u64> = latencies
        .iter()
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .collect();
    ms.sort_unstable();
    let rank = |q: f64| {
        let n = ms.len();
        if n == 0 {
            return None;
        }
        let i = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
        ms.get(i).copied()
    };
    (rank(0.50), rank(0.99))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|m| Duration::from_millis(*m))
                .collect::<Vec<_>>()
        };
        assert_eq!(percentiles(&[]), (None, None));
        assert_eq!(percentiles(&ms(&[7])), (Some(7), Some(7)));
        assert_eq!(percentiles(&ms(&[5, 1, 3, 2, 4])), (Some(3), Some(5)));
        let hundred: Vec<u64> = (1..=100).collect();
        assert_eq!(percentiles(&ms(&hundred)), (Some(50), Some(99)));
    }

    #[test]
    fn total_readings_agree_or_are_unknown() {
        let mut notes = Vec::new();
        let full = [(TotalMeaning::Full, 100), (TotalMeaning::Full, 30)];
        assert_eq!(
            total_meaning(&full, Some(130), &mut notes),
            TotalMeaning::Full
        );
        let wrong = [(TotalMeaning::Page, 100), (TotalMeaning::Unknown, 30)];
        assert_eq!(
            total_meaning(&wrong, Some(130), &mut notes),
            TotalMeaning::Unknown
        );
        assert!(notes.iter().any(|n| n.contains("neither")), "{notes:?}");
        let one_page = [(TotalMeaning::Unknown, 40), (TotalMeaning::Page, 0)];
        assert_eq!(
            total_meaning(&one_page, Some(40), &mut notes),
            TotalMeaning::Page
        );
        let both = [(TotalMeaning::Full, 100), (TotalMeaning::Page, 1)];
        assert_eq!(
            total_meaning(&both, None, &mut notes),
            TotalMeaning::Unknown
        );
    }
}
