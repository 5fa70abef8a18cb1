//! MADE (Germain et al. 2015): an MLP whose weights are masked so that the raw parameters
//! computed for input `k` depend only on inputs of smaller degree.
//!
//! Every unit carries a degree. Inputs have degrees `1..=D` (a permutation, the layer's
//! autoregressive order); hidden units have degrees in `1..=D-1`. A hidden unit of degree `m`
//! sees the units of the previous layer of degree `<= m`; the output columns of input `k`
//! see the last hidden units of degree `< in_deg[k]`. Every pass multiplies the weights by the
//! mask, as zuko's and nflows' `MaskedLinear` do, so masked entries never reach the output and
//! get a zero gradient whatever a weights file holds. The masked entries stay parameters (the
//! counts match zuko's).
//!
//! The masked network the kernels run ([`Made::masked_into`]) is in *degree order*: its
//! inputs are the MADE's inputs sorted by degree and its output columns the raw parameters of
//! those inputs in the same order (hidden degrees are nondecreasing already). Then every
//! mask is a staircase and each product skips the blocks it zeroes (`nn/blocked.rs`).

use super::GradOut;
use crate::nn::{blocks_of_mask, Activation, Block, Mlp};
use crate::params::Params;
use crate::real::Real;
use ndarray::{Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Zip};

/// A process-wide unique number, equal to every other stamp for `==` (so that two MADEs with
/// the same parameters compare equal whatever their stamps).
#[derive(Clone, Copy, Debug)]
struct Stamp(u64);

impl Stamp {
    fn fresh() -> Self {
        Stamp(crate::nn::next_id())
    }
}

impl PartialEq for Stamp {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// What a scratch's masked network was last built for: the stamps of the parameter values
/// and of the masks (see [`Made::masked_cached`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Built {
    params: Option<u64>,
    masks: Option<u64>,
}

/// Output columns per block of a masked product: narrower blocks skip more of the masked
/// triangle, wider ones make fewer, more efficient products.
const BLOCK_COLS: usize = 32;

/// A masked MLP: `sizes = [D, h1, .., hL, D * n_params]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Made<T> {
    /// The network, weights unmasked (private: every change must renew `stamp`).
    net: Mlp<T>,
    /// Identifies these parameter values: renewed by every mutable access, kept by clones
    /// (which hold the same values), so a scratch may keep the masked network built from them.
    stamp: Stamp,
    /// Identifies the masks (fixed at construction, kept by clones): a masked network built
    /// for them holds their zeros, which a rebuild for new values need not write again.
    masks_id: Stamp,
    /// The degree of input `k`: a permutation of `1..=D`.
    pub in_deg: Vec<usize>,
    /// The degrees of each hidden layer's units, nondecreasing, in `1..=D-1` (0 when D = 1).
    pub hidden_deg: Vec<Vec<usize>>,
    /// Raw transformer parameters per input: output column `k * n_params + j` is parameter
    /// `j` of input `k`.
    pub n_params: usize,
    /// The MADE's inputs in degree order (ties by index), and their degrees.
    ord: Vec<usize>,
    sorted_deg: Vec<usize>,
    /// Output column `c` of the masked network is column `out_perm[c]` of the last layer.
    out_perm: Vec<usize>,
    /// One 0/1 matrix per dense layer, shaped like its weight, in degree order.
    masks: Vec<Array2<T>>,
    /// Per dense layer, the column blocks of its mask (in degree order).
    blocks: Vec<Vec<Block>>,
    /// Per dense layer, where its mask is zeros then ones on every row (the staircase of
    /// degree order), the first column each row lets through.
    starts: Vec<Option<Vec<usize>>>,
}

impl<T: Real> Made<T> {
    /// A MADE with PyTorch's default init (see [`Mlp::new`]); if `zero_last`, the output
    /// layer is zero, so the flow layer starts as the identity.
    pub fn new(
        sizes: &[usize],
        act: Activation,
        in_deg: &[usize],
        hidden_deg: &[&[usize]],
        n_params: usize,
        rng: &mut crate::FlowRng,
        zero_last: bool,
    ) -> Self {
        Self::with_net(Mlp::new(sizes, act, rng, zero_last), in_deg, hidden_deg, n_params)
    }

    /// A MADE of the given architecture with every parameter zero (a gradient accumulator).
    pub fn zeros(
        sizes: &[usize],
        act: Activation,
        in_deg: &[usize],
        hidden_deg: &[&[usize]],
        n_params: usize,
    ) -> Self {
        Self::with_net(Mlp::zeros(sizes, act), in_deg, hidden_deg, n_params)
    }

    fn with_net(net: Mlp<T>, in_deg: &[usize], hidden_deg: &[&[usize]], n_params: usize) -> Self {
        let d = in_deg.len();
        let widths: Vec<usize> = net.layers().iter().map(|l| l.b.len()).collect();
        // The architecture comes from the compiler, never from user data: a mismatch is a bug.
        assert_eq!(widths.len(), hidden_deg.len() + 1, "Made: one degree list per hidden layer");
        assert_eq!(net.layers()[0].w.nrows(), d, "Made: input width");
        assert_eq!(widths[widths.len() - 1], d * n_params, "Made: output width");
        for (h, w) in hidden_deg.iter().zip(&widths) {
            assert_eq!(h.len(), *w, "Made: hidden degree count");
        }
        let hidden_deg: Vec<Vec<usize>> = hidden_deg.iter().map(|h| h.to_vec()).collect();
        let mut ord: Vec<usize> = (0..d).collect();
        ord.sort_by_key(|&k| in_deg[k]);
        let sorted_deg: Vec<usize> = ord.iter().map(|&k| in_deg[k]).collect();
        let np = n_params.max(1);
        let out_perm = (0..d * n_params).map(|c| ord[c / np] * n_params + c % np).collect();
        let masks: Vec<Array2<T>> = (0..widths.len())
            .map(|i| layer_mask(&sorted_deg, &hidden_deg, n_params, i, widths[i]))
            .collect();
        let blocks = masks.iter().map(|m| blocks_of_mask(m.view(), BLOCK_COLS)).collect();
        let starts = masks.iter().map(staircase_starts).collect();
        let in_deg = in_deg.to_vec();
        let (stamp, masks_id) = (Stamp::fresh(), Stamp::fresh());
        Self {
            net,
            stamp,
            masks_id,
            in_deg,
            hidden_deg,
            n_params,
            ord,
            sorted_deg,
            out_perm,
            masks,
            blocks,
            starts,
        }
    }

    /// The network (weights unmasked; `net().layers[i].w` is the parameter tensor).
    pub fn net(&self) -> &Mlp<T> {
        &self.net
    }

    /// The network, to change its parameters.
    pub fn net_mut(&mut self) -> &mut Mlp<T> {
        self.stamp = Stamp::fresh();
        &mut self.net
    }

    /// The masked network in `dst`, rebuilt only if `built` (what it was last built for) is
    /// not this MADE's parameters: within one `sample` or `log_prob` call, every row tile of a
    /// layer reuses it (building it costs as much as a tile's products). A rebuild for the
    /// same masks (a training step's new values) writes only the entries the masks let
    /// through.
    pub(crate) fn masked_cached<'a>(
        &self,
        dst: &'a mut Option<Mlp<T>>,
        built: &mut Built,
    ) -> &'a Mlp<T> {
        if built.params != Some(self.stamp.0) || dst.is_none() {
            let zeros_kept = dst.is_some() && built.masks == Some(self.masks_id.0);
            self.masked_into(dst, zeros_kept);
            *built = Built { params: Some(self.stamp.0), masks: Some(self.masks_id.0) };
        }
        dst.as_ref().expect("built above")
    }

    /// Whether every layer's mask is a staircase (the masked network's fast path): then
    /// [`Made::put_masked_grad`] reads only the entries the mask lets through.
    pub(crate) fn all_staircase(&self) -> bool {
        self.starts.iter().all(Option::is_some)
    }

    /// Whether the inputs are in degree order (natural order): then the masked network's
    /// layout is the network's own, with no permutation.
    pub(crate) fn in_degree_order(&self) -> bool {
        self.ord.iter().enumerate().all(|(k, &o)| k == o)
    }

    /// Zeroes the entries of `g` (shaped like the network) that the staircase masks remove.
    pub(crate) fn zero_masked(&self, g: &mut Mlp<T>) {
        for (l, st) in g.layers_mut().iter_mut().zip(&self.starts) {
            let st = st.as_deref().expect("zero_masked: staircase masks");
            for (mut row, &s) in l.w.rows_mut().into_iter().zip(st) {
                match row.as_slice_mut() {
                    Some(row) => row[..s].fill(T::zero()),
                    None => row.slice_mut(ndarray::s![..s]).fill(T::zero()),
                }
            }
        }
    }

    /// This parameter state's stamp (see [`Made::masked_cached`]).
    pub(crate) fn stamp(&self) -> u64 {
        self.stamp.0
    }

    /// The number of inputs (and of transformed dimensions).
    pub fn dim(&self) -> usize {
        self.in_deg.len()
    }

    /// The input degrees in degree order: the masked network's input degrees.
    pub(crate) fn sorted_deg(&self) -> &[usize] {
        &self.sorted_deg
    }

    /// The masked network's column blocks, per layer.
    pub(crate) fn blocks(&self) -> &[Vec<Block>] {
        &self.blocks
    }

    /// Writes `cols` (physical column of each MADE input) in degree order into `out`: the
    /// columns the masked network reads and whose parameters it computes, in its order.
    pub(crate) fn sorted_cols(&self, cols: &[usize], out: &mut Vec<usize>) {
        out.clear();
        out.extend(self.ord.iter().map(|&k| cols[k]));
    }

    /// How rows (the first layer's) and columns (the last layer's) of layer `i` of the masked
    /// network map to those of `net`; `None`: the identity.
    fn perms<'a>(&'a self, i: usize) -> (Option<&'a [usize]>, Option<&'a [usize]>) {
        let last = self.net.layers().len() - 1;
        // Natural order permutes nothing: the plain (vectorised) copy, not a gather.
        let id = self.in_degree_order();
        let perm = |p: &'a [usize], here: bool| Some(p).filter(|_| here && !id);
        (perm(&self.ord, i == 0), perm(&self.out_perm, i == last))
    }

    /// Writes the masked network, in degree order, into `dst`, reusing its buffers when the
    /// shapes match. With `zeros_kept` (`dst` was built for these masks), the entries the
    /// masks remove are left as they are, zero.
    pub(crate) fn masked_into<'a>(
        &self,
        dst: &'a mut Option<Mlp<T>>,
        zeros_kept: bool,
    ) -> &'a Mlp<T> {
        let eff = dst.get_or_insert_with(|| self.net.clone());
        let mut zeros_kept = zeros_kept;
        if eff.layers().len() != self.net.layers().len()
            || eff.layers().iter().zip(self.net.layers()).any(|(a, b)| a.w.dim() != b.w.dim())
        {
            *eff = self.net.clone();
            zeros_kept = false;
        }
        eff.act = self.net.act;
        let layers = eff.layers_mut().iter_mut().zip(self.net.layers()).zip(&self.masks);
        for (i, ((e, l), m)) in layers.enumerate() {
            let (rows, cols) = self.perms(i);
            let starts = self.starts[i].as_deref();
            for (r, (mut e, m)) in e.w.rows_mut().into_iter().zip(m.rows()).enumerate() {
                let w = l.w.row(rows.map_or(r, |p| p[r]));
                if let (Some(st), Some(e), Some(w)) = (starts, e.as_slice_mut(), w.as_slice()) {
                    crate::nn::simd(
                        #[inline(always)]
                        || staircase_row(e, w, cols, st[r], zeros_kept),
                    );
                    continue;
                }
                match cols {
                    None => Zip::from(&mut e).and(&w).and(&m).for_each(|e, &w, &m| *e = w * m),
                    Some(p) => Zip::from(&mut e)
                        .and(ArrayView1::from(p))
                        .and(&m)
                        .for_each(|e, &c, &m| *e = w[c] * m),
                }
            }
            match cols {
                None => e.b.assign(&l.b),
                Some(p) => e.b.iter_mut().zip(p).for_each(|(e, &c)| *e = l.b[c]),
            }
        }
        eff
    }

    /// Adds the masked gradient of the masked network, `geff` (degree order), into `grad`'s
    /// network, or with [`GradOut::Write`] writes it there (every entry: zeros where masked).
    pub(crate) fn put_masked_grad(&self, geff: &Mlp<T>, grad: &mut Made<T>, out: GradOut) {
        let add = out == GradOut::Add;
        let layers = grad.net_mut().layers_mut().iter_mut().zip(geff.layers()).zip(&self.masks);
        for (i, ((g, e), m)) in layers.enumerate() {
            let (rows, cols) = self.perms(i);
            let starts = self.starts[i].as_deref();
            for (r, (e, m)) in e.w.rows().into_iter().zip(m.rows()).enumerate() {
                let mut g = g.w.row_mut(rows.map_or(r, |p| p[r]));
                if let (Some(st), Some(g), Some(e)) = (starts, g.as_slice_mut(), e.as_slice()) {
                    crate::nn::simd(
                        #[inline(always)]
                        || staircase_put(g, e, cols, st[r], add),
                    );
                    continue;
                }
                let gm = Zip::from(e).and(m).map_collect(|&e, &m| e * m);
                put_row(g, gm.view(), cols, add);
            }
            put_row(g.b.view_mut(), e.b.view(), cols, add);
        }
    }
}

/// Per row of `mask`, the first column it lets through, if every row is zeros then ones.
fn staircase_starts<T: Real>(mask: &Array2<T>) -> Option<Vec<usize>> {
    let zero = T::zero();
    mask.rows()
        .into_iter()
        .map(|row| {
            let s = row.iter().position(|&v| v != zero).unwrap_or(row.len());
            row.iter().enumerate().all(|(c, &v)| (v != zero) == (c >= s)).then_some(s)
        })
        .collect()
}

/// A row of the masked network from a staircase mask starting at column `s`: zeros, then
/// the weights (`w[cols[c]]` for column `c` where the last layer's columns are permuted);
/// with `zeros`, the leading entries are left as they are (zeros of an earlier build).
/// Reads no mask, and a masked-out infinite weight gives 0, not `inf * 0`.
#[inline(always)]
fn staircase_row<T: Real>(e: &mut [T], w: &[T], cols: Option<&[usize]>, s: usize, zeros: bool) {
    if !zeros {
        e[..s].fill(T::zero());
    }
    match cols {
        None => e[s..].copy_from_slice(&w[s..]),
        Some(p) => e[s..].iter_mut().zip(&p[s..]).for_each(|(e, &c)| *e = w[c]),
    }
}

/// `g += e` (or `g = e`, zeros where masked, unless `add`) over a staircase row's columns
/// from `s` on (through `cols` where permuted).
#[inline(always)]
fn staircase_put<T: Real>(g: &mut [T], e: &[T], cols: Option<&[usize]>, s: usize, add: bool) {
    match (cols, add) {
        (None, true) => g[s..].iter_mut().zip(&e[s..]).for_each(|(g, &e)| *g += e),
        (None, false) => {
            g[..s].fill(T::zero());
            g[s..].copy_from_slice(&e[s..]);
        }
        (Some(p), true) => p[s..].iter().zip(&e[s..]).for_each(|(&c, &e)| g[c] += e),
        (Some(p), false) => {
            p[..s].iter().for_each(|&c| g[c] = T::zero());
            p[s..].iter().zip(&e[s..]).for_each(|(&c, &e)| g[c] = e);
        }
    }
}

/// `g[cols[c]] += e[c]` (or `=` unless `add`) for every `c`; `cols` `None`: the identity.
fn put_row<T: Real>(mut g: ArrayViewMut1<T>, e: ArrayView1<T>, cols: Option<&[usize]>, add: bool) {
    let put = |g: &mut T, e: T| if add { *g += e } else { *g = e };
    match cols {
        None => Zip::from(&mut g).and(&e).for_each(|g, &e| put(g, e)),
        Some(p) => p.iter().zip(e).for_each(|(&c, &e)| put(&mut g[c], e)),
    }
}

/// The mask of dense layer `i` (`out` columns): 1 where the target unit may see the source.
fn layer_mask<T: Real>(
    in_deg: &[usize],
    hidden: &[Vec<usize>],
    n_params: usize,
    i: usize,
    out: usize,
) -> Array2<T> {
    let src: &[usize] = if i == 0 { in_deg } else { &hidden[i - 1] };
    let to_output = i == hidden.len();
    Array2::from_shape_fn((src.len(), out), |(r, c)| {
        let seen = if to_output {
            // Input k's parameters see only what depends on inputs of smaller degree.
            let k = c / n_params.max(1);
            in_deg.get(k).is_some_and(|&dk| src[r] < dk)
        } else {
            src[r] <= hidden[i][c]
        };
        if seen {
            T::one()
        } else {
            T::zero()
        }
    })
}

/// Balanced hidden degrees for a MADE with `d` inputs whose degrees are `order`: unit `k` of
/// a layer of `h` units gets `1 + k (d - 1) / h` (nondecreasing, in `1..=d-1`), or 0 when
/// `d == 1` (those units see no input and feed the only output).
pub fn made_degrees(d: usize, order: &[usize], hidden: &[usize]) -> Vec<Vec<usize>> {
    debug_assert_eq!(order.len(), d, "made_degrees: one degree per input");
    hidden
        .iter()
        .map(|&h| (0..h).map(|k| if d > 1 { 1 + k * (d - 1) / h } else { 0 }).collect())
        .collect()
}

impl<T: Real> Params<T> for Made<T> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &[usize], &[T])) {
        self.net.visit(prefix, f);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &[usize], &mut [T])) {
        self.net_mut().visit_mut(prefix, f);
    }
}

/// The gradient with respect to a network's input only (no parameter gradients), after
/// `net.forward`, whose layer outputs are `acts`: `dx = dout . J`. `deltas` are buffers.
pub(crate) fn input_vjp<T: Real>(
    net: &Mlp<T>,
    blocks: &[Vec<Block>],
    acts: &[Array2<T>],
    dout: ArrayView2<T>,
    deltas: &mut Vec<Array2<T>>,
    mut dx: ArrayViewMut2<T>,
) {
    use crate::nn::blocked::product_t;
    let nl = net.layers().len();
    deltas.resize_with(nl, || Array2::zeros((0, 0)));
    for i in (0..nl).rev() {
        let (below, here) = deltas.split_at_mut(i);
        let delta = if i == nl - 1 { dout } else { here[0].view() };
        let w = net.layers()[i].w.view();
        if i == 0 {
            product_t(delta, w, dx.view_mut(), false, &blocks[i]);
        } else {
            let prev = &mut below[i - 1];
            crate::nn::resize(prev, delta.nrows(), w.nrows());
            product_t(delta, w, prev.view_mut(), false, &blocks[i]);
            net.act.mul_derivative(prev.view_mut(), acts[i - 1].view());
        }
    }
}
