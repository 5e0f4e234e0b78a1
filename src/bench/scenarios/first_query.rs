//! The first-query scenario: the first search after a flush vs the steady state, batch after batch, per storage.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use super::{flush, insert, ratio, Bench, Mode};
use crate::bench::load::{self, random_rows, Client};
use crate::bench::report::{num, ScenarioReport};
use crate::bench::{progress, storages, Storage};
use crate::wire::RowRecord;

/// One storage's side of the first-query scenario.
struct FirstQueryRun {
    label: &'static str,
    client: Client,
    name: String,
    penalties: load::Latencies,
    /// first_ms and steady_ms of every batch.
    firsts: load::Latencies,
    steadies: load::Latencies,
}

impl Bench<'_> {
    pub(super) async fn first_query(&mut self, ro: usize) -> anyhow::Result<ScenarioReport> {
        let (rows, dim, batches) = (self.sizes.batch_rows, self.sizes.dim, self.sizes.batches);
        let sides: Vec<(&'static str, Storage)> = match self.mode {
            Mode::Target { .. } => vec![("target", Storage::Local)],
            Mode::Embedded { .. } => storages(self.args)
                .into_iter()
                .map(|s| (s.name(), s))
                .collect(),
        };
        let mut runs = Vec::new();
        for (label, storage) in sides {
            let (proxy, _, _) = self.endpoints_on(storage, ro, self.sizes.ro_nodes).await?;
            let name = format!("bench_firstq_{label}_{}", self.suffix);
            let client = self.create_collection(&proxy, &name).await?;
            runs.push(FirstQueryRun {
                label,
                client,
                name,
                penalties: load::Latencies::default(),
                firsts: load::Latencies::default(),
                steadies: load::Latencies::default(),
            });
        }
        let mut table = ScenarioReport::new(
            "first-query",
            "First search after a flush vs the steady state",
            &[
                "batch",
                "storage",
                "total_rows",
                "first_ms",
                "steady_ms",
                "penalty_ms",
                "first_saw_new_rows",
            ],
        );
        table.setup = format!(
            "Each batch: `Insert` {rows} x {dim} rows and `Flush` through the proxy, then time \
             the first nq=1, topk=10 search (its query is a vector of the new batch, so it must \
             find it: `first_saw_new_rows`), then the median of the next {} (`steady_ms`). \
             penalty = first - steady.{}",
            self.sizes.steady_searches,
            self.first_query_storages(&runs)
        );
        for b in 1..=batches {
            let vectors = random_rows(&mut self.rng, rows, dim);
            let mut measured = vec![None; runs.len()];
            // Same vectors on every storage; the order rotates batch by batch.
            for k in 0..runs.len() {
                let i = (b - 1 + k) % runs.len();
                let run = &mut runs[i];
                progress(format!(
                    "first-query batch {b}/{batches} on {}: {rows} x {dim}",
                    run.label
                ));
                measured[i] = Some(
                    first_query_batch(run, &vectors, self.sizes.steady_searches)
                        .await
                        .with_context(|| format!("batch {b} on {}", run.label))?,
                );
            }
            for (run, m) in runs.iter_mut().zip(measured) {
                let Some((first_ms, steady_ms, saw)) = m else {
                    continue;
                };
                let penalty = steady_ms.map(|s| first_ms - s);
                run.firsts.record(Duration::from_secs_f64(first_ms / 1e3));
                if let Some(s) = steady_ms {
                    run.steadies.record(Duration::from_secs_f64(s / 1e3));
                }
                if let Some(p) = penalty {
                    run.penalties
                        .record(Duration::from_secs_f64(p.max(0.0) / 1e3));
                }
                table.row(vec![
                    json!(b),
                    json!(run.label),
                    json!(b * rows),
                    num(Some(first_ms)),
                    num(steady_ms),
                    num(penalty),
                    json!(if saw { "yes" } else { "no" }),
                ]);
            }
        }
        let mut medians: Vec<(&str, Option<f64>)> = Vec::new();
        for r in &mut runs {
            let median = r.penalties.median_ms();
            medians.push((r.label, median));
            if let Some(median) = median {
                table.notes.push(format!(
                    "Median penalty over the {batches} batches, {}: {median:.2} ms (negative \
                     ones counted as 0); median first_ms {}, median steady_ms {}.",
                    r.label,
                    r.firsts
                        .median_ms()
                        .map_or("n/a".into(), |m| format!("{m:.2}")),
                    r.steadies
                        .median_ms()
                        .map_or("n/a".into(), |m| format!("{m:.2}")),
                ));
            }
        }
        let median_of = |name: &str| medians.iter().find(|(l, _)| *l == name).and_then(|m| m.1);
        if let (Some(local), Some(juicefs)) = (median_of("local"), median_of("juicefs")) {
            table.notes.push(match ratio(Some(juicefs), Some(local)) {
                Some(r) => format!(
                    "Median penalty juicefs / local: {r:.2} ({juicefs:.2} ms / {local:.2} ms)."
                ),
                None => format!(
                    "Median penalty juicefs / local: n/a (local is 0 ms; juicefs {juicefs:.2} ms)."
                ),
            });
        }
        Ok(table)
    }

    /// The sentence on where each first-query run keeps its data.
    fn first_query_storages(&self, runs: &[FirstQueryRun]) -> String {
        if matches!(self.mode, Mode::Target { .. }) {
            return String::new();
        }
        let mut out = String::new();
        if runs.len() > 1 {
            out.push_str(&format!(
                " One cluster per storage ({}), started together; every batch inserts the same \
                 vectors into each, one after the other, the order alternating batch by batch.",
                runs.iter().map(|r| r.label).collect::<Vec<_>>().join(", ")
            ));
        }
        for r in runs {
            match r.label {
                "local" => out.push_str(
                    " local: every node's data directory is one local temporary directory.",
                ),
                "juicefs" => out.push_str(&format!(
                    " juicefs: one JuiceFS volume (metadata in Redis {}, data in a `file` bucket \
                     on the local disk), each node on its own mount: its own client and cache \
                     directory, cache options at their defaults.",
                    self.juicefs
                        .as_ref()
                        .map_or_else(|| "?".to_string(), |j| j.meta.url())
                )),
                _ => {}
            }
        }
        if runs.iter().any(|r| r.label == "juicefs") {
            out.push_str(&format!(
                " The clusters' metadata is {} either way.",
                if self.args.meta_uri == "sqlite" {
                    "a SQLite file in a local temporary directory"
                } else {
                    "a MySQL database"
                }
            ));
        }
        out
    }
}

/// One first-query batch on one storage: insert and flush `vectors`, then
/// the first search (ms, and whether it found the new row) and the median
/// of the next `steady` (ms).
async fn first_query_batch(
    run: &mut FirstQueryRun,
    vectors: &[RowRecord],
    steady: usize,
) -> anyhow::Result<(f64, Option<f64>, bool)> {
    let ids = insert(&mut run.client, &run.name, vectors.to_vec()).await?;
    flush(&mut run.client, &run.name).await?;
    let search = |k: usize| {
        let query = vectors[k % vectors.len()].clone();
        let expected = ids.get(k % ids.len()).copied();
        let param = crate::wire::SearchParam {
            collection_name: run.name.clone(),
            partition_tag_array: Vec::new(),
            query_record_array: vec![query],
            topk: 10,
            extra_params: Vec::new(),
        };
        let mut client = run.client.clone();
        async move {
            let t0 = Instant::now();
            let reply = load::send(&mut client, &load::Call::Search(param)).await?;
            anyhow::Ok((t0.elapsed(), reply.ids.first().copied() == expected))
        }
    };
    let (first, saw) = search(0).await?;
    let mut times = load::Latencies::default();
    for k in 1..=steady {
        times.record(search(k * 7919).await?.0);
    }
    Ok((first.as_secs_f64() * 1e3, times.median_ms(), saw))
}
