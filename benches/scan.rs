//! Throughput of the exact segment scan (`mishards::node::scan::search_segment`):
//! float L2 / IP over 100k × 128 rows with 1 and 16 queries, Hamming over
//! 100k × 512-bit rows; top-10. Throughput counts rows × dim × nq elements.
//! And the first search of a freshly written 100k × 128 segment (load, then
//! one nq=1 scan), loading it as the node does (`read_segment`: memory-mapped)
//! beside reading and copying the same file (how the node loaded before).
#![allow(clippy::unwrap_used)] // tests and benches unwrap their own fixtures

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mishards::node::scan::{search_segment, QueriesRef, VectorsRef};
use mishards::types::MetricType;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::hint::black_box;

const ROWS: usize = 100_000;
const TOPK: usize = 10;

fn float_scan(c: &mut Criterion) {
    let dim = 128;
    let mut rng = StdRng::seed_from_u64(1);
    let data: Vec<f32> = (0..ROWS * dim)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let ids: Vec<i64> = (0..ROWS as i64).collect();
    let mut group = c.benchmark_group("float_100k_x128_top10");
    group.sample_size(10);
    for metric in [MetricType::L2, MetricType::Ip] {
        for nq in [1usize, 16] {
            let queries: Vec<f32> = (0..nq * dim).map(|_| rng.random_range(-1.0..1.0)).collect();
            group.throughput(Throughput::Elements((ROWS * dim * nq) as u64));
            group.bench_with_input(
                BenchmarkId::new(metric.name(), format!("nq{nq}")),
                &queries,
                |b, queries| {
                    b.iter(|| {
                        search_segment(
                            metric,
                            VectorsRef::Float { dim, data: &data },
                            &ids,
                            |_| false,
                            QueriesRef::Float { dim, data: queries },
                            TOPK,
                        )
                        .map(|hits| black_box(hits.ids.len()))
                    })
                },
            );
        }
    }
    group.finish();
}

fn binary_scan(c: &mut Criterion) {
    let dim_bits = 512;
    let bytes = dim_bits / 8;
    let mut rng = StdRng::seed_from_u64(2);
    let data: Vec<u8> = (0..ROWS * bytes).map(|_| rng.random()).collect();
    let ids: Vec<i64> = (0..ROWS as i64).collect();
    let mut group = c.benchmark_group("binary_100k_x512bit_top10");
    group.sample_size(10);
    for nq in [1usize, 16] {
        let queries: Vec<u8> = (0..nq * bytes).map(|_| rng.random()).collect();
        group.throughput(Throughput::Elements((ROWS * dim_bits * nq) as u64));
        group.bench_with_input(
            BenchmarkId::new("HAMMING", format!("nq{nq}")),
            &queries,
            |b, queries| {
                b.iter(|| {
                    search_segment(
                        MetricType::Hamming,
                        VectorsRef::Binary {
                            dim_bits,
                            data: &data,
                        },
                        &ids,
                        |_| false,
                        QueriesRef::Binary {
                            dim_bits,
                            data: queries,
                        },
                        TOPK,
                    )
                    .map(|hits| black_box(hits.ids.len()))
                })
            },
        );
    }
    group.finish();
}

/// The pre-mmap loader: read the whole `.rv` file and decode its floats.
fn read_and_copy(path: &std::path::Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    bytes[mishards::node::segment::HEADER_LEN..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn first_search(c: &mut Criterion) {
    use mishards::node::segment::{read_segment, segment_dir, write_segment, SegmentVectors};
    let dim = 128;
    let mut rng = StdRng::seed_from_u64(3);
    let data: Vec<f32> = (0..ROWS * dim)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let ids: Vec<i64> = (0..ROWS as i64).collect();
    let root = tempfile::tempdir().unwrap();
    let dir = segment_dir(root.path(), "bench", "1");
    let vectors = SegmentVectors::Float {
        dim,
        data: data.into(),
    };
    write_segment(&dir, "1", &vectors, &ids).unwrap();
    let query: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect();
    let scan = |data: &[f32], ids: &[i64]| {
        search_segment(
            MetricType::L2,
            VectorsRef::Float { dim, data },
            ids,
            |_| false,
            QueriesRef::Float { dim, data: &query },
            TOPK,
        )
        .map(|hits| black_box(hits.ids.len()))
        .unwrap()
    };
    let mut group = c.benchmark_group("first_search_100k_x128");
    group.sample_size(20);
    group.bench_function("read_and_copy", |b| {
        b.iter(|| {
            let data = read_and_copy(&dir.join("1.rv"));
            let ids: Vec<i64> = std::fs::read(dir.join("1.uid")).unwrap()
                [mishards::node::segment::HEADER_LEN..]
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
                .collect();
            scan(&data, &ids)
        })
    });
    group.bench_function("mmap", |b| {
        b.iter(|| {
            let segment = read_segment(&dir, "1", ROWS).unwrap();
            let SegmentVectors::Float { data, .. } = &segment.vectors else {
                unreachable!()
            };
            scan(data, &segment.ids)
        })
    });
    group.finish();
}

criterion_group!(benches, float_scan, binary_scan, first_search);
criterion_main!(benches);
