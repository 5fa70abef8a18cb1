//! The per-sample API: `log_prob_one`, `inverse_one`, `forward_one`, `sample_one` over
//! `[T; D]`, so a wrong width is a type error in the user's crate.
//!
//! A batch of one row would pay for ndarray allocations and views in every layer; instead
//! the point stays in a `[T; D]` on the stack and each layer is one call (see
//! `LayerGen::gen_row`). The shape of what is generated:
//! ```text
//! fn __inverse_row(&self, __x: &mut [f64; 2], __s: &mut __Scratch) -> f64 {
//!     let mut __ld: f64 = 0.0;
//!     __rt::layers::affine_coupling_row(&self.layer0, &__L0_COND, &__L0_TRANS, 6.9 as f64,
//!         __rt::layers::RowDir::Inverse, &mut __x[..], &mut __ld, &mut __s.__row);
//!     ...
//!     __ld
//! }
//! pub fn log_prob_one(&self, x: &[f64; 2]) -> f64 {
//!     let (__z, __ld) = self.inverse_one(x);
//!     __rt::base::std_normal_log_prob_row(&__z[..]) + __ld
//! }
//! ```

use super::{lit, Ctx, LayerGen};
use crate::ir::Base;
use proc_macro2::TokenStream;
use quote::quote;

pub fn gen_per_sample(cx: &Ctx) -> TokenStream {
    let (t, d) = (&cx.t, lit(cx.flow.dim));
    let layers = &cx.flow.layers;
    let inv = layers.iter().enumerate().map(|(i, l)| l.gen_row(cx, i, "inverse"));
    let fwd = layers.iter().enumerate().rev().map(|(i, l)| l.gen_row(cx, i, "forward"));
    let (gather, scatter) = (gather_one(cx), scatter_one(cx));
    let base = base_log_prob_one(cx);
    quote! {
        /// One point through the normalizing direction, in place on physical columns;
        /// returns log|det dz/dx|.
        #[allow(unused_variables, unused_mut)]
        fn __inverse_row(&self, __x: &mut [#t; #d], __s: &mut __Scratch) -> #t {
            let mut __ld: #t = 0.0;
            #(#inv)*
            __ld
        }
        /// One point through the generative direction; returns log|det dx/dz|.
        #[allow(unused_variables, unused_mut)]
        fn __forward_row(&self, __x: &mut [#t; #d], __s: &mut __Scratch) -> #t {
            let mut __ld: #t = 0.0;
            #(#fwd)*
            __ld
        }
        /// log p(x) of one point.
        pub fn log_prob_one(&self, x: &[#t; #d]) -> #t {
            let (__z, __ld) = self.inverse_one(x);
            #base + __ld
        }
        /// One point to the base, with log|det dz/dx|.
        pub fn inverse_one(&self, x: &[#t; #d]) -> ([#t; #d], #t) {
            let mut __x = *x;
            let __ld = __with_scratch(|__s| self.__inverse_row(&mut __x, __s));
            #gather
            (__z, __ld)
        }
        /// One base point to data space, with log|det dx/dz|.
        pub fn forward_one(&self, z: &[#t; #d]) -> ([#t; #d], #t) {
            #scatter
            let __ld = __with_scratch(|__s| self.__forward_row(&mut __x, __s));
            (__x, __ld)
        }
        /// One sample: the base draw of a batch of one (the same random stream as `sample`),
        /// then the per-sample generative pass.
        pub fn sample_one(&self, rng: &mut dyn __rt::rand::Rng) -> [#t; #d] {
            let __b = self.sample_base(1, rng);
            let mut __z = [0.0; #d];
            for (__o, __v) in __z.iter_mut().zip(__b.iter()) { *__o = *__v; }
            self.forward_one(&__z).0
        }
    }
}

/// `__z[i] = __x[__Z_COLS[i]]`, or a copy when the columns are in order.
fn gather_one(cx: &Ctx) -> TokenStream {
    if super::api::is_identity(&cx.flow.z_cols) {
        return quote!(let __z = __x;);
    }
    quote! {
        let mut __z = __x;
        for (__i, &__c) in __Z_COLS.iter().enumerate() { __z[__i] = __x[__c]; }
    }
}

/// `__x[__Z_COLS[i]] = z[i]`, or a copy when the columns are in order.
fn scatter_one(cx: &Ctx) -> TokenStream {
    if super::api::is_identity(&cx.flow.z_cols) {
        return quote!(let mut __x = *z;);
    }
    quote! {
        let mut __x = *z;
        for (__i, &__c) in __Z_COLS.iter().enumerate() { __x[__c] = z[__i]; }
    }
}

/// The base log-density of the logical point `__z`: a row function for the standard normal;
/// other bases run their batch function on a one-row view (it allocates the one-element
/// result).
fn base_log_prob_one(cx: &Ctx) -> TokenStream {
    let d = lit(cx.flow.dim);
    match cx.flow.base {
        Base::StdNormal => quote!(__rt::base::std_normal_log_prob_row(&__z[..])),
        _ => quote! {
            self.base_log_prob(__rt::ndarray::ArrayView2::from_shape((1, #d), &__z[..]).expect("one row of DIM values"))[0]
        },
    }
}
