//! flowspec-runtime: the kernels, traits, optimizers, data and I/O that flowspec's generated
//! code and its interpreter share.
//!
//! Conventions every kernel follows (see `docs/ARCHITECTURE.md`):
//! - A batch is an `n x D` row-major matrix. Kernels transform it in place and *add* their
//!   log-determinant to a per-row accumulator of length `n`.
//! - `inverse` is the normalizing direction (data x to base z), the direction in which a spec
//!   lists its layers; `forward` is the generative direction (z to x).
//!   `inverse` adds log|det dz/dx|, `forward` adds log|det dx/dz|.
//! - Column index sets (`cols`, `cond`, `trans`) are physical column numbers computed by the
//!   compiler; permutations never move data, they only change these sets.
//! - `*_backward` kernels take the layer's input in the normalizing direction, the gradient of
//!   the loss with respect to the layer's output (overwritten in place by the gradient with
//!   respect to its input), and the gradient with respect to each row's log-determinant; they
//!   *accumulate* parameter gradients into a parameter struct of the same type.
//! - `*_forward_backward` kernels are the same for the generative direction: they take the
//!   `forward` kernel's input z, the gradient with respect to its output x (overwritten by the
//!   gradient with respect to z) and the gradient with respect to the log-determinant `forward`
//!   added, and accumulate parameter gradients the same way.

pub mod base;
pub mod bench;
pub mod data;
pub mod datasets;
pub mod error;
pub mod flow;
pub mod gemm;
pub mod io;
pub mod layers;
pub mod nn;
pub mod optim;
pub mod par;
pub mod params;
pub mod real;
pub mod reverse_kl;
pub mod train;
pub mod transform;
pub mod verify;
pub mod vmath;

pub use error::{DataError, IoError, TrainError};
pub use flow::Flow;
pub use real::Real;

/// The random number generator flowspec seeds everywhere (named, so seeds stay reproducible
/// across rand versions).
pub type FlowRng = rand_xoshiro::Xoshiro256PlusPlus;

/// Creates the project's RNG from a seed.
pub fn rng_from_seed(seed: u64) -> FlowRng {
    use rand::SeedableRng;
    FlowRng::seed_from_u64(seed)
}

/// Everything generated code names. Generated code uses only
/// `::flowspec_runtime::__private::...` paths, so the public API can move without breaking it.
#[doc(hidden)]
pub mod __private {
    pub use crate::base;
    pub use crate::flow::{Flow, ParamSpec};
    pub use crate::layers;
    pub use crate::nn;
    pub use crate::par;
    pub use crate::params::{ParamVec, Params};
    pub use crate::real::Real;
    pub use crate::transform;
    pub use crate::{io, rng_from_seed, FlowRng, IoError};
    pub use ndarray;
    pub use rand;
}
