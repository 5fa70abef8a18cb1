//! Base distributions: the standard normal, the standard logistic, a uniform box, a learnable
//! diagonal normal and a learnable mixture of diagonal normals.
//!
//! Except for the standard normal (whose density does not care about the order of the columns),
//! every function reads the logical vector `z_i = z[:, cols[i]]`: `cols[i]` is the physical
//! column of logical dimension `i`, as everywhere in the runtime, and the learnable parameters
//! are indexed by logical dimension. Samplers return `n x D` matrices in LOGICAL order; the
//! caller scatters them into physical columns. `*_nll_grad` OVERWRITES `g` with
//! `scale * d(-log p)/dz` (for the loss `scale * sum_rows(-log p)`, `scale` usually `1/n`) and
//! accumulates parameter gradients of that same loss. All samplers draw in f64, so an f32 and an
//! f64 flow with one seed sample the same points.

mod diag_normal;
mod mixture;
#[cfg(test)]
mod testutil;

pub use diag_normal::{diag_normal_log_prob, diag_normal_nll_grad, diag_normal_sample, DiagNormal};
pub use mixture::{mixture_log_prob, mixture_nll_grad, mixture_sample, Mixture};

use crate::real::Real;
use ndarray::{Array1, Array2, ArrayView2, ArrayViewMut2, Zip};
use rand::distr::Open01;
use rand_distr::{Distribution, StandardNormal};

/// ln(2 pi) / 2, the normalizer of a unit normal per dimension.
pub(crate) const HALF_LN_2PI: f64 = 0.918_938_533_204_672_8;

/// log N(z; 0, I) of every row: the sum over columns of `-z^2/2 - ln(2 pi)/2`.
pub fn std_normal_log_prob<T: Real>(z: ArrayView2<T>) -> Array1<T> {
    z.rows().into_iter().map(|row| std_normal_lp(row.iter().copied(), row.len())).collect()
}

/// [`std_normal_log_prob`] of one point (the per-sample API).
pub fn std_normal_log_prob_row<T: Real>(z: &[T]) -> T {
    std_normal_lp(z.iter().copied(), z.len())
}

/// `-|z|^2 / 2 - d ln(2 pi) / 2` of the `d` values of one point.
#[inline(always)]
fn std_normal_lp<T: Real>(z: impl Iterator<Item = T>, d: usize) -> T {
    let norm = T::of(0.5 * (2.0 * std::f64::consts::PI).ln() * d as f64);
    -T::of(0.5) * z.map(|v| v * v).sum::<T>() - norm
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

/// log of the standard logistic density `e^-v / (1 + e^-v)^2` of every row's logical vector
/// (as NICE), written as `-|v| - 2 ln(1 + e^-|v|)` so no exponential can overflow.
pub fn logistic_log_prob<T: Real>(cols: &[usize], z: ArrayView2<T>) -> Array1<T> {
    let two = T::of(2.0);
    let one = |v: T| {
        let a = v.abs();
        -a - two * (-a).exp().ln_1p()
    };
    z.rows().into_iter().map(|row| cols.iter().map(|&c| one(row[c])).sum()).collect()
}

/// `g = scale * d(-log p)/dz`; for the logistic, `d(-log p)/dv = 2 sigmoid(v) - 1 = tanh(v/2)`.
/// Columns outside `cols` get 0.
pub fn logistic_nll_grad<T: Real>(
    cols: &[usize],
    z: ArrayView2<T>,
    scale: T,
    mut g: ArrayViewMut2<T>,
) {
    debug_assert_eq!(z.dim(), g.dim(), "logistic_nll_grad: shapes");
    g.fill(T::zero());
    let half = T::of(0.5);
    for &c in cols {
        Zip::from(g.column_mut(c))
            .and(z.column(c))
            .for_each(|g, &v| *g = scale * (half * v).tanh());
    }
}

/// `n` rows of `d` independent standard logistic draws, `logit(u)` with `u ~ U(0, 1)` open so
/// no draw is infinite.
pub fn logistic_sample<T: Real>(n: usize, d: usize, rng: &mut dyn rand::Rng) -> Array2<T> {
    Array2::from_shape_simple_fn((n, d), || {
        let u: f64 = Open01.sample(rng);
        T::of(u.ln() - (-u).ln_1p())
    })
}

/// log of the uniform density on the box `[a, b]^D` (bounds included): `-D ln(b - a)` inside,
/// `-inf` outside. An empty box (`b <= a`, which the compiler rejects) has no density: `-inf`.
pub fn uniform_log_prob<T: Real>(a: f64, b: f64, cols: &[usize], z: ArrayView2<T>) -> Array1<T> {
    let inside_lp = T::of(-(cols.len() as f64) * (b - a).ln());
    let (ta, tb) = (T::of(a), T::of(b));
    let inside = |row: ndarray::ArrayView1<T>| cols.iter().all(|&c| row[c] >= ta && row[c] <= tb);
    let lp = |row| {
        if b > a && inside(row) {
            inside_lp
        } else {
            T::neg_infinity()
        }
    };
    z.rows().into_iter().map(lp).collect()
}

/// `g = 0`: the uniform density is flat inside the box, and outside it the loss is infinite
/// whatever z does locally (a gradient there could not help), so 0 is used too.
pub fn uniform_nll_grad<T: Real>(
    _a: f64,
    _b: f64,
    _cols: &[usize],
    z: ArrayView2<T>,
    _scale: T,
    mut g: ArrayViewMut2<T>,
) {
    debug_assert_eq!(z.dim(), g.dim(), "uniform_nll_grad: shapes");
    g.fill(T::zero());
}

/// `n` rows of `d` independent draws from `U[a, b)` (clamped to `b`, so rounding in
/// `a + (b - a) u` can never put a sample outside the support [`uniform_log_prob`] accepts).
pub fn uniform_sample<T: Real>(
    a: f64,
    b: f64,
    n: usize,
    d: usize,
    rng: &mut dyn rand::Rng,
) -> Array2<T> {
    Array2::from_shape_simple_fn((n, d), || {
        let u: f64 = rand::distr::StandardUniform.sample(rng);
        T::of((a + (b - a) * u).min(b))
    })
}

#[cfg(test)]
mod tests {
    use super::testutil::{check_z_grad, mass, moments, scatter};
    use super::*;
    use crate::layers::testutil::{rng, uniform};
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

    #[test]
    fn logistic_integrates_to_one_and_matches_closed_form() {
        let lp = |z: ArrayView2<f64>| logistic_log_prob(&[0], z);
        assert!((mass(lp, 1, -40.0, 40.0, 8000) - 1.0).abs() < 1e-6);
        let lp2 = |z: ArrayView2<f64>| logistic_log_prob(&[1, 0], z);
        assert!((mass(lp2, 2, -40.0, 40.0, 800) - 1.0).abs() < 1e-4);
        let v: f64 = 0.7;
        let exact = -v - 2.0 * (1.0 + (-v).exp()).ln();
        assert!((logistic_log_prob(&[0], array![[v]].view())[0] - exact).abs() < 1e-14);
        // Far tails stay finite (the naive formula overflows exp(1000)).
        let far: f64 = logistic_log_prob(&[0, 1], array![[1000.0, -1000.0]].view())[0];
        assert!((far + 2000.0).abs() < 1e-9, "{far}");
    }

    #[test]
    fn logistic_gradient_cols_and_samples() {
        let z = uniform(&mut rng(1), 5, 3, 4.0);
        let cols = [2, 0, 1];
        let lp = |z: ArrayView2<f64>| logistic_log_prob(&cols, z);
        check_z_grad(&z, 0.3, lp, |z, s, g| logistic_nll_grad(&cols, z, s, g));
        // Only the listed columns count, and a column outside them gets gradient 0.
        let one = logistic_log_prob(&[1], z.view());
        let by_hand: Array1<f64> =
            z.column(1).iter().map(|&v| logistic_log_prob(&[0], array![[v]].view())[0]).collect();
        assert_eq!(one, by_hand);
        let mut g = Array2::from_elem(z.dim(), 9.0);
        logistic_nll_grad(&[1], z.view(), 1.0, g.view_mut());
        assert!(g.column(0).iter().chain(g.column(2)).all(|&v| v == 0.0));
        let x: Array2<f64> = logistic_sample(40_000, 2, &mut rng(2));
        let x32: Array2<f32> = logistic_sample(40_000, 2, &mut rng(2));
        assert!(x.iter().zip(&x32).all(|(&a, &b)| a as f32 == b));
        let (mean, var) = moments(&x);
        let pi2_3 = std::f64::consts::PI.powi(2) / 3.0;
        for j in 0..2 {
            assert!(mean[j].abs() < 0.04 && (var[j] / pi2_3 - 1.0).abs() < 0.05, "{mean} {var}");
        }
    }

    #[test]
    fn uniform_box_density_gradient_and_samples() {
        let (a, b) = (-1.0, 2.0);
        let lp = |z: ArrayView2<f64>| uniform_log_prob(a, b, &[0], z);
        assert!((mass(lp, 1, -3.0, 4.0, 700) - 1.0).abs() < 1e-12);
        let lp2 = |z: ArrayView2<f64>| uniform_log_prob(a, b, &[1, 0], z);
        assert!((mass(lp2, 2, -3.0, 4.0, 140) - 1.0).abs() < 1e-12);
        let z = array![[0.0, 2.0], [-1.0, 1.5], [2.5, 0.0], [0.0, f64::NAN]];
        let lp = uniform_log_prob(a, b, &[1, 0], z.view());
        assert_eq!(lp[0], -2.0 * 3f64.ln());
        assert_eq!(lp[1], lp[0]);
        assert_eq!((lp[2], lp[3]), (f64::NEG_INFINITY, f64::NEG_INFINITY));
        // Only the listed columns are tested against the box.
        assert!(uniform_log_prob(a, b, &[1], z.view())[2].is_finite());
        assert!(uniform_log_prob(1.0, 1.0, &[0], z.view()).iter().all(|&v| v == f64::NEG_INFINITY));
        let mut g = Array2::from_elem(z.dim(), 5.0);
        uniform_nll_grad(a, b, &[1, 0], z.view(), 0.5, g.view_mut());
        assert!(g.iter().all(|&v| v == 0.0));
        let x: Array2<f64> = uniform_sample(a, b, 40_000, 2, &mut rng(3));
        assert!(x.iter().all(|&v| (a..=b).contains(&v)));
        let (mean, var) = moments(&x);
        for j in 0..2 {
            assert!((mean[j] - 0.5).abs() < 0.02 && (var[j] / 0.75 - 1.0).abs() < 0.03);
        }
    }

    #[test]
    fn scatter_places_logical_columns() {
        let logical = array![[1.0, 2.0, 3.0]];
        assert_eq!(scatter(&logical, &[2, 0, 1]), array![[2.0, 3.0, 1.0]]);
    }
}
