//! The reference notes' worked examples, exactly, and 1-D densities that integrate to one.

use flowspec_runtime::Flow;
use flowspec_tests::specs::{ExpOfUniform, FixedLinear, FourZ, PartlyFixed, Spline1d};
use ndarray::{array, Array2};

/// Section 3.2: X = 4Z, Z ~ U[0, 2]: p_X(4) = p_Z(1) |h'(4)| = 1/2 * 1/4 = 1/8, and the
/// density is 1/8 on all of [0, 8] and zero outside.
#[test]
fn four_z_gives_one_eighth() {
    let f = FourZ::new(0);
    assert_eq!(FourZ::NUM_PARAMS, 0);
    assert!((f.log_prob_one(&[4.0]).exp() - 0.125).abs() < 1e-15);
    assert!((f.log_prob_one(&[0.5]).exp() - 0.125).abs() < 1e-15);
    assert!((f.log_prob_one(&[7.9]).exp() - 0.125).abs() < 1e-15);
    assert_eq!(f.log_prob_one(&[8.5]), f64::NEG_INFINITY);
    assert_eq!(f.log_prob_one(&[-0.1]), f64::NEG_INFINITY);
    let (z, ld) = f.inverse_one(&[4.0]);
    assert_eq!((z[0], ld), (1.0, -(4.0f64).ln()));
}

/// Section 3.3: X = exp(Z), Z ~ U[0, 2]: p_X(x) = 1 / (2x) on [1, e^2], zero outside.
#[test]
fn exp_of_uniform_gives_one_over_two_x() {
    let f = ExpOfUniform::new(0);
    for x in [1.0001, 1.5, 2.0, 4.0, 7.0, 7.389] {
        let p = f.log_prob_one(&[x]).exp();
        assert!((p - 1.0 / (2.0 * x)).abs() < 1e-12, "p({x}) = {p}");
    }
    assert_eq!(f.log_prob_one(&[0.9]), f64::NEG_INFINITY);
    assert_eq!(f.log_prob_one(&[7.5]), f64::NEG_INFINITY);
}

/// Trapezoidal quadrature of exp(log_prob) over [a, b] with n intervals.
fn integral<F: Flow<Real = f64>>(f: &F, a: f64, b: f64, n: usize) -> f64 {
    let xs = Array2::from_shape_fn((n + 1, 1), |(i, _)| a + (b - a) * i as f64 / n as f64);
    let p = f.log_prob(xs.view()).mapv(f64::exp);
    let h = (b - a) / n as f64;
    h * (p.sum() - 0.5 * (p[0] + p[n]))
}

#[test]
fn one_dimensional_densities_integrate_to_one() {
    assert!((integral(&FourZ::new(0), 0.0, 8.0, 8000) - 1.0).abs() < 1e-9);
    assert!((integral(&ExpOfUniform::new(0), 1.0, 2f64.exp(), 200_000) - 1.0).abs() < 1e-6);
    let mut s = Spline1d::new(0);
    flowspec_runtime::verify::perturb(&mut s, 0.8, 3);
    let total = integral(&s, -40.0, 40.0, 400_000);
    assert!((total - 1.0).abs() < 1e-6, "spline flow integrates to {total}");
}

/// Monte Carlo: the sample mean of a learned-looking 1-D flow matches the mean of its density.
#[test]
fn samples_match_the_density() {
    let mut s = Spline1d::new(0);
    flowspec_runtime::verify::perturb(&mut s, 0.8, 3);
    let mut rng = flowspec_runtime::rng_from_seed(9);
    let x = s.sample(200_000, &mut rng);
    let mc_mean = x.mean().unwrap();
    let n = 400_000;
    let xs = Array2::from_shape_fn((n + 1, 1), |(i, _)| -40.0 + 80.0 * i as f64 / n as f64);
    let p = s.log_prob(xs.view()).mapv(f64::exp);
    let quad_mean = (0..=n).map(|i| xs[[i, 0]] * p[i]).sum::<f64>() * 80.0 / n as f64;
    assert!((mc_mean - quad_mean).abs() < 0.02, "MC {mc_mean} vs quadrature {quad_mean}");
    let _ = array![0.0];
}

/// Section 6.1: x = W z + b with W = [[2, 0], [1, 1]], b = (1, -1), fixed in the spec:
/// log p(x) = log N(W^-1 (x - b)) - ln|det W| = log N(z) - ln 2.
#[test]
fn fixed_linear_flow_is_exact() {
    let f = FixedLinear::new(0);
    assert_eq!(FixedLinear::NUM_PARAMS, 0);
    let x = [3.0, 0.5];
    let z = [(x[0] - 1.0) / 2.0, (x[1] + 1.0) - (x[0] - 1.0) / 2.0];
    let log_n = -0.5 * (z[0] * z[0] + z[1] * z[1]) - (2.0 * std::f64::consts::PI).ln();
    assert!((f.log_prob_one(&x) - (log_n - 2f64.ln())).abs() < 1e-14);
    assert_eq!(f.inverse_one(&x).0, z);
}

/// Fixed tensors stay fixed: they are not parameters, survive data initialisation, and are
/// not in the weights file.
#[test]
fn fixed_tensors_are_not_trained_or_saved() {
    let mut f = PartlyFixed::new(1);
    let names: Vec<String> = f.param_specs().into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"layer0.loc".to_string())
            && !names.contains(&"layer0.log_scale".to_string())
    );
    assert!(
        !names.contains(&"layer1.shift".to_string()) && names.contains(&"layer1.lower".to_string())
    );
    assert!(
        names.contains(&"base.loc".to_string()) && !names.contains(&"base.log_scale".to_string())
    );
    assert_eq!(f.num_params(), PartlyFixed::NUM_PARAMS);
    let x = Array2::from_shape_fn((50, 3), |(i, j)| (i * 7 + j * 3) as f64 % 5.0 + j as f64);
    f.data_init(x.view());
    assert_eq!(f.layer0.log_scale.to_vec(), vec![0.0; 3]);
    assert_ne!(f.layer0.loc.to_vec(), vec![0.0; 3]);
    assert_eq!(f.layer1.shift.to_vec(), vec![0.5, 0.0, -0.5]);
    let (_, g) = f.nll_and_grad(x.view());
    assert_eq!(g.len(), PartlyFixed::NUM_PARAMS);
    let _ = array![0.0];
}
