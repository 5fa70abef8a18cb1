//! The rules of each layer kind: arguments, defaults and shapes. Each `check_*` function turns
//! one spec layer into an IR layer with physical column sets, given `cols` (the physical
//! column of every logical dimension so far), which permutations update.

use super::args::{as_call, as_count, as_count_list, as_number, bind};
use crate::ast::{self, Value, ValueKind};
use crate::diag::{Diagnostic, Diagnostics};
use crate::ir::{self, LayerKind, PermuteHow};
use crate::span::Span;

/// Every layer kind, as listed in unknown-layer errors and in `docs/language.md`.
pub const LAYER_KINDS: &[&str] =
    &["affine_coupling", "additive_coupling", "rescale", "actnorm", "reverse", "permute"];
pub const ACTIVATIONS: &[&str] = &["relu", "tanh", "leaky_relu", "elu"];
pub const MASKS: &[&str] = &["alternate", "alternate_flip", "halves", "halves_flip"];

/// zuko's soft clamp of the log-scale, `a / (1 + |a| / ln 1000)`, bounds it to +-6.9.
pub const DEFAULT_BOUND: f64 = 6.907755278982137;
pub const DEFAULT_HIDDEN: [usize; 2] = [64, 64];

/// `first`: no layer comes before this one (where the data enter).
pub fn check_layer(
    errs: &mut Diagnostics,
    l: &ast::Layer,
    dim: usize,
    cols: &mut Vec<usize>,
    first: bool,
) -> Option<ir::Layer> {
    let (label, kind) = match l.kind.name.as_str() {
        "affine_coupling" => ("affine_coupling", check_affine(errs, l, dim, cols)?),
        "additive_coupling" => ("additive_coupling", check_additive(errs, l, dim, cols)?),
        "rescale" => ("rescale", super::library::check_rescale(errs, l, cols)?),
        "actnorm" => ("actnorm", super::library::check_actnorm(errs, l, cols)?),
        "reverse" => (
            "reverse",
            no_args(errs, l)
                .and_then(|_| permute(cols, (0..dim).rev().collect(), PermuteHow::Reverse))?,
        ),
        "permute" => ("permute", check_permute(errs, l, dim, cols)?),
        other => match super::library::check_library_layer(errs, l, dim, cols, first)
            .or_else(|| super::autoregressive::check_ar_layer(errs, l, dim, cols))
        {
            Some(checked) => checked?,
            None => {
                errs.push(unknown_layer(other, l.kind.span));
                return None;
            }
        },
    };
    Some(ir::Layer { kind, label, span: l.kind.span })
}

fn unknown_layer(name: &str, span: Span) -> Diagnostic {
    Diagnostic::new(span, format!("unknown layer kind `{name}`")).with_help(format!(
        "known layer kinds: {}, {}, {}",
        LAYER_KINDS.join(", "),
        super::library::LIBRARY_KINDS.join(", "),
        super::autoregressive::AR_KINDS.join(", ")
    ))
}

fn no_args(errs: &mut Diagnostics, l: &ast::Layer) -> Option<()> {
    let before = errs.len();
    bind(errs, &l.kind.name, &[], &l.args);
    (errs.len() == before).then_some(())
}

/// Folds a permutation `z_i = x_order[i]` into the column map.
fn permute(cols: &mut Vec<usize>, order: Vec<usize>, how: PermuteHow) -> Option<LayerKind> {
    *cols = order.iter().map(|&i| cols[i]).collect();
    Some(LayerKind::Permute { order, how })
}

fn check_permute(
    errs: &mut Diagnostics,
    l: &ast::Layer,
    dim: usize,
    cols: &mut Vec<usize>,
) -> Option<LayerKind> {
    let slots = bind(errs, "permute", &["order", "seed"], &l.args);
    match (slots[0], slots[1]) {
        (Some(v), None) => {
            let order = as_count_list(errs, v, "a permutation", "a permutation index")?;
            check_bijection(errs, &order, dim, v.span)?;
            permute(cols, order, PermuteHow::Explicit)
        }
        (None, Some(v)) => {
            let seed = as_count(errs, v, "a permutation seed")? as u64;
            permute(cols, random_permutation(dim, seed), PermuteHow::Random { seed })
        }
        _ => {
            errs.error(l.span, "`permute` takes either `order = [...]` or `seed = N`");
            None
        }
    }
}

fn check_bijection(errs: &mut Diagnostics, order: &[usize], dim: usize, span: Span) -> Option<()> {
    let mut seen = vec![false; dim];
    let ok = order.len() == dim
        && order.iter().all(|&i| i < dim && !std::mem::replace(&mut seen[i], true));
    if ok {
        return Some(());
    }
    errs.push(
        Diagnostic::new(span, format!("this permutation is not a bijection of 0..{dim}"))
            .with_help(format!("list each of 0..{dim} exactly once")),
    );
    None
}

/// Fisher-Yates driven by splitmix64, so a seed gives the same permutation on every machine
/// and in every version (the compiler has no RNG dependency).
pub fn random_permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    };
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        p.swap(i, j);
    }
    p
}

/// The coupling arguments shared by both kinds: (cond, trans) physical columns and the net.
pub(super) fn coupling_common(
    errs: &mut Diagnostics,
    l: &ast::Layer,
    mask: Option<&Value>,
    net: Option<&Value>,
    dim: usize,
    cols: &[usize],
    outputs_per_dim: usize,
) -> Option<(Vec<usize>, Vec<usize>, ir::Mlp)> {
    if dim < 2 {
        errs.push(
            Diagnostic::new(l.kind.span, format!("a coupling layer needs an event of at least 2 dimensions, but this flow's event has {dim}"))
                .with_help("use an elementwise layer for 1-D flows"),
        );
        return None;
    }
    // The net is checked even when the mask is wrong, so that both errors are reported.
    let mask = check_mask(errs, mask, l.kind.span, dim).unwrap_or_default();
    let cond: Vec<usize> = (0..mask.len()).filter(|&i| !mask[i]).map(|i| cols[i]).collect();
    let trans: Vec<usize> = (0..mask.len()).filter(|&i| mask[i]).map(|i| cols[i]).collect();
    let net = check_net(errs, net, cond.len(), trans.len() * outputs_per_dim)?;
    (!mask.is_empty()).then_some((cond, trans, net))
}

fn check_affine(
    errs: &mut Diagnostics,
    l: &ast::Layer,
    dim: usize,
    cols: &mut Vec<usize>,
) -> Option<LayerKind> {
    let s = bind(errs, "affine_coupling", &["mask", "net", "bound"], &l.args);
    let bound = s[2].map_or(Some(DEFAULT_BOUND), |v| check_bound(errs, v));
    let (cond, trans, net) = coupling_common(errs, l, s[0], s[1], dim, cols, 2)?;
    Some(LayerKind::AffineCoupling { cond, trans, net, bound: bound? })
}

pub(super) fn check_bound(errs: &mut Diagnostics, v: &Value) -> Option<f64> {
    let b = as_number(errs, v, "the log-scale bound")?;
    if b <= 0.0 {
        errs.error(v.span, "the log-scale bound must be positive");
        return None;
    }
    Some(b)
}

fn check_additive(
    errs: &mut Diagnostics,
    l: &ast::Layer,
    dim: usize,
    cols: &mut Vec<usize>,
) -> Option<LayerKind> {
    let s = bind(errs, "additive_coupling", &["mask", "net"], &l.args);
    let (cond, trans, net) = coupling_common(errs, l, s[0], s[1], dim, cols, 1)?;
    Some(LayerKind::AdditiveCoupling { cond, trans, net })
}

/// A mask over logical dimensions: true = transformed, false = conditioning (nflows' convention).
fn check_mask(
    errs: &mut Diagnostics,
    v: Option<&Value>,
    layer: Span,
    dim: usize,
) -> Option<Vec<bool>> {
    let (mask, span): (Vec<bool>, Span) = match v.map(|v| (&v.kind, v.span)) {
        None => ((0..dim).map(|i| i % 2 == 1).collect(), layer),
        Some((ValueKind::Ident(name), span)) => (named_mask(errs, name, span, dim)?, span),
        Some((ValueKind::List(items), span)) => (explicit_mask(errs, items, span, dim)?, span),
        Some((other, span)) => {
            errs.error(
                span,
                format!(
                    "a mask is one of {} or a list of 0s and 1s, found {}",
                    MASKS.join(", "),
                    other.describe()
                ),
            );
            return None;
        }
    };
    if mask.iter().all(|&t| !t) {
        errs.error(span, "this mask leaves nothing to transform (it has no 1s)");
        return None;
    }
    if mask.iter().all(|&t| t) {
        errs.error(span, "this mask leaves nothing to condition on (it has no 0s)");
        return None;
    }
    Some(mask)
}

fn named_mask(errs: &mut Diagnostics, name: &str, span: Span, dim: usize) -> Option<Vec<bool>> {
    let half = dim / 2;
    Some(match name {
        "alternate" => (0..dim).map(|i| i % 2 == 1).collect(),
        "alternate_flip" => (0..dim).map(|i| i % 2 == 0).collect(),
        "halves" => (0..dim).map(|i| i >= half).collect(),
        "halves_flip" => (0..dim).map(|i| i < half).collect(),
        _ => {
            errs.error(
                span,
                format!(
                    "unknown mask `{name}`; known masks: {}, or a list of 0s and 1s",
                    MASKS.join(", ")
                ),
            );
            return None;
        }
    })
}

fn explicit_mask(
    errs: &mut Diagnostics,
    items: &[Value],
    span: Span,
    dim: usize,
) -> Option<Vec<bool>> {
    if items.len() != dim {
        errs.error(
            span,
            format!("this mask has {} entries but the event has {dim} dimensions", items.len()),
        );
        return None;
    }
    // Every entry is looked at (collected first), so that each bad one is reported.
    let entries: Vec<Option<bool>> = items
        .iter()
        .map(|v| match v.kind {
            ValueKind::Number { int: Some(0), .. } => Some(false),
            ValueKind::Number { int: Some(1), .. } => Some(true),
            _ => {
                errs.error(
                    v.span,
                    format!(
                        "mask entries must be 0 (condition) or 1 (transform), found {}",
                        v.kind.describe()
                    ),
                );
                None
            }
        })
        .collect();
    entries.into_iter().collect()
}

/// `mlp([64, 64], relu)`, `mlp(hidden = [32], activation = leaky_relu(0.2))`, or the default.
fn check_net(
    errs: &mut Diagnostics,
    v: Option<&Value>,
    n_in: usize,
    n_out: usize,
) -> Option<ir::Mlp> {
    let Some(v) = v else {
        let sizes = [vec![n_in], DEFAULT_HIDDEN.to_vec(), vec![n_out]].concat();
        return Some(ir::Mlp { sizes, act: ir::Activation::Relu });
    };
    let Some(("mlp", _, args)) = as_call(v) else {
        errs.error(
            v.span,
            format!(
                "a conditioner is `mlp(hidden = [..], activation = ..)`, found {}",
                v.kind.describe()
            ),
        );
        return None;
    };
    let s = bind(errs, "mlp", &["hidden", "activation"], args);
    let hidden = s[0].map_or(Some(DEFAULT_HIDDEN.to_vec()), |h| check_hidden(errs, h));
    let act = s[1].map_or(Some(ir::Activation::Relu), |a| check_activation(errs, a));
    Some(ir::Mlp { sizes: [vec![n_in], hidden?, vec![n_out]].concat(), act: act? })
}

pub(super) fn check_hidden(errs: &mut Diagnostics, h: &Value) -> Option<Vec<usize>> {
    let hidden = as_count_list(errs, h, "hidden sizes", "a hidden size")?;
    if hidden.contains(&0) {
        errs.error(h.span, "a hidden size of zero leaves the conditioner with no units");
        return None;
    }
    Some(hidden)
}

pub(super) fn check_activation(errs: &mut Diagnostics, v: &Value) -> Option<ir::Activation> {
    let Some((name, span, args)) = as_call(v) else {
        errs.error(
            v.span,
            format!(
                "an activation is one of {}, found {}",
                ACTIVATIONS.join(", "),
                v.kind.describe()
            ),
        );
        return None;
    };
    // Non-negative only: the backward pass reads the derivative off the activation's output,
    // which identifies the branch only when both branches keep the sign.
    let param = |errs: &mut Diagnostics, pname: &str, default: f64| -> Option<f64> {
        let s = bind(errs, name, &[pname], args);
        let v = s[0].map_or(Some(default), |p| as_number(errs, p, pname))?;
        if v < 0.0 {
            errs.error(
                s[0].map_or(span, |p| p.span),
                format!("the {pname} of `{name}` must not be negative"),
            );
            return None;
        }
        Some(v)
    };
    match name {
        "relu" | "tanh" => {
            let before = errs.len();
            bind(errs, name, &[], args);
            (errs.len() == before).then_some(if name == "relu" {
                ir::Activation::Relu
            } else {
                ir::Activation::Tanh
            })
        }
        "leaky_relu" => param(errs, "slope", 0.01).map(ir::Activation::LeakyRelu),
        "elu" => param(errs, "alpha", 1.0).map(ir::Activation::Elu),
        _ => {
            errs.error(
                span,
                format!(
                    "unknown activation `{name}`; known activations: {}",
                    ACTIVATIONS.join(", ")
                ),
            );
            None
        }
    }
}
