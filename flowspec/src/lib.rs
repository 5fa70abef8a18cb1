//! The flowspec compiler: a small declarative language for normalizing flows, checked and
//! compiled to specialised Rust.
//!
//! The passes run over plain data (see `docs/ARCHITECTURE.md`):
//! `grammar.pest` -> [`parse`] (syntax tree with byte spans) -> [`check`] (names, shapes,
//! layer rules; errors collected) -> [`ir`] (fully resolved) -> [`codegen`] (Rust tokens) and,
//! with the `cli` feature, [`interp`] (the same IR run over the runtime's kernels).

pub mod ast;
pub mod check;
pub mod codegen;
pub mod diag;
pub mod expand;
pub mod ir;
pub mod parse;
pub mod span;

#[cfg(feature = "cli")]
pub mod interp;

pub use diag::Diagnostic;

/// Parses and checks a spec's source text.
pub fn compile(src: &str) -> Result<ir::Program, Vec<Diagnostic>> {
    let file = parse::parse(src).map_err(|d| vec![d])?;
    check::check(&file)
}
