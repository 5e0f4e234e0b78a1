//! [`TestCollection`]: one collection of a scenario seen through one client,
//! with the steps scenarios repeat (fill it batch by batch, search it and
//! check the answer against the oracle) as single calls.

use std::collections::HashSet;

use mishards::wire::{CollectionName, TopKQueryResult};

use super::calls::{
    assert_status_ok, create_partition, delete_ids, flush, grpc_ok, insert, route, search,
    search_code, search_param, Client, Route,
};
use super::oracle::{check_against_oracle, Rows, Vector, VectorSource, HAMMING};

/// A collection that exists, the client to reach it through, and how to
/// label its checks (e.g. "sqlite reborn").
#[derive(Clone)]
pub struct TestCollection {
    pub client: Client,
    pub name: String,
    pub dim: usize,
    pub metric: i32,
    label: String,
}

impl TestCollection {
    /// A handle on an existing collection.
    pub fn new(client: Client, run: &str, name: &str, dim: usize, metric: i32) -> Self {
        TestCollection {
            client,
            name: name.to_string(),
            dim,
            metric,
            label: format!("{run} {name}"),
        }
    }

    /// The same collection through another client (another server).
    pub fn through(&self, client: Client) -> Self {
        TestCollection {
            client,
            ..self.clone()
        }
    }

    /// `n` random vectors of this collection's kind: bits for HAMMING, else floats.
    pub fn vectors(&self, source: &mut VectorSource, n: usize) -> Vec<Vector> {
        if self.metric == HAMMING {
            source.bits(n, self.dim)
        } else {
            source.floats(n, self.dim)
        }
    }

    pub async fn create_partition(&mut self, tag: &str) {
        create_partition(&mut self.client, &self.name, tag).await;
    }

    /// Inserts `vectors` into partition `tag` ("" for the default one) with auto ids.
    pub async fn insert(&mut self, tag: &str, vectors: &[Vector]) -> Vec<i64> {
        insert(&mut self.client, &self.name, tag, vectors).await
    }

    pub async fn flush(&mut self) {
        flush(&mut self.client, &self.name).await;
    }

    /// Inserts `rows` new vectors into the default partition and flushes:
    /// one more segment file. Returns the rows it added.
    pub async fn add_file(&mut self, source: &mut VectorSource, rows: usize) -> Rows {
        let vectors = self.vectors(source, rows);
        let ids = self.insert("", &vectors).await;
        self.flush().await;
        let mut added = Rows::default();
        added.add(&ids, &vectors);
        added
    }

    /// `batches` x [`add_file`](Self::add_file): `batches` files of `rows` rows.
    pub async fn fill(&mut self, source: &mut VectorSource, batches: usize, rows: usize) -> Rows {
        let mut known = Rows::default();
        for _ in 0..batches {
            known.extend(self.add_file(source, rows).await);
        }
        known
    }

    /// Deletes `ids` and flushes.
    pub async fn delete(&mut self, ids: &HashSet<i64>) {
        delete_ids(&mut self.client, &self.name, ids).await;
    }

    pub async fn drop_collection(&mut self) {
        let status = grpc_ok(
            "DropCollection",
            self.client
                .drop_collection(CollectionName {
                    collection_name: self.name.clone(),
                })
                .await,
        );
        assert_status_ok(&format!("DropCollection {}", self.name), &status);
    }

    /// A search of the partitions `tags` (all when empty) that must succeed.
    pub async fn search(
        &mut self,
        tags: &[&str],
        queries: &[Vector],
        topk: usize,
    ) -> TopKQueryResult {
        search(&mut self.client, &self.name, tags, queries, topk as i64).await
    }

    /// The Milvus status code of a search with these `params` (JSON) that must
    /// fail with a status, not at the gRPC level.
    pub async fn search_code(
        &mut self,
        what: &str,
        tags: &[&str],
        queries: &[Vector],
        topk: usize,
        params: &str,
    ) -> i32 {
        let param = search_param(&self.name, tags, queries, topk as i64, params);
        search_code(what, self.client.search(param).await)
    }

    /// Checks `reply` against the oracle over `rows` (see [`check_against_oracle`]).
    pub fn check(
        &self,
        what: &str,
        reply: &TopKQueryResult,
        rows: &Rows,
        queries: &[Vector],
        topk: usize,
        expected_stride: Option<usize>,
    ) {
        let what = format!("{} {what}", self.label);
        check_against_oracle(
            &what,
            reply,
            self.metric,
            rows,
            queries,
            topk,
            expected_stride,
        );
    }

    /// Searches all partitions, and checks the reply is the oracle's top-k
    /// over `rows` with Milvus' stride `min(topk, rows)`.
    pub async fn expect_search(
        &mut self,
        what: &str,
        rows: &Rows,
        queries: &[Vector],
        topk: usize,
    ) -> TopKQueryResult {
        self.expect_search_in(what, &[], rows, queries, topk).await
    }

    /// [`expect_search`](Self::expect_search) over the partitions `tags`.
    pub async fn expect_search_in(
        &mut self,
        what: &str,
        tags: &[&str],
        rows: &Rows,
        queries: &[Vector],
        topk: usize,
    ) -> TopKQueryResult {
        let reply = self.search(tags, queries, topk).await;
        let what = format!("{what}, tags {tags:?}, topk {topk}");
        self.check(
            &what,
            &reply,
            rows,
            queries,
            topk,
            Some(topk.min(rows.len())),
        );
        reply
    }

    /// `Cmd("route <name>")`: where the proxy places this collection's files.
    pub async fn route(&mut self) -> Route {
        route(&mut self.client, &self.name).await
    }
}
