//! The spline down one column, [`L`] rows at a time in SIMD lanes: what the coupling and
//! elementwise kernels call ([`Transformer::eval_rows`]) instead of
//! [`RqSpline::apply_value`] per element.
//!
//! Per element, the bin search is a data-dependent loop and softplus and the log-slope are
//! libm calls (`ln_1p`, `ln`), none of which vectorise: about 40% of C3's `log_prob`. Here a
//! chunk of rows is transposed into structure-of-arrays form and every step is a
//! branch-free loop over the lanes, which LLVM vectorises under [`crate::nn::simd`]: the
//! softmax ([`Real::vexp`]), the knots' prefix sums (in the per-element code's order, so
//! the knots agree bit for bit), the bin search as selects (the knots ascend, so the last
//! knot at or below the input wins), softplus for the bin's two derivatives only, the
//! rational-quadratic formula and [`Real::vln`]. Inputs outside `[-B, B]` (and NaN) go
//! through the same arithmetic on whatever bin they select, and are replaced at the end by
//! the identity with log-det 0. Values agree with the per-element maps up to the last bits
//! of `ln`.

use super::{RqSpline, MIN_BIN, MIN_DERIVATIVE, UPFRONT_BINS};
use crate::real::Real;
use crate::transform::eval_each;
use num_traits::Float;

/// Rows per chunk: one AVX-512 register of f32, two of f64.
const L: usize = 16;
/// Most bins of the lane path (a chunk's parameters and knots live on the stack); more
/// bins go per element.
const MAX_BINS: usize = UPFRONT_BINS;

type Lanes<T> = [T; L];

/// A chunk's working set, on the stack and reused from chunk to chunk.
struct Chunk<T> {
    /// The raw parameters, transposed: `p[j][lane]`.
    p: [Lanes<T>; 3 * MAX_BINS - 1],
    /// The knots of the x axis (`[j][lane]`, `j` in `0..=K`), then those of the y axis.
    knots: [Lanes<T>; 2 * MAX_BINS + 2],
}

/// The bins a chunk's inputs fall in: corners, sizes and knot derivatives per lane.
struct Bins<T> {
    x0: Lanes<T>,
    y0: Lanes<T>,
    w: Lanes<T>,
    h: Lanes<T>,
    d0: Lanes<T>,
    d1: Lanes<T>,
}

impl RqSpline {
    /// [`Transformer::eval_rows`]: whole chunks of [`L`] rows in lanes, the remainder (and
    /// splines of more than [`MAX_BINS`] bins, or none) per element.
    pub(super) fn eval_rows_in_lanes<T: Real>(
        &self,
        inverse: bool,
        xs: &mut [T],
        p: &[T],
        stride: usize,
        ld: &mut [T],
    ) {
        let (k, n) = (self.bins, xs.len());
        let lanes_ok = k > 0 && k <= MAX_BINS && T::of(self.bound) > T::zero();
        let done = if lanes_ok { n / L * L } else { 0 };
        if done > 0 {
            crate::nn::simd(
                #[inline(always)]
                || {
                    let mut c = Chunk::new();
                    for r in (0..done).step_by(L) {
                        let x: &mut Lanes<T> = (&mut xs[r..r + L]).try_into().unwrap();
                        let l: &mut Lanes<T> = (&mut ld[r..r + L]).try_into().unwrap();
                        c.run(self, inverse, x, &p[r * stride..], stride, l);
                    }
                },
            );
        }
        let rest = &p[(done * stride).min(p.len())..];
        eval_each(self, inverse, &mut xs[done..], rest, stride, &mut ld[done..]);
    }
}

impl<T: Real> Chunk<T> {
    fn new() -> Self {
        let z = [T::zero(); L];
        Self { p: [z; 3 * MAX_BINS - 1], knots: [z; 2 * MAX_BINS + 2] }
    }

    /// Maps the chunk's inputs `xs` (rows `r` with parameters `p[r * stride..]`) and adds
    /// their log-dets to `ld`.
    #[inline(always)]
    fn run(
        &mut self,
        sp: &RqSpline,
        inverse: bool,
        xs: &mut Lanes<T>,
        p: &[T],
        stride: usize,
        ld: &mut Lanes<T>,
    ) {
        let k = sp.bins;
        let np = 3 * k - 1;
        for lane in 0..L {
            let row = &p[lane * stride..lane * stride + np];
            for (j, &v) in row.iter().enumerate() {
                self.p[j][lane] = v;
            }
        }
        let b = T::of(sp.bound);
        knots(&self.p[..2 * k], b, &mut self.knots[..2 * k + 2]);
        let (kx, ky) = self.knots[..2 * k + 2].split_at(k + 1);
        let d = &self.p[2 * k..np];
        let (y, l) = if inverse {
            inverse_lanes(&select_bin(xs, ky, kx, d, false), xs)
        } else {
            forward_lanes(&select_bin(xs, kx, ky, d, true), xs)
        };
        for lane in 0..L {
            let v = xs[lane];
            let inside = v >= -b && v <= b;
            xs[lane] = if inside { y[lane] } else { v };
            ld[lane] += if inside { l[lane] } else { T::zero() };
        }
    }
}

/// The `K + 1` knots of each axis from its `K` raw logits (`raw` holds the x axis's, then
/// the y axis's), as [`super::Knots`] computes them: `-B`, then `(below_j / sum) free +
/// j min` scaled to `[-B, B]` with `below_j` the softmax weights of bins `0..j` summed in
/// order, then `B`. `out` holds the x knots then the y knots.
#[inline(always)]
fn knots<T: Real>(raw: &[Lanes<T>], b: T, out: &mut [Lanes<T>]) {
    let k = raw.len() / 2;
    let min = MIN_BIN.min(0.5 / k as f64);
    let (min, free) = (T::of(min), T::of(1.0 - k as f64 * min));
    // The shifted logits go where the knots will be (out[1..=K] and out[K + 2..=2K + 1]),
    // so one flat loop computes all 2K weights: independent exp chains to overlap.
    for (axis, raw) in raw.chunks_exact(k).enumerate() {
        let mut max = [T::neg_infinity(); L];
        for r in raw {
            for lane in 0..L {
                max[lane] = Float::max(max[lane], r[lane]);
            }
        }
        for (r, e) in raw.iter().zip(&mut out[axis * (k + 1) + 1..]) {
            for lane in 0..L {
                e[lane] = r[lane] - max[lane];
            }
        }
    }
    out[k + 1] = [T::zero(); L];
    for e in out[1..].as_flattened_mut() {
        *e = e.vexp();
    }
    for axis in out.chunks_exact_mut(k + 1) {
        let mut sum = [T::zero(); L];
        for e in &axis[1..] {
            for lane in 0..L {
                sum[lane] += e[lane];
            }
        }
        let mut below = [T::zero(); L];
        for (j, o) in axis.iter_mut().enumerate().take(k).skip(1) {
            let jmin = min * T::of(j as f64);
            for lane in 0..L {
                below[lane] += o[lane];
                o[lane] = (below[lane] / sum[lane] * free + jmin) * (b + b) - b;
            }
        }
        axis[0] = [-b; L];
        axis[k] = [b; L];
    }
}

/// The bin of each lane's `v` along the `search` knots (x forward, y inverse), with its
/// edges on the `other` axis and the derivatives at its knots from the raw `d`.
#[inline(always)]
fn select_bin<T: Real>(
    v: &Lanes<T>,
    search: &[Lanes<T>],
    other: &[Lanes<T>],
    d: &[Lanes<T>],
    forward: bool,
) -> Bins<T> {
    let k = search.len() - 1;
    let (mut s0, mut s1, mut o0, mut o1) = (search[0], search[1], other[0], other[1]);
    // The raw derivatives at the bin's knots, and the bin index (as a float, for selects).
    let zero = [T::zero(); L];
    let (mut r0, mut r1, mut at) = (zero, if k > 1 { d[0] } else { zero }, zero);
    for j in 1..k {
        let (sj, sj1, oj, oj1) = (&search[j], &search[j + 1], &other[j], &other[j + 1]);
        let (dj0, dj1) = (&d[j - 1], &d[j.min(k - 2)]);
        let jf = T::of(j as f64);
        for lane in 0..L {
            let m = v[lane] >= sj[lane];
            s0[lane] = if m { sj[lane] } else { s0[lane] };
            s1[lane] = if m { sj1[lane] } else { s1[lane] };
            o0[lane] = if m { oj[lane] } else { o0[lane] };
            o1[lane] = if m { oj1[lane] } else { o1[lane] };
            r0[lane] = if m { dj0[lane] } else { r0[lane] };
            r1[lane] = if m { dj1[lane] } else { r1[lane] };
            at[lane] = if m { jf } else { at[lane] };
        }
    }
    let (first, last) = (T::zero(), T::of((k - 1) as f64));
    let mut bins = Bins { x0: zero, y0: zero, w: zero, h: zero, d0: zero, d1: zero };
    for lane in 0..L {
        let (x0, x1, y0, y1) = if forward {
            (s0[lane], s1[lane], o0[lane], o1[lane])
        } else {
            (o0[lane], o1[lane], s0[lane], s1[lane])
        };
        bins.x0[lane] = x0;
        bins.y0[lane] = y0;
        bins.w[lane] = x1 - x0;
        bins.h[lane] = y1 - y0;
        // The end knots have derivative 1 (the identity tails).
        let one = T::one();
        bins.d0[lane] = if at[lane] == first { one } else { derivative(r0[lane]) };
        bins.d1[lane] = if at[lane] == last { one } else { derivative(r1[lane]) };
    }
    bins
}

/// An interior knot's derivative from its raw parameter, as [`RqSpline::derivative`]:
/// `1e-3 + (1 - 1e-3) softplus(r) / ln 2`, with `softplus(r) = max(r, 0) + ln(1 + e^-|r|)`.
#[inline(always)]
fn derivative<T: Real>(r: T) -> T {
    let c = T::of((1.0 - MIN_DERIVATIVE) / std::f64::consts::LN_2);
    let softplus = Float::max(r, T::zero()) + ln_1p((-r.abs()).vexp());
    T::of(MIN_DERIVATIVE) + softplus * c
}

/// `ln(1 + e)` for `e` in `[0, 1]`: `ln(u)` of the rounded `u = 1 + e`, corrected by the
/// rounding error `(u - 1) - e` to first order (exact enough where `e` is below 1 ulp of 1).
#[inline(always)]
fn ln_1p<T: Real>(e: T) -> T {
    let u = T::one() + e;
    u.vln() - ((u - T::one()) - e) / u
}

/// Moves a fraction that rounding pushed just past 0 or 1 back onto the boundary, as
/// [`super::snap_unit`] does on reals (NaN passes).
#[inline(always)]
fn snap<T: Real>(v: T) -> T {
    let (zero, one) = (T::zero(), T::one());
    let c = if v >= one {
        one
    } else if v > zero {
        v
    } else {
        zero
    };
    if v > one || v < zero {
        v + (c - v)
    } else {
        v
    }
}

/// `ln dy/dx` at fraction `xi` of the bin in `lane`, with slope `s = h / w`, as
/// [`super::Bin::log_slope`]: `ln(num s^2 / den^2)`.
#[inline(always)]
fn log_slope<T: Real>(bins: &Bins<T>, lane: usize, xi: T, s: T) -> T {
    let two = T::of(2.0);
    let (d0, d1) = (bins.d0[lane], bins.d1[lane]);
    let om = T::one() - xi;
    let t = xi * om;
    let den = s + (d0 + d1 - s * two) * t;
    let num = d1 * xi * xi + s * t * two + d0 * om * om;
    // One ln, not three: the product stays far from overflow (s, den and num are within
    // about 1e-3..1e3 of 1) and is within a few ulp.
    let r = s / den;
    (num * r * r).vln()
}

/// `(y, ln dy/dx)` per lane, as [`super::Bin::forward`].
#[inline(always)]
fn forward_lanes<T: Real>(bins: &Bins<T>, x: &Lanes<T>) -> (Lanes<T>, Lanes<T>) {
    let (mut y, mut l) = ([T::zero(); L], [T::zero(); L]);
    for lane in 0..L {
        let (w, h, d0, d1) = (bins.w[lane], bins.h[lane], bins.d0[lane], bins.d1[lane]);
        let s = h / w;
        let xi = snap((x[lane] - bins.x0[lane]) / w);
        let t = xi * (T::one() - xi);
        let den = s + (d0 + d1 - s * T::of(2.0)) * t;
        y[lane] = bins.y0[lane] + h * (s * xi * xi + d0 * t) / den;
        l[lane] = log_slope(bins, lane, xi, s);
    }
    (y, l)
}

/// `(x, ln dx/dy)` per lane, as [`super::Bin::inverse`]: the cancellation-free root of the
/// quadratic, its discriminant clamped at zero.
#[inline(always)]
fn inverse_lanes<T: Real>(bins: &Bins<T>, y: &Lanes<T>) -> (Lanes<T>, Lanes<T>) {
    let (mut x, mut l) = ([T::zero(); L], [T::zero(); L]);
    for lane in 0..L {
        let (w, h, d0, d1) = (bins.w[lane], bins.h[lane], bins.d0[lane], bins.d1[lane]);
        let s = h / w;
        let dy = y[lane] - bins.y0[lane];
        let delta = d0 + d1 - s * T::of(2.0);
        let a = h * (s - d0) + dy * delta;
        let b = h * d0 - dy * delta;
        let c = -(s * dy);
        let disc = b * b - a * c * T::of(4.0);
        let disc = if disc > T::zero() { disc } else { T::zero() };
        let xi = snap(c * T::of(2.0) / (-b - disc.sqrt()));
        x[lane] = bins.x0[lane] + xi * w;
        l[lane] = -log_slope(bins, lane, xi, s);
    }
    (x, l)
}
