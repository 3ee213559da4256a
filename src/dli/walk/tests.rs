//! The walk against a model of a ListBatches server, under paused time: random lists, page
//! sizes, caps, `total` meanings, orders, latencies that reorder pages, and inserts and removals
//! at random moments. The property is the walk invariant of docs/architecture.md: a published
//! walk counts every job present from its first request to its last exactly once, and nothing
//! that was never in the list; the cases that must fail do.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use proptest::prelude::*;

use super::{PageSource, RetryPolicy, WalkError, WalkOptions, walk_source};
use crate::dli::error::DliError;
use crate::dli::model::{BatchJob, BatchPage};
use crate::dli::progress::WalkProgress;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Total {
    Full,
    Page,
    Fixed(i64),
    Absent,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Change {
    /// New jobs at the newest end.
    Insert(usize),
    /// Retention: jobs leave from the oldest end.
    Remove(usize),
}

#[derive(Debug, Clone)]
struct Server {
    jobs: usize,
    newest_first: bool,
    total: Total,
    cap: Option<usize>,
    /// Milliseconds before each request (by arrival) is answered, cycled.
    latency: Vec<u64>,
    /// Changes applied at these milliseconds after the walk started.
    changes: Vec<(u64, Change)>,
    ignore_from: bool,
    /// A page at this offset is cut to this many jobs, whatever follows.
    short_at: Option<(u64, usize)>,
    /// The page at this offset holds one job more than asked.
    oversized_at: Option<u64>,
    /// Every job appears twice in a row (ids repeated across pages).
    repeats: bool,
}

impl Server {
    fn plain(jobs: usize) -> Server {
        Server {
            jobs,
            newest_first: true,
            total: Total::Full,
            cap: None,
            latency: vec![10],
            changes: Vec::new(),
            ignore_from: false,
            short_at: None,
            oversized_at: None,
            repeats: false,
        }
    }
}

struct State {
    /// Newest first: (id, create_time).
    list: Vec<(String, i64)>,
    next: u64,
    requests: usize,
    applied: usize,
    initial: HashSet<String>,
    ever: HashSet<String>,
    removed: HashSet<String>,
}

struct Model {
    server: Server,
    page_size: usize,
    start: tokio::time::Instant,
    state: Mutex<State>,
}

impl Model {
    fn new(server: Server, page_size: usize) -> Model {
        let list: Vec<(String, i64)> = (0..server.jobs)
            .rev()
            .map(|i| (format!("job-{i}"), 1_000 + i as i64))
            .collect();
        let initial: HashSet<String> = list.iter().map(|(id, _)| id.clone()).collect();
        Model {
            page_size,
            start: tokio::time::Instant::now(),
            state: Mutex::new(State {
                next: server.jobs as u64,
                list,
                requests: 0,
                applied: 0,
                ever: initial.clone(),
                initial,
                removed: HashSet::new(),
            }),
            server,
        }
    }

    fn answer(&self, from: u64) -> BatchPage {
        let now = self.start.elapsed().as_millis() as u64;
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(&(at, change)) = self.server.changes.get(st.applied) {
            if at > now {
                break;
            }
            st.applied += 1;
            match change {
                Change::Insert(n) => {
                    for _ in 0..n {
                        let id = format!("job-{}", st.next);
                        let t = 1_000 + st.next as i64;
                        st.next += 1;
                        st.ever.insert(id.clone());
                        st.list.insert(0, (id, t));
                    }
                }
                Change::Remove(n) => {
                    for _ in 0..n {
                        if let Some((id, _)) = st.list.pop() {
                            st.removed.insert(id);
                        }
                    }
                }
            }
        }
        let mut view: Vec<(String, i64)> = st.list.clone();
        if !self.server.newest_first {
            view.reverse();
        }
        if self.server.repeats {
            view = view.into_iter().flat_map(|j| [j.clone(), j]).collect();
        }
        let start = if self.server.ignore_from {
            0
        } else {
            from as usize
        };
        let size = self
            .server
            .cap
            .map_or(self.page_size, |c| c.min(self.page_size));
        let mut page: Vec<(String, i64)> = view.iter().skip(start).take(size).cloned().collect();
        if let Some((o, n)) = self.server.short_at
            && o == from
        {
            page.truncate(n);
        }
        if self.server.oversized_at == Some(from) {
            page.push(("extra".to_string(), 1));
        }
        let total = match self.server.total {
            Total::Full => Some(view.len() as i64),
            Total::Page => Some(page.len() as i64),
            Total::Fixed(t) => Some(t),
            Total::Absent => None,
        };
        BatchPage {
            from: Some(from as i64),
            total,
            sessions: page
                .into_iter()
                .map(|(id, t)| BatchJob::new(&id, "running", None, Some(t)))
                .collect(),
            ..Default::default()
        }
    }
}

impl PageSource for Model {
    async fn page(&self, from: u64) -> Result<(BatchPage, u32), (DliError, u32)> {
        let n = {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            st.requests += 1;
            st.requests - 1
        };
        let lat = self.server.latency[n % self.server.latency.len()];
        tokio::time::sleep(Duration::from_millis(lat)).await;
        Ok((self.answer(from), 1))
    }

    fn project_id(&self) -> &str {
        "p"
    }

    fn queue(&self) -> &str {
        "q"
    }
}

struct Outcome {
    result: Result<super::WalkStats, WalkError>,
    counted: Vec<String>,
    /// Present from the first request to the last.
    stable: HashSet<String>,
    ever: HashSet<String>,
    requests: usize,
}

fn run(server: Server, page_size: usize, concurrency: usize) -> Outcome {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    rt.block_on(async move {
        let model = Model::new(server, page_size);
        let options = WalkOptions {
            page_size: page_size as u32,
            max_pages: 10_000,
            concurrency,
            retry: RetryPolicy::new(0),
        };
        let mut counted = Vec::new();
        let progress = WalkProgress::default();
        let result = walk_source(&model, &options, &progress, &mut |job: BatchJob| {
            counted.push(job.id.unwrap_or_default())
        })
        .await;
        let st = model.state.lock().unwrap_or_else(|e| e.into_inner());
        Outcome {
            result,
            counted,
            stable: st.initial.difference(&st.removed).cloned().collect(),
            ever: st.ever.clone(),
            requests: st.requests,
        }
    })
}

/// The invariant: exactly once, nothing invented, every stable job present.
fn assert_exact(o: &Outcome, what: &str) {
    let mut once = HashSet::new();
    for id in &o.counted {
        assert!(once.insert(id.clone()), "{what}: {id} counted twice");
        assert!(o.ever.contains(id), "{what}: {id} was never in the list");
    }
    let missing: Vec<&String> = o.stable.iter().filter(|id| !once.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{what}: {} jobs present throughout were not counted, e.g. {:?}",
        missing.len(),
        missing.iter().take(3).collect::<Vec<_>>()
    );
}

fn assert_inconsistent(o: &Outcome, what: &str) {
    match &o.result {
        Err(WalkError::Inconsistent { .. }) => {}
        Err(e) => panic!("{what}: expected inconsistent, got {e}"),
        Ok(s) => panic!("{what}: published {} jobs ({s:?})", o.counted.len()),
    }
}

fn total_strategy() -> impl Strategy<Value = Total> {
    prop_oneof![
        Just(Total::Full),
        Just(Total::Page),
        Just(Total::Absent),
        (0i64..400).prop_map(Total::Fixed),
    ]
}

fn change_strategy() -> impl Strategy<Value = Change> {
    prop_oneof![
        (1usize..6).prop_map(Change::Insert),
        (1usize..6).prop_map(Change::Remove),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// A list that does not change is published, exactly, whatever the server's `total`,
    /// order, cap, repeats and latencies.
    #[test]
    fn a_still_list_is_published_exactly(
        jobs in 0usize..260,
        page_size in 1usize..60,
        cap in proptest::option::of(1usize..40),
        newest_first: bool,
        repeats: bool,
        total in total_strategy(),
        latency in proptest::collection::vec(1u64..50, 1..8),
        concurrency in 1usize..9,
    ) {
        // With one job a page, a page of a repeated job is a page without new ids.
        let repeats = repeats && page_size.min(cap.unwrap_or(page_size)) >= 2;
        let server = Server { newest_first, total, cap, latency, repeats, ..Server::plain(jobs) };
        let o = run(server, page_size, concurrency);
        if let Err(e) = &o.result { panic!("a still list must publish: {e}"); }
        assert_exact(&o, "still list");
        prop_assert_eq!(o.counted.len(), jobs);
    }

    /// Inserts at the newest end and removals at the oldest end at random moments, pages
    /// answered out of order: whatever is published is exact.
    #[test]
    fn a_moving_list_is_exact_or_refused(
        jobs in 0usize..200,
        page_size in 2usize..50,
        cap in proptest::option::of(2usize..40),
        newest_first: bool,
        total in total_strategy(),
        latency in proptest::collection::vec(1u64..60, 1..8),
        concurrency in 1usize..9,
        changes in proptest::collection::vec((0u64..400, change_strategy()), 0..8),
    ) {
        let mut changes = changes;
        changes.sort_by_key(|c| c.0);
        let server = Server { newest_first, total, cap, latency, changes, ..Server::plain(jobs) };
        let o = run(server, page_size, concurrency);
        if o.result.is_ok() {
            assert_exact(&o, "moving list");
        }
    }

    /// Few changes (fewer than a page) while the walk runs: the walk repairs and publishes.
    #[test]
    fn a_list_that_moves_less_than_a_page_is_published(
        jobs in 2usize..200,
        page_size in 8usize..50,
        newest_first: bool,
        total in prop_oneof![Just(Total::Full), Just(Total::Page)],
        latency in proptest::collection::vec(1u64..60, 1..8),
        concurrency in 1usize..9,
        inserts in 0usize..3,
        removals in 0usize..3,
        at in (0u64..200, 0u64..200),
    ) {
        let mut changes = vec![(at.0, Change::Insert(inserts)), (at.1, Change::Remove(removals))];
        changes.sort_by_key(|c| c.0);
        let server = Server { newest_first, total, latency, changes, ..Server::plain(jobs) };
        let o = run(server, page_size, concurrency);
        if let Err(e) = &o.result { panic!("must publish: {e}"); }
        assert_exact(&o, "small moves");
    }

    /// A server that ignores `from` never gets a walk published once the list is longer than
    /// a page.
    #[test]
    fn ignoring_from_is_refused(
        page_size in 2usize..50,
        extra in 1usize..200,
        total in total_strategy(),
        concurrency in 1usize..9,
    ) {
        let server = Server { ignore_from: true, total, ..Server::plain(page_size + extra) };
        let o = run(server, page_size, concurrency);
        assert_inconsistent(&o, "ignores from");
    }

    /// A short or empty page with more jobs after it, and a page larger than asked, are
    /// refused.
    #[test]
    fn a_short_page_in_the_middle_or_an_oversized_page_is_refused(
        pages in 3usize..8,
        page_size in 2usize..30,
        cut in 0usize..100,
        at_page in 1usize..3,
        total in total_strategy(),
        concurrency in 1usize..9,
        oversized: bool,
    ) {
        // The cut page is followed by at least one full page.
        let at_page = at_page.min(pages - 2);
        let jobs = pages * page_size;
        let offset = (at_page * page_size) as u64;
        // A `total` that names exactly where the cut page ends is believed (docs/architecture.md,
        // "What it still takes on trust").
        prop_assume!(oversized || total != Total::Fixed(offset as i64 + (cut % page_size) as i64));
        let server = if oversized {
            Server { oversized_at: Some(offset), total, ..Server::plain(jobs) }
        } else {
            Server { short_at: Some((offset, cut % page_size)), total, ..Server::plain(jobs) }
        };
        let o = run(server, page_size, concurrency);
        assert_inconsistent(&o, "short or oversized page");
    }
}

#[test]
fn the_review_cases() {
    // Jobs inserted at the front while the oldest expire, pages answered out of order, `total`
    // unchanged: published exactly.
    let server = Server {
        latency: vec![5, 80, 40, 5],
        changes: vec![(20, Change::Insert(5)), (20, Change::Remove(5))],
        ..Server::plain(300)
    };
    let o = run(server, 100, 4);
    assert!(o.result.is_ok(), "{:?}", o.result.err());
    assert_exact(&o, "insert + expire, out of order");

    // Oldest first, the oldest expiring mid-walk.
    let server = Server {
        newest_first: false,
        latency: vec![5, 30, 30, 30],
        changes: vec![(15, Change::Remove(7))],
        ..Server::plain(300)
    };
    let o = run(server, 100, 1);
    assert!(o.result.is_ok(), "{:?}", o.result.err());
    assert_exact(&o, "oldest first, expiring");

    // A constant, wrong `total` hides nothing.
    for fixed in [250, 200, 50, 100] {
        let server = Server {
            total: Total::Fixed(fixed),
            ..Server::plain(300)
        };
        let o = run(server, 100, 4);
        assert!(o.result.is_ok(), "{:?}", o.result.err());
        assert_eq!(o.counted.len(), 300, "total {fixed}");
    }
}

#[test]
fn nothing_changing_costs_at_most_two_requests_beyond_the_pages() {
    for (jobs, cap, total) in [
        (0, None, Total::Full),
        (1, None, Total::Full),
        (5, None, Total::Page),
        (250, None, Total::Full),
        (300, None, Total::Full),
        (300, None, Total::Page),
        (299, Some(30), Total::Full),
        (1000, None, Total::Absent),
        (100_000, None, Total::Full),
    ] {
        let server = Server {
            cap,
            total,
            ..Server::plain(jobs)
        };
        // The pages a plain walk reads: up to the first short or empty one.
        let step = cap.unwrap_or(100).min(100);
        let pages = jobs / step + 1;
        let o = run(server, 100, 8);
        assert!(o.result.is_ok(), "{jobs}: {:?}", o.result.err());
        assert_eq!(o.counted.len(), jobs);
        assert!(
            o.requests <= pages + 2,
            "{jobs} jobs, {step} a page: {} requests for {pages} pages",
            o.requests
        );
    }
}

#[test]
fn out_of_order_pages_at_concurrency_eight_take_little_longer_than_one_round() {
    // 64 pages at 8 in flight, 100 ms each: 8 rounds of latency is the bound.
    let server = Server {
        latency: vec![100],
        ..Server::plain(6_400)
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let elapsed = rt.block_on(async move {
        let model = Model::new(server, 100);
        let options = WalkOptions {
            page_size: 100,
            max_pages: 1_000,
            concurrency: 8,
            retry: RetryPolicy::new(0),
        };
        let started = tokio::time::Instant::now();
        let r = walk_source(&model, &options, &WalkProgress::default(), &mut |_| {}).await;
        assert!(r.is_ok(), "{:?}", r.err());
        started.elapsed()
    });
    // 1 first page + 63 in 8 rounds + the empty page + the closing check, in virtual time.
    let bound = Duration::from_millis(100 * (1 + 8 + 1 + 1));
    assert!(elapsed <= bound, "{elapsed:?} > {bound:?}");
}
