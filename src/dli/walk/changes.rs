//! The requests of an incremental poll (docs/architecture.md, "Incremental polls"): the newest
//! jobs (newest-first pages until a whole page holds only known jobs), the jobs in one state
//! (`state` filter, to the end of that list), single jobs by id (`job-id`), and the one-page
//! checks that tell whether a server honours `state` and `job-id`.
//!
//! It owns those requests (retries, `max_pages`, the page count) and the checks that each
//! answer is what was asked for: newest-first pages sorted and starting at the newest known job,
//! a state listing holding only that state, a `job-id` answer holding that job only. Anything
//! else fails the poll as `inconsistent`. It keeps no job and must not decide what changed: the
//! caller owns the job table and judges what the answers mean for it.

use std::collections::HashSet;
use std::time::Instant;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use super::source::WALK_ORDER;
use super::{WalkError, WalkOptions, id_key};
use crate::dli::client::DliClient;
use crate::dli::detect::Order;
use crate::dli::error::{DliError, FailureReason};
use crate::dli::model::{BatchJob, BatchPage, ListBatchesQuery};
use crate::dli::progress::WalkProgress;
use crate::dli::retry::with_retries;

/// `size` of a `job-id` request: two, so that a server ignoring the filter shows it.
const LOOKUP_SIZE: u32 = 2;

/// The requests of one incremental poll of one queue, counted together.
pub struct ChangeLister<'a> {
    client: &'a DliClient,
    queue: &'a str,
    options: &'a WalkOptions,
    deadline: Instant,
    progress: &'a WalkProgress,
    /// Requests that got an answer (`dli_poll_pages`).
    pub pages: u32,
    /// Requests sent, retries included.
    pub requests: u32,
    /// Requests scheduled (retries not counted), checked against `max_pages`.
    scheduled: u32,
}

impl<'a> ChangeLister<'a> {
    pub fn new(
        client: &'a DliClient,
        queue: &'a str,
        options: &'a WalkOptions,
        deadline: Instant,
        progress: &'a WalkProgress,
    ) -> Self {
        ChangeLister {
            client,
            queue,
            options,
            deadline,
            progress,
            pages: 0,
            requests: 0,
            scheduled: 0,
        }
    }

    /// An `inconsistent` failure of this poll.
    pub fn inconsistent(&self, detail: String) -> WalkError {
        WalkError::Inconsistent {
            project_id: self.client.project_id().to_string(),
            queue: self.queue.to_string(),
            pages: self.pages,
            detail,
        }
    }

    fn query(&self, from: u64, size: u32) -> ListBatchesQuery {
        ListBatchesQuery::page(self.queue, from, size)
    }

    fn schedule(&mut self) -> Result<(), WalkError> {
        if self.scheduled >= self.options.max_pages {
            return Err(WalkError::TooManyPages {
                project_id: self.client.project_id().to_string(),
                queue: self.queue.to_string(),
                max_pages: self.options.max_pages,
                page_size: self.options.page_size as usize,
            });
        }
        self.scheduled = self.scheduled.saturating_add(1);
        Ok(())
    }

    /// One request with retries, booked.
    async fn send(&mut self, query: &ListBatchesQuery) -> Result<BatchPage, WalkError> {
        self.schedule()?;
        let outcome = fetch(self.client, query, self.options, self.deadline).await;
        self.book(query, outcome)
    }

    fn book(
        &mut self,
        query: &ListBatchesQuery,
        outcome: (Result<BatchPage, DliError>, u32),
    ) -> Result<BatchPage, WalkError> {
        let (result, requests) = outcome;
        self.requests = self.requests.saturating_add(requests);
        match result {
            Ok(page) => {
                self.pages = self.pages.saturating_add(1);
                self.progress.set(self.pages);
                Ok(page)
            }
            Err(e) => Err(WalkError::Page {
                project_id: self.client.project_id().to_string(),
                queue: self.queue.to_string(),
                from: query.from.unwrap_or(0),
                pages: self.pages,
                source: Box::new(e),
            }),
        }
    }

    /// Newest-first pages (`order=CREATE_TIME_DESC`) from the front of the list until a whole
    /// page holds only jobs `known` (the overlap catches a boundary that moved while the pages
    /// were read), or the list ends. Every distinct job goes to `sink`. `newest_known`: the
    /// newest `create_time` known; a first page that cannot show its order and starts with an
    /// older job is not newest-first.
    ///
    /// Returns whether a page came back as full as asked (so the server does not cap `size`
    /// below `poll.page_size`, and a shorter page ends its list).
    pub async fn newest(
        &mut self,
        known: impl Fn(u128) -> bool,
        newest_known: Option<i64>,
        sink: &mut impl FnMut(BatchJob),
    ) -> Result<bool, WalkError> {
        if self.client.order_rejected() {
            return Err(self.inconsistent(format!(
                "the server refused order={WALK_ORDER}; incremental polls need newest-first pages"
            )));
        }
        let size = self.options.page_size;
        let mut seen: HashSet<u128> = HashSet::new();
        let mut full_seen = false;
        let mut previous_last: Option<i64> = None;
        let mut from = 0u64;
        loop {
            let mut query = self.query(from, size);
            query.order = Some(WALK_ORDER.to_string());
            let page = self.send(&query).await?;
            let n = page.sessions.len();
            full_seen |= n >= size as usize;
            let order = Order::of_jobs(&page.sessions);
            let first = page.sessions.iter().find_map(|j| j.create_time);
            let last = page.sessions.iter().rev().find_map(|j| j.create_time);
            let linked = match (previous_last, first) {
                (Some(p), Some(f)) => f <= p,
                _ => true,
            };
            if matches!(order, Order::Asc | Order::Unordered) || !linked {
                return Err(self.inconsistent(format!(
                    "the page from={from} asked with order={WALK_ORDER} is not newest first"
                )));
            }
            // A page that cannot show its order (one `create_time`) must at least start at the
            // newest known job. (A sorted page starting with an older one only means that the
            // newest known job was deleted.)
            if from == 0
                && order == Order::Unknown
                && let (Some(newest), Some(f)) = (newest_known, first)
                && f < newest
            {
                return Err(self.inconsistent(format!(
                    "the first page asked with order={WALK_ORDER} starts with a job older than the newest known one"
                )));
            }
            previous_last = last.or(previous_last);
            let mut all_known = true;
            let mut fresh = 0usize;
            for job in page.sessions {
                let Some(key) = job.id.as_deref().map(id_key) else {
                    return Err(self
                        .inconsistent(format!("the page from={from} holds a job without an id")));
                };
                all_known &= known(key);
                if seen.insert(key) {
                    fresh += 1;
                    sink(job);
                }
            }
            if n == 0 || all_known || (n < size as usize && full_seen) {
                return Ok(full_seen);
            }
            if fresh == 0 {
                return Err(self.inconsistent(format!(
                    "the page from={from} repeats {n} jobs already seen and brings none new (does the server ignore `from`?)"
                )));
            }
            from = from.saturating_add(n as u64);
        }
    }

    /// Every job in `state` (`state` filter), page after page until an empty page, or a page
    /// shorter than asked for when `short_ends` (the server does not cap `size`). Every job of
    /// the answers must be in `state`; each distinct one goes to `sink`.
    ///
    /// No proof of exactness is attempted here: a filtered list loses jobs from its middle
    /// whenever one changes state, so a job missing from it is looked up by id instead.
    pub async fn in_state(
        &mut self,
        state: &str,
        short_ends: bool,
        sink: &mut impl FnMut(BatchJob),
    ) -> Result<(), WalkError> {
        let size = self.options.page_size;
        let mut seen: HashSet<u128> = HashSet::new();
        let mut from = 0u64;
        loop {
            let mut query = self.query(from, size);
            query.state = Some(state.to_string());
            let page = self.send(&query).await?;
            let n = page.sessions.len();
            let mut fresh = 0usize;
            for job in page.sessions {
                if job.state.as_deref() != Some(state) {
                    return Err(self.inconsistent(format!(
                        "the page from={from} asked with state={state} holds a job in state {:?} (does the server ignore `state`?)",
                        job.state.as_deref().unwrap_or("")
                    )));
                }
                let Some(key) = job.id.as_deref().map(id_key) else {
                    return Err(self.inconsistent(format!(
                        "the page from={from} asked with state={state} holds a job without an id"
                    )));
                };
                if seen.insert(key) {
                    fresh += 1;
                    sink(job);
                }
            }
            if n == 0 || (n < size as usize && short_ends) {
                return Ok(());
            }
            if fresh == 0 {
                return Err(self.inconsistent(format!(
                    "the page from={from} asked with state={state} brings no new job (does the server ignore `from`?)"
                )));
            }
            from = from.saturating_add(n as u64);
        }
    }

    /// Each job of `ids` by `job-id`, at most `poll.concurrency` at once: `None` when the list
    /// no longer holds it. An answer with another job, or more than one, is inconsistent.
    pub async fn lookup(
        &mut self,
        ids: &[String],
    ) -> Result<Vec<(String, Option<BatchJob>)>, WalkError> {
        let mut out = Vec::with_capacity(ids.len());
        let mut next = ids.iter();
        let mut in_flight = FuturesUnordered::new();
        let (client, options, deadline) = (self.client, self.options, self.deadline);
        loop {
            while in_flight.len() < options.concurrency.max(1) {
                let Some(id) = next.next() else { break };
                self.schedule()?;
                let mut query = self.query(0, LOOKUP_SIZE);
                query.job_id = Some(id.clone());
                in_flight.push(async move {
                    let outcome = fetch(client, &query, options, deadline).await;
                    (id, query, outcome)
                });
            }
            let Some((id, query, outcome)) = in_flight.next().await else {
                break;
            };
            let mut page = self.book(&query, outcome)?;
            let job = match page.sessions.len() {
                0 => None,
                1 if page.sessions[0].id.as_deref() == Some(id.as_str()) => page.sessions.pop(),
                n => {
                    return Err(self.inconsistent(format!(
                        "job-id={id} answered {n} jobs, not that one job (does the server ignore `job-id`?)"
                    )));
                }
            };
            out.push((id.clone(), job));
        }
        Ok(out)
    }

    /// One page of `page_size` jobs in `state`, for the check of the `state` filter; `None`
    /// when the server refused the parameter with a plain 4xx.
    pub async fn probe_state(&mut self, state: &str) -> Result<Option<Vec<BatchJob>>, WalkError> {
        let mut query = self.query(0, self.options.page_size);
        query.state = Some(state.to_string());
        self.probe(&query).await
    }

    /// The answer to `job-id=id`, for the check of the `job-id` filter; `None` when the
    /// server refused the parameter with a plain 4xx.
    pub async fn probe_job_id(&mut self, id: &str) -> Result<Option<Vec<BatchJob>>, WalkError> {
        let mut query = self.query(0, LOOKUP_SIZE);
        query.job_id = Some(id.to_string());
        self.probe(&query).await
    }

    async fn probe(
        &mut self,
        query: &ListBatchesQuery,
    ) -> Result<Option<Vec<BatchJob>>, WalkError> {
        match self.send(query).await {
            Ok(page) => Ok(Some(page.sessions)),
            Err(e)
                if e.request_error()
                    .is_some_and(|e| e.reason() == FailureReason::Http4xx) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// One ListBatches request with retries, and the requests it took.
async fn fetch(
    client: &DliClient,
    query: &ListBatchesQuery,
    options: &WalkOptions,
    deadline: Instant,
) -> (Result<BatchPage, DliError>, u32) {
    let mut requests = 0u32;
    let result = with_retries(&options.retry, deadline, || {
        requests = requests.saturating_add(1);
        client.list_batches(query)
    })
    .await;
    (result, requests)
}
