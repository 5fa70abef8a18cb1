//! `flowspec sample SPEC --weights W -n N`: draws from trained weights into a CSV file
//! (`x0,x1,...`), optionally at a temperature, streamed in chunks so N is bounded by the disk,
//! not by memory.

use super::{load_program, load_weights, number, pick_flow, sibling};
use anyhow::{ensure, Result};
use flowspec::interp::{AnyInterp, Interp};
use flowspec_runtime::{rng_from_seed, Flow, Real};
use ndarray::ArrayView2;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Rows drawn per pass through the flow.
const CHUNK: usize = 4096;

#[derive(clap::Args, Debug)]
pub struct SampleArgs {
    /// The .flow spec file.
    spec: PathBuf,
    /// The weights file `flowspec train` wrote for this spec (weights.safetensors).
    #[arg(long, value_name = "FILE")]
    weights: PathBuf,
    /// Which flow of the spec (default: the first).
    #[arg(long, value_name = "NAME")]
    flow: Option<String>,
    /// How many samples to draw.
    #[arg(short = 'n', value_name = "N")]
    n: usize,
    /// Scales the base draw before the flow maps it (z = T * z_base): below 1 gives typical,
    /// less diverse samples (Glow's temperature, for a normal base); for other bases it
    /// scales the draw about 0.
    #[arg(long, default_value_t = 1.0, value_name = "T", allow_negative_numbers = true)]
    temperature: f64,
    /// Seed of the draw.
    #[arg(long, default_value_t = 0, value_name = "N")]
    seed: u64,
    /// The CSV file to write (default: samples.csv next to the weights).
    #[arg(long, value_name = "FILE.csv")]
    out: Option<PathBuf>,
}

pub fn run(args: &SampleArgs) -> Result<()> {
    ensure!(args.n > 0, "-n must be at least 1");
    ensure!(
        args.temperature.is_finite() && args.temperature > 0.0,
        "--temperature must be a positive number, got {}",
        args.temperature
    );
    let program = load_program(&args.spec)?;
    let flow = pick_flow(&program, args.flow.as_deref(), &args.spec)?;
    let out = args.out.clone().unwrap_or_else(|| sibling(&args.weights, "samples.csv"));
    let non_finite = match AnyInterp::new(flow, 0) {
        AnyInterp::F32(f) => load_and_draw(f, args, &out)?,
        AnyInterp::F64(f) => load_and_draw(f, args, &out)?,
    };
    eprintln!(
        "wrote {} samples of {} (D = {}, temperature {}, seed {}) to {}",
        args.n,
        flow.name,
        flow.dim,
        args.temperature,
        args.seed,
        out.display()
    );
    if non_finite > 0 {
        eprintln!(
            "warning: {non_finite} of {} samples have NaN or infinite values (the flow \
             overflows there; try a lower temperature)",
            args.n
        );
    }
    Ok(())
}

/// Loads the weights, then streams the samples to `out`; returns the rows with a non-finite
/// value.
fn load_and_draw<T: Real>(mut flow: Interp<T>, args: &SampleArgs, out: &Path) -> Result<usize> {
    load_weights(&mut flow, &args.weights)?;
    let mut non_finite = 0;
    super::write_atomically(out, |w| {
        non_finite = draw(&flow, args.n, args.temperature, args.seed, w)?;
        Ok(())
    })?;
    Ok(non_finite)
}

/// Writes the header and `n` samples at `temperature`, drawn in chunks from one RNG.
fn draw<F: Flow + ?Sized>(
    flow: &F,
    n: usize,
    temperature: f64,
    seed: u64,
    w: &mut impl Write,
) -> std::io::Result<usize> {
    let mut rng = rng_from_seed(seed);
    write_header(w, flow.dim())?;
    let t = F::Real::of(temperature);
    let mut non_finite = 0;
    for start in (0..n).step_by(CHUNK) {
        let mut z = flow.sample_base(CHUNK.min(n - start), &mut rng);
        z.mapv_inplace(|v| v * t);
        let (x, _) = flow.forward(z.view());
        non_finite += write_rows(w, x.view())?;
    }
    Ok(non_finite)
}

/// `x0,x1,...,x{d-1}`.
fn write_header(w: &mut impl Write, d: usize) -> std::io::Result<()> {
    let names: Vec<String> = (0..d).map(|j| format!("x{j}")).collect();
    writeln!(w, "{}", names.join(","))
}

/// One line per row, values in their own type's shortest round-trip form (so f32 samples are
/// not padded with f64 digits). Returns how many rows hold a NaN or infinite value.
fn write_rows<T: Real>(w: &mut impl Write, x: ArrayView2<T>) -> std::io::Result<usize> {
    let mut non_finite = 0;
    for row in x.rows() {
        non_finite += row.iter().any(|v| !v.is_finite()) as usize;
        for (j, v) in row.iter().enumerate() {
            let sep = if j == 0 { "" } else { "," };
            // The cast is exact: an f32 flow's value came from an f32.
            let v = if T::DTYPE == "f32" { number(v.f64() as f32) } else { number(v.f64()) };
            write!(w, "{sep}{v}")?;
        }
        writeln!(w)?;
    }
    Ok(non_finite)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn csv<T: Real>(x: ArrayView2<T>) -> (String, usize) {
        let mut buf = Vec::new();
        write_header(&mut buf, x.ncols()).unwrap();
        let bad = write_rows(&mut buf, x).unwrap();
        (String::from_utf8(buf).unwrap(), bad)
    }

    #[test]
    fn header_and_rows() {
        let x = array![[1.5f64, -2.0], [0.1, 3e-8]];
        assert_eq!(csv(x.view()), ("x0,x1\n1.5,-2\n0.1,3e-8\n".into(), 0));
        let one = array![[0.25f64], [f64::NAN], [f64::INFINITY]];
        assert_eq!(csv(one.view()), ("x0\n0.25\nNaN\ninf\n".into(), 2));
    }

    #[test]
    fn f32_values_print_without_f64_digits() {
        let x = array![[0.1f32, 1.0 / 3.0]];
        assert_eq!(csv(x.view()).0, "x0,x1\n0.1,0.33333334\n");
    }
}
