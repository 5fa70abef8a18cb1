//! `flowspec check SPEC [--ir]`: compile a spec and describe each flow, one row per layer, so
//! users see the cost (parameters) and structure (Jacobian, parallelism) of what they wrote.

use super::{group_digits, load_program, SpecArg};
use anyhow::Result;
use flowspec::ir::{self, Jacobian, Pass};

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    spec: SpecArg,
    /// Also print the IR dump (column sets, nets, fingerprint).
    #[arg(long)]
    ir: bool,
}

pub fn run(args: &CheckArgs) -> Result<()> {
    let program = load_program(&args.spec.spec)?;
    if program.flows.is_empty() {
        println!("{}: no flows", args.spec.spec.display());
    }
    for (i, flow) in program.flows.iter().enumerate() {
        if i > 0 {
            println!();
        }
        print!("{}", describe(flow));
        if args.ir {
            println!();
            print!("{}", flow.dump());
        }
    }
    Ok(())
}

/// The summary of one flow: a header and a table of its layers.
fn describe(flow: &ir::Flow) -> String {
    let mut out = format!("flow {}\n", flow.name);
    for d in &flow.docs {
        out += &format!("  /// {}\n", d.trim());
    }
    out += &format!(
        "  event {:?}, D = {}, dtype {}, base {}\n",
        flow.event,
        flow.dim,
        flow.dtype.name(),
        flow.base.describe()
    );
    out += &format!("  parameters: {}\n", group_digits(flow.num_params()));
    let rows: Vec<[String; 5]> = flow
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            [
                i.to_string(),
                l.label.to_string(),
                group_digits(l.num_params()),
                jacobian(l.jacobian()).to_string(),
                passes(l.passes()),
            ]
        })
        .collect();
    let header = ["#", "layer", "params", "Jacobian", "passes"].map(String::from);
    out += &table(&header, &rows);
    out
}

/// Left-aligned columns (numbers right-aligned), two spaces apart, indented by two.
fn table(header: &[String; 5], rows: &[[String; 5]]) -> String {
    let width = |c: usize| {
        rows.iter().map(|r| r[c].chars().count()).chain([header[c].len()]).max().unwrap_or(0)
    };
    let widths: Vec<usize> = (0..5).map(width).collect();
    let line = |r: &[String; 5]| {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(c, s)| {
                if c == 0 || c == 2 {
                    format!("{s:>w$}", w = widths[c])
                } else {
                    format!("{s:<w$}", w = widths[c])
                }
            })
            .collect();
        format!("  {}\n", cells.join("  ").trim_end())
    };
    std::iter::once(line(header)).chain(rows.iter().map(line)).collect()
}

fn jacobian(j: Jacobian) -> &'static str {
    match j {
        Jacobian::Diagonal => "diagonal",
        Jacobian::BlockTriangular => "block-triangular",
        Jacobian::Permutation => "permutation (folded: no run-time cost)",
        Jacobian::Triangular => "triangular",
        Jacobian::Dense => "dense",
    }
}

fn passes((normalizing, generative): (Pass, Pass)) -> String {
    let name = |p| match p {
        Pass::Parallel => "parallel",
        Pass::Sequential => "sequential",
        Pass::Iterative => "iterative",
    };
    format!("x->z {}, z->x {}", name(normalizing), name(generative))
}
