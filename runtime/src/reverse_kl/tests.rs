//! Tests of reverse-KL fitting and distillation on a small hand-written flow built from the
//! runtime's kernels (the generated flows and the interpreter implement the same trait).

use super::*;
use crate::base::{std_normal_log_prob, std_normal_sample};
use crate::layers::testutil::{assert_close, fd_grad, flatten, randomize, rng};
use crate::layers::{
    affine_coupling_backward, affine_coupling_forward, affine_coupling_forward_backward,
    affine_coupling_inverse, CouplingScratch, Tape,
};
use crate::nn::{Activation, Mlp};
use crate::params::Params;
use crate::transform::{
    elementwise_backward, elementwise_forward, elementwise_forward_backward, elementwise_inverse,
    Affine, ElementParams, ParamTensor,
};
use ndarray::ArrayView1;
use rand::Rng;

const COLS: [usize; 2] = [0, 1];
const COND: [usize; 1] = [1];
const TRANS: [usize; 1] = [0];
const BOUND: f64 = 3.0;

/// A 2-D flow over a standard normal base. Normalizing order: an elementwise affine layer on
/// both columns, then (if present) an affine coupling of column 0 conditioned on column 1.
#[derive(Clone, Debug)]
struct Toy {
    elem: ElementParams<f64>,
    net: Option<Mlp<f64>>,
}

impl Toy {
    /// The identity: zero affine parameters and a conditioner whose last layer is zero.
    fn identity(coupling: bool, seed: u64) -> Self {
        let tensor = |name| ParamTensor { name, value: Array2::zeros((2, 1)), trainable: true };
        let elem = ElementParams { tensors: vec![tensor("shift"), tensor("log_scale")] };
        let net = coupling.then(|| Mlp::new(&[1, 8, 2], Activation::Tanh, &mut rng(seed), true));
        Self { elem, net }
    }

    /// Every parameter drawn from `(-scale, scale)`.
    fn random(coupling: bool, scale: f64, seed: u64) -> Self {
        let mut t = Self::identity(coupling, seed);
        randomize(&mut t.elem, &mut rng(seed + 1), scale);
        if let Some(net) = &mut t.net {
            randomize(net, &mut rng(seed + 2), scale);
        }
        t
    }

    /// `(h, z, ld)`: the elementwise layer's output, the base point and log|det dz/dx|.
    fn normalize(&self, x: ArrayView2<f64>) -> (Array2<f64>, Array2<f64>, Array1<f64>) {
        let (mut h, mut ld) = (x.to_owned(), Array1::zeros(x.nrows()));
        elementwise_inverse(&Affine, &self.elem, &COLS, h.view_mut(), ld.view_mut());
        let mut z = h.clone();
        if let Some(net) = &self.net {
            let s = &mut CouplingScratch::default();
            affine_coupling_inverse(net, &COND, &TRANS, BOUND, z.view_mut(), ld.view_mut(), s);
        }
        (h, z, ld)
    }

    /// Backpropagates `g = dLoss/dz` and `dld` through the normalizing direction at `x`;
    /// returns the parameter gradient and leaves dLoss/dx in `g`.
    fn normalize_backward(
        &self,
        x: ArrayView2<f64>,
        h: &Array2<f64>,
        g: &mut Array2<f64>,
        dld: ArrayView1<f64>,
    ) -> Vec<f64> {
        let mut ge = self.elem.zeros_like();
        let mut gn = self.net.as_ref().map(zeros_like);
        if let (Some(net), Some(gn)) = (&self.net, &mut gn) {
            // The backward kernel reads the conditioner run its forward step recorded.
            let (mut z, mut ld) = (h.clone(), Array1::zeros(h.nrows()));
            let tape = &mut Tape::<CouplingScratch<f64>>::default();
            let s = tape.record(h.nrows());
            affine_coupling_inverse(net, &COND, &TRANS, BOUND, z.view_mut(), ld.view_mut(), s);
            affine_coupling_backward(
                net,
                &COND,
                &TRANS,
                BOUND,
                h.view(),
                g.view_mut(),
                dld,
                gn,
                tape,
            );
        }
        elementwise_backward(&Affine, &self.elem, &COLS, x, g.view_mut(), dld, &mut ge);
        self.flat(&ge, gn.as_ref())
    }

    fn flat(&self, elem: &ElementParams<f64>, net: Option<&Mlp<f64>>) -> Vec<f64> {
        let mut out = flatten(elem);
        out.extend(net.map(flatten).unwrap_or_default());
        out
    }
}

/// A zero gradient accumulator of the conditioner's shape.
fn zeros_like(net: &Mlp<f64>) -> Mlp<f64> {
    let mut g = net.clone();
    g.zero();
    g
}

impl Flow for Toy {
    type Real = f64;
    fn name(&self) -> &str {
        "toy"
    }
    fn dim(&self) -> usize {
        2
    }
    fn fingerprint(&self) -> u64 {
        0x70E
    }
    fn visit_params(&self, f: &mut dyn FnMut(String, &[usize], &[f64])) {
        self.elem.visit("0", f);
        self.net.iter().for_each(|n| n.visit("1", f));
    }
    fn visit_params_mut(&mut self, f: &mut dyn FnMut(String, &[usize], &mut [f64])) {
        self.elem.visit_mut("0", f);
        self.net.iter_mut().for_each(|n| n.visit_mut("1", f));
    }
    fn inverse(&self, x: ArrayView2<f64>) -> (Array2<f64>, Array1<f64>) {
        let (_, z, ld) = self.normalize(x);
        (z, ld)
    }
    fn forward(&self, z: ArrayView2<f64>) -> (Array2<f64>, Array1<f64>) {
        let (mut x, mut ld) = (z.to_owned(), Array1::zeros(z.nrows()));
        if let Some(net) = &self.net {
            let s = &mut CouplingScratch::default();
            affine_coupling_forward(net, &COND, &TRANS, BOUND, x.view_mut(), ld.view_mut(), s);
        }
        elementwise_forward(&Affine, &self.elem, &COLS, x.view_mut(), ld.view_mut());
        (x, ld)
    }
    fn base_log_prob(&self, z: ArrayView2<f64>) -> Array1<f64> {
        std_normal_log_prob(z)
    }
    fn sample_base(&self, n: usize, rng: &mut dyn Rng) -> Array2<f64> {
        std_normal_sample(n, 2, rng)
    }
    fn nll_and_grad(&self, x: ArrayView2<f64>) -> (f64, Vec<f64>) {
        let n = x.nrows() as f64;
        let (h, z, ld) = self.normalize(x);
        let nll = -(std_normal_log_prob(z.view()) + &ld).sum() / n;
        let mut g = &z / n;
        let grad =
            self.normalize_backward(x, &h, &mut g, Array1::from_elem(x.nrows(), -1.0 / n).view());
        (nll, grad)
    }
    fn forward_vjp(
        &self,
        z: ArrayView2<f64>,
        gx: ArrayView2<f64>,
        gld: ArrayView1<f64>,
    ) -> (Vec<f64>, Array2<f64>) {
        let (mut h, mut ld) = (z.to_owned(), Array1::zeros(z.nrows()));
        let mut gn = self.net.as_ref().map(zeros_like);
        let mut tape = Tape::<CouplingScratch<f64>>::default();
        if let Some(net) = &self.net {
            let s = tape.record(z.nrows());
            affine_coupling_forward(net, &COND, &TRANS, BOUND, h.view_mut(), ld.view_mut(), s);
        }
        let (mut g, mut ge) = (gx.to_owned(), self.elem.zeros_like());
        elementwise_forward_backward(
            &Affine,
            &self.elem,
            &COLS,
            h.view(),
            g.view_mut(),
            gld,
            &mut ge,
        );
        if let (Some(net), Some(gn)) = (&self.net, &mut gn) {
            affine_coupling_forward_backward(
                net,
                &COND,
                &TRANS,
                BOUND,
                z,
                g.view_mut(),
                gld,
                gn,
                &mut tape,
            );
        }
        (self.flat(&ge, gn.as_ref()), g)
    }
    fn log_prob_grad_x(&self, x: ArrayView2<f64>) -> (Array1<f64>, Array2<f64>) {
        let (h, z, ld) = self.normalize(x);
        let mut g = -&z;
        self.normalize_backward(x, &h, &mut g, Array1::ones(x.nrows()).view());
        (std_normal_log_prob(z.view()) + ld, g)
    }
}

/// The unnormalized log-density of N(mu, diag(s^2)) and its gradient.
fn gaussian(
    mu: [f64; 2],
    s: [f64; 2],
) -> impl FnMut(ArrayView2<f64>) -> (Array1<f64>, Array2<f64>) {
    move |x| {
        let (mu, s) = (ndarray::arr1(&mu), ndarray::arr1(&s));
        let u = (&x - &mu) / &s;
        let lp = u.rows().into_iter().map(|r| -0.5 * r.dot(&r)).collect();
        (lp, -&u / &s)
    }
}

/// A banana-shaped unnormalized log-density: x0 ~ N(0, 1), x1 | x0 ~ N(x0^2 / 2, 0.5^2).
fn banana(x: ArrayView2<f64>) -> (Array1<f64>, Array2<f64>) {
    let mut g = Array2::zeros(x.dim());
    let lp = x
        .rows()
        .into_iter()
        .zip(g.rows_mut())
        .map(|(r, mut gr)| {
            let v = (r[1] - 0.5 * r[0] * r[0]) / 0.5;
            gr[0] = -r[0] + v / 0.5 * r[0];
            gr[1] = -v / 0.5;
            -0.5 * r[0] * r[0] - 0.5 * v * v
        })
        .collect();
    (lp, g)
}

fn quiet() -> impl FnMut(usize, f64) {
    |_, _| ()
}

#[test]
fn toy_flow_gradients_match_finite_differences() {
    // The hand-written flow's own backward passes, which the tests below rely on.
    let mut flow = Toy::random(true, 0.8, 1);
    let x = std_normal_sample::<f64>(6, 2, &mut rng(2));
    let (lp, gx) = flow.log_prob_grad_x(x.view());
    let fd = fd_grad(x.as_slice().unwrap(), |xs| {
        flow.log_prob(ArrayView2::from_shape((6, 2), xs).unwrap()).sum()
    });
    assert_close("d log p / dx", gx.as_slice().unwrap(), &fd, 1e-6);
    assert_close(
        "log p",
        lp.as_slice().unwrap(),
        flow.log_prob(x.view()).as_slice().unwrap(),
        1e-12,
    );
    let (_, grad) = flow.nll_and_grad(x.view());
    let p0 = flow.params();
    let fd = fd_grad(&p0, |p| {
        flow.set_params(p);
        flow.mean_nll(x.view())
    });
    assert_close("nll grad", &grad, &fd, 1e-6);
}

#[test]
fn reverse_kl_gradient_matches_finite_differences_with_fixed_z() {
    let mut flow = Toy::random(true, 0.8, 3);
    let z = std_normal_sample::<f64>(16, 2, &mut rng(4));
    let mut target = banana;
    let (loss, grad) = loss_and_grad(&flow, z.view(), &mut target, 0).unwrap();
    let p0 = flow.params();
    let fd = fd_grad(&p0, |p| {
        flow.set_params(p);
        loss_and_grad(&flow, z.view(), &mut target, 0).unwrap().0
    });
    flow.set_params(&p0);
    assert_close("reverse-KL grad", &grad, &fd, 1e-6);
    // The loss is the sample mean of log q(f(z)) - log p~(f(z)).
    let (x, ld) = flow.forward(z.view());
    let want = (std_normal_log_prob(z.view()) - &ld - banana(x.view()).0).mean().unwrap();
    assert!((loss - want).abs() < 1e-12);
}

#[test]
fn fits_a_gaussian_and_recovers_its_parameters() {
    let (mu, s) = ([1.0, -2.0], [0.5, 2.0]);
    let mut flow = Toy::identity(false, 0);
    let cfg = KlConfig { steps: 2000, lr: 0.05, cosine_decay: true, ..Default::default() };
    let mut calls = 0;
    let report = fit_reverse_kl(&mut flow, &mut gaussian(mu, s), &cfg, &mut |step, _| {
        calls += 1;
        assert_eq!(step, calls);
    })
    .unwrap();
    assert!(report.kl < 1e-3 && report.kl >= 0.0, "kl {}", report.kl);
    assert!(report.ess > 0.99, "ess {}", report.ess);
    // log Z of exp(-|u|^2 / 2) is ln(2 pi s0 s1).
    let log_z = (2.0 * std::f64::consts::PI * s[0] * s[1]).ln();
    assert!((report.log_z - log_z).abs() < 1e-2, "log Z {}", report.log_z);
    let (shift, log_scale) = (&flow.elem.tensors[0].value, &flow.elem.tensors[1].value);
    for j in 0..2 {
        assert!((shift[[j, 0]] - mu[j]).abs() < 0.03 * s[j], "mu[{j}] = {}", shift[[j, 0]]);
        assert!((log_scale[[j, 0]].exp() / s[j] - 1.0).abs() < 0.03, "s[{j}]");
    }
    assert_eq!((calls, report.steps, report.history.len()), (2000, 2000, 20));
    assert!(report.history[19].1 < report.history[0].1);
}

#[test]
fn distillation_reduces_kl_by_more_than_ninety_percent() {
    let teacher = Toy::random(true, 0.9, 5);
    let student = Toy::identity(true, 6);
    let cfg = KlConfig { steps: 1500, lr: 0.02, cosine_decay: true, ..Default::default() };
    let before = distill(
        &teacher,
        &mut student.clone(),
        &KlConfig { steps: 0, ..cfg.clone() },
        &mut quiet(),
    )
    .unwrap();
    let mut trained = student.clone();
    let after = distill(&teacher, &mut trained, &cfg, &mut quiet()).unwrap();
    assert!(before.kl > 0.2, "the teacher is too close to the identity: {}", before.kl);
    assert!(after.kl < 0.1 * before.kl, "KL {} -> {}", before.kl, after.kl);
    assert!(after.ess > before.ess && after.log_z.abs() < 0.05, "{after:?}");
    assert!(after.kl_std_err < 0.1 * before.kl);
}

#[test]
fn non_finite_targets_are_errors_and_keep_the_parameters() {
    let mut flow = Toy::random(true, 0.5, 7);
    let p0 = flow.params();
    let cfg = KlConfig { steps: 10, ..Default::default() };
    let mut nan =
        |x: ArrayView2<f64>| (Array1::from_elem(x.nrows(), f64::NAN), Array2::zeros(x.dim()));
    let err = fit_reverse_kl(&mut flow, &mut nan, &cfg, &mut quiet()).unwrap_err();
    assert!(matches!(err, TrainError::NonFiniteKl { step: 1, what: "loss", .. }), "{err}");
    assert_eq!(flow.params(), p0);
    // A finite density with a NaN gradient from step 3 on: two steps are kept.
    let mut calls = 0;
    let mut late = |x: ArrayView2<f64>| {
        calls += 1;
        let (lp, mut g) = banana(x);
        if calls >= 3 {
            g[[0, 1]] = f64::NAN;
        }
        (lp, g)
    };
    let err = fit_reverse_kl(&mut flow, &mut late, &cfg, &mut quiet()).unwrap_err();
    assert!(matches!(err, TrainError::NonFiniteKl { step: 3, what: "gradient", .. }), "{err}");
    assert_ne!(flow.params(), p0);
    assert!(flow.params().iter().all(|p| p.is_finite()));
}

#[test]
fn bad_targets_and_configurations_are_errors() {
    let mut flow = Toy::identity(true, 8);
    let cfg = KlConfig { steps: 3, eval_samples: 10, ..Default::default() };
    let mut short = |x: ArrayView2<f64>| (Array1::zeros(1), Array2::zeros(x.dim()));
    let err = fit_reverse_kl(&mut flow, &mut short, &cfg, &mut quiet()).unwrap_err();
    assert!(matches!(err, TrainError::TargetShape { what: "the log-density", .. }), "{err}");
    let mut wide = |x: ArrayView2<f64>| (Array1::zeros(x.nrows()), Array2::zeros((x.nrows(), 3)));
    let err = fit_reverse_kl(&mut flow, &mut wide, &cfg, &mut quiet()).unwrap_err();
    assert!(matches!(err, TrainError::TargetShape { what: "the gradient", .. }), "{err}");
    for bad in [
        KlConfig { batch: 0, ..cfg.clone() },
        KlConfig { lr: f64::NAN, ..cfg.clone() },
        KlConfig { eval_samples: 0, ..cfg.clone() },
        KlConfig { log_every: 0, ..cfg.clone() },
    ] {
        assert!(fit_reverse_kl(&mut flow, &mut banana, &bad, &mut quiet()).is_err());
    }
    let teacher = crate::train::tests::DiagGauss::<f64>::new(3);
    assert!(matches!(
        distill(&teacher, &mut flow, &cfg, &mut quiet()),
        Err(TrainError::DimMismatch { .. })
    ));
}

#[test]
fn zero_target_density_gives_infinite_kl_not_an_error() {
    // Steps 0: only the evaluation runs. Half of the samples land where the target is zero.
    let mut flow = Toy::identity(false, 9);
    let cfg = KlConfig { steps: 0, eval_samples: 1000, ..Default::default() };
    let mut half = |x: ArrayView2<f64>| {
        let lp =
            x.rows()
                .into_iter()
                .map(|r| if r[0] > 0.0 { -0.5 * r.dot(&r) } else { f64::NEG_INFINITY });
        (lp.collect(), Array2::zeros(x.dim()))
    };
    let r = fit_reverse_kl(&mut flow, &mut half, &cfg, &mut quiet()).unwrap();
    assert!(r.kl == f64::INFINITY && r.ess > 0.4 && r.ess < 0.6 && r.log_z.is_finite(), "{r:?}");
}

#[test]
fn f32_flows_fit_too_and_runs_are_reproducible() {
    use crate::train::tests::DiagGauss;
    let cfg = KlConfig {
        steps: 800,
        lr: 0.05,
        cosine_decay: true,
        eval_samples: 2000,
        ..Default::default()
    };
    let run = |seed| {
        let mut flow = DiagGauss::<f32>::new(2);
        let r = fit_reverse_kl(
            &mut flow,
            &mut gaussian([3.0, 0.5], [2.0, 0.3]),
            &KlConfig { seed, ..cfg.clone() },
            &mut quiet(),
        );
        (flow.params(), r.unwrap().history)
    };
    let (p, _) = run(1);
    assert!((p[0] - 3.0).abs() < 0.1 && (p[1] - 0.5).abs() < 0.02, "{p:?}");
    assert!((p[2].exp() - 2.0).abs() < 0.1 && (p[3].exp() - 0.3).abs() < 0.02, "{p:?}");
    assert_eq!(run(1), run(1));
}

#[test]
fn estimates_from_known_weights() {
    // Constant weights: q is the target up to its normalizer.
    let e = Estimates::from_log_weights(&[0.7; 5], false);
    assert!(e.kl.abs() < 1e-15 && (e.ess - 1.0).abs() < 1e-12 && (e.log_z - 0.7).abs() < 1e-12);
    // Weights 1 and 3: ESS = 16 / (2 * 10), log Z = ln 2, kl = ln 2 - ln(3) / 2.
    let e = Estimates::from_log_weights(&[0.0, 3f64.ln()], false);
    assert!((e.ess - 0.8).abs() < 1e-12 && (e.log_z - 2f64.ln()).abs() < 1e-12);
    assert!((e.kl - (2f64.ln() - 0.5 * 3f64.ln())).abs() < 1e-12);
    let e = Estimates::from_log_weights(&[0.0, 3f64.ln()], true);
    assert!((e.kl + 0.5 * 3f64.ln()).abs() < 1e-12);
}
