//! Numerics of every spec in `specs/`, through the generated code, in f64: the round trip
//! both ways, the log-det against a brute-force Jacobian determinant, and every parameter
//! gradient against central finite differences.

use flowspec_runtime::verify;
use flowspec_runtime::Flow;
use flowspec_tests::specs::*;

/// `scale` keeps the perturbed log-scales moderate: wide conditioners amplify it. The
/// points are the flow's own samples, inside its support (some layers and bases are bounded).
fn check<F: Flow<Real = f64>>(flow: F, scale: f64) {
    check_every(flow, scale, 1);
}

/// [`check`] probing every `stride`-th parameter (for flows whose every parameter would take
/// minutes of finite differences; the interpreter test below covers the same specs).
fn check_every<F: Flow<Real = f64>>(mut flow: F, scale: f64, stride: usize) {
    verify::perturb(&mut flow, scale, 13);
    let mut rng = flowspec_runtime::rng_from_seed(11);
    flow.data_init(flow.sample(64, &mut rng).view());
    let x = flow.sample(6, &mut rng);
    let r = verify::verify(&mut flow, x.view(), stride);
    eprintln!("{}: {r:?}", flow.name());
    assert!(r.roundtrip < 1e-10, "round trip: {r:?}");
    assert!(r.logdet_consistency < 1e-10, "log-det consistency: {r:?}");
    assert!(r.logdet_vs_jacobian < 1e-6, "log-det vs Jacobian: {r:?}");
    assert!(r.grad_rel < 1e-5, "gradients: {r:?}");
    assert!(r.forward_grad_rel < 1e-5, "generative-direction gradients: {r:?}");
    assert!(r.grad_x_rel < 1e-5, "gradient of log p in x: {r:?}");
    assert_eq!(r.params_checked, flow.num_params().div_ceil(stride));
}

#[test]
fn realnvp_moons() {
    assert_eq!(RealNvpMoons::NUM_PARAMS, 35_344, "zuko's C1 RealNVP has 35,344 parameters");
    check(RealNvpMoons::new(1), 0.02);
}

#[test]
fn nice_moons() {
    check(NiceMoons::new(2), 0.05);
}

#[test]
fn glow_like() {
    check(GlowLike::new(3), 0.2);
}

#[test]
fn nice_logistic() {
    check(NiceLogistic::new(4), 0.05);
}

#[test]
fn nsf_moons() {
    assert_eq!(
        NsfMoons::NUM_PARAMS,
        23_132,
        "zuko's and nflows' C3 spline flow has 23,132 parameters"
    );
    check(NsfMoons::new(5), 0.05);
}

#[test]
fn linear_elementwise() {
    check(LinearElementwise::new(6), 0.2);
    check(PiecewiseSquare::new(7), 0.2);
}

#[test]
fn fixed_parameters() {
    check(FixedLinear::new(0), 0.0);
    check(PartlyFixed::new(9), 0.2);
}

#[test]
fn spline_1d() {
    check(Spline1d::new(8), 0.3);
}

/// MAF, IAF and autoregressive spline flows: every parameter, both directions' gradients.
#[test]
fn autoregressive() {
    assert_eq!(MafDigits::NUM_PARAMS, 576_640, "zuko's C2 MAF has 576,640 parameters");
    check(MafSmall::new(10), 0.2);
    check(IafSmall::new(11), 0.2);
    check(SplineAr::new(12), 0.2);
}

/// The distillation pair: spline MAF teacher and spline IAF student (44,652 parameters each;
/// every 7th is probed).
#[test]
fn distill_pair() {
    check_every(MoonsTeacher::new(13), 0.02, 7);
    check_every(MoonsStudent::new(14), 0.02, 7);
}

/// The notes' worked examples have no parameters: only the round trip and log-det apply.
#[test]
fn textbook_examples() {
    check(FourZ::new(0), 0.0);
    check(ExpOfUniform::new(0), 0.0);
}

/// Flows above this many parameters (the digits-size MAF/IAF flows, 576,640 each) get fewer
/// finite-difference probes in the default run: a probe of one of them costs milliseconds,
/// and their layer kinds are checked parameter by parameter in small flows above.
const LARGE: usize = 100_000;

/// Every flow of every spec file, including ones added later and f32 ones, run through the
/// interpreter in f64 (the interpreter takes any IR; `interp_agrees` ties it to the generated
/// code). Flows check about 400 evenly spaced parameters, large ones about 60; the tests above
/// check every parameter of the small flows, and `large_flows_dense` 2,000 of the large ones.
#[test]
fn every_spec_through_the_interpreter_in_f64() {
    let seen = verify_spec_flows(|n| if n > LARGE { 60 } else { 400 });
    assert!(seen >= 4, "found only {seen} flows in specs/");
}

/// The large flows with 2,000 probed parameters each (about 10 minutes on 2 cores):
/// `cargo test -p flowspec-tests --test numerics_specs -- --ignored`.
#[test]
#[ignore]
fn large_flows_dense() {
    let seen = verify_spec_flows(|n| if n > LARGE { 2_000 } else { 0 });
    assert!(seen >= 3, "found only {seen} large flows in specs/");
}

/// Verifies every flow of every spec file with `probes(num_params)` parameters probed
/// (flows given 0 are skipped); returns how many flows were verified.
fn verify_spec_flows(probes: impl Fn(usize) -> usize) -> usize {
    let dir = format!("{}/../specs", env!("CARGO_MANIFEST_DIR"));
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "flow") {
            continue;
        }
        let src = std::fs::read_to_string(&path).unwrap();
        let program =
            flowspec::compile(&src).unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
        for ir in &program.flows {
            let k = probes(ir.num_params());
            if k == 0 {
                continue;
            }
            let mut flow = flowspec::interp::Interp::<f64>::new(ir, 1);
            verify::perturb(&mut flow, 0.02, 13);
            // The flow's own samples lie in its support (logit, log and uniform layers and
            // bases have bounded domains), away from its edges with probability one.
            let mut rng = flowspec_runtime::rng_from_seed(11);
            flow.data_init(flow.sample(64, &mut rng).view());
            let x = flow.sample(6, &mut rng);
            let r = verify::verify(&mut flow, x.view(), (ir.num_params() / k).max(1));
            let ok = r.roundtrip < 1e-10
                && r.logdet_consistency < 1e-10
                && r.logdet_vs_jacobian < 1e-6
                && r.grad_rel < 1e-5
                && r.forward_grad_rel < 1e-5
                && r.grad_x_rel < 1e-5;
            assert!(ok, "{} / {}: {r:?}", path.display(), ir.name);
            seen += 1;
        }
    }
    seen
}

/// Every spec file is compiled through `flow!` in `tests/lib.rs` (and so snapshotted and
/// compared with the interpreter there).
#[test]
fn every_spec_is_compiled_by_flow_macro() {
    let dir = format!("{}/../specs", env!("CARGO_MANIFEST_DIR"));
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| format!("specs/{}", e.unwrap().file_name().to_string_lossy()))
        .filter(|p| p.ends_with(".flow"))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> =
        flowspec_tests::SPEC_FILES.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "add new specs to tests/lib.rs");
}
