//! Decoding throughput of mine readings (the first thing every message goes through).
#![allow(missing_docs)] // criterion_group! generates undocumented items

use citybrain_benches::ch4_messages;
use citybrain_model::decode::decode_mine_reading;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn decode(c: &mut Criterion) {
    let messages = ch4_messages(200, 10_000);
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(messages.len() as u64));
    group.bench_function("mine_reading_x10k", |b| {
        b.iter(|| {
            messages
                .iter()
                .filter(|m| decode_mine_reading(m).is_ok())
                .count()
        })
    });
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
