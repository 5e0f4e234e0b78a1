//! The insert scenario: insert MB/s through the proxy vs straight to the writer, and the proxy's peak RSS.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;

use super::{ratio, Bench, Mode};
use crate::bench::load::{self, check, connect, random_rows};
use crate::bench::report::{num, ScenarioReport};
use crate::bench::{procstat, progress};
use crate::wire::InsertParam;

impl Bench<'_> {
    pub(super) async fn insert(&mut self, ro: usize) -> anyhow::Result<ScenarioReport> {
        let (rows, dim) = (self.sizes.batch_rows, self.sizes.dim);
        // Its own proxy process, so its peak memory is the inserts' alone.
        let (proxy, direct, _own_proxy) = match &self.mode {
            Mode::Target { addr, direct } => (addr.clone(), direct.clone(), None),
            Mode::Embedded { .. } => {
                let cluster = self.real(ro).await?;
                let own = cluster.fresh_proxy(1, "proxy-insert").await?;
                (
                    own.addr.to_string(),
                    Some(cluster.writable.addr.to_string()),
                    Some(own),
                )
            }
        };
        let pid = _own_proxy.as_ref().map(|p| p.pid());
        let name = format!("bench_insert_{}", self.suffix);
        let mut via_proxy = self.create_collection(&proxy, &name).await?;
        let mut via_direct = match &direct {
            Some(d) => Some(connect(d)?),
            None => None,
        };
        let batch = InsertParam {
            collection_name: name.clone(),
            row_record_array: random_rows(&mut self.rng, rows, dim),
            row_id_array: Vec::new(),
            partition_tag: String::new(),
            extra_params: Vec::new(),
        };
        let batch_bytes = (rows * dim * 4) as f64;
        let rss_before = pid.and_then(procstat::peak_rss);
        let mut proxy_times = load::Latencies::default();
        let mut direct_times = load::Latencies::default();
        let (mut proxy_total, mut direct_total) = (Duration::ZERO, Duration::ZERO);
        let started = Instant::now();
        for round in 0..self.sizes.insert_rounds {
            if round > 0 && started.elapsed() > self.sizes.duration * 4 {
                break;
            }
            progress(format!(
                "insert round {}/{}: {rows} x {dim}",
                round + 1,
                self.sizes.insert_rounds
            ));
            for k in 0..2 {
                let to_proxy = (round + k) % 2 == 0;
                let client = match (to_proxy, via_direct.as_mut()) {
                    (true, _) => &mut via_proxy,
                    (false, Some(d)) => d,
                    (false, None) => continue,
                };
                let t0 = Instant::now();
                let reply = client
                    .insert(batch.clone())
                    .await
                    .context("Insert")?
                    .into_inner();
                let took = t0.elapsed();
                check(reply.status.as_ref(), "Insert")?;
                if reply.vector_id_array.len() != rows {
                    bail!(
                        "Insert returned {} ids for {rows} rows",
                        reply.vector_id_array.len()
                    );
                }
                if to_proxy {
                    proxy_times.record(took);
                    proxy_total += took;
                } else {
                    direct_times.record(took);
                    direct_total += took;
                }
            }
        }
        let rss_after = pid.and_then(procstat::peak_rss);
        let mb_s = |total: Duration, n: usize| {
            (n > 0 && total > Duration::ZERO)
                .then(|| batch_bytes * n as f64 / 1e6 / total.as_secs_f64())
        };
        let proxy_mb_s = mb_s(proxy_total, proxy_times.count());
        let direct_mb_s = mb_s(direct_total, direct_times.count());
        let mut table = ScenarioReport::new(
            "insert",
            "Insert through the proxy vs straight to the writable node",
            &[
                "rows_per_batch",
                "batch_mb",
                "batches_per_path",
                "direct_median_ms",
                "proxy_median_ms",
                "direct_mb_per_s",
                "proxy_mb_per_s",
                "proxy_over_direct",
                "proxy_rss_at_start_mb",
                "proxy_peak_rss_mb",
                "peak_rss_over_batch",
            ],
        );
        table.setup = format!(
            "{rows} x {dim} floats per `Insert` ({:.1} MB of vectors), alternating between the \
             two paths; MB/s = vector bytes / time of the calls. The proxy is a fresh process, so \
             its peak RSS (VmHWM) covers only its start and these inserts.",
            batch_bytes / 1e6
        );
        let mb = |b: Option<u64>| b.map(|b| b as f64 / 1e6);
        table.row(vec![
            json!(rows),
            num(Some(batch_bytes / 1e6)),
            json!(proxy_times.count()),
            num(direct_times.median_ms()),
            num(proxy_times.median_ms()),
            num(direct_mb_s),
            num(proxy_mb_s),
            num(ratio(proxy_mb_s, direct_mb_s)),
            num(mb(rss_before)),
            num(mb(rss_after)),
            num(rss_after.map(|r| r as f64 / batch_bytes)),
        ]);
        Ok(table)
    }
}
