//! The latency scenario: search p50/p99/p99.9 through the proxy vs straight to one node.

use anyhow::bail;
use serde_json::json;

use super::{diff, note_errors, Bench, Mode};
use crate::bench::load::{self, SearchPath};
use crate::bench::progress;
use crate::bench::report::{num, ScenarioReport};

impl Bench<'_> {
    pub(super) async fn latency(&mut self, ro: usize) -> anyhow::Result<ScenarioReport> {
        let (proxy, direct, proxy_pid) = self.endpoints(ro, self.sizes.ro_nodes).await?;
        let name = self.search_data(&proxy).await?;
        let mut table = ScenarioReport::new(
            "latency",
            "Search latency through the proxy vs straight to one node",
            &[
                "nq",
                "topk",
                "clients",
                "samples_per_path",
                "direct_p50_ms",
                "proxy_p50_ms",
                "added_p50_ms",
                "direct_p99_ms",
                "proxy_p99_ms",
                "direct_p99.9_ms",
                "proxy_p99.9_ms",
                "proxy_qps",
                "proxy_cpu_us_per_search",
                "errors",
            ],
        );
        table.setup = format!(
            "{} rows in {} files. `direct` = `Search` sent straight to {}; `proxy` = the same \
             `Search` through the proxy ({} read-only nodes). Each client alternates the two paths \
             (order rotating), so both see the same machine noise; {} per step. p99.9 only with \
             at least {} samples.",
            self.sizes.rows,
            self.sizes.files,
            if matches!(self.mode, Mode::Embedded { .. }) {
                "the writable node (which scans every file itself)"
            } else {
                "the --direct node"
            },
            self.sizes.ro_nodes,
            humantime::format_duration(self.sizes.duration),
            load::MIN_SAMPLES_P999,
        );
        for shape in self.sizes.latency_shapes.clone() {
            for clients in self.sizes.latency_clients.clone() {
                progress(format!(
                    "latency nq={} topk={} clients={clients}",
                    shape.nq, shape.topk
                ));
                let mut paths = vec![SearchPath::search(
                    "proxy",
                    &proxy,
                    &name,
                    shape,
                    self.sizes.dim,
                    11,
                )];
                if let Some(direct) = &direct {
                    paths.push(SearchPath::search(
                        "direct",
                        direct,
                        &name,
                        shape,
                        self.sizes.dim,
                        11,
                    ));
                }
                let mut step = load::run_step(&paths, clients, self.limits(), proxy_pid).await?;
                let what = format!("nq={} topk={} clients={clients}", shape.nq, shape.topk);
                let errors = note_errors(&mut table, &what, &step.latencies);
                let cpu = step.cpu_us_per_request(&[0]);
                let qps = step.qps(0);
                let samples = step.latencies[0].count();
                let (p, d) = match step.latencies.as_mut_slice() {
                    [p, d] => (p, Some(d)),
                    [p] => (p, None),
                    _ => bail!("no latencies"),
                };
                let (pp50, pp99, pp999) = (p.median_ms(), p.percentile_ms(0.99), p.p999_ms());
                let (dp50, dp99, dp999) = match d {
                    Some(d) => (d.median_ms(), d.percentile_ms(0.99), d.p999_ms()),
                    None => (None, None, None),
                };
                table.row(vec![
                    json!(shape.nq),
                    json!(shape.topk),
                    json!(clients),
                    json!(samples),
                    num(dp50),
                    num(pp50),
                    num(diff(pp50, dp50)),
                    num(dp99),
                    num(pp99),
                    num(dp999),
                    num(pp999),
                    num(Some(qps)),
                    num(cpu),
                    json!(errors),
                ]);
            }
        }
        if direct.is_none() {
            table
                .notes
                .push("No --direct node given: only the target's columns.".into());
        }
        Ok(table)
    }
}
