//! The generated struct's methods: constructors, both directions over batches (the per-sample
//! ones are in `per_sample.rs`), the backward pass, data-dependent initialisation, weights I/O,
//! and the `Flow` impl.

use super::{field, lit, param_layers, Ctx, LayerGen};
use crate::ir::{self, LayerKind};
use proc_macro2::{Literal, TokenStream};
use quote::{format_ident, quote};

pub fn gen_inherent(cx: &Ctx) -> TokenStream {
    let f = cx.flow;
    let name = format_ident!("{}", f.name);
    let (t, d) = (&cx.t, lit(f.dim));
    let (flow_name, params) = (&f.name, lit(f.num_params()));
    let fp = Literal::u64_unsuffixed(f.fingerprint());
    let scratch = gen_scratch(cx);
    let ctors = gen_ctors(cx);
    let run = gen_run(cx);
    let batch = gen_batch(cx);
    let one = super::per_sample::gen_per_sample(cx);
    let backward = super::backward::gen_backward(cx);
    let visit = gen_visit(cx);
    let fix = super::fixed::gen_fix(cx);
    quote! {
        #scratch
        impl #name {
            /// The flow's name in the spec.
            pub const NAME: &'static str = #flow_name;
            /// The event size D.
            pub const DIM: usize = #d;
            /// The number of scalar parameters.
            pub const NUM_PARAMS: usize = #params;
            /// A hash of the architecture, stored in weights files.
            pub const FINGERPRINT: u64 = #fp;
            #ctors
            #run
            #batch
            #one
            #backward
            #visit
            #fix
            /// Saves the weights as safetensors (written to a temporary file, then renamed).
            pub fn save(&self, path: impl AsRef<::std::path::Path>) -> ::core::result::Result<(), __rt::IoError> {
                __rt::io::save(self, path.as_ref())
            }
            /// Loads weights saved by this architecture; refuses any other.
            pub fn load(path: impl AsRef<::std::path::Path>) -> ::core::result::Result<Self, __rt::IoError> {
                let mut __m = Self::new(0);
                __rt::io::load_into(&mut __m, path.as_ref())?;
                ::core::result::Result::Ok(__m)
            }
            fn __check_width(ncols: usize) {
                assert!(ncols == #d, "{}: expected a batch with {} columns, got {}", #flow_name, #d, ncols);
            }
        }
        const _: fn() -> #t = || <#t as __rt::Real>::of(0.0);
    }
}

/// One scratch buffer per coupling layer (so no layer reallocates another's buffers), the
/// backward pass's tapes and stored inputs, its gradient accumulator, the two halves'
/// gradients of a split training step, and the per-sample path's row buffers. One per thread
/// and flow type, reused across calls: once warm, a call of the same batch size allocates
/// nothing per layer.
fn gen_scratch(cx: &Ctx) -> TokenStream {
    let t = &cx.t;
    let name = format_ident!("{}", cx.flow.name);
    let fields = param_layers(cx.flow).filter_map(|(i, l)| {
        let ty = l.gen_scratch_type(cx)?;
        let f = field(i);
        Some(quote!(#f: #ty,))
    });
    let tapes = super::backward::gen_tapes(cx);
    quote! {
        #[derive(Default)]
        struct __Scratch {
            #(#fields)*
            __tapes: __Tapes,
            __inputs: __rt::ndarray::Array3<#t>,
            __row: __rt::nn::RowScratch<#t>,
            __grad: ::core::option::Option<#name>,
            __halves: [::core::option::Option<#name>; 2],
        }
        #tapes
        ::std::thread_local! {
            static __SCRATCH: ::core::cell::RefCell<__Scratch> = ::core::cell::RefCell::new(__Scratch::default());
        }
        /// Runs `f` with this thread's scratch (a fresh one if it is already in use).
        fn __with_scratch<R>(f: impl FnOnce(&mut __Scratch) -> R) -> R {
            __SCRATCH.with(|__c| match __c.try_borrow_mut() {
                ::core::result::Result::Ok(mut __s) => f(&mut __s),
                ::core::result::Result::Err(_) => f(&mut __Scratch::default()),
            })
        }
    }
}

fn gen_ctors(cx: &Ctx) -> TokenStream {
    let init = param_layers(cx.flow).map(|(i, l)| {
        let (f, v) = (field(i), l.gen_init(cx, i, false));
        quote!(#f: #v,)
    });
    let zeros = param_layers(cx.flow).map(|(i, l)| {
        let (f, v) = (field(i), l.gen_init(cx, i, true));
        quote!(#f: #v,)
    });
    let base = super::base::gen_base(cx);
    let (binit, bzeros) = match &base.field {
        Some((_, i, z)) => (quote!(base: #i,), quote!(base: #z,)),
        None => (quote!(), quote!()),
    };
    quote! {
        /// A new flow with seeded random conditioner weights. The last layer of every
        /// conditioner is zero and elementwise, actnorm and diagonal layers start as the
        /// identity; `lu` and `orthogonal` layers start as rotations drawn from the spec's seed.
        pub fn new(seed: u64) -> Self {
            #[allow(unused_mut, unused_variables)]
            let mut __rng = __rt::rng_from_seed(seed);
            let mut __m = Self { #(#init)* #binit };
            __m.__fix();
            __m
        }
        /// All parameters zero (the gradient accumulator).
        fn __zeros() -> Self {
            Self { #(#zeros)* #bzeros }
        }
    }
}

/// The layer sequences of both directions, over a batch in physical column order.
fn gen_run(cx: &Ctx) -> TokenStream {
    let t = &cx.t;
    let layers = &cx.flow.layers;
    let inv = layers.iter().enumerate().map(|(i, l)| l.gen_inverse(cx, i));
    let fwd = layers.iter().enumerate().rev().map(|(i, l)| l.gen_forward(cx, i));
    let init = layers.iter().enumerate().map(|(i, l)| {
        let pre = l.gen_data_init(cx, i);
        let step = l.gen_inverse(cx, i);
        quote!(#pre #step)
    });
    let (h, ld) =
        (quote!(__rt::ndarray::ArrayViewMut2<#t>), quote!(__rt::ndarray::ArrayViewMut1<#t>));
    quote! {
        #[allow(unused_variables, unused_mut)]
        fn __run_inverse(&self, mut __h: #h, mut __ld: #ld, __s: &mut __Scratch) {
            #(#inv)*
        }
        #[allow(unused_variables, unused_mut)]
        fn __run_forward(&self, mut __h: #h, mut __ld: #ld, __s: &mut __Scratch) {
            #(#fwd)*
        }
        /// Data-dependent initialisation: each actnorm layer is set so that its output on `x`
        /// has zero mean and unit variance per dimension.
        #[allow(unused_variables, unused_mut)]
        pub fn data_init(&mut self, x: __rt::ndarray::ArrayView2<#t>) {
            Self::__check_width(x.ncols());
            let mut __h = x.to_owned();
            let mut __ld = __rt::ndarray::Array1::<#t>::zeros(x.nrows());
            __with_scratch(|__s| {
                let (__h, __ld) = (&mut __h, &mut __ld);
                #(#init)*
            });
        }
    }
}

/// `z[:, i] = h[:, Z_COLS[i]]`, or nothing when the columns are in order.
fn gather(cx: &Ctx) -> TokenStream {
    if is_identity(&cx.flow.z_cols) {
        return quote!(let __z = __h;);
    }
    quote! {
        let mut __z = __rt::ndarray::Array2::zeros(__h.raw_dim());
        for (__i, &__c) in __Z_COLS.iter().enumerate() {
            __z.column_mut(__i).assign(&__h.column(__c));
        }
    }
}

fn scatter(cx: &Ctx) -> TokenStream {
    if is_identity(&cx.flow.z_cols) {
        return quote!(let mut __h = z.to_owned(););
    }
    quote! {
        let mut __h = __rt::ndarray::Array2::zeros(z.raw_dim());
        for (__i, &__c) in __Z_COLS.iter().enumerate() {
            __h.column_mut(__c).assign(&z.column(__i));
        }
    }
}

pub(super) fn is_identity(cols: &[usize]) -> bool {
    cols.iter().enumerate().all(|(i, &c)| i == c)
}

fn gen_batch(cx: &Ctx) -> TokenStream {
    let t = &cx.t;
    let gather = gather(cx);
    let scatter = scatter(cx);
    let base = super::base::gen_base(cx);
    let (lp, sample) = (&base.log_prob, &base.sample);
    let d = lit(cx.flow.dim);
    quote! {
        /// The normalizing direction: data `x` (n x D) to base `z`, with log|det dz/dx| per row.
        pub fn inverse(&self, x: __rt::ndarray::ArrayView2<#t>) -> (__rt::ndarray::Array2<#t>, __rt::ndarray::Array1<#t>) {
            Self::__check_width(x.ncols());
            let mut __h = x.to_owned();
            let mut __ld = __rt::ndarray::Array1::<#t>::zeros(x.nrows());
            // Rows are independent: large batches run on two threads, in row tiles.
            __rt::par::map_rows(__h.view_mut(), __ld.view_mut(), || (), |_, __h, __ld| {
                __with_scratch(|__s| self.__run_inverse(__h, __ld, __s))
            });
            #gather
            (__z, __ld)
        }
        /// The generative direction: base `z` (n x D) to data `x`, with log|det dx/dz| per row.
        pub fn forward(&self, z: __rt::ndarray::ArrayView2<#t>) -> (__rt::ndarray::Array2<#t>, __rt::ndarray::Array1<#t>) {
            Self::__check_width(z.ncols());
            #scatter
            let mut __ld = __rt::ndarray::Array1::<#t>::zeros(z.nrows());
            __rt::par::map_rows(__h.view_mut(), __ld.view_mut(), || (), |_, __h, __ld| {
                __with_scratch(|__s| self.__run_forward(__h, __ld, __s))
            });
            (__h, __ld)
        }
        /// The base distribution's log-density of each row of `z`.
        pub fn base_log_prob(&self, z: __rt::ndarray::ArrayView2<#t>) -> __rt::ndarray::Array1<#t> {
            #lp
        }
        /// log p(x) for each row of `x`.
        pub fn log_prob(&self, x: __rt::ndarray::ArrayView2<#t>) -> __rt::ndarray::Array1<#t> {
            let (__z, __ld) = self.inverse(x);
            self.base_log_prob(__z.view()) + &__ld
        }
        /// `n` draws from the base distribution.
        pub fn sample_base(&self, n: usize, rng: &mut dyn __rt::rand::Rng) -> __rt::ndarray::Array2<#t> {
            let _ = #d;
            #sample
        }
        /// `n` samples from the flow.
        pub fn sample(&self, n: usize, rng: &mut dyn __rt::rand::Rng) -> __rt::ndarray::Array2<#t> {
            self.forward(self.sample_base(n, rng).view()).0
        }
        /// `n` samples and their log-densities from one generative pass.
        pub fn sample_and_log_prob(&self, n: usize, rng: &mut dyn __rt::rand::Rng) -> (__rt::ndarray::Array2<#t>, __rt::ndarray::Array1<#t>) {
            let __z = self.sample_base(n, rng);
            let __lpz = self.base_log_prob(__z.view());
            let (__x, __ld) = self.forward(__z.view());
            (__x, __lpz - &__ld)
        }
    }
}

fn prefix(i: usize, l: &ir::Layer) -> String {
    match l.kind {
        LayerKind::AffineCoupling { .. }
        | LayerKind::AdditiveCoupling { .. }
        | LayerKind::TransformerCoupling { .. }
        | LayerKind::Autoregressive { .. } => format!("layer{i}.net"),
        _ => format!("layer{i}"),
    }
}

fn gen_visit(cx: &Ctx) -> TokenStream {
    let t = &cx.t;
    let (vis, vis_mut): (Vec<_>, Vec<_>) = param_layers(cx.flow)
        .map(|(i, l)| {
            let (f, p) = (field(i), prefix(i, l));
            (
                super::fixed::visit(quote!(self.#f), &p, l.fixed(), false),
                super::fixed::visit(quote!(self.#f), &p, l.fixed(), true),
            )
        })
        .unzip();
    let has_base = super::base::gen_base(cx).field.is_some();
    let (bv, bvm) = if has_base {
        let fixed = cx.flow.base.fixed();
        (
            super::fixed::visit(quote!(self.base), "base", fixed, false),
            super::fixed::visit(quote!(self.base), "base", fixed, true),
        )
    } else {
        (quote!(), quote!())
    };
    quote! {
        /// Visits every parameter tensor (name, shape, values) in the canonical order.
        pub fn visit_params(&self, f: &mut dyn FnMut(::std::string::String, &[usize], &[#t])) {
            #(#vis)*
            #bv
        }
        /// Visits every parameter tensor mutably, in the canonical order.
        pub fn visit_params_mut(&mut self, f: &mut dyn FnMut(::std::string::String, &[usize], &mut [#t])) {
            #(#vis_mut)*
            #bvm
        }
    }
}

pub fn gen_flow_impl(cx: &Ctx) -> TokenStream {
    let name = format_ident!("{}", cx.flow.name);
    let deq = cx.flow.dequantize;
    let t = &cx.t;
    let a2 = quote!(__rt::ndarray::Array2<#t>);
    let a1 = quote!(__rt::ndarray::Array1<#t>);
    let v2 = quote!(__rt::ndarray::ArrayView2<#t>);
    quote! {
        #[automatically_derived]
        impl __rt::Flow for #name {
            type Real = #t;
            fn name(&self) -> &str { Self::NAME }
            fn dim(&self) -> usize { Self::DIM }
            fn fingerprint(&self) -> u64 { Self::FINGERPRINT }
            fn visit_params(&self, f: &mut dyn FnMut(::std::string::String, &[usize], &[#t])) { #name::visit_params(self, f) }
            fn visit_params_mut(&mut self, f: &mut dyn FnMut(::std::string::String, &[usize], &mut [#t])) { #name::visit_params_mut(self, f) }
            fn inverse(&self, x: #v2) -> (#a2, #a1) { #name::inverse(self, x) }
            fn forward(&self, z: #v2) -> (#a2, #a1) { #name::forward(self, z) }
            fn base_log_prob(&self, z: #v2) -> #a1 { #name::base_log_prob(self, z) }
            fn sample_base(&self, n: usize, rng: &mut dyn __rt::rand::Rng) -> #a2 { #name::sample_base(self, n, rng) }
            fn nll_and_grad(&self, x: #v2) -> (#t, ::std::vec::Vec<#t>) { #name::nll_and_grad(self, x) }
            fn forward_vjp(&self, z: #v2, gx: #v2, gld: __rt::ndarray::ArrayView1<#t>) -> (::std::vec::Vec<#t>, #a2) { #name::forward_vjp(self, z, gx, gld) }
            fn log_prob_grad_x(&self, x: #v2) -> (#a1, #a2) { #name::log_prob_grad_x(self, x) }
            fn data_init(&mut self, x: #v2) { #name::data_init(self, x) }
            fn dequantize(&self) -> bool { #deq }
        }
    }
}
