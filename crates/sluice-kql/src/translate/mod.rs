//! KQL → DuckDB SQL, with KQL's semantics.
//!
//! Each tabular operator wraps the relation before it in a new
//! `SELECT ... FROM (...)`. Columns are named by position in SQL (`c0`,
//! `c1`, ...) while their KQL names and types are tracked here, because
//! KQL names are case-sensitive and DuckDB's are not. After `sort`/`top`,
//! a hidden `__kql_ord` column carries the row order through the operators
//! that keep it (KQL's serialized rows), so a sort is never lost in a
//! subquery.

mod expr;
mod ops;

use std::collections::HashMap;

use crate::ast::{LetValue, Query, Source, Tabular};
use crate::catalog::Catalog;
use crate::error::{semantic, unsupported, KqlError, Result, Span};
use crate::render::RenderSpec;
use crate::sqlgen;
use crate::types::Type;

pub(crate) use expr::SqlExpr;

/// The name of the hidden row-order column.
pub(crate) const ORD: &str = "__kql_ord";

/// A column of the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// The KQL name.
    pub name: String,
    /// The KQL type.
    pub ty: Type,
}

/// A translated query.
#[derive(Debug, Clone, PartialEq)]
pub struct Translation {
    /// One DuckDB SELECT; its columns are [`Translation::columns`], in
    /// order, each in its type's representation (see [`Type`]).
    pub sql: String,
    /// The result's columns.
    pub columns: Vec<Column>,
    /// The `render` operator's chart, if the query ends with one.
    pub render: Option<RenderSpec>,
    /// The relation before the final SELECT, and whether it carries the
    /// row order column (for [`crate::exec`], which reads it its own way).
    pub(crate) body: String,
    pub(crate) ordered: bool,
}

/// Settings of a translation.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// What `now()` and `ago()` are, in microseconds since the epoch; KQL
    /// fixes the time once per query.
    pub now_us: i64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            now_us: chrono::Utc::now().timestamp_micros(),
        }
    }
}

/// Translates `query` for the tables of `catalog`, with `now()` the
/// current time.
pub fn translate(query: &str, catalog: &Catalog) -> std::result::Result<Translation, KqlError> {
    translate_with(query, catalog, Options::default())
}

/// [`translate`] with explicit [`Options`].
pub fn translate_with(
    query: &str,
    catalog: &Catalog,
    options: Options,
) -> std::result::Result<Translation, KqlError> {
    let parsed = crate::parser::parse(query).map_err(|e| e.locate(query))?;
    let mut t = Translator {
        catalog,
        options,
        lets: HashMap::new(),
    };
    t.query(&parsed).map_err(|e| e.locate(query))
}

/// A column of a relation: SQL name `c{i}` by position.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RCol {
    pub name: String,
    pub ty: Type,
    pub nullable: bool,
}

/// A relation: SQL and its columns.
#[derive(Debug, Clone)]
pub(crate) struct Rel {
    pub sql: String,
    pub cols: Vec<RCol>,
    /// Whether `__kql_ord` is present and orders the rows.
    pub ordered: bool,
}

/// What `let` bound.
#[derive(Debug, Clone)]
pub(crate) enum Bound {
    Scalar(SqlExpr),
    Tabular(Rel),
}

pub(crate) struct Translator<'a> {
    pub catalog: &'a Catalog,
    pub options: Options,
    pub lets: HashMap<String, Bound>,
}

/// `c{i}`: the SQL name of column `i`.
pub(crate) fn cname(i: usize) -> String {
    format!("c{i}")
}

impl Translator<'_> {
    fn query(&mut self, q: &Query) -> Result<Translation> {
        for l in &q.lets {
            let bound = match &l.value {
                LetValue::Scalar(e) => {
                    // A name alone may be a table.
                    if let crate::ast::ExprKind::Name(n) = &e.kind {
                        if self
                            .lets
                            .get(n)
                            .is_some_and(|b| matches!(b, Bound::Tabular(_)))
                            || (!self.lets.contains_key(n) && self.catalog.resolve(n).is_ok())
                        {
                            let rel = self.tabular(&Tabular {
                                source: Source::Table(crate::ast::Name {
                                    text: n.clone(),
                                    span: e.span,
                                }),
                                ops: Vec::new(),
                            })?;
                            self.lets.insert(l.name.text.clone(), Bound::Tabular(rel.0));
                            continue;
                        }
                    }
                    let v = self.expr(e, &expr::Scope::empty())?;
                    Bound::Scalar(v)
                }
                LetValue::Tabular(t) => {
                    let (rel, render) = self.tabular(t)?;
                    if let Some((_, span)) = render {
                        return Err(unsupported(span, "render inside a `let` statement"));
                    }
                    Bound::Tabular(rel)
                }
            };
            self.lets.insert(l.name.text.clone(), bound);
        }
        let (rel, render) = self.tabular(&q.body)?;
        let select: Vec<String> = rel
            .cols
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{} AS {}", cname(i), sqlgen::ident(&c.name)))
            .collect();
        let select = if select.is_empty() {
            "NULL AS \"Column1\"".to_string()
        } else {
            select.join(", ")
        };
        let order = if rel.ordered {
            format!(" ORDER BY {ORD}")
        } else {
            String::new()
        };
        Ok(Translation {
            sql: format!("SELECT {select} FROM ({}) AS t{order}", rel.sql),
            columns: rel
                .cols
                .iter()
                .map(|c| Column {
                    name: c.name.clone(),
                    ty: c.ty,
                })
                .collect(),
            render: render.map(|(r, _)| r),
            body: rel.sql,
            ordered: rel.ordered,
        })
    }

    /// Translates a pipeline; the render spec (and its place) when the
    /// last operator is `render`.
    pub(crate) fn tabular(&mut self, t: &Tabular) -> Result<(Rel, Option<(RenderSpec, Span)>)> {
        let mut rel = self.source(&t.source)?;
        let mut render = None;
        for (k, op) in t.ops.iter().enumerate() {
            if let Some((_, span)) = &render {
                return Err(unsupported(
                    *span,
                    "render must be the last operator of the query",
                ));
            }
            if let crate::ast::OpKind::Render { kind, props } = &op.kind {
                let spec = crate::render::spec_from_ast(kind, props, &rel.cols)?;
                render = Some((spec, op.span));
                let _ = k;
                continue;
            }
            rel = self.operator(rel, op)?;
        }
        Ok((rel, render))
    }

    fn source(&mut self, s: &Source) -> Result<Rel> {
        match s {
            Source::Table(name) => {
                if let Some(b) = self.lets.get(&name.text) {
                    return match b {
                        Bound::Tabular(rel) => Ok(rel.clone()),
                        Bound::Scalar(_) => Err(semantic(
                            name.span,
                            format!("'{}' is a scalar `let`, not a table", name.text),
                        )),
                    };
                }
                let table = self
                    .catalog
                    .resolve(&name.text)
                    .map_err(|e| semantic(name.span, e))?;
                let select: Vec<String> = table
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| format!("{} AS {}", c.sql, cname(i)))
                    .collect();
                let select = if select.is_empty() {
                    "NULL AS c0".to_string()
                } else {
                    select.join(", ")
                };
                Ok(Rel {
                    sql: format!("SELECT {select} FROM {}", sqlgen::ident(&table.duck_table)),
                    cols: table
                        .columns
                        .iter()
                        .map(|c| RCol {
                            name: c.name.clone(),
                            ty: c.ty,
                            nullable: c.nullable,
                        })
                        .collect(),
                    ordered: false,
                })
            }
            Source::Paren(t) => {
                let (rel, render) = self.tabular(t)?;
                if let Some((_, span)) = render {
                    return Err(unsupported(span, "render inside parentheses"));
                }
                Ok(rel)
            }
            Source::Union(u) => self.union(None, u),
            Source::Print(span, items) => self.print(*span, items),
            Source::Datatable {
                span,
                columns,
                values,
            } => self.datatable(*span, columns, values),
        }
    }
}
