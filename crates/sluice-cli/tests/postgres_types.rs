//! Every type through the real pipeline: the snapshot (COPY) and streaming
//! (pgoutput) paths produce the same Debezium values, and those values are
//! Debezium's.

mod common;

use common::*;
use serde_json::{json, Value as Json};

const TABLE: &str = "
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
CREATE TABLE alltypes (
  id int PRIMARY KEY,
  b bool, bit1 bit(1), bits bit(3), vbits varbit,
  i2 int2, i4 int4, i8 int8, o oid,
  f4 float4, f8 float8, f8nan float8,
  n numeric(3,2), nfree numeric, money_c money,
  c char(3), vc varchar(10), t text, nm name,
  j json, jb jsonb, x xml, u uuid, e mood, d posint,
  inet_c inet, cidr_c cidr, mac macaddr, rng int4range,
  pt point,
  dt date, tm time, tm3 time(3), ttz timetz, ts timestamp, ts3 timestamp(3), tstz timestamptz,
  iv interval, by bytea,
  ai int[], at text[], dt_bc date, ts_far timestamp, t24 time
);";

const ROW: &str = "INSERT INTO alltypes VALUES (
  1, true, B'1', B'101', B'11',
  -2, 42, 9007199254740993, 4000000000,
  1.5, 3.14159, 'NaN',
  1.1, 123.4500, 12.34,
  'ab', 'varchar', 'text with \"quotes\" and \\ backslash', 'aname',
  '{\"a\": 1}', '{\"b\": [1, 2]}', '<x>1</x>', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'happy', 7,
  '192.168.0.1', '10.0.0.0/8', '08:00:2b:01:02:03', '[1,10)',
  '(1.5,2.5)',
  '2016-11-04', '13:51:30', '13:51:30.123', '13:51:30+02', '2016-11-04T13:51:30.123456', '2016-11-04T13:51:30.123', '2016-11-04T13:51:30.123456+02:00',
  'P1Y2M3DT4H5M6.78S', '\\x0102ff',
  '{1,2,NULL}', '{\"a b\",c,NULL}', '0044-03-15 BC', '10000-01-01 00:00:00', '24:00:00'
);";

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_and_streaming_agree_on_every_type() {
    let (db, pg) = fresh_db("types").await;
    pg.batch_execute(TABLE).await.unwrap();
    pg.batch_execute(ROW).await.unwrap();
    let mut p = Pipeline::new(&db, &[("table.include.list", "public.alltypes")]);
    p.start();
    p.wait_events("test.public.alltypes", 1, LONG);
    pg.batch_execute(&ROW.replace("VALUES (\n  1,", "VALUES (\n  2,"))
        .await
        .unwrap();
    let recs = p.wait_events("test.public.alltypes", 2, LONG);
    let snap = payload(&recs[0])["after"].clone();
    let mut streamed = payload(&recs[1])["after"].clone();
    assert_eq!(payload(&recs[0])["op"], "r");
    assert_eq!(payload(&recs[1])["op"], "c");
    streamed["id"] = json!(1);
    assert_eq!(snap, streamed, "snapshot and streaming values differ");
    // Schemas agree too.
    assert_eq!(recs[0]["value"]["schema"], recs[1]["value"]["schema"]);

    let a = &snap;
    // Values from Debezium's own expectations.
    assert_eq!(a["ts"], 1478267490123456i64);
    assert_eq!(a["tstz"], "2016-11-04T11:51:30.123456Z");
    assert_eq!(a["dt"], 17109);
    assert_eq!(a["tm"], 49890000000i64);
    assert_eq!(a["iv"], 37091106780000i64);
    // numeric(3,2) 1.1 is Decimal scale 2, unscaled 110 = 0x6e.
    assert_eq!(a["n"], "bg==");
    assert_eq!(a["b"], true);
    assert_eq!(a["bit1"], true);
    assert_eq!(a["i8"], 9007199254740993i64);
    assert_eq!(a["o"], 4000000000i64);
    assert_eq!(a["f4"], 1.5);
    assert_eq!(a["f8nan"], "NaN");
    assert_eq!(a["c"], "ab ");
    assert_eq!(a["t"], "text with \"quotes\" and \\ backslash");
    assert_eq!(a["j"], "{\"a\": 1}");
    assert_eq!(a["jb"], "{\"b\": [1, 2]}");
    assert_eq!(a["u"], "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
    assert_eq!(a["e"], "happy");
    assert_eq!(a["d"], 7);
    assert_eq!(a["by"], "AQL/");
    assert_eq!(a["ai"], json!([1, 2, null]));
    assert_eq!(a["at"], json!(["a b", "c", null]));
    assert_eq!(a["t24"], 86400000000i64);
    assert_eq!(a["tm3"], 49890123);
    assert_eq!(a["ts3"], 1478267490123i64);
    assert!(a["pt"]["x"] == 1.5 && a["pt"]["y"] == 2.5, "{}", a["pt"]);

    // Schema names and parameters are Debezium's.
    let fields = recs[0]["value"]["schema"]["fields"][1]["fields"]
        .as_array()
        .unwrap()
        .clone();
    let f = |name: &str| -> Json {
        fields
            .iter()
            .find(|x| x["field"] == name)
            .cloned()
            .unwrap_or(Json::Null)
    };
    assert_eq!(f("n")["name"], "org.apache.kafka.connect.data.Decimal");
    assert_eq!(
        f("n")["parameters"],
        json!({"scale": "2", "connect.decimal.precision": "3"})
    );
    assert_eq!(f("nfree")["name"], "io.debezium.data.VariableScaleDecimal");
    assert_eq!(f("e")["name"], "io.debezium.data.Enum");
    assert_eq!(f("e")["parameters"]["allowed"], "sad,ok,happy");
    assert_eq!(f("bits")["name"], "io.debezium.data.Bits");
    assert_eq!(f("tstz")["name"], "io.debezium.time.ZonedTimestamp");
    assert_eq!(f("ts")["name"], "io.debezium.time.MicroTimestamp");
    assert_eq!(f("ts3")["name"], "io.debezium.time.Timestamp");
    assert_eq!(f("tm3")["name"], "io.debezium.time.Time");
    assert_eq!(f("dt")["name"], "io.debezium.time.Date");
    assert_eq!(f("j")["name"], "io.debezium.data.Json");
    assert_eq!(f("u")["name"], "io.debezium.data.Uuid");
    assert_eq!(f("x")["name"], "io.debezium.data.Xml");
    assert_eq!(f("pt")["name"], "io.debezium.data.geometry.Point");
    assert_eq!(f("iv")["name"], "io.debezium.time.MicroDuration");
    assert_eq!(f("id")["optional"], false);
    assert_eq!(f("t")["optional"], true);
    assert_eq!(p.stop(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn handling_modes_change_the_encoding() {
    let (db, pg) = fresh_db("modes").await;
    pg.batch_execute(
        "CREATE TABLE m (id int PRIMARY KEY, n numeric(5,2), nn numeric, iv interval, by bytea, ts timestamp, tm time);
         INSERT INTO m VALUES (1, 12.5, 'NaN', 'P1Y2M3DT4H5M6.78S', '\\x0102ff', '2016-11-04T13:51:30.123456', '13:51:30');",
    )
    .await
    .unwrap();
    let mut p = Pipeline::new(
        &db,
        &[
            ("table.include.list", "public.m"),
            ("decimal.handling.mode", "string"),
            ("interval.handling.mode", "string"),
            ("binary.handling.mode", "hex"),
            ("time.precision.mode", "connect"),
        ],
    );
    p.start();
    let recs = p.wait_events("test.public.m", 1, LONG);
    let a = &payload(&recs[0])["after"];
    assert_eq!(a["n"], "12.50");
    assert_eq!(a["nn"], "NAN");
    assert_eq!(a["iv"], "P1Y2M3DT4H5M6.78S");
    assert_eq!(a["by"], "0102ff");
    assert_eq!(a["ts"], 1478267490123i64);
    assert_eq!(a["tm"], 49890000);
    assert_eq!(p.stop(), Some(0));
}
