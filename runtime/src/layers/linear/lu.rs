//! Glow's LU-decomposed linear flow `x = W z + shift` with `W = P L U`: `P` a fixed
//! permutation, `L` unit lower triangular, `U` upper triangular with diagonal
//! `sign * exp(log_s)` (`sign` fixed). `log|det W| = sum log_s`.
//!
//! The permutation convention: `(P v)[i] = v[perm[i]]`, i.e. `P[i, perm[i]] = 1`.

use super::{
    add_ld, add_outer, map_rows, map_rows_backward, mul_lower, mul_upper, solve_lower, solve_upper,
    sub_outer, visit_array, visit_array_mut,
};
use crate::params::Params;
use crate::real::Real;
use ndarray::{s, Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2};
use rand_distr::{Distribution, StandardNormal};

/// Parameters of an LU flow. `perm` and `sign` are fixed at construction and are not
/// parameters (they are not visited). Only the strictly lower entries of `lower` and the
/// strictly upper entries of `upper` are used; the others stay zero and get zero gradient.
#[derive(Clone, Debug, PartialEq)]
pub struct Lu<T> {
    pub perm: Vec<usize>,
    pub sign: Vec<T>,
    pub lower: Array2<T>,
    pub upper: Array2<T>,
    pub log_s: Array1<T>,
    pub shift: Array1<T>,
}

impl<T: Real> Lu<T> {
    /// The identity over `d` dimensions.
    pub fn identity(d: usize) -> Self {
        Self {
            perm: (0..d).collect(),
            sign: vec![T::one(); d],
            lower: Array2::zeros((d, d)),
            upper: Array2::zeros((d, d)),
            log_s: Array1::zeros(d),
            shift: Array1::zeros(d),
        }
    }

    /// Glow's initialisation: `W` a random orthogonal matrix (QR of a Gaussian matrix),
    /// LU-decomposed with partial pivoting; zero shift. Computed in f64 so both dtypes start
    /// from the same matrix for one seed.
    pub fn new(d: usize, rng: &mut crate::FlowRng) -> Self {
        Self::from_matrix(random_orthogonal(d, rng))
    }

    /// A gradient accumulator: zero parameters with this layer's `perm` and `sign`.
    pub fn zeros_like(&self) -> Self {
        Self { perm: self.perm.clone(), sign: self.sign.clone(), ..Self::identity(self.perm.len()) }
    }

    /// The factors of `w` (square). A singular `w` (impossible for an orthogonal matrix, kept
    /// as a guard so no input yields an infinite `log_s`) gives the identity.
    fn from_matrix(w: Array2<f64>) -> Self {
        let d = w.nrows();
        let (piv, lu) = lu_decompose(w);
        let mut out = Self::identity(d);
        for (i, &p) in piv.iter().enumerate() {
            out.perm[p] = i;
        }
        for ((i, j), &v) in lu.indexed_iter() {
            match i.cmp(&j) {
                std::cmp::Ordering::Greater => out.lower[[i, j]] = T::of(v),
                std::cmp::Ordering::Less => out.upper[[i, j]] = T::of(v),
                std::cmp::Ordering::Equal => {
                    out.sign[i] = T::of(if v < 0.0 { -1.0 } else { 1.0 });
                    out.log_s[i] = T::of(v.abs().ln());
                }
            }
        }
        if out.log_s.iter().all(|v| v.is_finite()) {
            out
        } else {
            Self::identity(d)
        }
    }

    /// `U`'s diagonal `sign * exp(log_s)` and its reciprocal, computed once per kernel call.
    fn diagonals(&self) -> (Vec<T>, Vec<T>) {
        let pairs = self.sign.iter().zip(&self.log_s);
        pairs.map(|(&sg, &s)| (sg * s.exp(), sg * (-s).exp())).unzip()
    }
}

impl<T: Real> Params<T> for Lu<T> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &[usize], &[T])) {
        visit_array(prefix, "lower", &self.lower, f);
        visit_array(prefix, "upper", &self.upper, f);
        visit_array(prefix, "log_s", &self.log_s, f);
        visit_array(prefix, "shift", &self.shift, f);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &[usize], &mut [T])) {
        visit_array_mut(prefix, "lower", &mut self.lower, f);
        visit_array_mut(prefix, "upper", &mut self.upper, f);
        visit_array_mut(prefix, "log_s", &mut self.log_s, f);
        visit_array_mut(prefix, "shift", &mut self.shift, f);
    }
}

/// A random orthogonal matrix: the Q of a Householder QR of a standard Gaussian matrix, with
/// column signs fixed by R's diagonal so Q is Haar-distributed.
fn random_orthogonal(d: usize, rng: &mut crate::FlowRng) -> Array2<f64> {
    let mut a =
        Array2::from_shape_simple_fn((d, d), || -> f64 { StandardNormal.sample(&mut *rng) });
    let mut q = Array2::<f64>::eye(d);
    for k in 0..d {
        let mut v = a.slice(s![k.., k]).to_owned();
        let norm = v.dot(&v).sqrt();
        if norm == 0.0 {
            continue;
        }
        // v = x - alpha e1 with alpha = -sign(x0) |x|: no cancellation in v0.
        v[0] += if v[0] < 0.0 { -norm } else { norm };
        v /= v.dot(&v).sqrt();
        // A <- H A on rows k.., Q <- Q H on columns k.. (H = I - 2 v v^T).
        for mut col in a.slice_mut(s![k.., k..]).columns_mut() {
            let c = 2.0 * v.dot(&col);
            col.scaled_add(-c, &v);
        }
        for mut row in q.slice_mut(s![.., k..]).rows_mut() {
            let c = 2.0 * v.dot(&row);
            row.scaled_add(-c, &v);
        }
    }
    for k in 0..d {
        if a[[k, k]] < 0.0 {
            q.column_mut(k).mapv_inplace(|v| -v);
        }
    }
    q
}

/// LU decomposition with partial pivoting: returns `piv` and the packed factors (`L`'s
/// strictly lower part, `U` on and above the diagonal) with `a[piv[i], :] = (L U)[i, :]`.
/// A zero pivot column is skipped (its `U` diagonal stays 0).
fn lu_decompose(mut a: Array2<f64>) -> (Vec<usize>, Array2<f64>) {
    let d = a.nrows();
    let mut piv: Vec<usize> = (0..d).collect();
    for k in 0..d {
        let p = (k..d).max_by(|&i, &j| a[[i, k]].abs().total_cmp(&a[[j, k]].abs())).unwrap_or(k);
        if p != k {
            for j in 0..d {
                a.swap([k, j], [p, j]);
            }
            piv.swap(k, p);
        }
        let pivot = a[[k, k]];
        if pivot == 0.0 {
            continue;
        }
        for i in k + 1..d {
            let f = a[[i, k]] / pivot;
            a[[i, k]] = f;
            for j in k + 1..d {
                a[[i, j]] -= f * a[[k, j]];
            }
        }
    }
    (piv, a)
}

/// Normalizing direction: `z = U^{-1} L^{-1} P^T (x - shift)`, `ld += -sum log_s`.
pub fn lu_inverse<T: Real>(p: &Lu<T>, cols: &[usize], x: ArrayViewMut2<T>, ld: ArrayViewMut1<T>) {
    debug_assert_eq!(cols.len(), p.perm.len(), "lu_inverse: cols");
    let (_, inv) = p.diagonals();
    let mut y = vec![T::zero(); cols.len()];
    map_rows(cols, x, |r| {
        for (i, &pi) in p.perm.iter().enumerate() {
            y[pi] = r[i] - p.shift[i];
        }
        solve_lower(p.lower.view(), None, &mut y);
        solve_upper(p.upper.view(), Some(&inv), &mut y);
        r.copy_from_slice(&y);
    });
    add_ld(ld, -p.log_s.sum());
}

/// Generative direction: `x = P L U z + shift`, `ld += sum log_s`.
pub fn lu_forward<T: Real>(p: &Lu<T>, cols: &[usize], x: ArrayViewMut2<T>, ld: ArrayViewMut1<T>) {
    debug_assert_eq!(cols.len(), p.perm.len(), "lu_forward: cols");
    let (diag, _) = p.diagonals();
    let mut y = vec![T::zero(); cols.len()];
    map_rows(cols, x, |r| {
        y.copy_from_slice(r);
        mul_upper(p.upper.view(), Some(&diag), &mut y);
        mul_lower(p.lower.view(), None, &mut y);
        for (i, &pi) in p.perm.iter().enumerate() {
            r[i] = y[pi] + p.shift[i];
        }
    });
    add_ld(ld, p.log_s.sum());
}

/// Backward pass of [`lu_inverse`]: `g` holds dLoss/dz on entry and dLoss/dx on return;
/// parameter gradients are accumulated into `grad` (its `perm` and `sign` are not read).
pub fn lu_backward<T: Real>(
    p: &Lu<T>,
    cols: &[usize],
    x_in: ArrayView2<T>,
    g: ArrayViewMut2<T>,
    dld: ArrayView1<T>,
    grad: &mut Lu<T>,
) {
    debug_assert_eq!(cols.len(), p.perm.len(), "lu_backward: cols");
    let (diag, inv) = p.diagonals();
    let mut gy = vec![T::zero(); cols.len()];
    map_rows_backward(cols, x_in, g, |u, gr| {
        // Recompute u = L^{-1} P^T (x - shift) (kept in `u`) and z = U^{-1} u (in `gy`).
        gy.copy_from_slice(u);
        for (i, &pi) in p.perm.iter().enumerate() {
            u[pi] = gy[i] - p.shift[i];
        }
        solve_lower(p.lower.view(), None, u);
        gy.copy_from_slice(u);
        solve_upper(p.upper.view(), Some(&inv), &mut gy);
        let z = &gy;
        // gu = U^{-T} gz; dLoss/dU = -gu z^T, and a diagonal entry is its own log-derivative.
        solve_lower(p.upper.t(), Some(&inv), gr);
        sub_outer(&mut grad.upper, gr, z, false);
        for (i, gl) in grad.log_s.iter_mut().enumerate() {
            *gl -= gr[i] * z[i] * diag[i];
        }
        // gy = L^{-T} gu; dLoss/dL = -gy u^T; dLoss/dx = P gy.
        solve_upper(p.lower.t(), None, gr);
        sub_outer(&mut grad.lower, gr, u, true);
        gy.copy_from_slice(gr);
        for (i, &pi) in p.perm.iter().enumerate() {
            gr[i] = gy[pi];
            grad.shift[i] -= gr[i];
        }
    });
    grad.log_s -= dld.sum();
}

/// Backward pass of [`lu_forward`]: `z_in` is the forward kernel's input, `g` holds
/// dLoss/dx on entry and dLoss/dz on return; parameter gradients are accumulated into `grad`
/// (its `perm` and `sign` are not read).
pub fn lu_forward_backward<T: Real>(
    p: &Lu<T>,
    cols: &[usize],
    z_in: ArrayView2<T>,
    g: ArrayViewMut2<T>,
    dld: ArrayView1<T>,
    grad: &mut Lu<T>,
) {
    debug_assert_eq!(cols.len(), p.perm.len(), "lu_forward_backward: cols");
    let (diag, _) = p.diagonals();
    let (mut u, mut gy) = (vec![T::zero(); cols.len()], vec![T::zero(); cols.len()]);
    map_rows_backward(cols, z_in, g, |z, gr| {
        // Recompute u = U z; y = L u and x_i = y[perm[i]] + shift_i.
        u.copy_from_slice(z);
        mul_upper(p.upper.view(), Some(&diag), &mut u);
        for (i, &pi) in p.perm.iter().enumerate() {
            gy[pi] = gr[i];
            grad.shift[i] += gr[i];
        }
        // dLoss/dL = gy u^T; gu = L^T gy.
        add_outer(&mut grad.lower, T::one(), &gy, &u, true);
        mul_upper(p.lower.t(), None, &mut gy);
        // dLoss/dU = gu z^T, a diagonal entry being its own log-derivative; gz = U^T gu.
        add_outer(&mut grad.upper, T::one(), &gy, z, false);
        for (i, gl) in grad.log_s.iter_mut().enumerate() {
            *gl += gy[i] * z[i] * diag[i];
        }
        mul_lower(p.upper.t(), Some(&diag), &mut gy);
        gr.copy_from_slice(&gy);
    });
    grad.log_s += dld.sum();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::testutil::{assert_close, check_layer, randomize, rng, uniform, Kernels};

    fn layer(p: Lu<f64>, cols: Vec<usize>) -> Kernels<Lu<f64>> {
        Kernels {
            p,
            cols,
            inverse: lu_inverse,
            forward: lu_forward,
            backward: lu_backward,
            forward_backward: lu_forward_backward,
        }
    }

    /// `P L U` as a dense matrix, built from the fields as the docs define them.
    fn dense(p: &Lu<f64>) -> Array2<f64> {
        let d = p.perm.len();
        let mut l = Array2::eye(d);
        let mut u = Array2::zeros((d, d));
        for ((i, j), v) in l.indexed_iter_mut().filter(|((i, j), _)| i > j) {
            *v = p.lower[[i, j]];
        }
        for ((i, j), v) in u.indexed_iter_mut().filter(|((i, j), _)| i <= j) {
            *v = if i == j { p.sign[i] * p.log_s[i].exp() } else { p.upper[[i, j]] };
        }
        let lu = l.dot(&u);
        Array2::from_shape_fn((d, d), |(i, j)| lu[[p.perm[i], j]])
    }

    fn flat(a: &Array2<f64>) -> Vec<f64> {
        a.iter().copied().collect()
    }

    #[test]
    fn lu_kernels() {
        let mut p = Lu::new(4, &mut rng(60));
        assert_ne!(p.perm, vec![0, 1, 2, 3], "pick a seed that pivots");
        assert!(p.sign.contains(&-1.0), "pick a seed with a negative pivot");
        randomize(&mut p, &mut rng(61), 1.0);
        check_layer(&mut layer(p, vec![2, 0, 3, 1]), 4, 62);
        let mut p2 = Lu::new(2, &mut rng(63));
        randomize(&mut p2, &mut rng(64), 1.0);
        check_layer(&mut layer(p2, vec![2, 0]), 3, 65);
    }

    #[test]
    fn new_reproduces_a_random_orthogonal_matrix() {
        let w = random_orthogonal(5, &mut rng(66));
        assert_close("orthogonal", &flat(&w.t().dot(&w)), &flat(&Array2::eye(5)), 1e-12);
        let p = Lu::new(5, &mut rng(66));
        assert_close("P L U", &flat(&dense(&p)), &flat(&w), 1e-12);
        assert!(p.log_s.sum().abs() < 1e-12, "|det| of an orthogonal matrix is 1");
        assert_eq!(p.shift, Array1::<f64>::zeros(5));
    }

    #[test]
    fn decomposition_of_a_matrix_that_needs_pivoting() {
        let a = ndarray::array![[0.0, 2.0, 1.0], [3.0, 0.0, 0.5], [1.0, 1.0, -0.5]];
        let p = Lu::<f64>::from_matrix(a.clone());
        assert_close("P L U", &flat(&dense(&p)), &flat(&a), 1e-14);
        let singular = ndarray::array![[1.0, 2.0], [2.0, 4.0]];
        assert_eq!(Lu::<f64>::from_matrix(singular), Lu::identity(2));
    }

    #[test]
    fn forward_kernel_applies_the_documented_matrix() {
        let mut p = Lu::new(4, &mut rng(67));
        randomize(&mut p, &mut rng(68), 1.0);
        p.shift.fill(0.0);
        // Row j of the batch is e_j, so row j of the output is column j of W.
        let mut x = Array2::eye(4);
        let mut ld = Array1::zeros(4);
        lu_forward(&p, &[0, 1, 2, 3], x.view_mut(), ld.view_mut());
        assert_close("W", &flat(&x.t().to_owned()), &flat(&dense(&p)), 1e-12);
    }

    #[test]
    fn unused_entries_get_zero_gradient_and_identity_is_identity() {
        let mut p = Lu::new(4, &mut rng(69));
        randomize(&mut p, &mut rng(70), 1.0);
        let x = uniform(&mut rng(71), 6, 4, 2.0);
        let (mut g, dld) = (uniform(&mut rng(72), 6, 4, 1.0), Array1::ones(6));
        let mut grad = p.zeros_like();
        assert_eq!((&grad.perm, &grad.sign), (&p.perm, &p.sign));
        lu_backward(&p, &[1, 3, 0, 2], x.view(), g.view_mut(), dld.view(), &mut grad);
        for ((i, j), &v) in grad.lower.indexed_iter() {
            assert!(i > j || v == 0.0, "lower[{i}, {j}] got gradient {v}");
        }
        for ((i, j), &v) in grad.upper.indexed_iter() {
            assert!(i < j || v == 0.0, "upper[{i}, {j}] got gradient {v}");
        }
        let (mut y, mut ld) = (x.clone(), Array1::zeros(6));
        lu_inverse(&Lu::identity(4), &[1, 3, 0, 2], y.view_mut(), ld.view_mut());
        assert_eq!((y, ld), (x, Array1::<f64>::zeros(6)));
    }

    #[test]
    fn extreme_values_and_empty_layers_do_not_panic() {
        let mut p = Lu::<f32>::new(3, &mut rng(73));
        p.log_s.assign(&ndarray::arr1(&[1e4, -1e4, f32::NAN]));
        p.upper.fill(f32::MAX);
        let mut x = Array2::from_elem((2, 3), f32::INFINITY);
        let mut ld = Array1::zeros(2);
        lu_forward(&p, &[0, 1, 2], x.view_mut(), ld.view_mut());
        lu_inverse(&p, &[0, 1, 2], x.view_mut(), ld.view_mut());
        let (mut g, mut grad) = (Array2::ones((2, 3)), p.zeros_like());
        lu_backward(&p, &[0, 1, 2], x.view(), g.view_mut(), ld.view(), &mut grad);
        assert_eq!(Lu::<f64>::new(0, &mut rng(74)), Lu::identity(0));
    }
}
