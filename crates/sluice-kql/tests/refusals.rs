//! Queries outside the subset are refused with the operator's or
//! function's name and its line:column; mistakes are named as ADX's
//! semantic errors would.

use sluice_kql::catalog::DuckTable;
use sluice_kql::{translate, Catalog, ErrorKind, KqlError};

fn catalog() -> Catalog {
    let mut c = Catalog::new();
    c.add_table(DuckTable {
        name: "orders".into(),
        columns: vec![
            ("orderid".into(), "INTEGER".into()),
            ("custid".into(), "INTEGER".into()),
            ("amount".into(), "INTEGER".into()),
            ("city".into(), "VARCHAR".into()),
            ("purchase_time".into(), "VARCHAR".into()),
        ],
    });
    c.add_schema(".create table Orders (orderid: string, custid: string, city: string, amount: int, purchase_time: datetime)")
        .expect("schema");
    c
}

fn refused(q: &str) -> KqlError {
    match translate(q, &catalog()) {
        Ok(t) => panic!("{q} was translated: {}", t.sql),
        Err(e) => e,
    }
}

/// Asserts the error's kind, place and that its text has every part.
fn check(q: &str, kind: ErrorKind, at: &str, parts: &[&str]) {
    let e = refused(q);
    let text = e.to_string();
    assert_eq!(e.kind, kind, "{q}: {text}");
    assert_eq!(e.position.to_string(), at, "{q}: {text}");
    for p in parts {
        assert!(text.contains(p), "{q}: '{text}' lacks '{p}'");
    }
}

#[test]
fn operators_outside_the_subset_are_named_with_their_place() {
    check(
        "Orders | mv-expand city",
        ErrorKind::Unsupported,
        "1:10",
        &[
            "KQL not supported at 1:10",
            "the operator 'mv-expand' is not supported",
            "Sluice translates where",
        ],
    );
    check(
        "Orders\n| where amount > 100\n| evaluate bag_unpack(x)",
        ErrorKind::Unsupported,
        "3:3",
        &["'evaluate' is not supported"],
    );
    check(
        "Orders | make-series count() on purchase_time step 1h",
        ErrorKind::Unsupported,
        "1:10",
        &["'make-series'"],
    );
    check(
        "Orders | frobnicate",
        ErrorKind::Syntax,
        "1:10",
        &["'frobnicate' is not a KQL tabular operator"],
    );
    check(
        "Orders | summarize hint.strategy=shuffle count() by city",
        ErrorKind::Unsupported,
        "1:20",
        &["hint"],
    );
}

#[test]
fn functions_outside_the_subset_are_named_with_their_place() {
    check(
        "Orders | extend x = series_fir(amount)",
        ErrorKind::Unsupported,
        "1:21",
        &[
            "the function 'series_fir' is not supported",
            "bin, floor, ago",
        ],
    );
    check(
        "Orders | summarize stdev(amount) by city",
        ErrorKind::Unsupported,
        "1:20",
        &["the aggregation 'stdev' is not supported"],
    );
    check(
        "Orders | where city has_any ('Austin')",
        ErrorKind::Unsupported,
        "1:21",
        &["'has_any' is not supported"],
    );
    check(
        "Orders | summarize count(amount)",
        ErrorKind::Unsupported,
        "1:20",
        &["count() with an argument"],
    );
    check(
        "Orders | where city has '-x'",
        ErrorKind::Unsupported,
        "1:25",
        &["has with a term"],
    );
    check(
        "Orders | extend x = format_datetime(purchase_time, 'dddd')",
        ErrorKind::Unsupported,
        "1:52",
        &["'dddd' is not supported"],
    );
    check(
        "Orders | where pack_array(city) == 1",
        ErrorKind::Unsupported,
        "1:16",
        &["'pack_array'"],
    );
    check(
        "Orders | extend x = sum(amount)",
        ErrorKind::Semantic,
        "1:21",
        &["sum() is an aggregation function"],
    );
    check(
        "let f = (x: long) { x * 2 }; Orders",
        ErrorKind::Unsupported,
        "1:5",
        &["user-defined function"],
    );
    check(
        "Orders | render treemap",
        ErrorKind::Unsupported,
        "1:17",
        &["render 'treemap' is not supported"],
    );
    check(
        "Orders | render piechart | take 1",
        ErrorKind::Unsupported,
        "1:10",
        &["render must be the last operator"],
    );
    check(
        "Orders | render piechart with (accumulate=true)",
        ErrorKind::Unsupported,
        "1:32",
        &["'accumulate'"],
    );
    check(
        "Orders | join kind=outerish (Orders) on city",
        ErrorKind::Unsupported,
        "1:20",
        &["join kind 'outerish'"],
    );
    check(
        "Orders | project x = city.name",
        ErrorKind::Unsupported,
        "1:26",
        &["property access"],
    );
}

#[test]
fn mistakes_are_semantic_errors_with_their_place() {
    check(
        "Orders | where town == 'Austin'",
        ErrorKind::Semantic,
        "1:16",
        &[
            "'town' is not a column",
            "orderid, custid, city, amount, purchase_time",
        ],
    );
    check(
        "Orderz | take 1",
        ErrorKind::Semantic,
        "1:1",
        &["table 'Orderz' is not known", "the tables orders"],
    );
    check(
        "Orders | where city == 1",
        ErrorKind::Semantic,
        "1:16",
        &["'==' is not defined for string and long"],
    );
    check(
        "Orders | where amount",
        ErrorKind::Semantic,
        "1:16",
        &["where needs a bool predicate, not a int"],
    );
    check(
        "Orders | take -1",
        ErrorKind::Semantic,
        "1:15",
        &["row count"],
    );
    check(
        "Orders | summarize count() by bin(purchase_time, 0s)",
        ErrorKind::Semantic,
        "1:31",
        &["size must be positive"],
    );
    check(
        "Orders | project-away nothere",
        ErrorKind::Semantic,
        "1:23",
        &["no column 'nothere'"],
    );
    check(
        "Orders | render columnchart with (ycolumns=nothere)",
        ErrorKind::Semantic,
        "1:44",
        &["no column 'nothere'"],
    );
    check(
        "Orders | extend x = iff(amount > 1, 'a', 2)",
        ErrorKind::Semantic,
        "1:21",
        &["different types: string and long"],
    );
}

#[test]
fn syntax_errors_point_at_the_token() {
    check(
        "Orders | where (city == 'x'",
        ErrorKind::Syntax,
        "1:28",
        &["expected ')'"],
    );
    check(
        "Orders | where city == 'x",
        ErrorKind::Syntax,
        "1:24",
        &["not closed"],
    );
    check(
        "Orders | take 10q",
        ErrorKind::Syntax,
        "1:15",
        &["unit 'q'"],
    );
    check(
        "Orders | sort amount",
        ErrorKind::Syntax,
        "1:15",
        &["expected 'by'"],
    );
    check("", ErrorKind::Syntax, "1:1", &["no tabular expression"]);
}
