//! Key fingerprints and a compact set of them.
//!
//! Rows are told apart by a 128-bit fingerprint of their key instead of the
//! key itself, so de-duplicating a million rows costs 16 MB, not the keys.
//! [`FingerprintSet`] keeps that promise: 16.25 bytes a member (a sorted
//! vector and an index into it) plus a small hash set of recent inserts,
//! instead of a hash table's 34 bytes a member at its usual load.

use std::{
    collections::HashSet,
    hash::{BuildHasherDefault, Hasher},
};

/// A 128-bit fingerprint of a key (xxh3).
pub(crate) fn fingerprint(key: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(key.as_bytes())
}

/// A hasher for fingerprints, which are already uniformly distributed.
#[derive(Default)]
pub(crate) struct FingerprintHasher(u64);

impl Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = (v as u64) ^ ((v >> 64) as u64);
    }
}

type RecentSet = HashSet<u128, BuildHasherDefault<FingerprintHasher>>;

/// How many inserts wait in the hash set before they are merged into the
/// sorted vector (512 KiB of fingerprints).
const RECENT_MAX: usize = 1 << 15;

/// An exact set of fingerprints in about 16 bytes a member.
///
/// Members live in a sorted vector; new ones gather in a small hash set and
/// are merged in (from the back, in place) when it fills. Fingerprints are
/// uniform, so an index of where each range of top bits starts (one `u32`
/// per about sixteen members) takes a lookup straight to a handful of
/// neighbours.
#[derive(Default)]
pub(crate) struct FingerprintSet {
    sorted: Vec<u128>,
    /// Where each bucket (the top `bits` bits of a fingerprint) starts in
    /// `sorted`, plus the end: one `u32` per about sixteen members.
    starts: Vec<u32>,
    bits: u32,
    recent: RecentSet,
}

impl FingerprintSet {
    /// An empty set with room reserved for `n` members (address space only:
    /// untouched pages cost no memory).
    pub(crate) fn with_capacity(n: usize) -> Self {
        FingerprintSet {
            sorted: Vec::with_capacity(n),
            starts: Vec::new(),
            bits: 1,
            recent: RecentSet::default(),
        }
    }

    /// The number of members.
    pub(crate) fn len(&self) -> usize {
        self.sorted.len() + self.recent.len()
    }

    /// Whether the set has no members.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `fp` is a member.
    pub(crate) fn contains(&self, fp: u128) -> bool {
        self.recent.contains(&fp) || self.in_sorted(fp)
    }

    /// Adds `fp`; false when it was a member already.
    pub(crate) fn insert(&mut self, fp: u128) -> bool {
        if self.in_sorted(fp) || !self.recent.insert(fp) {
            return false;
        }
        // At least 32k, and a sixteenth of the set: merges stay rare as the
        // set grows (each moves the whole vector), for 16/17 of the memory.
        if self.recent.len() >= RECENT_MAX.max(self.sorted.len() / 16) {
            self.merge();
        }
        true
    }

    fn in_sorted(&self, fp: u128) -> bool {
        let Some(range) = self.bucket_range(fp) else {
            return false;
        };
        self.sorted
            .get(range)
            .is_some_and(|b| b.binary_search(&fp).is_ok())
    }

    /// The slice of `sorted` holding the values whose top bits are `fp`'s.
    fn bucket_range(&self, fp: u128) -> Option<std::ops::Range<usize>> {
        if self.starts.len() < 2 {
            return None;
        }
        let b = (fp >> (128 - self.bits)) as usize;
        Some(*self.starts.get(b)? as usize..*self.starts.get(b + 1)? as usize)
    }

    /// How many top bits pick a bucket for `n` members: about one bucket
    /// per sixteen members (1 to 32 bits).
    fn bits_for(n: usize) -> u32 {
        (usize::BITS - (n / 16).max(1).leading_zeros()).clamp(1, 32)
    }

    fn bucket(fp: u128, bits: u32) -> usize {
        (fp >> (128 - bits)) as usize
    }

    /// Rebuilds the bucket index from scratch.
    fn index(&mut self) {
        let n = self.sorted.len();
        let bits = Self::bits_for(n);
        self.bits = bits;
        self.starts.clear();
        self.starts.reserve_exact((1usize << bits) + 1);
        let mut i = 0usize;
        for b in 0..1usize << bits {
            while i < n && Self::bucket(self.sorted[i], bits) < b {
                i += 1;
            }
            self.starts.push(to_u32(i));
        }
        self.starts.push(to_u32(n));
    }

    /// Moves the recent inserts into the sorted vector.
    fn merge(&mut self) {
        let mut new: Vec<u128> = self.recent.drain().collect();
        new.sort_unstable();
        let old = self.sorted.len();
        let total = old + new.len();
        if self.sorted.capacity() < total {
            // Grow by an eighth (not double), so the spare room stays small.
            self.sorted.reserve_exact(new.len().max(old / 8));
        }
        self.sorted.resize(total, 0);
        // From the largest new value down: find its place among the old
        // values not yet moved (through the old index), move the old values
        // above it up in one copy, and put it below them.
        let mut end = old;
        for (j, &v) in new.iter().enumerate().rev() {
            let (lo, hi) = match self.bucket_range(v) {
                Some(r) => (r.start.min(end), r.end.min(end)),
                None => (0, end),
            };
            let pos = lo + self.sorted[lo..hi].partition_point(|&x| x < v);
            self.sorted.copy_within(pos..end, pos + j + 1);
            self.sorted[pos + j] = v;
            end = pos;
        }
        let bits = Self::bits_for(total);
        if bits != self.bits || self.starts.len() != (1usize << bits) + 1 {
            self.index();
            return;
        }
        // Same buckets: each start moves up by the new values below it.
        let mut below = 0usize;
        for (b, start) in self.starts.iter_mut().enumerate() {
            while below < new.len() && Self::bucket(new[below], bits) < b {
                below += 1;
            }
            *start = to_u32(*start as usize + below);
        }
    }
}

/// A position as stored in the index (sets past 4 billion members do not
/// fit in memory long before this saturates).
fn to_u32(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn many_members_stay_members_across_merges() {
        let mut set = FingerprintSet::default();
        let n = (RECENT_MAX * 3 + 17) as u128;
        for i in 0..n {
            assert!(set.insert(fingerprint(&i.to_string())), "{i}");
        }
        assert_eq!(set.len(), n as usize);
        for i in 0..n {
            assert!(!set.insert(fingerprint(&i.to_string())), "{i} twice");
            assert!(set.contains(fingerprint(&i.to_string())));
        }
        assert!(!set.contains(fingerprint("absent")));
        assert!(set.sorted.windows(2).all(|w| w[0] < w[1]));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The set answers like a `HashSet` for any values, uniform or not
        /// (small and clustered values defeat the position guess).
        #[test]
        fn behaves_like_a_hash_set(
            values in prop::collection::vec(
                prop_oneof![any::<u128>(), 0u128..64, (u128::MAX - 64)..=u128::MAX],
                0..3000,
            ),
            merge_every in 1usize..200,
        ) {
            let mut set = FingerprintSet::default();
            let mut model = HashSet::new();
            for (n, v) in values.iter().enumerate() {
                prop_assert_eq!(set.insert(*v), model.insert(*v));
                if n % merge_every == 0 {
                    set.merge();
                }
            }
            prop_assert_eq!(set.len(), model.len());
            for v in &values {
                prop_assert!(set.contains(*v));
            }
            for v in [0u128, 1, 63, u128::MAX, u128::MAX / 2] {
                prop_assert_eq!(set.contains(v), model.contains(&v));
            }
        }
    }
}
