//! The typed IR: what `check` proves and codegen and the interpreter consume. Everything here
//! is resolved: every dimension is a number, every mask a pair of physical column sets, every
//! permutation folded into those sets. There are no `Option`s for what the checks guarantee.
//!
//! The state of a flow is an `n x D` batch. Permutations never move data: the compiler tracks,
//! for each logical dimension, the physical column that holds it, and a layer sees only
//! physical column numbers. The base distribution sees logical order, restored by one gather
//! (`FlowIr::z_cols`) at the end of the normalizing direction.
//!
//! Planned but not yet produced by `check` (the shapes are here so later layers fit): image
//! events (`event: Vec<usize>` of any rank), non-triangular log-dets and iterative inverses
//! (`Jacobian::Dense`, `Inverse::Iterative`), and multi-scale splits (a layer that drops
//! columns from the active set and sends them to the base).

use crate::span::Span;
use std::fmt::Write;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F64,
}

impl Dtype {
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F64 => "f64",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Base {
    StdNormal,
    /// The standard logistic per dimension (NICE).
    Logistic,
    /// Uniform on `[a, b]^D`.
    Uniform {
        a: f64,
        b: f64,
    },
    /// A normal with learnable per-dimension location and log-scale.
    DiagNormal {
        fixed: Vec<FixedTensor>,
    },
    /// A mixture of `k` diagonal Gaussians with learnable weights, means and scales.
    Mixture {
        k: usize,
        fixed: Vec<FixedTensor>,
    },
}

/// A parameter tensor the spec fixes (by its runtime name, e.g. `loc`), row-major values.
/// Fixed tensors are part of the architecture: in the fingerprint, not in the weights.
#[derive(Clone, Debug, PartialEq)]
pub struct FixedTensor {
    pub name: &'static str,
    pub values: Vec<f64>,
}

fn fixed_count(fixed: &[FixedTensor]) -> usize {
    fixed.iter().map(|t| t.values.len()).sum()
}

impl Base {
    pub fn describe(&self) -> String {
        match self {
            Base::StdNormal => "normal".into(),
            Base::Logistic => "logistic".into(),
            Base::Uniform { a, b } => format!("uniform({a}, {b})"),
            Base::DiagNormal { fixed } => format!("diag_normal{}", describe_fixed(fixed)),
            Base::Mixture { k, fixed } => format!("mixture(k = {k}){}", describe_fixed(fixed)),
        }
    }
    /// The tensors the spec fixes.
    pub fn fixed(&self) -> &[FixedTensor] {
        match self {
            Base::DiagNormal { fixed } | Base::Mixture { fixed, .. } => fixed,
            _ => &[],
        }
    }
    pub fn num_params(&self, dim: usize) -> usize {
        match self {
            Base::StdNormal | Base::Logistic | Base::Uniform { .. } => 0,
            Base::DiagNormal { fixed } => 2 * dim - fixed_count(fixed),
            Base::Mixture { k, fixed } => k + 2 * k * dim - fixed_count(fixed),
        }
    }
}

/// A scalar monotone map `t` with per-element raw parameters (all-zero raw parameters give
/// the identity). Elementwise layers apply it generatively (`x = t(z)`), couplings in the
/// normalizing direction (`z_t = t(x_t; net(x_c))`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Transformer {
    /// `t(x) = x * exp(log_scale) + shift`.
    Affine,
    LeakyRelu {
        slope: f64,
    },
    /// `t(z) = (sigmoid(z) - alpha) / (1 - 2 alpha)`: onto (0, 1).
    Sigmoid {
        alpha: f64,
    },
    /// `t(z) = logit(alpha + (1 - 2 alpha) z)`: from [0, 1].
    Logit {
        alpha: f64,
    },
    Exp,
    Log,
    /// The notes' piecewise-linear map of [0, 1] with `bins` equal bins.
    PiecewiseLinear {
        bins: usize,
    },
    /// Rational-quadratic spline on [-bound, bound], identity outside.
    RqSpline {
        bins: usize,
        bound: f64,
    },
    /// The affine transformer of MAF / IAF layers: `t(x) = x * exp(s) + shift` with the raw
    /// log-scale `a` soft-clamped, `s = a / (1 + |a| / bound)` (as zuko does).
    SoftAffine {
        bound: f64,
    },
}

impl Transformer {
    /// The raw parameter tensors per element: (name, count).
    pub fn tensors(&self) -> Vec<(&'static str, usize)> {
        match *self {
            Transformer::Affine | Transformer::SoftAffine { .. } => {
                vec![("shift", 1), ("log_scale", 1)]
            }
            Transformer::PiecewiseLinear { bins } => vec![("logits", bins)],
            Transformer::RqSpline { bins, .. } => {
                vec![("widths", bins), ("heights", bins), ("derivatives", bins - 1)]
            }
            _ => vec![],
        }
    }
    pub fn n_params(&self) -> usize {
        self.tensors().iter().map(|t| t.1).sum()
    }
}

/// One raw parameter tensor of an elementwise layer, `[D, k]`, learned or fixed by the spec.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamTensor {
    pub name: &'static str,
    pub k: usize,
    /// Row-major `D x k` values when the spec fixes them.
    pub fixed: Option<Vec<f64>>,
}

/// Linear layers `x = W z + b` with structured `W`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LinearKind {
    LowerTriangular,
    /// Glow's `P L U`, initialised from a random rotation drawn with `seed`.
    Lu {
        seed: u64,
    },
    /// A product of `reflections` Householder reflections, drawn with `seed`.
    Householder {
        reflections: usize,
        seed: u64,
    },
}

impl LinearKind {
    pub fn num_params(&self, d: usize) -> usize {
        match *self {
            LinearKind::LowerTriangular => d * d + 2 * d,
            LinearKind::Lu { .. } => 2 * d * d + 2 * d,
            LinearKind::Householder { reflections, .. } => reflections * d + d,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    Relu,
    Tanh,
    LeakyRelu(f64),
    Elu(f64),
}

/// A fully connected conditioner: `sizes = [in, hidden.., out]`, `act` between layers.
#[derive(Clone, Debug, PartialEq)]
pub struct Mlp {
    pub sizes: Vec<usize>,
    pub act: Activation,
}

impl Mlp {
    pub fn num_params(&self) -> usize {
        // Saturating: `check` rejects flows past `check::MAX_PARAMS`, whose counts may overflow.
        self.sizes
            .windows(2)
            .fold(0usize, |n, w| n.saturating_add(w[0].saturating_mul(w[1]).saturating_add(w[1])))
    }
}

/// The input ordering of a MADE conditioner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    Natural,
    Reversed,
    Random { seed: u64 },
}

/// A MADE conditioner (Germain et al. 2015): a masked MLP `sizes = [D, hidden.., D * P]`.
/// Input `k` has degree `in_deg[k]`; hidden units have nondecreasing degrees `hidden_deg[l]`,
/// so the units of one degree are contiguous (the sequential direction relies on it). Unit
/// `m` sees inputs of degree `<= m`, the outputs of input `k` see units of degree
/// `< in_deg[k]`: output `k` depends only on inputs of smaller degree.
#[derive(Clone, Debug, PartialEq)]
pub struct Made {
    pub sizes: Vec<usize>,
    pub act: Activation,
    pub order: Order,
    pub in_deg: Vec<usize>,
    pub hidden_deg: Vec<Vec<usize>>,
}

impl Made {
    /// Every dense entry is a stored parameter (masked ones included, as in zuko and
    /// nflows), so parameter counts match theirs.
    pub fn num_params(&self) -> usize {
        Mlp { sizes: self.sizes.clone(), act: self.act }.num_params()
    }
}

/// Which direction of an autoregressive layer is the one-pass (parallel) one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArKind {
    /// Masked autoregressive flow: `z_k = t(x_k; theta_k(x_<k))`, density in one pass,
    /// sampling sequential.
    Maf,
    /// Inverse autoregressive flow: `x_k = t(z_k; theta_k(z_<k))`, sampling in one pass,
    /// density sequential.
    Iaf,
}

/// What a layer does, with its physical column sets.
#[derive(Clone, Debug, PartialEq)]
pub enum LayerKind {
    /// RealNVP: `z_t = x_t * exp(s) + b`, `(b, a) = net(x_c)`, `s = a / (1 + |a| / bound)`.
    AffineCoupling { cond: Vec<usize>, trans: Vec<usize>, net: Mlp, bound: f64 },
    /// NICE: `z_t = x_t + net(x_c)`.
    AdditiveCoupling { cond: Vec<usize>, trans: Vec<usize>, net: Mlp },
    /// Glow's actnorm: `z = (x - loc) * exp(-log_scale)`, initialised from data.
    ActNorm { cols: Vec<usize>, fixed: Vec<FixedTensor> },
    /// An elementwise map `x = t(z)` on every dimension (`cols[i]` holds dimension i).
    Elementwise { tr: Transformer, cols: Vec<usize>, params: Vec<ParamTensor> },
    /// A coupling whose transformer is `tr`: `z_t = t(x_t; net(x_c))`, `tr.n_params()`
    /// conditioner outputs per transformed dimension.
    TransformerCoupling { tr: Transformer, cond: Vec<usize>, trans: Vec<usize>, net: Mlp },
    /// `x = W z + b`.
    Linear { kind: LinearKind, cols: Vec<usize>, fixed: Vec<FixedTensor> },
    /// A MAF or IAF layer over all dimensions (`cols[k]` holds MADE input k).
    Autoregressive { ar: ArKind, tr: Transformer, cols: Vec<usize>, made: Made },
    /// A permutation `z_i = x_order[i]` (logical), folded into the column sets of the layers
    /// after it: it costs nothing at run time and codegen emits nothing for it.
    Permute { order: Vec<usize>, how: PermuteHow },
}

#[derive(Clone, Debug, PartialEq)]
pub enum PermuteHow {
    Reverse,
    Random { seed: u64 },
    Explicit,
}

/// The structure of a layer's Jacobian, as `flowspec check` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jacobian {
    Diagonal,
    /// Triangular after ordering conditioning columns first (couplings).
    BlockTriangular,
    Triangular,
    Permutation,
    Dense,
}

/// How a direction is computed: in one parallel pass, sequentially, or iteratively.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    Parallel,
    Sequential,
    Iterative,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    pub kind: LayerKind,
    /// The layer's kind as written in the spec.
    pub label: &'static str,
    pub span: Span,
}

impl Layer {
    pub fn num_params(&self) -> usize {
        match &self.kind {
            LayerKind::AffineCoupling { net, .. }
            | LayerKind::AdditiveCoupling { net, .. }
            | LayerKind::TransformerCoupling { net, .. } => net.num_params(),
            LayerKind::Elementwise { cols, params, .. } => {
                params.iter().filter(|p| p.fixed.is_none()).map(|p| p.k * cols.len()).sum()
            }
            LayerKind::Linear { kind, cols, fixed } => {
                kind.num_params(cols.len()) - fixed_count(fixed)
            }
            LayerKind::ActNorm { cols, fixed } => 2 * cols.len() - fixed_count(fixed),
            LayerKind::Autoregressive { made, .. } => made.num_params(),
            LayerKind::Permute { .. } => 0,
        }
    }
    /// The parameter tensors the spec fixes.
    pub fn fixed(&self) -> &[FixedTensor] {
        match &self.kind {
            LayerKind::ActNorm { fixed, .. } | LayerKind::Linear { fixed, .. } => fixed,
            _ => &[],
        }
    }
    pub fn jacobian(&self) -> Jacobian {
        match &self.kind {
            LayerKind::AffineCoupling { .. }
            | LayerKind::AdditiveCoupling { .. }
            | LayerKind::TransformerCoupling { .. } => Jacobian::BlockTriangular,
            LayerKind::ActNorm { .. } | LayerKind::Elementwise { .. } => Jacobian::Diagonal,
            LayerKind::Linear { kind: LinearKind::LowerTriangular, .. }
            | LayerKind::Autoregressive { .. } => Jacobian::Triangular,
            LayerKind::Linear { .. } => Jacobian::Dense,
            LayerKind::Permute { .. } => Jacobian::Permutation,
        }
    }
    /// (normalizing direction, generative direction).
    pub fn passes(&self) -> (Pass, Pass) {
        match self.kind {
            LayerKind::Autoregressive { ar: ArKind::Maf, .. } => (Pass::Parallel, Pass::Sequential),
            LayerKind::Autoregressive { ar: ArKind::Iaf, .. } => (Pass::Sequential, Pass::Parallel),
            _ => (Pass::Parallel, Pass::Parallel),
        }
    }
    /// Whether the layer runs at all (permutations are folded away).
    pub fn is_executed(&self) -> bool {
        !matches!(self.kind, LayerKind::Permute { .. })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Flow {
    pub name: String,
    pub docs: Vec<String>,
    pub event: Vec<usize>,
    pub dim: usize,
    pub dtype: Dtype,
    pub base: Base,
    /// In the normalizing direction (data first).
    pub layers: Vec<Layer>,
    /// `z_cols[i]` is the physical column holding logical dimension i of z.
    pub z_cols: Vec<usize>,
    /// The data are integers to dequantize with U[0, 1) noise (the spec starts with
    /// `dequantize`).
    pub dequantize: bool,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct Program {
    pub flows: Vec<Flow>,
}

impl Flow {
    pub fn num_params(&self) -> usize {
        let layers = self.layers.iter().fold(0usize, |n, l| n.saturating_add(l.num_params()));
        layers.saturating_add(self.base.num_params(self.dim))
    }

    /// A 64-bit FNV-1a hash of the architecture (the canonical dump without docs), written
    /// into weights files so that weights of another architecture are refused.
    pub fn fingerprint(&self) -> u64 {
        let mut h: u64 = 0xcbf29ce484222325;
        for b in self.canonical().bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
        h
    }

    /// The architecture as text: name, shapes, dtype, base, layers with their column sets.
    pub fn canonical(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "flow {} event {:?} dim {} dtype {} base {}",
            self.name,
            self.event,
            self.dim,
            self.dtype.name(),
            self.base.describe()
        );
        for (i, l) in self.layers.iter().enumerate() {
            let _ = writeln!(s, "  {i}: {}", describe_kind(&l.kind));
        }
        let _ = writeln!(s, "  z_cols {:?}", self.z_cols);
        if self.dequantize {
            let _ = writeln!(s, "  dequantize");
        }
        s
    }

    /// The IR dump that `flowspec check --ir` prints and the snapshot tests record.
    pub fn dump(&self) -> String {
        let mut s = String::new();
        for d in &self.docs {
            let _ = writeln!(s, "/// {d}");
        }
        s.push_str(&self.canonical());
        let _ =
            writeln!(s, "  params {}  fingerprint {:016x}", self.num_params(), self.fingerprint());
        s
    }
}

fn describe_kind(k: &LayerKind) -> String {
    match k {
        LayerKind::AffineCoupling { cond, trans, net, bound } => {
            format!(
                "affine_coupling cond {cond:?} trans {trans:?} net {} bound {bound}",
                describe_mlp(net)
            )
        }
        LayerKind::AdditiveCoupling { cond, trans, net } => {
            format!("additive_coupling cond {cond:?} trans {trans:?} net {}", describe_mlp(net))
        }
        LayerKind::ActNorm { cols, fixed } => {
            format!("actnorm cols {cols:?}{}", describe_fixed(fixed))
        }
        LayerKind::Permute { order, how } => format!("permute {how:?} order {order:?} (folded)"),
        LayerKind::Elementwise { tr, cols, params } => {
            let ps: Vec<String> = params.iter().map(describe_param).collect();
            format!("elementwise {tr:?} cols {cols:?} params [{}]", ps.join(", "))
        }
        LayerKind::TransformerCoupling { tr, cond, trans, net } => {
            format!("coupling {tr:?} cond {cond:?} trans {trans:?} net {}", describe_mlp(net))
        }
        LayerKind::Linear { kind, cols, fixed } => {
            format!("linear {kind:?} cols {cols:?}{}", describe_fixed(fixed))
        }
        LayerKind::Autoregressive { ar, tr, cols, made } => {
            format!(
                "{ar:?} {tr:?} cols {cols:?} made {:?} {:?} {:?} in_deg {:?} hidden_deg {}",
                made.sizes,
                made.act,
                made.order,
                made.in_deg,
                describe_degrees(&made.hidden_deg)
            )
        }
    }
}

/// Hidden degrees as runs, `[1 x4, 2 x4, ..]`: the full lists are as long as the layers.
fn describe_degrees(layers: &[Vec<usize>]) -> String {
    let runs = layers.iter().map(|degs| {
        let mut out: Vec<String> = Vec::new();
        let mut i = 0;
        while i < degs.len() {
            let j = degs[i..].iter().take_while(|&&d| d == degs[i]).count();
            out.push(format!("{} x{j}", degs[i]));
            i += j;
        }
        format!("[{}]", out.join(", "))
    });
    format!("[{}]", runs.collect::<Vec<_>>().join(", "))
}

fn describe_fixed(fixed: &[FixedTensor]) -> String {
    fixed.iter().map(|t| format!(" fixed {} {:?}", t.name, t.values)).collect()
}

fn describe_param(p: &ParamTensor) -> String {
    match &p.fixed {
        None => format!("{} x{} learned", p.name, p.k),
        Some(v) if v.windows(2).all(|w| w[0] == w[1]) => {
            format!("{} x{} fixed all {:?}", p.name, p.k, v.first().copied().unwrap_or(0.0))
        }
        Some(v) => format!("{} x{} fixed {v:?}", p.name, p.k),
    }
}

fn describe_mlp(m: &Mlp) -> String {
    format!("mlp {:?} {:?}", m.sizes, m.act)
}
