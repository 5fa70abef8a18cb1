//! `exp` over a slice, vectorised: the coupling kernels' scales for a whole row tile at once;
//! and branch-free scalar `exp` and `ln` for loops that the compiler vectorises (the spline's
//! rows-in-lanes kernel).
//!
//! libm's `exp` is a call per element that the compiler cannot vectorise. Here each element
//! is a branch-free polynomial (Cody-Waite reduction `x = n ln 2 + r`, `|r| <= ln 2 / 2`,
//! Taylor polynomial, `2^n` built from its bits), so the loop compiles to SIMD under the
//! runtime CPU dispatch ([`crate::nn::simd`]: AVX-512, else AVX2 + FMA) in a default build.
//! Accuracy: within 2 ulp of `f64::exp` / `f32::exp` for normal results; `inf`, `-inf`, NaN,
//! overflow to `inf` and gradual underflow through the subnormals to 0 as `exp` does.

use crate::nn::simd;
use crate::real::Real;
use std::any::TypeId;

/// `xs[i] = exp(xs[i])`.
pub fn exp_in_place<T: Real>(xs: &mut [T]) {
    // SAFETY: T is f64 (resp. f32), checked by TypeId, so the casts are identities of a slice
    // of the same length and layout.
    unsafe {
        if TypeId::of::<T>() == TypeId::of::<f64>() {
            let xs = std::slice::from_raw_parts_mut(xs.as_mut_ptr().cast::<f64>(), xs.len());
            return simd(
                #[inline(always)]
                || xs.iter_mut().for_each(|v| *v = exp_f64(*v)),
            );
        }
        if TypeId::of::<T>() == TypeId::of::<f32>() {
            let xs = std::slice::from_raw_parts_mut(xs.as_mut_ptr().cast::<f32>(), xs.len());
            return simd(
                #[inline(always)]
                || xs.iter_mut().for_each(|v| *v = exp_f32(*v)),
            );
        }
    }
    xs.iter_mut().for_each(|v| *v = v.exp());
}

/// 1 / k! for k = 0..=13: the Taylor polynomial of exp on |r| <= ln 2 / 2 to below 1e-17.
const INV_FACT_F64: [f64; 14] = [
    1.0,
    1.0,
    0.5,
    1.0 / 6.0,
    1.0 / 24.0,
    1.0 / 120.0,
    1.0 / 720.0,
    1.0 / 5040.0,
    1.0 / 40320.0,
    1.0 / 362880.0,
    1.0 / 3628800.0,
    1.0 / 39916800.0,
    1.0 / 479001600.0,
    1.0 / 6227020800.0,
];

/// exp in f64, branch-free (see the module comment).
#[inline(always)]
pub fn exp_f64(x: f64) -> f64 {
    // 1.5 * 2^52: adding it rounds to an integer, which then sits in the low mantissa bits.
    const MAGIC: f64 = 6755399441055744.0;
    const LN2_HI: f64 = 6.93147180369123816490e-01;
    const LN2_LO: f64 = 1.90821492927058770002e-10;
    // Past these, exp is inf resp. 0; the clamp keeps 2^n's two halves normal.
    let xc = x.clamp(-746.0, 710.0);
    let t = xc * std::f64::consts::LOG2_E + MAGIC;
    let n = t.to_bits() as i64 - MAGIC.to_bits() as i64;
    let nf = t - MAGIC;
    let r = (xc - nf * LN2_HI) - nf * LN2_LO;
    let p = INV_FACT_F64.iter().rev().fold(0.0, |acc, &c| acc * r + c);
    // 2^n as 2^n1 * 2^n2, each a normal number, so a subnormal result is rounded once.
    let n1 = n >> 1;
    let pow2 = |k: i64| f64::from_bits(((k + 1023) as u64) << 52);
    let y = p * pow2(n1) * pow2(n - n1);
    if x.is_nan() {
        x
    } else {
        y
    }
}

/// exp in f32, branch-free: as [`exp_f64`] with a degree-7 polynomial.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const MAGIC: f32 = 12582912.0; // 1.5 * 2^23
    const LN2_HI: f32 = 0.693359375;
    const LN2_LO: f32 = -2.12194440e-4;
    const INV_FACT: [f32; 8] =
        [1.0, 1.0, 0.5, 1.0 / 6.0, 1.0 / 24.0, 1.0 / 120.0, 1.0 / 720.0, 1.0 / 5040.0];
    let xc = x.clamp(-104.0, 89.0);
    let t = xc * std::f32::consts::LOG2_E + MAGIC;
    let n = t.to_bits() as i32 - MAGIC.to_bits() as i32;
    let nf = t - MAGIC;
    let r = (xc - nf * LN2_HI) - nf * LN2_LO;
    let p = INV_FACT.iter().rev().fold(0.0, |acc, &c| acc * r + c);
    let n1 = n >> 1;
    let pow2 = |k: i32| f32::from_bits(((k + 127) as u32) << 23);
    let y = p * pow2(n1) * pow2(n - n1);
    if x.is_nan() {
        x
    } else {
        y
    }
}

/// ln in f64, branch-free: `x = 2^k m` with `m` in `[sqrt(1/2), sqrt(2))` (subnormals scaled
/// up first), then fdlibm's `ln(1 + f)` (`f = m - 1`) from `s = f / (2 + f)` and a degree-14
/// polynomial in `s`. Within 1 ulp of `f64::ln`; 0, negative, `inf` and NaN as `ln` does.
#[inline(always)]
#[allow(clippy::excessive_precision)] // fdlibm's constants, verbatim
pub fn ln_f64(x: f64) -> f64 {
    const LN2_HI: f64 = 6.93147180369123816490e-01;
    const LN2_LO: f64 = 1.90821492927058770002e-10;
    const LG: [f64; 7] = [
        6.666666666666735130e-01,
        3.999999999940941908e-01,
        2.857142874366239149e-01,
        2.222219843214978396e-01,
        1.818357216161805012e-01,
        1.531383769920937332e-01,
        1.479819860511658591e-01,
    ];
    let sub = x < f64::MIN_POSITIVE;
    let xs = if sub { x * 18014398509481984.0 } else { x }; // 2^54
                                                            // Offsetting by the bits of 1 - sqrt(1/2) makes the exponent field round m to the nearest
                                                            // power of two; the field is read as a float through 2^52's mantissa (AVX2 has no
                                                            // i64 -> f64 conversion).
    let bits = xs.to_bits().wrapping_add((0x3ff00000 - 0x3fe6a09e) << 32);
    let e = f64::from_bits(0x4330_0000_0000_0000 | (bits >> 52)) - 4503599627370496.0;
    let dk = e - 1023.0 - if sub { 54.0 } else { 0.0 };
    let f = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) + (0x3fe6a09e << 32)) - 1.0;
    let hfsq = 0.5 * f * f;
    let s = f / (2.0 + f);
    let (z, w) = (s * s, s * s * s * s);
    let t1 = w * (LG[1] + w * (LG[3] + w * LG[5]));
    let t2 = z * (LG[0] + w * (LG[2] + w * (LG[4] + w * LG[6])));
    let y = s * (hfsq + (t2 + t1)) + dk * LN2_LO - hfsq + f + dk * LN2_HI;
    ln_special(x, y, 0.0, f64::INFINITY, f64::NAN)
}

/// ln in f32, branch-free: as [`ln_f64`] with fdlibm's degree-8 polynomial. Within 1 ulp.
#[inline(always)]
#[allow(clippy::excessive_precision)] // fdlibm's constants, verbatim
pub fn ln_f32(x: f32) -> f32 {
    const LN2_HI: f32 = 6.9313812256e-01;
    const LN2_LO: f32 = 9.0580006145e-06;
    const LG: [f32; 4] = [0.666_666_6, 0.400_009_72, 0.284_987_87, 0.242_790_79];
    let sub = x < f32::MIN_POSITIVE;
    let xs = if sub { x * 33554432.0 } else { x }; // 2^25
    let bits = xs.to_bits().wrapping_add(0x3f800000 - 0x3f3504f3);
    let dk = ((bits >> 23) as i32 - 0x7f) as f32 - if sub { 25.0 } else { 0.0 };
    let f = f32::from_bits((bits & 0x007f_ffff) + 0x3f3504f3) - 1.0;
    let hfsq = 0.5 * f * f;
    let s = f / (2.0 + f);
    let (z, w) = (s * s, s * s * s * s);
    let r = z * (LG[0] + w * LG[2]) + w * (LG[1] + w * LG[3]);
    let y = s * (hfsq + r) + dk * LN2_LO - hfsq + f + dk * LN2_HI;
    ln_special(x, y, 0.0, f32::INFINITY, f32::NAN)
}

/// `y` (ln of a positive finite `x`), else `ln(0) = -inf`, `ln(inf) = inf`, and NaN for
/// negative or NaN `x`: selects, no branches.
#[inline(always)]
fn ln_special<T: PartialOrd + Copy + std::ops::Neg<Output = T>>(
    x: T,
    y: T,
    zero: T,
    inf: T,
    nan: T,
) -> T {
    let y = if x == zero { -inf } else { y };
    let y = if x == inf { inf } else { y };
    if x >= zero {
        y
    } else {
        nan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place, through the ordered integer line of floats.
    fn ulps64(a: f64, b: f64) -> u64 {
        let key = |v: f64| {
            let b = v.to_bits() as i64;
            if b < 0 {
                i64::MIN - b
            } else {
                b
            }
        };
        key(a).abs_diff(key(b))
    }

    fn ulps32(a: f32, b: f32) -> u32 {
        let key = |v: f32| {
            let b = v.to_bits() as i32;
            if b < 0 {
                i32::MIN - b
            } else {
                b
            }
        };
        key(a).abs_diff(key(b))
    }

    /// Special values, the edges of overflow and underflow, subnormal inputs and a sweep.
    fn inputs64() -> Vec<f64> {
        let mut v = vec![
            0.0,
            -0.0,
            1.0,
            -1.0,
            1e-300,
            -1e-300,
            5e-324,
            -5e-324,
            2.2e-308,
            709.0,
            709.78,
            709.79,
            710.0,
            1e300,
            -708.0,
            -708.4,
            -720.0,
            -744.0,
            -745.1,
            -745.2,
            -746.0,
            -1e300,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            f64::MAX,
            f64::MIN,
        ];
        v.extend((0..20_000).map(|i| -750.0 + 1465.0 * i as f64 / 20_000.0));
        v.extend((0..20_000).map(|i| -3.0 + 6.0 * i as f64 / 20_000.0 + 1e-7));
        v
    }

    #[test]
    fn exp_f64_agrees_with_std() {
        let xs = inputs64();
        let mut got = xs.clone();
        exp_in_place(&mut got);
        for (&x, &y) in xs.iter().zip(&got) {
            let want = x.exp();
            if want.is_nan() {
                assert!(y.is_nan(), "exp({x}) = {y}, want NaN");
            } else {
                assert!(ulps64(y, want) <= 2, "exp({x}) = {y:e}, want {want:e}");
            }
        }
    }

    #[test]
    fn exp_f32_agrees_with_std() {
        let mut xs: Vec<f32> = vec![
            0.0,
            -0.0,
            1.0,
            -1.0,
            1e-30,
            1e-45,
            -1e-45,
            1.2e-38,
            88.0,
            88.72,
            88.73,
            89.0,
            1e30,
            -87.0,
            -87.4,
            -88.0,
            -100.0,
            -103.0,
            -103.9,
            -104.0,
            -1e30,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::MAX,
            f32::MIN,
        ];
        xs.extend((0..40_000).map(|i| -110.0 + 200.0 * i as f32 / 40_000.0));
        let mut got = xs.clone();
        exp_in_place(&mut got);
        for (&x, &y) in xs.iter().zip(&got) {
            // The reference in f64, rounded once: closer to the truth than f32's libm.
            let want = (x as f64).exp() as f32;
            if want.is_nan() {
                assert!(y.is_nan(), "exp({x}) = {y}, want NaN");
            } else {
                assert!(ulps32(y, want) <= 2, "exp({x}) = {y:e}, want {want:e}");
            }
        }
    }

    #[test]
    fn scalar_and_slice_paths_agree() {
        let xs: Vec<f64> = (0..1000).map(|i| -30.0 + 0.061 * i as f64).collect();
        let mut got = xs.clone();
        exp_in_place(&mut got);
        for (&x, &y) in xs.iter().zip(&got) {
            assert_eq!(exp_f64(x).to_bits(), y.to_bits(), "exp({x})");
        }
    }

    #[test]
    fn ln_f64_agrees_with_std() {
        let mut xs = vec![
            0.0,
            -0.0,
            1.0,
            -1.0,
            5e-324,
            1e-310,
            2.2250738585072014e-308,
            2.225073858507201e-308,
            0.7071067811865476,
            0.7071067811865475,
            1.4142135623730951,
            1.0 + 1e-15,
            1.0 - 1e-16,
            f64::MAX,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
        ];
        xs.extend((0..20_000).map(|i| 0.5 + 1.5 * i as f64 / 20_000.0));
        xs.extend((0..20_000).map(|i| 10f64.powf(-320.0 + 628.0 * i as f64 / 20_000.0)));
        for &x in &xs {
            let (got, want) = (ln_f64(x), x.ln());
            if want.is_nan() {
                assert!(got.is_nan(), "ln({x}) = {got}, want NaN");
            } else {
                assert!(ulps64(got, want) <= 1, "ln({x}) = {got:e}, want {want:e}");
            }
        }
    }

    #[test]
    fn ln_f32_agrees_with_std() {
        let mut xs: Vec<f32> = vec![
            0.0,
            -0.0,
            1.0,
            -1.0,
            1e-45,
            1e-40,
            1.1754944e-38,
            1.1754942e-38,
            0.70710677,
            0.70710676,
            1.4142135,
            1.0000001,
            0.99999994,
            f32::MAX,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ];
        xs.extend((0..40_000).map(|i| 0.5 + 1.5 * i as f32 / 40_000.0));
        xs.extend((0..40_000).map(|i| 10f32.powf(-45.0 + 83.0 * i as f32 / 40_000.0)));
        for &x in &xs {
            // The reference in f64, rounded once.
            let (got, want) = (ln_f32(x), (x as f64).ln() as f32);
            if want.is_nan() {
                assert!(got.is_nan(), "ln({x}) = {got}, want NaN");
            } else {
                assert!(ulps32(got, want) <= 1, "ln({x}) = {got:e}, want {want:e}");
            }
        }
    }
}
