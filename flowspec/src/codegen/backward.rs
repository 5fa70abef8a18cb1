//! The generated backward passes. Each runs one direction storing every layer's input in
//! `__inputs` and its buffers on the layer's tape (`__s.__tapes`, see
//! `flowspec_runtime::layers::Tape`), then the layers' backward steps in reverse, each
//! reusing the activations its own forward step recorded:
//!
//! - `__backward` (normalizing direction): the NLL gradient for maximum likelihood, and with
//!   a scale of -1 the gradient of log p(x) with respect to x;
//! - `__backward_gen` (generative direction): the gradient of any loss of `(x, log|det|)`
//!   through `x = f(z)`, for reverse-KL fitting and distillation.

use super::{lit, param_layers, Ctx, LayerGen};
use crate::ir;
use proc_macro2::TokenStream;
use quote::quote;

/// `struct __Tapes`: one tape per layer with buffers, written and read only by the backward
/// passes, so a `log_prob` on the ordinary scratch never touches what a backward step reads.
pub fn gen_tapes(cx: &Ctx) -> TokenStream {
    let fields = param_layers(cx.flow).filter_map(|(i, l)| {
        let ty = l.gen_scratch_type(cx)?;
        let f = super::field(i);
        Some(quote!(#f: __rt::layers::Tape<#ty>,))
    });
    quote! {
        #[derive(Default)]
        struct __Tapes {
            #(#fields)*
        }
    }
}

pub fn gen_backward(cx: &Ctx) -> TokenStream {
    let t = &cx.t;
    let n_run = lit(param_layers(cx.flow).count());
    let zero_added = gen_zero_added(cx);
    let normalizing = gen_normalizing(cx);
    let generative = gen_generative(cx);
    quote! {
        /// The mean negative log-likelihood of the rows of `x` and its gradient, flat, in the
        /// canonical parameter order (that of the safetensors file).
        /// A batch of 128 rows or more runs in two halves on two threads
        /// (`flowspec_runtime::par::split_step_in`), each leaving its gradient in one of the
        /// two this thread's scratch keeps, and the flat gradient is their sum.
        pub fn nll_and_grad(&self, x: __rt::ndarray::ArrayView2<#t>) -> (#t, ::std::vec::Vec<#t>) {
            let mut __halves = __with_scratch(|__s| ::core::mem::take(&mut __s.__halves));
            let __step = __rt::par::split_step_in(x, &mut __halves, |x, __inv_n, __slot| {
                __with_scratch(|__s| {
                    // The half's gradient accumulator is the slot's, for this call.
                    ::core::mem::swap(&mut __s.__grad, __slot);
                    let (__loss, _, _) = self.__backward(x, __inv_n, __s);
                    ::core::mem::swap(&mut __s.__grad, __slot);
                    __loss
                })
            }, |__g, __f| __g.visit_params(&mut |_, _, __d| __f(__d)));
            __with_scratch(|__s| __s.__halves = __halves);
            __step
        }
        /// The same, with the gradient as a struct of this type (one field per layer).
        pub fn nll_and_grad_struct(&self, x: __rt::ndarray::ArrayView2<#t>) -> (#t, Self) {
            __with_scratch(|__s| {
                let __inv_n = <#t as __rt::Real>::of(1.0 / x.nrows().max(1) as f64);
                let (__loss, _, _) = self.__backward(x, __inv_n, __s);
                (__loss, __s.__grad.clone().expect("__backward leaves the gradient"))
            })
        }
        /// log p(x) per row and its gradient with respect to `x` (through the normalizing
        /// direction; what distillation asks of a teacher).
        pub fn log_prob_grad_x(&self, x: __rt::ndarray::ArrayView2<#t>) -> (__rt::ndarray::Array1<#t>, __rt::ndarray::Array2<#t>) {
            __with_scratch(|__s| {
                let (_, __g, __lp) = self.__backward(x, <#t as __rt::Real>::of(-1.0), __s);
                (__lp, __g)
            })
        }
        /// Backward pass through the generative direction: for `(x, ld) = forward(z)`, the
        /// gradient of `sum_rows(gx . x + gld * ld)` with respect to every parameter (flat,
        /// canonical order; base parameters get zero) and with respect to `z`.
        pub fn forward_vjp(&self, z: __rt::ndarray::ArrayView2<#t>, gx: __rt::ndarray::ArrayView2<#t>, gld: __rt::ndarray::ArrayView1<#t>) -> (::std::vec::Vec<#t>, __rt::ndarray::Array2<#t>) {
            __with_scratch(|__s| {
                let __gz = self.__backward_gen(z, gx, gld, __s);
                (Self::__flat_grad(__s), __gz)
            })
        }
        fn __flat_grad(__s: &__Scratch) -> ::std::vec::Vec<#t> {
            let mut __flat = ::std::vec::Vec::with_capacity(Self::NUM_PARAMS);
            if let ::core::option::Option::Some(__g) = &__s.__grad {
                __g.visit_params(&mut |_, _, __d| __flat.extend_from_slice(__d));
            }
            __flat
        }
        /// A gradient accumulator for `n` rows and an `__inputs` buffer. Zeroed are the
        /// fields whose layers' backward steps add to them; the others' steps write theirs
        /// (autoregressive layers), so all of it only for no rows (where no step runs).
        fn __start_backward(__s: &mut __Scratch, __n: usize) -> (Self, __rt::ndarray::Array3<#t>) {
            let mut __grad = __s.__grad.take().unwrap_or_else(Self::__zeros);
            if __n == 0 {
                __grad.visit_params_mut(&mut |_, _, __d| __d.fill(<#t as __rt::Real>::of(0.0)));
            } else {
                #zero_added
            }
            let mut __inputs = ::core::mem::take(&mut __s.__inputs);
            if __inputs.shape() != [#n_run, __n, Self::DIM] {
                __inputs = __rt::ndarray::Array3::<#t>::zeros((#n_run, __n, Self::DIM));
            }
            (__grad, __inputs)
        }
        #normalizing
        #generative
    }
}

/// Zeroes the gradient fields that backward steps add to: every layer's but the
/// autoregressive ones (`GradOut::Write`, see `autoregressive::backward`), and the base's.
fn gen_zero_added(cx: &Ctx) -> TokenStream {
    let added = param_layers(cx.flow).filter(|(_, l)| !super::autoregressive::writes_grad(&l.kind));
    let fields = added.map(|(i, _)| super::field(i));
    let base = super::base::gen_base(cx).field.is_some().then(|| quote!(base));
    let fields = fields.map(|f| quote!(#f)).chain(base);
    quote!(#(__rt::Params::zero(&mut __grad.#fields);)*)
}

/// `__backward(x, __inv_n)`: loss `-__inv_n * sum(log p)`; leaves the parameter gradient in
/// `__s.__grad` and returns the loss, its gradient with respect to `x`, and log p per row.
fn gen_normalizing(cx: &Ctx) -> TokenStream {
    let t = &cx.t;
    let executed: Vec<(usize, &ir::Layer)> = param_layers(cx.flow).collect();
    let fwd = executed.iter().enumerate().map(|(k, (i, l))| {
        let step = l.gen_recorded(cx, *i, "inverse");
        let k = lit(k);
        quote!(__inputs.index_axis_mut(__rt::ndarray::Axis(0), #k).assign(&*__h); #step)
    });
    let bwd =
        executed.iter().enumerate().rev().map(|(k, (i, l))| l.gen_backward(cx, *i, k, "inverse"));
    let base = super::base::gen_base(cx);
    let (base_lp, base_grad) = (&base.log_prob_phys, &base.nll_grad_phys);
    quote! {
        #[allow(unused_variables, unused_mut)]
        fn __backward(&self, x: __rt::ndarray::ArrayView2<#t>, __inv_n: #t, __s: &mut __Scratch) -> (#t, __rt::ndarray::Array2<#t>, __rt::ndarray::Array1<#t>) {
            Self::__check_width(x.ncols());
            let __n = x.nrows();
            let (mut __grad, mut __inputs) = Self::__start_backward(__s, __n);
            if __n == 0 {
                __s.__grad = ::core::option::Option::Some(__grad);
                return (<#t as __rt::Real>::of(0.0), __rt::ndarray::Array2::zeros((0, Self::DIM)), __rt::ndarray::Array1::zeros(0));
            }
            let mut __hb = x.to_owned();
            let mut __ldb = __rt::ndarray::Array1::<#t>::zeros(__n);
            {
                let (__h, __ld) = (&mut __hb, &mut __ldb);
                #(#fwd)*
            }
            // The base reads z in place through __Z_COLS: no gather into logical order.
            let __lp = #base_lp + &__ldb;
            let __loss = -__lp.sum() * __inv_n;
            let mut __g = __rt::ndarray::Array2::<#t>::zeros((__n, Self::DIM));
            #base_grad
            let __dld = __rt::ndarray::Array1::<#t>::from_elem(__n, -__inv_n);
            #(#bwd)*
            __s.__inputs = __inputs;
            __s.__grad = ::core::option::Option::Some(__grad);
            (__loss, __g, __lp)
        }
    }
}

/// `__backward_gen(z, gx, gld)`: runs the generative direction from `z` storing each layer's
/// input, then each layer's `*_forward_backward` from the base side to the data side.
fn gen_generative(cx: &Ctx) -> TokenStream {
    let t = &cx.t;
    let executed: Vec<(usize, &ir::Layer)> = param_layers(cx.flow).collect();
    let fwd = executed.iter().enumerate().rev().map(|(k, (i, l))| {
        let step = l.gen_recorded(cx, *i, "forward");
        let k = lit(k);
        quote!(__inputs.index_axis_mut(__rt::ndarray::Axis(0), #k).assign(&*__h); #step)
    });
    let bwd = executed.iter().enumerate().map(|(k, (i, l))| l.gen_backward(cx, *i, k, "forward"));
    quote! {
        #[allow(unused_variables, unused_mut)]
        fn __backward_gen(&self, z: __rt::ndarray::ArrayView2<#t>, gx: __rt::ndarray::ArrayView2<#t>, gld: __rt::ndarray::ArrayView1<#t>, __s: &mut __Scratch) -> __rt::ndarray::Array2<#t> {
            Self::__check_width(z.ncols());
            Self::__check_width(gx.ncols());
            let __n = z.nrows();
            assert!(gx.nrows() == __n && gld.len() == __n, "forward_vjp: z, gx and gld must have the same number of rows");
            let (mut __grad, mut __inputs) = Self::__start_backward(__s, __n);
            if __n == 0 {
                __s.__grad = ::core::option::Option::Some(__grad);
                return __rt::ndarray::Array2::zeros((0, Self::DIM));
            }
            let mut __hb = __rt::ndarray::Array2::<#t>::zeros((__n, Self::DIM));
            for (__i, &__c) in __Z_COLS.iter().enumerate() {
                __hb.column_mut(__c).assign(&z.column(__i));
            }
            let mut __ldb = __rt::ndarray::Array1::<#t>::zeros(__n);
            {
                let (__h, __ld) = (&mut __hb, &mut __ldb);
                #(#fwd)*
            }
            // x leaves the generative direction in physical (= data) column order.
            let mut __g = gx.to_owned();
            let __dld = gld.to_owned();
            #(#bwd)*
            let mut __gz = __rt::ndarray::Array2::<#t>::zeros((__n, Self::DIM));
            for (__i, &__c) in __Z_COLS.iter().enumerate() {
                __gz.column_mut(__i).assign(&__g.column(__c));
            }
            __s.__inputs = __inputs;
            __s.__grad = ::core::option::Option::Some(__grad);
            __gz
        }
    }
}
