//! The forward product of a layer whose input came out of a ReLU, skipping the zero inputs.
//!
//! About half of a conditioner's hidden units are zero for any one row (C1's 1 -> 64 layer
//! at initialisation: 50%), and a zero input adds nothing to its row's outputs. Row by row,
//! the indices of the non-zero inputs are packed into a list (one masked compare and one
//! `vpcompressd` per register of inputs), and only those weight rows are multiplied:
//!
//! ```text
//! c[i, j0..j0 + 4W] = bias + sum over kk in nonzero(a[i, ..]) of a[i, kk] * b[kk, j0..j0 + 4W]
//! ```
//!
//! A row at density `d` costs about `d` times a one-row dense product, which is load-bound
//! (four weight registers per inner index), against the 6-row register blocks of
//! `avx512::product`, which are FMA-bound; the caller therefore takes this kernel only where
//! its input is sparse enough ([`super::SPARSE_MAX_DENSITY`]).
//!
//! The sums run in list order, alternating between two sets of accumulators, so the result
//! is the dense product's up to the order of the additions. NaN inputs count as non-zero and
//! propagate; what is lost is only `0 * inf = NaN` from an infinite weight.

use super::avx512::{Epilogue, Lane, Mat};
use std::arch::x86_64::*;

/// Longest input row [`product`] takes (its index list lives on the stack).
pub(super) const MAX_K: usize = 256;

/// Registers of outputs per pass over a row's list (64 f32 or 32 f64 columns).
const NV: usize = 4;

/// How many list entries ahead the per-sample path asks for a weight row.
const PREFETCH_AHEAD: usize = 6;

/// `c (m x n) = epilogue(a (m x k) . b (k x n))`, row by row over each row's non-zero
/// inputs. `PREFETCH`: ask for the weight rows ahead (the per-sample pass, whose weights come
/// from L2; in a batch they stay in L1).
///
/// # Safety
/// As `avx512::product`: the CPU has AVX-512F; `a` (unit column stride), `b` (unit column
/// stride) and `c` (row stride `ldc`, unit column stride) cover `m x k`, `k x n` and `m x n`
/// elements, `bias` (if any) covers `n`, `c` aliases neither input; and `k <= MAX_K`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn product<L: Lane, const PREFETCH: bool>(
    a: Mat<L>,
    b: Mat<L>,
    c: *mut L,
    ldc: usize,
    (m, k, n): (usize, usize, usize),
    ep: Epilogue<L>,
) {
    assert!(k <= MAX_K && a.cs == 1 && b.cs == 1, "sparse::product: a shape it does not take");
    // Not zeroed (a memset of 1 KB was 8% of `log_prob_one`): only the entries `nonzeros`
    // has just written are read.
    let mut idx = std::mem::MaybeUninit::<[u32; MAX_K + 16]>::uninit();
    for i in 0..m {
        let arow = a.ptr.add(i * a.rs);
        let nnz = nonzeros::<L>(arow, k, idx.as_mut_ptr().cast());
        // SAFETY: `nonzeros` has written the first `nnz` entries.
        let list = std::slice::from_raw_parts(idx.as_ptr().cast::<u32>(), nnz);
        let mut j0 = 0;
        while j0 < n {
            let out = c.add(i * ldc + j0);
            if n - j0 >= NV * L::W {
                row_panel::<L, PREFETCH, true>(arow, b, list, (j0, n - j0), out, ep);
            } else {
                row_panel::<L, PREFETCH, false>(arow, b, list, (j0, n - j0), out, ep);
            }
            j0 += NV * L::W;
        }
    }
}

/// Writes the indices of the non-zero (or NaN) values of `row[..k]` to the front of `idx`
/// and returns how many there are. Each register's compressed indices are stored whole (16
/// lanes), hence the list's 16 spare entries (`idx` has room for `MAX_K + 16`).
#[inline(always)]
unsafe fn nonzeros<L: Lane>(row: *const L, k: usize, idx: *mut u32) -> usize {
    let iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let mut count = 0;
    let mut base = 0;
    while base < k {
        // Whole registers by unmasked loads: a masked load does not take its value from the
        // previous layer's stores still in flight (the per-sample path waited on them).
        let (m, p) = (L::mask(k - base), row.add(base));
        let v = if k - base >= L::W { L::vloadu(p) } else { L::vload(m, p) };
        let bits = L::nonzero_bits(m, v);
        let lanes = _mm512_add_epi32(iota, _mm512_set1_epi32(base as i32));
        let packed = _mm512_maskz_compress_epi32(bits, lanes);
        _mm512_storeu_si512(idx.add(count).cast(), packed);
        count += bits.count_ones() as usize;
        base += L::W;
    }
    count
}

/// One row's outputs `[j0, j0 + NV W)` (masked at `j0 + left`) over the weight rows in
/// `list`: entries alternate between two sets of accumulators, so consecutive multiply-adds
/// into one register are two entries apart. `FULL`: all `NV` registers are whole (unmasked
/// loads).
#[inline(always)]
unsafe fn row_panel<L: Lane, const PREFETCH: bool, const FULL: bool>(
    arow: *const L,
    b: Mat<L>,
    list: &[u32],
    (j0, left): (usize, usize),
    out: *mut L,
    ep: Epilogue<L>,
) {
    let masks: [L::M; NV] = std::array::from_fn(|v| L::mask(left.saturating_sub(v * L::W)));
    let bp = b.ptr.add(j0);
    let (mut acc0, mut acc1) = ([L::vzero(); NV], [L::vzero(); NV]);
    let load = |v: usize, p: *const L| if FULL { L::vloadu(p) } else { L::vload(masks[v], p) };
    let mut pairs = list.chunks_exact(2);
    for (p, pair) in pairs.by_ref().enumerate() {
        if PREFETCH {
            if let Some(&ahead) = list.get(2 * p + PREFETCH_AHEAD) {
                prefetch_row::<L>(bp.add(ahead as usize * b.rs), left);
            }
        }
        let (k0, k1) = (pair[0] as usize, pair[1] as usize);
        let (a0, a1) = (L::vsplat(arow.add(k0)), L::vsplat(arow.add(k1)));
        let (r0, r1) = (bp.add(k0 * b.rs), bp.add(k1 * b.rs));
        for v in 0..NV {
            acc0[v] = L::vfma(a0, load(v, r0.add(v * L::W)), acc0[v]);
            acc1[v] = L::vfma(a1, load(v, r1.add(v * L::W)), acc1[v]);
        }
    }
    if let [last] = pairs.remainder() {
        let (a0, r0) = (L::vsplat(arow.add(*last as usize)), bp.add(*last as usize * b.rs));
        for v in 0..NV {
            acc0[v] = L::vfma(a0, load(v, r0.add(v * L::W)), acc0[v]);
        }
    }
    for v in 0..NV {
        let mut x = L::vadd(acc0[v], acc1[v]);
        if let Some(bias) = ep.bias {
            x = L::vadd(x, L::vload(masks[v], bias.add(j0 + v * L::W)));
        }
        if ep.relu {
            x = L::vmax(x, L::vzero());
        }
        if FULL {
            L::vstoreu(out.add(v * L::W), x);
        } else {
            L::vstore(masks[v], out.add(v * L::W), x);
        }
    }
}

/// Asks for the cache lines of one weight row's panel (`left` columns from `p`, at most
/// `NV` registers).
#[inline(always)]
unsafe fn prefetch_row<L: Lane>(p: *const L, left: usize) {
    let per_line = 64 / std::mem::size_of::<L>();
    for l in (0..left.min(NV * L::W)).step_by(per_line) {
        _mm_prefetch::<_MM_HINT_T0>(p.add(l).cast());
    }
}

#[cfg(test)]
mod tests {
    use super::super::{fused_dense_after_relu, sparse_row};
    use crate::real::Real;
    use ndarray::{Array2, ArrayView2};

    /// `a` with about `zeros` of its values exactly zero (a ReLU's output), the rest in
    /// (0, 2); deterministic.
    fn relu_input<T: Real>(m: usize, k: usize, zeros: f64, seed: usize) -> Array2<T> {
        Array2::from_shape_fn((m, k), |(i, j)| {
            let h = ((i * 131 + j * 71 + seed * 29) % 997) as f64 / 997.0;
            T::of(if h < zeros { 0.0 } else { 2.0 * (h - zeros) / (1.0 - zeros) })
        })
    }

    /// `act(a b + bias)` by ndarray, the reference.
    fn reference<T: Real>(a: ArrayView2<T>, b: ArrayView2<T>, bias: &[T], relu: bool) -> Array2<T> {
        let mut want = a.dot(&b);
        for mut row in want.rows_mut() {
            for (v, &bj) in row.iter_mut().zip(bias) {
                *v = *v + bj;
                if relu && !(*v > T::zero()) {
                    *v = T::zero();
                }
            }
        }
        want
    }

    /// Sparse enough inputs (80% zero) over full and masked panels, several panels per row
    /// (f64 at 64 and 100 columns), the longest input taken, and one too long (dense path);
    /// batch and per-row entries, with and without the ReLU.
    fn matches_the_dense_product<T: Real>(tol: f64) {
        let shapes = [(7, 64, 64), (5, 33, 23), (3, 200, 100), (4, 256, 9), (2, 300, 16)];
        for (s, &(m, k, n)) in shapes.iter().enumerate() {
            let a = relu_input::<T>(m, k, 0.8, s);
            let b =
                Array2::from_shape_fn((k, n), |(i, j)| T::of(((i * 7 + j * 3) % 11) as f64 - 5.0));
            let bias: Vec<T> = (0..n).map(|j| T::of(j as f64 * 0.25 - 1.0)).collect();
            for relu in [false, true] {
                let want = reference(a.view(), b.view(), &bias, relu);
                let mut got = Array2::from_elem((m, n), T::of(f64::NAN));
                if !fused_dense_after_relu(a.view(), b.view(), Some(&bias), relu, got.view_mut()) {
                    continue; // no AVX-512 here: nothing of this kernel runs
                }
                let close = |x: T, y: T| (x.f64() - y.f64()).abs() <= tol * (1.0 + y.f64().abs());
                assert!(got.iter().zip(&want).all(|(&x, &y)| close(x, y)), "{m}x{k}x{n} {relu}");
                for (i, row) in a.rows().into_iter().enumerate() {
                    let mut y = vec![T::of(f64::NAN); n];
                    if sparse_row(b.view(), &bias, relu, row.as_slice().unwrap(), &mut y) {
                        assert!(y.iter().zip(want.row(i)).all(|(&x, &w)| close(x, w)), "row {i}");
                    }
                }
            }
        }
    }

    #[test]
    fn sparse_products_match_the_dense_product() {
        matches_the_dense_product::<f64>(1e-12);
        matches_the_dense_product::<f32>(1e-5);
    }

    /// The zeros are really skipped (an infinite weight behind a zero input leaves the output
    /// finite, where the dense product gives NaN), a NaN input still reaches its row, and a
    /// dense input takes the dense kernel.
    #[test]
    fn zeros_are_skipped_and_nan_propagates() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        let mut a = relu_input::<f64>(20, 64, 0.8, 3);
        a[[0, 5]] = 0.0;
        a[[1, 6]] = f64::NAN;
        let mut b = Array2::from_elem((64, 64), 0.5);
        b.row_mut(5).fill(f64::INFINITY);
        let mut c = Array2::zeros((20, 64));
        assert!(fused_dense_after_relu(a.view(), b.view(), None, false, c.view_mut()));
        assert!(c.row(0).iter().all(|v| v.is_finite()), "row 0 went through the zero input");
        assert!(c.row(1).iter().all(|v| v.is_nan()), "row 1's NaN input was skipped");
        let dense = relu_input::<f64>(20, 64, 0.0, 3);
        assert!(fused_dense_after_relu(dense.view(), b.view(), None, false, c.view_mut()));
        assert!(c.iter().all(|v| v.is_infinite()), "a dense input skipped an input");
    }
}
