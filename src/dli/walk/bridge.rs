//! Repairs of a walk whose list moved (docs/architecture.md, "The page walk"): for each pair of
//! neighbouring pages that no shared job links, pages fetched around the boundary until one
//! chain of overlapping pages holds a job of the left page and a job of the right one, or runs
//! from the left page to the end of the list.
//!
//! It owns the search for a boundary (where to ask next, by the measured shift and by
//! `create_time`) and its bounds. It must not accept a boundary on anything but shared job ids
//! or a short page, and must not count a job twice (the walker de-duplicates).

use std::collections::HashSet;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use super::pass::{Walker, Window};
use super::{PageSource, WalkError};
use crate::dli::detect::Order;
use crate::dli::model::BatchJob;

/// A boundary between two neighbouring pages that no shared job links.
#[derive(Debug, Clone)]
pub(super) struct OpenLink {
    pub left: Window,
    /// `None` when the right side is the empty page that ended the list.
    pub right: Option<Window>,
    /// Where the right page started.
    pub right_offset: u64,
}

/// Pages one boundary may fetch before the walk gives up on it.
const MAX_STEPS: u32 = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// A chain of pages links the left page to the right one.
    Linked,
    /// A chain of pages runs from the left page to a short page: the list ends there.
    End,
    Failed(String),
}

struct Bridge {
    link: OpenLink,
    left: HashSet<u32>,
    right: HashSet<u32>,
    /// Ids of the last page of the chain that started at the left page.
    chain: HashSet<u32>,
    /// Ids of a page found to hold jobs of the right page but none of the left.
    ahead: HashSet<u32>,
    at: u64,
    steps: u32,
    outcome: Option<Outcome>,
}

impl Bridge {
    fn new(link: OpenLink, shift: i64) -> Bridge {
        let last = link.left.end().saturating_sub(1);
        // Jobs that arrived in front only push the boundary further; jobs that left from the
        // front pull it back by at most the shift: start where it can be earliest.
        let at = if shift < 0 {
            last.saturating_sub(shift.unsigned_abs())
        } else {
            last
        };
        Bridge {
            left: link.left.ids.iter().copied().collect(),
            right: link
                .right
                .as_ref()
                .map(|r| r.ids.iter().copied().collect())
                .unwrap_or_default(),
            chain: HashSet::new(),
            ahead: HashSet::new(),
            link,
            at,
            steps: 0,
            outcome: None,
        }
    }

    /// Takes one answered page; decides, or moves `at`. `full`: the longest page the walk got
    /// (a page shorter than that ended the list when it was answered).
    fn take(&mut self, page: &Window, step: usize, full: usize, order: Order) {
        let step_back = (step.saturating_sub(1)).max(1) as u64;
        let has = |set: &HashSet<u32>| page.ids.iter().any(|id| set.contains(id));
        let left = has(&self.left) || has(&self.chain);
        let right = has(&self.right);
        self.steps = self.steps.saturating_add(1);
        if left {
            if right || (!self.ahead.is_empty() && has(&self.ahead)) {
                self.outcome = Some(Outcome::Linked);
            } else if page.len < full {
                self.outcome = Some(Outcome::End);
            } else {
                self.chain = page.ids.iter().copied().collect();
                self.at = page.end().saturating_sub(1).max(self.at.saturating_add(1));
            }
        } else if right {
            // Past the boundary: come back, remembering this page to link to.
            self.ahead = page.ids.iter().copied().collect();
            if self.at == 0 {
                self.outcome = Some(Outcome::Failed(self.lost()));
            }
            self.at = self.at.saturating_sub(step_back);
        } else if page.len == 0 {
            if self.at == 0 {
                // The list is empty now: no job stayed from the first request to the last.
                self.outcome = Some(Outcome::End);
            }
            self.at = self.at.saturating_sub(step_back);
        } else {
            let anchor = self.link.left.last_time;
            let (lo, hi) = (page.min_time, page.max_time);
            let forward = match (order, anchor, lo, hi) {
                (Order::Desc, Some(a), Some(lo), _) if lo > a => Some(true),
                (Order::Desc, Some(a), _, Some(hi)) if hi < a => Some(false),
                (Order::Asc, Some(a), _, Some(hi)) if hi < a => Some(true),
                (Order::Asc, Some(a), Some(lo), _) if lo > a => Some(false),
                _ => None,
            };
            match forward {
                Some(true) => self.at = page.end(),
                Some(false) if self.at > 0 => self.at = self.at.saturating_sub(step_back),
                _ => self.outcome = Some(Outcome::Failed(self.lost())),
            }
        }
        if self.outcome.is_none() && self.steps >= MAX_STEPS {
            self.outcome = Some(Outcome::Failed(self.lost()));
        }
    }

    fn lost(&self) -> String {
        format!(
            "the list moved during the walk and the jobs between the pages from={} and from={} could not be found again",
            self.link.left.offset, self.link.right_offset
        )
    }
}

/// Repairs every open link; the walk is exact when each one links, or when the first one that
/// does not link reaches the end of the list.
pub(super) async fn repair<S: PageSource>(
    w: &mut Walker<'_, S>,
    open: Vec<OpenLink>,
    shift: i64,
    order: Order,
    sink: &mut impl FnMut(BatchJob),
) -> Result<(), WalkError> {
    let step = w.step;
    let mut bridges: Vec<Bridge> = open.into_iter().map(|l| Bridge::new(l, shift)).collect();
    let source = w.source;
    let mut in_flight = FuturesUnordered::new();
    let mut busy = vec![false; bridges.len()];
    loop {
        for (i, b) in bridges.iter().enumerate() {
            if in_flight.len() >= w.options.concurrency.max(1) {
                break;
            }
            if b.outcome.is_none() && !busy[i] {
                w.count_scheduled()?;
                busy[i] = true;
                let at = b.at;
                in_flight.push(async move { (i, at, source.page(at).await) });
            }
        }
        let Some((i, at, result)) = in_flight.next().await else {
            break;
        };
        busy[i] = false;
        let page = w.answered(at, result)?;
        w.stats.checks = w.stats.checks.saturating_add(1);
        let window = w.window(at, &page)?;
        if window.anonymous {
            return Err(w.inconsistent(
                "the list changed during the walk and some jobs have no id, so pages cannot be matched"
                    .to_string(),
            ));
        }
        w.feed_numbered(page.sessions, &window.ids, sink);
        let full = w.longest.max(step);
        if let Some(b) = bridges.get_mut(i) {
            b.take(&window, step, full, order);
        }
    }
    for b in &bridges {
        match &b.outcome {
            Some(Outcome::Linked) => continue,
            Some(Outcome::End) => return Ok(()),
            Some(Outcome::Failed(why)) => return Err(w.inconsistent(why.clone())),
            None => return Err(w.inconsistent(b.lost())),
        }
    }
    Ok(())
}
