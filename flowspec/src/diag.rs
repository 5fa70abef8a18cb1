//! Diagnostics: every error carries a span. The checker collects them all (it does not stop at
//! the first) and the front ends render them: the CLI and file-based `flow!` as
//!
//! ```text
//! error: a coupling layer needs an event of at least 2 dimensions, but `Tiny` has event [1]
//!  --> specs/tiny.flow:4:5
//!   |
//! 4 |     affine_coupling(mask = alternate);
//!   |     ^^^^^^^^^^^^^^^
//!   = help: ...
//! ```
//! and inline `flow! { ... }` as a compile error on the offending tokens.

use crate::span::{line_col, line_text, Span};
use std::fmt::Write;

/// One error, with where it is and optional help lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub message: String,
    pub span: Span,
    pub help: Vec<String>,
}

impl Diagnostic {
    pub fn new(span: Span, message: impl Into<String>) -> Self {
        Self { message: message.into(), span, help: Vec::new() }
    }
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help.push(help.into());
        self
    }
    /// The message followed by its help lines, for front ends that show the span themselves.
    pub fn message_with_help(&self) -> String {
        let mut s = self.message.clone();
        for h in &self.help {
            let _ = write!(s, "\n  = help: {h}");
        }
        s
    }
}

/// Errors collected over a pass.
#[derive(Debug, Default)]
pub struct Diagnostics {
    list: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.list.push(d);
    }
    pub fn error(&mut self, span: Span, message: impl Into<String>) {
        self.push(Diagnostic::new(span, message));
    }
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
    pub fn len(&self) -> usize {
        self.list.len()
    }
    /// The diagnostics in source order. A layer inside `repeat 4 { ... }` is checked four
    /// times; its error is reported once.
    pub fn into_vec(mut self) -> Vec<Diagnostic> {
        self.list.sort_by_key(|d| (d.span.start, d.span.end));
        self.list.dedup();
        self.list
    }
}

/// Renders one diagnostic against its source, `file:line:col`, the source line and a caret.
pub fn render(d: &Diagnostic, file: &str, src: &str) -> String {
    let lc = line_col(src, d.span.start);
    let text = line_text(src, lc.line);
    let gutter = " ".repeat(lc.line.to_string().len());
    let end_lc = line_col(src, d.span.end);
    let width = if end_lc.line == lc.line && end_lc.col > lc.col { end_lc.col - lc.col } else { 1 };
    let mut out = String::new();
    let _ = writeln!(out, "error: {}", d.message);
    let _ = writeln!(out, "{gutter}--> {file}:{}:{}", lc.line, lc.col);
    let _ = writeln!(out, "{gutter} |");
    let _ = writeln!(out, "{} | {text}", lc.line);
    let pad: String =
        text.chars().take(lc.col - 1).map(|c| if c == '\t' { '\t' } else { ' ' }).collect();
    let _ = writeln!(out, "{gutter} | {pad}{}", "^".repeat(width));
    for h in &d.help {
        let _ = writeln!(out, "{gutter} = help: {h}");
    }
    out
}

/// Renders every diagnostic, separated by blank lines, and a count at the end.
pub fn render_all(ds: &[Diagnostic], file: &str, src: &str) -> String {
    let mut out: Vec<String> = ds.iter().map(|d| render(d, file, src)).collect();
    let n = ds.len();
    out.push(format!("{n} error{} in {file}\n", if n == 1 { "" } else { "s" }));
    out.join("\n")
}
