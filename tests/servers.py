"""Servers the tests start for real on loopback: a free port, a process tree, `/health`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_tail(path: Path, lines: int = 30) -> str:
    """The last lines of a server's log, for a failure message."""
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class Server:
    """A started server process and its base URL."""

    base: str
    process: subprocess.Popen
    log: Path

    def wait_healthy(self, timeout: float = 180) -> None:
        """Block until `/health` answers; fail the test with the log's tail if it never does."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(f"{self.base}/health", timeout=2).close()
                return
            except OSError:
                if self.process.poll() is not None:
                    pytest.fail(f"server exited:\n{log_tail(self.log)}", pytrace=False)
                if time.monotonic() > deadline:
                    pytest.fail(f"no /health in {timeout} s:\n{log_tail(self.log)}", pytrace=False)
                time.sleep(1)

    def get(self, route: str, **query) -> bytes:
        url = f"{self.base}{route}?{urllib.parse.urlencode(query)}"
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.read()

    def get_json(self, route: str, **query) -> dict:
        return json.loads(self.get(route, **query))


@contextmanager
def serving(cmd: list[str], port: int, *, cwd: Path, env: dict[str, str]) -> Iterator[Server]:
    """Start ``cmd`` (which listens on ``port``) in its own session; stop its whole process
    tree on exit. The caller waits for health when it is ready to (the server may boot while
    the test does other work)."""
    log = cwd / f"server-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            cmd, cwd=cwd, env=env, start_new_session=True, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield Server(f"http://127.0.0.1:{port}", process, log)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
