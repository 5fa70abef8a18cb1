//! Maximum-likelihood training of any [`Flow`]: Adam on mini-batches, a validation split for
//! early stopping, and the best parameters restored at the end. Deterministic given the seed.

use crate::data::holdout_count;
use crate::error::TrainError;
use crate::flow::Flow;
use crate::optim::Adam;
use crate::real::Real;
use ndarray::{s, Array2, ArrayView2, Axis};
use rand::seq::SliceRandom;
use std::collections::VecDeque;

/// Rows per forward pass when evaluating, to bound memory on large datasets.
const EVAL_CHUNK: usize = 4096;
/// Rows given to data-dependent initialisation (actnorm statistics settle well before this).
const INIT_ROWS: usize = 1000;

/// How to train.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// Optimizer steps (mini-batches), at most.
    pub steps: usize,
    pub batch_size: usize,
    /// Adam's learning rate (the peak one with `cosine_decay`).
    pub lr: f64,
    /// The share of the data held out for validation; with 0 the training data is validated on.
    pub val_fraction: f64,
    /// Steps between validations.
    pub eval_every: usize,
    /// Validations without improvement before stopping; 0 never stops early.
    pub patience: usize,
    pub seed: u64,
    /// Decay the learning rate to 0 over `steps` along a half cosine.
    pub cosine_decay: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            steps: 3000,
            batch_size: 256,
            lr: 1e-3,
            val_fraction: 0.1,
            eval_every: 100,
            patience: 10,
            seed: 0,
            cosine_decay: false,
        }
    }
}

/// What the progress callback sees after every step.
#[derive(Clone, Debug)]
pub struct Progress {
    pub step: usize,
    pub steps: usize,
    /// The mean training loss over the last `eval_every` steps.
    pub train_nll: f64,
    /// The validation NLL, on the steps that validate.
    pub val_nll: Option<f64>,
    pub best_val_nll: f64,
}

/// One validation of the learning curve.
#[derive(Clone, Debug)]
pub struct CurvePoint {
    pub step: usize,
    pub train_nll: f64,
    pub val_nll: f64,
}

/// The outcome of [`train`].
#[derive(Clone, Debug)]
pub struct TrainReport {
    pub steps_run: usize,
    /// The step whose parameters were kept (0: those before training were best).
    pub best_step: usize,
    pub best_val_nll: f64,
    pub stopped_early: bool,
    pub curve: Vec<CurvePoint>,
    pub n_train: usize,
    pub n_val: usize,
}

/// Trains `flow` on the rows of `data` (n x D) and leaves it with the parameters that
/// validated best. `on_progress` is called after every step.
pub fn train<F: Flow>(
    flow: &mut F,
    data: ArrayView2<f64>,
    cfg: &TrainConfig,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<TrainReport, TrainError> {
    check_inputs(&*flow, &data, cfg)?;
    let mut rng = crate::rng_from_seed(cfg.seed);
    let (train_x, val_x) = split(&data, cfg.val_fraction, &mut rng);
    let val_x = val_x.unwrap_or_else(|| train_x.clone());
    flow.data_init(train_x.slice(s![..train_x.nrows().min(INIT_ROWS), ..]));
    let mut run = Run::new(&*flow, val_x.view(), cfg);
    let mut batches = Batches::new(train_x.nrows(), cfg.batch_size);
    let mut report_step = 0;
    for step in 1..=cfg.steps {
        let batch = train_x.select(Axis(0), batches.next(&mut rng));
        let train_nll = run.optimize(flow, batch.view(), step)?;
        let validate = step % cfg.eval_every == 0 || step == cfg.steps;
        let val_nll = validate.then(|| mean_nll_rows(&*flow, val_x.view()));
        let stop = val_nll.is_some_and(|v| run.record_validation(&*flow, step, train_nll, v));
        let best_val_nll = run.best_val;
        on_progress(&Progress { step, steps: cfg.steps, train_nll, val_nll, best_val_nll });
        report_step = step;
        if stop {
            break;
        }
    }
    flow.set_params(&run.best_params);
    Ok(run.into_report(report_step, train_x.nrows(), data.nrows() - train_x.nrows()))
}

/// Rejects configurations and data that training cannot use.
fn check_inputs<F: Flow + ?Sized>(
    flow: &F,
    data: &ArrayView2<f64>,
    cfg: &TrainConfig,
) -> Result<(), TrainError> {
    let invalid = |what: String| Err(TrainError::InvalidConfig { what });
    if cfg.batch_size == 0 {
        return Err(TrainError::BatchSizeZero);
    }
    if cfg.eval_every == 0 {
        return invalid("eval_every must be at least 1".into());
    }
    if !(cfg.lr.is_finite() && cfg.lr > 0.0) {
        return invalid(format!("the learning rate must be positive, got {}", cfg.lr));
    }
    if !(0.0..1.0).contains(&cfg.val_fraction) {
        return invalid(format!("val_fraction must be in [0, 1), got {}", cfg.val_fraction));
    }
    if data.nrows() == 0 {
        return Err(TrainError::EmptyData);
    }
    if cfg.val_fraction > 0.0 && data.nrows() < 2 {
        return Err(TrainError::TooFewRows { rows: data.nrows() });
    }
    if data.ncols() != flow.dim() {
        let (found, expected, flow) = (data.ncols(), flow.dim(), flow.name().to_string());
        return Err(TrainError::DimMismatch { found, expected, flow });
    }
    match data.indexed_iter().find(|(_, v)| !v.is_finite()) {
        Some(((i, j), &value)) => Err(TrainError::NonFiniteData { row: i + 1, col: j + 1, value }),
        None => Ok(()),
    }
}

/// Shuffles the rows and splits them into (training, validation), both in the flow's scalar
/// type; no validation rows when `fraction` is 0.
fn split<T: Real>(
    data: &ArrayView2<f64>,
    fraction: f64,
    rng: &mut crate::FlowRng,
) -> (Array2<T>, Option<Array2<T>>) {
    let n_val = holdout_count(data.nrows(), fraction);
    let mut idx: Vec<usize> = (0..data.nrows()).collect();
    idx.shuffle(rng);
    let rows = |r: &[usize]| data.select(Axis(0), r).mapv(T::of);
    let val = (n_val > 0).then(|| rows(&idx[..n_val]));
    (rows(&idx[n_val..]), val)
}

/// The learning rate of `step` (1-based): constant, or a half cosine from `lr` towards 0.
fn learning_rate(cfg: &TrainConfig, step: usize) -> f64 {
    if !cfg.cosine_decay {
        return cfg.lr;
    }
    let progress = (step - 1) as f64 / cfg.steps as f64;
    0.5 * cfg.lr * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// Epochs of reshuffled mini-batch row indices (the last batch of an epoch may be smaller).
struct Batches {
    order: Vec<usize>,
    at: usize,
    size: usize,
}

impl Batches {
    fn new(n: usize, size: usize) -> Self {
        Self { order: (0..n).collect(), at: n, size }
    }

    fn next(&mut self, rng: &mut crate::FlowRng) -> &[usize] {
        if self.at >= self.order.len() {
            self.order.shuffle(rng);
            self.at = 0;
        }
        let end = (self.at + self.size).min(self.order.len());
        let rows = &self.order[self.at..end];
        self.at = end;
        rows
    }
}

/// The mutable state of a training run: optimizer, loss window, best parameters so far.
struct Run<T> {
    adam: Adam,
    /// The flow's parameters, kept here between steps to avoid copying them out each time.
    params: Vec<T>,
    cfg: TrainConfig,
    window: VecDeque<f64>,
    best_params: Vec<T>,
    best_val: f64,
    best_step: usize,
    evals_since_best: usize,
    curve: Vec<CurvePoint>,
}

impl<T: Real> Run<T> {
    /// Starts from the flow's current parameters, which count as the best until beaten.
    fn new<F: Flow<Real = T> + ?Sized>(flow: &F, val: ArrayView2<T>, cfg: &TrainConfig) -> Self {
        let initial = mean_nll_rows(flow, val);
        Self {
            adam: Adam::new(flow.num_params(), cfg.lr),
            params: flow.params(),
            cfg: cfg.clone(),
            window: VecDeque::with_capacity(cfg.eval_every),
            best_params: flow.params(),
            best_val: if initial.is_finite() { initial } else { f64::INFINITY },
            best_step: 0,
            evals_since_best: 0,
            curve: Vec::new(),
        }
    }

    /// One Adam step on `batch`; returns the running training NLL. A non-finite loss restores
    /// the best parameters and ends training.
    fn optimize<F: Flow<Real = T> + ?Sized>(
        &mut self,
        flow: &mut F,
        batch: ArrayView2<T>,
        step: usize,
    ) -> Result<f64, TrainError> {
        let (loss, grad) = flow.nll_and_grad(batch);
        let loss = loss.f64();
        if !loss.is_finite() {
            flow.set_params(&self.best_params);
            return Err(TrainError::NonFiniteLoss { step, loss, best_step: self.best_step });
        }
        self.adam.lr = learning_rate(&self.cfg, step);
        self.adam.step(&mut self.params, &grad);
        flow.set_params(&self.params);
        Ok(self.record_loss(loss))
    }

    /// Adds a step's loss and returns the mean over the window.
    fn record_loss(&mut self, loss: f64) -> f64 {
        if self.window.len() == self.cfg.eval_every {
            self.window.pop_front();
        }
        self.window.push_back(loss);
        // Summed afresh (at most eval_every terms) so no rounding drift accumulates.
        self.window.iter().sum::<f64>() / self.window.len() as f64
    }

    /// Records a validation; returns whether patience has run out.
    fn record_validation<F>(&mut self, flow: &F, step: usize, train_nll: f64, val: f64) -> bool
    where
        F: Flow<Real = T> + ?Sized,
    {
        self.curve.push(CurvePoint { step, train_nll, val_nll: val });
        // A NaN validation never compares as better, so it counts against patience.
        if val < self.best_val {
            self.best_val = val;
            self.best_step = step;
            self.best_params = flow.params();
            self.evals_since_best = 0;
            return false;
        }
        self.evals_since_best += 1;
        self.cfg.patience > 0 && self.evals_since_best >= self.cfg.patience
    }

    fn into_report(self, steps_run: usize, n_train: usize, n_val: usize) -> TrainReport {
        TrainReport {
            steps_run,
            best_step: self.best_step,
            best_val_nll: self.best_val,
            stopped_early: steps_run < self.cfg.steps,
            curve: self.curve,
            n_train,
            n_val,
        }
    }
}

/// The mean negative log-likelihood of the rows of `data`, evaluated in chunks of 4096 rows
/// (converted to the flow's scalar type chunk by chunk). NaN when there are no rows.
pub fn mean_nll<F: Flow + ?Sized>(flow: &F, data: ArrayView2<f64>) -> f64 {
    let total: f64 = data
        .axis_chunks_iter(Axis(0), EVAL_CHUNK)
        .map(|chunk| flow.mean_nll(chunk.mapv(F::Real::of).view()) * chunk.nrows() as f64)
        .sum();
    total / data.nrows() as f64
}

/// [`mean_nll`] of rows already in the flow's scalar type.
fn mean_nll_rows<F: Flow + ?Sized>(flow: &F, data: ArrayView2<F::Real>) -> f64 {
    let total: f64 = data
        .axis_chunks_iter(Axis(0), EVAL_CHUNK)
        .map(|chunk| flow.mean_nll(chunk) * chunk.nrows() as f64)
        .sum();
    total / data.nrows() as f64
}

#[cfg(test)]
pub(crate) mod tests {
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
    }

    impl<T: Real> DiagGauss<T> {
        pub fn new(d: usize) -> Self {
            let fingerprint = 0xF00D_0000 + d as u64 + if T::DTYPE == "f32" { 1 << 40 } else { 0 };
            let zeros = vec![T::zero(); d];
            Self { mu: zeros.clone(), log_sigma: zeros, init_rows: 0, nan_above: None, fingerprint }
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
        fn data_init(&mut self, x: ArrayView2<T>) {
            self.init_rows = x.nrows();
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
        let cfg = TrainConfig {
            steps: 100_000,
            lr: 0.05,
            eval_every: 20,
            patience: 3,
            ..Default::default()
        };
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
        let (_, val) = split::<f64>(&x.view(), cfg.val_fraction, &mut rng);
        assert_eq!(mean_nll(&flow, val.unwrap().view()), report.best_val_nll);
    }

    #[test]
    fn divergence_restores_best_parameters() {
        let x = gaussian_data(200, &[3.0], &[1.0], 6);
        let mut flow = DiagGauss::<f64>::new(1);
        flow.nan_above = Some(1.0);
        let cfg = TrainConfig {
            steps: 1000,
            lr: 0.05,
            eval_every: 1,
            batch_size: 50,
            ..Default::default()
        };
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
        let mut run =
            |x: ArrayView2<f64>, cfg: TrainConfig| train(&mut flow, x, &cfg, &mut quiet());
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
}
