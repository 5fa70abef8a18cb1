//! Monotone rational-quadratic splines (Durkan et al. 2019, "Neural Spline Flows") on
//! `[-B, B]`, the identity outside.
//!
//! The knots are streamed from the raw logits (a bin search and a prefix sum), so evaluating
//! the spline needs no buffers: the real path allocates nothing and the dual path works for
//! any number of bins.

use super::piecewise::{snap_unit, softmax_max, softmax_norm};
use super::{Dual, Scalar, Transformer};
use crate::real::Real;

/// Minimum bin width and height, as fractions of the interval `2B`.
const MIN_BIN: f64 = 1e-3;
/// Minimum derivative at an interior knot.
const MIN_DERIVATIVE: f64 = 1e-3;

/// A rational-quadratic spline with `bins` bins on `[-bound, bound]`, `3 bins - 1` raw
/// parameters per element: `bins` width logits, `bins` height logits and `bins - 1` interior
/// knot-derivative raws. Widths and heights are `min + (1 - bins min) softmax(raw)`
/// (`min = 1e-3`, or `0.5 / bins` beyond 500 bins so the bins still fit); interior
/// derivatives are `1e-3 + (1 - 1e-3) softplus(raw) / ln 2`, so raw zeros give derivative 1
/// and the identity. The boundary derivatives are 1, matching the identity tails.
///
/// Outside `[-B, B]` the spline is never evaluated (so tails cannot produce NaN values or
/// gradients, what masked implementations achieve by clipping the input first); NaN inputs
/// pass through unchanged.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RqSpline {
    pub bins: usize,
    pub bound: f64,
}

/// The knots of one axis (x or y), streamed from `K` raw logits.
struct Knots<'a, T, S> {
    raw: &'a [S],
    /// `exp(raw[j] - max)`, precomputed (real knots only: see [`Knots::with_exps`]).
    exps: Option<&'a [T]>,
    max: T,
    sum: S,
    min: T,
    free: T,
    bound: T,
}

impl<'a, T: Real, S: Scalar<T>> Knots<'a, T, S> {
    fn new(raw: &'a [S], bound: T) -> Self {
        let (max, sum) = softmax_norm(raw);
        Self::assemble(raw, None, max, sum, bound)
    }

    /// The knots of `raw` with their softmax shift and normaliser, and the weights if known.
    #[inline(always)]
    fn assemble(raw: &'a [S], exps: Option<&'a [T]>, max: T, sum: S, bound: T) -> Self {
        let k = raw.len();
        let min = MIN_BIN.min(0.5 / k as f64);
        let (min, free) = (T::of(min), T::of(1.0 - k as f64 * min));
        Self { raw, exps, max, sum, min, free, bound }
    }

    /// The unnormalised softmax weight of bin `j`.
    #[inline(always)]
    fn weight(&self, j: usize) -> S {
        match self.exps {
            // Only real knots have `exps`, so `S` is `T` here and the constant is the value.
            Some(e) => S::cst(e[j]),
            None => (self.raw[j] - S::cst(self.max)).exp(),
        }
    }

    /// Knot `j` (`0..=K`), given the summed weights of the bins below it. The end knots are
    /// exactly `-B` and `B`, so the last bin ends where the identity tail starts.
    #[inline(always)]
    fn knot(&self, j: usize, below: S) -> S {
        if j == 0 {
            S::cst(-self.bound)
        } else if j == self.raw.len() {
            S::cst(self.bound)
        } else {
            let frac = (below / self.sum).scale(self.free) + S::cst(self.min * T::of(j as f64));
            frac.scale(self.bound + self.bound) - S::cst(self.bound)
        }
    }

    /// The bin holding `v` (in `[-B, B]`; `B` itself belongs to the last bin) and its knots.
    #[inline(always)]
    fn find(&self, v: T) -> (usize, S, S) {
        let k = self.raw.len();
        let (mut j, mut below) = (0, self.weight(0));
        let (mut left, mut right) = (self.knot(0, below), self.knot(1, below));
        while j + 1 < k && v >= right.re() {
            j += 1;
            below = below + self.weight(j);
            left = right;
            right = self.knot(j + 1, below);
        }
        (j, left, right)
    }

    /// The knots of bin `j`.
    #[inline(always)]
    fn edges(&self, j: usize) -> (S, S) {
        let below = (0..j).fold(S::cst(T::zero()), |acc, i| acc + self.weight(i));
        (self.knot(j, below), self.knot(j + 1, below + self.weight(j)))
    }
}

impl<'a, T: Real> Knots<'a, T, T> {
    /// Real knots from their weights `exps[j] = exp(raw[j] - max)`, computed by the caller.
    /// (Only `S = T` can hold `exps`: a dual's weight must carry its derivatives.)
    #[inline(always)]
    fn with_exps(raw: &'a [T], max: T, exps: &'a [T], bound: T) -> Self {
        let sum = exps.iter().fold(T::zero(), |acc, &e| acc + e);
        Self::assemble(raw, Some(exps), max, sum, bound)
    }

    /// Adds to `out[i]` the gradient with respect to logit `i` of a loss whose gradients with
    /// respect to knots `j` and `j + 1` (at `at0`, `at1`) are `g0`, `g1`. With `P_k` the
    /// softmax mass below knot `k`, `d knot_k / d raw_i = 2 B free p_i ([i < k] - P_k)`;
    /// the end knots are constants.
    fn add_grad(&self, j: usize, (at0, at1): (T, T), (g0, g1): (T, T), out: &mut [T]) {
        let k = self.raw.len();
        let (g0, g1) = (if j > 0 { g0 } else { T::zero() }, if j + 1 < k { g1 } else { T::zero() });
        // P_k from the knot itself (inverting `knot`), saving a second prefix sum.
        let two_b = self.bound + self.bound;
        let mass =
            |at: T, k: usize| ((at + self.bound) / two_b - self.min * T::of(k as f64)) / self.free;
        let shared = g0 * mass(at0, j) + g1 * mass(at1, j + 1);
        let c = two_b * self.free / self.sum;
        for (i, o) in out.iter_mut().enumerate() {
            let below = if i < j {
                g0 + g1
            } else if i == j {
                g1
            } else {
                T::zero()
            };
            *o += c * self.weight(i) * (below - shared);
        }
    }
}

/// One bin of the spline: its corners and the derivatives at its two knots.
struct Bin<S> {
    x0: S,
    y0: S,
    w: S,
    h: S,
    d0: S,
    d1: S,
}

impl<S> Bin<S> {
    /// `ln dy/dx` at fraction `xi` of the bin, with slope `s = h / w`:
    /// `ln(s^2 (d1 xi^2 + 2 s xi (1 - xi) + d0 (1 - xi)^2)) - 2 ln(den)`.
    #[inline(always)]
    fn log_slope<T: Real>(&self, xi: S, s: S) -> S
    where
        S: Scalar<T>,
    {
        let (one, two) = (S::cst(T::one()), T::of(2.0));
        let om = one - xi;
        let t = xi * om;
        let den = s + (self.d0 + self.d1 - s.scale(two)) * t;
        let num = self.d1 * xi * xi + (s * t).scale(two) + self.d0 * om * om;
        (s.ln() - den.ln()).scale(two) + num.ln()
    }

    /// `(y, ln dy/dx)` at `x` inside the bin.
    #[inline(always)]
    fn forward<T: Real>(&self, x: S) -> (S, S)
    where
        S: Scalar<T>,
    {
        let s = self.h / self.w;
        let xi = snap_unit((x - self.x0) / self.w);
        let t = xi * (S::cst(T::one()) - xi);
        let den = s + (self.d0 + self.d1 - s.scale(T::of(2.0))) * t;
        let y = self.y0 + self.h * (s * xi * xi + self.d0 * t) / den;
        (y, self.log_slope(xi, s))
    }

    /// `(x, ln dx/dy)` at `y` inside the bin, by the cancellation-free root of the quadratic
    /// `a xi^2 + b xi + c = 0`: `xi = 2c / (-b - sqrt(b^2 - 4ac))`. The discriminant is
    /// positive in exact arithmetic; rounding below zero is clamped to zero.
    #[inline(always)]
    fn inverse<T: Real>(&self, y: S) -> (S, S)
    where
        S: Scalar<T>,
    {
        let s = self.h / self.w;
        let dy = y - self.y0;
        let delta = self.d0 + self.d1 - s.scale(T::of(2.0));
        let a = self.h * (s - self.d0) + dy * delta;
        let b = self.h * self.d0 - dy * delta;
        let c = -(s * dy);
        let disc = b * b - (a * c).scale(T::of(4.0));
        let disc = if disc.re() > T::zero() { disc } else { S::cst(T::zero()) };
        let xi = snap_unit(c.scale(T::of(2.0)) / (-b - disc.sqrt()));
        (self.x0 + xi * self.w, -self.log_slope(xi, s))
    }
}

impl RqSpline {
    /// The derivative at knot `j`: 1 at both ends, from the raw parameter in between.
    #[inline(always)]
    fn derivative<T: Real, S: Scalar<T>>(&self, raw: &[S], j: usize) -> S {
        if j == 0 || j == self.bins {
            return S::cst(T::one());
        }
        let k = (1.0 - MIN_DERIVATIVE) / std::f64::consts::LN_2;
        S::of(MIN_DERIVATIVE) + raw[j - 1].softplus().scale(T::of(k))
    }

    /// Whether `v` is inside `[-B, B]` on a spline that has bins (false for NaN).
    fn inside<T: Real>(&self, v: T) -> bool {
        let b = T::of(self.bound);
        self.bins > 0 && b > T::zero() && v >= -b && v <= b
    }

    /// Finds the bin of `v` along the axis `search` (widths forward, heights inverse) and
    /// assembles it.
    fn bin<T: Real, S: Scalar<T>>(&self, v: T, p: &[S], forward: bool) -> Bin<S> {
        let k = self.bins;
        let bound = T::of(self.bound);
        let (xs, ys) = (Knots::new(&p[..k], bound), Knots::new(&p[k..2 * k], bound));
        self.bin_of(xs, ys, v, p, forward)
    }

    /// [`RqSpline::bin`] with the knots of both axes given.
    #[inline(always)]
    fn bin_of<T: Real, S: Scalar<T>>(
        &self,
        xs: Knots<'_, T, S>,
        ys: Knots<'_, T, S>,
        v: T,
        p: &[S],
        forward: bool,
    ) -> Bin<S> {
        let k = self.bins;
        let (search, other) = if forward { (xs, ys) } else { (ys, xs) };
        let (j, s0, s1) = search.find(v);
        let (o0, o1) = other.edges(j);
        let ((x0, x1), (y0, y1)) =
            if forward { ((s0, s1), (o0, o1)) } else { ((o0, o1), (s0, s1)) };
        let d = &p[2 * k..3 * k - 1];
        let (d0, d1) = (self.derivative(d, j), self.derivative(d, j + 1));
        Bin { x0, y0, w: x1 - x0, h: y1 - y0, d0, d1 }
    }
}

/// Most bins whose softmax weights [`RqSpline::with_knots`] computes up front (on the stack).
const UPFRONT_BINS: usize = 32;

impl RqSpline {
    /// Calls `f` with the knots of both axes of real parameters `p`. Up to 32 bins, the `2K`
    /// softmax weights come from one vectorised `exp` pass; the streamed knots computed
    /// each weight up to three times (normaliser, search, the other axis's prefix), and
    /// scalar `expf` was a quarter of C3's `log_prob`.
    #[inline(always)]
    fn with_knots<T: Real, R>(&self, p: &[T], f: impl FnOnce(Knots<T, T>, Knots<T, T>) -> R) -> R {
        let k = self.bins;
        let bound = T::of(self.bound);
        let (px, py) = (&p[..k], &p[k..2 * k]);
        if k > UPFRONT_BINS {
            return f(Knots::new(px, bound), Knots::new(py, bound));
        }
        let (mx, my) = (softmax_max(px), softmax_max(py));
        let mut e = [T::zero(); 2 * UPFRONT_BINS];
        for (j, (&a, &b)) in px.iter().zip(py).enumerate() {
            e[j] = a - mx;
            e[k + j] = b - my;
        }
        crate::vmath::exp_in_place(&mut e[..2 * k]);
        let (ex, ey) = e[..2 * k].split_at(k);
        f(Knots::with_exps(px, mx, ex, bound), Knots::with_exps(py, my, ey, bound))
    }
}

impl<T: Real> Transformer<T> for RqSpline {
    fn n_params(&self) -> usize {
        (3 * self.bins).saturating_sub(1)
    }

    /// Differentiates the bin formula with duals along its 7 local inputs only (the input,
    /// the bin's corner, width, height and knot derivatives), then chains those to the raw
    /// parameters in closed form: about 4x cheaper than duals along all `3K` directions.
    fn vjp(&self, inverse: bool, v: T, p: &[T], wy: T, wl: T, out: &mut [T]) -> bool {
        out.fill(T::zero());
        if !self.inside(v) {
            out[0] = wy;
            return true;
        }
        self.with_knots(p, |xs, ys| self.vjp_in(xs, ys, inverse, v, p, (wy, wl), out));
        true
    }

    fn apply<S: Scalar<T>>(&self, x: S, p: &[S]) -> (S, S) {
        if !self.inside(x.re()) {
            return (x, S::cst(T::zero()));
        }
        self.bin(x.re(), p, true).forward(x)
    }

    fn invert<S: Scalar<T>>(&self, y: S, p: &[S]) -> (S, S) {
        if !self.inside(y.re()) {
            return (y, S::cst(T::zero()));
        }
        self.bin(y.re(), p, false).inverse(y)
    }

    #[inline(always)]
    fn apply_value(&self, x: T, p: &[T]) -> (T, T) {
        if !self.inside(x) {
            return (x, T::zero());
        }
        self.with_knots(p, |xs, ys| self.bin_of(xs, ys, x, p, true).forward(x))
    }

    #[inline(always)]
    fn invert_value(&self, y: T, p: &[T]) -> (T, T) {
        if !self.inside(y) {
            return (y, T::zero());
        }
        self.with_knots(p, |xs, ys| self.bin_of(xs, ys, y, p, false).inverse(y))
    }

    /// Rows in SIMD lanes ([`rows`]).
    fn eval_rows(&self, inverse: bool, xs: &mut [T], p: &[T], stride: usize, ld: &mut [T]) {
        self.eval_rows_in_lanes(inverse, xs, p, stride, ld);
    }
}

impl RqSpline {
    /// The body of [`Transformer::vjp`] for an input inside `[-B, B]`.
    #[allow(clippy::too_many_arguments)]
    fn vjp_in<T: Real>(
        &self,
        xs: Knots<'_, T, T>,
        ys: Knots<'_, T, T>,
        inverse: bool,
        v: T,
        p: &[T],
        (wy, wl): (T, T),
        out: &mut [T],
    ) {
        let k = self.bins;
        let (j, s0, s1) = if inverse { ys.find(v) } else { xs.find(v) };
        let (o0, o1) = if inverse { xs.edges(j) } else { ys.edges(j) };
        let ((x0, x1), (y0, y1)) =
            if inverse { ((o0, o1), (s0, s1)) } else { ((s0, s1), (o0, o1)) };
        let d = &p[2 * k..3 * k - 1];
        let local = |val: T, lane: usize| Dual::<T, 8>::variable(val, lane);
        let bin = Bin {
            x0: local(x0, 1),
            w: local(x1 - x0, 2),
            y0: local(y0, 3),
            h: local(y1 - y0, 4),
            d0: local(self.derivative(d, j), 5),
            d1: local(self.derivative(d, j + 1), 6),
        };
        let (val, ld) = if inverse { bin.inverse(local(v, 0)) } else { bin.forward(local(v, 0)) };
        let g: [T; 8] = std::array::from_fn(|l| wy * val.du[l] + wl * ld.du[l]);
        out[0] = g[0];
        // w = x1 - x0 and h = y1 - y0: move their gradients onto the knots.
        xs.add_grad(j, (x0, x1), (g[1] - g[2], g[2]), &mut out[1..=k]);
        ys.add_grad(j, (y0, y1), (g[3] - g[4], g[4]), &mut out[k + 1..=2 * k]);
        let slope = |r: T| T::of((1.0 - MIN_DERIVATIVE) / std::f64::consts::LN_2) * r.sigmoid();
        if j > 0 {
            out[2 * k + j] += g[5] * slope(d[j - 1]);
        }
        if j + 1 < k {
            out[2 * k + j + 1] += g[6] * slope(d[j]);
        }
    }
}

mod rows;
#[cfg(test)]
mod tests;
