//! One helper shared by the job table and the lifecycle tracker: merging new entries into a
//! vector sorted by key, in place, so that neither ever holds a second copy of every job.
//!
//! It owns no state and knows nothing of jobs.

/// Merges `added` (sorted by `key`, no key twice, none already in `sorted`) into `sorted`
/// (sorted by `key`), from the back: `sorted` grows by `added.len()` and nothing else is
/// allocated.
pub(super) fn merge_sorted<T: Copy, K: Ord>(
    sorted: &mut Vec<T>,
    added: &[T],
    key: impl Fn(&T) -> K,
) {
    let Some(first) = added.first().copied() else {
        return;
    };
    let old = sorted.len();
    sorted.reserve_exact(added.len());
    sorted.extend(std::iter::repeat_n(first, added.len()));
    let (mut i, mut j, mut w) = (old, added.len(), sorted.len());
    while j > 0 {
        if i > 0 && key(&sorted[i - 1]) > key(&added[j - 1]) {
            sorted[w - 1] = sorted[i - 1];
            i -= 1;
        } else {
            sorted[w - 1] = added[j - 1];
            j -= 1;
        }
        w -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn merging_equals_sorting_the_union(
            a in proptest::collection::btree_set(0u32..500, 0..60),
            b in proptest::collection::btree_set(0u32..500, 0..60),
        ) {
            let mut sorted: Vec<u32> = a.iter().copied().collect();
            let added: Vec<u32> = b.difference(&a).copied().collect();
            merge_sorted(&mut sorted, &added, |v| *v);
            let want: Vec<u32> = a.union(&b).copied().collect();
            proptest::prop_assert_eq!(sorted, want);
        }
    }
}
