//! The page walker (docs/architecture.md, "The page walk"): every page of one queue, exact whatever `total` means and
//! however the server caps `size`, with retries for transient failures.
//!
//! It owns the walk order, the stop rules, `max_pages`, de-duplication by job id and the retry
//! policy. It hands each distinct job to a sink as pages arrive and keeps no job itself, so its
//! memory is the per-walk id set. It must not publish anything: a failed walk simply returns
//! its error and the caller throws away what the sink built.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Instant;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use super::client::DliClient;
use super::error::DliError;
use super::model::{BatchJob, BatchPage, ListBatchesQuery};
use super::progress::WalkProgress;
pub use super::retry::RetryPolicy;
use super::retry::with_retries;

/// How one queue is walked.
#[derive(Debug, Clone)]
pub struct WalkOptions {
    pub page_size: u32,
    pub max_pages: u32,
    /// Pages of this walk in flight at once (the client's shared limit also applies).
    pub concurrency: usize,
    pub retry: RetryPolicy,
}

/// What a successful walk did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalkStats {
    /// Page requests that got an answer, the final empty one included.
    pub pages: u32,
    /// Distinct jobs handed to the sink.
    pub jobs: u64,
    /// Jobs seen again on a later page (pages shift while jobs are submitted) and skipped.
    pub duplicates: u64,
    /// Requests sent, retries included.
    pub requests: u32,
}

/// A failed walk; it names the project, queue and page.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error("project {project_id} queue {queue:?}: page from={from}: {source}")]
    Page {
        project_id: String,
        queue: String,
        from: u64,
        /// Pages that got an answer before the failure.
        pages: u32,
        #[source]
        source: DliError,
    },
    /// The pages contradict each other in a way the walk cannot repair: nothing may be published.
    #[error("project {project_id} queue {queue:?}: inconsistent pages: {detail}")]
    Inconsistent {
        project_id: String,
        queue: String,
        /// Pages that got an answer before the walk gave up.
        pages: u32,
        detail: String,
    },
    #[error(
        "project {project_id} queue {queue:?}: needs more than poll.max_pages = {max_pages} pages (page size {page_size}); raise poll.max_pages or poll.page_size"
    )]
    TooManyPages {
        project_id: String,
        queue: String,
        max_pages: u32,
        page_size: usize,
    },
}

impl WalkError {
    /// Pages that got an answer before the walk failed.
    pub fn pages(&self) -> u32 {
        match self {
            WalkError::Page { pages, .. } => *pages,
            WalkError::TooManyPages { max_pages, .. } => *max_pages,
            WalkError::Inconsistent { pages, .. } => *pages,
        }
    }

    /// The `reason` label of `dli_poll_failures_total`: the request failure that ended the walk,
    /// `inconsistent` or `max_pages`.
    pub fn reason(&self) -> &'static str {
        match self {
            WalkError::Page { source, .. } if source.is_inconsistent() => "inconsistent",
            WalkError::Page { source, .. } => source.reason().as_str(),
            WalkError::TooManyPages { .. } => "max_pages",
            WalkError::Inconsistent { .. } => "inconsistent",
        }
    }

    /// The request error behind the walk failure, if one was.
    pub fn request_error(&self) -> Option<&DliError> {
        match self {
            WalkError::Page { source, .. } => Some(source),
            WalkError::TooManyPages { .. } | WalkError::Inconsistent { .. } => None,
        }
    }
}

/// The set of job ids seen in one walk, 16 bytes per job.
#[derive(Default)]
pub struct JobIdSet(HashSet<u128>);

impl JobIdSet {
    /// Room for `n` more ids without rehashing.
    pub fn reserve(&mut self, n: usize) {
        self.0.reserve(n);
    }

    /// True when `id` was not seen before.
    pub fn insert(&mut self, id: &str) -> bool {
        self.0.insert(id_key(id))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A compact key for a job id: the UUID's own 128 bits when it is one, else two independent
/// 64-bit SipHashes of the text.
pub fn id_key(id: &str) -> u128 {
    let hex: Vec<u8> = id.bytes().filter(|b| *b != b'-').collect();
    if hex.len() == 32
        && id.len() <= 36
        && let Ok(s) = std::str::from_utf8(&hex)
        && let Ok(v) = u128::from_str_radix(s, 16)
    {
        return v;
    }
    let mut a = DefaultHasher::new();
    id.hash(&mut a);
    let mut b = DefaultHasher::new();
    (0x9e37_79b9_7f4a_7c15_u64, id).hash(&mut b);
    (u128::from(a.finish()) << 64) | u128::from(b.finish())
}

/// Walks every page of `queue` and hands each distinct job to `sink`.
///
/// `deadline` bounds the retry waits (a `Retry-After` beyond it ends the walk with the error);
/// the caller bounds the whole walk with a timeout as well.
pub async fn walk_queue(
    client: &DliClient,
    queue: &str,
    options: &WalkOptions,
    deadline: Instant,
    sink: &mut impl FnMut(BatchJob),
) -> Result<WalkStats, WalkError> {
    let progress = WalkProgress::default();
    walk_queue_with_progress(client, queue, options, deadline, &progress, sink).await
}

/// [`walk_queue`], counting answered pages into `progress` as they arrive.
pub async fn walk_queue_with_progress(
    client: &DliClient,
    queue: &str,
    options: &WalkOptions,
    deadline: Instant,
    progress: &WalkProgress,
    sink: &mut impl FnMut(BatchJob),
) -> Result<WalkStats, WalkError> {
    let mut walk = Walk {
        client,
        queue,
        options,
        deadline,
        stats: WalkStats::default(),
        seen: JobIdSet::default(),
        progress,
    };
    let first = walk.fetch(0).await?;
    walk.answered();
    let step = first.sessions.len();
    let first_total = first.total.unwrap_or(0);
    walk.feed(first.sessions, sink);
    if step == 0 {
        return Ok(walk.stats);
    }
    if first_total > step as i64 {
        // The set is the walk's one allocation that grows with the queue: size it once (a
        // rehash would briefly hold 1.5x), within what max_pages allows whatever total says.
        let limit = step.saturating_mul(options.max_pages as usize);
        walk.seen.reserve((first_total as usize).min(limit));
        walk.full_count(step, first_total as u64, sink).await?;
    } else {
        walk.unknown_count(step, sink).await?;
    }
    Ok(walk.stats)
}

struct Walk<'a> {
    client: &'a DliClient,
    queue: &'a str,
    options: &'a WalkOptions,
    deadline: Instant,
    stats: WalkStats,
    seen: JobIdSet,
    progress: &'a WalkProgress,
}

impl Walk<'_> {
    /// One more page answered.
    fn answered(&mut self) {
        self.stats.pages = self.stats.pages.saturating_add(1);
        self.progress.set(self.stats.pages);
    }

    fn feed(&mut self, jobs: Vec<BatchJob>, sink: &mut impl FnMut(BatchJob)) {
        for job in jobs {
            let fresh = match &job.id {
                Some(id) => self.seen.insert(id),
                // Without an id a job cannot be matched across pages; count it as it comes.
                None => true,
            };
            if fresh {
                self.stats.jobs += 1;
                sink(job);
            } else {
                self.stats.duplicates += 1;
            }
        }
    }

    fn too_many_pages(&self) -> WalkError {
        WalkError::TooManyPages {
            project_id: self.client.project_id().to_string(),
            queue: self.queue.to_string(),
            max_pages: self.options.max_pages,
            page_size: self.options.page_size as usize,
        }
    }

    /// `total` is the job count: fetch the offsets `step, 2*step, …` below the largest `total`
    /// seen, concurrently. An empty page ends the walk at its offset.
    ///
    /// Pages answered out of order while jobs are being submitted can leave holes: with
    /// newest-first order an insert shifts every later job down, so a high page answered before
    /// the insert and a lower page answered after it miss the jobs in between. Each page's `total`
    /// tells how far the list had shifted when it was answered; the walk maps every page back to
    /// the positions the jobs had at the start, and fetches again wherever a hole remains.
    async fn full_count(
        &mut self,
        step: usize,
        total: u64,
        sink: &mut impl FnMut(BatchJob),
    ) -> Result<(), WalkError> {
        let step_u = step as u64;
        let first_total = total as i64;
        let mut max_total = total;
        let mut next = step_u;
        let mut end = u64::MAX;
        let mut scheduled: u32 = 1;
        let mut layout = Layout::new(first_total, step);
        let mut in_flight = FuturesUnordered::new();
        let (client, queue, options, deadline) =
            (self.client, self.queue, self.options, self.deadline);
        loop {
            while in_flight.len() < options.concurrency.max(1) && next < max_total && next < end {
                if scheduled >= options.max_pages {
                    return Err(self.too_many_pages());
                }
                scheduled += 1;
                let from = next;
                in_flight.push(async move {
                    (
                        from,
                        fetch_with_retries(client, queue, options, deadline, from).await,
                    )
                });
                next = next.saturating_add(step_u);
            }
            let Some((from, result)) = in_flight.next().await else {
                break;
            };
            let (page, requests) = result.map_err(|(e, requests)| {
                self.stats.requests += requests;
                self.page_error(from, e)
            })?;
            self.stats.requests += requests;
            self.answered();
            if let Some(t) = page.total
                && t > 0
            {
                max_total = max_total.max(t as u64);
            }
            if page.sessions.is_empty() {
                end = end.min(from);
            }
            layout.record(from, page.total, page.sessions.len());
            self.feed(page.sessions, sink);
        }

        // A `total` that undercounts must not cut the walk short: if the last page was full,
        // go on page by page until a short or empty one. Unless the count was confirmed: every
        // page carried the first page's `total` (the list did not change) and the last page
        // ended exactly there. Then one more request could only return an empty page, so it is
        // not sent and a walk costs exactly ceil(total / step) requests. (What this gives up: a
        // server whose `total` is constant, wrong, *and* a multiple of the page length would
        // hide the jobs beyond it; any other wrong or changing `total` still gets the probe.)
        let mut from = next.min(end);
        while end == u64::MAX
            && layout.last_page_full(from.saturating_sub(step_u))
            && !layout.count_confirmed()
        {
            let page = self.fetch_counted(from).await?;
            let n = page.sessions.len();
            layout.record(from, page.total, n);
            self.feed(page.sessions, sink);
            if n < step {
                break;
            }
            from = from.saturating_add(n as u64);
        }

        // Fill the holes left by pages that shifted under concurrent inserts.
        for _round in 0..MAX_REPAIR_ROUNDS {
            let holes = layout.holes();
            if holes.is_empty() {
                return Ok(());
            }
            for (start, stop) in holes {
                let mut at = start.saturating_add(layout.shift()).max(0) as u64;
                loop {
                    let page = self.fetch_counted(at).await?;
                    let n = page.sessions.len();
                    let covered_to = layout.record(at, page.total, n);
                    self.feed(page.sessions, sink);
                    if n == 0 || covered_to >= stop {
                        break;
                    }
                    at = at.saturating_add(n as u64);
                }
                // Whatever is still missing there is gone from the list (deleted meanwhile).
                layout.resolve(start, stop);
            }
        }
        tracing::debug!(
            queue = self.queue,
            "queue kept changing while it was walked; holes left after repair rounds"
        );
        Ok(())
    }

    async fn fetch_counted(&mut self, from: u64) -> Result<BatchPage, WalkError> {
        if self.stats.pages >= self.options.max_pages {
            return Err(self.too_many_pages());
        }
        let page = self.fetch(from).await?;
        self.answered();
        Ok(page)
    }

    /// `total` told nothing: walk one page after another, advancing by each page's length,
    /// until an empty page or one shorter than the first.
    async fn unknown_count(
        &mut self,
        step: usize,
        sink: &mut impl FnMut(BatchJob),
    ) -> Result<(), WalkError> {
        let mut from = step as u64;
        loop {
            if self.stats.pages >= self.options.max_pages {
                return Err(self.too_many_pages());
            }
            let page = self.fetch(from).await?;
            self.answered();
            let n = page.sessions.len();
            self.feed(page.sessions, sink);
            if n == 0 || n < step {
                return Ok(());
            }
            from = from.saturating_add(n as u64);
        }
    }

    async fn fetch(&mut self, from: u64) -> Result<BatchPage, WalkError> {
        match fetch_with_retries(self.client, self.queue, self.options, self.deadline, from).await {
            Ok((page, requests)) => {
                self.stats.requests += requests;
                Ok(page)
            }
            Err((e, requests)) => {
                self.stats.requests += requests;
                Err(self.page_error(from, e))
            }
        }
    }

    fn page_error(&self, from: u64, source: DliError) -> WalkError {
        WalkError::Page {
            project_id: self.client.project_id().to_string(),
            queue: self.queue.to_string(),
            from,
            pages: self.stats.pages,
            source,
        }
    }
}

/// Rounds of hole repair before a walk of a queue that keeps changing gives up looking.
const MAX_REPAIR_ROUNDS: usize = 4;

/// Where the pages of a full-count walk landed, in the positions the jobs had when the walk
/// started: a page answered at offset `from` when the list had grown by `shift` jobs (its
/// `total` minus the first page's) holds the jobs that were at `from - shift ..`.
struct Layout {
    first_total: i64,
    step: usize,
    /// Covered ranges of starting positions, merged and sorted.
    covered: Vec<(i64, i64)>,
    /// The shift seen on the latest answer.
    latest_shift: i64,
    /// Starting positions at and beyond this are known to be past the end of the list.
    known_end: i64,
    /// Offset and length of the highest page.
    highest: (u64, usize),
    /// Every page so far carried `total == first_total`.
    consistent: bool,
}

impl Layout {
    fn new(first_total: i64, step: usize) -> Self {
        Layout {
            first_total,
            step,
            covered: vec![(0, step as i64)],
            latest_shift: 0,
            known_end: i64::MAX,
            highest: (0, step),
            consistent: true,
        }
    }

    /// Records a page; returns the starting position just past what it covered.
    fn record(&mut self, from: u64, total: Option<i64>, len: usize) -> i64 {
        self.consistent &= total == Some(self.first_total);
        // A lying server (`total` i64::MAX, then 1) must not overflow anything: saturate.
        let shift = match total {
            Some(t) if t > 0 => t.saturating_sub(self.first_total),
            _ => self.latest_shift,
        };
        self.latest_shift = shift;
        let start = (from.min(i64::MAX as u64) as i64).saturating_sub(shift);
        let stop = start.saturating_add(i64::try_from(len).unwrap_or(i64::MAX));
        if len < self.step {
            self.known_end = self.known_end.min(stop);
        }
        if from >= self.highest.0 {
            self.highest = (from, len);
        }
        self.resolve(start, stop);
        stop
    }

    fn shift(&self) -> i64 {
        self.latest_shift
    }

    fn last_page_full(&self, from: u64) -> bool {
        self.highest.0 == from && self.highest.1 >= self.step
    }

    /// Every page agreed on the first page's `total` and the highest one ended exactly at it.
    fn count_confirmed(&self) -> bool {
        self.consistent
            && self.highest.0.saturating_add(self.highest.1 as u64) == self.first_total as u64
    }

    /// Marks a range of starting positions as accounted for.
    fn resolve(&mut self, start: i64, stop: i64) {
        if stop <= start {
            return;
        }
        self.covered.push((start, stop));
        self.covered.sort_unstable();
        let mut merged: Vec<(i64, i64)> = Vec::with_capacity(self.covered.len());
        for (s, e) in self.covered.drain(..) {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        self.covered = merged;
    }

    /// Ranges of starting positions below the first `total` that no page covered.
    fn holes(&self) -> Vec<(i64, i64)> {
        let limit = self.first_total.min(self.known_end);
        let mut holes = Vec::new();
        let mut at = 0;
        for &(s, e) in &self.covered {
            if s > at && at < limit {
                holes.push((at, s.min(limit)));
            }
            at = at.max(e);
        }
        if at < limit {
            holes.push((at, limit));
        }
        holes
    }
}

/// One page, retried per the policy; returns the page and the number of requests it took.
async fn fetch_with_retries(
    client: &DliClient,
    queue: &str,
    options: &WalkOptions,
    deadline: Instant,
    from: u64,
) -> Result<(BatchPage, u32), (DliError, u32)> {
    let query = ListBatchesQuery {
        queue_name: Some(queue.to_string()),
        from: Some(from),
        size: Some(options.page_size),
        ..Default::default()
    };
    let mut requests = 0u32;
    let outcome = with_retries(&options.retry, deadline, || {
        requests = requests.saturating_add(1);
        client.list_batches(&query)
    })
    .await;
    match outcome {
        Ok(page) => Ok((page, requests)),
        Err(e) => Err((e, requests)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_ids_keep_their_bits_and_others_hash() {
        assert_eq!(
            id_key("03923a72-5ace-466a-a573-e8c7b08b8cf3"),
            0x03923a725ace466aa573e8c7b08b8cf3
        );
        assert_ne!(id_key("job-1"), id_key("job-2"));
        assert_eq!(id_key("job-1"), id_key("job-1"));
        let mut set = JobIdSet::default();
        assert!(set.insert("a"));
        assert!(!set.insert("a"));
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn layout_finds_holes_left_by_out_of_order_pages() {
        // 250 jobs, pages of 100. Page 200 answered before 7 inserts, page 100 after them.
        let mut l = Layout::new(250, 100);
        l.record(200, Some(250), 50);
        l.record(100, Some(257), 100);
        assert_eq!(l.holes(), vec![(193, 200)]);
        assert_eq!(l.shift(), 7);
        // Fetching at 193 + 7 = 200 with total 257 covers 193..293.
        l.record(200, Some(257), 57);
        assert!(l.holes().is_empty());
    }

    #[test]
    fn layout_without_changes_has_no_holes() {
        let mut l = Layout::new(250, 100);
        l.record(100, Some(250), 100);
        l.record(200, Some(250), 50);
        assert!(l.holes().is_empty());
        // An overstated total ends at the short page.
        let mut l = Layout::new(1000, 100);
        l.record(100, Some(1000), 100);
        l.record(200, Some(1000), 50);
        l.record(300, Some(1000), 0);
        assert!(l.holes().is_empty());
    }

    #[test]
    fn a_count_is_confirmed_only_by_consistent_totals_ending_on_the_last_page() {
        let mut l = Layout::new(300, 100);
        l.record(100, Some(300), 100);
        l.record(200, Some(300), 100);
        assert!(
            l.count_confirmed(),
            "300 jobs in 3 full pages: no probe needed"
        );
        let mut l = Layout::new(300, 100);
        l.record(200, Some(300), 100);
        l.record(100, Some(305), 100);
        assert!(!l.count_confirmed(), "the list grew: probe");
        let mut l = Layout::new(150, 100);
        l.record(100, Some(150), 100);
        assert!(!l.count_confirmed(), "more jobs than total: probe");
        let mut l = Layout::new(300, 100);
        l.record(100, None, 100);
        l.record(200, Some(300), 100);
        assert!(!l.count_confirmed(), "a page without total: probe");
    }
}
