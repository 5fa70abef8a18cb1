//! The `flowspec` command-line tool: check a spec, print its generated Rust, train it through
//! the interpreter, evaluate or sample trained weights. See `flowspec --help`.

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
                None => eprintln!("error: {}", one_line(&e)),
            }
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes joined by ": ", skipping a cause whose text the message already
/// holds: the runtime's errors both print their source and return it as `source()`, which
/// `{:#}` would show twice ("os error 2: os error 2").
fn one_line(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !msg.contains(&text) {
            msg += ": ";
            msg += &text;
        }
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn repeated_causes_are_shown_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let e = Err::<(), _>(io).context("w.bin: gone").context("cannot load");
        assert_eq!(one_line(&e.unwrap_err()), "cannot load: w.bin: gone");
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(one_line(&e), "outer: inner");
    }
}
