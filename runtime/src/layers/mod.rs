//! Flow layer kernels. Each layer has an `*_inverse` (normalizing) kernel, a `*_forward`
//! (generative) kernel, a `*_backward` kernel for the normalizing direction and a
//! `*_forward_backward` kernel for the generative one; see the crate docs for the shared
//! conventions.

mod autoregressive;
pub(crate) mod coupling;
mod coupling_row;
mod elementwise;
mod linear;
mod tape;
#[cfg(test)]
pub(crate) mod testutil;

pub use autoregressive::{
    ar_apply, ar_apply_backward, ar_solve, ar_solve_backward, made_degrees, ArScratch, GradOut,
    Made,
};
pub use coupling::{
    additive_coupling_backward, additive_coupling_forward, additive_coupling_forward_backward,
    additive_coupling_inverse, affine_coupling_backward, affine_coupling_forward,
    affine_coupling_forward_backward, affine_coupling_inverse, CouplingScratch,
};
pub use coupling_row::{
    additive_coupling_row, affine_coupling_row, row_views, transformer_coupling_row, RowDir,
};
pub use elementwise::{
    actnorm_backward, actnorm_data_init, actnorm_forward, actnorm_forward_backward,
    actnorm_inverse, ActNorm,
};
#[allow(unused_imports)]
pub use linear::*;
pub use tape::Tape;
