//! Each supported operator and function, translated and run on DuckDB.
//! Expected results are worked out by hand from KQL's documentation; each
//! test cites the page it follows.

use duckdb::Connection;
use sluice_kql::{exec, translate_with, Catalog, Options, Type};

/// 2020-10-09T12:00:00Z: what now() is in these tests.
const NOW_US: i64 = 1_602_244_800_000_000;

struct Db {
    conn: Connection,
    catalog: Catalog,
}

fn db() -> Db {
    let conn = Connection::open_in_memory().expect("open DuckDB");
    // The scenario's table as the DuckDB sink writes it: purchase_time is
    // the source's text; one amount is NULL to exercise KQL's null rules.
    conn.execute_batch(
        "CREATE TABLE orders (orderid INTEGER, custid INTEGER, amount INTEGER, city VARCHAR, purchase_time VARCHAR);
         INSERT INTO orders VALUES
           (1, 306, 183, 'Austin',   '2020-10-09 07:23:10'),
           (2, 17,  120, 'Seattle',  '2020-10-09 07:29:59'),
           (3, 306, 150, 'New York', '2020-10-09 07:30:00'),
           (4, 501, 101, 'Austin',   '2020-10-09 23:55:01'),
           (5, 17,  NULL, 'New York', '2020-10-10 00:00:05');",
    )
    .expect("seed");
    let mut catalog = exec::catalog_from_duckdb(&conn).expect("catalog");
    catalog
        .add_schema(".create table Orders (orderid: string, custid: string, city: string, amount: int, purchase_time: datetime)")
        .expect("schema");
    Db { conn, catalog }
}

impl Db {
    /// The rows, each value as KQL prints it (null: empty).
    fn rows(&self, q: &str) -> Vec<Vec<String>> {
        let t = translate_with(q, &self.catalog, Options { now_us: NOW_US })
            .unwrap_or_else(|e| panic!("{q}\n{e}"));
        let r = exec::run(&self.conn, &t).unwrap_or_else(|e| panic!("{q}\n{e}\n{}", t.sql));
        r.rows
            .iter()
            .map(|row| row.iter().map(|v| v.to_string()).collect())
            .collect()
    }

    /// The rows, sorted (for operators whose row order KQL leaves open).
    fn sorted(&self, q: &str) -> Vec<Vec<String>> {
        let mut r = self.rows(q);
        r.sort();
        r
    }

    /// One row's values.
    fn one(&self, q: &str) -> Vec<String> {
        let r = self.rows(q);
        assert_eq!(r.len(), 1, "{q}: {r:?}");
        r.into_iter().next().unwrap_or_default()
    }

    fn columns(&self, q: &str) -> Vec<(String, Type)> {
        let t = translate_with(q, &self.catalog, Options { now_us: NOW_US })
            .unwrap_or_else(|e| panic!("{q}\n{e}"));
        t.columns.into_iter().map(|c| (c.name, c.ty)).collect()
    }
}

fn strs(rows: &[&[&str]]) -> Vec<Vec<String>> {
    rows.iter()
        .map(|r| r.iter().map(|s| s.to_string()).collect())
        .collect()
}

const XY: &str = "let X = datatable(Key:string, Value1:long) ['a',1, 'b',2, 'b',3, 'c',4];
                  let Y = datatable(Key:string, Value2:long) ['b',10, 'c',20, 'c',30, 'd',40];";

// https://learn.microsoft.com/en-us/kusto/query/where-operator
// https://learn.microsoft.com/en-us/kusto/query/logical-operators
#[test]
fn where_filters_with_and_or_not() {
    let d = db();
    assert_eq!(
        d.rows("datatable(a:int, b:string) [1,'x', 2,'y', 3,'z'] | where a >= 2 and b != 'z'"),
        strs(&[&["2", "y"]])
    );
    assert_eq!(
        d.rows("datatable(a:int, b:string) [1,'x', 2,'y', 3,'z'] | where a == 1 or not(b == 'y')"),
        strs(&[&["1", "x"], &["3", "z"]])
    );
    assert_eq!(
        d.sorted("Orders | where city == 'Austin' | project orderid"),
        strs(&[&["1"], &["4"]])
    );
}

// https://learn.microsoft.com/en-us/kusto/query/scalar-data-types/null-values
#[test]
fn null_values_compare_as_kql_documents() {
    let d = db();
    // The page's example: two nulls are neither equal nor unequal (null),
    // a null and a value are unequal.
    assert_eq!(
        d.rows(
            "datatable(val:int)[5, int(null)]
             | extend IsBiggerThan3 = val > 3
             | extend IsBiggerThan3OrNull = val > 3 or isnull(val)
             | extend IsEqualToNull = val == int(null)
             | extend IsNotEqualToNull = val != int(null)"
        ),
        strs(&[
            &["5", "true", "true", "false", "true"],
            &["", "", "true", "", ""]
        ])
    );
    // where drops rows whose predicate is null; a null is != 5.
    assert_eq!(
        d.rows("datatable(ival:int, sval:string)[5, 'a', int(null), 'b'] | where ival != 5"),
        strs(&[&["", "b"]])
    );
    // Strings have no null: a missing value is the empty string.
    assert_eq!(
        d.one("print isnull(''), isempty(''), isnotempty('a')"),
        ["false", "true", "true"]
    );
}

// https://learn.microsoft.com/en-us/kusto/query/datatypes-string-operators
#[test]
fn string_operators_and_their_case_rules() {
    let d = db();
    assert_eq!(
        d.one(
            "print a = 'aBc' == 'aBc', b = 'abc' != 'ABC', c = 'abc' =~ 'ABC', d = 'aBc' !~ 'xyz',
                   e = 'abc' == 'ABC'"
        ),
        ["true", "true", "true", "true", "false"]
    );
    assert_eq!(
        d.one(
            "print a = 'FabriKam' contains 'BRik', b = 'Fabrikam' !contains 'xyz', c = 'FabriKam' contains_cs 'Kam',
                   d = 'Fabrikam' !contains_cs 'Kam', e = 'FabriKam' contains_cs 'brik'"
        ),
        ["true", "true", "true", "true", "false"]
    );
    assert_eq!(
        d.one(
            "print a = 'Fabrikam' startswith 'fab', b = 'Fabrikam' startswith_cs 'Fab', c = 'Fabrikam' startswith_cs 'fab',
                   d = 'Fabrikam' !startswith 'kam', e = 'Fabrikam' endswith 'Kam', f = 'Fabrikam' endswith_cs 'kam',
                   g = 'Fabrikam' !endswith 'brik'"
        ),
        ["true", "true", "false", "true", "true", "true", "true"]
    );
    // has matches whole terms (maximal runs of letters and digits).
    assert_eq!(
        d.one(
            "print a = 'North America' has 'america', b = 'North America' !has 'amer', c = 'North America' has_cs 'America',
                   d = 'North America' has_cs 'america', e = 'Kusto: ad67d136-c1db-4f9f-88ef-d94f3b6b0b5a;KustoExplorerQueryRun' has 'c1db',
                   f = 'Kusto: ad67d136-c1db-4f9f;KustoExplorerQueryRun' has 'Explorer', g = 'New York' has 'new york'"
        ),
        ["true", "true", "true", "false", "true", "false", "true"]
    );
    assert_eq!(d.one("print 'Fabrikam' matches regex 'b.*k'"), ["true"]);
    assert_eq!(
        d.one("print 'Fabrikam' hasprefix 'fab', 'North America' hassuffix 'ica'"),
        ["true", "true"]
    );
    assert_eq!(
        d.sorted("Orders | where city has 'york' | project orderid"),
        strs(&[&["3"], &["5"]])
    );
}

// https://learn.microsoft.com/en-us/kusto/query/in-operator
#[test]
fn in_and_not_in() {
    let d = db();
    let t = "datatable(c:string)['Seattle', 'Austin', 'Boston']";
    assert_eq!(
        d.rows(&format!("{t} | where c in ('Seattle', 'Boston')")),
        strs(&[&["Seattle"], &["Boston"]])
    );
    assert_eq!(
        d.rows(&format!("{t} | where c !in ('Seattle', 'Boston')")),
        strs(&[&["Austin"]])
    );
    // in is case-sensitive, in~ is not.
    assert_eq!(
        d.rows(&format!("{t} | where c in ('seattle')")),
        Vec::<Vec<String>>::new()
    );
    assert_eq!(
        d.rows(&format!("{t} | where c in~ ('seattle')")),
        strs(&[&["Seattle"]])
    );
    assert_eq!(
        d.rows("datatable(n:long)[1, 2, 3] | where n in (1, 3)"),
        strs(&[&["1"], &["3"]])
    );
}

// https://learn.microsoft.com/en-us/kusto/query/between-operator
#[test]
fn between_is_inclusive_and_takes_a_timespan_bound() {
    let d = db();
    assert_eq!(
        d.rows("datatable(x:long)[49, 50, 53, 55, 56] | where x between (50 .. 55)"),
        strs(&[&["50"], &["53"], &["55"]])
    );
    assert_eq!(
        d.rows("datatable(x:long)[49, 50, 53, 55, 56] | where x !between (50 .. 55)"),
        strs(&[&["49"], &["56"]])
    );
    assert_eq!(
        d.sorted("Orders | where purchase_time between (datetime(2020-10-09 07:00) .. 30m) | project orderid"),
        strs(&[&["1"], &["2"], &["3"]])
    );
}

// https://learn.microsoft.com/en-us/kusto/query/project-operator
// https://learn.microsoft.com/en-us/kusto/query/project-away-operator
// https://learn.microsoft.com/en-us/kusto/query/project-rename-operator
#[test]
fn project_away_and_rename() {
    let d = db();
    let t = "datatable(a:long, b:long, ab:long)[1, 2, 3]";
    assert_eq!(
        d.columns(&format!("{t} | project x = a + b, b")),
        [("x".into(), Type::Long), ("b".into(), Type::Long)]
    );
    assert_eq!(
        d.rows(&format!("{t} | project x = a + b, b")),
        strs(&[&["3", "2"]])
    );
    assert_eq!(
        d.columns(&format!("{t} | project-away a*")),
        [("b".into(), Type::Long)]
    );
    assert_eq!(d.columns(&format!("{t} | project-away b")).len(), 2);
    let renamed = d.columns(&format!("{t} | project-rename c = a"));
    assert_eq!(renamed[0].0, "c");
    assert_eq!(
        d.columns("Orders | project amount, purchase_time"),
        [
            ("amount".into(), Type::Int),
            ("purchase_time".into(), Type::DateTime)
        ]
    );
}

// https://learn.microsoft.com/en-us/kusto/query/extend-operator
#[test]
fn extend_appends_and_replaces_at_the_end() {
    let d = db();
    let t = "datatable(a:long, b:long)[1, 2]";
    assert_eq!(
        d.rows(&format!("{t} | extend c = a * 10, d = c + 1")),
        strs(&[&["1", "2", "10", "11"]])
    );
    // An existing column is removed and appended with its new value.
    let cols: Vec<String> = d
        .columns(&format!("{t} | extend a = 'x'"))
        .into_iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(cols, ["b", "a"]);
    assert_eq!(
        d.rows(&format!("{t} | extend a = 'x'")),
        strs(&[&["2", "x"]])
    );
}

// https://learn.microsoft.com/en-us/kusto/query/summarize-operator
// https://learn.microsoft.com/en-us/kusto/query/count-aggregation-function
// https://learn.microsoft.com/en-us/kusto/query/countif-aggregation-function
// https://learn.microsoft.com/en-us/kusto/query/dcount-aggregation-function
// https://learn.microsoft.com/en-us/kusto/query/sum-aggregation-function
// https://learn.microsoft.com/en-us/kusto/query/avg-aggregation-function
// https://learn.microsoft.com/en-us/kusto/query/min-aggregation-function
// https://learn.microsoft.com/en-us/kusto/query/max-aggregation-function
#[test]
fn summarize_names_groups_and_ignores_nulls() {
    let d = db();
    let q = "Orders | summarize count(), countif(amount > 130), dcount(custid), sum(amount), avg(amount), min(amount), max(amount) by city";
    let cols: Vec<(String, Type)> = d.columns(q);
    assert_eq!(
        cols,
        [
            ("city".into(), Type::String),
            ("count_".into(), Type::Long),
            ("countif_".into(), Type::Long),
            ("dcount_custid".into(), Type::Long),
            ("sum_amount".into(), Type::Long),
            ("avg_amount".into(), Type::Real),
            ("min_amount".into(), Type::Int),
            ("max_amount".into(), Type::Int),
        ]
    );
    // New York's second order has no amount: counted by count(), ignored
    // by the others.
    assert_eq!(
        d.sorted(q),
        strs(&[
            &["Austin", "2", "1", "2", "284", "142", "101", "183"],
            &["New York", "2", "1", "2", "150", "150", "150", "150"],
            &["Seattle", "1", "0", "1", "120", "120", "120", "120"],
        ])
    );
    // Integer division's truncation does not reach avg(): it is a real.
    assert_eq!(d.one("datatable(x:int)[1, 2] | summarize avg(x)"), ["1.5"]);
    // Named aggregates; `by` keys come first.
    assert_eq!(
        d.columns("Orders | summarize total = sum(amount) by city")[1].0,
        "total"
    );
    // Without rows: one row of defaults without `by`, none with it.
    assert_eq!(
        d.one("datatable(x:long)[] | summarize count(), sum(x), avg(x)"),
        ["0", "0", ""]
    );
    assert_eq!(
        d.rows("datatable(x:long, k:string)[] | summarize count() by k")
            .len(),
        0
    );
    // A group's sum of nulls is 0.
    assert_eq!(
        d.one("datatable(x:long)[long(null)] | summarize sum(x)"),
        ["0"]
    );
}

// https://learn.microsoft.com/en-us/kusto/query/percentiles-aggregation-function
#[test]
fn percentiles_are_nearest_rank() {
    let d = db();
    let t = "datatable(x:long)[7, 1, 10, 4, 2, 9, 3, 6, 5, 8]";
    assert_eq!(
        d.columns(&format!("{t} | summarize percentile(x, 50)"))[0].0,
        "percentile_x_50"
    );
    // Nearest rank: the value at rank ceil(P/100 * N) of the sorted values.
    assert_eq!(d.one(&format!("{t} | summarize percentile(x, 50)")), ["5"]);
    assert_eq!(
        d.one(&format!("{t} | summarize percentiles(x, 5, 95, 99.5)")),
        ["1", "10", "10"]
    );
    assert_eq!(
        d.columns(&format!("{t} | summarize percentiles(x, 5, 99.5)"))
            .into_iter()
            .map(|c| c.0)
            .collect::<Vec<_>>(),
        ["percentile_x_5", "percentile_x_99_5"]
    );
}

// https://learn.microsoft.com/en-us/kusto/query/make-list-aggregation-function
#[test]
fn make_list_is_a_dynamic_array_without_nulls() {
    let d = db();
    let row = d.one("datatable(k:string, x:long)['a', 1, 'a', long(null), 'a', 3] | summarize make_list(x) by k");
    assert_eq!(
        d.columns("datatable(k:string, x:long)['a', 1] | summarize make_list(x) by k")[1],
        ("list_x".into(), Type::Dynamic)
    );
    let mut items: Vec<i64> =
        serde_json::from_str::<Vec<i64>>(&row[1]).expect("a JSON array of longs");
    items.sort_unstable();
    assert_eq!(items, [1, 3]);
    let row = d.one("print d = datetime(2020-01-01) | summarize make_list(d)");
    assert_eq!(row, ["[\"2020-01-01T00:00:00Z\"]"]);
}

// https://learn.microsoft.com/en-us/kusto/query/arg-max-aggregation-function
// https://learn.microsoft.com/en-us/kusto/query/arg-min-aggregation-function
#[test]
fn arg_max_and_arg_min_return_the_row() {
    let d = db();
    let t = "datatable(State:string, BeginLat:real, BeginLocation:string, Deaths:long)
             ['TEXAS', 36.46, 'DARROUZETT', 1, 'TEXAS', 29.1, 'HOUSTON', 5, 'VERMONT', 45.0, 'NORTH TROY', 2]";
    assert_eq!(
        d.sorted(&format!(
            "{t} | summarize arg_max(BeginLat, BeginLocation) by State"
        )),
        strs(&[
            &["TEXAS", "36.46", "DARROUZETT"],
            &["VERMONT", "45", "NORTH TROY"]
        ])
    );
    // `*`: every other column, the `by` key once.
    let q = format!("{t} | summarize arg_min(BeginLat, *) by State");
    let names: Vec<String> = d.columns(&q).into_iter().map(|c| c.0).collect();
    assert_eq!(names, ["State", "BeginLat", "BeginLocation", "Deaths"]);
    assert_eq!(
        d.sorted(&q),
        strs(&[
            &["TEXAS", "29.1", "HOUSTON", "5"],
            &["VERMONT", "45", "NORTH TROY", "2"]
        ])
    );
    // The latest row per key, as users read change tables.
    assert_eq!(
        d.sorted("Orders | summarize arg_max(purchase_time, orderid, amount) by city"),
        strs(&[
            &["Austin", "2020-10-09T23:55:01Z", "4", "101"],
            &["New York", "2020-10-10T00:00:05Z", "5", ""],
            &["Seattle", "2020-10-09T07:29:59Z", "2", "120"],
        ])
    );
}

// https://learn.microsoft.com/en-us/kusto/query/sort-operator
#[test]
fn sort_is_descending_with_nulls_last_by_default() {
    let d = db();
    let t = "datatable(x:long)[2, long(null), 3, 1]";
    assert_eq!(
        d.rows(&format!("{t} | sort by x")),
        strs(&[&["3"], &["2"], &["1"], &[""]])
    );
    assert_eq!(
        d.rows(&format!("{t} | order by x asc")),
        strs(&[&[""], &["1"], &["2"], &["3"]])
    );
    assert_eq!(
        d.rows(&format!("{t} | sort by x asc nulls last")),
        strs(&[&["1"], &["2"], &["3"], &[""]])
    );
    assert_eq!(
        d.rows(&format!("{t} | sort by x desc nulls first")),
        strs(&[&[""], &["3"], &["2"], &["1"]])
    );
    // The order survives the operators after it.
    assert_eq!(
        d.rows("Orders | where city == 'Austin' or city == 'Seattle' | project amount, purchase_time | sort by amount | project amount | take 2"),
        strs(&[&["183"], &["120"]])
    );
}

// https://learn.microsoft.com/en-us/kusto/query/top-operator
// https://learn.microsoft.com/en-us/kusto/query/take-operator
// https://learn.microsoft.com/en-us/kusto/query/count-operator
// https://learn.microsoft.com/en-us/kusto/query/distinct-operator
#[test]
fn top_take_count_distinct() {
    let d = db();
    assert_eq!(
        d.rows("Orders | top 2 by amount | project orderid"),
        strs(&[&["1"], &["3"]])
    );
    // Ascending puts nulls first unless told otherwise.
    assert_eq!(
        d.rows("Orders | top 1 by amount asc | project orderid"),
        strs(&[&["5"]])
    );
    assert_eq!(
        d.rows("Orders | top 1 by amount asc nulls last | project orderid"),
        strs(&[&["4"]])
    );
    assert_eq!(d.rows("Orders | take 3").len(), 3);
    assert_eq!(d.rows("Orders | limit 1").len(), 1);
    assert_eq!(d.columns("Orders | count"), [("Count".into(), Type::Long)]);
    assert_eq!(d.one("Orders | count"), ["5"]);
    assert_eq!(
        d.sorted("Orders | distinct city"),
        strs(&[&["Austin"], &["New York"], &["Seattle"]])
    );
    assert_eq!(d.rows("Orders | distinct city, custid").len(), 5);
}

// https://learn.microsoft.com/en-us/kusto/query/join-operator
// https://learn.microsoft.com/en-us/kusto/query/join-innerunique
// https://learn.microsoft.com/en-us/kusto/query/join-inner
// https://learn.microsoft.com/en-us/kusto/query/join-leftouter
// https://learn.microsoft.com/en-us/kusto/query/join-rightouter
// https://learn.microsoft.com/en-us/kusto/query/join-fullouter
// https://learn.microsoft.com/en-us/kusto/query/join-leftanti
// https://learn.microsoft.com/en-us/kusto/query/join-rightanti
// https://learn.microsoft.com/en-us/kusto/query/join-leftsemi
// https://learn.microsoft.com/en-us/kusto/query/join-rightsemi
#[test]
fn join_kinds_follow_the_documented_x_y_example() {
    let d = db();
    let j = |kind: &str| d.sorted(&format!("{XY} X | join kind={kind} Y on Key"));
    // The default, innerunique: one (any) left row per key.
    let inner_unique = d.sorted(&format!("{XY} X | join Y on Key"));
    assert_eq!(inner_unique.len(), 3, "{inner_unique:?}");
    assert!(
        inner_unique[0][..1] == ["b".to_string()]
            && ["2", "3"].contains(&inner_unique[0][1].as_str())
    );
    assert_eq!(inner_unique[0][2..], ["b".to_string(), "10".to_string()]);
    assert_eq!(
        inner_unique[1..],
        strs(&[&["c", "4", "c", "20"], &["c", "4", "c", "30"]])
    );
    assert_eq!(
        d.columns(&format!("{XY} X | join Y on Key"))
            .into_iter()
            .map(|c| c.0)
            .collect::<Vec<_>>(),
        ["Key", "Value1", "Key1", "Value2"]
    );
    assert_eq!(
        j("inner"),
        strs(&[
            &["b", "2", "b", "10"],
            &["b", "3", "b", "10"],
            &["c", "4", "c", "20"],
            &["c", "4", "c", "30"]
        ])
    );
    assert_eq!(
        j("leftouter"),
        strs(&[
            &["a", "1", "", ""],
            &["b", "2", "b", "10"],
            &["b", "3", "b", "10"],
            &["c", "4", "c", "20"],
            &["c", "4", "c", "30"]
        ])
    );
    assert_eq!(
        j("rightouter"),
        strs(&[
            &["", "", "d", "40"],
            &["b", "2", "b", "10"],
            &["b", "3", "b", "10"],
            &["c", "4", "c", "20"],
            &["c", "4", "c", "30"]
        ])
    );
    assert_eq!(j("fullouter").len(), 6);
    assert_eq!(j("leftanti"), strs(&[&["a", "1"]]));
    assert_eq!(j("rightanti"), strs(&[&["d", "40"]]));
    assert_eq!(
        j("leftsemi"),
        strs(&[&["b", "2"], &["b", "3"], &["c", "4"]])
    );
    assert_eq!(
        j("rightsemi"),
        strs(&[&["b", "10"], &["c", "20"], &["c", "30"]])
    );
    assert_eq!(
        d.sorted(&format!("{XY} X | join kind=inner (Y | where Value2 > 15) on $left.Key == $right.Key | project Value1, Value2")),
        strs(&[&["4", "20"], &["4", "30"]])
    );
}

// https://learn.microsoft.com/en-us/kusto/query/union-operator
#[test]
fn union_outer_and_inner() {
    let d = db();
    let outer = d.sorted(&format!("{XY} union X, Y"));
    assert_eq!(
        d.columns(&format!("{XY} union X, Y"))
            .into_iter()
            .map(|c| c.0)
            .collect::<Vec<_>>(),
        ["Key", "Value1", "Value2"]
    );
    assert_eq!(outer.len(), 8);
    assert_eq!(outer[0], ["a", "1", ""]);
    assert_eq!(
        d.sorted(&format!("{XY} X | union kind=inner Y | where Key == 'd'")),
        strs(&[&["d"]])
    );
}

// https://learn.microsoft.com/en-us/kusto/query/let-statement
#[test]
fn let_binds_scalars_and_tables() {
    let d = db();
    assert_eq!(
        d.sorted("let min_amount = 140; let big = Orders | where amount > min_amount; big | project orderid"),
        strs(&[&["1"], &["3"]])
    );
    assert_eq!(
        d.one("let n = 2; let t = 1h; print n * 3, t * n"),
        ["6", "02:00:00"]
    );
}

// https://learn.microsoft.com/en-us/kusto/query/numerical-operators
#[test]
fn integer_division_and_modulo() {
    let d = db();
    assert_eq!(
        d.one("print 1 / 2, 1.0 / 2, 1 / 2.0, real(1) / 2, 7 / 2"),
        ["0", "0.5", "0.5", "0.5", "3"]
    );
    assert_eq!(
        d.one("print plusPlus = 14 % 12, minusPlus = -14 % 12, plusMinus = 14 % -12, minusMinus = -14 % -12"),
        ["2", "10", "2", "10"]
    );
    // int op int is a long.
    assert_eq!(
        d.columns("Orders | project x = amount + amount")[0].1,
        Type::Long
    );
}

// https://learn.microsoft.com/en-us/kusto/query/bin-function
// https://learn.microsoft.com/en-us/kusto/query/floor-function
#[test]
fn bin_and_floor() {
    let d = db();
    assert_eq!(
        d.one("print bin(4.5, 1), bin(time(16d), 7d), bin(datetime(1970-05-11 13:45:07), 1d)"),
        ["4", "14.00:00:00", "1970-05-11T00:00:00Z"]
    );
    assert_eq!(
        d.one("print floor(4.5, 1), floor(-4.5, 1), bin(17, 5)"),
        ["4", "-5", "15"]
    );
    // The scenario's time of day, in 10-minute bins.
    assert_eq!(
        d.sorted("Orders | project orderid, hour = floor(purchase_time % 1d, 10m)"),
        strs(&[
            &["1", "07:20:00"],
            &["2", "07:20:00"],
            &["3", "07:30:00"],
            &["4", "23:50:00"],
            &["5", "00:00:00"]
        ])
    );
    assert_eq!(
        d.columns("Orders | summarize count() by bin(purchase_time, 1h)")[0],
        ("purchase_time".into(), Type::DateTime)
    );
}

// https://learn.microsoft.com/en-us/kusto/query/scalar-data-types/timespan
// https://learn.microsoft.com/en-us/kusto/query/scalar-data-types/datetime
// https://learn.microsoft.com/en-us/kusto/query/datetime-timespan-arithmetic
#[test]
fn timespans_datetimes_and_their_arithmetic() {
    let d = db();
    assert_eq!(
        d.one("print 2d, 1.5h, 30m, 10s, 0.1s, 100ms, time(1.12:34:55), timespan(null)"),
        [
            "2.00:00:00",
            "01:30:00",
            "00:30:00",
            "00:00:10",
            "00:00:00.1000000",
            "00:00:00.1000000",
            "1.12:34:55",
            ""
        ]
    );
    assert_eq!(
        d.one("print datetime(2015-12-31 23:59:59.9), datetime(2015-12-31), datetime(null)"),
        ["2015-12-31T23:59:59.9Z", "2015-12-31T00:00:00Z", ""]
    );
    assert_eq!(
        d.one("print datetime(1997-06-25) - datetime(1910-06-11), datetime(2024-01-01) + 1d, datetime(2024-01-01) - 90m, 1h / 1m, 1s * 5, 2h + 30m"),
        ["31791.00:00:00", "2024-01-02T00:00:00Z", "2023-12-31T22:30:00Z", "60", "00:00:05", "02:30:00"]
    );
    assert_eq!(
        d.one("print datetime(2020-10-09 07:23:10) % 1d"),
        ["07:23:10"]
    );
    assert_eq!(
        d.columns("print x = datetime(2020-10-09) % 1d")[0].1,
        Type::TimeSpan
    );
}

// https://learn.microsoft.com/en-us/kusto/query/ago-function
// https://learn.microsoft.com/en-us/kusto/query/now-function
#[test]
fn now_and_ago_are_fixed_per_query() {
    let d = db();
    assert_eq!(
        d.one("print now(), ago(1h), now(-2d), ago(1d) < now()"),
        [
            "2020-10-09T12:00:00Z",
            "2020-10-09T11:00:00Z",
            "2020-10-07T12:00:00Z",
            "true"
        ]
    );
    // 4h30m before now is 07:30:00: the later orders.
    assert_eq!(
        d.sorted("Orders | where purchase_time > ago(270m) | project orderid"),
        strs(&[&["4"], &["5"]])
    );
}

// https://learn.microsoft.com/en-us/kusto/query/todatetime-function
// https://learn.microsoft.com/en-us/kusto/query/tostring-function
// https://learn.microsoft.com/en-us/kusto/query/toint-function
// https://learn.microsoft.com/en-us/kusto/query/tolong-function
// https://learn.microsoft.com/en-us/kusto/query/toreal-function
#[test]
fn conversions() {
    let d = db();
    assert_eq!(
        d.one("print todatetime('2015-12-24'), todatetime('2020-10-09T09:23:10+02:00'), todatetime('not a date')"),
        ["2015-12-24T00:00:00Z", "2020-10-09T07:23:10Z", ""]
    );
    assert_eq!(
        d.one("print tostring(123), tostring(1.5), tostring(10m), tostring(true)"),
        ["123", "1.5", "00:10:00", "true"]
    );
    assert_eq!(
        d.one("print toint('123'), tolong('123'), toreal('123.4'), toint('abc'), todouble('1e3')"),
        ["123", "123", "123.4", "", "1000"]
    );
    assert_eq!(
        d.columns("print toint('1'), tolong('1'), toreal('1')")
            .into_iter()
            .map(|c| c.1)
            .collect::<Vec<_>>(),
        [Type::Int, Type::Long, Type::Real]
    );
    // ADX's orderid is a string: the sink's integers read as text.
    assert_eq!(
        d.one("Orders | where orderid == '3' | project orderid, custid"),
        ["3", "306"]
    );
}

// https://learn.microsoft.com/en-us/kusto/query/strcat-function
// https://learn.microsoft.com/en-us/kusto/query/tolower-function
// https://learn.microsoft.com/en-us/kusto/query/toupper-function
// https://learn.microsoft.com/en-us/kusto/query/strlen-function
#[test]
fn string_functions() {
    let d = db();
    assert_eq!(d.one("print strcat('hello', ' ', 'world'), strcat('n=', 5), tolower('Hello'), toupper('hello'), strlen('hello')"), ["hello world", "n=5", "hello", "HELLO", "5"]);
}

// https://learn.microsoft.com/en-us/kusto/query/iff-function
// https://learn.microsoft.com/en-us/kusto/query/case-function
// https://learn.microsoft.com/en-us/kusto/query/isnull-function
// https://learn.microsoft.com/en-us/kusto/query/isempty-function
// https://learn.microsoft.com/en-us/kusto/query/not-function
#[test]
fn conditionals_and_null_tests() {
    let d = db();
    assert_eq!(
        d.rows("datatable(x:long)[3, 7, 12] | extend s = iff(x > 5, 'big', 'small'), c = case(x > 10, 'large', x > 5, 'medium', 'small')"),
        strs(&[&["3", "small", "small"], &["7", "big", "medium"], &["12", "big", "large"]])
    );
    assert_eq!(
        d.one("print isnull(int(null)), isnotnull(5), isempty(''), isempty('a'), isempty(int(null)), isnotempty(''), not(true)"),
        ["true", "true", "true", "false", "true", "false", "false"]
    );
    assert_eq!(
        d.sorted("Orders | where isnull(amount) | project orderid"),
        strs(&[&["5"]])
    );
}

// https://learn.microsoft.com/en-us/kusto/query/startofday-function
// https://learn.microsoft.com/en-us/kusto/query/startofmonth-function
// https://learn.microsoft.com/en-us/kusto/query/format-datetime-function
#[test]
fn datetime_functions() {
    let d = db();
    assert_eq!(
        d.one("print startofday(datetime(2017-01-01 10:10:17)), startofday(datetime(2017-01-01 10:10:17), -1), startofmonth(datetime(2017-01-01 10:10:17)), startofmonth(datetime(2017-01-01 10:10:17), 1)"),
        ["2017-01-01T00:00:00Z", "2016-12-31T00:00:00Z", "2017-01-01T00:00:00Z", "2017-02-01T00:00:00Z"]
    );
    assert_eq!(
        d.one("print format_datetime(datetime(2015-12-14 02:03:04.12345), 'yy-MM-dd [HH:mm:ss]'), format_datetime(datetime(2015-12-14 02:03:04.12345), 'yyyy-MM-dd [hh:mm:ss tt]')"),
        ["15-12-14 [02:03:04]", "2015-12-14 [02:03:04 AM]"]
    );
}

// https://learn.microsoft.com/en-us/kusto/query/render-operator
#[test]
fn render_is_reported_with_the_result() {
    let d = db();
    let t = translate_with("Orders | summarize avg_sales = avg(amount) by city | render columnchart with (title='Sales', ycolumns=avg_sales)", &d.catalog, Options { now_us: NOW_US }).expect("translates");
    let spec = t.render.expect("a chart");
    assert_eq!(spec.kind, sluice_kql::render::ChartKind::Column);
    assert_eq!(spec.title.as_deref(), Some("Sales"));
    assert_eq!(spec.ycolumns, ["avg_sales"]);
}
