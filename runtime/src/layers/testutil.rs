//! Shared checks for the kernel tests (f64): round trips, log-determinants against a
//! brute-force Jacobian, and gradients of both directions' kernels (`*_backward`,
//! `*_forward_backward`) against central finite differences.

use crate::params::Params;
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2};
use rand::RngExt;

/// Central-difference step: truncation error ~h^2, rounding error ~1e-16/h, both ~1e-10.
const H: f64 = 1e-5;
/// The log-determinant every test starts from, so a kernel that overwrites instead of adding
/// is caught.
const LD0: f64 = 0.25;

pub(crate) fn rng(seed: u64) -> crate::FlowRng {
    crate::rng_from_seed(seed)
}

/// An `n x d` matrix of uniform draws from `(-scale, scale)`.
pub(crate) fn uniform(rng: &mut crate::FlowRng, n: usize, d: usize, scale: f64) -> Array2<f64> {
    Array2::from_shape_simple_fn((n, d), || rng.random_range(-scale..scale))
}

/// Overwrites every parameter with a uniform draw from `(-scale, scale)`.
pub(crate) fn randomize<P: Params<f64>>(p: &mut P, rng: &mut crate::FlowRng, scale: f64) {
    p.visit_mut("", &mut |_, _, d| d.iter_mut().for_each(|v| *v = rng.random_range(-scale..scale)));
}

pub(crate) fn flatten<P: Params<f64>>(p: &P) -> Vec<f64> {
    let mut out = Vec::new();
    p.visit("", &mut |_, _, d| out.extend_from_slice(d));
    out
}

pub(crate) fn unflatten<P: Params<f64>>(p: &mut P, v: &[f64]) {
    let mut at = 0;
    p.visit_mut("", &mut |_, _, d| {
        d.copy_from_slice(&v[at..at + d.len()]);
        at += d.len();
    });
}

/// The central-difference gradient of `f` at `x0`.
pub(crate) fn fd_grad(x0: &[f64], mut f: impl FnMut(&[f64]) -> f64) -> Vec<f64> {
    let mut x = x0.to_vec();
    (0..x.len())
        .map(|k| {
            let mut central = |h: f64| {
                x[k] = x0[k] + h;
                let fp = f(&x);
                x[k] = x0[k] - h;
                let fm = f(&x);
                x[k] = x0[k];
                (fp - fm) / (2.0 * h)
            };
            // Richardson extrapolation: the h^2 error terms cancel, so strongly curved maps
            // (a chain of autoregressive scales) still compare at 1e-6.
            let (d1, d2) = (central(2.0 * H), central(H));
            (4.0 * d2 - d1) / 3.0
        })
        .collect()
}

/// Asserts `a` and `b` agree to `tol`, relative to their size (absolute below 1).
pub(crate) fn assert_close(what: &str, a: &[f64], b: &[f64], tol: f64) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (k, (&x, &y)) in a.iter().zip(b).enumerate() {
        let scale = 1f64.max(x.abs()).max(y.abs());
        assert!((x - y).abs() <= tol * scale, "{what}[{k}]: {x} vs {y}");
    }
}

/// A flow layer under test, wrapping its kernels and buffers.
pub(crate) trait Layer {
    type P: Params<f64> + Clone;
    fn params_mut(&mut self) -> &mut Self::P;
    fn inverse(&mut self, x: ArrayViewMut2<f64>, ld: ArrayViewMut1<f64>);
    fn forward(&mut self, x: ArrayViewMut2<f64>, ld: ArrayViewMut1<f64>);
    fn backward(
        &mut self,
        x_in: ArrayView2<f64>,
        g: ArrayViewMut2<f64>,
        dld: ArrayView1<f64>,
        grad: &mut Self::P,
    );
    /// The backward pass of `forward`, at the forward kernel's input `z_in`.
    fn forward_backward(
        &mut self,
        z_in: ArrayView2<f64>,
        g: ArrayViewMut2<f64>,
        dld: ArrayView1<f64>,
        grad: &mut Self::P,
    );
}

/// A kernel that transforms a batch in place: `(params, cols, x, ld)`.
pub(crate) type ApplyFn<P> = fn(&P, &[usize], ArrayViewMut2<f64>, ArrayViewMut1<f64>);
/// A backward kernel: `(params, cols, x_in, g, dld, grad)`.
pub(crate) type BackwardFn<P> =
    fn(&P, &[usize], ArrayView2<f64>, ArrayViewMut2<f64>, ArrayView1<f64>, &mut P);

/// A layer whose four kernels take only its parameters and one column set (elementwise and
/// linear layers), so tests need not write a [`Layer`] impl for each.
pub(crate) struct Kernels<P> {
    pub p: P,
    pub cols: Vec<usize>,
    pub inverse: ApplyFn<P>,
    pub forward: ApplyFn<P>,
    pub backward: BackwardFn<P>,
    pub forward_backward: BackwardFn<P>,
}

impl<P: Params<f64> + Clone> Layer for Kernels<P> {
    type P = P;
    fn params_mut(&mut self) -> &mut P {
        &mut self.p
    }
    fn inverse(&mut self, x: ArrayViewMut2<f64>, ld: ArrayViewMut1<f64>) {
        (self.inverse)(&self.p, &self.cols, x, ld);
    }
    fn forward(&mut self, x: ArrayViewMut2<f64>, ld: ArrayViewMut1<f64>) {
        (self.forward)(&self.p, &self.cols, x, ld);
    }
    fn backward(
        &mut self,
        x_in: ArrayView2<f64>,
        g: ArrayViewMut2<f64>,
        dld: ArrayView1<f64>,
        grad: &mut P,
    ) {
        (self.backward)(&self.p, &self.cols, x_in, g, dld, grad);
    }
    fn forward_backward(
        &mut self,
        z_in: ArrayView2<f64>,
        g: ArrayViewMut2<f64>,
        dld: ArrayView1<f64>,
        grad: &mut P,
    ) {
        (self.forward_backward)(&self.p, &self.cols, z_in, g, dld, grad);
    }
}

/// Runs one direction on a copy of `x`; returns the output and the log-determinant it added.
fn run<L: Layer>(l: &mut L, x: ArrayView2<f64>, inverse: bool) -> (Array2<f64>, Array1<f64>) {
    let mut y = x.to_owned();
    let mut ld = Array1::from_elem(x.nrows(), LD0);
    if inverse {
        l.inverse(y.view_mut(), ld.view_mut());
    } else {
        l.forward(y.view_mut(), ld.view_mut());
    }
    (y, ld - LD0)
}

/// inverse then forward returns `x`, and the two log-determinants cancel.
pub(crate) fn check_round_trip<L: Layer>(l: &mut L, x: &Array2<f64>) {
    let (z, ld_inv) = run(l, x.view(), true);
    let (x2, ld_fwd) = run(l, z.view(), false);
    assert!((&z - x).iter().any(|v| v.abs() > 1e-3), "the layer is (nearly) the identity");
    assert_close("round trip", x2.as_slice().unwrap(), x.as_slice().unwrap(), 1e-10);
    assert_close("ld sum", (&ld_inv + &ld_fwd).as_slice().unwrap(), &vec![0.0; x.nrows()], 1e-10);
}

/// The normalizing log-determinant is ln|det dz/dx| of a finite-difference Jacobian.
pub(crate) fn check_log_det<L: Layer>(l: &mut L, x: &Array2<f64>) {
    let (_, ld) = run(l, x.view(), true);
    for (r, row) in x.rows().into_iter().enumerate() {
        let d = row.len();
        let mut jac = Array2::zeros((d, d));
        for j in 0..d {
            let z_of = |l: &mut L, dx: f64| {
                let mut xr = row.to_owned().insert_axis(ndarray::Axis(0));
                xr[[0, j]] += dx;
                run(l, xr.view(), true).0
            };
            let col = (z_of(l, H) - z_of(l, -H)) / (2.0 * H);
            jac.column_mut(j).assign(&col.row(0));
        }
        assert_close("log det", &[ld[r]], &[log_abs_det(jac)], 1e-6);
    }
}

/// `*_backward` matches finite differences of `loss = sum(w .* z) + sum(v .* ld)` with
/// respect to the input and every parameter, and accumulates into the gradient.
pub(crate) fn check_grads<L: Layer>(l: &mut L, x: &Array2<f64>, rng: &mut crate::FlowRng) {
    check_direction(l, x, rng, true);
}

/// The same for `*_forward_backward`: `loss = sum(w .* x) + sum(v .* ld)` of the generative
/// kernel at its input `z`.
pub(crate) fn check_forward_grads<L: Layer>(l: &mut L, z: &Array2<f64>, rng: &mut crate::FlowRng) {
    check_direction(l, z, rng, false);
}

fn check_direction<L: Layer>(l: &mut L, x: &Array2<f64>, rng: &mut crate::FlowRng, inv: bool) {
    let (n, d) = x.dim();
    let w = uniform(rng, n, d, 1.0);
    let v = uniform(rng, n, 1, 1.0).remove_axis(ndarray::Axis(1));
    let loss = |l: &mut L, x: ArrayView2<f64>| {
        let (z, ld) = run(l, x, inv);
        (&z * &w).sum() + (&ld * &v).sum()
    };
    let mut g = w.clone();
    let mut grad = l.params_mut().clone();
    let ones = vec![1.0; grad.count()];
    unflatten(&mut grad, &ones);
    if inv {
        l.backward(x.view(), g.view_mut(), v.view(), &mut grad);
    } else {
        l.forward_backward(x.view(), g.view_mut(), v.view(), &mut grad);
    }
    let analytic: Vec<f64> = flatten(&grad).iter().map(|g| g - 1.0).collect();

    let p0 = flatten(l.params_mut());
    let fd = fd_grad(&p0, |p| {
        unflatten(l.params_mut(), p);
        loss(l, x.view())
    });
    unflatten(l.params_mut(), &p0);
    assert_close("param grad", &analytic, &fd, 1e-6);

    let x0 = x.as_slice().unwrap();
    let fd = fd_grad(x0, |xs| loss(l, ArrayView2::from_shape((n, d), xs).unwrap()));
    assert_close("input grad", g.as_slice().unwrap(), &fd, 1e-6);
}

/// Every check, on a batch of 5 rows drawn from `(-2, 2)`.
pub(crate) fn check_layer<L: Layer>(l: &mut L, d: usize, seed: u64) {
    let mut rng = rng(seed);
    let x = uniform(&mut rng, 5, d, 2.0);
    check_round_trip(l, &x);
    check_log_det(l, &x);
    check_grads(l, &x, &mut rng);
    check_forward_grads_at_image(l, &x, &mut rng);
}

/// [`check_forward_grads`] at `z = inverse(x)`: inside the generative map's domain whenever
/// `x` is inside the normalizing map's (e.g. `log`, whose forward needs positive inputs).
pub(crate) fn check_forward_grads_at_image<L: Layer>(
    l: &mut L,
    x: &Array2<f64>,
    rng: &mut crate::FlowRng,
) {
    let (z, _) = run(l, x.view(), true);
    check_forward_grads(l, &z, rng);
}

/// ln|det a| by Gaussian elimination with partial pivoting.
fn log_abs_det(mut a: Array2<f64>) -> f64 {
    let d = a.nrows();
    let mut acc = 0.0;
    for k in 0..d {
        let p = (k..d).max_by(|&i, &j| a[[i, k]].abs().total_cmp(&a[[j, k]].abs())).unwrap();
        for j in 0..d {
            a.swap([k, j], [p, j]);
        }
        let piv = a[[k, k]];
        acc += piv.abs().ln();
        for i in k + 1..d {
            let f = a[[i, k]] / piv;
            for j in k..d {
                a[[i, j]] -= f * a[[k, j]];
            }
        }
    }
    acc
}

#[test]
fn log_abs_det_of_a_known_matrix() {
    let a = ndarray::array![[0.0, 2.0, 0.0], [3.0, 0.0, 0.0], [1.0, 1.0, -0.5]];
    assert!((log_abs_det(a) - 3f64.ln()).abs() < 1e-12);
}
