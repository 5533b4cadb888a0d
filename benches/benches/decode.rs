//! Decoding throughput of mine readings (the first thing every message goes through), with
//! the event time as epoch milliseconds (what the simulator and the load bench send) and as
//! RFC 3339 text (what many devices send).
#![allow(missing_docs)] // criterion_group! generates undocumented items

use citybrain_benches::{ch4_messages, ch4_readings};
use citybrain_model::decode::decode_mine_reading;
use citybrain_model::time::format_event_time;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn decode(c: &mut Criterion) {
    let messages = ch4_messages(200, 10_000);
    let texts: Vec<Vec<u8>> = ch4_readings(200, 10_000)
        .into_iter()
        .map(|r| {
            format!(
                r#"{{"sensor":"{}","ts":"{}","metric":"ch4","value":{}}}"#,
                r.entity,
                format_event_time(r.time),
                r.value
            )
            .into_bytes()
        })
        .collect();
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
