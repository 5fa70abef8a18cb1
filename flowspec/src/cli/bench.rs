//! `flowspec bench SPEC`: times a training step, log_prob and sampling of one flow, for both
//! engines: the interpreter and the code `flow!` generates (built as a small release binary
//! in a temporary crate). Each engine runs in its own child process, so the peak memory
//! (VmHWM) reported for it is its own. The measuring itself is `flowspec_runtime::bench`.

use super::{group_digits, load_program, pick_flow};
use anyhow::{anyhow, bail, ensure, Context, Result};
use flowspec::interp::AnyInterp;
use flowspec::{ast, ir};
use flowspec_runtime::bench::{self, Metric, Settings};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// The .flow spec file.
    spec: PathBuf,
    /// Which flow of the spec to time (default: the first).
    #[arg(long, value_name = "NAME")]
    flow: Option<String>,
    /// Rows per training batch.
    #[arg(long, default_value_t = 256, value_name = "N")]
    batch: usize,
    /// Points given to log_prob (as one batch) and drawn by sample.
    #[arg(long, default_value_t = bench::N_EVAL, value_name = "N")]
    n: usize,
    /// The scalar type to time, overriding the spec's `dtype` declaration.
    #[arg(long, value_parser = ["f32", "f64"], value_name = "f32|f64")]
    dtype: Option<String>,
    /// What to time, comma-separated: train, log_prob, sample, log_prob_one (the per-sample
    /// API; generated code only).
    #[arg(long, default_value = "train,log_prob,sample", value_name = "LIST")]
    what: String,
    /// Which engines to time.
    #[arg(long, default_value = "both", value_parser = ["both", "interp", "generated"])]
    engine: String,
    /// Where the data points come from (default: moons for 2-D flows, digits for 64-D ones).
    #[arg(long, value_name = "NAME|FILE")]
    data: Option<String>,
    /// Timed repeats per figure (the median is reported).
    #[arg(long, default_value_t = 7, value_name = "N")]
    repeats: usize,
    /// The shortest timed repeat, in seconds.
    #[arg(long, default_value_t = 0.25, value_name = "SECONDS")]
    target_secs: f64,
    /// Cargo's target directory for the generated benchmark binary (default: flowspec-bench
    /// under the system's temporary directory; kept, so later runs build incrementally).
    #[arg(long, value_name = "DIR")]
    target_dir: Option<PathBuf>,
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Internal: measure the interpreter in this process and print its JSON (the parent
    /// process starts a child with this flag, so each engine's peak memory is its own).
    #[arg(long, hide = true)]
    in_process: bool,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let settings = settings(args)?;
    let (src, program) = spec_with_dtype(&args.spec, args.dtype.as_deref())?;
    let flow = pick_flow(&program, args.flow.as_deref(), &args.spec)?;
    let data = match &args.data {
        Some(d) => d.clone(),
        None => default_data(flow.dim)?,
    };
    if args.in_process {
        println!("{}", measure_interp(flow, &data, &settings)?);
        return Ok(());
    }
    let mut engines = Vec::new();
    if args.engine != "generated" {
        engines.push(run_interp_child(args, &data, &settings)?);
    }
    if args.engine != "interp" {
        let exe = build_generated(&src, flow, args.target_dir.as_deref())?;
        engines.push(run_child(Command::new(&exe).args(bench::child_args(&settings, &data)))?);
    }
    let report = json!({
        "spec": args.spec.display().to_string(),
        "flow": flow.name,
        "dtype": flow.dtype.name(),
        "dim": flow.dim,
        "data": data,
        "batch": settings.batch,
        "n": settings.n,
        "engines": engines,
    });
    if args.json {
        println!("{report}");
    } else {
        print_table(&report);
    }
    Ok(())
}

fn settings(args: &BenchArgs) -> Result<Settings> {
    ensure!(args.batch > 0, "--batch must be at least 1");
    ensure!(args.n > 0, "--n must be at least 1");
    ensure!(args.repeats > 0, "--repeats must be at least 1");
    ensure!(
        args.target_secs.is_finite() && args.target_secs > 0.0,
        "--target-secs must be a positive number"
    );
    Ok(Settings {
        batch: args.batch,
        n: args.n,
        metrics: Metric::parse_list(&args.what).map_err(|e| anyhow!("--what: {e}"))?,
        target_secs: args.target_secs,
        repeats: args.repeats,
        seed: 0,
    })
}

/// The data a flow of this width is timed on when `--data` is not given: the datasets the
/// PyTorch side uses for the same configurations.
fn default_data(dim: usize) -> Result<String> {
    match dim {
        2 => Ok("moons".into()),
        64 => Ok("digits".into()),
        d => bail!("no built-in dataset has {d} columns; give one with --data FILE.csv|FILE.npy"),
    }
}

/// Reads and compiles the spec, first rewriting every flow's `dtype` declaration (or adding
/// one) when `dtype` is given. Returns the source that was compiled and its program.
fn spec_with_dtype(path: &Path, dtype: Option<&str>) -> Result<(String, ir::Program)> {
    let program = load_program(path)?;
    let src = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read spec file `{}`", path.display()))?;
    let Some(dtype) = dtype else { return Ok((src, program)) };
    let rewritten = rewrite_dtype(&src, dtype)?;
    let program = flowspec::compile(&rewritten).map_err(|diags| {
        let shown = format!("{} (with dtype {dtype})", path.display());
        super::SpecErrors(flowspec::diag::render_all(&diags, &shown, &rewritten))
    })?;
    Ok((rewritten, program))
}

/// `src` with every flow declaring `dtype <dtype>;`: existing declarations are rewritten, a
/// flow without one gets it after its opening brace.
fn rewrite_dtype(src: &str, dtype: &str) -> Result<String> {
    let file = flowspec::parse::parse(src).map_err(|d| anyhow!("{}", d.message))?;
    // (byte range to replace, replacement), applied from the end so offsets stay valid.
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    for f in &file.flows {
        let decls: Vec<_> = f
            .items
            .iter()
            .filter_map(|i| match i {
                ast::Item::Dtype(id) => Some(id.span),
                _ => None,
            })
            .collect();
        if decls.is_empty() {
            let brace = src[f.name.span.end..f.span.end]
                .find('{')
                .map(|i| f.name.span.end + i + 1)
                .ok_or_else(|| anyhow!("flow `{}` has no body", f.name.name))?;
            edits.push((brace, brace, format!(" dtype {dtype};")));
        }
        edits.extend(decls.into_iter().map(|s| (s.start, s.end, dtype.to_string())));
    }
    edits.sort_by_key(|e| std::cmp::Reverse(e.0));
    let mut out = src.to_string();
    for (a, b, text) in edits {
        out.replace_range(a..b, &text);
    }
    Ok(out)
}

/// Times the interpreter in this process and returns its JSON object.
fn measure_interp(flow: &ir::Flow, data: &str, s: &Settings) -> Result<Value> {
    let ds = flowspec_runtime::data::resolve(data, s.seed)?;
    flowspec_runtime::data::check_width(&ds.train.view(), flow.dim, &ds.name, &flow.name)?;
    let line = match AnyInterp::new(flow, s.seed) {
        AnyInterp::F32(mut f) => {
            let figs = bench::run(&mut f, ds.train.view(), s, None);
            bench::to_json("interpreter", "f32", flowspec_runtime::Flow::num_params(&f), &figs)
        }
        AnyInterp::F64(mut f) => {
            let figs = bench::run(&mut f, ds.train.view(), s, None);
            bench::to_json("interpreter", "f64", flowspec_runtime::Flow::num_params(&f), &figs)
        }
    };
    Ok(serde_json::from_str(&line)?)
}

/// Runs this executable again with `--in-process` for the interpreter.
fn run_interp_child(args: &BenchArgs, data: &str, s: &Settings) -> Result<Value> {
    let exe = std::env::current_exe().context("cannot find the flowspec executable")?;
    let mut cmd = Command::new(exe);
    cmd.arg("bench").arg(&args.spec).arg("--in-process").arg("--data").arg(data);
    if let Some(f) = &args.flow {
        cmd.arg("--flow").arg(f);
    }
    if let Some(d) = &args.dtype {
        cmd.arg("--dtype").arg(d);
    }
    let what: Vec<_> = s.metrics.iter().map(|m| m.name()).collect();
    cmd.args(["--batch", &s.batch.to_string(), "--n", &s.n.to_string()]);
    cmd.args(["--what", &what.join(","), "--repeats", &s.repeats.to_string()]);
    cmd.args(["--target-secs", &s.target_secs.to_string()]);
    run_child(&mut cmd)
}

/// Runs a measuring child and parses the JSON object it prints last.
fn run_child(cmd: &mut Command) -> Result<Value> {
    let out = cmd.output().with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("the benchmark process failed ({}): {}", out.status, stderr.trim());
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line =
        stdout.lines().rev().find(|l| l.starts_with('{')).ok_or_else(|| {
            anyhow!("the benchmark process printed no figures: {}", stderr.trim())
        })?;
    Ok(serde_json::from_str(line)?)
}

/// The workspace holding `flowspec-runtime` and `flowspec-macros`, as this binary was built
/// from it.
fn workspace_root() -> Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf);
    match root {
        Some(r)
            if r.join("runtime/Cargo.toml").is_file()
                && r.join("flowspec-macros/Cargo.toml").is_file() =>
        {
            Ok(r)
        }
        _ => bail!(
            "timing the generated code needs the flowspec workspace this binary was built from \
             (`{}`, with runtime/ and flowspec-macros/), and it is not there; use --engine interp",
            env!("CARGO_MANIFEST_DIR")
        ),
    }
}

/// Writes a crate that expands the spec with `flow!` and calls the runtime's benchmark main,
/// builds it in release mode (offline) and returns the binary.
fn build_generated(src: &str, flow: &ir::Flow, target_dir: Option<&Path>) -> Result<PathBuf> {
    let root = workspace_root()?;
    let base = std::env::temp_dir().join("flowspec-bench");
    let target = target_dir.map(Path::to_path_buf).unwrap_or_else(|| base.join("target"));
    let name = format!("flowspec_bench_{}_{}", snake(&flow.name), flow.dtype.name());
    let dir = base.join(&name);
    std::fs::create_dir_all(dir.join("src"))
        .with_context(|| format!("cannot create `{}`", dir.display()))?;
    write_if_changed(&dir.join("Cargo.toml"), &manifest(&name, &root))?;
    write_if_changed(&dir.join("spec.flow"), src)?;
    write_if_changed(&dir.join("src/main.rs"), &main_rs(flow))?;
    if !dir.join("Cargo.lock").exists() {
        // The workspace's lock file pins the versions that are in the local registry cache.
        let _ = std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock"));
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!(
        "building the generated code of `{}` ({}) in {} ...",
        flow.name,
        flow.dtype.name(),
        dir.display()
    );
    let out = Command::new(&cargo)
        .args(["build", "--release", "--offline", "--quiet", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .output()
        .with_context(|| format!("cannot run cargo ({})", Path::new(&cargo).display()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> =
            err.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
        bail!(
            "building the generated code failed (crate in `{}`):\n{}",
            dir.display(),
            tail.join("\n")
        );
    }
    let exe = target.join("release").join(&name);
    ensure!(exe.is_file(), "cargo built no `{}`", exe.display());
    Ok(exe)
}

fn manifest(name: &str, root: &Path) -> String {
    let path = |p: &str| root.join(p).display().to_string().replace('\\', "/");
    format!(
        "# Written by `flowspec bench`: the generated code of one spec, as a user's crate builds it.\n\
         [package]\nname = \"{name}\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n\
         [dependencies]\nflowspec-runtime = {{ path = \"{}\" }}\nflowspec-macros = {{ path = \"{}\" }}\n\n\
         [workspace]\n",
        path("runtime"),
        path("flowspec-macros")
    )
}

fn main_rs(flow: &ir::Flow) -> String {
    let (name, t) = (&flow.name, flow.dtype.name());
    format!(
        "// Written by `flowspec bench`.\n\
         flowspec_macros::flow!(file = \"spec.flow\");\n\n\
         fn main() {{\n    \
             let one = |m: &{name}, x: &[{t}]| m.log_prob_one(x.try_into().expect(\"one row\"));\n    \
             std::process::exit(flowspec_runtime::bench::child_main(\"generated\", {name}::new, Some(&one)));\n\
         }}\n"
    )
}

/// Writes `text` unless the file already holds it, so cargo sees no change and rebuilds
/// nothing.
fn write_if_changed(path: &Path, text: &str) -> Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
        return Ok(());
    }
    std::fs::write(path, text).with_context(|| format!("cannot write `{}`", path.display()))
}

/// `RealNvpMoons` -> `real_nvp_moons`.
fn snake(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

fn print_table(r: &Value) {
    let engines = r["engines"].as_array().cloned().unwrap_or_default();
    let params = engines.first().and_then(|e| e["num_params"].as_u64()).unwrap_or(0);
    println!(
        "flow {} ({}, {} parameters) on {}: train batch {}, log_prob/sample n = {}",
        r["flow"].as_str().unwrap_or("?"),
        r["dtype"].as_str().unwrap_or("?"),
        group_digits(params as usize),
        r["data"].as_str().unwrap_or("?"),
        r["batch"],
        r["n"]
    );
    let names: Vec<&str> = engines.iter().map(|e| e["engine"].as_str().unwrap_or("?")).collect();
    print!("{:<14}", "");
    for n in &names {
        print!("{n:>30}");
    }
    if names.len() == 2 {
        print!("{:>12}", "speed-up");
    }
    println!();
    for m in Metric::ALL {
        let figs: Vec<Option<&Value>> = engines
            .iter()
            .map(|e| {
                e["figures"].as_array().and_then(|f| f.iter().find(|f| f["metric"] == m.name()))
            })
            .collect();
        if figs.iter().all(Option::is_none) {
            continue;
        }
        print!("{:<14}", m.name());
        for f in &figs {
            print!("{:>30}", f.map_or("-".to_string(), |f| describe(m, f)));
        }
        if let [Some(a), Some(b)] = figs[..] {
            let (a, b) = (
                a["median_s"].as_f64().unwrap_or(f64::NAN),
                b["median_s"].as_f64().unwrap_or(f64::NAN),
            );
            print!("{:>11.2}x", a / b);
        }
        println!();
    }
    print!("{:<14}", "peak memory");
    for e in &engines {
        let mib =
            e["peak_rss_kib"].as_f64().map_or("-".into(), |k| format!("{:.1} MiB", k / 1024.0));
        print!("{mib:>30}");
    }
    println!();
    let busy = engines
        .iter()
        .flat_map(|e| e["figures"].as_array().cloned().unwrap_or_default())
        .filter_map(|f| f["foreign_cores"].as_f64())
        .fold(0.0f64, f64::max);
    if busy > 0.25 {
        println!(
            "note: other processes used up to {busy:.2} cores while timing; figures are noisy"
        );
    }
}

/// "1.234 ms/step (207,000/s)" or "1,600,000/s (6.25 ms)" or "1.52 us".
fn describe(m: Metric, f: &Value) -> String {
    let s = f["median_s"].as_f64().unwrap_or(f64::NAN);
    let rate = f["samples_per_s"].as_f64().unwrap_or(f64::NAN);
    match m {
        Metric::Train => format!("{:.3} ms/step ({}/s)", s * 1e3, group_digits(rate as usize)),
        Metric::LogProbOne => format!("{:.3} us/point", s * 1e6),
        _ => format!("{}/s ({:.2} ms)", group_digits(rate as usize), s * 1e3),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Cli, Command as Sub};
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<BenchArgs, clap::Error> {
        let all = ["flowspec", "bench"].iter().chain(args).copied();
        match Cli::try_parse_from(all)?.command {
            Sub::Bench(a) => Ok(a),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn arguments_have_the_documented_defaults() {
        let a = parse(&["specs/x.flow"]).unwrap();
        assert_eq!((a.batch, a.n, a.dtype.as_deref(), a.json), (256, 10_000, None, false));
        assert_eq!(a.engine, "both");
        let s = settings(&a).unwrap();
        assert_eq!(s.metrics, [Metric::Train, Metric::LogProb, Metric::Sample]);
        assert_eq!((s.repeats, s.target_secs), (7, 0.25));
    }

    #[test]
    fn arguments_are_read_and_checked() {
        let a = parse(&[
            "x.flow",
            "--batch",
            "16",
            "--dtype",
            "f32",
            "--json",
            "--what",
            "train,log_prob_one",
            "--n",
            "50",
        ])
        .unwrap();
        assert_eq!((a.batch, a.n, a.dtype.as_deref(), a.json), (16, 50, Some("f32"), true));
        assert_eq!(settings(&a).unwrap().metrics, [Metric::Train, Metric::LogProbOne]);
        assert!(parse(&["x.flow", "--dtype", "f16"]).is_err());
        assert!(parse(&["x.flow", "--engine", "gpu"]).is_err());
        assert!(parse(&["x.flow", "--batch", "-3"]).is_err());
        assert!(parse(&[]).is_err());
        let zero = parse(&["x.flow", "--batch", "0"]).unwrap();
        assert!(settings(&zero).unwrap_err().to_string().contains("--batch"));
        let bad = parse(&["x.flow", "--what", "train,speed"]).unwrap();
        assert!(settings(&bad).unwrap_err().to_string().contains("`speed`"));
    }

    #[test]
    fn dtype_is_rewritten_or_added() {
        let src = "flow A {\n    event [2];\n    dtype f64;\n    base normal;\n}\nflow B { event [1]; base normal; }\n";
        let out = rewrite_dtype(src, "f32").unwrap();
        let program = flowspec::compile(&out).unwrap();
        assert!(program.flows.iter().all(|f| f.dtype == ir::Dtype::F32), "{out}");
        assert!(out.contains("    dtype f32;\n    base normal;"));
        assert_eq!(rewrite_dtype(&out, "f64").unwrap().matches("dtype f64;").count(), 2);
    }

    #[test]
    fn spec_errors_are_reported_not_panics() {
        let dir = std::env::temp_dir().join(format!("flowspec-bench-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("bad.flow");
        std::fs::write(&bad, "flow A { event [2]; affine_coupling(mask = nope); }").unwrap();
        assert!(spec_with_dtype(&bad, Some("f32")).is_err());
        assert!(spec_with_dtype(&dir.join("missing.flow"), None).is_err());
        assert!(default_data(7).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_interpreter_is_measured_with_sane_figures() {
        let src = "flow Tiny { event [2]; base normal; affine_coupling(mask = alternate, net = mlp([8], relu)); }";
        let program = flowspec::compile(&rewrite_dtype(src, "f32").unwrap()).unwrap();
        let s = Settings {
            batch: 16,
            n: 100,
            metrics: Metric::ALL.to_vec(),
            target_secs: 0.002,
            repeats: 3,
            seed: 0,
        };
        let v = measure_interp(&program.flows[0], "moons", &s).unwrap();
        assert_eq!((v["engine"].as_str(), v["dtype"].as_str()), (Some("interpreter"), Some("f32")));
        let figs = v["figures"].as_array().unwrap();
        // The interpreter has no per-sample API: three figures.
        let names: Vec<_> = figs.iter().map(|f| f["metric"].as_str().unwrap()).collect();
        assert_eq!(names, ["train", "log_prob", "sample"]);
        for f in figs {
            let (t, rate) = (f["median_s"].as_f64().unwrap(), f["samples_per_s"].as_f64().unwrap());
            assert!(t > 0.0 && t < 1.0 && rate > 0.0, "{f}");
            assert!(f["min_s"].as_f64().unwrap() <= t && f["repeats"] == 3, "{f}");
        }
        assert_eq!(figs[0]["rows"], 16);
        assert_eq!(figs[1]["rows"], 100);
        assert!(v["peak_rss_kib"].as_u64().is_some_and(|k| k > 0));
    }

    #[test]
    fn the_generated_crate_names_the_flow() {
        let program =
            flowspec::compile("flow RealNvp { event [2]; dtype f32; base normal; }").unwrap();
        let main = main_rs(&program.flows[0]);
        assert!(main.contains("m: &RealNvp, x: &[f32]") && main.contains("RealNvp::new"));
        assert_eq!(snake("RealNvpMoons"), "real_nvp_moons");
        let m = manifest("x", Path::new("/w"));
        assert!(m.contains("path = \"/w/runtime\"") && m.contains("[workspace]"));
        assert!(workspace_root().is_ok());
    }
}
