//! The walker's fetching: the first page, the concurrent pass over the offsets `total` names,
//! and the sequential pages that follow until a short or empty page ends the list.
//!
//! It owns the requests, the page count, `max_pages`, de-duplication and the per-page checks
//! (no more jobs than `size`, every full page brings new ids). What the pages prove, and any
//! repair, is `proof`'s and `bridge`'s; this file must not decide that a walk is exact, and
//! imports neither.

use std::collections::BTreeMap;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use super::numbering::Numbering;
use super::{PageSource, WalkError, WalkOptions, WalkStats, id_key};
use crate::dli::detect::Order;
use crate::dli::model::{BatchJob, BatchPage};
use crate::dli::progress::WalkProgress;

/// One answered page, reduced to what the proof needs: 4 bytes per job.
#[derive(Debug, Clone)]
pub(super) struct Window {
    pub offset: u64,
    pub len: usize,
    /// Numbers of its jobs in the order listed (jobs without an id are left out): equal
    /// numbers are equal ids ([`Numbering`]).
    pub ids: Vec<u32>,
    /// It held a job without an id, which cannot be matched across pages.
    pub anonymous: bool,
    pub first_time: Option<i64>,
    pub last_time: Option<i64>,
    pub min_time: Option<i64>,
    pub max_time: Option<i64>,
    /// The order of its own jobs.
    pub order: Order,
    pub total: Option<i64>,
}

impl Window {
    /// A page whose jobs with an id are numbered `ids`, in order.
    fn new(offset: u64, page: &BatchPage, ids: Vec<u32>) -> Window {
        let times = || page.sessions.iter().filter_map(|j| j.create_time);
        Window {
            offset,
            len: page.sessions.len(),
            ids,
            anonymous: page.sessions.iter().any(|j| j.id.is_none()),
            first_time: times().next(),
            last_time: page.sessions.iter().rev().find_map(|j| j.create_time),
            min_time: times().min(),
            max_time: times().max(),
            order: Order::of_jobs(&page.sessions),
            total: page.total,
        }
    }

    /// The offset just past its last job.
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.len as u64)
    }
}

pub(crate) struct Walker<'a, S> {
    pub(super) source: &'a S,
    pub(super) options: &'a WalkOptions,
    progress: &'a WalkProgress,
    pub(super) stats: WalkStats,
    /// Every distinct id met, numbered, and whether its job was handed to the sink.
    numbers: Numbering,
    /// The pages of the walk proper, by offset (checks and repairs are not in here).
    pub(super) main: BTreeMap<u64, Window>,
    /// Jobs per page, as the first page showed it.
    pub(super) step: usize,
    /// Page requests sent (retries not counted), checked against `max_pages`.
    scheduled: u32,
    /// The first page was empty: nothing to prove.
    pub(super) done: bool,
    /// The longest page any request of this walk got: the server returns at least this many
    /// jobs when that many are left, so a shorter page ended its list.
    pub(super) longest: usize,
}

impl<'a, S: PageSource> Walker<'a, S> {
    pub(crate) fn new(source: &'a S, options: &'a WalkOptions, progress: &'a WalkProgress) -> Self {
        Walker {
            source,
            options,
            progress,
            stats: WalkStats::default(),
            numbers: Numbering::default(),
            main: BTreeMap::new(),
            step: 0,
            scheduled: 0,
            done: false,
            longest: 0,
        }
    }

    pub(crate) fn into_stats(self) -> WalkStats {
        self.stats
    }

    /// Fetches the pages up to the end of the list; `proof::prove` then decides what they show.
    pub(crate) async fn fetch_pages(
        &mut self,
        sink: &mut impl FnMut(BatchJob),
    ) -> Result<(), WalkError> {
        let first = self.fetch(0).await?;
        self.step = first.sessions.len();
        let total = first.total.unwrap_or(0);
        let last_has_id = first.sessions.last().is_some_and(|j| j.id.is_some());
        self.take_main(0, first, sink)?;
        if self.step == 0 {
            self.stats.order = Some(Order::Unknown);
            self.done = true;
            return Ok(());
        }
        let step = self.step as u64;
        if total > self.step as i64 {
            // `total` says there is more: fetch the pages it names concurrently. The numbering
            // is the walk's one allocation that grows with the queue: size it once (growing
            // would briefly hold 1.5x), within what max_pages allows whatever `total` says.
            let limit = self.step.saturating_mul(self.options.max_pages as usize);
            self.numbers
                .reserve(usize::try_from(total).unwrap_or(usize::MAX).min(limit));
            let end = self.concurrent(total as u64, sink).await?;
            if end.is_none() {
                let from = self.main.values().next_back().map_or(step, Window::end);
                self.sequential(from, sink).await?;
            }
        } else if self.step >= 2 && self.step < self.options.page_size as usize && last_has_id {
            // Fewer jobs than asked for: the whole list, or a server that caps `size`. Ask
            // again from the first page's last job: a page of that one job ends the list *and*
            // links to the first page, so a small queue needs no closing check.
            self.sequential(step - 1, sink).await?;
        } else {
            self.sequential(step, sink).await?;
        }
        self.look_past_a_short_end(sink).await
    }

    /// The offsets `step, 2*step, …` below the largest `total` seen, at most
    /// `poll.concurrency` at once. Returns the offset of the first short or empty page.
    async fn concurrent(
        &mut self,
        total: u64,
        sink: &mut impl FnMut(BatchJob),
    ) -> Result<Option<u64>, WalkError> {
        let step = self.step as u64;
        let mut max_total = total;
        let mut next = step;
        let mut end: Option<u64> = None;
        let mut in_flight = FuturesUnordered::new();
        let source = self.source;
        loop {
            while in_flight.len() < self.options.concurrency.max(1)
                && next < max_total
                && end.is_none_or(|e| next < e)
            {
                self.count_scheduled()?;
                let from = next;
                in_flight.push(async move { (from, source.page(from).await) });
                next = next.saturating_add(step);
            }
            let Some((from, result)) = in_flight.next().await else {
                break;
            };
            let page = self.answered(from, result)?;
            if let Some(t) = page.total
                && t > 0
            {
                max_total = max_total.max(t as u64);
            }
            if page.sessions.len() < self.step {
                end = Some(end.map_or(from, |e| e.min(from)));
            }
            self.take_main(from, page, sink)?;
        }
        Ok(end)
    }

    /// A short page ends the list only if nothing follows it: the page after it is fetched
    /// once (the proof requires it to be empty, or explained by the list moving). So is the
    /// page after an empty one, unless `total` said the list ends there.
    async fn look_past_a_short_end(
        &mut self,
        sink: &mut impl FnMut(BatchJob),
    ) -> Result<(), WalkError> {
        let step = self.step;
        let Some(end) = self.main.values().find(|p| p.len < step) else {
            return Ok(());
        };
        let most = self
            .main
            .values()
            .filter_map(|p| p.total)
            .max()
            .unwrap_or(0);
        // Only a `total` that is not its own page's length can be a count of the whole list.
        let counts = self
            .main
            .values()
            .filter(|p| p.total != i64::try_from(p.len).ok())
            .filter_map(|p| p.total)
            .max();
        // An empty page ends the list when a `total` said the list ends exactly there and none
        // counted further.
        let confirmed = counts == Some(most) && u64::try_from(most).is_ok_and(|m| m == end.offset);
        let past = if end.len > 0 {
            end.end()
        } else if end.offset > 0 && !confirmed && step >= self.options.page_size as usize {
            // (After pages shorter than asked for, an empty page is the second sign of the end.)
            end.offset.saturating_add(step as u64)
        } else {
            return Ok(());
        };
        if self
            .main
            .range(end.offset.saturating_add(1)..)
            .next()
            .is_some()
        {
            // Pages past the end were fetched already (the concurrent pass had them in flight).
            return Ok(());
        }
        let result = {
            self.count_scheduled()?;
            self.source.page(past).await
        };
        let page = self.answered(past, result)?;
        let window = self.window(past, &page)?;
        self.feed_numbered(page.sessions, &window.ids, sink);
        self.main.insert(past, window);
        Ok(())
    }

    /// Pages one after another from `from`, each at the end of the one before, until a short
    /// or empty page.
    async fn sequential(
        &mut self,
        mut from: u64,
        sink: &mut impl FnMut(BatchJob),
    ) -> Result<(), WalkError> {
        loop {
            self.count_scheduled()?;
            let result = self.source.page(from).await;
            let page = self.answered(from, result)?;
            let n = page.sessions.len();
            self.take_main(from, page, sink)?;
            if n < self.step {
                return Ok(());
            }
            from = from.saturating_add(n as u64);
        }
    }

    /// A page of the walk proper: checked, recorded and fed to the sink.
    fn take_main(
        &mut self,
        from: u64,
        page: BatchPage,
        sink: &mut impl FnMut(BatchJob),
    ) -> Result<(), WalkError> {
        let window = self.window(from, &page)?;
        let fresh = self.feed_numbered(page.sessions, &window.ids, sink);
        // (The page at the first page's last job overlaps it by design and is exempt.)
        if from >= self.step as u64 && window.len >= self.step && window.len > 0 && fresh == 0 {
            return Err(self.inconsistent(format!(
                "the page from={from} repeats {} jobs already seen and brings none new (does the server ignore `from`?)",
                window.len
            )));
        }
        self.main.insert(from, window);
        Ok(())
    }

    /// The page at `offset` as the proof keeps it, its jobs' ids numbered.
    pub(super) fn window(&mut self, offset: u64, page: &BatchPage) -> Result<Window, WalkError> {
        let mut ids = Vec::with_capacity(page.sessions.iter().filter(|j| j.id.is_some()).count());
        for id in page.sessions.iter().filter_map(|j| j.id.as_deref()) {
            match self.numbers.number(id_key(id)) {
                Some(n) => ids.push(n),
                None => {
                    return Err(self.inconsistent(format!(
                        "more than {} distinct job ids in one walk",
                        u32::MAX - 1
                    )));
                }
            }
        }
        Ok(Window::new(offset, page, ids))
    }

    /// Hands the jobs of a page not handed before to the sink (`numbers`: those of its jobs
    /// with an id, in order, as [`Walker::window`] gave them); returns how many there were.
    /// Without an id a job cannot be matched across pages: it is counted as it comes.
    pub(super) fn feed_numbered(
        &mut self,
        jobs: Vec<BatchJob>,
        numbers: &[u32],
        sink: &mut impl FnMut(BatchJob),
    ) -> usize {
        let mut numbers = numbers.iter();
        let mut fresh = 0;
        for job in jobs {
            let new = match job.id {
                Some(_) => numbers.next().is_some_and(|n| self.numbers.feed(*n)),
                None => true,
            };
            if new {
                fresh += 1;
                self.stats.jobs = self.stats.jobs.saturating_add(1);
                sink(job);
            } else {
                self.stats.duplicates = self.stats.duplicates.saturating_add(1);
            }
        }
        fresh
    }

    /// One request of the walk, checks and repairs included; fails beyond `max_pages`.
    pub(super) fn count_scheduled(&mut self) -> Result<(), WalkError> {
        if self.scheduled >= self.options.max_pages {
            return Err(WalkError::TooManyPages {
                project_id: self.source.project_id().to_string(),
                queue: self.source.queue().to_string(),
                max_pages: self.options.max_pages,
                page_size: self.options.page_size as usize,
            });
        }
        self.scheduled = self.scheduled.saturating_add(1);
        Ok(())
    }

    /// The page at `from`, counted.
    pub(super) async fn fetch(&mut self, from: u64) -> Result<BatchPage, WalkError> {
        self.count_scheduled()?;
        let result = self.source.page(from).await;
        self.answered(from, result)
    }

    /// Books one answer: requests, the page count, and the `size` bound.
    pub(super) fn answered(
        &mut self,
        from: u64,
        result: Result<(BatchPage, u32), (crate::dli::DliError, u32)>,
    ) -> Result<BatchPage, WalkError> {
        match result {
            Ok((page, requests)) => {
                self.stats.requests = self.stats.requests.saturating_add(requests);
                self.stats.pages = self.stats.pages.saturating_add(1);
                self.progress.set(self.stats.pages);
                self.longest = self.longest.max(page.sessions.len());
                let asked = self.options.page_size as usize;
                if page.sessions.len() > asked {
                    return Err(self.inconsistent(format!(
                        "the page from={from} holds {} jobs, more than the {asked} asked for (poll.page_size)",
                        page.sessions.len()
                    )));
                }
                Ok(page)
            }
            Err((source, requests)) => {
                self.stats.requests = self.stats.requests.saturating_add(requests);
                Err(WalkError::Page {
                    project_id: self.source.project_id().to_string(),
                    queue: self.source.queue().to_string(),
                    from,
                    pages: self.stats.pages,
                    source: Box::new(source),
                })
            }
        }
    }

    pub(super) fn inconsistent(&self, detail: String) -> WalkError {
        WalkError::Inconsistent {
            project_id: self.source.project_id().to_string(),
            queue: self.source.queue().to_string(),
            pages: self.stats.pages,
            detail,
        }
    }
}
