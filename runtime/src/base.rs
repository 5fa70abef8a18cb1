//! The standard normal base distribution.

use crate::real::Real;
use ndarray::{Array1, Array2, ArrayView2, ArrayViewMut2, Zip};
use rand_distr::{Distribution, StandardNormal};

/// log N(z; 0, I) of every row: the sum over columns of `-z^2/2 - ln(2 pi)/2`.
pub fn std_normal_log_prob<T: Real>(z: ArrayView2<T>) -> Array1<T> {
    let half = T::of(0.5);
    let norm = T::of(0.5 * (2.0 * std::f64::consts::PI).ln() * z.ncols() as f64);
    z.rows().into_iter().map(|row| -half * row.iter().map(|&v| v * v).sum::<T>() - norm).collect()
}

/// `g = scale * dNLL/dz = scale * z` (overwrites `g`; `scale` is usually `1/n` for a mean NLL).
pub fn std_normal_nll_grad<T: Real>(z: ArrayView2<T>, scale: T, g: ArrayViewMut2<T>) {
    debug_assert_eq!(z.dim(), g.dim(), "std_normal_nll_grad: shapes");
    Zip::from(g).and(z).for_each(|g, &z| *g = scale * z);
}

/// `n` rows of `d` independent standard normal draws. Draws in f64 so both dtypes consume the
/// RNG identically (an f32 and an f64 flow with one seed sample the same points).
pub fn std_normal_sample<T: Real>(n: usize, d: usize, rng: &mut dyn rand::Rng) -> Array2<T> {
    Array2::from_shape_simple_fn((n, d), || {
        let v: f64 = StandardNormal.sample(rng);
        T::of(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn log_prob_matches_closed_form() {
        let z = array![[0.0, 0.0], [1.0, -2.0]];
        let lp = std_normal_log_prob(z.view());
        let c = (2.0 * std::f64::consts::PI).ln();
        assert!((lp[0] + c).abs() < 1e-12);
        assert!((lp[1] - (-2.5 - c)).abs() < 1e-12);
    }

    #[test]
    fn nll_grad_is_the_derivative_of_the_mean_nll() {
        let z = array![[0.3, -1.2, 0.7], [2.0, 0.1, -0.4]];
        let scale = 0.5;
        let mut g = Array2::zeros(z.dim());
        std_normal_nll_grad(z.view(), scale, g.view_mut());
        let nll = |z: &Array2<f64>| -scale * std_normal_log_prob(z.view()).sum();
        let h = 1e-6;
        for ((r, c), &gv) in g.indexed_iter() {
            let (mut zp, mut zm) = (z.clone(), z.clone());
            zp[[r, c]] += h;
            zm[[r, c]] -= h;
            let fd = (nll(&zp) - nll(&zm)) / (2.0 * h);
            assert!((fd - gv).abs() < 1e-8, "({r},{c}): {fd} vs {gv}");
        }
    }

    #[test]
    fn samples_are_standard_normal_and_reproducible() {
        let a: Array2<f64> = std_normal_sample(20_000, 2, &mut crate::rng_from_seed(7));
        let b: Array2<f32> = std_normal_sample(20_000, 2, &mut crate::rng_from_seed(7));
        assert_eq!(a.dim(), (20_000, 2));
        assert!(a.iter().zip(b.iter()).all(|(&x, &y)| (x as f32) == y));
        let mean = a.mean().unwrap_or(f64::NAN);
        let var = a.mapv(|v| v * v).mean().unwrap_or(f64::NAN) - mean * mean;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "var {var}");
    }
}
