//! `flow!`: compiles a flowspec spec into a Rust struct at build time. A thin shell: all the
//! work is in the `flowspec` library (`flowspec::expand`), where it can be tested.
//!
//! ```ignore
//! flowspec_macros::flow!(file = "specs/realnvp_moons.flow");
//! flowspec_macros::flow! {
//!     /// A small RealNVP.
//!     flow Small { event [2]; repeat 2 { affine_coupling(mask = alternate); reverse; } }
//! }
//! ```
//! The generated code needs `flowspec-runtime` as a dependency of the calling crate.

use proc_macro::TokenStream;

/// Compiles an inline spec (`flow! { flow Name { ... } }`) or a spec file
/// (`flow!(file = "path/relative/to/Cargo.toml")`) into one struct per flow.
#[proc_macro]
pub fn flow(input: TokenStream) -> TokenStream {
    flowspec::expand::expand_flow_macro(input.into()).into()
}
