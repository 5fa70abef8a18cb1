//! The [`Flow`] trait: what every generated flow struct and the interpreter implement, so that
//! training, evaluation, I/O and verification are written once.

use crate::real::Real;
use ndarray::{Array1, Array2, ArrayView1, ArrayView2};
use rand::Rng;

/// The name and shape of one parameter tensor, in the canonical order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
}

/// A normalizing flow over `dim()`-dimensional rows.
///
/// `inverse` maps data x to base z (the normalizing direction, in which specs list layers);
/// `forward` maps z to x (the generative direction). Each returns the transformed batch and,
/// per row, the log-determinant of the Jacobian of the map it computed.
pub trait Flow: Send + Sync {
    type Real: Real;

    /// The flow's name in the spec.
    fn name(&self) -> &str;
    /// The event size D (the product of the event shape).
    fn dim(&self) -> usize;
    /// A hash of the architecture; weights files carry it and loading checks it.
    fn fingerprint(&self) -> u64;
    /// Visits every parameter tensor in the canonical order.
    fn visit_params(&self, f: &mut dyn FnMut(String, &[usize], &[Self::Real]));
    /// Visits every parameter tensor in the canonical order, mutably.
    fn visit_params_mut(&mut self, f: &mut dyn FnMut(String, &[usize], &mut [Self::Real]));
    /// x (n x D) to z, with log|det dz/dx| per row.
    fn inverse(&self, x: ArrayView2<Self::Real>) -> (Array2<Self::Real>, Array1<Self::Real>);
    /// z (n x D) to x, with log|det dx/dz| per row.
    fn forward(&self, z: ArrayView2<Self::Real>) -> (Array2<Self::Real>, Array1<Self::Real>);
    /// The base distribution's log-density of each row of z.
    fn base_log_prob(&self, z: ArrayView2<Self::Real>) -> Array1<Self::Real>;
    /// n draws from the base distribution.
    fn sample_base(&self, n: usize, rng: &mut dyn Rng) -> Array2<Self::Real>;
    /// The mean negative log-likelihood of the rows of x and its gradient with respect to every
    /// parameter, flat in the canonical order (the generated or interpreted backward pass).
    fn nll_and_grad(&self, x: ArrayView2<Self::Real>) -> (Self::Real, Vec<Self::Real>);
    /// Backward pass through the generative direction: for `(x, ld) = forward(z)`, the gradient
    /// of `sum_rows(gx . x + gld * ld)` with respect to every parameter (flat, canonical order;
    /// zero for fixed tensors and base parameters) and with respect to `z`.
    fn forward_vjp(
        &self,
        z: ArrayView2<Self::Real>,
        gx: ArrayView2<Self::Real>,
        gld: ArrayView1<Self::Real>,
    ) -> (Vec<Self::Real>, Array2<Self::Real>);
    /// log p(x) per row and its gradient with respect to x (through the normalizing direction).
    fn log_prob_grad_x(
        &self,
        x: ArrayView2<Self::Real>,
    ) -> (Array1<Self::Real>, Array2<Self::Real>);
    /// Data-dependent initialisation (actnorm); flows without such layers do nothing.
    fn data_init(&mut self, _x: ArrayView2<Self::Real>) {}
    /// Whether the flow models integer data dequantized by uniform noise (its spec starts with
    /// a `dequantize` layer). Training then adds fresh U[0, 1) noise to every batch, and
    /// evaluation ([`crate::train::mean_nll`]) one fixed draw; see [`crate::train`].
    fn dequantize(&self) -> bool {
        false
    }

    /// The number of scalar parameters.
    fn num_params(&self) -> usize {
        let mut n = 0;
        self.visit_params(&mut |_, _, d| n += d.len());
        n
    }
    /// log p(x) per row: base log-density of z = inverse(x) plus the log-determinant.
    fn log_prob(&self, x: ArrayView2<Self::Real>) -> Array1<Self::Real> {
        let (z, ld) = self.inverse(x);
        self.base_log_prob(z.view()) + ld
    }
    /// Mean negative log-likelihood (no gradient).
    fn mean_nll(&self, x: ArrayView2<Self::Real>) -> f64 {
        let lp = self.log_prob(x);
        -lp.iter().map(|v| v.f64()).sum::<f64>() / lp.len().max(1) as f64
    }
    /// n samples from the flow.
    fn sample(&self, n: usize, rng: &mut dyn Rng) -> Array2<Self::Real> {
        self.forward(self.sample_base(n, rng).view()).0
    }
    /// n samples and their log-densities, from one generative pass.
    fn sample_and_log_prob(
        &self,
        n: usize,
        rng: &mut dyn Rng,
    ) -> (Array2<Self::Real>, Array1<Self::Real>) {
        let z = self.sample_base(n, rng);
        let lpz = self.base_log_prob(z.view());
        let (x, ld) = self.forward(z.view());
        (x, lpz - ld)
    }
    /// All parameters as one flat vector, in the canonical order.
    fn params(&self) -> Vec<Self::Real> {
        let mut out = Vec::with_capacity(self.num_params());
        self.visit_params(&mut |_, _, d| out.extend_from_slice(d));
        out
    }
    /// Overwrites all parameters from a flat vector in the canonical order.
    /// Panics if `p` has the wrong length (a programming error, not user input).
    fn set_params(&mut self, p: &[Self::Real]) {
        assert_eq!(p.len(), self.num_params(), "set_params: wrong length");
        let mut at = 0;
        self.visit_params_mut(&mut |_, _, d| {
            d.copy_from_slice(&p[at..at + d.len()]);
            at += d.len();
        });
    }
    /// Names and shapes of the parameter tensors, in the canonical order.
    fn param_specs(&self) -> Vec<ParamSpec> {
        let mut out = Vec::new();
        self.visit_params(&mut |name, shape, _| {
            out.push(ParamSpec { name, shape: shape.to_vec() })
        });
        out
    }
}
