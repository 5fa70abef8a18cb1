//! Checks shared by the transformer tests (f64): round trips, log-derivatives against finite
//! differences, dual-number derivatives against finite differences, identity at zero raw
//! parameters, and the zero-density convention outside a domain.

use super::{Dual, Transformer};
use crate::layers::testutil::assert_close;

/// Wide enough for every transformer the tests seed in one pass (RqSpline up to 10 bins).
pub(crate) type D = Dual<f64, 32>;

/// `apply` or, if `inv`, `invert`, on reals.
pub(crate) fn eval<Tr: Transformer<f64>>(tr: &Tr, inv: bool, x: f64, p: &[f64]) -> (f64, f64) {
    if inv {
        tr.invert(x, p)
    } else {
        tr.apply(x, p)
    }
}

/// The same on duals: the input seeded along lane 0, parameter j along lane 1 + j.
pub(crate) fn eval_dual<Tr: Transformer<f64>>(tr: &Tr, inv: bool, x: f64, p: &[f64]) -> (D, D) {
    let pd: Vec<D> = p.iter().enumerate().map(|(j, &v)| D::variable(v, 1 + j)).collect();
    let xd = D::variable(x, 0);
    if inv {
        tr.invert(xd, &pd)
    } else {
        tr.apply(xd, &pd)
    }
}

/// Central differences with one Richardson step, `(4 D(h/2) - D(h)) / 3`: error ~h^4, so
/// steep spline bins and logits near their ends are checked to 1e-6 without tuning points.
fn slope(x: f64, mut f: impl FnMut(f64) -> f64) -> f64 {
    let h = 1e-5 * x.abs().max(1.0);
    let mut d = |h: f64| (f(x + h) - f(x - h)) / (2.0 * h);
    (4.0 * d(h / 2.0) - d(h)) / 3.0
}

/// The gradient of `f` at `at` by [`slope`] along each coordinate.
fn fd_grad(at: &[f64], f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let mut q = at.to_vec();
    (0..at.len())
        .map(|k| {
            let d = slope(at[k], |v| {
                q[k] = v;
                f(&q)
            });
            q[k] = at[k];
            d
        })
        .collect()
}

/// Round trip, log-derivatives of both maps against finite differences, and dual derivatives
/// of both maps' outputs against finite differences, at every point of `xs`.
pub(crate) fn check_transformer<Tr: Transformer<f64>>(tr: &Tr, xs: &[f64], p: &[f64]) {
    assert_eq!(p.len(), tr.n_params(), "raw parameter count");
    for &x in xs {
        let (y, ld) = tr.apply(x, p);
        let (x2, ld2) = tr.invert(y, p);
        assert_close(&format!("round trip at {x}"), &[x2, ld + ld2], &[x, 0.0], 1e-10);
        let fwd = slope(x, |v| tr.apply(v, p).0);
        assert_close(&format!("log det at {x}"), &[ld], &[fwd.abs().ln()], 1e-6);
        let inv = slope(y, |v| tr.invert(v, p).0);
        assert_close(&format!("inverse log det at {y}"), &[ld2], &[inv.abs().ln()], 1e-6);
        check_duals(tr, false, x, p);
        check_duals(tr, true, y, p);
    }
}

/// Dual derivatives of the value and the log-derivative with respect to the input and every
/// raw parameter match central differences; the dual value matches the real one.
pub(crate) fn check_duals<Tr: Transformer<f64>>(tr: &Tr, inv: bool, x: f64, p: &[f64]) {
    let m = 1 + p.len();
    assert!(m <= 32, "too many parameters for the test dual");
    let (y, l) = eval_dual(tr, inv, x, p);
    let (yr, lr) = eval(tr, inv, x, p);
    assert_close("dual value", &[y.re, l.re], &[yr, lr], 1e-13);
    let mut at = vec![x];
    at.extend_from_slice(p);
    let what = if inv { "invert" } else { "apply" };
    let fd = fd_grad(&at, |q| eval(tr, inv, q[0], &q[1..]).0);
    assert_close(&format!("{what} value grad at {x}"), &y.du[..m], &fd, 1e-6);
    let fd = fd_grad(&at, |q| eval(tr, inv, q[0], &q[1..]).1);
    assert_close(&format!("{what} log-det grad at {x}"), &l.du[..m], &fd, 1e-6);
}

/// Raw parameters all zero give the identity, both ways.
pub(crate) fn check_identity<Tr: Transformer<f64>>(tr: &Tr, xs: &[f64]) {
    let p = vec![0.0; tr.n_params()];
    for &x in xs {
        for inv in [false, true] {
            let (y, ld) = eval(tr, inv, x, &p);
            assert!((y - x).abs() <= 1e-12 * x.abs().max(1.0) && ld.abs() < 1e-12, "{x}: {y} {ld}");
        }
    }
}

/// Outside the domain of `apply` (or of `invert` if `!apply`): a finite value, log-derivative
/// minus infinity, and finite dual derivatives.
pub(crate) fn check_zero_density<Tr: Transformer<f64>>(tr: &Tr, apply: bool, xs: &[f64]) {
    let p = vec![0.0; tr.n_params()];
    for &x in xs {
        let (y, ld) = eval(tr, !apply, x, &p);
        assert!(y.is_finite() && ld == f64::NEG_INFINITY, "{x}: {y} {ld}");
        let (y, ld) = eval_dual(tr, !apply, x, &p);
        assert!(y.re.is_finite() && ld.re == f64::NEG_INFINITY, "dual {x}");
        assert!(y.du.iter().chain(&ld.du).all(|d| d.is_finite()), "dual derivatives at {x}");
    }
}
