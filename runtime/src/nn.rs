//! Small fully connected networks: the conditioners of coupling layers.
//!
//! Buffers live in an [`MlpScratch`] owned by the caller, so a training loop that keeps the
//! batch size fixed allocates nothing after its first step.

use crate::params::{join, Params};
use crate::real::Real;
use ndarray::linalg::general_mat_mul;
use ndarray::{Array, Array1, Array2, ArrayView2, ArrayViewMut2, Dimension, Zip};
use rand::RngExt;

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
    /// Applies the activation in place.
    pub(crate) fn apply<T: Real>(self, mut y: ArrayViewMut2<T>) {
        let zero = T::zero();
        match self {
            Activation::Relu => y.mapv_inplace(|v| v.max(zero)),
            Activation::Tanh => y.mapv_inplace(|v| v.tanh()),
            Activation::LeakyRelu(slope) => {
                let slope = T::of(slope);
                y.mapv_inplace(|v| if v > zero { v } else { v * slope });
            }
            Activation::Elu(alpha) => {
                let alpha = T::of(alpha);
                y.mapv_inplace(|v| if v > zero { v } else { alpha * v.exp_m1() });
            }
        }
    }

    /// Multiplies `d` by the activation's derivative, computed from the activation's output `y`
    /// (every supported activation's derivative is a function of its output, so the
    /// pre-activations need not be stored).
    pub(crate) fn mul_derivative<T: Real>(self, d: ArrayViewMut2<T>, y: ArrayView2<T>) {
        let (zero, one) = (T::zero(), T::one());
        let zip = Zip::from(d).and(y);
        match self {
            Activation::Relu => zip.for_each(|d, &y| {
                if y <= zero {
                    *d = zero;
                }
            }),
            Activation::Tanh => zip.for_each(|d, &y| *d *= one - y * y),
            Activation::LeakyRelu(slope) => {
                let slope = T::of(slope);
                zip.for_each(|d, &y| {
                    if y <= zero {
                        *d *= slope;
                    }
                });
            }
            Activation::Elu(alpha) => {
                let alpha = T::of(alpha);
                zip.for_each(|d, &y| {
                    if y <= zero {
                        *d *= y + alpha;
                    }
                });
            }
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
#[derive(Clone, Debug, PartialEq)]
pub struct Mlp<T> {
    pub layers: Vec<Dense<T>>,
    pub act: Activation,
}

/// Per-batch buffers of an [`Mlp`], reused across calls.
#[derive(Clone, Debug, Default)]
pub struct MlpScratch<T> {
    /// `acts[i]`: the output of layer i (after its activation), `n x sizes[i+1]`.
    pub acts: Vec<Array2<T>>,
    /// `deltas[i]`: the gradient with respect to layer i's pre-activation (all layers but the
    /// last, whose gradient is the caller's `dout`).
    pub deltas: Vec<Array2<T>>,
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
        for layer in mlp.layers.iter_mut().take(if zero_last { n.saturating_sub(1) } else { n }) {
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
        Self { layers, act }
    }

    /// The forward pass; the activation follows every layer except the last. Leaves every
    /// layer's output in `s.acts`; the network's output is `s.acts.last()`.
    pub fn forward(&self, x: ArrayView2<T>, s: &mut MlpScratch<T>) {
        let n = x.nrows();
        if self.layers.is_empty() {
            resize_all(&mut s.acts, n, [x.ncols()].into_iter());
            s.acts[0].assign(&x);
            return;
        }
        resize_all(&mut s.acts, n, self.layers.iter().map(|l| l.b.len()));
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            let (done, rest) = s.acts.split_at_mut(i);
            let input = if i == 0 { x.view() } else { done[i - 1].view() };
            let out = &mut rest[0];
            debug_assert_eq!(input.ncols(), layer.w.nrows(), "Mlp::forward: input width");
            out.assign(&layer.b);
            general_mat_mul(T::one(), &input, &layer.w, T::one(), out);
            if i < last {
                self.act.apply(out.view_mut());
            }
        }
    }

    /// The backward pass, after `forward(x, s)` with the same `x`. `dout` is the gradient with
    /// respect to the network's output. Accumulates parameter gradients into `grad` (same
    /// architecture) and, if given, adds the gradient with respect to `x` into `dx`.
    pub fn backward(
        &self,
        x: ArrayView2<T>,
        s: &mut MlpScratch<T>,
        dout: ArrayView2<T>,
        grad: &mut Mlp<T>,
        mut dx: Option<ArrayViewMut2<T>>,
    ) {
        debug_assert_eq!(grad.layers.len(), self.layers.len(), "Mlp::backward: grad architecture");
        let nl = self.layers.len();
        if nl == 0 {
            if let Some(dx) = dx.as_mut() {
                *dx += &dout;
            }
            return;
        }
        let widths = self.layers[..nl - 1].iter().map(|l| l.b.len());
        resize_all(&mut s.deltas, x.nrows(), widths);
        for i in (0..nl).rev() {
            let (below, here) = s.deltas.split_at_mut(i);
            let delta = if i == nl - 1 { dout.view() } else { here[0].view() };
            let input = if i == 0 { x.view() } else { s.acts[i - 1].view() };
            let (layer, gl) = (&self.layers[i], &mut grad.layers[i]);
            general_mat_mul(T::one(), &input.t(), &delta, T::one(), &mut gl.w);
            for row in delta.rows() {
                gl.b += &row;
            }
            if i > 0 {
                let prev = &mut below[i - 1];
                general_mat_mul(T::one(), &delta, &layer.w.t(), T::zero(), prev);
                self.act.mul_derivative(prev.view_mut(), s.acts[i - 1].view());
            } else if let Some(dx) = dx.as_mut() {
                general_mat_mul(T::one(), &delta, &layer.w.t(), T::one(), dx);
            }
        }
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
        for (i, l) in self.layers.iter_mut().enumerate() {
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

/// Makes `buf` an `n x m` matrix, reallocating only if its shape differs. The contents are
/// unspecified afterwards.
pub(crate) fn resize<T: Real>(buf: &mut Array2<T>, n: usize, m: usize) {
    if buf.dim() != (n, m) {
        *buf = Array2::zeros((n, m));
    }
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
mod tests {
    use super::*;
    use crate::layers::testutil::{
        assert_close, fd_grad, flatten, randomize, rng, unflatten, uniform,
    };
    use ndarray::array;

    const ACTS: [Activation; 4] =
        [Activation::Relu, Activation::Tanh, Activation::LeakyRelu(0.2), Activation::Elu(0.7)];

    fn output(net: &Mlp<f64>, x: ArrayView2<f64>, s: &mut MlpScratch<f64>) -> Array2<f64> {
        net.forward(x, s);
        s.acts.last().cloned().unwrap_or_default()
    }

    #[test]
    fn forward_matches_a_hand_computation() {
        let dense = |w: Array2<f64>, b: Array1<f64>| Dense { w, b };
        let layers = vec![
            dense(array![[1.0, -1.0], [2.0, 0.5]], array![0.0, -1.0]),
            dense(array![[1.0], [3.0]], array![0.5]),
        ];
        let x = array![[1.0, 1.0], [-1.0, 0.0]];
        let mut s = MlpScratch::default();
        // Hidden pre-activations: [3, -1.5] and [-1, 0].
        let relu = Mlp { layers: layers.clone(), act: Activation::Relu };
        assert_eq!(output(&relu, x.view(), &mut s), array![[3.5], [0.5]]);
        let leaky = Mlp { layers, act: Activation::LeakyRelu(0.1) };
        assert_close(
            "leaky",
            output(&leaky, x.view(), &mut s).as_slice().unwrap(),
            &[3.05, 0.4],
            1e-12,
        );
    }

    /// backward() matches finite differences of `sum(w .* net(x))`, accumulating into both
    /// the parameter gradient and `dx`.
    fn check_mlp_grads(act: Activation, seed: u64) {
        let mut r = rng(seed);
        let mut net = Mlp::zeros(&[3, 7, 5, 2], act);
        randomize(&mut net, &mut r, 1.0);
        let (x, w) = (uniform(&mut r, 6, 3, 2.0), uniform(&mut r, 6, 2, 1.0));
        let mut s = MlpScratch::default();
        let mut grad = Mlp::zeros(&[3, 7, 5, 2], act);
        let ones = vec![1.0; grad.count()];
        unflatten(&mut grad, &ones);
        let mut dx = Array2::from_elem(x.dim(), 1.0);
        net.forward(x.view(), &mut s);
        net.backward(x.view(), &mut s, w.view(), &mut grad, Some(dx.view_mut()));

        let loss = |net: &Mlp<f64>, x: ArrayView2<f64>, s: &mut MlpScratch<f64>| {
            (output(net, x, s) * &w).sum()
        };
        let p0 = flatten(&net);
        let mut probe = net.clone();
        let fd = fd_grad(&p0, |p| {
            unflatten(&mut probe, p);
            loss(&probe, x.view(), &mut s)
        });
        let analytic: Vec<f64> = flatten(&grad).iter().map(|g| g - 1.0).collect();
        assert_close(&format!("{act:?} param grad"), &analytic, &fd, 1e-6);
        let fd = fd_grad(x.as_slice().unwrap(), |xs| {
            loss(&net, ArrayView2::from_shape(x.dim(), xs).unwrap(), &mut s)
        });
        let analytic: Vec<f64> = dx.iter().map(|g| g - 1.0).collect();
        assert_close(&format!("{act:?} input grad"), &analytic, &fd, 1e-6);
    }

    #[test]
    fn backward_matches_finite_differences() {
        for (i, act) in ACTS.into_iter().enumerate() {
            check_mlp_grads(act, 30 + i as u64);
        }
    }

    #[test]
    fn init_follows_pytorch_and_zero_last() {
        let net = Mlp::<f64>::new(&[4, 16, 3], Activation::Tanh, &mut rng(1), true);
        assert!(net.layers[0].w.iter().chain(&net.layers[0].b).all(|v| v.abs() <= 0.5));
        assert!(net.layers[0].w.iter().any(|v| v.abs() > 0.3));
        assert!(net.layers[1].w.iter().chain(&net.layers[1].b).all(|&v| v == 0.0));
        let full = Mlp::<f32>::new(&[4, 16, 3], Activation::Tanh, &mut rng(1), false);
        assert!(full.layers[1].w.iter().all(|v| v.abs() <= 0.25) && full.layers[1].w.sum() != 0.0);
        assert_eq!(full.layers[1].w.dim(), (16, 3));
    }

    #[test]
    fn params_are_named_and_shaped_like_the_spec() {
        let mut net = Mlp::<f64>::zeros(&[2, 5, 4], Activation::Relu);
        let mut seen = Vec::new();
        net.visit("c0.net", &mut |n, s, d| seen.push((n, s.to_vec(), d.len())));
        let want = [
            ("c0.net.0.weight", vec![2, 5]),
            ("c0.net.0.bias", vec![5]),
            ("c0.net.1.weight", vec![5, 4]),
            ("c0.net.1.bias", vec![4]),
        ];
        let want: Vec<_> =
            want.into_iter().map(|(n, s)| (n.to_string(), s.clone(), s.iter().product())).collect();
        assert_eq!(seen, want);
        // A strided weight (public field) is visited in logical order.
        net.layers[0].w =
            Array2::from_shape_fn((5, 2), |(i, j)| (10 * i + j) as f64).reversed_axes();
        let mut first = Vec::new();
        net.visit_mut("", &mut |_, _, d| first.extend(d.iter().take(3).copied()));
        assert_eq!(&first[..3], &[0.0, 10.0, 20.0]);
    }

    #[test]
    fn scratch_follows_the_batch_size() {
        let net = Mlp::<f64>::new(&[2, 3, 1], Activation::Elu(1.0), &mut rng(2), false);
        let mut s = MlpScratch::default();
        for n in [4, 1, 4] {
            let x = uniform(&mut rng(n as u64), n, 2, 1.0);
            let mut fresh = MlpScratch::default();
            assert_eq!(output(&net, x.view(), &mut s), output(&net, x.view(), &mut fresh));
        }
    }

    #[test]
    fn layerless_mlp_is_the_identity() {
        let net = Mlp::<f64>::zeros(&[3], Activation::Relu);
        let x = uniform(&mut rng(5), 2, 3, 1.0);
        let mut s = MlpScratch::default();
        assert_eq!(output(&net, x.view(), &mut s), x);
        let mut dx = Array2::zeros((2, 3));
        net.backward(x.view(), &mut s, x.view(), &mut net.clone(), Some(dx.view_mut()));
        assert_eq!(dx, x);
    }
}
