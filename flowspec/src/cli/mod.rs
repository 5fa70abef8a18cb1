//! The subcommands of the `flowspec` tool and what they share: reading and compiling a spec,
//! and choosing one of its flows.

mod bench;
mod check;
mod distill;
mod eval;
mod expand;
mod plot;
mod plot1d;
mod sample;
mod score;
mod train;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use flowspec::ir;
use flowspec_runtime::{io, Flow, IoError};
use std::fmt;
use std::path::{Path, PathBuf};

/// A normalizing-flow compiler: specs in, checked IR, generated Rust and trained models out.
#[derive(Parser, Debug)]
#[command(name = "flowspec", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check a spec and describe its flows: shapes, parameters, Jacobian structure per layer.
    Check(check::CheckArgs),
    /// Print the Rust code generated for a spec, formatted.
    Expand(expand::ExpandArgs),
    /// Train a flow of a spec by maximum likelihood (interpreted) and write weights and plots.
    Train(train::TrainArgs),
    /// Evaluate trained weights on data: mean NLL, per-row log-densities, anomaly flags.
    Eval(eval::EvalArgs),
    /// Draw samples from trained weights into a CSV file.
    Sample(sample::SampleArgs),
    /// Distill a trained teacher into a student by minimizing KL(student || teacher).
    Distill(distill::DistillArgs),
    /// Time a training step, log_prob and sampling, interpreted and as generated code.
    Bench(bench::BenchArgs),
}

/// Parses the command line and runs the subcommand.
pub fn run() -> Result<()> {
    match Cli::parse().command {
        Command::Check(a) => check::run(&a),
        Command::Expand(a) => expand::run(&a),
        Command::Train(a) => train::run(&a),
        Command::Eval(a) => eval::run(&a),
        Command::Sample(a) => sample::run(&a),
        Command::Distill(a) => distill::run(&a),
        Command::Bench(a) => bench::run(&a),
    }
}

/// Diagnostics of a spec that does not compile, already rendered against its source; `main`
/// prints them as they are.
#[derive(Debug)]
pub struct SpecErrors(pub String);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SpecErrors {}

/// Reads and compiles a spec; compile errors come back as [`SpecErrors`], rendered with the
/// path as the user gave it.
pub fn load_program(path: &Path) -> Result<ir::Program> {
    let src = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read spec file `{}`", path.display()))?;
    flowspec::compile(&src).map_err(|diags| {
        let shown = path.display().to_string();
        SpecErrors(flowspec::diag::render_all(&diags, &shown, &src)).into()
    })
}

/// The flow called `name`, or the first one (saying so on stderr when there are several).
pub fn pick_flow<'a>(
    program: &'a ir::Program,
    name: Option<&str>,
    path: &Path,
) -> Result<&'a ir::Flow> {
    let names = || program.flows.iter().map(|f| f.name.as_str()).collect::<Vec<_>>().join(", ");
    match name {
        Some(want) => match program.flows.iter().find(|f| f.name == want) {
            Some(f) => Ok(f),
            None if program.flows.is_empty() => bail!("`{}` defines no flow", path.display()),
            None => {
                bail!("`{}` has no flow named `{want}`; its flows: {}", path.display(), names())
            }
        },
        None => {
            let Some(first) = program.flows.first() else {
                bail!("`{}` defines no flow", path.display());
            };
            if program.flows.len() > 1 {
                eprintln!(
                    "note: `{}` defines {} flows ({}); using `{}` (choose with --flow NAME)",
                    path.display(),
                    program.flows.len(),
                    names(),
                    first.name
                );
            }
            Ok(first)
        }
    }
}

/// Loads a weights file into `flow`. The runtime checks that the file was written for this
/// architecture; a mismatch gets a hint, since the usual cause is passing the wrong spec.
pub fn load_weights<F: Flow + ?Sized>(flow: &mut F, path: &Path) -> Result<()> {
    match io::load_into(flow, path) {
        Ok(()) => Ok(()),
        Err(e @ IoError::WrongFlow { .. }) => Err(anyhow!(
            "{e}: these weights were trained with another spec (or another version of this \
             one); use that spec and --flow, or retrain"
        )),
        Err(e) => Err(anyhow!(e).context(format!("cannot load the weights of `{}`", flow.name()))),
    }
}

/// `name` in the directory of `file` (the working directory for a bare file name).
pub fn sibling(file: &Path, name: &str) -> PathBuf {
    file.parent().unwrap_or(Path::new("")).join(name)
}

/// The spec path as given on the command line.
#[derive(clap::Args, Debug)]
pub struct SpecArg {
    /// The .flow spec file.
    pub spec: PathBuf,
}

/// 36128 -> "36,128", for readable parameter counts.
pub fn group_digits(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// A number in its shortest round-trip form, with an exponent where plain digits would run
/// long (Rust's `{}` prints 1e200 as 201 digits). CSV readers parse both forms.
pub fn number<V: fmt::Display + fmt::LowerExp + Into<f64> + Copy>(v: V) -> String {
    let a = v.into().abs();
    if a.is_finite() && a != 0.0 && !(1e-5..1e16).contains(&a) {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_short_and_exact() {
        assert_eq!(number(1.5f64), "1.5");
        assert_eq!(number(-2.0f64), "-2");
        assert_eq!(number(1e200f64), "1e200");
        assert_eq!(number(-3e-8f64), "-3e-8");
        assert_eq!(number(0.1f32), "0.1");
        assert_eq!(number(1e-7f32), "1e-7");
        assert_eq!(number(f64::NEG_INFINITY), "-inf");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(0.0f64), "0");
        let x = -1.234_567_890_123_456_7e-9f64;
        assert_eq!(number(x).parse::<f64>().unwrap(), x);
    }

    #[test]
    fn digits_are_grouped() {
        assert_eq!(group_digits(0), "0");
        assert_eq!(group_digits(999), "999");
        assert_eq!(group_digits(1000), "1,000");
        assert_eq!(group_digits(36128), "36,128");
        assert_eq!(group_digits(1234567), "1,234,567");
    }
}

/// Writes a file through `write` into a temporary sibling, then renames it over `path`, so a
/// failed or interrupted write never leaves a half-written file or destroys an existing one.
pub fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        write(&mut w)?;
        use std::io::Write;
        w.flush()?;
        w.get_ref().sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write `{}`", path.display()))
}
