//! Criterion micro-benchmarks of the wire format: envelope encode/decode with
//! 100 B and 1 MB payloads (the payload is carried, not re-encoded).

use actix_academy::wire::{Body, Envelope};
use actix_academy::ClientId;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;

fn envelope(size: usize) -> Envelope {
    let body = Body::ActionRequest { action: "Echo".into(), args: vec![0x5a; size].into() };
    Envelope::new(ClientId::new(Some("a")).into(), ClientId::new(Some("b")).into(), body)
}

fn codec(c: &mut Criterion) {
    for (name, size) in [("100B", 100), ("1MB", 1 << 20)] {
        let env = envelope(size);
        let bytes = env.encode().unwrap();
        let mut group = c.benchmark_group(format!("envelope/{name}"));
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function("encode", |b| b.iter(|| black_box(&env).encode().unwrap()));
        group.bench_function("decode", |b| b.iter(|| Envelope::decode(black_box(&bytes)).unwrap()));
        group.finish();
    }
}

criterion_group!(benches, codec);
criterion_main!(benches);
