//! Rough serialization throughput of a Debezium envelope (run with
//! `cargo test --release -p sluice-core --test throughput -- --ignored --nocapture`).

use std::time::Instant;

use sluice_core::converter::{Converter, DecimalFormat, JsonConverter, JsonConverterConfig};
use sluice_core::debezium::{self, Op, SourceInfo};
use sluice_core::schema::{prim, SchemaBuilder, SchemaType};
use sluice_core::Value;

#[test]
#[ignore = "timing, not correctness"]
fn envelope_throughput() {
    let mut b = SchemaBuilder::structure().name("p.public.t.Value");
    let mut row = Vec::new();
    for i in 0..20 {
        if i % 2 == 0 {
            b = b.field(format!("c{i}"), prim::of(SchemaType::Int64, true));
            row.push(Value::Int64(i * 1_000_003));
        } else {
            b = b.field(format!("c{i}"), prim::opt_string());
            row.push(Value::String(format!("value number {i} with \"quotes\"")));
        }
    }
    let env = debezium::envelope_schema("p.public.t.Envelope", &b.build());
    let seq = debezium::sequence_text(Some(1), Some(2));
    let source = debezium::source_value(&SourceInfo {
        name: "p",
        ts_ms: 1,
        ts_us: 1,
        ts_ns: 1,
        snapshot: "false",
        db: "d",
        sequence: Some(&seq),
        schema: "public",
        table: "t",
        tx_id: Some(1),
        lsn: Some(2),
        xmin: None,
    });
    let v = debezium::envelope_value(
        &env,
        None,
        Some(Value::Struct(row)),
        source,
        Op::Create,
        1,
        2,
        3,
        None,
    );
    for schemas in [true, false] {
        let c = JsonConverter::new(JsonConverterConfig {
            schemas_enable: schemas,
            decimal_format: DecimalFormat::Base64,
            replace_null_with_default: true,
            schemas_cache_size: 1000,
        });
        let n = 200_000;
        let start = Instant::now();
        let mut bytes = 0;
        for _ in 0..n {
            bytes += c
                .from_connect("p.public.t", Some(&env), Some(&v))
                .expect("converts")
                .map_or(0, |b| b.len());
        }
        let el = start.elapsed();
        println!(
            "schemas.enable={schemas}: {:.0} events/s, {:.0} MB/s, {} bytes/event",
            n as f64 / el.as_secs_f64(),
            bytes as f64 / el.as_secs_f64() / 1e6,
            bytes / n
        );
    }
}
