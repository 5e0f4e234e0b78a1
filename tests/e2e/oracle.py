"""Test data and the brute-force oracle that every e2e search result is checked against.

The data sets are small (hundreds to a few thousand vectors), so no numpy is needed. Vectors
are rounded to float32 before they are sent, so the oracle sees exactly what the server stores.
"""

from __future__ import annotations

import math
import random
import struct
import uuid

from milvus_calls import MetricType


def unique_name(prefix: str = "c") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def f32(x: float) -> float:
    """Round a Python float to the nearest float32, as the server stores it."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def float_vectors(rng: random.Random, count: int, dim: int) -> list[list[float]]:
    return [[f32(rng.uniform(-1.0, 1.0)) for _ in range(dim)] for _ in range(count)]


def binary_vectors(rng: random.Random, count: int, dim: int) -> list[bytes]:
    assert dim % 8 == 0
    vectors = []
    for _ in range(count):
        raw = bytearray(rng.getrandbits(8) for _ in range(dim // 8))
        raw[0] |= 1  # never all zero: Jaccard of two empty sets is undefined
        vectors.append(bytes(raw))
    return vectors


def is_descending(metric) -> bool:
    """Milvus sorts IP results by descending similarity, every other metric ascending."""
    return MetricType(metric) == MetricType.IP


def distance(metric, a, b) -> float:
    metric = MetricType(metric)
    if metric == MetricType.L2:  # squared, as faiss reports it
        return sum((x - y) * (x - y) for x, y in zip(a, b))
    if metric == MetricType.IP:
        return sum(x * y for x, y in zip(a, b))
    if metric == MetricType.HAMMING:
        return float(sum(bin(x ^ y).count("1") for x, y in zip(a, b)))
    if metric in (MetricType.JACCARD, MetricType.TANIMOTO):
        both = sum(bin(x & y).count("1") for x, y in zip(a, b))
        either = sum(bin(x | y).count("1") for x, y in zip(a, b))
        jaccard = 1.0 - both / either
        if metric == MetricType.JACCARD:
            return jaccard
        return -math.log2(1.0 - jaccard)
    raise ValueError(f"no oracle for metric {metric!r}")


def brute_force(metric, dataset: dict[int, object], query, topk: int) -> list[tuple[int, float]]:
    """The exact top-k (id, distance) pairs of `query` over `dataset`, best first."""
    scored = [(entity_id, distance(metric, vector, query)) for entity_id, vector in dataset.items()]
    scored.sort(key=lambda pair: pair[1], reverse=is_descending(metric))
    return scored[:topk]


def distances_close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-3, abs_tol=1e-3)


def assert_search_matches(results, queries, dataset: dict[int, object], metric, topk: int):
    """Check a pymilvus TopKQueryResult against the brute-force oracle.

    Per query: the row has min(topk, len(dataset)) hits; its distances match the oracle's
    best distances in order (1e-3 relative tolerance); every returned id exists in `dataset`,
    appears once and its true distance to the query equals the reported one. Ties may
    therefore be resolved by any id, as long as the distances agree.
    """
    expected_len = min(topk, len(dataset))
    if expected_len == 0:
        assert all(len(row) == 0 for row in results.id_array), results.id_array
        return
    id_rows, distance_rows = results.id_array, results.distance_array
    assert len(id_rows) == len(queries), f"{len(id_rows)} result rows for {len(queries)} queries"
    for qi, query in enumerate(queries):
        ids, dists = id_rows[qi], distance_rows[qi]
        where = f"query {qi}: ids={ids[:12]} distances={dists[:12]}"
        expected = brute_force(metric, dataset, query, topk)
        assert len(ids) == expected_len, f"{where}: {len(ids)} hits, expected {expected_len}"
        assert len(dists) == len(ids), where
        assert len(set(ids)) == len(ids), f"{where}: duplicate ids"
        for rank, (entity_id, reported) in enumerate(zip(ids, dists)):
            assert entity_id in dataset, f"{where}: id {entity_id} at rank {rank} is not expected"
            true_distance = distance(metric, dataset[entity_id], query)
            assert distances_close(reported, true_distance), (
                f"{where}: id {entity_id} reported at distance {reported}, "
                f"its true distance is {true_distance}"
            )
            best = expected[rank][1]
            assert distances_close(reported, best), (
                f"{where}: rank {rank} has distance {reported}, the oracle's is {best} "
                f"(oracle top: {expected[:5]})"
            )
