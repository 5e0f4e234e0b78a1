"""The proxy (`mishards serve`) in front of one rw and two ro nodes, driven by pymilvus 1.1.2.

Every test here is marked `proxy` (select with `-m proxy`). Writes go through the proxy to the
rw node; searches fan out over the ro nodes by file and are merged. See conftest.py.
"""

from __future__ import annotations

import random
import re
import threading
import time

import pytest
import requests
from milvus import IndexType, MetricType

from conftest import (
    COLLECTION_NOT_EXISTS,
    ILLEGAL_ARGUMENT,
    ILLEGAL_COLLECTION_NAME,
    ILLEGAL_DIMENSION,
    ILLEGAL_TOPK,
    PROXY_SETTLE_S,
    UNEXPECTED_ERROR,
    assert_code,
    assert_ok,
    assert_search_matches,
    binary_vectors,
    count,
    create_collection,
    float_vectors,
    insert,
    milvus_client,
    search,
    unique_name,
)
from conftest import flush as flush_only

pytestmark = [pytest.mark.proxy, pytest.mark.cluster]

DIM = 16


@pytest.fixture
def proxy(cluster):
    return milvus_client(cluster.proxy)


def flush(client, name):
    """Flush, then give the proxy's topology refresh time to see the new files."""
    flush_only(client, name)
    time.sleep(PROXY_SETTLE_S)


def load_in_batches(client, name, rng, batches, rows, dim=DIM, partition_tag=None, binary=False):
    """Insert `batches` batches of `rows` vectors, flushing after each: one segment per batch."""
    dataset = {}
    for _ in range(batches):
        vectors = binary_vectors(rng, rows, dim) if binary else float_vectors(rng, rows, dim)
        dataset.update(zip(insert(client, name, vectors, partition_tag=partition_tag), vectors))
        flush(client, name)
    return dataset


def test_version_and_status_through_proxy(proxy):
    status, version = proxy.server_version()
    assert_ok(status)
    assert version.startswith("1.1."), version
    status, reply = proxy.server_status()
    assert_ok(status)
    assert reply


@pytest.mark.parametrize("metric", [MetricType.L2, MetricType.IP], ids=str)
def test_float_search_matches_oracle(proxy, metric):
    rng = random.Random(101)
    name = unique_name()
    create_collection(proxy, name, DIM, metric)
    status, info = proxy.get_collection_info(name)
    assert_ok(status)
    assert info.dimension == DIM and info.metric_type == metric
    dataset = load_in_batches(proxy, name, rng, batches=2, rows=300)
    assert count(proxy, name) == 600
    queries = rng.sample(list(dataset.values()), 2) + float_vectors(rng, 3, DIM)
    results = search(proxy, name, queries, topk=10)
    assert_search_matches(results, queries, dataset, metric, topk=10)


@pytest.mark.parametrize("metric", [MetricType.HAMMING, MetricType.JACCARD], ids=str)
def test_binary_search_matches_oracle(proxy, metric):
    rng = random.Random(102)
    dim = 64
    name = unique_name()
    create_collection(proxy, name, dim, metric)
    dataset = load_in_batches(proxy, name, rng, batches=2, rows=250, dim=dim, binary=True)
    queries = rng.sample(list(dataset.values()), 2) + binary_vectors(rng, 2, dim)
    results = search(proxy, name, queries, topk=10)
    assert_search_matches(results, queries, dataset, metric, topk=10)


def test_many_segments_spread_over_ro_nodes(cluster, proxy):
    rng = random.Random(103)
    name = unique_name()
    create_collection(proxy, name, DIM, MetricType.L2)
    dataset = load_in_batches(proxy, name, rng, batches=8, rows=200)
    assert count(proxy, name) == 1600
    file_ids = cluster.searchable_file_ids(name)
    assert len(file_ids) >= 2, f"expected one file per flush, TableFiles has {file_ids}"

    queries = float_vectors(rng, 6, DIM)
    for topk in (1, 10, 64):
        results = search(proxy, name, queries, topk)
        assert_search_matches(results, queries, dataset, MetricType.L2, topk)
    # More hits asked for than rows exist: every row holds all 1600.
    results = search(proxy, name, queries[:1], topk=2000)
    assert_search_matches(results, queries[:1], dataset, MetricType.L2, topk=2000)


def test_topk_larger_than_row_count(proxy):
    rng = random.Random(104)
    name = unique_name()
    create_collection(proxy, name, DIM, MetricType.IP)
    dataset = load_in_batches(proxy, name, rng, batches=2, rows=3)
    queries = float_vectors(rng, 2, DIM)
    results = search(proxy, name, queries, topk=20)
    assert [len(row) for row in results.id_array] == [6, 6]
    assert_search_matches(results, queries, dataset, MetricType.IP, topk=20)


def test_search_on_empty_collection_is_ok_and_empty(proxy):
    name = unique_name()
    create_collection(proxy, name, DIM, MetricType.L2)
    results = search(proxy, name, float_vectors(random.Random(105), 2, DIM), topk=5)
    assert all(len(row) == 0 for row in results.id_array)


def test_partitions_through_proxy(proxy):
    rng = random.Random(106)
    name = unique_name()
    create_collection(proxy, name, DIM, MetricType.L2)
    assert_ok(proxy.create_partition(name, "p1"))
    assert_ok(proxy.create_partition(name, "p10"))
    status, partitions = proxy.list_partitions(name)
    assert_ok(status)
    assert [p.tag for p in partitions][0] == "_default"
    assert sorted(p.tag for p in partitions) == ["_default", "p1", "p10"]

    default_data = load_in_batches(proxy, name, rng, batches=2, rows=100)
    p1_data = load_in_batches(proxy, name, rng, batches=2, rows=100, partition_tag="p1")
    p10_data = load_in_batches(proxy, name, rng, batches=1, rows=50, partition_tag="p10")
    assert count(proxy, name) == 450

    queries = float_vectors(rng, 3, DIM)
    cases = {
        None: {**default_data, **p1_data, **p10_data},
        ("p1",): p1_data,  # exact tag match: "p1" must not also pick "p10"
        ("_default",): default_data,
        ("_default", "p10"): {**default_data, **p10_data},
    }
    for tags, expected in cases.items():
        results = search(proxy, name, queries, 10, partition_tags=list(tags) if tags else None)
        assert_search_matches(results, queries, expected, MetricType.L2, 10)

    status, _ = proxy.search(name, 10, queries, partition_tags=["no_such_tag"])
    assert_code(status, UNEXPECTED_ERROR, "search an unknown partition")

    assert_ok(proxy.drop_partition(name, "p1"))
    time.sleep(PROXY_SETTLE_S)
    assert count(proxy, name) == 250  # 450 minus the 200 rows of p1
    results = search(proxy, name, queries, 10)
    assert_search_matches(results, queries, {**default_data, **p10_data}, MetricType.L2, 10)


def test_deletes_through_proxy(proxy):
    rng = random.Random(107)
    name = unique_name()
    create_collection(proxy, name, DIM, MetricType.L2)
    dataset = {}
    for batch in range(3):
        vectors = float_vectors(rng, 150, DIM)
        ids = [batch * 1000 + i for i in range(150)]
        dataset.update(zip(insert(proxy, name, vectors, ids=ids), vectors))
        flush(proxy, name)
    deleted = rng.sample(sorted(dataset), 60)  # from every segment
    assert_ok(proxy.delete_entity_by_id(name, deleted))
    flush(proxy, name)
    assert count(proxy, name) == 390

    remaining = {i: v for i, v in dataset.items() if i not in set(deleted)}
    queries = [dataset[i] for i in deleted[:6]] + float_vectors(rng, 2, DIM)
    results = search(proxy, name, queries, topk=25)
    returned = {i for row in results.id_array for i in row}
    assert not returned & set(deleted), f"deleted ids returned: {returned & set(deleted)}"
    assert_search_matches(results, queries, remaining, MetricType.L2, topk=25)

    status, vectors = proxy.get_entity_by_id(name, deleted[:2] + sorted(remaining)[:1])
    assert_ok(status)
    assert [list(v) for v in vectors[:2]] == [[], []]
    assert list(vectors[2]) == remaining[sorted(remaining)[0]]


def test_drop_and_recreate_with_another_metric(proxy):
    rng = random.Random(108)
    name = unique_name()
    create_collection(proxy, name, DIM, MetricType.L2)
    l2_data = load_in_batches(proxy, name, rng, batches=2, rows=100)
    queries = float_vectors(rng, 3, DIM)
    assert_search_matches(search(proxy, name, queries, 10), queries, l2_data, MetricType.L2, 10)

    assert_ok(proxy.drop_collection(name))
    time.sleep(PROXY_SETTLE_S)
    status, exists = proxy.has_collection(name)
    assert_ok(status)
    assert exists is False
    status, _ = proxy.search(name, 10, queries)
    assert_code(status, COLLECTION_NOT_EXISTS, "search a dropped collection")

    # Same name, another metric: the proxy must not sort with the old metric.
    create_collection(proxy, name, DIM, MetricType.IP)
    ip_data = load_in_batches(proxy, name, rng, batches=2, rows=100)
    assert count(proxy, name) == 200
    assert_search_matches(search(proxy, name, queries, 10), queries, ip_data, MetricType.IP, 10)

    # And a binary metric with another dimension.
    assert_ok(proxy.drop_collection(name))
    time.sleep(PROXY_SETTLE_S)
    create_collection(proxy, name, 32, MetricType.HAMMING)
    bin_data = load_in_batches(proxy, name, rng, batches=2, rows=80, dim=32, binary=True)
    bin_queries = binary_vectors(rng, 2, 32)
    results = search(proxy, name, bin_queries, 10)
    assert_search_matches(results, bin_queries, bin_data, MetricType.HAMMING, 10)


def test_index_through_proxy(proxy):
    rng = random.Random(109)
    name = unique_name()
    create_collection(proxy, name, DIM, MetricType.L2)
    dataset = load_in_batches(proxy, name, rng, batches=2, rows=200)
    assert_ok(proxy.create_index(name, IndexType.IVF_FLAT, {"nlist": 8}))
    time.sleep(PROXY_SETTLE_S)
    status, index = proxy.get_index_info(name)
    assert_ok(status)
    assert index.index_type == IndexType.IVF_FLAT and index.params == {"nlist": 8}

    queries = float_vectors(rng, 3, DIM)
    status, _ = proxy.search(name, 10, queries)
    assert_code(status, ILLEGAL_ARGUMENT, "IVF search without nprobe")
    results = search(proxy, name, queries, 10, params={"nprobe": 8})  # all lists: exact
    assert_search_matches(results, queries, dataset, MetricType.L2, 10)


def test_cmd_route_explains_file_placement(cluster, proxy):
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


def test_errors_through_proxy(proxy):
    rng = random.Random(111)
    missing = unique_name("missing")
    status, _ = proxy.search(missing, 5, float_vectors(rng, 1, DIM))
    assert_code(status, COLLECTION_NOT_EXISTS, "search an unknown collection")
    status, _ = proxy.count_entities(missing)
    assert_code(status, COLLECTION_NOT_EXISTS, "count an unknown collection")
    status, _ = proxy.insert(missing, float_vectors(rng, 1, DIM))
    assert_code(status, COLLECTION_NOT_EXISTS, "insert into an unknown collection")

    status = proxy.create_collection({"collection_name": "bad-name", "dimension": DIM})
    assert_code(status, ILLEGAL_COLLECTION_NAME, "bad collection name")

    name = unique_name()
    create_collection(proxy, name, DIM, MetricType.L2)
    load_in_batches(proxy, name, rng, batches=1, rows=20)
    status, _ = proxy.search(name, 0, float_vectors(rng, 1, DIM))
    assert_code(status, ILLEGAL_TOPK, "topk 0")
    status, _ = proxy.search(name, 5, float_vectors(rng, 1, DIM + 8))
    assert_code(status, ILLEGAL_DIMENSION, "query of the wrong dimension")
    status, _ = proxy.insert(name, float_vectors(rng, 2, DIM - 1))
    assert_code(status, ILLEGAL_DIMENSION, "insert of the wrong dimension")


def test_concurrent_searches(proxy, cluster):
    rng = random.Random(112)
    name = unique_name()
    create_collection(proxy, name, DIM, MetricType.L2)
    dataset = load_in_batches(proxy, name, rng, batches=4, rows=150)
    query_sets = [float_vectors(rng, 3, DIM) for _ in range(4)]
    failures = []

    def worker(queries):
        try:
            client = milvus_client(cluster.proxy)  # pymilvus: one channel per thread anyway
            for _ in range(5):
                results = search(client, name, queries, 10)
                assert_search_matches(results, queries, dataset, MetricType.L2, 10)
        except BaseException as error:  # noqa: BLE001 - reported below
            failures.append(repr(error))

    threads = [threading.Thread(target=worker, args=(qs,)) for qs in query_sets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "searches still running after 120 s"
    assert not failures, failures


def test_metrics_endpoint(cluster, proxy):
    name = unique_name()
    create_collection(proxy, name, DIM, MetricType.L2)
    search(proxy, name, float_vectors(random.Random(113), 1, DIM), 3)
    response = requests.get(cluster.proxy.metrics_url, timeout=10)
    assert response.status_code == 200
    assert "# TYPE" in response.text or "# HELP" in response.text, response.text[:500]


def test_cache_segment_and_compaction_calls_through_proxy(cluster, proxy):
    """load/release/reload, search_in_segment, list ids, stats and compact, all via the proxy."""
    rng = random.Random(211)
    name = unique_name()
    create_collection(proxy, name, DIM, MetricType.L2)
    assert_ok(proxy.create_partition(name, "p1"))
    dataset = load_in_batches(proxy, name, rng, batches=3, rows=60)
    dataset.update(load_in_batches(proxy, name, rng, batches=1, rows=40, partition_tag="p1"))

    assert_ok(proxy.load_collection(name), "load_collection reaches every node")
    assert_ok(proxy.load_collection(name, partition_tags=["p1"]), "load one partition")
    status, has = proxy.has_partition(name, "p1")
    assert_ok(status)
    assert has is True

    # SearchInFiles through the proxy: the files are split over the ro nodes and merged.
    file_ids = cluster.searchable_file_ids(name)
    assert len(file_ids) == 4, file_ids
    queries = float_vectors(rng, 2, DIM)
    status, results = proxy.search_in_segment(name, file_ids, queries, 10, params={})
    assert_ok(status, "search_in_segment through the proxy")
    assert_search_matches(results, queries, dataset, MetricType.L2, 10)
    status, _ = proxy.search_in_segment(name, [10**12], queries, 10, params={})
    assert_code(status, UNEXPECTED_ERROR, "search_in_segment with an unknown file id")
    assert_ok(proxy.reload_segments(name, [str(i) for i in file_ids]))

    # Segment names come from the stats; listing ids of one segment goes to the writer.
    status, stats = proxy.get_collection_stats(name)
    assert_ok(status)
    assert stats["row_count"] == 220, stats
    segments = [s["name"] for p in stats["partitions"] for s in (p["segments"] or [])]
    assert len(segments) == 4, stats
    listed = set()
    for segment in segments:
        status, ids = proxy.list_id_in_segment(name, segment)
        assert_ok(status, f"list ids of {segment}")
        listed.update(ids)
    assert listed == set(dataset)

    # Delete most of one segment, compact, and the survivors are still found.
    status, first_segment_ids = proxy.list_id_in_segment(name, segments[0])
    assert_ok(status)
    doomed = first_segment_ids[: len(first_segment_ids) // 2]
    assert_ok(proxy.delete_entity_by_id(name, doomed))
    flush(proxy, name)
    assert_ok(proxy.compact(name))
    for entity_id in doomed:
        dataset.pop(entity_id)
    assert count(proxy, name) == len(dataset)
    results = search(proxy, name, queries, 10)
    assert_search_matches(results, queries, dataset, MetricType.L2, 10)

    assert_ok(proxy.release_collection(name), "release_collection reaches every node")
