//! The flows of every spec in `specs/`, compiled through `flow!`, for the integration tests.
//! `tests/all_specs_compiled.rs` checks that no spec is missing from this list.

pub mod specs {
    flowspec_macros::flow!(file = "../specs/realnvp_moons.flow");
    flowspec_macros::flow!(file = "../specs/nice_moons.flow");
    flowspec_macros::flow!(file = "../specs/glow_like.flow");
    flowspec_macros::flow!(file = "../specs/four_z.flow");
    flowspec_macros::flow!(file = "../specs/exp_uniform.flow");
    flowspec_macros::flow!(file = "../specs/nice_logistic.flow");
    flowspec_macros::flow!(file = "../specs/nsf_moons.flow");
    flowspec_macros::flow!(file = "../specs/linear_elementwise.flow");
    flowspec_macros::flow!(file = "../specs/digits.flow");
    flowspec_macros::flow!(file = "../specs/spline_1d.flow");
    flowspec_macros::flow!(file = "../specs/fixed_linear.flow");
    flowspec_macros::flow!(file = "../specs/maf_digits.flow");
    flowspec_macros::flow!(file = "../specs/autoregressive.flow");
    flowspec_macros::flow!(file = "../specs/distill_moons.flow");
}

/// C1 and C3 in f32, for the benches and the per-sample tests (the specs declare f64).
pub mod f32_variants {
    flowspec_macros::flow! {
        /// C1 in f32: `specs/realnvp_moons.flow` with `dtype f32`.
        flow RealNvpMoons32 {
            event [2];
            dtype f32;
            base normal;
            repeat 4 {
                affine_coupling(mask = alternate, net = mlp([64, 64], relu));
                affine_coupling(mask = alternate_flip, net = mlp([64, 64], relu));
            }
        }

        /// C3 in f32: `specs/nsf_moons.flow` with `dtype f32`.
        flow NsfMoons32 {
            event [2];
            dtype f32;
            base normal;
            repeat 2 {
                spline_coupling(mask = alternate, net = mlp([64, 64], relu), bins = 8, bound = 5);
                spline_coupling(mask = alternate_flip, net = mlp([64, 64], relu), bins = 8, bound = 5);
            }
        }
    }
}

/// The spec files `specs` above includes (paths relative to the workspace root).
pub const SPEC_FILES: &[&str] = &[
    "specs/realnvp_moons.flow",
    "specs/nice_moons.flow",
    "specs/glow_like.flow",
    "specs/four_z.flow",
    "specs/exp_uniform.flow",
    "specs/nice_logistic.flow",
    "specs/nsf_moons.flow",
    "specs/linear_elementwise.flow",
    "specs/digits.flow",
    "specs/spline_1d.flow",
    "specs/fixed_linear.flow",
    "specs/maf_digits.flow",
    "specs/autoregressive.flow",
    "specs/distill_moons.flow",
];

/// Calls `$check(spec, flow)` for every f64 flow of `specs` in one group (seed 7): the lists
/// the tests that run every flow share, so that a new flow reaches all of them. Groups keep
/// the tests parallel: `couplings`, `layer_library`, `autoregressive`.
#[macro_export]
macro_rules! for_each_f64_flow {
    (couplings, $check:ident) => {{
        use $crate::specs::*;
        $check("specs/realnvp_moons.flow", RealNvpMoons::new(7));
        $check("specs/nice_moons.flow", NiceMoons::new(7));
        $check("specs/nsf_moons.flow", NsfMoons::new(7));
        $check("specs/glow_like.flow", GlowLike::new(7));
        $check("specs/distill_moons.flow", MoonsTeacher::new(7));
    }};
    (layer_library, $check:ident) => {{
        use $crate::specs::*;
        $check("specs/four_z.flow", FourZ::new(7));
        $check("specs/exp_uniform.flow", ExpOfUniform::new(7));
        $check("specs/nice_logistic.flow", NiceLogistic::new(7));
        $check("specs/linear_elementwise.flow", LinearElementwise::new(7));
        $check("specs/linear_elementwise.flow", PiecewiseSquare::new(7));
        $check("specs/spline_1d.flow", Spline1d::new(7));
        $check("specs/fixed_linear.flow", FixedLinear::new(7));
        $check("specs/fixed_linear.flow", PartlyFixed::new(7));
    }};
    (autoregressive, $check:ident) => {{
        use $crate::specs::*;
        $check("specs/autoregressive.flow", MafSmall::new(7));
        $check("specs/autoregressive.flow", IafSmall::new(7));
        $check("specs/autoregressive.flow", SplineAr::new(7));
        $check("specs/distill_moons.flow", MoonsStudent::new(7));
        $check("specs/digits.flow", Digits::new(7));
        $check("specs/maf_digits.flow", MafDigits::new(7));
        $check("specs/distill_moons.flow", DigitsStudent::new(7));
    }};
}
