//! What a ListBatches server does, read from the pages it returned: the order of its list, what
//! its `total` means, whether it caps `size`, and whether it honours the `order`, `state` and
//! `start`/`end` parameters (docs/architecture.md, "The page walk" and "--probe").
//!
//! These are pure functions over page contents, shared by the walker (which picks its proof from
//! them at run time) and by `--probe` (which reports them). Nothing here sends a request or keeps
//! state between walks.

use super::model::BatchJob;

/// The order of a list by `create_time`, as far as the jobs seen tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Newest first (`create_time` never increases along the list).
    Desc,
    /// Oldest first (`create_time` never decreases along the list).
    Asc,
    /// Both directions occur.
    Unordered,
    /// Fewer than two distinct `create_time`s: any order fits.
    Unknown,
}

impl Order {
    /// The order of a sequence of `create_time`s (jobs without one are skipped).
    pub fn of_times(times: impl IntoIterator<Item = Option<i64>>) -> Order {
        let mut prev: Option<i64> = None;
        let (mut up, mut down) = (false, false);
        for t in times.into_iter().flatten() {
            if let Some(p) = prev {
                up |= t > p;
                down |= t < p;
            }
            prev = Some(t);
        }
        match (up, down) {
            (false, false) => Order::Unknown,
            (false, true) => Order::Desc,
            (true, false) => Order::Asc,
            (true, true) => Order::Unordered,
        }
    }

    /// The order of the jobs of one page, in the order the server listed them.
    pub fn of_jobs(jobs: &[BatchJob]) -> Order {
        Order::of_times(jobs.iter().map(|j| j.create_time))
    }

    /// The order of two lists one after the other, when each has its own.
    pub fn combine(self, other: Order) -> Order {
        match (self, other) {
            (Order::Unknown, o) | (o, Order::Unknown) => o,
            (a, b) if a == b => a,
            _ => Order::Unordered,
        }
    }

    /// The word `--probe` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            Order::Desc => "create_time_desc",
            Order::Asc => "create_time_asc",
            Order::Unordered => "unordered",
            Order::Unknown => "unknown",
        }
    }

    /// True when the list is sorted by `create_time` one way or the other (or cannot tell).
    pub fn is_sorted(self) -> bool {
        self != Order::Unordered
    }
}

/// What `total` means on this server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TotalMeaning {
    /// The number of jobs in the whole list (Livy's meaning).
    Full,
    /// The number of jobs on this page.
    Page,
    /// Neither could be told apart (one short page, or `total` missing or inconsistent).
    Unknown,
}

impl TotalMeaning {
    /// What a page's `total` says, given how many jobs the whole list held (`jobs`, when the
    /// walk counted them) and how many this page held.
    pub fn of_page(total: Option<i64>, page_len: usize, jobs: Option<u64>) -> TotalMeaning {
        let Some(total) = total else {
            return TotalMeaning::Unknown;
        };
        let len = i64::try_from(page_len).unwrap_or(i64::MAX);
        let all = jobs.and_then(|j| i64::try_from(j).ok());
        match all {
            // Whole list on one page: both readings agree.
            Some(all) if all == len => TotalMeaning::Unknown,
            Some(all) if total == all => TotalMeaning::Full,
            _ if total == len => TotalMeaning::Page,
            None if total > len => TotalMeaning::Full,
            _ => TotalMeaning::Unknown,
        }
    }

    /// Several pages' readings together: one meaning when they agree, else unknown.
    pub fn combine(self, other: TotalMeaning) -> TotalMeaning {
        match (self, other) {
            (TotalMeaning::Unknown, o) | (o, TotalMeaning::Unknown) => o,
            (a, b) if a == b => a,
            _ => TotalMeaning::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TotalMeaning::Full => "full",
            TotalMeaning::Page => "page",
            TotalMeaning::Unknown => "unknown",
        }
    }
}

/// What the server's page lengths say about a cap on `size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeCap {
    /// It returned as many jobs as asked for.
    None,
    /// It returned at most this many when asked for more, with more jobs left.
    Capped(usize),
    /// No page was asked for fewer jobs than were left, so nothing tells.
    Unknown,
}

impl SizeCap {
    /// From one page: `asked` jobs requested, `returned` received, and whether more jobs
    /// followed it in the list (a later page had jobs).
    pub fn of_page(asked: u32, returned: usize, more_followed: bool) -> SizeCap {
        let asked = usize::try_from(asked).unwrap_or(usize::MAX);
        if returned >= asked {
            SizeCap::None
        } else if more_followed {
            SizeCap::Capped(returned)
        } else {
            SizeCap::Unknown
        }
    }

    /// Several pages together: a cap is the largest capped length; any full page means no cap
    /// at or below the size asked for.
    pub fn combine(self, other: SizeCap) -> SizeCap {
        match (self, other) {
            (SizeCap::Unknown, o) | (o, SizeCap::Unknown) => o,
            (SizeCap::None, _) | (_, SizeCap::None) => SizeCap::None,
            (SizeCap::Capped(a), SizeCap::Capped(b)) => SizeCap::Capped(a.max(b)),
        }
    }

    /// `none`, `unknown` or the number.
    pub fn label(self) -> String {
        match self {
            SizeCap::None => "none".to_string(),
            SizeCap::Capped(n) => n.to_string(),
            SizeCap::Unknown => "unknown".to_string(),
        }
    }
}

impl SizeCap {
    /// Pages asked with different sizes together, a cap winning: the largest capped length seen
    /// at any size, else `None` when some page was full, else unknown. (Unlike
    /// [`SizeCap::combine`], a full page of a smaller size does not hide a cap seen with a larger
    /// one.)
    pub fn largest_cap(self, other: SizeCap) -> SizeCap {
        match (self, other) {
            (SizeCap::Capped(a), SizeCap::Capped(b)) => SizeCap::Capped(a.max(b)),
            (SizeCap::Capped(a), _) | (_, SizeCap::Capped(a)) => SizeCap::Capped(a),
            (SizeCap::None, _) | (_, SizeCap::None) => SizeCap::None,
            _ => SizeCap::Unknown,
        }
    }
}

/// What a server does with a query parameter, as its answers tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamSupport {
    /// The answer is what the parameter asks for.
    Honoured,
    /// The answer is what it would be without the parameter.
    Ignored,
    /// The request was refused with a 4xx.
    Rejected,
    /// The jobs seen cannot tell (too few, or too alike).
    Unknown,
}

impl ParamSupport {
    pub fn as_str(self) -> &'static str {
        match self {
            ParamSupport::Honoured => "honoured",
            ParamSupport::Ignored => "ignored",
            ParamSupport::Rejected => "rejected",
            ParamSupport::Unknown => "unknown",
        }
    }
}

/// The first `create_time` of a page, in the order served.
fn first_time(jobs: &[BatchJob]) -> Option<i64> {
    jobs.iter().find_map(|j| j.create_time)
}

/// Whether `order` is honoured, from the first page asked with `order=CREATE_TIME_DESC` and the
/// first page asked with `order=CREATE_TIME_ASC` (`None`: that request was refused with a 4xx).
/// `extremes`: the newest and oldest `create_time` of the whole list, when all of it was seen;
/// a server that sorts each page but not the list then reads as ignoring `order`.
pub fn order_param_support(
    desc: Option<&[BatchJob]>,
    asc: Option<&[BatchJob]>,
    extremes: Option<(i64, i64)>,
) -> ParamSupport {
    let (Some(desc), Some(asc)) = (desc, asc) else {
        return ParamSupport::Rejected;
    };
    let (d, a) = (Order::of_jobs(desc), Order::of_jobs(asc));
    if matches!(d, Order::Asc | Order::Unordered) || matches!(a, Order::Desc | Order::Unordered) {
        return ParamSupport::Ignored;
    }
    if (d, a) != (Order::Desc, Order::Asc) {
        return ParamSupport::Unknown;
    }
    match extremes {
        Some((newest, oldest))
            if first_time(desc) != Some(newest) || first_time(asc) != Some(oldest) =>
        {
            ParamSupport::Ignored
        }
        _ => ParamSupport::Honoured,
    }
}

/// Whether the `state` filter is honoured, from the answer to `state=asked` (`None`: refused
/// with a 4xx). `in_state` and `others`: jobs of the list in that state and in any other.
pub fn state_filter_support(
    asked: &str,
    answer: Option<&[BatchJob]>,
    in_state: usize,
    others: usize,
) -> ParamSupport {
    let Some(answer) = answer else {
        return ParamSupport::Rejected;
    };
    if in_state == 0 || others == 0 {
        return ParamSupport::Unknown;
    }
    if answer.iter().any(|j| j.state.as_deref() != Some(asked)) {
        ParamSupport::Ignored
    } else if answer.is_empty() {
        ParamSupport::Unknown
    } else {
        ParamSupport::Honoured
    }
}

/// What `start`/`end` filter on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeFilter {
    /// Jobs created in the window (`create_time`).
    CreateTime,
    Ignored,
    Rejected,
    /// Too few jobs, or an answer that fits neither `create_time` nor no filter at all.
    Unknown,
}

impl TimeFilter {
    pub fn as_str(self) -> &'static str {
        match self {
            TimeFilter::CreateTime => "create_time",
            TimeFilter::Ignored => "ignored",
            TimeFilter::Rejected => "rejected",
            TimeFilter::Unknown => "unknown",
        }
    }
}

/// What `start=window.0&end=window.1` (unix ms) filtered on, from its answer (`None`: refused
/// with a 4xx). `inside`/`outside`: jobs of the list created inside and outside the window;
/// `unfiltered_len`: the length of the same page without the filter.
pub fn time_filter_support(
    window: (i64, i64),
    answer: Option<&[BatchJob]>,
    inside: usize,
    outside: usize,
    unfiltered_len: usize,
) -> TimeFilter {
    let Some(answer) = answer else {
        return TimeFilter::Rejected;
    };
    if inside == 0 || outside == 0 {
        return TimeFilter::Unknown;
    }
    let in_window = |j: &BatchJob| {
        j.create_time
            .is_some_and(|t| t >= window.0 && t <= window.1)
    };
    if !answer.is_empty() && answer.iter().all(in_window) {
        TimeFilter::CreateTime
    } else if answer.iter().any(|j| !in_window(j)) && answer.len() >= unfiltered_len {
        TimeFilter::Ignored
    } else {
        TimeFilter::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_of_create_times() {
        assert_eq!(
            Order::of_times([Some(3), Some(2), Some(2), Some(1)]),
            Order::Desc
        );
        assert_eq!(Order::of_times([Some(1), None, Some(2)]), Order::Asc);
        assert_eq!(
            Order::of_times([Some(1), Some(3), Some(2)]),
            Order::Unordered
        );
        assert_eq!(Order::of_times([Some(5), Some(5)]), Order::Unknown);
        assert_eq!(Order::of_times([]), Order::Unknown);
        assert_eq!(Order::Desc.combine(Order::Unknown), Order::Desc);
        assert_eq!(Order::Desc.combine(Order::Asc), Order::Unordered);
    }

    #[test]
    fn total_meanings() {
        assert_eq!(
            TotalMeaning::of_page(Some(300), 100, None),
            TotalMeaning::Full
        );
        assert_eq!(
            TotalMeaning::of_page(Some(100), 100, Some(300)),
            TotalMeaning::Page
        );
        assert_eq!(
            TotalMeaning::of_page(Some(300), 100, Some(300)),
            TotalMeaning::Full
        );
        assert_eq!(
            TotalMeaning::of_page(Some(40), 40, Some(40)),
            TotalMeaning::Unknown
        );
        assert_eq!(
            TotalMeaning::of_page(Some(77), 100, Some(300)),
            TotalMeaning::Unknown
        );
        assert_eq!(
            TotalMeaning::of_page(None, 100, Some(300)),
            TotalMeaning::Unknown
        );
        assert_eq!(
            TotalMeaning::Full.combine(TotalMeaning::Page),
            TotalMeaning::Unknown
        );
    }

    #[test]
    fn size_caps() {
        assert_eq!(SizeCap::of_page(100, 100, true), SizeCap::None);
        assert_eq!(SizeCap::of_page(100, 50, true), SizeCap::Capped(50));
        assert_eq!(SizeCap::of_page(100, 50, false), SizeCap::Unknown);
        assert_eq!(
            SizeCap::Capped(50).combine(SizeCap::Capped(40)),
            SizeCap::Capped(50)
        );
        assert_eq!(SizeCap::Capped(50).combine(SizeCap::None), SizeCap::None);
        assert_eq!(SizeCap::Unknown.label(), "unknown");
    }

    fn jobs(times: &[(i64, &str)]) -> Vec<BatchJob> {
        times
            .iter()
            .enumerate()
            .map(|(i, (t, state))| BatchJob::new(&format!("j{i}"), state, None, Some(*t)))
            .collect()
    }

    #[test]
    fn largest_cap_prefers_a_cap_seen_at_any_size() {
        assert_eq!(
            SizeCap::None.largest_cap(SizeCap::Capped(200)),
            SizeCap::Capped(200)
        );
        assert_eq!(
            SizeCap::Capped(50).largest_cap(SizeCap::Capped(40)),
            SizeCap::Capped(50)
        );
        assert_eq!(SizeCap::Unknown.largest_cap(SizeCap::None), SizeCap::None);
        assert_eq!(
            SizeCap::Unknown.largest_cap(SizeCap::Unknown),
            SizeCap::Unknown
        );
    }

    #[test]
    fn order_param_from_the_desc_and_asc_pages() {
        let desc = jobs(&[(3, "a"), (2, "a"), (1, "a")]);
        let asc = jobs(&[(1, "a"), (2, "a"), (3, "a")]);
        let (d, a) = (Some(&desc[..]), Some(&asc[..]));
        assert_eq!(order_param_support(d, a, None), ParamSupport::Honoured);
        assert_eq!(
            order_param_support(d, a, Some((3, 1))),
            ParamSupport::Honoured
        );
        // Sorted pages that do not start at the list's ends: each page sorted, not the list.
        assert_eq!(
            order_param_support(d, a, Some((9, 1))),
            ParamSupport::Ignored
        );
        assert_eq!(order_param_support(d, d, None), ParamSupport::Ignored);
        assert_eq!(order_param_support(a, a, None), ParamSupport::Ignored);
        assert_eq!(order_param_support(None, a, None), ParamSupport::Rejected);
        let same = jobs(&[(5, "a"), (5, "a")]);
        assert_eq!(
            order_param_support(Some(&same[..]), Some(&same[..]), None),
            ParamSupport::Unknown
        );
        assert_eq!(ParamSupport::Honoured.as_str(), "honoured");
    }

    #[test]
    fn state_filter_from_its_answer() {
        let running = jobs(&[(1, "running"), (2, "running")]);
        let mixed = jobs(&[(1, "running"), (2, "success")]);
        assert_eq!(
            state_filter_support("running", Some(&running[..]), 2, 3),
            ParamSupport::Honoured
        );
        assert_eq!(
            state_filter_support("running", Some(&mixed[..]), 2, 3),
            ParamSupport::Ignored
        );
        assert_eq!(
            state_filter_support("running", None, 2, 3),
            ParamSupport::Rejected
        );
        assert_eq!(
            state_filter_support("running", Some(&running[..]), 2, 0),
            ParamSupport::Unknown,
            "every job in that state"
        );
        assert_eq!(
            state_filter_support("running", Some(&[]), 2, 3),
            ParamSupport::Unknown
        );
    }

    #[test]
    fn time_filter_from_its_answer() {
        let inside = jobs(&[(20, "a"), (15, "a")]);
        let all = jobs(&[(30, "a"), (20, "a"), (10, "a")]);
        let w = (12, 25);
        assert_eq!(
            time_filter_support(w, Some(&inside[..]), 2, 2, 3),
            TimeFilter::CreateTime
        );
        assert_eq!(
            time_filter_support(w, Some(&all[..]), 2, 2, 3),
            TimeFilter::Ignored
        );
        assert_eq!(
            time_filter_support(w, Some(&all[..2]), 2, 2, 3),
            TimeFilter::Unknown,
            "filtered, but not on create_time"
        );
        assert_eq!(time_filter_support(w, None, 2, 2, 3), TimeFilter::Rejected);
        assert_eq!(
            time_filter_support(w, Some(&inside[..]), 2, 0, 3),
            TimeFilter::Unknown
        );
        assert_eq!(TimeFilter::CreateTime.as_str(), "create_time");
    }
}
