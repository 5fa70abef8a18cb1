//! The sequential direction of a MADE flow in one network's worth of arithmetic.
//!
//! zuko and nflows invert a MAF by running the whole network `D` times. Here every unit is
//! computed once: with inputs, hidden units and output columns sorted by degree, the units a
//! new input reaches form a contiguous suffix of each layer, and the units of degree `< d`
//! are final once the inputs of degree `< d` are known. So for each input in degree order we
//! (1) read its raw parameters, complete by then, and invert its transformer, (2) add it into
//! the first hidden layer's pre-activations, (3) cascade: the hidden units that just became
//! complete are activated and added into the next layer (or the output columns), which are
//! still open. Rows are processed in tiles so the accumulators stay in cache; the inner loops
//! are saxpys over contiguous slices, four source units and up to four rows at a time.

use crate::nn::{madd, Activation, Mlp};
use crate::real::Real;
use crate::transform::Transformer;
use ndarray::{ArrayViewMut1, ArrayViewMut2};

/// The push loops' vector length in elements (one AVX-512 vector of f32, two of f64; two or
/// four of AVX2): push starts are aligned so that the pushed lengths are multiples of it.
const LANES: usize = 16;

/// Rows per tile: the tile's accumulators (`TILE x` every layer's width) stay in L1/L2.
const TILE: usize = 32;

/// One dense layer in degree order, masked.
#[derive(Clone, Debug, Default)]
struct SortedLayer<T> {
    /// `rows x cols`, row-major: row `r` is source unit `r`'s outgoing weights.
    w: Vec<T>,
    b: Vec<T>,
    cols: usize,
    /// Where source row `r`'s push starts: every entry before it is masked, and every
    /// unmasked target from it on is still open when the row is pushed (see `aligned_start`).
    start: Vec<usize>,
}

/// A MADE rearranged in degree order, rebuilt each call from the current weights (O(params)).
#[derive(Clone, Debug, Default)]
pub(crate) struct Plan<T> {
    /// The MADE input solved at each step, in degree order, and its degree.
    ord: Vec<usize>,
    ord_deg: Vec<usize>,
    /// The sorted degrees of each hidden layer.
    hdeg: Vec<Vec<usize>>,
    /// Per hidden layer, the unit at each sorted position.
    hperm: Vec<Vec<usize>>,
    layers: Vec<SortedLayer<T>>,
    n_params: usize,
    act: Option<Activation>,
}

/// Per-tile accumulators.
#[derive(Clone, Debug, Default)]
pub(crate) struct Tile<T> {
    /// One `TILE x width` row-major block per dense layer's output.
    acc: Vec<Vec<T>>,
    /// `TILE x D` in degree order: y on entry, x once solved.
    x: Vec<T>,
    ld: Vec<T>,
    /// One column of `x`, gathered for the transformer.
    col: Vec<T>,
    /// Per hidden layer, how many sorted units are activated and pushed.
    done: Vec<usize>,
}

/// Writes the indices `0..deg.len()` sorted by degree (ties in index order) into `idx` and
/// the sorted degrees into `sorted`, reusing their buffers.
fn sort_by_degree(deg: &[usize], idx: &mut Vec<usize>, sorted: &mut Vec<usize>) {
    idx.clear();
    idx.extend(0..deg.len());
    idx.sort_unstable_by_key(|&k| (deg[k], k));
    sorted.clear();
    sorted.extend(idx.iter().map(|&k| deg[k]));
}

impl<T: Real> Plan<T> {
    /// Sorts the masked network `eff` (see `Made::masked_into`) by degree.
    pub(crate) fn build(
        &mut self,
        eff: &Mlp<T>,
        in_deg: &[usize],
        hidden: &[Vec<usize>],
        np: usize,
    ) {
        sort_by_degree(in_deg, &mut self.ord, &mut self.ord_deg);
        self.hperm.resize_with(hidden.len(), Vec::new);
        self.hdeg.resize_with(hidden.len(), Vec::new);
        for ((h, perm), sorted) in hidden.iter().zip(&mut self.hperm).zip(&mut self.hdeg) {
            sort_by_degree(h, perm, sorted);
        }
        self.n_params = np;
        self.act = Some(eff.act);
        self.layers.resize_with(eff.layers().len(), Default::default);
        for i in 0..eff.layers().len() {
            self.build_layer(eff, i);
        }
    }

    fn build_layer(&mut self, eff: &Mlp<T>, i: usize) {
        let (dense, nl, np) = (&eff.layers()[i], eff.layers().len(), self.n_params);
        let (src, src_deg) = if i == 0 {
            (&self.ord, &self.ord_deg)
        } else {
            (&self.hperm[i - 1], &self.hdeg[i - 1])
        };
        let to_output = i + 1 == nl;
        // Output column `q * np + j` in degree order is parameter j of input ord[q].
        let tgt =
            |c: usize| if to_output { self.ord[c / np] * np + c % np } else { self.hperm[i][c] };
        let l = &mut self.layers[i];
        l.cols = dense.b.len();
        l.b.clear();
        l.b.extend((0..l.cols).map(|c| dense.b[tgt(c)]));
        l.w.clear();
        for &r in src {
            l.w.extend((0..l.cols).map(|c| dense.w[[r, tgt(c)]]));
        }
        l.start.clear();
        l.start.extend(src_deg.iter().map(|&m| {
            let open = if to_output {
                // Inputs of degree > m are still unsolved when a unit of degree m completes.
                np * self.ord_deg.partition_point(|&d| d <= m)
            } else {
                self.hdeg[i].partition_point(|&d| d < m)
            };
            aligned_start(open, l.cols)
        }));
    }
}

/// `open` moved down so that `cols - start` is a whole number of [`LANES`] where the row
/// allows it. The entries added in front are masked zeros: they add `s * 0` to units that
/// are already final (and, if activated, already pushed on) or to open ones, changing
/// neither, and the push loops then run without scalar remainders.
fn aligned_start(open: usize, cols: usize) -> usize {
    let padded = (cols - open).div_ceil(LANES) * LANES;
    if padded <= cols {
        cols - padded
    } else {
        open
    }
}

/// Solves `x[:, cols]` in place (y on entry), adding `sum_k ln|d t^{-1}/dy|` to `ld`.
pub(crate) fn solve_rows<T: Real, Tr: Transformer<T>>(
    tr: &Tr,
    plan: &Plan<T>,
    tile: &mut Tile<T>,
    cols: &[usize],
    x: ArrayViewMut2<T>,
    ld: ArrayViewMut1<T>,
) {
    // Rows are independent: large batches are solved in two halves on two threads (the same
    // threshold as the MLP's products), each half row for row as the serial solve does, so the
    // result is bit-identical.
    let n = x.nrows();
    if crate::gemm::row_parts(n) == 1 {
        return solve_serial(tr, plan, tile, cols, x, ld);
    }
    let (x1, x2) = x.split_at(ndarray::Axis(0), n / 2);
    let (l1, l2) = ld.split_at(ndarray::Axis(0), n / 2);
    let mut other = Tile::default();
    rayon::join(
        || solve_serial(tr, plan, tile, cols, x1, l1),
        || solve_serial(tr, plan, &mut other, cols, x2, l2),
    );
}

fn solve_serial<T: Real, Tr: Transformer<T>>(
    tr: &Tr,
    plan: &Plan<T>,
    tile: &mut Tile<T>,
    cols: &[usize],
    mut x: ArrayViewMut2<T>,
    mut ld: ArrayViewMut1<T>,
) {
    let (n, d) = (x.nrows(), plan.ord.len());
    let mut r0 = 0;
    while r0 < n {
        let rows = TILE.min(n - r0);
        tile.reset(plan, rows);
        for r in 0..rows {
            for (q, &k) in plan.ord.iter().enumerate() {
                tile.x[r * d + q] = x[[r0 + r, cols[k]]];
            }
        }
        // Compiled per CPU (AVX-512, else AVX2 + FMA): the push loops vectorize at full width
        // in a default build, with fused multiply-adds where the copy has them.
        crate::nn::simd_isa(
            #[inline(always)]
            |isa| match isa {
                crate::nn::Isa::Plain => tile.solve::<Tr, false>(tr, plan, rows),
                _ => tile.solve::<Tr, true>(tr, plan, rows),
            },
        );
        for r in 0..rows {
            for (q, &k) in plan.ord.iter().enumerate() {
                x[[r0 + r, cols[k]]] = tile.x[r * d + q];
            }
            ld[r0 + r] += tile.ld[r];
        }
        r0 += rows;
    }
}

impl<T: Real> Tile<T> {
    /// Sizes the buffers for `rows` rows and loads every accumulator with its bias.
    fn reset(&mut self, plan: &Plan<T>, rows: usize) {
        self.acc.resize_with(plan.layers.len(), Vec::new);
        for (acc, l) in self.acc.iter_mut().zip(&plan.layers) {
            acc.clear();
            for _ in 0..rows {
                acc.extend_from_slice(&l.b);
            }
        }
        self.x.resize(rows * plan.ord.len(), T::zero());
        self.ld.clear();
        self.ld.resize(rows, T::zero());
        self.done.clear();
        self.done.resize(plan.hdeg.len(), 0);
    }

    /// The sequential solve of one tile (see the module docs).
    #[inline(always)]
    fn solve<Tr: Transformer<T>, const FMA: bool>(&mut self, tr: &Tr, plan: &Plan<T>, rows: usize) {
        let (d, np) = (plan.ord.len(), plan.n_params);
        let mut q = 0;
        while q < d {
            // Units of degree below this step's degree are final: finish them first.
            self.cascade::<FMA>(plan, rows, plan.ord_deg[q]);
            // Every input of this degree (one, when the degrees are a permutation).
            let q1 = q + plan.ord_deg[q..].partition_point(|&m| m == plan.ord_deg[q]);
            let out = self.acc.last().map_or(&[][..], |a| &a[..]);
            let width = d * np;
            for qq in q..q1 {
                // A column of the tile at a time, so a transformer can vectorise across rows.
                let col = &mut self.col;
                col.clear();
                col.extend((0..rows).map(|r| self.x[r * d + qq]));
                tr.eval_rows(true, col, &out[qq * np..], width, &mut self.ld[..rows]);
                for (r, &v) in col.iter().enumerate() {
                    self.x[r * d + qq] = v;
                }
            }
            let (src, acc) = (&self.x, &mut self.acc[0]);
            push::<T, FMA>(&plan.layers[0], None, src, d, q..q1, acc, rows);
            q = q1;
        }
    }

    /// Pushes every hidden unit of degree `< dn` not yet done forward, activating it as it is
    /// read (the accumulators keep pre-activations; only the pushes read hidden units).
    #[inline(always)]
    fn cascade<const FMA: bool>(&mut self, plan: &Plan<T>, rows: usize, dn: usize) {
        let done = &mut self.done;
        let act = plan.act.unwrap_or(Activation::Relu);
        for (l, hd) in plan.hdeg.iter().enumerate() {
            let upto = hd.partition_point(|&m| m < dn);
            if upto <= done[l] {
                continue;
            }
            let width = hd.len();
            let (head, tail) = self.acc.split_at_mut(l + 1);
            let (layer, js) = (&plan.layers[l + 1], done[l]..upto);
            push::<T, FMA>(layer, Some(act), &head[l], width, js, &mut tail[0], rows);
            done[l] = upto;
        }
    }
}

/// `dst[r, start_j..] += src[r, j] * w[j, start_j..]` for the source units `js`, four at a
/// time (a group shares its first unit's start: the extra entries are masked zeros). Rows go
/// in fours, the remainder one by one, so each weight row loaded serves four rows (the loop
/// is bound by loads and stores, not arithmetic: fours against pairs took C2's f32 sampling
/// from 210 to 168 ms per 10,000 points); each row's arithmetic is the same as alone.
#[inline(always)]
fn push<T: Real, const FMA: bool>(
    l: &SortedLayer<T>,
    act: Option<Activation>,
    src: &[T],
    src_width: usize,
    js: std::ops::Range<usize>,
    dst: &mut [T],
    rows: usize,
) {
    let cols = l.cols;
    let mut r = 0;
    while r + 4 <= rows {
        let (a, rest) = dst[r * cols..(r + 4) * cols].split_at_mut(cols);
        let (b, rest) = rest.split_at_mut(cols);
        let (c, d) = rest.split_at_mut(cols);
        let sr = |i: usize| &src[(r + i) * src_width..];
        push_quad::<T, FMA>(l, act, [sr(0), sr(1), sr(2), sr(3)], js.clone(), [a, b, c, d]);
        r += 4;
    }
    for r in r..rows {
        let s = &src[r * src_width..(r + 1) * src_width];
        push_row::<T, FMA>(l, act, s, js.clone(), &mut dst[r * cols..(r + 1) * cols]);
    }
}

/// Source value `v`, through the activation if the source is a hidden layer.
#[inline(always)]
fn activated<T: Real>(act: Option<Activation>, v: T) -> T {
    act.map_or(v, |a| a.apply_value(v))
}

/// Source units `j..j + 4` of one row, [`activated`].
#[inline(always)]
fn four<T: Real>(act: Option<Activation>, s: &[T], j: usize) -> [T; 4] {
    let s = &s[j..j + 4];
    let a = |v| activated(act, v);
    [a(s[0]), a(s[1]), a(s[2]), a(s[3])]
}

/// [`push_row`] for four rows: each weight row loaded serves four rows. A group of four
/// source units is skipped only when it is zero in all four rows (ReLU leaves many zero).
#[inline(always)]
fn push_quad<T: Real, const FMA: bool>(
    l: &SortedLayer<T>,
    act: Option<Activation>,
    s: [&[T]; 4],
    js: std::ops::Range<usize>,
    d: [&mut [T]; 4],
) {
    let cols = l.cols;
    let wrow = |j: usize, st: usize| &l.w[j * cols + st..(j + 1) * cols];
    let [d0, d1, d2, d3] = d;
    let mut j = js.start;
    while j + 4 <= js.end {
        let st = l.start[j];
        let h = [four(act, s[0], j), four(act, s[1], j), four(act, s[2], j), four(act, s[3], j)];
        if h != [[T::zero(); 4]; 4] {
            let w = [wrow(j, st), wrow(j + 1, st), wrow(j + 2, st), wrow(j + 3, st)];
            axpy4x4::<T, FMA>([&mut d0[st..], &mut d1[st..], &mut d2[st..], &mut d3[st..]], h, w);
        }
        j += 4;
    }
    for j in j..js.end {
        let st = l.start[j];
        for (d, s) in [&mut *d0, &mut *d1, &mut *d2, &mut *d3].into_iter().zip(s) {
            axpy1::<T, FMA>(&mut d[st..], activated(act, s[j]), wrow(j, st));
        }
    }
}

/// `d_r[k] += h[r] . (w_0[k], .., w_3[k])` for four rows `r`. (A plain loop: the loop
/// vectorizer makes it one vector per iteration with a scalar remainder, which is empty when
/// the layer's start was aligned, see `aligned_start`. Fixed 16-element pieces measured 1.5
/// times slower: fully unrolled, they were left to the SLP vectorizer.)
#[inline(always)]
fn axpy4x4<T: Real, const FMA: bool>(dst: [&mut [T]; 4], h: [[T; 4]; 4], w: [&[T]; 4]) {
    let [d0, d1, d2, d3] = dst;
    let n = d0.len();
    let (d1, d2, d3) = (&mut d1[..n], &mut d2[..n], &mut d3[..n]);
    let (w0, w1, w2, w3) = (&w[0][..n], &w[1][..n], &w[2][..n], &w[3][..n]);
    let [a, b, c, e] = h;
    for t in 0..n {
        let x = [w0[t], w1[t], w2[t], w3[t]];
        d0[t] = dot4::<T, FMA>(d0[t], a, x);
        d1[t] = dot4::<T, FMA>(d1[t], b, x);
        d2[t] = dot4::<T, FMA>(d2[t], c, x);
        d3[t] = dot4::<T, FMA>(d3[t], e, x);
    }
}

#[inline(always)]
fn push_row<T: Real, const FMA: bool>(
    l: &SortedLayer<T>,
    act: Option<Activation>,
    s: &[T],
    js: std::ops::Range<usize>,
    drow: &mut [T],
) {
    let cols = l.cols;
    let wrow = |j: usize, st: usize| &l.w[j * cols + st..(j + 1) * cols];
    let mut j = js.start;
    while j + 4 <= js.end {
        let st = l.start[j];
        let h = four(act, s, j);
        if h != [T::zero(); 4] {
            let w = [wrow(j, st), wrow(j + 1, st), wrow(j + 2, st), wrow(j + 3, st)];
            axpy4::<T, FMA>(&mut drow[st..], h, w);
        }
        j += 4;
    }
    for j in j..js.end {
        axpy1::<T, FMA>(&mut drow[l.start[j]..], activated(act, s[j]), wrow(j, l.start[j]));
    }
}

/// [`axpy4x4`] for one row.
#[inline(always)]
fn axpy4<T: Real, const FMA: bool>(dst: &mut [T], h: [T; 4], w: [&[T]; 4]) {
    let n = dst.len();
    let (w0, w1, w2, w3) = (&w[0][..n], &w[1][..n], &w[2][..n], &w[3][..n]);
    for t in 0..n {
        dst[t] = dot4::<T, FMA>(dst[t], h, [w0[t], w1[t], w2[t], w3[t]]);
    }
}

#[inline(always)]
fn axpy1<T: Real, const FMA: bool>(dst: &mut [T], h: T, w: &[T]) {
    for (d, &w) in dst.iter_mut().zip(w) {
        *d = madd::<T, FMA>(*d, h, w);
    }
}

/// `acc + h . x`: with FMA, a chain of four fused steps; without, the four products summed,
/// then added (the arithmetic of the build's default target).
#[inline(always)]
fn dot4<T: Real, const FMA: bool>(acc: T, h: [T; 4], x: [T; 4]) -> T {
    if FMA {
        (0..4).fold(acc, |s, i| madd::<T, true>(s, h[i], x[i]))
    } else {
        acc + (h[0] * x[0] + h[1] * x[1] + h[2] * x[2] + h[3] * x[3])
    }
}
