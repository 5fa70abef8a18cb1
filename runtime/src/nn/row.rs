//! One row through an [`Mlp`]: the per-sample API's conditioner pass (`log_prob_one`).
//!
//! A batch of one row through [`Mlp::forward`] pays for ndarray views, a product call per
//! layer and a `Vec` of output views; here the row lives in two reused buffers and each layer
//! is one pass over its weights. `w` is stored `in x out` with contiguous rows, so
//! `y = x w + b` streams those rows in order: `y[j0..j0 + W] += x[i] * w[i, j0..j0 + W]`,
//! with the W outputs held in registers over the whole inner index (no transposed copy).

use super::pieces::Pieces;
use super::{simd_isa, Activation, Dense, Isa, Mlp};
use crate::gemm;
use crate::real::Real;

/// Buffers of [`Mlp::forward_row`], reused across calls: once they have grown to the widest
/// layer, a row allocates nothing.
#[derive(Clone, Debug, Default)]
pub struct RowScratch<T> {
    /// The network's input (couplings gather their conditioning columns here).
    pub(crate) input: Vec<T>,
    /// Layer `i` writes its output to `bufs[(i + 1) % 2]`.
    bufs: [Vec<T>; 2],
    /// The pieces of the one-input ReLU networks run with this scratch (one scratch serves
    /// every layer of a flow), by [`Mlp::id`].
    pieces: RowPieces<T>,
}

/// Pieces for the per-sample path, built for a network the second time its weights are seen:
/// a build sorts the breakpoints and writes two (units + 1) x width tables, many times one
/// row's dense pass, so a single call with new weights does not pay for one.
#[derive(Clone, Debug, Default)]
struct RowPieces<T> {
    built: Vec<Pieces<T>>,
    /// Ids seen once, most recent last.
    seen: Vec<u64>,
    /// Where the next build goes once `built` is full (round robin).
    next: usize,
}

/// Networks whose pieces one scratch keeps (C1 has 8; a 64-unit table is 66 KB in f64).
const ROW_PIECES: usize = 16;

impl<T: Real> RowPieces<T> {
    /// The pieces of `net`, if built or seen before; `None` if they do not apply.
    fn get(&mut self, net: &Mlp<T>) -> Option<&Pieces<T>> {
        if !Pieces::<T>::fits(net) {
            return None;
        }
        let id = net.id();
        if let Some(at) = self.built.iter().position(|p| p.id() == id) {
            return Some(&self.built[at]);
        }
        let Some(at) = self.seen.iter().position(|&s| s == id) else {
            if self.seen.len() == ROW_PIECES {
                self.seen.remove(0);
            }
            self.seen.push(id);
            return None;
        };
        self.seen.remove(at);
        let pieces = Pieces::of(net)?;
        let slot = self.next % ROW_PIECES;
        self.next = slot + 1;
        if slot < self.built.len() {
            self.built[slot] = pieces;
        } else {
            self.built.push(pieces);
        }
        self.built.get(slot)
    }
}

impl<T: Real> Mlp<T> {
    /// The network's output for one input row: [`Mlp::forward`] of a one-row batch, up to
    /// the order of the floating-point sums.
    pub fn forward_row<'s>(&self, x: &[T], s: &'s mut RowScratch<T>) -> &'s [T] {
        s.input.clear();
        s.input.extend_from_slice(x);
        self.forward_input_row(s)
    }

    /// [`Mlp::forward_row`] of `s.input`. A layerless network returns its input.
    pub(crate) fn forward_input_row<'s>(&self, s: &'s mut RowScratch<T>) -> &'s [T] {
        let nl = self.layers.len();
        if nl == 0 {
            return &s.input;
        }
        debug_assert_eq!(s.input.len(), self.layers[0].w.nrows(), "Mlp::forward_row: input width");
        let RowScratch { input, bufs, pieces } = &mut *s;
        // A one-input ReLU network's first two layers: one multiply-add per unit of the
        // second (`pieces.rs`), into `bufs[0]`, where layer 1 writes.
        let start = match pieces.get(self) {
            Some(p) => {
                bufs[0].resize(self.layers[1].b.len(), T::zero());
                p.hidden_row(input[0], &mut bufs[0]);
                2
            }
            None => 0,
        };
        simd_isa(
            #[inline(always)]
            |isa| self.forward_row_body(input, bufs, start, isa),
        );
        &s.bufs[nl % 2]
    }

    /// The layers from `start` on, ping-ponging between the two buffers; inlined into
    /// `simd`'s CPU-specific copies.
    #[inline(always)]
    fn forward_row_body(&self, input: &[T], bufs: &mut [Vec<T>; 2], start: usize, isa: Isa) {
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate().skip(start) {
            let [even, odd] = &mut *bufs;
            let (src, dst) = if i % 2 == 0 { (&*even, odd) } else { (&*odd, even) };
            let x = if i == 0 { input } else { &src[..] };
            dst.resize(layer.b.len(), T::zero());
            // A ReLU'd input skips its zeros where the sparse kernel applies (AVX-512), which
            // applies a hidden layer's ReLU too.
            let relu = self.act == Activation::Relu;
            let sparse = |b: &[T]| gemm::sparse_row(layer.w.view(), b, relu && i < last, x, dst);
            if relu && i > 0 && layer.b.as_slice().is_some_and(sparse) {
                continue;
            }
            dense_row(layer, x, dst, isa);
            if i < last {
                self.act.apply_slice(dst);
            }
        }
    }
}

impl Activation {
    /// Applies the activation in place to a slice (the match is outside the loop, so each
    /// arm's loop vectorizes).
    #[inline(always)]
    pub(crate) fn apply_slice<T: Real>(self, y: &mut [T]) {
        match self {
            Activation::Relu => y.iter_mut().for_each(|v| *v = Activation::Relu.apply_value(*v)),
            Activation::Tanh => y.iter_mut().for_each(|v| *v = Activation::Tanh.apply_value(*v)),
            Activation::LeakyRelu(s) => {
                y.iter_mut().for_each(|v| *v = Activation::LeakyRelu(s).apply_value(*v))
            }
            Activation::Elu(a) => {
                y.iter_mut().for_each(|v| *v = Activation::Elu(a).apply_value(*v))
            }
        }
    }

    /// The activation of one value.
    #[inline(always)]
    pub(crate) fn apply_value<T: Real>(self, v: T) -> T {
        let zero = T::zero();
        match self {
            Activation::Relu => v.max(zero),
            Activation::Tanh => v.tanh(),
            Activation::LeakyRelu(slope) => {
                if v > zero {
                    v
                } else {
                    v * T::of(slope)
                }
            }
            Activation::Elu(alpha) => {
                if v > zero {
                    v
                } else {
                    T::of(alpha) * v.exp_m1()
                }
            }
        }
    }
}

/// `y = x w + b` for one row. The block width is 256 bytes of outputs (4 AVX-512 or 8 AVX2
/// registers). In f32 with AVX-512, even and odd inputs go to two sets of sums, halving the
/// chain of dependent multiply-adds (measured: 2.34 against 2.79 us for C1's
/// `log_prob_one`, with the prefetch). In f64 LLVM keeps the second set on the stack, and
/// AVX2 has registers for one set only, so those keep one.
#[inline(always)]
fn dense_row<T: Real>(layer: &Dense<T>, x: &[T], y: &mut [T], isa: Isa) {
    let (w, b) = match (layer.w.as_slice(), layer.b.as_slice()) {
        (Some(w), Some(b)) => (w, b),
        // The fields are public: a caller may have left them strided.
        _ => return dense_row_strided(layer, x, y),
    };
    match (isa, core::mem::size_of::<T>() == 4) {
        (Isa::Avx512, true) => dense_row_in::<T, 64, 16, true, true>(w, b, x, y),
        (Isa::Avx512, false) => dense_row_in::<T, 32, 8, false, true>(w, b, x, y),
        (Isa::Avx2, true) => dense_row_in::<T, 64, 16, false, true>(w, b, x, y),
        (Isa::Avx2, false) => dense_row_in::<T, 32, 8, false, true>(w, b, x, y),
        (Isa::Plain, true) => dense_row_in::<T, 64, 16, false, false>(w, b, x, y),
        (Isa::Plain, false) => dense_row_in::<T, 32, 8, false, false>(w, b, x, y),
    }
}

/// [`dense_row`] with the register blocking chosen: W outputs per block, L values per
/// 64-byte line. Layers of 1, 2 or 4 outputs (the output layers of the conditioners of
/// 2-, 3- and 5- to 8-dimensional couplings) take the flat path.
#[inline(always)]
fn dense_row_in<T: Real, const W: usize, const L: usize, const TWO: bool, const FMA: bool>(
    w: &[T],
    b: &[T],
    x: &[T],
    y: &mut [T],
) {
    match b.len() {
        1 => dense_row_narrow::<T, 1, L, FMA>(w, b, x, y),
        2 => dense_row_narrow::<T, 2, L, FMA>(w, b, x, y),
        4 => dense_row_narrow::<T, 4, L, FMA>(w, b, x, y),
        _ => dense_row_blocked::<T, W, TWO, FMA>(w, b, x, y),
    }
}

/// `y = x w + b` for a layer of N outputs, over `w`'s storage as one flat run: lane `l` of
/// a line of L weights is row `l / N`, column `l mod N`, so one multiply-add takes a whole
/// line against `x` repeated N times, and the columns are summed once at the end. (Down the
/// columns, C1's 64 -> 2 layer was 128 scalar multiply-adds on strided loads: a sixth of
/// `log_prob_one`.)
#[inline(always)]
fn dense_row_narrow<T: Real, const N: usize, const L: usize, const FMA: bool>(
    w: &[T],
    b: &[T],
    x: &[T],
    y: &mut [T],
) {
    debug_assert_eq!(w.len(), x.len() * N, "dense_row: weight shape");
    let r = L / N;
    let (mut acc0, mut acc1) = ([T::zero(); L], [T::zero(); L]);
    // Two lines per step into two sets of sums, so consecutive multiply-adds are independent.
    let mut steps = w.chunks_exact(2 * L).zip(x.chunks_exact(2 * r));
    for (ws, xs) in steps.by_ref() {
        let w0 = <&[T; L]>::try_from(&ws[..L]).expect("L weights");
        let w1 = <&[T; L]>::try_from(&ws[L..]).expect("L weights");
        for l in 0..L {
            acc0[l] = madd::<T, FMA>(acc0[l], xs[l / N], w0[l]);
            acc1[l] = madd::<T, FMA>(acc1[l], xs[r + l / N], w1[l]);
        }
    }
    let mut out = [T::zero(); N];
    for l in 0..L {
        out[l % N] = out[l % N] + (acc0[l] + acc1[l]);
    }
    let done = x.len() - x.len() % (2 * r);
    for (row, &xi) in w[done * N..].chunks_exact(N).zip(&x[done..]) {
        for j in 0..N {
            out[j] = madd::<T, FMA>(out[j], xi, row[j]);
        }
    }
    for j in 0..N {
        y[j] = b[j] + out[j];
    }
}

/// `y = x w + b` by indexing, for weights not in standard layout.
fn dense_row_strided<T: Real>(layer: &Dense<T>, x: &[T], y: &mut [T]) {
    for (j, yj) in y.iter_mut().enumerate() {
        *yj =
            layer.b[j] + x.iter().enumerate().fold(T::zero(), |s, (i, &v)| s + v * layer.w[[i, j]]);
    }
}

/// How many row pairs ahead [`dense_row_blocked`] asks for its weights.
const PREFETCH: usize = 4;

/// Asks for the cache lines of a W-wide block in two rows `n` apart. The weights of a
/// per-sample pass come from L2 (C1's 137 KB do not fit in L1), and the hardware prefetcher
/// alone keeps too few lines in flight: the products waited on L2 at ~32 bytes per cycle.
/// Prefetching never faults, so addresses past the end are harmless.
#[inline(always)]
fn prefetch_block<T, const W: usize>(p: *const T, n: usize) {
    let per_line = 64 / core::mem::size_of::<T>();
    for l in (0..W).step_by(per_line) {
        prefetch(p.wrapping_add(l));
        prefetch(p.wrapping_add(n + l));
    }
}

/// Asks for the cache line holding `p` into L1.
#[inline(always)]
fn prefetch<T>(p: *const T) {
    // SAFETY: a prefetch is a hint; it reads nothing and cannot fault.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p.cast());
    }
}

/// `acc + a * b`, fused where the instruction set has it (without FMA, `mul_add` is a
/// library call).
#[inline(always)]
pub(crate) fn madd<T: Real, const FMA: bool>(acc: T, a: T, b: T) -> T {
    if FMA {
        a.mul_add(b, acc)
    } else {
        acc + a * b
    }
}

/// Full blocks of W outputs accumulate in registers over the inner index (with `TWO`, even
/// and odd inputs into two sets of sums); the last `n mod W` outputs are dot products down
/// the columns of `w`, each split into 8 partial sums so they do not wait on one another.
#[inline(always)]
fn dense_row_blocked<T: Real, const W: usize, const TWO: bool, const FMA: bool>(
    w: &[T],
    b: &[T],
    x: &[T],
    y: &mut [T],
) {
    let n = b.len();
    debug_assert_eq!(w.len(), x.len() * n, "dense_row: weight shape");
    let mut j0 = 0;
    while j0 + W <= n {
        let mut acc = <[T; W]>::try_from(&b[j0..j0 + W]).expect("W outputs");
        let mut acc2 = [T::zero(); W];
        if TWO {
            // Rows 2k and 2k + 1 into separate sums (plain variables, not an indexed array:
            // LLVM then keeps both sets in registers instead of storing them every step).
            for (rows, xs) in w.chunks_exact(2 * n).zip(x.chunks_exact(2)) {
                prefetch_block::<T, W>(rows.as_ptr().wrapping_add(PREFETCH * 2 * n + j0), n);
                let (r0, r1) = rows.split_at(n);
                let r0 = <&[T; W]>::try_from(&r0[j0..j0 + W]).expect("W weights");
                let r1 = <&[T; W]>::try_from(&r1[j0..j0 + W]).expect("W weights");
                for t in 0..W {
                    acc[t] = madd::<T, FMA>(acc[t], xs[0], r0[t]);
                    acc2[t] = madd::<T, FMA>(acc2[t], xs[1], r1[t]);
                }
            }
        }
        let done = if TWO { x.len() - x.len() % 2 } else { 0 };
        for (row, &xi) in w[done * n..].chunks_exact(n).zip(&x[done..]) {
            let row = <&[T; W]>::try_from(&row[j0..j0 + W]).expect("W weights");
            for t in 0..W {
                acc[t] = madd::<T, FMA>(acc[t], xi, row[t]);
            }
        }
        let out = <&mut [T; W]>::try_from(&mut y[j0..j0 + W]).expect("W outputs");
        for t in 0..W {
            out[t] = if TWO { acc[t] + acc2[t] } else { acc[t] };
        }
        j0 += W;
    }
    for j in j0..n {
        let mut part = [T::zero(); 8];
        let mut chunks = x.chunks_exact(8);
        for (c, xs) in chunks.by_ref().enumerate() {
            for (u, &xu) in xs.iter().enumerate() {
                part[u] = madd::<T, FMA>(part[u], xu, w[(8 * c + u) * n + j]);
            }
        }
        let done = x.len() - chunks.remainder().len();
        for (u, &xu) in chunks.remainder().iter().enumerate() {
            part[u] = madd::<T, FMA>(part[u], xu, w[(done + u) * n + j]);
        }
        y[j] = b[j] + part.iter().fold(T::zero(), |s, &p| s + p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::testutil::{randomize, rng, uniform};
    use crate::nn::MlpScratch;

    /// Every activation, widths with and without full blocks and tails (1 -> 64 -> 64 -> 2 is
    /// C1's conditioner), 1, 2 and 4 outputs with odd input counts (the flat path and its
    /// leftover rows), and a layerless network; checked against the batch forward pass.
    fn check<T: Real>(tol: f64) {
        let shapes: [&[usize]; 7] = [
            &[1, 64, 64, 2],
            &[3, 7, 5, 2],
            &[5, 100, 33],
            &[2, 70, 4],
            &[4],
            &[37, 65, 1],
            &[19, 4],
        ];
        let acts =
            [Activation::Relu, Activation::Tanh, Activation::LeakyRelu(0.2), Activation::Elu(0.7)];
        let mut s = RowScratch::default();
        for (k, sizes) in shapes.iter().enumerate() {
            for (a, &act) in acts.iter().enumerate() {
                let mut net = Mlp::<f64>::zeros(sizes, act);
                randomize(&mut net, &mut rng(40 + k as u64), 1.0);
                let net = cast::<T>(&net);
                let x = uniform(&mut rng(50 + a as u64), 3, sizes[0], 2.0).mapv(T::of);
                let mut batch = MlpScratch::default();
                net.forward(x.view(), &mut batch);
                let want = batch.acts.last().cloned().unwrap_or_else(|| x.clone());
                for (r, xr) in x.rows().into_iter().enumerate() {
                    let got = net.forward_row(xr.as_slice().unwrap(), &mut s);
                    assert_eq!(got.len(), want.ncols(), "{sizes:?} width");
                    for (g, w) in got.iter().zip(want.row(r)) {
                        let err = (g.f64() - w.f64()).abs() / (1.0 + w.f64().abs());
                        assert!(err <= tol, "{sizes:?} {act:?} row {r}: {g:?} vs {w:?}");
                    }
                }
            }
        }
    }

    fn cast<T: Real>(net: &Mlp<f64>) -> Mlp<T> {
        let layers =
            net.layers.iter().map(|l| Dense { w: l.w.mapv(T::of), b: l.b.mapv(T::of) }).collect();
        Mlp::from_layers(layers, net.act)
    }

    /// Every register blocking, whichever one this CPU dispatches to, against the indexed
    /// product: one and two sets of sums, fused or not, wide and narrow layers.
    #[test]
    fn every_blocking_matches_the_indexed_product() {
        type Kernel = fn(&[f64], &[f64], &[f64], &mut [f64]);
        let kernels: [Kernel; 4] = [
            dense_row_in::<f64, 32, 8, true, true>,
            dense_row_in::<f64, 32, 8, false, true>,
            dense_row_in::<f64, 32, 8, false, false>,
            dense_row_in::<f64, 8, 8, true, false>,
        ];
        for (k, &(i, o)) in
            [(64, 64), (7, 70), (33, 2), (5, 1), (9, 4), (65, 33)].iter().enumerate()
        {
            let mut net = Mlp::<f64>::zeros(&[i, o], Activation::Relu);
            randomize(&mut net, &mut rng(70 + k as u64), 1.0);
            let layer = &net.layers[0];
            let x: Vec<f64> = uniform(&mut rng(80 + k as u64), 1, i, 2.0).iter().copied().collect();
            let mut want = vec![0.0; o];
            dense_row_strided(layer, &x, &mut want);
            for (n, kernel) in kernels.iter().enumerate() {
                let mut got = vec![f64::NAN; o];
                kernel(layer.w.as_slice().unwrap(), layer.b.as_slice().unwrap(), &x, &mut got);
                for (g, w) in got.iter().zip(&want) {
                    assert!((g - w).abs() <= 1e-12 * (1.0 + w.abs()), "{i}x{o} kernel {n}");
                }
            }
        }
    }

    /// The per-sample pieces: built the second time a network's weights are seen, kept for
    /// more networks than the scratch holds without mixing them up, and dropped when a weight
    /// or the activation changes (each against a cold scratch, which takes the dense layers).
    #[test]
    fn row_pieces_follow_networks_and_their_changes() {
        let mut nets: Vec<Mlp<f64>> = (0..ROW_PIECES as u64 + 3)
            .map(|k| {
                let mut net = Mlp::zeros(&[1, 16, 8, 2], Activation::Relu);
                randomize(&mut net, &mut rng(200 + k), 1.0);
                net
            })
            .collect();
        let mut s = RowScratch::default();
        for round in 0..4 {
            match round {
                2 => nets[0].layers_mut()[1].w[[5, 3]] += 0.5,
                3 => nets[1].act = Activation::Tanh,
                _ => {}
            }
            for net in &nets {
                for x in [-1.3, 0.2, 2.5] {
                    let want = net.forward_row(&[x], &mut RowScratch::default()).to_vec();
                    let got = net.forward_row(&[x], &mut s);
                    for (g, w) in got.iter().zip(&want) {
                        assert!((g - w).abs() <= 1e-12 * (1.0 + w.abs()), "round {round}");
                    }
                }
            }
        }
        let cold = RowScratch::<f64>::default();
        assert!(cold.pieces.built.is_empty());
        assert_eq!(s.pieces.built.len(), ROW_PIECES, "the pieces were taken");
        let last = nets.last().unwrap().id();
        assert!(s.pieces.built.iter().any(|p| p.id() == last));
    }

    #[test]
    fn rows_match_the_batch_forward_pass() {
        check::<f64>(1e-12);
        check::<f32>(1e-5);
    }
}
