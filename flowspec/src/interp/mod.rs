//! The interpreter: runs an [`ir::Flow`] over the runtime's kernels without generating code.
//! The command-line tool trains and samples through it, so it must agree with generated code
//! exactly: the same parameter types, the same initialisation from a seed (one RNG, layers in
//! spec order), the same tensor names and canonical order, and the same kernels.

mod library;

use crate::ir::{self, LayerKind};
use flowspec_runtime::layers::{self, ActNorm, CouplingScratch};
use flowspec_runtime::nn::{self, Mlp};
use flowspec_runtime::params::Params;
use flowspec_runtime::transform::{self as tf, ElementParams};
use flowspec_runtime::{rng_from_seed, Flow, Real};
use library::{with_tr, BaseP, LinearP};
use ndarray::{Array1, Array2, ArrayView2, Axis};

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

    /// Runs every executed layer in the normalizing direction on physical columns, in place.
    /// With `inputs`, each layer's input is recorded first (for the backward pass).
    fn run_inverse(
        &self,
        h: &mut Array2<T>,
        ld: &mut Array1<T>,
        mut inputs: Option<&mut Vec<Array2<T>>>,
    ) {
        let mut s = CouplingScratch::default();
        for e in &self.execs {
            if let Some(inputs) = inputs.as_deref_mut() {
                inputs.push(h.clone());
            }
            e.step.inverse(h, ld, &mut s);
        }
    }

    /// z[:, i] = h[:, z_cols[i]]: logical order for the base distribution.
    fn gather(&self, h: &Array2<T>) -> Array2<T> {
        // select along columns yields column-major memory; callers expect row-major rows.
        h.select(Axis(1), &self.z_cols).as_standard_layout().into_owned()
    }
}

impl<T: Real> Step<T> {
    fn inverse(&self, h: &mut Array2<T>, ld: &mut Array1<T>, s: &mut CouplingScratch<T>) {
        let (x, ld) = (h.view_mut(), ld.view_mut());
        match self {
            Step::Affine { net, cond, trans, bound } => {
                layers::affine_coupling_inverse(net, cond, trans, *bound, x, ld, s)
            }
            Step::Additive { net, cond, trans } => {
                layers::additive_coupling_inverse(net, cond, trans, x, ld, s)
            }
            Step::ActNorm { p, cols } => layers::actnorm_inverse(p, cols, x, ld),
            Step::Elementwise { tr, p, cols } => {
                with_tr!(tr, |t| tf::elementwise_inverse(&t, p, cols, x, ld))
            }
            Step::TrCoupling { tr, net, cond, trans } => {
                with_tr!(tr, |t| tf::transformer_coupling_inverse(&t, net, cond, trans, x, ld, s))
            }
            Step::Linear { p, cols } => p.inverse(cols, x, ld),
        }
    }

    fn forward(&self, h: &mut Array2<T>, ld: &mut Array1<T>, s: &mut CouplingScratch<T>) {
        let (x, ld) = (h.view_mut(), ld.view_mut());
        match self {
            Step::Affine { net, cond, trans, bound } => {
                layers::affine_coupling_forward(net, cond, trans, *bound, x, ld, s)
            }
            Step::Additive { net, cond, trans } => {
                layers::additive_coupling_forward(net, cond, trans, x, ld, s)
            }
            Step::ActNorm { p, cols } => layers::actnorm_forward(p, cols, x, ld),
            Step::Elementwise { tr, p, cols } => {
                with_tr!(tr, |t| tf::elementwise_forward(&t, p, cols, x, ld))
            }
            Step::TrCoupling { tr, net, cond, trans } => {
                with_tr!(tr, |t| tf::transformer_coupling_forward(&t, net, cond, trans, x, ld, s))
            }
            Step::Linear { p, cols } => p.forward(cols, x, ld),
        }
    }

    /// Backpropagates `g` (dL/d output, becomes dL/d input) and accumulates into `grad`, a
    /// step of the same kind and shape.
    fn backward(
        &self,
        x_in: &Array2<T>,
        g: &mut Array2<T>,
        dld: &Array1<T>,
        grad: &mut Step<T>,
        s: &mut CouplingScratch<T>,
    ) {
        let (x, gv, dv) = (x_in.view(), g.view_mut(), dld.view());
        match (self, grad) {
            (Step::Affine { net, cond, trans, bound }, Step::Affine { net: gn, .. }) => {
                layers::affine_coupling_backward(net, cond, trans, *bound, x, gv, dv, gn, s)
            }
            (Step::Additive { net, cond, trans }, Step::Additive { net: gn, .. }) => {
                layers::additive_coupling_backward(net, cond, trans, x, gv, dv, gn, s)
            }
            (Step::ActNorm { p, cols }, Step::ActNorm { p: gp, .. }) => {
                layers::actnorm_backward(p, cols, x, gv, dv, gp)
            }
            (Step::Elementwise { tr, p, cols }, Step::Elementwise { p: gp, .. }) => {
                with_tr!(tr, |t| tf::elementwise_backward(&t, p, cols, x, gv, dv, gp))
            }
            (Step::TrCoupling { tr, net, cond, trans }, Step::TrCoupling { net: gn, .. }) => {
                with_tr!(tr, |t| tf::transformer_coupling_backward(
                    &t, net, cond, trans, x, gv, dv, gn, s
                ))
            }
            (Step::Linear { p, cols }, Step::Linear { p: gp, .. }) => {
                p.backward(cols, x, gv, dv, gp)
            }
            _ => unreachable!("gradient steps are clones of the parameter steps"),
        }
    }

    fn params(&self) -> &dyn Params<T> {
        match self {
            Step::Affine { net, .. }
            | Step::Additive { net, .. }
            | Step::TrCoupling { net, .. } => net,
            Step::ActNorm { p, .. } => p,
            Step::Elementwise { p, .. } => p,
            Step::Linear { p, .. } => p.params(),
        }
    }

    fn params_mut(&mut self) -> &mut dyn Params<T> {
        match self {
            Step::Affine { net, .. }
            | Step::Additive { net, .. }
            | Step::TrCoupling { net, .. } => net,
            Step::ActNorm { p, .. } => p,
            Step::Elementwise { p, .. } => p,
            Step::Linear { p, .. } => p.params_mut(),
        }
    }

    /// The prefix of the step's tensors: couplings nest their network under `.net`.
    fn tensor_prefix(&self, prefix: &str) -> String {
        match self {
            Step::Affine { .. } | Step::Additive { .. } | Step::TrCoupling { .. } => {
                format!("{prefix}.net")
            }
            _ => prefix.to_string(),
        }
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
        self.run_inverse(&mut h, &mut ld, None);
        (self.gather(&h), ld)
    }

    fn forward(&self, z: ArrayView2<T>) -> (Array2<T>, Array1<T>) {
        let mut h = Array2::zeros(z.raw_dim());
        for (i, &c) in self.z_cols.iter().enumerate() {
            h.column_mut(c).assign(&z.column(i));
        }
        let mut ld = Array1::zeros(z.nrows());
        let mut s = CouplingScratch::default();
        for e in self.execs.iter().rev() {
            e.step.forward(&mut h, &mut ld, &mut s);
        }
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

    fn nll_and_grad(&self, x: ArrayView2<T>) -> (T, Vec<T>) {
        let n = x.nrows();
        let mut h = x.to_owned();
        let mut ld = Array1::zeros(n);
        let mut inputs = Vec::with_capacity(self.execs.len());
        self.run_inverse(&mut h, &mut ld, Some(&mut inputs));
        let inv_n = T::one() / T::of(n.max(1) as f64);
        // The base reads z in place through z_cols, as generated code does.
        let lp = self.base.log_prob(&self.z_cols, h.view()) + &ld;
        let loss = -lp.sum() * inv_n;
        let mut g = Array2::zeros(h.raw_dim());
        let mut gbase = self.base.clone();
        if let Some(p) = gbase.params_mut() {
            p.zero();
        }
        self.base.nll_grad(&self.z_cols, h.view(), inv_n, g.view_mut(), &mut gbase);
        let dld = Array1::from_elem(n, -inv_n);
        let mut grads: Vec<Step<T>> = self.execs.iter().map(|e| e.step.clone()).collect();
        grads.iter_mut().for_each(|s| s.params_mut().zero());
        let mut s = CouplingScratch::default();
        for ((e, x_in), gs) in self.execs.iter().zip(&inputs).zip(&mut grads).rev() {
            e.step.backward(x_in, &mut g, &dld, gs, &mut s);
        }
        let mut flat = Vec::with_capacity(self.num_params());
        // Fixed tensors have gradients too; like the parameter visitors, skip them.
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
        (loss, flat)
    }

    fn data_init(&mut self, x: ArrayView2<T>) {
        let mut h = x.to_owned();
        let mut ld = Array1::zeros(x.nrows());
        let mut s = CouplingScratch::default();
        for e in &mut self.execs {
            if let Step::ActNorm { p, cols } = &mut e.step {
                layers::actnorm_data_init(p, cols, h.view());
                library::apply_fixed(p, &e.fixed);
            }
            e.step.inverse(&mut h, &mut ld, &mut s);
        }
    }
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
mod tests {
    use super::*;
    use rand::RngExt;

    /// Every layer kind, with permutations between layers so column sets are non-trivial.
    const ALL_KINDS: &str = "
        flow All {
            event [4];
            dtype f64;
            actnorm;
            affine_coupling(mask = alternate, net = mlp([8], tanh));
            permute(seed = 3);
            additive_coupling(mask = halves, net = mlp([6], elu(0.5)));
            reverse;
            rescale;
            permute(order = [2, 0, 3, 1]);
            affine_coupling(mask = [1, 0, 0, 1], net = mlp([5, 5], leaky_relu(0.1)), bound = 3);
        }";

    fn all_kinds() -> ir::Flow {
        match crate::compile(ALL_KINDS) {
            Ok(mut p) => p.flows.remove(0),
            Err(ds) => panic!("{}", crate::diag::render_all(&ds, "test", ALL_KINDS)),
        }
    }

    /// Sets every parameter to a draw from U(-scale, scale), so no layer is the identity.
    fn perturb<F: Flow<Real = f64>>(flow: &mut F, seed: u64, scale: f64) {
        let mut rng = rng_from_seed(seed);
        flow.visit_params_mut(&mut |_, _, d| {
            d.iter_mut().for_each(|v| *v = rng.random_range(-scale..scale))
        });
    }

    fn data(n: usize, d: usize, seed: u64) -> Array2<f64> {
        let mut rng = rng_from_seed(seed);
        Array2::from_shape_simple_fn((n, d), || rng.random_range(-2.0..2.0))
    }

    #[test]
    fn names_and_counts_follow_the_ir() {
        let ir = all_kinds();
        let f = Interp::<f64>::new(&ir, 0);
        assert_eq!(f.num_params(), ir.num_params());
        let names: Vec<String> = f.param_specs().into_iter().map(|s| s.name).collect();
        assert_eq!(
            &names[..4],
            ["layer0.loc", "layer0.log_scale", "layer1.net.0.weight", "layer1.net.0.bias"]
        );
        assert!(names.contains(&"layer3.net.1.bias".to_string()));
        assert!(names.contains(&"layer5.log_scale".to_string()));
        assert_eq!(names.last().map(String::as_str), Some("layer7.net.2.bias"));
        assert_eq!(f.fingerprint(), ir.fingerprint());
    }

    #[test]
    fn same_seed_same_parameters() {
        let ir = all_kinds();
        let (a, b) = (Interp::<f64>::new(&ir, 5), Interp::<f64>::new(&ir, 5));
        assert_eq!(a.params(), b.params());
        assert_ne!(a.params(), Interp::<f64>::new(&ir, 6).params());
        let AnyInterp::F64(c) = AnyInterp::new(&ir, 5) else { panic!("the spec says f64") };
        assert_eq!(c.params(), a.params());
        // An f32 flow consumes the RNG identically and holds the same numbers, rounded.
        let rounded: Vec<f32> = a.params().iter().map(|&v| v as f32).collect();
        assert_eq!(Interp::<f32>::new(&ir, 5).params(), rounded);
    }

    #[test]
    fn starts_as_a_permutation() {
        let ir = all_kinds();
        let f = Interp::<f64>::new(&ir, 1);
        let x = data(5, 4, 2);
        let (z, ld) = f.inverse(x.view());
        assert!(ld.iter().all(|&v| v == 0.0));
        let mut sorted_z: Vec<f64> = z.iter().copied().collect();
        let mut sorted_x: Vec<f64> = x.iter().copied().collect();
        sorted_z.sort_by(f64::total_cmp);
        sorted_x.sort_by(f64::total_cmp);
        assert_eq!(sorted_z, sorted_x);
    }

    #[test]
    fn forward_inverts_inverse() {
        let ir = all_kinds();
        let mut f = Interp::<f64>::new(&ir, 1);
        perturb(&mut f, 9, 0.5);
        let x = data(11, 4, 3);
        let (z, ld_inv) = f.inverse(x.view());
        assert!(ld_inv.iter().any(|v| v.abs() > 1e-3), "the perturbed flow has a log-det");
        let (x2, ld_fwd) = f.forward(z.view());
        let err = (&x2 - &x).mapv(f64::abs).fold(0.0, |a: f64, &b| a.max(b));
        assert!(err < 1e-10, "round trip error {err}");
        let ld_err = (&ld_inv + &ld_fwd).mapv(f64::abs).fold(0.0, |a: f64, &b| a.max(b));
        assert!(ld_err < 1e-10, "log-det mismatch {ld_err}");
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let ir = all_kinds();
        let mut f = Interp::<f64>::new(&ir, 1);
        perturb(&mut f, 10, 0.4);
        let x = data(7, 4, 4);
        let (loss, grad) = f.nll_and_grad(x.view());
        assert!((loss - f.mean_nll(x.view())).abs() < 1e-12);
        // First, middle and last entry of every tensor: every layer kind is covered.
        let mut probes = Vec::new();
        let mut at = 0;
        f.visit_params(&mut |_, _, d| {
            probes.extend([at, at + d.len() / 2, at + d.len() - 1]);
            at += d.len();
        });
        let p0 = f.params();
        let h = 1e-6;
        for &i in &probes {
            let mut p = p0.clone();
            p[i] = p0[i] + h;
            f.set_params(&p);
            let up = f.mean_nll(x.view());
            p[i] = p0[i] - h;
            f.set_params(&p);
            let down = f.mean_nll(x.view());
            let fd = (up - down) / (2.0 * h);
            assert!(
                (fd - grad[i]).abs() < 1e-6 * (1.0 + fd.abs()),
                "param {i}: fd {fd} vs {}",
                grad[i]
            );
        }
    }

    #[test]
    fn data_init_standardizes_through_the_layers() {
        let src = "flow A { event [3]; affine_coupling(mask = halves); actnorm; }";
        let ir =
            crate::compile(src).map(|mut p| p.flows.remove(0)).unwrap_or_else(|_| panic!("spec"));
        let mut f = Interp::<f64>::new(&ir, 0);
        perturb(&mut f, 3, 0.5);
        let mut x = data(200, 3, 5);
        x.column_mut(2).mapv_inplace(|v| 3.0 * v + 7.0);
        f.data_init(x.view());
        let (z, _) = f.inverse(x.view());
        for c in 0..3 {
            let col = z.column(c);
            let mean = col.mean().unwrap_or(f64::NAN);
            let var = col.mapv(|v| v * v).mean().unwrap_or(f64::NAN) - mean * mean;
            assert!(mean.abs() < 1e-9 && (var - 1.0).abs() < 1e-4, "col {c}: {mean} {var}");
        }
    }
}
