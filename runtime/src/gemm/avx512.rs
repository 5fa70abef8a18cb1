//! A register-blocked AVX-512 product for the MLP forward pass: `c = act(a b + bias)` with
//! the bias and ReLU applied while the block is still in registers.
//!
//! The conditioners' products are small (`256 x 64 . 64 x 64` per row tile): the weights fit
//! in L1, so nothing is packed. A block of `R` rows by `NV` vectors of output columns is
//! accumulated over the whole inner dimension: per inner index, `NV` loads of a weight row,
//! `R` broadcasts of the input and `R * NV` fused multiply-adds (24 of the 32 registers).
//! The last vector of a panel is masked, so any width works without a scalar tail.
//!
//! Measured against faer's `Par::Seq` product on these shapes in the roofline bench
//! (`cargo bench -p flowspec-runtime --bench roofline`).

use std::arch::x86_64::*;

/// One lane type's AVX-512 operations (the 16 f32 or 8 f64 lanes of a 512-bit register).
pub(super) trait Lane: crate::real::Real {
    type V: Copy;
    type M: Copy;
    /// Lanes per register.
    const W: usize;
    /// A mask of the first `n` lanes (`n >= W`: all).
    fn mask(n: usize) -> Self::M;
    unsafe fn vzero() -> Self::V;
    unsafe fn vsplat(p: *const Self) -> Self::V;
    unsafe fn vload(m: Self::M, p: *const Self) -> Self::V;
    /// A whole register's load (a masked one is slower on Zen 4 even with every lane set).
    unsafe fn vloadu(p: *const Self) -> Self::V;
    unsafe fn vstore(m: Self::M, p: *mut Self, v: Self::V);
    unsafe fn vfma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    unsafe fn vadd(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn vmax(a: Self::V, b: Self::V) -> Self::V;
    /// The sum of the lanes.
    unsafe fn vsum(v: Self::V) -> Self;
    /// A whole register's store.
    unsafe fn vstoreu(p: *mut Self, v: Self::V);
    /// Bit `l` set where lane `l` of `v` is non-zero or NaN (lanes outside `m`: unset).
    unsafe fn nonzero_bits(m: Self::M, v: Self::V) -> u16;
}

/// `Lane` for one type from its intrinsics (the f32 and f64 sets differ only in names).
macro_rules! lane {
    ($t:ty, $v:ty, $m:ty, $w:literal, $mbits:ty,
     $zero:ident, $set1:ident, $load:ident, $store:ident, $fma:ident, $add:ident, $max:ident,
     $sum:ident, $cmp:ident, $loadu:ident, $storeu:ident) => {
        impl Lane for $t {
            type V = $v;
            type M = $m;
            const W: usize = $w;
            #[inline(always)]
            fn mask(n: usize) -> $m {
                if n >= $w {
                    !0
                } else {
                    ((1 as $mbits) << n) - 1
                }
            }
            #[inline(always)]
            unsafe fn vzero() -> $v {
                $zero()
            }
            #[inline(always)]
            unsafe fn vsplat(p: *const $t) -> $v {
                $set1(*p)
            }
            #[inline(always)]
            unsafe fn vload(m: $m, p: *const $t) -> $v {
                $load(m, p)
            }
            #[inline(always)]
            unsafe fn vloadu(p: *const $t) -> $v {
                $loadu(p)
            }
            #[inline(always)]
            unsafe fn vstore(m: $m, p: *mut $t, v: $v) {
                $store(p, m, v)
            }
            #[inline(always)]
            unsafe fn vfma(a: $v, b: $v, c: $v) -> $v {
                $fma(a, b, c)
            }
            #[inline(always)]
            unsafe fn vadd(a: $v, b: $v) -> $v {
                $add(a, b)
            }
            #[inline(always)]
            unsafe fn vmax(a: $v, b: $v) -> $v {
                $max(a, b)
            }
            #[inline(always)]
            unsafe fn vsum(v: $v) -> $t {
                $sum(v)
            }
            #[inline(always)]
            unsafe fn vstoreu(p: *mut $t, v: $v) {
                $storeu(p, v)
            }
            #[inline(always)]
            unsafe fn nonzero_bits(m: $m, v: $v) -> u16 {
                // Unordered-or-not-equal: NaN counts as non-zero.
                $cmp::<_CMP_NEQ_UQ>(m, v, $zero()) as u16
            }
        }
    };
}

lane!(
    f32,
    __m512,
    __mmask16,
    16,
    u16,
    _mm512_setzero_ps,
    _mm512_set1_ps,
    _mm512_maskz_loadu_ps,
    _mm512_mask_storeu_ps,
    _mm512_fmadd_ps,
    _mm512_add_ps,
    _mm512_max_ps,
    _mm512_reduce_add_ps,
    _mm512_mask_cmp_ps_mask,
    _mm512_loadu_ps,
    _mm512_storeu_ps
);
lane!(
    f64,
    __m512d,
    __mmask8,
    8,
    u8,
    _mm512_setzero_pd,
    _mm512_set1_pd,
    _mm512_maskz_loadu_pd,
    _mm512_mask_storeu_pd,
    _mm512_fmadd_pd,
    _mm512_add_pd,
    _mm512_max_pd,
    _mm512_reduce_add_pd,
    _mm512_mask_cmp_pd_mask,
    _mm512_loadu_pd,
    _mm512_storeu_pd
);

/// A matrix in memory: element `(i, j)` at `ptr + i * rs + j * cs`. Both the inputs (`a`)
/// and the weights (`b`) must have `cs == 1` (or one column): the weights' rows are loaded
/// as vectors, the inputs' rows are walked contiguously.
#[derive(Clone, Copy)]
pub(super) struct Mat<T> {
    pub ptr: *const T,
    pub rs: usize,
    pub cs: usize,
}

impl<T> Mat<T> {
    #[inline(always)]
    unsafe fn at(self, i: usize, j: usize) -> *const T {
        self.ptr.add(i * self.rs + j * self.cs)
    }
}

/// What happens to a block after the product: `c = a b [+ bias]`, then ReLU if `relu`.
#[derive(Clone, Copy)]
pub(super) struct Epilogue<T> {
    pub bias: Option<*const T>,
    pub relu: bool,
}

/// Whether [`product`] takes an `m x k . k x n` product whose input has column stride
/// `a_cs`. Only inputs with contiguous rows: a transposed input (the weight gradient
/// `input^T delta`, k = the batch) re-read its strided columns from L2 for every row block,
/// where faer packs them (measured: C4's step at batch 4096 spent 56% in this kernel, against
/// about 30% in faer's weight gradients before). A narrow output only through [`narrow`]: the
/// register blocks would waste all but `n` of a register's lanes. Elements of `size` bytes.
pub(super) fn worth(k: usize, n: usize, a_cs: usize, size: usize) -> bool {
    a_cs == 1 && (n > NARROW || k <= NARROW_MAX_K) && k * n * size <= MAX_WEIGHT_BYTES
}

/// Largest weight matrix (bytes) [`product`] takes: it does not pack, so the weights must
/// stay in cache while every row block streams through them (C1's and C3's 64 x 64 layers are
/// 16 KB in f32, 32 KB in f64).
const MAX_WEIGHT_BYTES: usize = 64 << 10;

/// `c (m x n) = epilogue(a (m x k) . b (k x n))`, for shapes [`worth`] takes.
///
/// # Safety
/// The CPU has AVX-512F; `a`, `b` and `c` (row stride `ldc`, unit column stride) cover
/// `m x k`, `k x n` and `m x n` elements, `b` has unit column stride, `bias` (if any) covers
/// `n`, and `c` aliases none of them.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn product<L: Lane>(
    a: Mat<L>,
    b: Mat<L>,
    c: *mut L,
    ldc: usize,
    (m, k, n): (usize, usize, usize),
    ep: Epilogue<L>,
) {
    // The blocks read the input's rows as contiguous; this also keeps `narrow`'s stack copy of
    // the weights in bounds.
    let size = std::mem::size_of::<L>();
    assert!(worth(k, n, a.cs, size), "avx512::product: a shape it does not take");
    if n <= NARROW {
        return narrow(a, b, c, ldc, (m, k, n), ep);
    }
    let mut j0 = 0;
    while j0 < n {
        let left = n - j0;
        // Panels of 4, 2 or 1 registers: 6, 12 or 16 rows per block (24 or 16 accumulators).
        let step = if left > 2 * L::W {
            panel::<L, 4, 6>(a, b, c, ldc, (m, k, left), j0, ep);
            4 * L::W
        } else if left > L::W {
            panel::<L, 2, 12>(a, b, c, ldc, (m, k, left), j0, ep);
            2 * L::W
        } else {
            panel::<L, 1, 16>(a, b, c, ldc, (m, k, left), j0, ep);
            L::W
        };
        j0 += step;
    }
}

/// The columns `[j0, j0 + NV W)` (masked at `j0 + left`) of every row, `MR` rows at a time,
/// the remaining rows in blocks of 4 and 1.
#[inline(always)]
unsafe fn panel<L: Lane, const NV: usize, const MR: usize>(
    a: Mat<L>,
    b: Mat<L>,
    c: *mut L,
    ldc: usize,
    (m, k, left): (usize, usize, usize),
    j0: usize,
    ep: Epilogue<L>,
) {
    let masks: [L::M; NV] = std::array::from_fn(|v| L::mask(left.saturating_sub(v * L::W)));
    let at = |i: usize| Block { a: a.at(i, 0), b: b.ptr.add(j0), c: c.add(i * ldc + j0) };
    let ld = (a.rs, b.rs, ldc);
    let mut i = 0;
    while i + MR <= m {
        block::<L, NV, MR>(at(i), ld, k, &masks, ep, j0);
        i += MR;
    }
    while i + 4 <= m {
        block::<L, NV, 4>(at(i), ld, k, &masks, ep, j0);
        i += 4;
    }
    while i < m {
        block::<L, NV, 1>(at(i), ld, k, &masks, ep, j0);
        i += 1;
    }
}

/// The corners of one block: its first input row, first weight column, first output.
#[derive(Clone, Copy)]
struct Block<T> {
    a: *const T,
    b: *const T,
    c: *mut T,
}

/// One block of `R` rows by `NV` registers, accumulated in registers over all of `k`.
/// `ld`: the input's, the weights' and the output's row strides (all have unit column
/// strides; see [`worth`]).
#[inline(always)]
unsafe fn block<L: Lane, const NV: usize, const R: usize>(
    p: Block<L>,
    (lda, ldb, ldc): (usize, usize, usize),
    k: usize,
    masks: &[L::M; NV],
    ep: Epilogue<L>,
    j0: usize,
) {
    let mut acc = [[L::vzero(); NV]; R];
    for kk in 0..k {
        let brow = p.b.add(kk * ldb);
        let bv: [L::V; NV] = std::array::from_fn(|v| L::vload(masks[v], brow.add(v * L::W)));
        for (r, acc) in acc.iter_mut().enumerate() {
            let av = L::vsplat(p.a.add(r * lda + kk));
            for v in 0..NV {
                acc[v] = L::vfma(av, bv[v], acc[v]);
            }
        }
    }
    let bias: Option<[L::V; NV]> =
        ep.bias.map(|bp| std::array::from_fn(|v| L::vload(masks[v], bp.add(j0 + v * L::W))));
    for (r, acc) in acc.iter().enumerate() {
        let crow = p.c.add(r * ldc);
        for v in 0..NV {
            let mut x = acc[v];
            if let Some(bias) = &bias {
                x = L::vadd(x, bias[v]);
            }
            if ep.relu {
                x = L::vmax(x, L::vzero());
            }
            L::vstore(masks[v], crow.add(v * L::W), x);
        }
    }
}

/// Most output columns [`narrow`] takes: a conditioner's last layer (C1's 64 -> 2). The
/// register blocks would fill 2 of a register's 16 f32 lanes there, and faer ran these
/// products at 8-13 GFLOP/s.
pub(super) const NARROW: usize = 4;
/// Longest inner dimension [`narrow`] takes (its transposed weights live on the stack).
const NARROW_MAX_K: usize = 256;

/// `c = epilogue(a b)` for at most [`NARROW`] output columns, as dot products along `k`:
/// the weight columns are copied into contiguous rows, each input row is read once in
/// registers of `k` lanes, and each output is one horizontal sum.
#[inline(always)]
unsafe fn narrow<L: Lane>(
    a: Mat<L>,
    b: Mat<L>,
    c: *mut L,
    ldc: usize,
    (m, k, n): (usize, usize, usize),
    ep: Epilogue<L>,
) {
    let mut bt = [L::zero(); NARROW * NARROW_MAX_K];
    for j in 0..n {
        for kk in 0..k {
            bt[j * k + kk] = *b.at(kk, j);
        }
    }
    let bt = Mat { ptr: bt.as_ptr(), rs: k, cs: 1 };
    match n {
        1 => narrow_n::<L, 1>(a, bt, c, ldc, (m, k), ep),
        2 => narrow_n::<L, 2>(a, bt, c, ldc, (m, k), ep),
        3 => narrow_n::<L, 3>(a, bt, c, ldc, (m, k), ep),
        _ => narrow_n::<L, 4>(a, bt, c, ldc, (m, k), ep),
    }
}

/// [`narrow`] for `N` columns, given the weights transposed (`bt`: `N x k`).
#[inline(always)]
unsafe fn narrow_n<L: Lane, const N: usize>(
    a: Mat<L>,
    bt: Mat<L>,
    c: *mut L,
    ldc: usize,
    (m, k): (usize, usize),
    ep: Epilogue<L>,
) {
    let chunks = k.div_ceil(L::W);
    let last = L::mask(k - (chunks - 1) * L::W);
    for i in 0..m {
        let arow = a.at(i, 0);
        let mut acc = [L::vzero(); N];
        for ch in 0..chunks {
            let mask = if ch + 1 == chunks { last } else { L::mask(L::W) };
            let av = L::vload(mask, arow.add(ch * L::W));
            for (j, acc) in acc.iter_mut().enumerate() {
                *acc = L::vfma(av, L::vload(mask, bt.at(j, ch * L::W)), *acc);
            }
        }
        for (j, &acc) in acc.iter().enumerate() {
            let out = c.add(i * ldc + j);
            let mut x = L::vsum(acc);
            if let Some(bias) = ep.bias {
                x += *bias.add(j);
            }
            if ep.relu {
                // As the scalar ReLU: 0 for NaN too.
                x = if x > L::zero() { x } else { L::zero() };
            }
            *out = x;
        }
    }
}
