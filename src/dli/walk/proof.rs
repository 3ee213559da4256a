//! What the pages of a walk prove (docs/architecture.md, "The page walk"): the list's end, the
//! links between neighbouring pages, and the closing check that shows the list did not shift
//! while the walk ran.
//!
//! It owns the decision "exact, repair, or inconsistent". It sends only the closing check and
//! the second look at a page past the end; repairs are `bridge`'s. It must not count a job twice:
//! every job goes through the walker's de-duplication.

use std::collections::HashSet;

use super::bridge::OpenLink;
use super::pass::{Walker, Window};
use super::{PageSource, WalkError};
use crate::dli::detect::Order;
use crate::dli::model::BatchJob;

pub(super) async fn prove<S: PageSource>(
    w: &mut Walker<'_, S>,
    sink: &mut impl FnMut(BatchJob),
) -> Result<(), WalkError> {
    let step = w.step;
    let Some(end) = w.main.values().find(|p| p.len < step).map(|p| p.offset) else {
        return Err(w.inconsistent("no short or empty page ended the list".to_string()));
    };

    // A page past the end that held jobs contradicts the end, unless the list moved while
    // the walk ran: it is empty on a second look (the list shrank), it holds only jobs already
    // seen (they shifted there), the end page's `total` counted the list as ending there, or the
    // end page, looked at again, holds more jobs (the list grew at that end). A server that cuts a page short in the middle of a
    // list that stands still does none of these.
    let (end_len, end_ids) = w
        .main
        .get(&end)
        .map_or((0, Vec::new()), |p| (p.len, p.ids.clone()));
    let newest_before_end = w.main.range(..=end).filter_map(|(_, p)| p.max_time).max();
    // The end page's own `total` counted the list as ending where it ended: jobs found past it
    // later arrived later.
    let end_counted = end > 0
        && w.main
            .get(&end)
            .is_some_and(|p| p.total.is_some() && p.total == i64::try_from(p.end()).ok());
    let beyond: Vec<(u64, usize, bool)> = w
        .main
        .range(end.saturating_add(1)..)
        .filter(|(_, p)| p.len > 0)
        .map(|(o, p)| (*o, p.len, p.anonymous))
        .collect();
    // Every id up to the end, built only if a page past the end held jobs (it is as large as
    // the queue).
    let mut before_end: Option<HashSet<u32>> = None;
    // The end page looked at again: (it holds more jobs, its jobs changed).
    let mut end_now: Option<(bool, bool)> = None;
    for (from, len, anonymous) in beyond {
        let again = w.fetch(from).await?;
        w.stats.checks = w.stats.checks.saturating_add(1);
        let again = w.window(from, &again)?;
        if again.len == 0 || end_counted {
            continue;
        }
        let before_end = before_end.get_or_insert_with(|| {
            w.main
                .range(..=end)
                .flat_map(|(_, p)| p.ids.iter().copied())
                .collect()
        });
        if !again.anonymous && !anonymous && again.ids.iter().all(|id| before_end.contains(id)) {
            continue;
        }
        let (longer, changed) = match end_now {
            Some(seen) => seen,
            None => {
                let page = w.fetch(end).await?;
                w.stats.checks = w.stats.checks.saturating_add(1);
                let now = w.window(end, &page)?;
                w.feed_numbered(page.sessions, &now.ids, sink);
                let seen = (now.len > end_len, now.ids != end_ids);
                end_now = Some(seen);
                seen
            }
        };
        // Jobs newer than all before the end, while the end page changed: they arrived.
        let arrived =
            changed && newest_before_end.is_some_and(|n| again.min_time.is_some_and(|t| t > n));
        if !(longer || arrived) {
            return Err(w.inconsistent(format!(
                "the page from={end} ended the list with {end_len} jobs (pages hold {step}), but the page from={from} held {len} jobs and still holds {}",
                again.len
            )));
        }
    }
    drop(before_end);
    let _stale = w.main.split_off(&end.saturating_add(1));

    let pages: Vec<&Window> = w.main.values().collect();
    let order = list_order(&pages);
    w.stats.order = Some(order);
    // The neighbours no shared job links, by their offsets (the windows themselves are copied
    // only if a repair needs them: on a list that stood still every pair is open).
    let mut open: Vec<(u64, u64)> = Vec::new();
    let mut all_adjacent = true;
    let mut anonymous = false;
    for pair in pages.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if !shares_a_job(a, b) {
            open.push((a.offset, b.offset));
            all_adjacent &= b.offset == a.end();
            anonymous |= a.anonymous || (b.len > 0 && b.anonymous);
        }
    }
    if open.is_empty() {
        // Every page shares a job with the next, and the last one is short: one chain.
        return Ok(());
    }
    let first = pages[0].clone();
    drop(pages);

    // The closing check: the first page again. Unchanged, on a list sorted by `create_time`,
    // nothing was submitted at its newest end nor removed at its oldest end, so no job moved
    // and pages that meet end to end miss nothing.
    let closing = w.fetch(0).await?;
    w.stats.checks = w.stats.checks.saturating_add(1);
    let again = w.window(0, &closing)?;
    w.feed_numbered(closing.sessions, &again.ids, sink);
    let same_front = again.ids == first.ids && again.len == first.len;
    // Sorted by age, new jobs arrive at one end and retention takes them from the other;
    // one of the ends is the front, and the closing check saw it unchanged. (A list whose
    // jobs all share one `create_time` cannot show its order, and is taken as sorted.)
    let sorted = order.is_sorted();
    if same_front && sorted && all_adjacent {
        return Ok(());
    }
    if anonymous {
        return Err(w.inconsistent(
            "the list changed during the walk and some jobs have no id, so pages cannot be matched"
                .to_string(),
        ));
    }
    let shift = front_shift(&first, &again);
    tracing::debug!(
        project_id = w.source.project_id(),
        queue = w.source.queue(),
        open = open.len(),
        shift,
        "the list moved during the walk; repairing the gaps between pages"
    );
    let mut links = Vec::with_capacity(open.len());
    for (left, right) in open {
        let (Some(l), Some(r)) = (w.main.get(&left), w.main.get(&right)) else {
            // (Cannot happen: both came from the pages above, which nothing has removed.)
            return Err(w.inconsistent(format!(
                "the pages from={left} and from={right} are no longer held for a repair"
            )));
        };
        links.push(OpenLink {
            left: l.clone(),
            right: (r.len > 0).then(|| r.clone()),
            right_offset: right,
        });
    }
    super::bridge::repair(w, links, shift, order, sink).await
}

/// The order of the whole list: each page's own, and across pages that meet end to end.
fn list_order(pages: &[&Window]) -> Order {
    let mut order = Order::Unknown;
    for (i, p) in pages.iter().enumerate() {
        order = order.combine(p.order);
        if let Some(next) = pages.get(i + 1)
            && next.offset == p.end()
        {
            order = order.combine(Order::of_times([p.last_time, next.first_time]));
        }
    }
    order
}

fn shares_a_job(a: &Window, b: &Window) -> bool {
    let ids: HashSet<u32> = a.ids.iter().copied().collect();
    b.ids.iter().any(|id| ids.contains(id))
}

/// How far the first page moved between the walk's first request and its closing check:
/// positive when jobs arrived in front of it, negative when jobs left from its front, 0 when
/// neither can be told.
fn front_shift(before: &Window, after: &Window) -> i64 {
    if let Some(head) = before.ids.first()
        && let Some(i) = after.ids.iter().position(|id| id == head)
    {
        return i64::try_from(i).unwrap_or(i64::MAX);
    }
    if let Some(head) = after.ids.first()
        && let Some(i) = before.ids.iter().position(|id| id == head)
    {
        return -i64::try_from(i).unwrap_or(i64::MAX);
    }
    0
}
