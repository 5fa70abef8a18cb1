//! Large batches run on two threads in row tiles (`flowspec_runtime::par::map_rows`); the
//! result must be the one-block serial run's, for every spec, in generated code and in the
//! interpreter, just below and above the split threshold and at the benchmark's 10,000 rows.
//! Sampling draws its base noise serially, so a seed gives the same samples either way.
//! A training step (`nll_and_grad`) splits from 128 rows (`par::split_step`): its loss and
//! gradient must be the serial step's too.

use flowspec::interp::{AnyInterp, Interp};
use flowspec_runtime::{par, rng_from_seed, verify, Flow, Real};
use flowspec_tests::specs::*;
use ndarray::{Array1, Array2};

/// Rows around the threshold (1,024) and odd tile splits; 10,000 only for small events, as
/// the tests run unoptimised.
fn sizes(dim: usize) -> &'static [usize] {
    if dim <= 4 {
        &[1023, 1024, 1500, 10_000]
    } else {
        &[1023, 1500]
    }
}

/// The largest difference relative to `max(1, |b|)`; NaN against NaN counts as equal.
fn rel_diff<T: Real>(a: &[T], b: &[T]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0.0f64, |m, (&x, &y)| {
        let (x, y) = (x.f64(), y.f64());
        if x.is_nan() && y.is_nan() {
            return m;
        }
        m.max((x - y).abs() / y.abs().max(1.0))
    })
}

fn both<T: Real>(split: &(Array2<T>, Array1<T>), one: &(Array2<T>, Array1<T>)) -> f64 {
    let rows = rel_diff(split.0.as_slice().unwrap(), one.0.as_slice().unwrap());
    rows.max(rel_diff(split.1.as_slice().unwrap(), one.1.as_slice().unwrap()))
}

/// inverse, forward, log_prob and sample, split against serial, for every batch size.
fn check<F: Flow>(flow: &F, what: &str) {
    let tol = if std::mem::size_of::<F::Real>() == 8 { 1e-12 } else { 1e-5 };
    for &n in sizes(flow.dim()) {
        // Points from the flow itself, so bounded layers see their support.
        let x = par::serial(|| flow.sample(n, &mut rng_from_seed(n as u64)));
        let z = flow.sample_base(n, &mut rng_from_seed(2));
        let worst = [
            both(&flow.inverse(x.view()), &par::serial(|| flow.inverse(x.view()))),
            both(&flow.forward(z.view()), &par::serial(|| flow.forward(z.view()))),
            rel_diff(
                flow.log_prob(x.view()).as_slice().unwrap(),
                par::serial(|| flow.log_prob(x.view())).as_slice().unwrap(),
            ),
        ];
        assert!(worst.iter().all(|&w| w <= tol), "{what}, {n} rows: {worst:?}");
        let draw = || flow.sample(n, &mut rng_from_seed(11));
        let (a, b, one) = (draw(), draw(), par::serial(draw));
        assert_eq!(a, b, "{what}, {n} rows: sampling is reproducible for a seed");
        let d = rel_diff(a.as_slice().unwrap(), one.as_slice().unwrap());
        assert!(d <= tol, "{what}, {n} rows: samples differ from serial by {d}");
    }
    check_step(flow, what, tol);
}

/// `nll_and_grad` split against serial, just below and above the step's split threshold.
fn check_step<F: Flow>(flow: &F, what: &str, tol: f64) {
    for n in [par::STEP_MIN_ROWS - 1, 301] {
        let x = par::serial(|| flow.sample(n, &mut rng_from_seed(n as u64)));
        let (split, one) =
            (flow.nll_and_grad(x.view()), par::serial(|| flow.nll_and_grad(x.view())));
        let d = rel_diff(&[split.0], &[one.0]).max(rel_diff(&split.1, &one.1));
        assert!(d <= tol, "{what}, {n} rows: the split step differs from serial by {d}");
    }
}

/// A generated f64 flow and its interpreter, both moved off their identity initialisation.
fn check_f64<F: Flow<Real = f64>>(spec: &str, mut gen: F) {
    verify::perturb(&mut gen, 0.05, 3);
    let name = gen.name().to_string();
    check(&gen, &format!("{name} (generated)"));
    let mut int = Interp::<f64>::new(ir(spec, &name), 7);
    verify::perturb(&mut int, 0.05, 3);
    check(&int, &format!("{name} (interpreter)"));
}

fn ir(spec: &str, name: &str) -> &'static flowspec::ir::Flow {
    let src = std::fs::read_to_string(format!("{}/../{spec}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let program = Box::leak(Box::new(flowspec::compile(&src).expect("spec compiles")));
    program.flows.iter().find(|f| f.name == name).expect("flow in spec")
}

#[test]
fn couplings() {
    flowspec_tests::for_each_f64_flow!(couplings, check_f64);
}

#[test]
fn layer_library() {
    flowspec_tests::for_each_f64_flow!(layer_library, check_f64);
}

#[test]
fn autoregressive_and_wide() {
    flowspec_tests::for_each_f64_flow!(autoregressive, check_f64);
}

/// The f32 flows, generated and interpreted, at their declared dtype.
#[test]
fn f32_flows() {
    check(&GlowLikeF32::new(5), "GlowLikeF32 (generated)");
    check(&MafC2::new(5), "MafC2 (generated)");
    check(&IafC2::new(5), "IafC2 (generated)");
    for name in ["GlowLikeF32", "MafC2", "IafC2"] {
        let spec =
            if name == "GlowLikeF32" { "specs/glow_like.flow" } else { "specs/maf_digits.flow" };
        match AnyInterp::new(ir(spec, name), 5) {
            AnyInterp::F32(int) => check(&int, &format!("{name} (interpreter)")),
            AnyInterp::F64(_) => panic!("{name} is declared f32"),
        }
    }
}
