//! The page walker (docs/architecture.md, "The page walk"): every page of one queue, published
//! only when the pages prove that every job present from the walk's first request to its last
//! was counted exactly once; otherwise the walk fails as `inconsistent`.
//!
//! It owns the walk order, the stop rules, `max_pages`, de-duplication by job id, the proof of
//! exactness (`proof`) and the repair of gaps (`bridge`). It hands each distinct job to a sink as
//! pages arrive and keeps no job itself, only ids. It must not publish anything: a failed walk
//! returns its error and the caller throws away what the sink built.

mod bridge;
mod changes;
mod numbering;
mod pass;
mod proof;
mod source;
#[cfg(test)]
mod tests;

use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Instant;

use super::client::DliClient;
use super::detect::Order;
use super::error::DliError;
use super::model::BatchJob;
use super::progress::WalkProgress;
pub use super::retry::RetryPolicy;
pub use changes::ChangeLister;
use source::ClientSource;
pub(crate) use source::PageSource;

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
    /// Page requests that got an answer, the final empty one and the checks included.
    pub pages: u32,
    /// Distinct jobs handed to the sink.
    pub jobs: u64,
    /// Jobs seen again on a later page (pages shift while jobs are submitted) and skipped.
    pub duplicates: u64,
    /// Requests sent, retries included.
    pub requests: u32,
    /// Requests beyond the pages themselves: the closing check of the first page and the
    /// pages fetched to repair gaps.
    pub checks: u32,
    /// The order of the list by `create_time`, as its pages showed it.
    pub order: Option<Order>,
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
        source: Box<DliError>,
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

/// A compact key for a job id: the UUID's own 128 bits when it is one in canonical form
/// (lowercase, dashes at 8, 13, 18 and 23), else two independent 64-bit SipHashes of the text.
/// Only one spelling of a UUID maps to its bits, so two different id strings never share a key
/// (up to a 128-bit hash collision).
pub fn id_key(id: &str) -> u128 {
    let b = id.as_bytes();
    if b.len() == 36 {
        let mut v: u128 = 0;
        let mut canonical = true;
        for (i, c) in b.iter().enumerate() {
            let dash = matches!(i, 8 | 13 | 18 | 23);
            let digit = match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                _ => None,
            };
            match (dash, *c == b'-', digit) {
                (true, true, _) => {}
                (false, _, Some(d)) => v = (v << 4) | u128::from(d),
                _ => {
                    canonical = false;
                    break;
                }
            }
        }
        if canonical {
            return v;
        }
    }
    let mut a = DefaultHasher::new();
    id.hash(&mut a);
    let mut h = DefaultHasher::new();
    (0x9e37_79b9_7f4a_7c15_u64, id).hash(&mut h);
    (u128::from(a.finish()) << 64) | u128::from(h.finish())
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
    let source = ClientSource::new(client, queue, options, deadline);
    walk_source(&source, options, progress, sink).await
}

/// The walk over any [`PageSource`]: the client's, or a model of a server in tests.
pub(crate) async fn walk_source<S: PageSource>(
    source: &S,
    options: &WalkOptions,
    progress: &WalkProgress,
    sink: &mut impl FnMut(BatchJob),
) -> Result<WalkStats, WalkError> {
    let mut walker = pass::Walker::new(source, options, progress);
    walker.fetch_pages(sink).await?;
    if !walker.done {
        proof::prove(&mut walker, sink).await?;
    }
    Ok(walker.into_stats())
}

#[cfg(test)]
mod id_tests {
    use super::*;

    #[test]
    fn uuid_ids_keep_their_bits_and_others_hash() {
        assert_eq!(
            id_key("03923a72-5ace-466a-a573-e8c7b08b8cf3"),
            0x03923a725ace466aa573e8c7b08b8cf3
        );
        assert_ne!(id_key("job-1"), id_key("job-2"));
        // Other spellings of the same UUID are other ids.
        for other in [
            "03923A72-5ACE-466A-A573-E8C7B08B8CF3",
            "03923a725ace466aa573e8c7b08b8cf3",
            "03923a72-5ace-466a-a573e-8c7b08b8cf3",
        ] {
            assert_ne!(id_key(other), 0x03923a725ace466aa573e8c7b08b8cf3, "{other}");
        }
        assert_eq!(id_key("job-1"), id_key("job-1"));
    }
}
