//! `sluice query --kql` as users run it: charts in the terminal and in
//! files (text, SVG, HTML, PNG), a closed pipe, and the same command sent
//! to an Azure Data Explorer cluster (the local stand-in).

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value as Json};
use sluice_testkit::kusto::engine::FakeEngine;
use sluice_testkit::kusto::store::{IngestInto, Store};

/// A DuckDB file with the scenario's orders table as the DuckDB sink
/// writes it, and the ADX definition beside it.
struct Orders {
    dir: tempfile::TempDir,
}

impl Orders {
    fn new(extra_rows: usize) -> Orders {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = duckdb::Connection::open(dir.path().join("orders.duckdb")).expect("open");
        conn.execute_batch(&format!(
            "CREATE TABLE orders (orderid INTEGER PRIMARY KEY, custid INTEGER, amount INTEGER, city VARCHAR, purchase_time VARCHAR);
             INSERT INTO orders VALUES
               (1, 101, 150, 'New York', '2020-10-09 07:23:10'),
               (2, 102, 120, 'Seattle',  '2020-10-09 07:25:00'),
               (3, 103, 199, 'New York', '2020-10-09 07:31:00'),
               (4, 104, 100, 'Austin',   '2020-10-09 13:05:00');
             INSERT INTO orders SELECT 10 + i, i, 100 + i % 100, 'Chicago', '2020-10-09 00:00:00' FROM range({extra_rows}) t(i);"
        ))
        .expect("seed");
        std::fs::write(
            dir.path().join("orders.kql"),
            ".create table Orders (orderid: string, custid: string, city: string, amount: int, purchase_time: datetime)\n",
        )
        .expect("schema");
        Orders { dir }
    }

    fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }

    fn kql(&self, query: &str, extra: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["query", "--kql"])
            .arg(self.path("orders.duckdb"))
            .arg("--schema")
            .arg(self.path("orders.kql"))
            .args(extra)
            .arg(query)
            .output()
            .expect("run sluice query");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// The values of attribute `attr` of each `<tag ... class="class"` element.
fn marks(svg: &str, class: &str, attrs: &[&str]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for part in svg.split('<').skip(1) {
        let head = part.split('>').next().unwrap_or("");
        if !head.contains(&format!("class=\"{class}\"")) {
            continue;
        }
        let get = |a: &str| -> String {
            let key = format!(" {a}=\"");
            head.find(&key)
                .map(|i| {
                    let rest = &head[i + key.len()..];
                    rest[..rest.find('"').unwrap_or(0)].to_string()
                })
                .unwrap_or_default()
        };
        out.push(attrs.iter().map(|a| get(a)).collect());
    }
    out
}

#[test]
fn charts_in_the_terminal() {
    let o = Orders::new(0);
    let (code, out, err) = o.kql(
        "Orders | summarize total = sum(amount) by city | sort by total | render columnchart",
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    // Bars scaled to the largest total (New York 349 = 40 cells), then the
    // table.
    assert_eq!(lines[0], "city      total");
    assert_eq!(lines[1], format!("New York  {} 349", "█".repeat(40)));
    assert!(
        lines[2].starts_with("Seattle   █████████████▊ 120"),
        "{out}"
    );
    assert!(lines[3].starts_with("Austin    ███████████▌ 100"), "{out}");
    assert!(
        out.contains("city      total\n--------  -----\nNew York    349\n"),
        "{out}"
    );
    // A pie shows shares.
    let (code, out, err) = o.kql(
        "Orders | summarize n = count() by city | render piechart",
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("New York   50.0%"), "{out}");
    assert!(out.contains("Seattle    25.0%"), "{out}");
    // A time chart is a character plot with the axis ends labelled.
    let (code, out, err) = o.kql(
        "Orders | summarize n = count() by bin(purchase_time, 1h) | render timechart",
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("2020-10-09T07:00:00Z") && out.contains("2020-10-09T13:00:00Z"),
        "{out}"
    );
    assert!(out.contains("3 ┤*"), "{out}");
}

#[test]
fn charts_to_svg_html_png_and_text_files() {
    let o = Orders::new(0);
    let q7 = "Orders | extend hour = floor(purchase_time % 1d , 10m) | summarize event_count=count() by hour, city | render columnchart";
    let svg_path = o.path("q7.svg");
    let (code, out, err) = o.kql(q7, &["--out", svg_path.to_str().unwrap_or("")]);
    assert_eq!(code, 0, "{err}");
    // The chart went to the file: stdout has the table only.
    assert!(!out.contains('█'), "{out}");
    let svg = std::fs::read_to_string(&svg_path).expect("svg written");
    assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"kql-chart\" data-kind=\"columnchart\""), "{svg}");
    assert!(svg.ends_with("</svg>"));
    // One bar per (hour, city) row, in series per city, hours in time order.
    let mut bars = marks(&svg, "bar", &["data-series", "data-x", "data-y"]);
    bars.sort();
    assert_eq!(
        bars,
        [
            ["Austin", "13:00:00", "1"],
            ["New York", "07:20:00", "1"],
            ["New York", "07:30:00", "1"],
            ["Seattle", "07:20:00", "1"],
        ]
        .map(|r| r.map(String::from).to_vec())
    );
    let legend = svg.split("<g class=\"legend\">").nth(1).unwrap_or("");
    for city in ["New York", "Seattle", "Austin"] {
        assert!(legend.contains(&format!(">{city}</text>")), "{svg}");
    }
    let x_labels = svg.split("<g class=\"x-axis\">").nth(1).unwrap_or("");
    let p1 = x_labels.find("07:20:00").unwrap_or(usize::MAX);
    let p2 = x_labels.find("07:30:00").unwrap_or(0);
    let p3 = x_labels.find("13:00:00").unwrap_or(0);
    assert!(p1 < p2 && p2 < p3, "hours out of order: {x_labels}");

    // A line chart draws one polyline per series through its points.
    let line = o.path("line.svg");
    let (code, _, err) = o.kql(
        "Orders | summarize n = count() by bin(purchase_time, 1h) | render linechart",
        &["--out", line.to_str().unwrap_or("")],
    );
    assert_eq!(code, 0, "{err}");
    let svg = std::fs::read_to_string(&line).expect("svg");
    assert_eq!(svg.matches("class=\"line\"").count(), 1);
    assert_eq!(
        marks(&svg, "point", &["data-x", "data-y"]),
        [["2020-10-09T07:00:00Z", "3"], ["2020-10-09T13:00:00Z", "1"]]
            .map(|r| r.map(String::from).to_vec())
    );

    // A pie: a slice per row.
    let pie = o.path("pie.svg");
    let (code, _, err) = o.kql(
        "Orders | summarize total = sum(amount) by city | render piechart with (title='Sales by city')",
        &["--out", pie.to_str().unwrap_or("")],
    );
    assert_eq!(code, 0, "{err}");
    let svg = std::fs::read_to_string(&pie).expect("svg");
    assert!(svg.contains(">Sales by city</text>"), "{svg}");
    let mut slices = marks(&svg, "slice", &["data-x", "data-y"]);
    slices.sort();
    assert_eq!(
        slices,
        [["Austin", "100"], ["New York", "349"], ["Seattle", "120"]]
            .map(|r| r.map(String::from).to_vec())
    );

    // HTML: the chart and the table.
    let html = o.path("q.html");
    let (code, _, err) = o.kql(
        "Orders | summarize total = sum(amount) by city | render barchart",
        &["--out", html.to_str().unwrap_or("")],
    );
    assert_eq!(code, 0, "{err}");
    let page = std::fs::read_to_string(&html).expect("html");
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.contains("data-kind=\"barchart\""));
    assert!(page.contains("<th title=\"long\">total</th>"));
    assert!(page.contains("<td class=\"num\">349</td>"));

    // PNG: a real image of the SVG's size.
    let png = o.path("q.png");
    let (code, _, err) = o.kql(q7, &["--out", png.to_str().unwrap_or("")]);
    assert_eq!(code, 0, "{err}");
    let bytes = std::fs::read(&png).expect("png");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(&bytes[12..16], b"IHDR");
    assert_eq!(
        u32::from_be_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]),
        800
    );
    assert_eq!(
        u32::from_be_bytes([bytes[20], bytes[21], bytes[22], bytes[23]]),
        450
    );

    // Text to a file.
    let txt = o.path("q.txt");
    let (code, _, err) = o.kql(
        "Orders | summarize total = sum(amount) by city | render columnchart",
        &["--out", txt.to_str().unwrap_or("")],
    );
    assert_eq!(code, 0, "{err}");
    assert!(std::fs::read_to_string(&txt)
        .expect("txt")
        .contains(&"█".repeat(40)));

    // No chart to draw: said so.
    let (code, _, err) = o.kql(
        "Orders | take 1",
        &["--out", svg_path.to_str().unwrap_or("")],
    );
    assert_eq!(code, 1);
    assert!(err.contains("the query has no chart to draw"), "{err}");
}

#[test]
fn refusals_show_the_place_in_the_query() {
    let o = Orders::new(0);
    let (code, out, err) = o.kql("Orders\n| where amount > 100\n| mv-expand city", &[]);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert_eq!(
        err,
        "sluice query: KQL not supported at 3:3: the operator 'mv-expand' is not supported; Sluice translates \
         where, filter, project, project-away, project-rename, extend, summarize, sort, order, top, take, limit, count, distinct, join, union, render\n  \
         | mv-expand city\n    ^^^^^^^^^\n"
    );
}

/// Runs `sluice query FLAGS FILE QUERY`, reads a little of the output,
/// then closes the pipe: the command must end with status 0 and no panic.
fn closes_quietly(flags: &[&str], file: &Path, query: &str) {
    let args = flags;
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("query")
        .args(flags)
        .arg(file)
        .arg(query)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sluice query");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut first = [0u8; 64];
    stdout.read_exact(&mut first).expect("some output");
    drop(stdout);
    let status = child.wait().expect("wait");
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert_eq!(status.code(), Some(0), "{args:?}: {err}");
    assert!(err.is_empty(), "{args:?}: {err}");
}

#[test]
fn a_closed_pipe_ends_quietly() {
    // Far more output than a pipe holds.
    let o = Orders::new(200_000);
    let file = o.path("orders.duckdb");
    closes_quietly(&[], &file, "SELECT * FROM orders");
    closes_quietly(&["--format", "csv"], &file, "SELECT * FROM orders");
    closes_quietly(&["--kql", "--table", "Orders=orders"], &file, "Orders");
    closes_quietly(
        &["--kql", "--format", "json"],
        &file,
        "orders | take 100000",
    );
}

fn adx_config(dir: &Path, engine: &FakeEngine) -> PathBuf {
    // The scenario's adx-orders-sink.json, pointed at the stand-in.
    let sink = json!({"name": "adx-orders-sink", "config": {
        "connector.class": "com.microsoft.azure.kusto.kafka.connect.sink.KustoSinkConnector",
        "flush.size.bytes": 10000, "flush.interval.ms": 30000, "tasks.max": 2,
        "topics": "myserver.retail.orders_info",
        "kusto.tables.topics.mapping": "[{'topic': 'myserver.retail.orders_info','db': 'retail', 'table': 'Orders','format': 'json', 'mapping':'OrdersEventMapping'}]",
        "aad.auth.authority": engine.tenant(),
        "kusto.url": engine.url(),
        "aad.auth.appid": engine.app_id(), "aad.auth.appkey": engine.app_key(),
        "key.converter": "org.apache.kafka.connect.storage.StringConverter",
        "transforms": "unwrap", "transforms.unwrap.type": "io.debezium.transforms.ExtractNewRecordState",
    }});
    let path = dir.join("adx-orders-sink.json");
    std::fs::write(&path, sink.to_string()).expect("write");
    path
}

fn on_cluster(
    engine: &FakeEngine,
    config: &Path,
    query: &str,
    extra: &[&str],
) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["query", "--kql"])
        .arg(engine.url())
        .arg("--kusto-config")
        .arg(config)
        .args(extra)
        .arg(query)
        // Where Azure AD is, as the Azure SDKs read it.
        .env("AZURE_AUTHORITY_HOST", engine.url())
        .output()
        .expect("run sluice query");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_command_queries_a_cluster() {
    let store = Store::new();
    store.create_database("retail");
    store.create_table(
        "retail",
        "Orders",
        &[
            ("orderid", "string"),
            ("custid", "string"),
            ("city", "string"),
            ("amount", "int"),
            ("purchase_time", "datetime"),
        ],
    );
    let rows = [
        json!({"orderid": 51, "custid": 306, "amount": 183, "city": "Austin", "purchase_time": "2020-10-09 07:23:10"}),
        json!({"orderid": 52, "custid": 17, "amount": 120, "city": "Seattle", "purchase_time": "2020-10-09 07:29:59"}),
    ];
    let data: String = rows.iter().map(|r| format!("{r}\n")).collect();
    store
        .ingest(
            &IngestInto {
                db: "retail".into(),
                table: "Orders".into(),
                format: "multijson".into(),
                mapping: None,
                tags: Vec::new(),
                ingest_if_not_exists: Vec::new(),
            },
            data.as_bytes(),
        )
        .expect("ingest");
    let engine = FakeEngine::start(store).await.expect("engine");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = adx_config(dir.path(), &engine);

    let (code, out, err) = on_cluster(&engine, &config, "Orders | count", &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "Count\n-----\n    2\n(1 row)\n");

    let (code, out, err) = on_cluster(&engine, &config, "Orders | take 5", &["--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let rows: Json = serde_json::from_str(&out).expect("json");
    assert_eq!(rows[0]["orderid"], "51");
    assert_eq!(rows[0]["amount"], 183);
    assert_eq!(rows[0]["purchase_time"], "2020-10-09T07:23:10Z");
    assert_eq!(rows[1]["city"], "Seattle");

    // render travels in the response's Visualization property.
    let (code, out, err) = on_cluster(
        &engine,
        &config,
        "Orders | take 5 | render columnchart",
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("orderid  custid  city"), "{out}");
    let svg = dir.path().join("adx.svg");
    let (code, _, err) = on_cluster(
        &engine,
        &config,
        "Orders | take 5 | render columnchart",
        &["--out", svg.to_str().unwrap_or("")],
    );
    assert_eq!(code, 0, "{err}");
    let svg = std::fs::read_to_string(&svg).expect("svg");
    let mut bars = marks(&svg, "bar", &["data-x", "data-y"]);
    bars.sort();
    assert_eq!(
        bars,
        [["51", "183"], ["52", "120"]].map(|r| r.map(String::from).to_vec())
    );

    // The cluster's errors are the user's.
    let (code, _, err) = on_cluster(&engine, &config, "Nope | count", &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("Failed to resolve table or column expression named 'Nope'"),
        "{err}"
    );
    // The stand-in saw the documented requests only.
    assert!(engine.violations().is_empty(), "{:?}", engine.violations());
    assert!(engine
        .requests()
        .iter()
        .any(|r| r.path == "/v2/rest/query" && r.body.contains("\"db\":\"retail\"")));
}
