//! The coalesce scenario: nq=1 searches through two proxies in front of the
//! same real read-only nodes, `[coalesce]` off and on: node calls per
//! search (each proxy's own `mishards_backend_requests_total` over its own
//! `mishards_requests_total` for `Search`, both from one scrape, so untimed
//! warm-up searches count on both sides), QPS at 32 clients, and the p50
//! each adds at 1 client.

use anyhow::Context;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{diff, note_errors, ratio, Bench, Totals, ONE_BY_TEN};
use crate::bench::cluster::ChildProcess;
use crate::bench::load::{self, Limits, SearchPath};
use crate::bench::progress;
use crate::bench::report::{num, ScenarioReport};

/// Concurrent clients of the throughput steps (the 32).
const CLIENTS: usize = 32;
/// Each proxy's load runs in this many slices, in rotating order.
const SLICES: usize = 2;
const COALESCE_ON: &str = "[coalesce]\nenabled = true\n";

impl Bench<'_> {
    pub(super) async fn coalesce(&mut self, ro: usize) -> anyhow::Result<ScenarioReport> {
        let cluster = self.real(ro).await?;
        let direct = cluster.writable.addr.to_string();
        let ro = cluster.readonly.len();
        let off = cluster
            .fresh_proxy_with(ro, "proxy-coalesce-off", "")
            .await?;
        let on = cluster
            .fresh_proxy_with(ro, "proxy-coalesce-on", COALESCE_ON)
            .await?;
        let name = self.search_data(&off.addr.to_string()).await?;
        let dim = self.sizes.dim;
        let mut table = ScenarioReport::new(
            "coalesce",
            "Query coalescing off and on: node calls per search, QPS, added latency",
            &[
                "coalesce",
                "clients",
                "searches",
                "qps",
                "p50_ms",
                "node_calls_per_search",
                "proxy_cpu_us_per_search",
                "direct_p50_ms_1_client",
                "proxy_p50_ms_1_client",
                "added_p50_ms_1_client",
                "errors",
            ],
        );
        let slice = self.sizes.duration / SLICES as u32;
        table.setup = format!(
            "nq=1, topk=10 over the latency scenario's {} rows in {} files, through two proxies \
             in front of the same {ro} read-only nodes of ours: `[coalesce]` off and on. Node \
             calls per search = the proxy's `SearchInFiles` calls to its nodes \
             (`mishards_backend_requests_total`) / the searches it answered \
             (`mishards_requests_total`, warm-up included on both sides). {CLIENTS} clients, each \
             proxy {SLICES} slices of {} in rotating order. At 1 client each path alternates \
             with `Search` straight to the writable node (`direct`, which scans every file \
             itself).",
            self.sizes.rows,
            self.sizes.files,
            humantime::format_duration(slice),
        );
        let paths = [
            SearchPath::search("direct", &direct, &name, ONE_BY_TEN, dim, 23),
            SearchPath::search("off", &off.addr.to_string(), &name, ONE_BY_TEN, dim, 23),
            SearchPath::search("on", &on.addr.to_string(), &name, ONE_BY_TEN, dim, 23),
        ];
        progress("coalesce: 1 client, direct / off / on alternating");
        let mut one = load::run_step(&paths, 1, self.limits(), None).await?;
        let direct_p50 = one.latencies[0].median_ms();
        let single_errors = note_errors(&mut table, "1 client", &one.latencies);
        let proxies = [("off", &off), ("on", &on)];
        let mut totals: Vec<Totals> = proxies.iter().map(|_| Totals::default()).collect();
        let mut calls = [Counts::default(); 2];
        let limits = Limits {
            duration: slice,
            max_requests: self.sizes.max_requests,
        };
        for s in 0..SLICES {
            for k in 0..proxies.len() {
                let i = (s + k) % proxies.len();
                let (label, proxy) = proxies[i];
                progress(format!(
                    "coalesce {label}: {CLIENTS} clients, slice {}/{SLICES}",
                    s + 1
                ));
                let before = scrape_counts(proxy).await?;
                let step = load::run_step(
                    std::slice::from_ref(&paths[i + 1]),
                    CLIENTS,
                    limits,
                    Some(proxy.pid()),
                )
                .await?;
                calls[i].add_delta(&before, &scrape_counts(proxy).await?);
                totals[i].add(step);
            }
        }
        for (i, mut t) in totals.into_iter().enumerate() {
            let (label, _) = proxies[i];
            let errors = note_errors(
                &mut table,
                &format!("coalesce {label}, {CLIENTS} clients"),
                std::slice::from_ref(&t.latencies),
            );
            let proxy_p50 = one.latencies[i + 1].median_ms();
            let searches = t.latencies.count();
            table.row(vec![
                json!(label),
                json!(CLIENTS),
                json!(searches),
                num(t.qps()),
                num(t.latencies.median_ms()),
                num(ratio(Some(calls[i].node_calls), Some(calls[i].searches))),
                num(t.cpu_us_per_search()),
                num(direct_p50),
                num(proxy_p50),
                num(diff(proxy_p50, direct_p50)),
                json!(errors + if i == 0 { single_errors } else { 0 }),
            ]);
        }
        Ok(table)
    }
}

/// What a proxy's metrics say it has done, summed over every series.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Counts {
    /// `SearchInFiles` calls to its nodes (`mishards_backend_requests_total`).
    node_calls: f64,
    /// `Search` requests it answered, any status (`mishards_requests_total`).
    searches: f64,
}

impl Counts {
    fn from_metrics(text: &str) -> Counts {
        Counts {
            node_calls: counter_sum(text, "mishards_backend_requests_total", "SearchInFiles"),
            searches: counter_sum(text, "mishards_requests_total", "Search"),
        }
    }

    fn add_delta(&mut self, before: &Counts, after: &Counts) {
        self.node_calls += after.node_calls - before.node_calls;
        self.searches += after.searches - before.searches;
    }
}

/// One scrape of `proxy`'s metrics.
async fn scrape_counts(proxy: &ChildProcess) -> anyhow::Result<Counts> {
    let addr = proxy
        .metrics
        .context("the proxy did not print its metrics address")?;
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to the proxy's metrics at {addr}"))?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: mishards\r\n\r\n")
        .await?;
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .await
        .context("reading the proxy's metrics")?;
    Ok(Counts::from_metrics(&text))
}

/// The sum of counter `name` over its series whose `method` label is exactly `method`.
fn counter_sum(metrics: &str, name: &str, method: &str) -> f64 {
    let label = format!("method=\"{method}\"");
    metrics
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{'))
                && l.contains(&label)
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_calls_and_searches_sum_their_own_series() {
        let text = "# HELP mishards_backend_requests_total x\n\
            mishards_backend_requests_total{group=\"\",backend=\"a:1\",method=\"SearchInFiles\",outcome=\"ok\"} 10\n\
            mishards_backend_requests_total{group=\"\",backend=\"b:2\",method=\"SearchInFiles\",outcome=\"error\"} 2\n\
            mishards_backend_requests_total{group=\"\",backend=\"a:1\",method=\"Insert\",outcome=\"ok\"} 5\n\
            mishards_requests_total{method=\"SearchInFiles\"} 99\n\
            mishards_requests_total{method=\"Search\",status=\"SUCCESS\"} 7\n\
            mishards_requests_total{method=\"Search\",status=\"ILLEGAL_TOPK\"} 1\n\
            mishards_requests_total{method=\"SearchByID\",status=\"SUCCESS\"} 40\n\
            mishards_requests_total_created{method=\"Search\"} 123\n";
        let counts = Counts::from_metrics(text);
        assert_eq!(counts.node_calls, 12.0);
        assert_eq!(counts.searches, 8.0);
        assert_eq!(Counts::from_metrics(""), Counts::default());
    }

    #[test]
    fn deltas_add_up_over_slices() {
        let mut total = Counts::default();
        let at = |node_calls, searches| Counts {
            node_calls,
            searches,
        };
        total.add_delta(&at(10.0, 5.0), &at(30.0, 15.0));
        total.add_delta(&at(100.0, 50.0), &at(101.0, 60.0));
        assert_eq!(total, at(21.0, 20.0));
    }
}
