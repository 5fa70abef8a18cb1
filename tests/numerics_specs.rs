//! Numerics of every spec in `specs/`, through the generated code, in f64: the round trip
//! both ways, the log-det against a brute-force Jacobian determinant, and every parameter
//! gradient against central finite differences.

use flowspec_runtime::verify;
use flowspec_runtime::Flow;
use flowspec_tests::specs::*;
use ndarray::Array2;
use rand::RngExt;

/// A batch of points spread over a few units, where every layer is well conditioned.
fn points(n: usize, d: usize, seed: u64) -> Array2<f64> {
    let mut rng = flowspec_runtime::rng_from_seed(seed);
    Array2::from_shape_fn((n, d), |_| 3.0 * rng.random::<f64>() - 1.5)
}

/// `scale` keeps the perturbed log-scales moderate: wide conditioners amplify it.
fn check<F: Flow<Real = f64>>(mut flow: F, scale: f64) {
    let x = points(6, flow.dim(), 11);
    flow.data_init(points(64, flow.dim(), 12).view());
    verify::perturb(&mut flow, scale, 13);
    let r = verify::verify(&mut flow, x.view(), 1);
    eprintln!("{}: {r:?}", flow.name());
    assert!(r.roundtrip < 1e-10, "round trip: {r:?}");
    assert!(r.logdet_consistency < 1e-10, "log-det consistency: {r:?}");
    assert!(r.logdet_vs_jacobian < 1e-6, "log-det vs Jacobian: {r:?}");
    assert!(r.grad_rel < 1e-5, "gradients: {r:?}");
    assert_eq!(r.params_checked, flow.num_params());
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
