//! The tabular operators.

use crate::ast::{Expr, ExprKind, JoinKey, Name, NamedExpr, Op, OpKind, SortKey, Union};
use crate::error::{semantic, syntax, unsupported, Result, Span};
use crate::types::Type;

use super::expr::{json_element, Lit, Scope, ScopeCol, SqlExpr};
use super::{cname, RCol, Rel, Translator, ORD};

/// Chooses unique column names: a taken name gets a number (`x1`, `x2`).
#[derive(Default)]
struct Names {
    taken: Vec<String>,
    auto: usize,
}

impl Names {
    fn unique(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut n = 1;
        while self.taken.contains(&name) {
            name = format!("{base}{n}");
            n += 1;
        }
        self.taken.push(name.clone());
        name
    }

    /// KQL's `Column1`, `Column2`, ... for expressions without a name.
    fn column_n(&mut self) -> String {
        loop {
            self.auto += 1;
            let name = format!("Column{}", self.auto);
            if !self.taken.contains(&name) {
                self.taken.push(name.clone());
                return name;
            }
        }
    }
}

/// `SELECT items FROM (rel) AS t tail`, keeping the row order column when
/// `keep_ord` and the input has it.
fn select(rel: &Rel, items: Vec<(String, RCol)>, keep_ord: bool, tail: &str) -> Rel {
    let mut list: Vec<String> = items
        .iter()
        .enumerate()
        .map(|(i, (sql, _))| format!("{sql} AS {}", cname(i)))
        .collect();
    let ordered = keep_ord && rel.ordered;
    if ordered {
        list.push(format!("t.{ORD}"));
    }
    if list.is_empty() {
        list.push("NULL AS c0".into());
    }
    Rel {
        sql: format!("SELECT {} FROM ({}) AS t{tail}", list.join(", "), rel.sql),
        cols: items.into_iter().map(|(_, c)| c).collect(),
        ordered,
    }
}

fn passthrough(rel: &Rel) -> Vec<(String, RCol)> {
    rel.cols
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("t.{}", cname(i)), c.clone()))
        .collect()
}

fn col(name: &str, e: &SqlExpr) -> RCol {
    RCol {
        name: name.to_string(),
        ty: e.ty,
        nullable: e.nullable,
    }
}

/// Whether `name` matches a `project-away` pattern (`*` is a wildcard).
fn glob(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let mut rest = name;
    for (i, p) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(p) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(p);
        } else {
            match rest.find(p) {
                Some(k) => rest = &rest[k + p.len()..],
                None => return false,
            }
        }
    }
    true
}

/// The row count of `take`/`top`: a non-negative whole number.
fn row_count(e: &SqlExpr, span: Span) -> Result<i64> {
    match e.lit {
        Some(Lit::Long(n)) if n >= 0 => Ok(n),
        _ => Err(semantic(
            span,
            "the row count must be a non-negative whole number literal",
        )),
    }
}

/// One aggregation of `summarize`: inner SQL items (computed per group) and
/// outer items reading them (`{a}` stands for the inner alias).
struct Agg {
    inner: Vec<String>,
    outer: Vec<(String, RCol)>,
}

impl Translator<'_> {
    pub(crate) fn operator(&mut self, rel: Rel, op: &Op) -> Result<Rel> {
        let scope = Scope::of(&rel.cols, "t.");
        match &op.kind {
            OpKind::Where(pred) => {
                let p = self.expr(pred, &scope)?;
                if p.ty != Type::Bool {
                    return Err(semantic(
                        pred.span,
                        format!("where needs a bool predicate, not a {}", p.ty),
                    ));
                }
                let items = passthrough(&rel);
                Ok(select(&rel, items, true, &format!(" WHERE {}", p.sql)))
            }
            OpKind::Project(items) => {
                let mut names = Names::default();
                let mut out = Vec::new();
                for it in items {
                    let v = self.expr(&it.expr, &scope)?;
                    let name = match (&it.name, &v.name) {
                        (Some(n), _) => n.text.clone(),
                        (None, Some(n)) => n.clone(),
                        (None, None) => names.column_n(),
                    };
                    if names.taken.contains(&name) && it.name.is_some()
                        || out.iter().any(|(_, c): &(String, RCol)| c.name == name)
                    {
                        return Err(semantic(
                            it.expr.span,
                            format!("project names the column '{name}' twice"),
                        ));
                    }
                    names.taken.push(name.clone());
                    out.push((v.sql.clone(), col(&name, &v)));
                }
                Ok(select(&rel, out, true, ""))
            }
            OpKind::Extend(items) => {
                // Later items may use earlier ones: they are inlined.
                let mut scope = scope;
                let mut cols: Vec<(String, RCol)> = passthrough(&rel);
                let mut names = Names {
                    taken: cols.iter().map(|(_, c)| c.name.clone()).collect(),
                    auto: 0,
                };
                for it in items {
                    let v = self.expr(&it.expr, &scope)?;
                    let name = match (&it.name, &v.name) {
                        (Some(n), _) => n.text.clone(),
                        (None, Some(n)) => n.clone(),
                        (None, None) => names.column_n(),
                    };
                    // An existing column is replaced and moves to the end.
                    cols.retain(|(_, c)| c.name != name);
                    let sql = format!("({})", v.sql);
                    cols.push((sql.clone(), col(&name, &v)));
                    scope.cols.retain(|c| c.name != name);
                    scope.cols.push(ScopeCol {
                        name: name.clone(),
                        sql,
                        ty: v.ty,
                        nullable: v.nullable,
                    });
                    if !names.taken.contains(&name) {
                        names.taken.push(name);
                    }
                }
                Ok(select(&rel, cols, true, ""))
            }
            OpKind::ProjectAway(patterns) => {
                for p in patterns {
                    if !p.text.contains('*') && !rel.cols.iter().any(|c| c.name == p.text) {
                        return Err(semantic(
                            p.span,
                            format!(
                                "project-away: there is no column '{}' (the input has {})",
                                p.text,
                                scope.names()
                            ),
                        ));
                    }
                }
                let items = passthrough(&rel)
                    .into_iter()
                    .filter(|(_, c)| !patterns.iter().any(|p| glob(&p.text, &c.name)))
                    .collect();
                Ok(select(&rel, items, true, ""))
            }
            OpKind::ProjectRename(pairs) => {
                let mut items = passthrough(&rel);
                for (new, old) in pairs {
                    let Some(k) = items.iter().position(|(_, c)| c.name == old.text) else {
                        return Err(semantic(
                            old.span,
                            format!(
                                "project-rename: there is no column '{}' (the input has {})",
                                old.text,
                                scope.names()
                            ),
                        ));
                    };
                    if items
                        .iter()
                        .enumerate()
                        .any(|(j, (_, c))| j != k && c.name == new.text)
                    {
                        return Err(semantic(
                            new.span,
                            format!("project-rename: a column '{}' already exists", new.text),
                        ));
                    }
                    items[k].1.name = new.text.clone();
                }
                Ok(select(&rel, items, true, ""))
            }
            OpKind::Sort(keys) => self.sort(rel, keys, None),
            OpKind::Top { count, key } => {
                let n = self.expr(count, &Scope::empty())?;
                let n = row_count(&n, count.span)?;
                self.sort(rel, std::slice::from_ref(key), Some(n))
            }
            OpKind::Take(count) => {
                let n = self.expr(count, &Scope::empty())?;
                let n = row_count(&n, count.span)?;
                let items = passthrough(&rel);
                let tail = if rel.ordered {
                    format!(" ORDER BY t.{ORD} LIMIT {n}")
                } else {
                    format!(" LIMIT {n}")
                };
                Ok(select(&rel, items, true, &tail))
            }
            OpKind::Count => Ok(Rel {
                sql: format!("SELECT count(*) AS c0 FROM ({}) AS t", rel.sql),
                cols: vec![RCol {
                    name: "Count".into(),
                    ty: Type::Long,
                    nullable: false,
                }],
                ordered: false,
            }),
            OpKind::Distinct(cols) => {
                let items: Vec<(String, RCol)> = if cols.is_empty() {
                    passthrough(&rel)
                } else {
                    let mut out = Vec::new();
                    for c in cols {
                        let Some(k) = rel.cols.iter().position(|x| x.name == c.text) else {
                            return Err(semantic(
                                c.span,
                                format!(
                                    "distinct: there is no column '{}' (the input has {})",
                                    c.text,
                                    scope.names()
                                ),
                            ));
                        };
                        out.push((format!("t.{}", cname(k)), rel.cols[k].clone()));
                    }
                    out
                };
                if items.iter().any(|(_, c)| c.ty == Type::Dynamic) {
                    return Err(unsupported(op.span, "distinct over dynamic columns"));
                }
                let mut r = select(&rel, items, false, "");
                r.sql = r.sql.replacen("SELECT ", "SELECT DISTINCT ", 1);
                Ok(r)
            }
            OpKind::Summarize { aggs, by } => self.summarize(rel, aggs, by, op.span),
            OpKind::Join { kind, right, on } => self.join(rel, kind.as_ref(), right, on, op.span),
            OpKind::Union(u) => self.union(Some(rel), u),
            OpKind::Render { .. } => Err(unsupported(op.span, "render must be the last operator")),
        }
    }

    /// `sort by` (and `top n by` when `limit` is given): numbers the rows
    /// in the hidden order column.
    fn sort(&mut self, rel: Rel, keys: &[SortKey], limit: Option<i64>) -> Result<Rel> {
        let scope = Scope::of(&rel.cols, "t.");
        let mut order = Vec::new();
        for k in keys {
            let v = self.expr(&k.expr, &scope)?;
            if v.ty == Type::Dynamic {
                return Err(unsupported(k.expr.span, "sorting by a dynamic value"));
            }
            // KQL: descending by default; nulls last when descending,
            // first when ascending.
            let desc = k.desc.unwrap_or(true);
            let nulls_first = k.nulls_first.unwrap_or(!desc);
            order.push(format!(
                "{} {} NULLS {}",
                v.sql,
                if desc { "DESC" } else { "ASC" },
                if nulls_first { "FIRST" } else { "LAST" }
            ));
        }
        let mut items: Vec<String> = rel
            .cols
            .iter()
            .enumerate()
            .map(|(i, _)| format!("t.{} AS {}", cname(i), cname(i)))
            .collect();
        items.push(format!(
            "row_number() OVER (ORDER BY {}) AS {ORD}",
            order.join(", ")
        ));
        let sorted = Rel {
            sql: format!("SELECT {} FROM ({}) AS t", items.join(", "), rel.sql),
            cols: rel.cols.clone(),
            ordered: true,
        };
        Ok(match limit {
            None => sorted,
            Some(n) => {
                let items = passthrough(&sorted);
                select(&sorted, items, true, &format!(" WHERE t.{ORD} <= {n}"))
            }
        })
    }

    fn summarize(
        &mut self,
        rel: Rel,
        aggs: &[NamedExpr],
        by: &[NamedExpr],
        span: Span,
    ) -> Result<Rel> {
        let scope = Scope::of(&rel.cols, "t.");
        let mut names = Names::default();
        let mut inner: Vec<String> = Vec::new();
        let mut outer: Vec<(String, RCol)> = Vec::new();
        let mut key_cols: Vec<String> = Vec::new();
        // Group keys first, as KQL lists them.
        for k in by {
            let v = self.expr(&k.expr, &scope)?;
            if v.ty == Type::Dynamic {
                return Err(unsupported(k.expr.span, "summarize by a dynamic value"));
            }
            let name = match (&k.name, &v.name) {
                (Some(n), _) => n.text.clone(),
                (None, Some(n)) => n.clone(),
                (None, None) => names.column_n(),
            };
            let name = names.unique(&name);
            let alias = format!("k{}", inner.len());
            inner.push(format!("{} AS {alias}", v.sql));
            outer.push((alias, col(&name, &v)));
            key_cols.push(name);
        }
        let nkeys = inner.len();
        for a in aggs {
            let agg = self.aggregate(a, &scope, &rel, &key_cols, &mut names)?;
            let base = inner.len();
            for (j, sql) in agg.inner.iter().enumerate() {
                inner.push(format!("{sql} AS a{}", base + j));
            }
            for (sql, c) in agg.outer {
                let mut s = sql;
                for j in (0..agg.inner.len()).rev() {
                    s = s.replace(&format!("{{a{j}}}"), &format!("a{}", base + j));
                }
                outer.push((s, c));
            }
        }
        if inner.is_empty() {
            return Err(syntax(
                span,
                "summarize needs an aggregation or a `by` clause",
            ));
        }
        let group = if nkeys == 0 {
            String::new()
        } else {
            format!(
                " GROUP BY {}",
                (1..=nkeys)
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let inner_rel = Rel {
            sql: format!("SELECT {} FROM ({}) AS t{group}", inner.join(", "), rel.sql),
            cols: Vec::new(),
            ordered: false,
        };
        let items: Vec<String> = outer
            .iter()
            .enumerate()
            .map(|(i, (sql, _))| format!("{sql} AS {}", cname(i)))
            .collect();
        Ok(Rel {
            sql: format!("SELECT {} FROM ({}) AS g", items.join(", "), inner_rel.sql),
            cols: outer.into_iter().map(|(_, c)| c).collect(),
            ordered: false,
        })
    }

    fn aggregate(
        &mut self,
        a: &NamedExpr,
        scope: &Scope,
        rel: &Rel,
        keys: &[String],
        names: &mut Names,
    ) -> Result<Agg> {
        let ExprKind::Call { name: fname, args } = &a.expr.kind else {
            return Err(semantic(
                a.expr.span,
                "summarize takes aggregation functions (count(), sum(x), ...), not plain expressions",
            ));
        };
        let f = fname.text.as_str();
        let span = a.expr.span;
        let given = a.name.as_ref().map(|n| n.text.clone());
        let arg_name = |e: &SqlExpr| e.name.clone().unwrap_or_default();
        let want = |n: usize| -> Result<()> {
            if args.len() != n {
                return Err(semantic(
                    span,
                    format!(
                        "{f}() takes {n} argument{}, not {}",
                        if n == 1 { "" } else { "s" },
                        args.len()
                    ),
                ));
            }
            Ok(())
        };
        let one = |names: &mut Names,
                   default: String,
                   inner: String,
                   outer: String,
                   ty: Type,
                   nullable: bool|
         -> Agg {
            let name = names.unique(&given.clone().unwrap_or(default));
            Agg {
                inner: vec![inner],
                outer: vec![(outer, RCol { name, ty, nullable })],
            }
        };
        match f {
            "count" => {
                if !args.is_empty() {
                    return Err(unsupported(
                        span,
                        "count() with an argument; use countif(isnotnull(x)) or count()",
                    ));
                }
                Ok(one(
                    names,
                    "count_".into(),
                    "count(*)".into(),
                    "CAST({a0} AS BIGINT)".into(),
                    Type::Long,
                    false,
                ))
            }
            "countif" => {
                want(1)?;
                let p = self.expr(&args[0], scope)?;
                if p.ty != Type::Bool {
                    return Err(semantic(
                        args[0].span,
                        format!("countif() needs a bool predicate, not a {}", p.ty),
                    ));
                }
                Ok(one(
                    names,
                    "countif_".into(),
                    format!("count(*) FILTER (WHERE {})", p.sql),
                    "CAST({a0} AS BIGINT)".into(),
                    Type::Long,
                    false,
                ))
            }
            "dcount" => {
                if args.is_empty() || args.len() > 2 {
                    return Err(semantic(
                        span,
                        "dcount() takes a value and an optional accuracy",
                    ));
                }
                let v = self.expr(&args[0], scope)?;
                if v.ty == Type::Dynamic {
                    return Err(unsupported(args[0].span, "dcount of dynamic values"));
                }
                // Exact: KQL's estimate is exact on small sets, and never
                // better than this.
                Ok(one(
                    names,
                    format!("dcount_{}", arg_name(&v)),
                    format!("count(DISTINCT {})", v.sql),
                    "CAST({a0} AS BIGINT)".into(),
                    Type::Long,
                    false,
                ))
            }
            "sum" | "avg" | "min" | "max" => {
                want(1)?;
                let v = self.expr(&args[0], scope)?;
                let default = format!("{f}_{}", arg_name(&v));
                match f {
                    "sum" => {
                        let (ty, zero) = match v.ty {
                            Type::Int | Type::Long => (Type::Long, "0"),
                            Type::Real => (Type::Real, "0"),
                            Type::Decimal => (Type::Decimal, "0"),
                            Type::TimeSpan => (Type::TimeSpan, "0"),
                            t => {
                                return Err(semantic(
                                    args[0].span,
                                    format!("sum() adds numbers or timespans, not a {t}"),
                                ))
                            }
                        };
                        // A group whose values are all null sums to 0.
                        Ok(one(
                            names,
                            default,
                            format!("sum({})", v.sql),
                            format!("CAST(coalesce({{a0}}, {zero}) AS {})", ty.sql()),
                            ty,
                            false,
                        ))
                    }
                    "avg" => match v.ty {
                        t if t.is_numeric() => Ok(one(
                            names,
                            default,
                            format!("avg(CAST({} AS DOUBLE))", v.sql),
                            "{a0}".into(),
                            Type::Real,
                            true,
                        )),
                        Type::TimeSpan => Ok(one(
                            names,
                            default,
                            format!("avg({})", v.sql),
                            "CAST(round({a0}) AS BIGINT)".into(),
                            Type::TimeSpan,
                            true,
                        )),
                        t => Err(semantic(
                            args[0].span,
                            format!("avg() averages numbers or timespans, not a {t}"),
                        )),
                    },
                    _ => {
                        if matches!(v.ty, Type::Dynamic | Type::Bool) {
                            return Err(semantic(
                                args[0].span,
                                format!("{f}() does not apply to a {}", v.ty),
                            ));
                        }
                        // An empty string is no value for min/max.
                        let x = if v.ty == Type::String {
                            format!("nullif({}, '')", v.sql)
                        } else {
                            v.sql.clone()
                        };
                        let outer = if v.ty == Type::String {
                            "coalesce({a0}, '')"
                        } else {
                            "{a0}"
                        };
                        Ok(one(
                            names,
                            default,
                            format!("{f}({x})"),
                            outer.into(),
                            v.ty,
                            true,
                        ))
                    }
                }
            }
            "percentile" | "percentiles" => {
                if args.len() < 2 || (f == "percentile" && args.len() != 2) {
                    return Err(semantic(
                        span,
                        format!(
                            "{f}() takes a value and {}",
                            if f == "percentile" {
                                "one percentage"
                            } else {
                                "percentages"
                            }
                        ),
                    ));
                }
                let v = self.expr(&args[0], scope)?;
                if !v.ty.is_plottable() {
                    return Err(semantic(
                        args[0].span,
                        format!(
                            "{f}() needs numbers, datetimes or timespans, not a {}",
                            v.ty
                        ),
                    ));
                }
                if f == "percentiles" && a.name.is_some() {
                    return Err(unsupported(
                        span,
                        "naming the columns of percentiles(); use one percentile() per column",
                    ));
                }
                let inner = format!(
                    "list_sort(list({x}) FILTER (WHERE {x} IS NOT NULL))",
                    x = v.sql
                );
                let mut outer = Vec::new();
                for p in &args[1..] {
                    let pv = self.expr(p, &Scope::empty())?;
                    let pct = match pv.lit {
                        Some(Lit::Long(n)) => n as f64,
                        Some(Lit::Real(r)) => r,
                        _ => {
                            return Err(semantic(
                                p.span,
                                "a percentage is a number literal from 0 to 100",
                            ))
                        }
                    };
                    if !(0.0..=100.0).contains(&pct) {
                        return Err(semantic(
                            p.span,
                            "a percentage is a number literal from 0 to 100",
                        ));
                    }
                    let label = format!("{pct}").replace('.', "_");
                    let name = if f == "percentile" {
                        given
                            .clone()
                            .unwrap_or(format!("percentile_{}_{label}", arg_name(&v)))
                    } else {
                        format!("percentile_{}_{label}", arg_name(&v))
                    };
                    let name = names.unique(&name);
                    // Nearest rank: the value at rank ceil(P/100 * N).
                    let sql = format!(
                        "CASE WHEN len({{a0}}) = 0 THEN NULL ELSE {{a0}}[greatest(1, CAST(ceil({pct:?} / 100.0 * len({{a0}})) AS BIGINT))] END"
                    );
                    outer.push((
                        sql,
                        RCol {
                            name,
                            ty: v.ty,
                            nullable: true,
                        },
                    ));
                }
                Ok(Agg {
                    inner: vec![inner],
                    outer,
                })
            }
            "make_list" => {
                if args.is_empty() || args.len() > 2 {
                    return Err(semantic(
                        span,
                        "make_list() takes a value and an optional maximum size",
                    ));
                }
                let v = self.expr(&args[0], scope)?;
                let max = match args.get(1) {
                    None => None,
                    Some(m) => match self.expr(m, &Scope::empty())?.lit {
                        Some(Lit::Long(n)) if n > 0 => Some(n),
                        _ => {
                            return Err(semantic(
                                m.span,
                                "make_list()'s maximum size is a positive whole number literal",
                            ))
                        }
                    },
                };
                let elem = json_element(&v);
                let list = format!("list({elem}) FILTER (WHERE ({}) IS NOT NULL)", v.sql);
                let outer = match max {
                    None => "coalesce(to_json({a0}), CAST('[]' AS JSON))".to_string(),
                    Some(n) => format!("coalesce(to_json({{a0}}[1:{n}]), CAST('[]' AS JSON))"),
                };
                Ok(one(
                    names,
                    format!("list_{}", arg_name(&v)),
                    list,
                    outer,
                    Type::Dynamic,
                    false,
                ))
            }
            "arg_max" | "arg_min" => {
                if args.len() < 2 {
                    return Err(semantic(
                        span,
                        format!(
                            "{f}() takes the expression to {} and the columns to return (or *)",
                            if f == "arg_max" {
                                "maximize"
                            } else {
                                "minimize"
                            }
                        ),
                    ));
                }
                if a.name.is_some() {
                    return Err(unsupported(span, format!("naming the result of {f}()")));
                }
                let by = self.expr(&args[0], scope)?;
                let Some(by_name) = by
                    .name
                    .clone()
                    .filter(|_| matches!(args[0].kind, ExprKind::Name(_)))
                else {
                    return Err(unsupported(
                        args[0].span,
                        format!("{f}() over an expression; extend a column with it first"),
                    ));
                };
                if matches!(by.ty, Type::Dynamic | Type::Bool) {
                    return Err(semantic(
                        args[0].span,
                        format!("{f}() cannot order by a {}", by.ty),
                    ));
                }
                // The columns returned: the ordering column, then the rest.
                let mut ret: Vec<(String, ScopeCol)> = Vec::new();
                let by_col = scope
                    .cols
                    .iter()
                    .find(|c| c.name == by_name)
                    .cloned()
                    .ok_or_else(|| semantic(args[0].span, "unknown column"))?;
                ret.push((by_name.clone(), by_col));
                for r in &args[1..] {
                    match &r.kind {
                        ExprKind::Star => {
                            for c in &scope.cols {
                                if c.name != by_name
                                    && !keys.contains(&c.name)
                                    && !ret.iter().any(|(n, _)| *n == c.name)
                                {
                                    ret.push((c.name.clone(), c.clone()));
                                }
                            }
                        }
                        ExprKind::Name(n) => {
                            let Some(c) = scope.cols.iter().find(|c| c.name == *n) else {
                                return Err(semantic(
                                    r.span,
                                    format!(
                                        "'{n}' is not a column (the input has {})",
                                        scope.names()
                                    ),
                                ));
                            };
                            if !ret.iter().any(|(x, _)| x == n) {
                                ret.push((n.clone(), c.clone()));
                            }
                        }
                        _ => {
                            return Err(unsupported(
                                r.span,
                                format!("{f}() returning an expression; return columns or *"),
                            ))
                        }
                    }
                }
                let _ = rel;
                let fields: Vec<String> = ret
                    .iter()
                    .enumerate()
                    .map(|(i, (_, c))| format!("'f{i}': {}", c.sql))
                    .collect();
                // One struct keeps the values of one row together; rows
                // whose ordering value is null are skipped.
                let inner = format!("{f}({{{}}}, {})", fields.join(", "), by.sql);
                let outer = ret
                    .into_iter()
                    .enumerate()
                    .map(|(i, (n, c))| {
                        let name = names.unique(&n);
                        let sql = if c.ty == Type::String {
                            format!("coalesce({{a0}}.f{i}, '')")
                        } else {
                            format!("{{a0}}.f{i}")
                        };
                        (
                            sql,
                            RCol {
                                name,
                                ty: c.ty,
                                nullable: c.ty != Type::String,
                            },
                        )
                    })
                    .collect();
                Ok(Agg {
                    inner: vec![inner],
                    outer,
                })
            }
            _ => Err(unsupported(
                fname.span,
                format!(
                    "the aggregation '{f}' is not supported; Sluice translates {}",
                    super::expr::AGGREGATES.join(", ")
                ),
            )),
        }
    }

    fn join(
        &mut self,
        left: Rel,
        kind: Option<&Name>,
        right: &crate::ast::Tabular,
        on: &[JoinKey],
        span: Span,
    ) -> Result<Rel> {
        let (right, render) = self.tabular(right)?;
        if let Some((_, s)) = render {
            return Err(unsupported(s, "render inside a join"));
        }
        let kind_text = kind.map(|k| k.text.as_str()).unwrap_or("innerunique");
        let kind_span = kind.map(|k| k.span).unwrap_or(span);
        let kind = match kind_text {
            "innerunique" | "inner" | "leftouter" | "rightouter" | "fullouter" | "leftsemi" | "rightsemi" => kind_text,
            "leftanti" | "anti" | "leftantisemi" => "leftanti",
            "rightanti" | "rightantisemi" => "rightanti",
            "semi" => "leftsemi",
            other => {
                return Err(unsupported(
                    kind_span,
                    format!("the join kind '{other}' is not supported (innerunique, inner, leftouter, rightouter, fullouter, leftsemi, rightsemi, leftanti, rightanti)"),
                ))
            }
        };
        let ls = Scope::of(&left.cols, "l.");
        let rs = Scope::of(&right.cols, "r.");
        let mut conds = Vec::new();
        let mut left_keys = Vec::new();
        for k in on {
            let (a, b) = match k {
                JoinKey::Same(n) => (n, n),
                JoinKey::Pair(a, b) => (a, b),
            };
            let find = |s: &Scope, n: &Name, side: &str| -> Result<ScopeCol> {
                s.cols
                    .iter()
                    .find(|c| c.name == n.text)
                    .cloned()
                    .ok_or_else(|| {
                        semantic(
                            n.span,
                            format!(
                                "join: the {side} side has no column '{}' (it has {})",
                                n.text,
                                s.names()
                            ),
                        )
                    })
            };
            let lc = find(&ls, a, "left")?;
            let rc = find(&rs, b, "right")?;
            if !(lc.ty == rc.ty || (lc.ty.is_numeric() && rc.ty.is_numeric()))
                || lc.ty == Type::Dynamic
            {
                return Err(semantic(
                    a.span.to(b.span),
                    format!(
                        "join: '{}' is a {} and '{}' a {}",
                        a.text, lc.ty, b.text, rc.ty
                    ),
                ));
            }
            conds.push(format!("{} = {}", lc.sql, rc.sql));
            left_keys.push(lc.sql.replacen("l.", "t.", 1));
        }
        let cond = conds.join(" AND ");
        // innerunique: one (arbitrary) left row per key, as KQL.
        let left_sql = if kind == "innerunique" {
            format!(
                "SELECT * FROM ({}) AS t QUALIFY row_number() OVER (PARTITION BY {}) = 1",
                left.sql,
                left_keys.join(", ")
            )
        } else {
            left.sql.clone()
        };
        let mut names = Names::default();
        let mut items: Vec<(String, RCol)> = Vec::new();
        let (take_left, take_right) = match kind {
            "leftsemi" | "leftanti" => (true, false),
            "rightsemi" | "rightanti" => (false, true),
            _ => (true, true),
        };
        let outer_left = matches!(kind, "rightouter" | "fullouter");
        let outer_right = matches!(kind, "leftouter" | "fullouter");
        let mut add = |items: &mut Vec<(String, RCol)>, scope: &Scope, nullable_side: bool| {
            for c in &scope.cols {
                let name = names.unique(&c.name);
                let sql = if nullable_side && c.ty == Type::String {
                    format!("coalesce({}, '')", c.sql)
                } else {
                    c.sql.clone()
                };
                items.push((
                    sql,
                    RCol {
                        name,
                        ty: c.ty,
                        nullable: c.ty != Type::String && (c.nullable || nullable_side),
                    },
                ));
            }
        };
        if take_left {
            add(&mut items, &ls, outer_left);
        }
        if take_right {
            add(&mut items, &rs, outer_right);
        }
        let from = match kind {
            "innerunique" | "inner" => {
                format!("({left_sql}) AS l JOIN ({}) AS r ON {cond}", right.sql)
            }
            "leftouter" => format!("({left_sql}) AS l LEFT JOIN ({}) AS r ON {cond}", right.sql),
            "rightouter" => format!(
                "({left_sql}) AS l RIGHT JOIN ({}) AS r ON {cond}",
                right.sql
            ),
            "fullouter" => format!("({left_sql}) AS l FULL JOIN ({}) AS r ON {cond}", right.sql),
            "leftsemi" => format!("({left_sql}) AS l SEMI JOIN ({}) AS r ON {cond}", right.sql),
            "leftanti" => format!("({left_sql}) AS l ANTI JOIN ({}) AS r ON {cond}", right.sql),
            "rightsemi" => format!("({}) AS r SEMI JOIN ({left_sql}) AS l ON {cond}", right.sql),
            _ => format!("({}) AS r ANTI JOIN ({left_sql}) AS l ON {cond}", right.sql),
        };
        let list: Vec<String> = items
            .iter()
            .enumerate()
            .map(|(i, (s, _))| format!("{s} AS {}", cname(i)))
            .collect();
        Ok(Rel {
            sql: format!("SELECT {} FROM {from}", list.join(", ")),
            cols: items.into_iter().map(|(_, c)| c).collect(),
            ordered: false,
        })
    }

    pub(crate) fn union(&mut self, first: Option<Rel>, u: &Union) -> Result<Rel> {
        let mut rels = Vec::new();
        if let Some(f) = first {
            rels.push(f);
        }
        for t in &u.tables {
            let (r, render) = self.tabular(t)?;
            if let Some((_, s)) = render {
                return Err(unsupported(s, "render inside a union"));
            }
            rels.push(r);
        }
        let inner = match u.kind.as_ref().map(|k| k.text.as_str()) {
            None | Some("outer") => false,
            Some("inner") => true,
            Some(other) => {
                let span = u.kind.as_ref().map(|k| k.span).unwrap_or_default();
                return Err(unsupported(
                    span,
                    format!("union kind '{other}' (inner or outer)"),
                ));
            }
        };
        // The output columns: by name, in order of first appearance.
        let mut cols: Vec<RCol> = Vec::new();
        for r in &rels {
            for c in &r.cols {
                match cols.iter_mut().find(|x| x.name == c.name) {
                    Some(x) if x.ty != c.ty => {
                        let span = u
                            .tables
                            .first()
                            .map(|_| Span::default())
                            .unwrap_or_default();
                        return Err(unsupported(
                            span,
                            format!(
                                "union of column '{}' with different types ({} and {})",
                                c.name, x.ty, c.ty
                            ),
                        ));
                    }
                    Some(x) => x.nullable |= c.nullable,
                    None => cols.push(c.clone()),
                }
            }
        }
        if inner {
            cols.retain(|c| rels.iter().all(|r| r.cols.iter().any(|x| x.name == c.name)));
        } else {
            for c in cols.iter_mut() {
                if rels
                    .iter()
                    .any(|r| !r.cols.iter().any(|x| x.name == c.name))
                {
                    c.nullable = c.ty != Type::String;
                }
            }
        }
        let parts: Vec<String> = rels
            .iter()
            .map(|r| {
                let list: Vec<String> = cols
                    .iter()
                    .enumerate()
                    .map(
                        |(i, c)| match r.cols.iter().position(|x| x.name == c.name) {
                            Some(k) => format!("t.{} AS {}", cname(k), cname(i)),
                            None if c.ty == Type::String => format!("'' AS {}", cname(i)),
                            None => format!("CAST(NULL AS {}) AS {}", c.ty.sql(), cname(i)),
                        },
                    )
                    .collect();
                format!("SELECT {} FROM ({}) AS t", list.join(", "), r.sql)
            })
            .collect();
        Ok(Rel {
            sql: parts.join(" UNION ALL "),
            cols,
            ordered: false,
        })
    }

    pub(crate) fn print(&mut self, _span: Span, items: &[NamedExpr]) -> Result<Rel> {
        let mut names = Names::default();
        let mut list = Vec::new();
        let mut cols = Vec::new();
        for (i, it) in items.iter().enumerate() {
            let v = self.expr(&it.expr, &Scope::empty())?;
            let name = match &it.name {
                Some(n) => n.text.clone(),
                None => format!("print_{i}"),
            };
            let name = names.unique(&name);
            list.push(format!("{} AS {}", v.sql, cname(i)));
            cols.push(col(&name, &v));
        }
        Ok(Rel {
            sql: format!("SELECT {}", list.join(", ")),
            cols,
            ordered: false,
        })
    }

    pub(crate) fn datatable(
        &mut self,
        span: Span,
        columns: &[(Name, Name)],
        values: &[Expr],
    ) -> Result<Rel> {
        let mut cols = Vec::new();
        for (n, t) in columns {
            let ty = Type::from_name(&t.text)
                .ok_or_else(|| semantic(t.span, format!("'{}' is not a KQL type", t.text)))?;
            cols.push(RCol {
                name: n.text.clone(),
                ty,
                nullable: ty != Type::String,
            });
        }
        if cols.is_empty() {
            return Err(syntax(span, "a datatable has at least one column"));
        }
        if !values.len().is_multiple_of(cols.len()) {
            return Err(semantic(
                span,
                format!(
                    "the datatable has {} values, not a multiple of its {} columns",
                    values.len(),
                    cols.len()
                ),
            ));
        }
        let mut rows = Vec::new();
        for (k, row) in values.chunks(cols.len()).enumerate() {
            let mut cells = Vec::new();
            for (v, c) in row.iter().zip(&cols) {
                let x = self.expr(v, &Scope::empty())?;
                if x.lit.is_none() {
                    return Err(semantic(v.span, "datatable values are literals"));
                }
                let ok = x.ty == c.ty || (x.ty.is_numeric() && c.ty.is_numeric());
                if !ok {
                    return Err(semantic(
                        v.span,
                        format!(
                            "column '{}' is a {}, and this value a {}",
                            c.name, c.ty, x.ty
                        ),
                    ));
                }
                cells.push(format!("CAST({} AS {})", x.sql, c.ty.sql()));
            }
            // The row's place: KQL keeps a datatable's rows in the order
            // written.
            cells.push(format!("CAST({} AS BIGINT)", k + 1));
            rows.push(format!("({})", cells.join(", ")));
        }
        let mut names: Vec<String> = (0..cols.len()).map(cname).collect();
        names.push(ORD.to_string());
        let sql = if rows.is_empty() {
            let list: Vec<String> = cols
                .iter()
                .enumerate()
                .map(|(i, c)| format!("CAST(NULL AS {}) AS {}", c.ty.sql(), cname(i)))
                .collect();
            format!(
                "SELECT {}, CAST(0 AS BIGINT) AS {ORD} WHERE false",
                list.join(", ")
            )
        } else {
            format!(
                "SELECT * FROM (VALUES {}) AS v({})",
                rows.join(", "),
                names.join(", ")
            )
        };
        Ok(Rel {
            sql,
            cols,
            ordered: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(glob("a*", "abc"));
        assert!(glob("*_id", "order_id"));
        assert!(glob("a*c", "abc"));
        assert!(!glob("a*c", "abd"));
        assert!(glob("x", "x"));
        assert!(!glob("x", "xy"));
    }
}
