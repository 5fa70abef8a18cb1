//! Autoregressive flows through `flow!`: the autoregressive property read off the Jacobian's
//! zero pattern, reverse-KL fitting of an unnormalized target with the generated generative
//! backward pass, and distillation of a MAF teacher into an IAF student.

use flowspec_runtime::reverse_kl::{self, KlConfig};
use flowspec_runtime::verify;
use ndarray::{Array1, Array2, ArrayView2};

flowspec_macros::flow! {
    /// One MAF layer with a random input order: `in_deg = [3, 5, 1, 2, 4]` for seed 3 (checked below).
    flow OneMaf {
        event [5];
        dtype f64;
        maf(net = made([12, 12], tanh, order = random(seed = 3)));
    }

    /// One IAF layer with spline transformers, reversed order.
    flow OneIaf {
        event [4];
        dtype f64;
        spline_iaf(net = made([9], relu, order = reversed), bins = 4, bound = 3);
    }

    /// A flow to fit by reverse KL: IAF layers can represent any Gaussian exactly.
    flow KlFit {
        event [2];
        dtype f64;
        iaf(net = made([16, 16]));
        iaf(net = made([16, 16], order = reversed));
    }
}

/// The Jacobian of `map` at `x` by central differences (column j: d map / d x_j).
fn jacobian(map: impl Fn(ArrayView2<f64>) -> Array2<f64>, x: &[f64]) -> Array2<f64> {
    let d = x.len();
    let mut pts = Array2::zeros((2 * d, d));
    for j in 0..d {
        for k in 0..d {
            pts[[2 * j, k]] = x[k];
            pts[[2 * j + 1, k]] = x[k];
        }
        pts[[2 * j, j]] += 1e-5;
        pts[[2 * j + 1, j]] -= 1e-5;
    }
    let y = map(pts.view());
    Array2::from_shape_fn((d, d), |(i, j)| (y[[2 * j, i]] - y[[2 * j + 1, i]]) / 2e-5)
}

/// Output i may depend on input j only if j comes no later in the order: exactly zero
/// otherwise (the masks cut the dependence; finite differences of a constant are exactly 0),
/// and clearly nonzero somewhere below the diagonal (the layer is not elementwise).
fn assert_triangular(jac: &Array2<f64>, deg: &[usize]) {
    let mut below = 0.0f64;
    for i in 0..deg.len() {
        assert!(jac[[i, i]].abs() > 1e-6, "diagonal {i}: {jac:?}");
        for j in 0..deg.len() {
            if deg[j] > deg[i] {
                assert_eq!(jac[[i, j]], 0.0, "output {i} depends on later input {j}: {jac:?}");
            } else if j != i {
                below = below.max(jac[[i, j]].abs());
            }
        }
    }
    assert!(below > 1e-4, "no output depends on earlier inputs: {jac:?}");
}

#[test]
fn maf_and_iaf_jacobians_are_triangular_in_degree_order() {
    let mut maf = OneMaf::new(1);
    verify::perturb(&mut maf, 0.3, 2);
    let deg = [3, 5, 1, 2, 4];
    let order = flowspec::ir::Order::Random { seed: 3 };
    assert_eq!(flowspec::check::autoregressive::input_degrees(order, 5), deg);
    let x = [0.3, -0.7, 1.1, 0.2, -0.4];
    assert_triangular(&jacobian(|p| maf.inverse(p).0, &x), &deg);
    // The generative direction is the inverse map: triangular in the same order.
    assert_triangular(&jacobian(|p| maf.forward(p).0, &x), &deg);
    let mut iaf = OneIaf::new(1);
    verify::perturb(&mut iaf, 0.3, 3);
    let deg = [4, 3, 2, 1];
    let z = [0.5, -1.0, 0.8, 0.1];
    assert_triangular(&jacobian(|p| iaf.forward(p).0, &z), &deg);
    assert_triangular(&jacobian(|p| iaf.inverse(p).0, &z), &deg);
}

/// Unnormalized log-density of N(mu, S) with S = [[1, 0.8 s], [0.8 s, s^2]], s = 0.5, plus
/// an arbitrary constant, and its gradient.
fn correlated_gaussian(x: ArrayView2<f64>) -> (Array1<f64>, Array2<f64>) {
    let (mu, s, rho) = ([1.0, -2.0], 0.5, 0.8);
    let det = s * s * (1.0 - rho * rho);
    let prec = [[s * s / det, -rho * s / det], [-rho * s / det, 1.0 / det]];
    let mut lp = Array1::zeros(x.nrows());
    let mut g = Array2::zeros(x.raw_dim());
    for (r, row) in x.rows().into_iter().enumerate() {
        let d = [row[0] - mu[0], row[1] - mu[1]];
        let pd = [prec[0][0] * d[0] + prec[0][1] * d[1], prec[1][0] * d[0] + prec[1][1] * d[1]];
        lp[r] = -0.5 * (d[0] * pd[0] + d[1] * pd[1]) + 7.0;
        g[[r, 0]] = -pd[0];
        g[[r, 1]] = -pd[1];
    }
    (lp, g)
}

#[test]
fn reverse_kl_fits_a_correlated_gaussian() {
    let mut flow = KlFit::new(0);
    let cfg = KlConfig { steps: 1500, batch: 256, lr: 3e-3, seed: 1, ..KlConfig::default() };
    let report =
        reverse_kl::fit_reverse_kl(&mut flow, &mut correlated_gaussian, &cfg, &mut |_, _| {})
            .expect("fits");
    // The target's normalizer: log Z = 7 + ln(2 pi sqrt(det S)).
    let log_z = 7.0 + (2.0 * std::f64::consts::PI * (0.25f64 * 0.36).sqrt()).ln();
    assert!(report.kl.abs() < 0.02, "{report:?}");
    assert!(report.ess > 0.9, "{report:?}");
    assert!((report.log_z - log_z).abs() < 0.02, "log Z {} vs {log_z}", report.log_z);
    let x = flow.sample(20_000, &mut flowspec_runtime::rng_from_seed(4));
    let mean = x.mean_axis(ndarray::Axis(0)).unwrap();
    assert!((mean[0] - 1.0).abs() < 0.05 && (mean[1] + 2.0).abs() < 0.05, "mean {mean}");
}

#[test]
fn distillation_moves_the_student_onto_the_teacher() {
    let mut teacher = OneMaf::new(3);
    verify::perturb(&mut teacher, 0.3, 5);
    // A student of the same shape as the teacher's inverse: an IAF with the same order.
    flowspec_macros::flow! {
        flow Student5 {
            event [5];
            dtype f64;
            iaf(net = made([24, 24], tanh, order = random(seed = 3)));
            iaf(net = made([24, 24], tanh, order = random(seed = 3)));
        }
    }
    let mut student = Student5::new(1);
    let short = KlConfig { steps: 1, batch: 512, seed: 2, ..KlConfig::default() };
    let before = reverse_kl::distill(&teacher, &mut student.clone(), &short, &mut |_, _| {})
        .expect("one step")
        .kl;
    let cfg = KlConfig { steps: 1500, batch: 256, lr: 3e-3, seed: 2, ..KlConfig::default() };
    let report = reverse_kl::distill(&teacher, &mut student, &cfg, &mut |_, _| {}).expect("ok");
    assert!(report.kl < 0.1 * before, "KL {before} -> {}", report.kl);
    assert!(report.ess > 0.8, "{report:?}");
}
