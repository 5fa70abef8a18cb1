//! The entry points of `flow!`, kept in the library so they can be tested without a proc-macro
//! context. Two forms:
//!
//! - `flow! { flow Moons { ... } }`: the tokens are flattened back to text (recording which
//!   byte range each token came from), run through the same grammar, and every error is put
//!   on the tokens it covers.
//! - `flow!(file = "specs/moons.flow")`: the path is relative to the crate's `Cargo.toml`;
//!   errors go on the path literal, with `specs/moons.flow:12:5`, the source line and a caret
//!   in the message. An `include_str!` of the file makes cargo rebuild when it changes.

use crate::diag::{render, Diagnostic};
use crate::{codegen, compile};
use proc_macro2::{Delimiter, Ident, Span, TokenStream, TokenTree};
use quote::{quote, quote_spanned};
use std::path::{Path, PathBuf};

/// Expands the input of `flow!` (either form).
pub fn expand_flow_macro(input: TokenStream) -> TokenStream {
    match file_arg(&input) {
        Some(Ok(lit)) => expand_file(&lit, &manifest_dir()),
        Some(Err(e)) => e.to_compile_error(),
        None => expand_inline(input),
    }
}

fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from).unwrap_or_default()
}

/// `file = "..."`: Some(path literal); None for an inline spec.
fn file_arg(input: &TokenStream) -> Option<syn::Result<syn::LitStr>> {
    let mut it = input.clone().into_iter();
    match (it.next(), it.next()) {
        (Some(TokenTree::Ident(i)), Some(TokenTree::Punct(p)))
            if i == "file" && p.as_char() == '=' =>
        {
            let rest: TokenStream = it.collect();
            Some(syn::parse2::<syn::LitStr>(rest.clone()).map_err(|_| {
                syn::Error::new_spanned(
                    rest,
                    "expected a string literal: `flow!(file = \"specs/my.flow\")`",
                )
            }))
        }
        _ => None,
    }
}

/// Expands a spec file named relative to `root` (the user crate's manifest directory).
pub fn expand_file(lit: &syn::LitStr, root: &Path) -> TokenStream {
    let rel = lit.value();
    if Path::new(&rel).is_absolute() {
        return error_at(lit.span(), &format!("the spec path `{rel}` is absolute; give it relative to the crate root (the directory of Cargo.toml) so the crate builds on other machines"));
    }
    let path = root.join(&rel);
    let src = match std::fs::read_to_string(&path) {
        Ok(s) => s,
        Err(e) => {
            return error_at(
                lit.span(),
                &format!("cannot read spec file `{rel}` (looked for {}): {e}", path.display()),
            );
        }
    };
    let tracked = path.to_string_lossy().into_owned();
    let body = match compile(&src) {
        Ok(p) => codegen::expand_program(&p),
        Err(ds) => ds
            .iter()
            .map(|d| {
                // rustc prints its own `error: ` before the message.
                let text = render(d, &rel, &src);
                error_at(lit.span(), text.strip_prefix("error: ").unwrap_or(&text).trim_end())
            })
            .collect(),
    };
    quote! {
        const _: &str = include_str!(#tracked);
        #body
    }
}

/// Expands an inline spec.
pub fn expand_inline(input: TokenStream) -> TokenStream {
    let flat = Flattened::from_tokens(input);
    match compile(&flat.text) {
        Ok(p) => codegen::expand_program(&p),
        Err(ds) => ds.iter().map(|d| flat.error(d)).collect(),
    }
}

fn error_at(span: Span, msg: &str) -> TokenStream {
    quote_spanned!(span => ::core::compile_error!{ #msg })
}

/// The input tokens as spec text, with the byte range and span of each token.
pub struct Flattened {
    pub text: String,
    pieces: Vec<(usize, usize, Span)>,
}

impl Flattened {
    pub fn from_tokens(input: TokenStream) -> Self {
        let mut f = Flattened { text: String::new(), pieces: Vec::new() };
        f.push_stream(input);
        f
    }

    fn push(&mut self, text: &str, span: Span) {
        let start = self.text.len();
        self.text.push_str(text);
        self.pieces.push((start, self.text.len(), span));
        self.text.push(' ');
    }

    fn push_stream(&mut self, input: TokenStream) {
        // An explicit stack of open groups, not recursion: the input's nesting is unbounded
        // (the grammar's limit is checked on the flattened text), and `[[[[...` tens of
        // thousands deep would overflow rustc's stack.
        type Level = (
            std::iter::Peekable<proc_macro2::token_stream::IntoIter>,
            Option<(&'static str, Span)>,
        );
        let mut stack: Vec<Level> = vec![(input.into_iter().peekable(), None)];
        while let Some((it, _)) = stack.last_mut() {
            let Some(tt) = it.next() else {
                if let Some((_, Some((close, span)))) = stack.pop() {
                    self.push(close, span);
                }
                continue;
            };
            match tt {
                TokenTree::Group(g) => {
                    let (open, close) = match g.delimiter() {
                        Delimiter::Parenthesis => ("(", ")"),
                        Delimiter::Brace => ("{", "}"),
                        Delimiter::Bracket => ("[", "]"),
                        Delimiter::None => ("", ""),
                    };
                    self.push(open, g.span_open());
                    stack.push((g.stream().into_iter().peekable(), Some((close, g.span_close()))));
                }
                TokenTree::Punct(p) if p.as_char() == '#' => {
                    // `/// text` arrives as `#[doc = " text"]`; turn it back into a doc comment.
                    match it.peek().and_then(doc_text) {
                        Some(doc) => {
                            it.next();
                            self.push(&format!("///{doc}\n"), p.span());
                        }
                        None => self.push("#", p.span()),
                    }
                }
                TokenTree::Punct(p) => {
                    self.push(&p.as_char().to_string(), p.span());
                    if p.as_char() == '-' {
                        self.text.pop(); // `- 1` is written `-1` in the grammar
                    }
                }
                TokenTree::Ident(i) => self.push(&i.to_string(), i.span()),
                TokenTree::Literal(l) => self.push(&l.to_string(), l.span()),
            }
        }
    }

    /// A compile error covering the tokens of the diagnostic's span.
    pub fn error(&self, d: &Diagnostic) -> TokenStream {
        let hit = |&&(s, e, _): &&(usize, usize, Span)| {
            e > d.span.start && s < d.span.end.max(d.span.start + 1)
        };
        let first = self.pieces.iter().find(hit).or(self.pieces.last());
        let last = self.pieces.iter().rev().find(hit).or(first);
        let (Some(&(_, _, a)), Some(&(_, _, b))) = (first, last) else {
            let msg = d.message_with_help();
            return quote!(::core::compile_error! { #msg });
        };
        let range: TokenStream = [Ident::new("__a", a), Ident::new("__b", b)]
            .into_iter()
            .map(TokenTree::Ident)
            .collect();
        syn::Error::new_spanned(range, d.message_with_help()).to_compile_error()
    }
}

/// The text of a `[doc = "..."]` group.
fn doc_text(tt: &TokenTree) -> Option<String> {
    let TokenTree::Group(g) = tt else { return None };
    if g.delimiter() != Delimiter::Bracket {
        return None;
    }
    let nv: syn::MetaNameValue = syn::parse2(g.stream()).ok()?;
    if !nv.path.is_ident("doc") {
        return None;
    }
    match nv.value {
        syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) => {
            Some(s.value().replace('\n', " "))
        }
        _ => None,
    }
}
