"""What only `mishards node` does: survive a restart, and serve as a read-only node of a cluster.

The Milvus API itself is tested against a node and the proxy alike in test_milvus_api.py.
"""

from __future__ import annotations

import random

import pytest

from milvus_calls import (
    MetricType,
    assert_ok,
    count,
    create_collection,
    flush,
    insert,
    milvus_client,
    search,
)
from oracle import assert_search_matches, float_vectors, unique_name

DIM = 16


def test_restart_keeps_flushed_data(standalone_node):
    rng = random.Random(61)
    client = milvus_client(standalone_node)
    name = unique_name()
    create_collection(client, name, DIM, MetricType.IP)
    vectors = float_vectors(rng, 300, DIM)
    ids = insert(client, name, vectors, ids=[10_000 + 7 * i for i in range(300)])
    flush(client, name)
    dataset = dict(zip(ids, vectors))
    assert_ok(client.create_partition(name, "later"))
    queries = float_vectors(rng, 4, DIM)
    before = search(client, name, queries, 10)
    assert_search_matches(before, queries, dataset, MetricType.IP, 10)

    standalone_node.restart()
    client = milvus_client(standalone_node)

    status, names = client.list_collections()
    assert_ok(status)
    assert name in names
    assert count(client, name) == 300
    status, partitions = client.list_partitions(name)
    assert_ok(status)
    assert sorted(p.tag for p in partitions) == ["_default", "later"]
    after = search(client, name, queries, 10)
    assert_search_matches(after, queries, dataset, MetricType.IP, 10)
    assert after.id_array == before.id_array
    # The restarted node keeps the id mode of the collection and accepts new data.
    more = float_vectors(rng, 5, DIM)
    insert(client, name, more, ids=[1, 2, 3, 4, 5])
    flush(client, name)
    assert count(client, name) == 305


# ------------------------------------------------------------------ ro nodes of a cluster


@pytest.mark.cluster
def test_ro_nodes_search_in_segment(cluster):
    rng = random.Random(71)
    rw = milvus_client(cluster.rw)
    name = unique_name()
    create_collection(rw, name, DIM, MetricType.L2)
    dataset = {}
    for _ in range(3):
        vectors = float_vectors(rng, 150, DIM)
        dataset.update(zip(insert(rw, name, vectors), vectors))
        flush(rw, name)

    file_ids = cluster.searchable_file_ids(name)
    assert file_ids, "no RAW/TO_INDEX/INDEX files in TableFiles after flush"
    queries = float_vectors(rng, 3, DIM)
    for node in cluster.ro:
        ro = milvus_client(node)
        status, results = ro.search_in_segment(name, file_ids, queries, 10)
        assert_ok(status, f"search_in_segment on {node.addr}")
        assert_search_matches(results, queries, dataset, MetricType.L2, 10)
        # Any subset of the files gives exactly the rows of those files.
        status, one_file = ro.search_in_segment(name, file_ids[:1], queries, 1000)
        assert_ok(status, f"search_in_segment of one file on {node.addr}")
        [[row_count]] = cluster.query(f"SELECT row_count FROM TableFiles WHERE id = {file_ids[0]}")
        assert [len(row) for row in one_file.id_array] == [int(row_count)] * len(queries)


@pytest.mark.cluster
def test_ro_nodes_refuse_writes(cluster):
    rng = random.Random(72)
    rw = milvus_client(cluster.rw)
    name = unique_name()
    create_collection(rw, name, DIM, MetricType.L2)
    for node in cluster.ro:
        ro = milvus_client(node)
        status = ro.create_collection({"collection_name": unique_name(), "dimension": DIM})
        assert not status.OK(), f"create_collection on ro node {node.addr}: {status!r}"
        status, _ = ro.insert(name, float_vectors(rng, 3, DIM))
        assert not status.OK(), f"insert on ro node {node.addr}: {status!r}"
        # Reads work on a ro node.
        status, exists = ro.has_collection(name)
        assert_ok(status)
        assert exists is True
    assert count(rw, name) == 0
