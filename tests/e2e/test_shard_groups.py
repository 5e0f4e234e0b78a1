"""Shard groups through a real client: `mishards demo --groups 2` (two local clusters, each its
own SQLite metadata, writable and two read-only nodes, behind one proxy), driven by pymilvus
1.1.2 as one Milvus: inserts without ids get unique ids, counts add up, searches match the
brute-force oracle over all rows, get-by-id and delete reach the owning group, and Milvus' id
rule holds across the groups.
"""

from __future__ import annotations

import json
import random

from milvus import MetricType

from milvus_calls import assert_code, assert_ok, count, create_collection, flush, insert, milvus_client, search
from oracle import assert_search_matches, float_vectors
from servers import HOST, demo_process, free_port

DIM = 16
ILLEGAL_VECTOR_ID = 12


def test_a_two_group_demo_is_one_milvus(tmp_path):
    port, metrics_port = free_port(), free_port()
    demo = demo_process(tmp_path, port, metrics_port, groups=2)
    demo.start()
    try:
        demo.wait_ready(HOST, port, need_listening_line=False)
        client = milvus_client((HOST, port))
        rng = random.Random(2)
        name = "groups_e2e"
        create_collection(client, name, DIM, MetricType.L2)
        dataset: dict[int, object] = {}
        for _ in range(4):
            vectors = float_vectors(rng, 250, DIM)
            ids = insert(client, name, vectors)
            assert len(set(ids)) == 250 and not set(ids) & set(dataset), "ids must be unique"
            dataset.update(zip(ids, vectors))
        flush(client, name)
        assert count(client, name) == 1000

        status, info = client.get_collection_stats(name)
        assert_ok(status, "get_collection_stats")
        segments = [s["name"] for p in info["partitions"] for s in (p["segments"] or [])]
        assert {s.split("/")[0] for s in segments} == {"g1", "g2"}, segments

        queries = float_vectors(rng, 4, DIM)
        for topk in (1, 10, 50):
            assert_search_matches(search(client, name, queries, topk), queries, dataset, MetricType.L2, topk)

        some = list(dataset)[:20]
        status, vectors = client.get_entity_by_id(name, some)
        assert_ok(status, "get_entity_by_id")
        assert all(len(v) == DIM for v in vectors), vectors

        assert_ok(client.delete_entity_by_id(name, some[:10]), "delete_entity_by_id")
        flush(client, name)
        for i in some[:10]:
            del dataset[i]
        assert count(client, name) == 990
        assert_search_matches(search(client, name, queries, 10), queries, dataset, MetricType.L2, 10)

        # The collection's ids are generated: an insert with ids breaks Milvus' rule.
        status, _ = client.insert(name, float_vectors(rng, 2, DIM), ids=[1, 2])
        assert_code(status, ILLEGAL_VECTOR_ID, "insert with ids into an auto-id collection")

        assert_ok(client.drop_collection(name), "drop_collection")
        status, has = client.has_collection(name)
        assert_ok(status)
        assert has is False
    finally:
        demo.stop()
