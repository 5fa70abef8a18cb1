//! Scalar transformers (monotone maps of one real with raw parameters) and the kernels that
//! apply them: elementwise layers with per-dimension parameters, and couplings whose
//! conditioner computes the parameters.
//!
//! A transformer is written once, generically over [`Scalar`]: the forward and inverse
//! kernels evaluate it on the flow's real type, the backward kernels on [`Dual`] numbers, so
//! every gradient (input and parameters, including through the log-determinant) is exact.
//!
//! Direction: a transformer's `apply` is the map `t` as the reference notes write it, and
//! `invert` is `t^{-1}`. Elementwise layers are defined generatively (`x = t(z)`), so their
//! normalizing kernel uses `invert`; couplings apply `t` in the normalizing direction
//! (`z_t = t(x_t; theta)`, as nflows and zuko do), so theirs uses `apply`.
//!
//! Domains: logit, sigmoid-inverse, log and piecewise-linear maps are defined on part of the
//! real line only. Outside it (and for NaN) they return a finite clamped value and the
//! log-determinant minus infinity, i.e. density zero; they never panic.

mod kernels;
mod maps;
mod params;
mod piecewise;
mod scalar;
mod spline;
#[cfg(test)]
mod testutil;

pub(crate) use kernels::{by_width, coupling_row, Dir, Vjp};
pub use kernels::{
    elementwise_backward, elementwise_forward, elementwise_forward_backward, elementwise_inverse,
    transformer_coupling_backward, transformer_coupling_forward,
    transformer_coupling_forward_backward, transformer_coupling_inverse,
};
pub use maps::{Affine, Exp, LeakyRelu, Log, Logit, Sigmoid, SoftAffine};
pub use params::{ElementParams, ParamTensor};
pub use piecewise::PiecewiseLinear;
pub use scalar::{Dual, Scalar};
pub use spline::RqSpline;

use crate::real::Real;

/// A monotone scalar map `t(x; p)` with `n_params()` raw parameters per element.
///
/// Raw parameters all zero give the identity map, so a zero-initialised conditioner or a
/// fresh elementwise layer is the identity.
pub trait Transformer<T: Real>: Clone + Send + Sync {
    /// The number of raw parameters per element.
    fn n_params(&self) -> usize;
    /// `(t(x), ln|t'(x)|)`; `p` holds `n_params()` raw parameters.
    fn apply<S: Scalar<T>>(&self, x: S, p: &[S]) -> (S, S);
    /// `(t^{-1}(y), ln|d t^{-1}/dy|)`.
    fn invert<S: Scalar<T>>(&self, y: S, p: &[S]) -> (S, S);

    /// [`Transformer::apply`] on real values, which the forward and inverse kernels call. An
    /// override may share work between the steps the generic code repeats (the spline
    /// computes each softmax weight once); values agree up to the last bits of `exp`.
    #[inline(always)]
    fn apply_value(&self, x: T, p: &[T]) -> (T, T) {
        self.apply(x, p)
    }
    /// [`Transformer::invert`] on real values (see [`Transformer::apply_value`]).
    #[inline(always)]
    fn invert_value(&self, y: T, p: &[T]) -> (T, T) {
        self.invert(y, p)
    }

    /// An optional fast path for the backward kernels. For `(v, l) = apply(x, p)` (or
    /// `invert(x, p)` if `inverse`), overwrites `out` (length `1 + n_params()`) with
    /// `wy * dv + wl * dl` differentiated with respect to `x` (`out[0]`) and each raw parameter,
    /// and returns true. The default returns false, and the kernels differentiate `apply` /
    /// `invert` with dual numbers along every direction instead.
    #[allow(unused_variables)]
    fn vjp(&self, inverse: bool, x: T, p: &[T], wy: T, wl: T, out: &mut [T]) -> bool {
        false
    }

    /// [`Transformer::vjp`] over the elements of `row` (see [`VjpRow`]). False, with nothing
    /// written, if there is no closed form (`vjp` answers the same for every input). `buf` is
    /// scratch; an override computes the same values in vectorised passes.
    fn vjp_many(&self, inverse: bool, row: VjpRow<'_, T>, buf: &mut Vec<T>) -> bool {
        let np = self.n_params();
        buf.clear();
        buf.resize(1 + np, T::zero());
        for (k, (&x, w)) in row.xs.iter().zip(row.w).enumerate() {
            if !self.vjp(inverse, x, &row.p[k * np..(k + 1) * np], *w, row.wl, buf) {
                return false;
            }
            *w = buf[0];
            row.dp[k * np..(k + 1) * np].copy_from_slice(&buf[1..]);
        }
        true
    }

    /// [`Transformer::apply_value`] (or [`Transformer::invert_value`] if `inverse`) down a
    /// column: row `r` maps `xs[r]` with the raw parameters `p[r * stride..][..n_params()]`
    /// (`stride` 0: the same parameters for every row) and adds its `ln|t'|` to `ld[r]`. The
    /// coupling and elementwise kernels call this once per column; an override evaluates
    /// several rows at a time ([`RqSpline`]'s, in SIMD lanes), agreeing with the per-element
    /// maps up to the last bits of `exp` and `ln`.
    #[inline(always)]
    fn eval_rows(&self, inverse: bool, xs: &mut [T], p: &[T], stride: usize, ld: &mut [T]) {
        eval_each(self, inverse, xs, p, stride, ld);
    }

    /// `apply` over many elements: `xs[k] = t(xs[k]; p[k P..(k + 1) P])`, returning the sum
    /// of the `ln|t'|` in order of `k`. `buf` is scratch. An override computes the same
    /// values (up to the last bits of `exp`) in vectorised passes.
    #[allow(unused_variables)]
    fn apply_many(&self, xs: &mut [T], p: &[T], buf: &mut Vec<T>) -> T {
        let np = self.n_params();
        let mut sum = T::zero();
        for (k, x) in xs.iter_mut().enumerate() {
            let (y, l) = self.apply_value(*x, &p[k * np..(k + 1) * np]);
            *x = y;
            sum += l;
        }
        sum
    }
}

/// The elements of one [`Transformer::vjp_many`] call, with one log-det weight `wl`: element
/// `k` has the input `xs[k]`, the raw parameters `p[k P..(k + 1) P]` and the weight
/// `wy = w[k]`; on return `w[k]` holds the derivative with respect to `xs[k]` and
/// `dp[k P..(k + 1) P]` those with respect to its parameters.
pub struct VjpRow<'a, T> {
    pub xs: &'a [T],
    pub p: &'a [T],
    pub w: &'a mut [T],
    pub wl: T,
    pub dp: &'a mut [T],
}

/// [`Transformer::eval_rows`] one element at a time.
#[inline(always)]
pub(crate) fn eval_each<T: Real, Tr: Transformer<T>>(
    tr: &Tr,
    inverse: bool,
    xs: &mut [T],
    p: &[T],
    stride: usize,
    ld: &mut [T],
) {
    let np = tr.n_params();
    for (r, (x, l)) in xs.iter_mut().zip(ld.iter_mut()).enumerate() {
        let q = &p[r * stride..r * stride + np];
        let (y, d) = if inverse { tr.invert_value(*x, q) } else { tr.apply_value(*x, q) };
        *x = y;
        *l += d;
    }
}

/// The log-determinant of an input outside a map's domain: density zero.
#[inline(always)]
fn outside<T: Real, S: Scalar<T>>() -> S {
    S::cst(T::neg_infinity())
}
