"""``python app.py`` in its own process, as the README runs it: for the benchmarks that go through
the HTTP API (scripts/bench_forward.py, scripts/bench_viewer.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(port: int, env_extra: dict[str, str] | None = None, log: str | None = None) -> subprocess.Popen:
    """Start the app on ``127.0.0.1:port`` (CPU, offline, no analytics); output discarded, or appended to ``log``."""
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - the child keeps it
    return subprocess.Popen([sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
                            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT if log else subprocess.DEVNULL)


def connect(proc: subprocess.Popen, port: int, timeout: float = 300.0, **client_kw):
    """A gradio_client for the launched app, polled until it answers (raises if the app exits)."""
    from gradio_client import Client

    t0 = time.perf_counter()
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"app.py exited with code {proc.returncode}")
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError("app did not answer")
        try:
            return Client(f"http://127.0.0.1:{port}/", verbose=False, **client_kw)
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.2)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
