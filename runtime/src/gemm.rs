//! The one matrix product every [`crate::nn::Mlp`] product goes through, and the choice of
//! how many threads a batch gets.
//!
//! f32 and f64 products go to faer (AVX-512 / AVX2 kernels chosen at run time, so a default
//! build without `-C target-cpu` gets them), always on the calling thread: the networks here
//! are small (widths of tens to hundreds), so the MLP splits a large batch into row blocks
//! across threads itself ([`row_parts`]) instead of splitting each product. faer reads any
//! strides, so transposed views cost nothing.

use crate::real::Real;
use ndarray::{ArrayView2, ArrayViewMut2, Axis};
use std::any::TypeId;

#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod sparse;

/// `c = act(a b + bias)` (`act`: ReLU if `relu`, else none) in one register-blocked pass
/// where this CPU has AVX-512 and the product is one the kernel is faster at (see
/// [`kernel_fits`]); returns false, leaving `c` untouched, where it is not, and the caller
/// takes [`gemm`] and a separate bias pass.
pub fn fused_dense<T: Real>(
    a: ArrayView2<T>,
    b: ArrayView2<T>,
    bias: Option<&[T]>,
    relu: bool,
    c: ArrayViewMut2<T>,
) -> bool {
    assert_fused_shapes(&a, &b, bias, &c);
    kernel_product(a, b, bias, relu, c, Kernel::Dense)
}

/// The shapes of `c = act(a b + bias)`: `a` is `m x k`, `b` `k x n`, `c` `m x n`, `bias` `n`.
fn assert_fused_shapes<T>(
    a: &ArrayView2<T>,
    b: &ArrayView2<T>,
    bias: Option<&[T]>,
    c: &ArrayViewMut2<T>,
) {
    let ((m, k), n) = (a.dim(), b.ncols());
    assert!(b.nrows() == k && c.dim() == (m, n), "fused_dense: shapes");
    assert!(bias.is_none_or(|b| b.len() == n), "fused_dense: bias width");
}

/// Largest share of non-zero inputs for which [`fused_dense_after_relu`] skips the zeros:
/// a sparse row costs about its density times a one-row dense product (load-bound), against
/// the dense kernel's FMA-bound 6-row blocks.
pub const SPARSE_MAX_DENSITY: f64 = 0.35;

/// Rows of the input whose density [`fused_dense_after_relu`] samples.
const DENSITY_ROWS: usize = 16;

/// [`fused_dense`] of an input that came out of a ReLU (a hidden layer's): where its first
/// rows are at most [`SPARSE_MAX_DENSITY`] non-zero, each row multiplies only the weight rows
/// of its non-zero inputs (`gemm/sparse.rs`); else as [`fused_dense`]. The result is the
/// dense product's up to the order of the sums.
pub fn fused_dense_after_relu<T: Real>(
    a: ArrayView2<T>,
    b: ArrayView2<T>,
    bias: Option<&[T]>,
    relu: bool,
    c: ArrayViewMut2<T>,
) -> bool {
    assert_fused_shapes(&a, &b, bias, &c);
    if sparse_fits(&a, &b, &c) && density(a) <= SPARSE_MAX_DENSITY {
        return kernel_product(a, b, bias, relu, c, Kernel::Sparse);
    }
    kernel_product(a, b, bias, relu, c, Kernel::Dense)
}

/// `y = act(x w + b)` (`act`: ReLU if `relu`) for one row whose input came out of a ReLU, over its non-zero inputs, with
/// the weight rows prefetched from L2 (the per-sample pass); false, with `y` untouched, where
/// the kernel does not apply. Checks only what the kernel needs: building views and running
/// [`kernel_fits`] per layer was 13% of `log_prob_one`.
pub(crate) fn sparse_row<T: Real>(
    w: ArrayView2<T>,
    b: &[T],
    relu: bool,
    x: &[T],
    y: &mut [T],
) -> bool {
    let (k, n) = w.dim();
    assert!(k == x.len() && n == b.len() && n == y.len(), "sparse_row: shapes");
    #[cfg(target_arch = "x86_64")]
    if let (Some(ws), true) = (w.as_slice(), k <= sparse::MAX_K && n > avx512::NARROW) {
        let (a, b, c) = (x.as_ptr(), b.as_ptr(), y.as_mut_ptr());
        let is = |t| TypeId::of::<T>() == t;
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F is there (checked), `T` is the lane type (checked), `w` is in
            // standard layout (`as_slice`), the row, bias and output have the lengths its shape
            // says (asserted), `y` is borrowed mutably and `k <= MAX_K`.
            unsafe {
                if is(TypeId::of::<f32>()) {
                    sparse_row_as::<T, f32>(a, ws.as_ptr(), b, relu, c, (k, n));
                    return true;
                }
                if is(TypeId::of::<f64>()) {
                    sparse_row_as::<T, f64>(a, ws.as_ptr(), b, relu, c, (k, n));
                    return true;
                }
            }
        }
    }
    false
}

/// [`sparse_row`]'s kernel call on memory read as `L`.
///
/// # Safety
/// As `sparse::product` for one row: `x` covers `k`, `w` `k x n` in standard layout, `b` and
/// `y` `n`; `T` is `L`; the CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
unsafe fn sparse_row_as<T, L: avx512::Lane>(
    x: *const T,
    w: *const T,
    b: *const T,
    relu: bool,
    y: *mut T,
    (k, n): (usize, usize),
) {
    let a = avx512::Mat { ptr: x.cast::<L>(), rs: k, cs: 1 };
    let w = avx512::Mat { ptr: w.cast::<L>(), rs: n, cs: 1 };
    let ep = avx512::Epilogue { bias: Some(b.cast::<L>()), relu };
    sparse::product::<L, true>(a, w, y.cast(), n, (1, k, n), ep);
}

/// Whether the sparse kernel takes these views: those the dense kernel takes, wider than
/// its narrow path and with inputs no longer than [`sparse::MAX_K`].
fn sparse_fits<T: Real>(a: &ArrayView2<T>, b: &ArrayView2<T>, c: &ArrayViewMut2<T>) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        a.ncols() <= sparse::MAX_K && b.ncols() > avx512::NARROW && kernel_fits(a, b, c)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (a, b, c);
        false
    }
}

/// The share of non-zero values in the first [`DENSITY_ROWS`] rows of `a`.
fn density<T: Real>(a: ArrayView2<T>) -> f64 {
    let head = a.slice(ndarray::s![..a.nrows().min(DENSITY_ROWS), ..]);
    let nonzero = head.iter().filter(|&&v| v != T::zero()).count();
    nonzero as f64 / head.len().max(1) as f64
}

/// Which AVX-512 kernel [`kernel_product`] runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kernel {
    /// Register blocks of rows (`gemm/avx512.rs`).
    Dense,
    /// Each row over its non-zero inputs (`gemm/sparse.rs`).
    Sparse,
}

/// The register-blocked AVX-512 product of [`fused_dense`] where it applies (see
/// [`kernel_fits`]); false, with `c` untouched, where it does not.
#[allow(unused_mut, unused_variables)]
fn kernel_product<T: Real>(
    a: ArrayView2<T>,
    b: ArrayView2<T>,
    bias: Option<&[T]>,
    relu: bool,
    mut c: ArrayViewMut2<T>,
    kernel: Kernel,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if kernel_fits::<T>(&a, &b, &c) && std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F (checked) and `T` is the lane type (checked by TypeId
        // in `kernel_fits`); see `kernel_as`.
        unsafe {
            if TypeId::of::<T>() == TypeId::of::<f32>() {
                kernel_as::<T, f32>(&a, &b, bias, relu, &mut c, kernel);
            } else {
                kernel_as::<T, f64>(&a, &b, bias, relu, &mut c, kernel);
            }
        }
        // No `clear_upper_registers` here: LLVM ends the kernel with `vzeroupper` itself
        // (faer's hand-written kernels do not), and the extra one cost 10% of C1's log_prob.
        return true;
    }
    false
}

/// [`kernel_product`] on the views' memory read as `L`.
///
/// # Safety
/// The CPU has AVX-512F, `T` is `L`, and the views passed [`kernel_fits`]: non-negative
/// strides, unit column strides (or one column), so each pointer with its strides covers
/// exactly its view's elements; `c` is borrowed mutably, so it aliases neither input. For
/// the sparse kernels, also `a.ncols() <= sparse::MAX_K` ([`sparse_fits`]).
#[cfg(target_arch = "x86_64")]
unsafe fn kernel_as<T: Real, L: avx512::Lane>(
    a: &ArrayView2<T>,
    b: &ArrayView2<T>,
    bias: Option<&[T]>,
    relu: bool,
    c: &mut ArrayViewMut2<T>,
    kernel: Kernel,
) {
    let mat = |p: *const T, s: &[isize], cols: usize| avx512::Mat {
        ptr: p.cast::<L>(),
        rs: s[0] as usize,
        cs: col_stride(s, cols),
    };
    let ep = avx512::Epilogue { bias: bias.map(|b| b.as_ptr().cast::<L>()), relu };
    let dims = (a.nrows(), a.ncols(), b.ncols());
    let (pa, pb) =
        (mat(a.as_ptr(), a.strides(), a.ncols()), mat(b.as_ptr(), b.strides(), b.ncols()));
    let (pc, ldc) = (c.as_mut_ptr().cast(), c.strides()[0] as usize);
    match kernel {
        Kernel::Dense => avx512::product::<L>(pa, pb, pc, ldc, dims, ep),
        Kernel::Sparse => sparse::product::<L, false>(pa, pb, pc, ldc, dims, ep),
    }
}

/// Widest output [`kernel_product`] takes: the conditioners' layers (64 wide in C1 and C3).
/// Wider products (C2's 256-wide layers) run faster in faer's packed kernels: measured
/// 111 against 181 GFLOP/s for a 256-row tile of 256 x 256 (f32, one core).
const KERNEL_MAX_N: usize = 64;

/// Whether [`kernel_product`]'s kernel applies to these views: f32 or f64, non-empty, not
/// wider than [`KERNEL_MAX_N`], non-negative strides, unit column strides (rows loaded and
/// stored as vectors), and a shape the kernel is faster at ([`avx512::worth`]).
#[cfg(target_arch = "x86_64")]
fn kernel_fits<T: Real>(a: &ArrayView2<T>, b: &ArrayView2<T>, c: &ArrayViewMut2<T>) -> bool {
    let is = |t| TypeId::of::<T>() == t;
    let lanes = is(TypeId::of::<f32>()) || is(TypeId::of::<f64>());
    let (m, k, n) = (a.nrows(), a.ncols(), b.ncols());
    let rows = |s: &[isize]| (s[1] == 1 || n == 1) && s[0] >= 0;
    let (sa, sb, sc) = (a.strides(), b.strides(), c.strides());
    lanes
        && m > 0
        && k > 0
        && (1..=KERNEL_MAX_N).contains(&n)
        && sa[0] >= 0
        && sa[1] >= 0
        && rows(sb)
        && rows(sc)
        && avx512::worth(k, n, col_stride(sa, k), std::mem::size_of::<T>())
}

#[cfg(target_arch = "x86_64")]
/// The column stride of a view with strides `s` and `cols` columns, as the kernel steps it.
/// A single column's stride is never stepped, and ndarray makes it 0 in a slice (a 256-row
/// tile of C1's `n x 1` conditioner input has strides `[1, 0]`), so it counts as 1: the
/// 1 -> 64 layers went to faer's rank-1 update, 11% of C1's f64 log_prob, before this.
fn col_stride(s: &[isize], cols: usize) -> usize {
    if cols == 1 {
        1
    } else {
        s[1] as usize
    }
}

/// `c = a b` (`accumulate == false`) or `c += a b`.
pub fn gemm<T: Real>(
    a: ArrayView2<T>,
    b: ArrayView2<T>,
    mut c: ArrayViewMut2<T>,
    accumulate: bool,
) {
    let ((m, k), n) = (a.dim(), b.ncols());
    assert!(
        b.nrows() == k && c.dim() == (m, n),
        "gemm: shapes {:?} {:?} {:?}",
        a.dim(),
        b.dim(),
        c.dim()
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c.fill(T::zero());
        }
        return;
    }
    if split_product(m, k, n) {
        // Halves of the output, rows or columns (whichever is longer): no reduction needed.
        let (a0, a1, b0, b1, (c0, c1)) = if m >= n {
            let (a0, a1) = a.split_at(Axis(0), m / 2);
            (a0, a1, b, b, c.split_at(Axis(0), m / 2))
        } else {
            let (b0, b1) = b.split_at(Axis(1), n / 2);
            (a, a, b0, b1, c.split_at(Axis(1), n / 2))
        };
        rayon::join(|| gemm(a0, b0, c0, accumulate), || gemm(a1, b1, c1, accumulate));
        return;
    }
    if m <= SMALL_ROWS && b.strides()[1] == 1 && b.strides()[0] >= 0 {
        return few_rows(a, b, c, accumulate);
    }
    faer_any(a, b, c, accumulate)
}

/// faer's product for f32 and f64, ndarray's for any other type.
fn faer_any<T: Real>(
    a: ArrayView2<T>,
    b: ArrayView2<T>,
    mut c: ArrayViewMut2<T>,
    accumulate: bool,
) {
    // SAFETY: T is f64 (resp. f32), checked by TypeId, so the casts are identities; the raw
    // parts describe exactly the ndarray views (dimensions and element strides), which live
    // for the whole call, and `c` is borrowed mutably, so it aliases neither `a` nor `b`.
    if TypeId::of::<T>() == TypeId::of::<f64>() {
        unsafe { faer_gemm::<T, f64>(a, b, c.view_mut(), accumulate) };
    } else if TypeId::of::<T>() == TypeId::of::<f32>() {
        unsafe { faer_gemm::<T, f32>(a, b, c.view_mut(), accumulate) };
    } else {
        let beta = if accumulate { T::one() } else { T::zero() };
        ndarray::linalg::general_mat_mul(T::one(), &a, &b, beta, &mut c);
    }
}

/// The faer product on the memory of the views, read as `U` (the caller has checked that
/// `T` is `U`).
unsafe fn faer_gemm<T, U: faer::traits::ComplexField + Copy + num_traits::One>(
    a: ArrayView2<T>,
    b: ArrayView2<T>,
    mut c: ArrayViewMut2<T>,
    accumulate: bool,
) {
    let ((m, k), n) = (a.dim(), b.ncols());
    let (sa, sb, sc) = (a.strides(), b.strides(), [c.strides()[0], c.strides()[1]]);
    let fa = faer::MatRef::<U>::from_raw_parts(a.as_ptr().cast(), m, k, sa[0], sa[1]);
    let fb = faer::MatRef::<U>::from_raw_parts(b.as_ptr().cast(), k, n, sb[0], sb[1]);
    let fc = faer::MatMut::<U>::from_raw_parts_mut(c.as_mut_ptr().cast(), m, n, sc[0], sc[1]);
    let accum = if accumulate { faer::Accum::Add } else { faer::Accum::Replace };
    faer::linalg::matmul::matmul(fc, accum, fa, fb, U::one(), faer::Par::Seq);
    clear_upper_registers();
}

/// Clears the upper halves of the vector registers after faer's AVX-512 / AVX2 kernels.
/// Without this, the caller's code (plain SSE2 in a default build) and libm's `exp` start
/// with a dirty upper state: measured, `exp` then spent most of its time on its first AVX
/// instruction (a state-transition stall), a quarter of C1's training step.
#[inline]
fn clear_upper_registers() {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx")]
        unsafe fn zeroupper() {
            std::arch::x86_64::_mm256_zeroupper();
        }
        if std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: the CPU has AVX (checked above).
            unsafe { zeroupper() }
        }
    }
}

/// Products with at most this many rows (the per-sample API, `log_prob_one`) take
/// [`few_rows`]: faer computes them as matrix-vector products that store the whole output once
/// per inner index, measured at about 1.6 us for 1 x 64 . 64 x 64; this keeps the output in
/// registers.
const SMALL_ROWS: usize = 4;

/// `c = a b` or `c += a b` for a few rows of `a` and a `b` with contiguous rows: 16 output
/// columns at a time are accumulated in registers over the whole inner dimension.
fn few_rows<T: Real>(a: ArrayView2<T>, b: ArrayView2<T>, c: ArrayViewMut2<T>, accumulate: bool) {
    crate::nn::simd(
        #[inline(always)]
        || few_rows_body(a, b, c, accumulate),
    )
}

/// The body of [`few_rows`], inlined into the CPU-specific copies `simd` makes.
#[inline(always)]
fn few_rows_body<T: Real>(
    a: ArrayView2<T>,
    b: ArrayView2<T>,
    mut c: ArrayViewMut2<T>,
    accumulate: bool,
) {
    const W: usize = 16;
    let ((m, k), n) = (a.dim(), b.ncols());
    let rs = b.strides()[0] as usize;
    // SAFETY: `b` is a view with unit column stride and row stride `rs`, so its k rows of n
    // elements lie in the (k - 1) rs + n elements from its first one.
    let bs = unsafe { std::slice::from_raw_parts(b.as_ptr(), (k - 1) * rs + n) };
    {
        for i in 0..m {
            let arow = a.row(i);
            let mut j0 = 0;
            while j0 < n {
                let w = (n - j0).min(W);
                let mut acc = [T::zero(); W];
                if accumulate {
                    for (t, a) in acc.iter_mut().enumerate().take(w) {
                        *a = c[[i, j0 + t]];
                    }
                }
                if w == W {
                    for (kk, &x) in arow.iter().enumerate() {
                        let row: &[T; W] = bs[kk * rs + j0..kk * rs + j0 + W].try_into().unwrap();
                        for t in 0..W {
                            acc[t] += x * row[t];
                        }
                    }
                } else {
                    for (kk, &x) in arow.iter().enumerate() {
                        let row = &bs[kk * rs + j0..kk * rs + j0 + w];
                        for t in 0..w {
                            acc[t] += x * row[t];
                        }
                    }
                }
                for (t, a) in acc.iter().enumerate().take(w) {
                    c[[i, j0 + t]] = *a;
                }
                j0 += W;
            }
        }
    }
}

/// Rows from which a batch is split across two threads. Below it, the fork-join costs more
/// than the second core brings (measured on C1's 1 -> 64 -> 64 -> 2 conditioners).
pub const PAR_MIN_ROWS: usize = 1024;

/// Rows a thread runs through all layers before the next block, so that a block's
/// activations are still in cache when the next layer reads them.
pub const TILE_ROWS: usize = 256;

/// Multiply-adds from which one product is split across two threads when its caller runs on
/// no worker thread (a batch of fewer than [`PAR_MIN_ROWS`] rows through a wide network: C2's
/// MADE at batch 256 does 4-17 M per product). C1's 64-wide products (1 M at batch 256) stay
/// on one thread, where a fork-join per product was measured to cost more than it brought.
pub const PAR_MIN_MACS: usize = 1 << 21;

/// Whether an `m x k . k x n` product is split in two halves on two threads: large enough,
/// and called from outside the thread pool (inside a half of a split batch, or of a split
/// product, it is not split again).
fn split_product(m: usize, k: usize, n: usize) -> bool {
    split_worth(m.saturating_mul(k).saturating_mul(n), m.max(n))
}

/// Whether work of `macs` multiply-adds whose longest side is `longest` is split across two
/// threads (see [`split_product`]).
pub(crate) fn split_worth(macs: usize, longest: usize) -> bool {
    macs >= PAR_MIN_MACS && longest >= 2 && crate::par::may_fork()
}

/// How many row blocks (threads) a batch of `n` rows gets: 1 or 2. Always 1 inside a part
/// of a batch that [`crate::par::map_rows`] already split (no nested fork-joins).
pub fn row_parts(n: usize) -> usize {
    if n >= PAR_MIN_ROWS && rayon::current_num_threads() > 1 && crate::par::may_split() {
        2
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    fn check<T: Real>(tol: f64) {
        let f = |m, n, s| {
            Array2::from_shape_fn((m, n), |(i, j)| T::of(((i * 7 + j * 3 + s) % 11) as f64 - 5.0))
        };
        let shapes = [(1, 1, 1), (3, 1, 64), (256, 64, 64), (5, 64, 2), (0, 3, 2), (4, 0, 3)];
        for (m, k, n) in
            shapes.into_iter().chain([(33, 17, 9), (64, 300, 32), (40, 257, 2), (17, 2, 64)])
        {
            let (a, b) = (f(m, k, 1), f(k, n, 2));
            let want = a.dot(&b);
            let mut c = f(m, n, 3);
            gemm(a.view(), b.view(), c.view_mut(), false);
            assert!(
                c.iter().zip(&want).all(|(x, y)| (x.f64() - y.f64()).abs() <= tol),
                "{m}x{k}x{n}"
            );
            // Accumulating, through transposed (column-major) views.
            let (at, bt) = (a.t().to_owned(), b.t().to_owned());
            gemm(at.t(), bt.t(), c.view_mut(), true);
            assert!(
                c.iter().zip(&want).all(|(x, y)| (x.f64() - 2.0 * y.f64()).abs() <= tol),
                "{m}x{k}x{n} acc"
            );
        }
    }

    /// `fused_dense` against `act(a b + bias)` from ndarray, over every panel width, row
    /// remainder and the narrow kernel, on strided views; where it declines, `c` is untouched.
    fn check_fused<T: Real>(tol: f64) {
        let f = |m, n, s| {
            Array2::from_shape_fn((m, n), |(i, j)| T::of(((i * 7 + j * 3 + s) % 11) as f64 - 5.0))
        };
        let shapes = [(1, 1, 1), (7, 64, 2), (13, 3, 4), (6, 17, 3), (5, 300, 2), (9, 300, 40)];
        // One input column (C1's and C3's 1 -> 64 layers): its slice has column stride 0.
        let shapes = shapes.into_iter().chain([(29, 1, 64), (7, 1, 3), (31, 1, 17)]);
        for (m, k, n) in shapes.chain([1, 8, 15, 16, 17, 23, 33, 48, 63, 64].map(|n| (29, 64, n))) {
            let (wide, b, bias) = (f(m, k + 2, 1), f(k, n, 2), f(1, n, 4).row(0).to_vec());
            let a_t = wide.t().to_owned();
            // Rows with a unit stride (a column range of a wider array) and a transposed view.
            for (relu, a) in [(false, wide.view()), (true, wide.view()), (true, a_t.t())] {
                let a = a.slice_move(ndarray::s![.., 1..k + 1]);
                let mut want = a.dot(&b) + f(1, n, 4);
                if relu {
                    want.mapv_inplace(|v| if v > T::zero() { v } else { T::zero() });
                }
                let mut c_wide = Array2::from_elem((m, n + 3), T::of(9.0));
                let mut c = c_wide.slice_mut(ndarray::s![.., ..n]);
                let taken = fused_dense(a, b.view(), Some(&bias), relu, c.view_mut());
                // The kernel takes inputs with contiguous rows (and narrow outputs for k <= 256).
                let unit = k == 1 || a.strides()[1] == 1;
                let expect = unit && (n > 4 || k <= 256) && k * n * 8 <= 64 << 10;
                #[cfg(target_arch = "x86_64")]
                assert!(taken || !expect || !std::arch::is_x86_feature_detected!("avx512f"));
                if taken {
                    let err = c.iter().zip(&want).map(|(x, y)| (x.f64() - y.f64()).abs());
                    assert!(err.fold(0.0, f64::max) <= tol, "{m}x{k}x{n} relu {relu}");
                } else {
                    assert!(c.iter().all(|&v| v == T::of(9.0)), "{m}x{k}x{n}: declined but wrote");
                }
                assert!(c_wide.slice(ndarray::s![.., n..]).iter().all(|&v| v == T::of(9.0)));
            }
        }
    }

    #[test]
    fn fused_dense_matches_ndarray() {
        check_fused::<f64>(1e-9);
        check_fused::<f32>(1e-3);
        // Transposed weights (column stride != 1) are declined, never misread.
        let (a, b) = (Array2::<f64>::ones((4, 3)), Array2::<f64>::ones((5, 3)));
        let mut c = Array2::<f64>::zeros((4, 5));
        assert!(!fused_dense(a.view(), b.t(), None, false, c.view_mut()));
    }

    #[test]
    fn products_match_ndarray() {
        check::<f64>(1e-9);
        check::<f32>(1e-3);
    }
}
