//! The parsed query: statements, tabular pipelines and scalar expressions,
//! every node with its place in the text.

use crate::error::Span;

/// A name as written, with its place.
#[derive(Debug, Clone, PartialEq)]
pub struct Name {
    /// The text (quotes of `['...']` removed).
    pub text: String,
    /// Where it is.
    pub span: Span,
}

/// A whole query: `let` statements, then one tabular expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// The `let` statements, in order.
    pub lets: Vec<Let>,
    /// The tabular expression whose result is the answer.
    pub body: Tabular,
}

/// `let name = value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Let {
    /// The bound name.
    pub name: Name,
    /// What it is bound to.
    pub value: LetValue,
}

/// The right-hand side of a `let`.
#[derive(Debug, Clone, PartialEq)]
pub enum LetValue {
    /// A scalar expression.
    Scalar(Expr),
    /// A tabular expression.
    Tabular(Tabular),
}

/// A source followed by `| operator` steps.
#[derive(Debug, Clone, PartialEq)]
pub struct Tabular {
    /// Where the rows come from.
    pub source: Source,
    /// The operators, in order.
    pub ops: Vec<Op>,
}

/// The start of a pipeline.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A table (or a tabular `let`) by name.
    Table(Name),
    /// `union T1, T2, ...` at the start.
    Union(Union),
    /// `print a = 1, ...`: one row.
    Print(Span, Vec<NamedExpr>),
    /// `datatable(a: int, ...) [v1, v2, ...]`.
    Datatable {
        /// The keyword.
        span: Span,
        /// Columns and their type names.
        columns: Vec<(Name, Name)>,
        /// The values, row after row.
        values: Vec<Expr>,
    },
    /// `( tabular )`.
    Paren(Box<Tabular>),
}

/// `union` (as a source or an operator).
#[derive(Debug, Clone, PartialEq)]
pub struct Union {
    /// `kind=inner|outer`, if given.
    pub kind: Option<Name>,
    /// The tables.
    pub tables: Vec<Tabular>,
}

/// An expression with an optional `name =`.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedExpr {
    /// The name given, if any.
    pub name: Option<Name>,
    /// The expression.
    pub expr: Expr,
}

/// One `| operator ...` step.
#[derive(Debug, Clone, PartialEq)]
pub struct Op {
    /// The operator's name as written (`where`, `project-away`).
    pub name: String,
    /// The operator's keyword in the text.
    pub span: Span,
    /// What it does.
    pub kind: OpKind,
}

/// A `by` key of `sort`/`top`.
#[derive(Debug, Clone, PartialEq)]
pub struct SortKey {
    /// What to sort by.
    pub expr: Expr,
    /// `asc` (false) or `desc` (true), if written.
    pub desc: Option<bool>,
    /// `nulls first` (true) or `nulls last` (false), if written.
    pub nulls_first: Option<bool>,
}

/// A `join ... on` condition.
#[derive(Debug, Clone, PartialEq)]
pub enum JoinKey {
    /// `on col`: the same column on both sides.
    Same(Name),
    /// `on $left.a == $right.b`.
    Pair(Name, Name),
}

/// The operators.
#[derive(Debug, Clone, PartialEq)]
pub enum OpKind {
    /// `where predicate`.
    Where(Expr),
    /// `project a, b = expr`.
    Project(Vec<NamedExpr>),
    /// `project-away a, b*`.
    ProjectAway(Vec<Name>),
    /// `project-rename new = old`.
    ProjectRename(Vec<(Name, Name)>),
    /// `extend a = expr`.
    Extend(Vec<NamedExpr>),
    /// `summarize aggs by keys`.
    Summarize {
        /// Aggregations.
        aggs: Vec<NamedExpr>,
        /// Group keys.
        by: Vec<NamedExpr>,
    },
    /// `sort by` / `order by`.
    Sort(Vec<SortKey>),
    /// `top N by key`.
    Top {
        /// How many rows.
        count: Expr,
        /// The key.
        key: SortKey,
    },
    /// `take N` / `limit N`.
    Take(Expr),
    /// `count`.
    Count,
    /// `distinct a, b` (empty: `distinct *`).
    Distinct(Vec<Name>),
    /// `join kind=K (right) on keys`.
    Join {
        /// `kind=...`, if given.
        kind: Option<Name>,
        /// The right side.
        right: Box<Tabular>,
        /// The conditions.
        on: Vec<JoinKey>,
    },
    /// `union T2, ...`.
    Union(Union),
    /// `render kind with (...)`.
    Render {
        /// The chart kind.
        kind: Name,
        /// `with (name = value, ...)`.
        props: Vec<(Name, RenderValue)>,
    },
}

/// A `render ... with (...)` property value.
#[derive(Debug, Clone, PartialEq)]
pub enum RenderValue {
    /// A string literal.
    Str(String),
    /// One or more names (`ycolumns = a, b`).
    Names(Vec<Name>),
    /// A boolean.
    Bool(bool),
    /// A number.
    Number(f64),
}

/// A scalar expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    /// What it is.
    pub kind: ExprKind,
    /// Where it is.
    pub span: Span,
}

/// Binary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    /// `=~`
    EqCi,
    /// `!~`
    NeCi,
    And,
    Or,
}

/// The string operators (`has`, `contains`, `startswith`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrOpKind {
    Has,
    Contains,
    StartsWith,
    EndsWith,
    HasPrefix,
    HasSuffix,
}

/// Scalar expression kinds.
#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    /// A column or a scalar `let` by name.
    Name(String),
    /// A long literal.
    Long(i64),
    /// A real literal.
    Real(f64),
    /// A string literal.
    Str(String),
    /// `true` / `false`.
    Bool(bool),
    /// A timespan literal, microseconds.
    Timespan(i64),
    /// `datetime(...)` / `timespan(...)` with their raw text.
    TypedRaw(String, String),
    /// `*` (in `arg_max(x, *)`).
    Star,
    /// `-x`.
    Neg(Box<Expr>),
    /// `a op b`.
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// `a has b`, `a !contains_cs b`, ...
    StrOp {
        /// Which operator.
        op: StrOpKind,
        /// `!` in front.
        negated: bool,
        /// `_cs`: case-sensitive.
        case_sensitive: bool,
        /// Left side.
        left: Box<Expr>,
        /// Right side.
        right: Box<Expr>,
    },
    /// `a matches regex b`.
    Matches(Box<Expr>, Box<Expr>),
    /// `a in (...)`, `a !in~ (...)`.
    In {
        /// The value.
        expr: Box<Expr>,
        /// The list.
        list: Vec<Expr>,
        /// `!in`.
        negated: bool,
        /// `in~`: case-insensitive.
        case_insensitive: bool,
    },
    /// `a between (lo .. hi)`.
    Between {
        /// The value.
        expr: Box<Expr>,
        /// Lower bound.
        low: Box<Expr>,
        /// Upper bound.
        high: Box<Expr>,
        /// `!between`.
        negated: bool,
    },
    /// `f(args)`.
    Call {
        /// The function's name.
        name: Name,
        /// Its arguments.
        args: Vec<Expr>,
    },
}
