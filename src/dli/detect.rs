//! What a ListBatches server does, read from the pages it returned: the order of its list, what
//! its `total` means, and whether it caps `size` (docs/architecture.md, "The page walk").
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
}
