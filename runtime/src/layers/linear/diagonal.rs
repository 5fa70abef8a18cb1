//! The diagonal linear flow `x = exp(log_scale) * z + shift`. It is actnorm written in the
//! generative direction with the parameters in the notes' order; the kernels work column by
//! column so each `exp` is computed once per dimension.

use super::{add_ld, visit_array, visit_array_mut};
use crate::params::Params;
use crate::real::Real;
use ndarray::{Array1, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Zip};

/// `W = diag(exp(log_scale))`, `b = shift`.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagonal<T> {
    pub log_scale: Array1<T>,
    pub shift: Array1<T>,
}

impl<T: Real> Diagonal<T> {
    /// The identity over `d` dimensions (also the gradient accumulator's shape).
    pub fn zeros(d: usize) -> Self {
        Self { log_scale: Array1::zeros(d), shift: Array1::zeros(d) }
    }
}

impl<T: Real> Params<T> for Diagonal<T> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &[usize], &[T])) {
        visit_array(prefix, "log_scale", &self.log_scale, f);
        visit_array(prefix, "shift", &self.shift, f);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &[usize], &mut [T])) {
        visit_array_mut(prefix, "log_scale", &mut self.log_scale, f);
        visit_array_mut(prefix, "shift", &mut self.shift, f);
    }
}

/// Normalizing direction: `z = (x - shift) * exp(-log_scale)`, `ld += -sum log_scale`.
pub fn diagonal_inverse<T: Real>(
    p: &Diagonal<T>,
    cols: &[usize],
    mut x: ArrayViewMut2<T>,
    ld: ArrayViewMut1<T>,
) {
    debug_assert_eq!(cols.len(), p.log_scale.len(), "diagonal_inverse: cols");
    for (i, &c) in cols.iter().enumerate() {
        let (b, e) = (p.shift[i], (-p.log_scale[i]).exp());
        x.column_mut(c).mapv_inplace(|v| (v - b) * e);
    }
    add_ld(ld, -p.log_scale.sum());
}

/// Generative direction: `x = z * exp(log_scale) + shift`, `ld += sum log_scale`.
pub fn diagonal_forward<T: Real>(
    p: &Diagonal<T>,
    cols: &[usize],
    mut x: ArrayViewMut2<T>,
    ld: ArrayViewMut1<T>,
) {
    debug_assert_eq!(cols.len(), p.log_scale.len(), "diagonal_forward: cols");
    for (i, &c) in cols.iter().enumerate() {
        let (b, e) = (p.shift[i], p.log_scale[i].exp());
        x.column_mut(c).mapv_inplace(|v| v * e + b);
    }
    add_ld(ld, p.log_scale.sum());
}

/// Backward pass of [`diagonal_inverse`]: `g` holds dLoss/dz on entry and dLoss/dx on return;
/// parameter gradients are accumulated into `grad`.
pub fn diagonal_backward<T: Real>(
    p: &Diagonal<T>,
    cols: &[usize],
    x_in: ArrayView2<T>,
    mut g: ArrayViewMut2<T>,
    dld: ArrayView1<T>,
    grad: &mut Diagonal<T>,
) {
    debug_assert_eq!(x_in.dim(), g.dim(), "diagonal_backward: shapes");
    let dld_sum = dld.sum();
    for (i, &c) in cols.iter().enumerate() {
        let (b, e) = (p.shift[i], (-p.log_scale[i]).exp());
        // dz/dlog_scale = -z and dz/dshift = -e, so both come from sums over the column.
        let (mut sum_gx, mut sum_gz_z) = (T::zero(), T::zero());
        Zip::from(g.column_mut(c)).and(x_in.column(c)).for_each(|g, &x| {
            sum_gz_z += *g * (x - b) * e;
            *g *= e;
            sum_gx += *g;
        });
        grad.shift[i] -= sum_gx;
        grad.log_scale[i] -= sum_gz_z + dld_sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::testutil::{check_layer, randomize, rng, uniform, Kernels};
    use ndarray::Array2;

    fn layer(p: Diagonal<f64>, cols: Vec<usize>) -> Kernels<Diagonal<f64>> {
        Kernels {
            p,
            cols,
            inverse: diagonal_inverse,
            forward: diagonal_forward,
            backward: diagonal_backward,
        }
    }

    #[test]
    fn diagonal_kernels() {
        let mut p = Diagonal::zeros(4);
        randomize(&mut p, &mut rng(40), 1.0);
        check_layer(&mut layer(p, vec![2, 0, 3, 1]), 4, 41);
        // Acting on a subset of the columns leaves the others alone.
        let mut p2 = Diagonal::zeros(2);
        randomize(&mut p2, &mut rng(42), 1.0);
        check_layer(&mut layer(p2, vec![2, 0]), 3, 43);
    }

    #[test]
    fn zeros_is_the_identity() {
        let x = uniform(&mut rng(44), 3, 4, 2.0);
        let (mut y, mut ld) = (x.clone(), Array1::zeros(3));
        diagonal_inverse(&Diagonal::zeros(4), &[1, 3, 0, 2], y.view_mut(), ld.view_mut());
        assert_eq!((y, ld), (x, Array1::<f64>::zeros(3)));
    }

    #[test]
    fn extreme_values_do_not_panic() {
        let mut p = Diagonal::<f32>::zeros(3);
        p.log_scale.assign(&ndarray::arr1(&[1e4, -1e4, f32::NAN]));
        let mut x = Array2::from_elem((2, 3), f32::INFINITY);
        let mut ld = Array1::zeros(2);
        diagonal_forward(&p, &[0, 1, 2], x.view_mut(), ld.view_mut());
        diagonal_inverse(&p, &[0, 1, 2], x.view_mut(), ld.view_mut());
        let mut g = Array2::ones((2, 3));
        let mut grad = Diagonal::zeros(3);
        diagonal_backward(&p, &[0, 1, 2], x.view(), g.view_mut(), ld.view(), &mut grad);
    }
}
