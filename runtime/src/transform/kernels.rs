//! Kernels applying a [`Transformer`]: elementwise layers (per-dimension raw parameters in an
//! [`ElementParams`]) and couplings (raw parameters computed by a conditioner [`Mlp`]).
//!
//! Forward and inverse kernels evaluate the transformer on the flow's real type. Backward
//! kernels evaluate it on [`Dual`] numbers seeded along the input and every raw parameter and
//! contract the derivatives of the value and of the log-determinant with the incoming
//! gradients. The dual width is chosen per transformer (the smallest power of two at least
//! `1 + n_params`, at most 32); transformers with more parameters take several passes of 32
//! directions each, so no kernel allocates per element and every gradient is exact. A
//! transformer may supply its own [`Transformer::vjp`] instead ([`super::RqSpline`] does:
//! duals along its 7 local inputs plus a closed-form chain to the raw parameters).

use super::{Dual, ElementParams, Scalar, Transformer};
use crate::layers::coupling::{condition, condition_backward, net_out};
use crate::layers::{CouplingScratch, Tape};
use crate::nn::{resize, Mlp};
use crate::real::Real;
use ndarray::{ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Zip};

/// Which map of a transformer a kernel evaluates.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Dir {
    Apply,
    Invert,
}

impl Dir {
    #[inline(always)]
    pub(crate) fn eval<T: Real, Tr: Transformer<T>, S: Scalar<T>>(
        self,
        tr: &Tr,
        x: S,
        p: &[S],
    ) -> (S, S) {
        match self {
            Dir::Apply => tr.apply(x, p),
            Dir::Invert => tr.invert(x, p),
        }
    }

    /// [`Dir::eval`] on real values (the transformer's `apply_value` / `invert_value`).
    #[inline(always)]
    pub(crate) fn eval_value<T: Real, Tr: Transformer<T>>(self, tr: &Tr, x: T, p: &[T]) -> (T, T) {
        match self {
            Dir::Apply => tr.apply_value(x, p),
            Dir::Invert => tr.invert_value(x, p),
        }
    }
}

/// Calls `$body` with the const `$n` set to the dual width for `$m` directions.
macro_rules! by_width {
    ($m:expr, $n:ident => $body:expr) => {
        match $m {
            0..=1 => {
                const $n: usize = 1;
                $body
            }
            2 => {
                const $n: usize = 2;
                $body
            }
            3..=4 => {
                const $n: usize = 4;
                $body
            }
            5..=8 => {
                const $n: usize = 8;
                $body
            }
            9..=16 => {
                const $n: usize = 16;
                $body
            }
            _ => {
                const $n: usize = 32;
                $body
            }
        }
    };
}
pub(crate) use by_width;

/// Vector-Jacobian products of one transformer map: the transformer's own
/// [`Transformer::vjp`] if it has one, else duals of width `N`. Direction 0 is the input,
/// direction `1 + j` raw parameter `j`.
pub(crate) struct Vjp<T, const N: usize> {
    p: Vec<Dual<T, N>>,
    out: Vec<T>,
}

impl<T: Real, const N: usize> Vjp<T, N> {
    pub(crate) fn new(n_params: usize) -> Self {
        Self { p: vec![Dual::constant(T::zero()); n_params], out: vec![T::zero(); n_params + 1] }
    }

    /// `wy * d(value) + wl * d(log-det)` along every direction, for `(value, log-det) =
    /// dir(x; p)`, in passes of `N` directions.
    #[inline]
    pub(crate) fn run<Tr: Transformer<T>>(
        &mut self,
        tr: &Tr,
        dir: Dir,
        x: T,
        p: &[T],
        wy: T,
        wl: T,
    ) -> &[T] {
        debug_assert_eq!(p.len(), self.p.len(), "transformer kernel: raw parameter count");
        if tr.vjp(matches!(dir, Dir::Invert), x, p, wy, wl, &mut self.out) {
            return &self.out;
        }
        for off in (0..self.out.len()).step_by(N) {
            // Directions outside this pass map to lanes >= N, which `variable` leaves unseeded.
            let lane = |j: usize| j.wrapping_sub(off);
            for (j, (d, &v)) in self.p.iter_mut().zip(p).enumerate() {
                *d = Dual::variable(v, lane(j + 1));
            }
            let (y, l) = dir.eval(tr, Dual::variable(x, lane(0)), &self.p);
            let lanes = y.du.iter().zip(&l.du);
            self.out[off..]
                .iter_mut()
                .zip(lanes)
                .for_each(|(o, (&dy, &dl))| *o = wy * dy + wl * dl);
        }
        &self.out
    }
}

/// `row` as a slice, copied into `buf` only if it is not contiguous.
fn row_slice<'a, T: Copy>(row: ArrayView1<'a, T>, buf: &'a mut Vec<T>) -> &'a [T] {
    match row.to_slice() {
        Some(s) => s,
        None => {
            buf.clear();
            buf.extend(row.iter().copied());
            buf
        }
    }
}

/// Elementwise layer, normalizing direction: `z = t^{-1}(x)` on the columns `cols`, with
/// dimension `i`'s raw parameters from row `i` of `p`; adds `ln|dz/dx|`.
pub fn elementwise_inverse<T: Real, Tr: Transformer<T>>(
    tr: &Tr,
    p: &ElementParams<T>,
    cols: &[usize],
    x: ArrayViewMut2<T>,
    ld: ArrayViewMut1<T>,
) {
    elementwise(tr, Dir::Invert, p, cols, x, ld);
}

/// Elementwise layer, generative direction: `x = t(z)`; adds `ln|dx/dz|`.
pub fn elementwise_forward<T: Real, Tr: Transformer<T>>(
    tr: &Tr,
    p: &ElementParams<T>,
    cols: &[usize],
    x: ArrayViewMut2<T>,
    ld: ArrayViewMut1<T>,
) {
    elementwise(tr, Dir::Apply, p, cols, x, ld);
}

fn elementwise<T: Real, Tr: Transformer<T>>(
    tr: &Tr,
    dir: Dir,
    p: &ElementParams<T>,
    cols: &[usize],
    mut x: ArrayViewMut2<T>,
    mut ld: ArrayViewMut1<T>,
) {
    debug_assert_eq!(p.width(), tr.n_params(), "elementwise: raw parameter count");
    let raw = p.raw_rows(cols.len());
    let inverse = matches!(dir, Dir::Invert);
    // Per column, every row with the same parameters (stride 0), through contiguous copies.
    let mut col = Vec::with_capacity(x.nrows());
    let mut lds = ld.to_vec();
    for (i, &c) in cols.iter().enumerate() {
        let pi = raw.row(i).to_slice().unwrap_or(&[]);
        col.clear();
        col.extend(x.column(c).iter().copied());
        tr.eval_rows(inverse, &mut col, pi, 0, &mut lds);
        x.column_mut(c).iter_mut().zip(&col).for_each(|(v, &y)| *v = y);
    }
    ld.assign(&ndarray::ArrayView1::from(&lds[..]));
}

/// Backward pass of [`elementwise_inverse`]: `g` holds dLoss/dz on entry and dLoss/dx on
/// return; the gradients of every tensor of `p`, trainable or not, are accumulated into
/// `grad` (same shapes, e.g. from [`ElementParams::zeros_like`]).
pub fn elementwise_backward<T: Real, Tr: Transformer<T>>(
    tr: &Tr,
    p: &ElementParams<T>,
    cols: &[usize],
    x_in: ArrayView2<T>,
    g: ArrayViewMut2<T>,
    dld: ArrayView1<T>,
    grad: &mut ElementParams<T>,
) {
    debug_assert_eq!(x_in.dim(), g.dim(), "elementwise_backward: shapes");
    debug_assert_eq!(p.width(), tr.n_params(), "elementwise_backward: raw parameter count");
    let n = 1 + tr.n_params();
    let dir = Dir::Invert;
    by_width!(n, N => elementwise_backward_n::<T, Tr, N>(tr, dir, p, cols, x_in, g, dld, grad))
}

/// Backward pass of [`elementwise_forward`]: `z_in` is the forward kernel's input, `g` holds
/// dLoss/dx on entry and dLoss/dz on return; gradients of every tensor of `p` are accumulated
/// into `grad`, as in [`elementwise_backward`].
pub fn elementwise_forward_backward<T: Real, Tr: Transformer<T>>(
    tr: &Tr,
    p: &ElementParams<T>,
    cols: &[usize],
    z_in: ArrayView2<T>,
    g: ArrayViewMut2<T>,
    dld: ArrayView1<T>,
    grad: &mut ElementParams<T>,
) {
    debug_assert_eq!(z_in.dim(), g.dim(), "elementwise_forward_backward: shapes");
    debug_assert_eq!(p.width(), tr.n_params(), "elementwise_forward_backward: raw parameters");
    let n = 1 + tr.n_params();
    let dir = Dir::Apply;
    by_width!(n, N => elementwise_backward_n::<T, Tr, N>(tr, dir, p, cols, z_in, g, dld, grad))
}

/// The backward pass of the elementwise kernel that evaluates `dir`, at its input `x_in`.
#[allow(clippy::too_many_arguments)]
fn elementwise_backward_n<T: Real, Tr: Transformer<T>, const N: usize>(
    tr: &Tr,
    dir: Dir,
    p: &ElementParams<T>,
    cols: &[usize],
    x_in: ArrayView2<T>,
    mut g: ArrayViewMut2<T>,
    dld: ArrayView1<T>,
    grad: &mut ElementParams<T>,
) {
    let raw = p.raw_rows(cols.len());
    let mut vjp = Vjp::<T, N>::new(tr.n_params());
    let mut acc = vec![T::zero(); tr.n_params()];
    for (i, &c) in cols.iter().enumerate() {
        let pi = raw.row(i).to_slice().unwrap_or(&[]);
        acc.fill(T::zero());
        Zip::from(g.column_mut(c)).and(x_in.column(c)).and(&dld).for_each(|g, &x, &dl| {
            let out = vjp.run(tr, dir, x, pi, *g, dl);
            *g = out[0];
            acc.iter_mut().zip(&out[1..]).for_each(|(a, &o)| *a += o);
        });
        grad.add_row(i, &acc);
    }
}

/// Coupling with a transformer, normalizing direction: `z_t = t(x_t; theta(x_c))`, where the
/// `P` raw parameters of `trans[k]` are the conditioner's output columns `[k P, (k + 1) P)`;
/// adds `sum_k ln|t'|`.
pub fn transformer_coupling_inverse<T: Real, Tr: Transformer<T>>(
    tr: &Tr,
    net: &Mlp<T>,
    cond: &[usize],
    trans: &[usize],
    x: ArrayViewMut2<T>,
    ld: ArrayViewMut1<T>,
    s: &mut CouplingScratch<T>,
) {
    coupling(tr, Dir::Apply, net, cond, trans, x, ld, s);
}

/// Coupling with a transformer, generative direction: `x_t = t^{-1}(z_t; theta(x_c))`.
pub fn transformer_coupling_forward<T: Real, Tr: Transformer<T>>(
    tr: &Tr,
    net: &Mlp<T>,
    cond: &[usize],
    trans: &[usize],
    x: ArrayViewMut2<T>,
    ld: ArrayViewMut1<T>,
    s: &mut CouplingScratch<T>,
) {
    coupling(tr, Dir::Invert, net, cond, trans, x, ld, s);
}

#[allow(clippy::too_many_arguments)]
fn coupling<T: Real, Tr: Transformer<T>>(
    tr: &Tr,
    dir: Dir,
    net: &Mlp<T>,
    cond: &[usize],
    trans: &[usize],
    mut x: ArrayViewMut2<T>,
    mut ld: ArrayViewMut1<T>,
    s: &mut CouplingScratch<T>,
) {
    condition(net, cond, x.view(), s);
    let np = tr.n_params();
    let out = net_out(&s.net, &s.xc);
    debug_assert_eq!(out.ncols(), trans.len() * np, "transformer coupling: conditioner width");
    let out = out.as_standard_layout();
    let o = out.as_slice().unwrap_or(&[]);
    let width = trans.len() * np;
    let inverse = matches!(dir, Dir::Invert);
    // One column at a time, so a transformer can evaluate many rows at once (the spline's
    // SIMD lanes); contiguous copies of the column and the log-dets.
    let mut col = Vec::with_capacity(x.nrows());
    let mut lds = ld.to_vec();
    // Compiled per CPU: a transformer whose real-valued maps inline here runs them at full
    // vector width.
    crate::nn::simd(
        #[inline(always)]
        || {
            for (k, &c) in trans.iter().enumerate() {
                col.clear();
                col.extend(x.column(c).iter().copied());
                tr.eval_rows(inverse, &mut col, &o[(k * np).min(o.len())..], width, &mut lds);
                x.column_mut(c).iter_mut().zip(&col).for_each(|(v, &y)| *v = y);
            }
        },
    );
    ld.assign(&ndarray::ArrayView1::from(&lds[..]));
}

/// One row of a transformer coupling given the conditioner's output `o`; returns the row's
/// log-det. Shared with the per-row kernels (`layers::coupling_row`).
#[inline(always)]
pub(crate) fn coupling_row<
    T: Real,
    Tr: Transformer<T>,
    R: std::ops::IndexMut<usize, Output = T> + ?Sized,
>(
    tr: &Tr,
    dir: Dir,
    trans: &[usize],
    row: &mut R,
    o: &[T],
) -> T {
    let np = tr.n_params();
    let mut acc = T::zero();
    for (k, &c) in trans.iter().enumerate() {
        let (y, l) = dir.eval_value(tr, row[c], &o[k * np..(k + 1) * np]);
        row[c] = y;
        acc += l;
    }
    acc
}

/// Backward pass of [`transformer_coupling_inverse`]. `x_in` is the layer's input; `g` holds
/// dLoss/dz on entry and dLoss/dx on return; `dld` is dLoss/d(ld) per row. Accumulates the
/// conditioner's parameter gradients into `grad`. `tape` is what the same pass's
/// [`transformer_coupling_inverse`] recorded (see [`crate::layers::Tape`]).
#[allow(clippy::too_many_arguments)]
pub fn transformer_coupling_backward<T: Real, Tr: Transformer<T>>(
    tr: &Tr,
    net: &Mlp<T>,
    cond: &[usize],
    trans: &[usize],
    x_in: ArrayView2<T>,
    g: ArrayViewMut2<T>,
    dld: ArrayView1<T>,
    grad: &mut Mlp<T>,
    tape: &mut Tape<CouplingScratch<T>>,
) {
    debug_assert_eq!(x_in.dim(), g.dim(), "transformer_coupling_backward: shapes");
    let f = CouplingArgs { tr, dir: Dir::Apply, net, cond, trans };
    by_width!(1 + tr.n_params(), N => f.backward::<N>(x_in, g, dld, grad, tape))
}

/// Backward pass of [`transformer_coupling_forward`]. `z_in` is the forward kernel's input;
/// `g` holds dLoss/dx on entry and dLoss/dz on return; `dld` is dLoss/d(ld) per row.
/// Accumulates the conditioner's parameter gradients into `grad`; the conditioned columns
/// pass through (`x_c = z_c`), so the conditioner's input gradient is added to `g[:, cond]`.
/// `tape` is what the same pass's [`transformer_coupling_forward`] recorded.
#[allow(clippy::too_many_arguments)]
pub fn transformer_coupling_forward_backward<T: Real, Tr: Transformer<T>>(
    tr: &Tr,
    net: &Mlp<T>,
    cond: &[usize],
    trans: &[usize],
    z_in: ArrayView2<T>,
    g: ArrayViewMut2<T>,
    dld: ArrayView1<T>,
    grad: &mut Mlp<T>,
    tape: &mut Tape<CouplingScratch<T>>,
) {
    debug_assert_eq!(z_in.dim(), g.dim(), "transformer_coupling_forward_backward: shapes");
    let f = CouplingArgs { tr, dir: Dir::Invert, net, cond, trans };
    by_width!(1 + tr.n_params(), N => f.backward::<N>(z_in, g, dld, grad, tape))
}

/// The fixed arguments of a coupling's backward pass; `dir` is the map the differentiated
/// kernel evaluates (`Apply` normalizing, `Invert` generative).
struct CouplingArgs<'a, Tr, T> {
    tr: &'a Tr,
    dir: Dir,
    net: &'a Mlp<T>,
    cond: &'a [usize],
    trans: &'a [usize],
}

impl<T: Real, Tr: Transformer<T>> CouplingArgs<'_, Tr, T> {
    fn backward<const N: usize>(
        &self,
        x_in: ArrayView2<T>,
        mut g: ArrayViewMut2<T>,
        dld: ArrayView1<T>,
        grad: &mut Mlp<T>,
        tape: &mut Tape<CouplingScratch<T>>,
    ) {
        // The conditioner's run is the one the same pass's forward step recorded.
        let s = tape.replay(x_in.nrows());
        let np = self.tr.n_params();
        resize(&mut s.dout, x_in.nrows(), self.trans.len() * np);
        let mut vjp = Vjp::<T, N>::new(np);
        let mut buf = Vec::new();
        Zip::from(g.rows_mut())
            .and(x_in.rows())
            .and(net_out(&s.net, &s.xc).rows())
            .and(s.dout.rows_mut())
            .and(dld)
            .for_each(|mut gr, xr, o, mut dr, &dl| {
                let o = row_slice(o, &mut buf);
                for (k, &c) in self.trans.iter().enumerate() {
                    let range = k * np..(k + 1) * np;
                    let out = vjp.run(self.tr, self.dir, xr[c], &o[range.clone()], gr[c], dl);
                    gr[c] = out[0];
                    dr.slice_mut(ndarray::s![range])
                        .iter_mut()
                        .zip(&out[1..])
                        .for_each(|(d, &v)| *d = v);
                }
            });
        condition_backward(self.net, self.cond, g, grad, s);
    }
}

#[cfg(test)]
mod tests;
