//! Index builds through the engine: CreateIndex builds every big-enough
//! file (NEW_INDEX -> INDEX, raw -> BACKUP), searches use the index with the
//! request's nprobe/ef at a measured recall against the exact answer,
//! deleted rows stay hidden, ShowCollectionInfo names the index, and
//! DropIndex brings the raw files back (the cleanup removes only the index
//! file).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use super::{Engine, EngineOptions, Role};
use crate::meta::{MetaStore, MetaUri};
use crate::types::FileType;
use crate::wire::RowRecord;

const DIM: usize = 32;
const FILES: usize = 2;
const ROWS_PER_FILE: usize = 10_000;
const QUERIES: usize = 50;
const K: usize = 10;

struct Fixture {
    _dir: tempfile::TempDir,
    engine: Engine,
    rows: Vec<Vec<f32>>,
    ids: Vec<i64>,
    queries: Vec<RowRecord>,
}

fn record(v: &[f32]) -> RowRecord {
    RowRecord {
        float_data: v.to_vec(),
        binary_data: Default::default(),
    }
}

/// 20k × 32 uniform random vectors (L2) in two flushed files of 10k rows.
async fn fixture(name: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let uri = MetaUri::parse(
        &format!("sqlite://{}", dir.path().join("meta.sqlite").display()),
        None,
    )
    .unwrap();
    let meta = MetaStore::connect(&uri, 4).await.unwrap();
    let engine = Engine::new(
        EngineOptions {
            role: Role::Writable,
            data_dir: dir.path().to_path_buf(),
            cleanup_delay: Duration::ZERO,
            cache_bytes: 1 << 30,
        },
        meta,
    );
    engine
        .create_collection(name, DIM as i64, 1024, 1)
        .await
        .unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut random = |n: usize| -> Vec<Vec<f32>> {
        (0..n)
            .map(|_| (0..DIM).map(|_| rng.random::<f32>()).collect())
            .collect()
    };
    let rows = random(FILES * ROWS_PER_FILE);
    let queries: Vec<RowRecord> = random(QUERIES).iter().map(|q| record(q)).collect();
    let mut ids = Vec::new();
    for file in rows.chunks(ROWS_PER_FILE) {
        for batch in file.chunks(5000) {
            let records: Vec<RowRecord> = batch.iter().map(|v| record(v)).collect();
            ids.extend(engine.insert(name, &records, &[], "").await.unwrap());
        }
        engine.flush(&[name.to_string()]).await.unwrap();
    }
    Fixture {
        _dir: dir,
        engine,
        rows,
        ids,
        queries,
    }
}

impl Fixture {
    /// The exact top-K ids of every query (brute force), skipping `deleted`.
    fn truth(&self, deleted: &HashSet<i64>) -> Vec<Vec<i64>> {
        self.queries
            .iter()
            .map(|q| {
                let mut all: Vec<(f32, i64)> = self
                    .rows
                    .iter()
                    .zip(&self.ids)
                    .filter(|(_, id)| !deleted.contains(id))
                    .map(|(v, id)| {
                        let d = v
                            .iter()
                            .zip(&q.float_data)
                            .map(|(a, b)| (a - b) * (a - b))
                            .sum::<f32>();
                        (d, *id)
                    })
                    .collect();
                all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                all.iter().take(K).map(|(_, id)| *id).collect()
            })
            .collect()
    }

    async fn recall(&self, name: &str, params: Value, truth: &[Vec<i64>]) -> f64 {
        let hits = self
            .engine
            .search(name, &[], &self.queries, K as i64, &params)
            .await
            .unwrap();
        assert_eq!(hits.nq, QUERIES);
        let mut found = 0;
        for (q, expected) in truth.iter().enumerate() {
            let row = &hits.ids[q * hits.stride..(q + 1) * hits.stride];
            let unique: HashSet<_> = row.iter().filter(|id| **id >= 0).collect();
            assert_eq!(unique.len(), row.iter().filter(|id| **id >= 0).count());
            found += expected.iter().filter(|id| row.contains(id)).count();
        }
        found as f64 / (QUERIES * K) as f64
    }

    async fn file_types(&self, name: &str) -> Vec<FileType> {
        let mut types: Vec<FileType> = self
            .engine
            .meta
            .files_of(
                &[name.to_string()],
                &[
                    FileType::Raw,
                    FileType::Index,
                    FileType::Backup,
                    FileType::NewIndex,
                ],
            )
            .await
            .unwrap()
            .iter()
            .filter_map(|f| f.kind())
            .collect();
        types.sort_by_key(|t| *t as i32);
        types
    }

    async fn index_names(&self, name: &str) -> Vec<String> {
        let info: Value =
            serde_json::from_str(&self.engine.collection_info(name).await.unwrap()).unwrap();
        info["partitions"][0]["segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["index_name"].as_str().unwrap().to_string())
            .collect()
    }
}

/// Builds `index_type` with `build` params, checks recall@10 at `search`
/// params against `floor`, then deletes and drops the index.
async fn check_index(index_type: i32, build: Value, search: Value, name_shown: &str, floor: f64) {
    let name = format!("recall_{index_type}");
    let f = fixture(&name).await;
    let started = Instant::now();
    f.engine
        .create_index(&name, index_type, build.clone())
        .await
        .unwrap();
    let build_time = started.elapsed();
    assert_eq!(
        f.file_types(&name).await,
        vec![
            FileType::Index,
            FileType::Index,
            FileType::Backup,
            FileType::Backup
        ]
    );
    assert_eq!(f.index_names(&name).await, vec![name_shown; FILES]);
    assert_eq!(f.engine.count(&name).await.unwrap(), 20_000);

    let truth = f.truth(&HashSet::new());
    let r = f.recall(&name, search.clone(), &truth).await;
    eprintln!(
        "{name_shown} {build} {search}: recall@10 {r:.3} (floor {floor}), build {build_time:.1?}"
    );
    assert!(r >= floor, "{name_shown} recall@10 {r} < {floor}");

    // Deleted rows are never returned by an INDEX file.
    let deleted: HashSet<i64> = truth.iter().map(|t| t[0]).collect();
    let gone: Vec<i64> = deleted.iter().copied().collect();
    f.engine.delete_by_id(&name, &gone, "").await.unwrap();
    let hits = f
        .engine
        .search(&name, &[], &f.queries, K as i64, &search)
        .await
        .unwrap();
    assert!(hits.ids.iter().all(|id| !deleted.contains(id)));
    let r = f.recall(&name, search, &f.truth(&deleted)).await;
    assert!(
        r >= floor - 0.05,
        "{name_shown} recall@10 after deletes {r}"
    );

    // DropIndex: raw files again (with the deletes), exact search, IDMAP.
    f.engine.drop_index(&name).await.unwrap();
    assert_eq!(f.file_types(&name).await, vec![FileType::Raw; FILES]);
    assert_eq!(f.index_names(&name).await, vec!["IDMAP"; FILES]);
    assert_eq!(
        f.engine.count(&name).await.unwrap(),
        20_000 - deleted.len() as i64
    );
    let exact = f.recall(&name, json!({}), &f.truth(&deleted)).await;
    assert_eq!(exact, 1.0);
    // The cleanup removes the index files but keeps the segments.
    assert_eq!(f.engine.cleanup().await.unwrap(), FILES);
    let exact = f.recall(&name, json!({}), &f.truth(&deleted)).await;
    assert_eq!(exact, 1.0);
    let idx_files = walk_count(f._dir.path(), "idx");
    assert_eq!(idx_files, 0);
}

fn walk_count(dir: &std::path::Path, ext: &str) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            n += walk_count(&p, ext);
        } else if p.extension().is_some_and(|x| x == ext) {
            n += 1;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ivf_flat_builds_searches_and_drops() {
    check_index(
        2,
        json!({"nlist": 128}),
        json!({"nprobe": 16}),
        "IVFFLAT",
        0.6,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ivf_sq8_builds_searches_and_drops() {
    check_index(
        3,
        json!({"nlist": 128}),
        json!({"nprobe": 16}),
        "IVFSQ8",
        0.55,
    )
    .await;
}

/// efConstruction 40 keeps the debug build short (efConstruction 200 took
/// 5 min in debug on a loaded 2-core machine, for recall@10 0.976 at ef 64).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hnsw_builds_searches_and_drops() {
    check_index(
        11,
        json!({"M": 16, "efConstruction": 40}),
        json!({"ef": 64}),
        "HNSW",
        0.8,
    )
    .await;
}

/// Index types Milvus accepts but we do not build keep their files raw, are
/// searched exactly, and are reported as IDMAP segments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbuilt_types_stay_raw_and_exact() {
    let name = "unbuilt";
    let f = fixture(name).await;
    f.engine
        .create_index(name, 6, json!({"nlist": 64, "m": 8}))
        .await
        .unwrap();
    assert_eq!(f.file_types(name).await, vec![FileType::Raw; FILES]);
    assert_eq!(f.index_names(name).await, vec!["IDMAP"; FILES]);
    let truth = f.truth(&HashSet::new());
    assert_eq!(f.recall(name, json!({"nprobe": 8}), &truth).await, 1.0);
    // Switching to a built type builds; switching params rebuilds.
    f.engine
        .create_index(name, 2, json!({"nlist": 64}))
        .await
        .unwrap();
    assert_eq!(f.index_names(name).await, vec!["IVFFLAT"; FILES]);
    f.engine
        .create_index(name, 3, json!({"nlist": 32}))
        .await
        .unwrap();
    assert_eq!(f.index_names(name).await, vec!["IVFSQ8"; FILES]);
    // Two dropped index generations, both of the same segments.
    assert_eq!(
        f.file_types(name).await,
        vec![
            FileType::Index,
            FileType::Index,
            FileType::Backup,
            FileType::Backup
        ]
    );
    assert!(f.recall(name, json!({"nprobe": 32}), &truth).await >= 0.9);
}
