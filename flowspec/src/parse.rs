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
    check_nesting(src)?;
    let mut pairs = FlowParser::parse(Rule::file, src).map_err(|e| syntax_error(src, e))?;
    let file = pairs.next().expect("pest returns the `file` pair on success");
    let flows = file.into_inner().filter(|p| p.as_rule() == Rule::flow_def).map(flow_def).collect();
    Ok(File { flows })
}

/// The deepest nesting of brackets accepted. pest and the passes over the tree recurse, so
/// without a limit `[[[[...` a few thousand deep overflows the stack (and crashes rustc when it
/// comes through `flow!`); real specs nest three or four deep.
pub const MAX_NESTING: usize = 64;

/// Refuses brackets nested deeper than [`MAX_NESTING`], skipping comments and strings.
fn check_nesting(src: &str) -> Result<(), Diagnostic> {
    let bytes = src.as_bytes();
    let (mut i, mut depth) = (0, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                i = src[i..].find('\n').map_or(bytes.len(), |n| i + n);
                continue;
            }
            b'"' => {
                i = src[i + 1..].find('"').map_or(bytes.len(), |n| i + 1 + n);
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(Diagnostic::new(
                        Span::new(i, i + 1),
                        format!("brackets are nested more than {MAX_NESTING} deep here"),
                    ));
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

fn syntax_error(src: &str, e: pest::error::Error<Rule>) -> Diagnostic {
    let (start, end) = match e.location {
        pest::error::InputLocation::Pos(p) => (p, p),
        pest::error::InputLocation::Span((s, e)) => (s, e),
    };
    // pest's positives are reported where the last alternative began (e.g. the start of
    // `event [2]` when its `;` is missing) and name only rules, not literals such as `}`; its
    // parse attempts know the furthest position reached and every token expected there, which
    // is what the user needs.
    if let Some(a) = e.parse_attempts().filter(|a| a.max_position >= start) {
        let tokens: Vec<String> = a.expected_tokens().iter().map(|t| t.to_string()).collect();
        let at = a.max_position;
        let after_word = src
            .get(..at)
            .and_then(|s| s.chars().next_back())
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        let mut toks = expected_tokens(&tokens, after_word);
        // The end of the input is no token; pest names it among its positives.
        let eoi = matches!(&e.variant, pest::error::ErrorVariant::ParsingError { positives, .. } if positives.contains(&Rule::EOI));
        if eoi && at == start && !toks.is_empty() {
            toks.push("the end of the input".to_string());
        }
        if !toks.is_empty() {
            let refs: Vec<&str> = toks.iter().map(String::as_str).collect();
            let message =
                format!("syntax error: expected {}, found {}", join_or(&refs), found_text(src, at));
            return Diagnostic::new(found_span(src, at), message);
        }
    }
    let span = if end > start { Span::new(start, end) } else { found_span(src, start) };
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
    Diagnostic::new(span, message)
}

/// pest's expected tokens in the language's words: keywords and punctuation as written, and
/// the first characters of names, numbers and strings as "a name", "a number", "a string".
/// (pest does not export its token type, so this goes by their `Display`: a literal prints as
/// itself, a character range as `a..z`.)
///
/// Right after a name or a number (`after_word`), what would only continue it (more letters
/// or digits, a fraction, an exponent) is left out: `event [2` expects `,` or `]`.
fn expected_tokens(tokens: &[String], after_word: bool) -> Vec<String> {
    let mut toks: Vec<String> = tokens
        .iter()
        .filter_map(|t| match t.as_str() {
            "_" | "a..z" | "A..Z" => Some("a name".to_string()),
            "-" | "0..9" => Some("a number".to_string()),
            "\"" => Some("a string".to_string()),
            // Whitespace and comments may go anywhere; saying so is noise.
            t if t.trim().is_empty()
                || t == "//"
                || t == "///"
                || t.contains("..")
                || t == "BUILTIN_RULE" =>
            {
                None
            }
            t => Some(format!("`{t}`")),
        })
        .collect();
    if after_word {
        toks.retain(|t| !["a name", "a number", "`.`", "`e`", "`E`", "`+`"].contains(&t.as_str()));
    }
    toks.sort();
    toks.dedup();
    // Where an item may start, a name is a layer.
    if toks.iter().any(|t| t == "`repeat`") {
        toks.iter_mut().filter(|t| *t == "a name").for_each(|t| *t = "a layer".to_string());
    }
    // Where any value may start: a name, a number, a string or a list.
    const VALUE: [&str; 4] = ["`[`", "a name", "a number", "a string"];
    if VALUE.iter().all(|v| toks.iter().any(|t| t == v)) {
        toks.retain(|t| !VALUE.contains(&t.as_str()));
        toks.push("a value".to_string());
    }
    toks
}

/// The span of what [`found_text`] names: the word or character at `at`; at the end of the
/// input, the end of the last line with text on it (not the empty line after it).
fn found_span(src: &str, at: usize) -> Span {
    let rest = src.get(at..).unwrap_or("");
    if rest.is_empty() {
        let end = src.trim_end().len();
        return Span::new(end, end);
    }
    let word = rest
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .map(char::len_utf8)
        .sum::<usize>();
    if word > 0 {
        Span::new(at, at + word)
    } else {
        Span::new(at, next_char_end(src, at))
    }
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
    // A bare carriage return is not allowed in a Rust doc comment, which is how `flowspec
    // expand` prints the generated `#[doc]`s: it becomes a space.
    text.strip_prefix(' ').unwrap_or(text).trim_end().replace('\r', " ")
}

fn ident(p: Pair<Rule>) -> Ident {
    Ident { name: p.as_str().to_string(), span: p.as_span().into() }
}

fn event(p: Pair<Rule>) -> Item {
    let span = p.as_span().into();
    let dims = p.into_inner().map(|n| (int_of(n.as_str()), n.as_span().into())).collect();
    Item::Event { dims, span }
}

/// An integer as written. Integers too large for i64 become i64::MAX, which every limit
/// rejects as too large; negative ones, fractions and exponents become -1, which every check
/// rejects as not a positive integer.
fn int_of(s: &str) -> i64 {
    s.parse::<i64>().unwrap_or_else(|_| {
        if s.bytes().all(|b| b.is_ascii_digit()) {
            i64::MAX
        } else {
            -1
        }
    })
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
