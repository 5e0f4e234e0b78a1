"""The Milvus 1.1 API as pymilvus 1.1.2 sees it, each scenario run against every target.

`target` (conftest.py) is a standalone `mishards node` over SQLite (`[node]`), the proxy in
front of one rw and two ro nodes over MariaDB sharing a local data dir (`[proxy]`, marked
`proxy`), or the same cluster with its data dir on a JuiceFS volume that each node reaches
through its own mount (`[proxy-juicefs]`, also marked `juicefs`), or the proxy over two such
clusters as shard groups (`[proxy-groups]`, also marked `groups`): a Milvus 1.1 client must not
be able to tell them apart, except where a scenario looks at files and segments, which over
groups are one per group and flush, named "<group>/<name>" (`target.groups`). Every search is
checked against the brute-force oracle.
"""

from __future__ import annotations

import random
import threading
import time

import pytest

from milvus_calls import (
    COLLECTION_NOT_EXISTS,
    ILLEGAL_ARGUMENT,
    ILLEGAL_COLLECTION_NAME,
    ILLEGAL_DIMENSION,
    ILLEGAL_TOPK,
    ILLEGAL_VECTOR_ID,
    UNEXPECTED_ERROR,
    IndexType,
    MetricType,
    ParamError,
    assert_code,
    assert_ok,
    count,
    create_collection,
    insert,
    search,
    search_in_files_unchecked,
    wait_until,
)
from oracle import assert_search_matches, binary_vectors, float_vectors, unique_name

DIM = 16


def load_in_batches(
    target, name, rng, batches, rows, dim=DIM, partition_tag=None, binary=False, first_id=None
):
    """Insert `batches` batches of `rows` vectors, flushing after each: one segment per batch.

    With `first_id`, batch b gets the user ids first_id + 1000 * b + i. Returns {id: vector}."""
    dataset = {}
    for batch in range(batches):
        vectors = binary_vectors(rng, rows, dim) if binary else float_vectors(rng, rows, dim)
        ids = None if first_id is None else [first_id + 1000 * batch + i for i in range(rows)]
        dataset.update(zip(insert(target.client, name, vectors, ids, partition_tag), vectors))
        target.flush(name)
    return dataset


def new_collection(target, metric, dim=DIM) -> str:
    name = unique_name()
    create_collection(target.client, name, dim, metric)
    return name


def assert_segment_names_qualified(target, segments):
    """Over shard groups ShowCollectionInfo names each segment "<group>/<its name there>", and
    (with rows in every group) every group has some; a single cluster's names are bare."""
    names = [str(s) for s in segments]
    if target.groups:
        assert all(n.count("/") == 1 for n in names), names
        assert sorted({n.split("/")[0] for n in names}) == sorted(target.groups), names
    else:
        assert not any("/" in n for n in names), names


def queries_from(rng, dataset, dim=DIM, exact=2, fresh=3):
    """Queries that are stored vectors (distance 0 to themselves) plus fresh random ones."""
    stored = rng.sample(list(dataset.values()), exact)
    return stored + float_vectors(rng, fresh, dim)


# ------------------------------------------------------------------ server and collections


def test_server_version_and_status(target):
    status, version = target.client.server_version()
    assert_ok(status, "Cmd version")
    assert version.startswith("1.1."), version
    status, reply = target.client.server_status()
    assert_ok(status, "Cmd status")
    assert reply == "OK"


def test_create_describe_list_and_has_collection(target):
    client = target.client
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


def test_create_existing_collection_is_rejected(target):
    name = new_collection(target, MetricType.L2)
    status = target.client.create_collection({"collection_name": name, "dimension": DIM})
    assert_code(status, ILLEGAL_COLLECTION_NAME, "create an existing collection")


def test_drop_collection(target):
    client = target.client
    name = new_collection(target, MetricType.L2)
    load_in_batches(target, name, random.Random(1), batches=1, rows=50)
    assert_ok(client.drop_collection(name))
    target.settle()
    status, exists = client.has_collection(name)
    assert_ok(status)
    assert exists is False
    status, names = client.list_collections()
    assert_ok(status)
    assert name not in names
    status, _ = client.count_entities(name)
    assert_code(status, COLLECTION_NOT_EXISTS, "count a dropped collection")


def test_drop_and_recreate_with_another_metric(target):
    client = target.client
    rng = random.Random(108)
    name = new_collection(target, MetricType.L2)
    l2_data = load_in_batches(target, name, rng, batches=2, rows=100)
    queries = float_vectors(rng, 3, DIM)
    assert_search_matches(search(client, name, queries, 10), queries, l2_data, MetricType.L2, 10)

    assert_ok(client.drop_collection(name))
    target.settle()
    status, exists = client.has_collection(name)
    assert_ok(status)
    assert exists is False
    status, _ = client.search(name, 10, queries)
    assert_code(status, COLLECTION_NOT_EXISTS, "search a dropped collection")

    # Same name, another metric: results must not be sorted with the old metric.
    create_collection(client, name, DIM, MetricType.IP)
    ip_data = load_in_batches(target, name, rng, batches=2, rows=100)
    assert count(client, name) == 200
    assert_search_matches(search(client, name, queries, 10), queries, ip_data, MetricType.IP, 10)

    # And a binary metric with another dimension.
    assert_ok(client.drop_collection(name))
    target.settle()
    create_collection(client, name, 32, MetricType.HAMMING)
    bin_data = load_in_batches(target, name, rng, batches=2, rows=80, dim=32, binary=True)
    bin_queries = binary_vectors(rng, 2, 32)
    results = search(client, name, bin_queries, 10)
    assert_search_matches(results, bin_queries, bin_data, MetricType.HAMMING, 10)


# ------------------------------------------------------------------ insert, flush, count, search


def test_insert_auto_ids_then_search_l2(target):
    client = target.client
    rng = random.Random(11)
    name = new_collection(target, MetricType.L2)
    dataset = load_in_batches(target, name, rng, batches=1, rows=600)
    assert len(dataset) == 600, "auto ids are unique"
    assert count(client, name) == 600
    queries = queries_from(rng, dataset)
    results = search(client, name, queries, topk=10)
    assert_search_matches(results, queries, dataset, MetricType.L2, topk=10)
    # A stored vector finds itself first, at distance 0.
    assert results.id_array[0][0] == next(i for i, v in dataset.items() if v == queries[0])
    assert results.distance_array[0][0] == pytest.approx(0.0, abs=1e-4)


def test_insert_user_ids_then_search_ip(target):
    client = target.client
    rng = random.Random(12)
    name = new_collection(target, MetricType.IP)
    vectors = float_vectors(rng, 400, DIM)
    ids = insert(client, name, vectors, ids=[10_000 + 7 * i for i in range(400)])
    target.flush(name)
    dataset = dict(zip(ids, vectors))
    assert sorted(dataset) == [10_000 + 7 * i for i in range(400)]
    assert count(client, name) == 400
    queries = queries_from(rng, dataset)
    results = search(client, name, queries, topk=15)
    assert_search_matches(results, queries, dataset, MetricType.IP, topk=15)


@pytest.mark.parametrize("metric", [MetricType.L2, MetricType.IP], ids=str)
def test_several_flushes_are_all_searched(target, metric):
    client = target.client
    rng = random.Random(17)
    name = new_collection(target, metric)
    status, info = client.get_collection_info(name)
    assert_ok(status)
    assert info.dimension == DIM and info.metric_type == metric
    dataset = load_in_batches(target, name, rng, batches=4, rows=150)
    assert count(client, name) == 600
    queries = queries_from(rng, dataset)
    for topk in (10, 12):
        assert_search_matches(search(client, name, queries, topk), queries, dataset, metric, topk)


def test_many_segments_and_topks(target):
    client = target.client
    rng = random.Random(103)
    name = new_collection(target, MetricType.L2)
    dataset = load_in_batches(target, name, rng, batches=8, rows=200)
    assert count(client, name) == 1600
    file_ids = target.searchable_file_ids(name)
    assert len(file_ids) >= 2, f"expected one file per flush, TableFiles has {file_ids}"
    if target.groups:  # each group's own files, qualified by it: every group got rows
        assert sorted({f.split("/")[0] for f in file_ids}) == sorted(target.groups), file_ids

    queries = float_vectors(rng, 6, DIM)
    for topk in (1, 10, 64):
        results = search(client, name, queries, topk)
        assert_search_matches(results, queries, dataset, MetricType.L2, topk)
    # More hits asked for than rows exist: every row holds all 1600.
    results = search(client, name, queries[:1], topk=2000)
    assert_search_matches(results, queries[:1], dataset, MetricType.L2, topk=2000)


@pytest.mark.parametrize("metric", [MetricType.HAMMING, MetricType.JACCARD], ids=str)
def test_binary_vectors_search(target, metric):
    client = target.client
    rng = random.Random(13)
    dim = 64
    name = new_collection(target, metric, dim)
    dataset = load_in_batches(target, name, rng, batches=2, rows=250, dim=dim, binary=True)
    assert count(client, name) == 500
    queries = rng.sample(list(dataset.values()), 2) + binary_vectors(rng, 3, dim)
    for topk in (8, 10):
        results = search(client, name, queries, topk=topk)
        assert_search_matches(results, queries, dataset, metric, topk=topk)


@pytest.mark.parametrize("metric", [MetricType.L2, MetricType.IP], ids=str)
def test_topk_larger_than_row_count_returns_short_rows(target, metric):
    rng = random.Random(14)
    name = new_collection(target, metric)
    dataset = load_in_batches(target, name, rng, batches=2, rows=3)
    queries = float_vectors(rng, 3, DIM)
    results = search(target.client, name, queries, topk=50)
    assert [len(row) for row in results.id_array] == [6, 6, 6]
    assert_search_matches(results, queries, dataset, metric, topk=50)


def test_many_queries_in_one_search(target):
    rng = random.Random(15)
    name = new_collection(target, MetricType.L2)
    dataset = load_in_batches(target, name, rng, batches=1, rows=300)
    queries = float_vectors(rng, 25, DIM)
    results = search(target.client, name, queries, topk=7)
    assert_search_matches(results, queries, dataset, MetricType.L2, topk=7)


def test_search_on_empty_collection_is_ok_and_empty(target):
    name = new_collection(target, MetricType.L2)
    results = search(target.client, name, float_vectors(random.Random(16), 2, DIM), topk=5)
    assert all(len(row) == 0 for row in results.id_array)


def test_inserts_are_flushed_automatically(target):
    client = target.client
    rng = random.Random(18)
    name = new_collection(target, MetricType.L2)
    vectors = float_vectors(rng, 120, DIM)
    ids = insert(client, name, vectors)
    # The rw node flushes its buffer every --flush-interval (1 s) without an explicit Flush.
    wait_until(lambda: count(client, name) == 120, timeout=10, what="the automatic flush")
    target.settle()
    queries = float_vectors(rng, 2, DIM)
    if target.foreign_write_lag_s:
        # The proxy did not make that flush: its search sees the new file after its next
        # topology refresh, while Count (sent to the rw node) already sees the rows.
        def hits_per_query():
            rows = search(client, name, queries, 200).id_array
            return len(rows[0]) if rows else 0

        wait_until(
            lambda: hits_per_query() == 120,
            timeout=1.0 + 5 * target.foreign_write_lag_s,
            what="the proxy's search to see the automatically flushed rows",
            interval=0.02,
        )
    dataset = dict(zip(ids, vectors))
    assert_search_matches(search(client, name, queries, 5), queries, dataset, MetricType.L2, 5)


def test_mixing_auto_and_user_ids_is_rejected(target):
    client = target.client
    rng = random.Random(19)
    name = new_collection(target, MetricType.L2)
    insert(client, name, float_vectors(rng, 10, DIM))
    status, _ = client.insert(name, float_vectors(rng, 2, DIM), ids=[1, 2])
    assert_code(status, ILLEGAL_VECTOR_ID, "user ids after auto ids")


def test_concurrent_searches(target):
    rng = random.Random(112)
    name = new_collection(target, MetricType.L2)
    dataset = load_in_batches(target, name, rng, batches=4, rows=150)
    query_sets = [float_vectors(rng, 3, DIM) for _ in range(4)]
    failures = []

    def worker(queries):
        try:
            client = target.connect()
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


# ------------------------------------------------------------------ partitions


def test_partitions(target):
    client = target.client
    rng = random.Random(21)
    name = new_collection(target, MetricType.L2)
    for tag in ("p1", "p10", "p2"):
        assert_ok(client.create_partition(name, tag))
    status, partitions = client.list_partitions(name)
    assert_ok(status)
    tags = [p.tag for p in partitions]
    assert tags[0] == "_default", tags
    assert sorted(tags) == ["_default", "p1", "p10", "p2"]
    status, exists = client.has_partition(name, "p1")
    assert_ok(status)
    assert exists is True

    default_data = load_in_batches(target, name, rng, batches=2, rows=100)
    p1_data = load_in_batches(target, name, rng, batches=2, rows=100, partition_tag="p1")
    p10_data = load_in_batches(target, name, rng, batches=1, rows=50, partition_tag="p10")
    assert count(client, name) == 450

    queries = float_vectors(rng, 3, DIM)
    cases = {
        None: {**default_data, **p1_data, **p10_data},
        ("p1",): p1_data,  # exact tag match: "p1" must not also pick "p10"
        ("_default",): default_data,
        ("_default", "p10"): {**default_data, **p10_data},
        ("p2",): {},  # a partition without rows
    }
    for tags, expected in cases.items():
        results = search(client, name, queries, 10, partition_tags=list(tags) if tags else None)
        assert_search_matches(results, queries, expected, MetricType.L2, 10)

    status, _ = client.search(name, 10, queries, partition_tags=["no_such_tag"])
    assert_code(status, UNEXPECTED_ERROR, "search an unknown partition")
    status, _ = client.insert(name, float_vectors(rng, 2, DIM), partition_tag="no_such_tag")
    assert_code(status, UNEXPECTED_ERROR, "insert into an unknown partition")

    assert_ok(client.drop_partition(name, "p1"))
    target.settle()
    status, partitions = client.list_partitions(name)
    assert_ok(status)
    assert sorted(p.tag for p in partitions) == ["_default", "p10", "p2"]
    assert count(client, name) == 250  # 450 minus the 200 rows of p1
    results = search(client, name, queries, 10)
    assert_search_matches(results, queries, {**default_data, **p10_data}, MetricType.L2, 10)


# ------------------------------------------------------------------ deletes and reads by id


def test_delete_entity_by_id(target):
    client = target.client
    rng = random.Random(107)
    name = new_collection(target, MetricType.L2)
    dataset = load_in_batches(target, name, rng, batches=3, rows=150, first_id=0)
    deleted = rng.sample(sorted(dataset), 60)  # from every segment
    assert_ok(client.delete_entity_by_id(name, deleted))
    target.flush(name)
    assert count(client, name) == 390

    remaining = {i: v for i, v in dataset.items() if i not in set(deleted)}
    # Query with the deleted vectors themselves: they must not find themselves any more.
    queries = [dataset[i] for i in deleted[:6]] + float_vectors(rng, 2, DIM)
    results = search(client, name, queries, topk=25)
    returned = {i for row in results.id_array for i in row}
    assert not returned & set(deleted), f"deleted ids returned: {returned & set(deleted)}"
    assert_search_matches(results, queries, remaining, MetricType.L2, topk=25)

    status, vectors = client.get_entity_by_id(name, deleted[:3] + sorted(remaining)[:1])
    assert_ok(status)
    assert [list(v) for v in vectors[:3]] == [[], [], []], "deleted entities have no vector"
    assert list(vectors[3]) == remaining[sorted(remaining)[0]]


def test_get_entity_by_id(target):
    rng = random.Random(32)
    name = new_collection(target, MetricType.L2)
    dataset = load_in_batches(target, name, rng, batches=1, rows=100, first_id=10_000)
    wanted = rng.sample(sorted(dataset), 5)
    status, vectors = target.client.get_entity_by_id(name, wanted + [999_999_999])
    assert_ok(status)
    assert len(vectors) == 6
    for entity_id, vector in zip(wanted, vectors):
        assert list(vector) == dataset[entity_id], f"vector of id {entity_id}"
    assert list(vectors[5]) == [], "an unknown id has an empty vector"


def test_get_binary_entity_by_id(target):
    client = target.client
    rng = random.Random(33)
    name = new_collection(target, MetricType.HAMMING, 32)
    vectors = binary_vectors(rng, 20, 32)
    ids = insert(client, name, vectors, ids=list(range(1, 21)))
    target.flush(name)
    status, got = client.get_entity_by_id(name, ids[:4])
    assert_ok(status)
    assert got == vectors[:4]


def test_collection_stats_and_list_id_in_segment(target):
    client = target.client
    rng = random.Random(34)
    name = new_collection(target, MetricType.L2)
    all_ids = set(load_in_batches(target, name, rng, batches=2, rows=80))

    status, stats = client.get_collection_stats(name)
    assert_ok(status)
    assert stats["row_count"] == 160, stats
    default = [p for p in stats["partitions"] if p["tag"] == "_default"]
    assert len(default) == 1, stats
    segments = default[0]["segments"] or []
    assert segments, f"no segments after two flushes: {stats}"
    assert sum(s["row_count"] for s in segments) == 160, stats
    # One segment per flush, in every group that got rows of it (over groups: all of them).
    assert len(segments) == 2 * max(1, len(target.groups)), stats
    assert_segment_names_qualified(target, [s["name"] for s in segments])

    listed = []
    for segment in segments:
        status, ids = client.list_id_in_segment(name, str(segment["name"]))
        assert_ok(status, f"list_id_in_segment {segment['name']}")
        assert len(ids) == segment["row_count"], segment
        listed.extend(ids)
    assert sorted(listed) == sorted(all_ids)


def test_cache_segment_and_compaction_calls(target):
    """load/release/reload, search_in_segment, list ids, stats and compact."""
    client = target.client
    rng = random.Random(211)
    name = new_collection(target, MetricType.L2)
    assert_ok(client.create_partition(name, "p1"))
    dataset = load_in_batches(target, name, rng, batches=3, rows=60)
    dataset.update(load_in_batches(target, name, rng, batches=1, rows=40, partition_tag="p1"))

    assert_ok(client.load_collection(name), "load_collection")
    assert_ok(client.load_collection(name, partition_tags=["p1"]), "load one partition")
    status, has = client.has_partition(name, "p1")
    assert_ok(status)
    assert has is True

    # SearchInFiles (through the proxy: the files are split over the ro nodes and merged).
    # Over groups each flush leaves a file in every group (each holds some of the 40-60 rows),
    # and the file ids are qualified by group ("g1/3"): pymilvus 1.1.2 refuses those before
    # sending (it wants numbers), so they go through its handler unchecked, and bare ids,
    # which name no group, are refused by the proxy.
    file_ids = target.searchable_file_ids(name)
    queries = float_vectors(rng, 2, DIM)
    if target.groups:
        assert len(file_ids) == 4 * len(target.groups), file_ids
        assert sorted({f.split("/")[0] for f in file_ids}) == sorted(target.groups), file_ids
        with pytest.raises(ParamError):
            client.search_in_segment(name, file_ids, queries, 10, params={})
        bare = [f.split("/")[1] for f in file_ids]
        status, _ = client.search_in_segment(name, bare, queries, 10, params={})
        assert_code(status, ILLEGAL_ARGUMENT, "search_in_segment with unqualified file ids")
        status, results = search_in_files_unchecked(client, name, file_ids, queries, 10)
        assert_ok(status, "search_in_segment")
        assert_search_matches(results, queries, dataset, MetricType.L2, 10)
        unknown = f"{target.groups[0]}/{10**12}"
        status, _ = search_in_files_unchecked(client, name, [unknown], queries, 10)
        assert_code(status, UNEXPECTED_ERROR, "search_in_segment with an unknown file id")
        status, _ = search_in_files_unchecked(client, name, [f"g0/{bare[0]}"], queries, 10)
        assert_code(status, ILLEGAL_ARGUMENT, "search_in_segment in an unknown group")
        assert_ok(client.reload_segments(name, file_ids))
        status = client.reload_segments(name, bare)
        assert_code(status, ILLEGAL_ARGUMENT, "reload_segments with unqualified ids")
    else:
        assert len(file_ids) == 4, file_ids
        status, results = client.search_in_segment(name, file_ids, queries, 10, params={})
        assert_ok(status, "search_in_segment")
        assert_search_matches(results, queries, dataset, MetricType.L2, 10)
        status, _ = client.search_in_segment(name, [10**12], queries, 10, params={})
        assert_code(status, UNEXPECTED_ERROR, "search_in_segment with an unknown file id")
        assert_ok(client.reload_segments(name, [str(i) for i in file_ids]))

    # Segment names come from the stats; listing the ids of one segment goes to the writer.
    status, stats = client.get_collection_stats(name)
    assert_ok(status)
    assert stats["row_count"] == 220, stats
    segments = [s["name"] for p in stats["partitions"] for s in (p["segments"] or [])]
    assert len(segments) == 4 * max(1, len(target.groups)), stats
    assert_segment_names_qualified(target, segments)
    listed = set()
    for segment in segments:
        status, ids = client.list_id_in_segment(name, segment)
        assert_ok(status, f"list ids of {segment}")
        listed.update(ids)
    assert listed == set(dataset)

    # Delete most of one segment, compact, and the survivors are still found.
    status, first_segment_ids = client.list_id_in_segment(name, segments[0])
    assert_ok(status)
    doomed = first_segment_ids[: len(first_segment_ids) // 2]
    assert_ok(client.delete_entity_by_id(name, doomed))
    target.flush(name)
    assert_ok(client.compact(name))
    for entity_id in doomed:
        dataset.pop(entity_id)
    assert count(client, name) == len(dataset)
    results = search(client, name, queries, 10)
    assert_search_matches(results, queries, dataset, MetricType.L2, 10)

    assert_ok(client.release_collection(name), "release_collection")


# ------------------------------------------------------------------ indexes


def test_create_index_and_get_index_info(target):
    client = target.client
    rng = random.Random(41)
    name = new_collection(target, MetricType.L2)
    dataset = load_in_batches(target, name, rng, batches=2, rows=250)

    status, index = client.get_index_info(name)
    assert_ok(status)
    assert index.index_type == IndexType.FLAT

    assert_ok(client.create_index(name, IndexType.IVF_FLAT, {"nlist": 16}))
    target.settle()
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
    target.settle()
    status, index = client.get_index_info(name)
    assert_ok(status)
    assert index.index_type == IndexType.FLAT
    results = search(client, name, queries, 10)
    assert_search_matches(results, queries, dataset, MetricType.L2, 10)


BUILD_INDEX_THRESHOLD = 4096  # rows; Milvus indexes smaller segments only when they grow


def segment_indexes(client, name) -> list[tuple[int, str]]:
    """(row_count, index_name) of each segment of the root partition, sorted."""
    status, stats = client.get_collection_stats(name)
    assert_ok(status)
    default = [p for p in stats["partitions"] if p["tag"] == "_default"]
    return sorted((s["row_count"], s["index_name"]) for s in default[0]["segments"] or [])


def test_create_index_builds_big_segments_and_drop_index_returns_to_idmap(target):
    """Segments of >= 4096 rows are indexed before create_index answers (Milvus'
    BUILD_INDEX_THRESHOLD); the stats name the index per segment.

    Over shard groups a flushed batch is split into one segment per group, so each batch
    carries enough rows for every group's part of it to pass the threshold."""
    client = target.client
    rng = random.Random(4096)
    name = new_collection(target, MetricType.L2)
    groups = max(1, len(target.groups))
    # 4100 rows: just over the threshold. Over n groups each gets ~1/n of 4400 n rows (the owner
    # of an id is a hash): below 4096 only some 6 standard deviations off.
    big = 4100 if groups == 1 else 4400 * groups
    dataset = load_in_batches(target, name, rng, batches=2, rows=big)
    dataset.update(load_in_batches(target, name, rng, batches=1, rows=50))  # too small: raw
    before = segment_indexes(client, name)
    assert len(before) == 3 * groups, before
    assert [index for _, index in before] == ["IDMAP"] * 3 * groups, before
    big_segments = [rows for rows, _ in before if rows >= BUILD_INDEX_THRESHOLD]
    assert len(big_segments) == 2 * groups, before

    assert_ok(client.create_index(name, IndexType.IVF_FLAT, {"nlist": 16}))
    target.settle()
    indexed = segment_indexes(client, name)
    expected = [
        (rows, "IVFFLAT" if rows >= BUILD_INDEX_THRESHOLD else "IDMAP") for rows, _ in before
    ]
    assert indexed == sorted(expected), indexed
    assert count(client, name) == 2 * big + 50

    # nprobe == nlist probes every list of IVF_FLAT: the answer is exact.
    queries = queries_from(rng, dataset)
    results = search(client, name, queries, 10, params={"nprobe": 16})
    assert_search_matches(results, queries, dataset, MetricType.L2, 10)
    # A stored vector finds itself first, even probing a single list.
    results = search(client, name, queries[:2], 10, params={"nprobe": 1})
    for query, row in zip(queries[:2], results):
        assert dataset[row[0].id] == query and row[0].distance < 1e-4

    assert_ok(client.drop_index(name))
    target.settle()
    assert segment_indexes(client, name) == before
    assert count(client, name) == 2 * big + 50
    results = search(client, name, queries, 10)
    assert_search_matches(results, queries, dataset, MetricType.L2, 10)


def test_ivf_search_needs_nprobe(target):
    client = target.client
    rng = random.Random(54)
    name = new_collection(target, MetricType.L2)
    dataset = load_in_batches(target, name, rng, batches=2, rows=100)
    assert_ok(client.create_index(name, IndexType.IVF_FLAT, {"nlist": 8}))
    target.settle()
    status, index = client.get_index_info(name)
    assert_ok(status)
    assert index.index_type == IndexType.IVF_FLAT and index.params == {"nlist": 8}

    queries = float_vectors(rng, 3, DIM)
    status, _ = client.search(name, 5, queries)
    assert_code(status, ILLEGAL_ARGUMENT, "IVF search without nprobe")
    status, _ = client.search(name, 5, queries, params={"nprobe": 0})
    assert_code(status, ILLEGAL_ARGUMENT, "IVF search with nprobe 0")
    results = search(client, name, queries, 10, params={"nprobe": 8})  # all lists: exact
    assert_search_matches(results, queries, dataset, MetricType.L2, 10)


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "bad_name",
    ["1starts_with_digit", "has-dash", "has space", "a" * 256],
    ids=["digit_first", "dash", "space", "too_long"],
)
def test_bad_collection_name_is_code_9(target, bad_name):
    status = target.client.create_collection({"collection_name": bad_name, "dimension": DIM})
    assert_code(status, ILLEGAL_COLLECTION_NAME, f"create {bad_name!r}")


def test_topk_zero_is_illegal_topk(target):
    rng = random.Random(51)
    name = new_collection(target, MetricType.L2)
    load_in_batches(target, name, rng, batches=1, rows=10)
    status, _ = target.client.search(name, 0, float_vectors(rng, 1, DIM))
    assert_code(status, ILLEGAL_TOPK, "topk 0")


def test_wrong_dimension_is_code_7(target):
    client = target.client
    rng = random.Random(52)
    name = new_collection(target, MetricType.L2)
    load_in_batches(target, name, rng, batches=1, rows=10)
    status, _ = client.insert(name, float_vectors(rng, 3, DIM - 1))
    assert_code(status, ILLEGAL_DIMENSION, "insert with the wrong dimension")
    for query_dim in (DIM + 1, DIM + 8):
        status, _ = client.search(name, 5, float_vectors(rng, 2, query_dim))
        assert_code(status, ILLEGAL_DIMENSION, f"search with dimension {query_dim}")
    status = client.create_collection({"collection_name": unique_name(), "dimension": 0})
    assert_code(status, ILLEGAL_DIMENSION, "create with dimension 0")


def test_unknown_collection_is_code_4(target):
    client = target.client
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


# ------------------------------------------------------------------ Milvus 1.1 fidelity (issue 10)


def test_search_metric_type_override(target):
    """A raw (FLAT) collection accepts a per-search metric in the params, as its number
    (pymilvus' MetricType); the ranking follows it, IP best-first (descending)."""
    client = target.client
    rng = random.Random(1001)
    name = new_collection(target, MetricType.L2)
    dataset = load_in_batches(target, name, rng, batches=3, rows=120)
    queries = queries_from(rng, dataset)
    for topk in (1, 10):
        results = search(client, name, queries, topk, params={"metric_type": int(MetricType.IP)})
        assert_search_matches(results, queries, dataset, MetricType.IP, topk)
        assert all(row == sorted(row, reverse=True) for row in results.distance_array)
    # The collection's own metric and its explicit name agree.
    for params in (None, {"metric_type": int(MetricType.L2)}):
        results = search(client, name, queries, 10, params=params)
        assert_search_matches(results, queries, dataset, MetricType.L2, 10)
    for bad in (int(MetricType.HAMMING), 0, 9, "IP", 2.5):
        status, _ = client.search(name, 10, queries, params={"metric_type": bad})
        assert_code(status, ILLEGAL_ARGUMENT, f"metric_type {bad!r} on a float collection")


def test_binary_search_metric_type_override(target):
    client = target.client
    rng = random.Random(1002)
    name = new_collection(target, MetricType.JACCARD, 64)
    dataset = load_in_batches(target, name, rng, batches=2, rows=80, dim=64, binary=True)
    queries = binary_vectors(rng, 3, 64)
    for metric in (MetricType.HAMMING, MetricType.TANIMOTO, MetricType.JACCARD):
        results = search(client, name, queries, 10, params={"metric_type": int(metric)})
        assert_search_matches(results, queries, dataset, metric, 10)
    for bad in (int(MetricType.L2), int(MetricType.IP), 8):
        status, _ = client.search(name, 10, queries, params={"metric_type": bad})
        assert_code(status, ILLEGAL_ARGUMENT, f"metric_type {bad} on a binary collection")


def test_get_entity_by_id_of_an_empty_collection_or_partition(target):
    client = target.client
    rng = random.Random(1003)
    name = new_collection(target, MetricType.L2)
    assert_ok(client.create_partition(name, "p1"))
    status, _ = client.get_entity_by_id(name, [1, 2])
    assert_code(status, UNEXPECTED_ERROR, "get by id with no file")
    assert "Collection or partition is empty" in status.message, status.message
    load_in_batches(target, name, rng, batches=1, rows=10, first_id=1)
    status, vectors = client.get_entity_by_id(name, [1, 2])
    assert_ok(status)
    assert all(len(v) == DIM for v in vectors)
    status, _ = client.get_entity_by_id(name, [1], partition_tag="p1")
    assert_code(status, UNEXPECTED_ERROR, "get by id from a partition with no file")
    assert "Collection or partition is empty" in status.message, status.message


def test_get_entity_by_id_returns_the_first_occurrence(target):
    client = target.client
    rng = random.Random(1004)
    name = new_collection(target, MetricType.L2)
    first, second, third = float_vectors(rng, 3, DIM)
    insert(client, name, [first, second], ids=[7, 7])  # one segment, id 7 twice
    target.flush(name)
    insert(client, name, [third], ids=[7])  # a later segment
    target.flush(name)
    status, vectors = client.get_entity_by_id(name, [7, 7])
    assert_ok(status)
    assert [list(v) for v in vectors] == [first, first]


def test_has_partition_checks_only_the_collection_name(target):
    client = target.client
    name = new_collection(target, MetricType.L2)
    assert_ok(client.create_partition(name, "p1"))
    for tag, expected in [
        ("p1", True),
        ("  p1\t", True),
        ("_default", True),
        (" _default ", True),
        ("p2", False),
        ("", False),
        ("   ", False),
        ("t" * 300, False),
    ]:
        status, exists = client.has_partition(name, tag)
        assert_ok(status, f"has_partition {tag!r}")
        assert exists is expected, f"has_partition {tag!r}"
    status, _ = client.has_partition(unique_name(), "p1")
    assert_code(status, COLLECTION_NOT_EXISTS, "has_partition of an unknown collection")
    status, _ = client.has_partition("1bad", "p1")
    assert_code(status, ILLEGAL_COLLECTION_NAME, "has_partition of a bad collection name")


def test_get_and_set_config(target):
    client = target.client
    status, value = client.get_config("storage", "auto_flush_interval")
    assert_ok(status)
    assert value == "1"
    status, value = client.get_config("network", "http.port")
    assert_ok(status)
    assert value == "19121"
    assert_ok(client.set_config("cache", "cache_size", "2GB")[0])
    status, value = client.get_config("cache", "cache_size")
    assert_ok(status)
    assert value == "2GB"
    status, _ = client.set_config("cache", "cache_size", "2TB")
    assert_code(status, ILLEGAL_ARGUMENT, "set_config with an unknown unit")
    status, _ = client.set_config("storage", "auto_flush_interval", "-1")
    assert_code(status, ILLEGAL_ARGUMENT, "a negative auto_flush_interval")
    status, _ = client.get_config("storage", "no_such_key")
    assert_code(status, UNEXPECTED_ERROR, "an unknown key")
    assert "Config node invalid: storage.no_such_key" in status.message
    status, _ = client._cmd("get_config storage")
    assert_code(status, UNEXPECTED_ERROR, "a malformed get_config")
    assert "Invalid command" in status.message


def test_auto_flush_interval_is_obeyed(target):
    """auto_flush_interval 0 stops the automatic flush; setting it back restarts it."""
    client = target.client
    rng = random.Random(1005)
    name = new_collection(target, MetricType.L2)
    assert_ok(client.set_config("storage", "auto_flush_interval", "0")[0])
    insert(client, name, float_vectors(rng, 30, DIM))
    # Long enough for several 1 s auto-flushes had it still been on.
    time.sleep(3.5)
    assert count(client, name) == 0, "rows were flushed although auto-flush is off"
    assert_ok(client.set_config("storage", "auto_flush_interval", "1")[0])
    wait_until(lambda: count(client, name) == 30, timeout=15, what="auto-flush after re-enabling")
