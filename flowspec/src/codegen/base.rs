//! Code generation for the base distribution: its parameter field (learnable bases), its
//! log-density over logical z (`z[:, i]`) and over the physical batch (`__hb[:, __Z_COLS[i]]`,
//! used by the backward pass so z never needs gathering), its gradient, and sampling.

use super::{lit, Ctx};
use crate::ir::Base;
use proc_macro2::TokenStream;
use quote::quote;

pub struct BaseGen {
    /// (field type, initial value, gradient accumulator) for learnable bases.
    pub field: Option<(TokenStream, TokenStream, TokenStream)>,
    /// log p of the logical batch `z`.
    pub log_prob: TokenStream,
    /// log p of the physical batch `__hb`.
    pub log_prob_phys: TokenStream,
    /// Writes `__inv_n * d(-log p)/d__hb` into `__g` (and parameter gradients into `__grad.base`).
    pub nll_grad_phys: TokenStream,
    /// `n` draws in logical order.
    pub sample: TokenStream,
}

pub fn gen_base(cx: &Ctx) -> BaseGen {
    let (t, d) = (&cx.t, lit(cx.flow.dim));
    let b = quote!(__rt::base);
    let rt = quote!(::flowspec_runtime::__private::base);
    let phys = quote!(&__Z_COLS, __hb.view());
    let grad = quote!(&__Z_COLS, __hb.view(), __inv_n, __g.view_mut());
    match cx.flow.base {
        // iid over dimensions: the order of columns does not matter.
        Base::StdNormal => BaseGen {
            field: None,
            log_prob: quote!(#b::std_normal_log_prob(z)),
            log_prob_phys: quote!(#b::std_normal_log_prob(__hb.view())),
            nll_grad_phys: quote!(#b::std_normal_nll_grad(__hb.view(), __inv_n, __g.view_mut());),
            sample: quote!(#b::std_normal_sample(n, #d, rng)),
        },
        Base::Logistic => BaseGen {
            field: None,
            log_prob: quote!(#b::logistic_log_prob(&__LOGICAL, z)),
            log_prob_phys: quote!(#b::logistic_log_prob(#phys)),
            nll_grad_phys: quote!(#b::logistic_nll_grad(#grad);),
            sample: quote!(#b::logistic_sample(n, #d, rng)),
        },
        Base::Uniform { a, b: hi } => BaseGen {
            field: None,
            log_prob: quote!(#b::uniform_log_prob(#a, #hi, &__LOGICAL, z)),
            log_prob_phys: quote!(#b::uniform_log_prob(#a, #hi, #phys)),
            nll_grad_phys: quote!(#b::uniform_nll_grad(#a, #hi, #grad);),
            sample: quote!(#b::uniform_sample(#a, #hi, n, #d, rng)),
        },
        Base::DiagNormal { .. } => BaseGen {
            field: Some((
                quote!(#rt::DiagNormal<#t>),
                quote!(#b::DiagNormal::zeros(#d)),
                quote!(#b::DiagNormal::zeros(#d)),
            )),
            log_prob: quote!(#b::diag_normal_log_prob(&self.base, &__LOGICAL, z)),
            log_prob_phys: quote!(#b::diag_normal_log_prob(&self.base, #phys)),
            nll_grad_phys: quote!(#b::diag_normal_nll_grad(&self.base, #grad, &mut __grad.base);),
            sample: quote!(#b::diag_normal_sample(&self.base, n, rng)),
        },
        Base::Mixture { k, .. } => {
            let k = lit(k);
            BaseGen {
                field: Some((
                    quote!(#rt::Mixture<#t>),
                    quote!(#b::Mixture::new(#k, #d, &mut __rng)),
                    quote!(#b::Mixture::zeros(#k, #d)),
                )),
                log_prob: quote!(#b::mixture_log_prob(&self.base, &__LOGICAL, z)),
                log_prob_phys: quote!(#b::mixture_log_prob(&self.base, #phys)),
                nll_grad_phys: quote!(#b::mixture_nll_grad(&self.base, #grad, &mut __grad.base);),
                sample: quote!(#b::mixture_sample(&self.base, n, rng)),
            }
        }
    }
}
