//! Small fully connected networks: the conditioners of coupling layers.
//!
//! Buffers live in an [`MlpScratch`] owned by the caller, so a training loop that keeps the
//! batch size fixed allocates nothing after its first step.

use crate::gemm;
use crate::params::{join, Params};
use crate::real::Real;
use ndarray::{
    s, Array, Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut2, Axis, Dimension, Zip,
};
use rand::RngExt;

mod backward;
pub(crate) mod blocked;
mod pieces;
mod row;
pub(crate) use backward::{shaped_like, zeroed_like};
pub use blocked::{blocks_of_mask, Block};
use pieces::Pieces;
pub(crate) use row::madd;
pub use row::RowScratch;

/// Per layer, the column blocks its weight is nonzero on (see `blocked.rs`); `None`: dense.
pub(crate) type Sparsity<'a> = Option<&'a [Vec<Block>]>;

/// How [`Mlp::forward`]'s row blocks compute the layers: a masked network's blocks, or the
/// first two layers of a one-input ReLU network as pieces (`pieces.rs`).
#[derive(Clone, Copy)]
struct Layers<'a, T> {
    blocks: Sparsity<'a>,
    pieces: Option<&'a Pieces<T>>,
}

/// The nonlinearity applied after every layer but the last.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    Relu,
    Tanh,
    /// The slope for negative inputs.
    LeakyRelu(f64),
    /// alpha in `alpha * (exp(x) - 1)` for negative inputs.
    Elu(f64),
}

impl Activation {
    /// Multiplies `d` by the activation's derivative, computed from the activation's output `y`
    /// (every supported activation's derivative is a function of its output, so the
    /// pre-activations need not be stored).
    pub(crate) fn mul_derivative<T: Real>(self, d: ArrayViewMut2<T>, y: ArrayView2<T>) {
        let (zero, one) = (T::zero(), T::one());
        match self {
            Activation::Relu => zip_map(d, y, |d, y| if y > zero { d } else { zero }),
            Activation::Tanh => zip_map(d, y, |d, y| d * (one - y * y)),
            Activation::LeakyRelu(slope) => {
                let slope = T::of(slope);
                zip_map(d, y, |d, y| if y > zero { d } else { d * slope })
            }
            Activation::Elu(alpha) => {
                let alpha = T::of(alpha);
                zip_map(d, y, |d, y| if y > zero { d } else { d * (y + alpha) })
            }
        }
    }
}

/// The instruction set [`simd_isa`] compiled its closure for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    /// AVX-512 (F, VL, BW, DQ) with AVX2 and FMA: 32 vector registers of 512 bits.
    Avx512,
    /// AVX2 and FMA: 16 registers of 256 bits.
    Avx2,
    /// The build's default target (no fused multiply-add instruction).
    Plain,
}

/// Runs `f` compiled for the best instruction set this CPU has (AVX-512, else AVX2 + FMA),
/// so the elementwise loops and row products inside vectorize at full width in a default
/// build. (pulp's `Arch::dispatch` runs its AVX-512 arm through the AVX2 copy: measured, the
/// loops stayed 256 bits wide on this machine's AVX-512 CPU.)
#[inline(always)]
pub(crate) fn simd<R>(f: impl FnOnce() -> R) -> R {
    simd_isa(
        #[inline(always)]
        |_| f(),
    )
}

/// [`simd`], telling `f` which copy it runs in. The argument is a constant in each copy, so
/// a kernel can choose its register blocking per instruction set at no cost.
#[inline(always)]
pub(crate) fn simd_isa<R>(f: impl FnOnce(Isa) -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx2") && has!("fma") {
            if has!("avx512f") && has!("avx512vl") && has!("avx512bw") && has!("avx512dq") {
                // SAFETY: the CPU has every feature `with_avx512` is compiled for.
                return unsafe { with_avx512(f) };
            }
            // SAFETY: the CPU has AVX2 and FMA.
            return unsafe { with_avx2(f) };
        }
    }
    f(Isa::Plain)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
unsafe fn with_avx512<R>(f: impl FnOnce(Isa) -> R) -> R {
    f(Isa::Avx512)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn with_avx2<R>(f: impl FnOnce(Isa) -> R) -> R {
    f(Isa::Avx2)
}

/// `d[i, j] = f(d[i, j], y[i, j])`, row slice by row slice (branch-free closures vectorize).
fn zip_map<T: Real>(d: ArrayViewMut2<T>, y: ArrayView2<T>, f: impl Fn(T, T) -> T) {
    simd(
        #[inline(always)]
        || zip_map_body(d, y, f),
    )
}

// The `*_body` functions hold the loops `simd` compiles per CPU: they must be inlined into
// its target-feature context (a closure body alone is not always inlined there).
#[inline(always)]
fn zip_map_body<T: Real>(mut d: ArrayViewMut2<T>, y: ArrayView2<T>, f: impl Fn(T, T) -> T) {
    for (mut dr, yr) in d.rows_mut().into_iter().zip(y.rows()) {
        match (dr.as_slice_mut(), yr.as_slice()) {
            (Some(dr), Some(yr)) => dr.iter_mut().zip(yr).for_each(|(d, &y)| *d = f(*d, y)),
            (_, _) => Zip::from(&mut dr).and(&yr).for_each(|d, &y| *d = f(*d, y)),
        }
    }
}

/// An affine layer `y = x.w + b`, with `w` of shape `in x out`.
#[derive(Clone, Debug, PartialEq)]
pub struct Dense<T> {
    pub w: Array2<T>,
    pub b: Array1<T>,
}

/// A multilayer perceptron. An MLP without layers is the identity.
///
/// The layers are reached through [`Mlp::layers`] and [`Mlp::layers_mut`] (or
/// [`Params::visit_mut`]), so that every change of a weight gives the network a new
/// [`Mlp::id`]: caches of what its weights determine (the pieces of `pieces.rs`) are then
/// checked by one comparison of ids instead of thousands of weights.
#[derive(Clone, Debug)]
pub struct Mlp<T> {
    layers: Vec<Dense<T>>,
    pub act: Activation,
    /// Unique to these weights: taken from [`next_id`] at construction and at every mutable
    /// borrow of the layers; a clone, with the same weights, keeps it.
    id: u64,
}

/// Networks with equal layers and activation are equal, whatever their ids.
impl<T: PartialEq> PartialEq for Mlp<T> {
    fn eq(&self, other: &Self) -> bool {
        self.layers == other.layers && self.act == other.act
    }
}

/// A process-wide fresh id (never reused, so a cache keyed on an id can never be stale): the
/// ids of networks and the stamps of MADEs.
pub(crate) fn next_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Per-batch buffers of an [`Mlp`], reused across calls.
#[derive(Clone, Debug, Default)]
pub struct MlpScratch<T> {
    /// `acts[i]`: the output of layer i (after its activation), `n x sizes[i+1]`.
    pub acts: Vec<Array2<T>>,
    /// `deltas[i]`: the gradient with respect to layer i's pre-activation (all layers but the
    /// last, whose gradient is the caller's `dout`).
    pub deltas: Vec<Array2<T>>,
    /// The second thread's tile deltas and gradient in the row-tiled backward pass of a large
    /// batch (`backward.rs`).
    pub(crate) deltas2: Vec<Array2<T>>,
    pub(crate) grad2: Option<Mlp<T>>,
    /// The pieces of the last one-input ReLU network run with this scratch, kept while its
    /// weights are unchanged (`pieces.rs`; a batch reaches `forward` one row tile at a time).
    pub(crate) pieces: Option<Pieces<T>>,
}

impl<T: Real> Mlp<T> {
    /// `sizes = [in, h1, ..., out]`. PyTorch's `nn.Linear` default init: `w` and `b` drawn
    /// from `U(-1/sqrt(in), 1/sqrt(in))`. If `zero_last`, the last layer is all zero, so a
    /// coupling built on this network starts as the identity.
    pub fn new(
        sizes: &[usize],
        act: Activation,
        rng: &mut crate::FlowRng,
        zero_last: bool,
    ) -> Self {
        let mut mlp = Self::zeros(sizes, act);
        let n = mlp.layers.len();
        for layer in
            mlp.layers_mut().iter_mut().take(if zero_last { n.saturating_sub(1) } else { n })
        {
            let bound = 1.0 / (layer.w.nrows().max(1) as f64).sqrt();
            let mut draw = |v: &mut T| *v = T::of(rng.random_range(-bound..bound));
            layer.w.iter_mut().for_each(&mut draw);
            layer.b.iter_mut().for_each(&mut draw);
        }
        mlp
    }

    /// A network of the given sizes with every parameter zero (a gradient accumulator).
    pub fn zeros(sizes: &[usize], act: Activation) -> Self {
        let layers = sizes
            .windows(2)
            .map(|io| Dense { w: Array2::zeros((io[0], io[1])), b: Array1::zeros(io[1]) })
            .collect();
        Self::from_layers(layers, act)
    }

    /// A network of these layers (`layers[i].w` is `in x out`, each `out` the next `in`).
    pub fn from_layers(layers: Vec<Dense<T>>, act: Activation) -> Self {
        Self { layers, act, id: next_id() }
    }

    /// The layers, first to last.
    pub fn layers(&self) -> &[Dense<T>] {
        &self.layers
    }

    /// The layers, to change: the network takes a new [`Mlp::id`].
    pub fn layers_mut(&mut self) -> &mut Vec<Dense<T>> {
        self.id = next_id();
        &mut self.layers
    }

    /// Equal for two networks only if their weights are equal: it changes with every mutable
    /// borrow of the layers, and no two networks built apart share one.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The forward pass; the activation follows every layer except the last. Leaves every
    /// layer's output in `s.acts`; the network's output is `s.acts.last()`.
    ///
    /// Large batches are split into two row blocks run on two threads; each thread runs its
    /// rows through all layers in tiles of [`gemm::TILE_ROWS`] rows, so that a tile's
    /// activations are still in cache when the next layer reads them.
    pub fn forward(&self, x: ArrayView2<T>, s: &mut MlpScratch<T>) {
        self.forward_sparse(x, s, None)
    }

    /// [`Mlp::forward`] of a network whose weights are zero outside `sp`'s blocks.
    pub(crate) fn forward_sparse(&self, x: ArrayView2<T>, s: &mut MlpScratch<T>, sp: Sparsity) {
        let n = x.nrows();
        if self.layers.is_empty() {
            resize_all(&mut s.acts, n, [x.ncols()].into_iter());
            s.acts[0].assign(&x);
            return;
        }
        resize_all(&mut s.acts, n, self.layers.iter().map(|l| l.b.len()));
        debug_assert_eq!(x.ncols(), self.layers[0].w.nrows(), "Mlp::forward: input width");
        let pieces = match sp {
            None if n >= pieces::PIECES_MIN_ROWS => Pieces::cached(self, &mut s.pieces),
            _ => None,
        };
        let sp = Layers { blocks: sp, pieces };
        if gemm::row_parts(n) == 1 {
            let mut outs: Vec<ArrayViewMut2<T>> = s.acts.iter_mut().map(|a| a.view_mut()).collect();
            self.forward_rows(x, &mut outs, sp);
        } else {
            let mid = n / 2;
            let (mut top, mut bottom): (Vec<_>, Vec<_>) =
                s.acts.iter_mut().map(|a| a.view_mut().split_at(Axis(0), mid)).unzip();
            let (xt, xb) = x.split_at(Axis(0), mid);
            rayon::join(
                || self.forward_rows(xt, &mut top, sp),
                || self.forward_rows(xb, &mut bottom, sp),
            );
        }
    }

    /// [`Mlp::forward`] of the rows of `x` into `outs` (one view per layer, same rows).
    fn forward_rows(&self, x: ArrayView2<T>, outs: &mut [ArrayViewMut2<T>], sp: Layers<T>) {
        let last = self.layers.len() - 1;
        let n = x.nrows();
        for start in (0..n).step_by(gemm::TILE_ROWS) {
            let rows = s![start..(start + gemm::TILE_ROWS).min(n), ..];
            for (i, layer) in self.layers.iter().enumerate() {
                let (done, rest) = outs.split_at_mut(i);
                let input = if i == 0 { x.slice(rows) } else { done[i - 1].slice(rows) };
                let out = rest[0].slice_mut(rows);
                let act = if i < last { Some(self.act) } else { None };
                let after_relu = i > 0 && self.act == Activation::Relu;
                match (sp.blocks, sp.pieces) {
                    (None, Some(p)) if i == 1 => p.hidden_rows(x.slice(rows), out),
                    (None, _) => layer.forward_into(input, out, act, after_relu),
                    (Some(b), _) => blocked::forward(input, layer, out, act, &b[i]),
                }
            }
        }
    }
}

impl<T: Real> Dense<T> {
    /// `out = act(input w + b)`: in one pass by [`gemm::fused_dense`] where it applies (no
    /// activation or ReLU; [`gemm::fused_dense_after_relu`], which skips zero inputs, if the
    /// input came out of a ReLU), else the product then [`add_bias_activate`].
    fn forward_into(
        &self,
        input: ArrayView2<T>,
        out: ArrayViewMut2<T>,
        act: Option<Activation>,
        after_relu: bool,
    ) {
        dense_into(input, self.w.view(), self.b.view(), act, after_relu, out);
    }
}

/// `out = act(input w + b)` (see [`Dense::forward_into`]): fused where the kernel applies,
/// else the product then [`add_bias_activate`]. Also one block of a masked layer's columns
/// (`blocked::forward`).
pub(crate) fn dense_into<T: Real>(
    input: ArrayView2<T>,
    w: ArrayView2<T>,
    b: ArrayView1<T>,
    act: Option<Activation>,
    after_relu: bool,
    mut out: ArrayViewMut2<T>,
) {
    let relu = act == Some(Activation::Relu);
    if let (true, Some(bias)) = (act.is_none() || relu, b.as_slice()) {
        let o = out.view_mut();
        let fused = if after_relu {
            gemm::fused_dense_after_relu(input, w, Some(bias), relu, o)
        } else {
            gemm::fused_dense(input, w, Some(bias), relu, o)
        };
        if fused {
            return;
        }
    }
    gemm::gemm(input, w, out.view_mut(), false);
    add_bias_activate(out, b, act);
}

/// `out = act(out + b)` per row, in one pass (`act` None: the bias only).
pub(crate) fn add_bias_activate<T: Real>(
    out: ArrayViewMut2<T>,
    b: ArrayView1<T>,
    act: Option<Activation>,
) {
    let zero = T::zero();
    match act {
        None => bias_map(out, b, |v| v),
        Some(Activation::Relu) => bias_map(out, b, |v| if v > zero { v } else { zero }),
        Some(Activation::Tanh) => bias_map(out, b, |v| v.tanh()),
        Some(Activation::LeakyRelu(slope)) => {
            let slope = T::of(slope);
            bias_map(out, b, |v| if v > zero { v } else { v * slope })
        }
        Some(Activation::Elu(alpha)) => {
            let alpha = T::of(alpha);
            bias_map(out, b, |v| if v > zero { v } else { alpha * v.exp_m1() })
        }
    }
}

/// `out[i, j] = f(out[i, j] + b[j])`.
fn bias_map<T: Real>(out: ArrayViewMut2<T>, b: ArrayView1<T>, f: impl Fn(T) -> T) {
    simd(
        #[inline(always)]
        || bias_map_body(out, b, f),
    )
}

#[inline(always)]
fn bias_map_body<T: Real>(mut out: ArrayViewMut2<T>, b: ArrayView1<T>, f: impl Fn(T) -> T) {
    match b.as_slice() {
        Some(bias) => {
            for mut row in out.rows_mut() {
                match row.as_slice_mut() {
                    Some(r) => r.iter_mut().zip(bias).for_each(|(v, &b)| *v = f(*v + b)),
                    None => row.iter_mut().zip(bias).for_each(|(v, &b)| *v = f(*v + b)),
                }
            }
        }
        None => Zip::from(&mut out).and_broadcast(b).for_each(|v, &b| *v = f(*v + b)),
    }
}

impl<T: Real> Params<T> for Mlp<T> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &[usize], &[T])) {
        for (i, l) in self.layers.iter().enumerate() {
            let w = l.w.as_standard_layout();
            f(join(prefix, &format!("{i}.weight")), w.shape(), standard_slice(&w));
            let b = l.b.as_standard_layout();
            f(join(prefix, &format!("{i}.bias")), b.shape(), standard_slice(&b));
        }
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &[usize], &mut [T])) {
        for (i, l) in self.layers_mut().iter_mut().enumerate() {
            let shape = [l.w.nrows(), l.w.ncols()];
            f(join(prefix, &format!("{i}.weight")), &shape, standard_slice_mut(&mut l.w));
            let shape = [l.b.len()];
            f(join(prefix, &format!("{i}.bias")), &shape, standard_slice_mut(&mut l.b));
        }
    }
}

/// The elements of an array known to be in standard layout, in logical order.
pub(crate) fn standard_slice<T, S, D>(a: &ndarray::ArrayBase<S, D>) -> &[T]
where
    S: ndarray::Data<Elem = T>,
    D: Dimension,
{
    debug_assert!(a.is_standard_layout());
    a.as_slice().unwrap_or(&[])
}

/// The elements of an owned array in logical order, first converting it to standard layout
/// if a caller left it strided (the fields are public).
pub(crate) fn standard_slice_mut<T: Clone, D: Dimension>(a: &mut Array<T, D>) -> &mut [T] {
    if !a.is_standard_layout() {
        *a = a.as_standard_layout().into_owned();
    }
    a.as_slice_mut().unwrap_or(&mut [])
}

/// Makes `buf` an `n x m` matrix, reallocating only if it never held `n * m` elements (row
/// tiles of a batch differ by a row, and must not reallocate every tile). The contents are
/// unspecified afterwards.
pub(crate) fn resize<T: Real>(buf: &mut Array2<T>, n: usize, m: usize) {
    if buf.dim() == (n, m) {
        return;
    }
    let (mut v, offset) = std::mem::take(buf).into_raw_vec_and_offset();
    if offset.unwrap_or(0) != 0 {
        v.clear(); // a caller-made array starting inside its buffer: not worth reusing
    }
    v.resize(n * m, T::zero());
    *buf = Array2::from_shape_vec((n, m), v).expect("resize: n * m elements");
}

/// Makes `bufs` one `n x w` matrix per width, reallocating only those whose shape differs.
fn resize_all<T: Real>(
    bufs: &mut Vec<Array2<T>>,
    n: usize,
    widths: impl ExactSizeIterator<Item = usize>,
) {
    bufs.resize_with(widths.len(), || Array2::zeros((0, 0)));
    for (buf, w) in bufs.iter_mut().zip(widths) {
        resize(buf, n, w);
    }
}

#[cfg(test)]
mod tests;
