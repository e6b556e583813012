//! Key fingerprints and a compact set of them.
//!
//! Rows are told apart by a 96-bit fingerprint of their key instead of the
//! key itself. Two distinct keys share a fingerprint with probability about
//! n² / 2⁹⁷ among n keys: 6·10⁻¹⁸ for a million, 6·10⁻¹² for a billion.
//!
//! [`FingerprintSet`] (the de-duplication of a plain read, the input
//! writer's duplicate-key check, the keys of a retry) compares the top 80
//! bits only, in 8 bytes a member: a sorted vector of each member's bits
//! 79..16 (a `u64`), a fixed 512 KiB index of where each value of the top
//! 16 bits starts in it (made at the first merge, after 32,768 members), and
//! a small hash set of recent inserts (a hash table would take about 30
//! bytes a member). Two distinct keys share those 80 bits with probability
//! about n² / 2⁸¹: 4·10⁻¹³ for a million keys, 4·10⁻⁷ for a billion; a
//! million keys cost 8 MB. Joins to the inputs keep all 96 bits.
//!
//! The hash is seeded per process, so keys cannot be chosen ahead of time
//! to collide.

use std::{
    collections::HashSet,
    hash::{Hash, Hasher},
    sync::{Arc, RwLock, RwLockReadGuard},
};

/// A 96-bit fingerprint of a key: the top 96 bits of its seeded xxh3-128,
/// packed in 12 bytes. Ordered as the 96-bit number.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
#[repr(C, packed(4))]
pub(crate) struct Fingerprint {
    hi: u64,
    lo: u32,
}

impl Fingerprint {
    /// The fingerprint made of the top 96 bits of `v`.
    pub(crate) fn from_u128(v: u128) -> Self {
        Fingerprint {
            hi: (v >> 64) as u64,
            lo: (v >> 32) as u32,
        }
    }

    /// The top 64 bits (uniform for fingerprints of keys).
    fn top(self) -> u64 {
        self.hi
    }

    /// The top 80 bits (the rest zero): what a [`FingerprintSet`] compares.
    fn prefix80(self) -> Self {
        Fingerprint {
            hi: self.hi,
            lo: self.lo & !0xffff,
        }
    }
}

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (hi, lo) = (self.hi, self.lo);
        write!(f, "{hi:016x}{lo:08x}")
    }
}

impl Hash for Fingerprint {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let (hi, lo) = (self.hi, self.lo);
        state.write_u64(hi ^ u64::from(lo).rotate_left(32));
    }
}

/// The fingerprint of a key: the top 96 bits of its xxh3-128, seeded with a
/// random value drawn once per process (fingerprints are never stored, so
/// keys chosen to collide cannot be worked out ahead of time).
pub(crate) fn fingerprint(key: &str) -> Fingerprint {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| fastrand::u64(..));
    Fingerprint::from_u128(xxhash_rust::xxh3::xxh3_128_with_seed(key.as_bytes(), seed))
}

/// A hasher for fingerprints: one multiply-and-fold of the fingerprint's
/// word with a random per-set seed. Fingerprints are uniform already; the
/// seed is there so that keys ground to collide in a few bits cannot pile
/// up in one corner of the hash set (xxh3 is not keyed).
pub(crate) struct FingerprintHasher {
    seed: u64,
    hash: u64,
}

impl Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.hash
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(b));
        }
    }
    fn write_u64(&mut self, v: u64) {
        let p = u128::from(v ^ self.seed ^ self.hash) * 0x9e37_79b9_7f4a_7c15;
        self.hash = (p as u64) ^ ((p >> 64) as u64);
    }
}

/// Builds [`FingerprintHasher`]s with a seed drawn once per set.
#[derive(Clone)]
pub(crate) struct SeededHasher(u64);

impl Default for SeededHasher {
    fn default() -> Self {
        SeededHasher(fastrand::u64(..))
    }
}

impl std::hash::BuildHasher for SeededHasher {
    type Hasher = FingerprintHasher;
    fn build_hasher(&self) -> FingerprintHasher {
        FingerprintHasher {
            seed: self.0,
            hash: 0,
        }
    }
}

type RecentSet = HashSet<Fingerprint, SeededHasher>;

/// How many inserts wait in the hash set before they are merged into the
/// sorted vector (384 KiB of fingerprints).
const RECENT_MAX: usize = 1 << 15;

/// A set of fingerprints, exact on their top 80 bits, in about 8 bytes a
/// member.
///
/// Members live in a sorted vector; new ones gather in a small hash set and
/// are merged in (from the back, in place) when it fills. The vector holds
/// each member's bits 79..16 only: its top 16 bits pick one of 65,536
/// buckets, and an index of where each bucket starts says them. Fingerprints
/// are uniform, so inside a bucket the bits below say where to look, and a
/// lookup touches a handful of neighbours.
///
/// The sorted vector is shared (read-only between merges) with the threads
/// that parse rows: they look keys up in it ahead of time ([`SortedProbe`]),
/// and a key found there, or not found since the last merge, needs no second
/// look from the one thread that inserts. Only the recent hash set is that
/// thread's alone.
#[derive(Default)]
pub(crate) struct FingerprintSet {
    shared: Arc<RwLock<Sorted>>,
    /// Merges so far (the shared vector's version).
    epoch: u64,
    /// The shared vector's length.
    sorted_len: usize,
    recent: RecentSet,
}

/// How many top bits of a fingerprint pick its bucket (and are not stored).
const BUCKET_BITS: u32 = 16;
const BUCKETS: usize = 1 << BUCKET_BITS;

/// Bits 79..16 of a fingerprint: what the sorted vector stores of a
/// member (its top 16 bits are its bucket, the 16 below are not compared).
fn low_of(fp: Fingerprint) -> u64 {
    let (hi, lo) = (fp.hi, fp.lo);
    hi << BUCKET_BITS | u64::from(lo >> (32 - BUCKET_BITS))
}

/// The fingerprint (80 bits, the rest zero) of stored bits `low` in
/// `bucket`.
#[cfg(test)]
fn with_bucket(low: u64, bucket: usize) -> Fingerprint {
    Fingerprint {
        hi: (bucket as u64) << (64 - BUCKET_BITS) | low >> BUCKET_BITS,
        lo: (low as u32) << (32 - BUCKET_BITS),
    }
}

/// The sorted members and their bucket index.
#[derive(Default)]
struct Sorted {
    /// The members' bits 79..16, in order of bucket, then of those bits.
    low: Vec<u64>,
    /// Where each bucket starts in `low`, plus the end (`BUCKETS + 1`
    /// entries; empty until the first merge).
    starts: Vec<usize>,
    epoch: u64,
}

/// What a look-up in the sorted members found, and when.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Probe {
    found: bool,
    epoch: u64,
}

/// Looks fingerprints up in a set's sorted members from another thread.
#[derive(Clone)]
pub(crate) struct SortedProbe(Arc<RwLock<Sorted>>);

impl SortedProbe {
    /// Looks every fingerprint `each` yields up under one read lock, and
    /// hands each result back.
    pub(crate) fn probe_all<'a>(
        &self,
        each: impl Iterator<Item = (Fingerprint, &'a mut Option<Probe>)>,
    ) {
        let sorted = self.0.read().unwrap_or_else(|e| e.into_inner());
        for (fp, out) in each {
            *out = Some(Probe {
                found: sorted.contains(fp),
                epoch: sorted.epoch,
            });
        }
    }
}

impl FingerprintSet {
    /// An empty set with room reserved for `n` members (address space only:
    /// untouched pages cost no memory).
    pub(crate) fn with_capacity(n: usize) -> Self {
        FingerprintSet {
            shared: Arc::new(RwLock::new(Sorted {
                low: Vec::with_capacity(n),
                starts: Vec::new(),
                epoch: 0,
            })),
            epoch: 0,
            sorted_len: 0,
            recent: RecentSet::default(),
        }
    }

    /// A handle for looking members up ahead of time on other threads.
    pub(crate) fn probe(&self) -> SortedProbe {
        SortedProbe(self.shared.clone())
    }

    fn sorted(&self) -> RwLockReadGuard<'_, Sorted> {
        self.shared.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The number of members.
    pub(crate) fn len(&self) -> usize {
        self.sorted_len + self.recent.len()
    }

    /// Whether the set has no members.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `fp` is a member.
    pub(crate) fn contains(&self, fp: Fingerprint) -> bool {
        let fp = fp.prefix80();
        self.recent.contains(&fp) || self.sorted().contains(fp)
    }

    /// Adds `fp`; false when it was a member already.
    pub(crate) fn insert(&mut self, fp: Fingerprint) -> bool {
        self.insert_probed(fp, None)
    }

    /// Adds `fp`, given what a [`SortedProbe`] found for it (any time
    /// before): false when it was a member already.
    pub(crate) fn insert_probed(&mut self, fp: Fingerprint, probe: Option<Probe>) -> bool {
        let fp = fp.prefix80();
        let in_sorted = match probe {
            // Members are never removed: found then means a member now.
            Some(p) if p.found => true,
            // Not found, and no merge since: still not in the vector.
            Some(p) if p.epoch == self.epoch => false,
            _ => self.sorted().contains(fp),
        };
        if in_sorted || !self.recent.insert(fp) {
            return false;
        }
        // At least 32k, and a 64th of the set: a merge is one pass over the
        // vector (about 2 ms a million members), so merges can stay
        // frequent while the hash set stays small (under 1.5 bytes a member).
        if self.recent.len() >= RECENT_MAX.max(self.sorted_len / 64) {
            self.merge();
        }
        true
    }

    /// Moves the recent inserts into the sorted vector.
    fn merge(&mut self) {
        let mut new: Vec<Fingerprint> = self.recent.drain().collect();
        new.sort_unstable();
        let mut sorted = self.shared.write().unwrap_or_else(|e| e.into_inner());
        sorted.merge(&new);
        sorted.epoch += 1;
        self.epoch = sorted.epoch;
        self.sorted_len = sorted.low.len();
    }
}

impl Sorted {
    fn contains(&self, fp: Fingerprint) -> bool {
        let b = bucket(fp);
        let Some(bucket) = self.bucket_range(b).and_then(|r| self.low.get(r)) else {
            return false;
        };
        // Fingerprints are uniform: the bits below the bucket's say where in
        // the bucket to look (one cache line, most often), and the value
        // there says which side holds the rest.
        let want = low_of(fp);
        let guess = ((u128::from(want) * bucket.len() as u128) >> 64) as usize;
        match bucket.get(guess) {
            None => false,
            Some(&v) if v == want => true,
            Some(&v) if v < want => Self::scan_up(&bucket[guess + 1..], want),
            Some(_) => Self::scan_down(&bucket[..guess], want),
        }
    }

    /// Whether sorted `s` holds `want`, looking from its start: a few steps,
    /// then a binary search (clustered values stay logarithmic).
    fn scan_up(s: &[u64], want: u64) -> bool {
        for (i, &v) in s.iter().take(4).enumerate() {
            if v >= want {
                return v == want;
            }
            if i == 3 {
                return s[4..].binary_search(&want).is_ok();
            }
        }
        false
    }

    /// Whether sorted `s` holds `want`, looking from its end.
    fn scan_down(s: &[u64], want: u64) -> bool {
        for (i, &v) in s.iter().rev().take(4).enumerate() {
            if v <= want {
                return v == want;
            }
            if i == 3 {
                return s[..s.len() - 4].binary_search(&want).is_ok();
            }
        }
        false
    }

    /// The range of `low` holding bucket `b`.
    fn bucket_range(&self, b: usize) -> Option<std::ops::Range<usize>> {
        Some(*self.starts.get(b)?..*self.starts.get(b + 1)?)
    }

    /// Merges sorted `new` (none of them members) in.
    fn merge(&mut self, new: &[Fingerprint]) {
        if self.starts.is_empty() {
            self.starts = vec![0; BUCKETS + 1];
        }
        let old = self.low.len();
        let total = old + new.len();
        if self.low.capacity() < total {
            // Grow by an eighth (not double), so the spare room stays small.
            self.low.reserve_exact(new.len().max(old / 8));
        }
        self.low.resize(total, 0);
        // From the back, one pass: the old values above each new value (the
        // rest of the higher buckets, then a run of its own bucket found by
        // walking down, memory in order) move up in one copy, and the new
        // value goes below them.
        let (mut i, mut k) = (old, total);
        for &v in new.iter().rev() {
            let b = bucket(v);
            let want = low_of(v);
            let floor = self.starts[b];
            let mut s = i.min(self.starts[b + 1]);
            while s > floor && self.low[s - 1] > want {
                s -= 1;
            }
            self.low.copy_within(s..i, k - (i - s));
            k -= i - s + 1;
            i = s;
            self.low[k] = want;
        }
        // Each start moves up by the new values in the buckets below it.
        let mut below = 0usize;
        for (b, start) in self.starts.iter_mut().enumerate() {
            while below < new.len() && bucket(new[below]) < b {
                below += 1;
            }
            *start += below;
        }
    }

    /// Every member, in order.
    #[cfg(test)]
    fn members(&self) -> Vec<Fingerprint> {
        (0..BUCKETS)
            .flat_map(|b| {
                let r = self.bucket_range(b).unwrap_or_default();
                self.low[r].iter().map(move |&l| with_bucket(l, b))
            })
            .collect()
    }
}

/// The bucket of `fp`: its top 16 bits.
fn bucket(fp: Fingerprint) -> usize {
    (fp.top() >> (64 - BUCKET_BITS)) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn many_members_stay_members_across_merges() {
        let mut set = FingerprintSet::default();
        let n = (RECENT_MAX * 3 + 17) as u64;
        for i in 0..n {
            assert!(set.insert(fingerprint(&i.to_string())), "{i}");
        }
        assert_eq!(set.len(), n as usize);
        for i in 0..n {
            assert!(!set.insert(fingerprint(&i.to_string())), "{i} twice");
            assert!(set.contains(fingerprint(&i.to_string())));
        }
        assert!(!set.contains(fingerprint("absent")));
        let members = set.sorted().members();
        assert_eq!(members.len(), set.sorted_len);
        assert!(members.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn keys_ground_to_share_low_bits_still_spread_in_the_hash_set() {
        use std::hash::BuildHasher;
        // 1,000 fingerprints equal in the low 32 bits of their top word (what
        // picks a slot in an unkeyed table): their hashes' low bits spread.
        let build = SeededHasher::default();
        let low: HashSet<u64> = (0..1000u128)
            .map(|i| {
                build.hash_one(Fingerprint::from_u128((i << 96) | (0xabcd_1234 << 64))) & 0xffff
            })
            .collect();
        assert!(low.len() > 900, "{}", low.len());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The set answers like a `HashSet` for any values, uniform or not
        /// (small and clustered values defeat the position guess).
        #[test]
        fn behaves_like_a_hash_set(
            values in prop::collection::vec(
                prop_oneof![
                    any::<u128>(),
                    (0u128..64).prop_map(|v| v << 48),
                    (u128::MAX - (64 << 48))..=u128::MAX,
                    // Equal in the top 80 bits, different below.
                    (0u128..64).prop_map(|v| v << 32 | 7 << 100),
                ],
                0..3000,
            ),
            merge_every in 1usize..200,
        ) {
            let mut set = FingerprintSet::default();
            let mut model = HashSet::new();
            for (n, v) in values.iter().enumerate() {
                let fp = Fingerprint::from_u128(*v);
                prop_assert_eq!(set.insert(fp), model.insert(v >> 48));
                if n % merge_every == 0 {
                    set.merge();
                }
            }
            prop_assert_eq!(set.len(), model.len());
            for v in &values {
                prop_assert!(set.contains(Fingerprint::from_u128(*v)));
            }
            for v in [0u128, 1 << 48, 63 << 48, 1 << 32 | 7 << 100, u128::MAX, u128::MAX / 2] {
                prop_assert_eq!(set.contains(Fingerprint::from_u128(v)), model.contains(&(v >> 48)));
            }
            // Merged, the stored low bits and their buckets give back every
            // member, in order.
            set.merge();
            let mut want: Vec<u128> = model.into_iter().collect();
            want.sort_unstable();
            let want: Vec<Fingerprint> =
                want.into_iter().map(|v| Fingerprint::from_u128(v << 48)).collect();
            prop_assert_eq!(set.sorted().members(), want);
        }

        /// A fingerprint's stored bits and its bucket give back its top 80
        /// bits, and the stored bits order as those 80 bits do.
        #[test]
        fn stored_bits_and_bucket_give_the_top_80_bits_back(a in any::<u128>(), b in any::<u128>()) {
            let (fa, fb) = (Fingerprint::from_u128(a), Fingerprint::from_u128(b));
            prop_assert_eq!(with_bucket(low_of(fa), bucket(fa)), fa.prefix80());
            prop_assert_eq!(
                (bucket(fa), low_of(fa)).cmp(&(bucket(fb), low_of(fb))),
                (a >> 48).cmp(&(b >> 48))
            );
        }

        /// Probes taken ahead of time, as parsing threads take them (a block
        /// at a time, before the blocks ahead of it are inserted, merges in
        /// between), give the answers of a `HashSet`.
        #[test]
        fn probes_taken_early_answer_like_a_hash_set(
            values in prop::collection::vec(0u128..400, 0..3000),
            block in 1usize..300,
            lag in 0usize..4,
            merge_every in 1usize..500,
        ) {
            let mut set = FingerprintSet::default();
            let probe = set.probe();
            let mut model = HashSet::new();
            let mut pending: std::collections::VecDeque<Vec<(Fingerprint, Option<Probe>)>> =
                Default::default();
            let mut n = 0usize;
            let mut insert_block = |set: &mut FingerprintSet, b: Vec<(Fingerprint, Option<Probe>)>| {
                for (fp, p) in b {
                    let v = u128::from(fp.hi) << 64 | u128::from(fp.lo) << 32;
                    let v = v >> 48;
                    assert_eq!(set.insert_probed(fp, p), model.insert(v), "{fp:?}");
                    n += 1;
                    if n.is_multiple_of(merge_every) {
                        set.merge();
                    }
                }
            };
            for chunk in values.chunks(block) {
                let mut b: Vec<_> = chunk
                    .iter()
                    .map(|v| (Fingerprint::from_u128(v << 32 | v << 100), None))
                    .collect();
                probe.probe_all(b.iter_mut().map(|(fp, p)| (*fp, p)));
                pending.push_back(b);
                // Blocks are inserted `lag` blocks after they were probed.
                while pending.len() > lag {
                    let b = pending.pop_front().unwrap();
                    insert_block(&mut set, b);
                }
            }
            while let Some(b) = pending.pop_front() {
                insert_block(&mut set, b);
            }
        }

        /// Fingerprints order as the 96-bit numbers they hold.
        #[test]
        fn fingerprints_order_as_numbers(a in any::<u128>(), b in any::<u128>()) {
            prop_assert_eq!(
                Fingerprint::from_u128(a).cmp(&Fingerprint::from_u128(b)),
                (a >> 32).cmp(&(b >> 32))
            );
        }
    }
}
