"""pymilvus 1.1.2 calls the e2e tests make, each checking its status, and the status codes."""

from __future__ import annotations

import time
import warnings

import pytest

with warnings.catch_warnings():
    # pymilvus 1.1.2's generated protobuf code and its use of pkg_resources are deprecated.
    warnings.simplefilter("ignore", DeprecationWarning)
    warnings.simplefilter("ignore", UserWarning)
    from milvus import IndexType, MetricType, Milvus, ParamError, Status

# re-exported, imported quietly here
__all__ = ["IndexType", "MetricType", "Milvus", "ParamError", "Status"]

# pymilvus status codes used by the tests (milvus/client/types.py: Status.*)
SUCCESS = Status.SUCCESS  # 0
UNEXPECTED_ERROR = Status.UNEXPECTED_ERROR  # 1
COLLECTION_NOT_EXISTS = Status.COLLECTION_NOT_EXISTS  # 4
ILLEGAL_ARGUMENT = Status.ILLEGAL_ARGUMENT  # 5
ILLEGAL_DIMENSION = Status.ILLEGAL_DIMENSION  # 7
ILLEGAL_COLLECTION_NAME = Status.ILLEGAL_COLLECTION_NAME  # 9
ILLEGAL_TOPK = Status.ILLEGAL_TOPK  # 10
ILLEGAL_VECTOR_ID = Status.ILLEGAL_VECTOR_ID  # 12


def milvus_client(addr) -> Milvus:
    """pymilvus 1.1.2 client for "host:port", (host, port) or an object with .host and .port.

    The constructor connects and checks `Cmd("version")` starts with "1.1."."""
    if isinstance(addr, str):
        host, _, port = addr.rpartition(":")
    elif isinstance(addr, tuple):
        host, port = addr[0], addr[1]
    else:
        host, port = addr.host, addr.port
    return Milvus(host=host, port=int(port), wait_timeout=10)


def assert_ok(status, what: str = ""):
    assert isinstance(status, Status), f"{what}: not a Status: {status!r}"
    assert status.code == SUCCESS, f"{what}: {status!r}"


def assert_code(status, code: int, what: str = ""):
    assert isinstance(status, Status), f"{what}: not a Status: {status!r}"
    assert status.code == code, f"{what}: expected code {code}, got {status!r}"


def create_collection(client: Milvus, name: str, dim: int, metric, index_file_size: int = 1024):
    status = client.create_collection(
        {
            "collection_name": name,
            "dimension": dim,
            "index_file_size": index_file_size,
            "metric_type": metric,
        }
    )
    assert_ok(status, f"create_collection {name}")


def insert(client: Milvus, name: str, vectors, ids=None, partition_tag=None) -> list[int]:
    status, returned_ids = client.insert(name, vectors, ids=ids, partition_tag=partition_tag)
    assert_ok(status, f"insert into {name}")
    assert len(returned_ids) == len(vectors), "one id per inserted vector"
    if ids is not None:
        assert list(returned_ids) == list(ids), "user ids are returned as given"
    return list(returned_ids)


def flush(client: Milvus, name: str):
    assert_ok(client.flush([name]), f"flush {name}")


def count(client: Milvus, name: str) -> int:
    status, rows = client.count_entities(name)
    assert_ok(status, f"count_entities {name}")
    return rows


def search(client: Milvus, name: str, queries, topk: int, partition_tags=None, params=None):
    status, results = client.search(
        name, topk, queries, partition_tags=partition_tags, params=params
    )
    assert_ok(status, f"search {name}")
    return results


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}", pytrace=False)
        time.sleep(interval)


def search_in_files_unchecked(client: Milvus, name: str, file_ids, queries, topk: int):
    """SearchInFiles as `client.search_in_segment` sends it, without pymilvus' client-side check
    that every file id is a number: over shard groups the proxy takes them qualified
    ("g1/12"), which pymilvus 1.1.2's `search_in_segment` refuses before sending (ParamError).
    Returns (status, results)."""
    with client._connection() as handler:  # pymilvus 1.1.2: the pool's GrpcHandler
        return handler.search_in_files(name, list(file_ids), queries, topk, {})
