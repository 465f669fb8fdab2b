//! The parity cases: what each database holds before the capture starts, the
//! changes made once Debezium and Sluice stream, and the connector settings.

/// One case: a database of its own, captured by Debezium and by Sluice.
#[derive(Clone)]
pub struct Case {
    pub name: String,
    /// `topic.prefix` (distinct per case, so one Sluice process hosts them all).
    pub prefix: String,
    /// Schema and starting data (read by the snapshots).
    pub setup: String,
    /// Statements run once every side streams, each in its own transaction
    /// (unless it holds its own BEGIN/COMMIT).
    pub changes: Vec<String>,
    /// Connector properties for every side.
    pub props: Vec<(String, String)>,
    /// Properties for Debezium only (e.g. today's names where Sluice gets 1.x names).
    pub debezium_props: Vec<(String, String)>,
    /// Properties for Sluice only.
    pub sluice_props: Vec<(String, String)>,
    /// Properties for Sluice under `sluice.debezium.compatibility=2.7` only.
    pub sluice27_props: Vec<(String, String)>,
    /// Topics that must have a record on every side before the end marker
    /// (timer-driven records such as heartbeats).
    pub wait_topics: Vec<String>,
    /// Whether Sluice's 2.7 format is compared for this case.
    pub compare27: bool,
}

impl Case {
    fn new(name: &str, setup: &str, changes: &[&str]) -> Case {
        Case {
            name: name.to_string(),
            prefix: format!("p_{name}"),
            setup: setup.to_string(),
            changes: changes.iter().map(|s| s.to_string()).collect(),
            props: Vec::new(),
            debezium_props: Vec::new(),
            sluice_props: Vec::new(),
            sluice27_props: Vec::new(),
            wait_topics: Vec::new(),
            compare27: true,
        }
    }
    fn prop(mut self, k: &str, v: &str) -> Case {
        self.props.push((k.into(), v.into()));
        self
    }
    fn dbz(mut self, k: &str, v: &str) -> Case {
        self.debezium_props.push((k.into(), v.into()));
        self
    }
    fn sluice(mut self, k: &str, v: &str) -> Case {
        self.sluice_props.push((k.into(), v.into()));
        self
    }
    fn sluice27(mut self, k: &str, v: &str) -> Case {
        self.sluice27_props.push((k.into(), v.into()));
        self
    }
    fn prefix(mut self, p: &str) -> Case {
        self.prefix = p.into();
        self
    }
    fn wait_for(mut self, topic: &str) -> Case {
        self.wait_topics.push(topic.into());
        self
    }
    fn no_27(mut self) -> Case {
        self.compare27 = false;
        self
    }
    /// The value of a property as the Debezium side sees it.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.debezium_props
            .iter()
            .chain(self.props.iter())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

const SCENARIO_TABLE: &str = "
CREATE SCHEMA retail;
CREATE TABLE retail.orders_info (
    orderid       SERIAL NOT NULL PRIMARY KEY,
    custid        INTEGER NOT NULL,
    amount        INTEGER NOT NULL,
    city          VARCHAR(255) NOT NULL,
    purchase_time VARCHAR(20) NOT NULL
);
INSERT INTO retail.orders_info (custid, amount, city, purchase_time) VALUES
  (306, 183, 'Austin', '2020-10-09 07:23:10'),
  (17, 100, 'New Delhi', '2020-10-09 07:23:13'),
  (1000, 199, 'Seattle', '2020-10-09 07:23:16');
";

const SCENARIO_CHANGES: &[&str] = &[
    "INSERT INTO retail.orders_info (custid, amount, city, purchase_time) VALUES (42, 150, 'New York', '2020-10-09 07:23:19')",
    "INSERT INTO retail.orders_info (custid, amount, city, purchase_time) VALUES (7, 120, 'Chicago', '2020-10-09 07:23:22'), (8, 121, 'Cleveland', '2020-10-09 07:23:22')",
    "UPDATE retail.orders_info SET amount = amount + 1 WHERE orderid = 2",
    "DELETE FROM retail.orders_info WHERE orderid = 3",
    "UPDATE retail.orders_info SET orderid = 100 WHERE orderid = 1",
];

/// Every column type of Debezium's PostgreSQL type table, and arrays of them.
const TYPES_TABLE: &str = r#"
CREATE EXTENSION citext;
CREATE EXTENSION hstore;
CREATE EXTENSION ltree;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE types (
  id serial PRIMARY KEY,
  b bool, bit1 bit(1), bit8 bit(8), vb varbit(16), vbu varbit,
  i2 int2, i4 int4, i8 int8, o oid, f4 float4, f8 float8,
  ch "char", bp char(5), vc varchar(20), t text, ci citext,
  ip inet, cidr_ cidr, mac macaddr, mac8 macaddr8,
  r4 int4range, r8 int8range, rn numrange, rts tsrange, rtz tstzrange, rd daterange,
  j json, jb jsonb, x xml, u uuid, e mood, pt point,
  d date, t0 time(0), t3 time(3), t6 time(6), tm time, ttz timetz,
  ts0 timestamp(0), ts3 timestamp(3), ts timestamp, tz timestamptz, tz3 timestamptz(3),
  iv interval, n numeric(10,3), dec decimal(5,2), nv numeric, m money, by bytea, hs hstore, lt ltree,
  a_b bool[], a_i2 int2[], a_i4 int4[], a_i8 int8[], a_f4 float4[], a_f8 float8[],
  a_t text[], a_vc varchar(10)[], a_bp char(3)[], a_n numeric(10,2)[], a_nv numeric[],
  a_d date[], a_tm time[], a_t3 time(3)[], a_ts timestamp[], a_tz timestamptz[], a_ttz timetz[],
  a_u uuid[], a_j json[], a_jb jsonb[], a_ip inet[], a_cidr cidr[], a_mac macaddr[],
  a_by bytea[], a_r4 int4range[], a_e mood[], a_o oid[], a_ci citext[], a_lt ltree[],
  a_mac8 macaddr8[], a_hs hstore[], a_rd daterange[], a_ch "char"[], a_ts3 timestamp(3)[], a_b1 bool[],
  a_t0 time(0)[], a_r8 int8range[], a_rn numrange[], a_tr tstzrange[]
);
"#;

/// A row of typical values; `$ID` is replaced.
const TYPES_ROW: &str = r#"
INSERT INTO types (b, bit1, bit8, vb, vbu, i2, i4, i8, o, f4, f8, ch, bp, vc, t, ci, ip, cidr_, mac, mac8,
  r4, r8, rn, rts, rtz, rd, j, jb, x, u, e, pt, d, t0, t3, t6, tm, ttz, ts0, ts3, ts, tz, tz3, iv,
  n, dec, nv, m, by, hs, lt,
  a_b, a_i2, a_i4, a_i8, a_f4, a_f8, a_t, a_vc, a_bp, a_n, a_nv, a_d, a_tm, a_t3, a_ts, a_tz, a_ttz,
  a_u, a_j, a_jb, a_ip, a_cidr, a_mac, a_by, a_r4, a_e, a_o, a_ci, a_lt,
  a_mac8, a_hs, a_rd, a_ch, a_ts3, a_t0, a_r8, a_rn, a_tr)
VALUES (true, B'1', B'10100101', B'1101', B'101010101010101010', -12, 123456, 9007199254740993, 4000000000,
  1.5, 3.141592653589793, 'x', 'ab', 'varchar ü', E'text "q" \\ b\nline2', 'CiText',
  '192.168.0.1/24', '10.0.0.0/8', '08:00:2b:01:02:03', '08:00:2b:01:02:03:04:05',
  '[1,10)', '[5,)', '(1.5,2.5]', '[2020-01-01 10:00,2020-01-02 10:00)',
  '[2020-01-01 10:00+02,2020-01-02 10:00+02)', '[2020-01-01,2020-02-01)',
  '{"a": 1, "b": [1,2]}', '{"b": [1, 2], "a": 1}', '<a>1</a>', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
  'happy', '(1.5,-2.25)', '2016-11-04', '13:51:30', '13:51:30.123', '13:51:30.123456', '23:59:59.999999',
  '13:51:30.5+02', '2016-11-04 13:51:30', '2016-11-04 13:51:30.123', '2016-11-04 13:51:30.123456',
  '2016-11-04 13:51:30.123456+02', '2016-11-04 13:51:30.1+02', 'P1Y2M3DT4H5M6.78S',
  1234567.891, -123.45, 3.14159265358979323846, 12.34, '\x0102ff', '"a"=>"1", "b"=>NULL',
  'Top.Science.Astronomy',
  '{t,f,NULL}', '{1,-2}', '{1,2,NULL}', '{9007199254740993}', '{1.5,NaN}', '{2.5,-Infinity}',
  '{"a b",c,NULL,"q\"x"}', '{x,y}', '{ab,c}', '{1.5,NULL,-2.25}', '{1,2.5,3.14159}',
  '{2016-11-04,1970-01-01}', '{13:51:30.123456,00:00:01}', '{13:51:30.123}',
  '{"2016-11-04 13:51:30.123456"}', '{"2016-11-04 13:51:30.123456+02"}', '{13:51:30+02}',
  '{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}', ARRAY['{"a":1}'::json], ARRAY['{"a": 1}'::jsonb],
  '{192.168.0.1,::1}', '{10.0.0.0/8}', '{08:00:2b:01:02:03}', '{"\\x0102"}', '{"[1,3)"}',
  '{ok,happy}', '{1,4000000000}', '{A,b}', '{a.b,c}',
  '{08:00:2b:01:02:03:04:05}', ARRAY['"a"=>"1"'::hstore], '{"[2020-01-01,2020-02-01)"}', '{a,b}',
  '{"2016-11-04 13:51:30.123"}', '{13:51:30}', '{"[1,5)"}', '{"(1.5,2.5]"}',
  '{"[2020-01-01 10:00+02,2020-01-02 10:00+02)"}');
"#;

/// A row of edge values.
const TYPES_EDGE_ROW: &str = r#"
INSERT INTO types (b, bit1, bit8, vb, vbu, i2, i4, i8, o, f4, f8, ch, bp, vc, t, ci,
  r4, rn, j, jb, x, pt, d, t0, t3, t6, tm, ttz, ts0, ts3, ts, tz, tz3, iv, n, dec, nv, m, by, hs,
  a_b, a_i4, a_f8, a_t, a_n, a_nv, a_tm, a_by)
VALUES (false, B'0', B'00000000', B'', B'0', 32767, -2147483648, -9223372036854775808, 0,
  'Infinity', 'NaN', ' ', '', '', '', '',
  'empty', 'empty', '[]', '{}', '<a/>', '(0,0)', '1900-02-28', '00:00:00', '00:00:00.001', '00:00:00.000001',
  '00:00:00', '00:00:00-14', '1970-01-01 00:00:00', '1969-12-31 23:59:59.999', '1900-01-01 00:00:00.000001',
  '1900-01-01 00:00:00+00', '2038-01-19 03:14:08+00', '-1 year -2 months 3 days -04:05:06.789',
  -0.001, 0, 0.000000000000000000001, -92233720368547758.08, '\x', '',
  '{}', '{}', '{NaN,Infinity}', '{""}', '{}', '{-0.5,100000000000000000000}', '{00:00:00}', '{"\\x"}');
"#;

fn types_case(name: &str) -> Case {
    let row = |r: &str| r.to_string();
    let setup = format!(
        "{TYPES_TABLE}{}{}INSERT INTO types (id) VALUES (DEFAULT);",
        row(TYPES_ROW),
        row(TYPES_EDGE_ROW)
    );
    let leaked: &'static str = Box::leak(setup.into_boxed_str());
    Case::new(
        name,
        leaked,
        &[
            TYPES_ROW,
            TYPES_EDGE_ROW,
            "INSERT INTO types (id) VALUES (DEFAULT)",
            "UPDATE types SET i4 = 7, t = 'changed', a_i4 = '{7}' WHERE id = 1",
            "UPDATE types SET n = 1.5, tz = '2020-02-29 12:00:00+00' WHERE id = 4",
            "DELETE FROM types WHERE id = 2",
            "DELETE FROM types WHERE id = 5",
        ],
    )
}

const DML_TABLES: &str = "
CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, qty int, price numeric(8,2), note varchar(40));
CREATE TABLE pairs (a int, b text, v text, PRIMARY KEY (a, b));
INSERT INTO items VALUES (1, 'one', 1, 1.50, 'n1'), (2, 'two', 2, 2.50, NULL), (3, 'three', 3, NULL, 'n3');
INSERT INTO pairs VALUES (1, 'x', 'first'), (2, 'y', 'second');
";

const DML_CHANGES: &[&str] = &[
    "INSERT INTO items VALUES (4, 'four', 4, 4.25, NULL)",
    "UPDATE items SET qty = qty + 10, note = 'updated' WHERE id = 1",
    "DELETE FROM items WHERE id = 2",
    // A key change: a delete of the old key (and its tombstone), a create of the new one.
    "UPDATE items SET id = 30 WHERE id = 3",
    "UPDATE pairs SET b = 'z' WHERE a = 1",
    "UPDATE pairs SET v = 'changed' WHERE a = 2",
    // Several changes in one transaction, across tables.
    "BEGIN; INSERT INTO items VALUES (5, 'five', NULL, NULL, NULL); UPDATE items SET price = 9.99 WHERE id = 4; \
     DELETE FROM pairs WHERE a = 2; INSERT INTO pairs VALUES (3, 'w', NULL); COMMIT;",
    "DELETE FROM items WHERE id IN (1, 5)",
];

const FULL_TABLES: &str = "
CREATE TABLE full_pk (id int PRIMARY KEY, name text NOT NULL, qty int, big text);
ALTER TABLE full_pk REPLICA IDENTITY FULL;
CREATE TABLE full_nokey (a int, b text, c numeric(5,1));
ALTER TABLE full_nokey REPLICA IDENTITY FULL;
CREATE TABLE nokey_default (a int, b text);
INSERT INTO full_pk VALUES (1, 'one', 1, NULL), (2, 'two', 2, 'x');
INSERT INTO full_nokey VALUES (1, 'x', 1.5), (2, NULL, NULL);
INSERT INTO nokey_default VALUES (1, 'only inserts');
";

const FULL_CHANGES: &[&str] = &[
    "UPDATE full_pk SET qty = 10 WHERE id = 1",
    "UPDATE full_pk SET id = 20 WHERE id = 2",
    "DELETE FROM full_pk WHERE id = 1",
    "UPDATE full_nokey SET b = 'y' WHERE a = 1",
    "DELETE FROM full_nokey WHERE a = 2",
    "INSERT INTO full_nokey VALUES (3, 'three', 3.5)",
    "INSERT INTO nokey_default VALUES (2, 'no key, no identity')",
];

const TOAST_TABLE: &str = "
CREATE TABLE toasted (id int PRIMARY KEY, n int, big text, bigb bytea, bigj jsonb, biga text[], bigv varchar);
INSERT INTO toasted SELECT 1, 1, string_agg(md5(i::text), ''), decode(string_agg(md5(i::text), ''), 'hex'),
  jsonb_build_object('k', string_agg(md5(i::text), '')), ARRAY[string_agg(md5(i::text), '')], string_agg(md5(i::text), '')
  FROM generate_series(1, 400) i;
";

const TOAST_CHANGES: &[&str] = &[
    // Only n changes: PostgreSQL does not send the unchanged TOASTed values.
    "UPDATE toasted SET n = 2 WHERE id = 1",
    "INSERT INTO toasted SELECT 2, 1, string_agg(md5(i::text), ''), NULL, NULL, NULL, NULL FROM generate_series(1, 300) i",
    "UPDATE toasted SET n = 3 WHERE id = 2",
    "UPDATE toasted SET big = 'small now', n = 4 WHERE id = 1",
    "DELETE FROM toasted WHERE id = 2",
];

const DEFAULTS_TABLE: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE SEQUENCE counter;
CREATE TABLE defaults (
  id serial PRIMARY KEY,
  big bigserial,
  small smallserial,
  i2 int2 DEFAULT 12, i4 int4 NOT NULL DEFAULT 7, i8 int8 DEFAULT 9223372036854775807, neg int4 DEFAULT -5,
  f4 float4 DEFAULT 1.25, f8 float8 DEFAULT 3.5, n numeric(10,3) DEFAULT 1.5, nv numeric DEFAULT 2.25, nd decimal(6,2) DEFAULT '12.5',
  b bool DEFAULT true, bf bool NOT NULL DEFAULT false,
  t text DEFAULT 'hello', vc varchar(10) DEFAULT 'v''q', bp char(4) DEFAULT 'ab', tnull text DEFAULT NULL,
  j json DEFAULT '{"a": 1}', jb jsonb DEFAULT '[]', x xml DEFAULT '<a/>',
  u uuid DEFAULT 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', ug uuid DEFAULT gen_random_uuid(),
  d date DEFAULT '2020-02-29', dnow date DEFAULT CURRENT_DATE,
  tm time DEFAULT '12:34:56.789', tm3 time(3) DEFAULT '01:02:03',
  ts timestamp DEFAULT '2020-01-01 10:11:12.131415', tsnow timestamp DEFAULT now(), ts3 timestamp(3) DEFAULT LOCALTIMESTAMP,
  tz timestamptz DEFAULT '2020-01-01 10:11:12+02', tznow timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
  iv interval DEFAULT '1 day 02:00:00',
  e mood DEFAULT 'ok', bit1 bit(1) DEFAULT B'1', bit4 bit(4) DEFAULT B'1010', vb varbit DEFAULT B'11',
  seqd int8 DEFAULT nextval('counter'), expr int4 DEFAULT (1 + 1),
  by bytea DEFAULT '\x01', ip inet DEFAULT '127.0.0.1', m money DEFAULT 1.5, arr int4[] DEFAULT '{1,2}',
  ttz timetz DEFAULT '10:00:00+02', pt point DEFAULT '(1,2)'
);
INSERT INTO defaults DEFAULT VALUES;
INSERT INTO defaults (i2, t, n, b, e) VALUES (NULL, NULL, NULL, NULL, NULL);
"#;

const DEFAULTS_CHANGES: &[&str] = &[
    "INSERT INTO defaults (ug, dnow, tsnow, ts3, tznow) VALUES ('00000000-0000-0000-0000-000000000001', '2000-01-01', '2000-01-01', '2000-01-01', '2000-01-01 00:00:00+00')",
    // Explicit NULLs into columns with defaults: the JSON converter writes the default.
    "INSERT INTO defaults (i2, i8, f4, t, vc, n, d, e, ug, dnow, tsnow, ts3, tznow) VALUES (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '2000-01-01', '2000-01-01', '2000-01-01', '2000-01-01 00:00:00+00')",
    "UPDATE defaults SET i4 = 70 WHERE id = 3",
    // A delete's before (REPLICA IDENTITY DEFAULT) has only the key: the rest shows defaults.
    "DELETE FROM defaults WHERE id = 3",
];

const TX_TABLES: &str = "
CREATE TABLE a (id int PRIMARY KEY, v text);
CREATE TABLE b (id int PRIMARY KEY, v text);
CREATE TABLE uncaptured (id int PRIMARY KEY);
INSERT INTO a VALUES (1, 'snap');
";

const TX_CHANGES: &[&str] = &[
    "INSERT INTO a VALUES (2, 'single')",
    "BEGIN; INSERT INTO a VALUES (3, 'x'); INSERT INTO b VALUES (1, 'y'); UPDATE a SET v = 'z' WHERE id = 3; \
     INSERT INTO b VALUES (2, 'w'); DELETE FROM a WHERE id = 2; COMMIT;",
    "BEGIN; INSERT INTO a VALUES (4, 'with a message'); SELECT pg_logical_emit_message(true, 'tx', 'm'); COMMIT;",
    // A transaction that touches no captured table.
    "INSERT INTO uncaptured VALUES (1)",
    // A transaction that writes nothing logical (a sequence only).
    "BEGIN; CREATE TEMP TABLE tmp_x (i int); DROP TABLE tmp_x; COMMIT;",
    "UPDATE b SET v = 'again' WHERE id = 1",
];

const FILTER_TABLES: &str = "
CREATE SCHEMA s1;
CREATE TABLE s1.t1 (id int PRIMARY KEY, keep text, secret text, other int);
CREATE TABLE s1.t2 (id int PRIMARY KEY, v text);
CREATE TABLE public.zeta (id int PRIMARY KEY, v text);
CREATE TABLE public.alpha (id int PRIMARY KEY, v text);
CREATE TABLE public.mid (id int PRIMARY KEY, v text);
CREATE TABLE public.skipped (id int PRIMARY KEY);
INSERT INTO s1.t1 VALUES (1, 'k', 's', 1);
INSERT INTO s1.t2 VALUES (1, 'v');
INSERT INTO zeta VALUES (1, 'z1'), (2, 'z2');
INSERT INTO alpha VALUES (1, 'a1');
INSERT INTO skipped VALUES (1);
";

const FILTER_CHANGES: &[&str] = &[
    "INSERT INTO s1.t1 VALUES (2, 'k2', 's2', 2)",
    "UPDATE s1.t1 SET secret = 'changed', keep = 'kk' WHERE id = 1",
    "INSERT INTO s1.t2 VALUES (2, 'v2')",
    "INSERT INTO alpha VALUES (2, 'a2')",
    "INSERT INTO mid VALUES (1, 'm1')",
    "INSERT INTO skipped VALUES (2)",
];

const KEYCOL_TABLES: &str = "
CREATE TABLE nokey (a int NOT NULL, b text, c int);
ALTER TABLE nokey REPLICA IDENTITY FULL;
CREATE TABLE haskey (id int PRIMARY KEY, code text NOT NULL, v int);
CREATE TABLE uniq (id int NOT NULL, u text NOT NULL, v int);
CREATE UNIQUE INDEX uniq_u ON uniq (u);
ALTER TABLE uniq REPLICA IDENTITY USING INDEX uniq_u;
INSERT INTO nokey VALUES (1, 'x', 10);
INSERT INTO haskey VALUES (1, 'c1', 1);
INSERT INTO uniq VALUES (1, 'u1', 1);
";

const KEYCOL_CHANGES: &[&str] = &[
    "INSERT INTO nokey VALUES (2, 'y', 20)",
    "UPDATE nokey SET c = 11 WHERE a = 1",
    "UPDATE nokey SET a = 3 WHERE a = 2",
    "DELETE FROM nokey WHERE a = 1",
    "INSERT INTO haskey VALUES (2, 'c2', 2)",
    "UPDATE haskey SET code = 'c1b' WHERE id = 1",
    "UPDATE haskey SET v = 5 WHERE id = 2",
    "DELETE FROM haskey WHERE id = 2",
    "INSERT INTO uniq VALUES (2, 'u2', 2)",
    "UPDATE uniq SET u = 'u2b' WHERE id = 2",
    "UPDATE uniq SET v = 3 WHERE id = 1",
    "DELETE FROM uniq WHERE id = 1",
];

const OMITTED_TABLE: &str = "
CREATE TABLE geo (
  id int PRIMARY KEY, v text,
  bx box, ln line, ls lseg, pa path, ci circle, po polygon, lsn pg_lsn, snap txid_snapshot,
  mr int4multirange, tsv tsvector, tq tsquery,
  a_money money[], a_name name[], a_xml xml[], a_point point[], a_varbit varbit[], a_interval interval[],
  a_bit bit(2)[]
);
INSERT INTO geo VALUES (1, 'snap', '((0,0),(1,1))', '{1,2,3}', '[(0,0),(1,1)]', '((0,0),(1,1))', '<(0,0),1>',
  '((0,0),(1,1),(1,0))', '0/16B3748', '10:20:10,14,15', '{[1,3),[5,7)}', 'a fat cat', 'fat & cat',
  '{1.5}', '{n1,n2}', ARRAY['<a/>'::xml], '{\"(1,2)\"}', '{101}', '{1 day}', '{01,10}');
";

const OMITTED_CHANGES: &[&str] = &[
    "INSERT INTO geo SELECT 2, 'streamed', bx, ln, ls, pa, ci, po, lsn, snap, mr, tsv, tq, a_money, a_name, a_xml, a_point, a_varbit, a_interval, a_bit FROM geo WHERE id = 1",
    "UPDATE geo SET v = 'updated', tsv = 'new words' WHERE id = 1",
    "DELETE FROM geo WHERE id = 2",
];

const FAILURE_TABLE: &str = "
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE bad (id int PRIMARY KEY, n numeric(10,2), nv numeric, ttz timetz, moods mood[], a_n numeric(5,1)[], a_nv numeric[]);
INSERT INTO bad VALUES (1, 'NaN', 'NaN', '24:00:00-03', '{ok,NULL}', '{1.5,NaN}', '{NaN,Infinity}');
INSERT INTO bad VALUES (2, 1.5, 'Infinity', '24:00:00+00', '{happy}', NULL, NULL);
";

const FAILURE_CHANGES: &[&str] = &[
    "INSERT INTO bad VALUES (3, 'NaN', '-Infinity', '24:00:00-03', '{NULL}', '{NaN}', '{-Infinity,1}')",
    "UPDATE bad SET n = 2.5 WHERE id = 1",
    "INSERT INTO bad VALUES (4, 1, 1, '23:59:59.999999+14', '{}', '{}', '{}')",
];

const DELIBERATE_TABLE: &str = "
CREATE TABLE odd (id int PRIMARY KEY, nm name, d date, ts timestamp, tz timestamptz, a_tm time[], a_t6 time(6)[]);
INSERT INTO odd VALUES (1, 'aname', 'infinity', 'infinity', '-infinity', '{13:51:30.123456}', '{00:00:00.000001}');
INSERT INTO odd VALUES (2, 'b', '0044-03-15 BC', '0044-03-15 10:00:00 BC', '0044-03-15 10:00:00+00 BC', '{23:59:59.999999}', NULL);
";

const DELIBERATE_CHANGES: &[&str] = &[
    "INSERT INTO odd VALUES (3, 'streamed', 'infinity', 'infinity', '-infinity', '{13:51:30.123456}', '{00:00:00.000001}')",
    "INSERT INTO odd VALUES (4, 'c', '0044-03-15 BC', '0044-03-15 10:00:00 BC', '0044-03-15 10:00:00+00 BC', '{23:59:59.999999}', NULL)",
    "UPDATE odd SET nm = 'renamed' WHERE id = 1",
];

const MESSAGE_TABLE: &str = "CREATE TABLE m (id int PRIMARY KEY);";

const MESSAGE_CHANGES: &[&str] = &[
    // A non-transactional message's source time is the last commit's: one
    // comes first (right after a snapshot it would be the snapshot's time,
    // which differs between two processes).
    "INSERT INTO m VALUES (0)",
    "SELECT pg_logical_emit_message(false, 'prefix-a', 'non-transactional')",
    "BEGIN; INSERT INTO m VALUES (1); SELECT pg_logical_emit_message(true, 'prefix-b', 'in a transaction'); COMMIT;",
    "SELECT pg_logical_emit_message(true, 'prefix-c', '\\x00ff'::bytea)",
    "SELECT pg_logical_emit_message(true, 'skipped', 'excluded by message.prefix.exclude.list')",
];

const ORIGIN_TABLE: &str = "
CREATE TABLE o (id int PRIMARY KEY, v text);
SELECT pg_replication_origin_create('sluice_parity_origin');
";

const ORIGIN_CHANGES: &[&str] = &[
    "INSERT INTO o VALUES (1, 'local')",
    "SELECT pg_replication_origin_session_setup('sluice_parity_origin'); \
     BEGIN; SELECT pg_replication_origin_xact_setup('0/1A2B3C4D', '2021-01-01 00:00:00+00'); \
     INSERT INTO o VALUES (2, 'replicated'); COMMIT; SELECT pg_replication_origin_session_reset();",
];

/// A signal table as Debezium documents it, and two tables (one keyed by
/// two columns) for an incremental snapshot in chunks.
const INCREMENTAL_TABLES: &str = "
CREATE TABLE dbz_signal (id varchar(42) PRIMARY KEY, type varchar(32) NOT NULL, data varchar(2048));
CREATE TABLE inc (id int PRIMARY KEY, name text, amount numeric(10,2));
INSERT INTO inc SELECT g, 'row ' || g, g * 1.5 FROM generate_series(1, 2500) g;
CREATE TABLE inc2 (a int, b text, v text, PRIMARY KEY (a, b));
INSERT INTO inc2 SELECT g % 7, 'k' || g, 'v' || g FROM generate_series(1, 300) g;
";

const INCREMENTAL_CHANGES: &[&str] = &[
    "INSERT INTO dbz_signal VALUES ('sig-1', 'execute-snapshot', \
     '{\"data-collections\": [\"public.inc2\", \"public.inc\"], \"type\": \"incremental\", \
       \"additional-conditions\": [{\"data-collection\": \"public.inc\", \"filter\": \"id % 3 <> 0\"}]}')",
    // Every side reads the tables before the end marker.
    "SELECT pg_sleep(15)",
];

const BLOCKING_CHANGES: &[&str] = &[
    "INSERT INTO inc2 VALUES (100, 'streamed before', 'x')",
    "INSERT INTO dbz_signal VALUES ('sig-2', 'execute-snapshot', \
     '{\"data-collections\": [\"public.inc2\"], \"type\": \"blocking\"}')",
    "SELECT pg_sleep(10)",
    "INSERT INTO inc2 VALUES (101, 'streamed after', 'y')",
];

pub fn all() -> Vec<Case> {
    vec![
        // The users' scenario: Sluice gets their Debezium 1.x config as they post
        // it (1.x names, wal2json); Debezium 3.6 gets today's equivalents.
        Case::new("scenario", SCENARIO_TABLE, SCENARIO_CHANGES)
            .prefix("myserver")
            .dbz("table.include.list", "retail.orders_info,public.parity_end")
            .sluice("database.server.name", "myserver")
            .sluice("table.whitelist", "retail.orders_info,public.parity_end")
            .sluice("plugin.name", "wal2json"),
        // The scenario's sink transform, applied at the source on both sides.
        Case::new("scenario_unwrap", SCENARIO_TABLE, SCENARIO_CHANGES)
            .prop("table.include.list", "retail.orders_info,public.parity_end")
            .prop("transforms", "unwrap")
            .prop(
                "transforms.unwrap.type",
                "io.debezium.transforms.ExtractNewRecordState",
            ),
        types_case("types_default"),
        types_case("types_modes_a")
            .prop("decimal.handling.mode", "double")
            .prop("time.precision.mode", "connect")
            .prop("binary.handling.mode", "base64")
            .prop("interval.handling.mode", "string")
            .prop("hstore.handling.mode", "map"),
        types_case("types_modes_b")
            .prop("decimal.handling.mode", "string")
            .prop("time.precision.mode", "adaptive_time_microseconds")
            .prop("binary.handling.mode", "base64-url-safe"),
        types_case("types_modes_c").prop("binary.handling.mode", "hex"),
        Case::new("dml", DML_TABLES, DML_CHANGES),
        Case::new("dml_no_tombstones", DML_TABLES, DML_CHANGES)
            .prop("tombstones.on.delete", "false"),
        Case::new("replica_full", FULL_TABLES, FULL_CHANGES),
        Case::new(
            "truncate",
            DML_TABLES,
            &[
                "INSERT INTO items VALUES (4, 'four', 4, 4.25, NULL)",
                "TRUNCATE items",
                "TRUNCATE items, pairs",
                "INSERT INTO items VALUES (1, 'again', 1, 1, NULL)",
            ],
        )
        .prop("skipped.operations", "none"),
        Case::new(
            "truncate_skipped",
            DML_TABLES,
            &["TRUNCATE pairs", "INSERT INTO pairs VALUES (9, 'n', NULL)"],
        ),
        Case::new("toast", TOAST_TABLE, TOAST_CHANGES),
        Case::new("toast_placeholder", TOAST_TABLE, TOAST_CHANGES)
            .prop("unavailable.value.placeholder", "hex:00ff"),
        Case::new("defaults", DEFAULTS_TABLE, DEFAULTS_CHANGES),
        Case::new("defaults_modes", DEFAULTS_TABLE, DEFAULTS_CHANGES)
            .prop("decimal.handling.mode", "string")
            .prop("time.precision.mode", "connect")
            .prop("interval.handling.mode", "string"),
        Case::new("txmeta", TX_TABLES, TX_CHANGES)
            .prop("provide.transaction.metadata", "true")
            .prop("table.include.list", "public.a,public.b,public.parity_end"),
        Case::new("heartbeat", TX_TABLES, &["INSERT INTO a VALUES (2, 'x')"])
            .prop("heartbeat.interval.ms", "300")
            .wait_for("__debezium-heartbeat.p_heartbeat"),
        Case::new("key_columns", KEYCOL_TABLES, KEYCOL_CHANGES)
            .prop("message.key.columns", "public.nokey:a,b;public.haskey:code"),
        Case::new("replica_index", KEYCOL_TABLES, KEYCOL_CHANGES),
        Case::new("column_filters", FILTER_TABLES, FILTER_CHANGES)
            .prop(
                "table.include.list",
                "public.zeta,s1.t1,public.alpha,public.mid,s1.t2,public.parity_end",
            )
            .prop("column.exclude.list", "s1\\.t1\\.secret,public\\.zeta\\.v"),
        Case::new("column_include", FILTER_TABLES, FILTER_CHANGES)
            .prop("schema.include.list", "s1,public")
            .prop("table.exclude.list", "public\\.skipped")
            .prop(
                "column.include.list",
                "s1\\.t1\\.(id|keep),s1\\.t2\\..*,public\\..*",
            ),
        Case::new("omitted_types", OMITTED_TABLE, OMITTED_CHANGES),
        Case::new("unknown_types_included", OMITTED_TABLE, OMITTED_CHANGES)
            .prop("include.unknown.datatypes", "true"),
        Case::new("conversion_failures", FAILURE_TABLE, FAILURE_CHANGES),
        Case::new("conversion_failures_skip", FAILURE_TABLE, FAILURE_CHANGES)
            .prop("event.converting.failure.handling.mode", "skip"),
        Case::new("deliberate", DELIBERATE_TABLE, DELIBERATE_CHANGES),
        Case::new("unwrap_rewrite", DML_TABLES, DML_CHANGES)
            .prop("transforms", "unwrap")
            .prop(
                "transforms.unwrap.type",
                "io.debezium.transforms.ExtractNewRecordState",
            )
            .prop(
                "transforms.unwrap.delete.tombstone.handling.mode",
                "rewrite",
            )
            .prop(
                "transforms.unwrap.add.fields",
                "op,table,lsn,source.ts_ms,txId",
            )
            .prop("transforms.unwrap.add.headers", "op,db,source.lsn"),
        Case::new("unwrap_tombstones", DML_TABLES, DML_CHANGES)
            .prop("transforms", "unwrap")
            .prop(
                "transforms.unwrap.type",
                "io.debezium.transforms.ExtractNewRecordState",
            )
            .prop(
                "transforms.unwrap.delete.tombstone.handling.mode",
                "rewrite-with-tombstone",
            )
            .prop("transforms.unwrap.add.fields.prefix", "meta_")
            .prop("transforms.unwrap.add.fields", "op,source.snapshot"),
        Case::new("unwrap_drop", DML_TABLES, DML_CHANGES)
            .prop("transforms", "unwrap")
            .prop(
                "transforms.unwrap.type",
                "io.debezium.transforms.ExtractNewRecordState",
            )
            .prop("transforms.unwrap.delete.tombstone.handling.mode", "drop"),
        // Debezium 3.6 ignores the options 3.2 removed (with a warning); 2.7 applied them.
        Case::new("unwrap_legacy_options", DML_TABLES, DML_CHANGES)
            .prop("transforms", "unwrap")
            .prop(
                "transforms.unwrap.type",
                "io.debezium.transforms.ExtractNewRecordState",
            )
            .prop("transforms.unwrap.drop.tombstones", "false")
            .prop("transforms.unwrap.delete.handling.mode", "rewrite")
            .no_27(),
        // Under the 2.7 switch the legacy options apply: Debezium 3.6's equivalent
        // mode gives the expected records.
        Case::new("unwrap_legacy_27", DML_TABLES, DML_CHANGES)
            .prop("transforms", "unwrap")
            .prop(
                "transforms.unwrap.type",
                "io.debezium.transforms.ExtractNewRecordState",
            )
            .prop(
                "transforms.unwrap.delete.tombstone.handling.mode",
                "rewrite-with-tombstone",
            )
            .sluice27("transforms.unwrap.delete.tombstone.handling.mode", "")
            .sluice27("transforms.unwrap.drop.tombstones", "false")
            .sluice27("transforms.unwrap.delete.handling.mode", "rewrite"),
        Case::new("messages", MESSAGE_TABLE, MESSAGE_CHANGES)
            .prop("message.prefix.exclude.list", "skip.*"),
        Case::new("messages_base64", MESSAGE_TABLE, MESSAGE_CHANGES)
            .prop("binary.handling.mode", "base64")
            .prop("provide.transaction.metadata", "true"),
        Case::new("origin", ORIGIN_TABLE, ORIGIN_CHANGES),
        // An incremental snapshot signalled through the signal table: the
        // same reads (op r, snapshot incremental) in the same order, and the
        // same signal table rows (Debezium's watermark rows included, which
        // every side reads from the WAL).
        Case::new("incremental", INCREMENTAL_TABLES, INCREMENTAL_CHANGES)
            .prop("signal.data.collection", "public.dbz_signal")
            .prop("incremental.snapshot.chunk.size", "1000")
            // Sluice's own watermarks are logical decoding messages, which
            // Debezium would emit.
            .prop("message.prefix.exclude.list", "__sluice.*"),
        // A blocking snapshot: streaming pauses, the table is read as in an
        // initial snapshot (first ... last), streaming resumes.
        Case::new("blocking", INCREMENTAL_TABLES, BLOCKING_CHANGES)
            .prop("signal.data.collection", "public.dbz_signal"),
    ]
}
