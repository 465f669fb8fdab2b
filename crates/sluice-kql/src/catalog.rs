//! Which DuckDB table a KQL table name means, and with which columns and
//! types.
//!
//! Users name the Azure Data Explorer table they know (`Orders`); the
//! DuckDB sink wrote a table named after the topic or its mapping
//! (`orders`, `orders_info`). A name resolves, in order, through an alias
//! (from the Kusto and DuckDB sinks' topic mappings, or given by hand), an
//! exact DuckDB table name, then a case-insensitive one. Column types come
//! from the ADX table definition (`.create table Orders (...)`) when one is
//! given, so a `purchase_time` stored as text reads as a `datetime`, as ADX
//! ingests it; otherwise from the DuckDB column types.

use crate::lexer::{lex, Tok};
use crate::sqlgen;
use crate::types::{self, Type};

/// A DuckDB table as the file has it.
#[derive(Debug, Clone, PartialEq)]
pub struct DuckTable {
    /// Its name (in the `main` schema).
    pub name: String,
    /// Columns and their DuckDB types, in order.
    pub columns: Vec<(String, String)>,
}

/// An ADX table definition: `.create table T (c: type, ...)`.
#[derive(Debug, Clone, PartialEq)]
pub struct TableDef {
    /// The ADX table name.
    pub name: String,
    /// Columns and KQL types, in order.
    pub columns: Vec<(String, Type)>,
}

/// One column of a resolved table.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogColumn {
    /// The KQL column name.
    pub name: String,
    /// Its KQL type.
    pub ty: Type,
    /// SQL over the DuckDB table giving the value in the KQL type's
    /// representation.
    pub sql: String,
    /// Whether the value can be null (never for strings).
    pub nullable: bool,
}

/// A KQL table name resolved to SQL.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedTable {
    /// The DuckDB table read.
    pub duck_table: String,
    /// The columns KQL sees, in order.
    pub columns: Vec<CatalogColumn>,
}

/// The tables a query can name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    tables: Vec<DuckTable>,
    defs: Vec<TableDef>,
    aliases: Vec<(String, String)>,
}

impl Catalog {
    /// An empty catalog.
    pub fn new() -> Catalog {
        Catalog::default()
    }

    /// Adds a DuckDB table.
    pub fn add_table(&mut self, table: DuckTable) {
        self.tables.retain(|t| t.name != table.name);
        self.tables.push(table);
    }

    /// The DuckDB tables known.
    pub fn tables(&self) -> &[DuckTable] {
        &self.tables
    }

    /// Makes the KQL name `kql` mean the DuckDB table `duck`.
    pub fn add_alias(&mut self, kql: &str, duck: &str) {
        self.aliases.retain(|(k, _)| k != kql);
        self.aliases.push((kql.to_string(), duck.to_string()));
    }

    /// Adds an ADX table definition.
    pub fn add_definition(&mut self, def: TableDef) {
        self.defs.retain(|d| d.name != def.name);
        self.defs.push(def);
    }

    /// Maps ADX tables to DuckDB tables through the topics both sinks
    /// consume: `kusto` is the Kusto sink's topic → ADX table mapping,
    /// `duck_table_of` gives the DuckDB table a topic lands in. A mapping
    /// whose DuckDB table does not exist is skipped (the names may still
    /// match case-insensitively); the skipped ones are returned.
    pub fn map_topics(
        &mut self,
        kusto: &[(String, String)],
        duck_table_of: impl Fn(&str) -> String,
    ) -> Vec<String> {
        let mut skipped = Vec::new();
        for (topic, adx) in kusto {
            if topic == "*" {
                continue;
            }
            let duck = duck_table_of(topic);
            if self.find_duck(&duck).is_some() {
                self.add_alias(adx, &duck);
            } else {
                skipped.push(format!(
                    "topic '{topic}' maps to ADX table '{adx}' and DuckDB table '{duck}', which the file does not have"
                ));
            }
        }
        skipped
    }

    /// Adds the definitions in `.create table` commands (one or more; other
    /// commands such as `.create table T ingestion json mapping` and
    /// `.alter` are skipped). Returns the names defined.
    pub fn add_schema(&mut self, text: &str) -> Result<Vec<String>, String> {
        let defs = parse_schema(text)?;
        let names = defs.iter().map(|d| d.name.clone()).collect();
        for d in defs {
            self.add_definition(d);
        }
        Ok(names)
    }

    fn find_duck(&self, name: &str) -> Option<&DuckTable> {
        self.tables.iter().find(|t| t.name == name).or_else(|| {
            let mut it = self
                .tables
                .iter()
                .filter(|t| t.name.eq_ignore_ascii_case(name));
            match (it.next(), it.next()) {
                (Some(t), None) => Some(t),
                _ => None,
            }
        })
    }

    /// Resolves a KQL table name.
    pub fn resolve(&self, name: &str) -> Result<ResolvedTable, String> {
        let alias = self
            .aliases
            .iter()
            .find(|(k, _)| k == name)
            .or_else(|| {
                self.aliases
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
            })
            .map(|(_, d)| d.as_str());
        let duck = match alias {
            Some(d) => self.find_duck(d),
            None => self.find_duck(name),
        };
        let def = self
            .defs
            .iter()
            .find(|d| d.name == name)
            .or_else(|| self.defs.iter().find(|d| d.name.eq_ignore_ascii_case(name)));
        let Some(duck) = duck else {
            let have: Vec<&str> = self.tables.iter().map(|t| t.name.as_str()).collect();
            let have = if have.is_empty() {
                "no tables".to_string()
            } else {
                format!("the tables {}", have.join(", "))
            };
            let why = match (alias, def) {
                (Some(d), _) => format!("it maps to the DuckDB table '{d}', which does not exist"),
                (None, Some(_)) => "it is defined in the schema, but no DuckDB table has its name (map it with --table NAME=DUCKDB_TABLE or --kusto-config)".to_string(),
                (None, None) => "no DuckDB table has that name, even ignoring case (map ADX names to DuckDB tables with --table NAME=DUCKDB_TABLE or --kusto-config)".to_string(),
            };
            return Err(format!(
                "table '{name}' is not known: {why}; the file has {have}"
            ));
        };
        let from = |c: &str| sqlgen::ident(c);
        let columns = match def {
            Some(def) => def
                .columns
                .iter()
                .map(|(cname, ty)| {
                    let found = duck.columns.iter().find(|(n, _)| n == cname).or_else(|| {
                        duck.columns
                            .iter()
                            .find(|(n, _)| n.eq_ignore_ascii_case(cname))
                    });
                    let sql = match found {
                        Some((n, dt)) => types::convert(&from(n), dt, *ty),
                        // ADX fills a column the data lacks with null ("").
                        None if *ty == Type::String => "''".to_string(),
                        None => format!("CAST(NULL AS {})", ty.sql()),
                    };
                    CatalogColumn {
                        name: cname.clone(),
                        ty: *ty,
                        sql,
                        nullable: *ty != Type::String,
                    }
                })
                .collect(),
            None => duck
                .columns
                .iter()
                .map(|(n, dt)| {
                    let ty = types::from_duckdb(dt).unwrap_or(Type::String);
                    CatalogColumn {
                        name: n.clone(),
                        ty,
                        sql: types::convert(&from(n), dt, ty),
                        nullable: ty != Type::String,
                    }
                })
                .collect(),
        };
        Ok(ResolvedTable {
            duck_table: duck.name.clone(),
            columns,
        })
    }
}

/// Parses `.create table T (c: type, ...)` (and `.create-merge table`,
/// `.create tables A (...), B (...)`) commands; other commands are
/// skipped. Errors name the command and what is wrong.
pub fn parse_schema(text: &str) -> Result<Vec<TableDef>, String> {
    let mut out = Vec::new();
    // Commands start at a line beginning with '.'.
    let mut commands: Vec<(usize, String)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if t.starts_with('.') {
            commands.push((n + 1, t.to_string()));
        } else if let Some(last) = commands.last_mut() {
            last.1.push('\n');
            last.1.push_str(line);
        } else if !t.is_empty() && !t.starts_with("//") {
            return Err(format!(
                "line {}: expected a command starting with '.' (e.g. .create table Orders (orderid: string, ...))",
                n + 1
            ));
        }
    }
    for (line, cmd) in commands {
        let toks = lex(&cmd).map_err(|e| format!("line {line}: {}", e.message))?;
        let words: Vec<&Tok> = toks.iter().map(|t| &t.tok).collect();
        let is = |i: usize, w: &str| matches!(words.get(i), Some(Tok::Ident(s)) if s == w);
        let mut i = 1;
        if !is(i, "create") {
            continue;
        }
        i += 1;
        if matches!(words.get(i), Some(Tok::Punct("-"))) {
            // create-merge, create-or-alter
            while matches!(words.get(i), Some(Tok::Punct("-"))) {
                i += 2;
            }
        }
        let many = is(i, "tables");
        if !is(i, "table") && !many {
            continue;
        }
        i += 1;
        loop {
            let name = match words.get(i) {
                Some(Tok::Ident(s)) | Some(Tok::QuotedIdent(s)) => s.clone(),
                _ => {
                    return Err(format!(
                        "line {line}: expected a table name after '.create table'"
                    ))
                }
            };
            i += 1;
            if !matches!(words.get(i), Some(Tok::Punct("("))) {
                // `.create table T ingestion ... mapping`: not a definition.
                break;
            }
            i += 1;
            let mut columns = Vec::new();
            loop {
                let col = match words.get(i) {
                    Some(Tok::Ident(s)) | Some(Tok::QuotedIdent(s)) => s.clone(),
                    _ => {
                        return Err(format!(
                            "line {line}: table '{name}': expected a column name"
                        ))
                    }
                };
                if !matches!(words.get(i + 1), Some(Tok::Punct(":"))) {
                    return Err(format!(
                        "line {line}: table '{name}': expected ':' and a type after column '{col}'"
                    ));
                }
                let ty_name = match words.get(i + 2) {
                    Some(Tok::Ident(s)) => s.clone(),
                    _ => {
                        return Err(format!(
                            "line {line}: table '{name}': column '{col}' has no type"
                        ))
                    }
                };
                let ty = match ty_name.to_ascii_lowercase().as_str() {
                    // guid columns hold text here.
                    "guid" | "uniqueid" => Type::String,
                    _ => Type::from_name(&ty_name).ok_or_else(|| {
                        format!(
                            "line {line}: table '{name}': column '{col}' has type '{ty_name}', which is not a KQL type (bool, int, long, real, decimal, string, datetime, timespan, dynamic, guid)"
                        )
                    })?,
                };
                columns.push((col.clone(), ty));
                i += 3;
                if matches!(words.get(i), Some(Tok::Punct(","))) {
                    i += 1;
                    continue;
                }
                if matches!(words.get(i), Some(Tok::Punct(")"))) {
                    i += 1;
                    break;
                }
                return Err(format!(
                    "line {line}: table '{name}': expected ',' or ')' after column '{col}'"
                ));
            }
            out.push(TableDef { name, columns });
            if many && matches!(words.get(i), Some(Tok::Punct(","))) {
                i += 1;
                continue;
            }
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn orders() -> DuckTable {
        DuckTable {
            name: "orders".into(),
            columns: vec![
                ("orderid".into(), "INTEGER".into()),
                ("custid".into(), "INTEGER".into()),
                ("amount".into(), "INTEGER".into()),
                ("city".into(), "VARCHAR".into()),
                ("purchase_time".into(), "VARCHAR".into()),
            ],
        }
    }

    #[test]
    fn the_scenario_schema_retypes_columns_in_adx_order() {
        let mut c = Catalog::new();
        c.add_table(orders());
        let names = c
            .add_schema(
                ".create table Orders (orderid: string, custid: string, city: string, amount: int, purchase_time: datetime)\n\
                 .create table Orders ingestion json mapping 'OrdersEventMapping' '[{\"column\":\"orderid\",\"Properties\":{\"path\":\"$.orderid\"}}]'\n\
                 .alter table Orders policy ingestionbatching @'{\"MaximumBatchingTimeSpan\":\"00:00:30\"}'",
            )
            .expect("schema");
        assert_eq!(names, ["Orders"]);
        let t = c.resolve("Orders").expect("resolves");
        assert_eq!(t.duck_table, "orders");
        let cols: Vec<(&str, Type)> = t.columns.iter().map(|c| (c.name.as_str(), c.ty)).collect();
        assert_eq!(
            cols,
            [
                ("orderid", Type::String),
                ("custid", Type::String),
                ("city", Type::String),
                ("amount", Type::Int),
                ("purchase_time", Type::DateTime)
            ]
        );
    }

    #[test]
    fn names_resolve_through_aliases_then_case() {
        let mut c = Catalog::new();
        c.add_table(orders());
        c.add_table(DuckTable {
            name: "orders_info".into(),
            columns: vec![("x".into(), "BIGINT".into())],
        });
        assert_eq!(c.resolve("ORDERS").expect("ci").duck_table, "orders");
        let skipped = c.map_topics(
            &[("myserver.retail.orders_info".into(), "Orders".into())],
            |t| t.rsplit('.').next().unwrap_or(t).to_string(),
        );
        assert!(skipped.is_empty());
        assert_eq!(
            c.resolve("Orders").expect("alias").duck_table,
            "orders_info"
        );
        let err = c.resolve("Customers").expect_err("unknown");
        assert!(err.contains("the tables orders, orders_info"), "{err}");
    }

    #[test]
    fn bad_schemas_name_the_line() {
        let e = parse_schema(".create table T (a: str)").expect_err("bad type");
        assert!(e.contains("line 1") && e.contains("'str'"), "{e}");
        let e = parse_schema("create table T (a: int)").expect_err("no dot");
        assert!(e.contains("line 1"), "{e}");
    }
}
