//! Binding a layer's (or a call's) arguments to its parameter names, and reading values.
//! Errors name what was expected and list the known names, e.g.
//!
//! ```text
//! error: unknown argument `hiden` for `mlp`; known arguments: hidden, activation
//! ```

use crate::ast::{Arg, Value, ValueKind};
use crate::diag::{Diagnostic, Diagnostics};
use crate::span::Span;

/// Binds `args` to `params` (positional arguments in order, then named ones). Reports unknown,
/// duplicate and surplus arguments; returns one slot per parameter.
pub fn bind<'a>(
    errs: &mut Diagnostics,
    what: &str,
    params: &[&str],
    args: &'a [Arg],
) -> Vec<Option<&'a Value>> {
    let mut slots: Vec<Option<&'a Value>> = vec![None; params.len()];
    let mut next_positional = 0;
    for a in args {
        let index = match &a.name {
            None => {
                let i = next_positional;
                next_positional += 1;
                if i >= params.len() {
                    errs.push(too_many(what, params, a.span()));
                    continue;
                }
                i
            }
            Some(n) => match params.iter().position(|p| *p == n.name) {
                Some(i) => i,
                None => {
                    errs.push(unknown_arg(what, params, &n.name, n.span));
                    continue;
                }
            },
        };
        if slots[index].is_some() {
            errs.error(
                a.span(),
                format!("argument `{}` of `{what}` is given twice", params[index]),
            );
        } else {
            slots[index] = Some(&a.value);
        }
    }
    slots
}

fn too_many(what: &str, params: &[&str], span: Span) -> Diagnostic {
    if params.is_empty() {
        Diagnostic::new(span, format!("`{what}` takes no arguments"))
    } else {
        Diagnostic::new(
            span,
            format!("too many arguments for `{what}`; it takes {}", params.join(", ")),
        )
    }
}

fn unknown_arg(what: &str, params: &[&str], name: &str, span: Span) -> Diagnostic {
    if params.is_empty() {
        return Diagnostic::new(
            span,
            format!("unknown argument `{name}`: `{what}` takes no arguments"),
        );
    }
    Diagnostic::new(
        span,
        format!("unknown argument `{name}` for `{what}`; known arguments: {}", params.join(", ")),
    )
}

/// A non-negative integer that fits in usize.
pub fn as_count(errs: &mut Diagnostics, v: &Value, what: &str) -> Option<usize> {
    match v.kind {
        ValueKind::Number { int: Some(i), .. } if i >= 0 => Some(i as usize),
        ValueKind::Number { int: None, value } if value >= i64::MAX as f64 => {
            errs.error(v.span, format!("{what} is too large for a 64-bit integer"));
            None
        }
        _ => {
            errs.error(
                v.span,
                format!("{what} must be a non-negative integer, found {}", v.kind.describe()),
            );
            None
        }
    }
}

/// A finite number.
pub fn as_number(errs: &mut Diagnostics, v: &Value, what: &str) -> Option<f64> {
    match v.kind {
        ValueKind::Number { value, .. } if value.is_finite() => Some(value),
        ValueKind::Number { .. } => {
            errs.error(v.span, format!("{what} is too large to be represented as a 64-bit float"));
            None
        }
        _ => {
            errs.error(v.span, format!("{what} must be a number, found {}", v.kind.describe()));
            None
        }
    }
}

/// A list of non-negative integers; `what` names the list, `item` one entry.
pub fn as_count_list(
    errs: &mut Diagnostics,
    v: &Value,
    what: &str,
    item: &str,
) -> Option<Vec<usize>> {
    let ValueKind::List(items) = &v.kind else {
        errs.error(
            v.span,
            format!("{what} must be a list of integers, found {}", v.kind.describe()),
        );
        return None;
    };
    let out: Vec<Option<usize>> = items.iter().map(|x| as_count(errs, x, item)).collect();
    out.into_iter().collect()
}

/// The name and arguments of a value written `name` or `name(args..)`.
pub fn as_call(v: &Value) -> Option<(&str, Span, &[Arg])> {
    match &v.kind {
        ValueKind::Ident(n) => Some((n.as_str(), v.span, &[])),
        ValueKind::Call { name, args } => Some((name.name.as_str(), name.span, args.as_slice())),
        _ => None,
    }
}
