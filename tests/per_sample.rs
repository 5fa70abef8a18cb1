//! The per-sample API (`log_prob_one`, `inverse_one`, `forward_one` over `[T; D]`) runs its
//! own code path: couplings through row kernels, other layers through their batch kernels on
//! one-row views. For every flow of every spec, each point alone agrees with the same point
//! in a batch: to 1e-12 in f64 and 1e-5 relative in f32 (the row kernels sum the
//! conditioner's products in another order).

use flowspec_runtime::{rng_from_seed, Flow, Real};
use flowspec_tests::f32_variants::{NsfMoons32, RealNvpMoons32};
use flowspec_tests::specs::*;
use rand::RngExt;

/// Data-dependent initialisation on the flow's own samples, then every trainable parameter
/// moved by up to `scale`, so no coupling is the identity.
fn prepare<F: Flow>(flow: &mut F, scale: f64) {
    let init = flow.sample(64, &mut rng_from_seed(1));
    flow.data_init(init.view());
    let mut rng = rng_from_seed(2);
    flow.visit_params_mut(&mut |_, _, d| {
        for v in d.iter_mut() {
            *v += F::Real::of(scale * (2.0 * rng.random::<f64>() - 1.0));
        }
    });
}

/// `a` is `b` to `tol`, relative to `1 + |b|` (infinities must match exactly).
fn close<T: Real>(a: T, b: T, tol: f64) -> bool {
    let (a, b) = (a.f64(), b.f64());
    a == b || (a - b).abs() <= tol * (1.0 + b.abs())
}

fn all_close<T: Real>(a: &[T], b: impl IntoIterator<Item = T>, tol: f64) -> bool {
    a.iter().zip(b).all(|(&x, y)| close(x, y, tol))
}

/// Checks `$name`'s per-sample methods against its batch methods on 12 of its own samples.
macro_rules! per_sample_agrees {
    ($name:ident, $tol:expr) => {{
        let mut flow = $name::new(3);
        prepare(&mut flow, 0.1);
        let x = flow.sample(12, &mut rng_from_seed(4));
        let lp = flow.log_prob(x.view());
        let (z, ld) = flow.inverse(x.view());
        let (xf, ldf) = flow.forward(z.view());
        let what = stringify!($name);
        for i in 0..x.nrows() {
            let row: [_; $name::DIM] = std::array::from_fn(|j| x[[i, j]]);
            let lp1 = flow.log_prob_one(&row);
            assert!(close(lp1, lp[i], $tol), "{what} row {i}: log_prob {lp1} vs {}", lp[i]);
            let (zi, ldi) = flow.inverse_one(&row);
            assert!(all_close(&zi, z.row(i).iter().copied(), $tol), "{what} row {i}: z");
            assert!(close(ldi, ld[i], $tol), "{what} row {i}: ld {ldi} vs {}", ld[i]);
            let zrow: [_; $name::DIM] = std::array::from_fn(|j| z[[i, j]]);
            let (xi, ldfi) = flow.forward_one(&zrow);
            assert!(all_close(&xi, xf.row(i).iter().copied(), $tol), "{what} row {i}: x");
            assert!(close(ldfi, ldf[i], $tol), "{what} row {i}: forward ld {ldfi} vs {}", ldf[i]);
        }
    }};
}

#[test]
fn couplings_f64() {
    per_sample_agrees!(RealNvpMoons, 1e-12);
    per_sample_agrees!(NiceMoons, 1e-12);
    per_sample_agrees!(NiceLogistic, 1e-12);
    per_sample_agrees!(NsfMoons, 1e-12);
    per_sample_agrees!(GlowLike, 1e-12);
    per_sample_agrees!(FourZ, 1e-12);
    per_sample_agrees!(MoonsTeacher, 1e-12);
    per_sample_agrees!(MoonsStudent, 1e-12);
    per_sample_agrees!(DigitsStudent, 1e-12);
    per_sample_agrees!(Digits, 1e-12);
}

#[test]
fn library_layers_f64() {
    per_sample_agrees!(ExpOfUniform, 1e-12);
    per_sample_agrees!(LinearElementwise, 1e-12);
    per_sample_agrees!(PiecewiseSquare, 1e-12);
    per_sample_agrees!(Spline1d, 1e-12);
    per_sample_agrees!(FixedLinear, 1e-12);
    per_sample_agrees!(PartlyFixed, 1e-12);
}

#[test]
fn autoregressive_f64() {
    per_sample_agrees!(MafSmall, 1e-12);
    per_sample_agrees!(IafSmall, 1e-12);
    per_sample_agrees!(SplineAr, 1e-12);
    per_sample_agrees!(MafDigits, 1e-12);
}

#[test]
fn f32_flows() {
    per_sample_agrees!(RealNvpMoons32, 1e-5);
    per_sample_agrees!(NsfMoons32, 1e-5);
    per_sample_agrees!(GlowLikeF32, 1e-5);
    per_sample_agrees!(MafC2, 1e-5);
    per_sample_agrees!(IafC2, 1e-5);
}
