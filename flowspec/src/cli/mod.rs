//! The subcommands of the `flowspec` tool and what they share: reading and compiling a spec,
//! and choosing one of its flows.

mod check;
mod expand;
mod plot;
mod train;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use flowspec::ir;
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
}

/// Parses the command line and runs the subcommand.
pub fn run() -> Result<()> {
    match Cli::parse().command {
        Command::Check(a) => check::run(&a),
        Command::Expand(a) => expand::run(&a),
        Command::Train(a) => train::run(&a),
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
    let names = || {
        program
            .flows
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match name {
        Some(want) => match program.flows.iter().find(|f| f.name == want) {
            Some(f) => Ok(f),
            None if program.flows.is_empty() => bail!("`{}` defines no flow", path.display()),
            None => bail!(
                "`{}` has no flow named `{want}`; its flows: {}",
                path.display(),
                names()
            ),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_grouped() {
        assert_eq!(group_digits(0), "0");
        assert_eq!(group_digits(999), "999");
        assert_eq!(group_digits(1000), "1,000");
        assert_eq!(group_digits(36128), "36,128");
        assert_eq!(group_digits(1234567), "1,234,567");
    }
}
