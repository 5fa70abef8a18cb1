//! The backward pass of an [`Mlp`]: parameter gradients and the gradient passed down to its
//! input. Each layer `i` (from the last) runs two products and two elementwise passes:
//!
//! ```text
//! gw_i += input_i^T delta_i            gb_i += column sums of delta_i
//! delta_{i-1} = (delta_i w_i^T) * act'(input_i)      (dx += delta_0 w_0^T for the first)
//! ```

use super::{blocked, resize_all, simd, Mlp, MlpScratch, Sparsity};
use crate::gemm;
use crate::nn::{Activation, Block, Dense};
use crate::params::Params;
use crate::real::Real;
use ndarray::{s, Array2, ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis};

impl<T: Real> Mlp<T> {
    /// The backward pass, after `forward(x, s)` with the same `x`. `dout` is the gradient with
    /// respect to the network's output. Accumulates parameter gradients into `grad` (same
    /// architecture) and, if given, adds the gradient with respect to `x` into `dx`.
    ///
    /// A dense network runs a batch of more than [`gemm::TILE_ROWS`] rows in row tiles (see
    /// [`Mlp::backward_rows`]), from [`gemm::PAR_MIN_ROWS`] rows on two threads, one half each
    /// (see [`Mlp::backward_tiled`]). A large masked network splits each product instead: the
    /// weight gradient `input^T delta` by its columns, the gradient passed down by rows.
    pub fn backward(
        &self,
        x: ArrayView2<T>,
        s: &mut MlpScratch<T>,
        dout: ArrayView2<T>,
        grad: &mut Mlp<T>,
        dx: Option<ArrayViewMut2<T>>,
    ) {
        self.backward_sparse(x, s, dout, grad, dx, None, true)
    }

    /// [`Mlp::backward`] of a network whose weights are zero outside `sp`'s blocks: the
    /// gradient of a weight outside them is not accumulated. With blocks and `!acc`, the
    /// gradients inside the blocks and of the biases are written instead of added to, and the
    /// entries outside the blocks keep whatever they held: a caller that reads only the blocks
    /// need not zero `grad` first (a MADE's 4.6 MB of gradient in C2, per thread and step).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward_sparse(
        &self,
        x: ArrayView2<T>,
        s: &mut MlpScratch<T>,
        dout: ArrayView2<T>,
        grad: &mut Mlp<T>,
        mut dx: Option<ArrayViewMut2<T>>,
        sp: Sparsity,
        acc: bool,
    ) {
        debug_assert_eq!(grad.layers.len(), self.layers.len(), "Mlp::backward: grad architecture");
        debug_assert!(acc || sp.is_some(), "Mlp::backward: only blocked gradients overwrite");
        let nl = self.layers.len();
        if nl == 0 {
            if let Some(dx) = dx.as_mut() {
                *dx += &dout;
            }
            return;
        }
        let n = x.nrows();
        let rows_split = gemm::row_parts(n) > 1;
        if rows_split && sp.is_none() {
            return self.backward_tiled(x, s, dout, grad, dx);
        }
        if n > gemm::TILE_ROWS && sp.is_none() {
            // One thread (a half of a split training step, or a batch below the split).
            let acts: Vec<_> = s.acts.iter().map(|a| a.view()).collect();
            return self.backward_rows(x, &acts, dout, grad, dx, &mut s.deltas);
        }
        resize_all(&mut s.deltas, n, self.hidden_widths());
        for i in (0..nl).rev() {
            let blocks = sp.map(|b| &b[i][..]);
            // A blocked layer is split here (its products are too small to split themselves).
            let par =
                rows_split || blocks.is_some_and(|b| gemm::split_worth(blocked::macs(n, b), n));
            let (below, here) = s.deltas.split_at_mut(i);
            let delta = if i == nl - 1 { dout.view() } else { here[0].view() };
            let input = if i == 0 { x.view() } else { s.acts[i - 1].view() };
            let (layer, gl) = (&self.layers[i], &mut grad.layers_mut()[i]);
            weight_grad(input, delta, gl, par, blocks, acc);
            if i > 0 {
                let below = below[i - 1].view_mut();
                let act = Some((self.act, s.acts[i - 1].view()));
                pass_down(delta, layer.w.view(), below, act, false, par, blocks);
            } else if let Some(dx) = dx.as_mut() {
                pass_down(delta, layer.w.view(), dx.view_mut(), None, true, par, blocks);
            }
        }
    }

    /// The widths of the hidden layers (the deltas' widths).
    fn hidden_widths(&self) -> impl ExactSizeIterator<Item = usize> + '_ {
        let nl = self.layers.len();
        self.layers[..nl.saturating_sub(1)].iter().map(|l| l.b.len())
    }

    /// The backward pass of a large batch: two threads, one half of the rows each, each in row
    /// tiles of [`gemm::TILE_ROWS`], so a tile's deltas stay in cache from the layer that
    /// writes them to the layer that reads them. (Untiled, every layer streamed its
    /// `n x width` deltas through memory four times: 1 MB per f32 layer in C4 at batch 4096.)
    /// The second half accumulates into a gradient of its own, added to `grad` after the join.
    fn backward_tiled(
        &self,
        x: ArrayView2<T>,
        s: &mut MlpScratch<T>,
        dout: ArrayView2<T>,
        grad: &mut Mlp<T>,
        dx: Option<ArrayViewMut2<T>>,
    ) {
        let mid = x.nrows() / 2;
        let MlpScratch { acts, deltas, deltas2, grad2, .. } = s;
        let g2 = zeroed_like(grad2, grad);
        let (top, bottom): (Vec<_>, Vec<_>) =
            acts.iter().map(|a| a.view().split_at(Axis(0), mid)).unzip();
        let (x0, x1) = x.split_at(Axis(0), mid);
        let (d0, d1) = dout.split_at(Axis(0), mid);
        let (dx0, dx1) = match dx {
            Some(dx) => {
                let (a, b) = dx.split_at(Axis(0), mid);
                (Some(a), Some(b))
            }
            None => (None, None),
        };
        rayon::join(
            || self.backward_rows(x0, &top, d0, grad, dx0, deltas),
            || self.backward_rows(x1, &bottom, d1, g2, dx1, deltas2),
        );
        for (gl, hl) in grad.layers_mut().iter_mut().zip(&g2.layers) {
            gl.w += &hl.w;
            gl.b += &hl.b;
        }
    }

    /// The backward pass of the rows of `x` (`acts`: the layers' outputs on the same rows) in
    /// row tiles of near-equal size (no sliver of a tile) on one thread; `deltas` holds one
    /// tile's hidden-layer deltas.
    fn backward_rows(
        &self,
        x: ArrayView2<T>,
        acts: &[ArrayView2<T>],
        dout: ArrayView2<T>,
        grad: &mut Mlp<T>,
        mut dx: Option<ArrayViewMut2<T>>,
        deltas: &mut Vec<Array2<T>>,
    ) {
        let (nl, n) = (self.layers.len(), x.nrows());
        for r in crate::par::tile_ranges(n) {
            let rows = s![r, ..];
            resize_all(deltas, x.slice(rows).nrows(), self.hidden_widths());
            for i in (0..nl).rev() {
                let (below, here) = deltas.split_at_mut(i);
                let delta = if i == nl - 1 { dout.slice(rows) } else { here[0].view() };
                let input = if i == 0 { x.slice(rows) } else { acts[i - 1].slice(rows) };
                let (layer, gl) = (&self.layers[i], &mut grad.layers_mut()[i]);
                weight_grad(input, delta, gl, false, None, true);
                if i > 0 {
                    let act = Some((self.act, acts[i - 1].slice(rows)));
                    let below = below[i - 1].view_mut();
                    pass_down(delta, layer.w.view(), below, act, false, false, None);
                } else if let Some(dx) = dx.as_mut() {
                    let dx = dx.slice_mut(rows);
                    pass_down(delta, layer.w.view(), dx, None, true, false, None);
                }
            }
        }
    }
}

/// `slot`'s network shaped like `like`: reallocated (zero) only when its shape differs, else
/// holding whatever it held.
pub(crate) fn shaped_like<'a, T: Real>(
    slot: &'a mut Option<Mlp<T>>,
    like: &Mlp<T>,
) -> &'a mut Mlp<T> {
    let same = |g: &Mlp<T>| {
        g.layers.len() == like.layers.len()
            && g.layers.iter().zip(&like.layers).all(|(a, b)| a.w.dim() == b.w.dim())
    };
    if !slot.as_ref().is_some_and(same) {
        let mut g = like.clone();
        g.zero();
        *slot = Some(g);
    }
    slot.as_mut().expect("set above")
}

/// [`shaped_like`], made zero.
pub(crate) fn zeroed_like<'a, T: Real>(
    slot: &'a mut Option<Mlp<T>>,
    like: &Mlp<T>,
) -> &'a mut Mlp<T> {
    let g = shaped_like(slot, like);
    g.zero();
    g
}

/// `gl.w += input^T delta`, `gl.b += column sums of delta` (`=` for both unless `acc`);
/// with `par`, the columns are split between two threads.
fn weight_grad<T: Real>(
    input: ArrayView2<T>,
    delta: ArrayView2<T>,
    gl: &mut Dense<T>,
    par: bool,
    blocks: Option<&[Block]>,
    acc: bool,
) {
    if !acc {
        gl.b.fill(T::zero());
    }
    if let Some(blocks) = blocks {
        return blocked_weight_grad(input, delta, gl, par, blocks, acc);
    }
    let cols = delta.ncols();
    if par && cols >= 2 {
        let mid = cols / 2;
        let (d0, d1) = delta.split_at(Axis(1), mid);
        let (w0, w1) = gl.w.view_mut().split_at(Axis(1), mid);
        let (b0, b1) = gl.b.view_mut().split_at(Axis(0), mid);
        rayon::join(
            || {
                gemm::gemm(input.t(), d0, w0, acc);
                column_sums_into(d0, b0);
            },
            || {
                gemm::gemm(input.t(), d1, w1, acc);
                column_sums_into(d1, b1);
            },
        );
    } else {
        gemm::gemm(input.t(), delta, gl.w.view_mut(), acc);
        column_sums_into(delta, gl.b.view_mut());
    }
}

/// [`weight_grad`] on `blocks` only; with `par`, two groups of blocks of about equal work on
/// two threads.
fn blocked_weight_grad<T: Real>(
    input: ArrayView2<T>,
    delta: ArrayView2<T>,
    gl: &mut Dense<T>,
    par: bool,
    blocks: &[Block],
    acc: bool,
) {
    let cut = blocked::balanced_cut(blocks);
    if par && cut < blocks.len() {
        let col = blocks[cut].cols.start;
        let (w0, w1) = gl.w.view_mut().split_at(Axis(1), col);
        rayon::join(
            || blocked::weight_product(input, delta, w0, &blocks[..cut], 0, acc),
            || blocked::weight_product(input, delta, w1, &blocks[cut..], col, acc),
        );
    } else {
        blocked::weight_product(input, delta, gl.w.view_mut(), blocks, 0, acc);
    }
    column_sums_into(delta, gl.b.view_mut());
}

/// `b += sum over rows of d`.
fn column_sums_into<T: Real>(d: ArrayView2<T>, b: ArrayViewMut1<T>) {
    simd(
        #[inline(always)]
        || column_sums_body(d, b),
    )
}

#[inline(always)]
fn column_sums_body<T: Real>(d: ArrayView2<T>, mut b: ArrayViewMut1<T>) {
    match b.as_slice_mut() {
        Some(b) => {
            for row in d.rows() {
                match row.as_slice() {
                    Some(r) => b.iter_mut().zip(r).for_each(|(b, &v)| *b += v),
                    None => b.iter_mut().zip(row).for_each(|(b, &v)| *b += v),
                }
            }
        }
        None => {
            for row in d.rows() {
                b += &row;
            }
        }
    }
}

/// The gradient below a layer: `out = delta w^T` (`accumulate`: `out +=`), then, for a hidden
/// layer, times the activation's derivative at its output `y`. With `par`, the rows are split
/// between two threads.
fn pass_down<T: Real>(
    delta: ArrayView2<T>,
    w: ArrayView2<T>,
    out: ArrayViewMut2<T>,
    act: Option<(Activation, ArrayView2<T>)>,
    accumulate: bool,
    par: bool,
    blocks: Option<&[Block]>,
) {
    let run = |delta: ArrayView2<T>,
               mut out: ArrayViewMut2<T>,
               act: Option<(Activation, ArrayView2<T>)>| {
        match blocks {
            None => gemm::gemm(delta, w.t(), out.view_mut(), accumulate),
            Some(b) => blocked::product_t(delta, w, out.view_mut(), accumulate, b),
        }
        if let Some((act, y)) = act {
            act.mul_derivative(out, y);
        }
    };
    let n = delta.nrows();
    if par && n >= 2 {
        let mid = n / 2;
        let (d0, d1) = delta.split_at(Axis(0), mid);
        let (o0, o1) = out.split_at(Axis(0), mid);
        let (a0, a1) = match act {
            Some((a, y)) => {
                let (y0, y1) = y.split_at(Axis(0), mid);
                (Some((a, y0)), Some((a, y1)))
            }
            None => (None, None),
        };
        rayon::join(|| run(d0, o0, a0), || run(d1, o1, a1));
    } else {
        run(delta, out, act);
    }
}
