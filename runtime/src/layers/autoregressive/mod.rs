//! Masked autoregressive layers (MAF / IAF): a [`Made`] computes the raw transformer
//! parameters of input `k` from the inputs of smaller degree, so the map
//! `y_k = t(x_k; theta_k(x))` has a triangular Jacobian in degree order.
//!
//! [`ar_apply`] is the parallel direction (one network pass); [`ar_solve`], its exact
//! inverse, is sequential and lives in `solve.rs`. Which of the two is a flow's normalizing
//! direction (MAF) or generative direction (IAF) is the compiler's choice; the kernels follow
//! the crate conventions otherwise: in place on the physical columns `cols` (input `k` of the
//! MADE is `x[:, cols[k]]`), log-determinants added, backward kernels accumulating.

mod made;
mod solve;

pub use made::{made_degrees, Made};

use super::Tape;
use crate::nn::{resize, Mlp, MlpScratch};
use crate::real::Real;
use crate::transform::{by_width, Dir, Transformer, Vjp, VjpRow};
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis, Zip};

/// How a backward step leaves its parameter gradient in the accumulator it is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GradOut {
    /// Added to what the accumulator holds.
    Add,
    /// Written over it, every entry (zeros where masked): the accumulator need not be zeroed
    /// first, as the generated backward passes then do not (a MADE's gradient is 0.9 MB in
    /// C2's f64, per layer, thread and step).
    Write,
}

/// Buffers of the autoregressive kernels, reused across calls: nothing is allocated once
/// warm for a fixed batch size.
#[derive(Clone, Debug, Default)]
pub struct ArScratch<T> {
    /// The masked network (weights times masks, degree order) and what it was built from
    /// (see `Made::masked_cached`).
    eff: Option<Mlp<T>>,
    eff_stamp: made::Built,
    /// The stamp `plan` was built for.
    plan_stamp: Option<u64>,
    /// The gradient with respect to `eff`'s parameters.
    geff: Option<Mlp<T>>,
    net: MlpScratch<T>,
    /// The MADE's input, `x[:, cols]`.
    xin: Array2<T>,
    /// The layer's input gathered (`y[:, cols]`) for the solve's backward pass.
    yin: Array2<T>,
    /// Gradients with respect to the MADE's output and input.
    dout: Array2<T>,
    dxin: Array2<T>,
    /// The solve's backward pass: dL/dx in total, its next iterate, and dL/dx direct.
    xbar: Array2<T>,
    xnext: Array2<T>,
    gbar: Array2<T>,
    ld: Array1<T>,
    ident: Vec<usize>,
    /// The layer's columns in the masked network's (degree) order: see `Made::sorted_cols`.
    cols: Vec<usize>,
    empty: Array2<T>,
    plan: solve::Plan<T>,
    tile: solve::Tile<T>,
}

/// Copies `x[:, cols]` into `dst` (`n x |cols|`).
fn gather<T: Real>(x: ArrayView2<T>, cols: &[usize], dst: &mut Array2<T>) {
    resize(dst, x.nrows(), cols.len());
    Zip::from(dst.rows_mut()).and(x.rows()).for_each(|mut d, s| {
        for (d, &c) in d.iter_mut().zip(cols) {
            *d = s[c];
        }
    });
}

/// Runs the masked network on `x[:, cols]` (`cols` in degree order): its output is
/// [`made_out`].
fn run_made<T: Real>(made: &Made<T>, cols: &[usize], x: ArrayView2<T>, s: &mut ArScratch<T>) {
    gather(x, cols, &mut s.xin);
    let eff = made.masked_cached(&mut s.eff, &mut s.eff_stamp);
    eff.forward_sparse(s.xin.view(), &mut s.net, Some(made.blocks()));
}

/// `cols` in degree order, in a buffer taken from `s` (give it back with [`give_back`]).
fn sorted<T: Real>(made: &Made<T>, cols: &[usize], s: &mut ArScratch<T>) -> Vec<usize> {
    let mut sorted = std::mem::take(&mut s.cols);
    made.sorted_cols(cols, &mut sorted);
    sorted
}

fn give_back<T>(s: &mut ArScratch<T>, cols: Vec<usize>) {
    s.cols = cols;
}

/// The MADE's output after [`run_made`]: row `r`, columns `[k P, (k + 1) P)` are the raw
/// parameters of input `k`. (A MADE has at least one layer; `empty` only covers a scratch
/// never run.)
fn made_out<'a, T: Real>(s: &'a MlpScratch<T>, empty: &'a Array2<T>) -> ArrayView2<'a, T> {
    debug_assert!(!s.acts.is_empty(), "autoregressive: network not run");
    s.acts.last().unwrap_or(empty).view()
}

/// A row of an owned (standard-layout) buffer as a slice.
fn row_of<'a, T>(row: ArrayView1<'a, T>) -> &'a [T] {
    row.to_slice().unwrap_or(&[])
}

/// Parallel direction: `y[:, cols[k]] = t(x[:, cols[k]]; theta_k(x))` for every `k` in one
/// MADE pass, in place; adds `sum_k ln|t'|`.
pub fn ar_apply<T: Real, Tr: Transformer<T>>(
    tr: &Tr,
    made: &Made<T>,
    cols: &[usize],
    x: ArrayViewMut2<T>,
    ld: ArrayViewMut1<T>,
    s: &mut ArScratch<T>,
) {
    debug_assert_eq!(tr.n_params(), made.n_params, "ar_apply: raw parameter count");
    let cols = sorted(made, cols, s);
    run_made(made, &cols, x.view(), s);
    apply_rows(tr, &cols, x, s.xin.view(), made_out(&s.net, &s.empty), ld);
    give_back(s, cols);
}

/// Elements from which an elementwise pass over a batch is split across two threads (a
/// transformer's map and its VJP cost tens of nanoseconds per element).
const PAR_MIN_ELEMS: usize = 1 << 13;

/// Whether an elementwise pass over `n` rows of `d` elements is split in two halves.
fn split_elementwise(n: usize, d: usize) -> bool {
    n >= 2 && n * d >= PAR_MIN_ELEMS && crate::par::may_fork()
}

/// The transformer step of [`ar_apply`]: `x[:, cols[k]] = t(xin[:, k]; theta_k)`, where
/// `xin = x[:, cols]`, a whole row at a time ([`Transformer::apply_many`]).
fn apply_rows<T: Real, Tr: Transformer<T>>(
    tr: &Tr,
    cols: &[usize],
    mut x: ArrayViewMut2<T>,
    xin: ArrayView2<T>,
    theta: ArrayView2<T>,
    ld: ArrayViewMut1<T>,
) {
    let n = x.nrows();
    if split_elementwise(n, cols.len()) {
        let h = n / 2;
        let ((x0, x1), (i0, i1)) = (x.split_at(Axis(0), h), xin.split_at(Axis(0), h));
        let ((t0, t1), (l0, l1)) = (theta.split_at(Axis(0), h), ld.split_at(Axis(0), h));
        rayon::join(
            || apply_rows(tr, cols, x0, i0, t0, l0),
            || apply_rows(tr, cols, x1, i1, t1, l1),
        );
        return;
    }
    let (mut y, mut buf) = (Vec::with_capacity(cols.len()), Vec::new());
    Zip::from(x.rows_mut()).and(xin.rows()).and(theta.rows()).and(ld).for_each(
        |mut row, xr, o, ld| {
            y.clear();
            y.extend(xr.iter().copied());
            *ld += tr.apply_many(&mut y, row_of(o), &mut buf);
            for (&v, &c) in y.iter().zip(cols) {
                row[c] = v;
            }
        },
    );
}

/// Sequential direction, the exact inverse of [`ar_apply`]: given `y` (in place) computes
/// `x` one degree at a time, in one network's worth of arithmetic (see `solve.rs`); adds
/// `sum_k ln|d t^{-1}/dy|`.
pub fn ar_solve<T: Real, Tr: Transformer<T>>(
    tr: &Tr,
    made: &Made<T>,
    cols: &[usize],
    x: ArrayViewMut2<T>,
    ld: ArrayViewMut1<T>,
    s: &mut ArScratch<T>,
) {
    debug_assert_eq!(tr.n_params(), made.n_params, "ar_solve: raw parameter count");
    let cols = sorted(made, cols, s);
    plan_cached(made, s);
    solve::solve_rows(tr, &s.plan, &mut s.tile, &cols, x, ld);
    give_back(s, cols);
}

/// Backward pass of [`ar_apply`]. `x_in` is its input; `g` holds dL/dy on entry and dL/dx on
/// return; `dld` is dL/d(ld) per row. Accumulates the MADE's parameter gradients into `grad`
/// (same architecture, e.g. [`Made::zeros`]), or writes them there (`out`); masked weights
/// get exactly zero. `tape` is
/// what the same pass's [`ar_apply`] recorded: its masked network, gathered input and
/// activations are reused, not recomputed.
#[allow(clippy::too_many_arguments)]
pub fn ar_apply_backward<T: Real, Tr: Transformer<T>>(
    tr: &Tr,
    made: &Made<T>,
    cols: &[usize],
    x_in: ArrayView2<T>,
    g: ArrayViewMut2<T>,
    dld: ArrayView1<T>,
    grad: &mut Made<T>,
    tape: &mut Tape<ArScratch<T>>,
    out: GradOut,
) {
    debug_assert_eq!(x_in.dim(), g.dim(), "ar_apply_backward: shapes");
    let s = tape.replay(x_in.nrows());
    let cols = sorted(made, cols, s);
    // The transformer's own dL/dx into xbar, dL/dtheta into dout.
    gather(g.view(), &cols, &mut s.xbar);
    let theta = made_out(&s.net, &s.empty);
    theta_grads(tr, Dir::Apply, s.xin.view(), theta, s.xbar.view_mut(), dld, &mut s.dout);
    resize(&mut s.dxin, x_in.nrows(), cols.len());
    s.dxin.assign(&s.xbar);
    made_backward(made, grad, true, s, out);
    scatter(s.dxin.view(), &cols, g);
    give_back(s, cols);
}

/// Backward pass of [`ar_solve`]. `y_in` is its input; `g` holds dL/dx (the solve's output)
/// on entry and dL/dy on return; `dld` is dL/d(the log-det it added) per row.
///
/// With `x = solve(y)`, `x_k = u(y_k; theta_k(x))` (`u = t^{-1}`), the total adjoint
/// `xbar = dL/dx` solves the triangular system `xbar = g + (dtheta/dx)^T thetabar(xbar)`,
/// where `thetabar_k = du/dtheta_k^T xbar_k + dld dlambda/dtheta_k`. It is found by
/// fixed-point iteration, each round one input-VJP through the MADE: round `i` fixes the
/// inputs of the `i` highest degrees, so it is exact after at most `D` rounds (stopping as
/// soon as nothing changes). Cost: the solve, one forward pass, up to `D` input-VJPs and one
/// parameter backward pass. `tape` is the one the same pass's [`ar_solve`] recorded; the
/// solve keeps no activations, so only its buffers are reused.
#[allow(clippy::too_many_arguments)]
pub fn ar_solve_backward<T: Real, Tr: Transformer<T>>(
    tr: &Tr,
    made: &Made<T>,
    cols: &[usize],
    y_in: ArrayView2<T>,
    g: ArrayViewMut2<T>,
    dld: ArrayView1<T>,
    grad: &mut Made<T>,
    tape: &mut Tape<ArScratch<T>>,
    out: GradOut,
) {
    debug_assert_eq!(y_in.dim(), g.dim(), "ar_solve_backward: shapes");
    let s = tape.replay(y_in.nrows());
    let (n, d) = (y_in.nrows(), cols.len());
    let cols = sorted(made, cols, s);
    solve_gathered(tr, made, &cols, y_in, s);
    if let Some(eff) = &s.eff {
        eff.forward_sparse(s.xin.view(), &mut s.net, Some(made.blocks()));
    }
    gather(g.view(), &cols, &mut s.gbar);
    resize(&mut s.xbar, n, d);
    s.xbar.assign(&s.gbar);
    for round in 0..=d {
        // xnext: dL/dy for the current xbar; dout: thetabar.
        resize(&mut s.xnext, n, d);
        s.xnext.assign(&s.xbar);
        let theta = made_out(&s.net, &s.empty);
        theta_grads(tr, Dir::Invert, s.yin.view(), theta, s.xnext.view_mut(), dld, &mut s.dout);
        if round == d {
            break;
        }
        resize(&mut s.dxin, n, d);
        if let Some(eff) = &s.eff {
            let (acts, deltas) = (&s.net.acts, &mut s.net.deltas);
            made::input_vjp(eff, made.blocks(), acts, s.dout.view(), deltas, s.dxin.view_mut());
        }
        s.dxin += &s.gbar;
        if s.dxin == s.xbar {
            break;
        }
        std::mem::swap(&mut s.dxin, &mut s.xbar);
    }
    made_backward(made, grad, false, s, out);
    scatter(s.xnext.view(), &cols, g);
    give_back(s, cols);
}

/// Solves `y_in[:, cols]` (`cols` in degree order) into `s.xin`, keeping `y_in[:, cols]` in
/// `s.yin`.
fn solve_gathered<T: Real, Tr: Transformer<T>>(
    tr: &Tr,
    made: &Made<T>,
    cols: &[usize],
    y_in: ArrayView2<T>,
    s: &mut ArScratch<T>,
) {
    let (n, d) = (y_in.nrows(), cols.len());
    gather(y_in, cols, &mut s.yin);
    resize(&mut s.xin, n, d);
    s.xin.assign(&s.yin);
    s.ident.clear();
    s.ident.extend(0..d);
    if s.ld.len() != n {
        s.ld = Array1::zeros(n);
    }
    plan_cached(made, s);
    solve::solve_rows(tr, &s.plan, &mut s.tile, &s.ident, s.xin.view_mut(), s.ld.view_mut());
}

/// Builds `s.plan` (and the masked network) unless they are already this MADE's.
fn plan_cached<T: Real>(made: &Made<T>, s: &mut ArScratch<T>) {
    let eff = made.masked_cached(&mut s.eff, &mut s.eff_stamp);
    if s.plan_stamp != Some(made.stamp()) {
        s.plan.build(eff, made.sorted_deg(), &made.hidden_deg, made.n_params);
        s.plan_stamp = Some(made.stamp());
    }
}

/// Backpropagates `s.dout` through the masked network at `s.xin`, putting the masked
/// parameter gradients into `grad` (`out`) and, if `dx`, adding the input gradient into
/// `s.dxin`.
fn made_backward<T: Real>(
    made: &Made<T>,
    grad: &mut Made<T>,
    dx: bool,
    s: &mut ArScratch<T>,
    out: GradOut,
) {
    let eff = s.eff.as_ref().expect("made_backward: the forward step built the masked network");
    let sp = Some(made.blocks());
    let dxin = if dx { Some(s.dxin.view_mut()) } else { None };
    if out == GradOut::Write && made.all_staircase() && made.in_degree_order() {
        // The masked network's layout is the MADE's: the products write the gradient itself,
        // and only the masked-out entries are zeroed after (no copy from a buffer).
        let g = grad.net_mut();
        eff.backward_sparse(s.xin.view(), &mut s.net, s.dout.view(), g, dxin, sp, false);
        return made.zero_masked(g);
    }
    // The products write the gradient inside the blocks; with staircase masks nothing else is
    // read (`put_masked_grad`), so the rest may stay stale instead of being zeroed first.
    let geff = match made.all_staircase() {
        true => crate::nn::shaped_like(&mut s.geff, made.net()),
        false => crate::nn::zeroed_like(&mut s.geff, made.net()),
    };
    eff.backward_sparse(s.xin.view(), &mut s.net, s.dout.view(), geff, dxin, sp, false);
    made.put_masked_grad(geff, grad, out);
}

/// `w` (`n x D`, MADE order) holds the weights of each transformer value on entry, and the
/// derivative of `w * value + dld * log-det` with respect to the transformer input `v` on
/// return; `dout` receives it with respect to the raw parameters `theta`.
fn theta_grads<T: Real, Tr: Transformer<T>>(
    tr: &Tr,
    dir: Dir,
    v: ArrayView2<T>,
    theta: ArrayView2<T>,
    w: ArrayViewMut2<T>,
    dld: ArrayView1<T>,
    dout: &mut Array2<T>,
) {
    resize(dout, v.nrows(), theta.ncols());
    let dout = dout.view_mut();
    by_width!(1 + tr.n_params(), N => theta_grads_n::<T, Tr, N>(tr, dir, v, theta, w, dld, dout))
}

fn theta_grads_n<T: Real, Tr: Transformer<T>, const N: usize>(
    tr: &Tr,
    dir: Dir,
    v: ArrayView2<T>,
    theta: ArrayView2<T>,
    mut w: ArrayViewMut2<T>,
    dld: ArrayView1<T>,
    mut dout: ArrayViewMut2<T>,
) {
    let n = v.nrows();
    if split_elementwise(n, v.ncols()) {
        let h = n / 2;
        let ((v0, v1), (t0, t1)) = (v.split_at(Axis(0), h), theta.split_at(Axis(0), h));
        let ((w0, w1), (l0, l1)) = (w.split_at(Axis(0), h), dld.split_at(Axis(0), h));
        let (d0, d1) = dout.split_at(Axis(0), h);
        rayon::join(
            || theta_grads_n::<T, Tr, N>(tr, dir, v0, t0, w0, l0, d0),
            || theta_grads_n::<T, Tr, N>(tr, dir, v1, t1, w1, l1, d1),
        );
        return;
    }
    let np = tr.n_params();
    let (mut vjp, mut buf) = (Vjp::<T, N>::new(np), Vec::new());
    let inverse = matches!(dir, Dir::Invert);
    Zip::from(w.rows_mut()).and(v.rows()).and(theta.rows()).and(dout.rows_mut()).and(dld).for_each(
        |mut wr, vr, o, mut dr, &dl| {
            let o = row_of(o);
            if let (Some(w), Some(x), Some(d)) =
                (wr.as_slice_mut(), vr.as_slice(), dr.as_slice_mut())
            {
                if tr.vjp_many(inverse, VjpRow { xs: x, p: o, w, wl: dl, dp: d }, &mut buf) {
                    return;
                }
            }
            for k in 0..wr.len() {
                let out = vjp.run(tr, dir, vr[k], &o[k * np..(k + 1) * np], wr[k], dl);
                wr[k] = out[0];
                for (j, &v) in out[1..].iter().enumerate() {
                    dr[k * np + j] = v;
                }
            }
        },
    );
}

/// Writes `src` (`n x |cols|`) into `dst[:, cols]`.
fn scatter<T: Real>(src: ArrayView2<T>, cols: &[usize], mut dst: ArrayViewMut2<T>) {
    Zip::from(dst.rows_mut()).and(src.rows()).for_each(|mut d, s| {
        for (&v, &c) in s.iter().zip(cols) {
            d[c] = v;
        }
    });
}

#[cfg(test)]
mod tests;
