//! Micro-benchmarks of the proxy's pure per-search work (criterion):
//!
//! * `merge`: nq=1000, topk=100 over 8 partial lists (what 8 nodes answer),
//!   on decoded vectors (`merge`) and straight from the nodes' encoded
//!   replies into the encoded reply (`merge_encoded`, what the search path
//!   runs), each including what its path does around it: decoding and
//!   encoding the wire messages, or parsing the encoded replies;
//! * `route_plan`: placing 10 000 files on 8 nodes, from scratch (`route::plan`,
//!   every file hashed onto the ring) and from the per-snapshot placement the
//!   search path reuses (`ring::Placement`), with every node up and one down;
//! * `snapshot_build`: grouping 10 000 file rows of 10 collections into a
//!   topology snapshot (what a metadata refresh costs the proxy).
//!
//! Run with `cargo bench --bench fast_path`; under `cargo test --benches`
//! each case runs once as a smoke test.
#![allow(clippy::unwrap_used)] // benches unwrap their own fixtures

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use mishards::merge::{merge, merge_encoded, EncodedHits, TopKHits};
use mishards::meta::{CollectionRow, FileRow};
use mishards::proxy::route;
use mishards::ring::{Placement, Ring};
use mishards::topology::Snapshot;
use mishards::types::Order;
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const FILES: i64 = 10_000;

/// One node's answer: `nq` rows of `topk` ascending distances, disjoint ids.
fn partial(rng: &mut StdRng, part: i64, nq: usize, topk: usize) -> TopKHits {
    let mut ids = Vec::with_capacity(nq * topk);
    let mut distances = Vec::with_capacity(nq * topk);
    for q in 0..nq {
        let mut row: Vec<f32> = (0..topk).map(|_| rng.random_range(0.0..100.0)).collect();
        row.sort_by(f32::total_cmp);
        distances.extend(row);
        ids.extend((0..topk).map(|k| part * 1_000_000_000 + (q * topk + k) as i64));
    }
    TopKHits {
        nq,
        stride: topk,
        ids,
        distances,
    }
}

fn merge_8_lists(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(7);
    let parts: Vec<TopKHits> = (0..8).map(|p| partial(&mut rng, p, 1000, 100)).collect();
    c.bench_function("merge/nq1000_topk100_8_lists", |b| {
        b.iter_batched(
            || parts.clone(),
            |parts| black_box(merge(parts, 100, Order::Ascending).unwrap()),
            BatchSize::LargeInput,
        )
    });
}

/// The merge as each path runs it, from the nodes' reply bytes to the reply's bytes.
fn merge_paths_8_lists(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(7);
    let replies: Vec<Bytes> = (0..8)
        .map(|p| Bytes::from(partial(&mut rng, p, 1000, 100).into_wire().encode_to_vec()))
        .collect();
    c.bench_function("merge/decoded_nq1000_topk100_8_lists", |b| {
        b.iter(|| {
            let parts: Vec<TopKHits> = replies
                .iter()
                .map(|r| {
                    let wire = mishards::wire::TopKQueryResult::decode(r.clone()).unwrap();
                    TopKHits::from_wire(wire).unwrap()
                })
                .collect();
            let merged = merge(parts, 100, Order::Ascending).unwrap();
            black_box(merged.into_wire().encode_to_vec())
        })
    });
    c.bench_function("merge/encoded_nq1000_topk100_8_lists", |b| {
        b.iter(|| {
            let parts: Vec<EncodedHits> = replies
                .iter()
                .map(|r| EncodedHits::parse(r.clone()).unwrap())
                .collect();
            black_box(merge_encoded(&parts, 100, Order::Ascending).unwrap())
        })
    });
}

fn nodes(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("10.0.0.{i}:19530")).collect()
}

fn route_plan_10k_files(c: &mut Criterion) {
    let ring = Ring::new(&nodes(8), mishards::ring::DEFAULT_VIRTUAL_NODES);
    let files: Vec<(i64, i64)> = (1..=FILES).map(|id| (id, 100)).collect();
    c.bench_function("route_plan/10k_files_8_nodes/from_scratch", |b| {
        b.iter(|| black_box(route::plan(&ring, &files, |_| true).unwrap()))
    });
    let ids: Vec<i64> = files.iter().map(|(id, _)| *id).collect();
    let placement = Placement::new(&ring, &ids);
    let all_up = vec![true; 8];
    c.bench_function("route_plan/10k_files_8_nodes/placed_once_all_up", |b| {
        b.iter(|| black_box(placement.assign(&ring, &all_up).unwrap()))
    });
    let one_down: Vec<bool> = (0..8).map(|i| i != 3).collect();
    c.bench_function("route_plan/10k_files_8_nodes/placed_once_one_down", |b| {
        b.iter(|| black_box(placement.assign(&ring, &one_down).unwrap()))
    });
    c.bench_function("route_plan/10k_files_8_nodes/placement_build", |b| {
        b.iter(|| black_box(Placement::new(&ring, &ids)))
    });
}

fn collection(id: i64, name: &str) -> CollectionRow {
    CollectionRow {
        id,
        table_id: name.into(),
        state: 0,
        dimension: 128,
        created_on: 0,
        flag: 0,
        index_file_size: 1 << 30,
        engine_type: 1,
        index_params: "{}".into(),
        metric_type: 1,
        owner_table: String::new(),
        partition_tag: String::new(),
        version: String::new(),
        flush_lsn: 0,
    }
}

fn file(id: i64, table: &str) -> FileRow {
    FileRow {
        id,
        table_id: table.into(),
        segment_id: id.to_string(),
        engine_type: 1,
        file_id: id.to_string(),
        file_type: 1,
        file_size: 1 << 20,
        row_count: 1000,
        updated_time: 0,
        created_on: 0,
        date: 0,
        flush_lsn: 0,
    }
}

fn snapshot_build_10k_files(c: &mut Criterion) {
    let names: Vec<String> = (0..10).map(|i| format!("collection_{i}")).collect();
    let tables: Vec<CollectionRow> = names
        .iter()
        .enumerate()
        .map(|(i, n)| collection(i as i64, n))
        .collect();
    let files: Vec<FileRow> = (1..=FILES)
        .map(|id| file(id, &names[(id % 10) as usize]))
        .collect();
    c.bench_function("snapshot_build/10k_files_10_collections", |b| {
        b.iter_batched(
            || (tables.clone(), files.clone()),
            |(tables, files)| black_box(Snapshot::build(tables, files)),
            BatchSize::LargeInput,
        )
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = merge_8_lists, merge_paths_8_lists, route_plan_10k_files, snapshot_build_10k_files
}
criterion_main!(benches);
