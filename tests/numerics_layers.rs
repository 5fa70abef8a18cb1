//! Numerics of every layer kind on its own, through generated code, in f64, on a 3-D event
//! (so that masks and permutations are not symmetric): round trip, log-det against the
//! brute-force Jacobian, every parameter gradient against central differences.

use flowspec_runtime::{verify, Flow};
use ndarray::Array2;
use rand::RngExt;

flowspec_macros::flow! {
    flow Affine { event [3]; affine_coupling(mask = [1, 0, 1], net = mlp([8, 8], tanh), bound = 2.0); }
    flow AffineRelu { event [3]; affine_coupling(mask = halves, net = mlp([8], relu)); }
    flow Additive { event [3]; additive_coupling(mask = alternate_flip, net = mlp([8], elu)); }
    flow Leaky { event [3]; additive_coupling(mask = [0, 1, 1], net = mlp([8], leaky_relu(0.2))); }
    flow Rescaled { event [3]; rescale; }
    flow Actnormed { event [3]; actnorm; }
    // Permutations alone have no parameters; between couplings they change which columns
    // condition which, and the column maps must stay right through the backward pass.
    flow Reversed { event [3]; reverse; affine_coupling(mask = [1, 1, 0], net = mlp([4], tanh)); reverse; }
    flow Shuffled { event [3]; permute(seed = 5); affine_coupling(mask = [0, 1, 0], net = mlp([4], tanh)); permute(seed = 9); rescale; }
    flow Explicit { event [3]; permute(order = [2, 0, 1]); actnorm; additive_coupling(mask = [1, 0, 0], net = mlp([4], tanh)); permute(order = [1, 2, 0]); }
}

fn points(n: usize, d: usize, seed: u64) -> Array2<f64> {
    let mut rng = flowspec_runtime::rng_from_seed(seed);
    Array2::from_shape_fn((n, d), |_| 3.0 * rng.random::<f64>() - 1.5)
}

fn check<F: Flow<Real = f64>>(mut flow: F) {
    flow.data_init(points(32, 3, 1).view());
    verify::perturb(&mut flow, 0.5, 2);
    let r = verify::verify(&mut flow, points(8, 3, 3).view(), 1);
    assert!(r.roundtrip < 1e-10, "{}: {r:?}", flow.name());
    assert!(r.logdet_consistency < 1e-10, "{}: {r:?}", flow.name());
    assert!(r.logdet_vs_jacobian < 1e-6, "{}: {r:?}", flow.name());
    assert!(r.grad_rel < 1e-5, "{}: {r:?}", flow.name());
    assert_eq!(r.params_checked, flow.num_params());
}

#[test]
fn affine_coupling() {
    check(Affine::new(1));
    check(AffineRelu::new(1));
}

#[test]
fn additive_coupling() {
    check(Additive::new(1));
    check(Leaky::new(1));
}

#[test]
fn rescale() {
    check(Rescaled::new(1));
}

#[test]
fn actnorm() {
    check(Actnormed::new(1));
}

#[test]
fn permutations() {
    check(Reversed::new(1));
    check(Shuffled::new(1));
    check(Explicit::new(1));
}

/// A permutation moves dimension values, not just column labels: with the explicit order
/// [2, 0, 1], z = (x2, x0, x1).
#[test]
fn permutation_semantics() {
    flowspec_macros::flow! { flow P { event [3]; permute(order = [2, 0, 1]); } }
    let (z, ld) = P::new(0).inverse_one(&[10.0, 20.0, 30.0]);
    assert_eq!(z, [30.0, 10.0, 20.0]);
    assert_eq!(ld, 0.0);
}

/// actnorm's data-dependent initialisation standardises its input.
#[test]
fn actnorm_data_init_standardises() {
    let x = points(500, 3, 4).mapv(|v| 5.0 * v + 2.0);
    let mut f = Actnormed::new(0);
    f.data_init(x.view());
    let (z, _) = f.inverse(x.view());
    for c in z.columns() {
        let m = c.mean().unwrap();
        let v = c.mapv(|a| (a - m) * (a - m)).mean().unwrap();
        assert!(m.abs() < 1e-10 && (v - 1.0).abs() < 1e-4, "mean {m} var {v}");
    }
}

/// A new flow is the identity: conditioners end in a zero layer.
#[test]
fn new_flow_is_identity() {
    let x = points(5, 3, 6);
    let (z, ld) = Affine::new(3).inverse(x.view());
    assert_eq!(z, x);
    assert!(ld.iter().all(|&v| v == 0.0));
}
