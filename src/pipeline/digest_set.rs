//! A set of 64-bit value digests that grows in small steps. A hash table grows by moving into
//! one twice its size, holding both meanwhile: for the cumulative Uniqueness state (a digest per
//! distinct value ever seen, millions of them) that was a passing extra of twice the whole set.
//! Split by the digests' top bits into 64 tables, each grows on its own, so the passing extra is
//! a 64th of that and the whole set never moves at once.

use std::collections::HashSet;

/// The digests are XXH64 values, already spread evenly: a cheap multiplicative hasher suffices.
type Shard = HashSet<u64, rustc_hash::FxBuildHasher>;

const SHARD_BITS: u32 = 6;
const SHARDS: usize = 1 << SHARD_BITS;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestSet {
    shards: Box<[Shard]>,
    len: usize,
}

impl Default for DigestSet {
    fn default() -> DigestSet {
        DigestSet::with_capacity(0)
    }
}

impl DigestSet {
    /// An empty set with room for about `capacity` digests.
    pub fn with_capacity(capacity: usize) -> DigestSet {
        // Digests spread evenly but not exactly: an eighth more per shard keeps most from growing.
        let per_shard = capacity.div_ceil(SHARDS);
        let per_shard = per_shard + per_shard / 8;
        DigestSet {
            shards: (0..SHARDS)
                .map(|_| Shard::with_capacity_and_hasher(per_shard, Default::default()))
                .collect(),
            len: 0,
        }
    }

    fn shard(digest: u64) -> usize {
        (digest >> (u64::BITS - SHARD_BITS)) as usize
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn contains(&self, digest: &u64) -> bool {
        self.shards[Self::shard(*digest)].contains(digest)
    }

    /// Adds `digest`; `false` when it was there already.
    pub fn insert(&mut self, digest: u64) -> bool {
        let added = self.shards[Self::shard(digest)].insert(digest);
        self.len += usize::from(added);
        added
    }

    /// Takes `digest` out; `false` when it was not there.
    pub fn remove(&mut self, digest: &u64) -> bool {
        let removed = self.shards[Self::shard(*digest)].remove(digest);
        self.len -= usize::from(removed);
        removed
    }

    pub fn iter(&self) -> impl Iterator<Item = &u64> + '_ {
        self.shards.iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    proptest! {
        /// Any sequence of inserts and removes leaves the set a plain set would hold.
        #[test]
        fn behaves_as_a_set(ops in proptest::collection::vec((any::<bool>(), 0u64..64, any::<u8>()), 0..400)) {
            let mut set = DigestSet::with_capacity(8);
            let mut model = BTreeSet::new();
            for (insert, high, low) in ops {
                // Few distinct digests, spread over every shard, so that repeats happen.
                let digest = (high << 58) | u64::from(low % 4);
                if insert {
                    prop_assert_eq!(set.insert(digest), model.insert(digest));
                } else {
                    prop_assert_eq!(set.remove(&digest), model.remove(&digest));
                }
                prop_assert_eq!(set.len(), model.len());
                prop_assert_eq!(set.contains(&digest), model.contains(&digest));
            }
            let held: BTreeSet<u64> = set.iter().copied().collect();
            prop_assert_eq!(held.len(), set.len());
            prop_assert_eq!(held, model);
        }
    }

    #[test]
    fn sets_with_the_same_digests_are_equal_whatever_the_order_and_capacity() {
        let mut a = DigestSet::with_capacity(0);
        let mut b = DigestSet::with_capacity(10_000);
        for d in [u64::MAX, 0, 1 << 63, 42] {
            a.insert(d);
        }
        for d in [42, 1 << 63, 0, u64::MAX] {
            b.insert(d);
        }
        assert_eq!(a, b);
        b.remove(&42);
        assert_ne!(a, b);
    }
}
