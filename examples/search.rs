//! A Rust client of mishards (or of any Milvus 1.1 server) with the crate's
//! generated gRPC client, `mishards::wire`:
//!
//! ```sh
//! cargo run --release -- demo &            # or any running mishards
//! cargo run --example search -- 127.0.0.1:19530
//! ```
//!
//! It creates the collection `mishards_example` (dropping an old one), inserts
//! two batches of 500 vectors with a flush after each (two segment files),
//! searches three of them back (each must find itself first, at distance 0),
//! asks mishards where the files are searched (`Cmd("route ...")`), and drops
//! the collection. The integration tests run [`run`] against an in-process
//! cluster, so this example cannot rot.
#![allow(dead_code)] // the tests include this file as a module and call `run` only

use std::time::Duration;

use anyhow::bail;
use mishards::wire::{
    CollectionName, CollectionSchema, Command, FlushParam, InsertParam, KeyValuePair, RowRecord,
    SearchParam, Status,
};

/// The collection the example owns (dropped first if it exists).
pub const COLLECTION: &str = "mishards_example";
const DIMENSION: usize = 16;
const BATCH: usize = 500;
const TOPK: i64 = 5;

/// What the example saw.
#[derive(Debug)]
pub struct Outcome {
    /// Rows inserted.
    pub rows: usize,
    /// For each query: its own id, then the (id, distance) hits.
    pub hits: Vec<(i64, Vec<(i64, f32)>)>,
    /// The answer of `Cmd("route mishards_example")` (JSON from mishards).
    pub route: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:19530".to_string());
    let outcome = run(&addr).await?;
    println!("inserted {} rows into {COLLECTION}", outcome.rows);
    for (query, hits) in &outcome.hits {
        let hits: Vec<String> = hits
            .iter()
            .map(|(id, d)| format!("{id} ({d:.3})"))
            .collect();
        println!("query {query}: {}", hits.join(", "));
    }
    println!("route: {}", outcome.route);
    Ok(())
}

/// Runs the example against the Milvus API at `addr` ("host:port").
pub async fn run(addr: &str) -> anyhow::Result<Outcome> {
    let mut client = mishards::grpc::client(
        addr,
        Duration::from_secs(5),
        mishards::grpc::DEFAULT_MAX_MESSAGE_SIZE,
    )?;
    let name = || CollectionName {
        collection_name: COLLECTION.to_string(),
    };
    let exists = client.has_collection(name()).await?.into_inner();
    check(exists.status, "HasCollection")?;
    if exists.bool_reply {
        check(
            Some(client.drop_collection(name()).await?.into_inner()),
            "DropCollection",
        )?;
    }
    let schema = CollectionSchema {
        status: None,
        collection_name: COLLECTION.to_string(),
        dimension: DIMENSION as i64,
        index_file_size: 1024,
        metric_type: 1, // L2
        extra_params: vec![],
    };
    check(
        Some(client.create_collection(schema).await?.into_inner()),
        "CreateCollection",
    )?;

    let mut vectors = Vectors(42);
    let mut inserted: Vec<(i64, Vec<f32>)> = Vec::new();
    for _ in 0..2 {
        let rows: Vec<Vec<f32>> = (0..BATCH).map(|_| vectors.next(DIMENSION)).collect();
        let reply = client
            .insert(InsertParam {
                collection_name: COLLECTION.to_string(),
                row_record_array: rows.iter().map(|v| record(v)).collect(),
                row_id_array: vec![],
                partition_tag: String::new(),
                extra_params: vec![],
            })
            .await?
            .into_inner();
        check(reply.status, "Insert")?;
        if reply.vector_id_array.len() != rows.len() {
            bail!(
                "Insert: {} ids for {} rows",
                reply.vector_id_array.len(),
                rows.len()
            );
        }
        inserted.extend(reply.vector_id_array.into_iter().zip(rows));
        let flush = FlushParam {
            collection_name_array: vec![COLLECTION.to_string()],
        };
        check(Some(client.flush(flush).await?.into_inner()), "Flush")?;
    }

    let queries: Vec<&(i64, Vec<f32>)> = [7, BATCH + 3, 2 * BATCH - 1]
        .iter()
        .map(|i| &inserted[*i])
        .collect();
    let reply = client
        .search(SearchParam {
            collection_name: COLLECTION.to_string(),
            partition_tag_array: vec![],
            query_record_array: queries.iter().map(|(_, v)| record(v)).collect(),
            topk: TOPK,
            extra_params: vec![KeyValuePair {
                key: "params".to_string(),
                value: "{}".to_string(),
            }],
        })
        .await?
        .into_inner();
    check(reply.status, "Search")?;
    let per_query = reply.ids.len() / queries.len().max(1);
    let hits = queries
        .iter()
        .enumerate()
        .map(|(q, (id, _))| {
            let range = q * per_query..(q + 1) * per_query;
            let found = reply.ids[range.clone()]
                .iter()
                .copied()
                .zip(reply.distances[range].iter().copied())
                .collect();
            (*id, found)
        })
        .collect();

    let route = client
        .cmd(Command {
            cmd: format!("route {COLLECTION}"),
        })
        .await?
        .into_inner();
    check(route.status, "Cmd route")?;
    check(
        Some(client.drop_collection(name()).await?.into_inner()),
        "DropCollection",
    )?;
    Ok(Outcome {
        rows: inserted.len(),
        hits,
        route: route.string_reply,
    })
}

/// Fails with the Milvus status' reason unless it is SUCCESS.
fn check(status: Option<Status>, what: &str) -> anyhow::Result<()> {
    match status {
        Some(s) if s.error_code != 0 => bail!(
            "the Milvus API answered {what} with error {} ({})",
            s.error_code,
            s.reason
        ),
        _ => Ok(()),
    }
}

fn record(v: &[f32]) -> RowRecord {
    RowRecord {
        float_data: v.to_vec(),
        binary_data: Default::default(),
    }
}

/// Reproducible vectors in [0, 1) (a 64-bit LCG: the example needs no RNG crate).
struct Vectors(u64);

impl Vectors {
    fn next(&mut self, dim: usize) -> Vec<f32> {
        (0..dim)
            .map(|_| {
                self.0 = self
                    .0
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (self.0 >> 40) as f32 / (1u64 << 24) as f32
            })
            .collect()
    }
}
