//! Tests of training, and the small analytic flow (`DiagGauss`) other modules test with.

use super::*;
use ndarray::{Array1, ArrayView1};
use rand::{Rng, RngExt};
use rand_distr::{Distribution, StandardNormal};

/// A learnable diagonal Gaussian: z = (x - mu) * exp(-log_sigma), with analytic gradients.
#[derive(Clone, Debug)]
pub(crate) struct DiagGauss<T> {
    pub mu: Vec<T>,
    pub log_sigma: Vec<T>,
    /// Rows `data_init` last saw.
    pub init_rows: usize,
    /// The loss turns NaN once mu[0] exceeds this (to test divergence handling).
    pub nan_above: Option<f64>,
    pub fingerprint: u64,
    /// What [`Flow::dequantize`] answers.
    pub dequantize: bool,
}

impl<T: Real> DiagGauss<T> {
    pub fn new(d: usize) -> Self {
        let fingerprint = 0xF00D_0000 + d as u64 + if T::DTYPE == "f32" { 1 << 40 } else { 0 };
        let zeros = vec![T::zero(); d];
        let (init_rows, nan_above, dequantize) = (0, None, false);
        Self { mu: zeros.clone(), log_sigma: zeros, init_rows, nan_above, fingerprint, dequantize }
    }

    fn sigma(&self) -> Array1<T> {
        self.log_sigma.iter().map(|l| l.exp()).collect()
    }

    fn normalize(&self, x: ArrayView2<T>) -> Array2<T> {
        (&x - &ArrayView1::from(&self.mu)) / &self.sigma()
    }

    fn log_det(&self) -> T {
        self.log_sigma.iter().copied().sum()
    }
}

impl<T: Real> Flow for DiagGauss<T> {
    type Real = T;
    fn name(&self) -> &str {
        "Diag"
    }
    fn dim(&self) -> usize {
        self.mu.len()
    }
    fn fingerprint(&self) -> u64 {
        self.fingerprint
    }
    fn visit_params(&self, f: &mut dyn FnMut(String, &[usize], &[T])) {
        f("mu".into(), &[self.mu.len()], &self.mu);
        f("log_sigma".into(), &[self.mu.len()], &self.log_sigma);
    }
    fn visit_params_mut(&mut self, f: &mut dyn FnMut(String, &[usize], &mut [T])) {
        let d = self.mu.len();
        f("mu".into(), &[d], &mut self.mu);
        f("log_sigma".into(), &[d], &mut self.log_sigma);
    }
    fn inverse(&self, x: ArrayView2<T>) -> (Array2<T>, Array1<T>) {
        (self.normalize(x), Array1::from_elem(x.nrows(), -self.log_det()))
    }
    fn forward(&self, z: ArrayView2<T>) -> (Array2<T>, Array1<T>) {
        let x = &z * &self.sigma() + ArrayView1::from(&self.mu);
        (x, Array1::from_elem(z.nrows(), self.log_det()))
    }
    fn base_log_prob(&self, z: ArrayView2<T>) -> Array1<T> {
        let c = T::of(0.5 * (2.0 * std::f64::consts::PI).ln() * z.ncols() as f64);
        z.rows().into_iter().map(|r| -T::of(0.5) * r.dot(&r) - c).collect()
    }
    fn sample_base(&self, n: usize, rng: &mut dyn Rng) -> Array2<T> {
        let mut draw = || T::of(StandardNormal.sample(rng));
        Array2::from_shape_simple_fn((n, self.mu.len()), &mut draw)
    }
    fn nll_and_grad(&self, x: ArrayView2<T>) -> (T, Vec<T>) {
        if self.nan_above.is_some_and(|t| self.mu[0].f64() > t) {
            return (T::nan(), vec![T::zero(); 2 * self.mu.len()]);
        }
        let z = self.normalize(x);
        let n = T::of(x.nrows() as f64);
        let nll = -self.log_prob(x).sum() / n;
        let d = self.mu.len();
        let mut grad = vec![T::zero(); 2 * d];
        for j in 0..d {
            let zj = z.column(j);
            // d/dmu = -mean(z) / sigma; d/dlog_sigma = 1 - mean(z^2)
            grad[j] = -zj.sum() / n * (-self.log_sigma[j]).exp();
            grad[d + j] = T::one() - zj.dot(&zj) / n;
        }
        (nll, grad)
    }
    fn forward_vjp(
        &self,
        z: ArrayView2<T>,
        gx: ArrayView2<T>,
        gld: ArrayView1<T>,
    ) -> (Vec<T>, Array2<T>) {
        // x = z * sigma + mu, ld = sum log_sigma.
        let sigma = self.sigma();
        let d = self.mu.len();
        let mut grad = vec![T::zero(); 2 * d];
        for j in 0..d {
            grad[j] = gx.column(j).sum();
            grad[d + j] = gx.column(j).dot(&z.column(j)) * sigma[j] + gld.sum();
        }
        (grad, &gx * &sigma)
    }
    fn log_prob_grad_x(&self, x: ArrayView2<T>) -> (Array1<T>, Array2<T>) {
        let z = self.normalize(x);
        (self.log_prob(x), z.mapv(|v| -v) / &self.sigma())
    }
    fn data_init(&mut self, x: ArrayView2<T>) {
        self.init_rows = x.nrows();
    }
    fn dequantize(&self) -> bool {
        self.dequantize
    }
}

/// n rows of independent N(mean_j, std_j^2) columns.
pub(crate) fn gaussian_data(n: usize, mean: &[f64], std: &[f64], seed: u64) -> Array2<f64> {
    let mut rng = crate::rng_from_seed(seed);
    Array2::from_shape_fn((n, mean.len()), |(_, j)| {
        mean[j] + std[j] * rng.sample::<f64, _>(StandardNormal)
    })
}

fn quiet() -> impl FnMut(&Progress) {
    |_| ()
}

#[test]
fn gradient_matches_finite_differences() {
    let x = gaussian_data(50, &[1.0, -2.0], &[0.5, 3.0], 1);
    let mut flow = DiagGauss::<f64>::new(2);
    flow.set_params(&[0.3, -1.0, 0.2, 0.7]);
    let (_, grad) = flow.nll_and_grad(x.view());
    let p0 = flow.params();
    for (k, g) in grad.iter().enumerate() {
        let mut p = p0.clone();
        p[k] += 1e-6;
        flow.set_params(&p);
        let up = flow.mean_nll(x.view());
        p[k] -= 2e-6;
        flow.set_params(&p);
        let down = flow.mean_nll(x.view());
        assert!(((up - down) / 2e-6 - g).abs() < 1e-6, "param {k}");
    }
}

#[test]
fn recovers_mean_and_std() {
    let (mean, std) = ([1.0, -2.0], [0.5, 3.0]);
    let x = gaussian_data(4000, &mean, &std, 2);
    let mut flow = DiagGauss::<f64>::new(2);
    let cfg = TrainConfig {
        steps: 4000,
        lr: 0.02,
        cosine_decay: true,
        batch_size: 128,
        ..Default::default()
    };
    let report = train(&mut flow, x.view(), &cfg, &mut quiet()).unwrap();
    assert_eq!((report.n_train, report.n_val), (3600, 400));
    for j in 0..2 {
        assert!((flow.mu[j] - mean[j]).abs() < 0.1 * std[j], "mu[{j}] = {}", flow.mu[j]);
        let sigma = flow.log_sigma[j].exp();
        assert!((sigma / std[j] - 1.0).abs() < 0.05, "sigma[{j}] = {sigma}");
    }
    // The kept parameters are the ones that validated best.
    let best = report.curve.iter().map(|p| p.val_nll).fold(f64::INFINITY, f64::min);
    assert_eq!(report.best_val_nll, best);
}

#[test]
fn f32_flows_train_too() {
    let x = gaussian_data(1000, &[3.0], &[2.0], 3);
    let mut flow = DiagGauss::<f32>::new(1);
    let cfg = TrainConfig { steps: 3000, lr: 0.02, cosine_decay: true, ..Default::default() };
    train(&mut flow, x.view(), &cfg, &mut quiet()).unwrap();
    assert!((flow.mu[0] - 3.0).abs() < 0.2 && (flow.log_sigma[0].exp() - 2.0).abs() < 0.15);
}

#[test]
fn same_seed_same_result() {
    let x = gaussian_data(700, &[1.0, 2.0], &[1.0, 0.5], 4);
    let cfg = TrainConfig { steps: 300, batch_size: 32, eval_every: 25, ..Default::default() };
    let run = |seed| {
        let mut flow = DiagGauss::<f64>::new(2);
        let r = train(&mut flow, x.view(), &TrainConfig { seed, ..cfg.clone() }, &mut quiet());
        (flow.params(), r.unwrap().curve.iter().map(|p| p.val_nll).collect::<Vec<_>>())
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5).0, run(6).0);
}

#[test]
fn early_stopping_and_progress() {
    let x = gaussian_data(3000, &[0.5], &[1.5], 5);
    let mut flow = DiagGauss::<f64>::new(1);
    let cfg =
        TrainConfig { steps: 100_000, lr: 0.05, eval_every: 20, patience: 3, ..Default::default() };
    let (mut calls, mut evals) = (0, 0);
    let mut on_progress = |p: &Progress| {
        calls += 1;
        evals += p.val_nll.is_some() as usize;
        assert_eq!((p.step, p.steps), (calls, 100_000));
    };
    let report = train(&mut flow, x.view(), &cfg, &mut on_progress).unwrap();
    assert!(report.stopped_early && report.steps_run < 100_000);
    assert_eq!((calls, evals), (report.steps_run, report.curve.len()));
    assert_eq!(flow.init_rows, 1000);
    assert!(report.best_step <= report.steps_run - 3 * 20);
    // The flow holds the best parameters: re-evaluating gives the best validation NLL.
    let mut rng = crate::rng_from_seed(cfg.seed);
    let (_, val) = split(&x.view(), cfg.val_fraction, &mut rng);
    assert_eq!(mean_nll(&flow, val.unwrap().view()), report.best_val_nll);
}

#[test]
fn divergence_restores_best_parameters() {
    let x = gaussian_data(200, &[3.0], &[1.0], 6);
    let mut flow = DiagGauss::<f64>::new(1);
    flow.nan_above = Some(1.0);
    let cfg =
        TrainConfig { steps: 1000, lr: 0.05, eval_every: 1, batch_size: 50, ..Default::default() };
    let err = train(&mut flow, x.view(), &cfg, &mut quiet()).unwrap_err();
    let TrainError::NonFiniteLoss { step, best_step, .. } = err else { panic!("{err}") };
    // Validated every step: the best is the step before the NaN, <= lr past the threshold.
    assert_eq!(best_step, step - 1);
    assert!(flow.mu[0] > 1.0 && flow.mu[0] <= 1.0 + 0.05, "mu = {}", flow.mu[0]);
    assert!(err.to_string().starts_with(&format!("the loss became NaN at step {step}")));
    // Never validated: the parameters from before training are restored exactly.
    let mut flow = DiagGauss::<f64>::new(1);
    flow.nan_above = Some(1.0);
    let cfg = TrainConfig { eval_every: 100_000, ..cfg };
    let err = train(&mut flow, x.view(), &cfg, &mut quiet()).unwrap_err();
    assert!(matches!(err, TrainError::NonFiniteLoss { best_step: 0, .. }));
    assert_eq!(flow.params(), vec![0.0, 0.0]);
}

#[test]
fn bad_inputs_are_errors() {
    let x = gaussian_data(10, &[0.0, 0.0], &[1.0, 1.0], 7);
    let mut flow = DiagGauss::<f64>::new(2);
    let mut run = |x: ArrayView2<f64>, cfg: TrainConfig| train(&mut flow, x, &cfg, &mut quiet());
    let d = TrainConfig::default();
    let bs0 = run(x.view(), TrainConfig { batch_size: 0, ..d.clone() });
    assert!(matches!(bs0, Err(TrainError::BatchSizeZero)));
    assert!(matches!(run(x.slice(s![..0, ..]), d.clone()), Err(TrainError::EmptyData)));
    assert!(matches!(
        run(x.slice(s![..1, ..]), d.clone()),
        Err(TrainError::TooFewRows { rows: 1 })
    ));
    let narrow = run(x.slice(s![.., ..1]), d.clone()).unwrap_err().to_string();
    assert_eq!(narrow, "the data has 1 columns but the flow `Diag` expects 2");
    let vf = run(x.view(), TrainConfig { val_fraction: 1.0, ..d.clone() });
    assert!(matches!(vf, Err(TrainError::InvalidConfig { .. })));
    let ev = run(x.view(), TrainConfig { eval_every: 0, ..d.clone() });
    assert!(matches!(ev, Err(TrainError::InvalidConfig { .. })));
    let mut bad = x.clone();
    bad[[3, 1]] = f64::NAN;
    let nan = run(bad.view(), d.clone()).unwrap_err().to_string();
    assert!(nan.starts_with("row 4, column 2 of the data is NaN"), "{nan}");
}

#[test]
fn zero_steps_and_no_validation_split() {
    let x = gaussian_data(30, &[1.0], &[1.0], 8);
    let mut flow = DiagGauss::<f64>::new(1);
    let cfg = TrainConfig { steps: 0, ..Default::default() };
    let r = train(&mut flow, x.view(), &cfg, &mut quiet()).unwrap();
    assert_eq!((r.steps_run, r.best_step, flow.params()), (0, 0, vec![0.0, 0.0]));
    let cfg = TrainConfig { steps: 10, val_fraction: 0.0, ..Default::default() };
    let r = train(&mut flow, x.view(), &cfg, &mut quiet()).unwrap();
    assert_eq!((r.n_train, r.n_val, r.curve.len()), (30, 0, 1));
    assert_eq!(flow.init_rows, 30);
}

#[test]
fn mean_nll_is_chunk_independent() {
    let x = gaussian_data(9000, &[1.0, 2.0], &[1.0, 2.0], 9);
    let mut flow = DiagGauss::<f64>::new(2);
    flow.set_params(&[0.5, 1.0, 0.1, 0.2]);
    let whole = flow.mean_nll(x.view());
    assert!((mean_nll(&flow, x.view()) - whole).abs() < 1e-12);
    assert!(mean_nll(&flow, x.slice(s![..0, ..])).is_nan());
    let f32_flow = DiagGauss::<f32>::new(2);
    let direct = f32_flow.mean_nll(x.mapv(|v| v as f32).view());
    assert!((mean_nll(&f32_flow, x.view()) - direct).abs() < 1e-4);
}

#[test]
fn cosine_schedule() {
    let cfg = TrainConfig { steps: 100, lr: 0.1, cosine_decay: true, ..Default::default() };
    let lrs: Vec<f64> = (1..=100).map(|s| learning_rate(&cfg, s)).collect();
    assert_eq!(lrs[0], 0.1);
    assert!(lrs.windows(2).all(|w| w[1] < w[0]) && lrs[99] > 0.0 && lrs[99] < 1e-3);
    assert_eq!(learning_rate(&TrainConfig { cosine_decay: false, ..cfg }, 50), 0.1);
}

/// Integer data: rounded-down draws of N(mean, std^2).
fn integer_data(n: usize, mean: f64, std: f64, seed: u64) -> Array2<f64> {
    gaussian_data(n, &[mean, mean], &[std, std], seed).mapv(f64::floor)
}

#[test]
fn dequantized_training_learns_the_noisy_data() {
    let x = integer_data(4000, 3.0, 2.0, 10);
    let cfg = TrainConfig { steps: 4000, lr: 0.02, cosine_decay: true, ..Default::default() };
    let fit = |dequantize| {
        let mut flow = DiagGauss::<f64>::new(2);
        flow.dequantize = dequantize;
        let report = train(&mut flow, x.view(), &cfg, &mut quiet()).unwrap();
        (flow, report)
    };
    let (plain, _) = fit(false);
    let (deq, report) = fit(true);
    // x + u has mean E[x] + 1/2 and variance Var[x] + 1/12: only fresh noise per batch gets
    // there (one fixed draw would also shift the mean, but a fixed draw is what validation uses).
    let mean = x.mean_axis(Axis(0)).unwrap();
    let var = x.var_axis(Axis(0), 0.0);
    for j in 0..2 {
        assert!((plain.mu[j] - mean[j]).abs() < 0.1, "plain mu {}", plain.mu[j]);
        assert!((deq.mu[j] - mean[j] - 0.5).abs() < 0.1, "dequantized mu {}", deq.mu[j]);
        let s2 = (2.0 * deq.log_sigma[j]).exp();
        assert!((s2 / (var[j] + 1.0 / 12.0) - 1.0).abs() < 0.06, "dequantized var {s2}");
    }
    // Validation used the fixed evaluation noise: mean_nll on the same rows reproduces it.
    let mut rng = crate::rng_from_seed(cfg.seed);
    let (_, val) = split(&x.view(), cfg.val_fraction, &mut rng);
    assert_eq!(mean_nll(&deq, val.unwrap().view()), report.best_val_nll);
}

#[test]
fn evaluation_noise_is_fixed_and_chunk_independent() {
    let x = integer_data(9000, 0.0, 3.0, 11);
    let mut flow = DiagGauss::<f64>::new(2);
    flow.set_params(&[0.4, 0.6, 1.0, 1.1]);
    flow.dequantize = true;
    let a = mean_nll(&flow, x.view());
    assert_eq!(a, mean_nll(&flow, x.view()));
    let mut rng = crate::rng_from_seed(EVAL_NOISE_SEED);
    let noisy = x.mapv(|v| v + rng.random::<f64>());
    assert!(noisy.iter().zip(&x).all(|(n, v)| (0.0..1.0).contains(&(n - v))));
    assert!((flow.mean_nll(noisy.view()) - a).abs() < 1e-12);
    flow.dequantize = false;
    assert!((mean_nll(&flow, x.view()) - a).abs() > 1e-3);
    // The f32 flow sees the same noise (drawn in f64).
    let mut f32_flow = DiagGauss::<f32>::new(2);
    f32_flow.dequantize = true;
    let direct = f32_flow.mean_nll(noisy.mapv(|v| v as f32).view());
    assert!((mean_nll(&f32_flow, x.view()) - direct).abs() < 1e-4);
}

#[test]
fn dequantized_runs_are_reproducible_and_init_sees_noisy_rows() {
    let x = integer_data(500, 2.0, 1.0, 12);
    let cfg = TrainConfig { steps: 200, batch_size: 32, eval_every: 50, ..Default::default() };
    let run = || {
        let mut flow = DiagGauss::<f64>::new(2);
        flow.dequantize = true;
        let r = train(&mut flow, x.view(), &cfg, &mut quiet()).unwrap();
        (flow.params(), r.best_val_nll, flow.init_rows)
    };
    let (params, best, init_rows) = run();
    assert_eq!((params.clone(), best), {
        let r = run();
        (r.0, r.1)
    });
    assert_eq!(init_rows, 450);
    assert!(best.is_finite());
}

#[test]
fn bits_per_dim_converts_nats() {
    let ln2 = std::f64::consts::LN_2;
    assert!((bits_per_dim(64.0 * ln2 * 4.087, 64) - 4.087).abs() < 1e-12);
    assert_eq!(bits_per_dim(2.0 * ln2, 1), 2.0);
    assert!(!DiagGauss::<f64>::new(1).dequantize());
}
