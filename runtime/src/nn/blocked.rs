//! Products with a weight that is zero below a staircase: the masked layers of a MADE, once
//! its inputs, hidden units and outputs are in degree order (see `layers::autoregressive`).
//!
//! A unit of degree `m` sees only the source units of degree `<= m` (or `< m`), which in
//! degree order are a prefix of the source layer. Cutting a layer's output columns into
//! blocks, block `j` needs only the first `k_j` source units, so each of the three products
//! of a layer is a handful of smaller products that skip the masked-out part of the weight:
//!
//! ```text
//! forward      out[:, cols_j]   = in[:, ..k_j] . w[..k_j, cols_j]
//! pass down    din[:, ..k_j]   += dout[:, cols_j] . w[..k_j, cols_j]^T
//! weight grad  gw[..k_j, cols_j] += in[:, ..k_j]^T . dout[:, cols_j]
//! ```
//!
//! For C2's MADE (64 -> 256 -> 256 -> 128) that is a little over half of the dense
//! multiply-adds. The weight entries inside a block that the mask removes are zero in the
//! masked network, so the products are exact; gradient entries outside every block are never
//! written (the caller's accumulator keeps its zeros).

use super::{add_bias_activate, dense_into, Activation, Dense};
use crate::gemm;
use crate::real::Real;
use ndarray::{s, ArrayView2, ArrayViewMut2, Axis};
use std::ops::Range;

/// Output columns `cols` of a layer read only the first `k` rows of its weight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub cols: Range<usize>,
    pub k: usize,
}

/// Column blocks of `width` columns of an `in x out` 0/1 mask (any mask: `k` is one past the
/// last source row the block's columns see, 0 if none), in column order.
pub fn blocks_of_mask<T: Real>(mask: ArrayView2<T>, width: usize) -> Vec<Block> {
    let (rows, cols) = mask.dim();
    (0..cols)
        .step_by(width.max(1))
        .map(|c0| {
            let cols = c0..(c0 + width.max(1)).min(cols);
            let seen = |r: usize| cols.clone().any(|c| mask[[r, c]] != T::zero());
            let k = (0..rows).rev().find(|&r| seen(r)).map_or(0, |r| r + 1);
            Block { cols, k }
        })
        .collect()
}

/// Multiply-adds of a blocked product over `m` rows.
pub(crate) fn macs(m: usize, blocks: &[Block]) -> usize {
    blocks.iter().map(|b| m * b.k * b.cols.len()).sum()
}

/// `c = a w` (or `c += a w` if `accumulate`), reading only the blocks of `w`. Worth it, the
/// rows are split in two halves on two threads (see [`gemm::split_worth`]).
pub(crate) fn product<T: Real>(
    a: ArrayView2<T>,
    w: ArrayView2<T>,
    c: ArrayViewMut2<T>,
    accumulate: bool,
    blocks: &[Block],
) {
    let m = a.nrows();
    if gemm::split_worth(macs(m, blocks), m) {
        let (a0, a1) = a.split_at(Axis(0), m / 2);
        let (c0, c1) = c.split_at(Axis(0), m / 2);
        rayon::join(
            || product(a0, w, c0, accumulate, blocks),
            || product(a1, w, c1, accumulate, blocks),
        );
        return;
    }
    let mut c = c;
    for b in blocks {
        let (a, w) = (a.slice(s![.., ..b.k]), w.slice(s![..b.k, b.cols.clone()]));
        gemm::gemm(a, w, c.slice_mut(s![.., b.cols.clone()]), accumulate);
    }
}

/// `out = act(input w + b)` for `layer`, reading only the blocks of its weight: each block as
/// one dense layer ([`dense_into`]: the fused AVX-512 kernel where it applies, bias and ReLU in
/// registers). Worth splitting by rows, all of it as [`product`] then the bias and activation.
pub(crate) fn forward<T: Real>(
    input: ArrayView2<T>,
    layer: &Dense<T>,
    mut out: ArrayViewMut2<T>,
    act: Option<Activation>,
    blocks: &[Block],
) {
    let m = input.nrows();
    if gemm::split_worth(macs(m, blocks), m) {
        product(input, layer.w.view(), out.view_mut(), false, blocks);
        return add_bias_activate(out, layer.b.view(), act);
    }
    for b in blocks {
        let (a, w) = (input.slice(s![.., ..b.k]), layer.w.slice(s![..b.k, b.cols.clone()]));
        let (bias, o) = (layer.b.slice(s![b.cols.clone()]), out.slice_mut(s![.., b.cols.clone()]));
        dense_into(a, w, bias, act, false, o);
    }
}

/// `out = delta w^T` (or `out +=`), reading only the blocks of `w`; columns of `out` that no
/// block reaches are zero (or left alone).
pub(crate) fn product_t<T: Real>(
    delta: ArrayView2<T>,
    w: ArrayView2<T>,
    mut out: ArrayViewMut2<T>,
    accumulate: bool,
    blocks: &[Block],
) {
    // Without `accumulate`, the block of the longest prefix writes its columns (no fill of
    // `out` first: that fill was 3.6% of C2's training step) and only the columns beyond it
    // are zeroed; the other blocks add.
    let widest = match accumulate {
        true => None,
        false => (0..blocks.len()).max_by_key(|&i| blocks[i].k),
    };
    match widest {
        Some(i) => out.slice_mut(s![.., blocks[i].k..]).fill(T::zero()),
        None if !accumulate => out.fill(T::zero()),
        None => {}
    }
    // The widest block first, so that the others add to what it wrote.
    let order = widest.into_iter().chain((0..blocks.len()).filter(|&i| widest != Some(i)));
    for i in order {
        let b = &blocks[i];
        let (d, w) = (delta.slice(s![.., b.cols.clone()]), w.slice(s![..b.k, b.cols.clone()]));
        gemm::gemm(d, w.t(), out.slice_mut(s![.., ..b.k]), widest != Some(i));
    }
}

/// `gw += input^T delta` (`=` unless `acc`) on the blocks only; `gw` holds the weight's
/// columns from `first`.
pub(crate) fn weight_product<T: Real>(
    input: ArrayView2<T>,
    delta: ArrayView2<T>,
    mut gw: ArrayViewMut2<T>,
    blocks: &[Block],
    first: usize,
    acc: bool,
) {
    for b in blocks {
        let x = input.slice(s![.., ..b.k]);
        let d = delta.slice(s![.., b.cols.clone()]);
        let g = gw.slice_mut(s![..b.k, b.cols.start - first..b.cols.end - first]);
        gemm::gemm(x.t(), d, g, acc);
    }
}

/// Where to cut `blocks` into two groups of about equal work (the weight gradient's split by
/// columns): the index of the first block of the second group.
pub(crate) fn balanced_cut(blocks: &[Block]) -> usize {
    let total = macs(1, blocks);
    let mut acc = 0;
    let first_half = blocks.iter().position(|b| {
        acc += b.k * b.cols.len();
        2 * acc >= total
    });
    first_half.map_or(blocks.len(), |i| i + 1).clamp(1, blocks.len().saturating_sub(1).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    /// A staircase mask and a weight that is zero where the mask is.
    fn staircase(rows: usize, cols: usize) -> (Array2<f64>, Array2<f64>) {
        let mask =
            Array2::from_shape_fn(
                (rows, cols),
                |(r, c)| {
                    if r * cols <= c * rows {
                        1.0
                    } else {
                        0.0
                    }
                },
            );
        let w = Array2::from_shape_fn((rows, cols), |(r, c)| {
            mask[[r, c]] * (((r * 7 + c * 3) % 11) as f64 - 5.0)
        });
        (mask, w)
    }

    fn input(m: usize, k: usize, seed: usize) -> Array2<f64> {
        Array2::from_shape_fn((m, k), |(i, j)| ((i * 5 + j * 13 + seed) % 17) as f64 - 8.0)
    }

    #[test]
    fn blocks_cover_every_seen_row() {
        let (mask, _) = staircase(8, 6);
        let blocks = blocks_of_mask(mask.view(), 4);
        assert_eq!(blocks, [Block { cols: 0..4, k: 5 }, Block { cols: 4..6, k: 7 }]);
        let none = Array2::<f64>::zeros((3, 2));
        assert_eq!(blocks_of_mask(none.view(), 4), [Block { cols: 0..2, k: 0 }]);
        assert_eq!(balanced_cut(&blocks), 1);
    }

    /// The blocked forward pass (fused kernel per block where it applies, else product, bias
    /// and activation) equals the dense one, in f64 and f32, across the row split.
    #[test]
    fn blocked_forward_equals_the_dense_one() {
        let acts = [None, Some(Activation::Relu), Some(Activation::Tanh)];
        for ((rows, cols, m), act) in [(8, 6, 5), (64, 256, 300), (256, 128, 2100)]
            .into_iter()
            .flat_map(|shape| acts.map(|a| (shape, a)))
        {
            let (mask, w) = staircase(rows, cols);
            let blocks = blocks_of_mask(mask.view(), 32);
            let b = ndarray::Array1::from_shape_fn(cols, |j| (j % 5) as f64 - 2.0);
            let a = input(m, rows, 1) * 0.01;
            let mut want = a.dot(&w) + &b;
            if let Some(act) = act {
                want.rows_mut()
                    .into_iter()
                    .for_each(|mut r| act.apply_slice(r.as_slice_mut().expect("standard layout")));
            }
            let layer = Dense { w: w.clone(), b: b.clone() };
            let mut got = input(m, cols, 3);
            forward(a.view(), &layer, got.view_mut(), act, &blocks);
            let what = format!("{rows}x{cols}, {m} rows, {act:?}");
            crate::layers::testutil::assert_close(
                &what,
                got.as_slice().unwrap(),
                want.as_slice().unwrap(),
                1e-12,
            );
            let layer32 = Dense { w: w.mapv(|v| v as f32), b: b.mapv(|v| v as f32) };
            let mut got32 = Array2::<f32>::zeros((m, cols));
            forward(a.mapv(|v| v as f32).view(), &layer32, got32.view_mut(), act, &blocks);
            let got32: Vec<f64> = got32.iter().map(|&v| v as f64).collect();
            crate::layers::testutil::assert_close(&what, &got32, want.as_slice().unwrap(), 1e-5);
        }
    }

    #[test]
    fn blocked_products_equal_dense_ones() {
        for (rows, cols, m, width) in [(8, 6, 5, 4), (64, 256, 300, 32), (256, 128, 2100, 32)] {
            let (mask, w) = staircase(rows, cols);
            let blocks = blocks_of_mask(mask.view(), width);
            let (a, d) = (input(m, rows, 1), input(m, cols, 2));
            let mut c = input(m, cols, 3);
            product(a.view(), w.view(), c.view_mut(), false, &blocks);
            assert_eq!(c, a.dot(&w), "forward {rows}x{cols}");
            let mut din = input(m, rows, 4);
            product_t(d.view(), w.view(), din.view_mut(), false, &blocks);
            assert_eq!(din, d.dot(&w.t()), "pass down {rows}x{cols}");
            let mut acc = input(m, rows, 5);
            let want = &acc + &d.dot(&w.t());
            product_t(d.view(), w.view(), acc.view_mut(), true, &blocks);
            assert_eq!(acc, want, "pass down, accumulated {rows}x{cols}");
            let mut gw = input(rows, cols, 6);
            let want = &gw + &a.t().dot(&d);
            weight_product(a.view(), d.view(), gw.view_mut(), &blocks, 0, true);
            assert_eq!(gw * &mask, want * &mask, "weight grad, accumulated {rows}x{cols}");
            // Written over garbage: every entry the mask lets through is the product's.
            let mut gw = Array2::from_elem((rows, cols), f64::NAN);
            weight_product(a.view(), d.view(), gw.view_mut(), &blocks, 0, false);
            let want = a.t().dot(&d);
            for ((r, c), _) in mask.indexed_iter().filter(|(_, &m)| m == 1.0) {
                assert_eq!(gw[[r, c]], want[[r, c]], "weight grad, written {rows}x{cols}");
            }
        }
    }
}
