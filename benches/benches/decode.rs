//! Decoding throughput of mine readings (the first thing every message goes through), with
//! the event time as epoch milliseconds (what the simulator and the load bench send) and as
//! RFC 3339 text (what many devices send).
#![allow(missing_docs)] // criterion_group! generates undocumented items

use citybrain_benches::{ch4_messages, ch4_messages_rfc3339};
use citybrain_model::decode::decode_mine_reading;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn decode(c: &mut Criterion) {
    let messages = ch4_messages(200, 10_000);
    let texts = ch4_messages_rfc3339(200, 10_000);
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(messages.len() as u64));
    for (name, messages) in [
        ("mine_reading_x10k", &messages),
        ("mine_reading_rfc3339_x10k", &texts),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                messages
                    .iter()
                    .filter(|m| decode_mine_reading(m).is_ok())
                    .count()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
