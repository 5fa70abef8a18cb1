//! Code generation for the layer library: elementwise maps (a transformer applied
//! generatively on every dimension), transformer couplings (splines, piecewise-linear) and
//! linear flows. Every transformer is a `const` of its runtime type, so each call is
//! monomorphised for it:
//!
//! ```text
//! const __L2_TR: __rt::transform::RqSpline = __rt::transform::RqSpline { bins: 8, bound: 5.0 };
//! __rt::transform::elementwise_inverse(&__L2_TR, &self.layer2, &__L2_COLS, __h.view_mut(), __ld.view_mut());
//! ```

use super::{const_cols, lit, Ctx};
use crate::ir::{LayerKind, LinearKind, ParamTensor, Transformer};
use proc_macro2::TokenStream;
use quote::{format_ident, quote};

pub fn tr_ident(i: usize) -> proc_macro2::Ident {
    format_ident!("__L{}_TR", i)
}

/// The transformer's runtime type and value.
pub fn transformer(tr: &Transformer) -> (TokenStream, TokenStream) {
    let p = quote!(__rt::transform);
    match *tr {
        Transformer::Affine => (quote!(#p::Affine), quote!(#p::Affine {})),
        Transformer::LeakyRelu { slope } => {
            (quote!(#p::LeakyRelu), quote!(#p::LeakyRelu { slope: #slope }))
        }
        Transformer::Sigmoid { alpha } => {
            (quote!(#p::Sigmoid), quote!(#p::Sigmoid { alpha: #alpha }))
        }
        Transformer::Logit { alpha } => (quote!(#p::Logit), quote!(#p::Logit { alpha: #alpha })),
        Transformer::Exp => (quote!(#p::Exp), quote!(#p::Exp {})),
        Transformer::Log => (quote!(#p::Log), quote!(#p::Log {})),
        Transformer::PiecewiseLinear { bins } => {
            let b = lit(bins);
            (quote!(#p::PiecewiseLinear), quote!(#p::PiecewiseLinear { bins: #b }))
        }
        Transformer::RqSpline { bins, bound } => {
            let b = lit(bins);
            (quote!(#p::RqSpline), quote!(#p::RqSpline { bins: #b, bound: #bound }))
        }
        Transformer::SoftAffine { bound } => {
            (quote!(#p::SoftAffine), quote!(#p::SoftAffine { bound: #bound }))
        }
    }
}

pub fn field_type(k: &LayerKind, t: &TokenStream) -> TokenStream {
    let rt = quote!(::flowspec_runtime::__private);
    match k {
        LayerKind::Elementwise { .. } => quote!(#rt::transform::ElementParams<#t>),
        LayerKind::TransformerCoupling { .. } => quote!(#rt::nn::Mlp<#t>),
        LayerKind::Linear { kind, .. } => {
            let ty = linear_type(kind);
            quote!(#rt::layers::#ty<#t>)
        }
        LayerKind::Autoregressive { .. } => quote!(#rt::layers::Made<#t>),
        _ => unreachable!("library::field_type is only called for library layers"),
    }
}

fn linear_type(k: &LinearKind) -> proc_macro2::Ident {
    format_ident!(
        "{}",
        match k {
            LinearKind::LowerTriangular => "LowerTriangular",
            LinearKind::Lu { .. } => "Lu",
            LinearKind::Householder { .. } => "Householder",
        }
    )
}

fn linear_prefix(k: &LinearKind) -> &'static str {
    match k {
        LinearKind::LowerTriangular => "lower_triangular",
        LinearKind::Lu { .. } => "lu",
        LinearKind::Householder { .. } => "householder",
    }
}

pub fn consts(k: &LayerKind, i: usize) -> TokenStream {
    let cols = format_ident!("__L{}_COLS", i);
    let (c, t) = (format_ident!("__L{}_COND", i), format_ident!("__L{}_TRANS", i));
    let tr_const = |tr: &Transformer| {
        let (ty, val) = transformer(tr);
        let name = tr_ident(i);
        quote!(const #name: #ty = #val;)
    };
    match k {
        LayerKind::Elementwise { tr, cols: cs, .. } => {
            let (a, b) = (tr_const(tr), const_cols(&cols, cs));
            quote!(#a #b)
        }
        LayerKind::TransformerCoupling { tr, cond, trans, .. } => {
            let (a, b, d) = (tr_const(tr), const_cols(&c, cond), const_cols(&t, trans));
            quote!(#a #b #d)
        }
        LayerKind::Linear { cols: cs, .. } => const_cols(&cols, cs),
        LayerKind::Autoregressive { tr, cols, made, .. } => {
            super::autoregressive::consts(tr, cols, made, i)
        }
        _ => quote!(),
    }
}

/// The seed a linear layer draws its fixed structure from: the spec's seed mixed with the
/// layer's position, so that `repeat 3 { lu; }` gives three different rotations, and the
/// same ones in generated code, the interpreter and every build.
pub fn layer_seed(seed: u64, i: usize) -> u64 {
    seed ^ (i as u64 + 1).wrapping_mul(0x9e3779b97f4a7c15)
}

pub fn init(k: &LayerKind, cx: &Ctx, i: usize, zeros: bool) -> TokenStream {
    let d = lit(cx.flow.dim);
    match k {
        LayerKind::Elementwise { cols, params, .. } => {
            element_params(params, cols.len(), zeros, &cx.t)
        }
        LayerKind::TransformerCoupling { net, .. } => super::layers::mlp_init(net, zeros),
        LayerKind::Autoregressive { tr, made, .. } => {
            super::autoregressive::init(tr, made, i, zeros)
        }
        LayerKind::Linear { kind, .. } => match *kind {
            LinearKind::LowerTriangular => quote!(__rt::layers::LowerTriangular::zeros(#d)),
            LinearKind::Lu { .. } if zeros => quote!(__rt::layers::Lu::identity(#d)),
            LinearKind::Lu { seed } => {
                let s = layer_seed(seed, i);
                quote!(__rt::layers::Lu::new(#d, &mut __rt::rng_from_seed(#s)))
            }
            LinearKind::Householder { reflections, .. } if zeros => {
                let k = lit(reflections);
                quote!(__rt::layers::Householder::zeros(#d, #k))
            }
            LinearKind::Householder { reflections, seed } => {
                let (k, s) = (lit(reflections), layer_seed(seed, i));
                quote!(__rt::layers::Householder::new(#d, #k, &mut __rt::rng_from_seed(#s)))
            }
        },
        _ => quote!(),
    }
}

/// `ElementParams { tensors: vec![ParamTensor { .. }, ..] }`; fixed tensors carry their
/// values and are not trainable (the gradient accumulator keeps zeros there).
fn element_params(params: &[ParamTensor], d: usize, zeros: bool, t: &TokenStream) -> TokenStream {
    let tensors = params.iter().map(|p| {
        let (name, k, dl) = (p.name, lit(p.k), lit(d));
        let trainable = p.fixed.is_none();
        let value = match &p.fixed {
            Some(v) if !zeros => {
                quote!(__rt::ndarray::Array2::from_shape_vec((#dl, #k), ::std::vec![#(#v as #t),*]).expect("D x k values"))
            }
            _ => quote!(__rt::ndarray::Array2::zeros((#dl, #k))),
        };
        quote!(__rt::transform::ParamTensor { name: #name, value: #value, trainable: #trainable })
    });
    quote!(__rt::transform::ElementParams { tensors: ::std::vec![#(#tensors),*] })
}

pub fn scratch_type(k: &LayerKind, t: &TokenStream) -> Option<TokenStream> {
    match k {
        LayerKind::TransformerCoupling { .. } => Some(quote!(__rt::layers::CouplingScratch<#t>)),
        LayerKind::Autoregressive { .. } => Some(quote!(__rt::layers::ArScratch<#t>)),
        _ => None,
    }
}

/// One step in direction `dir` ("inverse" or "forward"); `scratch` is the `&mut` expression
/// of the layer's buffers.
pub fn step(k: &LayerKind, i: usize, dir: &str, scratch: &TokenStream) -> TokenStream {
    let f = super::field(i);
    let tr = tr_ident(i);
    let (c, t, cols) = (
        format_ident!("__L{}_COND", i),
        format_ident!("__L{}_TRANS", i),
        format_ident!("__L{}_COLS", i),
    );
    let state = quote!(__h.view_mut(), __ld.view_mut());
    match k {
        LayerKind::Elementwise { .. } => {
            let func = format_ident!("elementwise_{}", dir);
            quote!(__rt::transform::#func(&#tr, &self.#f, &#cols, #state);)
        }
        LayerKind::TransformerCoupling { .. } => {
            let func = format_ident!("transformer_coupling_{}", dir);
            quote!(__rt::transform::#func(&#tr, &self.#f, &#c, &#t, #state, #scratch);)
        }
        LayerKind::Linear { kind, .. } => {
            let func = format_ident!("{}_{}", linear_prefix(kind), dir);
            quote!(__rt::layers::#func(&self.#f, &#cols, #state);)
        }
        LayerKind::Autoregressive { ar, .. } => super::autoregressive::step(*ar, i, dir, scratch),
        _ => quote!(),
    }
}

/// The row kernel for the per-sample path, if the layer has one (`state`: the direction, the
/// row, its log-det and the row scratch).
pub fn row_step(k: &LayerKind, i: usize, state: TokenStream) -> Option<TokenStream> {
    let (f, tr) = (super::field(i), tr_ident(i));
    let (c, t) = (format_ident!("__L{}_COND", i), format_ident!("__L{}_TRANS", i));
    match k {
        LayerKind::TransformerCoupling { .. } => {
            Some(quote!(__rt::layers::transformer_coupling_row(&#tr, &self.#f, &#c, &#t, #state);))
        }
        _ => None,
    }
}

/// The backward step of direction `dir`: `*_backward` for the normalizing direction,
/// `*_forward_backward` for the generative one.
pub fn backward(k: &LayerKind, i: usize, dir: &str, common: TokenStream) -> TokenStream {
    let sfx = if dir == "inverse" { "backward" } else { "forward_backward" };
    let f = super::field(i);
    let tr = tr_ident(i);
    let (c, t, cols) = (
        format_ident!("__L{}_COND", i),
        format_ident!("__L{}_TRANS", i),
        format_ident!("__L{}_COLS", i),
    );
    match k {
        LayerKind::Elementwise { .. } => {
            let func = format_ident!("elementwise_{}", sfx);
            quote!(__rt::transform::#func(&#tr, &self.#f, &#cols, #common);)
        }
        LayerKind::TransformerCoupling { .. } => {
            let func = format_ident!("transformer_coupling_{}", sfx);
            quote!(__rt::transform::#func(&#tr, &self.#f, &#c, &#t, #common, &mut __s.__tapes.#f);)
        }
        LayerKind::Linear { kind, .. } => {
            let func = format_ident!("{}_{}", linear_prefix(kind), sfx);
            quote!(__rt::layers::#func(&self.#f, &#cols, #common);)
        }
        LayerKind::Autoregressive { ar, .. } => {
            super::autoregressive::backward(*ar, i, dir, common)
        }
        _ => quote!(),
    }
}
