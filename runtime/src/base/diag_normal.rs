//! A learnable diagonal normal base: `z_i ~ N(loc_i, exp(log_scale_i)^2)` independently.

use super::HALF_LN_2PI;
use crate::nn::{standard_slice, standard_slice_mut};
use crate::params::{join, Params};
use crate::real::Real;
use ndarray::{Array1, Array2, ArrayView2, ArrayViewMut2};
use rand_distr::{Distribution, StandardNormal};

/// The parameters of a diagonal normal over D logical dimensions (also its gradient).
#[derive(Clone, Debug, PartialEq)]
pub struct DiagNormal<T> {
    pub loc: Array1<T>,
    pub log_scale: Array1<T>,
}

impl<T: Real> DiagNormal<T> {
    /// The standard normal in `d` dimensions (and a zeroed gradient accumulator).
    pub fn zeros(d: usize) -> Self {
        Self { loc: Array1::zeros(d), log_scale: Array1::zeros(d) }
    }

    /// The event size D.
    pub fn dim(&self) -> usize {
        self.loc.len()
    }
}

impl<T: Real> Params<T> for DiagNormal<T> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &[usize], &[T])) {
        f(join(prefix, "loc"), &[self.loc.len()], standard_slice(&self.loc));
        f(join(prefix, "log_scale"), &[self.log_scale.len()], standard_slice(&self.log_scale));
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &[usize], &mut [T])) {
        let d = [self.loc.len()];
        f(join(prefix, "loc"), &d, standard_slice_mut(&mut self.loc));
        let d = [self.log_scale.len()];
        f(join(prefix, "log_scale"), &d, standard_slice_mut(&mut self.log_scale));
    }
}

/// log N(z; loc, diag(exp(2 log_scale))) of every row's logical vector `z_i = z[:, cols[i]]`.
pub fn diag_normal_log_prob<T: Real>(
    p: &DiagNormal<T>,
    cols: &[usize],
    z: ArrayView2<T>,
) -> Array1<T> {
    debug_assert_eq!(cols.len(), p.dim(), "diag_normal_log_prob: cols");
    // Per-dimension constants once, not per row: 1/scale and -log_scale - ln(2 pi)/2.
    let inv_scale = p.log_scale.mapv(|l| (-l).exp());
    let norm: T = p.log_scale.iter().map(|&l| -l - T::of(HALF_LN_2PI)).sum();
    let half = T::of(0.5);
    let row_lp = |row: ndarray::ArrayView1<T>| {
        let mut sq = T::zero();
        for (i, &c) in cols.iter().enumerate() {
            let u = (row[c] - p.loc[i]) * inv_scale[i];
            sq += u * u;
        }
        norm - half * sq
    };
    z.rows().into_iter().map(row_lp).collect()
}

/// `g = scale * d(-log p)/dz` (overwritten; columns outside `cols` get 0) and
/// `grad += d(scale * sum_rows(-log p))/d(loc, log_scale)`. With `u = (z - loc) / scale_i`:
/// `d(-log p)/dz_i = u / scale_i = -d(-log p)/dloc_i` and `d(-log p)/dlog_scale_i = 1 - u^2`.
pub fn diag_normal_nll_grad<T: Real>(
    p: &DiagNormal<T>,
    cols: &[usize],
    z: ArrayView2<T>,
    scale: T,
    mut g: ArrayViewMut2<T>,
    grad: &mut DiagNormal<T>,
) {
    debug_assert_eq!(z.dim(), g.dim(), "diag_normal_nll_grad: shapes");
    g.fill(T::zero());
    for (i, &c) in cols.iter().enumerate() {
        let inv_scale = (-p.log_scale[i]).exp();
        let (mut d_loc, mut d_log_scale) = (T::zero(), T::zero());
        for (gv, &zv) in g.column_mut(c).iter_mut().zip(z.column(c)) {
            let u = (zv - p.loc[i]) * inv_scale;
            let dz = scale * u * inv_scale;
            *gv = dz;
            d_loc -= dz;
            d_log_scale += scale * (T::one() - u * u);
        }
        grad.loc[i] += d_loc;
        grad.log_scale[i] += d_log_scale;
    }
}

/// `n` draws `loc + exp(log_scale) * eps`, `eps ~ N(0, I)`, as an `n x D` matrix in logical
/// order.
pub fn diag_normal_sample<T: Real>(
    p: &DiagNormal<T>,
    n: usize,
    rng: &mut dyn rand::Rng,
) -> Array2<T> {
    let scale = p.log_scale.mapv(|l| l.exp());
    let mut x = Array2::from_shape_simple_fn((n, p.dim()), || {
        let e: f64 = StandardNormal.sample(rng);
        T::of(e)
    });
    for mut row in x.rows_mut() {
        row.zip_mut_with(&scale, |v, &s| *v *= s);
        row += &p.loc;
    }
    x
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{check_z_grad, mass, moments, scatter};
    use super::*;
    use crate::layers::testutil::{assert_close, fd_grad, flatten, rng, unflatten, uniform};
    use ndarray::array;

    fn example() -> DiagNormal<f64> {
        DiagNormal { loc: array![0.5, -1.0, 2.0], log_scale: array![0.3, -0.4, 0.1] }
    }

    #[test]
    fn integrates_to_one_and_zeros_is_standard() {
        let p = DiagNormal { loc: array![0.4], log_scale: array![-0.3] };
        let lp = |z: ArrayView2<f64>| diag_normal_log_prob(&p, &[0], z);
        assert!((mass(lp, 1, -8.0, 8.0, 4000) - 1.0).abs() < 1e-9);
        let p2 = DiagNormal { loc: array![0.4, -1.0], log_scale: array![-0.3, 0.5] };
        let lp2 = |z: ArrayView2<f64>| diag_normal_log_prob(&p2, &[1, 0], z);
        assert!((mass(lp2, 2, -12.0, 12.0, 600) - 1.0).abs() < 1e-6);
        let z = uniform(&mut rng(4), 6, 3, 3.0);
        let std = crate::base::std_normal_log_prob(z.view());
        let ours = diag_normal_log_prob(&DiagNormal::zeros(3), &[0, 1, 2], z.view());
        assert_close(
            "zeros = standard normal",
            ours.as_slice().unwrap(),
            std.as_slice().unwrap(),
            1e-14,
        );
    }

    #[test]
    fn gradients_match_finite_differences() {
        let p = example();
        let cols = [2, 0, 1];
        let z = scatter(&uniform(&mut rng(5), 7, 3, 3.0), &cols);
        let lp = |z: ArrayView2<f64>| diag_normal_log_prob(&p, &cols, z);
        let mut sink = DiagNormal::zeros(3);
        check_z_grad(&z, 0.2, lp, |z, s, g| diag_normal_nll_grad(&p, &cols, z, s, g, &mut sink));
        // Accumulates: start from a non-zero gradient and subtract it afterwards.
        let mut grad = DiagNormal { loc: array![1.0, 2.0, 3.0], log_scale: array![4.0, 5.0, 6.0] };
        let before = flatten(&grad);
        let mut g = Array2::zeros(z.dim());
        diag_normal_nll_grad(&p, &cols, z.view(), 0.2, g.view_mut(), &mut grad);
        let got: Vec<f64> = flatten(&grad).iter().zip(&before).map(|(a, b)| a - b).collect();
        let fd = fd_grad(&flatten(&p), |v| {
            let mut q = p.clone();
            unflatten(&mut q, v);
            -0.2 * diag_normal_log_prob(&q, &cols, z.view()).sum()
        });
        assert_close("dparams", &got, &fd, 1e-7);
    }

    #[test]
    fn cols_pick_logical_dimensions() {
        let p = example();
        let logical = uniform(&mut rng(6), 4, 3, 2.0);
        let cols = [1, 2, 0];
        let a = diag_normal_log_prob(&p, &[0, 1, 2], logical.view());
        let b = diag_normal_log_prob(&p, &cols, scatter(&logical, &cols).view());
        assert_close("permuted", a.as_slice().unwrap(), b.as_slice().unwrap(), 1e-14);
    }

    #[test]
    fn samples_match_and_params_are_named() {
        let p = example();
        let x = diag_normal_sample(&p, 40_000, &mut rng(7));
        let (mean, var) = moments(&x);
        for i in 0..3 {
            let s2 = (2.0 * p.log_scale[i]).exp();
            assert!((mean[i] - p.loc[i]).abs() < 0.03, "mean {mean}");
            assert!((var[i] / s2 - 1.0).abs() < 0.04, "var {var}");
        }
        let p32 =
            DiagNormal { loc: p.loc.mapv(|v| v as f32), log_scale: p.log_scale.mapv(|v| v as f32) };
        let x32 = diag_normal_sample(&p32, 5, &mut rng(7));
        assert!(x32.iter().zip(&x).all(|(&a, &b)| (a - b as f32).abs() < 1e-5));
        let mut names = Vec::new();
        p.visit("base", &mut |n, s, _| names.push((n, s.to_vec())));
        assert_eq!(names, [("base.loc".into(), vec![3]), ("base.log_scale".into(), vec![3])]);
    }
}
