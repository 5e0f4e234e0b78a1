"""End-to-end tests: real `mishards` processes driven by pymilvus 1.1.2 over gRPC.

Run them
    scripts/test                                   # lint, build, Rust tests, then these
    MISHARDS_BIN=target/debug/mishards .venv/bin/python -m pytest -q tests/e2e
    ... -m proxy / -m "not proxy"                  # only the proxy runs / all but them
    ... -k "[node" / -k "[proxy"                   # the shared suite against one target
    ... -m juicefs / -m "not juicefs"              # only the JuiceFS runs / all but them
    ... -m groups / -k "proxy-groups"              # only the runs over two shard groups

The suites
    test_milvus_api.py   the Milvus 1.1 API, each scenario run against every target of `target`
    test_node_only.py    what only a node does: restart, the ro nodes of a cluster
    test_proxy_only.py   what only the proxy does: `Cmd("route")`, /metrics, the writer down
    test_shared_storage.py  read-your-writes after flush and delete on every reader, on a local
                         data dir and on JuiceFS (one mount per node)
    test_http_api.py     Milvus' HTTP API (requests) against gRPC on the same proxy (`cluster`,
                         `mishards demo --groups 2`), its error answers, 413, read-only access,
                         and a schemathesis fuzz run from /openapi.json (no 5xx, no hang)

Fixtures (each process on a free 127.0.0.1 port, in its own process group, killed at teardown,
also when the test fails)
    target            parametrised, ids `node`, `proxy`, `proxy-juicefs` and `proxy-groups`: a
                      `Target` with a connected client to a standalone node, to the proxy of
                      `cluster`, of `juicefs_cluster` or of `grouped_cluster`. All keep one
                      segment file per flush (no background merges). Over groups a flush makes
                      one file per group that got rows, segment names and file ids are
                      qualified ("g1/<name>") and counts add up over groups; `Target.groups`
                      names the groups (empty for one cluster) for the scenarios whose
                      assertions depend on that.
    standalone_node   one `mishards node --role rw` over SQLite in the test's tmp dir, merging
                      in the background as by default; unpacks as (host, port, data_dir,
                      meta_uri) and has .restart()
    cluster           one rw node and two ro nodes sharing one data dir and one fresh MariaDB
                      database `mishards_e2e_<random>` (dropped at teardown), plus the proxy
                      (`mishards serve`) with a generated TOML config
    juicefs_volume    (session) one JuiceFS volume (juicefs.py: Redis metadata, local "file"
                      bucket) mounted three times, once per node of a cluster ("rw", "ro1",
                      "ro2"), each mount its own client with the default 1 s caches
    juicefs_cluster   `cluster` with its data dir a fresh folder of `juicefs_volume`, which each
                      node reaches through its own mount (metadata still in MariaDB); the folder
                      is removed at teardown. Skipped where JuiceFS cannot run (no /dev/fuse, no
                      juicefs binary, no Redis) unless MISHARDS_REQUIRE_JUICEFS=1
    grouped_cluster   two shard groups (servers.GROUPS: g1 with a rw and two ro nodes, g2 with
                      a rw and one ro node), each its own data dir and fresh MariaDB database
                      `mishards_e2e_<random>` (dropped at teardown), behind one proxy whose
                      config lists them as `[[groups]]` with `[placement] default = "spread"`

Modules: servers.py (processes, set-ups, MariaDB, the proxy's generated configs), juicefs.py (JuiceFS volumes, the locking
protocol shared with tests/common/juicefs.rs), milvus_calls.py (pymilvus calls that check
their status, status codes), oracle.py (test data and the brute-force oracle).

Environment
    MISHARDS_BIN          binary under test (default <repo>/target/debug/mishards)
    MISHARDS_E2E_MYSQL    MariaDB/MySQL server for `cluster` (default mysql://root@127.0.0.1:3306);
                          the `mariadb` or `mysql` command-line client must be on PATH
    MISHARDS_E2E_SETTLE_S seconds to wait after a write before reading through the proxy (0)
    MISHARDS_JUICEFS, MISHARDS_TEST_REDIS, MISHARDS_REQUIRE_JUICEFS   see juicefs.py

Each process logs to <tmp_path>/logs/<name>.log. At teardown the tail of every log is printed,
which pytest shows under "Captured stdout teardown" for a failing test.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from dataclasses import dataclass
from typing import Callable

import pytest

import juicefs
from milvus_calls import Milvus, flush, milvus_client
from servers import (
    CLUSTER_NODES,
    GROUPS,
    NO_MERGES,
    PROXY_REFRESH_S,
    PROXY_SETTLE_S,
    Cluster,
    GroupedCluster,
    MysqlServer,
    running_cluster,
    running_groups,
    running_standalone_node,
)

TEST_TIMEOUT_S = 300


# --------------------------------------------------------------------------------------------
# pytest hooks
# --------------------------------------------------------------------------------------------


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "proxy: goes through the `mishards serve` proxy of the `cluster` fixture"
    )
    config.addinivalue_line(
        "markers", "cluster: needs the rw + ro nodes over MariaDB of the `cluster` fixture"
    )
    config.addinivalue_line(
        "markers", "juicefs: the nodes' data dir is on a JuiceFS volume, one mount per node"
    )
    config.addinivalue_line(
        "markers", "groups: the proxy of `grouped_cluster`, over two shard groups (clusters)"
    )


def pytest_collection_modifyitems(config, items):
    # pymilvus' synchronous search sends no deadline, so a hung server would hang the run:
    # give every test a time limit unless it sets its own.
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(TEST_TIMEOUT_S))


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def mysql_server() -> MysqlServer:
    server = MysqlServer(os.environ.get("MISHARDS_E2E_MYSQL", "mysql://root@127.0.0.1:3306"))
    server.execute("SELECT 1")
    return server


@pytest.fixture
def standalone_node(tmp_path):
    """One rw node over SQLite in tmp_path. Unpacks as (host, port, data_dir, meta_uri)."""
    with running_standalone_node(tmp_path) as node:
        yield node


@pytest.fixture
def cluster(tmp_path, mysql_server):
    """rw node + 2 ro nodes (shared data dir, one fresh MariaDB database) + the proxy."""
    with running_cluster(tmp_path, mysql_server) as running:
        yield running


@pytest.fixture(scope="session")
def juicefs_volume():
    """One JuiceFS volume for the session, mounted once per node of a cluster: {name: mount}."""
    juicefs.require_or_skip("a test on a JuiceFS volume (proxy-juicefs, [juicefs])")
    volume = juicefs.Volume("pytest tests/e2e")
    try:
        mounts = {name: volume.mount(name) for name in CLUSTER_NODES}
        yield mounts
    finally:
        volume.close()


@pytest.fixture
def juicefs_cluster(tmp_path, mysql_server, juicefs_volume):
    """`cluster` with its data dir a fresh folder of the JuiceFS volume, one mount per node."""
    folder = f"data-{uuid.uuid4().hex[:12]}"
    data_dirs = {name: mount / folder for name, mount in juicefs_volume.items()}
    try:
        with running_cluster(tmp_path, mysql_server, data_dirs=data_dirs) as running:
            yield running
    finally:
        # Keeps the session's volume small; the volume goes at the end of the session anyway.
        shutil.rmtree(data_dirs["rw"], ignore_errors=True)


@pytest.fixture
def grouped_cluster(tmp_path, mysql_server):
    """Two shard groups (each rw + ro nodes, own data dir and MariaDB database) + one proxy."""
    with running_groups(tmp_path, mysql_server, GROUPS) as running:
        yield running


@dataclass
class Target:
    """What a shared scenario runs against, and what it may need to know about it."""

    kind: str  # "node" or "proxy" (also for proxy-juicefs and proxy-groups)
    host: str
    port: int
    client: Milvus
    # TableFiles.id of the RAW/TO_INDEX/INDEX files of a collection, from the target's meta;
    # over groups qualified by group ("g1/12"), as the proxy takes them there.
    searchable_file_ids: Callable[[str], list[int] | list[str]]
    # Seconds to wait after a write before reading through the target (the proxy's topology).
    settle_s: float = 0.0
    # How long a write the target did not make itself (the rw node's own background flush) may
    # take to reach its searches: none for a node, one topology refresh for the proxy (README).
    foreign_write_lag_s: float = 0.0
    # Where the segment files are: "local" (a local dir) or "juicefs" (a mount per node).
    storage: str = "local"
    # The shard groups behind the proxy, in config order; empty for a node or one cluster.
    groups: tuple[str, ...] = ()

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"

    def connect(self) -> Milvus:
        """Another client of the target (pymilvus: one channel per thread anyway)."""
        return milvus_client(self)

    def settle(self):
        time.sleep(self.settle_s)

    def flush(self, name: str):
        """Flush, then give the target time to see the new files."""
        flush(self.client, name)
        self.settle()


@pytest.fixture(
    params=[
        pytest.param("node", id="node"),
        pytest.param("proxy", id="proxy", marks=[pytest.mark.proxy, pytest.mark.cluster]),
        pytest.param(
            "proxy-juicefs",
            id="proxy-juicefs",
            marks=[pytest.mark.proxy, pytest.mark.cluster, pytest.mark.juicefs],
        ),
        pytest.param(
            "proxy-groups",
            id="proxy-groups",
            marks=[pytest.mark.proxy, pytest.mark.cluster, pytest.mark.groups],
        ),
    ]
)
def target(request, tmp_path) -> Target:
    """A standalone node over SQLite, the proxy in front of `cluster`, the proxy in front of
    `juicefs_cluster` (the same over MariaDB, its segment files on JuiceFS), or the proxy over
    the two shard groups of `grouped_cluster`, all without merges."""
    if request.param == "node":
        with running_standalone_node(tmp_path, extra_args=NO_MERGES) as node:
            yield Target(
                kind="node",
                host=node.host,
                port=node.port,
                client=milvus_client(node),
                searchable_file_ids=node.searchable_file_ids,
            )
    elif request.param == "proxy-groups":
        grouped: GroupedCluster = request.getfixturevalue("grouped_cluster")
        yield Target(
            kind="proxy",
            host=grouped.proxy.host,
            port=grouped.proxy.port,
            client=milvus_client(grouped.proxy),
            searchable_file_ids=grouped.searchable_file_ids,
            settle_s=PROXY_SETTLE_S,
            foreign_write_lag_s=PROXY_REFRESH_S,
            groups=tuple(grouped.groups),
        )
    else:
        on_juicefs = request.param == "proxy-juicefs"
        running: Cluster = request.getfixturevalue("juicefs_cluster" if on_juicefs else "cluster")
        yield Target(
            kind="proxy",
            host=running.proxy.host,
            port=running.proxy.port,
            client=milvus_client(running.proxy),
            searchable_file_ids=running.searchable_file_ids,
            settle_s=PROXY_SETTLE_S,
            foreign_write_lag_s=PROXY_REFRESH_S,
            storage="juicefs" if on_juicefs else "local",
        )
