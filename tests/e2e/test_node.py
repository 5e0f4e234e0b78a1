"""`mishards node` as a Milvus 1.1 server, driven by pymilvus 1.1.2 (see conftest.py)."""

from __future__ import annotations

import random

import pytest
from milvus import IndexType, MetricType

from conftest import (
    COLLECTION_NOT_EXISTS,
    ILLEGAL_ARGUMENT,
    ILLEGAL_COLLECTION_NAME,
    ILLEGAL_DIMENSION,
    ILLEGAL_TOPK,
    ILLEGAL_VECTOR_ID,
    UNEXPECTED_ERROR,
    assert_code,
    assert_ok,
    assert_search_matches,
    binary_vectors,
    count,
    create_collection,
    flush,
    float_vectors,
    insert,
    milvus_client,
    search,
    unique_name,
    wait_until,
)

DIM = 16


@pytest.fixture
def client(standalone_node):
    return milvus_client(standalone_node)


def load_float_collection(client, metric, rows, seed, user_ids=False, dim=DIM):
    """Create a collection, insert `rows` random vectors, flush. Returns (name, {id: vector})."""
    rng = random.Random(seed)
    name = unique_name()
    create_collection(client, name, dim, metric)
    vectors = float_vectors(rng, rows, dim)
    ids = [10_000 + 7 * i for i in range(rows)] if user_ids else None
    returned = insert(client, name, vectors, ids=ids)
    flush(client, name)
    return name, dict(zip(returned, vectors))


def queries_from(rng, dataset, dim, exact=2, fresh=3):
    """Queries that are stored vectors (distance 0 to themselves) plus fresh random ones."""
    stored = rng.sample(list(dataset.values()), exact)
    return stored + float_vectors(rng, fresh, dim)


# ------------------------------------------------------------------ collections


def test_server_version_and_status(client):
    status, version = client.server_version()
    assert_ok(status, "Cmd version")
    assert version.startswith("1.1."), version
    status, reply = client.server_status()
    assert_ok(status, "Cmd status")
    assert reply == "OK"


def test_create_describe_list_and_has_collection(client):
    name = unique_name()
    create_collection(client, name, DIM, MetricType.IP, index_file_size=256)

    status, exists = client.has_collection(name)
    assert_ok(status)
    assert exists is True
    status, info = client.get_collection_info(name)
    assert_ok(status)
    assert (info.collection_name, info.dimension, info.index_file_size) == (name, DIM, 256)
    assert info.metric_type == MetricType.IP
    status, names = client.list_collections()
    assert_ok(status)
    assert name in names
    assert count(client, name) == 0

    status, exists = client.has_collection(unique_name("missing"))
    assert_ok(status)
    assert exists is False


def test_create_existing_collection_is_rejected(client):
    name = unique_name()
    create_collection(client, name, DIM, MetricType.L2)
    status = client.create_collection({"collection_name": name, "dimension": DIM})
    assert_code(status, ILLEGAL_COLLECTION_NAME, "create an existing collection")


def test_drop_collection(client):
    name, _ = load_float_collection(client, MetricType.L2, rows=50, seed=1)
    assert_ok(client.drop_collection(name))
    status, exists = client.has_collection(name)
    assert_ok(status)
    assert exists is False
    status, names = client.list_collections()
    assert_ok(status)
    assert name not in names
    status, _ = client.count_entities(name)
    assert_code(status, COLLECTION_NOT_EXISTS, "count a dropped collection")


# ------------------------------------------------------------------ insert, flush, count, search


def test_insert_auto_ids_then_search_l2(client):
    rng = random.Random(11)
    name, dataset = load_float_collection(client, MetricType.L2, rows=600, seed=11)
    assert len(dataset) == 600, "auto ids are unique"
    assert count(client, name) == 600
    queries = queries_from(rng, dataset, DIM)
    results = search(client, name, queries, topk=10)
    assert_search_matches(results, queries, dataset, MetricType.L2, topk=10)
    # A stored vector finds itself first, at distance 0.
    assert results.id_array[0][0] == next(i for i, v in dataset.items() if v == queries[0])
    assert results.distance_array[0][0] == pytest.approx(0.0, abs=1e-4)


def test_insert_user_ids_then_search_ip(client):
    rng = random.Random(12)
    name, dataset = load_float_collection(client, MetricType.IP, rows=400, seed=12, user_ids=True)
    assert sorted(dataset) == [10_000 + 7 * i for i in range(400)]
    assert count(client, name) == 400
    queries = queries_from(rng, dataset, DIM)
    results = search(client, name, queries, topk=15)
    assert_search_matches(results, queries, dataset, MetricType.IP, topk=15)


@pytest.mark.parametrize("metric", [MetricType.HAMMING, MetricType.JACCARD], ids=str)
def test_binary_vectors_search(client, metric):
    rng = random.Random(13)
    dim = 64
    name = unique_name()
    create_collection(client, name, dim, metric)
    vectors = binary_vectors(rng, 500, dim)
    ids = insert(client, name, vectors)
    flush(client, name)
    assert count(client, name) == 500
    dataset = dict(zip(ids, vectors))
    queries = rng.sample(vectors, 2) + binary_vectors(rng, 3, dim)
    results = search(client, name, queries, topk=8)
    assert_search_matches(results, queries, dataset, metric, topk=8)


def test_topk_larger_than_row_count_returns_short_rows(client):
    rng = random.Random(14)
    name, dataset = load_float_collection(client, MetricType.L2, rows=5, seed=14)
    queries = float_vectors(rng, 3, DIM)
    results = search(client, name, queries, topk=50)
    assert [len(row) for row in results.id_array] == [5, 5, 5]
    assert_search_matches(results, queries, dataset, MetricType.L2, topk=50)


def test_many_queries_in_one_search(client):
    rng = random.Random(15)
    name, dataset = load_float_collection(client, MetricType.L2, rows=300, seed=15)
    queries = float_vectors(rng, 25, DIM)
    results = search(client, name, queries, topk=7)
    assert_search_matches(results, queries, dataset, MetricType.L2, topk=7)


def test_search_on_empty_collection_is_ok_and_empty(client):
    name = unique_name()
    create_collection(client, name, DIM, MetricType.L2)
    results = search(client, name, float_vectors(random.Random(16), 2, DIM), topk=5)
    assert all(len(row) == 0 for row in results.id_array)


def test_several_flushes_are_all_searched(client):
    rng = random.Random(17)
    name = unique_name()
    create_collection(client, name, DIM, MetricType.L2)
    dataset = {}
    for _ in range(4):
        vectors = float_vectors(rng, 100, DIM)
        dataset.update(zip(insert(client, name, vectors), vectors))
        flush(client, name)
    assert count(client, name) == 400
    queries = float_vectors(rng, 4, DIM)
    assert_search_matches(search(client, name, queries, 12), queries, dataset, MetricType.L2, 12)


def test_inserts_are_flushed_automatically(client):
    rng = random.Random(18)
    name = unique_name()
    create_collection(client, name, DIM, MetricType.L2)
    vectors = float_vectors(rng, 120, DIM)
    ids = insert(client, name, vectors)
    # The rw node flushes its buffer every --flush-interval (1 s) without an explicit Flush.
    wait_until(lambda: count(client, name) == 120, timeout=10, what="the automatic flush")
    queries = float_vectors(rng, 2, DIM)
    dataset = dict(zip(ids, vectors))
    assert_search_matches(search(client, name, queries, 5), queries, dataset, MetricType.L2, 5)


def test_mixing_auto_and_user_ids_is_rejected(client):
    rng = random.Random(19)
    name = unique_name()
    create_collection(client, name, DIM, MetricType.L2)
    insert(client, name, float_vectors(rng, 10, DIM))
    status, _ = client.insert(name, float_vectors(rng, 2, DIM), ids=[1, 2])
    assert_code(status, ILLEGAL_VECTOR_ID, "user ids after auto ids")


# ------------------------------------------------------------------ partitions


def test_partitions(client):
    rng = random.Random(21)
    name = unique_name()
    create_collection(client, name, DIM, MetricType.L2)
    assert_ok(client.create_partition(name, "p1"))
    assert_ok(client.create_partition(name, "p2"))
    status, partitions = client.list_partitions(name)
    assert_ok(status)
    tags = [p.tag for p in partitions]
    assert tags[0] == "_default", tags
    assert sorted(tags) == ["_default", "p1", "p2"]
    status, exists = client.has_partition(name, "p1")
    assert_ok(status)
    assert exists is True

    default_vectors = float_vectors(rng, 150, DIM)
    p1_vectors = float_vectors(rng, 120, DIM)
    default_data = dict(zip(insert(client, name, default_vectors), default_vectors))
    p1_data = dict(zip(insert(client, name, p1_vectors, partition_tag="p1"), p1_vectors))
    flush(client, name)
    assert count(client, name) == 270

    queries = float_vectors(rng, 3, DIM)
    everything = {**default_data, **p1_data}
    results = search(client, name, queries, 10)
    assert_search_matches(results, queries, everything, MetricType.L2, 10)
    results = search(client, name, queries, 10, partition_tags=["p1"])
    assert_search_matches(results, queries, p1_data, MetricType.L2, 10)
    results = search(client, name, queries, 10, partition_tags=["_default"])
    assert_search_matches(results, queries, default_data, MetricType.L2, 10)
    results = search(client, name, queries, 10, partition_tags=["p2"])
    assert_search_matches(results, queries, {}, MetricType.L2, 10)

    status, _ = client.search(name, 10, queries, partition_tags=["no_such_tag"])
    assert_code(status, UNEXPECTED_ERROR, "search an unknown partition")
    status, _ = client.insert(name, float_vectors(rng, 2, DIM), partition_tag="no_such_tag")
    assert_code(status, UNEXPECTED_ERROR, "insert into an unknown partition")

    assert_ok(client.drop_partition(name, "p1"))
    status, partitions = client.list_partitions(name)
    assert_ok(status)
    assert sorted(p.tag for p in partitions) == ["_default", "p2"]
    assert count(client, name) == 150
    results = search(client, name, queries, 10)
    assert_search_matches(results, queries, default_data, MetricType.L2, 10)


# ------------------------------------------------------------------ deletes and reads by id


def test_delete_entity_by_id(client):
    rng = random.Random(31)
    name, dataset = load_float_collection(client, MetricType.L2, rows=300, seed=31, user_ids=True)
    deleted = rng.sample(sorted(dataset), 40)
    assert_ok(client.delete_entity_by_id(name, deleted))
    flush(client, name)
    assert count(client, name) == 260

    remaining = {i: v for i, v in dataset.items() if i not in set(deleted)}
    # Query with the deleted vectors themselves: they must not find themselves any more.
    queries = [dataset[i] for i in deleted[:5]] + float_vectors(rng, 2, DIM)
    results = search(client, name, queries, topk=20)
    returned = {i for row in results.id_array for i in row}
    assert not returned & set(deleted), f"deleted ids returned: {returned & set(deleted)}"
    assert_search_matches(results, queries, remaining, MetricType.L2, topk=20)

    status, vectors = client.get_entity_by_id(name, deleted[:3])
    assert_ok(status)
    assert [list(v) for v in vectors] == [[], [], []], "deleted entities have no vector"


def test_get_entity_by_id(client):
    rng = random.Random(32)
    name, dataset = load_float_collection(client, MetricType.L2, rows=100, seed=32, user_ids=True)
    wanted = rng.sample(sorted(dataset), 5)
    status, vectors = client.get_entity_by_id(name, wanted + [999_999_999])
    assert_ok(status)
    assert len(vectors) == 6
    for entity_id, vector in zip(wanted, vectors):
        assert list(vector) == dataset[entity_id], f"vector of id {entity_id}"
    assert list(vectors[5]) == [], "an unknown id has an empty vector"


def test_get_binary_entity_by_id(client):
    rng = random.Random(33)
    name = unique_name()
    create_collection(client, name, 32, MetricType.HAMMING)
    vectors = binary_vectors(rng, 20, 32)
    ids = insert(client, name, vectors, ids=list(range(1, 21)))
    flush(client, name)
    status, got = client.get_entity_by_id(name, ids[:4])
    assert_ok(status)
    assert got == vectors[:4]


def test_collection_stats_and_list_id_in_segment(client):
    rng = random.Random(34)
    name = unique_name()
    create_collection(client, name, DIM, MetricType.L2)
    all_ids = set()
    for _ in range(2):
        all_ids.update(insert(client, name, float_vectors(rng, 80, DIM)))
        flush(client, name)

    status, stats = client.get_collection_stats(name)
    assert_ok(status)
    assert stats["row_count"] == 160, stats
    default = [p for p in stats["partitions"] if p["tag"] == "_default"]
    assert len(default) == 1, stats
    segments = default[0]["segments"] or []
    assert segments, f"no segments after two flushes: {stats}"
    assert sum(s["row_count"] for s in segments) == 160, stats

    listed = []
    for segment in segments:
        status, ids = client.list_id_in_segment(name, str(segment["name"]))
        assert_ok(status, f"list_id_in_segment {segment['name']}")
        assert len(ids) == segment["row_count"], segment
        listed.extend(ids)
    assert sorted(listed) == sorted(all_ids)


# ------------------------------------------------------------------ indexes


def test_create_index_and_get_index_info(client):
    rng = random.Random(41)
    name, dataset = load_float_collection(client, MetricType.L2, rows=500, seed=41)

    status, index = client.get_index_info(name)
    assert_ok(status)
    assert index.index_type == IndexType.FLAT

    assert_ok(client.create_index(name, IndexType.IVF_FLAT, {"nlist": 16}))
    status, index = client.get_index_info(name)
    assert_ok(status)
    assert index.index_type == IndexType.IVF_FLAT
    assert index.params == {"nlist": 16}

    # nprobe == nlist scans every list, so the answer is exact.
    queries = float_vectors(rng, 3, DIM)
    results = search(client, name, queries, 10, params={"nprobe": 16})
    assert_search_matches(results, queries, dataset, MetricType.L2, 10)
    assert count(client, name) == 500

    assert_ok(client.drop_index(name))
    status, index = client.get_index_info(name)
    assert_ok(status)
    assert index.index_type == IndexType.FLAT
    results = search(client, name, queries, 10)
    assert_search_matches(results, queries, dataset, MetricType.L2, 10)


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "bad_name",
    ["1starts_with_digit", "has-dash", "has space", "a" * 256],
    ids=["digit_first", "dash", "space", "too_long"],
)
def test_bad_collection_name_is_code_9(client, bad_name):
    status = client.create_collection({"collection_name": bad_name, "dimension": DIM})
    assert_code(status, ILLEGAL_COLLECTION_NAME, f"create {bad_name!r}")


def test_topk_zero_is_illegal_topk(client):
    name, _ = load_float_collection(client, MetricType.L2, rows=10, seed=51)
    status, _ = client.search(name, 0, float_vectors(random.Random(51), 1, DIM))
    assert_code(status, ILLEGAL_TOPK, "topk 0")


def test_wrong_dimension_is_code_7(client):
    rng = random.Random(52)
    name, _ = load_float_collection(client, MetricType.L2, rows=10, seed=52)
    status, _ = client.insert(name, float_vectors(rng, 3, DIM - 1))
    assert_code(status, ILLEGAL_DIMENSION, "insert with the wrong dimension")
    status, _ = client.search(name, 5, float_vectors(rng, 2, DIM + 1))
    assert_code(status, ILLEGAL_DIMENSION, "search with the wrong dimension")
    status = client.create_collection({"collection_name": unique_name(), "dimension": 0})
    assert_code(status, ILLEGAL_DIMENSION, "create with dimension 0")


def test_unknown_collection_is_code_4(client):
    rng = random.Random(53)
    missing = unique_name("missing")
    status, _ = client.count_entities(missing)
    assert_code(status, COLLECTION_NOT_EXISTS, "count")
    status, _ = client.get_collection_info(missing)
    assert_code(status, COLLECTION_NOT_EXISTS, "describe")
    status, _ = client.search(missing, 5, float_vectors(rng, 1, DIM))
    assert_code(status, COLLECTION_NOT_EXISTS, "search")
    status, _ = client.insert(missing, float_vectors(rng, 1, DIM))
    assert_code(status, COLLECTION_NOT_EXISTS, "insert")
    assert_code(client.drop_collection(missing), COLLECTION_NOT_EXISTS, "drop")


def test_ivf_search_without_nprobe_is_illegal_argument(client):
    rng = random.Random(54)
    name, _ = load_float_collection(client, MetricType.L2, rows=100, seed=54)
    assert_ok(client.create_index(name, IndexType.IVF_FLAT, {"nlist": 8}))
    status, _ = client.search(name, 5, float_vectors(rng, 1, DIM))
    assert_code(status, ILLEGAL_ARGUMENT, "IVF search without nprobe")
    status, _ = client.search(name, 5, float_vectors(rng, 1, DIM), params={"nprobe": 0})
    assert_code(status, ILLEGAL_ARGUMENT, "IVF search with nprobe 0")


# ------------------------------------------------------------------ restart


def test_restart_keeps_flushed_data(standalone_node):
    rng = random.Random(61)
    client = milvus_client(standalone_node)
    name, dataset = load_float_collection(client, MetricType.IP, rows=300, seed=61, user_ids=True)
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
