//! The interpreter against finite differences and its own inverse.
use super::*;
use rand::RngExt;

/// Every layer kind, with permutations between layers so column sets are non-trivial.
const ALL_KINDS: &str = "
    flow All {
        event [4];
        dtype f64;
        actnorm;
        affine_coupling(mask = alternate, net = mlp([8], tanh));
        permute(seed = 3);
        additive_coupling(mask = halves, net = mlp([6], elu(0.5)));
        reverse;
        rescale;
        permute(order = [2, 0, 3, 1]);
        affine_coupling(mask = [1, 0, 0, 1], net = mlp([5, 5], leaky_relu(0.1)), bound = 3);
    }";

fn all_kinds() -> ir::Flow {
    match crate::compile(ALL_KINDS) {
        Ok(mut p) => p.flows.remove(0),
        Err(ds) => panic!("{}", crate::diag::render_all(&ds, "test", ALL_KINDS)),
    }
}

/// Sets every parameter to a draw from U(-scale, scale), so no layer is the identity.
fn perturb<F: Flow<Real = f64>>(flow: &mut F, seed: u64, scale: f64) {
    let mut rng = rng_from_seed(seed);
    flow.visit_params_mut(&mut |_, _, d| {
        d.iter_mut().for_each(|v| *v = rng.random_range(-scale..scale))
    });
}

fn data(n: usize, d: usize, seed: u64) -> Array2<f64> {
    let mut rng = rng_from_seed(seed);
    Array2::from_shape_simple_fn((n, d), || rng.random_range(-2.0..2.0))
}

#[test]
fn names_and_counts_follow_the_ir() {
    let ir = all_kinds();
    let f = Interp::<f64>::new(&ir, 0);
    assert_eq!(f.num_params(), ir.num_params());
    let names: Vec<String> = f.param_specs().into_iter().map(|s| s.name).collect();
    assert_eq!(
        &names[..4],
        ["layer0.loc", "layer0.log_scale", "layer1.net.0.weight", "layer1.net.0.bias"]
    );
    assert!(names.contains(&"layer3.net.1.bias".to_string()));
    assert!(names.contains(&"layer5.log_scale".to_string()));
    assert_eq!(names.last().map(String::as_str), Some("layer7.net.2.bias"));
    assert_eq!(f.fingerprint(), ir.fingerprint());
}

#[test]
fn same_seed_same_parameters() {
    let ir = all_kinds();
    let (a, b) = (Interp::<f64>::new(&ir, 5), Interp::<f64>::new(&ir, 5));
    assert_eq!(a.params(), b.params());
    assert_ne!(a.params(), Interp::<f64>::new(&ir, 6).params());
    let AnyInterp::F64(c) = AnyInterp::new(&ir, 5) else { panic!("the spec says f64") };
    assert_eq!(c.params(), a.params());
    // An f32 flow consumes the RNG identically and holds the same numbers, rounded.
    let rounded: Vec<f32> = a.params().iter().map(|&v| v as f32).collect();
    assert_eq!(Interp::<f32>::new(&ir, 5).params(), rounded);
}

#[test]
fn starts_as_a_permutation() {
    let ir = all_kinds();
    let f = Interp::<f64>::new(&ir, 1);
    let x = data(5, 4, 2);
    let (z, ld) = f.inverse(x.view());
    assert!(ld.iter().all(|&v| v == 0.0));
    let mut sorted_z: Vec<f64> = z.iter().copied().collect();
    let mut sorted_x: Vec<f64> = x.iter().copied().collect();
    sorted_z.sort_by(f64::total_cmp);
    sorted_x.sort_by(f64::total_cmp);
    assert_eq!(sorted_z, sorted_x);
}

#[test]
fn forward_inverts_inverse() {
    let ir = all_kinds();
    let mut f = Interp::<f64>::new(&ir, 1);
    perturb(&mut f, 9, 0.5);
    let x = data(11, 4, 3);
    let (z, ld_inv) = f.inverse(x.view());
    assert!(ld_inv.iter().any(|v| v.abs() > 1e-3), "the perturbed flow has a log-det");
    let (x2, ld_fwd) = f.forward(z.view());
    let err = (&x2 - &x).mapv(f64::abs).fold(0.0, |a: f64, &b| a.max(b));
    assert!(err < 1e-10, "round trip error {err}");
    let ld_err = (&ld_inv + &ld_fwd).mapv(f64::abs).fold(0.0, |a: f64, &b| a.max(b));
    assert!(ld_err < 1e-10, "log-det mismatch {ld_err}");
}

#[test]
fn gradient_matches_finite_differences() {
    let ir = all_kinds();
    let mut f = Interp::<f64>::new(&ir, 1);
    perturb(&mut f, 10, 0.4);
    let x = data(7, 4, 4);
    let (loss, grad) = f.nll_and_grad(x.view());
    assert!((loss - f.mean_nll(x.view())).abs() < 1e-12);
    // First, middle and last entry of every tensor: every layer kind is covered.
    let mut probes = Vec::new();
    let mut at = 0;
    f.visit_params(&mut |_, _, d| {
        probes.extend([at, at + d.len() / 2, at + d.len() - 1]);
        at += d.len();
    });
    let p0 = f.params();
    let h = 1e-6;
    for &i in &probes {
        let mut p = p0.clone();
        p[i] = p0[i] + h;
        f.set_params(&p);
        let up = f.mean_nll(x.view());
        p[i] = p0[i] - h;
        f.set_params(&p);
        let down = f.mean_nll(x.view());
        let fd = (up - down) / (2.0 * h);
        assert!(
            (fd - grad[i]).abs() < 1e-6 * (1.0 + fd.abs()),
            "param {i}: fd {fd} vs {}",
            grad[i]
        );
    }
}

#[test]
fn data_init_standardizes_through_the_layers() {
    let src = "flow A { event [3]; affine_coupling(mask = halves); actnorm; }";
    let ir = crate::compile(src).map(|mut p| p.flows.remove(0)).unwrap_or_else(|_| panic!("spec"));
    let mut f = Interp::<f64>::new(&ir, 0);
    perturb(&mut f, 3, 0.5);
    let mut x = data(200, 3, 5);
    x.column_mut(2).mapv_inplace(|v| 3.0 * v + 7.0);
    f.data_init(x.view());
    let (z, _) = f.inverse(x.view());
    for c in 0..3 {
        let col = z.column(c);
        let mean = col.mean().unwrap_or(f64::NAN);
        let var = col.mapv(|v| v * v).mean().unwrap_or(f64::NAN) - mean * mean;
        assert!(mean.abs() < 1e-9 && (var - 1.0).abs() < 1e-4, "col {c}: {mean} {var}");
    }
}
