//! The generated code and the tool's interpreter agree on every spec: the same seed gives the
//! same parameters (names, shapes, values), and inverse, forward, log_prob, nll_and_grad and
//! data_init give the same numbers. They call the same kernels with the same column sets, so
//! agreement is exact; the tolerance only allows for a future reordering of sums.

use flowspec::interp::Interp;
use flowspec_runtime::{verify, Flow};
use flowspec_tests::specs::*;
use ndarray::Array2;
use rand::RngExt;

fn points(n: usize, d: usize, seed: u64) -> Array2<f64> {
    let mut rng = flowspec_runtime::rng_from_seed(seed);
    Array2::from_shape_fn((n, d), |_| 3.0 * rng.random::<f64>() - 1.5)
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
}

/// Compiles `spec` (relative to the workspace root), finds `flow.name()` in it, and compares.
fn agree<F: Flow<Real = f64>>(spec: &str, mut gen: F) {
    let src = std::fs::read_to_string(format!("{}/../{spec}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let program = flowspec::compile(&src).expect("spec compiles");
    let ir = program.flows.iter().find(|f| f.name == gen.name()).expect("flow in spec");
    let mut int = Interp::<f64>::new(ir, 7);
    assert_eq!(int.param_specs(), gen.param_specs(), "{}: parameter names and shapes", gen.name());
    assert_eq!(int.params(), gen.params(), "{}: initial parameters", gen.name());
    assert_eq!(int.fingerprint(), gen.fingerprint());
    // The flow's own samples lie in its support (bounded layers and bases).
    let mut rng = flowspec_runtime::rng_from_seed(1);
    let init = gen.sample(64, &mut rng);
    gen.data_init(init.view());
    int.data_init(init.view());
    verify::perturb(&mut gen, 0.02, 2);
    verify::perturb(&mut int, 0.02, 2);
    assert_eq!(int.params(), gen.params(), "{}: after data_init", gen.name());
    let x = gen.sample(16, &mut rng);
    let (sg, si) = (
        gen.sample(8, &mut flowspec_runtime::rng_from_seed(5)),
        int.sample(8, &mut flowspec_runtime::rng_from_seed(5)),
    );
    assert!(
        max_diff(sg.as_slice().unwrap(), si.as_slice().unwrap()) <= 1e-12,
        "{}: samples",
        gen.name()
    );
    let (zg, ldg) = gen.inverse(x.view());
    let (zi, ldi) = int.inverse(x.view());
    let (xg, _) = gen.forward(x.view());
    let (xi, _) = int.forward(x.view());
    let (lg, gg) = gen.nll_and_grad(x.view());
    let (li, gi) = int.nll_and_grad(x.view());
    let (lpg, gxg) = gen.log_prob_grad_x(x.view());
    let (lpi, gxi) = int.log_prob_grad_x(x.view());
    let (wx, wld) = (points(zg.nrows(), zg.ncols(), 9), points(zg.nrows(), 1, 10));
    let wld = wld.column(0);
    let (fpg, fzg) = gen.forward_vjp(zg.view(), wx.view(), wld);
    let (fpi, fzi) = int.forward_vjp(zg.view(), wx.view(), wld);
    let worst = [
        max_diff(zg.as_slice().unwrap(), zi.as_slice().unwrap()),
        max_diff(ldg.as_slice().unwrap(), ldi.as_slice().unwrap()),
        max_diff(xg.as_slice().unwrap(), xi.as_slice().unwrap()),
        max_diff(&gg, &gi),
        (lg - li).abs(),
        max_diff(lpg.as_slice().unwrap(), lpi.as_slice().unwrap()),
        max_diff(gxg.as_slice().unwrap(), gxi.as_slice().unwrap()),
        max_diff(&fpg, &fpi),
        max_diff(fzg.as_slice().unwrap(), fzi.as_slice().unwrap()),
    ];
    assert!(worst.iter().all(|&w| w <= 1e-12), "{}: {worst:?}", gen.name());
}

#[test]
fn coupling_specs() {
    flowspec_tests::for_each_f64_flow!(couplings, agree);
}

#[test]
fn layer_library_specs() {
    flowspec_tests::for_each_f64_flow!(layer_library, agree);
}

#[test]
fn autoregressive_specs() {
    flowspec_tests::for_each_f64_flow!(autoregressive, agree);
}

/// The f32 flow too: the same parameters and outputs in single precision.
#[test]
fn glow_like_f32() {
    let src =
        std::fs::read_to_string(format!("{}/../specs/glow_like.flow", env!("CARGO_MANIFEST_DIR")))
            .unwrap();
    let program = flowspec::compile(&src).unwrap();
    let ir = program.flows.iter().find(|f| f.name == "GlowLikeF32").unwrap();
    let mut int = Interp::<f32>::new(ir, 5);
    let mut gen = GlowLikeF32::new(5);
    let x = points(16, 4, 3).mapv(|v| v as f32);
    gen.data_init(x.view());
    int.data_init(x.view());
    assert_eq!(int.params(), gen.params());
    assert_eq!(int.log_prob(x.view()), gen.log_prob(x.view()));
    assert_eq!(int.nll_and_grad(x.view()), gen.nll_and_grad(x.view()));
}
