//! The `flowspec` command-line tool: check a spec, print its generated Rust, or train it
//! through the interpreter. See `flowspec --help`.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Spec diagnostics arrive already rendered (source lines and carets); everything
            // else is one line of context chain, never a panic or backtrace.
            match e.downcast_ref::<cli::SpecErrors>() {
                Some(rendered) => eprint!("{rendered}"),
                None => eprintln!("error: {e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}
