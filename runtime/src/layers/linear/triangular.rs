//! The lower-triangular linear flow `x = W z + shift`, `W = strict_lower(lower) +
//! diag(exp(log_diag))`. The diagonal is parameterised by its logarithm, so `W` is invertible
//! for every parameter value and `log|det W| = sum log_diag`.

use super::{
    add_ld, add_outer, map_rows, map_rows_backward, mul_lower, mul_upper, solve_lower, solve_upper,
    sub_outer, visit_array, visit_array_mut,
};
use crate::params::Params;
use crate::real::Real;
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2};

/// Parameters of a lower-triangular flow. Only the strictly lower entries of `lower` are used;
/// the others are kept at zero by the constructors and always receive a zero gradient (they
/// are stored so the tensor is a plain `D x D` matrix in the parameter file).
#[derive(Clone, Debug, PartialEq)]
pub struct LowerTriangular<T> {
    pub log_diag: Array1<T>,
    pub lower: Array2<T>,
    pub shift: Array1<T>,
}

impl<T: Real> LowerTriangular<T> {
    /// The identity over `d` dimensions (also the gradient accumulator's shape).
    pub fn zeros(d: usize) -> Self {
        Self { log_diag: Array1::zeros(d), lower: Array2::zeros((d, d)), shift: Array1::zeros(d) }
    }

    /// `exp(log_diag)` and `exp(-log_diag)`, computed once per kernel call.
    fn diagonals(&self) -> (Vec<T>, Vec<T>) {
        self.log_diag.iter().map(|&s| (s.exp(), (-s).exp())).unzip()
    }
}

impl<T: Real> Params<T> for LowerTriangular<T> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &[usize], &[T])) {
        visit_array(prefix, "log_diag", &self.log_diag, f);
        visit_array(prefix, "lower", &self.lower, f);
        visit_array(prefix, "shift", &self.shift, f);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &[usize], &mut [T])) {
        visit_array_mut(prefix, "log_diag", &mut self.log_diag, f);
        visit_array_mut(prefix, "lower", &mut self.lower, f);
        visit_array_mut(prefix, "shift", &mut self.shift, f);
    }
}

/// Normalizing direction: `z = W^{-1} (x - shift)` by forward substitution,
/// `ld += -sum log_diag`.
pub fn lower_triangular_inverse<T: Real>(
    p: &LowerTriangular<T>,
    cols: &[usize],
    x: ArrayViewMut2<T>,
    ld: ArrayViewMut1<T>,
) {
    debug_assert_eq!(cols.len(), p.log_diag.len(), "lower_triangular_inverse: cols");
    let (_, inv) = p.diagonals();
    map_rows(cols, x, |r| {
        r.iter_mut().zip(&p.shift).for_each(|(v, &b)| *v -= b);
        solve_lower(p.lower.view(), Some(&inv), r);
    });
    add_ld(ld, -p.log_diag.sum());
}

/// Generative direction: `x = W z + shift`, `ld += sum log_diag`.
pub fn lower_triangular_forward<T: Real>(
    p: &LowerTriangular<T>,
    cols: &[usize],
    x: ArrayViewMut2<T>,
    ld: ArrayViewMut1<T>,
) {
    debug_assert_eq!(cols.len(), p.log_diag.len(), "lower_triangular_forward: cols");
    let (diag, _) = p.diagonals();
    map_rows(cols, x, |r| {
        mul_lower(p.lower.view(), Some(&diag), r);
        r.iter_mut().zip(&p.shift).for_each(|(v, &b)| *v += b);
    });
    add_ld(ld, p.log_diag.sum());
}

/// Backward pass of [`lower_triangular_inverse`]: `g` holds dLoss/dz on entry and dLoss/dx on
/// return; parameter gradients are accumulated into `grad`.
pub fn lower_triangular_backward<T: Real>(
    p: &LowerTriangular<T>,
    cols: &[usize],
    x_in: ArrayView2<T>,
    g: ArrayViewMut2<T>,
    dld: ArrayView1<T>,
    grad: &mut LowerTriangular<T>,
) {
    debug_assert_eq!(cols.len(), p.log_diag.len(), "lower_triangular_backward: cols");
    let (diag, inv) = p.diagonals();
    map_rows_backward(cols, x_in, g, |z, gr| {
        // Recompute z, then gx = W^{-T} gz by back substitution with the transpose.
        z.iter_mut().zip(&p.shift).for_each(|(v, &b)| *v -= b);
        solve_lower(p.lower.view(), Some(&inv), z);
        solve_upper(p.lower.t(), Some(&inv), gr);
        // dLoss/dW = -gx z^T; a diagonal entry is exp(log_diag), its own derivative.
        sub_outer(&mut grad.lower, gr, z, true);
        for i in 0..z.len() {
            grad.log_diag[i] -= gr[i] * z[i] * diag[i];
            grad.shift[i] -= gr[i];
        }
    });
    grad.log_diag -= dld.sum();
}

/// Backward pass of [`lower_triangular_forward`]: `z_in` is the forward kernel's input, `g`
/// holds dLoss/dx on entry and dLoss/dz on return; parameter gradients are accumulated into
/// `grad`.
pub fn lower_triangular_forward_backward<T: Real>(
    p: &LowerTriangular<T>,
    cols: &[usize],
    z_in: ArrayView2<T>,
    g: ArrayViewMut2<T>,
    dld: ArrayView1<T>,
    grad: &mut LowerTriangular<T>,
) {
    debug_assert_eq!(cols.len(), p.log_diag.len(), "lower_triangular_forward_backward: cols");
    let (diag, _) = p.diagonals();
    map_rows_backward(cols, z_in, g, |z, gr| {
        // dLoss/dW = gx z^T; a diagonal entry is exp(log_diag), its own derivative.
        add_outer(&mut grad.lower, T::one(), gr, z, true);
        for i in 0..z.len() {
            grad.log_diag[i] += gr[i] * z[i] * diag[i];
            grad.shift[i] += gr[i];
        }
        // gz = W^T gx; W^T is upper triangular with the same diagonal.
        mul_upper(p.lower.t(), Some(&diag), gr);
    });
    grad.log_diag += dld.sum();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::testutil::{check_layer, randomize, rng, uniform, Kernels};

    fn layer(p: LowerTriangular<f64>, cols: Vec<usize>) -> Kernels<LowerTriangular<f64>> {
        Kernels {
            p,
            cols,
            inverse: lower_triangular_inverse,
            forward: lower_triangular_forward,
            backward: lower_triangular_backward,
            forward_backward: lower_triangular_forward_backward,
        }
    }

    /// Random parameters, including nonzero unused entries of `lower` (the kernels must
    /// ignore them).
    fn random(d: usize, seed: u64) -> LowerTriangular<f64> {
        let mut p = LowerTriangular::zeros(d);
        randomize(&mut p, &mut rng(seed), 1.0);
        p
    }

    #[test]
    fn lower_triangular_kernels() {
        check_layer(&mut layer(random(4, 50), vec![2, 0, 3, 1]), 4, 51);
        check_layer(&mut layer(random(2, 52), vec![2, 0]), 3, 53);
    }

    #[test]
    fn unused_entries_are_ignored_and_get_zero_gradient() {
        let p = random(4, 54);
        let mut masked = p.clone();
        masked.lower.indexed_iter_mut().filter(|((i, j), _)| j >= i).for_each(|(_, v)| *v = 0.0);
        let x = uniform(&mut rng(55), 6, 4, 2.0);
        let cols = [3, 1, 0, 2];
        let run = |p: &LowerTriangular<f64>| {
            let (mut z, mut ld) = (x.clone(), Array1::zeros(6));
            lower_triangular_inverse(p, &cols, z.view_mut(), ld.view_mut());
            (z, ld)
        };
        assert_eq!(run(&p), run(&masked));
        let mut g = uniform(&mut rng(56), 6, 4, 1.0);
        let mut grad = LowerTriangular::zeros(4);
        let dld = Array1::ones(6);
        lower_triangular_backward(&p, &cols, x.view(), g.view_mut(), dld.view(), &mut grad);
        for ((i, j), &v) in grad.lower.indexed_iter() {
            assert!(i > j || v == 0.0, "lower[{i}, {j}] got gradient {v}");
        }
        assert!(grad.lower[[3, 0]] != 0.0);
    }

    #[test]
    fn zeros_is_the_identity() {
        let x = uniform(&mut rng(57), 3, 4, 2.0);
        let (mut y, mut ld) = (x.clone(), Array1::zeros(3));
        lower_triangular_forward(
            &LowerTriangular::zeros(4),
            &[1, 3, 0, 2],
            y.view_mut(),
            ld.view_mut(),
        );
        assert_eq!((y, ld), (x, Array1::<f64>::zeros(3)));
    }

    #[test]
    fn extreme_values_do_not_panic() {
        let mut p = LowerTriangular::<f32>::zeros(3);
        p.log_diag.assign(&ndarray::arr1(&[1e4, -1e4, f32::NAN]));
        p.lower.fill(f32::MAX);
        let mut x = Array2::from_elem((2, 3), f32::NEG_INFINITY);
        let mut ld = Array1::zeros(2);
        lower_triangular_forward(&p, &[0, 1, 2], x.view_mut(), ld.view_mut());
        lower_triangular_inverse(&p, &[0, 1, 2], x.view_mut(), ld.view_mut());
        let (mut g, mut grad) = (Array2::ones((2, 3)), LowerTriangular::zeros(3));
        lower_triangular_backward(&p, &[0, 1, 2], x.view(), g.view_mut(), ld.view(), &mut grad);
    }
}
