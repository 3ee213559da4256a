//! The job table of one queue polled incrementally ([`JobTable`]): every listed job reduced to
//! what the aggregation, the job lifecycle and the job name summary read (id, state, owner,
//! selected name, the three times), built from a full walk and changed by incremental polls.
//!
//! Memory (docs/architecture.md, "Incremental polls"): 48 bytes a job in one vector sorted by id
//! key, plus each distinct state, owner and selected job name once (and the rare `duration` that
//! does not fit 32 bits, in a side map). Ids are kept as their 128-bit
//! key; an id that is not a canonical lowercase UUID (DLI's ids are) is also kept as text, so
//! that a replayed job carries exactly the id the server listed. It does no I/O.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;

use crate::config::JobNameFilter;
use crate::dli::BatchJob;
use crate::dli::states::{ACTIVE_STATES, FINISHED_STATES};
use crate::dli::walk::id_key;

/// "No value" of an interned field.
const NONE: u32 = u32::MAX;
const HAS_CREATE: u8 = 1;
const HAS_UPDATE: u8 = 2;
/// `duration` is in the entry (0 to `u32::MAX` ms, about 49 days).
const HAS_DURATION: u8 = 4;
/// `duration` is in [`JobTable::wide_durations`] (negative, or longer than `u32::MAX` ms).
const WIDE_DURATION: u8 = 8;
/// "No state" in an entry's 16-bit state number.
const NO_STATE: u16 = u16::MAX;

/// One job: 48 bytes (the id key as two words keeps the alignment at 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    id: [u64; 2],
    create: i64,
    update: i64,
    owner: u32,
    name: u32,
    /// Milliseconds, when `flags` has [`HAS_DURATION`].
    duration: u32,
    /// Index in the states interner, [`NO_STATE`] for none.
    state: u16,
    flags: u8,
}

impl Entry {
    fn key(&self) -> u128 {
        (u128::from(self.id[0]) << 64) | u128::from(self.id[1])
    }

    fn create(&self) -> Option<i64> {
        (self.flags & HAS_CREATE != 0).then_some(self.create)
    }

    /// The state's index in the states interner (its `NONE` for no state).
    fn state(&self) -> u32 {
        if self.state == NO_STATE {
            NONE
        } else {
            u32::from(self.state)
        }
    }
}

fn split(key: u128) -> [u64; 2] {
    [(key >> 64) as u64, key as u64]
}

/// Each distinct string once, by index.
#[derive(Debug, Default, Clone)]
struct Interner {
    values: Vec<Box<str>>,
    index: HashMap<Box<str>, u32>,
}

impl Interner {
    fn intern(&mut self, value: Option<&str>) -> u32 {
        let Some(value) = value else {
            return NONE;
        };
        if let Some(i) = self.index.get(value) {
            return *i;
        }
        let Ok(i) = u32::try_from(self.values.len()) else {
            return NONE;
        };
        if i == NONE {
            return NONE;
        }
        self.values.push(value.into());
        self.index.insert(value.into(), i);
        i
    }

    fn get(&self, i: u32) -> Option<&str> {
        self.values.get(i as usize).map(|s| &**s)
    }

    fn bytes(&self) -> usize {
        self.values.iter().map(|v| 2 * v.len() + 48).sum()
    }
}

/// The canonical text of a UUID key: lowercase, hyphenated.
fn uuid_text(key: u128, out: &mut String) {
    out.clear();
    let hex = format!("{key:032x}");
    for (i, part) in [(0, 8), (8, 12), (12, 16), (16, 20), (20, 32)]
        .iter()
        .enumerate()
    {
        if i > 0 {
            out.push('-');
        }
        let _ = write!(out, "{}", &hex[part.0..part.1]);
    }
}

/// The jobs of one queue as of its last successful poll.
#[derive(Debug, Default, Clone)]
pub struct JobTable {
    /// Sorted by id key, one entry per key.
    entries: Vec<Entry>,
    owners: Interner,
    states: Interner,
    names: Interner,
    /// Ids whose text is not the canonical form of their key.
    odd_ids: HashMap<u128, Box<str>>,
    /// Durations that do not fit an entry's 32 bits (negative, or over ~49 days), by id key.
    wide_durations: HashMap<u128, i64>,
    /// A job's state could not be numbered in 16 bits (more than 65,534 distinct states).
    too_many_states: bool,
    /// The job names kept (`metrics.job_names`), `None` when none are.
    filter: Option<Arc<JobNameFilter>>,
    /// A job without an id was listed: it cannot be followed between polls.
    anonymous: bool,
}

/// A full walk updating a table in place: which entries it listed, the jobs it added, and the
/// drift so far.
#[derive(Debug)]
pub struct Refresh {
    /// One bit per entry of the table as it was.
    seen: Vec<u64>,
    added: Vec<Entry>,
    drift: Drift,
    newest_before: Option<i64>,
}

/// How a full walk's table differs from the incremental state it replaces.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Drift {
    /// Known jobs the list no longer holds (retention).
    pub removed: u64,
    /// Jobs not known although not newer than the newest known one (listed late).
    pub added: u64,
    /// Known jobs with another owner, or another state although their state was final.
    pub changed: u64,
}

impl Drift {
    pub fn total(&self) -> u64 {
        self.removed
            .saturating_add(self.added)
            .saturating_add(self.changed)
    }
}

impl JobTable {
    /// An empty table keeping the names `filter` selects.
    pub fn new(filter: Option<Arc<JobNameFilter>>) -> Self {
        JobTable {
            filter,
            ..Self::default()
        }
    }

    /// Room for `n` jobs.
    pub fn reserve(&mut self, n: usize) {
        self.entries.reserve(n);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A job without an id was listed: the table cannot be kept up to date incrementally.
    pub fn has_anonymous_jobs(&self) -> bool {
        self.anonymous
    }

    /// Why the table cannot be kept up to date incrementally, if it cannot: a job without an id
    /// (it cannot be followed), or more distinct states than an entry numbers.
    pub fn unfollowable(&self) -> Option<&'static str> {
        if self.anonymous {
            Some("some jobs have no id")
        } else if self.too_many_states {
            Some("more than 65,534 distinct job states")
        } else {
            None
        }
    }

    /// The job names this table keeps.
    pub fn filter(&self) -> Option<&Arc<JobNameFilter>> {
        self.filter.as_ref()
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.owners.bytes()
            + self.states.bytes()
            + self.names.bytes()
            + self.odd_ids.values().map(|v| v.len() + 48).sum::<usize>()
            + self.wide_durations.len() * 32
    }

    fn entry_of(&mut self, job: &BatchJob, key: u128) -> Entry {
        let name = job
            .name
            .as_deref()
            .filter(|n| !n.is_empty())
            .filter(|n| self.filter.as_ref().is_some_and(|f| f.matches(n)));
        let bit = |present: bool, flag: u8| if present { flag } else { 0 };
        let narrow = job.duration.map(u32::try_from);
        let duration = match narrow {
            Some(Ok(ms)) => ms,
            _ => 0,
        };
        match (narrow, job.duration) {
            (Some(Err(_)), Some(wide)) => {
                self.wide_durations.insert(key, wide);
            }
            _ => {
                self.wide_durations.remove(&key);
            }
        }
        let flags = bit(job.create_time.is_some(), HAS_CREATE)
            | bit(job.update_time.is_some(), HAS_UPDATE)
            | bit(matches!(narrow, Some(Ok(_))), HAS_DURATION)
            | bit(matches!(narrow, Some(Err(_))), WIDE_DURATION);
        let state = self.states.intern(job.state.as_deref());
        let state = if state == NONE {
            NO_STATE
        } else {
            match u16::try_from(state) {
                Ok(s) if s != NO_STATE => s,
                _ => {
                    self.too_many_states = true;
                    NO_STATE
                }
            }
        };
        Entry {
            id: split(key),
            create: job.create_time.unwrap_or(0),
            update: job.update_time.unwrap_or(0),
            duration,
            owner: self.owners.intern(job.owner.as_deref()),
            name: self.names.intern(name),
            state,
            flags,
        }
    }

    fn note_id(&mut self, id: &str, key: u128) {
        let mut canonical = String::with_capacity(36);
        uuid_text(key, &mut canonical);
        if canonical != id {
            self.odd_ids.insert(key, id.into());
        }
    }

    /// Adds a job of a full walk (the walk hands each job once); [`JobTable::seal`] sorts.
    pub fn push(&mut self, job: &BatchJob) {
        let Some(id) = job.id.as_deref() else {
            self.anonymous = true;
            return;
        };
        let key = id_key(id);
        self.note_id(id, key);
        let entry = self.entry_of(job, key);
        self.entries.push(entry);
    }

    /// Sorts the jobs pushed by a full walk (which hands each id once; a repeated id keeps one
    /// entry). Sorting in place: no buffer the size of the table.
    pub fn seal(&mut self) {
        self.entries.sort_unstable_by_key(Entry::key);
        self.entries.dedup_by_key(|e| e.key());
        self.entries.shrink_to_fit();
    }

    fn find(&self, key: u128) -> Option<usize> {
        self.entries.binary_search_by_key(&key, Entry::key).ok()
    }

    /// The job is in the table.
    pub fn contains(&self, key: u128) -> bool {
        self.find(key).is_some()
    }

    /// Makes the table say what `jobs` (the latest answer for each) and `removed` (ids the list
    /// no longer holds) say.
    pub fn apply(&mut self, jobs: impl IntoIterator<Item = BatchJob>, removed: &HashSet<u128>) {
        let mut added = Vec::new();
        for job in jobs {
            let Some(id) = job.id.as_deref() else {
                continue;
            };
            let key = id_key(id);
            let entry = self.entry_of(&job, key);
            match self.find(key) {
                Some(i) => self.entries[i] = entry,
                None => {
                    self.note_id(id, key);
                    added.push(entry);
                }
            }
        }
        if !removed.is_empty() {
            self.entries.retain(|e| !removed.contains(&e.key()));
            self.odd_ids.retain(|k, _| !removed.contains(k));
            self.wide_durations.retain(|k, _| !removed.contains(k));
        }
        self.merge_in(added);
    }

    /// Merges entries whose ids are not in the table yet, from the back, in place.
    fn merge_in(&mut self, mut added: Vec<Entry>) {
        added.sort_unstable_by_key(Entry::key);
        added.dedup_by_key(|e| e.key());
        super::merge::merge_sorted(&mut self.entries, &added, Entry::key);
    }

    /// Starts a full walk that updates this table in place (one table in memory, not two).
    pub fn begin_refresh(&self) -> Refresh {
        Refresh {
            seen: vec![0; self.entries.len().div_ceil(64)],
            added: Vec::new(),
            drift: Drift::default(),
            newest_before: self.newest(),
        }
    }

    /// One job of the full walk: overwrites its entry (or adds it) and counts what differs
    /// from what the table said (see [`JobTable::drift_from`]).
    pub fn refresh(&mut self, r: &mut Refresh, job: &BatchJob) {
        let Some(id) = job.id.as_deref() else {
            self.anonymous = true;
            return;
        };
        let key = id_key(id);
        let entry = self.entry_of(job, key);
        match self.find(key) {
            Some(i) => {
                let old = self.entries[i];
                if old.owner != entry.owner || (self.finished(&old) && old.state != entry.state) {
                    r.drift.changed = r.drift.changed.saturating_add(1);
                }
                self.entries[i] = entry;
                if let Some(word) = r.seen.get_mut(i / 64) {
                    *word |= 1 << (i % 64);
                }
            }
            None => {
                if entry
                    .create()
                    .is_none_or(|c| r.newest_before.is_some_and(|m| c <= m))
                {
                    r.drift.added = r.drift.added.saturating_add(1);
                }
                self.note_id(id, key);
                r.added.push(entry);
            }
        }
    }

    /// Ends the full walk: jobs it did not list go, the new ones come in. Returns how the walk
    /// differed from the table it updated.
    pub fn finish_refresh(&mut self, r: Refresh) -> Drift {
        let Refresh {
            seen,
            added,
            mut drift,
            ..
        } = r;
        let is_seen = |i: usize| seen.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0);
        let before = self.entries.len();
        let mut i = 0;
        let mut gone = HashSet::new();
        self.entries.retain(|e| {
            let keep = is_seen(i);
            i += 1;
            if !keep {
                gone.insert(e.key());
            }
            keep
        });
        drift.removed = (before - self.entries.len()) as u64;
        if !gone.is_empty() {
            self.odd_ids.retain(|k, _| !gone.contains(k));
            self.wide_durations.retain(|k, _| !gone.contains(k));
        }
        self.merge_in(added);
        // (A walk that failed after adding a job's wide duration left it behind.)
        if !self.wide_durations.is_empty() {
            let entries = &self.entries;
            self.wide_durations
                .retain(|k, _| entries.binary_search_by_key(k, Entry::key).is_ok());
        }
        drift
    }

    /// The newest `create_time` of the table.
    pub fn newest(&self) -> Option<i64> {
        self.entries.iter().filter_map(Entry::create).max()
    }

    fn finished(&self, e: &Entry) -> bool {
        self.states
            .get(e.state())
            .is_some_and(|s| FINISHED_STATES.contains(&s))
    }

    fn id_text(&self, key: u128, out: &mut String) {
        match self.odd_ids.get(&key) {
            Some(id) => {
                out.clear();
                out.push_str(id);
            }
            None => uuid_text(key, out),
        }
    }

    /// The ids of the jobs not in a finished state (`success`, `dead`): the ones that can still
    /// change.
    pub fn unfinished(&self) -> Vec<(u128, String)> {
        self.entries
            .iter()
            .filter(|e| !self.finished(e))
            .map(|e| {
                let mut id = String::new();
                self.id_text(e.key(), &mut id);
                (e.key(), id)
            })
            .collect()
    }

    /// The states to list with the `state` filter: the active ones, and any other state outside
    /// `success` and `dead` that a job of the table is in.
    pub fn states_to_list(&self) -> Vec<String> {
        let mut used = vec![false; self.states.values.len()];
        for e in &self.entries {
            if let Some(u) = used.get_mut(e.state() as usize) {
                *u = true;
            }
        }
        let mut out: Vec<String> = ACTIVE_STATES.iter().map(|s| s.to_string()).collect();
        for (i, state) in self.states.values.iter().enumerate() {
            if used[i]
                && !FINISHED_STATES.contains(&&**state)
                && !out.iter().any(|s| **s == **state)
            {
                out.push(state.to_string());
            }
        }
        out
    }

    /// Jobs in `state`, and jobs in any other state.
    pub fn count_in(&self, state: &str) -> (usize, usize) {
        let inside = self
            .entries
            .iter()
            .filter(|e| self.states.get(e.state()) == Some(state))
            .count();
        (inside, self.entries.len() - inside)
    }

    /// The id of the oldest job (by `create_time`), for the check of the `job-id` filter.
    pub fn oldest_id(&self) -> Option<String> {
        let e = self
            .entries
            .iter()
            .min_by_key(|e| (e.create().is_some(), e.create))?;
        let mut id = String::new();
        self.id_text(e.key(), &mut id);
        Some(id)
    }

    /// Hands every job to `f` as a newest-first walk would (by `create_time`, newest first,
    /// jobs without one last), one scratch [`BatchJob`] reused for all.
    pub fn replay(&self, mut f: impl FnMut(&BatchJob)) {
        let mut order: Vec<u32> = (0..self.entries.len() as u32).collect();
        order.sort_unstable_by_key(|i| {
            let e = &self.entries[*i as usize];
            (Reverse(e.create()), e.key())
        });
        let mut job = BatchJob::default();
        let mut id = String::with_capacity(36);
        let set = |slot: &mut Option<String>, value: Option<&str>| match value {
            Some(v) => {
                let s = slot.get_or_insert_with(String::new);
                s.clear();
                s.push_str(v);
            }
            None => *slot = None,
        };
        for i in order {
            let e = &self.entries[i as usize];
            self.id_text(e.key(), &mut id);
            set(&mut job.id, Some(&id));
            set(&mut job.state, self.states.get(e.state()));
            set(&mut job.owner, self.owners.get(e.owner));
            set(&mut job.name, self.names.get(e.name));
            job.create_time = e.create();
            job.update_time = (e.flags & HAS_UPDATE != 0).then_some(e.update);
            job.duration = if e.flags & HAS_DURATION != 0 {
                Some(i64::from(e.duration))
            } else if e.flags & WIDE_DURATION != 0 {
                self.wide_durations.get(&e.key()).copied()
            } else {
                None
            };
            f(&job);
        }
    }

    /// How `self`, the table of a full walk, differs from `before`, the incremental state it
    /// replaces: known jobs gone, jobs listed late, and known jobs changed where no poll could
    /// have changed them (another owner, or a final state that changed). Jobs submitted since,
    /// and unfinished jobs that moved on, are the list's own changes, not drift.
    pub fn drift_from(&self, before: &JobTable) -> Drift {
        let mut drift = Drift::default();
        let newest = before.newest();
        let (mut a, mut b) = (
            before.entries.iter().peekable(),
            self.entries.iter().peekable(),
        );
        loop {
            match (a.peek(), b.peek()) {
                (None, None) => break,
                (Some(_), None) => {
                    drift.removed = drift.removed.saturating_add(1);
                    a.next();
                }
                (None, Some(n)) => {
                    if n.create().is_none_or(|c| newest.is_some_and(|m| c <= m)) {
                        drift.added = drift.added.saturating_add(1);
                    }
                    b.next();
                }
                (Some(o), Some(n)) => {
                    if o.key() < n.key() {
                        drift.removed = drift.removed.saturating_add(1);
                        a.next();
                    } else if n.key() < o.key() {
                        if n.create().is_none_or(|c| newest.is_some_and(|m| c <= m)) {
                            drift.added = drift.added.saturating_add(1);
                        }
                        b.next();
                    } else {
                        let owner_changed = before.owners.get(o.owner) != self.owners.get(n.owner);
                        let final_changed = before.finished(o)
                            && before.states.get(o.state()) != self.states.get(n.state());
                        if owner_changed || final_changed {
                            drift.changed = drift.changed.saturating_add(1);
                        }
                        a.next();
                        b.next();
                    }
                }
            }
        }
        drift
    }
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
