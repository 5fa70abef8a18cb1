//! Masked autoregressive layers: `maf` and `iaf` (affine transformer with a soft-clamped
//! log-scale) and `spline_maf` / `spline_iaf` (rational-quadratic splines, the autoregressive
//! neural spline flow), each with a MADE conditioner:
//!
//! ```text
//! maf(net = made([256, 256], relu, order = reversed));
//! spline_iaf(net = made(hidden = [64], order = random(seed = 3)), bins = 8, bound = 5);
//! ```
//!
//! The compiler computes every degree here, so masks are constants of the architecture and the
//! generated sequential direction can walk the hidden units block by block.

use super::args::{as_call, as_count, bind};
use super::layers::{check_activation, check_bound, check_hidden, DEFAULT_BOUND, DEFAULT_HIDDEN};
use super::library::{bins, spline_bound};
use super::MAX_PARAMS;
use crate::ast::{self, Value};
use crate::diag::Diagnostics;
use crate::ir::{self, ArKind, LayerKind, Order, Transformer};
use crate::span::Span;

pub const AR_KINDS: &[&str] = &["maf", "iaf", "spline_maf", "spline_iaf"];
pub const ORDERS: &[&str] = &["natural", "reversed", "random(seed = N)"];

/// None when `name` is not an autoregressive layer kind.
pub fn check_ar_layer(
    errs: &mut Diagnostics,
    l: &ast::Layer,
    dim: usize,
    cols: &[usize],
) -> Option<Option<(&'static str, LayerKind)>> {
    let name = AR_KINDS.iter().copied().find(|k| *k == l.kind.name)?;
    let ar = if name.ends_with("maf") { ArKind::Maf } else { ArKind::Iaf };
    let tr = if name.starts_with("spline") {
        let s = bind(errs, name, &["net", "bins", "bound"], &l.args);
        let (b, bound) = (bins(errs, s[1]), spline_bound(errs, s[2]));
        (s[0], b.zip(bound).map(|(bins, bound)| Transformer::RqSpline { bins, bound }))
    } else {
        let s = bind(errs, name, &["net", "bound"], &l.args);
        let bound = s[1].map_or(Some(DEFAULT_BOUND), |v| check_bound(errs, v));
        (s[0], bound.map(|bound| Transformer::SoftAffine { bound }))
    };
    let made = check_made(errs, tr.0, l.kind.span, dim, tr.1.map_or(0, |t| t.n_params()));
    let kind = match (tr.1, made) {
        (Some(tr), Some(made)) => {
            Some((name, LayerKind::Autoregressive { ar, tr, cols: cols.to_vec(), made }))
        }
        _ => None,
    };
    Some(kind)
}

/// `made([256, 256], relu, order = reversed)`, or the default MADE ([64, 64], relu, natural).
fn check_made(
    errs: &mut Diagnostics,
    v: Option<&Value>,
    layer: Span,
    dim: usize,
    per_dim: usize,
) -> Option<ir::Made> {
    let (hidden, act, order) = match v {
        None => (Some(DEFAULT_HIDDEN.to_vec()), Some(ir::Activation::Relu), Some(Order::Natural)),
        Some(v) => {
            let Some(("made", _, args)) = as_call(v) else {
                let found = v.kind.describe();
                errs.error(v.span, format!("an autoregressive conditioner is `made(hidden = [..], activation = .., order = ..)`, found {found}"));
                return None;
            };
            let s = bind(errs, "made", &["hidden", "activation", "order"], args);
            let hidden = s[0].map_or(Some(DEFAULT_HIDDEN.to_vec()), |h| check_hidden(errs, h));
            let act = s[1].map_or(Some(ir::Activation::Relu), |a| check_activation(errs, a));
            (hidden, act, s[2].map_or(Some(Order::Natural), |o| check_order(errs, o)))
        }
    };
    let (hidden, act, order) = (hidden?, act?, order?);
    let sizes = [vec![dim], hidden.clone(), vec![dim.saturating_mul(per_dim)]].concat();
    let probe = ir::Mlp { sizes: sizes.clone(), act };
    if probe.num_params() > MAX_PARAMS {
        // Checked before the degrees are built: they are as long as the hidden layers.
        errs.error(
            v.map_or(layer, |v| v.span),
            format!("this MADE has more than {MAX_PARAMS} parameters"),
        );
        return None;
    }
    let in_deg = input_degrees(order, dim);
    let hidden_deg = hidden.iter().map(|&h| hidden_degrees(dim, h)).collect();
    Some(ir::Made { sizes, act, order, in_deg, hidden_deg })
}

fn check_order(errs: &mut Diagnostics, v: &Value) -> Option<Order> {
    let bad = |errs: &mut Diagnostics| {
        let found = v.kind.describe();
        errs.error(
            v.span,
            format!("an input order is one of {}, found {found}", ORDERS.join(", ")),
        );
        None
    };
    let Some((name, _, args)) = as_call(v) else { return bad(errs) };
    match name {
        "natural" | "reversed" => {
            let before = errs.len();
            bind(errs, name, &[], args);
            (errs.len() == before).then_some(if name == "natural" {
                Order::Natural
            } else {
                Order::Reversed
            })
        }
        "random" => {
            let s = bind(errs, "random", &["seed"], args);
            let Some(seed) = s[0] else {
                errs.error(v.span, "`random` needs a seed: `order = random(seed = 3)`");
                return None;
            };
            Some(Order::Random { seed: as_count(errs, seed, "an order seed")? as u64 })
        }
        _ => bad(errs),
    }
}

/// The degree of each input, a permutation of 1..=D.
pub fn input_degrees(order: Order, dim: usize) -> Vec<usize> {
    match order {
        Order::Natural => (1..=dim).collect(),
        Order::Reversed => (1..=dim).rev().collect(),
        Order::Random { seed } => {
            super::layers::random_permutation(dim, seed).into_iter().map(|p| p + 1).collect()
        }
    }
}

/// Balanced, nondecreasing hidden degrees in 1..=D-1 (all 0 when D = 1: such units see no
/// input, and the outputs are constants, as they must be).
pub fn hidden_degrees(dim: usize, h: usize) -> Vec<usize> {
    if dim < 2 {
        return vec![0; h];
    }
    (0..h).map(|k| 1 + k * (dim - 1) / h).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::LayerKind;

    fn compile(src: &str) -> Result<crate::ir::Program, String> {
        crate::compile(src).map_err(|ds| crate::diag::render_all(&ds, "test", src))
    }

    #[test]
    fn c2_maf_has_zukos_parameter_count() {
        let src = include_str!("../../../specs/maf_digits.flow");
        let p = compile(src).unwrap_or_else(|e| panic!("{e}"));
        for f in &p.flows {
            assert_eq!(f.num_params(), 576_640, "{}", f.name);
        }
    }

    #[test]
    fn degrees_are_balanced_sorted_and_mask_outputs() {
        assert_eq!(hidden_degrees(4, 6), [1, 1, 2, 2, 3, 3]);
        assert_eq!(hidden_degrees(1, 3), [0, 0, 0]);
        assert_eq!(input_degrees(Order::Reversed, 3), [3, 2, 1]);
        let mut r = input_degrees(Order::Random { seed: 3 }, 5);
        r.sort();
        assert_eq!(r, [1, 2, 3, 4, 5]);
        let src = "flow A { event [3]; spline_iaf(net = made([5], order = reversed), bins = 4); }";
        let p = compile(src).unwrap_or_else(|e| panic!("{e}"));
        let LayerKind::Autoregressive { made, tr, .. } = &p.flows[0].layers[0].kind else {
            panic!("an autoregressive layer")
        };
        assert_eq!(made.sizes, [3, 5, 3 * tr.n_params()]);
        assert_eq!(made.in_deg, [3, 2, 1]);
        assert_eq!(made.hidden_deg, [vec![1, 1, 1, 2, 2]]);
    }

    #[test]
    fn errors_point_at_the_argument() {
        let cases = [
            ("maf(net = mlp([4]));", "an autoregressive conditioner is `made("),
            ("maf(net = made([4], order = sideways));", "an input order is one of"),
            ("maf(net = made([4], order = random));", "`random` needs a seed"),
            ("iaf(net = made([0]));", "a hidden size of zero"),
            ("spline_maf(bins = 1);", "the number of bins"),
            ("maf(bound = -1);", "must be positive"),
            ("maf(net = made([4], colour = 2));", "unknown argument `colour` for `made`"),
        ];
        for (layer, want) in cases {
            let src = format!("flow A {{ event [3]; {layer} }}");
            let err = compile(&src).err().unwrap_or_default();
            assert!(err.contains(want), "{layer}: {err}");
        }
    }
}
