//! Where a face lives in a cluster of shards.
//!
//! A face of id `id` lives on shard [`shard_of`]`(id, shards)`: the id is mixed
//! (splitmix64's finaliser, so that consecutive ids spread evenly), then placed with jump
//! consistent hashing (Lamping and Veach, 2014). The function depends on nothing but the id and
//! the shard count, so every router computes the same answer, on any host, forever: changing
//! it would strand every stored face. Jump hashing also moves the fewest faces when a shard is
//! added (1/(n+1) of them), which a later resharding tool can rely on.

/// The shard (0-based) that holds the face `id` in a cluster of `shards` shards.
pub fn shard_of(id: u64, shards: usize) -> usize {
    assert!(shards > 0, "a cluster has at least one shard");
    // splitmix64's finaliser: consecutive ids get unrelated keys.
    let mut key = id;
    key = (key ^ (key >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    key = (key ^ (key >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    key ^= key >> 31;
    // Jump consistent hash: follow the key's jumps until one lands past the last bucket.
    let (mut bucket, mut next) = (0i64, 0i64);
    while next < shards as i64 {
        bucket = next;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        next = ((bucket + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    bucket as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_is_stable() {
        // These values are the contract: stored faces are found by them. Never change them.
        let placed: Vec<usize> = (0..12).map(|id| shard_of(id, 3)).collect();
        assert_eq!(placed, PLACED_0_TO_11_OF_3);
        assert!((0..1000).all(|id| shard_of(id, 1) == 0));
    }

    const PLACED_0_TO_11_OF_3: [usize; 12] = [0, 0, 2, 0, 1, 0, 2, 2, 0, 1, 2, 0];

    #[test]
    fn placement_spreads_evenly_and_moves_little() {
        let ids = 0..300_000u64;
        let mut counts = [0usize; 3];
        ids.clone().for_each(|id| counts[shard_of(id, 3)] += 1);
        assert!(counts.iter().all(|&c| (95_000..105_000).contains(&c)), "{counts:?}");
        // Going from 3 to 4 shards moves only faces to the new shard, about a quarter.
        let moved: Vec<u64> = ids.filter(|&id| shard_of(id, 3) != shard_of(id, 4)).collect();
        assert!(moved.iter().all(|&id| shard_of(id, 4) == 3));
        assert!((70_000..80_000).contains(&moved.len()), "{}", moved.len());
    }
}
