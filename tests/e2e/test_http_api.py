"""Milvus 1.1's HTTP API (src/http_api/, reference §3) end to end, with `requests`.

Against the proxy of `cluster` (rw + 2 ro nodes over MariaDB) and against `mishards demo
--groups 2`, every route we serve is called and, for each operation, the same request is made
through pymilvus (gRPC) on the same proxy: both must give the same answer (counts, describe,
partitions, index, get-by-id vectors, segment ids; searches also match the brute-force oracle,
REST distances being 6-decimal strings). Then the error answers (404 code 4, 400 codes 9 / 34 /
36, 413 over `server.max_message_size`, 403 under `[access] read_only`), and a schemathesis run
from the proxy's /openapi.json (`test_http_api_fuzz`): no 5xx, no hang, the proxy still up.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import requests

from milvus_calls import (
    IndexType,
    MetricType,
    assert_ok,
    count,
    flush,
    insert,
    milvus_client,
    search,
    search_in_files_unchecked,
)
from oracle import assert_search_matches, f32, float_vectors, unique_name
from servers import (
    HOST,
    SEARCHABLE_FILES_SQL,
    backends_toml,
    demo_process,
    free_port,
    start_proxy,
)

DIM = 16
HTTP_TIMEOUT_S = 30.0  # every REST call
READY_S = 30.0
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS, PUT, DELETE",
    "Access-Control-Max-Age": "1728000",
}


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


class Rest:
    """A `requests` session on one HTTP API, every call bounded by HTTP_TIMEOUT_S."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.session = requests.Session()

    def call(self, method: str, path: str, body=None, raw: bytes | str | None = None, **kw):
        data = raw if raw is not None else (None if body is None else json.dumps(body))
        return self.session.request(
            method, self.url + path, data=data, timeout=HTTP_TIMEOUT_S, **kw
        )

    def ok(self, method: str, path: str, body=None, status: int = 200, **kw):
        """The JSON of a successful call (None for an empty body), checking its HTTP status."""
        reply = self.call(method, path, body, **kw)
        assert reply.status_code == status, f"{method} {path}: {reply.status_code} {reply.text}"
        assert reply.headers.get("Access-Control-Allow-Origin") == "*", reply.headers
        return reply.json() if reply.content else None

    def error(self, method: str, path: str, body=None, status=400, code=None, **kw) -> dict:
        """A Milvus error reply {"message", "code"} with HTTP `status` and web `code`."""
        reply = self.call(method, path, body, **kw)
        assert reply.status_code == status, f"{method} {path}: {reply.status_code} {reply.text}"
        err = reply.json()
        assert set(err) == {"message", "code"}, err
        if code is not None:
            assert err["code"] == code, f"{method} {path}: {err}"
        assert reply.headers.get("Access-Control-Allow-Origin") == "*", reply.headers
        return err


def wait_http(url: str, timeout: float = READY_S):
    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(url + "/state", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"HTTP API at {url} not up within {timeout}s", pytrace=False)
        time.sleep(0.1)


@dataclass
class Rows:
    """What a REST search row list looks like to oracle.assert_search_matches."""

    id_array: list[list[int]]
    distance_array: list[list[float]]


def rest_rows(reply: dict, nq: int) -> Rows:
    assert reply["num"] == nq, reply
    rows = [row or [] for row in reply["result"]]
    for row in rows:
        for hit in row:
            assert isinstance(hit["id"], str) and isinstance(hit["distance"], str), hit
            whole, _, decimals = hit["distance"].lstrip("-").partition(".")
            assert whole.isdigit() and len(decimals) == 6, hit  # %f
    return Rows(
        [[int(h["id"]) for h in row] for row in rows],
        [[float(h["distance"]) for h in row] for row in rows],
    )


def assert_same_hits(rest: Rows, grpc):
    """REST and gRPC rows agree: same ids (ties aside) and distances within %f rounding."""
    assert len(rest.id_array) == len(grpc.id_array)
    for qi, (r_ids, r_d, g_ids, g_d) in enumerate(
        zip(rest.id_array, rest.distance_array, grpc.id_array, grpc.distance_array)
    ):
        g_ids, g_d = list(g_ids), list(g_d)
        assert len(r_ids) == len(g_ids), f"query {qi}: {r_ids} vs {g_ids}"
        for rank, (a, b) in enumerate(zip(r_d, g_d)):
            assert abs(a - b) <= 1e-6 + 1e-5 * abs(b), f"query {qi} rank {rank}: {a} vs {b}"
        # Ids agree at every rank whose distance is not tied with another hit's.
        for rank, d in enumerate(g_d):
            if sum(1 for other in g_d if abs(other - d) <= 1e-4) == 1:
                assert r_ids[rank] == g_ids[rank], f"query {qi} rank {rank}: {r_ids} vs {g_ids}"


def same_vector(rest_vector: list, grpc_vector) -> bool:
    return len(rest_vector) == len(grpc_vector) and all(
        f32(a) == f32(b) for a, b in zip(rest_vector, grpc_vector)
    )


def sqlite_file_ids(meta_paths: dict[str, Path]) -> Callable[[str], list[str]]:
    """Searchable TableFiles.id of a collection in each group's SQLite meta, qualified."""

    def ids(collection: str) -> list[str]:
        out = []
        for group, path in meta_paths.items():
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
                rows = db.execute(SEARCHABLE_FILES_SQL.format(name="?"), (collection, collection))
                out += [f"{group}/{row[0]}" for row in rows]
        return out

    return ids


# --------------------------------------------------------------------------------------------
# The scenario: every route, REST against gRPC
# --------------------------------------------------------------------------------------------


def rest_vs_grpc(rest: Rest, client, file_ids: Callable[[str], list], grouped: bool) -> dict:
    """Runs every served route of reference §3 through `rest`, checking each answer against the
    same operation through `client` (pymilvus on the same proxy). Returns figures."""
    checks = 0
    rng = random.Random(16)
    name = unique_name("http")

    # --- root, state, devices, advanced config -------------------------------------------
    root = rest.call("GET", "/")
    assert root.status_code == 200 and root.text == "Welcome to milvus", root.text
    assert rest.ok("GET", "/state") == {"message": "Success", "code": 0}
    devices = rest.ok("GET", "/devices")
    assert "cpu" in devices and "memory" in devices["cpu"], devices
    advanced = rest.ok("GET", "/config/advanced")
    assert {"cpu_cache_capacity", "cache_insert_data", "use_blas_threshold"} <= set(advanced)
    assert rest.ok("PUT", "/config/advanced", advanced) == {"message": "OK", "code": 0}
    assert rest.ok("GET", "/config/advanced") == advanced
    checks += 1

    # --- collections -------------------------------------------------------------------------
    created = rest.ok(
        "POST",
        "/collections",
        {"collection_name": name, "dimension": DIM, "index_file_size": 1024, "metric_type": "L2"},
        status=201,
    )
    assert created == {"message": "OK", "code": 0}, created
    status, has = client.has_collection(name)
    assert_ok(status, "has_collection")
    assert has is True
    status, schema = client.get_collection_info(name)
    assert_ok(status, "get_collection_info")
    one = rest.ok("GET", f"/collections/{name}")
    assert one["collection_name"] == schema.collection_name == name
    assert one["dimension"] == schema.dimension == DIM
    assert one["index_file_size"] == schema.index_file_size == 1024
    assert one["metric_type"] == "L2" and schema.metric_type == MetricType.L2
    assert one["count"] == count(client, name) == 0
    assert one["index"] == "FLAT" and json.loads(one["index_params"]) == {}
    listing = rest.ok("GET", "/collections", params={"all_required": "true"})
    status, names = client.list_collections()
    assert_ok(status)
    assert sorted(c["collection_name"] for c in listing["collections"]) == sorted(names)
    assert listing["count"] == len(names)
    checks += 2

    # --- partitions --------------------------------------------------------------------------
    assert rest.ok("POST", f"/collections/{name}/partitions", {"partition_tag": "p1"}, status=201)[
        "code"
    ] == 0
    assert_ok(client.create_partition(name, "p2"), "create_partition")
    parts = rest.ok("GET", f"/collections/{name}/partitions")
    status, grpc_parts = client.list_partitions(name)
    assert_ok(status)
    assert sorted(p["partition_tag"] for p in parts["partitions"]) == sorted(
        p.tag for p in grpc_parts
    ) == ["_default", "p1", "p2"]
    assert parts["count"] == 3
    checks += 1

    # --- insert (REST and gRPC), flush through /system/task ---------------------------------
    dataset: dict[int, list[float]] = {}
    in_p1: dict[int, list[float]] = {}
    vectors = float_vectors(rng, 200, DIM)
    reply = rest.ok("POST", f"/collections/{name}/vectors", {"vectors": vectors}, status=201)
    ids = [int(i) for i in reply["ids"]]
    assert all(isinstance(i, str) for i in reply["ids"]) and len(set(ids)) == 200
    dataset.update(zip(ids, vectors))
    more = float_vectors(rng, 150, DIM)
    dataset.update(zip(insert(client, name, more), more))
    p1_vectors = float_vectors(rng, 50, DIM)
    reply = rest.ok(
        "POST",
        f"/collections/{name}/vectors",
        {"vectors": p1_vectors, "partition_tag": "p1"},
        status=201,
    )
    in_p1.update(zip((int(i) for i in reply["ids"]), p1_vectors))
    dataset.update(in_p1)
    assert len(dataset) == 400
    flushed = rest.ok("PUT", "/system/task", {"flush": {"collection_names": [name]}})
    assert flushed == {"code": 0, "message": "OK"}, flushed
    assert rest.ok("GET", f"/collections/{name}")["count"] == count(client, name) == 400
    checks += 1

    # --- ?info=stat and segments -------------------------------------------------------------
    stat = rest.ok("GET", f"/collections/{name}", params={"info": "stat"})
    status, grpc_stat = client.get_collection_stats(name)
    assert_ok(status, "get_collection_stats")
    assert stat == grpc_stat, (stat, grpc_stat)
    assert stat["row_count"] == 400
    assert stat["partitions"][0]["tag"] == "_default"
    seg_names = sorted(s["name"] for p in stat["partitions"] for s in (p["segments"] or []))
    if grouped:
        assert {s.split("/")[0] for s in seg_names} == {"g1", "g2"}, seg_names
    segments = rest.ok("GET", f"/collections/{name}/segments", params={"all_required": "true"})
    assert segments["code"] == 0 and segments["count"] == len(seg_names)
    assert sorted(s["name"] for s in segments["segments"]) == seg_names
    by_tag = {s["name"]: s["partition_tag"] for s in segments["segments"]}
    p1_only = rest.ok("GET", f"/collections/{name}/segments", params={"partition_tag": "p1"})
    assert {s["name"] for s in p1_only["segments"]} == {n for n, t in by_tag.items() if t == "p1"}
    for seg in seg_names:
        rest_ids = rest.ok("GET", f"/collections/{name}/segments/{seg}/ids", params={"page_size": 1000})
        status, grpc_ids = client.list_id_in_segment(name, seg)
        assert_ok(status, f"list_id_in_segment {seg}")
        assert [int(i) for i in rest_ids["ids"]] == list(grpc_ids)
        assert rest_ids["count"] == len(grpc_ids)
        page = rest.ok("GET", f"/collections/{name}/segments/{seg}/vectors", params={"page_size": 5})
        assert page["code"] == 0, page
        assert [int(v["id"]) for v in page["vectors"]] == list(grpc_ids)[:5]
        for v in page["vectors"]:
            assert same_vector(v["vector"], dataset[int(v["id"])]), v
    checks += 3

    # --- get by id ---------------------------------------------------------------------------
    some = list(dataset)[:7] + [max(dataset) + 12345]  # the last one does not exist
    got = rest.ok("GET", f"/collections/{name}/vectors", params={"ids": ",".join(map(str, some))})
    status, grpc_got = client.get_entity_by_id(name, some)
    assert_ok(status, "get_entity_by_id")
    assert got["code"] == 0 and [int(v["id"]) for v in got["vectors"]] == some
    for v, g in zip(got["vectors"], grpc_got):
        assert same_vector(v["vector"], list(g)), (v, g)
    assert got["vectors"][-1]["vector"] == [] and not list(grpc_got[-1])
    for v in got["vectors"][:-1]:
        assert same_vector(v["vector"], dataset[int(v["id"])])
    checks += 1

    # --- searches: vectors, partition tags, ids, file ids ------------------------------------
    queries = float_vectors(rng, 4, DIM)
    searches = 0
    for topk in (1, 10, 50):
        body = {"search": {"topk": topk, "params": {}, "vectors": queries}}
        rows = rest_rows(rest.ok("PUT", f"/collections/{name}/vectors", body), len(queries))
        assert_search_matches(rows, queries, dataset, MetricType.L2, topk)
        assert_same_hits(rows, search(client, name, queries, topk))
        searches += 2
    body = {"search": {"topk": 10, "params": {}, "vectors": queries, "partition_tags": ["p1"]}}
    rows = rest_rows(rest.ok("PUT", f"/collections/{name}/vectors", body), len(queries))
    assert_search_matches(rows, queries, in_p1, MetricType.L2, 10)
    assert_same_hits(rows, search(client, name, queries, 10, partition_tags=["p1"]))
    searches += 2
    by_id = list(dataset)[100:103]
    body = {"search": {"topk": 5, "params": {}, "ids": [str(i) for i in by_id]}}
    rows = rest_rows(rest.ok("PUT", f"/collections/{name}/vectors", body), len(by_id))
    id_queries = [dataset[i] for i in by_id]
    assert_search_matches(rows, id_queries, dataset, MetricType.L2, 5)
    assert_same_hits(rows, search(client, name, id_queries, 5))
    assert [row[0] for row in rows.id_array] == by_id  # each finds itself first
    searches += 2
    files = file_ids(name)
    assert files, "searchable files after the flush"
    body = {"search": {"topk": 10, "params": {}, "vectors": queries, "file_ids": [str(f) for f in files]}}
    rows = rest_rows(rest.ok("PUT", f"/collections/{name}/vectors", body), len(queries))
    assert_search_matches(rows, queries, dataset, MetricType.L2, 10)
    status, grpc_rows = search_in_files_unchecked(client, name, files, queries, 10)
    assert_ok(status, "search_in_files")
    assert_same_hits(rows, grpc_rows)
    searches += 2
    checks += 4

    # --- indexes -----------------------------------------------------------------------------
    made = rest.ok(
        "POST",
        f"/collections/{name}/indexes",
        {"index_type": "IVFFLAT", "params": {"nlist": 16}},
        status=201,
    )
    assert made["code"] == 0, made
    index = rest.ok("GET", f"/collections/{name}/indexes")
    status, grpc_index = client.get_index_info(name)
    assert_ok(status, "get_index_info")
    assert index == {"index_type": "IVFFLAT", "params": {"nlist": 16}}, index
    assert grpc_index._index_type == IndexType.IVF_FLAT and grpc_index._params == {"nlist": 16}
    one = rest.ok("GET", f"/collections/{name}")
    assert one["index"] == "IVFFLAT" and json.loads(one["index_params"]) == {"nlist": 16}
    body = {"search": {"topk": 10, "params": {"nprobe": 16}, "vectors": queries}}
    rows = rest_rows(rest.ok("PUT", f"/collections/{name}/vectors", body), len(queries))
    assert_search_matches(rows, queries, dataset, MetricType.L2, 10)  # nprobe = nlist: exact
    assert_same_hits(rows, search(client, name, queries, 10, params={"nprobe": 16}))
    searches += 2
    assert rest.call("DELETE", f"/collections/{name}/indexes").status_code == 204
    assert rest.ok("GET", f"/collections/{name}/indexes")["index_type"] == "FLAT"
    status, grpc_index = client.get_index_info(name)
    assert_ok(status)
    assert grpc_index._index_type == IndexType.FLAT
    checks += 2

    # --- delete by id ------------------------------------------------------------------------
    gone = list(dataset)[:10]
    deleted = rest.ok("PUT", f"/collections/{name}/vectors", {"delete": {"ids": [str(i) for i in gone]}})
    assert deleted == {"code": 0, "message": "OK"}, deleted
    rest.ok("PUT", "/system/task", {"flush": {"collection_names": [name]}})
    for i in gone:
        del dataset[i]
    assert rest.ok("GET", f"/collections/{name}")["count"] == count(client, name) == 390
    got = rest.ok("GET", f"/collections/{name}/vectors", params={"ids": ",".join(map(str, gone[:3]))})
    status, grpc_got = client.get_entity_by_id(name, gone[:3])
    assert_ok(status)
    assert [v["vector"] for v in got["vectors"]] == [[], [], []] and all(not list(g) for g in grpc_got)
    body = {"search": {"topk": 10, "params": {}, "vectors": queries}}
    rows = rest_rows(rest.ok("PUT", f"/collections/{name}/vectors", body), len(queries))
    assert_search_matches(rows, queries, dataset, MetricType.L2, 10)
    searches += 1
    checks += 2

    # --- /system -----------------------------------------------------------------------------
    version = rest.ok("GET", "/system/version")
    assert version["code"] == 0 and version["reply"] == client.server_version()[1], version
    sys_status = rest.ok("GET", "/system/status")
    assert sys_status["code"] == 0 and sys_status["reply"] == client.server_status()[1]
    unknown = rest.ok("GET", "/system/no_such_command")
    status, grpc_unknown = client._cmd("no_such_command")
    assert unknown["reply"] == grpc_unknown, (unknown, grpc_unknown)
    config = rest.ok("GET", "/system/config")
    assert isinstance(config.get("restart_required"), bool), config
    section, leaves = next((k, v) for k, v in config.items() if isinstance(v, dict) and v)
    key, value = next(iter(leaves.items()))
    status, grpc_value = client.get_config(section, key)
    assert_ok(status, f"get_config {section}.{key}")
    assert str(value) == str(grpc_value), (section, key, value, grpc_value)
    set_reply = rest.ok("PUT", "/system/config", {section: {key: value}})
    assert set_reply["code"] == 0, set_reply
    assert rest.ok("GET", "/system/config")[section][key] == value
    for task in (
        {"load": {"collection_name": name}},
        {"load": {"collection_name": name, "partition_tags": ["p1"]}},
        {"release": {"collection_name": name}},
        {"compact": {"collection_name": name}},
        {"flush": {"collection_names": []}},
    ):
        assert rest.ok("PUT", "/system/task", task) == {"code": 0, "message": "OK"}, task
    assert_ok(client.load_collection(name), "load_collection")
    assert_ok(client.release_collection(name), "release_collection")
    assert_ok(client.compact(name), "compact")
    # A missing collection under /system: code 4 but HTTP 400, as gRPC's code 4.
    missing = unique_name("missing")
    err = rest.error("PUT", "/system/task", {"compact": {"collection_name": missing}}, 400, 4)
    assert client.compact(missing).code == 4, err
    assert rest.ok("GET", f"/collections/{name}")["count"] == count(client, name) == 390
    checks += 5

    # --- CORS, OPTIONS, unknown route --------------------------------------------------------
    for path in ("/collections", f"/collections/{name}/vectors", "/state", "/no/such/route"):
        pre = rest.call(
            "OPTIONS",
            path,
            headers={"Origin": "http://example.test", "Access-Control-Request-Method": "PUT"},
        )
        assert pre.status_code == 204 and pre.content == b"", (path, pre.status_code, pre.text)
        for header, value in CORS.items():
            assert pre.headers.get(header) == value, (path, header, pre.headers)
        assert "Content-Type" in pre.headers.get("Access-Control-Allow-Headers", ""), pre.headers
    assert rest.call("GET", "/state").headers["Access-Control-Allow-Methods"] == CORS[
        "Access-Control-Allow-Methods"
    ]
    rest.error("GET", "/no/such/route", status=404, code=32)
    rest.error("PATCH", "/collections", status=404, code=32)
    assert rest.ok("GET", "/collections/") == rest.ok("GET", "/collections")  # one trailing /
    checks += 1

    # --- error answers (REST code vs gRPC code) ----------------------------------------------
    rest.error("GET", f"/collections/{missing}", status=404, code=4)
    assert client.get_collection_info(missing)[0].code == 4
    rest.error("GET", f"/collections/{missing}/vectors", status=404, code=4, params={"ids": "1"})
    rest.error("PUT", f"/collections/{missing}/vectors", {"search": {"topk": 1, "params": {}, "vectors": queries}}, 404, 4)
    rest.error("DELETE", f"/collections/{missing}", status=404, code=4)
    assert client.drop_collection(missing).code == 4
    rest.error("GET", "/collections/bad-name!", status=400, code=9)
    assert client.get_collection_info("bad-name!")[0].code == 9
    rest.error("POST", "/collections", {"collection_name": "bad-name!", "dimension": DIM}, 400, 9)
    rest.error("POST", "/collections", {"collection_name": name, "dimension": DIM}, 400, 9)  # exists
    rest.error("POST", "/collections", {"dimension": DIM}, 400, 34)
    rest.error("POST", "/collections", {"collection_name": unique_name()}, 400, 34)
    rest.error("POST", "/collections", raw="{not json", status=400, code=36)
    rest.error("POST", f"/collections/{name}/vectors", raw="[1,", status=400, code=36)
    rest.error("POST", f"/collections/{name}/vectors", {"ids": []}, 400, 34)
    rest.error("PUT", f"/collections/{name}/vectors", {"search": {"params": {}}}, 400, 34)
    rest.error("PUT", "/system/task", raw="{", status=400, code=36)
    rest.error("POST", f"/collections/{name}/indexes", {"params": {}}, 400, 34)
    rest.error("POST", f"/collections/{name}/partitions", {}, 400, 34)
    dim_err = rest.error("POST", f"/collections/{name}/vectors", {"vectors": [[0.5] * (DIM + 1)]}, 400)
    status, _ = client.insert(name, [[0.5] * (DIM + 1)])
    assert dim_err["code"] == status.code, (dim_err, status)
    checks += 3

    # --- drop partition and collection -------------------------------------------------------
    assert rest.call("DELETE", f"/collections/{name}/partitions", {"partition_tag": "p1"}).status_code == 204
    status, grpc_parts = client.list_partitions(name)
    assert_ok(status)
    assert sorted(p.tag for p in grpc_parts) == ["_default", "p2"]
    assert sorted(p["partition_tag"] for p in rest.ok("GET", f"/collections/{name}/partitions")["partitions"]) == [
        "_default",
        "p2",
    ]
    rest.error("DELETE", f"/collections/{name}/partitions", {"partition_tag": "_default"}, 400, 9)
    assert rest.call("DELETE", f"/collections/{name}").status_code == 204
    status, has = client.has_collection(name)
    assert_ok(status)
    assert has is False
    rest.error("GET", f"/collections/{name}", status=404, code=4)
    checks += 2
    return {"checks": checks, "searches": searches}


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


@pytest.mark.proxy
@pytest.mark.cluster
def test_http_api_matches_grpc_on_a_cluster(cluster):
    wait_http(cluster.proxy.http_url)
    started = time.monotonic()
    figures = rest_vs_grpc(
        Rest(cluster.proxy.http_url),
        milvus_client(cluster.proxy),
        lambda name: [str(i) for i in cluster.searchable_file_ids(name)],
        grouped=False,
    )
    print(f"\nHTTP API vs gRPC on a cluster: {figures} in {time.monotonic() - started:.1f}s")


@pytest.mark.groups
def test_http_api_matches_grpc_on_a_two_group_demo(tmp_path):
    port, metrics_port, http_port = free_port(), free_port(), free_port()
    demo_dir = tmp_path / "demo"
    demo = demo_process(tmp_path, port, metrics_port, http_listen=f"{HOST}:{http_port}", groups=2)
    demo.start()
    try:
        demo.wait_ready(HOST, port, need_listening_line=False)
        url = f"http://{HOST}:{http_port}"
        wait_http(url)
        assert f"HTTP API        {url}/" in demo.log_text(), demo.tail()  # the banner
        metas = {g: demo_dir / g / "db" / "meta.sqlite" for g in ("g1", "g2")}
        started = time.monotonic()
        figures = rest_vs_grpc(Rest(url), milvus_client((HOST, port)), sqlite_file_ids(metas), grouped=True)
        print(f"\nHTTP API vs gRPC on a 2-group demo: {figures} in {time.monotonic() - started:.1f}s")
    finally:
        demo.stop()


def raw_head(host: str, port: int, head: str) -> tuple[int, dict]:
    """Sends only a request head and reads the reply (status, JSON body): the server answers a
    too-large Content-Length before any body, so no body write races its reply."""
    with socket.create_connection((host, port), timeout=HTTP_TIMEOUT_S) as sock:
        sock.sendall(head.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {data!r}"
            data += chunk
        header, _, body = data.partition(b"\r\n\r\n")
        lines = header.decode().split("\r\n")
        status = int(lines[0].split()[1])
        length = next(int(l.split(":", 1)[1]) for l in lines if l.lower().startswith("content-length:"))
        while len(body) < length:
            chunk = sock.recv(65536)
            assert chunk, "connection closed mid-body"
            body += chunk
        return status, json.loads(body[:length])


@pytest.mark.proxy
@pytest.mark.cluster
def test_http_api_limits_and_read_only_access(cluster, tmp_path):
    """A second proxy over the same nodes with a 4 MiB message limit (the smallest accepted)
    and `[access] read_only = true`: 413 code 5 over the limit, 403 with gRPC's reason for
    writes, reads still served."""
    name = unique_name("ro")
    writer = milvus_client(cluster.proxy)
    assert_ok(writer.create_collection({"collection_name": name, "dimension": DIM, "index_file_size": 1024, "metric_type": MetricType.L2}))
    vectors = float_vectors(random.Random(3), 20, DIM)
    insert(writer, name, vectors)
    flush(writer, name)

    ro_dir = tmp_path / "ro-proxy"
    ro_dir.mkdir()
    proxy = start_proxy(
        ro_dir,
        backends_toml(cluster),
        tmp_path / "logs",
        server_extra='max_message_size = "4MiB"\n',
        extra="[access]\nread_only = true\n",
    )
    try:
        wait_http(proxy.http_url)
        rest = Rest(proxy.http_url)
        client = milvus_client(proxy)

        # 413 over server.max_message_size (a head declaring one byte more).
        limit = 4 * 1024 * 1024
        for length in (limit + 1, 64 * 1024 * 1024):
            status, body = raw_head(
                HOST,
                proxy.http_port,
                f"POST /collections/{name}/vectors HTTP/1.1\r\nHost: {HOST}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n",
            )
            assert status == 413 and body["code"] == 5, (status, body)
        # Exactly at the limit is no 413 (the body is read; here refused as read-only).
        body = json.dumps({"vectors": vectors}).encode()
        padded = body[:-1] + b" " * (limit - len(body)) + b"}"
        assert len(padded) == limit
        assert rest.call("POST", f"/collections/{name}/vectors", raw=padded).status_code == 403

        # Writes: 403 and the same reason as gRPC.
        create = {"collection_name": unique_name(), "dimension": DIM}
        err = rest.error("POST", "/collections", create, status=403)
        grpc_status = client.create_collection({**create, "index_file_size": 1024, "metric_type": MetricType.L2})
        assert grpc_status.code != 0
        assert err["message"] == grpc_status.message, (err, grpc_status)
        assert err["code"] == grpc_status.code, (err, grpc_status)
        err = rest.error("POST", f"/collections/{name}/vectors", {"vectors": vectors[:2]}, status=403)
        grpc_status, _ = client.insert(name, vectors[:2])
        assert err["message"] == grpc_status.message and err["code"] == grpc_status.code, (err, grpc_status)
        rest.error("PUT", f"/collections/{name}/vectors", {"delete": {"ids": ["1"]}}, status=403)
        rest.error("DELETE", f"/collections/{name}", status=403)
        print(f"\nread-only refusal: HTTP 403 {err}; gRPC {grpc_status!r}")

        # Reads still work, and agree with gRPC.
        listing = rest.ok("GET", "/collections")
        assert name in [c["collection_name"] for c in listing["collections"]]
        assert rest.ok("GET", f"/collections/{name}")["count"] == count(client, name) == 20
        body = {"search": {"topk": 3, "params": {}, "vectors": vectors[:2]}}
        rows = rest_rows(rest.ok("PUT", f"/collections/{name}/vectors", body), 2)
        assert [r[0] for r in rows.id_array] == [r[0] for r in search(client, name, vectors[:2], 3).id_array]
    finally:
        proxy.process.stop()


# --------------------------------------------------------------------------------------------
# Fuzz: schemathesis from /openapi.json
# --------------------------------------------------------------------------------------------

FUZZ_SEED = 20261204
# Per operation; MISHARDS_E2E_FUZZ_EXAMPLES raises it for a longer hunt (the time bound stays).
FUZZ_MAX_EXAMPLES = int(os.environ.get("MISHARDS_E2E_FUZZ_EXAMPLES", "30"))
FUZZ_TIMEOUT_S = 420  # the whole schemathesis run
FUZZ_COLLECTIONS = ("fuzz_float", "fuzz_binary")

FUZZ_DROP = "DELETE /collections/{collection_name}"

# Loaded by schemathesis (SCHEMATHESIS_HOOKS): two of three generated collection names are
# replaced by a live collection (chosen by a checksum of the generated value, so the run stays
# deterministic), so the fuzz reaches the handlers past the collection lookup. Dropping a
# collection keeps its generated name, and runs last on its own: schemathesis also reuses names
# it saw in replies (GET /collections), which would drop the live collections mid-run.
FUZZ_HOOKS = f"""
import zlib
import schemathesis

LIVE = {FUZZ_COLLECTIONS!r}
DROP = {FUZZ_DROP!r}

@schemathesis.hook
def map_path_parameters(ctx, path_parameters):
    name = (path_parameters or {{}}).get("collection_name")
    if name is None or ctx.operation.label == DROP:
        return path_parameters
    pick = zlib.crc32(str(name).encode()) % 3
    if pick < 2:
        path_parameters["collection_name"] = LIVE[pick]
    return path_parameters
"""


@pytest.mark.proxy
@pytest.mark.cluster
@pytest.mark.timeout(FUZZ_TIMEOUT_S + 120)
def test_http_api_fuzz(cluster, tmp_path):
    url = cluster.proxy.http_url
    wait_http(url)
    rest = Rest(url)
    rng = random.Random(FUZZ_SEED)
    for name, metric, vectors in (
        ("fuzz_float", "L2", float_vectors(rng, 100, DIM)),
        ("fuzz_binary", "HAMMING", [[rng.getrandbits(8) for _ in range(DIM // 8)] for _ in range(100)]),
    ):
        rest.ok("POST", "/collections", {"collection_name": name, "dimension": DIM, "metric_type": metric}, status=201)
        rest.ok("POST", f"/collections/{name}/partitions", {"partition_tag": "p1"}, status=201)
        rest.ok("POST", f"/collections/{name}/vectors", {"vectors": vectors}, status=201)
    rest.ok("PUT", "/system/task", {"flush": {"collection_names": list(FUZZ_COLLECTIONS)}})

    hooks = tmp_path / "fuzz_hooks.py"
    hooks.write_text(textwrap.dedent(FUZZ_HOOKS))
    # The served document, with a live collection as the example of every `collection_name`
    # (the examples and coverage phases start from it; the hooks only map the fuzzing phase)
    # and vectors of the live collections' dimension (the document cannot know it).
    document = rest.ok("GET", "/openapi.json")
    for ops in document["paths"].values():
        for op in ops.values():
            for param in op.get("parameters", []):
                if param["name"] == "collection_name":
                    param["schema"]["example"] = FUZZ_COLLECTIONS[0]
    def sized(node):
        if isinstance(node, dict):
            if node.get("type") == "array" and node.get("items", {}).get("items", {}).get("type") == "number":
                node.update(maxItems=20)
                node["items"].update(minItems=DIM, maxItems=DIM)
            for value in node.values():
                sized(value)
        elif isinstance(node, list):
            for value in node:
                sized(value)

    sized(document)
    schema_file = tmp_path / "openapi.json"
    schema_file.write_text(json.dumps(document))
    runs = [("--exclude-name", FUZZ_DROP), ("--include-name", FUZZ_DROP)]
    totals = {"operations": set(), "cases": 0, "requests": 0, "failures": 0}
    started = time.monotonic()
    outputs = []
    for i, selection in enumerate(runs):
        budget = FUZZ_TIMEOUT_S - (time.monotonic() - started)
        done, figures = run_schemathesis(url, schema_file, selection, tmp_path / f"schemathesis-{i}.ndjson", budget)
        outputs.append(done)
        totals["operations"] |= figures.pop("operations")
        for key, value in figures.items():
            totals[key] += value
    elapsed = time.monotonic() - started
    summaries = [next((l for l in reversed(d.stdout.splitlines()) if l.strip()), "") for d in outputs]
    print(
        f"\nschemathesis (seed {FUZZ_SEED}, max {FUZZ_MAX_EXAMPLES} examples per operation): "
        f"{len(totals['operations'])} operations, {totals['cases']} test cases, "
        f"{totals['requests']} requests, {totals['failures']} failures, {elapsed:.1f}s; "
        f"exit {[d.returncode for d in outputs]}: {summaries}"
    )
    # The proxy is still up and answers, over REST and gRPC.
    assert requests.get(f"{url}/state", timeout=5).json() == {"message": "Success", "code": 0}
    assert rest.ok("GET", "/collections")["count"] >= 0
    status, _ = milvus_client(cluster.proxy).list_collections()
    assert_ok(status, "list_collections after the fuzz")
    for done in outputs:
        assert done.returncode == 0, (
            f"schemathesis exit {done.returncode}\n{done.stdout[-12000:]}\n{done.stderr[-3000:]}"
        )
    assert totals["failures"] == 0, totals
    documented = {f"{m.upper()} {p}" for p, ops in document["paths"].items() for m in ops}
    assert totals["operations"] == documented, documented ^ totals["operations"]


def run_schemathesis(url: str, schema_file: Path, selection: tuple[str, str], report: Path, budget: float):
    """One bounded schemathesis run over the selected operations: (completed process, figures)."""
    argv = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        str(schema_file),
        "--url",
        url,
        *selection,
        "--checks",
        "not_a_server_error",
        "--max-examples",
        str(FUZZ_MAX_EXAMPLES),
        "--seed",
        str(FUZZ_SEED),
        "--phases",
        "examples,coverage,fuzzing",
        "--workers",
        "1",
        "--request-timeout",
        "20",
        "--generation-database",
        "none",
        "--suppress-health-check",
        "all",
        "--no-color",
        "--report",
        "ndjson",
        "--report-ndjson-path",
        str(report),
    ]
    tmp_path = schema_file.parent
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "fuzz_hooks", "PYTHONPATH": str(tmp_path)}
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=max(budget, 10), env=env, cwd=tmp_path
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout
        pytest.fail(
            f"schemathesis {selection} did not finish within {budget:.0f}s (a hang?)\n"
            f"{(out or '')[-4000:]}",
            pytrace=False,
        )
    (report.with_suffix(".out")).write_text(done.stdout + done.stderr)
    return done, fuzz_figures(report)


def fuzz_figures(report: Path) -> dict:
    """Operations, test cases, requests and failures, from schemathesis' NDJSON events."""
    operations, cases, requests_, failures = set(), 0, 0, 0
    if not report.exists():
        return {"operations": set(), "cases": 0, "requests": 0, "failures": 0}
    for line in report.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        for kind, body in event.items():
            if not isinstance(body, dict):
                continue
            if kind == "ScenarioFinished":
                label = body.get("label") or body.get("recorder", {}).get("label")
                if label:
                    operations.add(label)
                recorder = body.get("recorder") or {}
                interactions = recorder.get("interactions") or {}
                requests_ += len(interactions)
                cases += len(recorder.get("cases") or {})
                for checks in (recorder.get("checks") or {}).values():
                    failures += sum(1 for c in checks if str(c.get("status")).lower() != "success")
    return {"operations": operations, "cases": cases, "requests": requests_, "failures": failures}
