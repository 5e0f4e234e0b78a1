"""End-to-end tests: real `mishards` processes driven by pymilvus 1.1.2 over gRPC.

Run them
    scripts/test                                   # lint, build, Rust tests, then these
    MISHARDS_BIN=target/debug/mishards .venv/bin/python -m pytest -q tests/e2e
    ... -m proxy / -m "not proxy"                  # only the proxy tests / all but them

Fixtures (each process on a free 127.0.0.1 port, in its own process group, killed at teardown,
also when the test fails)
    standalone_node   one `mishards node --role rw` over SQLite in the test's tmp dir;
                      unpacks as (host, port, data_dir, meta_uri) and has .restart()
    cluster           one rw node and two ro nodes sharing one data dir and one fresh MariaDB
                      database `mishards_e2e_<random>` (dropped at teardown), plus the proxy
                      (`mishards serve`) with a generated TOML config
    milvus_client(a)  a plain helper: pymilvus `Milvus` connected to "host:port", (host, port)
                      or anything with .host and .port

Environment
    MISHARDS_BIN          binary under test (default <repo>/target/debug/mishards)
    MISHARDS_E2E_MYSQL    MariaDB/MySQL server for `cluster` (default mysql://root@127.0.0.1:3306);
                          the `mariadb` or `mysql` command-line client must be on PATH

Each process logs to <tmp_path>/logs/<name>.log. At teardown the tail of every log is printed,
which pytest shows under "Captured stdout teardown" for a failing test.

Search results are checked against a pure-Python brute-force oracle (`assert_search_matches`):
the data sets are small (hundreds to a few thousand vectors), so no numpy is needed. Vectors
are rounded to float32 before they are sent, so the oracle sees exactly what the server stores.
"""

from __future__ import annotations

import atexit
import math
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence
from urllib.parse import urlparse

import warnings

import pytest

with warnings.catch_warnings():
    # pymilvus 1.1.2's generated protobuf code and its use of pkg_resources are deprecated.
    warnings.simplefilter("ignore", DeprecationWarning)
    warnings.simplefilter("ignore", UserWarning)
    from milvus import Milvus, MetricType, Status

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
TEST_TIMEOUT_S = 300
LOG_TAIL_LINES = 40
# The proxy re-reads its topology every PROXY_REFRESH; tests that just created files wait a few
# refresh periods before searching through the proxy. Set it to 0 to probe for stale routing.
PROXY_REFRESH = "200ms"
PROXY_SETTLE_S = float(os.environ.get("MISHARDS_E2E_SETTLE_S", "0"))  # read-your-writes: no sleep needed

# pymilvus status codes used by the tests (milvus/client/types.py: Status.*)
SUCCESS = Status.SUCCESS  # 0
UNEXPECTED_ERROR = Status.UNEXPECTED_ERROR  # 1
COLLECTION_NOT_EXISTS = Status.COLLECTION_NOT_EXISTS  # 4
ILLEGAL_ARGUMENT = Status.ILLEGAL_ARGUMENT  # 5
ILLEGAL_DIMENSION = Status.ILLEGAL_DIMENSION  # 7
ILLEGAL_COLLECTION_NAME = Status.ILLEGAL_COLLECTION_NAME  # 9
ILLEGAL_TOPK = Status.ILLEGAL_TOPK  # 10
ILLEGAL_VECTOR_ID = Status.ILLEGAL_VECTOR_ID  # 12


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


def pytest_collection_modifyitems(config, items):
    # pymilvus' synchronous search sends no deadline, so a hung server would hang the run:
    # give every test a time limit unless it sets its own.
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(TEST_TIMEOUT_S))


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------

_LIVE_PROCESSES: set["ManagedProcess"] = set()


def _stop_all_live_processes():
    for proc in list(_LIVE_PROCESSES):
        proc.stop(timeout=2.0)


atexit.register(_stop_all_live_processes)


def _terminate_on_sigterm(signum, frame):
    # Turn SIGTERM (e.g. from `timeout` in scripts/test) into an exception so that fixture
    # teardown and the atexit hook still stop the child processes.
    raise KeyboardInterrupt(f"signal {signum}")


signal.signal(signal.SIGTERM, _terminate_on_sigterm)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, then release)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def mishards_bin() -> str:
    path = Path(os.environ.get("MISHARDS_BIN", REPO_ROOT / "target" / "debug" / "mishards"))
    if not path.is_absolute():
        path = REPO_ROOT / path
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(
            f"mishards binary not found at {path}: run `cargo build` (or scripts/test), "
            "or point MISHARDS_BIN at it",
            pytrace=False,
        )
    return str(path)


def port_accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class ManagedProcess:
    """One child process in its own process group, its stdout+stderr in a log file."""

    def __init__(self, name: str, argv: Sequence[str], log_dir: Path):
        self.name = name
        self.argv = list(argv)
        self.log_path = log_dir / f"{name}.log"
        self.popen: subprocess.Popen | None = None
        self._log_offset = 0

    def start(self):
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.setdefault("RUST_BACKTRACE", "1")
        env.setdefault("RUST_LOG", "info")
        with open(self.log_path, "ab") as log:
            self._log_offset = log.tell()
            log.write(f"$ {' '.join(self.argv)}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO_ROOT,
                start_new_session=True,
            )
        _LIVE_PROCESSES.add(self)

    def log_text(self, since_start: bool = True) -> str:
        try:
            data = self.log_path.read_bytes()
        except FileNotFoundError:
            return ""
        if since_start:
            data = data[self._log_offset :]
        return data.decode("utf-8", errors="replace")

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return "\n".join(self.log_text(since_start=False).splitlines()[-lines:])

    def wait_ready(self, host: str, port: int, need_listening_line: bool):
        """Wait until the port accepts connections (and the `listening on` line was printed)."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.popen is not None
            code = self.popen.poll()
            if code is not None:
                _LIVE_PROCESSES.discard(self)
                pytest.fail(
                    f"{self.name} exited with code {code} before it was ready.\n"
                    f"--- {self.log_path} ---\n{self.tail()}",
                    pytrace=False,
                )
            line_ok = not need_listening_line or "listening on" in self.log_text()
            if line_ok and port_accepts(host, port):
                return
            time.sleep(0.05)
        self.stop()
        pytest.fail(
            f"{self.name} was not ready on {host}:{port} within {READY_TIMEOUT_S:.0f}s"
            f" (needed 'listening on' in its log: {need_listening_line}).\n"
            f"--- {self.log_path} ---\n{self.tail()}",
            pytrace=False,
        )

    def stop(self, timeout: float = STOP_TIMEOUT_S):
        """SIGTERM the process group, then SIGKILL it if it is still there after `timeout`."""
        popen = self.popen
        if popen is None:
            return
        if popen.poll() is None:
            _signal_group(popen.pid, signal.SIGTERM)
            try:
                popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal_group(popen.pid, signal.SIGKILL)
                popen.wait(timeout=timeout)
        # Children that outlived the leader, if any.
        _signal_group(popen.pid, signal.SIGKILL)
        _LIVE_PROCESSES.discard(self)

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


def _signal_group(pgid: int, sig: int):
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass
class NodeHandle:
    """A running `mishards node`. Unpacks as (host, port, data_dir, meta_uri)."""

    name: str
    role: str
    host: str
    port: int
    data_dir: Path
    meta_uri: str
    extra_args: list[str]
    log_dir: Path
    process: ManagedProcess | None = None

    def __iter__(self):
        return iter((self.host, self.port, self.data_dir, self.meta_uri))

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"

    def argv(self) -> list[str]:
        return [
            mishards_bin(),
            "node",
            "--role",
            self.role,
            "--listen",
            self.addr,
            "--data-dir",
            str(self.data_dir),
            "--meta-uri",
            self.meta_uri,
            *self.extra_args,
        ]

    def start(self, wait: bool = True):
        self.process = ManagedProcess(self.name, self.argv(), self.log_dir)
        self.process.start()
        if wait:
            self.wait_ready()

    def wait_ready(self):
        assert self.process is not None
        self.process.wait_ready(self.host, self.port, need_listening_line=True)

    def stop(self):
        if self.process is not None:
            self.process.stop()

    def restart(self):
        """Stop the node (SIGTERM, then SIGKILL) and start it again on the same port and dirs."""
        self.stop()
        self.start()

    def client(self) -> Milvus:
        return milvus_client(self)


@dataclass
class ProxyHandle:
    host: str
    port: int
    metrics_port: int
    config_path: Path
    process: ManagedProcess

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def client(self) -> Milvus:
        return milvus_client(self)


@dataclass
class Cluster:
    rw: NodeHandle
    ro: list[NodeHandle]
    proxy: ProxyHandle
    meta_uri: str
    database: str
    data_dir: Path
    mysql: "MysqlServer" = field(repr=False)

    def query(self, sql: str) -> list[list[str]]:
        """Run SQL against the cluster's meta database with the mysql/mariadb client."""
        return self.mysql.execute(sql, database=self.database)

    def searchable_file_ids(self, collection: str) -> list[int]:
        """TableFiles.id of the RAW/TO_INDEX/INDEX files of a collection and its partitions."""
        name = sql_string(collection)
        rows = self.query(
            "SELECT f.id FROM TableFiles f JOIN Tables t ON f.table_id = t.table_id "
            f"WHERE (t.table_id = {name} OR t.owner_table = {name}) AND t.state <> 1 "
            "AND f.file_type IN (1, 2, 3) ORDER BY f.id"
        )
        return [int(row[0]) for row in rows]


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


def _print_log_tails(processes: Iterable[ManagedProcess | None]):
    for proc in processes:
        if proc is not None:
            print(f"\n--- tail of {proc.log_path} ---\n{proc.tail()}")


# --------------------------------------------------------------------------------------------
# MariaDB / MySQL
# --------------------------------------------------------------------------------------------


def sql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


class MysqlServer:
    """The MariaDB server of MISHARDS_E2E_MYSQL, used through its command-line client."""

    def __init__(self, url: str):
        parsed = urlparse(url)
        if parsed.scheme != "mysql":
            raise ValueError(f"MISHARDS_E2E_MYSQL must be a mysql:// URL, got {url!r}")
        self.host = parsed.hostname or HOST
        self.port = parsed.port or 3306
        self.user = parsed.username or "root"
        self.password = parsed.password or ""
        client = shutil.which("mariadb") or shutil.which("mysql")
        if client is None:
            pytest.fail("neither `mariadb` nor `mysql` client is on PATH", pytrace=False)
        self.client = client

    def uri(self, database: str) -> str:
        auth = self.user if not self.password else f"{self.user}:{self.password}"
        return f"mysql://{auth}@{self.host}:{self.port}/{database}"

    def execute(self, sql: str, database: str | None = None) -> list[list[str]]:
        argv = [
            self.client,
            f"--host={self.host}",
            f"--port={self.port}",
            "--protocol=TCP",
            f"--user={self.user}",
            "--batch",
            "--skip-column-names",
            f"--execute={sql}",
        ]
        if database:
            argv.append(database)
        env = dict(os.environ)
        if self.password:
            env["MYSQL_PWD"] = self.password
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env)
        if done.returncode != 0:
            pytest.fail(
                f"SQL failed ({done.returncode}): {sql}\n{done.stderr.strip()}", pytrace=False
            )
        return [line.split("\t") for line in done.stdout.splitlines() if line]


@pytest.fixture(scope="session")
def mysql_server() -> MysqlServer:
    server = MysqlServer(os.environ.get("MISHARDS_E2E_MYSQL", "mysql://root@127.0.0.1:3306"))
    server.execute("SELECT 1")
    return server


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture
def standalone_node(tmp_path):
    """One rw node over SQLite in tmp_path. Unpacks as (host, port, data_dir, meta_uri)."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    node = NodeHandle(
        name="standalone-rw",
        role="rw",
        host=HOST,
        port=free_port(),
        data_dir=data_dir,
        meta_uri=f"sqlite://{tmp_path / 'meta.sqlite'}",
        extra_args=["--flush-interval", "1s"],
        log_dir=tmp_path / "logs",
    )
    try:
        node.start()
        yield node
    finally:
        node.stop()
        _print_log_tails([node.process])


@pytest.fixture
def cluster(tmp_path, mysql_server):
    """rw node + 2 ro nodes (shared data dir, one fresh MariaDB database) + the proxy."""
    database = f"mishards_e2e_{uuid.uuid4().hex[:12]}"
    mysql_server.execute(f"CREATE DATABASE `{database}`")
    meta_uri = mysql_server.uri(database)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    log_dir = tmp_path / "logs"
    # Long merge interval: the tests want each flush to leave its own segment file.
    node_args = ["--flush-interval", "1s", "--merge-interval", "1h"]

    def make_node(name: str, role: str) -> NodeHandle:
        return NodeHandle(
            name=name,
            role=role,
            host=HOST,
            port=free_port(),
            data_dir=data_dir,
            meta_uri=meta_uri,
            extra_args=node_args,
            log_dir=log_dir,
        )

    rw = make_node("rw", "rw")
    ro = [make_node("ro1", "ro"), make_node("ro2", "ro")]
    proxy: ProxyHandle | None = None
    try:
        rw.start()  # creates the meta schema; the ro nodes expect it
        for node in ro:
            node.start(wait=False)
        for node in ro:
            node.wait_ready()
        proxy = _start_proxy(tmp_path, meta_uri, rw, ro, log_dir)
        yield Cluster(
            rw=rw,
            ro=ro,
            proxy=proxy,
            meta_uri=meta_uri,
            database=database,
            data_dir=data_dir,
            mysql=mysql_server,
        )
    finally:
        if proxy is not None:
            proxy.process.stop()
        for node in [*ro, rw]:
            node.stop()
        _print_log_tails([proxy.process if proxy else None, rw.process, *(n.process for n in ro)])
        mysql_server.execute(f"DROP DATABASE IF EXISTS `{database}`")


def _start_proxy(tmp_path: Path, meta_uri: str, rw: NodeHandle, ro: list[NodeHandle], log_dir):
    port, metrics_port = free_port(), free_port()
    readonly = ", ".join(f'"{node.addr}"' for node in ro)
    config_path = tmp_path / "mishards.toml"
    config_path.write_text(
        f"""[server]
listen = "{HOST}:{port}"

[metrics]
listen = "{HOST}:{metrics_port}"

[meta]
uri = "{meta_uri}"

[backends]
writable = "{rw.addr}"
readonly = [{readonly}]

[topology]
refresh_interval = "{PROXY_REFRESH}"
"""
    )
    argv = [mishards_bin(), "serve", "--config", str(config_path)]
    process = ManagedProcess("proxy", argv, log_dir)
    process.start()
    process.wait_ready(HOST, port, need_listening_line=False)
    time.sleep(PROXY_SETTLE_S)  # let the first topology refresh find the nodes
    return ProxyHandle(HOST, port, metrics_port, config_path, process)


# --------------------------------------------------------------------------------------------
# Data and the brute-force oracle
# --------------------------------------------------------------------------------------------


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
