//! The interpreter: runs an [`ir::Flow`] over the runtime's kernels without generating code.
//! The command-line tool trains and samples through it, so it must agree with generated code
//! exactly: the same parameter types, the same initialisation from a seed (one RNG, layers in
//! spec order), the same tensor names and canonical order, and the same kernels.

mod library;
mod step;

use crate::ir::{self, LayerKind};
use flowspec_runtime::layers::{self, ActNorm, Made};
use flowspec_runtime::nn::{self, Mlp};
use flowspec_runtime::transform::ElementParams;
use flowspec_runtime::{par, rng_from_seed, Flow, Real};
use library::{BaseP, LinearP};
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis};
use step::{Dir, Scratch, StepTape};

/// One executed layer with its parameters and physical column sets (permutations are folded
/// into these sets by the compiler and have no step).
#[derive(Clone, Debug)]
enum Step<T> {
    Affine { net: Mlp<T>, cond: Vec<usize>, trans: Vec<usize>, bound: T },
    Additive { net: Mlp<T>, cond: Vec<usize>, trans: Vec<usize> },
    ActNorm { p: ActNorm<T>, cols: Vec<usize> },
    Elementwise { tr: ir::Transformer, p: ElementParams<T>, cols: Vec<usize> },
    TrCoupling { tr: ir::Transformer, net: Mlp<T>, cond: Vec<usize>, trans: Vec<usize> },
    Linear { p: LinearP<T>, cols: Vec<usize> },
    Ar { ar: ir::ArKind, tr: ir::Transformer, made: Made<T>, cols: Vec<usize> },
}

/// An executed layer and its tensor-name prefix (`layer{i}` with i the index among all spec
/// layers, permutations included, as generated code names them).
#[derive(Clone, Debug)]
struct Exec<T> {
    prefix: String,
    step: Step<T>,
    /// Tensors the spec fixes: written at construction, skipped by the visitors.
    fixed: Vec<ir::FixedTensor>,
}

/// A flow interpreted from its IR, over scalars `T`.
#[derive(Clone, Debug)]
pub struct Interp<T> {
    name: String,
    dim: usize,
    fingerprint: u64,
    z_cols: Vec<usize>,
    logical: Vec<usize>,
    execs: Vec<Exec<T>>,
    base: BaseP<T>,
    base_fixed: Vec<ir::FixedTensor>,
    dequantize: bool,
}

/// What a backward pass keeps of its forward pass: each executed layer's input and tape, in
/// the order the layers ran.
type Recording<T> = Vec<(Array2<T>, StepTape<T>)>;

/// One layer of a backward pass's forward pass: its input is kept and its buffers go on a
/// fresh tape that only this pass's backward reads.
fn record_step<T: Real>(
    e: &Exec<T>,
    dir: Dir,
    h: &mut Array2<T>,
    ld: &mut Array1<T>,
    rec: &mut Recording<T>,
) {
    let (x_in, mut tape) = (h.clone(), StepTape::default());
    e.step.record(dir, h, ld, &mut tape);
    rec.push((x_in, tape));
}

fn activation(a: ir::Activation) -> nn::Activation {
    match a {
        ir::Activation::Relu => nn::Activation::Relu,
        ir::Activation::Tanh => nn::Activation::Tanh,
        ir::Activation::LeakyRelu(s) => nn::Activation::LeakyRelu(s),
        ir::Activation::Elu(a) => nn::Activation::Elu(a),
    }
}

impl<T: Real> Interp<T> {
    /// Builds the flow with parameters initialised as generated code does for `seed`:
    /// couplings draw from one shared RNG in spec order (last layer zero, so the flow starts
    /// as the identity); actnorm and rescale start at zero and draw nothing.
    pub fn new(flow: &ir::Flow, seed: u64) -> Self {
        let mut rng = rng_from_seed(seed);
        let mut execs = Vec::new();
        for (i, layer) in flow.layers.iter().enumerate() {
            let prefix = format!("layer{i}");
            let step = match &layer.kind {
                LayerKind::AffineCoupling { cond, trans, net, bound } => Step::Affine {
                    net: Mlp::new(&net.sizes, activation(net.act), &mut rng, true),
                    cond: cond.clone(),
                    trans: trans.clone(),
                    bound: T::of(*bound),
                },
                LayerKind::AdditiveCoupling { cond, trans, net } => Step::Additive {
                    net: Mlp::new(&net.sizes, activation(net.act), &mut rng, true),
                    cond: cond.clone(),
                    trans: trans.clone(),
                },
                LayerKind::ActNorm { cols, .. } => {
                    Step::ActNorm { p: ActNorm::zeros(cols.len()), cols: cols.clone() }
                }
                LayerKind::Elementwise { tr, cols, params } => Step::Elementwise {
                    tr: *tr,
                    p: library::element_params(params, cols.len()),
                    cols: cols.clone(),
                },
                LayerKind::TransformerCoupling { tr, cond, trans, net } => Step::TrCoupling {
                    tr: *tr,
                    net: Mlp::new(&net.sizes, activation(net.act), &mut rng, true),
                    cond: cond.clone(),
                    trans: trans.clone(),
                },
                LayerKind::Linear { kind, cols, .. } => {
                    Step::Linear { p: LinearP::new(kind, cols.len(), i), cols: cols.clone() }
                }
                LayerKind::Autoregressive { ar, tr, cols, made } => Step::Ar {
                    ar: *ar,
                    tr: *tr,
                    made: new_made(made, tr.n_params(), &mut rng),
                    cols: cols.clone(),
                },
                LayerKind::Permute { .. } => continue,
            };
            let mut exec = Exec { prefix, step, fixed: layer.fixed().to_vec() };
            library::apply_fixed(exec.step.params_mut(), &exec.fixed);
            execs.push(exec);
        }
        Self {
            name: flow.name.clone(),
            dim: flow.dim,
            fingerprint: flow.fingerprint(),
            z_cols: flow.z_cols.clone(),
            logical: (0..flow.dim).collect(),
            execs,
            base: {
                let mut b = BaseP::new(&flow.base, flow.dim, &mut rng);
                if let Some(p) = b.params_mut() {
                    library::apply_fixed(p, flow.base.fixed());
                }
                b
            },
            base_fixed: flow.base.fixed().to_vec(),
            dequantize: flow.dequantize,
        }
    }

    /// Runs every executed layer on physical columns, in place: in spec order for `Inverse`,
    /// reversed for `Forward`. Rows are independent, so a large batch runs on two threads in
    /// row tiles, each part through all layers ([`par::map_rows`]).
    fn run_rows(&self, dir: Dir, h: &mut Array2<T>, ld: &mut Array1<T>) {
        par::map_rows(h.view_mut(), ld.view_mut(), Scratch::default, |s, mut h, mut ld| {
            let mut one = |e: &Exec<T>| e.step.run(dir, h.view_mut(), ld.view_mut(), s);
            match dir {
                Dir::Inverse => self.execs.iter().for_each(&mut one),
                Dir::Forward => self.execs.iter().rev().for_each(&mut one),
            }
        });
    }

    /// The normalizing direction on physical columns, in place, recording each layer's input
    /// and tape (for the backward pass).
    fn run_inverse_recorded(&self, h: &mut Array2<T>, ld: &mut Array1<T>, rec: &mut Recording<T>) {
        for e in &self.execs {
            record_step(e, Dir::Inverse, h, ld, rec);
        }
    }

    /// Physical columns from logical `z`: `h[:, z_cols[i]] = z[:, i]`.
    fn scatter(&self, z: ArrayView2<T>) -> Array2<T> {
        let mut h = Array2::zeros(z.raw_dim());
        for (i, &c) in self.z_cols.iter().enumerate() {
            h.column_mut(c).assign(&z.column(i));
        }
        h
    }

    /// The generative direction from logical `z`, recording each layer's input and tape (in
    /// the order the layers run: last spec layer first).
    fn run_forward_recorded(&self, z: ArrayView2<T>, rec: &mut Recording<T>) {
        let (mut h, mut ld) = (self.scatter(z), Array1::zeros(z.nrows()));
        for e in self.execs.iter().rev() {
            record_step(e, Dir::Forward, &mut h, &mut ld, rec);
        }
    }

    /// A zeroed gradient accumulator for the base's parameters.
    fn zero_base(&self) -> BaseP<T> {
        let mut gbase = self.base.clone();
        if let Some(p) = gbase.params_mut() {
            p.zero();
        }
        gbase
    }

    /// Zeroed gradient steps, one per executed layer.
    fn zero_grads(&self) -> Vec<Step<T>> {
        let mut grads: Vec<Step<T>> = self.execs.iter().map(|e| e.step.clone()).collect();
        grads.iter_mut().for_each(|s| s.params_mut().zero());
        grads
    }

    /// Layer gradients and the base's flat in the canonical order, fixed tensors
    /// skipped as the parameter visitors skip them.
    fn flatten(&self, grads: &[Step<T>], gbase: &BaseP<T>) -> Vec<T> {
        let mut flat = Vec::with_capacity(self.num_params());
        for (gs, e) in grads.iter().zip(&self.execs) {
            gs.params().visit("", &mut |n, _, d| {
                if !library::is_fixed(&n, "", &e.fixed) {
                    flat.extend_from_slice(d)
                }
            });
        }
        if let Some(p) = gbase.params() {
            p.visit("", &mut |n, _, d| {
                if !library::is_fixed(&n, "", &self.base_fixed) {
                    flat.extend_from_slice(d)
                }
            });
        }
        flat
    }

    /// The normalizing backward pass for the loss `-inv_n * sum(log p)`: (loss, gradient with
    /// respect to x, log p per row, flat parameter gradient).
    fn backward(&self, x: ArrayView2<T>, inv_n: T) -> (T, Array2<T>, Array1<T>, Vec<T>) {
        let n = x.nrows();
        let mut h = x.to_owned();
        let mut ld = Array1::zeros(n);
        let mut rec = Vec::with_capacity(self.execs.len());
        self.run_inverse_recorded(&mut h, &mut ld, &mut rec);
        // The base reads z in place through z_cols, as generated code does.
        let lp = self.base.log_prob(&self.z_cols, h.view()) + &ld;
        let loss = -lp.sum() * inv_n;
        let mut g = Array2::zeros(h.raw_dim());
        let mut gbase = self.zero_base();
        self.base.nll_grad(&self.z_cols, h.view(), inv_n, g.view_mut(), &mut gbase);
        let dld = Array1::from_elem(n, -inv_n);
        let mut grads = self.zero_grads();
        for ((e, (x_in, t)), gs) in self.execs.iter().zip(&mut rec).zip(&mut grads).rev() {
            e.step.backward(Dir::Inverse, x_in, &mut g, &dld, gs, t);
        }
        (loss, g, lp, self.flatten(&grads, &gbase))
    }

    /// z[:, i] = h[:, z_cols[i]]: logical order for the base distribution.
    fn gather(&self, h: &Array2<T>) -> Array2<T> {
        // select along columns yields column-major memory; callers expect row-major rows.
        h.select(Axis(1), &self.z_cols).as_standard_layout().into_owned()
    }
}

impl<T: Real> Flow for Interp<T> {
    type Real = T;

    fn name(&self) -> &str {
        &self.name
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    fn visit_params(&self, f: &mut dyn FnMut(String, &[usize], &[T])) {
        for e in &self.execs {
            let prefix = e.step.tensor_prefix(&e.prefix);
            let fixed = &e.fixed;
            e.step.params().visit(&prefix, &mut |n, s, d| {
                if !library::is_fixed(&n, &prefix, fixed) {
                    f(n, s, d)
                }
            });
        }
        if let Some(p) = self.base.params() {
            let fixed = &self.base_fixed;
            p.visit("base", &mut |n, s, d| {
                if !library::is_fixed(&n, "base", fixed) {
                    f(n, s, d)
                }
            });
        }
    }

    fn visit_params_mut(&mut self, f: &mut dyn FnMut(String, &[usize], &mut [T])) {
        for e in &mut self.execs {
            let prefix = e.step.tensor_prefix(&e.prefix);
            let fixed = &e.fixed;
            e.step.params_mut().visit_mut(&prefix, &mut |n, s, d| {
                if !library::is_fixed(&n, &prefix, fixed) {
                    f(n, s, d)
                }
            });
        }
        let fixed = &self.base_fixed;
        if let Some(p) = self.base.params_mut() {
            p.visit_mut("base", &mut |n, s, d| {
                if !library::is_fixed(&n, "base", fixed) {
                    f(n, s, d)
                }
            });
        }
    }

    fn inverse(&self, x: ArrayView2<T>) -> (Array2<T>, Array1<T>) {
        let mut h = x.to_owned();
        let mut ld = Array1::zeros(x.nrows());
        self.run_rows(Dir::Inverse, &mut h, &mut ld);
        (self.gather(&h), ld)
    }

    fn forward(&self, z: ArrayView2<T>) -> (Array2<T>, Array1<T>) {
        let (mut h, mut ld) = (self.scatter(z), Array1::zeros(z.nrows()));
        self.run_rows(Dir::Forward, &mut h, &mut ld);
        (h, ld)
    }

    fn base_log_prob(&self, z: ArrayView2<T>) -> Array1<T> {
        self.base.log_prob(&self.logical, z)
    }

    fn sample_base(&self, n: usize, rng: &mut dyn rand::Rng) -> Array2<T> {
        self.base.sample(n, self.dim, rng)
    }

    fn dequantize(&self) -> bool {
        self.dequantize
    }

    /// As the generated code: two halves on two threads from 128 rows (`par::split_step`).
    fn nll_and_grad(&self, x: ArrayView2<T>) -> (T, Vec<T>) {
        par::split_step(x, |x, inv_n| {
            let (loss, _, _, grad) = self.backward(x, inv_n);
            (loss, grad)
        })
    }

    fn log_prob_grad_x(&self, x: ArrayView2<T>) -> (Array1<T>, Array2<T>) {
        let (_, g, lp, _) = self.backward(x, -T::one());
        (lp, g)
    }

    fn forward_vjp(
        &self,
        z: ArrayView2<T>,
        gx: ArrayView2<T>,
        gld: ArrayView1<T>,
    ) -> (Vec<T>, Array2<T>) {
        let mut rec = Vec::with_capacity(self.execs.len());
        self.run_forward_recorded(z, &mut rec);
        let (mut g, dld) = (gx.to_owned(), gld.to_owned());
        let mut grads = self.zero_grads();
        // `rec` runs from the last layer to the first; the backward pass goes the other way.
        let steps = self.execs.iter().zip(&mut grads).rev().zip(&mut rec).rev();
        for ((e, gs), (z_in, t)) in steps {
            e.step.backward(Dir::Forward, z_in, &mut g, &dld, gs, t);
        }
        (self.flatten(&grads, &self.zero_base()), self.gather(&g))
    }

    fn data_init(&mut self, x: ArrayView2<T>) {
        let mut h = x.to_owned();
        let mut ld = Array1::zeros(x.nrows());
        let mut s = Scratch::default();
        for e in &mut self.execs {
            if let Step::ActNorm { p, cols } = &mut e.step {
                layers::actnorm_data_init(p, cols, h.view());
                library::apply_fixed(p, &e.fixed);
            }
            e.step.run(Dir::Inverse, h.view_mut(), ld.view_mut(), &mut s);
        }
    }
}

/// A MADE with the compiler's degrees, drawing its weights from the flow's RNG as generated
/// code does (last layer zero).
fn new_made<T: Real>(
    made: &ir::Made,
    n_params: usize,
    rng: &mut flowspec_runtime::FlowRng,
) -> Made<T> {
    let hidden: Vec<&[usize]> = made.hidden_deg.iter().map(Vec::as_slice).collect();
    let act = activation(made.act);
    Made::new(&made.sizes, act, &made.in_deg, &hidden, n_params, rng, true)
}

/// An interpreted flow of either dtype, as the spec chose it.
#[derive(Clone, Debug)]
pub enum AnyInterp {
    F32(Interp<f32>),
    F64(Interp<f64>),
}

impl AnyInterp {
    /// Builds the interpreter in the flow's declared dtype.
    pub fn new(flow: &ir::Flow, seed: u64) -> Self {
        match flow.dtype {
            ir::Dtype::F32 => AnyInterp::F32(Interp::new(flow, seed)),
            ir::Dtype::F64 => AnyInterp::F64(Interp::new(flow, seed)),
        }
    }
}

#[cfg(test)]
mod tests;
