//! The job numbers of one walk: each distinct job id met (on any page, checks and repairs
//! included) gets the next number, and a bit says whether the job was handed to the sink.
//!
//! It owns the walk's only structure that grows with the queue: every distinct id once
//! (16 bytes) plus a hash index of 4-byte numbers, so that pages can keep their ids as 4-byte
//! numbers for the proof. Numbers are exact: two ids share a number only if their keys are
//! equal. It must not decide anything about pages.

use std::hash::BuildHasher;

use hashbrown::HashTable;

/// Distinct ids in order of first meeting, and which of them were fed to the sink.
#[derive(Default)]
pub(super) struct Numbering {
    keys: Vec<u128>,
    index: HashTable<u32>,
    hasher: foldhash::quality::RandomState,
    fed: Vec<u64>,
}

impl Numbering {
    /// Room for `n` distinct ids without growing.
    pub fn reserve(&mut self, n: usize) {
        self.keys.reserve_exact(n);
        self.index.reserve(n, rehash(&self.hasher, &self.keys));
        self.fed.reserve_exact(n.div_ceil(64));
    }

    /// The number of the id with key `key`, given on first meeting; `None` once more distinct
    /// ids were met than a `u32` numbers (a walk would run out of memory long before).
    pub fn number(&mut self, key: u128) -> Option<u32> {
        let hash = self.hasher.hash_one(key);
        let keys = &self.keys;
        if let Some(&n) = self
            .index
            .find(hash, |&i| keys.get(i as usize) == Some(&key))
        {
            return Some(n);
        }
        let n = u32::try_from(self.keys.len())
            .ok()
            .filter(|n| *n < u32::MAX)?;
        self.keys.push(key);
        if self.fed.len() < self.keys.len().div_ceil(64) {
            self.fed.push(0);
        }
        self.index
            .insert_unique(hash, n, rehash(&self.hasher, &self.keys));
        Some(n)
    }

    /// Marks job `n` as handed to the sink; true the first time.
    pub fn feed(&mut self, n: u32) -> bool {
        let i = n as usize;
        let Some(word) = self.fed.get_mut(i / 64) else {
            return false;
        };
        let bit = 1u64 << (i % 64);
        let first = *word & bit == 0;
        *word |= bit;
        first
    }

    /// Distinct ids met.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.keys.len()
    }
}

/// The hash of number `i`'s key, for the index to move its entries when it grows.
fn rehash<'a>(
    hasher: &'a foldhash::quality::RandomState,
    keys: &'a [u128],
) -> impl Fn(&u32) -> u64 + 'a {
    move |&i| hasher.hash_one(keys.get(i as usize).copied().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_keys_share_a_number_and_are_fed_once() {
        let mut n = Numbering::default();
        n.reserve(3);
        let a = n.number(7).unwrap();
        let b = n.number(u128::MAX).unwrap();
        assert_ne!(a, b);
        assert_eq!(n.number(7), Some(a));
        assert_eq!(n.len(), 2);
        assert!(n.feed(a));
        assert!(!n.feed(a));
        assert!(n.feed(b));
        assert!(!n.feed(99), "an unknown number is never fed");
    }

    proptest::proptest! {
        /// Numbers are a bijection with the distinct keys, whatever their order and repeats,
        /// and "fed" is exactly "fed before".
        #[test]
        fn numbers_follow_distinct_keys(keys in proptest::collection::vec(0u128..300, 0..2000)) {
            let mut n = Numbering::default();
            let mut by_key = std::collections::HashMap::new();
            let mut fed = std::collections::HashSet::new();
            for k in keys {
                let num = n.number(k).unwrap();
                let want = *by_key.entry(k).or_insert(num);
                proptest::prop_assert_eq!(num, want);
                proptest::prop_assert_eq!(n.feed(num), fed.insert(k));
            }
            proptest::prop_assert_eq!(n.len(), by_key.len());
            let distinct: std::collections::HashSet<u32> = by_key.values().copied().collect();
            proptest::prop_assert_eq!(distinct.len(), by_key.len());
        }
    }
}
