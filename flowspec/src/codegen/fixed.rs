//! Parameters the spec fixes on layers and bases whose tensors are otherwise learned
//! (`actnorm(log_scale = 0)`, `triangular(lower = [[..]])`, `base diag_normal(loc = 1)`): their
//! values are written once by `__fix` (after construction, and after actnorm's data
//! initialisation), and the parameter visitors skip them, so they are never trained, saved or
//! loaded:
//!
//! ```text
//! __rt::Params::visit(&self.layer3, "layer3", &mut |__n, __s, __d| {
//!     if !matches!(__n.as_str(), "layer3.loc") { f(__n, __s, __d) }
//! });
//! ```

use super::{field, Ctx};
use crate::ir::FixedTensor;
use proc_macro2::TokenStream;
use quote::quote;

/// `fn __fix(&mut self)`: writes every fixed tensor.
pub fn gen_fix(cx: &Ctx) -> TokenStream {
    let t = &cx.t;
    let layers =
        cx.flow.layers.iter().enumerate().filter(|(_, l)| !l.fixed().is_empty()).map(|(i, l)| {
            let f = field(i);
            write_fixed(quote!(self.#f), l.fixed(), t)
        });
    let base = cx.flow.base.fixed();
    let base = (!base.is_empty()).then(|| write_fixed(quote!(self.base), base, t));
    quote! {
        /// Writes the tensors the spec fixes.
        fn __fix(&mut self) {
            #(#layers)*
            #base
        }
    }
}

fn write_fixed(target: TokenStream, fixed: &[FixedTensor], t: &TokenStream) -> TokenStream {
    let arms = fixed.iter().map(|ft| {
        let (name, v) = (ft.name, &ft.values);
        quote!(#name => __d.copy_from_slice(&[#(#v as #t),*]),)
    });
    quote! {
        __rt::Params::visit_mut(&mut #target, "", &mut |__n, _, __d| match __n.as_str() {
            #(#arms)*
            _ => {}
        });
    }
}

/// A visit of `target`'s tensors under `prefix` that skips the fixed ones.
pub fn visit(
    target: TokenStream,
    prefix: &str,
    fixed: &[FixedTensor],
    mutable: bool,
) -> TokenStream {
    let (func, r) =
        if mutable { (quote!(visit_mut), quote!(&mut)) } else { (quote!(visit), quote!(&)) };
    if fixed.is_empty() {
        return quote!(__rt::Params::#func(#r #target, #prefix, f););
    }
    let names = fixed.iter().map(|ft| format!("{prefix}.{}", ft.name));
    quote! {
        __rt::Params::#func(#r #target, #prefix, &mut |__n, __s, __d| {
            if !matches!(__n.as_str(), #(#names)|*) {
                f(__n, __s, __d)
            }
        });
    }
}
