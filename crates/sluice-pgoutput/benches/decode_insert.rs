//! Decoding throughput of a 5-column Insert, the most common message.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use sluice_pgoutput::{Decoder, LogicalMessage};

fn insert_5_columns() -> Bytes {
    let values: [&[u8]; 5] = [
        b"123456",
        b"alice@example.com",
        b"2024-05-01 12:34:56.789+00",
        b"t",
        b"{\"k\": [1, 2, 3]}",
    ];
    let mut b = BytesMut::new();
    b.put_u8(b'I');
    b.put_u32(16384);
    b.put_u8(b'N');
    b.put_u16(5);
    for v in values {
        b.put_u8(b't');
        b.put_u32(v.len() as u32);
        b.put_slice(v);
    }
    b.freeze()
}

fn main() {
    let msg = insert_5_columns();
    let mut decoder = Decoder::new(2);
    let run = |decoder: &mut Decoder, n: u32| {
        for _ in 0..n {
            match decoder.decode(black_box(&msg)) {
                Ok(LogicalMessage::Insert { new, .. }) => {
                    black_box(new);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    };
    run(&mut decoder, 100_000);
    let mut iterations = 0u64;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        run(&mut decoder, 100_000);
        iterations += 100_000;
    }
    let elapsed = start.elapsed();
    println!(
        "decode Insert (5 text columns, {} bytes): {:.1} ns/message, {:.2} M messages/s",
        msg.len(),
        elapsed.as_nanos() as f64 / iterations as f64,
        iterations as f64 / elapsed.as_secs_f64() / 1e6
    );
}
