//! `flowspec expand SPEC`: the Rust code that `flow!` generates for a spec, formatted, so users
//! can read what they are compiling.

use super::{load_program, SpecArg};
use anyhow::Result;

#[derive(clap::Args, Debug)]
pub struct ExpandArgs {
    #[command(flatten)]
    spec: SpecArg,
}

pub fn run(args: &ExpandArgs) -> Result<()> {
    let program = load_program(&args.spec.spec)?;
    print!("{}", flowspec::codegen::expand_pretty(&program));
    Ok(())
}
