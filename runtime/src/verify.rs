//! Numerical self-checks for any flow in f64: the round trip both ways, the log-determinant
//! against a brute-force Jacobian determinant, and every parameter gradient against central
//! finite differences. Tests run them on every layer kind and spec; `flowspec verify` will
//! run them on a user's spec.

use crate::flow::Flow;
use crate::rng_from_seed;
use ndarray::{Array1, Array2, ArrayView2, Axis, Zip};
use rand::RngExt;

/// The worst errors found by [`verify`].
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// max |forward(inverse(x)) - x| and |inverse(forward(z)) - z|.
    pub roundtrip: f64,
    /// max |log-det of inverse + log-det of forward at the image|.
    pub logdet_consistency: f64,
    /// max |log|det J| - brute force| over rows, J the Jacobian of the normalizing direction.
    pub logdet_vs_jacobian: f64,
    /// max relative error of a parameter gradient against central differences.
    pub grad_rel: f64,
    pub params_checked: usize,
    /// max relative error of the generative-direction gradient ([`Flow::forward_vjp`]), for
    /// parameters and base points, against central differences.
    pub forward_grad_rel: f64,
    /// max relative error of [`Flow::log_prob_grad_x`] against central differences.
    pub grad_x_rel: f64,
}

/// Adds N(0, scale^2)-ish (uniform) noise to every parameter, so that no layer is the
/// identity (couplings start with a zero last layer).
pub fn perturb<F: Flow<Real = f64> + ?Sized>(flow: &mut F, scale: f64, seed: u64) {
    let mut rng = rng_from_seed(seed);
    flow.visit_params_mut(&mut |_, _, d| {
        for v in d.iter_mut() {
            *v += scale * (2.0 * rng.random::<f64>() - 1.0);
        }
    });
}

/// Max |forward(inverse(x)) - x| and |inverse(forward(z)) - z| at z = inverse(x) (so both
/// directions run inside their domains), and the log-det consistency.
pub fn roundtrip<F: Flow<Real = f64> + ?Sized>(flow: &F, x: ArrayView2<f64>) -> (f64, f64) {
    let (z, ld_inv) = flow.inverse(x);
    let (x2, ld_fwd) = flow.forward(z.view());
    let (z2, _) = flow.inverse(x2.view());
    let err = max_abs_diff(x2.view(), x).max(max_abs_diff(z2.view(), z.view()));
    let ld = (&ld_inv + &ld_fwd).iter().fold(0.0f64, |m, v| m.max(v.abs()));
    (err, ld)
}

fn max_abs_diff(a: ArrayView2<f64>, b: ArrayView2<f64>) -> f64 {
    a.iter().zip(b.iter()).fold(0.0f64, |m, (p, q)| m.max((p - q).abs()))
}

/// Max over rows of |ld - ln|det J||, J by central differences of `inverse` (step h).
pub fn logdet_vs_jacobian<F: Flow<Real = f64> + ?Sized>(
    flow: &F,
    x: ArrayView2<f64>,
    h: f64,
) -> f64 {
    let d = flow.dim();
    let (_, ld) = flow.inverse(x);
    let mut worst = 0.0f64;
    for (r, row) in x.rows().into_iter().enumerate() {
        let mut pts = Array2::zeros((2 * d, d));
        for j in 0..d {
            pts.row_mut(2 * j).assign(&row);
            pts.row_mut(2 * j + 1).assign(&row);
            pts[[2 * j, j]] += h;
            pts[[2 * j + 1, j]] -= h;
        }
        let (z, _) = flow.inverse(pts.view());
        let jac =
            Array2::from_shape_fn((d, d), |(i, j)| (z[[2 * j, i]] - z[[2 * j + 1, i]]) / (2.0 * h));
        worst = worst.max((ln_abs_det(jac) - ld[r]).abs());
    }
    worst
}

/// ln|det A| by Gaussian elimination with partial pivoting.
pub fn ln_abs_det(mut a: Array2<f64>) -> f64 {
    let n = a.nrows();
    let mut acc = 0.0;
    for c in 0..n {
        let p = (c..n).max_by(|&i, &j| a[[i, c]].abs().total_cmp(&a[[j, c]].abs())).unwrap_or(c);
        if a[[p, c]] == 0.0 {
            return f64::NEG_INFINITY;
        }
        for k in 0..n {
            a.swap([c, k], [p, k]);
        }
        acc += a[[c, c]].abs().ln();
        for i in c + 1..n {
            let f = a[[i, c]] / a[[c, c]];
            for k in c..n {
                let v = a[[c, k]];
                a[[i, k]] -= f * v;
            }
        }
    }
    acc
}

/// The relative error of `g` against the central difference of `f` at `p[i]`, step `h`. A
/// mismatch is re-measured before it counts: a ReLU conditioner is piecewise linear, and a step
/// that crosses a kink gives a wrong difference (so a step 10 times smaller is tried), and a
/// steep map (a logit near the edge of its domain) needs the h^2 error removed (Richardson
/// extrapolation of h and h/2). The best agreement is kept: a wrong gradient fails all three.
fn fd_rel(p: &mut [f64], i: usize, h: f64, g: f64, f: &mut dyn FnMut(&[f64]) -> f64) -> f64 {
    let mut diff = |h: f64| {
        let orig = p[i];
        p[i] = orig + h;
        let up = f(p);
        p[i] = orig - h;
        let down = f(p);
        p[i] = orig;
        (up - down) / (2.0 * h)
    };
    let rel = |fd: f64| (fd - g).abs() / g.abs().max(1e-3);
    let d = diff(h);
    if rel(d) < 1e-6 {
        return rel(d);
    }
    let (small, half) = (diff(h / 10.0), diff(h / 2.0));
    rel(d).min(rel(small)).min(rel((4.0 * half - d) / 3.0))
}

/// Max relative error of `nll_and_grad` against central differences of the mean NLL, over
/// every parameter (or every `stride`-th one), with error relative to max(|g|, floor).
pub fn grad_error<F: Flow<Real = f64> + ?Sized>(
    flow: &mut F,
    x: ArrayView2<f64>,
    h: f64,
    stride: usize,
) -> (f64, usize) {
    let (_, grad) = flow.nll_and_grad(x);
    let mut p = flow.params();
    let (mut worst, mut checked) = (0.0f64, 0);
    for i in (0..p.len()).step_by(stride.max(1)) {
        let mut nll = |q: &[f64]| {
            flow.set_params(q);
            flow.mean_nll(x)
        };
        worst = worst.max(fd_rel(&mut p, i, h, grad[i], &mut nll));
        checked += 1;
    }
    flow.set_params(&p);
    (worst, checked)
}

/// The generative direction's backward pass against central differences of
/// `L = sum(wx . x) + sum(wld * ld)` for `(x, ld) = forward(z)`, random fixed weights: every
/// `stride`-th parameter, and every entry of z. Max relative error.
pub fn forward_grad_error<F: Flow<Real = f64> + ?Sized>(
    flow: &mut F,
    z: ArrayView2<f64>,
    h: f64,
    stride: usize,
) -> f64 {
    let mut rng = rng_from_seed(29);
    let wx = Array2::from_shape_simple_fn(z.dim(), || rng.random_range(-1.0..1.0));
    let wld = ndarray::Array1::from_shape_simple_fn(z.nrows(), || rng.random_range(-1.0..1.0));
    let loss = |flow: &F, z: ArrayView2<f64>| {
        let (x, ld) = flow.forward(z);
        (&x * &wx).sum() + (&ld * &wld).sum()
    };
    let (gp, gz) = flow.forward_vjp(z, wx.view(), wld.view());
    let mut p = flow.params();
    let mut worst = 0.0f64;
    for i in (0..p.len()).step_by(stride.max(1)) {
        let mut at = |q: &[f64]| {
            flow.set_params(q);
            loss(flow, z)
        };
        worst = worst.max(fd_rel(&mut p, i, h, gp[i], &mut at));
    }
    flow.set_params(&p);
    let mut at = |q: ArrayView2<f64>| {
        let (x, ld) = flow.forward(q);
        (&x * &wx).sum_axis(Axis(1)) + &ld * &wld
    };
    worst.max(fd_rel_rows(z, gz.view(), h, &mut at))
}

/// [`Flow::log_prob_grad_x`] against central differences of `log_prob`: max relative error.
pub fn grad_x_error<F: Flow<Real = f64> + ?Sized>(flow: &F, x: ArrayView2<f64>, h: f64) -> f64 {
    let (lp, g) = flow.log_prob_grad_x(x);
    let lp0 = flow.log_prob(x);
    let worst = lp.iter().zip(&lp0).fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    worst.max(fd_rel_rows(x, g.view(), h, &mut |q| flow.log_prob(q)))
}

/// [`fd_rel`] for the gradient `g` of a row-wise function (`f(p)[r]` depends on row r of `p`
/// only, as every flow's per-row outputs do): column j is moved in all rows at once, so one
/// pair of calls checks a whole column. Max relative error over every entry.
fn fd_rel_rows(
    p: ArrayView2<f64>,
    g: ArrayView2<f64>,
    h: f64,
    f: &mut dyn FnMut(ArrayView2<f64>) -> Array1<f64>,
) -> f64 {
    let mut q = p.to_owned();
    let mut worst = 0.0f64;
    for j in 0..p.ncols() {
        let mut diff = |h: f64| {
            q.column_mut(j).mapv_inplace(|v| v + h);
            let up = f(q.view());
            q.column_mut(j).assign(&p.column(j));
            q.column_mut(j).mapv_inplace(|v| v - h);
            let down = f(q.view());
            q.column_mut(j).assign(&p.column(j));
            (up - down) / (2.0 * h)
        };
        let rel = |fd: &Array1<f64>| -> Array1<f64> {
            Zip::from(fd).and(g.column(j)).map_collect(|a, b| (a - b).abs() / b.abs().max(1e-3))
        };
        let d = diff(h);
        let mut best = rel(&d);
        // The same retries as fd_rel (a kink crossed, or an h^2 error), per entry.
        if best.iter().any(|&e| e >= 1e-6) {
            let (small, half) = (diff(h / 10.0), diff(h / 2.0));
            let rich = (half * 4.0 - &d) / 3.0;
            Zip::from(&mut best).and(&rel(&small)).and(&rel(&rich)).for_each(|b, &s, &r| {
                *b = b.min(s).min(r);
            });
        }
        worst = best.iter().fold(worst, |m, &e| m.max(e));
    }
    worst
}

/// All checks on `x` (rows inside the data's support).
pub fn verify<F: Flow<Real = f64> + ?Sized>(
    flow: &mut F,
    x: ArrayView2<f64>,
    grad_stride: usize,
) -> Report {
    let (rt, ldc) = roundtrip(flow, x);
    let ldj = logdet_vs_jacobian(flow, x, 1e-5);
    let (g, n) = grad_error(flow, x, 1e-5, grad_stride);
    let (z, _) = flow.inverse(x);
    let fwd = forward_grad_error(flow, z.view(), 1e-5, grad_stride);
    let gx = grad_x_error(flow, x, 1e-5);
    Report {
        roundtrip: rt,
        logdet_consistency: ldc,
        logdet_vs_jacobian: ldj,
        grad_rel: g,
        params_checked: n,
        forward_grad_rel: fwd,
        grad_x_rel: gx,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    /// f(p)[r] = sum_j sin(p[r, j]) * p[r, 0]: rows independent, columns coupled.
    fn f(p: ArrayView2<f64>) -> Array1<f64> {
        p.rows().into_iter().map(|r| r.iter().map(|v| v.sin()).sum::<f64>() * r[0]).collect()
    }

    fn grad(p: ArrayView2<f64>) -> Array2<f64> {
        let mut g = p.mapv(f64::cos);
        for (mut gr, r) in g.rows_mut().into_iter().zip(p.rows()) {
            gr.mapv_inplace(|c| c * r[0]);
            gr[0] += r.iter().map(|v| v.sin()).sum::<f64>();
        }
        g
    }

    #[test]
    fn row_wise_differences_accept_the_gradient_and_catch_one_wrong_entry() {
        let p = array![[0.3, -1.2, 2.0], [1.1, 0.4, -0.7]];
        let mut g = grad(p.view());
        assert!(fd_rel_rows(p.view(), g.view(), 1e-5, &mut f) < 1e-7);
        g[[1, 2]] *= 1.001;
        assert!(fd_rel_rows(p.view(), g.view(), 1e-5, &mut f) > 5e-4);
    }
}
