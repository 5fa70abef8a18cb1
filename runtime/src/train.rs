//! Maximum-likelihood training of any [`Flow`]: Adam on mini-batches, a validation split for
//! early stopping, and the best parameters restored at the end. Deterministic given the seed.
//!
//! Flows that [`Flow::dequantize`] model integer data `x` through `x + u`, `u ~ U[0, 1)^D`
//! (uniform dequantization, Theis et al. 2016): every training batch gets fresh noise from the
//! training RNG, so the flow sees a new dequantization each epoch, while validation and
//! [`mean_nll`] use one fixed draw (seed [`EVAL_NOISE_SEED`], in row order) so that the numbers
//! they report are reproducible and comparable between runs.

use crate::data::holdout_count;
use crate::error::TrainError;
use crate::flow::Flow;
use crate::optim::Adam;
use crate::real::Real;
use ndarray::{s, Array2, ArrayView2, Axis};
use rand::seq::SliceRandom;
use rand::RngExt;
use std::collections::VecDeque;

/// Rows per forward pass when evaluating, to bound memory on large datasets.
const EVAL_CHUNK: usize = 4096;
/// Rows given to data-dependent initialisation (actnorm statistics settle well before this).
const INIT_ROWS: usize = 1000;
/// The seed of the one dequantization noise draw every evaluation of a dequantizing flow uses
/// (the reference scripts use `torch.Generator().manual_seed(1234)`; the draws differ, the
/// role is the same).
pub const EVAL_NOISE_SEED: u64 = 1234;

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
    let dequantize = flow.dequantize();
    let (train_x, val_x) = prepare(flow, &data, cfg, &mut rng);
    let mut run = Run::new(&*flow, val_x.view(), cfg);
    let mut batches = Batches::new(train_x.nrows(), cfg.batch_size);
    let mut report_step = 0;
    for step in 1..=cfg.steps {
        let mut batch = train_x.select(Axis(0), batches.next(&mut rng));
        if dequantize {
            add_uniform_noise(&mut batch, &mut rng);
        }
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

/// Splits the data into training and validation rows in the flow's scalar type (validating on
/// the training rows when there is no split), gives a dequantizing flow's validation rows the
/// fixed evaluation noise, and runs data-dependent initialisation on the first training rows
/// (with fresh noise when dequantizing, as training batches get).
fn prepare<F: Flow>(
    flow: &mut F,
    data: &ArrayView2<f64>,
    cfg: &TrainConfig,
    rng: &mut crate::FlowRng,
) -> (Array2<F::Real>, Array2<F::Real>) {
    let (train_rows, val_rows) = split(data, cfg.val_fraction, rng);
    let val_rows = val_rows.as_ref().unwrap_or(&train_rows);
    let val_x = EvalNoise::new(flow.dequantize()).apply(val_rows.view());
    let train_x = train_rows.mapv(F::Real::of);
    let mut init = train_x.slice(s![..train_x.nrows().min(INIT_ROWS), ..]).to_owned();
    if flow.dequantize() {
        add_uniform_noise(&mut init, rng);
    }
    flow.data_init(init.view());
    (train_x, val_x)
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

/// Shuffles the rows and splits them into (training, validation); no validation rows when
/// `fraction` is 0.
fn split(
    data: &ArrayView2<f64>,
    fraction: f64,
    rng: &mut crate::FlowRng,
) -> (Array2<f64>, Option<Array2<f64>>) {
    let n_val = holdout_count(data.nrows(), fraction);
    let mut idx: Vec<usize> = (0..data.nrows()).collect();
    idx.shuffle(rng);
    let rows = |r: &[usize]| data.select(Axis(0), r);
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
        self.adam.step_flow(flow, &grad);
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

/// Adds fresh U[0, 1) noise to every value (drawn in f64, so both dtypes use the RNG alike).
fn add_uniform_noise<T: Real>(x: &mut Array2<T>, rng: &mut crate::FlowRng) {
    x.mapv_inplace(|v| v + T::of(rng.random::<f64>()));
}

/// The fixed dequantization noise of evaluations: one stream from [`EVAL_NOISE_SEED`] consumed
/// in row order, so evaluating the same rows in one piece or in chunks adds the same noise.
struct EvalNoise(Option<crate::FlowRng>);

impl EvalNoise {
    fn new(dequantize: bool) -> Self {
        Self(dequantize.then(|| crate::rng_from_seed(EVAL_NOISE_SEED)))
    }

    /// The next rows in the flow's scalar type, with noise added in f64 if dequantizing.
    fn apply<T: Real>(&mut self, rows: ArrayView2<f64>) -> Array2<T> {
        match &mut self.0 {
            Some(rng) => rows.mapv(|v| T::of(v + rng.random::<f64>())),
            None => rows.mapv(T::of),
        }
    }
}

/// The mean negative log-likelihood of the rows of `data`, evaluated in chunks of 4096 rows
/// (converted to the flow's scalar type chunk by chunk). NaN when there are no rows. For a
/// dequantizing flow the rows get the fixed evaluation noise first (see the module docs).
pub fn mean_nll<F: Flow + ?Sized>(flow: &F, data: ArrayView2<f64>) -> f64 {
    let mut noise = EvalNoise::new(flow.dequantize());
    let total: f64 = data
        .axis_chunks_iter(Axis(0), EVAL_CHUNK)
        .map(|chunk| flow.mean_nll(noise.apply(chunk).view()) * chunk.nrows() as f64)
        .sum();
    total / data.nrows() as f64
}

/// Converts a negative log-likelihood in nats per D-dimensional point into bits per dimension:
/// `nll / (D ln 2)`. For the NLL of dequantized integer data `x + u` (on the integers' own
/// scale) this is the usual bits/dim, an upper bound on `-log2 P(x) / D`.
pub fn bits_per_dim(nll_nats: f64, dim: usize) -> f64 {
    nll_nats / (dim as f64 * std::f64::consts::LN_2)
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
pub(crate) mod tests;
