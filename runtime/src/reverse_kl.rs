//! Training a flow from a density instead of data: reverse-KL fitting of an unnormalized target
//! log-density ([`fit_reverse_kl`]) and probability density distillation of one flow into
//! another ([`distill`], Parallel WaveNet's teacher/student scheme).
//!
//! Both minimize `KL(q || p) = E_q[log q(x) - log p(x)]` over the flow `q` with the
//! reparameterization gradient: draw `z` from the base, push it through the generative
//! direction `(x, ld) = forward(z)`, take `log q(x) = base_log_prob(z) - ld` from the same pass
//! (the flow never runs its normalizing direction), and backpropagate through
//! [`Flow::forward_vjp`] with `gx = -dlog p/dx / n` and `gld = -1 / n`.
//!
//! The base distribution's parameters are held fixed: the draws `z` are treated as constants,
//! so reverse KL moves the transformation only (`forward_vjp` reports zero for base parameters,
//! and Adam does not move a parameter whose gradient has always been zero).
//!
//! The final report evaluates fresh samples with log importance weights
//! `log w = log p~(x) - log q(x)`: `log_z = log mean w` estimates the target's log normalizer,
//! `ess` is the weights' effective sample size as a fraction of the samples, and `kl` is
//! `log_z - mean log w` for an unnormalized target (`>= 0` by Jensen) or `-mean log w` for a
//! teacher flow, which is normalized.

use crate::error::TrainError;
use crate::flow::Flow;
use crate::optim::Adam;
use crate::real::Real;
use ndarray::{Array1, Array2, ArrayView2};
use std::time::Instant;

/// Samples per generative pass in the final evaluation, to bound memory.
const EVAL_CHUNK: usize = 4096;

/// How to fit by reverse KL or distill.
#[derive(Clone, Debug)]
pub struct KlConfig {
    /// Optimizer steps, each on a fresh batch of base draws.
    pub steps: usize,
    /// Base draws per step.
    pub batch: usize,
    /// Adam's learning rate (the peak one with `cosine_decay`).
    pub lr: f64,
    pub seed: u64,
    /// Fresh samples for the final estimates of the report.
    pub eval_samples: usize,
    /// Steps between points of the report's history.
    pub log_every: usize,
    /// Decay the learning rate to 0 over `steps` along a half cosine.
    pub cosine_decay: bool,
}

impl Default for KlConfig {
    fn default() -> Self {
        Self {
            steps: 2000,
            batch: 256,
            lr: 1e-3,
            seed: 0,
            eval_samples: 10_000,
            log_every: 100,
            cosine_decay: false,
        }
    }
}

/// The outcome of [`fit_reverse_kl`] or [`distill`].
#[derive(Clone, Debug)]
pub struct KlReport {
    /// The final estimate of `E_q[log q - log p]` on `eval_samples` fresh samples, in nats
    /// (`p` normalized by `log_z` for an unnormalized target; see the module docs).
    pub kl: f64,
    /// The standard error of the sample mean of `log q - log p` (the uncertainty of `log_z`
    /// is not included).
    pub kl_std_err: f64,
    /// The effective sample size of the importance weights `w = p / q`, as a fraction of
    /// `eval_samples`: `(sum w)^2 / (n sum w^2)`; 1 when `q` matches the target.
    pub ess: f64,
    /// `log mean(p~ / q)`: an estimate of the target's log normalizer (near 0 for a teacher).
    pub log_z: f64,
    /// `(step, mean training loss since the previous point)` every `log_every` steps and at
    /// the last step. The loss is `E_q[log q - log p~]`, i.e. `KL - log Z` for an unnormalized
    /// target and the KL itself when distilling.
    pub history: Vec<(usize, f64)>,
    pub steps: usize,
    pub seconds: f64,
}

/// A target log-density in the flow's scalar type: `log p~(x)` per row and `d log p~ / dx`.
type Target<'a, T> = dyn FnMut(ArrayView2<T>) -> (Array1<T>, Array2<T>) + 'a;

/// The target of [`fit_reverse_kl`], in f64: `x -> (log p~(x) per row, d log p~/dx)`.
pub type TargetFn<'a> = Target<'a, f64>;

/// Trains `flow` to match the unnormalized target log-density `target(x) -> (log p~(x) per
/// row, d log p~/dx)` by minimizing `E_z[log q(f(z)) - log p~(f(z))]` over reparameterized
/// samples. `progress(step, loss)` is called after every step. A non-finite loss, gradient or
/// final importance weight is an error, and the flow keeps its last finite parameters.
pub fn fit_reverse_kl<F: Flow>(
    flow: &mut F,
    target: &mut TargetFn,
    cfg: &KlConfig,
    progress: &mut dyn FnMut(usize, f64),
) -> Result<KlReport, TrainError> {
    let mut in_real = |x: ArrayView2<F::Real>| {
        let (lp, g) = target(x.mapv(|v| v.f64()).view());
        (lp.mapv(F::Real::of), g.mapv(F::Real::of))
    };
    run(flow, &mut in_real, false, cfg, progress)
}

/// Probability density distillation: trains `student` to minimize
/// `KL(student || teacher) = E_z[log q_s(f_s(z)) - log p_t(f_s(z))]` on the student's own
/// samples. `log q_s` comes from the student's generative pass (it never runs its inverse);
/// the teacher is only evaluated in its normalizing direction, through
/// [`Flow::log_prob_grad_x`]. Errors as in [`fit_reverse_kl`].
pub fn distill<Tc: Flow, St: Flow<Real = Tc::Real>>(
    teacher: &Tc,
    student: &mut St,
    cfg: &KlConfig,
    progress: &mut dyn FnMut(usize, f64),
) -> Result<KlReport, TrainError> {
    if teacher.dim() != student.dim() {
        let (found, expected) = (teacher.dim(), student.dim());
        let flow = student.name().to_string();
        return Err(TrainError::DimMismatch { found, expected, flow });
    }
    run(student, &mut |x| teacher.log_prob_grad_x(x), true, cfg, progress)
}

/// The training loop shared by both entry points; `normalized` says whether the target is a
/// normalized density (a teacher flow), which changes only how `kl` is estimated.
fn run<F: Flow>(
    flow: &mut F,
    target: &mut Target<F::Real>,
    normalized: bool,
    cfg: &KlConfig,
    progress: &mut dyn FnMut(usize, f64),
) -> Result<KlReport, TrainError> {
    check_config(cfg)?;
    let start = Instant::now();
    let mut rng = crate::rng_from_seed(cfg.seed);
    let mut adam = Adam::new(flow.num_params(), cfg.lr);
    let (mut history, mut window) = (Vec::new(), Vec::with_capacity(cfg.log_every));
    for step in 1..=cfg.steps {
        let z = flow.sample_base(cfg.batch, &mut rng);
        // Nothing is written to the flow before the loss and gradient are known to be finite.
        let (loss, grad) = loss_and_grad(&*flow, z.view(), target, step)?;
        adam.lr = learning_rate(cfg, step);
        adam.step_flow(flow, &grad);
        progress(step, loss);
        window.push(loss);
        if step % cfg.log_every == 0 || step == cfg.steps {
            history.push((step, window.iter().sum::<f64>() / window.len() as f64));
            window.clear();
        }
    }
    let lw = log_weights(&*flow, target, cfg, &mut rng)?;
    let est = Estimates::from_log_weights(&lw, normalized);
    let (kl, kl_std_err, ess, log_z) = (est.kl, est.kl_std_err, est.ess, est.log_z);
    let seconds = start.elapsed().as_secs_f64();
    Ok(KlReport { kl, kl_std_err, ess, log_z, history, steps: cfg.steps, seconds })
}

/// Rejects configurations the loop cannot run.
fn check_config(cfg: &KlConfig) -> Result<(), TrainError> {
    let invalid = |what: String| Err(TrainError::InvalidConfig { what });
    if cfg.batch == 0 {
        return Err(TrainError::BatchSizeZero);
    }
    if !(cfg.lr.is_finite() && cfg.lr > 0.0) {
        return invalid(format!("the learning rate must be positive, got {}", cfg.lr));
    }
    if cfg.eval_samples == 0 {
        return invalid("eval_samples must be at least 1".into());
    }
    if cfg.log_every == 0 {
        return invalid("log_every must be at least 1".into());
    }
    Ok(())
}

/// The learning rate of `step` (1-based): constant, or a half cosine from `lr` towards 0.
fn learning_rate(cfg: &KlConfig, step: usize) -> f64 {
    if !cfg.cosine_decay {
        return cfg.lr;
    }
    let progress = (step - 1) as f64 / cfg.steps as f64;
    0.5 * cfg.lr * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// The Monte-Carlo loss `mean(log q(x) - log p~(x))` over the base draws `z`, `x = f(z)`, and
/// its reparameterization gradient with respect to the flow's parameters.
pub(crate) fn loss_and_grad<F: Flow + ?Sized>(
    flow: &F,
    z: ArrayView2<F::Real>,
    target: &mut Target<F::Real>,
    step: usize,
) -> Result<(f64, Vec<F::Real>), TrainError> {
    let n = z.nrows();
    let (x, ld) = flow.forward(z);
    let (lp, dlp) = call_target(target, x.view())?;
    let lq = flow.base_log_prob(z) - &ld;
    let loss = lq.iter().zip(&lp).map(|(q, p)| q.f64() - p.f64()).sum::<f64>() / n as f64;
    if !loss.is_finite() {
        return Err(TrainError::NonFiniteKl { step, what: "loss", value: loss });
    }
    // log q(x) = base_log_prob(z) - ld, and z does not depend on the parameters.
    let scale = F::Real::of(-1.0 / n as f64);
    let gld = Array1::from_elem(n, scale);
    let (grad, _) = flow.forward_vjp(z, (dlp * scale).view(), gld.view());
    match grad.iter().find(|g| !g.f64().is_finite()) {
        Some(g) => Err(TrainError::NonFiniteKl { step, what: "gradient", value: g.f64() }),
        None => Ok((loss, grad)),
    }
}

/// Calls the target and checks the shapes of what it returns.
fn call_target<T: Real>(
    target: &mut Target<T>,
    x: ArrayView2<T>,
) -> Result<(Array1<T>, Array2<T>), TrainError> {
    let (lp, dlp) = target(x);
    let shape_error = |what, found: &[usize], expected: &[usize]| TrainError::TargetShape {
        what,
        found: found.to_vec(),
        expected: expected.to_vec(),
    };
    if lp.len() != x.nrows() {
        return Err(shape_error("the log-density", lp.shape(), &[x.nrows()]));
    }
    if dlp.dim() != x.dim() {
        return Err(shape_error("the gradient", dlp.shape(), x.shape()));
    }
    Ok((lp, dlp))
}

/// `log p~(x) - log q(x)` of `cfg.eval_samples` fresh samples. A sample where the target is
/// zero (`-inf`) is a legitimate weight of 0; NaN or `+inf` is an error.
fn log_weights<F: Flow>(
    flow: &F,
    target: &mut Target<F::Real>,
    cfg: &KlConfig,
    rng: &mut crate::FlowRng,
) -> Result<Vec<f64>, TrainError> {
    let mut lw = Vec::with_capacity(cfg.eval_samples);
    while lw.len() < cfg.eval_samples {
        let z = flow.sample_base(EVAL_CHUNK.min(cfg.eval_samples - lw.len()), rng);
        let (x, ld) = flow.forward(z.view());
        let (lp, _) = call_target(target, x.view())?;
        let lq = flow.base_log_prob(z.view()) - &ld;
        lw.extend(lp.iter().zip(&lq).map(|(p, q)| p.f64() - q.f64()));
    }
    match lw.iter().find(|v| v.is_nan() || **v == f64::INFINITY) {
        Some(&value) => {
            let (step, what) = (cfg.steps, "log importance weight of the final evaluation");
            Err(TrainError::NonFiniteKl { step, what, value })
        }
        None => Ok(lw),
    }
}

/// The report's estimates from log importance weights (none NaN or `+inf`).
#[derive(Clone, Copy, Debug)]
struct Estimates {
    kl: f64,
    kl_std_err: f64,
    ess: f64,
    log_z: f64,
}

impl Estimates {
    fn from_log_weights(lw: &[f64], normalized: bool) -> Self {
        let n = lw.len() as f64;
        let lse = log_sum_exp(lw.iter().copied());
        let log_z = lse - n.ln();
        let mean = lw.iter().sum::<f64>() / n;
        if mean == f64::NEG_INFINITY {
            // Some sample has target density zero: the KL is infinite.
            let (kl, kl_std_err) = (f64::INFINITY, f64::INFINITY);
            let ess = if lse == f64::NEG_INFINITY { 0.0 } else { ess(lw, lse, n) };
            return Self { kl, kl_std_err, ess, log_z };
        }
        let var = lw.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
        let kl = if normalized { -mean } else { log_z - mean };
        Self { kl, kl_std_err: (var / n).sqrt(), ess: ess(lw, lse, n), log_z }
    }
}

/// `(sum w)^2 / (n sum w^2)` from log-weights, with `lse = log sum w` (finite).
fn ess(lw: &[f64], lse: f64, n: f64) -> f64 {
    let lse2 = log_sum_exp(lw.iter().map(|v| 2.0 * v));
    (2.0 * lse - lse2 - n.ln()).exp()
}

/// `log sum exp(v)`, shifted by the maximum; `-inf` for no values or all `-inf`.
fn log_sum_exp(v: impl Iterator<Item = f64> + Clone) -> f64 {
    let m = v.clone().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + v.map(|x| (x - m).exp()).sum::<f64>().ln()
}

#[cfg(test)]
mod tests;
