//! Closed-form transformers: affine, soft-clamped affine, leaky ReLU, sigmoid / logit, exp / log.

use super::{outside, Scalar, Transformer, VjpRow};
use crate::real::Real;
use num_traits::Float;

/// `t(x) = x * exp(log_scale) + shift`; raw parameters `[shift, log_scale]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Affine;

impl<T: Real> Transformer<T> for Affine {
    fn n_params(&self) -> usize {
        2
    }
    #[inline]
    fn apply<S: Scalar<T>>(&self, x: S, p: &[S]) -> (S, S) {
        let (shift, log_scale) = (p[0], p[1]);
        (x * log_scale.exp() + shift, log_scale)
    }
    #[inline]
    fn invert<S: Scalar<T>>(&self, y: S, p: &[S]) -> (S, S) {
        let (shift, log_scale) = (p[0], p[1]);
        ((y - shift) * (-log_scale).exp(), -log_scale)
    }
}

/// `t(x) = x * exp(s) + shift` with the log-scale soft-clamped into `(-bound, bound)`:
/// `s = a / (1 + |a| / bound)` (zuko's MAF transformer); raw parameters `[shift, a]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SoftAffine {
    pub bound: f64,
}

impl SoftAffine {
    /// The clamped log-scale `s = a / r`, `r = 1 + |a| / bound`.
    #[inline(always)]
    fn clamp<T: Real, S: Scalar<T>>(&self, a: S) -> S {
        let abs = if a.re() < T::zero() { -a } else { a };
        a / (S::cst(T::one()) + abs.scale(T::of(1.0 / self.bound)))
    }
}

impl<T: Real> Transformer<T> for SoftAffine {
    fn n_params(&self) -> usize {
        2
    }
    #[inline]
    fn apply<S: Scalar<T>>(&self, x: S, p: &[S]) -> (S, S) {
        let s = self.clamp(p[1]);
        (x * s.exp() + p[0], s)
    }
    #[inline]
    fn invert<S: Scalar<T>>(&self, y: S, p: &[S]) -> (S, S) {
        let s = self.clamp(p[1]);
        ((y - p[0]) * (-s).exp(), -s)
    }
    /// Rows in chunks of 64: the clamped log-scales, one vectorised `exp` pass (as in
    /// `apply_many`), then the affine maps. The MAF's sequential solve inverts a column of its
    /// row tile per step through this, instead of one `expf` call per element.
    fn eval_rows(&self, inverse: bool, xs: &mut [T], p: &[T], stride: usize, ld: &mut [T]) {
        const CHUNK: usize = 64;
        let mut buf = [T::zero(); CHUNK];
        for (c, (xs, ld)) in xs.chunks_mut(CHUNK).zip(ld.chunks_mut(CHUNK)).enumerate() {
            let q = |r: usize| &p[(c * CHUNK + r) * stride..][..2];
            let e = &mut buf[..xs.len()];
            for (r, (e, l)) in e.iter_mut().zip(ld.iter_mut()).enumerate() {
                let s = self.clamp::<T, T>(q(r)[1]);
                *e = if inverse { -s } else { s };
                *l += *e;
            }
            crate::vmath::exp_in_place(e);
            for (r, (x, &e)) in xs.iter_mut().zip(e.iter()).enumerate() {
                *x = if inverse { (*x - q(r)[0]) * e } else { *x * e + q(r)[0] };
            }
        }
    }
    /// The clamped log-scales of the whole row first, then one vectorised `exp` pass
    /// (`vmath`, within 2 ulp of libm's): an MAF's `log_prob` spent a sixth of its time in
    /// per-element `expf` calls.
    fn apply_many(&self, xs: &mut [T], p: &[T], buf: &mut Vec<T>) -> T {
        buf.clear();
        buf.extend(p.chunks_exact(2).map(|q| self.clamp::<T, T>(q[1])));
        let sum = buf.iter().fold(T::zero(), |acc, &s| acc + s);
        crate::vmath::exp_in_place(buf);
        for ((x, &e), q) in xs.iter_mut().zip(buf.iter()).zip(p.chunks_exact(2)) {
            *x = *x * e + q[0];
        }
        sum
    }
    /// Closed form: with `e = exp(s)` and `ds/da = 1 / r^2`, `apply` gives
    /// `[wy e, wy, (wy x e + wl) / r^2]` and `invert` (value `v = (y - shift) / e`) gives
    /// `[wy / e, -wy / e, -(wy v + wl) / r^2]`.
    #[inline]
    fn vjp(&self, inverse: bool, x: T, p: &[T], wy: T, wl: T, out: &mut [T]) -> bool {
        let a = p[1];
        let r = T::one() + Float::abs(a) / T::of(self.bound);
        let s = a / r;
        let ds = T::one() / (r * r);
        if inverse {
            let e = Float::exp(-s);
            let v = (x - p[0]) * e;
            out[..3].copy_from_slice(&[wy * e, -wy * e, -(wy * v + wl) * ds]);
        } else {
            let e = Float::exp(s);
            out[..3].copy_from_slice(&[wy * e, wy, (wy * x * e + wl) * ds]);
        }
        true
    }
    /// [`SoftAffine::vjp`] with the row's `exp` in one vectorised pass (`vmath`): an MAF's
    /// training step spent 2% of its time in per-element libm `exp` calls here.
    fn vjp_many(&self, inverse: bool, row: VjpRow<'_, T>, buf: &mut Vec<T>) -> bool {
        let VjpRow { xs, p, w, wl, dp } = row;
        let sign = if inverse { -T::one() } else { T::one() };
        buf.clear();
        buf.extend(p.chunks_exact(2).take(xs.len()).map(|q| sign * self.clamp::<T, T>(q[1])));
        crate::vmath::exp_in_place(buf);
        let each = xs.iter().zip(w).zip(p.chunks_exact(2)).zip(dp.chunks_exact_mut(2)).zip(&*buf);
        for ((((&x, w), q), d), &e) in each {
            let r = T::one() + Float::abs(q[1]) / T::of(self.bound);
            let (wy, ds) = (*w, T::one() / (r * r));
            *w = wy * e;
            if inverse {
                d.copy_from_slice(&[-wy * e, -(wy * (x - q[0]) * e + wl) * ds]);
            } else {
                d.copy_from_slice(&[wy, (wy * x * e + wl) * ds]);
            }
        }
        true
    }
}

/// `t(x) = x` for `x >= 0`, `slope * x` otherwise (`slope > 0`); no parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LeakyRelu {
    pub slope: f64,
}

impl<T: Real> Transformer<T> for LeakyRelu {
    fn n_params(&self) -> usize {
        0
    }
    #[inline]
    fn apply<S: Scalar<T>>(&self, x: S, _: &[S]) -> (S, S) {
        if x.re() >= T::zero() {
            (x, S::cst(T::zero()))
        } else {
            (x.scale(T::of(self.slope)), S::of(self.slope.ln()))
        }
    }
    #[inline]
    fn invert<S: Scalar<T>>(&self, y: S, _: &[S]) -> (S, S) {
        if y.re() >= T::zero() {
            (y, S::cst(T::zero()))
        } else {
            (y.scale(T::of(1.0 / self.slope)), S::of(-self.slope.ln()))
        }
    }
}

/// `t(z) = (sigmoid(z) - alpha) / (1 - 2 alpha)`: maps the real line onto the data side,
/// `(-alpha, 1 - alpha) / (1 - 2 alpha)`, which contains `[0, 1]` (equals `(0, 1)` for
/// `alpha = 0`). Its inverse `logit(alpha + (1 - 2 alpha) x)` is RealNVP's logit
/// preprocessing; for `x` outside that interval the inverse returns a finite clamped value and
/// log-determinant minus infinity. No parameters; `0 <= alpha < 1/2`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sigmoid {
    pub alpha: f64,
}

/// `t(z) = logit(alpha + (1 - 2 alpha) z)`, the inverse of [`Sigmoid`] (same domain rules,
/// mirrored). No parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Logit {
    pub alpha: f64,
}

/// `(sigmoid(z) - alpha) / (1 - 2 alpha)` and its log-derivative
/// `-softplus(z) - softplus(-z) - ln(1 - 2 alpha)`, finite for every finite `z`.
#[inline]
fn squash<T: Real, S: Scalar<T>>(z: S, alpha: f64) -> (S, S) {
    let width = 1.0 - 2.0 * alpha;
    let x = (z.sigmoid() - S::of(alpha)).scale(T::of(1.0 / width));
    let ld = -(z.softplus() + (-z).softplus()) - S::of(width.ln());
    (x, ld)
}

/// `logit(alpha + (1 - 2 alpha) x)` and its log-derivative `ln(1 - 2 alpha) - ln u - ln(1 - u)`.
/// Outside `0 < u < 1` (or for NaN) `u` is clamped to `[eps, 1 - eps]` and the
/// log-derivative is minus infinity.
#[inline]
fn unsquash<T: Real, S: Scalar<T>>(x: S, alpha: f64) -> (S, S) {
    let width = 1.0 - 2.0 * alpha;
    let u = S::of(alpha) + x.scale(T::of(width));
    let ur = u.re();
    if !(ur > T::zero() && ur < T::one()) {
        let eps = T::epsilon();
        let uc = Float::min(Float::max(ur, eps), T::one() - eps);
        return (S::cst(Float::ln(uc) - Float::ln_1p(-uc)), outside());
    }
    let (ln_u, ln_v) = (u.ln(), (-u).ln_1p());
    (ln_u - ln_v, S::of(width.ln()) - ln_u - ln_v)
}

impl<T: Real> Transformer<T> for Sigmoid {
    fn n_params(&self) -> usize {
        0
    }
    #[inline]
    fn apply<S: Scalar<T>>(&self, z: S, _: &[S]) -> (S, S) {
        squash(z, self.alpha)
    }
    #[inline]
    fn invert<S: Scalar<T>>(&self, x: S, _: &[S]) -> (S, S) {
        unsquash(x, self.alpha)
    }
}

impl<T: Real> Transformer<T> for Logit {
    fn n_params(&self) -> usize {
        0
    }
    #[inline]
    fn apply<S: Scalar<T>>(&self, z: S, _: &[S]) -> (S, S) {
        unsquash(z, self.alpha)
    }
    #[inline]
    fn invert<S: Scalar<T>>(&self, x: S, _: &[S]) -> (S, S) {
        squash(x, self.alpha)
    }
}

/// `t(z) = exp(z)`; no parameters. Its inverse is defined for `x > 0`; for `x <= 0` (or NaN)
/// it returns `ln` of the smallest positive normal number and log-determinant minus infinity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Exp;

/// `t(z) = ln z` for `z > 0`, the inverse of [`Exp`] (same domain rule); no parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Log;

/// `(ln x, -ln x)`, or the clamped value and minus infinity outside `x > 0`.
#[inline]
fn log_map<T: Real, S: Scalar<T>>(x: S) -> (S, S) {
    if x.re() > T::zero() {
        let l = x.ln();
        (l, -l)
    } else {
        (S::cst(Float::ln(T::min_positive_value())), outside())
    }
}

impl<T: Real> Transformer<T> for Exp {
    fn n_params(&self) -> usize {
        0
    }
    #[inline]
    fn apply<S: Scalar<T>>(&self, z: S, _: &[S]) -> (S, S) {
        (z.exp(), z)
    }
    #[inline]
    fn invert<S: Scalar<T>>(&self, x: S, _: &[S]) -> (S, S) {
        log_map(x)
    }
}

impl<T: Real> Transformer<T> for Log {
    fn n_params(&self) -> usize {
        0
    }
    #[inline]
    fn apply<S: Scalar<T>>(&self, z: S, _: &[S]) -> (S, S) {
        log_map(z)
    }
    #[inline]
    fn invert<S: Scalar<T>>(&self, x: S, _: &[S]) -> (S, S) {
        (x.exp(), x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::testutil::assert_close;
    use crate::transform::testutil::{
        check_identity, check_transformer, check_zero_density, eval_dual,
    };

    #[test]
    fn affine() {
        check_transformer(&Affine, &[-2.0, -0.3, 0.0, 1.7], &[0.4, -0.7]);
        check_transformer(&Affine, &[-1.0, 2.0], &[-1.5, 1.2]);
        check_identity(&Affine, &[-3.0, 0.0, 5.0]);
    }

    #[test]
    fn soft_affine() {
        let t = SoftAffine { bound: 3.0 };
        check_transformer(&t, &[-2.0, -0.3, 0.0, 1.7], &[0.4, -0.7]);
        check_transformer(&t, &[-1.0, 2.0], &[-1.5, 5.2]);
        check_identity(&t, &[-3.0, 0.0, 5.0]);
        // The log-scale never leaves (-bound, bound).
        let (_, ld) = Transformer::<f64>::apply(&t, 1.0, &[0.0, 1e6]);
        assert!(ld < 3.0 && ld > 2.99);
    }

    /// The closed-form `vjp` agrees with dual numbers through `apply` / `invert`.
    #[test]
    fn soft_affine_apply_many_matches_apply() {
        let t = SoftAffine { bound: 3.0 };
        let xs: Vec<f64> = (0..37).map(|k| k as f64 * 0.3 - 5.0).collect();
        let p: Vec<f64> = (0..74).map(|k| ((k * 7) % 13) as f64 - 6.0).collect();
        let (mut many, mut buf) = (xs.clone(), Vec::new());
        let sum = t.apply_many(&mut many, &p, &mut buf);
        let mut want_sum = 0.0;
        for (k, (&x, &y)) in xs.iter().zip(&many).enumerate() {
            let (want, l) = t.apply(x, &p[2 * k..2 * k + 2]);
            assert!((y - want).abs() <= 4.0 * f64::EPSILON * want.abs().max(1.0), "{k}");
            want_sum += l;
        }
        assert_eq!(sum, want_sum);
    }

    /// The column map (chunks of 64 rows, one vectorised `exp` each) agrees with
    /// `apply_value` / `invert_value` per element, with strided and shared parameters.
    #[test]
    fn soft_affine_eval_rows_matches_per_element() {
        let t = SoftAffine { bound: 3.0 };
        let n = 150;
        let xs: Vec<f64> = (0..n).map(|k| k as f64 * 0.07 - 5.0).collect();
        let p: Vec<f64> = (0..5 * n).map(|k| ((k * 7) % 13) as f64 * 0.6 - 3.5).collect();
        for (inv, stride) in [(false, 5), (true, 5), (true, 0), (false, 2)] {
            let (mut got, mut ld) = (xs.clone(), vec![0.25; n]);
            t.eval_rows(inv, &mut got, &p[1..], stride, &mut ld);
            for r in 0..n {
                let q = &p[1 + r * stride..1 + r * stride + 2];
                let (want, l) = if inv { t.invert(xs[r], q) } else { t.apply(xs[r], q) };
                let what = format!("inv={inv} stride={stride} row {r}");
                assert_close(&what, &[got[r], ld[r]], &[want, 0.25 + l], 1e-14);
            }
        }
    }

    #[test]
    fn soft_affine_vjp_matches_duals() {
        let t = SoftAffine { bound: 2.5 };
        for (x, p) in
            [(0.7, [0.3, -1.2]), (-1.4, [-0.5, 0.8]), (2.0, [1.0, 0.0]), (0.1, [0.0, 9.0])]
        {
            for inv in [false, true] {
                let (wy, wl) = (0.6, -1.3);
                let mut out = [0.0; 3];
                assert!(Transformer::<f64>::vjp(&t, inv, x, &p, wy, wl, &mut out));
                let (y, l) = eval_dual(&t, inv, x, &p);
                let want: Vec<f64> = (0..3).map(|j| wy * y.du[j] + wl * l.du[j]).collect();
                assert_close(&format!("vjp inv={inv} at {x}"), &out, &want, 1e-13);
            }
        }
    }

    /// The row-at-once `vjp_many` agrees with `vjp` element by element, up to the last bits
    /// of the vectorised `exp`; a transformer without a closed form writes nothing.
    #[test]
    fn soft_affine_vjp_many_matches_vjp() {
        let t = SoftAffine { bound: 3.0 };
        let xs: Vec<f64> = (0..37).map(|k| k as f64 * 0.3 - 5.0).collect();
        let p: Vec<f64> = (0..74).map(|k| ((k * 7) % 13) as f64 - 6.0).collect();
        let wy: Vec<f64> = (0..37).map(|k| ((k * 5) % 11) as f64 * 0.2 - 1.0).collect();
        for inv in [false, true] {
            let (mut w, mut dp, mut buf) = (wy.clone(), vec![0.0; 74], Vec::new());
            let row = VjpRow { xs: &xs, p: &p, w: &mut w, wl: -0.7, dp: &mut dp };
            assert!(t.vjp_many(inv, row, &mut buf));
            for k in 0..xs.len() {
                let mut out = [0.0; 3];
                assert!(t.vjp(inv, xs[k], &p[2 * k..2 * k + 2], wy[k], -0.7, &mut out));
                let got = [w[k], dp[2 * k], dp[2 * k + 1]];
                assert_close(&format!("vjp_many inv={inv}, element {k}"), &got, &out, 1e-14);
            }
        }
        let (mut w, mut dp) = (vec![0.5; 2], vec![9.0; 0]);
        let none = LeakyRelu { slope: 0.2 };
        let row = VjpRow { xs: &[1.0, -1.0], p: &[], w: &mut w, wl: 1.0, dp: &mut dp };
        assert!(!none.vjp_many(false, row, &mut Vec::new()));
        assert_eq!(w, [0.5; 2], "nothing written");
    }

    #[test]
    fn leaky_relu() {
        let t = LeakyRelu { slope: 0.2 };
        check_transformer(&t, &[-2.0, -0.1, 0.1, 3.0], &[]);
        let (y, ld) = Transformer::<f64>::apply(&t, -1.0, &[]);
        assert_eq!((y, ld), (-0.2, 0.2f64.ln()));
    }

    #[test]
    fn sigmoid_and_logit() {
        for alpha in [0.0, 0.05] {
            let (s, l) = (Sigmoid { alpha }, Logit { alpha });
            check_transformer(&s, &[-6.0, -0.5, 0.0, 1.3, 8.0], &[]);
            check_transformer(&l, &[0.01, 0.2, 0.5, 0.93, 0.999], &[]);
            check_zero_density(&s, false, &[-0.5, 1.5, f64::NAN, f64::NEG_INFINITY]);
            check_zero_density(&l, true, &[-0.5, 1.5, f64::NAN, f64::INFINITY]);
        }
        // alpha = 0: the ends of [0, 1] have density zero; alpha > 0: they are inside.
        check_zero_density(&Logit { alpha: 0.0 }, true, &[0.0, 1.0]);
        for (alpha, x) in [(0.05, 0.0), (0.05, 1.0), (0.0, 1e-12), (0.0, 1.0 - 1e-12)] {
            let (z, ld) = Transformer::<f64>::apply(&Logit { alpha }, x, &[]);
            assert!(z.is_finite() && ld.is_finite(), "logit({x}) = {z}, {ld}");
            let (x2, _) = Transformer::<f64>::apply(&Sigmoid { alpha }, z, &[]);
            assert!((x2 - x).abs() < 1e-15, "{alpha} {x}: {x2}");
        }
    }

    #[test]
    fn sigmoid_saturates_without_nan() {
        let s = Sigmoid { alpha: 0.0 };
        for z in [-1e4, -745.0, 745.0, 1e4, f64::INFINITY, f64::NEG_INFINITY] {
            let (x, ld) = Transformer::<f64>::apply(&s, z, &[]);
            assert!((0.0..=1.0).contains(&x) && !ld.is_nan() && ld < 0.0, "sigmoid({z})");
        }
        let (x, ld) = Transformer::<f32>::apply(&Sigmoid { alpha: 0.05 }, 30f32, &[]);
        assert!(x.is_finite() && ld.is_finite());
    }

    #[test]
    fn exp_and_log() {
        check_transformer(&Exp, &[-3.0, 0.0, 2.0], &[]);
        check_transformer(&Log, &[1e-3, 0.5, 1.0, 40.0], &[]);
        check_zero_density(&Exp, false, &[0.0, -2.0, f64::NAN, f64::NEG_INFINITY]);
        check_zero_density(&Log, true, &[0.0, -1e-300, f64::NAN]);
    }
}
