//! Exact tail probabilities and multiple-testing corrections, on statrs.
//!
//! Every p-value hallmark reports comes from here, so that each scheme uses the same, tested
//! tails. None of these use a normal approximation where an exact tail exists.

use statrs::distribution::{
    Binomial, ChiSquared, ContinuousCDF, DiscreteCDF, Gamma, Normal,
};

/// P[X >= k] for X ~ Binomial(n, p): the exact one-sided p-value of `k` successes in `n` trials.
///
/// Returns 1.0 for `k == 0`, 0.0 for `k > n`, and clamps into \[0, 1\].
pub fn binomial_sf(k: u64, n: u64, p: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if k > n {
        return 0.0;
    }
    if p <= 0.0 {
        return 0.0;
    }
    if p >= 1.0 {
        return 1.0;
    }
    match Binomial::new(p, n) {
        // statrs' sf(x) is P[X > x], so P[X >= k] = sf(k - 1).
        Ok(b) => clamp01(b.sf(k - 1)),
        Err(_) => 1.0,
    }
}

/// P[S >= s] for S ~ Gamma(shape = n, rate = 1): the exact null tail of a sum of `n`
/// independent Exp(1) scores (the Gumbel-max watermark score).
pub fn gamma_sf(s: f64, n: f64) -> f64 {
    if n <= 0.0 || s <= 0.0 {
        return 1.0;
    }
    match Gamma::new(n, 1.0) {
        Ok(g) => clamp01(g.sf(s)),
        Err(_) => 1.0,
    }
}

/// P[Z >= z] for Z ~ N(0, 1).
pub fn normal_sf(z: f64) -> f64 {
    match Normal::standard() {
        n if z.is_finite() => clamp01(n.sf(z)),
        _ if z.is_nan() => 1.0,
        _ => {
            if z > 0.0 {
                0.0
            } else {
                1.0
            }
        }
    }
}

/// P[X >= x] for X ~ chi-square with `k` degrees of freedom.
pub fn chi2_sf(x: f64, k: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    match ChiSquared::new(k) {
        Ok(c) => clamp01(c.sf(x)),
        Err(_) => 1.0,
    }
}

/// Fisher's method: combine independent p-values into one (chi-square with 2k dof).
pub fn fisher_combine(ps: &[f64]) -> f64 {
    if ps.is_empty() {
        return 1.0;
    }
    let x: f64 = ps
        .iter()
        .map(|&p| -2.0 * p.clamp(f64::MIN_POSITIVE, 1.0).ln())
        .sum();
    chi2_sf(x, 2.0 * ps.len() as f64)
}

/// Bonferroni adjustment: min(1, m p).
pub fn bonferroni(ps: &[f64]) -> Vec<f64> {
    let m = ps.len() as f64;
    ps.iter().map(|&p| clamp01(p * m)).collect()
}

/// Holm's step-down adjustment; controls the family-wise error rate under any dependence.
///
/// Returns adjusted p-values in the input order; reject hypothesis i at level α iff
/// `adjusted[i] <= α`.
pub fn holm(ps: &[f64]) -> Vec<f64> {
    let m = ps.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| ps[a].total_cmp(&ps[b]));
    let mut adjusted = vec![1.0; m];
    let mut running = 0.0f64;
    for (rank, &i) in order.iter().enumerate() {
        let a = clamp01(ps[i] * (m - rank) as f64);
        running = running.max(a);
        adjusted[i] = running;
    }
    adjusted
}

fn clamp01(x: f64) -> f64 {
    if x.is_nan() {
        1.0
    } else {
        x.clamp(0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binomial_exact_small() {
        // P[X >= 2], X ~ Bin(3, 0.5) = (3 + 1) / 8
        assert!((binomial_sf(2, 3, 0.5) - 0.5).abs() < 1e-12);
        assert!((binomial_sf(3, 3, 0.25) - 0.25f64.powi(3)).abs() < 1e-15);
        assert_eq!(binomial_sf(0, 10, 0.3), 1.0);
        assert_eq!(binomial_sf(11, 10, 0.3), 0.0);
    }

    #[test]
    fn binomial_far_tail_is_accurate() {
        // P[X >= 200] for Bin(200, 0.25) = 0.25^200, far below any normal approximation's reach.
        let p = binomial_sf(200, 200, 0.25);
        let want = 0.25f64.powi(200);
        assert!((p / want - 1.0).abs() < 1e-6, "{p} vs {want}");
    }

    #[test]
    fn gamma_matches_closed_form() {
        // Gamma(n, 1) tail = e^{-s} sum_{k<n} s^k / k!
        for &(s, n) in &[(3.0, 1u32), (10.0, 4), (50.0, 20)] {
            let mut term = 1.0;
            let mut sum = 0.0;
            for k in 0..n {
                if k > 0 {
                    term *= s / k as f64;
                }
                sum += term;
            }
            let want = (-s as f64).exp() * sum;
            let got = gamma_sf(s, n as f64);
            assert!((got / want - 1.0).abs() < 1e-9, "{got} vs {want}");
        }
    }

    #[test]
    fn holm_is_monotone_and_bounded() {
        let ps = [0.01, 0.04, 0.03, 0.5];
        let h = holm(&ps);
        assert!((h[0] - 0.04).abs() < 1e-12);
        assert!((h[2] - 0.09).abs() < 1e-12);
        assert!((h[1] - 0.09).abs() < 1e-12);
        assert!((h[3] - 0.5).abs() < 1e-12);
        assert_eq!(bonferroni(&[0.5, 0.6]), vec![1.0, 1.0]);
    }

    #[test]
    fn fisher_of_uniform_halves() {
        // two p = 1 combine to 1
        assert!((fisher_combine(&[1.0, 1.0]) - 1.0).abs() < 1e-12);
        assert!(fisher_combine(&[1e-10, 1e-10]) < 1e-15);
    }

    #[test]
    fn normal_tail() {
        assert!((normal_sf(0.0) - 0.5).abs() < 1e-12);
        assert!((normal_sf(4.0) - 3.167124183311992e-5).abs() < 1e-12);
    }
}
