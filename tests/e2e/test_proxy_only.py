"""What only the proxy (`mishards serve`) does: explain its routing, export metrics, and keep
serving reads while the writable node is down. Every test is marked `proxy` (select with
`-m proxy`). The Milvus API itself is tested against a node and the proxy alike in
test_milvus_api.py.
"""

from __future__ import annotations

import random
import re
import time
import tomllib

import pytest
import requests

from milvus_calls import (
    COLLECTION_NOT_EXISTS,
    ILLEGAL_TOPK,
    MetricType,
    Status,
    assert_code,
    assert_ok,
    count,
    create_collection,
    flush,
    insert,
    milvus_client,
    search,
    wait_until,
)
from oracle import assert_search_matches, float_vectors, unique_name
from servers import PROXY_SETTLE_S, REPO_ROOT

pytestmark = [pytest.mark.proxy, pytest.mark.cluster]

DIM = 16


def load_in_batches(client, name, rng, batches, rows):
    """Insert `batches` batches of `rows` vectors, flushing after each: one file per batch."""
    dataset = {}
    for _ in range(batches):
        vectors = float_vectors(rng, rows, DIM)
        dataset.update(zip(insert(client, name, vectors), vectors))
        flush(client, name)
        time.sleep(PROXY_SETTLE_S)  # let the topology refresh see the new file
    return dataset


# ------------------------------------------------------------------ Cmd("route")


def test_cmd_route_explains_file_placement(cluster):
    proxy = milvus_client(cluster.proxy)
    rng = random.Random(110)
    name = unique_name()
    create_collection(proxy, name, DIM, MetricType.L2)
    load_in_batches(proxy, name, rng, batches=4, rows=50)
    file_ids = cluster.searchable_file_ids(name)
    assert file_ids

    status, reply = proxy._cmd(f"route {name}")
    assert_ok(status, "Cmd route")
    assert reply, "empty route explanation"
    for file_id in file_ids:
        assert re.search(rf"\b{file_id}\b", reply), f"file {file_id} missing from:\n{reply}"
    ro_addrs = [node.addr for node in cluster.ro]
    assert any(addr in reply for addr in ro_addrs), f"no ro node {ro_addrs} in:\n{reply}"

    status, _ = proxy._cmd(f"route {unique_name('missing')}")
    assert not status.OK(), f"route of an unknown collection: {status!r}"


# ------------------------------------------------------------------ /metrics

_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_exposition(text: str) -> list[tuple[str, dict[str, str], float]]:
    """The samples of an OpenMetrics/Prometheus text exposition: (name, labels, value)."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name, labels, value = match.groups()
        samples.append((name, dict(_LABEL.findall(labels or "")), float(value)))
    return samples


class Scrape:
    """One scrape of the proxy's /metrics, with look-ups by series name and labels."""

    def __init__(self, url: str):
        response = requests.get(url, timeout=10)
        assert response.status_code == 200, response.status_code
        self.text = response.text
        assert self.text.rstrip().endswith("# EOF"), self.text[-200:]
        self.samples = parse_exposition(self.text)

    def find(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        return [
            (got, value)
            for series, got, value in self.samples
            if series == name and all(got.get(k) == v for k, v in labels.items())
        ]

    def value(self, name: str, **labels: str) -> float:
        found = self.find(name, **labels)
        assert len(found) == 1, f"{len(found)} samples of {name}{labels}: {found}\n{self.text}"
        return found[0][1]


def test_metrics_endpoint(cluster):
    """After searches through the proxy, /metrics has the series the README lists."""
    proxy = milvus_client(cluster.proxy)
    rng = random.Random(113)
    name = unique_name()
    create_collection(proxy, name, DIM, MetricType.L2)
    dataset = load_in_batches(proxy, name, rng, batches=2, rows=50)
    queries = float_vectors(rng, 1, DIM)
    assert_search_matches(search(proxy, name, queries, 3), queries, dataset, MetricType.L2, 3)
    status, _ = proxy.search(name, 0, queries)
    assert_code(status, ILLEGAL_TOPK, "topk 0")

    scrape = Scrape(cluster.proxy.metrics_url)
    # Per RPC: a counter by method and Milvus status, and a latency histogram by method.
    assert scrape.value("mishards_requests_total", method="Search", status="SUCCESS") >= 1
    assert scrape.value("mishards_requests_total", method="Search", status="ILLEGAL_TOPK") >= 1
    buckets = scrape.find("mishards_request_duration_seconds_bucket", method="Search")
    assert len(buckets) > 1, buckets
    assert buckets[-1][0]["le"] == "+Inf", buckets
    cumulative = [value for _, value in buckets]
    assert cumulative == sorted(cumulative), f"buckets are not cumulative: {buckets}"
    searches = scrape.value("mishards_request_duration_seconds_count", method="Search")
    assert searches >= 2 and cumulative[-1] == searches, (searches, buckets)

    # Per backend: health and calls; the search went to the ro nodes as SearchInFiles.
    for node in [cluster.rw, *cluster.ro]:
        assert scrape.value("mishards_backend_up", backend=node.addr) == 1, node.addr
    ro_searches = sum(
        value
        for node in cluster.ro
        for _, value in scrape.find(
            "mishards_backend_requests_total", backend=node.addr, method="SearchInFiles", outcome="ok"
        )
    )
    assert ro_searches >= 1, scrape.find("mishards_backend_requests_total")
    assert scrape.find("mishards_backend_request_duration_seconds_count", method="SearchInFiles")

    # Per search: fan-out, files and merge time.
    assert scrape.value("mishards_search_fanout_nodes_count") >= 1
    assert scrape.value("mishards_search_files_sum") >= 2  # two flushes, two files
    assert scrape.value("mishards_merge_duration_seconds_count") >= 1

    # The proxy itself: topology, in-flight RPCs (none while we scrape), build.
    assert 0 <= scrape.value("mishards_topology_age_seconds") < 60
    assert scrape.value("mishards_topology_refresh_duration_seconds_count") >= 1
    assert scrape.value("mishards_topology_refresh_failures_total") >= 0
    assert scrape.value("mishards_inflight_requests") == 0
    version = tomllib.loads((REPO_ROOT / "Cargo.toml").read_text())["package"]["version"]
    assert scrape.value("mishards_build_info", version=version) == 1

    ready = requests.get(cluster.proxy.readyz_url, timeout=10)
    assert ready.status_code == 200, ready.text


# ------------------------------------------------------------------ degraded: the writer down


def test_reads_keep_working_while_the_writer_is_down(cluster):
    proxy = milvus_client(cluster.proxy)
    rng = random.Random(114)
    name = unique_name()
    create_collection(proxy, name, DIM, MetricType.L2)
    assert_ok(proxy.create_partition(name, "p1"))
    dataset = load_in_batches(proxy, name, rng, batches=3, rows=40)
    queries = float_vectors(rng, 2, DIM)

    cluster.rw.stop()
    wait_until(
        lambda: Scrape(cluster.proxy.metrics_url).value("mishards_backend_up", backend=cluster.rw.addr)
        == 0,
        timeout=15,
        what="the proxy to see the writer down",
    )
    proxy = milvus_client(cluster.proxy)  # connecting asks for the version: a ro node answers

    # Searches come from the ro nodes, metadata reads from the proxy's snapshot.
    assert_search_matches(search(proxy, name, queries, 10), queries, dataset, MetricType.L2, 10)
    status, exists = proxy.has_collection(name)
    assert_ok(status, "has_collection")
    assert exists is True
    status, info = proxy.get_collection_info(name)
    assert_ok(status, "get_collection_info")
    assert (info.dimension, info.metric_type) == (DIM, MetricType.L2)
    assert count(proxy, name) == 120
    status, partitions = proxy.list_partitions(name)
    assert_ok(status, "list_partitions")
    assert sorted(p.tag for p in partitions) == ["_default", "p1"]
    status, _ = proxy.get_collection_info(unique_name("missing"))
    assert_code(status, COLLECTION_NOT_EXISTS, "describe an unknown collection")

    # Writes need the writer.
    status, _ = proxy.insert(name, float_vectors(rng, 1, DIM))
    assert_code(status, Status.CONNECT_FAILED, "insert with the writer down")
