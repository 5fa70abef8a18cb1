//! Timing of a flow's training step, log_prob and sampling: the measuring half of
//! `flowspec bench`, shared by the interpreter and the benchmark binary it builds from the
//! generated code, so both engines are timed by the same code.
//!
//! The method mirrors the PyTorch side (`bench/torch/bench_torch.py`): one untimed probe call
//! sizes the repeats so that each lasts at least `target_secs` (0.25 s), then a warm-up, then
//! the median over `repeats` timed repeats. A training step is what a training loop does: the
//! mean NLL of a batch, its gradient, and one Adam update (lr 1e-3) written back into the flow.
//! Every repeat also records how many cores other processes used meanwhile (from /proc), so a
//! figure measured on a busy machine can be recognised.

use crate::flow::Flow;
use crate::optim::Adam;
use crate::real::Real;
use crate::rng_from_seed;
use ndarray::{Array2, ArrayView2, Axis};
use rand::RngExt;
use std::time::Instant;

/// Points given to `log_prob` and drawn by `sample`, as one batch (the PyTorch side's N_EVAL).
pub const N_EVAL: usize = 10_000;

/// What can be timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// One Adam step on a batch: NLL, backward pass, update (ms/step).
    Train,
    /// `log_prob` of `n` points as one batch (samples/s).
    LogProb,
    /// `sample(n)` (samples/s).
    Sample,
    /// The per-sample API `log_prob_one`, where the engine has one (generated code).
    LogProbOne,
}

impl Metric {
    pub const ALL: [Metric; 4] =
        [Metric::Train, Metric::LogProb, Metric::Sample, Metric::LogProbOne];

    /// The name on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Train => "train",
            Metric::LogProb => "log_prob",
            Metric::Sample => "sample",
            Metric::LogProbOne => "log_prob_one",
        }
    }

    pub fn parse(s: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.name() == s.trim())
    }

    /// A comma-separated list (`train,log_prob`); the error names the unknown entry.
    pub fn parse_list(s: &str) -> Result<Vec<Metric>, String> {
        let mut out = Vec::new();
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let m = Metric::parse(part).ok_or_else(|| {
                let known: Vec<_> = Metric::ALL.iter().map(|m| m.name()).collect();
                format!("unknown benchmark `{}`; known: {}", part.trim(), known.join(", "))
            })?;
            if !out.contains(&m) {
                out.push(m);
            }
        }
        if out.is_empty() {
            return Err("no benchmark chosen".into());
        }
        Ok(out)
    }
}

/// How to measure.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Rows per training batch.
    pub batch: usize,
    /// Points for log_prob and sample.
    pub n: usize,
    pub metrics: Vec<Metric>,
    /// The shortest timed repeat, in seconds.
    pub target_secs: f64,
    /// Timed repeats per figure (the median is reported).
    pub repeats: usize,
    pub seed: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            batch: 256,
            n: N_EVAL,
            metrics: vec![Metric::Train, Metric::LogProb, Metric::Sample],
            target_secs: 0.25,
            repeats: 7,
            seed: 0,
        }
    }
}

/// One measured figure.
#[derive(Clone, Debug)]
pub struct Figure {
    pub metric: Metric,
    /// Rows per call: the batch (train), `n` (log_prob, sample) or 1 (log_prob_one).
    pub rows: usize,
    /// Median seconds per call (per step for train).
    pub median_s: f64,
    pub min_s: f64,
    /// Calls per timed repeat, and timed repeats.
    pub inner: usize,
    pub repeats: usize,
    /// The mean number of cores other processes used during the timed repeats.
    pub foreign_cores: f64,
    /// CPU time of this process (all its threads) per call, over all timed repeats: less
    /// sensitive than wall time to other processes on a busy machine (10 ms resolution).
    pub cpu_s: f64,
}

impl Figure {
    pub fn samples_per_s(&self) -> f64 {
        self.rows as f64 / self.median_s
    }
}

/// The per-sample `log_prob_one` of an engine that has one, on a row of `dim()` values.
pub type LogProbOne<'a, F> = &'a dyn Fn(&F, &[<F as Flow>::Real]) -> <F as Flow>::Real;

/// Times `flow` on rows drawn from `data` (n x D, f64). Training steps change the flow's
/// parameters (it is data-initialised first, as training does). `one` is the engine's
/// per-sample log_prob; without it a `LogProbOne` request is skipped.
pub fn run<F: Flow>(
    flow: &mut F,
    data: ArrayView2<f64>,
    s: &Settings,
    one: Option<LogProbOne<'_, F>>,
) -> Vec<Figure> {
    let init = draw_rows::<F::Real>(data, data.nrows().clamp(1, 1000), s.seed);
    flow.data_init(init.view());
    let mut out = Vec::new();
    for &m in &s.metrics {
        let fig = match m {
            Metric::Train => Some(train_step(flow, data, s)),
            Metric::LogProb => Some(log_prob(&*flow, data, s)),
            Metric::Sample => Some(sample(&*flow, s)),
            Metric::LogProbOne => one.map(|one| log_prob_one(&*flow, data, s, one)),
        };
        out.extend(fig);
    }
    out
}

/// `n` rows drawn with replacement from `data`, seeded, in the flow's scalar type.
fn draw_rows<T: Real>(data: ArrayView2<f64>, n: usize, seed: u64) -> Array2<T> {
    let mut rng = rng_from_seed(seed);
    let rows: Vec<usize> = (0..n).map(|_| rng.random_range(0..data.nrows())).collect();
    data.select(Axis(0), &rows).mapv(T::of)
}

fn train_step<F: Flow>(flow: &mut F, data: ArrayView2<f64>, s: &Settings) -> Figure {
    // As the PyTorch side: 64 batches of data (8 for big batches), cycled.
    let n_batches = if s.batch <= 256 { 64 } else { 8 };
    let rows = draw_rows::<F::Real>(data, n_batches * s.batch, s.seed.wrapping_add(1));
    let batches: Vec<Array2<F::Real>> =
        rows.axis_chunks_iter(Axis(0), s.batch).map(|b| b.to_owned()).collect();
    let mut adam = Adam::new(flow.num_params(), 1e-3);
    let mut at = 0;
    let mut step = || {
        let (_, grad) = flow.nll_and_grad(batches[at % batches.len()].view());
        at += 1;
        adam.step_flow(flow, &grad);
    };
    for _ in 0..10 {
        step();
    }
    let mut fig = measure(&mut step, s, 2);
    fig.metric = Metric::Train;
    fig.rows = s.batch;
    fig
}

fn log_prob<F: Flow>(flow: &F, data: ArrayView2<f64>, s: &Settings) -> Figure {
    let x = draw_rows::<F::Real>(data, s.n, s.seed.wrapping_add(2));
    let mut f = || {
        std::hint::black_box(flow.log_prob(x.view()));
    };
    let mut fig = measure(&mut f, s, 1);
    fig.metric = Metric::LogProb;
    fig.rows = s.n;
    fig
}

fn sample<F: Flow>(flow: &F, s: &Settings) -> Figure {
    let mut rng = rng_from_seed(s.seed.wrapping_add(3));
    let mut f = || {
        std::hint::black_box(flow.sample(s.n, &mut rng));
    };
    let mut fig = measure(&mut f, s, 1);
    fig.metric = Metric::Sample;
    fig.rows = s.n;
    fig
}

fn log_prob_one<F: Flow>(
    flow: &F,
    data: ArrayView2<f64>,
    s: &Settings,
    one: LogProbOne<'_, F>,
) -> Figure {
    const POINTS: usize = 1024;
    let x = draw_rows::<F::Real>(data, POINTS, s.seed.wrapping_add(4));
    let x = x.as_standard_layout();
    let flat = x.as_slice().expect("standard layout");
    let d = flow.dim();
    let mut at = 0;
    // One timed call is a pass over all POINTS points (a single call is below the clock's
    // resolution); the figure is divided back to one point.
    let mut f = || {
        for _ in 0..POINTS {
            std::hint::black_box(one(flow, &flat[at * d..(at + 1) * d]));
            at = (at + 1) % POINTS;
        }
    };
    let mut fig = measure(&mut f, s, 1);
    fig.metric = Metric::LogProbOne;
    fig.rows = 1;
    fig.median_s /= POINTS as f64;
    fig.min_s /= POINTS as f64;
    fig.cpu_s /= POINTS as f64;
    fig
}

/// Probes `f` once, sizes repeats to last `target_secs`, warms up and times. Calls slower
/// than 1.5 s get 3 repeats of one call and no further warm-up (as the PyTorch side).
fn measure(f: &mut dyn FnMut(), s: &Settings, warmup: usize) -> Figure {
    let t0 = Instant::now();
    f();
    let probe = t0.elapsed().as_secs_f64();
    let (repeats, inner, warmup) = if probe > 1.5 {
        (3.min(s.repeats.max(1)), 1, 0)
    } else {
        (s.repeats.max(1), ((s.target_secs / probe.max(1e-7)).ceil() as usize).max(1), warmup)
    };
    for _ in 0..warmup {
        f();
    }
    let mut times = Vec::with_capacity(repeats);
    let mut foreign = 0.0;
    let start = CpuSample::now();
    for _ in 0..repeats {
        let a = CpuSample::now();
        let t0 = Instant::now();
        for _ in 0..inner {
            f();
        }
        let t = t0.elapsed().as_secs_f64() / inner as f64;
        foreign += CpuSample::now().map_or(0.0, |b| a.map_or(0.0, |a| a.foreign_cores(&b)));
        times.push(t);
    }
    let own = match (start, CpuSample::now()) {
        (Some(a), Some(b)) => b.own.saturating_sub(a.own) as f64 / 100.0,
        _ => f64::NAN,
    };
    times.sort_by(f64::total_cmp);
    Figure {
        cpu_s: own / (repeats * inner) as f64,
        metric: Metric::Train,
        rows: 0,
        median_s: median(&times),
        min_s: times[0],
        inner,
        repeats,
        foreign_cores: foreign / repeats as f64,
    }
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        0.5 * (sorted[n / 2 - 1] + sorted[n / 2])
    }
}

/// Wall time, busy jiffies of the whole machine and of this process (Linux /proc).
#[derive(Clone, Copy)]
struct CpuSample {
    at: Instant,
    busy: u64,
    own: u64,
}

impl CpuSample {
    fn now() -> Option<CpuSample> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let v: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .take(8)
            .filter_map(|x| x.parse().ok())
            .collect();
        let busy = v.iter().sum::<u64>().checked_sub(v.get(3)? + v.get(4)?)?;
        let me = std::fs::read_to_string("/proc/self/stat").ok()?;
        let f: Vec<&str> = me.rsplit_once(')')?.1.split_whitespace().collect();
        let own = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        Some(CpuSample { at: Instant::now(), busy, own })
    }

    /// Cores used by other processes between `self` and `later` (USER_HZ = 100 on Linux).
    fn foreign_cores(&self, later: &CpuSample) -> f64 {
        let dt = later.at.duration_since(self.at).as_secs_f64().max(1e-9);
        let other =
            later.busy.saturating_sub(self.busy) as f64 - later.own.saturating_sub(self.own) as f64;
        (other / 100.0 / dt).max(0.0)
    }
}

/// This process's peak resident memory (VmHWM) in KiB, where /proc has it.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The figures of one engine as a JSON object (written by hand: the runtime has no JSON
/// dependency). Non-finite numbers become `null`.
pub fn to_json(engine: &str, dtype: &str, num_params: usize, figures: &[Figure]) -> String {
    let num = |v: f64| if v.is_finite() { format!("{v:e}") } else { "null".into() };
    let figs: Vec<String> = figures
        .iter()
        .map(|f| {
            format!(
                "{{\"metric\":\"{}\",\"rows\":{},\"median_s\":{},\"min_s\":{},\"samples_per_s\":{},\"inner\":{},\"repeats\":{},\"foreign_cores\":{},\"cpu_s\":{}}}",
                f.metric.name(),
                f.rows,
                num(f.median_s),
                num(f.min_s),
                num(f.samples_per_s()),
                f.inner,
                f.repeats,
                num(f.foreign_cores),
                num(f.cpu_s)
            )
        })
        .collect();
    let peak = peak_rss_kib().map_or("null".into(), |k| k.to_string());
    format!(
        "{{\"engine\":\"{engine}\",\"dtype\":\"{dtype}\",\"num_params\":{num_params},\"peak_rss_kib\":{peak},\"figures\":[{}]}}",
        figs.join(",")
    )
}

/// The `main` of a benchmark binary: reads `--batch N --n N --what LIST --data SPEC
/// --repeats N --target-secs X --seed N` from the command line, builds the flow with `make`,
/// measures it and prints [`to_json`] on stdout. Returns the process exit code (2 on bad
/// arguments or data).
pub fn child_main<F: Flow>(
    engine: &str,
    make: impl FnOnce(u64) -> F,
    one: Option<LogProbOne<'_, F>>,
) -> i32 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (settings, data) = match parse_child_args(&args) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let mut flow = make(settings.seed);
    let data = match crate::data::resolve(&data, settings.seed) {
        Ok(d) => d.train,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    if data.ncols() != flow.dim() {
        eprintln!("error: the data has {} columns, the flow {}", data.ncols(), flow.dim());
        return 2;
    }
    let figs = run(&mut flow, data.view(), &settings, one);
    println!("{}", to_json(engine, <F::Real as Real>::DTYPE, flow.num_params(), &figs));
    0
}

/// The arguments of [`child_main`], as [`Settings`] and the data spec.
pub fn parse_child_args(args: &[String]) -> Result<(Settings, String), String> {
    let mut s = Settings::default();
    let mut data = "moons".to_string();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let val = it.next().ok_or_else(|| format!("`{flag}` needs a value"))?;
        let bad = || format!("bad value `{val}` for `{flag}`");
        match flag.as_str() {
            "--batch" => s.batch = val.parse().map_err(|_| bad())?,
            "--n" => s.n = val.parse().map_err(|_| bad())?,
            "--repeats" => s.repeats = val.parse().map_err(|_| bad())?,
            "--seed" => s.seed = val.parse().map_err(|_| bad())?,
            "--target-secs" => s.target_secs = val.parse().map_err(|_| bad())?,
            "--what" => s.metrics = Metric::parse_list(val)?,
            "--data" => data = val.clone(),
            _ => return Err(format!("unknown argument `{flag}`")),
        }
    }
    if s.batch == 0 || s.n == 0 || s.repeats == 0 {
        return Err("--batch, --n and --repeats must be at least 1".into());
    }
    Ok((s, data))
}

/// The same arguments as a command line for [`child_main`].
pub fn child_args(s: &Settings, data: &str) -> Vec<String> {
    let what: Vec<_> = s.metrics.iter().map(|m| m.name()).collect();
    [
        ("--batch", s.batch.to_string()),
        ("--n", s.n.to_string()),
        ("--repeats", s.repeats.to_string()),
        ("--seed", s.seed.to_string()),
        ("--target-secs", s.target_secs.to_string()),
        ("--what", what.join(",")),
        ("--data", data.to_string()),
    ]
    .into_iter()
    .flat_map(|(k, v)| [k.to_string(), v])
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_lists_parse() {
        assert_eq!(
            Metric::parse_list("train, sample,train").unwrap(),
            [Metric::Train, Metric::Sample]
        );
        assert!(Metric::parse_list("train,fast").unwrap_err().contains("`fast`"));
        assert!(Metric::parse_list(",").is_err());
    }

    #[test]
    fn child_args_round_trip() {
        let s =
            Settings { batch: 16, n: 99, metrics: vec![Metric::LogProbOne], ..Settings::default() };
        let (back, data) = parse_child_args(&child_args(&s, "x.npy")).unwrap();
        assert_eq!(
            (back.batch, back.n, back.metrics, data),
            (16, 99, vec![Metric::LogProbOne], "x.npy".into())
        );
        assert!(parse_child_args(&["--batch".into()]).is_err());
        assert!(parse_child_args(&["--batch".into(), "0".into()]).is_err());
    }

    #[test]
    fn peak_memory_is_read() {
        if cfg!(target_os = "linux") {
            assert!(peak_rss_kib().unwrap() > 0);
        }
    }
}
