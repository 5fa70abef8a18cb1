//! Kernel tests: round trips, log-determinants against a brute-force Jacobian and gradients
//! against finite differences, for elementwise layers and transformer couplings, on
//! non-contiguous columns.

use super::*;
use crate::layers::testutil::{
    check_forward_grads_at_image, check_grads, check_layer, check_log_det, check_round_trip,
    randomize, rng, uniform, Layer,
};
use crate::nn::Activation;
use crate::transform::{
    Affine, LeakyRelu, Log, Logit, ParamTensor, PiecewiseLinear, RqSpline, Sigmoid,
};
use ndarray::{Array1, Array2};

/// An elementwise layer under test.
struct Elem<Tr> {
    tr: Tr,
    p: ElementParams<f64>,
    cols: Vec<usize>,
}

impl<Tr: Transformer<f64>> Elem<Tr> {
    /// Tensors named by `widths` (`(name, k)`), randomized in `(-scale, scale)`.
    fn new(
        tr: Tr,
        widths: &[(&'static str, usize)],
        cols: &[usize],
        scale: f64,
        seed: u64,
    ) -> Self {
        let d = cols.len();
        let tensors = widths
            .iter()
            .map(|&(name, k)| ParamTensor { name, value: Array2::zeros((d, k)), trainable: true })
            .collect();
        let mut p = ElementParams { tensors };
        randomize(&mut p, &mut rng(seed), scale);
        Self { tr, p, cols: cols.to_vec() }
    }
}

impl<Tr: Transformer<f64>> Layer for Elem<Tr> {
    type P = ElementParams<f64>;
    fn params_mut(&mut self) -> &mut ElementParams<f64> {
        &mut self.p
    }
    fn inverse(&mut self, x: ArrayViewMut2<f64>, ld: ArrayViewMut1<f64>) {
        elementwise_inverse(&self.tr, &self.p, &self.cols, x, ld);
    }
    fn forward(&mut self, x: ArrayViewMut2<f64>, ld: ArrayViewMut1<f64>) {
        elementwise_forward(&self.tr, &self.p, &self.cols, x, ld);
    }
    fn backward(
        &mut self,
        x: ArrayView2<f64>,
        g: ArrayViewMut2<f64>,
        dld: ArrayView1<f64>,
        grad: &mut ElementParams<f64>,
    ) {
        elementwise_backward(&self.tr, &self.p, &self.cols, x, g, dld, grad);
    }
    fn forward_backward(
        &mut self,
        z: ArrayView2<f64>,
        g: ArrayViewMut2<f64>,
        dld: ArrayView1<f64>,
        grad: &mut ElementParams<f64>,
    ) {
        elementwise_forward_backward(&self.tr, &self.p, &self.cols, z, g, dld, grad);
    }
}

/// A transformer coupling under test, with a random conditioner.
struct Coup<Tr> {
    tr: Tr,
    net: Mlp<f64>,
    cond: Vec<usize>,
    trans: Vec<usize>,
    s: CouplingScratch<f64>,
    tape: Tape<CouplingScratch<f64>>,
}

impl<Tr: Transformer<f64>> Coup<Tr> {
    fn new(tr: Tr, cond: &[usize], trans: &[usize], scale: f64, seed: u64) -> Self {
        let out = trans.len() * tr.n_params();
        let mut net = Mlp::zeros(&[cond.len(), 6, 5, out], Activation::Tanh);
        randomize(&mut net, &mut rng(seed), scale);
        let (cond, trans) = (cond.to_vec(), trans.to_vec());
        let (s, tape) = Default::default();
        Self { tr, net, cond, trans, s, tape }
    }

    /// The forward step of a backward pass at `x` (`inverse`: the normalizing kernel),
    /// recorded on the tape; then a call on the rows reversed through the ordinary scratch,
    /// which must not disturb what the backward kernel reads.
    fn record(&mut self, x: ArrayView2<f64>, inverse: bool) {
        let (mut y, mut ld) = (x.to_owned(), ndarray::Array1::zeros(x.nrows()));
        let (tr, n, c, t) = (&self.tr, &self.net, &self.cond[..], &self.trans[..]);
        let tape = self.tape.record(x.nrows());
        match inverse {
            true => transformer_coupling_inverse(tr, n, c, t, y.view_mut(), ld.view_mut(), tape),
            false => transformer_coupling_forward(tr, n, c, t, y.view_mut(), ld.view_mut(), tape),
        }
        let mut other = x.slice(ndarray::s![..;-1, ..]).to_owned();
        self.inverse(other.view_mut(), ld.view_mut());
    }
}

impl<Tr: Transformer<f64>> Layer for Coup<Tr> {
    type P = Mlp<f64>;
    fn params_mut(&mut self) -> &mut Mlp<f64> {
        &mut self.net
    }
    fn inverse(&mut self, x: ArrayViewMut2<f64>, ld: ArrayViewMut1<f64>) {
        let (c, t) = (&self.cond[..], &self.trans[..]);
        transformer_coupling_inverse(&self.tr, &self.net, c, t, x, ld, &mut self.s);
    }
    fn forward(&mut self, x: ArrayViewMut2<f64>, ld: ArrayViewMut1<f64>) {
        let (c, t) = (&self.cond[..], &self.trans[..]);
        transformer_coupling_forward(&self.tr, &self.net, c, t, x, ld, &mut self.s);
    }
    fn backward(
        &mut self,
        x: ArrayView2<f64>,
        g: ArrayViewMut2<f64>,
        dld: ArrayView1<f64>,
        grad: &mut Mlp<f64>,
    ) {
        self.record(x, true);
        let (c, t, tape) = (&self.cond[..], &self.trans[..], &mut self.tape);
        transformer_coupling_backward(&self.tr, &self.net, c, t, x, g, dld, grad, tape);
    }
    fn forward_backward(
        &mut self,
        z: ArrayView2<f64>,
        g: ArrayViewMut2<f64>,
        dld: ArrayView1<f64>,
        grad: &mut Mlp<f64>,
    ) {
        self.record(z, false);
        let (c, t, s) = (&self.cond[..], &self.trans[..], &mut self.tape);
        transformer_coupling_forward_backward(&self.tr, &self.net, c, t, z, g, dld, grad, s);
    }
}

/// Every check on 5 rows drawn from `(0.05, 0.95)`, for maps of the unit interval.
fn check_unit_layer<L: Layer>(l: &mut L, d: usize, seed: u64) {
    let mut r = rng(seed);
    let x = uniform(&mut r, 5, d, 0.45).mapv(|v| v + 0.5);
    check_round_trip(l, &x);
    check_log_det(l, &x);
    check_grads(l, &x, &mut r);
    check_forward_grads_at_image(l, &x, &mut r);
}

fn spline_tensors(k: usize) -> [(&'static str, usize); 3] {
    [("widths", k), ("heights", k), ("derivatives", k - 1)]
}

#[test]
fn elementwise_rq_spline() {
    // bound 1.5 on inputs from (-2, 2): some elements fall in the identity tails.
    let t = RqSpline { bins: 4, bound: 1.5 };
    check_layer(&mut Elem::new(t, &spline_tensors(4), &[2, 0, 3, 1], 1.0, 1), 4, 2);
    let t = RqSpline { bins: 3, bound: 3.0 };
    check_layer(&mut Elem::new(t, &spline_tensors(3), &[3, 1], 1.5, 3), 4, 4);
}

/// A transformer without its own [`Transformer::vjp`], so the kernels use duals throughout.
#[derive(Clone)]
struct DualsOnly<Tr>(Tr);

impl<Tr: Transformer<f64>> Transformer<f64> for DualsOnly<Tr> {
    fn n_params(&self) -> usize {
        self.0.n_params()
    }
    fn apply<S: Scalar<f64>>(&self, x: S, p: &[S]) -> (S, S) {
        self.0.apply(x, p)
    }
    fn invert<S: Scalar<f64>>(&self, y: S, p: &[S]) -> (S, S) {
        self.0.invert(y, p)
    }
}

#[test]
fn rq_spline_fast_path_and_duals_beyond_one_pass() {
    // 3 * 12 - 1 = 35 raw parameters: 36 directions, two dual passes of 32.
    let t = RqSpline { bins: 12, bound: 2.5 };
    check_layer(&mut Elem::new(t, &spline_tensors(12), &[1, 2, 0], 1.0, 5), 3, 6);
    check_layer(&mut Elem::new(DualsOnly(t), &spline_tensors(12), &[1, 2, 0], 1.0, 5), 3, 6);
    let t = RqSpline { bins: 4, bound: 1.5 };
    check_layer(&mut Coup::new(DualsOnly(t), &[2, 0], &[1, 3], 1.0, 20), 4, 21);
    // 41 directions: two passes, the second with 9 lanes in use.
    let t = PiecewiseLinear { bins: 40 };
    check_unit_layer(&mut Elem::new(t, &[("logits", 40)], &[1, 0], 2.0, 7), 2, 8);
}

#[test]
fn elementwise_affine_and_fixed_tensors() {
    let widths = [("shift", 1), ("log_scale", 1)];
    check_layer(&mut Elem::new(Affine, &widths, &[3, 1], 1.0, 7), 4, 8);
    // A fixed tensor gets its gradient too; only the trainable ones are visited.
    let mut l = Elem::new(Affine, &widths, &[0, 2, 1], 1.0, 9);
    let x = uniform(&mut rng(10), 4, 3, 2.0);
    let grad_of = |l: &Elem<Affine>| {
        let (mut g, mut grad) = (Array2::from_elem((4, 3), 0.5), l.p.zeros_like());
        elementwise_backward(
            &Affine,
            &l.p,
            &l.cols,
            x.view(),
            g.view_mut(),
            Array1::from_elem(4, 0.3).view(),
            &mut grad,
        );
        (g, grad.tensors[1].value.clone())
    };
    let trainable = grad_of(&l);
    l.p.tensors[1].trainable = false;
    assert_eq!(grad_of(&l), trainable);
    assert!(trainable.1.iter().all(|&v| v != 0.0));
    check_layer(&mut l, 3, 11);
}

#[test]
fn elementwise_piecewise_linear() {
    let t = PiecewiseLinear { bins: 5 };
    check_unit_layer(&mut Elem::new(t, &[("logits", 5)], &[2, 0, 3], 1.0, 12), 4, 13);
}

#[test]
fn elementwise_maps_without_parameters() {
    check_layer(&mut Elem::new(LeakyRelu { slope: 0.3 }, &[], &[1, 3, 0], 0.0, 0), 4, 14);
    check_layer(&mut Elem::new(Log, &[], &[0, 2], 0.0, 0), 3, 15);
    check_unit_layer(&mut Elem::new(Sigmoid { alpha: 0.05 }, &[], &[2, 1], 0.0, 0), 3, 16);
    check_unit_layer(&mut Elem::new(Logit { alpha: 0.0 }, &[], &[0, 1], 0.0, 0), 2, 17);
}

#[test]
fn out_of_domain_rows_get_density_zero_and_finite_gradients() {
    let l = Elem::new(Sigmoid { alpha: 0.0 }, &[], &[1, 0], 0.0, 0);
    let x = ndarray::array![[0.3, 0.6], [1.5, 0.2], [0.5, f64::NAN], [0.0, 1.0]];
    let (mut z, mut ld) = (x.clone(), Array1::zeros(4));
    elementwise_inverse(&l.tr, &l.p, &l.cols, z.view_mut(), ld.view_mut());
    assert!(ld[0].is_finite() && ld.iter().skip(1).all(|&v| v == f64::NEG_INFINITY));
    assert!(z.iter().all(|v| v.is_finite()));
    let mut g = Array2::from_elem((4, 2), 1.0);
    let mut grad = l.p.zeros_like();
    elementwise_backward(&l.tr, &l.p, &l.cols, x.view(), g.view_mut(), ld.view(), &mut grad);
    assert!(g.row(0).iter().all(|v| v.is_finite()));
}

#[test]
fn rq_spline_coupling() {
    let t = RqSpline { bins: 4, bound: 1.5 };
    check_layer(&mut Coup::new(t, &[2, 0], &[1, 3], 1.0, 20), 4, 21);
    let t = RqSpline { bins: 11, bound: 2.0 };
    check_layer(&mut Coup::new(t, &[1], &[2, 0], 0.7, 22), 3, 23);
}

#[test]
fn piecewise_linear_and_affine_couplings() {
    let t = PiecewiseLinear { bins: 4 };
    check_unit_layer(&mut Coup::new(t, &[1], &[2, 0], 1.0, 24), 3, 25);
    check_layer(&mut Coup::new(Affine, &[0, 3], &[2, 1], 0.5, 26), 4, 27);
    check_layer(&mut Coup::new(Affine, &[1], &[0, 2], 1.0, 34), 3, 35);
}

#[test]
fn sigmoid_coupling_without_raw_parameters() {
    // The conditioner outputs nothing: only the transformed columns' gradients are nonzero.
    check_layer(&mut Coup::new(Sigmoid { alpha: 0.05 }, &[0, 3], &[2, 1], 1.0, 36), 4, 37);
}

/// A coupling whose conditioner's last layer is zero leaves `x` and `ld` unchanged.
fn assert_identity<Tr: Transformer<f64>>(tr: Tr, x: Array2<f64>, seed: u64) {
    let net = Mlp::new(&[2, 8, 2 * tr.n_params()], Activation::Relu, &mut rng(seed), true);
    let (mut z, mut ld, mut s) = (x.clone(), Array1::zeros(x.nrows()), CouplingScratch::default());
    transformer_coupling_inverse(&tr, &net, &[2, 0], &[1, 3], z.view_mut(), ld.view_mut(), &mut s);
    assert!((&z - &x).iter().all(|v| v.abs() < 1e-12) && ld.iter().all(|v| v.abs() < 1e-12));
}

#[test]
fn zero_last_conditioner_layer_is_the_identity() {
    assert_identity(RqSpline { bins: 8, bound: 2.0 }, uniform(&mut rng(28), 6, 4, 3.0), 29);
    assert_identity(PiecewiseLinear { bins: 5 }, uniform(&mut rng(30), 6, 4, 0.5) + 0.5, 31);
    assert_identity(Affine, uniform(&mut rng(32), 6, 4, 3.0), 33);
}

#[test]
fn single_precision_kernels_run() {
    let t = RqSpline { bins: 6, bound: 3.0 };
    let d = 3;
    let p = ElementParams {
        tensors: vec![ParamTensor {
            name: "raw",
            value: Array2::from_elem((d, 17), 0.3f32),
            trainable: true,
        }],
    };
    let x = uniform(&mut rng(29), 8, d, 4.0).mapv(|v| v as f32);
    let (mut z, mut ld) = (x.clone(), Array1::<f32>::zeros(8));
    elementwise_inverse(&t, &p, &[2, 0, 1], z.view_mut(), ld.view_mut());
    let mut back = z.clone();
    elementwise_forward(&t, &p, &[2, 0, 1], back.view_mut(), ld.view_mut());
    assert!((&back - &x).iter().all(|v| v.abs() < 1e-4) && ld.iter().all(|v| v.abs() < 1e-4));
    let (mut g, mut grad) = (Array2::<f32>::ones((8, d)), p.zeros_like());
    elementwise_backward(&t, &p, &[2, 0, 1], x.view(), g.view_mut(), ld.view(), &mut grad);
    assert!(g.iter().chain(grad.tensors[0].value.iter()).all(|v| v.is_finite()));
    let (z, mut g) = (g.clone(), Array2::<f32>::ones((8, d)));
    elementwise_forward_backward(&t, &p, &[2, 0, 1], z.view(), g.view_mut(), ld.view(), &mut grad);
    assert!(g.iter().chain(grad.tensors[0].value.iter()).all(|v| v.is_finite()));
}
