//! The scalar type transformers compute with: the flow's [`Real`] itself on the hot paths, or
//! a forward-mode [`Dual`] number when a backward kernel needs exact derivatives with respect
//! to the input and the raw parameters.
//!
//! In files that import [`Scalar`], call `Float` methods on plain reals explicitly
//! (`Float::exp(v)`): both traits are implemented for `T`, so `v.exp()` is ambiguous there.

use crate::real::Real;
use num_traits::Float;
use std::ops::{Add, Div, Mul, Neg, Sub};

/// Arithmetic shared by reals and dual numbers. Control flow (bin searches, domain checks,
/// branches of stable formulas) looks at [`Scalar::re`], so both follow the same branch.
pub trait Scalar<T: Real>:
    Copy
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
{
    /// A constant (zero derivative).
    fn cst(v: T) -> Self;
    /// The value, without derivatives.
    fn re(self) -> T;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn ln_1p(self) -> Self;
    /// The square root; a dual's derivative at 0 is taken as 0 rather than infinity (the
    /// spline inverse clamps a rounding-negative discriminant to 0 and must stay finite).
    fn sqrt(self) -> Self;
    fn tanh(self) -> Self;

    /// A constant from f64.
    #[inline(always)]
    fn of(v: f64) -> Self {
        Self::cst(T::of(v))
    }
    /// `self * k` for a constant `k` (cheaper than a dual product).
    #[inline(always)]
    fn scale(self, k: T) -> Self {
        self * Self::cst(k)
    }
    /// `ln(1 + e^x)`, without overflow for large `x` or loss of precision for small.
    #[inline]
    fn softplus(self) -> Self {
        if self.re() > T::zero() {
            self + (-self).exp().ln_1p()
        } else {
            self.exp().ln_1p()
        }
    }
    /// The logistic function `1 / (1 + e^-x)`, evaluated so that `exp` never overflows.
    #[inline]
    fn sigmoid(self) -> Self {
        let one = Self::cst(T::one());
        if self.re() >= T::zero() {
            one / (one + (-self).exp())
        } else {
            let e = self.exp();
            e / (one + e)
        }
    }
}

impl<T: Real> Scalar<T> for T {
    #[inline(always)]
    fn cst(v: T) -> Self {
        v
    }
    #[inline(always)]
    fn re(self) -> T {
        self
    }
    #[inline(always)]
    fn exp(self) -> Self {
        Float::exp(self)
    }
    #[inline(always)]
    fn ln(self) -> Self {
        Float::ln(self)
    }
    #[inline(always)]
    fn ln_1p(self) -> Self {
        Float::ln_1p(self)
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        Float::sqrt(self)
    }
    #[inline(always)]
    fn tanh(self) -> Self {
        Float::tanh(self)
    }
    #[inline(always)]
    fn scale(self, k: T) -> Self {
        self * k
    }
}

/// A forward-mode dual number: a value and its derivatives along `N` directions. Fixed-size
/// and `Copy`, so evaluating a transformer on duals allocates nothing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dual<T, const N: usize> {
    pub re: T,
    pub du: [T; N],
}

impl<T: Real, const N: usize> Dual<T, N> {
    /// A constant.
    #[inline(always)]
    pub fn constant(re: T) -> Self {
        Self { re, du: [T::zero(); N] }
    }
    /// A variable seeded along direction `lane` (no seed if `lane >= N`).
    #[inline(always)]
    pub fn variable(re: T, lane: usize) -> Self {
        let mut d = Self::constant(re);
        if let Some(v) = d.du.get_mut(lane) {
            *v = T::one();
        }
        d
    }
    /// `f(re)` with derivative `f'(re) = slope`: the chain rule for every unary function.
    #[inline(always)]
    fn chain(self, re: T, slope: T) -> Self {
        let mut du = self.du;
        du.iter_mut().for_each(|d| *d *= slope);
        Self { re, du }
    }
}

impl<T: Real, const N: usize> Add for Dual<T, N> {
    type Output = Self;
    #[inline(always)]
    fn add(mut self, o: Self) -> Self {
        self.re += o.re;
        self.du.iter_mut().zip(o.du).for_each(|(a, b)| *a += b);
        self
    }
}

impl<T: Real, const N: usize> Sub for Dual<T, N> {
    type Output = Self;
    #[inline(always)]
    fn sub(mut self, o: Self) -> Self {
        self.re -= o.re;
        self.du.iter_mut().zip(o.du).for_each(|(a, b)| *a -= b);
        self
    }
}

// The product and quotient rules mix operators; clippy's heuristic flags that.
#[allow(clippy::suspicious_arithmetic_impl)]
impl<T: Real, const N: usize> Mul for Dual<T, N> {
    type Output = Self;
    #[inline(always)]
    fn mul(mut self, o: Self) -> Self {
        self.du.iter_mut().zip(o.du).for_each(|(a, b)| *a = *a * o.re + self.re * b);
        self.re *= o.re;
        self
    }
}

// The product and quotient rules mix operators; clippy's heuristic flags that.
#[allow(clippy::suspicious_arithmetic_impl)]
impl<T: Real, const N: usize> Div for Dual<T, N> {
    type Output = Self;
    #[inline(always)]
    fn div(mut self, o: Self) -> Self {
        let inv = T::one() / o.re;
        let q = self.re * inv;
        // (a/b)' = (a' - q b') / b
        self.du.iter_mut().zip(o.du).for_each(|(a, b)| *a = (*a - q * b) * inv);
        self.re = q;
        self
    }
}

impl<T: Real, const N: usize> Neg for Dual<T, N> {
    type Output = Self;
    #[inline(always)]
    fn neg(mut self) -> Self {
        self.re = -self.re;
        self.du.iter_mut().for_each(|a| *a = -*a);
        self
    }
}

impl<T: Real, const N: usize> Scalar<T> for Dual<T, N> {
    #[inline(always)]
    fn cst(v: T) -> Self {
        Self::constant(v)
    }
    #[inline(always)]
    fn re(self) -> T {
        self.re
    }
    #[inline(always)]
    fn exp(self) -> Self {
        let e = Float::exp(self.re);
        self.chain(e, e)
    }
    #[inline(always)]
    fn ln(self) -> Self {
        self.chain(Float::ln(self.re), T::one() / self.re)
    }
    #[inline(always)]
    fn ln_1p(self) -> Self {
        self.chain(Float::ln_1p(self.re), T::one() / (T::one() + self.re))
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        let r = Float::sqrt(self.re);
        let slope = if r > T::zero() { T::of(0.5) / r } else { T::zero() };
        self.chain(r, slope)
    }
    #[inline(always)]
    fn tanh(self) -> Self {
        let t = Float::tanh(self.re);
        self.chain(t, T::one() - t * t)
    }
    #[inline(always)]
    fn scale(self, k: T) -> Self {
        self.chain(self.re * k, k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type D = Dual<f64, 2>;

    /// d/dx of `f` at x by duals and by central differences agree.
    fn check(name: &str, x: f64, f: impl Fn(D) -> D, g: impl Fn(f64) -> f64) {
        let d = f(D::variable(x, 0));
        let h = 1e-6;
        let fd = (g(x + h) - g(x - h)) / (2.0 * h);
        assert!((d.re - g(x)).abs() < 1e-12, "{name}({x}) value");
        assert!(
            (d.du[0] - fd).abs() < 1e-7 * fd.abs().max(1.0),
            "{name}'({x}): {} vs {fd}",
            d.du[0]
        );
        assert_eq!(d.du[1], 0.0, "{name}: unseeded direction");
    }

    #[test]
    fn unary_functions_match_finite_differences() {
        for x in [-3.0, -0.4, 0.3, 2.5] {
            check("exp", x, |d| d.exp(), f64::exp);
            check("tanh", x, |d| d.tanh(), f64::tanh);
            check("softplus", x, |d| d.softplus(), |v| (1.0 + v.exp()).ln());
            check("sigmoid", x, |d| d.sigmoid(), |v| 1.0 / (1.0 + (-v).exp()));
            check("scale", x, |d| d.scale(-1.5), |v| -1.5 * v);
        }
        for x in [0.2, 1.0, 7.0] {
            check("ln", x, |d| d.ln(), f64::ln);
            check("ln_1p", x, |d| d.ln_1p(), f64::ln_1p);
            check("sqrt", x, |d| d.sqrt(), f64::sqrt);
        }
    }

    #[test]
    fn arithmetic_follows_the_product_and_quotient_rules() {
        let (a, b) = (D::variable(1.5, 0), D::variable(-0.5, 1));
        let q = (a * b + a - b) / (b * b + D::cst(1.0));
        // q = (ab + a - b) / (b^2 + 1): dq/da = (b + 1) / (b^2 + 1),
        // dq/db = ((a - 1)(b^2 + 1) - 2b(ab + a - b)) / (b^2 + 1)^2.
        let (av, bv) = (1.5, -0.5);
        let den: f64 = bv * bv + 1.0;
        assert!((q.re - (av * bv + av - bv) / den).abs() < 1e-15);
        assert!((q.du[0] - (bv + 1.0) / den).abs() < 1e-15);
        let dqdb = ((av - 1.0) * den - 2.0 * bv * (av * bv + av - bv)) / (den * den);
        assert!((q.du[1] - dqdb).abs() < 1e-15);
        assert_eq!((-a).du, [-1.0, 0.0]);
    }

    #[test]
    fn stable_branches_stay_finite() {
        for x in [-1e4f64, -800.0, 800.0, 1e4] {
            let d = D::variable(x, 0);
            assert!(d.softplus().re.is_finite() && d.softplus().du[0].is_finite(), "softplus {x}");
            assert!(d.sigmoid().re.is_finite() && d.sigmoid().du[0].is_finite(), "sigmoid {x}");
        }
        assert_eq!(D::variable(0.0, 0).sqrt().du[0], 0.0);
        assert_eq!(D::variable(2.0, 5).du, [0.0, 0.0]);
        assert!((Scalar::<f32>::softplus(100f32) - 100.0).abs() < 1e-5);
    }
}
