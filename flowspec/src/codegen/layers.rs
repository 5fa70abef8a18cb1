//! Per-layer code generation: one `gen_*` method per generated piece, implemented for every
//! layer kind. Each method returns the tokens for one layer; `api.rs` strings them together.
//!
//! Names the generated method bodies share: `__h` (the `n x D` batch, physical columns),
//! `__ld` (log-dets), `__s` (per-layer scratch), `__g` (gradient of the batch), `__dld`
//! (gradient of the log-dets), `__inputs` (each executed layer's input), `__grad` (gradient
//! accumulator, a `Self`), `__rng`.

use super::{const_cols, field, real, Ctx};
use crate::ir::{self, LayerKind};
use proc_macro2::TokenStream;
use quote::{format_ident, quote};

pub trait LayerGen {
    /// The type of the layer's parameter field (layers without parameters have no field).
    fn gen_field_type(&self, cx: &Ctx) -> TokenStream;
    /// The constants the layer's calls use (its column sets).
    fn gen_consts(&self, cx: &Ctx, i: usize) -> TokenStream;
    /// The field's initial value; `zeros` gives the gradient accumulator instead.
    fn gen_init(&self, cx: &Ctx, i: usize, zeros: bool) -> TokenStream;
    /// The scratch field type, for layers that need one.
    fn gen_scratch_type(&self, cx: &Ctx) -> Option<TokenStream>;
    /// One step of the normalizing direction (x to z).
    fn gen_inverse(&self, cx: &Ctx, i: usize) -> TokenStream;
    /// One step of the generative direction (z to x).
    fn gen_forward(&self, cx: &Ctx, i: usize) -> TokenStream;
    /// One step of direction `dir` as a backward pass's forward step: its buffers go on the
    /// layer's tape (`__s.__tapes`), which only that pass's backward step reads.
    fn gen_recorded(&self, cx: &Ctx, i: usize, dir: &str) -> TokenStream;
    /// The backward step of direction `dir` ("inverse": the NLL's normalizing pass, "forward":
    /// the generative pass); `k` is the layer's slot in `__inputs`, which holds the inputs of
    /// that direction. It replays the tape `gen_recorded` wrote.
    fn gen_backward(&self, cx: &Ctx, i: usize, k: usize, dir: &str) -> TokenStream;
    /// Data-dependent initialisation before the layer is applied (actnorm), if any.
    fn gen_data_init(&self, cx: &Ctx, i: usize) -> Option<TokenStream>;
    /// One step of direction `dir` on the per-sample state: `__x` (a `[T; D]` in physical
    /// columns), `__ld` (a `T`), `__s.__row` (the row kernels' scratch).
    fn gen_row(&self, cx: &Ctx, i: usize, dir: &str) -> TokenStream;
}

fn names(i: usize) -> (proc_macro2::Ident, proc_macro2::Ident, proc_macro2::Ident) {
    (
        format_ident!("__L{}_COND", i),
        format_ident!("__L{}_TRANS", i),
        format_ident!("__L{}_COLS", i),
    )
}

pub fn activation(a: ir::Activation) -> TokenStream {
    match a {
        ir::Activation::Relu => quote!(__rt::nn::Activation::Relu),
        ir::Activation::Tanh => quote!(__rt::nn::Activation::Tanh),
        ir::Activation::LeakyRelu(s) => quote!(__rt::nn::Activation::LeakyRelu(#s)),
        ir::Activation::Elu(a) => quote!(__rt::nn::Activation::Elu(#a)),
    }
}

pub fn mlp_init(net: &ir::Mlp, zeros: bool) -> TokenStream {
    let sizes = super::usize_array(&net.sizes);
    let act = activation(net.act);
    if zeros {
        quote!(__rt::nn::Mlp::zeros(&#sizes, #act))
    } else {
        // The last layer starts at zero: a new flow is the identity.
        quote!(__rt::nn::Mlp::new(&#sizes, #act, &mut __rng, true))
    }
}

impl LayerGen for ir::Layer {
    fn gen_field_type(&self, cx: &Ctx) -> TokenStream {
        let t = &cx.t;
        match &self.kind {
            // The struct is outside the `const _` block, so it spells the runtime's path out.
            LayerKind::AffineCoupling { .. } | LayerKind::AdditiveCoupling { .. } => {
                quote!(::flowspec_runtime::__private::nn::Mlp<#t>)
            }
            LayerKind::ActNorm { .. } => quote!(::flowspec_runtime::__private::layers::ActNorm<#t>),
            LayerKind::Permute { .. } => quote!(()),
            k => super::library::field_type(k, t),
        }
    }

    fn gen_consts(&self, _cx: &Ctx, i: usize) -> TokenStream {
        let (c, t, k) = names(i);
        match &self.kind {
            LayerKind::AffineCoupling { cond, trans, .. }
            | LayerKind::AdditiveCoupling { cond, trans, .. } => {
                let (a, b) = (const_cols(&c, cond), const_cols(&t, trans));
                quote!(#a #b)
            }
            LayerKind::ActNorm { cols, .. } => const_cols(&k, cols),
            LayerKind::Permute { .. } => quote!(),
            kind => super::library::consts(kind, i),
        }
    }

    fn gen_init(&self, _cx: &Ctx, i: usize, zeros: bool) -> TokenStream {
        let d = super::lit(_cx.flow.dim);
        match &self.kind {
            LayerKind::AffineCoupling { net, .. } | LayerKind::AdditiveCoupling { net, .. } => {
                mlp_init(net, zeros)
            }
            LayerKind::ActNorm { .. } => quote!(__rt::layers::ActNorm::zeros(#d)),
            LayerKind::Permute { .. } => quote!(()),
            k => super::library::init(k, _cx, i, zeros),
        }
    }

    fn gen_scratch_type(&self, cx: &Ctx) -> Option<TokenStream> {
        let t = &cx.t;
        match &self.kind {
            LayerKind::AffineCoupling { .. } | LayerKind::AdditiveCoupling { .. } => {
                Some(quote!(__rt::layers::CouplingScratch<#t>))
            }
            k => super::library::scratch_type(k, t),
        }
    }

    fn gen_inverse(&self, cx: &Ctx, i: usize) -> TokenStream {
        let f = field(i);
        step(self, cx, i, "inverse", &quote!(&mut __s.#f))
    }

    fn gen_forward(&self, cx: &Ctx, i: usize) -> TokenStream {
        let f = field(i);
        step(self, cx, i, "forward", &quote!(&mut __s.#f))
    }

    fn gen_recorded(&self, cx: &Ctx, i: usize, dir: &str) -> TokenStream {
        let f = field(i);
        step(self, cx, i, dir, &quote!(__s.__tapes.#f.record(__n)))
    }

    fn gen_backward(&self, cx: &Ctx, i: usize, k: usize, dir: &str) -> TokenStream {
        let (c, t, cols) = names(i);
        let f = field(i);
        let k = super::lit(k);
        let input = quote!(__inputs.index_axis(__rt::ndarray::Axis(0), #k));
        let common = quote!(#input, __g.view_mut(), __dld.view(), &mut __grad.#f);
        let sfx = if dir == "inverse" { "backward" } else { "forward_backward" };
        let func = |kind: &str| format_ident!("{}_{}", kind, sfx);
        match &self.kind {
            LayerKind::AffineCoupling { bound, .. } => {
                let (b, func) = (real(cx, *bound), func("affine_coupling"));
                quote!(__rt::layers::#func(&self.#f, &#c, &#t, #b, #common, &mut __s.__tapes.#f);)
            }
            LayerKind::AdditiveCoupling { .. } => {
                let func = func("additive_coupling");
                quote!(__rt::layers::#func(&self.#f, &#c, &#t, #common, &mut __s.__tapes.#f);)
            }
            LayerKind::ActNorm { .. } => {
                let func = func("actnorm");
                quote!(__rt::layers::#func(&self.#f, &#cols, #common);)
            }
            LayerKind::Permute { .. } => quote!(),
            k => super::library::backward(k, i, dir, common),
        }
    }

    fn gen_row(&self, cx: &Ctx, i: usize, dir: &str) -> TokenStream {
        row_step(self, cx, i, dir)
    }

    fn gen_data_init(&self, _cx: &Ctx, i: usize) -> Option<TokenStream> {
        let (_, _, cols) = names(i);
        let f = field(i);
        match &self.kind {
            LayerKind::ActNorm { fixed, .. } => {
                // Data initialisation sets both tensors; fixed ones are written back.
                let refix = (!fixed.is_empty()).then(|| quote!(self.__fix();));
                Some(
                    quote!(__rt::layers::actnorm_data_init(&mut self.#f, &#cols, __h.view()); #refix),
                )
            }
            _ => None,
        }
    }
}

/// Couplings call their row kernel:
/// `__rt::layers::<kind>_coupling_row(&self.layerI, <column sets>, [bound,] __rt::layers::RowDir::Inverse, &mut __x[..], &mut __ld, &mut __s.__row);`
/// every other layer runs its batch step on one-row views of the same state:
/// `{ let (mut __h, mut __ld) = __rt::layers::row_views(&mut __x[..], &mut __ld); <step> }`.
fn row_step(l: &ir::Layer, cx: &Ctx, i: usize, dir: &str) -> TokenStream {
    let (c, t, _) = names(i);
    let f = field(i);
    let d = format_ident!("{}", if dir == "inverse" { "Inverse" } else { "Forward" });
    let state = quote!(__rt::layers::RowDir::#d, &mut __x[..], &mut __ld, &mut __s.__row);
    match &l.kind {
        LayerKind::AffineCoupling { bound, .. } => {
            let b = real(cx, *bound);
            quote!(__rt::layers::affine_coupling_row(&self.#f, &#c, &#t, #b, #state);)
        }
        LayerKind::AdditiveCoupling { .. } => {
            quote!(__rt::layers::additive_coupling_row(&self.#f, &#c, &#t, #state);)
        }
        LayerKind::Permute { .. } => quote!(),
        k => super::library::row_step(k, i, state).unwrap_or_else(|| {
            let batch = step(l, cx, i, dir, &quote!(&mut __s.#f));
            quote!({
                let (mut __h, mut __ld) = __rt::layers::row_views(&mut __x[..], &mut __ld);
                #batch
            })
        }),
    }
}

/// `__rt::layers::<kind>_<dir>(&self.layerI, <column sets>, [bound,] __h.view_mut(), __ld.view_mut() [, scratch]);`
/// where `scratch` is the `&mut` expression of the layer's buffers.
fn step(l: &ir::Layer, cx: &Ctx, i: usize, dir: &str, scratch: &TokenStream) -> TokenStream {
    let (c, t, cols) = names(i);
    let f = field(i);
    let state = quote!(__h.view_mut(), __ld.view_mut());
    match &l.kind {
        LayerKind::AffineCoupling { bound, .. } => {
            let func = format_ident!("affine_coupling_{}", dir);
            let b = real(cx, *bound);
            quote!(__rt::layers::#func(&self.#f, &#c, &#t, #b, #state, #scratch);)
        }
        LayerKind::AdditiveCoupling { .. } => {
            let func = format_ident!("additive_coupling_{}", dir);
            quote!(__rt::layers::#func(&self.#f, &#c, &#t, #state, #scratch);)
        }
        LayerKind::ActNorm { .. } => {
            let func = format_ident!("actnorm_{}", dir);
            quote!(__rt::layers::#func(&self.#f, &#cols, #state);)
        }
        LayerKind::Permute { .. } => quote!(),
        k => super::library::step(k, i, dir, scratch),
    }
}
