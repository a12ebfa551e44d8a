"""A real `charlm serve` in a subprocess on a free port, for the serving tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

ROOT = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"at (http://\S+?)/ ")


class Server:
    """`charlm serve ARGS --port 0` running; `url` from what it says on stderr; `stop()` sends SIGTERM."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, wait: bool = True) -> None:
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1", **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "charlm", "serve", *args, "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=full_env,
        )
        self.lines: list[str] = []
        self.url = ""
        self._seen = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if wait:
            assert self._seen.wait(60), f"the server did not start: {self.stderr}"
            assert self.url, f"the server did not say where it listens: {self.stderr}"

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            m = LISTENING.search(line)
            if m and not self.url:
                self.url = m.group(1)
                self._seen.set()
        self._seen.set()

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float = 30) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if text in self.stderr:
                return True
            time.sleep(0.05)
        return False

    def client(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kw)

    def stop(self, timeout: float = 30, sig: int = signal.SIGTERM) -> tuple[int, str]:
        """SIGTERM (or `sig`), then the exit status and what it wrote on stdout."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        self._reader.join(5)
        return self.proc.returncode, out


@pytest.fixture
def start_server() -> Iterator:
    """start_server(args...) -> a running Server, stopped at the end of the test."""
    started: list[Server] = []

    def start(*args: str, env: dict[str, str] | None = None, wait: bool = True) -> Server:
        s = Server([str(a) for a in args], env, wait)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


@pytest.fixture(scope="module")
def server(tiny_run: Path) -> Iterator[Server]:
    """One server on the tiny run for a module's tests, with small limits so they are easy to pass."""
    s = Server(
        [str(tiny_run), "--max-prompt", "300", "--max-tokens", "2000", "--max-n", "4", "--max-request-chars", "4000"]
    )
    yield s
    code, out = s.stop()
    assert code == 0 and out == "", (code, out, s.stderr)
