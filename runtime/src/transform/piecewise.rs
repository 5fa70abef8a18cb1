//! The piecewise-linear monotone map of `[0, 1]` onto itself with `K` equal-width bins
//! (section 6.2.1 of the reference notes).

use super::{outside, Scalar, Transformer};
use crate::real::Real;
use num_traits::Float;

/// `t(h) = sum_{k<b} phi_k + (hK - b + 1) phi_b` with `phi = softmax(raw)` (`K` raw
/// parameters) and `b = floor(K h) + 1` the 1-based bin of `h`. Defined on `[0, 1]`; outside
/// it (and for NaN) both directions return the image of the clamped input and
/// log-determinant minus infinity. Raw zeros give `phi_k = 1/K`, the identity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PiecewiseLinear {
    pub bins: usize,
}

/// `max(raw)` (of the real parts; NaN entries are ignored), the shift of a softmax.
#[inline(always)]
pub(super) fn softmax_max<T: Real, S: Scalar<T>>(raw: &[S]) -> T {
    raw.iter().fold(T::neg_infinity(), |m, r| Float::max(m, r.re()))
}

/// `max(raw)` and `sum_k exp(raw_k - max)`: a softmax that cannot overflow. The maximum is a
/// constant; softmax does not depend on it, so derivatives are unaffected.
pub(super) fn softmax_norm<T: Real, S: Scalar<T>>(raw: &[S]) -> (T, S) {
    let max = softmax_max(raw);
    let sum = raw.iter().fold(S::cst(T::zero()), |acc, &r| acc + (r - S::cst(max)).exp());
    (max, sum)
}

/// Clamps `v` into `[0, 1]` for the domain check: NaN goes to 0.
fn unit_clamp<T: Real>(v: T) -> T {
    if v >= T::one() {
        T::one()
    } else if v > T::zero() {
        v
    } else {
        T::zero()
    }
}

/// Moves a value that rounding pushed just past 0 or 1 back onto the boundary, keeping its
/// derivatives, so the next `[0, 1]` layer does not see it as outside its domain.
pub(super) fn snap_unit<T: Real, S: Scalar<T>>(v: S) -> S {
    let r = v.re();
    if r > T::one() || r < T::zero() {
        v + S::cst(unit_clamp(r) - r)
    } else {
        v
    }
}

/// `(h, true)` inside `[0, 1]`, else the clamped constant and `false`.
fn to_domain<T: Real, S: Scalar<T>>(h: S) -> (S, bool) {
    let r = h.re();
    if r >= T::zero() && r <= T::one() {
        (h, true)
    } else {
        (S::cst(unit_clamp(r)), false)
    }
}

impl PiecewiseLinear {
    /// `ln(K phi_b) = raw_b - max - ln(sum) + ln K`, exact even where `phi_b` underflows.
    fn log_slope<T: Real, S: Scalar<T>>(&self, raw: S, max: T, sum: S) -> S {
        raw - S::cst(max) - sum.ln() + S::of((self.bins as f64).ln())
    }
}

impl<T: Real> Transformer<T> for PiecewiseLinear {
    fn n_params(&self) -> usize {
        self.bins
    }

    fn apply<S: Scalar<T>>(&self, h: S, p: &[S]) -> (S, S) {
        let k = self.bins;
        let (h, inside) = to_domain(h);
        if k == 0 {
            return (h, if inside { S::cst(T::zero()) } else { outside() });
        }
        let p = &p[..k];
        let (max, sum) = softmax_norm(p);
        // 0-based bin; h = 1 belongs to the last bin.
        let b = ((h.re().f64() * k as f64).floor() as usize).min(k - 1);
        let below = p[..b].iter().fold(S::cst(T::zero()), |acc, &r| acc + (r - S::cst(max)).exp());
        let within = h.scale(T::of(k as f64)) - S::of(b as f64);
        let y = snap_unit((below + within * (p[b] - S::cst(max)).exp()) / sum);
        let ld = if inside { self.log_slope(p[b], max, sum) } else { outside() };
        (y, ld)
    }

    fn invert<S: Scalar<T>>(&self, y: S, p: &[S]) -> (S, S) {
        let k = self.bins;
        let (y, inside) = to_domain(y);
        if k == 0 {
            return (y, if inside { S::cst(T::zero()) } else { outside() });
        }
        let p = &p[..k];
        let (max, sum) = softmax_norm(p);
        // Walk the unnormalised cumulative sums to the bin holding y * sum.
        let target = y * sum;
        let mut below = S::cst(T::zero());
        let mut b = 0;
        let mut e = (p[0] - S::cst(max)).exp();
        while b + 1 < k && target.re() >= (below + e).re() {
            below = below + e;
            b += 1;
            e = (p[b] - S::cst(max)).exp();
        }
        // A bin whose weight underflowed to zero has no width on the y side.
        let within = if e.re() > T::zero() { (target - below) / e } else { S::cst(T::zero()) };
        let h = snap_unit((within + S::of(b as f64)).scale(T::of(1.0 / k as f64)));
        let ld = if inside { -self.log_slope(p[b], max, sum) } else { outside() };
        (h, ld)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::testutil::{check_identity, check_transformer, check_zero_density};

    const RAW: [f64; 5] = [0.3, -1.2, 0.8, 0.0, -0.4];

    #[test]
    fn round_trip_log_det_and_gradients() {
        let t = PiecewiseLinear { bins: 5 };
        check_transformer(&t, &[0.03, 0.27, 0.5, 0.61, 0.95], &RAW);
        check_transformer(&PiecewiseLinear { bins: 1 }, &[0.1, 0.7], &[2.0]);
        check_identity(&t, &[0.0, 0.13, 0.4, 0.999, 1.0]);
    }

    #[test]
    fn ends_and_bin_edges() {
        let t = PiecewiseLinear { bins: 5 };
        let f = |h: f64| Transformer::<f64>::apply(&t, h, &RAW);
        assert_eq!(f(0.0).0, 0.0);
        assert!((f(1.0).0 - 1.0).abs() < 1e-15 && f(1.0).0 <= 1.0);
        for j in 0..=5 {
            let h = j as f64 / 5.0;
            let (y, ld) = f(h);
            assert!(ld.is_finite() && (0.0..=1.0).contains(&y), "edge {h}");
            // Continuous across the edge, and the inverse lands back on it.
            for dh in [-1e-12, 1e-12] {
                if (0.0..=1.0).contains(&(h + dh)) {
                    assert!((f(h + dh).0 - y).abs() < 1e-11, "continuity at {h}");
                }
            }
            let (h2, ld2) = Transformer::<f64>::invert(&t, y, &RAW);
            assert!((h2 - h).abs() < 1e-14 && ld2.is_finite(), "inverse at edge {h}: {h2}");
        }
    }

    #[test]
    fn outside_the_unit_interval_has_density_zero() {
        let t = PiecewiseLinear { bins: 4 };
        check_zero_density(&t, true, &[-0.1, 1.1, f64::NAN, f64::INFINITY]);
        check_zero_density(&t, false, &[-1e-9, 1.0 + 1e-9, f64::NAN]);
        assert_eq!(Transformer::<f64>::apply(&t, 7.0, &[0.0; 4]).0, 1.0);
    }

    #[test]
    fn extreme_raw_parameters_stay_finite() {
        let t = PiecewiseLinear { bins: 4 };
        let raw = [50.0, -50.0, -50.0, 50.0];
        for h in [0.0, 0.2, 0.5, 0.8, 1.0] {
            let (y, ld) = Transformer::<f64>::apply(&t, h, &raw);
            let (h2, ld2) = Transformer::<f64>::invert(&t, y, &raw);
            assert!(y.is_finite() && ld.is_finite() && ld2.is_finite(), "{h}");
            // The middle bins have slope ~1e-43: only the steep ones can round-trip.
            let steep = !(0.25..=0.75).contains(&h);
            assert!((0.0..=1.0).contains(&h2) && (!steep || (h2 - h).abs() < 1e-12), "{h}: {h2}");
        }
        let (y, ld) = Transformer::<f32>::invert(&t, 0.5f32, &[50.0, -50.0, -50.0, 50.0]);
        assert!(y.is_finite() && ld.is_finite());
    }
}
