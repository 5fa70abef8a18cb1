//! The interpreter's side of the layer library: the runtime's transformer, linear and base
//! types behind enums, so one `Step` can hold any of them. Generated code names the concrete
//! types directly; here a `match` per call picks the same monomorphised kernel.

use crate::codegen::layer_seed;
use crate::ir::{self, LinearKind};
use flowspec_runtime::base::{self, DiagNormal, Mixture};
use flowspec_runtime::layers::{self, Householder, LowerTriangular, Lu};
use flowspec_runtime::params::Params;
use flowspec_runtime::transform::{ElementParams, ParamTensor};
use flowspec_runtime::{rng_from_seed, FlowRng, Real};
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2};

/// Calls `$body` with `$t` bound to the runtime transformer for an `ir::Transformer`.
macro_rules! with_tr {
    ($tr:expr, |$t:ident| $body:expr) => {
        match *$tr {
            $crate::ir::Transformer::Affine => {
                let $t = tf::Affine {};
                $body
            }
            $crate::ir::Transformer::LeakyRelu { slope } => {
                let $t = tf::LeakyRelu { slope };
                $body
            }
            $crate::ir::Transformer::Sigmoid { alpha } => {
                let $t = tf::Sigmoid { alpha };
                $body
            }
            $crate::ir::Transformer::Logit { alpha } => {
                let $t = tf::Logit { alpha };
                $body
            }
            $crate::ir::Transformer::Exp => {
                let $t = tf::Exp {};
                $body
            }
            $crate::ir::Transformer::Log => {
                let $t = tf::Log {};
                $body
            }
            $crate::ir::Transformer::PiecewiseLinear { bins } => {
                let $t = tf::PiecewiseLinear { bins };
                $body
            }
            $crate::ir::Transformer::RqSpline { bins, bound } => {
                let $t = tf::RqSpline { bins, bound };
                $body
            }
            $crate::ir::Transformer::SoftAffine { bound } => {
                let $t = tf::SoftAffine { bound };
                $body
            }
        }
    };
}
pub(crate) use with_tr;

/// The parameters of an elementwise layer, as generated code builds them.
pub fn element_params<T: Real>(params: &[ir::ParamTensor], d: usize) -> ElementParams<T> {
    let tensors = params
        .iter()
        .map(|p| ParamTensor {
            name: p.name,
            value: match &p.fixed {
                Some(v) => Array2::from_shape_fn((d, p.k), |(i, j)| T::of(v[i * p.k + j])),
                None => Array2::zeros((d, p.k)),
            },
            trainable: p.fixed.is_none(),
        })
        .collect();
    ElementParams { tensors }
}

/// A linear layer's parameters.
#[derive(Clone, Debug)]
pub enum LinearP<T> {
    Lower(LowerTriangular<T>),
    Lu(Lu<T>),
    Householder(Householder<T>),
}

impl<T: Real> LinearP<T> {
    /// As generated code initialises them, for layer `i` of the spec.
    pub fn new(kind: &LinearKind, d: usize, i: usize) -> Self {
        match *kind {
            LinearKind::LowerTriangular => LinearP::Lower(LowerTriangular::zeros(d)),
            LinearKind::Lu { seed } => {
                LinearP::Lu(Lu::new(d, &mut rng_from_seed(layer_seed(seed, i))))
            }
            LinearKind::Householder { reflections, seed } => LinearP::Householder(
                Householder::new(d, reflections, &mut rng_from_seed(layer_seed(seed, i))),
            ),
        }
    }

    pub fn params(&self) -> &dyn Params<T> {
        match self {
            LinearP::Lower(p) => p,
            LinearP::Lu(p) => p,
            LinearP::Householder(p) => p,
        }
    }

    pub fn params_mut(&mut self) -> &mut dyn Params<T> {
        match self {
            LinearP::Lower(p) => p,
            LinearP::Lu(p) => p,
            LinearP::Householder(p) => p,
        }
    }

    pub fn inverse(&self, cols: &[usize], x: ArrayViewMut2<T>, ld: ArrayViewMut1<T>) {
        match self {
            LinearP::Lower(p) => layers::lower_triangular_inverse(p, cols, x, ld),
            LinearP::Lu(p) => layers::lu_inverse(p, cols, x, ld),
            LinearP::Householder(p) => layers::householder_inverse(p, cols, x, ld),
        }
    }

    pub fn forward(&self, cols: &[usize], x: ArrayViewMut2<T>, ld: ArrayViewMut1<T>) {
        match self {
            LinearP::Lower(p) => layers::lower_triangular_forward(p, cols, x, ld),
            LinearP::Lu(p) => layers::lu_forward(p, cols, x, ld),
            LinearP::Householder(p) => layers::householder_forward(p, cols, x, ld),
        }
    }

    pub fn backward(
        &self,
        cols: &[usize],
        x: ArrayView2<T>,
        g: ArrayViewMut2<T>,
        dld: ArrayView1<T>,
        grad: &mut LinearP<T>,
    ) {
        match (self, grad) {
            (LinearP::Lower(p), LinearP::Lower(gp)) => {
                layers::lower_triangular_backward(p, cols, x, g, dld, gp)
            }
            (LinearP::Lu(p), LinearP::Lu(gp)) => layers::lu_backward(p, cols, x, g, dld, gp),
            (LinearP::Householder(p), LinearP::Householder(gp)) => {
                layers::householder_backward(p, cols, x, g, dld, gp)
            }
            _ => unreachable!("gradient steps are clones of the parameter steps"),
        }
    }

    /// The backward pass of [`LinearP::forward`]; `z` is its input.
    pub fn forward_backward(
        &self,
        cols: &[usize],
        z: ArrayView2<T>,
        g: ArrayViewMut2<T>,
        dld: ArrayView1<T>,
        grad: &mut LinearP<T>,
    ) {
        match (self, grad) {
            (LinearP::Lower(p), LinearP::Lower(gp)) => {
                layers::lower_triangular_forward_backward(p, cols, z, g, dld, gp)
            }
            (LinearP::Lu(p), LinearP::Lu(gp)) => {
                layers::lu_forward_backward(p, cols, z, g, dld, gp)
            }
            (LinearP::Householder(p), LinearP::Householder(gp)) => {
                layers::householder_forward_backward(p, cols, z, g, dld, gp)
            }
            _ => unreachable!("gradient steps are clones of the parameter steps"),
        }
    }
}

/// The base distribution and its parameters.
#[derive(Clone, Debug)]
pub enum BaseP<T> {
    Std,
    Logistic,
    Uniform(f64, f64),
    Diag(DiagNormal<T>),
    Mix(Mixture<T>),
}

impl<T: Real> BaseP<T> {
    /// As generated code does: a mixture draws its means from the flow's RNG after the layers.
    pub fn new(b: &ir::Base, d: usize, rng: &mut FlowRng) -> Self {
        match *b {
            ir::Base::StdNormal => BaseP::Std,
            ir::Base::Logistic => BaseP::Logistic,
            ir::Base::Uniform { a, b } => BaseP::Uniform(a, b),
            ir::Base::DiagNormal { .. } => BaseP::Diag(DiagNormal::zeros(d)),
            ir::Base::Mixture { k, .. } => BaseP::Mix(Mixture::new(k, d, rng)),
        }
    }

    pub fn params_mut(&mut self) -> Option<&mut dyn Params<T>> {
        match self {
            BaseP::Diag(p) => Some(p),
            BaseP::Mix(p) => Some(p),
            _ => None,
        }
    }

    pub fn params(&self) -> Option<&dyn Params<T>> {
        match self {
            BaseP::Diag(p) => Some(p),
            BaseP::Mix(p) => Some(p),
            _ => None,
        }
    }

    /// log p of the logical rows `z[:, cols[i]]`.
    pub fn log_prob(&self, cols: &[usize], z: ArrayView2<T>) -> Array1<T> {
        match self {
            BaseP::Std => base::std_normal_log_prob(z),
            BaseP::Logistic => base::logistic_log_prob(cols, z),
            BaseP::Uniform(a, b) => base::uniform_log_prob(*a, *b, cols, z),
            BaseP::Diag(p) => base::diag_normal_log_prob(p, cols, z),
            BaseP::Mix(p) => base::mixture_log_prob(p, cols, z),
        }
    }

    pub fn nll_grad(
        &self,
        cols: &[usize],
        z: ArrayView2<T>,
        scale: T,
        g: ArrayViewMut2<T>,
        grad: &mut BaseP<T>,
    ) {
        match (self, grad) {
            (BaseP::Std, _) => base::std_normal_nll_grad(z, scale, g),
            (BaseP::Logistic, _) => base::logistic_nll_grad(cols, z, scale, g),
            (BaseP::Uniform(a, b), _) => base::uniform_nll_grad(*a, *b, cols, z, scale, g),
            (BaseP::Diag(p), BaseP::Diag(gp)) => {
                base::diag_normal_nll_grad(p, cols, z, scale, g, gp)
            }
            (BaseP::Mix(p), BaseP::Mix(gp)) => base::mixture_nll_grad(p, cols, z, scale, g, gp),
            _ => unreachable!("the gradient base is a clone of the base"),
        }
    }

    pub fn sample(&self, n: usize, d: usize, rng: &mut dyn rand::Rng) -> Array2<T> {
        match self {
            BaseP::Std => base::std_normal_sample(n, d, rng),
            BaseP::Logistic => base::logistic_sample(n, d, rng),
            BaseP::Uniform(a, b) => base::uniform_sample(*a, *b, n, d, rng),
            BaseP::Diag(p) => base::diag_normal_sample(p, n, rng),
            BaseP::Mix(p) => base::mixture_sample(p, n, rng),
        }
    }
}

/// Writes the tensors the spec fixes (by name) into `p`, as generated code's `__fix` does.
pub fn apply_fixed<T: Real>(p: &mut dyn Params<T>, fixed: &[ir::FixedTensor]) {
    if fixed.is_empty() {
        return;
    }
    p.visit_mut("", &mut |name, _, d| {
        if let Some(ft) = fixed.iter().find(|ft| ft.name == name) {
            d.iter_mut().zip(&ft.values).for_each(|(o, v)| *o = T::of(*v));
        }
    });
}

/// Whether `name` (with the visitor's prefix) is one of the fixed tensors under `prefix`.
pub fn is_fixed(name: &str, prefix: &str, fixed: &[ir::FixedTensor]) -> bool {
    let rest = if prefix.is_empty() {
        Some(name)
    } else {
        name.strip_prefix(prefix).and_then(|r| r.strip_prefix('.'))
    };
    fixed.iter().any(|ft| rest == Some(ft.name))
}
