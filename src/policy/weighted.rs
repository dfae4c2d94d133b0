//! Weight arithmetic shared by the weighted policies.
//!
//! Owns the precomputed smooth weighted round-robin sequence and the
//! cumulative weights for weighted random picks. Both are built once per
//! pool snapshot, off the hot path, so a pick needs no lock and no mutable
//! shared state beyond one atomic cursor.

/// Longest smooth weighted round-robin cycle kept (indices are `u32`, so
/// 256 KiB at most); larger weight sums are scaled down to fit.
pub(super) const MAX_SEQUENCE: u64 = 1 << 16;

/// One full cycle of nginx's smooth weighted round robin over `weights`
/// (backend indices). Each round every backend gains its weight, the
/// largest current value wins (the first on ties) and pays back the total;
/// weights 5, 1, 1 give 0 0 1 0 2 0 0. Weights are divided by their greatest
/// common divisor first, so 10, 20 cycles like 1, 2. Zero weights never
/// appear. Empty when every weight is zero.
pub(super) fn smooth_sequence(weights: &[u32]) -> Vec<u32> {
    let weights = reduced(weights);
    let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut sequence = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        let mut best = 0;
        for (i, &w) in weights.iter().enumerate() {
            current[i] += i64::from(w);
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        sequence.push(best as u32);
    }
    sequence
}

/// Weights over their greatest common divisor, then scaled down (keeping
/// every non-zero weight at least 1) if the cycle would be too long.
fn reduced(weights: &[u32]) -> Vec<u32> {
    let divisor = weights.iter().fold(0, |g, &w| gcd(g, w)).max(1);
    let mut out: Vec<u32> = weights.iter().map(|&w| w / divisor).collect();
    let total: u64 = out.iter().map(|&w| u64::from(w)).sum();
    if total > MAX_SEQUENCE {
        for w in out.iter_mut().filter(|w| **w > 0) {
            let scaled = u64::from(*w) * MAX_SEQUENCE / total;
            *w = u32::try_from(scaled).unwrap_or(u32::MAX).max(1);
        }
    }
    out
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Running sums of `weights`: backend `i` owns the range
/// `cumulative[i-1]..cumulative[i]` of `0..total`.
pub(super) fn cumulative(weights: &[u32]) -> Vec<u64> {
    weights
        .iter()
        .scan(0u64, |sum, &w| {
            *sum += u64::from(w);
            Some(*sum)
        })
        .collect()
}

/// The backend owning point `r` of `0..total` in `cumulative`.
pub(super) fn owner(cumulative: &[u64], r: u64) -> usize {
    cumulative.partition_point(|&c| c <= r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letters(weights: &[u32]) -> String {
        smooth_sequence(weights)
            .iter()
            .map(|&i| (b'a' + i as u8) as char)
            .collect()
    }

    #[test]
    fn smooth_sequence_interleaves_heavy_and_light_backends() {
        assert_eq!(letters(&[5, 1, 1]), "aabacaa");
        assert_eq!(letters(&[1, 1, 1]), "abc");
        assert_eq!(letters(&[2, 1]), "aba");
        assert_eq!(letters(&[3, 2]), "ababa");
        assert_eq!(letters(&[1, 2, 3]), "cbacbc");
        assert_eq!(letters(&[4, 0, 2]), "aca");
    }

    #[test]
    fn smooth_sequence_reduces_by_common_divisor_and_skips_zero_weights() {
        assert_eq!(smooth_sequence(&[10, 20]), smooth_sequence(&[1, 2]));
        assert_eq!(smooth_sequence(&[0, 0]), Vec::<u32>::new());
        assert!(!smooth_sequence(&[0, 7, 3]).contains(&0));
    }

    #[test]
    fn long_cycles_are_scaled_but_keep_every_backend() {
        let weights: Vec<u32> = (0..1000).map(|i| 10_000 - i).collect();
        let seq = smooth_sequence(&weights);
        assert!(seq.len() as u64 <= MAX_SEQUENCE + 1000);
        for i in 0..1000u32 {
            assert!(seq.contains(&i), "backend {i} dropped");
        }
    }

    #[test]
    fn cumulative_ranges_belong_to_their_backend() {
        let c = cumulative(&[2, 0, 3]);
        assert_eq!(c, vec![2, 2, 5]);
        let owners: Vec<usize> = (0..5).map(|r| owner(&c, r)).collect();
        assert_eq!(owners, vec![0, 0, 2, 2, 2]);
    }
}
