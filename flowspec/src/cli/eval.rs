//! `flowspec eval SPEC --weights W`: the log-density of every row of a dataset under trained
//! weights, the mean NLL (nats and bits/dim), a CSV of per-row log-densities, and optionally
//! anomaly flags against a quantile of the training rows' log-densities.

use super::score::{self, Summary};
use super::{load_program, load_weights, number, pick_flow, sibling};
use anyhow::{bail, ensure, Result};
use flowspec::interp::{AnyInterp, Interp};
use flowspec::ir;
use flowspec_runtime::{data, train, Flow, Real};
use ndarray::Array2;
use serde_json::json;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// The .flow spec file.
    spec: PathBuf,
    /// The weights file `flowspec train` wrote for this spec (weights.safetensors).
    #[arg(long, value_name = "FILE")]
    weights: PathBuf,
    /// Which flow of the spec (default: the first).
    #[arg(long, value_name = "NAME")]
    flow: Option<String>,
    /// A built-in dataset (its test split is evaluated) or a .csv / .npy file (all its rows).
    #[arg(long, default_value = "moons", value_name = "NAME|FILE.csv|FILE.npy")]
    data: String,
    /// Where to write `row,log_prob` per row (default: eval.csv next to the weights).
    #[arg(long, value_name = "FILE.csv")]
    out: Option<PathBuf>,
    /// Flag rows whose log-density is below this quantile (0 < q < 1) of the training rows'
    /// log-densities (a built-in dataset's training split, or the file itself).
    #[arg(long, value_name = "Q", allow_negative_numbers = true)]
    anomaly_quantile: Option<f64>,
    /// Print one JSON object on stdout instead of the human summary.
    #[arg(long)]
    json: bool,
}

/// The rows to evaluate and, for anomaly thresholds, the training rows.
struct EvalData {
    /// "moons (test split)" or the file path.
    name: String,
    x: Array2<f64>,
    /// The training rows of a built-in dataset; None for a file (its own rows are the
    /// reference, so their log-densities are reused).
    train: Option<Array2<f64>>,
}

/// The anomaly threshold and the flags it gives.
struct Anomaly {
    quantile: f64,
    threshold: f64,
    reference_rows: usize,
    flags: Vec<bool>,
}

/// What an evaluation found.
struct Evaluation {
    log_probs: Vec<f64>,
    summary: Summary,
    dequantized: bool,
    anomaly: Option<Anomaly>,
}

pub fn run(args: &EvalArgs) -> Result<()> {
    if let Some(q) = args.anomaly_quantile {
        ensure!(q > 0.0 && q < 1.0, "--anomaly-quantile must be strictly between 0 and 1, got {q}");
    }
    let program = load_program(&args.spec)?;
    let flow = pick_flow(&program, args.flow.as_deref(), &args.spec)?;
    let data = load_data(&args.data, args.anomaly_quantile.is_some())?;
    data::check_width(&data.x.view(), flow.dim, &data.name, &flow.name)?;
    let q = args.anomaly_quantile;
    let ev = match AnyInterp::new(flow, 0) {
        AnyInterp::F32(f) => evaluate(f, &args.weights, &data, q)?,
        AnyInterp::F64(f) => evaluate(f, &args.weights, &data, q)?,
    };
    let out = args.out.clone().unwrap_or_else(|| sibling(&args.weights, "eval.csv"));
    let flags = ev.anomaly.as_ref().map(|a| a.flags.as_slice());
    let csv = log_prob_csv(&ev.log_probs, flags);
    super::write_atomically(&out, |w| std::io::Write::write_all(w, csv.as_bytes()))?;
    if args.json {
        println!("{}", to_json(args, flow, &data, &ev, &out));
    } else {
        print_summary(args, flow, &data, &ev, &out);
    }
    Ok(())
}

/// A built-in dataset's test split (and its training split when `with_train`), or every row
/// of a file.
fn load_data(spec: &str, with_train: bool) -> Result<EvalData> {
    if let Some(ds) = data::builtin(spec) {
        return Ok(EvalData {
            name: format!("{} (test split)", ds.name),
            x: ds.test,
            train: with_train.then_some(ds.train),
        });
    }
    let path = Path::new(spec);
    if !path.is_file() {
        bail!(
            "`{spec}` is neither a built-in dataset ({}) nor an existing file",
            data::BUILTIN.join(", ")
        );
    }
    let x = data::load_file(path)?;
    let name = path.display().to_string();
    Ok(EvalData { name, x, train: None })
}

/// Loads the weights and scores the rows (and the training rows for a threshold).
fn evaluate<T: Real>(
    mut flow: Interp<T>,
    weights: &Path,
    data: &EvalData,
    quantile: Option<f64>,
) -> Result<Evaluation> {
    load_weights(&mut flow, weights)?;
    let score =
        |x: &Array2<f64>| score::log_densities(&flow, score::as_flow_sees(&flow, x.view()).view());
    let log_probs = score(&data.x);
    let anomaly = match quantile {
        None => None,
        Some(q) => {
            let reference = data.train.as_ref().map(score);
            let reference = reference.as_deref().unwrap_or(&log_probs);
            Some(anomaly(&log_probs, reference, q)?)
        }
    };
    Ok(Evaluation {
        summary: Summary::of(&log_probs),
        log_probs,
        dequantized: flow.dequantize(),
        anomaly,
    })
}

/// Flags the rows whose log-density is not at least the `q`-quantile of `reference` (so a NaN
/// log-density, which vouches for nothing, is flagged too).
fn anomaly(log_probs: &[f64], reference: &[f64], q: f64) -> Result<Anomaly> {
    let Some(threshold) = score::quantile(reference, q) else {
        bail!("no training row has a log-density (all NaN): cannot set an anomaly threshold");
    };
    Ok(Anomaly {
        quantile: q,
        threshold,
        reference_rows: reference.len(),
        flags: log_probs.iter().map(|&lp| lp.is_nan() || lp < threshold).collect(),
    })
}

/// `row,log_prob[,anomaly]` with a header; rows are 1-based. Values print exactly (shortest
/// round-trip form), -inf as `-inf`, which pandas and numpy read back.
fn log_prob_csv(log_probs: &[f64], flags: Option<&[bool]>) -> String {
    let mut out = String::with_capacity(24 * (log_probs.len() + 1));
    out += if flags.is_some() { "row,log_prob,anomaly\n" } else { "row,log_prob\n" };
    for (i, lp) in log_probs.iter().enumerate() {
        // Writing to a String cannot fail.
        let lp = number(*lp);
        let _ = match flags.and_then(|f| f.get(i)) {
            Some(flag) => writeln!(out, "{},{lp},{flag}", i + 1),
            None => writeln!(out, "{},{lp}", i + 1),
        };
    }
    out
}

fn print_summary(args: &EvalArgs, flow: &ir::Flow, data: &EvalData, ev: &Evaluation, out: &Path) {
    let s = &ev.summary;
    println!(
        "flow {} ({}) with weights {} on {}: {} rows",
        flow.name,
        flow.dtype.name(),
        args.weights.display(),
        data.name,
        s.rows
    );
    if ev.dequantized {
        println!(
            "dequantized: one fixed draw of U[0,1) noise (seed {}) added to the data, as \
             training validates",
            train::EVAL_NOISE_SEED
        );
    }
    if s.finite() == 0 {
        println!("mean NLL: undefined (no row has a finite log-density)");
    } else {
        let over = if s.finite() < s.rows {
            format!(" (over the {} rows with a finite log-density)", s.finite())
        } else {
            String::new()
        };
        let bpd = train::bits_per_dim(s.mean_nll, flow.dim);
        println!("mean NLL: {:.4} nats, {bpd:.4} bits/dim{over}", s.mean_nll);
    }
    print_bad_rows(s);
    if let Some(a) = &ev.anomaly {
        print_anomaly(a, data);
    }
    println!("wrote {}", out.display());
}

/// Warnings for rows without a finite log-density: they are excluded from the mean.
fn print_bad_rows(s: &Summary) {
    if !s.zero_density.is_empty() {
        println!(
            "warning: {} of {} rows have zero density (log_prob = -inf: outside a layer's \
             domain, or so far out that the density underflows), left out of the mean: rows {}",
            s.zero_density.len(),
            s.rows,
            score::first_rows(&s.zero_density)
        );
    }
    if !s.invalid.is_empty() {
        println!(
            "warning: {} of {} rows have an undefined log-density (NaN or +inf: a numerical \
             failure), left out of the mean: rows {}",
            s.invalid.len(),
            s.rows,
            score::first_rows(&s.invalid)
        );
    }
}

fn print_anomaly(a: &Anomaly, data: &EvalData) {
    let flagged = a.flags.iter().filter(|&&f| f).count();
    let reference = if data.train.is_some() { "the training split" } else { "the file itself" };
    println!(
        "anomaly threshold: log p = {:.4} (the {}-quantile over the {} rows of {reference})",
        a.threshold, a.quantile, a.reference_rows
    );
    let share = 100.0 * flagged as f64 / a.flags.len().max(1) as f64;
    println!("flagged {flagged} of {} rows ({share:.2}%) as anomalies", a.flags.len());
    if a.threshold == f64::NEG_INFINITY {
        println!("note: the threshold is -inf (too many training rows have zero density)");
    }
}

fn to_json(
    args: &EvalArgs,
    flow: &ir::Flow,
    data: &EvalData,
    ev: &Evaluation,
    out: &Path,
) -> serde_json::Value {
    let s = &ev.summary;
    let one_based = |rows: &[usize]| rows.iter().map(|r| r + 1).collect::<Vec<_>>();
    let anomaly = ev.anomaly.as_ref().map(|a| {
        json!({
            "quantile": a.quantile,
            // -inf has no JSON number; it shows as a string rather than as null.
            "threshold": finite_or_string(a.threshold),
            "reference_rows": a.reference_rows,
            "flagged": a.flags.iter().filter(|&&f| f).count(),
        })
    });
    json!({
        "spec": args.spec.display().to_string(),
        "flow": flow.name,
        "dtype": flow.dtype.name(),
        "dim": flow.dim,
        "weights": args.weights.display().to_string(),
        "data": data.name,
        "rows": s.rows,
        "finite_rows": s.finite(),
        "mean_nll": s.mean_nll,
        "bits_per_dim": train::bits_per_dim(s.mean_nll, flow.dim),
        "zero_density_rows": s.zero_density.len(),
        "zero_density_first_rows": one_based(&s.zero_density[..s.zero_density.len().min(20)]),
        "invalid_rows": s.invalid.len(),
        "invalid_first_rows": one_based(&s.invalid[..s.invalid.len().min(20)]),
        "dequantized": ev.dequantized,
        "anomaly": anomaly,
        "out": out.display().to_string(),
    })
}

fn finite_or_string(v: f64) -> serde_json::Value {
    if v.is_finite() {
        json!(v)
    } else {
        json!(v.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_has_a_header_and_one_based_rows() {
        let lp = [-1.5, f64::NEG_INFINITY, 0.25];
        assert_eq!(log_prob_csv(&lp, None), "row,log_prob\n1,-1.5\n2,-inf\n3,0.25\n");
        let flags = [false, true, false];
        assert_eq!(
            log_prob_csv(&lp, Some(&flags)),
            "row,log_prob,anomaly\n1,-1.5,false\n2,-inf,true\n3,0.25,false\n"
        );
        assert_eq!(log_prob_csv(&[], None), "row,log_prob\n");
    }

    #[test]
    fn csv_values_round_trip() {
        let lp = [-1.234_567_890_123_456_7, 1e-300];
        let csv = log_prob_csv(&lp, None);
        let back: Vec<f64> =
            csv.lines().skip(1).map(|l| l.split(',').nth(1).unwrap().parse().unwrap()).collect();
        assert_eq!(back, lp);
    }

    #[test]
    fn anomalies_are_below_the_training_quantile() {
        let reference: Vec<f64> = (0..=100).map(|i| i as f64).collect();
        let a = anomaly(&[5.0, 10.0, 50.0, f64::NAN, f64::NEG_INFINITY], &reference, 0.1).unwrap();
        assert_eq!(a.threshold, 10.0);
        assert_eq!(a.flags, [true, false, false, true, true]);
        assert_eq!(a.reference_rows, 101);
        assert!(anomaly(&[1.0], &[f64::NAN], 0.5).is_err());
        assert_eq!(finite_or_string(f64::NEG_INFINITY), json!("-inf"));
    }
}
