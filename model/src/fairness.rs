//! How evenly events spread over vCPUs: what `Balanced` aims at, reported
//! the same way by the simulator and by the end-to-end test on real Xen.

/// Jain's fairness index of per-vCPU counts: 1 when all are equal, 1/n when
/// one vCPU takes everything; 0 for no counts at all.
pub fn jain(xs: &[u64]) -> f64 {
    let s: f64 = xs.iter().map(|&x| x as f64).sum();
    let s2: f64 = xs.iter().map(|&x| (x as f64) * (x as f64)).sum();
    if s2 == 0.0 {
        0.0
    } else {
        s * s / (xs.len() as f64 * s2)
    }
}

#[cfg(test)]
mod tests {
    use super::jain;

    #[test]
    fn jain_is_one_when_even_and_one_over_n_when_one_takes_all() {
        assert_eq!(jain(&[5, 5, 5, 5]), 1.0);
        assert_eq!(jain(&[0, 600, 0, 0]), 0.25);
        assert_eq!(jain(&[0, 0]), 0.0);
        assert!((jain(&[1, 3]) - 0.8).abs() < 1e-12);
    }
}
