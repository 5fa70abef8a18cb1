//! Syntax tree to IR: names, declarations, `repeat` expansion, shape inference and the rules
//! of every layer. All errors are collected and returned together, each with a span.

mod args;
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

/// Checks a parsed file. On success every flow is fully resolved.
pub fn check(file: &ast::File) -> Result<ir::Program, Vec<Diagnostic>> {
    let mut errs = Diagnostics::default();
    check_unique_names(&mut errs, file);
    let flows: Vec<Option<ir::Flow>> = file.flows.iter().map(|f| check_flow(&mut errs, f)).collect();
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
        if seen.insert(&f.name.name, f.name.span).is_some() {
            errs.error(f.name.span, format!("a flow named `{}` is already defined in this file", f.name.name));
        }
    }
}

/// The declarations of a flow, each at most once.
#[derive(Default)]
struct Decls<'a> {
    event: Option<(Vec<usize>, Span)>,
    dtype: Option<ir::Dtype>,
    base: Option<ir::Base>,
    layers: Vec<&'a ast::Layer>,
    seen: HashMap<&'static str, Span>,
}

fn check_flow(errs: &mut Diagnostics, f: &ast::FlowDef) -> Option<ir::Flow> {
    let mut d = Decls::default();
    for item in &f.items {
        collect_item(errs, &mut d, item);
    }
    let Some((event, _)) = d.event.clone() else {
        errs.push(
            Diagnostic::new(f.name.span, format!("flow `{}` has no event shape", f.name.name))
                .with_help("declare the shape of one data point, e.g. `event [2];`"),
        );
        return None;
    };
    let dim = event.iter().product();
    let mut cols: Vec<usize> = (0..dim).collect();
    let before = errs.len();
    let layers: Vec<ir::Layer> =
        d.layers.iter().enumerate().filter_map(|(i, l)| layers::check_layer(errs, l, dim, &mut cols, i == 0)).collect();
    if errs.len() != before {
        return None;
    }
    Some(ir::Flow {
        name: f.name.name.clone(),
        docs: f.docs.clone(),
        event,
        dim,
        dtype: d.dtype.unwrap_or(ir::Dtype::F64),
        base: d.base.unwrap_or(ir::Base::StdNormal),
        dequantize: layers.first().is_some_and(|l: &ir::Layer| l.label == "dequantize"),
        layers,
        z_cols: cols,
        span: f.span,
    })
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
                d.base = library::check_base(errs, v);
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
        errs.error(span, "the event shape is empty; give at least one dimension, e.g. `event [2];`");
        return None;
    }
    let mut out = Vec::new();
    let mut total: usize = 1;
    for &(n, s) in dims {
        if n < 1 {
            errs.error(s, "every event dimension must be a positive integer");
            return None;
        }
        total = total.saturating_mul(n as usize);
        out.push(n as usize);
    }
    if total > MAX_DIM {
        errs.error(span, format!("the event has {total} dimensions; at most {MAX_DIM} are supported"));
        return None;
    }
    Some(out)
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

fn expand_repeat<'a>(errs: &mut Diagnostics, out: &mut Vec<&'a ast::Layer>, r: &'a ast::Repeat, depth: usize) {
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
        for s in &r.body {
            match s {
                Stmt::Layer(l) => push_layer(errs, out, l),
                Stmt::Repeat(inner) => expand_repeat(errs, out, inner, depth + 1),
            }
            if out.len() > MAX_LAYERS {
                return; // push_layer has reported it
            }
        }
    }
}

fn push_layer<'a>(errs: &mut Diagnostics, out: &mut Vec<&'a ast::Layer>, l: &'a ast::Layer) {
    if out.len() < MAX_LAYERS {
        out.push(l);
    } else if out.len() == MAX_LAYERS {
        errs.error(l.span, format!("the flow has more than {MAX_LAYERS} layers"));
        out.push(l);
    }
}
