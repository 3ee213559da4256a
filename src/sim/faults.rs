//! Scripted misbehaviour: [`FaultRule`] (which requests, how many) and [`Fault`] (what happens).
//!
//! Owns rule matching and counting. It must not perform the faults itself: `server.rs` does,
//! so that every effect goes through the same response path.

use std::time::Duration;

/// What a matching request gets instead of (or on top of) its normal answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Non-terminal: wait this long, then go on (other rules, then the normal answer).
    Latency(Duration),
    /// Non-terminal: before answering, put this many generated new jobs (state `starting`) at the
    /// front of the request's queue (its `queue_name`/`cluster_name`, else the project's first
    /// queue), as if they were submitted mid-walk.
    InsertFront(usize),
    /// An error answer with a DLI/APIG-shaped body `{"error_code","error_msg"}` (plus `request_id`
    /// for `APIGW.*`/`APIG.*` codes) and the `X-Request-Id` header.
    Status {
        status: u16,
        error_code: String,
        error_msg: String,
    },
    /// 429 with an `APIGW.0308` body, and `Retry-After: <seconds>` when `Some`.
    Throttle { retry_after: Option<u64> },
    /// 200 with a body that is not JSON (an HTML error page).
    MalformedJson,
    /// 200, JSON content type, the normal page cut in the middle; Content-Length matches the bytes
    /// sent.
    TruncatedJson,
    /// Non-terminal: the normal page, with `total` replaced by this.
    WrongTotal(i64),
    /// Non-terminal: before answering, remove this many jobs from the oldest end of the
    /// request's queue (the end of the stored, newest-first list), as retention does mid-walk.
    RemoveOldest(usize),
    /// Non-terminal: serve at most this many jobs of the normal page (0: an empty page), while
    /// the list goes on; `total` is computed as usual (under `PageLength`, the short length).
    ShortPage(usize),
    /// Non-terminal: serve this many jobs more than `size` asked for (taken from the list after
    /// the page, padded with made-up `running` jobs `extra-{from}-{i}` where the list ends).
    ExtraJobs(usize),
    /// 200 with a body of exactly this many bytes: a valid-looking JSON prefix, then padding.
    Oversized(usize),
    /// Read the request and never answer (until shutdown ends the connection).
    Hang,
    /// Close the connection (with a TCP reset) without any response.
    ResetConnection,
}

impl Fault {
    /// Terminal faults decide the answer; non-terminal ones only add to the normal answer.
    pub fn is_terminal(&self) -> bool {
        !matches!(
            self,
            Fault::Latency(_)
                | Fault::InsertFront(_)
                | Fault::WrongTotal(_)
                | Fault::RemoveOldest(_)
                | Fault::ShortPage(_)
                | Fault::ExtraJobs(_)
        )
    }

    /// Shorthand for a [`Fault::Status`].
    pub fn status(status: u16, error_code: &str, error_msg: &str) -> Fault {
        Fault::Status {
            status,
            error_code: error_code.to_string(),
            error_msg: error_msg.to_string(),
        }
    }
}

/// The simulated API a [`FaultRule`] applies to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SimApi {
    /// `GET /v2.0/{project_id}/batches`.
    #[default]
    Batches,
    /// `POST /v3/auth/tokens`.
    IamToken,
    /// `GET /v1.0/{project_id}/queues`.
    QueueList,
    /// `GET /v3/projects`.
    ProjectList,
}

/// Which requests a fault applies to, and how often.
///
/// A rule matches requests of its `api`: for ListBatches those whose queue (`queue_name`, else
/// `cluster_name`) and `from` equal its filters (`None` = any); for the other APIs the queue/from
/// filters are ignored. Of the matching requests the first `skip` pass through
/// untouched, the next `times` (`None` = all) get the fault. Rules are consulted in the order they
/// were added; the first terminal fault ends the consultation (later rules neither see nor count
/// that request). Faults come before authentication: a faulted request is not checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultRule {
    pub queue: Option<String>,
    pub from: Option<i64>,
    pub api: SimApi,
    pub skip: usize,
    pub times: Option<usize>,
    pub action: Fault,
}

impl FaultRule {
    /// Every matching ListBatches request, forever.
    pub fn always(action: Fault) -> Self {
        FaultRule {
            queue: None,
            from: None,
            api: SimApi::Batches,
            skip: 0,
            times: None,
            action,
        }
    }

    /// The next matching ListBatches request only.
    pub fn once(action: Fault) -> Self {
        Self::times(1, action)
    }

    /// The next `n` matching ListBatches requests.
    pub fn times(n: usize, action: Fault) -> Self {
        FaultRule {
            times: Some(n),
            ..Self::always(action)
        }
    }

    /// Only requests for this queue.
    pub fn queue(mut self, queue: &str) -> Self {
        self.queue = Some(queue.to_string());
        self
    }

    /// Only requests with this `from`.
    pub fn from(mut self, from: i64) -> Self {
        self.from = Some(from);
        self
    }

    /// Let this many matching requests through untouched first.
    pub fn skip(mut self, n: usize) -> Self {
        self.skip = n;
        self
    }

    /// Match the IAM token endpoint instead of ListBatches.
    pub fn iam(mut self) -> Self {
        self.api = SimApi::IamToken;
        self
    }

    /// Match the queue list (`GET /v1.0/{project_id}/queues`) instead of ListBatches.
    pub fn queue_list(mut self) -> Self {
        self.api = SimApi::QueueList;
        self
    }

    /// Match the IAM project list (`GET /v3/projects`) instead of ListBatches.
    pub fn project_list(mut self) -> Self {
        self.api = SimApi::ProjectList;
        self
    }
}

/// What a request is, for matching.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Target<'a> {
    Batches { queue: Option<&'a str>, from: i64 },
    Iam,
    QueueList,
    ProjectList,
}

/// A rule with its counters.
#[derive(Debug)]
pub(crate) struct FaultSlot {
    rule: FaultRule,
    seen: usize,
    applied: usize,
}

impl FaultSlot {
    pub(crate) fn new(rule: FaultRule) -> Self {
        FaultSlot {
            rule,
            seen: 0,
            applied: 0,
        }
    }

    fn matches(&self, target: Target<'_>) -> bool {
        match target {
            Target::Iam => self.rule.api == SimApi::IamToken,
            Target::QueueList => self.rule.api == SimApi::QueueList,
            Target::ProjectList => self.rule.api == SimApi::ProjectList,
            Target::Batches { queue, from } => {
                self.rule.api == SimApi::Batches
                    && self.rule.queue.as_deref().is_none_or(|q| Some(q) == queue)
                    && self.rule.from.is_none_or(|f| f == from)
            }
        }
    }
}

/// The faults to apply to one request, in rule order: any number of non-terminal ones, then at
/// most one terminal one, last. Advances the rules' counters.
pub(crate) fn select(slots: &mut [FaultSlot], target: Target<'_>) -> Vec<Fault> {
    let mut out = Vec::new();
    for slot in slots.iter_mut() {
        if !slot.matches(target) {
            continue;
        }
        slot.seen += 1;
        if slot.seen <= slot.rule.skip {
            continue;
        }
        if slot.rule.times.is_some_and(|t| slot.applied >= t) {
            continue;
        }
        slot.applied += 1;
        out.push(slot.rule.action.clone());
        if slot.rule.action.is_terminal() {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batches(queue: &str, from: i64) -> Target<'_> {
        Target::Batches {
            queue: Some(queue),
            from,
        }
    }

    #[test]
    fn skip_times_filters_and_order() {
        let mut slots = vec![
            FaultSlot::new(FaultRule::always(Fault::Latency(Duration::from_millis(1))).queue("a")),
            FaultSlot::new(FaultRule::times(2, Fault::MalformedJson).from(100).skip(1)),
            FaultSlot::new(FaultRule::once(Fault::Hang)),
            FaultSlot::new(FaultRule::always(Fault::Hang).iam()),
        ];
        // from=0 on b: only the Hang-once rule.
        assert_eq!(select(&mut slots, batches("b", 0)), vec![Fault::Hang]);
        assert_eq!(select(&mut slots, batches("b", 0)), vec![]);
        // from=100 on a: latency, then the malformed rule skips its first match.
        assert_eq!(
            select(&mut slots, batches("a", 100)),
            vec![Fault::Latency(Duration::from_millis(1))]
        );
        assert_eq!(
            select(&mut slots, batches("a", 100)),
            vec![
                Fault::Latency(Duration::from_millis(1)),
                Fault::MalformedJson
            ]
        );
        assert_eq!(
            select(&mut slots, batches("b", 100)),
            vec![Fault::MalformedJson]
        );
        assert_eq!(select(&mut slots, batches("b", 100)), vec![]);
        assert_eq!(select(&mut slots, Target::Iam), vec![Fault::Hang]);
        assert_eq!(
            select(
                &mut slots,
                Target::Batches {
                    queue: None,
                    from: 5
                }
            ),
            vec![]
        );
    }
}
