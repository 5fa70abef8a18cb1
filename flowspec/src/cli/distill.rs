//! `flowspec distill`: probability density distillation (Parallel WaveNet). A trained teacher
//! (typically a MAF: its density is one pass) teaches a student (typically an IAF: its
//! sampling is one pass) by minimizing KL(student || teacher) over the student's own samples.
//! The student never inverts itself during training; the teacher runs only its normalizing
//! direction. Afterwards both are scored on the test rows of `--data` (the student through its
//! slow direction) and both sampling speeds are measured.

use super::{group_digits, load_program, load_weights, pick_flow};
use anyhow::{bail, ensure, Context, Result};
use flowspec::interp::{AnyInterp, Interp};
use flowspec_runtime::data::{self, Dataset};
use flowspec_runtime::reverse_kl::{self, KlConfig, KlReport};
use flowspec_runtime::{io, rng_from_seed, train, Flow, Real};
use indicatif::ProgressBar;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Samples drawn to time sampling throughput.
const SPEED_SAMPLES: usize = 10_000;

#[derive(clap::Args, Debug)]
pub struct DistillArgs {
    /// The teacher's .flow spec file.
    #[arg(long, value_name = "SPEC")]
    teacher: PathBuf,
    /// Which flow of the teacher's spec (default: the first).
    #[arg(long, value_name = "NAME")]
    teacher_flow: Option<String>,
    /// The teacher's trained weights (from `flowspec train`).
    #[arg(long, value_name = "FILE")]
    teacher_weights: PathBuf,
    /// The student's .flow spec file.
    #[arg(long, value_name = "SPEC")]
    student: PathBuf,
    /// Which flow of the student's spec (default: the first).
    #[arg(long, value_name = "NAME")]
    student_flow: Option<String>,
    /// Test rows to score teacher and student on: a built-in dataset or a .csv / .npy file.
    #[arg(long, default_value = "moons", value_name = "moons|FILE.csv|FILE.npy")]
    data: String,
    /// Optimizer steps.
    #[arg(long, default_value_t = 2000, value_name = "N")]
    steps: usize,
    /// Student samples per step.
    #[arg(long, default_value_t = 256, value_name = "N")]
    batch: usize,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 1e-3, value_name = "X", allow_negative_numbers = true)]
    lr: f64,
    /// Seed of the student's initialisation and noise.
    #[arg(long, default_value_t = 0, value_name = "N")]
    seed: u64,
    /// Output directory (default: out/<student name>).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Print one JSON object on stdout instead of the human summary.
    #[arg(long)]
    json: bool,
}

/// What a distillation run measured.
struct Outcome {
    report: KlReport,
    teacher_test_nll: f64,
    student_test_nll: f64,
    teacher_samples_per_s: f64,
    student_samples_per_s: f64,
    student_params: usize,
    weights: PathBuf,
}

pub fn run(args: &DistillArgs) -> Result<()> {
    ensure!(args.steps > 0, "--steps must be at least 1");
    ensure!(args.batch > 0, "--batch must be at least 1");
    ensure!(
        args.lr.is_finite() && args.lr > 0.0,
        "--lr must be a positive number, got {}",
        args.lr
    );
    let (tp, sp) = (load_program(&args.teacher)?, load_program(&args.student)?);
    let teacher = pick_flow(&tp, args.teacher_flow.as_deref(), &args.teacher)?;
    let student = pick_flow(&sp, args.student_flow.as_deref(), &args.student)?;
    ensure!(
        teacher.dim == student.dim,
        "the teacher `{}` has D = {} but the student `{}` has D = {}",
        teacher.name,
        teacher.dim,
        student.name,
        student.dim
    );
    let ds = data::resolve(&args.data, args.seed)?;
    data::check_width(&ds.test.view(), student.dim, &ds.name, &student.name)?;
    let out = args.out.clone().unwrap_or_else(|| Path::new("out").join(&student.name));
    std::fs::create_dir_all(&out)
        .with_context(|| format!("cannot create output directory `{}`", out.display()))?;
    let outcome = match (AnyInterp::new(teacher, 0), AnyInterp::new(student, args.seed)) {
        (AnyInterp::F32(t), AnyInterp::F32(s)) => distill(t, s, args, &ds, &out)?,
        (AnyInterp::F64(t), AnyInterp::F64(s)) => distill(t, s, args, &ds, &out)?,
        _ => bail!(
            "the teacher `{}` is {} but the student `{}` is {}; declare the same dtype in both",
            teacher.name,
            teacher.dtype.name(),
            student.name,
            student.dtype.name()
        ),
    };
    if args.json {
        println!("{}", to_json(args, &teacher.name, &student.name, &ds, &outcome));
    } else {
        print_summary(&teacher.name, &student.name, &ds, &outcome);
    }
    Ok(())
}

fn distill<T: Real>(
    mut teacher: Interp<T>,
    mut student: Interp<T>,
    args: &DistillArgs,
    ds: &Dataset,
    out: &Path,
) -> Result<Outcome> {
    load_weights(&mut teacher, &args.teacher_weights)?;
    let cfg = KlConfig {
        steps: args.steps,
        batch: args.batch,
        lr: args.lr,
        seed: args.seed,
        ..KlConfig::default()
    };
    let bar = ProgressBar::new(cfg.steps as u64);
    let mut progress = |step: usize, kl: f64| {
        bar.set_position(step as u64);
        bar.set_message(format!("KL {kl:.4}"));
    };
    let report = reverse_kl::distill(&teacher, &mut student, &cfg, &mut progress);
    bar.finish_and_clear();
    let report = report.with_context(|| {
        format!("distilling `{}` into `{}` failed", teacher.name(), student.name())
    })?;
    let weights = out.join("weights.safetensors");
    io::save(&student, &weights)?;
    Ok(Outcome {
        teacher_test_nll: train::mean_nll(&teacher, ds.test.view()),
        student_test_nll: train::mean_nll(&student, ds.test.view()),
        teacher_samples_per_s: sampling_speed(&teacher, args.seed),
        student_samples_per_s: sampling_speed(&student, args.seed),
        student_params: student.num_params(),
        report,
        weights,
    })
}

/// Samples per second of one call drawing [`SPEED_SAMPLES`] samples, after one warm-up call.
fn sampling_speed<F: Flow>(flow: &F, seed: u64) -> f64 {
    let mut rng = rng_from_seed(seed.wrapping_add(7));
    flow.sample(SPEED_SAMPLES / 10, &mut rng);
    let start = Instant::now();
    flow.sample(SPEED_SAMPLES, &mut rng);
    SPEED_SAMPLES as f64 / start.elapsed().as_secs_f64().max(1e-9)
}

fn print_summary(teacher: &str, student: &str, ds: &Dataset, o: &Outcome) {
    let r = &o.report;
    println!(
        "distilled `{teacher}` into `{student}` ({} parameters): {} steps in {:.2} s",
        group_digits(o.student_params),
        r.steps,
        r.seconds
    );
    println!(
        "KL(student || teacher): {:.4} ± {:.4} nats; importance-sampling ESS {:.1}%",
        r.kl,
        r.kl_std_err,
        100.0 * r.ess
    );
    println!("test NLL on {} ({} rows):", ds.name, ds.test.nrows());
    println!(
        "  teacher {:.4} nats, {:.4} bits/dim",
        o.teacher_test_nll,
        bpd(o.teacher_test_nll, ds)
    );
    println!(
        "  student {:.4} nats, {:.4} bits/dim",
        o.student_test_nll,
        bpd(o.student_test_nll, ds)
    );
    println!(
        "sampling: teacher {:.0} samples/s, student {:.0} samples/s ({:.1}x)",
        o.teacher_samples_per_s,
        o.student_samples_per_s,
        o.student_samples_per_s / o.teacher_samples_per_s
    );
    println!("wrote {}", o.weights.display());
}

fn bpd(nll: f64, ds: &Dataset) -> f64 {
    train::bits_per_dim(nll, ds.test.ncols())
}

fn to_json(
    args: &DistillArgs,
    teacher: &str,
    student: &str,
    ds: &Dataset,
    o: &Outcome,
) -> serde_json::Value {
    let r = &o.report;
    let history: Vec<_> = r.history.iter().map(|(s, kl)| json!({"step": s, "kl": kl})).collect();
    json!({
        "teacher": teacher,
        "student": student,
        "dataset": ds.name,
        "steps": r.steps,
        "batch": args.batch,
        "lr": args.lr,
        "seed": args.seed,
        "kl": r.kl,
        "kl_std_err": r.kl_std_err,
        "ess": r.ess,
        "log_z": r.log_z,
        "teacher_test_nll": o.teacher_test_nll,
        "student_test_nll": o.student_test_nll,
        "teacher_test_bits_per_dim": bpd(o.teacher_test_nll, ds),
        "student_test_bits_per_dim": bpd(o.student_test_nll, ds),
        "teacher_samples_per_s": o.teacher_samples_per_s,
        "student_samples_per_s": o.student_samples_per_s,
        "num_params": o.student_params,
        "seconds": r.seconds,
        "weights": o.weights.display().to_string(),
        "history": history,
    })
}
