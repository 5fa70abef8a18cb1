//! The rules of the layer library beyond the coupling flows: elementwise maps, linear flows,
//! spline and piecewise-linear couplings, dequantization, and the base distributions.
//! Elementwise and linear layers are written as the reference notes write them, as the
//! generative map `x = t(z)`; every raw parameter can be fixed in the spec instead of learned,
//! e.g. `affine(scale = 4, shift = 0)` is exactly X = 4Z.

use super::args::{as_call, as_count, as_number, bind};
use super::layers::coupling_common;
use crate::ast::{self, Value, ValueKind};
use crate::diag::Diagnostics;
use crate::ir::{self, LayerKind, LinearKind, ParamTensor, Transformer};
use crate::span::Span;

pub const LIBRARY_KINDS: &[&str] = &[
    "affine",
    "leaky_relu",
    "sigmoid",
    "logit",
    "exp",
    "log",
    "piecewise_linear",
    "spline",
    "diagonal",
    "triangular",
    "lu",
    "orthogonal",
    "spline_coupling",
    "piecewise_linear_coupling",
    "dequantize",
];
pub const DEFAULT_BINS: usize = 8;
pub const DEFAULT_SPLINE_BOUND: f64 = 5.0;

/// None when `l` is not a library layer (the caller reports unknown kinds).
pub fn check_library_layer(
    errs: &mut Diagnostics,
    l: &ast::Layer,
    dim: usize,
    cols: &[usize],
    first: bool,
) -> Option<Option<(&'static str, LayerKind)>> {
    let name = LIBRARY_KINDS.iter().copied().find(|k| *k == l.kind.name)?;
    let kind = match name {
        "triangular" | "lu" | "orthogonal" => check_linear(errs, l, name, dim, cols),
        "spline_coupling" | "piecewise_linear_coupling" => {
            check_tr_coupling(errs, l, name, dim, cols)
        }
        "dequantize" => check_dequantize(errs, l, cols, first),
        _ => check_elementwise(errs, l, name, cols),
    };
    Some(kind.map(|k| (name, k)))
}

/// The transformer of an elementwise layer, its arguments (beyond raw parameter tensors).
fn elementwise_transformer(
    errs: &mut Diagnostics,
    name: &str,
    s: &[Option<&Value>],
) -> Option<Transformer> {
    let num = |errs: &mut Diagnostics, i: usize, what: &str, default: f64| -> Option<f64> {
        s.get(i).copied().flatten().map_or(Some(default), |v| as_number(errs, v, what))
    };
    Some(match name {
        // `diagonal` (the notes' diagonal linear flow) and `rescale` are affine maps per
        // dimension; as elementwise layers their parameters can be fixed like any other.
        "affine" | "diagonal" | "rescale" => Transformer::Affine,
        "leaky_relu" => {
            let slope = num(errs, 0, "the slope", 0.01)?;
            Transformer::LeakyRelu { slope: positive(errs, s[0], slope, "the slope")? }
        }
        "sigmoid" | "logit" => {
            let a = num(errs, 0, "alpha", 0.0)?;
            let alpha = alpha(errs, s[0], a)?;
            if name == "sigmoid" {
                Transformer::Sigmoid { alpha }
            } else {
                Transformer::Logit { alpha }
            }
        }
        "exp" => Transformer::Exp,
        "log" => Transformer::Log,
        "piecewise_linear" => Transformer::PiecewiseLinear { bins: bins(errs, s[0])? },
        "spline" => {
            let (bins, bound) = (bins(errs, s[0]), spline_bound(errs, s[1]));
            Transformer::RqSpline { bins: bins?, bound: bound? }
        }
        _ => return None,
    })
}

/// The non-tensor arguments of each elementwise layer kind.
fn config_args(name: &str) -> &'static [&'static str] {
    match name {
        "leaky_relu" => &["slope"],
        "sigmoid" | "logit" => &["alpha"],
        "piecewise_linear" => &["bins"],
        "spline" => &["bins", "bound"],
        _ => &[],
    }
}

fn check_elementwise(
    errs: &mut Diagnostics,
    l: &ast::Layer,
    name: &str,
    cols: &[usize],
) -> Option<LayerKind> {
    // Bind config arguments first, then (a second binding over the same arguments) the tensors.
    let config = config_args(name);
    let probe = bind(&mut Diagnostics::default(), name, config, &l.args);
    let tr = elementwise_transformer(errs, name, &probe)?;
    let mut names: Vec<&str> = config.to_vec();
    let tensors = tr.tensors();
    names.extend(tensors.iter().map(|t| t.0));
    if tr == Transformer::Affine {
        names.push("scale");
    }
    // Fixed parameters are named: `affine(4)` could mean a shift or a scale.
    if let Some(a) = l.args.iter().filter(|a| a.name.is_none()).nth(config.len()) {
        let known = names[config.len()..].join(", ");
        errs.error(a.span(), format!("name the parameter this value fixes (`{name}` has {known})"));
        return None;
    }
    let slots = bind(errs, name, &names, &l.args);
    let fixed = &slots[config.len()..];
    let mut params = Vec::new();
    for (i, &(pname, k)) in tensors.iter().enumerate() {
        let v = fixed_values(errs, fixed[i], pname, cols.len(), k)?;
        params.push(ParamTensor { name: pname, k, fixed: v });
    }
    if tr == Transformer::Affine {
        affine_scale(errs, fixed[tensors.len()], fixed[1], &mut params, cols.len())?;
    }
    Some(LayerKind::Elementwise { tr, cols: cols.to_vec(), params })
}

/// NICE's final scaling `x = exp(log_scale) * z`: an affine map with its shift fixed at 0.
pub fn check_rescale(errs: &mut Diagnostics, l: &ast::Layer, cols: &[usize]) -> Option<LayerKind> {
    if let Some(a) = l.args.iter().find(|a| a.name.as_ref().is_some_and(|n| n.name == "shift")) {
        errs.error(
            a.span(),
            "`rescale` has no shift (NICE's scaling is x = s * z); use `affine` for one",
        );
        return None;
    }
    let mut kind = check_elementwise(errs, l, "rescale", cols)?;
    if let LayerKind::Elementwise { params, .. } = &mut kind {
        params[0].fixed = Some(vec![0.0; cols.len()]);
    }
    Some(kind)
}

/// `scale = s` fixes `log_scale = ln s` (s > 0); giving both is an error.
fn affine_scale(
    errs: &mut Diagnostics,
    scale: Option<&Value>,
    log_scale: Option<&Value>,
    params: &mut [ParamTensor],
    d: usize,
) -> Option<()> {
    let Some(v) = scale else { return Some(()) };
    if log_scale.is_some() {
        errs.error(v.span, "give `scale` or `log_scale`, not both");
        return None;
    }
    let s = fixed_values(errs, Some(v), "scale", d, 1)??;
    if s.iter().any(|&x| x <= 0.0) {
        errs.error(v.span, "a fixed scale must be positive (the affine map must be increasing)");
        return None;
    }
    params[1].fixed = Some(s.iter().map(|x| x.ln()).collect());
    Some(())
}

/// A fixed tensor: a number (every entry) or a list of D numbers (k = 1) or D lists of k.
fn fixed_values(
    errs: &mut Diagnostics,
    v: Option<&Value>,
    what: &str,
    d: usize,
    k: usize,
) -> Option<Option<Vec<f64>>> {
    let Some(v) = v else { return Some(None) };
    let flat: Vec<f64> = match &v.kind {
        ValueKind::Number { value, .. } if value.is_finite() => vec![*value; d * k],
        ValueKind::List(items) if items.len() == d => {
            let mut out = Vec::with_capacity(d * k);
            for it in items {
                out.extend(row_values(errs, it, what, k)?);
            }
            out
        }
        _ => {
            errs.error(v.span, format!("a fixed `{what}` is a number or a list of {d} entries (one per dimension), found {}", v.kind.describe()));
            return None;
        }
    };
    Some(Some(flat))
}

fn row_values(errs: &mut Diagnostics, v: &Value, what: &str, k: usize) -> Option<Vec<f64>> {
    match &v.kind {
        ValueKind::Number { value, .. } if k == 1 && value.is_finite() => Some(vec![*value]),
        ValueKind::List(xs) if xs.len() == k => {
            xs.iter().map(|x| as_number(errs, x, what)).collect()
        }
        _ => {
            errs.error(
                v.span,
                format!(
                    "each dimension's `{what}` is {}",
                    if k == 1 { "a number".to_string() } else { format!("a list of {k} numbers") }
                ),
            );
            None
        }
    }
}

fn positive(errs: &mut Diagnostics, v: Option<&Value>, x: f64, what: &str) -> Option<f64> {
    if x > 0.0 {
        return Some(x);
    }
    errs.error(v.map_or(Span::default(), |v| v.span), format!("{what} must be positive"));
    None
}

fn alpha(errs: &mut Diagnostics, v: Option<&Value>, a: f64) -> Option<f64> {
    if (0.0..0.5).contains(&a) {
        return Some(a);
    }
    errs.error(v.map_or(Span::default(), |v| v.span), "alpha must be in [0, 0.5)");
    None
}

pub(super) fn bins(errs: &mut Diagnostics, v: Option<&Value>) -> Option<usize> {
    let Some(v) = v else { return Some(DEFAULT_BINS) };
    let k = as_count(errs, v, "the number of bins")?;
    if !(2..=256).contains(&k) {
        errs.error(v.span, "the number of bins must be between 2 and 256");
        return None;
    }
    Some(k)
}

pub(super) fn spline_bound(errs: &mut Diagnostics, v: Option<&Value>) -> Option<f64> {
    let Some(v) = v else { return Some(DEFAULT_SPLINE_BOUND) };
    let b = as_number(errs, v, "the spline bound")?;
    positive(errs, Some(v), b, "the spline bound")
}

fn check_linear(
    errs: &mut Diagnostics,
    l: &ast::Layer,
    name: &str,
    dim: usize,
    cols: &[usize],
) -> Option<LayerKind> {
    let kind = match name {
        "triangular" => {
            let s = bind(errs, name, &["log_diag", "lower", "shift"], &l.args);
            let specs = [("log_diag", dim, 1), ("lower", dim, dim), ("shift", dim, 1)];
            let fixed = check_fixed(errs, &s, &specs)?;
            return Some(LayerKind::Linear {
                kind: LinearKind::LowerTriangular,
                cols: cols.to_vec(),
                fixed,
            });
        }
        "lu" => {
            let s = bind(errs, name, &["seed", "lower", "upper", "log_s", "shift"], &l.args);
            let specs =
                [("lower", dim, dim), ("upper", dim, dim), ("log_s", dim, 1), ("shift", dim, 1)];
            let fixed = check_fixed(errs, &s[1..], &specs)?;
            let seed = s[0].map_or(Some(0), |v| as_count(errs, v, "a seed"))? as u64;
            return Some(LayerKind::Linear {
                kind: LinearKind::Lu { seed },
                cols: cols.to_vec(),
                fixed,
            });
        }
        _ => {
            let s = bind(errs, name, &["reflections", "seed", "vectors", "shift"], &l.args);
            let k = s[0].map_or(Some(dim), |v| as_count(errs, v, "the number of reflections"))?;
            if k == 0 {
                errs.error(
                    s[0].map_or(l.kind.span, |v| v.span),
                    "an orthogonal layer needs at least one reflection",
                );
                return None;
            }
            let seed = s[1].map_or(Some(0), |v| as_count(errs, v, "a seed"))? as u64;
            let fixed = check_fixed(errs, &s[2..], &[("vectors", k, dim), ("shift", dim, 1)])?;
            (LinearKind::Householder { reflections: k, seed }, fixed)
        }
    };
    Some(LayerKind::Linear { kind: kind.0, cols: cols.to_vec(), fixed: kind.1 })
}

/// `actnorm(loc = .., log_scale = ..)`: fixed tensors are kept through data initialisation.
pub fn check_actnorm(errs: &mut Diagnostics, l: &ast::Layer, cols: &[usize]) -> Option<LayerKind> {
    let d = cols.len();
    let s = bind(errs, "actnorm", &["loc", "log_scale"], &l.args);
    let fixed = check_fixed(errs, &s, &[("loc", d, 1), ("log_scale", d, 1)])?;
    Some(LayerKind::ActNorm { cols: cols.to_vec(), fixed })
}

/// Fixed tensors of shape `rows x cols` (`cols == 1`: a vector): a number for every entry, a
/// list of `rows` numbers (vectors), or `rows` lists of `cols` numbers (matrices).
fn check_fixed(
    errs: &mut Diagnostics,
    slots: &[Option<&Value>],
    specs: &[(&'static str, usize, usize)],
) -> Option<Vec<ir::FixedTensor>> {
    let mut out = Vec::new();
    let mut ok = true;
    for (slot, &(name, rows, k)) in slots.iter().zip(specs) {
        match fixed_values(errs, *slot, name, rows, k) {
            Some(Some(values)) => out.push(ir::FixedTensor { name, values }),
            Some(None) => {}
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn check_tr_coupling(
    errs: &mut Diagnostics,
    l: &ast::Layer,
    name: &str,
    dim: usize,
    cols: &[usize],
) -> Option<LayerKind> {
    let spline = name == "spline_coupling";
    let params: &[&str] =
        if spline { &["mask", "net", "bins", "bound"] } else { &["mask", "net", "bins"] };
    let s = bind(errs, name, params, &l.args);
    let k = bins(errs, s[2]);
    let bound = if spline { spline_bound(errs, s[3]) } else { Some(0.0) };
    let tr = match (k, bound) {
        (Some(bins), Some(bound)) if spline => Transformer::RqSpline { bins, bound },
        (Some(bins), Some(_)) => Transformer::PiecewiseLinear { bins },
        _ => Transformer::Affine, // placeholder so the mask and net still get checked
    };
    let (cond, trans, net) = coupling_common(errs, l, s[0], s[1], dim, cols, tr.n_params())?;
    k?;
    bound?;
    Some(LayerKind::TransformerCoupling { tr, cond, trans, net })
}

/// `dequantize(levels = 17)`: integer data plus U[0, 1) noise, divided by `levels`
/// (`x = levels * z`). It must come first, where the data enter.
fn check_dequantize(
    errs: &mut Diagnostics,
    l: &ast::Layer,
    cols: &[usize],
    first: bool,
) -> Option<LayerKind> {
    let s = bind(errs, "dequantize", &["levels"], &l.args);
    let levels = s[0].map_or(Some(256.0), |v| as_number(errs, v, "the number of levels"))?;
    if levels < 1.0 {
        errs.error(s[0].map_or(l.kind.span, |v| v.span), "the number of levels must be at least 1");
        return None;
    }
    if !first {
        errs.error(
            l.kind.span,
            "`dequantize` must be the first layer: it acts on the data as they arrive",
        );
        return None;
    }
    let params = vec![
        ParamTensor { name: "shift", k: 1, fixed: Some(vec![0.0; cols.len()]) },
        ParamTensor { name: "log_scale", k: 1, fixed: Some(vec![levels.ln(); cols.len()]) },
    ];
    Some(LayerKind::Elementwise { tr: Transformer::Affine, cols: cols.to_vec(), params })
}

pub const BASES: &[&str] = &["normal", "logistic", "uniform", "diag_normal", "mixture"];

/// `dim`: the event size (fixed base tensors are checked against it; 0 when unknown).
pub fn check_base(errs: &mut Diagnostics, v: &Value, dim: usize) -> Option<ir::Base> {
    let Some((name, span, args)) = as_call(v) else {
        errs.error(
            v.span,
            format!(
                "a base distribution is one of {}, found {}",
                BASES.join(", "),
                v.kind.describe()
            ),
        );
        return None;
    };
    match name {
        "normal" => bind_none_args(errs, name, args).map(|_| ir::Base::StdNormal),
        "logistic" => bind_none_args(errs, name, args).map(|_| ir::Base::Logistic),
        "diag_normal" => {
            let s = bind(errs, name, &["loc", "log_scale"], args);
            let d = dim;
            let fixed = check_fixed(errs, &s, &[("loc", d, 1), ("log_scale", d, 1)])?;
            Some(ir::Base::DiagNormal { fixed })
        }
        "uniform" => {
            let s = bind(errs, name, &["a", "b"], args);
            let a = s[0].map_or(Some(0.0), |v| as_number(errs, v, "a"))?;
            let b = s[1].map_or(Some(1.0), |v| as_number(errs, v, "b"))?;
            if a >= b {
                errs.error(span, format!("uniform(a, b) needs a < b, found a = {a}, b = {b}"));
                return None;
            }
            Some(ir::Base::Uniform { a, b })
        }
        "mixture" => {
            let s = bind(errs, name, &["k", "logits", "means", "log_scales"], args);
            let k = s[0].map_or(Some(4), |v| as_count(errs, v, "the number of components"))?;
            if k == 0 {
                errs.error(s[0].map_or(span, |v| v.span), "a mixture needs at least one component");
                return None;
            }
            let specs = [("logits", k, 1), ("means", k, dim), ("log_scales", k, dim)];
            let fixed = check_fixed(errs, &s[1..], &specs)?;
            Some(ir::Base::Mixture { k, fixed })
        }
        _ => {
            errs.error(
                span,
                format!("unknown base distribution `{name}`; known bases: {}", BASES.join(", ")),
            );
            None
        }
    }
}

fn bind_none_args(errs: &mut Diagnostics, name: &str, args: &[ast::Arg]) -> Option<()> {
    let before = errs.len();
    bind(errs, name, &[], args);
    (errs.len() == before).then_some(())
}
