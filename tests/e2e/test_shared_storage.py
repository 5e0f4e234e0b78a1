"""Read-your-writes on shared storage, through pymilvus: what a client acknowledged is what every
search shows next, with no sleep, also when each node reads the segment files through its own
JuiceFS mount (default 1 s attribute/entry caches, as on separate machines).

Run against `cluster` (one local data dir, `[local]`) and `juicefs_cluster` (`[juicefs]`). Every
probe is a search through the proxy plus a SearchInFiles of all the collection's files on each
read-only node, so every reader is checked whatever the proxy's placement of the files.
"""

from __future__ import annotations

import random
import time

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

pytestmark = [pytest.mark.proxy, pytest.mark.cluster]

DIM = 16
ROWS_PER_BATCH = 300
TOPK = 10
ROUNDS_AFTER_DELETE = 20


@pytest.fixture(
    params=[
        pytest.param("cluster", id="local"),
        pytest.param("juicefs_cluster", id="juicefs", marks=pytest.mark.juicefs),
    ]
)
def shared_cluster(request):
    return request.getfixturevalue(request.param)


def probe_every_reader(running, proxy, readers, name, queries):
    """[(where, status, results)]: a search through the proxy, then SearchInFiles of all the
    collection's searchable files on each read-only node."""
    file_ids = running.searchable_file_ids(name)
    probes = [("proxy", *proxy.search(name, TOPK, queries))]
    for addr, reader in readers:
        probes.append((f"ro node {addr}", *reader.search_in_segment(name, file_ids, queries, TOPK)))
    return probes


def test_read_your_writes_after_flush_and_delete(shared_cluster):
    running = shared_cluster
    proxy = milvus_client(running.proxy)
    readers = [(node.addr, milvus_client(node)) for node in running.ro]
    rng = random.Random(4242)
    name = unique_name()
    create_collection(proxy, name, DIM, MetricType.L2)

    # Two batches, each flushed: the first search after each flush finds the new batch (a
    # stored vector finds itself first) on every reader.
    dataset: dict[int, list[float]] = {}
    for batch in range(2):
        vectors = float_vectors(rng, ROWS_PER_BATCH, DIM)
        ids = [100_000 * (batch + 1) + i for i in range(ROWS_PER_BATCH)]
        insert(proxy, name, vectors, ids)
        flush(proxy, name)
        new = dict(zip(ids, vectors))
        dataset.update(new)
        wanted = rng.sample(sorted(new), 3)
        queries = [new[i] for i in wanted]
        for where, status, results in probe_every_reader(running, proxy, readers, name, queries):
            assert_ok(status, f"first search after flushing batch {batch}, {where}")
            assert [row[0] for row in results.id_array] == wanted, (
                f"{where}: the first search after flushing batch {batch} did not find its "
                f"vectors: top ids {[row[:3] for row in results.id_array]}, wanted {wanted}"
            )
            assert_search_matches(results, queries, dataset, MetricType.L2, TOPK)
    assert len(running.searchable_file_ids(name)) == 2, "one segment file per flush"

    # Warm every reader's cache of both segments (and of their deletes) right before the delete:
    # a JuiceFS client keeps what it just looked up for 1 s.
    queries = [dataset[i] for i in rng.sample(sorted(dataset), 4)] + float_vectors(rng, 2, DIM)
    doomed: set[int] = set()
    for where, status, results in probe_every_reader(running, proxy, readers, name, queries):
        assert_ok(status, f"warm-up search, {where}")
        assert_search_matches(results, queries, dataset, MetricType.L2, TOPK)
        for row in results.id_array:
            doomed.update(row[:5])  # the top hits of every query, from both segments

    assert_ok(proxy.delete_entity_by_id(name, sorted(doomed)), "delete_entity_by_id")
    flush(proxy, name)
    acknowledged = time.monotonic()

    # No sleep: every search from now on must leave the deleted ids out.
    seen = []
    for round_ in range(ROUNDS_AFTER_DELETE):
        after = time.monotonic() - acknowledged
        for where, status, results in probe_every_reader(running, proxy, readers, name, queries):
            seen.append((round_, after, where, status, results))
    remaining = {i: v for i, v in dataset.items() if i not in doomed}

    failures = []
    for round_, after, where, status, results in seen:
        label = f"round {round_} ({after * 1000:.0f} ms after the flush), {where}"
        if not status.OK():
            failures.append(f"{label}: {status!r}")
            continue
        resurrected = sorted({i for row in results.id_array for i in row} & doomed)
        if resurrected:
            failures.append(f"{label}: deleted ids returned: {resurrected}")
            continue
        try:
            assert_search_matches(results, queries, remaining, MetricType.L2, TOPK)
        except AssertionError as error:
            failures.append(f"{label}: {error}")
    assert not failures, (
        f"{len(failures)} of {len(seen)} probes after an acknowledged delete of {len(doomed)} "
        "ids + flush were wrong:\n" + "\n".join(failures[:20])
    )
    assert count(proxy, name) == len(remaining)
