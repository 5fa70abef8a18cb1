//! Grammar (pest) to syntax tree. A syntax error becomes one [`Diagnostic`] at the place pest
//! stopped, saying what it expected there in the language's words, not pest's rule names.

use crate::ast::*;
use crate::diag::Diagnostic;
use crate::span::Span;
use pest::iterators::Pair;
use pest::Parser;

#[derive(pest_derive::Parser)]
#[grammar = "grammar.pest"]
struct FlowParser;

/// Parses a whole spec. Never panics: malformed input gives a diagnostic.
pub fn parse(src: &str) -> Result<File, Diagnostic> {
    // Tracks the tokens expected at the furthest position, for messages like "expected `;`".
    pest::set_error_detail(true);
    let mut pairs = FlowParser::parse(Rule::file, src).map_err(|e| syntax_error(src, e))?;
    let file = pairs.next().expect("pest returns the `file` pair on success");
    let flows = file.into_inner().filter(|p| p.as_rule() == Rule::flow_def).map(flow_def).collect();
    Ok(File { flows })
}

fn syntax_error(src: &str, e: pest::error::Error<Rule>) -> Diagnostic {
    let (start, end) = match e.location {
        pest::error::InputLocation::Pos(p) => (p, p),
        pest::error::InputLocation::Span((s, e)) => (s, e),
    };
    // pest's positives are reported where the last alternative began (e.g. the start of
    // `event [2]` when its `;` is missing); its parse attempts know the furthest position
    // reached and the literal tokens expected there, which is what the user needs.
    if let Some(a) = e.parse_attempts().filter(|a| a.max_position > start) {
        let mut toks: Vec<String> = a
            .expected_tokens()
            .iter()
            .map(|t| t.to_string())
            .filter(|t| !t.trim().is_empty() && t != "//" && t != "///")
            .map(|t| format!("`{t}`"))
            .collect();
        toks.sort();
        toks.dedup();
        if !toks.is_empty() {
            let at = a.max_position;
            let refs: Vec<&str> = toks.iter().map(String::as_str).collect();
            let message = format!("syntax error: expected {}, found {}", join_or(&refs), found_text(src, at));
            return Diagnostic::new(Span::new(at, next_char_end(src, at)), message);
        }
    }
    let end = if end > start { end } else { next_char_end(src, start) };
    let message = match &e.variant {
        pest::error::ErrorVariant::ParsingError { positives, .. } => {
            let mut names: Vec<&str> = positives.iter().filter_map(rule_name).collect();
            names.sort();
            names.dedup();
            let found = found_text(src, start);
            if names.is_empty() {
                format!("syntax error: unexpected {found}")
            } else {
                format!("syntax error: expected {}, found {found}", join_or(&names))
            }
        }
        pest::error::ErrorVariant::CustomError { message } => message.clone(),
    };
    Diagnostic::new(Span::new(start, end), message)
}

fn next_char_end(src: &str, at: usize) -> usize {
    src.get(at..).and_then(|s| s.chars().next()).map_or(at, |c| at + c.len_utf8())
}

/// What the user wrote at the error position, as it reads in a message.
fn found_text(src: &str, at: usize) -> String {
    let rest = src.get(at..).unwrap_or("");
    let word: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
    match rest.chars().next() {
        None => "the end of the input".to_string(),
        Some(_) if !word.is_empty() => format!("`{word}`"),
        Some(c) => format!("`{c}`"),
    }
}

fn rule_name(r: &Rule) -> Option<&'static str> {
    Some(match r {
        Rule::flow_def | Rule::kw_flow => "`flow`",
        Rule::ident => "a name",
        Rule::number => "a number",
        Rule::string => "a string",
        Rule::event_decl => "`event`",
        Rule::dtype_decl => "`dtype`",
        Rule::base_decl => "`base`",
        Rule::repeat => "`repeat`",
        Rule::layer => "a layer",
        Rule::arg => "an argument",
        Rule::call | Rule::list => "a value",
        Rule::doc => "a doc comment",
        Rule::EOI => "the end of the input",
        _ => return None,
    })
}

fn join_or(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => one.to_string(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

fn flow_def(p: Pair<Rule>) -> FlowDef {
    let span = p.as_span().into();
    let mut docs = Vec::new();
    let mut name = None;
    let mut items = Vec::new();
    for q in p.into_inner() {
        match q.as_rule() {
            Rule::doc if name.is_none() => docs.push(doc_text(q)),
            Rule::ident => name = Some(ident(q)),
            Rule::event_decl => items.push(event(q)),
            Rule::dtype_decl => items.push(Item::Dtype(ident(first(q)))),
            Rule::base_decl => items.push(Item::Base(value(first(q)))),
            Rule::repeat => items.push(Item::Repeat(repeat(q))),
            Rule::layer => items.push(Item::Layer(layer(q))),
            _ => {}
        }
    }
    FlowDef { docs, name: name.expect("grammar: flow has a name"), items, span }
}

fn first(p: Pair<Rule>) -> Pair<Rule> {
    p.into_inner().next().expect("grammar guarantees a child")
}

fn doc_text(p: Pair<Rule>) -> String {
    let text = p.into_inner().next().map_or("", |t| t.as_str());
    text.strip_prefix(' ').unwrap_or(text).trim_end().to_string()
}

fn ident(p: Pair<Rule>) -> Ident {
    Ident { name: p.as_str().to_string(), span: p.as_span().into() }
}

fn event(p: Pair<Rule>) -> Item {
    let span = p.as_span().into();
    let dims = p.into_inner().map(|n| (int_of(n.as_str()), n.as_span().into())).collect();
    Item::Event { dims, span }
}

/// An integer as written; out-of-range or fractional numbers become -1, which every check rejects.
fn int_of(s: &str) -> i64 {
    s.parse::<i64>().unwrap_or(-1)
}

fn repeat(p: Pair<Rule>) -> Repeat {
    let span = p.as_span().into();
    let mut inner = p.into_inner();
    let n = inner.next().expect("grammar: repeat count");
    let count = (int_of(n.as_str()), n.as_span().into());
    let body = inner
        .filter_map(|q| match q.as_rule() {
            Rule::repeat => Some(Stmt::Repeat(repeat(q))),
            Rule::layer => Some(Stmt::Layer(layer(q))),
            _ => None,
        })
        .collect();
    Repeat { count, body, span }
}

fn layer(p: Pair<Rule>) -> Layer {
    let span = p.as_span().into();
    let mut inner = p.into_inner();
    let kind = ident(inner.next().expect("grammar: layer kind"));
    let args = inner.map(arg).collect();
    Layer { kind, args, span }
}

fn arg(p: Pair<Rule>) -> Arg {
    let mut inner: Vec<Pair<Rule>> = p.into_inner().collect();
    let v = value(inner.pop().expect("grammar: argument value"));
    let name = inner.pop().map(ident);
    Arg { name, value: v }
}

fn value(p: Pair<Rule>) -> Value {
    let span: Span = p.as_span().into();
    let kind = match p.as_rule() {
        Rule::number => ValueKind::Number {
            value: p.as_str().parse().unwrap_or(f64::NAN),
            int: p.as_str().parse().ok(),
        },
        Rule::string => ValueKind::Str(p.as_str().trim_matches('"').to_string()),
        Rule::ident => ValueKind::Ident(p.as_str().to_string()),
        Rule::list => ValueKind::List(p.into_inner().map(value).collect()),
        Rule::call => {
            let mut inner = p.into_inner();
            let name = ident(inner.next().expect("grammar: call name"));
            ValueKind::Call { name, args: inner.map(arg).collect() }
        }
        _ => unreachable!("grammar: value is call, list, number, string or ident"),
    };
    Value { kind, span }
}
