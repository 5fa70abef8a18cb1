//! The scalar type of a flow: `f32` or `f64`, chosen by the spec's `dtype`.

use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{AddAssign, DivAssign, MulAssign, SubAssign};

/// A floating-point scalar that every kernel is generic over.
pub trait Real:
    num_traits::Float
    + num_traits::FromPrimitive
    + ndarray::LinalgScalar
    + ndarray::ScalarOperand
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + Sum
    + Debug
    + Display
    + Default
    + Send
    + Sync
    + 'static
{
    /// The safetensors / spec name of the type: `"f32"` or `"f64"`.
    const DTYPE: &'static str;
    /// Converts from f64 (rounding for f32).
    fn of(x: f64) -> Self;
    /// Converts to f64 (exact).
    fn f64(self) -> f64;
    /// `exp` without branches ([`crate::vmath::exp_f64`] / [`crate::vmath::exp_f32`]), so a
    /// loop of it vectorises under [`crate::nn::simd`]. Within 2 ulp.
    fn vexp(self) -> Self;
    /// `ln` without branches ([`crate::vmath::ln_f64`] / [`crate::vmath::ln_f32`]). Within
    /// 1 ulp.
    fn vln(self) -> Self;
}

impl Real for f32 {
    const DTYPE: &'static str = "f32";
    #[inline(always)]
    fn of(x: f64) -> Self {
        x as f32
    }
    #[inline(always)]
    fn f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn vexp(self) -> Self {
        crate::vmath::exp_f32(self)
    }
    #[inline(always)]
    fn vln(self) -> Self {
        crate::vmath::ln_f32(self)
    }
}

impl Real for f64 {
    const DTYPE: &'static str = "f64";
    #[inline(always)]
    fn of(x: f64) -> Self {
        x
    }
    #[inline(always)]
    fn f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn vexp(self) -> Self {
        crate::vmath::exp_f64(self)
    }
    #[inline(always)]
    fn vln(self) -> Self {
        crate::vmath::ln_f64(self)
    }
}
