//! Which faces the delete step removes, and the ground truth once they are gone.
//!
//! The removed faces are a pseudo-random share of the ids (a hash of the id and a seed, so the
//! choice is independent of identities and metadata and the same on every run). The truth of
//! the plain query set after the removal is derived from the stored truth: a row lists the
//! best [`K_TRUTH`](crate::dataset::K_TRUTH) faces, so the best faces of those that remain are
//! the best remaining faces, as long as the row was not cut short by the removal (at least
//! `k` remain, or the row already held every face). When that fails for some row the caller
//! computes the truth again over the remaining faces.

use crate::truth::Truth;

/// `removed[id]`: whether face `id` is removed; about `share` of `count` faces.
pub fn removed_ids(count: usize, share: f64, seed: u64) -> Vec<bool> {
    let threshold = (share.clamp(0.0, 1.0) * u64::MAX as f64) as u64;
    (0..count as u64).map(|id| mix(seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15)) < threshold).collect()
}

/// SplitMix64's finaliser.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The truth once the `removed` faces are gone, from the truth before (rows of at most
/// `k_truth` entries); `None` if some full row keeps fewer than `k` entries (faces outside the
/// row may then be among the best that remain). A row shorter than `k_truth` listed every
/// candidate face, so whatever remains of it is complete.
pub fn truth_without(truth: &Truth, removed: &[bool], k: usize, k_truth: usize) -> Option<Truth> {
    let kept = |id: u32| !removed.get(id as usize).copied().unwrap_or(false);
    let mut after = Truth { ids: Vec::with_capacity(truth.ids.len()), scores: Vec::with_capacity(truth.ids.len()) };
    for (row_ids, row_scores) in truth.ids.iter().zip(&truth.scores) {
        let (ids, scores): (Vec<u32>, Vec<f32>) =
            row_ids.iter().zip(row_scores).filter(|(&id, _)| kept(id)).map(|(&id, &s)| (id, s)).unzip();
        if ids.len() < k && row_ids.len() >= k_truth {
            return None;
        }
        after.ids.push(ids);
        after.scores.push(scores);
    }
    Some(after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_about_the_share_asked_for_and_always_the_same() {
        let removed = removed_ids(100_000, 0.1, 42);
        let n = removed.iter().filter(|&&r| r).count();
        assert!((9_500..10_500).contains(&n), "{n}");
        assert_eq!(removed, removed_ids(100_000, 0.1, 42));
        assert_ne!(removed, removed_ids(100_000, 0.1, 43));
        assert!(removed_ids(1000, 0.0, 1).iter().all(|&r| !r));
        assert!(removed_ids(1000, 1.0, 1).iter().all(|&r| r));
        // Not a pattern of the id (faces i and i + identities are one identity in cone data).
        let every_tenth = (0..100_000).step_by(10).filter(|&i| removed[i]).count();
        assert!((800..1_200).contains(&every_tenth), "{every_tenth}");
    }

    #[test]
    fn the_truth_after_removal_skips_removed_faces() {
        let truth = Truth {
            ids: vec![vec![5, 1, 7, 2], vec![3, 4, 0, 6]],
            scores: vec![vec![0.9, 0.8, 0.7, 0.6], vec![0.95, 0.5, 0.4, 0.3]],
        };
        let mut removed = vec![false; 100];
        removed[1] = true;
        removed[3] = true;
        let after = truth_without(&truth, &removed, 2, 4).unwrap();
        assert_eq!(after.ids, vec![vec![5, 7, 2], vec![4, 0, 6]]);
        assert_eq!(after.scores, vec![vec![0.9, 0.7, 0.6], vec![0.5, 0.4, 0.3]]);
        // Fewer than k left in a row cut at k_truth: the rest of the gallery may hold better faces.
        assert!(truth_without(&truth, &removed, 4, 4).is_none());
        // Rows shorter than k_truth held every candidate, so a short row is right.
        let short = truth_without(&truth, &removed, 4, 5).unwrap();
        assert_eq!(short.ids[0], vec![5, 7, 2]);
    }
}
