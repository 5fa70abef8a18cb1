//! The syntax tree: what the spec says, with a byte span on every node. Nothing is checked
//! here beyond the grammar; `check` turns this into the typed IR.

use crate::span::Span;

/// A whole spec file (or the body of an inline `flow! { ... }`).
#[derive(Clone, Debug, PartialEq)]
pub struct File {
    pub flows: Vec<FlowDef>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FlowDef {
    pub docs: Vec<String>,
    pub name: Ident,
    pub items: Vec<Item>,
    /// The `flow` keyword through the closing brace.
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    Event { dims: Vec<(i64, Span)>, span: Span },
    Dtype(Ident),
    Base(Value),
    Repeat(Repeat),
    Layer(Layer),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Repeat {
    pub count: (i64, Span),
    pub body: Vec<Stmt>,
    pub span: Span,
}

/// What a `repeat` body holds.
#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    Repeat(Repeat),
    Layer(Layer),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    pub kind: Ident,
    pub args: Vec<Arg>,
    pub span: Span,
}

/// `name = value`, or a positional `value` (name `None`).
#[derive(Clone, Debug, PartialEq)]
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Value,
}

impl Arg {
    pub fn span(&self) -> Span {
        match &self.name {
            Some(n) => n.span.to(self.value.span),
            None => self.value.span,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    pub kind: ValueKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ValueKind {
    /// A number as written; integers are also kept exactly.
    Number {
        value: f64,
        int: Option<i64>,
    },
    Str(String),
    Ident(String),
    List(Vec<Value>),
    Call {
        name: Ident,
        args: Vec<Arg>,
    },
}

impl ValueKind {
    /// How the value reads in an error message ("a list", "the name `relu`", ...).
    pub fn describe(&self) -> String {
        match self {
            ValueKind::Number { int: Some(i), .. } => format!("the integer {i}"),
            ValueKind::Number { value, .. } => format!("the number {value}"),
            ValueKind::Str(s) => format!("the string {s:?}"),
            ValueKind::Ident(s) => format!("the name `{s}`"),
            ValueKind::List(_) => "a list".to_string(),
            ValueKind::Call { name, .. } => format!("a call to `{}`", name.name),
        }
    }
}
