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
}

impl Base {
    pub fn describe(&self) -> &'static str {
        match self {
            Base::StdNormal => "normal",
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
        self.sizes.windows(2).fold(0usize, |n, w| n.saturating_add(w[0].saturating_mul(w[1]).saturating_add(w[1])))
    }
}

/// What a layer does, with its physical column sets.
#[derive(Clone, Debug, PartialEq)]
pub enum LayerKind {
    /// RealNVP: `z_t = x_t * exp(s) + b`, `(b, a) = net(x_c)`, `s = a / (1 + |a| / bound)`.
    AffineCoupling { cond: Vec<usize>, trans: Vec<usize>, net: Mlp, bound: f64 },
    /// NICE: `z_t = x_t + net(x_c)`.
    AdditiveCoupling { cond: Vec<usize>, trans: Vec<usize>, net: Mlp },
    /// NICE's final diagonal scaling, as the notes write it: `x = exp(log_scale) * z`;
    /// `cols[i]` holds logical dimension i.
    Rescale { cols: Vec<usize> },
    /// Glow's actnorm: `z = (x - loc) * exp(-log_scale)`, initialised from data.
    ActNorm { cols: Vec<usize> },
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
            LayerKind::AffineCoupling { net, .. } | LayerKind::AdditiveCoupling { net, .. } => {
                net.num_params()
            }
            LayerKind::Rescale { cols } => cols.len(),
            LayerKind::ActNorm { cols } => 2 * cols.len(),
            LayerKind::Permute { .. } => 0,
        }
    }
    pub fn jacobian(&self) -> Jacobian {
        match &self.kind {
            LayerKind::AffineCoupling { .. } | LayerKind::AdditiveCoupling { .. } => {
                Jacobian::BlockTriangular
            }
            LayerKind::Rescale { .. } | LayerKind::ActNorm { .. } => Jacobian::Diagonal,
            LayerKind::Permute { .. } => Jacobian::Permutation,
        }
    }
    /// (normalizing direction, generative direction).
    pub fn passes(&self) -> (Pass, Pass) {
        (Pass::Parallel, Pass::Parallel)
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
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct Program {
    pub flows: Vec<Flow>,
}

impl Flow {
    pub fn num_params(&self) -> usize {
        self.layers.iter().fold(0usize, |n, l| n.saturating_add(l.num_params()))
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
        let _ = writeln!(s, "flow {} event {:?} dim {} dtype {} base {}", self.name, self.event, self.dim, self.dtype.name(), self.base.describe());
        for (i, l) in self.layers.iter().enumerate() {
            let _ = writeln!(s, "  {i}: {}", describe_kind(&l.kind));
        }
        let _ = writeln!(s, "  z_cols {:?}", self.z_cols);
        s
    }

    /// The IR dump that `flowspec check --ir` prints and the snapshot tests record.
    pub fn dump(&self) -> String {
        let mut s = String::new();
        for d in &self.docs {
            let _ = writeln!(s, "/// {d}");
        }
        s.push_str(&self.canonical());
        let _ = writeln!(s, "  params {}  fingerprint {:016x}", self.num_params(), self.fingerprint());
        s
    }
}

fn describe_kind(k: &LayerKind) -> String {
    match k {
        LayerKind::AffineCoupling { cond, trans, net, bound } => {
            format!("affine_coupling cond {cond:?} trans {trans:?} net {} bound {bound}", describe_mlp(net))
        }
        LayerKind::AdditiveCoupling { cond, trans, net } => {
            format!("additive_coupling cond {cond:?} trans {trans:?} net {}", describe_mlp(net))
        }
        LayerKind::Rescale { cols } => format!("rescale cols {cols:?}"),
        LayerKind::ActNorm { cols } => format!("actnorm cols {cols:?}"),
        LayerKind::Permute { order, how } => format!("permute {how:?} order {order:?} (folded)"),
    }
}

fn describe_mlp(m: &Mlp) -> String {
    format!("mlp {:?} {:?}", m.sizes, m.act)
}
