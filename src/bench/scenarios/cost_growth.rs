//! The cost-growth scenario: proxy CPU per search as files, nq and topk grow (stub nodes).

use serde_json::json;

use super::{note_errors, ratio, Bench, ONE_BY_TEN, STUBS};
use crate::bench::load::{self, SearchPath, Shape};
use crate::bench::progress;
use crate::bench::report::{num, ScenarioReport};

impl Bench<'_> {
    pub(super) async fn cost_growth(&mut self) -> anyhow::Result<ScenarioReport> {
        let name = format!("bench_growth_{}", self.suffix);
        let (proxy, pid, _) = self.stub_collection(&name).await?;
        let clients = self.sizes.clients;
        let mut table = ScenarioReport::new(
            "cost-growth",
            "Proxy CPU per search as files, nq and topk grow (stub nodes)",
            &[
                "files",
                "nq",
                "topk",
                "searches",
                "qps",
                "p50_ms",
                "proxy_cpu_us_per_search",
                "floor_p50_ms",
                "floor_cpu_us_per_search",
                "proxy_over_floor",
                "errors",
            ],
        );
        table.setup = format!(
            "The proxy in front of {STUBS} stub nodes, {clients} clients, {} per step. First nq x \
             topk over the smallest collection, then nq=1, topk=10 as file rows are added to the \
             metadata (the proxy's periodic metadata refresh is part of its CPU time). `floor` = \
             the same load through the minimal forwarder of proxy-only (restarted with each file \
             count, sending each stub the files the proxy routes to it).",
            humantime::format_duration(self.sizes.duration),
        );
        let counts = self.sizes.file_counts.clone();
        let mut have = 0;
        for (i, &files) in counts.iter().enumerate() {
            progress(format!("cost-growth: {files} files"));
            self.grow_files(&name, have, files).await?;
            have = files;
            let floor = self.floor(&name).await?;
            let floor_addr = floor.addr.to_string();
            let shapes: Vec<Shape> = if i == 0 {
                let topks = self.sizes.growth_topk.clone();
                self.sizes
                    .growth_nq
                    .iter()
                    .flat_map(|&nq| topks.iter().map(move |&topk| Shape { nq, topk }))
                    .collect()
            } else {
                vec![ONE_BY_TEN]
            };
            for shape in shapes {
                progress(format!(
                    "cost-growth: {files} files, nq={} topk={}",
                    shape.nq, shape.topk
                ));
                let path = SearchPath::search("proxy", &proxy, &name, shape, self.sizes.dim, 19);
                let mut step = load::run_step(&[path], clients, self.limits(), Some(pid)).await?;
                let cpu = step.cpu_us_per_request(&[0]);
                let path =
                    SearchPath::search("floor", &floor_addr, &name, shape, self.sizes.dim, 19);
                let mut on_floor =
                    load::run_step(&[path], clients, self.limits(), Some(floor.pid())).await?;
                let floor_cpu = on_floor.cpu_us_per_request(&[0]);
                let what = format!("{files} files, nq={} topk={}", shape.nq, shape.topk);
                let errors = note_errors(&mut table, &what, &step.latencies)
                    + note_errors(
                        &mut table,
                        &format!("{what} on the floor"),
                        &on_floor.latencies,
                    );
                table.row(vec![
                    json!(files),
                    json!(shape.nq),
                    json!(shape.topk),
                    json!(step.latencies[0].count()),
                    num(Some(step.qps(0))),
                    num(step.latencies[0].median_ms()),
                    num(cpu),
                    num(on_floor.latencies[0].median_ms()),
                    num(floor_cpu),
                    num(ratio(cpu, floor_cpu)),
                    json!(errors),
                ]);
            }
        }
        Ok(table)
    }
}
