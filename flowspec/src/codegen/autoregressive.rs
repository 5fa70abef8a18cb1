//! Code generation for MAF and IAF layers. The MADE's degrees are constants, so the masks
//! and the block structure the sequential direction walks are fixed at compile time:
//!
//! ```text
//! const __L0_IN_DEG: [usize; 64] = [1, 2, .., 64];
//! const __L0_DEG0: [usize; 256] = [1, 1, 1, 1, 1, 2, ..];
//! const __L0_HIDDEN: [&[usize]; 2] = [&__L0_DEG0, &__L0_DEG1];
//! // MAF, normalizing direction (one pass):
//! __rt::layers::ar_apply(&__L0_TR, &self.layer0, &__L0_COLS, __h.view_mut(), __ld.view_mut(), &mut __s.layer0);
//! // MAF, generative direction (sequential, degree by degree):
//! __rt::layers::ar_solve(&__L0_TR, &self.layer0, &__L0_COLS, __h.view_mut(), __ld.view_mut(), &mut __s.layer0);
//! ```
//!
//! An IAF layer is the same pair of kernels with the directions swapped.

use super::{const_cols, lit, usize_array};
use crate::ir::{ArKind, LayerKind, Made, Transformer};
use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};

fn idents(i: usize) -> (Ident, Ident, Ident) {
    (
        format_ident!("__L{}_COLS", i),
        format_ident!("__L{}_IN_DEG", i),
        format_ident!("__L{}_HIDDEN", i),
    )
}

pub fn consts(tr: &Transformer, cols: &[usize], made: &Made, i: usize) -> TokenStream {
    let (c, in_deg, hidden) = idents(i);
    let (ty, val) = super::library::transformer(tr);
    let trn = super::library::tr_ident(i);
    let cols = const_cols(&c, cols);
    let in_deg = const_cols(&in_deg, &made.in_deg);
    let names: Vec<Ident> =
        (0..made.hidden_deg.len()).map(|l| format_ident!("__L{}_DEG{}", i, l)).collect();
    let layers = names.iter().zip(&made.hidden_deg).map(|(n, d)| const_cols(n, d));
    let nh = lit(names.len());
    quote! {
        const #trn: #ty = #val;
        #cols
        #in_deg
        #(#layers)*
        const #hidden: [&[usize]; #nh] = [#(&#names),*];
    }
}

/// `Made::new(..)` with seeded weights (the last layer zero, so the layer starts as the
/// identity), or `Made::zeros(..)` for the gradient accumulator.
pub fn init(tr: &Transformer, made: &Made, i: usize, zeros: bool) -> TokenStream {
    let (_, in_deg, hidden) = idents(i);
    let sizes = usize_array(&made.sizes);
    let act = super::layers::activation(made.act);
    let p = lit(tr.n_params());
    if zeros {
        quote!(__rt::layers::Made::zeros(&#sizes, #act, &#in_deg, &#hidden, #p))
    } else {
        quote!(__rt::layers::Made::new(&#sizes, #act, &#in_deg, &#hidden, #p, &mut __rng, true))
    }
}

/// The kernel of direction `dir` ("inverse" or "forward"): the parallel `ar_apply` where the
/// MADE reads this direction's input (MAF normalizing, IAF generative), else `ar_solve`.
fn kernel(ar: ArKind, dir: &str) -> Ident {
    let parallel = matches!((ar, dir), (ArKind::Maf, "inverse") | (ArKind::Iaf, "forward"));
    format_ident!("{}", if parallel { "ar_apply" } else { "ar_solve" })
}

/// One step in direction `dir`; `scratch` is the `&mut` expression of the layer's buffers.
pub fn step(ar: ArKind, i: usize, dir: &str, scratch: &TokenStream) -> TokenStream {
    let (c, _, _) = idents(i);
    let (f, tr, func) = (super::field(i), super::library::tr_ident(i), kernel(ar, dir));
    quote!(__rt::layers::#func(&#tr, &self.#f, &#c, __h.view_mut(), __ld.view_mut(), #scratch);)
}

/// The backward step of direction `dir`; `common` is `(input, g, dld, grad)`. It writes the
/// gradient field (see [`writes_grad`]).
pub fn backward(ar: ArKind, i: usize, dir: &str, common: TokenStream) -> TokenStream {
    let (c, _, _) = idents(i);
    let (f, tr) = (super::field(i), super::library::tr_ident(i));
    let func = format_ident!("{}_backward", kernel(ar, dir));
    let out = quote!(__rt::layers::GradOut::Write);
    quote!(__rt::layers::#func(&#tr, &self.#f, &#c, #common, &mut __s.__tapes.#f, #out);)
}

/// Whether the backward step of a layer of this kind writes its gradient field (every
/// entry) instead of adding to it, so the backward pass need not zero the field first.
pub fn writes_grad(kind: &LayerKind) -> bool {
    matches!(kind, LayerKind::Autoregressive { .. })
}
