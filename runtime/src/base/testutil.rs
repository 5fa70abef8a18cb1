//! Shared checks for the base-distribution tests (f64): total mass by quadrature, sample
//! moments, gradients against central differences, and column permutations.

use crate::layers::testutil::{assert_close, fd_grad};
use ndarray::{Array1, Array2, ArrayView2, ArrayViewMut2};

/// The midpoint-rule integral of `exp(log_prob)` over the cube `[lo, hi]^d` (d = 1 or 2) with
/// `m` cells per side, evaluated in one batch.
pub(crate) fn mass(
    log_prob: impl Fn(ArrayView2<f64>) -> Array1<f64>,
    d: usize,
    lo: f64,
    hi: f64,
    m: usize,
) -> f64 {
    let h = (hi - lo) / m as f64;
    let at = |k: usize| lo + (k as f64 + 0.5) * h;
    let points = Array2::from_shape_fn((m.pow(d as u32), d), |(r, j)| {
        let k = if j == 0 { r % m } else { r / m };
        at(k)
    });
    log_prob(points.view()).mapv(f64::exp).sum() * h.powi(d as i32)
}

/// Column means and (population) variances of the rows of `x`.
pub(crate) fn moments(x: &Array2<f64>) -> (Array1<f64>, Array1<f64>) {
    let mean = x.mean_axis(ndarray::Axis(0)).unwrap_or_default();
    let var = x.var_axis(ndarray::Axis(0), 0.0);
    (mean, var)
}

/// The physical matrix whose column `cols[i]` holds logical column `i` of `logical`.
pub(crate) fn scatter(logical: &Array2<f64>, cols: &[usize]) -> Array2<f64> {
    let mut phys = Array2::zeros(logical.dim());
    for (i, &c) in cols.iter().enumerate() {
        phys.column_mut(c).assign(&logical.column(i));
    }
    phys
}

/// Checks `grad(z, scale, g)` (which must overwrite `g`) against the central-difference
/// gradient of `scale * sum_rows(-log_prob(z))`.
pub(crate) fn check_z_grad(
    z: &Array2<f64>,
    scale: f64,
    log_prob: impl Fn(ArrayView2<f64>) -> Array1<f64>,
    mut grad: impl FnMut(ArrayView2<f64>, f64, ArrayViewMut2<f64>),
) {
    let mut g = Array2::from_elem(z.dim(), f64::NAN); // stale values must be overwritten
    grad(z.view(), scale, g.view_mut());
    let flat: Vec<f64> = z.iter().copied().collect();
    let fd = fd_grad(&flat, |v| {
        let zz = Array2::from_shape_vec(z.dim(), v.to_vec()).expect("same shape");
        -scale * log_prob(zz.view()).sum()
    });
    assert_close("dz", g.as_slice().unwrap_or_default(), &fd, 1e-7);
}
