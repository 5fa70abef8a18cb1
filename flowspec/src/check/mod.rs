//! Syntax tree to IR: names, declarations, `repeat` expansion, shape inference and the rules
//! of every layer. All errors are collected and returned together, each with a span.

mod args;
pub mod autoregressive;
pub mod layers;
pub mod library;

use crate::ast::{self, Item, Stmt};
use crate::diag::{Diagnostic, Diagnostics};
use crate::ir;
use crate::span::Span;
use std::collections::HashMap;

/// The most layers a flow may expand to; `repeat 1000000000 { ... }` is an error, not a hang.
pub const MAX_LAYERS: usize = 10_000;
/// The largest event size accepted (D); bigger is almost surely a typo.
pub const MAX_DIM: usize = 1 << 24;
/// The most scalar parameters a flow may have (32 GiB of f64); past it, counts could overflow.
pub const MAX_PARAMS: usize = 1 << 32;

/// Checks a parsed file. On success every flow is fully resolved.
pub fn check(file: &ast::File) -> Result<ir::Program, Vec<Diagnostic>> {
    let mut errs = Diagnostics::default();
    check_unique_names(&mut errs, file);
    let flows: Vec<Option<ir::Flow>> =
        file.flows.iter().map(|f| check_flow(&mut errs, f)).collect();
    if errs.is_empty() {
        Ok(ir::Program { flows: flows.into_iter().flatten().collect() })
    } else {
        Err(errs.into_vec())
    }
}

/// Two flows with one name would generate two structs with one name.
fn check_unique_names(errs: &mut Diagnostics, file: &ast::File) {
    let mut seen: HashMap<&str, Span> = HashMap::new();
    for f in &file.flows {
        check_flow_name(errs, &f.name);
        if seen.insert(&f.name.name, f.name.span).is_some() {
            errs.error(
                f.name.span,
                format!("a flow named `{}` is already defined in this file", f.name.name),
            );
        }
    }
}

/// Rust's keywords (strict and reserved, edition 2018 on) and `_`: none can name a struct.
const RUST_KEYWORDS: &[&str] = &[
    "_", "abstract", "as", "async", "await", "become", "box", "break", "const", "continue",
    "crate", "do", "dyn", "else", "enum", "extern", "false", "final", "fn", "for", "gen", "if",
    "impl", "in", "let", "loop", "macro", "match", "mod", "move", "mut", "override", "priv", "pub",
    "ref", "return", "self", "Self", "static", "struct", "super", "trait", "true", "try", "type",
    "typeof", "unsafe", "unsized", "use", "virtual", "where", "while", "yield",
];
/// Rust's primitive types: a struct of that name would shadow the type in the generated code.
const RUST_PRIMITIVES: &[&str] = &[
    "bool", "char", "str", "i8", "i16", "i32", "i64", "i128", "isize", "u8", "u16", "u32", "u64",
    "u128", "usize", "f16", "f32", "f64", "f128",
];

/// A flow's name becomes the name of the generated struct, so it must be one.
fn check_flow_name(errs: &mut Diagnostics, name: &ast::Ident) {
    let n = name.name.as_str();
    let why = if RUST_KEYWORDS.contains(&n) {
        format!("`{n}` is a Rust keyword")
    } else if RUST_PRIMITIVES.contains(&n) {
        format!("`{n}` is a Rust primitive type")
    } else if n.starts_with("__") {
        "names starting with `__` are reserved for the generated code".to_string()
    } else {
        return;
    };
    errs.push(Diagnostic::new(name.span, format!("`{n}` cannot name a flow: {why}")).with_help(
        "a flow's name is the name of the Rust struct generated for it, e.g. `flow Moons { ... }`",
    ));
}

/// The declarations of a flow, each at most once.
#[derive(Default)]
struct Decls<'a> {
    event: Option<(Vec<usize>, Span)>,
    dtype: Option<ir::Dtype>,
    /// Checked once the event size is known (fixed base tensors are sized by it).
    base: Option<&'a ast::Value>,
    layers: Vec<&'a ast::Layer>,
    seen: HashMap<&'static str, Span>,
}

fn check_flow(errs: &mut Diagnostics, f: &ast::FlowDef) -> Option<ir::Flow> {
    let mut d = Decls::default();
    for item in &f.items {
        collect_item(errs, &mut d, item);
    }
    let Some((event, _)) = d.event.clone() else {
        if d.seen.contains_key("event") {
            return None; // declared, but invalid: check_event has said why
        }
        errs.push(
            Diagnostic::new(f.name.span, format!("flow `{}` has no event shape", f.name.name))
                .with_help("declare the shape of one data point, e.g. `event [2];`"),
        );
        return None;
    };
    let dim = event.iter().product();
    let mut cols: Vec<usize> = (0..dim).collect();
    let before = errs.len();
    let layers: Vec<ir::Layer> = d
        .layers
        .iter()
        .enumerate()
        .filter_map(|(i, l)| layers::check_layer(errs, l, dim, &mut cols, i == 0))
        .collect();
    let base = d.base.map_or(Some(ir::Base::StdNormal), |v| library::check_base(errs, v, dim));
    if errs.len() != before {
        return None;
    }
    let flow = ir::Flow {
        name: f.name.name.clone(),
        docs: f.docs.clone(),
        event,
        dim,
        dtype: d.dtype.unwrap_or(ir::Dtype::F64),
        base: base?,
        dequantize: layers.first().is_some_and(|l: &ir::Layer| l.label == "dequantize"),
        layers,
        z_cols: cols,
        span: f.span,
    };
    if flow.num_params() > MAX_PARAMS {
        errs.push(
            Diagnostic::new(
                f.name.span,
                format!("flow `{}` has more than {MAX_PARAMS} parameters", f.name.name),
            )
            .with_help("check the hidden sizes of its conditioners"),
        );
        return None;
    }
    Some(flow)
}

fn collect_item<'a>(errs: &mut Diagnostics, d: &mut Decls<'a>, item: &'a Item) {
    match item {
        Item::Event { dims, span } => {
            if once(errs, d, "event", *span) {
                d.event = check_event(errs, dims, *span).map(|e| (e, *span));
            }
        }
        Item::Dtype(id) => {
            if once(errs, d, "dtype", id.span) {
                d.dtype = check_dtype(errs, id);
            }
        }
        Item::Base(v) => {
            if once(errs, d, "base", v.span) {
                d.base = Some(v);
            }
        }
        Item::Repeat(r) => expand_repeat(errs, &mut d.layers, r, 1),
        Item::Layer(l) => push_layer(errs, &mut d.layers, l),
    }
}

/// Records that a declaration was seen; a second one is an error.
fn once(errs: &mut Diagnostics, d: &mut Decls, what: &'static str, span: Span) -> bool {
    if d.seen.insert(what, span).is_some() {
        errs.error(span, format!("`{what}` is declared twice in this flow"));
        return false;
    }
    true
}

fn check_event(errs: &mut Diagnostics, dims: &[(i64, Span)], span: Span) -> Option<Vec<usize>> {
    if dims.is_empty() {
        errs.error(
            span,
            "the event shape is empty; give at least one dimension, e.g. `event [2];`",
        );
        return None;
    }
    let mut out = Vec::new();
    // u128 and checked: a few dimensions of up to MAX_DIM each can overflow usize.
    let mut total: Option<u128> = Some(1);
    for &(n, s) in dims {
        if n < 1 {
            errs.error(s, "every event dimension must be a positive integer");
            return None;
        }
        if n as u64 > MAX_DIM as u64 {
            errs.error(
                s,
                format!("this event dimension is too large; at most {MAX_DIM} are supported"),
            );
            return None;
        }
        total = total.and_then(|t| t.checked_mul(n as u128));
        out.push(n as usize);
    }
    match total {
        Some(t) if t <= MAX_DIM as u128 => Some(out),
        Some(t) => {
            errs.error(
                span,
                format!("the event has {t} dimensions; at most {MAX_DIM} are supported"),
            );
            None
        }
        None => {
            errs.error(
                span,
                format!("the event has far more than the {MAX_DIM} dimensions supported"),
            );
            None
        }
    }
}

fn check_dtype(errs: &mut Diagnostics, id: &ast::Ident) -> Option<ir::Dtype> {
    match id.name.as_str() {
        "f32" => Some(ir::Dtype::F32),
        "f64" => Some(ir::Dtype::F64),
        other => {
            errs.error(id.span, format!("unknown dtype `{other}`; known dtypes: f32, f64"));
            None
        }
    }
}

fn expand_repeat<'a>(
    errs: &mut Diagnostics,
    out: &mut Vec<&'a ast::Layer>,
    r: &'a ast::Repeat,
    depth: usize,
) {
    let (n, span) = r.count;
    if n < 1 {
        errs.error(span, "a repeat count must be a positive integer");
        return;
    }
    if depth > 16 {
        errs.error(r.span, "repeat blocks are nested more than 16 deep");
        return;
    }
    for _ in 0..n {
        let before = out.len();
        for s in &r.body {
            match s {
                Stmt::Layer(l) => push_layer(errs, out, l),
                Stmt::Repeat(inner) => expand_repeat(errs, out, inner, depth + 1),
            }
            if out.len() > MAX_LAYERS {
                return; // push_layer has reported it
            }
        }
        if out.len() == before {
            // The body expands to no layers (it is empty, or its errors are reported):
            // repeating it changes nothing, and `repeat 999999999999 {}` must not hang.
            return;
        }
    }
}

fn push_layer<'a>(errs: &mut Diagnostics, out: &mut Vec<&'a ast::Layer>, l: &'a ast::Layer) {
    if out.len() < MAX_LAYERS {
        out.push(l);
    } else if out.len() == MAX_LAYERS {
        errs.push(
            Diagnostic::new(l.span, format!("the flow has more than {MAX_LAYERS} layers"))
                .with_help("this is the first layer past the limit; a `repeat` block counts as its body times its count"),
        );
        out.push(l);
    }
}
