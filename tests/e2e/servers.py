"""The servers the e2e tests drive: `mishards node` and `mishards serve` processes, and MariaDB.

Each process runs on a free 127.0.0.1 port in its own process group, logs to
<log_dir>/<name>.log and is killed at teardown (also on SIGTERM and at exit).
`running_standalone_node`, `running_cluster` (one cluster's nodes, `running_nodes`, behind the
proxy) and `running_groups` (several such clusters behind one proxy, as shard groups) start and
stop a whole set-up; conftest.py turns them into fixtures.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
import uuid
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Iterable, Iterator, Sequence
from urllib.parse import urlparse

import pytest

from milvus_calls import Milvus, milvus_client

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
LOG_TAIL_LINES = 40
# The proxy re-reads its topology every PROXY_REFRESH; tests that just created files wait a few
# refresh periods before searching through the proxy. Set it to 0 to probe for stale routing.
PROXY_REFRESH = "200ms"
PROXY_REFRESH_S = 0.2
PROXY_SETTLE_S = float(os.environ.get("MISHARDS_E2E_SETTLE_S", "0"))  # read-your-writes: no sleep needed
# Long merge interval: each flush leaves its own segment file, which the tests count.
NO_MERGES = ["--merge-interval", "1h"]

# The RAW/TO_INDEX/INDEX files (TableFiles.id) of a live collection and its partitions. `{name}`
# is the collection name as an SQL literal or a placeholder.
SEARCHABLE_FILES_SQL = (
    "SELECT f.id FROM TableFiles f JOIN Tables t ON f.table_id = t.table_id "
    "WHERE (t.table_id = {name} OR t.owner_table = {name}) AND t.state <> 1 "
    "AND f.file_type IN (1, 2, 3) ORDER BY f.id"
)


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
            # Milvus' HTTP API on a free port: many nodes run at once.
            "--http-port",
            "0",
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

    def searchable_file_ids(self, collection: str) -> list[int]:
        """TableFiles.id of the searchable files of a collection, read from the SQLite meta."""
        assert self.meta_uri.startswith("sqlite://"), f"not a SQLite meta: {self.meta_uri}"
        path = self.meta_uri.removeprefix("sqlite://")
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            rows = db.execute(SEARCHABLE_FILES_SQL.format(name="?"), (collection, collection))
            return [int(row[0]) for row in rows]


@dataclass
class ProxyHandle:
    host: str
    port: int
    metrics_port: int
    config_path: Path
    process: ManagedProcess
    http_port: int = 0  # Milvus' HTTP API ([http_api] listen)

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    @property
    def readyz_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/readyz"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    def client(self) -> Milvus:
        return milvus_client(self)


@dataclass
class ClusterNodes:
    """The nodes of one cluster: a rw node and its ro nodes over one data dir and one fresh
    MariaDB database. `group` is its shard-group name ("" for the lone cluster)."""

    group: str
    rw: NodeHandle
    ro: list[NodeHandle]
    meta_uri: str
    database: str
    data_dir: Path
    mysql: "MysqlServer" = field(repr=False)

    def query(self, sql: str) -> list[list[str]]:
        """Run SQL against the cluster's meta database with the mysql/mariadb client."""
        return self.mysql.execute(sql, database=self.database)

    def searchable_file_ids(self, collection: str) -> list[int]:
        """TableFiles.id of the RAW/TO_INDEX/INDEX files of a collection and its partitions."""
        rows = self.query(SEARCHABLE_FILES_SQL.format(name=sql_string(collection)))
        return [int(row[0]) for row in rows]


@dataclass
class Cluster(ClusterNodes):
    """One cluster's nodes and the proxy in front of them."""

    proxy: ProxyHandle


@dataclass
class GroupedCluster:
    """Several clusters (shard groups, in config order) behind one proxy with `[[groups]]`."""

    groups: dict[str, ClusterNodes]
    proxy: ProxyHandle

    def searchable_file_ids(self, collection: str) -> list[str]:
        """The searchable files of a collection in every group, qualified as the proxy takes
        them over groups: "g1/12", "g2/7" (each group numbers its own TableFiles)."""
        return [
            f"{name}/{file_id}"
            for name, nodes in self.groups.items()
            for file_id in nodes.searchable_file_ids(collection)
        ]


def print_log_tails(processes: Iterable[ManagedProcess | None]):
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


# --------------------------------------------------------------------------------------------
# Set-ups
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def running_standalone_node(tmp_path: Path, extra_args: Sequence[str] = ()) -> Iterator[NodeHandle]:
    """One rw node over SQLite in tmp_path, flushing every second; stopped on exit."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    node = NodeHandle(
        name="standalone-rw",
        role="rw",
        host=HOST,
        port=free_port(),
        data_dir=data_dir,
        meta_uri=f"sqlite://{tmp_path / 'meta.sqlite'}",
        extra_args=["--flush-interval", "1s", *extra_args],
        log_dir=tmp_path / "logs",
    )
    try:
        node.start()
        yield node
    finally:
        node.stop()
        print_log_tails([node.process])


CLUSTER_NODES = ("rw", "ro1", "ro2")
# The shard groups of `running_groups`: name -> how many ro nodes (not all groups alike).
GROUPS = {"g1": 2, "g2": 1}


def cluster_node_names(readonly: int) -> tuple[str, ...]:
    return ("rw", *(f"ro{i}" for i in range(1, readonly + 1)))


@contextlib.contextmanager
def running_nodes(
    tmp_path: Path,
    mysql_server: MysqlServer,
    data_dirs: dict[str, Path] | None = None,
    group: str = "",
    readonly: int = 2,
) -> Iterator[ClusterNodes]:
    """rw node + `readonly` ro nodes sharing one data dir and one fresh MariaDB database
    `mishards_e2e_<random>` (dropped on exit), without a proxy.

    `data_dirs` gives each node ("rw", "ro1", ...) its path to the one shared data dir (e.g. the
    same folder of a JuiceFS volume through each node's own mount); the "rw" one is created.
    Default: tmp_path/data (tmp_path/data-<group> for a group) for all. A group's nodes log as
    <group>-rw, <group>-ro1... The metadata is always MariaDB, never on that dir."""
    names = cluster_node_names(readonly)
    if data_dirs is None:
        shared = tmp_path / (f"data-{group}" if group else "data")
        data_dirs = {name: shared for name in names}
    assert set(data_dirs) == set(names), f"one data dir per node of {names}: {sorted(data_dirs)}"
    data_dir = data_dirs["rw"]
    data_dir.mkdir(parents=True)
    database = f"mishards_e2e_{uuid.uuid4().hex[:12]}"
    mysql_server.execute(f"CREATE DATABASE `{database}`")
    meta_uri = mysql_server.uri(database)
    log_dir = tmp_path / "logs"
    node_args = ["--flush-interval", "1s", *NO_MERGES]

    def make_node(name: str) -> NodeHandle:
        return NodeHandle(
            name=f"{group}-{name}" if group else name,
            role="rw" if name == "rw" else "ro",
            host=HOST,
            port=free_port(),
            data_dir=data_dirs[name],
            meta_uri=meta_uri,
            extra_args=node_args,
            log_dir=log_dir,
        )

    rw = make_node("rw")
    ro = [make_node(name) for name in names[1:]]
    try:
        rw.start()  # creates the meta schema; the ro nodes expect it
        for node in ro:
            node.start(wait=False)
        for node in ro:
            node.wait_ready()
        yield ClusterNodes(
            group=group,
            rw=rw,
            ro=ro,
            meta_uri=meta_uri,
            database=database,
            data_dir=data_dir,
            mysql=mysql_server,
        )
    finally:
        for node in [*ro, rw]:
            node.stop()
        print_log_tails([rw.process, *(n.process for n in ro)])
        mysql_server.execute(f"DROP DATABASE IF EXISTS `{database}`")


@contextlib.contextmanager
def running_cluster(
    tmp_path: Path, mysql_server: MysqlServer, data_dirs: dict[str, Path] | None = None
) -> Iterator[Cluster]:
    """rw node + 2 ro nodes (shared data dir, one fresh MariaDB database) + the proxy.

    `data_dirs` as for `running_nodes`, one per node of CLUSTER_NODES."""
    with running_nodes(tmp_path, mysql_server, data_dirs) as nodes:
        proxy = start_proxy(tmp_path, backends_toml(nodes), tmp_path / "logs")
        try:
            yield Cluster(**{f.name: getattr(nodes, f.name) for f in fields(nodes)}, proxy=proxy)
        finally:
            proxy.process.stop()
            print_log_tails([proxy.process])


@contextlib.contextmanager
def running_groups(
    tmp_path: Path, mysql_server: MysqlServer, groups: dict[str, int] = GROUPS
) -> Iterator[GroupedCluster]:
    """One cluster per shard group (`running_nodes`: its own rw and ro nodes, data dir and
    fresh MariaDB database) behind one proxy with `[[groups]]` and `[placement] default =
    "spread"`: every collection lives in every group, each row in the group owning its id."""
    with contextlib.ExitStack() as stack:
        clusters = {
            name: stack.enter_context(
                running_nodes(tmp_path, mysql_server, group=name, readonly=readonly)
            )
            for name, readonly in groups.items()
        }
        proxy = start_proxy(tmp_path, groups_toml(clusters.values()), tmp_path / "logs")
        try:
            yield GroupedCluster(groups=clusters, proxy=proxy)
        finally:
            proxy.process.stop()
            print_log_tails([proxy.process])


def toml_list(nodes: Iterable[NodeHandle]) -> str:
    return "[" + ", ".join(f'"{node.addr}"' for node in nodes) + "]"


def backends_toml(nodes: ClusterNodes) -> str:
    """The proxy config's part for one cluster: [meta] and [backends]."""
    return f"""[meta]
uri = "{nodes.meta_uri}"

[backends]
writable = "{nodes.rw.addr}"
readonly = {toml_list(nodes.ro)}
"""


def groups_toml(groups: Iterable[ClusterNodes]) -> str:
    """The proxy config's part for shard groups: one [[groups]] per cluster, all spread."""
    parts = [
        f"""[[groups]]
name = "{nodes.group}"
meta_uri = "{nodes.meta_uri}"
writable = "{nodes.rw.addr}"
readonly = {toml_list(nodes.ro)}
"""
        for nodes in groups
    ]
    return "\n".join(parts) + '\n[placement]\ndefault = "spread"\n'


def demo_process(
    tmp_path: Path, port: int, metrics_port: int, http_listen: str = f"{HOST}:0", groups: int | None = None
) -> ManagedProcess:
    """`mishards demo` (N shard groups with `groups`) on the given ports, its data under
    <tmp_path>/demo and its log under <tmp_path>/logs; not started yet."""
    argv = [mishards_bin(), "demo"]
    if groups is not None:
        argv += ["--groups", str(groups)]
    argv += [
        "--dir",
        str(tmp_path / "demo"),
        "--listen",
        f"{HOST}:{port}",
        "--metrics-listen",
        f"{HOST}:{metrics_port}",
        "--http-listen",
        http_listen,
    ]
    return ManagedProcess("demo", argv, tmp_path / "logs")


def start_proxy(
    tmp_path: Path, backends: str, log_dir: Path, server_extra: str = "", extra: str = ""
) -> ProxyHandle:
    """`mishards serve` with a generated TOML config: its listen addresses (gRPC, metrics, the
    HTTP API), the topology refresh and `backends` (`backends_toml` or `groups_toml`);
    `server_extra` goes into [server], `extra` (more sections) at the end."""
    port, metrics_port, http_port = free_port(), free_port(), free_port()
    config_path = tmp_path / "mishards.toml"
    config_path.write_text(
        f"""[server]
listen = "{HOST}:{port}"
{server_extra}
[metrics]
listen = "{HOST}:{metrics_port}"

[http_api]
listen = "{HOST}:{http_port}"

[topology]
refresh_interval = "{PROXY_REFRESH}"

{backends}
{extra}"""
    )
    argv = [mishards_bin(), "serve", "--config", str(config_path)]
    process = ManagedProcess(f"proxy-{tmp_path.name}" if extra or server_extra else "proxy", argv, log_dir)
    process.start()
    process.wait_ready(HOST, port, need_listening_line=False)
    time.sleep(PROXY_SETTLE_S)  # let the first topology refresh find the nodes
    return ProxyHandle(HOST, port, metrics_port, config_path, process, http_port)
