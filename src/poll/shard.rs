//! Shards (docs/architecture.md, "Shards"): which project × queue pairs one of M exporters with
//! the same configuration polls. A pair belongs to the shard that the jump consistent hash
//! (Lamping and Veach, 2014) of the 64-bit FNV-1a hash of `"{project_id}/{queue}"` picks, so
//! M exporters split the queues with no overlap and no gap, and going from M to M + 1 moves only
//! about 1/(M + 1) of them.
//!
//! Pure functions only: no I/O, no clock, no state. The key hash and the jump are fixed: exporters
//! of different versions must agree during a rolling upgrade, so changing either is a breaking
//! change. Reading the host name for `--shard auto` is `app`'s.

use std::fmt;

/// Most shards `--total-shards` accepts.
pub const MAX_SHARDS: u32 = 10_000;

/// One shard of several: this exporter is number `ordinal` (0-based) of `total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    ordinal: u32,
    total: u32,
}

/// Why a shard is not valid; the messages name the flags.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    #[error("--total-shards {0} must be between 1 and {MAX_SHARDS}")]
    Total(u32),
    #[error("--shard {ordinal} must be below --total-shards {total} (shards are numbered from 0)")]
    Ordinal { ordinal: u32, total: u32 },
}

impl Shard {
    pub fn new(ordinal: u32, total: u32) -> Result<Shard, ShardError> {
        if !(1..=MAX_SHARDS).contains(&total) {
            return Err(ShardError::Total(total));
        }
        if ordinal >= total {
            return Err(ShardError::Ordinal { ordinal, total });
        }
        Ok(Shard { ordinal, total })
    }

    pub fn ordinal(&self) -> u32 {
        self.ordinal
    }

    pub fn total(&self) -> u32 {
        self.total
    }

    /// True when this shard polls `queue` of `project_id`.
    pub fn owns(&self, project_id: &str, queue: &str) -> bool {
        jump(key_hash(project_id, queue), self.total) == self.ordinal
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shard {} of {}", self.ordinal, self.total)
    }
}

/// True when an exporter that is `shard` (or not sharded: `None`) polls `queue` of `project_id`.
/// The one filter applied wherever the set of polled queues is computed.
pub fn assigned(project_id: &str, queue: &str, shard: Option<&Shard>) -> bool {
    shard.is_none_or(|s| s.owns(project_id, queue))
}

/// 64-bit FNV-1a of the UTF-8 bytes of `"{project_id}/{queue}"`.
pub fn key_hash(project_id: &str, queue: &str) -> u64 {
    let mut hash = fnv1a64(FNV_OFFSET, project_id.as_bytes());
    hash = fnv1a64(hash, b"/");
    fnv1a64(hash, queue.as_bytes())
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a64(mut hash: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

/// The bucket in `0..buckets` the jump consistent hash assigns to `key` (the paper's reference
/// algorithm, with its constants); 0 when `buckets` is 0.
pub fn jump(mut key: u64, buckets: u32) -> u32 {
    let buckets = i64::from(buckets);
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < buckets {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        // (b + 1) * 2^31 / ((key >> 33) + 1): at most 2^31 * (b + 1), far inside f64's exact
        // integers for any u32 bucket count; `as` saturates rather than wraps.
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    u32::try_from(b.max(0)).unwrap_or(0)
}

/// The StatefulSet ordinal in a host name: the number after its last `-` (`dli-exporter-2` is
/// 2), looking only at the first label of a dotted name. `None` when there is none.
pub fn ordinal_from_hostname(hostname: &str) -> Option<u32> {
    let name = hostname.trim().split('.').next()?;
    let (prefix, digits) = name.rsplit_once('-')?;
    if prefix.is_empty() || digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn jump_matches_the_reference_algorithm() {
        // Published outputs of the paper's algorithm (shared by its ports in other languages).
        for (key, buckets, expected) in [
            (1u64, 1u32, 0u32),
            (42, 57, 43),
            (0xDEAD_10CC, 1, 0),
            (0xDEAD_10CC, 666, 361),
            (256, 1024, 520),
            (0, 1, 0),
            (3, 1, 0),
            (0, 2, 0),
            (4, 2, 1),
            (7, 2, 0),
            (1, 128, 55),
            (129, 128, 120),
            (128, 100_000_000, 38_172_097),
            (128, 2_147_483_648, 1_644_467_860),
            (u64::MAX, 128, 92),
        ] {
            assert_eq!(jump(key, buckets), expected, "jump({key}, {buckets})");
        }
        assert_eq!(jump(12345, 0), 0);
    }

    #[test]
    fn fnv1a_matches_the_published_vectors() {
        assert_eq!(fnv1a64(FNV_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(FNV_OFFSET, b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(key_hash("foo", "bar"), fnv1a64(FNV_OFFSET, b"foo/bar"));
    }

    /// The assignment of fixed keys, pinned (computed independently with a few lines of Python
    /// from the FNV-1a and jump definitions): a change here means exporters of two versions
    /// would poll different queues during a rolling upgrade.
    #[test]
    fn the_assignment_of_known_keys_never_changes() {
        let shard_of = |p: &str, q: &str, m: u32| jump(key_hash(p, q), m);
        let pid = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";
        let got: Vec<u32> = ["etl", "adhoc", "default", "q0", "q1", "q2", "q3", "队列"]
            .iter()
            .map(|q| shard_of(pid, q, 3))
            .collect();
        assert_eq!(got, PINNED_3, "assignment of {pid}/* over 3 shards");
    }

    const PINNED_3: [u32; 8] = [2, 2, 2, 1, 0, 1, 1, 2];

    #[test]
    fn shards_validate_their_flags() {
        assert_eq!(Shard::new(0, 1).map(|s| s.total()), Ok(1));
        let e = Shard::new(3, 3).expect_err("ordinal = total");
        assert!(e.to_string().contains("--shard 3") && e.to_string().contains("--total-shards 3"));
        assert!(
            Shard::new(0, 0)
                .expect_err("no shards")
                .to_string()
                .contains("--total-shards 0")
        );
        assert!(Shard::new(0, MAX_SHARDS + 1).is_err());
        assert_eq!(
            Shard::new(2, 3).map(|s| s.to_string()).as_deref(),
            Ok("shard 2 of 3")
        );
    }

    #[test]
    fn ordinals_from_host_names() {
        for (host, want) in [
            ("dli-exporter-0", Some(0)),
            ("dli-exporter-12", Some(12)),
            (
                "dli-exporter-2.dli-exporter.monitoring.svc.cluster.local",
                Some(2),
            ),
            ("web-007\n", Some(7)),
            ("dli-exporter", None),
            ("dli-exporter-", None),
            ("-3", None),
            ("3", None),
            ("node-1a", None),
            ("a-+1", None),
            ("a-99999999999", None),
            ("", None),
        ] {
            assert_eq!(ordinal_from_hostname(host), want, "{host:?}");
        }
    }

    proptest! {
        /// Every pair lands on exactly one shard, whatever the number of shards.
        #[test]
        fn every_pair_has_exactly_one_shard(p in "[0-9a-f]{1,32}", q in "\\PC{1,40}", total in 1u32..64) {
            let owners: Vec<u32> = (0..total)
                .filter(|&n| Shard::new(n, total).is_ok_and(|s| s.owns(&p, &q)))
                .collect();
            prop_assert_eq!(owners.len(), 1);
        }

        /// Growing from M to M + 1 shards moves a pair only to the new shard.
        #[test]
        fn growing_moves_pairs_only_to_the_new_shard(key in any::<u64>(), total in 1u32..500) {
            let before = jump(key, total);
            let after = jump(key, total + 1);
            prop_assert!(after == before || after == total);
        }
    }
}
