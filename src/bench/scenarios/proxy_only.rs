//! The proxy-only scenario: the proxy alone in front of stub nodes: CPU per search, QPS per core, added latency.

use serde_json::json;

use super::{diff, note_errors, ratio, Bench, STUBS};
use crate::bench::load::{self, SearchPath};
use crate::bench::progress;
use crate::bench::report::{num, ScenarioReport};

impl Bench<'_> {
    pub(super) async fn proxy_only(&mut self) -> anyhow::Result<ScenarioReport> {
        let name = format!("bench_stub_{}", self.suffix);
        let (proxy, pid, stub) = self.stub_collection(&name).await?;
        self.grow_files(&name, 0, self.sizes.files).await?;
        let file_ids = self.routed_ids(&name).await?;
        let floor = self.floor(&name).await?;
        let floor_addr = floor.addr.to_string();
        let clients = self.sizes.clients;
        let mut table = ScenarioReport::new(
            "proxy-only",
            "The proxy alone, in front of stub read-only nodes",
            &[
                "nq",
                "topk",
                "stub_p50_ms",
                "proxy_p50_ms",
                "added_p50_ms",
                "stub_p99_ms",
                "proxy_p99_ms",
                "added_p99_ms",
                "qps",
                "proxy_cpu_us_per_search",
                "floor_p50_ms",
                "floor_qps",
                "floor_cpu_us_per_search",
                "proxy_over_floor",
                "qps_per_proxy_core",
                "errors",
            ],
        );
        table.setup = format!(
            "{} files over {STUBS} stub nodes that answer `SearchInFiles` at once with a canned \
             result. Latency at 1 client: `stub` = `SearchInFiles` over every file sent straight to \
             one stub, `proxy` = `Search` through the proxy, alternating. Then {clients} clients \
             on the proxy alone: QPS, and the proxy's CPU time (utime+stime) per search; QPS per \
             proxy core = 1 s / CPU per search. `floor` = the same searches through a minimal \
             forwarder (the same HTTP/2 exchanges: one call in, one per stub out, the first stub's \
             reply back; no routing, merge, metrics or tracing), measured the same way; \
             proxy_over_floor = proxy CPU per search / floor CPU per search. {} per step.",
            self.sizes.files,
            humantime::format_duration(self.sizes.duration),
        );
        for shape in self.sizes.latency_shapes.clone() {
            progress(format!(
                "proxy-only nq={} topk={}: latency at 1 client",
                shape.nq, shape.topk
            ));
            let dim = self.sizes.dim;
            let paths = [
                SearchPath::search("proxy", &proxy, &name, shape, dim, 17),
                SearchPath::in_files("stub", &stub, &name, &file_ids, shape, dim, 17),
                SearchPath::search("floor", &floor_addr, &name, shape, dim, 17),
            ];
            let mut one = load::run_step(&paths, 1, self.limits(), None).await?;
            let (pp50, pp99) = (
                one.latencies[0].median_ms(),
                one.latencies[0].percentile_ms(0.99),
            );
            let (sp50, sp99) = (
                one.latencies[1].median_ms(),
                one.latencies[1].percentile_ms(0.99),
            );
            progress(format!(
                "proxy-only nq={} topk={}: {clients} clients",
                shape.nq, shape.topk
            ));
            let fp50 = one.latencies[2].median_ms();
            let load = load::run_step(&paths[..1], clients, self.limits(), Some(pid)).await?;
            let cpu = load.cpu_us_per_request(&[0]);
            progress(format!(
                "proxy-only nq={} topk={}: {clients} clients on the floor",
                shape.nq, shape.topk
            ));
            let floor_load =
                load::run_step(&paths[2..], clients, self.limits(), Some(floor.pid())).await?;
            let floor_cpu = floor_load.cpu_us_per_request(&[0]);
            let what = format!("nq={} topk={}", shape.nq, shape.topk);
            let errors = note_errors(&mut table, &format!("{what}, 1 client"), &one.latencies)
                + note_errors(
                    &mut table,
                    &format!("{what}, {clients} clients"),
                    &load.latencies,
                )
                + note_errors(
                    &mut table,
                    &format!("{what}, {clients} clients on the floor"),
                    &floor_load.latencies,
                );
            table.row(vec![
                json!(shape.nq),
                json!(shape.topk),
                num(sp50),
                num(pp50),
                num(diff(pp50, sp50)),
                num(sp99),
                num(pp99),
                num(diff(pp99, sp99)),
                num(Some(load.qps(0))),
                num(cpu),
                num(fp50),
                num(Some(floor_load.qps(0))),
                num(floor_cpu),
                num(ratio(cpu, floor_cpu)),
                num(cpu.filter(|c| *c > 0.0).map(|c| 1e6 / c)),
                json!(errors),
            ]);
        }
        Ok(table)
    }
}
