//! How the simulator lists one queue's jobs for a ListBatches request: the per-queue
//! [`QueueBehaviour`] (the order the list is served in, which query parameters are honoured,
//! ignored or rejected, a cap on `size`, what `total` means, whether `from` is read) and the page
//! window cut from the list under it.
//!
//! It owns selecting and ordering jobs; it must not answer HTTP (that is `server.rs`) or decide
//! faults (`faults.rs`, whose per-request page faults it applies last).

use std::sync::Arc;

use super::jobs::SimJob;
use super::{Inner, QueueJobs, TotalMode, lock};

/// The order a queue's list is served in when the request has no (honoured) `order`.
///
/// Jobs are stored newest first by convention ([`super::Simulator::set_jobs`],
/// [`super::Simulator::insert_front`]): `NewestFirst` serves them as stored, `OldestFirst` from the
/// stored end to the front (new jobs then appear at the end of the list, and
/// [`super::Fault::RemoveOldest`] removes from its front).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ListOrder {
    #[default]
    NewestFirst,
    OldestFirst,
}

/// What the server does with one query parameter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ParamHandling {
    /// It does what the API reference says.
    #[default]
    Honour,
    /// It is accepted and has no effect.
    Ignore,
    /// Its presence is refused: 400 `DLI.0001` "Parameter check failed".
    Reject,
}

/// How the simulator serves one project × queue (see [`super::Simulator::set_behaviour`]); the
/// default is a server that honours everything and serves newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueBehaviour {
    pub list_order: ListOrder,
    /// `order=CREATE_TIME_DESC|CREATE_TIME_ASC|DURATION_DESC|DURATION_ASC`.
    pub order_param: ParamHandling,
    /// `state`.
    pub state_filter: ParamHandling,
    /// `start` and `end`, compared with each job's `create_time` (the API reference calls them
    /// "start time"; the simulator reads that as creation time).
    pub time_filter: ParamHandling,
    /// `job-id` (and the older `job_id`).
    pub job_id_filter: ParamHandling,
    /// At most this many jobs per page, whatever `size` asks (on top of
    /// [`super::SimConfig::max_page_size`]; the smaller wins).
    pub max_page_size: Option<usize>,
    /// What `total` means for this queue; `None`: [`super::SimConfig::total_mode`].
    pub total_mode: Option<TotalMode>,
    /// Every page is served from offset 0, whatever `from` says (`from` is still echoed back).
    pub ignore_from: bool,
}

impl QueueBehaviour {
    /// The query parameter this queue refuses, if the request carries one.
    pub(crate) fn rejected(&self, has: impl Fn(&str) -> bool) -> Option<&'static str> {
        let checks: [(ParamHandling, &[&'static str]); 4] = [
            (self.order_param, &["order"]),
            (self.state_filter, &["state"]),
            (self.time_filter, &["start", "end"]),
            (self.job_id_filter, &["job-id", "job_id"]),
        ];
        checks
            .into_iter()
            .filter(|(h, _)| *h == ParamHandling::Reject)
            .flat_map(|(_, names)| names.iter().copied())
            .find(|name| has(name))
    }
}

/// The filters and window of one ListBatches request, as sent.
#[derive(Debug, Default)]
pub(crate) struct PageQuery<'a> {
    pub(crate) queue: Option<&'a str>,
    pub(crate) state: Option<&'a str>,
    pub(crate) job_name: Option<&'a str>,
    pub(crate) job_id: Option<&'a str>,
    pub(crate) owner: Option<&'a str>,
    pub(crate) start: Option<i64>,
    pub(crate) end: Option<i64>,
    pub(crate) order: Option<&'a str>,
    pub(crate) from: usize,
    pub(crate) size: usize,
}

impl PageQuery<'_> {
    /// This query as `behaviour` reads it: ignored parameters dropped, `from` and `size` as served.
    fn as_served(&self, behaviour: &QueueBehaviour, config_cap: Option<usize>) -> PageQuery<'_> {
        let honoured = |h: ParamHandling| h == ParamHandling::Honour;
        let cap = match (config_cap, behaviour.max_page_size) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        PageQuery {
            queue: self.queue,
            state: self.state.filter(|_| honoured(behaviour.state_filter)),
            job_name: self.job_name,
            job_id: self.job_id.filter(|_| honoured(behaviour.job_id_filter)),
            owner: self.owner,
            start: self.start.filter(|_| honoured(behaviour.time_filter)),
            end: self.end.filter(|_| honoured(behaviour.time_filter)),
            order: self.order.filter(|_| honoured(behaviour.order_param)),
            from: if behaviour.ignore_from { 0 } else { self.from },
            size: cap.map_or(self.size, |c| self.size.min(c)),
        }
    }

    fn has_job_filters(&self) -> bool {
        self.state.is_some()
            || self.job_name.is_some()
            || self.job_id.is_some()
            || self.owner.is_some()
            || self.start.is_some()
            || self.end.is_some()
    }

    fn keeps(&self, j: &SimJob) -> bool {
        self.state.is_none_or(|s| j.state.eq_ignore_ascii_case(s))
            && self
                .job_name
                .is_none_or(|n| j.name.as_deref().is_some_and(|name| name.contains(n)))
            && self.job_id.is_none_or(|id| j.id == id)
            && self.owner.is_none_or(|o| j.owner.as_deref() == Some(o))
            && self.start.is_none_or(|s| j.create_time >= s)
            && self.end.is_none_or(|e| j.create_time <= e)
    }
}

/// Per-request page faults, applied after the window is cut.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PageFaults {
    /// Serve at most this many of the page's jobs ([`super::Fault::ShortPage`]).
    pub(crate) short: Option<usize>,
    /// Serve this many jobs more than `size` asked for ([`super::Fault::ExtraJobs`]).
    pub(crate) extra: usize,
}

/// One page as served.
pub(crate) struct Page {
    pub(crate) jobs: Vec<Arc<SimJob>>,
    /// Jobs matching the (honoured) filters, all pages together.
    pub(crate) matching: usize,
    /// What `total` means for this queue.
    pub(crate) total_mode: TotalMode,
}

impl Page {
    /// The `total` this page carries.
    pub(crate) fn total(&self) -> Option<i64> {
        match self.total_mode {
            TotalMode::Full => Some(i64::try_from(self.matching).unwrap_or(i64::MAX)),
            TotalMode::PageLength => Some(i64::try_from(self.jobs.len()).unwrap_or(i64::MAX)),
            TotalMode::Fixed(n) => Some(n),
            TotalMode::Absent => None,
        }
    }
}

/// What `order` sorts by.
type SortKey = fn(&SimJob) -> i64;

/// The behaviour of `project_id`'s `queue` (the default one for requests without a queue).
pub(crate) fn behaviour_of(inner: &Inner, project_id: &str, queue: Option<&str>) -> QueueBehaviour {
    let Some(queue) = queue else {
        return QueueBehaviour::default();
    };
    lock(&inner.behaviours)
        .get(&(project_id.to_string(), queue.to_string()))
        .cloned()
        .unwrap_or_default()
}

/// The page `q` asks for, as `behaviour` serves it, taken under the lock; the jobs themselves
/// are shared, not copied.
pub(crate) fn select_page(
    inner: &Inner,
    project_id: &str,
    q: &PageQuery<'_>,
    behaviour: &QueueBehaviour,
    faults: PageFaults,
) -> Page {
    let q = q.as_served(behaviour, inner.config.max_page_size);
    let total_mode = behaviour.total_mode.unwrap_or(inner.config.total_mode);
    // Oversized pages: as many more as asked, taken from the list (padded if it ends).
    let want = q.size.saturating_add(faults.extra);
    let (mut jobs, matching) = {
        let projects = lock(&inner.projects);
        match projects.get(project_id) {
            None => (Vec::new(), 0),
            Some(project) => {
                let queues: Vec<&QueueJobs> = match q.queue {
                    Some(name) => project.get(name).into_iter().collect(),
                    None => project.values().collect(),
                };
                window(&queues, &q, behaviour.list_order, want)
            }
        }
    };
    if faults.extra > 0 {
        let base = jobs.last().map_or(0, |j| j.create_time);
        let mut i = 0usize;
        while jobs.len() < want {
            let id = format!("extra-{}-{i}", q.from);
            jobs.push(Arc::new(SimJob::new(id, "running", None, base)));
            i += 1;
        }
    }
    if let Some(n) = faults.short {
        jobs.truncate(n);
    }
    Page {
        jobs,
        matching,
        total_mode,
    }
}

/// Up to `want` jobs from offset `q.from` of the list the queues make in `list_order` (or in
/// the order `q.order` asks for), and the number of jobs matching the filters.
fn window(
    queues: &[&QueueJobs],
    q: &PageQuery<'_>,
    list_order: ListOrder,
    want: usize,
) -> (Vec<Arc<SimJob>>, usize) {
    let order = q.order.map(str::to_ascii_uppercase);
    let sort_key: Option<(SortKey, bool)> = match order.as_deref() {
        Some("CREATE_TIME_DESC") => Some((|j| j.create_time, true)),
        Some("CREATE_TIME_ASC") => Some((|j| j.create_time, false)),
        Some("DURATION_DESC") => Some((|j| j.duration, true)),
        Some("DURATION_ASC") => Some((|j| j.duration, false)),
        _ => None,
    };
    let newest_first = list_order == ListOrder::NewestFirst;
    // `order` by creation time in the direction the list is already served in: no sort needed
    // when the stored jobs are in creation order (they usually are), so a walk of a big queue
    // does not sort it once per page.
    let sort_key = match (order.as_deref(), q.has_job_filters(), queues) {
        (Some(o @ ("CREATE_TIME_DESC" | "CREATE_TIME_ASC")), false, [jobs])
            if (o == "CREATE_TIME_DESC") == newest_first
                && jobs
                    .iter()
                    .zip(jobs.iter().skip(1))
                    .all(|(a, b)| a.create_time >= b.create_time) =>
        {
            None
        }
        _ => sort_key,
    };
    let served = |queues: &[&QueueJobs]| -> Vec<Arc<SimJob>> {
        let all = queues.iter().flat_map(|jobs| jobs.iter());
        let mut list: Vec<Arc<SimJob>> = all.filter(|j| q.keeps(j)).cloned().collect();
        if !newest_first {
            list.reverse();
        }
        list
    };
    if let Some((key, desc)) = sort_key {
        let mut matching = served(queues);
        // Stable: equal keys keep the list's own order.
        matching.sort_by(|a, b| {
            let o = key(a).cmp(&key(b));
            if desc { o.reverse() } else { o }
        });
        let total = matching.len();
        return (
            matching.into_iter().skip(q.from).take(want).collect(),
            total,
        );
    }
    if q.has_job_filters() || (!newest_first && queues.len() != 1) {
        let matching = served(queues);
        let total = matching.len();
        return (
            matching.into_iter().skip(q.from).take(want).collect(),
            total,
        );
    }
    let total: usize = queues.iter().map(|jobs| jobs.len()).sum();
    let mut page = Vec::with_capacity(want.min(total.saturating_sub(q.from)));
    if !newest_first {
        // One queue served back to front: index straight in.
        if let Some(jobs) = queues.first() {
            let stop = jobs.len().saturating_sub(q.from);
            let start = stop.saturating_sub(want);
            page.extend(jobs.range(start..stop).rev().cloned());
        }
        return (page, total);
    }
    // Index straight into the queues: no walk over the jobs before `from`.
    let mut skip = q.from;
    for jobs in queues {
        if page.len() >= want {
            break;
        }
        if skip >= jobs.len() {
            skip -= jobs.len();
            continue;
        }
        let end = jobs.len().min(skip.saturating_add(want - page.len()));
        page.extend(jobs.range(skip..end).cloned());
        skip = 0;
    }
    (page, total)
}

/// Removes `n` jobs from the oldest end of a queue (the stored end: jobs are stored newest
/// first), as retention does while a walk runs ([`super::Fault::RemoveOldest`]).
pub(crate) fn remove_oldest(inner: &Inner, project_id: &str, queue: Option<&str>, n: usize) {
    let mut projects = lock(&inner.projects);
    let Some(project) = projects.get_mut(project_id) else {
        return;
    };
    let name = queue
        .map(str::to_string)
        .or_else(|| project.keys().next().cloned());
    if let Some(jobs) = name.and_then(|name| project.get_mut(&name)) {
        let keep = jobs.len().saturating_sub(n);
        jobs.truncate(keep);
    }
}
