//! [`PageSource`]: where the walker gets a page from. The client's source sends ListBatches
//! with retries and asks for newest-first order; tests put a model of a server behind the same
//! trait.
//!
//! It owns the request of one page (query, retries, the `order` parameter and its fallback). It
//! must not judge pages: that is the walker's.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::WalkOptions;
use crate::dli::client::DliClient;
use crate::dli::error::{DliError, FailureReason};
use crate::dli::model::{BatchPage, ListBatchesQuery};
use crate::dli::retry::with_retries;

/// The order the walker asks for; the server may ignore it (the walk stays exact either way).
pub const WALK_ORDER: &str = "CREATE_TIME_DESC";

/// One page at an offset, retried as the source sees fit.
pub(crate) trait PageSource: Sync {
    /// The page at `from`, and the number of requests it took (also on failure).
    fn page(
        &self,
        from: u64,
    ) -> impl Future<Output = Result<(BatchPage, u32), (DliError, u32)>> + Send;
    fn project_id(&self) -> &str;
    fn queue(&self) -> &str;
}

/// ListBatches through a [`DliClient`].
pub(crate) struct ClientSource<'a> {
    client: &'a DliClient,
    queue: &'a str,
    options: &'a WalkOptions,
    deadline: Instant,
    /// The server answered a 4xx to a request with `order`: this walk asks without it.
    order_rejected: AtomicBool,
}

impl<'a> ClientSource<'a> {
    pub(crate) fn new(
        client: &'a DliClient,
        queue: &'a str,
        options: &'a WalkOptions,
        deadline: Instant,
    ) -> Self {
        ClientSource {
            client,
            queue,
            options,
            deadline,
            order_rejected: AtomicBool::new(client.order_rejected()),
        }
    }

    async fn fetch(&self, from: u64, order: bool) -> Result<(BatchPage, u32), (DliError, u32)> {
        let query = ListBatchesQuery {
            order: order.then(|| WALK_ORDER.to_string()),
            ..ListBatchesQuery::page(self.queue, from, self.options.page_size)
        };
        let mut requests = 0u32;
        let outcome = with_retries(&self.options.retry, self.deadline, || {
            requests = requests.saturating_add(1);
            self.client.list_batches(&query)
        })
        .await;
        match outcome {
            Ok(page) => Ok((page, requests)),
            Err(e) => Err((e, requests)),
        }
    }
}

impl PageSource for ClientSource<'_> {
    async fn page(&self, from: u64) -> Result<(BatchPage, u32), (DliError, u32)> {
        if self.order_rejected.load(Ordering::Relaxed) {
            return self.fetch(from, false).await;
        }
        match self.fetch(from, true).await {
            // A server that refuses the parameter (a plain 4xx, not auth or throttling) gets
            // the request again without it, and no more of it from this client.
            Err((e, n)) if e.reason() == FailureReason::Http4xx => {
                tracing::warn!(project_id = self.client.project_id(), queue = self.queue, error = %e,
                    "the server refused order={WALK_ORDER}; walking without it");
                self.order_rejected.store(true, Ordering::Relaxed);
                self.client.set_order_rejected();
                let (page, m) = self
                    .fetch(from, false)
                    .await
                    .map_err(|(e, m)| (e, m.saturating_add(n)))?;
                Ok((page, m.saturating_add(n)))
            }
            other => other,
        }
    }

    fn project_id(&self) -> &str {
        self.client.project_id()
    }

    fn queue(&self) -> &str {
        self.queue
    }
}
