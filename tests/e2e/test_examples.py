"""The examples in examples/ run as users run them, so they never rot.

test_quickstart: `mishards demo` on free ports with its data in the test's tmp dir, then
examples/quickstart.py (pymilvus 1.1.2, this venv's python) against it. (The Rust example and
the config files are run by tests/deploy_and_examples.rs.)
"""

from __future__ import annotations

import subprocess
import sys

from servers import HOST, REPO_ROOT, demo_process, free_port

QUICKSTART_TIMEOUT_S = 120


def test_quickstart_runs_against_the_demo(tmp_path):
    port, metrics_port = free_port(), free_port()
    demo = demo_process(tmp_path, port, metrics_port)
    demo.start()
    try:
        demo.wait_ready(HOST, port, need_listening_line=False)
        run = subprocess.run(
            [sys.executable, str(REPO_ROOT / "examples" / "quickstart.py"), HOST, str(port)],
            capture_output=True,
            text=True,
            timeout=QUICKSTART_TIMEOUT_S,
        )
        assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}\n--- demo ---\n{demo.tail()}"
        assert "quickstart: 1200 vectors" in run.stdout, run.stdout
        assert "route: 2 files on nodes" in run.stdout, run.stdout
        assert run.stdout.rstrip().endswith("quickstart: OK"), run.stdout
    finally:
        demo.stop()
