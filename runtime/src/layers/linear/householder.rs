//! The Householder linear flow `x = W z + shift` with `W = H_1 ... H_K`,
//! `H_k = I - 2 v_k v_k^T / (v_k^T v_k)`. Every `H_k` is a symmetric orthogonal involution,
//! so `W^{-1} = H_K ... H_1` and `log|det W| = 0`.
//!
//! The kernels normalize each `v_k` once per call (scaling by its largest entry first, so
//! huge or tiny vectors neither overflow nor underflow). A zero or non-finite `v_k` has no
//! reflection; it is treated as the identity with zero gradient, which also makes
//! [`Householder::zeros`] the identity.

use super::{map_rows, map_rows_backward, visit_array, visit_array_mut};
use crate::params::Params;
use crate::real::Real;
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2};
use rand_distr::{Distribution, StandardNormal};

/// Parameters of a Householder flow: `K` reflection vectors as the rows of `vectors`.
#[derive(Clone, Debug, PartialEq)]
pub struct Householder<T> {
    pub vectors: Array2<T>,
    pub shift: Array1<T>,
}

impl<T: Real> Householder<T> {
    /// `k` reflections in `d` dimensions with standard normal vectors (drawn in f64 so both
    /// dtypes start from the same matrix for one seed) and zero shift.
    pub fn new(d: usize, k: usize, rng: &mut crate::FlowRng) -> Self {
        let vectors = Array2::from_shape_simple_fn((k, d), || {
            let v: f64 = StandardNormal.sample(&mut *rng);
            T::of(v)
        });
        Self { vectors, shift: Array1::zeros(d) }
    }

    /// All-zero parameters: the identity, and the gradient accumulator's shape.
    pub fn zeros(d: usize, k: usize) -> Self {
        Self { vectors: Array2::zeros((k, d)), shift: Array1::zeros(d) }
    }
}

impl<T: Real> Params<T> for Householder<T> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &[usize], &[T])) {
        visit_array(prefix, "vectors", &self.vectors, f);
        visit_array(prefix, "shift", &self.shift, f);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &[usize], &mut [T])) {
        visit_array_mut(prefix, "vectors", &mut self.vectors, f);
        visit_array_mut(prefix, "shift", &mut self.shift, f);
    }
}

/// The unit vectors `v_k / |v_k|` and the norms `|v_k|`; a zero or non-finite `v_k` gives a
/// zero row (no reflection) and norm 0.
fn units<T: Real>(vectors: &Array2<T>) -> (Array2<T>, Vec<T>) {
    let mut u = vectors.to_owned();
    let mut norms = vec![T::zero(); u.nrows()];
    for (mut row, norm) in u.rows_mut().into_iter().zip(&mut norms) {
        let m = row.iter().fold(T::zero(), |a, &x| a.max(x.abs()));
        if m == T::zero() || !row.iter().all(|x| x.is_finite()) {
            row.fill(T::zero());
            continue;
        }
        row /= m;
        let r = row.dot(&row).sqrt();
        row /= r;
        *norm = m * r;
    }
    (u, norms)
}

#[inline]
fn dot<T: Real>(u: ArrayView1<T>, y: &[T]) -> T {
    u.iter().zip(y).fold(T::zero(), |a, (&ui, &yi)| a + ui * yi)
}

/// `y <- (I - 2 u u^T) y` for a unit (or zero) `u`.
#[inline]
fn reflect<T: Real>(u: ArrayView1<T>, y: &mut [T]) {
    let a = dot(u, y);
    let two_a = a + a;
    y.iter_mut().zip(u).for_each(|(yi, &ui)| *yi -= two_a * ui);
}

/// Normalizing direction: `z = H_K ... H_1 (x - shift)` (`H_1` applied first); `ld` is
/// unchanged (`|det W| = 1`).
pub fn householder_inverse<T: Real>(
    p: &Householder<T>,
    cols: &[usize],
    x: ArrayViewMut2<T>,
    _ld: ArrayViewMut1<T>,
) {
    debug_assert_eq!(cols.len(), p.shift.len(), "householder_inverse: cols");
    let (u, _) = units(&p.vectors);
    map_rows(cols, x, |r| {
        r.iter_mut().zip(&p.shift).for_each(|(v, &b)| *v -= b);
        u.rows().into_iter().for_each(|uk| reflect(uk, r));
    });
}

/// Generative direction: `x = H_1 ... H_K z + shift` (`H_K` applied first); `ld` unchanged.
pub fn householder_forward<T: Real>(
    p: &Householder<T>,
    cols: &[usize],
    x: ArrayViewMut2<T>,
    _ld: ArrayViewMut1<T>,
) {
    debug_assert_eq!(cols.len(), p.shift.len(), "householder_forward: cols");
    let (u, _) = units(&p.vectors);
    map_rows(cols, x, |r| {
        u.rows().into_iter().rev().for_each(|uk| reflect(uk, r));
        r.iter_mut().zip(&p.shift).for_each(|(v, &b)| *v += b);
    });
}

/// Backward pass of [`householder_inverse`]: `g` holds dLoss/dz on entry and dLoss/dx on
/// return; parameter gradients are accumulated into `grad`. The log-determinant is constant,
/// so `dld` contributes nothing.
pub fn householder_backward<T: Real>(
    p: &Householder<T>,
    cols: &[usize],
    x_in: ArrayView2<T>,
    g: ArrayViewMut2<T>,
    _dld: ArrayView1<T>,
    grad: &mut Householder<T>,
) {
    debug_assert_eq!(cols.len(), p.shift.len(), "householder_backward: cols");
    let (u, norms) = units(&p.vectors);
    // dLoss/du_k summed over rows; projected onto dLoss/dv_k once at the end.
    let mut du = Array2::<T>::zeros(u.dim());
    map_rows_backward(cols, x_in, g, |y, gr| {
        y.iter_mut().zip(&p.shift).for_each(|(v, &b)| *v -= b);
        u.rows().into_iter().for_each(|uk| reflect(uk, y));
        // Walk the reflections backwards. Each H_k is its own inverse, so the layer's
        // intermediate inputs are recovered from z instead of being stored.
        for (uk, duk) in u.rows().into_iter().zip(du.rows_mut()).rev() {
            reflect_backward(uk, y, gr, duk);
        }
        grad.shift.iter_mut().zip(gr.iter()).for_each(|(s, &gi)| *s -= gi);
    });
    add_vector_grads(&u, &du, &norms, grad);
}

/// Backward pass of [`householder_forward`]: `z_in` is the forward kernel's input, `g` holds
/// dLoss/dx on entry and dLoss/dz on return; parameter gradients are accumulated into `grad`.
/// The log-determinant is constant, so `dld` contributes nothing.
pub fn householder_forward_backward<T: Real>(
    p: &Householder<T>,
    cols: &[usize],
    z_in: ArrayView2<T>,
    g: ArrayViewMut2<T>,
    _dld: ArrayView1<T>,
    grad: &mut Householder<T>,
) {
    debug_assert_eq!(cols.len(), p.shift.len(), "householder_forward_backward: cols");
    let (u, norms) = units(&p.vectors);
    let mut du = Array2::<T>::zeros(u.dim());
    map_rows_backward(cols, z_in, g, |y, gr| {
        grad.shift.iter_mut().zip(gr.iter()).for_each(|(s, &gi)| *s += gi);
        // y = W z (H_K applied first), then walk back from H_1, the last one applied.
        u.rows().into_iter().rev().for_each(|uk| reflect(uk, y));
        for (uk, duk) in u.rows().into_iter().zip(du.rows_mut()) {
            reflect_backward(uk, y, gr, duk);
        }
    });
    add_vector_grads(&u, &du, &norms, grad);
}

/// One reflection backwards: `y` holds the reflection's output and becomes its input (each
/// `H_k` is its own inverse, so intermediate inputs are recovered instead of stored); `gr`
/// holds dLoss/d(output) and becomes dLoss/d(input); dLoss/du is added to `du`.
fn reflect_backward<T: Real>(
    uk: ArrayView1<T>,
    y: &mut [T],
    gr: &mut [T],
    mut du: ArrayViewMut1<T>,
) {
    reflect(uk, y);
    // y_k = y - 2 (u.y) u  gives  dLoss/du = -2 ((g.u) y + (u.y) g).
    let (gu, uy) = (dot(uk, gr), dot(uk, y));
    for ((d, &yi), &gi) in du.iter_mut().zip(y.iter()).zip(gr.iter()) {
        *d -= (gu * yi + uy * gi) * T::of(2.0);
    }
    reflect(uk, gr);
}

/// Pushes dLoss/du_k (summed over rows) through `u = v / |v|`, whose Jacobian is
/// `(I - u u^T) / |v|`, into `grad.vectors`; vectors without a reflection get nothing.
fn add_vector_grads<T: Real>(
    u: &Array2<T>,
    du: &Array2<T>,
    norms: &[T],
    grad: &mut Householder<T>,
) {
    for (((uk, duk), mut gk), &norm) in
        u.rows().into_iter().zip(du.rows()).zip(grad.vectors.rows_mut()).zip(norms)
    {
        if norm > T::zero() {
            let along = uk.dot(&duk);
            gk.zip_mut_with(&duk, |gv, &d| *gv += d / norm);
            gk.zip_mut_with(&uk, |gv, &ui| *gv -= along * ui / norm);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::testutil::{
        assert_close, check_forward_grads, check_grads, check_layer, rng, uniform, Kernels,
    };

    fn layer(p: Householder<f64>, cols: Vec<usize>) -> Kernels<Householder<f64>> {
        Kernels {
            p,
            cols,
            inverse: householder_inverse,
            forward: householder_forward,
            backward: householder_backward,
            forward_backward: householder_forward_backward,
        }
    }

    fn random(d: usize, k: usize, seed: u64) -> Householder<f64> {
        let mut p = Householder::new(d, k, &mut rng(seed));
        p.shift = uniform(&mut rng(seed + 1), 1, d, 1.0).remove_axis(ndarray::Axis(0));
        p
    }

    #[test]
    fn householder_kernels() {
        check_layer(&mut layer(random(4, 3, 80), vec![2, 0, 3, 1]), 4, 82);
        // More reflections than dimensions, and a subset of the columns.
        check_layer(&mut layer(random(2, 3, 83), vec![2, 0]), 3, 85);
    }

    #[test]
    fn matrix_is_the_product_of_reflections() {
        let p = random(4, 2, 86);
        let h = |v: ArrayView1<f64>| {
            let v = v.insert_axis(ndarray::Axis(1));
            Array2::eye(4) - 2.0 * v.dot(&v.t()) / v.t().dot(&v)[[0, 0]]
        };
        let w = h(p.vectors.row(0)).dot(&h(p.vectors.row(1)));
        let z = uniform(&mut rng(88), 3, 4, 1.0);
        let (mut x, mut ld) = (z.clone(), Array1::zeros(3));
        householder_forward(&p, &[0, 1, 2, 3], x.view_mut(), ld.view_mut());
        let want = z.dot(&w.t()) + &p.shift;
        assert_close("W z + b", x.as_slice().unwrap(), want.as_slice().unwrap(), 1e-12);
        assert_eq!(ld, Array1::<f64>::zeros(3));
    }

    #[test]
    fn zero_vectors_are_the_identity_with_zero_gradient() {
        let x = uniform(&mut rng(89), 3, 4, 2.0);
        let (mut y, mut ld) = (x.clone(), Array1::zeros(3));
        householder_inverse(&Householder::zeros(4, 2), &[1, 3, 0, 2], y.view_mut(), ld.view_mut());
        assert_eq!(y, x);
        // One zero vector among random ones: gradients still match finite differences
        // (the zero vector's are 0 on both sides, by the convention above).
        let mut p = random(4, 3, 90);
        p.vectors.row_mut(1).fill(0.0);
        let mut l = layer(p, vec![3, 1, 0, 2]);
        check_grads(&mut l, &x, &mut rng(91));
        check_forward_grads(&mut l, &x, &mut rng(94));
    }

    #[test]
    fn huge_tiny_and_non_finite_vectors() {
        let mut p = random(3, 3, 92);
        let base = p.clone();
        p.vectors.row_mut(0).mapv_inplace(|v| v * 1e300);
        p.vectors.row_mut(1).mapv_inplace(|v| v * 1e-300);
        p.vectors[[2, 0]] = f64::NAN;
        let x = uniform(&mut rng(93), 4, 3, 2.0);
        let run = |p: &Householder<f64>| {
            let (mut z, mut ld) = (x.clone(), Array1::zeros(4));
            householder_inverse(p, &[0, 1, 2], z.view_mut(), ld.view_mut());
            z
        };
        let mut two = base.clone();
        two.vectors.row_mut(2).fill(0.0);
        assert_close(
            "scale invariance",
            run(&p).as_slice().unwrap(),
            run(&two).as_slice().unwrap(),
            1e-12,
        );
        let (mut g, mut grad) = (x.clone(), Householder::zeros(3, 3));
        householder_backward(
            &p,
            &[0, 1, 2],
            x.view(),
            g.view_mut(),
            Array1::ones(4).view(),
            &mut grad,
        );
        assert!(grad.vectors.iter().chain(&grad.shift).all(|v| v.is_finite()));
    }
}
