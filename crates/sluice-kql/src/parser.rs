//! A recursive-descent parser for the KQL subset Sluice translates.
//!
//! Operators and functions outside the subset that KQL does have are
//! refused here or in the translator by name and place, so a query is
//! never answered differently from Azure Data Explorer.

use crate::ast::*;
use crate::error::{syntax, unsupported, Result, Span};
use crate::lexer::{lex, Tok, Token};

/// The tabular operators Sluice translates.
pub const OPERATORS: &[&str] = &[
    "where",
    "filter",
    "project",
    "project-away",
    "project-rename",
    "extend",
    "summarize",
    "sort",
    "order",
    "top",
    "take",
    "limit",
    "count",
    "distinct",
    "join",
    "union",
    "render",
];

/// KQL operators that exist but are not translated: refused by name.
const KNOWN_UNSUPPORTED: &[&str] = &[
    "as",
    "consume",
    "evaluate",
    "extend-ordered",
    "externaldata",
    "facet",
    "find",
    "fork",
    "getschema",
    "invoke",
    "lookup",
    "make-series",
    "mv-apply",
    "mv-expand",
    "parse",
    "parse-kv",
    "parse-where",
    "partition",
    "project-keep",
    "project-reorder",
    "range",
    "reduce",
    "sample",
    "sample-distinct",
    "scan",
    "search",
    "serialize",
    "top-hitters",
    "top-nested",
    "macro-expand",
    "graph-match",
    "make-graph",
];

/// Parses a query: `let` statements and one tabular expression, separated
/// by `;`.
pub fn parse(text: &str) -> Result<Query> {
    let tokens = lex(text)?;
    let mut p = Parser {
        toks: tokens,
        i: 0,
        len: text.len(),
    };
    let mut lets = Vec::new();
    loop {
        while p.eat_punct(";") {}
        if p.at_end() {
            return Err(syntax(
                Span::new(text.len(), text.len()),
                "the query has no tabular expression (e.g. `Orders | take 10`)",
            ));
        }
        if p.peek_ident("let") {
            lets.push(p.let_statement()?);
            if !p.eat_punct(";") {
                return Err(syntax(p.here(), "a `let` statement ends with ';'"));
            }
            continue;
        }
        let body = p.tabular()?;
        while p.eat_punct(";") {}
        if !p.at_end() {
            let t = p.span_of(p.i);
            return Err(syntax(
                t,
                format!(
                    "unexpected {} after the query's tabular expression (one query per request; operators follow '|')",
                    p.describe(p.i)
                ),
            ));
        }
        return Ok(Query { lets, body });
    }
}

struct Parser {
    toks: Vec<Token>,
    i: usize,
    len: usize,
}

impl Parser {
    fn at_end(&self) -> bool {
        self.i >= self.toks.len()
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.i).map(|t| &t.tok)
    }

    fn peek_at(&self, k: usize) -> Option<&Tok> {
        self.toks.get(self.i + k).map(|t| &t.tok)
    }

    fn span_of(&self, i: usize) -> Span {
        self.toks
            .get(i)
            .map(|t| t.span)
            .unwrap_or(Span::new(self.len, self.len))
    }

    fn here(&self) -> Span {
        self.span_of(self.i)
    }

    fn prev_end(&self) -> usize {
        if self.i == 0 {
            0
        } else {
            self.toks[self.i - 1].span.end
        }
    }

    fn describe(&self, i: usize) -> String {
        match self.toks.get(i).map(|t| &t.tok) {
            None => "the end of the query".into(),
            Some(Tok::Ident(s)) => format!("'{s}'"),
            Some(Tok::QuotedIdent(s)) => format!("['{s}']"),
            Some(Tok::Int(v)) => format!("'{v}'"),
            Some(Tok::Real(v)) => format!("'{v}'"),
            Some(Tok::Timespan(_)) => "a timespan".into(),
            Some(Tok::Str(_)) => "a string".into(),
            Some(Tok::TypedRaw(t, _)) => format!("'{t}(...)'"),
            Some(Tok::Punct(p)) => format!("'{p}'"),
        }
    }

    fn peek_punct(&self, p: &str) -> bool {
        matches!(self.peek(), Some(Tok::Punct(q)) if *q == p)
    }

    fn peek_ident(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(s)) if s == w)
    }

    fn eat_punct(&mut self, p: &str) -> bool {
        if self.peek_punct(p) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn eat_ident(&mut self, w: &str) -> bool {
        if self.peek_ident(w) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect_punct(&mut self, p: &str, context: &str) -> Result<Span> {
        if self.peek_punct(p) {
            self.i += 1;
            Ok(self.span_of(self.i - 1))
        } else {
            Err(syntax(
                self.here(),
                format!("expected '{p}' {context}, found {}", self.describe(self.i)),
            ))
        }
    }

    fn expect_ident(&mut self, w: &str, context: &str) -> Result<Span> {
        if self.peek_ident(w) {
            self.i += 1;
            Ok(self.span_of(self.i - 1))
        } else {
            Err(syntax(
                self.here(),
                format!("expected '{w}' {context}, found {}", self.describe(self.i)),
            ))
        }
    }

    /// A name: an identifier or a quoted identifier.
    fn name(&mut self, what: &str) -> Result<Name> {
        match self.peek().cloned() {
            Some(Tok::Ident(s)) | Some(Tok::QuotedIdent(s)) => {
                self.i += 1;
                Ok(Name {
                    text: s,
                    span: self.span_of(self.i - 1),
                })
            }
            _ => Err(syntax(
                self.here(),
                format!("expected {what}, found {}", self.describe(self.i)),
            )),
        }
    }

    /// Whether token `i` and the next touch (no space between them).
    fn adjacent(&self, i: usize) -> bool {
        match (self.toks.get(i), self.toks.get(i + 1)) {
            (Some(a), Some(b)) => a.span.end == b.span.start,
            _ => false,
        }
    }

    fn let_statement(&mut self) -> Result<Let> {
        self.expect_ident("let", "")?;
        let name = self.name("a name after 'let'")?;
        self.expect_punct("=", "after the name in a `let` statement")?;
        // let f = (x: long) { ... } and let f = view () { ... }: functions.
        if self.peek_ident("view")
            || (self.peek_punct("(")
                && (matches!(self.peek_at(1), Some(Tok::Punct(")")))
                    || (matches!(self.peek_at(1), Some(Tok::Ident(_)))
                        && matches!(self.peek_at(2), Some(Tok::Punct(":"))))))
        {
            return Err(unsupported(
                name.span.to(self.here()),
                format!(
                    "`let {}` defines a user-defined function; Sluice supports `let` with scalar and tabular values only",
                    name.text
                ),
            ));
        }
        // A tabular value starts with a source keyword, or is a name (or a
        // parenthesized tabular expression) followed by '|'.
        let start = self.i;
        if self.starts_tabular() {
            return Ok(Let {
                name,
                value: LetValue::Tabular(self.tabular()?),
            });
        }
        let expr = self.expr()?;
        if self.peek_punct("|") {
            self.i = start;
            return Ok(Let {
                name,
                value: LetValue::Tabular(self.tabular()?),
            });
        }
        Ok(Let {
            name,
            value: LetValue::Scalar(expr),
        })
    }

    fn starts_tabular(&self) -> bool {
        matches!(self.peek(), Some(Tok::Ident(s)) if s == "datatable" || s == "union" || s == "print")
    }

    /// `source | op | op ...`
    fn tabular(&mut self) -> Result<Tabular> {
        let source = self.source()?;
        let mut ops = Vec::new();
        while self.eat_punct("|") {
            ops.push(self.operator()?);
        }
        Ok(Tabular { source, ops })
    }

    fn source(&mut self) -> Result<Source> {
        if self.eat_punct("(") {
            let inner = self.tabular()?;
            self.expect_punct(")", "to close the parenthesized tabular expression")?;
            return Ok(Source::Paren(Box::new(inner)));
        }
        if self.peek_ident("union") {
            self.i += 1;
            return Ok(Source::Union(self.union_body()?));
        }
        if self.peek_ident("print") {
            let span = self.here();
            self.i += 1;
            let items = self.named_exprs(&[])?;
            return Ok(Source::Print(span, items));
        }
        if self.peek_ident("datatable") {
            return self.datatable();
        }
        if let Some(Tok::Ident(w)) = self.peek() {
            let w = w.clone();
            if KNOWN_UNSUPPORTED.contains(&w.as_str()) && self.peek_at(1) != Some(&Tok::Punct("|"))
            {
                return Err(unsupported(
                    self.here(),
                    format!("'{w}' is not supported as a source; start from a table name, `datatable`, `print` or `union`"),
                ));
            }
        }
        let name = self.name("a table name")?;
        if self.peek_punct("(") {
            return Err(unsupported(
                name.span,
                format!(
                    "'{}(...)' as a source is not supported; start from a table name, `datatable`, `print` or `union`",
                    name.text
                ),
            ));
        }
        Ok(Source::Table(name))
    }

    fn datatable(&mut self) -> Result<Source> {
        let span = self.expect_ident("datatable", "")?;
        self.expect_punct("(", "after 'datatable'")?;
        let mut columns = Vec::new();
        loop {
            let col = self.name("a column name")?;
            self.expect_punct(":", "between a datatable column and its type")?;
            let ty = match self.peek().cloned() {
                Some(Tok::Ident(s)) => {
                    self.i += 1;
                    Name {
                        text: s,
                        span: self.span_of(self.i - 1),
                    }
                }
                // `datetime` / `timespan` alone lex as identifiers unless a
                // parenthesis follows, which it does not here.
                _ => {
                    return Err(syntax(
                        self.here(),
                        format!("expected a type name, found {}", self.describe(self.i)),
                    ))
                }
            };
            columns.push((col, ty));
            if self.eat_punct(",") {
                continue;
            }
            self.expect_punct(")", "to close the datatable's columns")?;
            break;
        }
        self.expect_punct("[", "before the datatable's values")?;
        let mut values = Vec::new();
        if !self.eat_punct("]") {
            loop {
                values.push(self.expr()?);
                if self.eat_punct(",") {
                    if self.eat_punct("]") {
                        break;
                    }
                    continue;
                }
                self.expect_punct("]", "to close the datatable's values")?;
                break;
            }
        }
        Ok(Source::Datatable {
            span,
            columns,
            values,
        })
    }

    /// `[kind=...] T1, (T2 | ...), ...`
    fn union_body(&mut self) -> Result<Union> {
        let mut kind = None;
        while let (Some(Tok::Ident(w)), Some(Tok::Punct("="))) = (self.peek(), self.peek_at(1)) {
            let w = w.clone();
            let span = self.here();
            if w == "kind" {
                self.i += 2;
                kind = Some(self.name("a union kind (inner or outer)")?);
            } else {
                return Err(unsupported(
                    span,
                    format!("the union parameter '{w}' is not supported (only kind=inner|outer)"),
                ));
            }
        }
        let mut tables = Vec::new();
        loop {
            if self.eat_punct("(") {
                let t = self.tabular()?;
                self.expect_punct(")", "to close the parenthesized tabular expression")?;
                tables.push(t);
            } else {
                let name = self.name("a table name")?;
                if name.text.contains('*') {
                    return Err(unsupported(name.span, "union over wildcard table names"));
                }
                tables.push(Tabular {
                    source: Source::Table(name),
                    ops: Vec::new(),
                });
            }
            if !self.eat_punct(",") {
                break;
            }
        }
        Ok(Union { kind, tables })
    }

    /// The operator after a `|`.
    fn operator(&mut self) -> Result<Op> {
        let start = self.i;
        let first = match self.peek().cloned() {
            Some(Tok::Ident(s)) => s,
            _ => {
                return Err(syntax(
                    self.here(),
                    format!(
                        "expected an operator after '|', found {}",
                        self.describe(self.i)
                    ),
                ))
            }
        };
        // Hyphenated operator names: project-away, mv-expand, ...
        let mut name = first;
        let mut j = self.i;
        while self.adjacent(j)
            && matches!(self.toks.get(j + 1).map(|t| &t.tok), Some(Tok::Punct("-")))
            && self.adjacent(j + 1)
            && matches!(self.toks.get(j + 2).map(|t| &t.tok), Some(Tok::Ident(_)))
        {
            if let Some(Tok::Ident(w)) = self.toks.get(j + 2).map(|t| &t.tok) {
                name = format!("{name}-{w}");
            }
            j += 2;
        }
        let span = self.span_of(start).to(self.span_of(j));
        self.i = j + 1;
        let kind = match name.as_str() {
            "where" | "filter" => OpKind::Where(self.expr()?),
            "project" => OpKind::Project(self.named_exprs(&[])?),
            "extend" => OpKind::Extend(self.named_exprs(&[])?),
            "project-away" => OpKind::ProjectAway(self.name_patterns()?),
            "project-rename" => {
                let mut pairs = Vec::new();
                loop {
                    let new = self.name("the new column name")?;
                    self.expect_punct("=", "in `project-rename new = old`")?;
                    let old = self.name("the column to rename")?;
                    pairs.push((new, old));
                    if !self.eat_punct(",") {
                        break;
                    }
                }
                OpKind::ProjectRename(pairs)
            }
            "summarize" => {
                self.refuse_parameters(&name)?;
                let aggs = if self.peek_ident("by") {
                    Vec::new()
                } else {
                    self.named_exprs(&["by"])?
                };
                let by = if self.eat_ident("by") {
                    self.named_exprs(&[])?
                } else {
                    Vec::new()
                };
                if aggs.is_empty() && by.is_empty() {
                    return Err(syntax(
                        span,
                        "summarize needs an aggregation or a `by` clause",
                    ));
                }
                OpKind::Summarize { aggs, by }
            }
            "sort" | "order" => {
                self.refuse_parameters(&name)?;
                self.expect_ident("by", &format!("after '{name}'"))?;
                let mut keys = Vec::new();
                loop {
                    keys.push(self.sort_key()?);
                    if !self.eat_punct(",") {
                        break;
                    }
                }
                OpKind::Sort(keys)
            }
            "top" => {
                let count = self.expr()?;
                self.expect_ident("by", "in `top N by expression`")?;
                let key = self.sort_key()?;
                if self.peek_punct(",") {
                    return Err(unsupported(self.here(), "top with more than one `by` key"));
                }
                OpKind::Top { count, key }
            }
            "take" | "limit" => {
                self.refuse_parameters(&name)?;
                OpKind::Take(self.expr()?)
            }
            "count" => OpKind::Count,
            "distinct" => {
                if self.eat_punct("*") {
                    OpKind::Distinct(Vec::new())
                } else {
                    let mut cols = Vec::new();
                    loop {
                        cols.push(self.name("a column name")?);
                        if !self.eat_punct(",") {
                            break;
                        }
                    }
                    OpKind::Distinct(cols)
                }
            }
            "join" => self.join()?,
            "union" => OpKind::Union(self.union_body()?),
            "render" => self.render()?,
            other if KNOWN_UNSUPPORTED.contains(&other) => {
                return Err(unsupported(
                    span,
                    format!(
                        "the operator '{other}' is not supported; Sluice translates {}",
                        OPERATORS.join(", ")
                    ),
                ))
            }
            other => {
                return Err(syntax(
                    span,
                    format!(
                        "'{other}' is not a KQL tabular operator (Sluice translates {})",
                        OPERATORS.join(", ")
                    ),
                ))
            }
        };
        Ok(Op { name, span, kind })
    }

    /// Refuses `hint.x = y` style parameters right after an operator.
    fn refuse_parameters(&mut self, op: &str) -> Result<()> {
        if let (Some(Tok::Ident(w)), Some(Tok::Punct("."))) = (self.peek(), self.peek_at(1)) {
            if w == "hint" {
                return Err(unsupported(
                    self.here(),
                    format!("{op} parameters (hint.*) are not supported"),
                ));
            }
        }
        Ok(())
    }

    fn name_patterns(&mut self) -> Result<Vec<Name>> {
        let mut out = Vec::new();
        loop {
            // A pattern like `a*` or `*_id` is tokens without spaces between.
            let start = self.i;
            let mut text = String::new();
            loop {
                match self.peek().cloned() {
                    Some(Tok::Ident(s)) | Some(Tok::QuotedIdent(s)) => text.push_str(&s),
                    Some(Tok::Punct("*")) => text.push('*'),
                    _ => break,
                }
                let k = self.i;
                self.i += 1;
                if !self.adjacent(k) {
                    break;
                }
                if !matches!(
                    self.peek(),
                    Some(Tok::Ident(_)) | Some(Tok::QuotedIdent(_)) | Some(Tok::Punct("*"))
                ) {
                    break;
                }
            }
            if self.i == start {
                return Err(syntax(
                    self.here(),
                    format!("expected a column name, found {}", self.describe(self.i)),
                ));
            }
            out.push(Name {
                text,
                span: self.span_of(start).to(self.span_of(self.i - 1)),
            });
            if !self.eat_punct(",") {
                break;
            }
        }
        Ok(out)
    }

    fn sort_key(&mut self) -> Result<SortKey> {
        let expr = self.expr()?;
        let desc = if self.eat_ident("asc") {
            Some(false)
        } else if self.eat_ident("desc") {
            Some(true)
        } else {
            None
        };
        let nulls_first = if self.eat_ident("nulls") {
            if self.eat_ident("first") {
                Some(true)
            } else if self.eat_ident("last") {
                Some(false)
            } else {
                return Err(syntax(
                    self.here(),
                    "expected 'first' or 'last' after 'nulls'",
                ));
            }
        } else {
            None
        };
        Ok(SortKey {
            expr,
            desc,
            nulls_first,
        })
    }

    fn join(&mut self) -> Result<OpKind> {
        let mut kind = None;
        while let (Some(Tok::Ident(w)), Some(Tok::Punct(p))) = (self.peek(), self.peek_at(1)) {
            let w = w.clone();
            if w == "kind" && *p == "=" {
                self.i += 2;
                kind = Some(self.name("a join kind")?);
            } else if w == "hint" && *p == "." {
                return Err(unsupported(
                    self.here(),
                    "join parameters (hint.*) are not supported",
                ));
            } else {
                break;
            }
        }
        let right = if self.eat_punct("(") {
            let t = self.tabular()?;
            self.expect_punct(")", "to close the join's right side")?;
            t
        } else {
            let name = self.name("the join's right side (a table or a parenthesized query)")?;
            Tabular {
                source: Source::Table(name),
                ops: Vec::new(),
            }
        };
        self.expect_ident("on", "after the join's right side")?;
        let mut on = Vec::new();
        loop {
            if self.peek_punct("$") {
                let (side_a, a) = self.side_column()?;
                self.expect_punct("==", "between $left.column and $right.column")?;
                let (side_b, b) = self.side_column()?;
                let pair = match (side_a.as_str(), side_b.as_str()) {
                    ("left", "right") => JoinKey::Pair(a, b),
                    ("right", "left") => JoinKey::Pair(b, a),
                    _ => {
                        return Err(syntax(
                            a.span.to(b.span),
                            "a join condition compares $left.column with $right.column",
                        ))
                    }
                };
                on.push(pair);
            } else {
                on.push(JoinKey::Same(self.name("a join column")?));
            }
            if !(self.eat_punct(",") || self.eat_ident("and")) {
                break;
            }
        }
        Ok(OpKind::Join {
            kind,
            right: Box::new(right),
            on,
        })
    }

    fn side_column(&mut self) -> Result<(String, Name)> {
        self.expect_punct("$", "")?;
        let side = self.name("'left' or 'right' after '$'")?;
        if side.text != "left" && side.text != "right" {
            return Err(syntax(side.span, "expected $left or $right"));
        }
        self.expect_punct(".", "after $left / $right")?;
        let col = self.name("a column name")?;
        Ok((side.text, col))
    }

    fn render(&mut self) -> Result<OpKind> {
        let kind = self.name("a chart kind after 'render'")?;
        let mut props = Vec::new();
        if self.eat_ident("with") {
            self.expect_punct("(", "after 'with'")?;
            if !self.eat_punct(")") {
                loop {
                    let name = self.name("a render property")?;
                    self.expect_punct("=", "after a render property")?;
                    let value = match self.peek().cloned() {
                        Some(Tok::Str(s)) => {
                            self.i += 1;
                            RenderValue::Str(s)
                        }
                        Some(Tok::Int(v)) => {
                            self.i += 1;
                            RenderValue::Number(v as f64)
                        }
                        Some(Tok::Real(v)) => {
                            self.i += 1;
                            RenderValue::Number(v)
                        }
                        Some(Tok::Ident(s)) if s == "true" || s == "false" => {
                            self.i += 1;
                            RenderValue::Bool(s == "true")
                        }
                        Some(Tok::Punct("-")) => {
                            self.i += 1;
                            match self.peek().cloned() {
                                Some(Tok::Int(v)) => {
                                    self.i += 1;
                                    RenderValue::Number(-(v as f64))
                                }
                                Some(Tok::Real(v)) => {
                                    self.i += 1;
                                    RenderValue::Number(-v)
                                }
                                _ => {
                                    return Err(syntax(self.here(), "expected a number after '-'"))
                                }
                            }
                        }
                        _ => {
                            let mut names = vec![self.name("a render property value")?];
                            // ycolumns = a, b: a comma not followed by `name =`
                            // continues the list.
                            while self.peek_punct(",")
                                && matches!(
                                    self.peek_at(1),
                                    Some(Tok::Ident(_)) | Some(Tok::QuotedIdent(_))
                                )
                                && !matches!(self.peek_at(2), Some(Tok::Punct("=")))
                            {
                                self.i += 1;
                                names.push(self.name("a column name")?);
                            }
                            RenderValue::Names(names)
                        }
                    };
                    props.push((name, value));
                    if self.eat_punct(",") {
                        continue;
                    }
                    self.expect_punct(")", "to close the render properties")?;
                    break;
                }
            }
        }
        Ok(OpKind::Render { kind, props })
    }

    /// `[name =] expr, ...` until a stop word, `|`, `)`, `;` or the end.
    fn named_exprs(&mut self, stop: &[&str]) -> Result<Vec<NamedExpr>> {
        let mut out = Vec::new();
        loop {
            let name = match (self.peek(), self.peek_at(1)) {
                (Some(Tok::Ident(_)) | Some(Tok::QuotedIdent(_)), Some(Tok::Punct("="))) => {
                    let n = self.name("a column name")?;
                    self.i += 1;
                    Some(n)
                }
                (Some(Tok::Punct("(")), _) => {
                    // (a, b) = f(...): tuple names.
                    let save = self.i;
                    self.i += 1;
                    let tuple = matches!(self.peek(), Some(Tok::Ident(_)))
                        && matches!(self.peek_at(1), Some(Tok::Punct(",")));
                    self.i = save;
                    if tuple {
                        return Err(unsupported(
                            self.here(),
                            "naming several columns at once `(a, b) = ...` is not supported",
                        ));
                    }
                    None
                }
                _ => None,
            };
            let expr = self.expr()?;
            out.push(NamedExpr { name, expr });
            if !self.eat_punct(",") {
                break;
            }
            if let Some(Tok::Ident(w)) = self.peek() {
                if stop.contains(&w.as_str()) {
                    break;
                }
            }
        }
        Ok(out)
    }

    // -- scalar expressions, lowest precedence first --------------------

    pub(crate) fn expr(&mut self) -> Result<Expr> {
        self.or_expr()
    }

    fn or_expr(&mut self) -> Result<Expr> {
        let mut left = self.and_expr()?;
        while self.eat_ident("or") {
            let right = self.and_expr()?;
            let span = left.span.to(right.span);
            left = Expr {
                kind: ExprKind::Binary(BinOp::Or, Box::new(left), Box::new(right)),
                span,
            };
        }
        Ok(left)
    }

    fn and_expr(&mut self) -> Result<Expr> {
        let mut left = self.cmp_expr()?;
        while self.eat_ident("and") {
            let right = self.cmp_expr()?;
            let span = left.span.to(right.span);
            left = Expr {
                kind: ExprKind::Binary(BinOp::And, Box::new(left), Box::new(right)),
                span,
            };
        }
        Ok(left)
    }

    fn cmp_expr(&mut self) -> Result<Expr> {
        let left = self.add_expr()?;
        let op_span = self.here();
        // Symbolic comparisons.
        let sym = match self.peek() {
            Some(Tok::Punct("==")) => Some(BinOp::Eq),
            Some(Tok::Punct("!=")) | Some(Tok::Punct("<>")) => Some(BinOp::Ne),
            Some(Tok::Punct("<")) => Some(BinOp::Lt),
            Some(Tok::Punct("<=")) => Some(BinOp::Le),
            Some(Tok::Punct(">")) => Some(BinOp::Gt),
            Some(Tok::Punct(">=")) => Some(BinOp::Ge),
            Some(Tok::Punct("=~")) => Some(BinOp::EqCi),
            Some(Tok::Punct("!~")) => Some(BinOp::NeCi),
            _ => None,
        };
        if let Some(op) = sym {
            self.i += 1;
            let right = self.add_expr()?;
            let span = left.span.to(right.span);
            return Ok(Expr {
                kind: ExprKind::Binary(op, Box::new(left), Box::new(right)),
                span,
            });
        }
        // Word operators, possibly negated with an adjacent '!'.
        let negated = self.peek_punct("!") && self.adjacent(self.i);
        let k = if negated { self.i + 1 } else { self.i };
        let Some(Tok::Ident(word)) = self.toks.get(k).map(|t| t.tok.clone()) else {
            return Ok(left);
        };
        let word_span = self.span_of(k);
        let full_span = op_span.to(word_span);
        let str_op = |w: &str| -> Option<(StrOpKind, bool)> {
            let (base, cs) = match w.strip_suffix("_cs") {
                Some(b) => (b, true),
                None => (w, false),
            };
            let op = match base {
                "has" => StrOpKind::Has,
                "contains" => StrOpKind::Contains,
                "startswith" => StrOpKind::StartsWith,
                "endswith" => StrOpKind::EndsWith,
                "hasprefix" => StrOpKind::HasPrefix,
                "hassuffix" => StrOpKind::HasSuffix,
                _ => return None,
            };
            Some((op, cs))
        };
        if let Some((op, cs)) = str_op(&word) {
            self.i = k + 1;
            let right = self.add_expr()?;
            let span = left.span.to(right.span);
            return Ok(Expr {
                kind: ExprKind::StrOp {
                    op,
                    negated,
                    case_sensitive: cs,
                    left: Box::new(left),
                    right: Box::new(right),
                },
                span,
            });
        }
        match word.as_str() {
            "in" => {
                self.i = k + 1;
                let ci = self.peek_punct("~") && self.adjacent(k);
                if ci {
                    self.i += 1;
                }
                self.expect_punct("(", "after 'in'")?;
                if matches!(self.peek(), Some(Tok::Ident(_)) | Some(Tok::QuotedIdent(_)))
                    && self.peek_at(1) == Some(&Tok::Punct("|"))
                {
                    return Err(unsupported(
                        self.here(),
                        "`in` with a tabular expression (subquery) is not supported; list the values",
                    ));
                }
                let mut list = Vec::new();
                if !self.peek_punct(")") {
                    loop {
                        list.push(self.expr()?);
                        if !self.eat_punct(",") {
                            break;
                        }
                    }
                }
                let close = self.expect_punct(")", "to close the `in` list")?;
                let span = left.span.to(close);
                Ok(Expr {
                    kind: ExprKind::In {
                        expr: Box::new(left),
                        list,
                        negated,
                        case_insensitive: ci,
                    },
                    span,
                })
            }
            "between" => {
                self.i = k + 1;
                self.expect_punct("(", "after 'between'")?;
                let low = self.add_expr()?;
                self.expect_punct("..", "between the bounds of `between (low .. high)`")?;
                let high = self.add_expr()?;
                let close = self.expect_punct(")", "to close `between`")?;
                let span = left.span.to(close);
                Ok(Expr {
                    kind: ExprKind::Between {
                        expr: Box::new(left),
                        low: Box::new(low),
                        high: Box::new(high),
                        negated,
                    },
                    span,
                })
            }
            "matches" if !negated => {
                self.i = k + 1;
                self.expect_ident("regex", "after 'matches'")?;
                let right = self.add_expr()?;
                let span = left.span.to(right.span);
                Ok(Expr {
                    kind: ExprKind::Matches(Box::new(left), Box::new(right)),
                    span,
                })
            }
            "has_any" | "has_all" | "contains_any" | "has_any_cs" | "in_cs" => Err(unsupported(
                full_span,
                format!(
                    "the string operator '{}{word}' is not supported",
                    if negated { "!" } else { "" }
                ),
            )),
            _ if negated => Err(syntax(
                full_span,
                format!("'!{word}' is not a KQL operator"),
            )),
            _ => Ok(left),
        }
    }

    fn add_expr(&mut self) -> Result<Expr> {
        let mut left = self.mul_expr()?;
        loop {
            let op = if self.peek_punct("+") {
                BinOp::Add
            } else if self.peek_punct("-") {
                BinOp::Sub
            } else {
                break;
            };
            self.i += 1;
            let right = self.mul_expr()?;
            let span = left.span.to(right.span);
            left = Expr {
                kind: ExprKind::Binary(op, Box::new(left), Box::new(right)),
                span,
            };
        }
        Ok(left)
    }

    fn mul_expr(&mut self) -> Result<Expr> {
        let mut left = self.unary()?;
        loop {
            let op = if self.peek_punct("*") {
                BinOp::Mul
            } else if self.peek_punct("/") {
                BinOp::Div
            } else if self.peek_punct("%") {
                BinOp::Mod
            } else {
                break;
            };
            self.i += 1;
            let right = self.unary()?;
            let span = left.span.to(right.span);
            left = Expr {
                kind: ExprKind::Binary(op, Box::new(left), Box::new(right)),
                span,
            };
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr> {
        if self.peek_punct("-") {
            let start = self.here();
            self.i += 1;
            let inner = self.unary()?;
            let span = start.to(inner.span);
            // Fold literals so `-1` and `-1h` are literals.
            let kind = match inner.kind {
                ExprKind::Long(v) => ExprKind::Long(v.wrapping_neg()),
                ExprKind::Real(v) => ExprKind::Real(-v),
                ExprKind::Timespan(v) => ExprKind::Timespan(-v),
                other => ExprKind::Neg(Box::new(Expr {
                    kind: other,
                    span: inner.span,
                })),
            };
            return Ok(Expr { kind, span });
        }
        if self.peek_punct("+") {
            self.i += 1;
            return self.unary();
        }
        self.postfix()
    }

    fn postfix(&mut self) -> Result<Expr> {
        let e = self.primary()?;
        if self.peek_punct(".") || self.peek_punct("[") {
            return Err(unsupported(
                self.here(),
                "property access on dynamic values (`x.a`, `x[0]`) is not supported",
            ));
        }
        Ok(e)
    }

    fn primary(&mut self) -> Result<Expr> {
        let span = self.here();
        let Some(tok) = self.peek().cloned() else {
            return Err(syntax(
                span,
                "expected an expression, found the end of the query",
            ));
        };
        self.i += 1;
        let kind = match tok {
            Tok::Int(v) => ExprKind::Long(v),
            Tok::Real(v) => ExprKind::Real(v),
            Tok::Timespan(v) => ExprKind::Timespan(v),
            Tok::Str(s) => {
                // Adjacent string literals concatenate.
                let mut s = s;
                while let Some(Tok::Str(more)) = self.peek().cloned() {
                    self.i += 1;
                    s.push_str(&more);
                }
                ExprKind::Str(s)
            }
            Tok::TypedRaw(t, raw) => ExprKind::TypedRaw(t, raw),
            Tok::QuotedIdent(s) => ExprKind::Name(s),
            Tok::Punct("*") => ExprKind::Star,
            Tok::Punct("(") => {
                let inner = self.expr()?;
                let close = self.expect_punct(")", "to close the parenthesis")?;
                return Ok(Expr {
                    kind: inner.kind,
                    span: span.to(close),
                });
            }
            Tok::Ident(w) => {
                if self.peek_punct("(") {
                    self.i += 1;
                    let mut args = Vec::new();
                    if !self.peek_punct(")") {
                        loop {
                            args.push(self.expr()?);
                            if !self.eat_punct(",") {
                                break;
                            }
                        }
                    }
                    let close = self.expect_punct(")", &format!("to close {w}(...)"))?;
                    return Ok(Expr {
                        kind: ExprKind::Call {
                            name: Name { text: w, span },
                            args,
                        },
                        span: span.to(close),
                    });
                }
                match w.as_str() {
                    "true" => ExprKind::Bool(true),
                    "false" => ExprKind::Bool(false),
                    _ => ExprKind::Name(w),
                }
            }
            Tok::Punct(p) => {
                return Err(syntax(span, format!("expected an expression, found '{p}'")))
            }
        };
        Ok(Expr {
            kind,
            span: Span::new(span.start, self.prev_end()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(q: &str) -> Vec<String> {
        parse(q)
            .expect("parses")
            .body
            .ops
            .into_iter()
            .map(|o| o.name)
            .collect()
    }

    #[test]
    fn the_scenario_parses() {
        for q in [
            "Orders | where city == 'New York'",
            "Orders | where city == 'New York' | project amount, purchase_time | sort by amount",
            "Orders | summarize avg_sales = avg(amount) by city | render columnchart",
            "Orders | summarize total = sum(amount) by city | sort by total | render piechart",
            "Orders | summarize orders = count() by city | sort by orders | render linechart",
            "Orders | extend hour = floor(purchase_time % 1d , 10m) | summarize event_count=count() by hour | sort by hour asc | render timechart",
            "Orders | extend hour = floor(purchase_time % 1d , 10m) | where city in (\"New Delhi\",\"Seattle\",\"New York\",\"Austin\",\"Chicago\",\"Cleveland\") | summarize event_count=count() by hour, city | render columnchart",
        ] {
            parse(q).unwrap_or_else(|e| panic!("{q}: {e:?}"));
        }
        assert_eq!(
            ops("T | project-away a, b* | project-rename x = y | where not(a) and b !has 'x'"),
            ["project-away", "project-rename", "where"]
        );
    }

    #[test]
    fn lets_and_joins() {
        let q = parse(
            "let n = 5; let big = Orders | where amount > n; big | join kind=leftouter (Cust) on $left.custid == $right.id, city",
        )
        .expect("parses");
        assert_eq!(q.lets.len(), 2);
        assert!(matches!(q.lets[0].value, LetValue::Scalar(_)));
        assert!(matches!(q.lets[1].value, LetValue::Tabular(_)));
        let OpKind::Join { on, kind, .. } = &q.body.ops[0].kind else {
            panic!("join")
        };
        assert_eq!(kind.as_ref().map(|k| k.text.as_str()), Some("leftouter"));
        assert_eq!(on.len(), 2);
    }

    #[test]
    fn refusals_name_the_operator_and_place() {
        let e = parse("Orders | mv-expand x").expect_err("unsupported");
        assert_eq!((e.span.start, e.span.end), (9, 18));
        assert!(
            e.message.contains("'mv-expand' is not supported"),
            "{}",
            e.message
        );
        let e = parse("Orders | frobnicate").expect_err("unknown");
        assert!(e
            .message
            .contains("'frobnicate' is not a KQL tabular operator"));
        let e = parse("let f = (x: long) { x }; T").expect_err("udf");
        assert!(e.message.contains("user-defined function"));
    }

    #[test]
    fn render_properties() {
        let q = parse("T | render timechart with (title='Sales', ycolumns=a, b, legend=hidden)")
            .expect("parses");
        let OpKind::Render { props, .. } = &q.body.ops[0].kind else {
            panic!("render")
        };
        assert_eq!(props.len(), 3);
        assert!(matches!(&props[1].1, RenderValue::Names(n) if n.len() == 2));
    }
}
