//! The throughput scenario: search QPS through a proxy in front of 1, 2 and 3 read-only nodes.

use std::time::Duration;

use serde_json::json;

use super::{note_errors, Bench, Totals, ONE_BY_TEN, THROUGHPUT_RO};
use crate::bench::load::{self, Limits, SearchPath};
use crate::bench::progress;
use crate::bench::report::{num, ScenarioReport};

/// Each throughput configuration runs in this many slices, in rotating order.
const THROUGHPUT_SLICES: usize = 3;

impl Bench<'_> {
    pub(super) async fn throughput(&mut self, ro: usize) -> anyhow::Result<ScenarioReport> {
        let clients = self.sizes.clients;
        let mut table = ScenarioReport::new(
            "throughput",
            "Search throughput through the proxy by read-only node count",
            &[
                "ro_nodes",
                "clients",
                "searches",
                "qps",
                "p50_ms",
                "p99_ms",
                "proxy_cpu_us_per_search",
                "errors",
            ],
        );
        table.setup = format!(
            "nq=1, topk=10 over the latency scenario's {} rows in {} files; {clients} clients, \
             each with its own connection, through a proxy in front of the first 1, 2 or 3 \
             read-only nodes. Each configuration runs {} slices of {}, in rotating order.",
            self.sizes.rows,
            self.sizes.files,
            THROUGHPUT_SLICES,
            humantime::format_duration(slice_of(self.sizes.duration)),
        );
        let mut proxies = Vec::new();
        for n in THROUGHPUT_RO {
            let cluster = self.real(ro).await?;
            let proxy = cluster.proxy(n).await?;
            proxies.push((n, proxy.addr.to_string(), proxy.pid()));
        }
        let name = self.search_data(&proxies[0].1).await?;
        let limits = Limits {
            duration: slice_of(self.sizes.duration),
            max_requests: self.sizes.max_requests,
        };
        let mut totals: Vec<Totals> = proxies.iter().map(|_| Totals::default()).collect();
        for slice in 0..THROUGHPUT_SLICES {
            for k in 0..proxies.len() {
                let i = (slice + k) % proxies.len();
                let (n, addr, pid) = &proxies[i];
                progress(format!(
                    "throughput {n} ro node(s), slice {}/{THROUGHPUT_SLICES}",
                    slice + 1
                ));
                let path = SearchPath::search("proxy", addr, &name, ONE_BY_TEN, self.sizes.dim, 13);
                let step = load::run_step(&[path], clients, limits, Some(*pid)).await?;
                totals[i].add(step);
            }
        }
        for ((n, _, _), mut t) in proxies.into_iter().zip(totals) {
            let what = format!("{n} read-only node(s)");
            let errors = note_errors(&mut table, &what, std::slice::from_ref(&t.latencies));
            table.row(vec![
                json!(n),
                json!(clients),
                json!(t.latencies.count()),
                num(t.qps()),
                num(t.latencies.median_ms()),
                num(t.latencies.percentile_ms(0.99)),
                num(t.cpu_us_per_search()),
                json!(errors),
            ]);
        }
        Ok(table)
    }
}

/// One throughput slice of a step, in whole milliseconds.
fn slice_of(step: Duration) -> Duration {
    Duration::from_millis((step.as_millis() / THROUGHPUT_SLICES as u128).max(1) as u64)
}
