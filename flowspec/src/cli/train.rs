//! `flowspec train SPEC`: maximum-likelihood training of one flow of a spec through the
//! interpreter, then the test NLL, the best weights and plots in an output directory.

use super::{group_digits, load_program, pick_flow, plot, plot1d, score};
use anyhow::{ensure, Context, Result};
use flowspec::interp::{AnyInterp, Interp};
use flowspec::ir;
use flowspec_runtime::data::{self, Dataset};
use flowspec_runtime::train::{self, Progress, TrainConfig, TrainReport};
use flowspec_runtime::{io, rng_from_seed, Flow, Real};
use indicatif::{ProgressBar, ProgressStyle};
use ndarray::{Array2, Axis};
use rand::seq::SliceRandom;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Points drawn per set in `samples.png`.
const PLOT_POINTS: usize = 2000;
/// Flow samples in the histogram of a 1-D flow's `samples.png` (histograms need more points
/// than scatter plots, and 1-D samples are cheap).
const HIST_SAMPLES: usize = 10_000;

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// The .flow spec file.
    spec: PathBuf,
    /// Which flow of the spec to train (default: the first).
    #[arg(long, value_name = "NAME")]
    flow: Option<String>,
    /// A built-in dataset (moons, circles, eight_gaussians, checkerboard, spirals, digits) or a .csv / .npy file of rows (10% held out for testing).
    #[arg(long, default_value = "moons", value_name = "moons|FILE.csv|FILE.npy")]
    data: String,
    /// Optimizer steps, at most (training stops early when validation stops improving).
    #[arg(long, default_value_t = 3000, value_name = "N")]
    steps: usize,
    /// Rows per mini-batch.
    #[arg(long, default_value_t = 256, value_name = "N")]
    batch: usize,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 1e-3, value_name = "X", allow_negative_numbers = true)]
    lr: f64,
    /// Seed of the initialisation, data splits, batches and samples.
    #[arg(long, default_value_t = 0, value_name = "N")]
    seed: u64,
    /// Output directory (default: out/<flow name>).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Print one JSON object on stdout instead of the human summary.
    #[arg(long)]
    json: bool,
}

/// What a run produced, for either output format.
struct Outcome {
    report: TrainReport,
    eval_every: usize,
    test_nll: f64,
    test_bits_per_dim: f64,
    seconds: f64,
    num_params: usize,
    /// (what, path) of every file written.
    files: Vec<(&'static str, PathBuf)>,
    /// Flow samples outside the plotted area of samples.png.
    samples_outside: Option<usize>,
}

pub fn run(args: &TrainArgs) -> Result<()> {
    ensure!(args.steps > 0, "--steps must be at least 1");
    ensure!(args.batch > 0, "--batch must be at least 1");
    ensure!(
        args.lr.is_finite() && args.lr > 0.0,
        "--lr must be a positive number, got {}",
        args.lr
    );
    let program = load_program(&args.spec)?;
    let flow = pick_flow(&program, args.flow.as_deref(), &args.spec)?;
    let dataset = data::resolve(&args.data, args.seed)?;
    data::check_width(&dataset.train.view(), flow.dim, &dataset.name, &flow.name)?;
    let out = args.out.clone().unwrap_or_else(|| Path::new("out").join(&flow.name));
    std::fs::create_dir_all(&out)
        .with_context(|| format!("cannot create output directory `{}`", out.display()))?;
    let (eval_every, patience) = validation_schedule(args.steps);
    let cfg = TrainConfig {
        steps: args.steps,
        batch_size: args.batch,
        lr: args.lr,
        seed: args.seed,
        eval_every,
        patience,
        ..TrainConfig::default()
    };
    let outcome = match AnyInterp::new(flow, args.seed) {
        AnyInterp::F32(f) => train_and_report(f, &dataset, &args.data, &cfg, &out)?,
        AnyInterp::F64(f) => train_and_report(f, &dataset, &args.data, &cfg, &out)?,
    };
    if args.json {
        println!("{}", to_json(args, flow, &dataset, &outcome));
    } else {
        print_summary(flow, &dataset, &outcome);
    }
    Ok(())
}

/// Validates about 50 times per run (every 10 to 100 steps) so that short runs still draw a
/// learning curve, with the patience of the runtime's default (10 validations of 100 steps)
/// kept at about 1000 steps. Validation draws no random numbers, so the schedule changes only
/// which parameters are kept and when training stops, never the trajectory.
fn validation_schedule(steps: usize) -> (usize, usize) {
    let d = TrainConfig::default();
    let eval_every = (steps / 50).clamp(10, d.eval_every);
    (eval_every, (d.patience * d.eval_every).div_ceil(eval_every))
}

/// Checks that the flow has a density at every row, trains, evaluates on the test rows, and
/// writes the weights and plots. `data_spec` is the `--data` argument, for error messages.
fn train_and_report<T: Real>(
    mut flow: Interp<T>,
    ds: &Dataset,
    data_spec: &str,
    cfg: &TrainConfig,
    out: &Path,
) -> Result<Outcome> {
    score::check_domain(&flow, ds, data_spec)?;
    let start = Instant::now();
    let report = train_with_progress(&mut flow, ds, cfg)?;
    let seconds = start.elapsed().as_secs_f64();
    let test_nll = train::mean_nll(&flow, ds.test.view());
    let weights = out.join("weights.safetensors");
    io::save(&flow, &weights)?;
    let mut files = vec![("weights", weights)];
    let loss = out.join("loss.png");
    plot::loss_curve(&report.curve, flow.name(), &loss)?;
    files.push(("loss_plot", loss));
    let samples_outside = match flow.dim() {
        1 => Some(plot_1d(&flow, ds, cfg.seed, out, &mut files)?),
        2 => Some(plot_2d(&flow, ds, cfg.seed, out, &mut files)?),
        _ => None,
    };
    Ok(Outcome {
        report,
        eval_every: cfg.eval_every,
        test_nll,
        test_bits_per_dim: train::bits_per_dim(test_nll, flow.dim()),
        seconds,
        num_params: flow.num_params(),
        files,
        samples_outside,
    })
}

/// `train::train` with a progress bar on stderr (hidden when stderr is not a terminal).
fn train_with_progress<T: Real>(
    flow: &mut Interp<T>,
    ds: &Dataset,
    cfg: &TrainConfig,
) -> Result<TrainReport> {
    let bar = ProgressBar::new(cfg.steps as u64);
    if let Ok(style) =
        ProgressStyle::with_template("{elapsed_precise} [{wide_bar}] {pos}/{len} {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    let mut last_val: Option<f64> = None;
    let mut on_progress = |p: &Progress| {
        last_val = p.val_nll.or(last_val);
        let val = last_val.map_or_else(|| "-".to_string(), |v| format!("{v:.4}"));
        bar.set_position(p.step as u64);
        bar.set_message(format!("train NLL {:.4}  val NLL {val}", p.train_nll));
    };
    let result = train::train(flow, ds.train.view(), cfg, &mut on_progress);
    bar.finish_and_clear();
    result.with_context(|| format!("training `{}` on {} failed", flow.name(), ds.name))
}

/// density.png (curve over a data histogram) and samples.png (histograms) of a 1-D flow;
/// returns how many samples fell outside the plot.
fn plot_1d<T: Real>(
    flow: &Interp<T>,
    ds: &Dataset,
    seed: u64,
    out: &Path,
    files: &mut Vec<(&'static str, PathBuf)>,
) -> Result<usize> {
    let (train, test) = (ds.train.column(0).to_vec(), ds.test.column(0).to_vec());
    let range = plot1d::range_of(&[&train, &test], 0.1);
    let log_density = |pts: &Array2<f64>| score::log_densities(flow, pts.view());
    let density = out.join("density.png");
    plot1d::density(&range, &log_density, &train, flow.name(), &density)?;
    files.push(("density_plot", density));
    // The same seed as the 2-D scatter's samples, for the same reason: one plot, one stream.
    let samples: Vec<f64> = flow
        .sample(HIST_SAMPLES, &mut rng_from_seed(seed.wrapping_add(1)))
        .iter()
        .map(|v| v.f64())
        .collect();
    let path = out.join("samples.png");
    let outside = plot1d::samples(&range, &samples, &train, flow.name(), &path)?;
    files.push(("samples_plot", path));
    Ok(outside)
}

/// density.png and samples.png; returns how many samples fell outside the plot.
fn plot_2d<T: Real>(
    flow: &Interp<T>,
    ds: &Dataset,
    seed: u64,
    out: &Path,
    files: &mut Vec<(&'static str, PathBuf)>,
) -> Result<usize> {
    let bounds = plot::Bounds::of(&[ds.train.view(), ds.test.view()], 0.1);
    let log_density = |pts: &Array2<f64>| score::log_densities(flow, pts.view());
    let density = out.join("density.png");
    plot::density(&bounds, &log_density, ds.test.view(), flow.name(), &density)?;
    files.push(("density_plot", density));
    // Separate seeds for the two draws, so changing one plot never changes the other.
    let samples =
        flow.sample(PLOT_POINTS, &mut rng_from_seed(seed.wrapping_add(1))).mapv(Real::f64);
    let mut rows: Vec<usize> = (0..ds.train.nrows()).collect();
    rows.shuffle(&mut rng_from_seed(seed.wrapping_add(2)));
    rows.truncate(PLOT_POINTS);
    let shown = ds.train.select(Axis(0), &rows);
    let path = out.join("samples.png");
    let outside = plot::samples(&bounds, samples.view(), shown.view(), flow.name(), &path)?;
    files.push(("samples_plot", path));
    Ok(outside)
}

fn print_summary(flow: &ir::Flow, ds: &Dataset, o: &Outcome) {
    let r = &o.report;
    println!(
        "flow {} ({}, {} parameters) on {}: {} train / {} validation rows",
        flow.name,
        flow.dtype.name(),
        group_digits(o.num_params),
        ds.name,
        r.n_train,
        r.n_val
    );
    let stop =
        if r.stopped_early { " (stopped early: validation NLL stopped improving)" } else { "" };
    println!("trained {} steps in {:.2} s{stop}", r.steps_run, o.seconds);
    println!("best validation NLL: {:.4} nats at step {}", r.best_val_nll, r.best_step);
    if r.best_step == 0 {
        println!(
            "note: no step improved on the initial parameters, which were kept \
             (try another learning rate or more steps)"
        );
    }
    if let Some(n) = o.samples_outside.filter(|&n| n > 0) {
        let drawn = if flow.dim == 1 { HIST_SAMPLES } else { PLOT_POINTS };
        println!("note: {n} of {drawn} flow samples fell outside the area of samples.png");
    }
    for (_, path) in &o.files {
        println!("wrote {}", path.display());
    }
    println!(
        "test NLL: {:.4} nats, {:.4} bits/dim ({}, {} rows)",
        o.test_nll,
        o.test_bits_per_dim,
        ds.name,
        ds.test.nrows()
    );
}

fn to_json(args: &TrainArgs, flow: &ir::Flow, ds: &Dataset, o: &Outcome) -> serde_json::Value {
    let r = &o.report;
    let files: serde_json::Map<String, serde_json::Value> =
        o.files.iter().map(|(k, p)| (k.to_string(), json!(p.display().to_string()))).collect();
    let curve: Vec<_> = r
        .curve
        .iter()
        .map(|c| json!({"step": c.step, "train_nll": c.train_nll, "val_nll": c.val_nll}))
        .collect();
    json!({
        "spec": args.spec.display().to_string(),
        "flow": flow.name,
        "dtype": flow.dtype.name(),
        "dim": flow.dim,
        "dataset": ds.name,
        "seed": args.seed,
        "steps": args.steps,
        "batch": args.batch,
        "lr": args.lr,
        "eval_every": o.eval_every,
        "steps_run": r.steps_run,
        "stopped_early": r.stopped_early,
        "best_step": r.best_step,
        "best_val_nll": r.best_val_nll,
        "test_nll": o.test_nll,
        "test_bits_per_dim": o.test_bits_per_dim,
        "n_train": r.n_train,
        "n_val": r.n_val,
        "n_test": ds.test.nrows(),
        "num_params": o.num_params,
        "seconds": o.seconds,
        "out_dir": o.files.first().and_then(|(_, p)| p.parent()).map(|p| p.display().to_string()),
        "files": files,
        "samples_outside_plot": o.samples_outside,
        "curve": curve,
    })
}
