//! Scalar expressions: KQL's operators, functions, types and null rules in
//! DuckDB SQL.

use crate::ast::{BinOp, Expr, ExprKind, StrOpKind};
use crate::error::{semantic, syntax, unsupported, Result, Span};
use crate::sqlgen::{self, DAY_US};
use crate::types::Type;

use super::{cname, Bound, RCol, Translator};

/// A constant value known at translation time.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Lit {
    Long(i64),
    Real(f64),
    Str(String),
    Bool(bool),
    Timespan(i64),
    DateTime(i64),
    Null,
}

/// A translated scalar expression.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SqlExpr {
    /// DuckDB SQL.
    pub sql: String,
    /// KQL type.
    pub ty: Type,
    /// Whether it can be null (strings never are).
    pub nullable: bool,
    /// The value, when it is a constant.
    pub lit: Option<Lit>,
    /// The column name KQL derives for it, if any.
    pub name: Option<String>,
}

impl SqlExpr {
    fn new(sql: impl Into<String>, ty: Type, nullable: bool) -> SqlExpr {
        SqlExpr {
            sql: sql.into(),
            ty,
            nullable: nullable && ty != Type::String,
            lit: None,
            name: None,
        }
    }

    fn lit(sql: impl Into<String>, ty: Type, lit: Lit) -> SqlExpr {
        let nullable = lit == Lit::Null;
        SqlExpr {
            sql: sql.into(),
            ty,
            nullable,
            lit: Some(lit),
            name: None,
        }
    }

    fn named(mut self, name: Option<String>) -> SqlExpr {
        self.name = name;
        self
    }
}

/// A name visible to expressions, with the SQL that reads it.
#[derive(Debug, Clone)]
pub(crate) struct ScopeCol {
    pub name: String,
    pub sql: String,
    pub ty: Type,
    pub nullable: bool,
}

/// The columns an expression can use.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scope {
    pub cols: Vec<ScopeCol>,
}

impl Scope {
    pub fn empty() -> Scope {
        Scope::default()
    }

    /// The columns of a relation, read as `{prefix}c{i}`.
    pub fn of(cols: &[RCol], prefix: &str) -> Scope {
        Scope {
            cols: cols
                .iter()
                .enumerate()
                .map(|(i, c)| ScopeCol {
                    name: c.name.clone(),
                    sql: format!("{prefix}{}", cname(i)),
                    ty: c.ty,
                    nullable: c.nullable,
                })
                .collect(),
        }
    }

    fn find(&self, name: &str) -> Option<&ScopeCol> {
        self.cols.iter().rev().find(|c| c.name == name)
    }

    pub fn names(&self) -> String {
        let names: Vec<&str> = self.cols.iter().map(|c| c.name.as_str()).collect();
        if names.is_empty() {
            "no columns".into()
        } else {
            names.join(", ")
        }
    }
}

/// The aggregation functions (translated in `summarize` only).
pub(crate) const AGGREGATES: &[&str] = &[
    "count",
    "countif",
    "dcount",
    "sum",
    "avg",
    "min",
    "max",
    "percentile",
    "percentiles",
    "make_list",
    "arg_max",
    "arg_min",
];

/// The scalar functions translated.
pub(crate) const FUNCTIONS: &[&str] = &[
    "bin",
    "floor",
    "ago",
    "now",
    "datetime",
    "todatetime",
    "tostring",
    "toint",
    "tolong",
    "toreal",
    "todouble",
    "strcat",
    "tolower",
    "toupper",
    "iff",
    "iif",
    "case",
    "startofday",
    "startofmonth",
    "format_datetime",
    "isnull",
    "isnotnull",
    "isempty",
    "isnotempty",
    "not",
    "strlen",
];

fn numeric_result(a: Type, b: Type) -> Type {
    if a == Type::Real || b == Type::Real {
        Type::Real
    } else if a == Type::Decimal || b == Type::Decimal {
        Type::Decimal
    } else {
        Type::Long
    }
}

/// The common type of two branches (iff, case), if there is one.
fn unify(a: Type, b: Type) -> Option<Type> {
    if a == b {
        Some(a)
    } else if a.is_numeric() && b.is_numeric() {
        Some(numeric_result(a, b))
    } else {
        None
    }
}

fn comparable(a: Type, b: Type) -> bool {
    (a.is_numeric() && b.is_numeric()) || a == b
}

/// `a == b` with KQL's nulls: two nulls give null, one null gives false.
pub(crate) fn eq_sql(a: &SqlExpr, b: &SqlExpr, negate: bool) -> String {
    let op = if negate { "<>" } else { "=" };
    if !a.nullable && !b.nullable {
        return format!("(({}) {op} ({}))", a.sql, b.sql);
    }
    format!(
        "(CASE WHEN ({a}) IS NULL AND ({b}) IS NULL THEN NULL ELSE coalesce(({a}) {op} ({b}), {d}) END)",
        a = a.sql,
        b = b.sql,
        d = if negate { "true" } else { "false" }
    )
}

/// A value's text as `tostring()` gives it.
pub(crate) fn to_text(e: &SqlExpr) -> String {
    let x = &e.sql;
    match e.ty {
        Type::String => x.clone(),
        Type::DateTime => format!("coalesce({}, '')", sqlgen::datetime_text(x)),
        Type::TimeSpan => format!("coalesce({}, '')", sqlgen::timespan_text(x)),
        Type::Real => format!(
            "coalesce(CASE WHEN ({x}) = trunc({x}) AND abs({x}) < 1e15 THEN CAST(CAST({x} AS BIGINT) AS VARCHAR) ELSE CAST({x} AS VARCHAR) END, '')"
        ),
        Type::Decimal => format!(
            "coalesce(CASE WHEN ({x}) = trunc({x}) THEN CAST(CAST(trunc({x}) AS HUGEINT) AS VARCHAR) ELSE rtrim(CAST({x} AS VARCHAR), '0') END, '')"
        ),
        _ => format!("coalesce(CAST({x} AS VARCHAR), '')"),
    }
}

/// A value as an element of a dynamic array (make_list): datetimes and
/// timespans as KQL's text, others as themselves.
pub(crate) fn json_element(e: &SqlExpr) -> String {
    match e.ty {
        Type::DateTime => sqlgen::datetime_text(&e.sql),
        Type::TimeSpan => sqlgen::timespan_text(&e.sql),
        Type::Decimal => format!("CAST({} AS DOUBLE)", e.sql),
        _ => e.sql.clone(),
    }
}

fn regex_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn arity(name: &str, span: Span, args: &[Expr], min: usize, max: usize) -> Result<()> {
    if args.len() < min || args.len() > max {
        let want = if min == max {
            format!("{min}")
        } else if max == usize::MAX {
            format!("at least {min}")
        } else {
            format!("{min} to {max}")
        };
        return Err(semantic(
            span,
            format!(
                "{name}() takes {want} argument{}, not {}",
                if want == "1" { "" } else { "s" },
                args.len()
            ),
        ));
    }
    Ok(())
}

impl Translator<'_> {
    /// Translates a scalar expression over `scope`.
    pub(crate) fn expr(&mut self, e: &Expr, scope: &Scope) -> Result<SqlExpr> {
        match &e.kind {
            ExprKind::Name(n) => {
                if let Some(c) = scope.find(n) {
                    return Ok(SqlExpr::new(c.sql.clone(), c.ty, c.nullable).named(Some(n.clone())));
                }
                match self.lets.get(n) {
                    Some(Bound::Scalar(v)) => Ok(v.clone().named(Some(n.clone()))),
                    Some(Bound::Tabular(_)) => Err(semantic(
                        e.span,
                        format!("'{n}' is a tabular `let`; it cannot be used as a scalar"),
                    )),
                    None => Err(semantic(
                        e.span,
                        format!(
                            "'{n}' is not a column here or a scalar `let` (the input has {})",
                            scope.names()
                        ),
                    )),
                }
            }
            ExprKind::Long(v) => Ok(SqlExpr::lit(
                format!("CAST({v} AS BIGINT)"),
                Type::Long,
                Lit::Long(*v),
            )),
            ExprKind::Real(v) => Ok(SqlExpr::lit(sqlgen::real(*v), Type::Real, Lit::Real(*v))),
            ExprKind::Str(s) => Ok(SqlExpr::lit(
                sqlgen::string(s),
                Type::String,
                Lit::Str(s.clone()),
            )),
            ExprKind::Bool(b) => Ok(SqlExpr::lit(
                if *b { "true" } else { "false" },
                Type::Bool,
                Lit::Bool(*b),
            )),
            ExprKind::Timespan(v) => Ok(SqlExpr::lit(
                format!("CAST({v} AS BIGINT)"),
                Type::TimeSpan,
                Lit::Timespan(*v),
            )),
            ExprKind::TypedRaw(ty, raw) => {
                if ty == "datetime" {
                    match sqlgen::datetime_literal(raw).map_err(|m| syntax(e.span, m))? {
                        Some(us) => Ok(SqlExpr::lit(
                            sqlgen::timestamp(us),
                            Type::DateTime,
                            Lit::DateTime(us),
                        )),
                        None => Ok(SqlExpr::lit(
                            "CAST(NULL AS TIMESTAMP)",
                            Type::DateTime,
                            Lit::Null,
                        )),
                    }
                } else {
                    match sqlgen::timespan_literal(raw).map_err(|m| syntax(e.span, m))? {
                        Some(us) => Ok(SqlExpr::lit(
                            format!("CAST({us} AS BIGINT)"),
                            Type::TimeSpan,
                            Lit::Timespan(us),
                        )),
                        None => Ok(SqlExpr::lit(
                            "CAST(NULL AS BIGINT)",
                            Type::TimeSpan,
                            Lit::Null,
                        )),
                    }
                }
            }
            ExprKind::Star => Err(syntax(
                e.span,
                "'*' is only allowed as an argument of arg_max/arg_min",
            )),
            ExprKind::Neg(inner) => {
                let v = self.expr(inner, scope)?;
                if !(v.ty.is_numeric() || v.ty == Type::TimeSpan) {
                    return Err(semantic(
                        e.span,
                        format!("unary '-' needs a number or a timespan, not a {}", v.ty),
                    ));
                }
                let ty = if v.ty == Type::Int { Type::Long } else { v.ty };
                Ok(SqlExpr::new(
                    format!("(-CAST({} AS {}))", v.sql, ty.sql()),
                    ty,
                    v.nullable,
                ))
            }
            ExprKind::Binary(op, a, b) => self.binary(*op, a, b, e.span, scope),
            ExprKind::StrOp {
                op,
                negated,
                case_sensitive,
                left,
                right,
            } => self.str_op(*op, *negated, *case_sensitive, left, right, e.span, scope),
            ExprKind::Matches(a, b) => {
                let l = self.string_operand(a, scope, "matches regex")?;
                let r = self.string_operand(b, scope, "matches regex")?;
                if r.lit.is_none() {
                    return Err(unsupported(
                        b.span,
                        "matches regex with a pattern that is not a string literal",
                    ));
                }
                Ok(SqlExpr::new(
                    format!("regexp_matches({}, {})", l.sql, r.sql),
                    Type::Bool,
                    false,
                ))
            }
            ExprKind::In {
                expr,
                list,
                negated,
                case_insensitive,
            } => {
                let v = self.expr(expr, scope)?;
                let mut items = Vec::new();
                for it in list {
                    let x = self.expr(it, scope)?;
                    if !comparable(v.ty, x.ty) {
                        return Err(semantic(
                            it.span,
                            format!("`in` compares a {} with a {}", v.ty, x.ty),
                        ));
                    }
                    items.push(if *case_insensitive {
                        if x.ty != Type::String {
                            return Err(semantic(it.span, "`in~` compares strings"));
                        }
                        format!("lower({})", x.sql)
                    } else {
                        x.sql
                    });
                }
                if items.is_empty() {
                    return Ok(SqlExpr::new(
                        if *negated { "true" } else { "false" },
                        Type::Bool,
                        false,
                    ));
                }
                let lhs = if *case_insensitive {
                    if v.ty != Type::String {
                        return Err(semantic(expr.span, "`in~` compares strings"));
                    }
                    format!("lower({})", v.sql)
                } else {
                    v.sql.clone()
                };
                // A null value is in no list (as `==` with a null is false).
                let test = format!("coalesce(({lhs}) IN ({}), false)", items.join(", "));
                Ok(SqlExpr::new(
                    if *negated {
                        format!("(NOT {test})")
                    } else {
                        format!("({test})")
                    },
                    Type::Bool,
                    false,
                ))
            }
            ExprKind::Between {
                expr,
                low,
                high,
                negated,
            } => {
                let v = self.expr(expr, scope)?;
                let lo = self.expr(low, scope)?;
                let mut hi = self.expr(high, scope)?;
                // datetime between (start .. 1d): the upper bound is a span.
                if v.ty == Type::DateTime && lo.ty == Type::DateTime && hi.ty == Type::TimeSpan {
                    hi = SqlExpr::new(
                        format!("make_timestamp(epoch_us({}) + {})", lo.sql, hi.sql),
                        Type::DateTime,
                        true,
                    );
                }
                for b in [&lo, &hi] {
                    if !comparable(v.ty, b.ty) || v.ty == Type::Dynamic {
                        return Err(semantic(
                            e.span,
                            format!("between compares a {} with a {}", v.ty, b.ty),
                        ));
                    }
                }
                let test = format!(
                    "(({v}) >= ({lo}) AND ({v}) <= ({hi}))",
                    v = v.sql,
                    lo = lo.sql,
                    hi = hi.sql
                );
                Ok(SqlExpr::new(
                    if *negated {
                        format!("(NOT {test})")
                    } else {
                        test
                    },
                    Type::Bool,
                    v.nullable || lo.nullable || hi.nullable,
                ))
            }
            ExprKind::Call { name, args } => self.call(&name.text, name.span, args, e.span, scope),
        }
    }

    fn string_operand(&mut self, e: &Expr, scope: &Scope, op: &str) -> Result<SqlExpr> {
        let v = self.expr(e, scope)?;
        if v.ty != Type::String {
            return Err(semantic(
                e.span,
                format!(
                    "{op} works on strings, and this is a {} (convert it with tostring())",
                    v.ty
                ),
            ));
        }
        Ok(v)
    }

    #[allow(clippy::too_many_arguments)]
    fn str_op(
        &mut self,
        op: StrOpKind,
        negated: bool,
        cs: bool,
        left: &Expr,
        right: &Expr,
        _span: Span,
        scope: &Scope,
    ) -> Result<SqlExpr> {
        let opname = format!(
            "{}{}{}",
            if negated { "!" } else { "" },
            match op {
                StrOpKind::Has => "has",
                StrOpKind::Contains => "contains",
                StrOpKind::StartsWith => "startswith",
                StrOpKind::EndsWith => "endswith",
                StrOpKind::HasPrefix => "hasprefix",
                StrOpKind::HasSuffix => "hassuffix",
            },
            if cs { "_cs" } else { "" }
        );
        // KQL converts the left side of string operators to text.
        let l = self.expr(left, scope)?;
        let l_sql = to_text(&l);
        let r = self.string_operand(right, scope, &opname)?;
        let (a, b) = if cs {
            (l_sql.clone(), r.sql.clone())
        } else {
            (format!("lower({l_sql})"), format!("lower({})", r.sql))
        };
        let test = match op {
            StrOpKind::Contains => format!("contains({a}, {b})"),
            StrOpKind::StartsWith => format!("starts_with({a}, {b})"),
            StrOpKind::EndsWith => format!("ends_with({a}, {b})"),
            StrOpKind::Has | StrOpKind::HasPrefix | StrOpKind::HasSuffix => {
                // Terms are maximal runs of ASCII letters and digits; `has`
                // matches whole terms (or a run of them, for a phrase).
                let Some(Lit::Str(term)) = &r.lit else {
                    return Err(unsupported(
                        right.span,
                        format!("{opname} with a right side that is not a string literal"),
                    ));
                };
                let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
                if !alnum(term.chars().next()) || !alnum(term.chars().last()) {
                    return Err(unsupported(
                        right.span,
                        format!(
                            "{opname} with a term that does not start and end with a letter or digit ('{term}'); use contains"
                        ),
                    ));
                }
                let esc = regex_escape(term);
                let before = if op == StrOpKind::HasSuffix {
                    ""
                } else {
                    "(^|[^[:alnum:]])"
                };
                let after = if op == StrOpKind::HasPrefix {
                    ""
                } else {
                    "($|[^[:alnum:]])"
                };
                let flags = if cs { "" } else { "(?i)" };
                format!(
                    "regexp_matches({l_sql}, {})",
                    sqlgen::string(&format!("{flags}{before}{esc}{after}"))
                )
            }
        };
        Ok(SqlExpr::new(
            if negated {
                format!("(NOT {test})")
            } else {
                format!("({test})")
            },
            Type::Bool,
            false,
        ))
    }

    fn binary(
        &mut self,
        op: BinOp,
        a: &Expr,
        b: &Expr,
        span: Span,
        scope: &Scope,
    ) -> Result<SqlExpr> {
        let l = self.expr(a, scope)?;
        let r = self.expr(b, scope)?;
        let nullable = l.nullable || r.nullable;
        let sym = match op {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Mod => "%",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::EqCi => "=~",
            BinOp::NeCi => "!~",
            BinOp::And => "and",
            BinOp::Or => "or",
        };
        let mismatch = || {
            semantic(
                span,
                format!("'{sym}' is not defined for {} and {}", l.ty, r.ty),
            )
        };
        match op {
            BinOp::And | BinOp::Or => {
                if l.ty != Type::Bool || r.ty != Type::Bool {
                    return Err(mismatch());
                }
                let w = if op == BinOp::And { "AND" } else { "OR" };
                Ok(SqlExpr::new(
                    format!("({} {w} {})", l.sql, r.sql),
                    Type::Bool,
                    nullable,
                ))
            }
            BinOp::Eq | BinOp::Ne => {
                if !comparable(l.ty, r.ty) || l.ty == Type::Dynamic {
                    return Err(mismatch());
                }
                Ok(SqlExpr::new(
                    eq_sql(&l, &r, op == BinOp::Ne),
                    Type::Bool,
                    nullable,
                ))
            }
            BinOp::EqCi | BinOp::NeCi => {
                if l.ty != Type::String || r.ty != Type::String {
                    return Err(mismatch());
                }
                let o = if op == BinOp::EqCi { "=" } else { "<>" };
                Ok(SqlExpr::new(
                    format!("(lower({}) {o} lower({}))", l.sql, r.sql),
                    Type::Bool,
                    false,
                ))
            }
            BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
                if !comparable(l.ty, r.ty) || matches!(l.ty, Type::Dynamic | Type::Bool) {
                    return Err(mismatch());
                }
                let o = match op {
                    BinOp::Lt => "<",
                    BinOp::Le => "<=",
                    BinOp::Gt => ">",
                    _ => ">=",
                };
                Ok(SqlExpr::new(
                    format!("(({}) {o} ({}))", l.sql, r.sql),
                    Type::Bool,
                    nullable,
                ))
            }
            BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Mod => self
                .arithmetic(op, &l, &r, span, nullable)
                .ok_or_else(mismatch)?,
        }
    }

    /// Arithmetic; None when the types do not combine.
    fn arithmetic(
        &mut self,
        op: BinOp,
        l: &SqlExpr,
        r: &SqlExpr,
        span: Span,
        nullable: bool,
    ) -> Option<Result<SqlExpr>> {
        use Type::*;
        let (a, b) = (&l.sql, &r.sql);
        let out = |sql: std::string::String, ty: Type| Some(Ok(SqlExpr::new(sql, ty, true)));
        match (l.ty, r.ty, op) {
            (x, y, _) if x.is_numeric() && y.is_numeric() => {
                let ty = numeric_result(x, y);
                if ty == Decimal && matches!(op, BinOp::Div | BinOp::Mod) {
                    return Some(Err(unsupported(
                        span,
                        "division and modulo of decimal values",
                    )));
                }
                let (ca, cb) = (
                    format!("CAST({a} AS {})", ty.sql()),
                    format!("CAST({b} AS {})", ty.sql()),
                );
                let sql = match (op, ty) {
                    // Integers divide with truncation, as in KQL (DuckDB's
                    // `//` truncates; division by zero is null).
                    (BinOp::Div, Long) => format!("({ca} // {cb})"),
                    (BinOp::Div, _) => format!("({ca} / {cb})"),
                    (BinOp::Mod, Real) => sqlgen::modulo(&ca, &cb),
                    (BinOp::Mod, _) => format!(
                        "CASE WHEN {cb} = 0 THEN NULL ELSE {} END",
                        sqlgen::modulo(&ca, &cb)
                    ),
                    (BinOp::Add, _) => format!("({ca} + {cb})"),
                    (BinOp::Sub, _) => format!("({ca} - {cb})"),
                    _ => format!("({ca} * {cb})"),
                };
                let nullable = nullable || matches!(op, BinOp::Div | BinOp::Mod);
                Some(Ok(SqlExpr::new(sql, ty, nullable)))
            }
            (DateTime, DateTime, BinOp::Sub) => {
                out(format!("(epoch_us({a}) - epoch_us({b}))"), TimeSpan)
            }
            (DateTime, TimeSpan, BinOp::Add) | (DateTime, TimeSpan, BinOp::Sub) => {
                let o = if op == BinOp::Add { "+" } else { "-" };
                out(format!("make_timestamp(epoch_us({a}) {o} ({b}))"), DateTime)
            }
            (TimeSpan, DateTime, BinOp::Add) => {
                out(format!("make_timestamp(epoch_us({b}) + ({a}))"), DateTime)
            }
            (DateTime, TimeSpan, BinOp::Mod) => out(
                format!(
                    "CASE WHEN ({b}) = 0 THEN NULL ELSE {} END",
                    sqlgen::modulo(&format!("epoch_us({a})"), b)
                ),
                TimeSpan,
            ),
            (TimeSpan, TimeSpan, BinOp::Add) => out(format!("(({a}) + ({b}))"), TimeSpan),
            (TimeSpan, TimeSpan, BinOp::Sub) => out(format!("(({a}) - ({b}))"), TimeSpan),
            (TimeSpan, TimeSpan, BinOp::Mod) => out(
                format!(
                    "CASE WHEN ({b}) = 0 THEN NULL ELSE {} END",
                    sqlgen::modulo(a, b)
                ),
                TimeSpan,
            ),
            (TimeSpan, TimeSpan, BinOp::Div) => {
                out(format!("(CAST({a} AS DOUBLE) / CAST({b} AS DOUBLE))"), Real)
            }
            (TimeSpan, y, BinOp::Mul) if y.is_numeric() => out(
                format!("CAST(round(CAST({a} AS DOUBLE) * CAST({b} AS DOUBLE)) AS BIGINT)"),
                TimeSpan,
            ),
            (x, TimeSpan, BinOp::Mul) if x.is_numeric() => out(
                format!("CAST(round(CAST({a} AS DOUBLE) * CAST({b} AS DOUBLE)) AS BIGINT)"),
                TimeSpan,
            ),
            (TimeSpan, y, BinOp::Div) if y.is_numeric() => out(
                format!(
                    "CAST(round(CAST({a} AS DOUBLE) / nullif(CAST({b} AS DOUBLE), 0)) AS BIGINT)"
                ),
                TimeSpan,
            ),
            _ => None,
        }
    }

    /// `bin(value, size)` (also `floor(value, size)`).
    fn bin(&mut self, v: &SqlExpr, size: &SqlExpr, span: Span) -> Result<SqlExpr> {
        match size.lit {
            Some(Lit::Long(n)) if n <= 0 => {
                return Err(semantic(span, "bin()'s size must be positive"));
            }
            Some(Lit::Real(n)) if n <= 0.0 => {
                return Err(semantic(span, "bin()'s size must be positive"));
            }
            Some(Lit::Timespan(n)) if n <= 0 => {
                return Err(semantic(span, "bin()'s size must be positive"));
            }
            _ => {}
        }
        let (x, s) = (&v.sql, &size.sql);
        let nullable = v.nullable || size.nullable;
        let r = match (v.ty, size.ty) {
            (Type::DateTime, Type::TimeSpan) => {
                let e = format!("epoch_us({x})");
                SqlExpr::new(format!("make_timestamp({e} - {})", sqlgen::modulo(&e, s)), Type::DateTime, nullable)
            }
            (Type::TimeSpan, Type::TimeSpan) => {
                SqlExpr::new(format!("(({x}) - {})", sqlgen::modulo(x, s)), Type::TimeSpan, nullable)
            }
            (a, b) if a.is_integer() && b.is_integer() => {
                let (cx, cs) = (format!("CAST({x} AS BIGINT)"), format!("CAST({s} AS BIGINT)"));
                SqlExpr::new(format!("({cx} - {})", sqlgen::modulo(&cx, &cs)), Type::Long, nullable)
            }
            (a, b) if a.is_numeric() && b.is_numeric() => SqlExpr::new(
                format!("(floor(CAST({x} AS DOUBLE) / CAST({s} AS DOUBLE)) * CAST({s} AS DOUBLE))"),
                Type::Real,
                nullable,
            ),
            (a, b) => {
                return Err(semantic(
                    span,
                    format!("bin() rounds a number by a number, or a datetime/timespan by a timespan; not a {a} by a {b}"),
                ))
            }
        };
        Ok(r)
    }

    fn now(&self) -> SqlExpr {
        SqlExpr::lit(
            sqlgen::timestamp(self.options.now_us),
            Type::DateTime,
            Lit::DateTime(self.options.now_us),
        )
    }

    fn call(
        &mut self,
        name: &str,
        name_span: Span,
        args: &[Expr],
        span: Span,
        scope: &Scope,
    ) -> Result<SqlExpr> {
        // Typed literals: int(null), long(5), real(1), bool(true), dynamic(null).
        if let Some(ty) = Type::from_name(name)
            .filter(|_| !matches!(name, "datetime" | "timespan" | "time" | "date"))
        {
            arity(name, span, args, 1, 1)?;
            if matches!(&args[0].kind, ExprKind::Name(n) if n == "null") {
                let sql = if ty == Type::String {
                    "''".to_string()
                } else {
                    format!("CAST(NULL AS {})", ty.sql())
                };
                return Ok(SqlExpr::lit(
                    sql,
                    ty,
                    if ty == Type::String {
                        Lit::Str(String::new())
                    } else {
                        Lit::Null
                    },
                ));
            }
            if ty == Type::Dynamic {
                return Err(unsupported(
                    span,
                    "dynamic literals other than dynamic(null)",
                ));
            }
            let v = self.expr(&args[0], scope)?;
            let ok = match ty {
                Type::Int | Type::Long | Type::Real | Type::Decimal => v.ty.is_numeric(),
                Type::Bool => v.ty == Type::Bool,
                Type::String => v.ty == Type::String,
                _ => false,
            };
            if !ok || v.lit.is_none() {
                return Err(semantic(
                    span,
                    format!(
                        "{name}(...) is a literal of type {ty}; use to{name}() to convert a {}",
                        v.ty
                    ),
                ));
            }
            return Ok(SqlExpr {
                sql: format!("CAST({} AS {})", v.sql, ty.sql()),
                ty,
                nullable: false,
                lit: v.lit,
                name: None,
            });
        }
        if AGGREGATES.contains(&name) {
            return Err(semantic(
                name_span,
                format!("{name}() is an aggregation function: use it in summarize"),
            ));
        }
        let mut a = Vec::new();
        // Arguments are translated up front except where a function needs
        // their shape.
        for x in args {
            a.push(self.expr(x, scope)?);
        }
        let first_name = a.first().and_then(|x| x.name.clone());
        let need = |i: usize, ok: &dyn Fn(Type) -> bool, what: &str| -> Result<()> {
            if ok(a[i].ty) {
                Ok(())
            } else {
                Err(semantic(
                    args[i].span,
                    format!(
                        "{name}()'s argument {} must be {what}, not a {}",
                        i + 1,
                        a[i].ty
                    ),
                ))
            }
        };
        let r = match name {
            "bin" | "floor" => {
                arity(name, span, args, 2, 2)?;
                self.bin(&a[0], &a[1], span)?.named(first_name)
            }
            "now" => {
                arity(name, span, args, 0, 1)?;
                match a.first() {
                    None => self.now(),
                    Some(off) => {
                        need(0, &|t| t == Type::TimeSpan, "a timespan")?;
                        SqlExpr::new(format!("make_timestamp(CAST({} AS BIGINT) + ({}))", self.options.now_us, off.sql), Type::DateTime, off.nullable)
                    }
                }
            }
            "ago" => {
                arity(name, span, args, 1, 1)?;
                need(0, &|t| t == Type::TimeSpan, "a timespan")?;
                SqlExpr::new(format!("make_timestamp(CAST({} AS BIGINT) - ({}))", self.options.now_us, a[0].sql), Type::DateTime, a[0].nullable)
            }
            "todatetime" => {
                arity(name, span, args, 1, 1)?;
                match a[0].ty {
                    Type::DateTime => a[0].clone(),
                    Type::String => SqlExpr::new(sqlgen::parse_datetime(&a[0].sql), Type::DateTime, true),
                    t => return Err(semantic(args[0].span, format!("todatetime() converts strings, not a {t}"))),
                }
                .named(first_name)
            }
            "tostring" => {
                arity(name, span, args, 1, 1)?;
                SqlExpr::new(to_text(&a[0]), Type::String, false).named(first_name)
            }
            "toint" | "tolong" => {
                arity(name, span, args, 1, 1)?;
                let ty = if name == "toint" { Type::Int } else { Type::Long };
                let x = &a[0].sql;
                let sql = match a[0].ty {
                    Type::Int | Type::Long => format!("TRY_CAST({x} AS {})", ty.sql()),
                    // KQL truncates toward zero; DuckDB's cast would round.
                    Type::Real | Type::Decimal => format!("TRY_CAST(trunc({x}) AS {})", ty.sql()),
                    Type::Bool => format!("CAST({x} AS {})", ty.sql()),
                    Type::String => format!(
                        "CASE WHEN regexp_full_match(trim({x}), '[+-]?[0-9]+') THEN TRY_CAST(trim({x}) AS {}) END",
                        ty.sql()
                    ),
                    t => return Err(semantic(args[0].span, format!("{name}() does not convert a {t} here"))),
                };
                SqlExpr::new(sql, ty, true).named(first_name)
            }
            "toreal" | "todouble" => {
                arity(name, span, args, 1, 1)?;
                let x = &a[0].sql;
                let sql = match a[0].ty {
                    t if t.is_numeric() || t == Type::Bool => format!("CAST({x} AS DOUBLE)"),
                    Type::String => format!("TRY_CAST(trim({x}) AS DOUBLE)"),
                    t => return Err(semantic(args[0].span, format!("{name}() does not convert a {t} here"))),
                };
                SqlExpr::new(sql, Type::Real, true).named(first_name)
            }
            "strcat" => {
                arity(name, span, args, 1, 64)?;
                let parts: Vec<String> = a.iter().map(to_text).collect();
                SqlExpr::new(format!("concat({})", parts.join(", ")), Type::String, false)
            }
            "tolower" | "toupper" => {
                arity(name, span, args, 1, 1)?;
                let f = if name == "tolower" { "lower" } else { "upper" };
                SqlExpr::new(format!("{f}({})", to_text(&a[0])), Type::String, false).named(first_name)
            }
            "strlen" => {
                arity(name, span, args, 1, 1)?;
                SqlExpr::new(format!("CAST(length({}) AS BIGINT)", to_text(&a[0])), Type::Long, false)
            }
            "iff" | "iif" => {
                arity(name, span, args, 3, 3)?;
                need(0, &|t| t == Type::Bool, "a bool")?;
                let ty = unify(a[1].ty, a[2].ty).ok_or_else(|| {
                    semantic(span, format!("{name}()'s branches have different types: {} and {}", a[1].ty, a[2].ty))
                })?;
                SqlExpr::new(
                    format!("CASE WHEN {} THEN CAST({} AS {t}) ELSE CAST({} AS {t}) END", a[0].sql, a[1].sql, a[2].sql, t = ty.sql()),
                    ty,
                    a[1].nullable || a[2].nullable,
                )
            }
            "case" => {
                if a.len() < 3 || a.len() % 2 == 0 {
                    return Err(semantic(span, "case() takes pairs of predicate and value, then an else value"));
                }
                let mut ty = a[a.len() - 1].ty;
                let mut nullable = a[a.len() - 1].nullable;
                for i in (0..a.len() - 1).step_by(2) {
                    need(i, &|t| t == Type::Bool, "a bool")?;
                    ty = unify(ty, a[i + 1].ty).ok_or_else(|| {
                        semantic(args[i + 1].span, format!("case()'s values have different types: {} and {}", ty, a[i + 1].ty))
                    })?;
                    nullable |= a[i + 1].nullable;
                }
                let mut sql = String::from("CASE");
                for i in (0..a.len() - 1).step_by(2) {
                    sql.push_str(&format!(" WHEN {} THEN CAST({} AS {})", a[i].sql, a[i + 1].sql, ty.sql()));
                }
                sql.push_str(&format!(" ELSE CAST({} AS {}) END", a[a.len() - 1].sql, ty.sql()));
                SqlExpr::new(sql, ty, nullable)
            }
            "startofday" | "startofmonth" => {
                arity(name, span, args, 1, 2)?;
                need(0, &|t| t == Type::DateTime, "a datetime")?;
                let offset = match a.get(1) {
                    None => "0".to_string(),
                    Some(o) if o.ty.is_integer() => o.sql.clone(),
                    Some(o) => return Err(semantic(args[1].span, format!("{name}()'s offset is a whole number, not a {}", o.ty))),
                };
                let sql = if name == "startofday" {
                    format!("make_timestamp(epoch_us(date_trunc('day', {})) + ({offset}) * {DAY_US})", a[0].sql)
                } else {
                    format!("CAST(date_trunc('month', {}) + to_months(CAST({offset} AS INTEGER)) AS TIMESTAMP)", a[0].sql)
                };
                SqlExpr::new(sql, Type::DateTime, true).named(first_name)
            }
            "format_datetime" => {
                arity(name, span, args, 2, 2)?;
                need(0, &|t| t == Type::DateTime, "a datetime")?;
                let Some(Lit::Str(fmt)) = &a[1].lit else {
                    return Err(unsupported(args[1].span, "format_datetime() with a format that is not a string literal"));
                };
                let f = strftime_format(fmt).map_err(|m| unsupported(args[1].span, m))?;
                SqlExpr::new(
                    format!("coalesce(strftime({}, {}), '')", a[0].sql, sqlgen::string(&f)),
                    Type::String,
                    false,
                )
            }
            "isnull" | "isnotnull" => {
                arity(name, span, args, 1, 1)?;
                // Strings are never null in KQL.
                let test = if a[0].ty == Type::String {
                    "false".to_string()
                } else {
                    format!("(({}) IS NULL)", a[0].sql)
                };
                SqlExpr::new(if name == "isnull" { test } else { format!("(NOT {test})") }, Type::Bool, false)
            }
            "isempty" | "isnotempty" => {
                arity(name, span, args, 1, 1)?;
                let test = if a[0].ty == Type::String {
                    format!("(({}) = '')", a[0].sql)
                } else {
                    format!("(({}) IS NULL)", a[0].sql)
                };
                SqlExpr::new(if name == "isempty" { test } else { format!("(NOT {test})") }, Type::Bool, false)
            }
            "not" => {
                arity(name, span, args, 1, 1)?;
                need(0, &|t| t == Type::Bool, "a bool")?;
                SqlExpr::new(format!("(NOT {})", a[0].sql), Type::Bool, a[0].nullable)
            }
            _ => {
                return Err(unsupported(
                    name_span,
                    format!(
                        "the function '{name}' is not supported; Sluice translates {} and the aggregations {}",
                        FUNCTIONS.join(", "),
                        AGGREGATES.join(", ")
                    ),
                ))
            }
        };
        Ok(r)
    }
}

/// KQL's `format_datetime` format (.NET style) as a strftime format.
fn strftime_format(fmt: &str) -> std::result::Result<String, String> {
    let chars: Vec<char> = fmt.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let mut n = 1;
        while i + n < chars.len() && chars[i + n] == c {
            n += 1;
        }
        let spec = match (c, n) {
            ('y', 4) => "%Y",
            ('y', 2) => "%y",
            ('M', 2) => "%m",
            ('M', 1) => "%-m",
            ('d', 2) => "%d",
            ('d', 1) => "%-d",
            ('H', 2) => "%H",
            ('H', 1) => "%-H",
            ('h', 2) => "%I",
            ('h', 1) => "%-I",
            ('m', 2) => "%M",
            ('m', 1) => "%-M",
            ('s', 2) => "%S",
            ('s', 1) => "%-S",
            ('f', 3) => "%g",
            ('f', 6) => "%f",
            ('t', 2) => "%p",
            (c, _) if c.is_ascii_alphabetic() => {
                return Err(format!(
                    "the format_datetime specifier '{}' is not supported (supported: yyyy yy MM M dd d HH H hh h mm m ss s fff ffffff tt)",
                    c.to_string().repeat(n)
                ))
            }
            _ => "",
        };
        if spec.is_empty() {
            for _ in 0..n {
                if c == '%' {
                    out.push_str("%%");
                } else {
                    out.push(c);
                }
            }
        } else {
            out.push_str(spec);
        }
        i += n;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_specifiers_map_to_strftime() {
        assert_eq!(
            strftime_format("yyyy-MM-dd HH:mm:ss").expect("ok"),
            "%Y-%m-%d %H:%M:%S"
        );
        assert_eq!(
            strftime_format("M/d/yy h:mm tt").expect("ok"),
            "%-m/%-d/%y %-I:%M %p"
        );
        assert!(strftime_format("dddd").is_err());
    }
}
