//! Per-row coupling kernels: the per-sample API (`log_prob_one`, `inverse_one`,
//! `forward_one`) runs each coupling on one row held in a `[T; D]`, with no ndarray and no
//! allocation once the [`RowScratch`] is warm.
//!
//! Each kernel is its batch kernel's row: the same column sets, the same conditioner output
//! layout and the same per-row arithmetic (`coupling::affine_inverse_row` and friends are
//! shared); only the order of the conditioner's sums differs. Layers without a row kernel run
//! their batch kernel on the one-row views [`row_views`] makes of the same state.

use super::coupling::{affine_row, shift_row};
use crate::nn::{Mlp, RowScratch};
use crate::real::Real;
use crate::transform::{coupling_row, Dir, Transformer};
use ndarray::{ArrayViewMut1, ArrayViewMut2};

/// Gathers `x[cond]` into the scratch and runs the conditioner on it.
#[inline(always)]
fn condition_row<'s, T: Real>(
    net: &Mlp<T>,
    cond: &[usize],
    x: &[T],
    s: &'s mut RowScratch<T>,
) -> &'s [T] {
    s.input.clear();
    s.input.extend(cond.iter().map(|&c| x[c]));
    net.forward_input_row(s)
}

/// Which way a row kernel runs: `Inverse` is x to z (normalizing), `Forward` z to x.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowDir {
    Inverse,
    Forward,
}

/// [`super::affine_coupling_inverse`] or [`super::affine_coupling_forward`] of one row:
/// `z_t = x_t * exp(s) + b`, `ld += sum_k s_k` (or back, `ld -= sum_k s_k`).
#[allow(clippy::too_many_arguments)]
pub fn affine_coupling_row<T: Real>(
    net: &Mlp<T>,
    cond: &[usize],
    trans: &[usize],
    bound: T,
    dir: RowDir,
    x: &mut [T],
    ld: &mut T,
    s: &mut RowScratch<T>,
) {
    let o = condition_row(net, cond, x, s);
    *ld += affine_row(trans, bound, dir == RowDir::Inverse, x, o);
}

/// [`super::additive_coupling_inverse`] or [`super::additive_coupling_forward`] of one row:
/// `x_t += b` or `x_t -= b`; `ld` is untouched (kept so every coupling's row kernel has the
/// same arguments).
pub fn additive_coupling_row<T: Real>(
    net: &Mlp<T>,
    cond: &[usize],
    trans: &[usize],
    dir: RowDir,
    x: &mut [T],
    _ld: &mut T,
    s: &mut RowScratch<T>,
) {
    let o = condition_row(net, cond, x, s);
    let sign = if dir == RowDir::Inverse { T::one() } else { -T::one() };
    shift_row(trans, sign, x, o);
}

/// [`crate::transform::transformer_coupling_inverse`] (`z_t = t(x_t; theta(x_c))`) or
/// [`crate::transform::transformer_coupling_forward`] of one row.
#[allow(clippy::too_many_arguments)]
pub fn transformer_coupling_row<T: Real, Tr: Transformer<T>>(
    tr: &Tr,
    net: &Mlp<T>,
    cond: &[usize],
    trans: &[usize],
    dir: RowDir,
    x: &mut [T],
    ld: &mut T,
    s: &mut RowScratch<T>,
) {
    let o = condition_row(net, cond, x, s);
    let d = if dir == RowDir::Inverse { Dir::Apply } else { Dir::Invert };
    *ld += coupling_row(tr, d, trans, x, o);
}

/// A one-row batch and its log-det over a row's storage, for the layers whose batch kernel
/// the per-sample path calls directly (views only: nothing is copied or allocated).
pub fn row_views<'a, T>(
    x: &'a mut [T],
    ld: &'a mut T,
) -> (ArrayViewMut2<'a, T>, ArrayViewMut1<'a, T>) {
    let d = x.len();
    let h = ArrayViewMut2::from_shape((1, d), x).expect("a row of d values is a 1 x d batch");
    (h, ArrayViewMut1::from(std::slice::from_mut(ld)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::testutil::{randomize, rng, uniform};
    use crate::layers::{self, CouplingScratch};
    use crate::nn::Activation;
    use crate::transform::{self, RqSpline};
    use ndarray::{Array1, Array2};

    type Batch = fn(&Mlp<f64>, &mut Array2<f64>, &mut Array1<f64>, &mut CouplingScratch<f64>);
    type Row = fn(&Mlp<f64>, &mut [f64], &mut f64, &mut RowScratch<f64>);

    const COND: [usize; 2] = [3, 0];
    const TRANS: [usize; 2] = [1, 2];
    const TR: RqSpline = RqSpline { bins: 4, bound: 3.0 };

    /// Runs `batch` on 6 random rows and `row` on each of them alone: same values, same
    /// log-dets (the ld starts non-zero, so a kernel that overwrites it fails).
    fn agree(out: usize, batch: Batch, row: Row, what: &str) {
        let mut net = Mlp::zeros(&[2, 40, 3, out], Activation::Tanh);
        randomize(&mut net, &mut rng(60), 1.0);
        let mut x = uniform(&mut rng(61), 6, 4, 2.0);
        let mut ld = Array1::from_elem(6, 0.25);
        let (x0, mut s) = (x.clone(), RowScratch::default());
        batch(&net, &mut x, &mut ld, &mut CouplingScratch::default());
        for (r, want) in x.rows().into_iter().enumerate() {
            let (mut xr, mut l) = (x0.row(r).to_vec(), 0.25);
            row(&net, &mut xr, &mut l, &mut s);
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * (1.0 + b.abs());
            assert!(xr.iter().zip(want).all(|(a, b)| close(*a, *b)), "{what} row {r}: {xr:?}");
            assert!(close(l, ld[r]), "{what} row {r}: ld {l} vs {}", ld[r]);
            assert!(xr != x0.row(r).to_vec(), "{what}: the row kernel changed nothing");
        }
    }

    #[test]
    fn affine_rows_match_the_batch_kernels() {
        agree(
            4,
            |n, x, l, s| {
                layers::affine_coupling_inverse(
                    n,
                    &COND,
                    &TRANS,
                    1.5,
                    x.view_mut(),
                    l.view_mut(),
                    s,
                )
            },
            |n, x, l, s| affine_coupling_row(n, &COND, &TRANS, 1.5, RowDir::Inverse, x, l, s),
            "affine inverse",
        );
        agree(
            4,
            |n, x, l, s| {
                layers::affine_coupling_forward(
                    n,
                    &COND,
                    &TRANS,
                    1.5,
                    x.view_mut(),
                    l.view_mut(),
                    s,
                )
            },
            |n, x, l, s| affine_coupling_row(n, &COND, &TRANS, 1.5, RowDir::Forward, x, l, s),
            "affine forward",
        );
    }

    #[test]
    fn additive_rows_match_the_batch_kernels() {
        agree(
            2,
            |n, x, l, s| {
                layers::additive_coupling_inverse(n, &COND, &TRANS, x.view_mut(), l.view_mut(), s)
            },
            |n, x, l, s| additive_coupling_row(n, &COND, &TRANS, RowDir::Inverse, x, l, s),
            "additive inverse",
        );
        agree(
            2,
            |n, x, l, s| {
                layers::additive_coupling_forward(n, &COND, &TRANS, x.view_mut(), l.view_mut(), s)
            },
            |n, x, l, s| additive_coupling_row(n, &COND, &TRANS, RowDir::Forward, x, l, s),
            "additive forward",
        );
    }

    #[test]
    fn spline_rows_match_the_batch_kernels() {
        let out = 2 * Transformer::<f64>::n_params(&TR);
        agree(
            out,
            |n, x, l, s| {
                transform::transformer_coupling_inverse(
                    &TR,
                    n,
                    &COND,
                    &TRANS,
                    x.view_mut(),
                    l.view_mut(),
                    s,
                )
            },
            |n, x, l, s| transformer_coupling_row(&TR, n, &COND, &TRANS, RowDir::Inverse, x, l, s),
            "spline inverse",
        );
        agree(
            out,
            |n, x, l, s| {
                transform::transformer_coupling_forward(
                    &TR,
                    n,
                    &COND,
                    &TRANS,
                    x.view_mut(),
                    l.view_mut(),
                    s,
                )
            },
            |n, x, l, s| transformer_coupling_row(&TR, n, &COND, &TRANS, RowDir::Forward, x, l, s),
            "spline forward",
        );
    }

    #[test]
    fn row_views_alias_the_row() {
        let (mut x, mut ld) = ([1.0, 2.0, 3.0], 0.5);
        let (mut h, mut l) = row_views(&mut x, &mut ld);
        h[[0, 2]] = 7.0;
        l[0] += 1.0;
        assert_eq!((x, ld), ([1.0, 2.0, 7.0], 1.5));
    }
}
