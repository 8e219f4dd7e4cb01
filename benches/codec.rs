//! Criterion micro-benchmarks of the wire format: envelope encode/decode with
//! 100 B and 1 MB payloads, and splitting a stream of frames.

use actix_academy::{Body, ClientId, Envelope};
use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

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

fn frames(c: &mut Criterion) {
    let payload = envelope(100).encode().unwrap();
    let mut stream = BytesMut::new();
    let mut codec = LengthDelimitedCodec::builder().max_frame_length(64 << 20).new_codec();
    for _ in 0..1000 {
        codec.encode(payload.clone(), &mut stream).unwrap();
    }
    let mut group = c.benchmark_group("frames");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("split 1000 frames of 100B", |b| {
        b.iter_batched(
            || stream.clone(),
            |mut buf| {
                let mut codec = LengthDelimitedCodec::builder().max_frame_length(64 << 20).new_codec();
                let mut n = 0;
                while let Some(frame) = codec.decode(&mut buf).unwrap() {
                    n += frame.len();
                }
                n
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, codec, frames);
criterion_main!(benches);
