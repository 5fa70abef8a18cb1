//! The flows of every spec in `specs/`, compiled through `flow!`, for the integration tests.
//! `tests/all_specs_compiled.rs` checks that no spec is missing from this list.

pub mod specs {
    flowspec_macros::flow!(file = "../specs/realnvp_moons.flow");
    flowspec_macros::flow!(file = "../specs/nice_moons.flow");
    flowspec_macros::flow!(file = "../specs/glow_like.flow");
}

/// The spec files `specs` above includes (paths relative to the workspace root).
pub const SPEC_FILES: &[&str] = &["specs/realnvp_moons.flow", "specs/nice_moons.flow", "specs/glow_like.flow"];
