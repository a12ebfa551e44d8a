"""Running the server: load the checkpoint, start the engine, serve HTTP on uvicorn until SIGTERM or Ctrl-C.

On SIGTERM or Ctrl-C uvicorn stops accepting connections and waits (at most `shutdown_wait` seconds) for the
requests in flight to finish; then the engine stops and `serve` returns (the command exits 0).
With `watch`, a thread looks at the run folder every `WATCH_EVERY_S` seconds and serves its best checkpoint
once a better one appears. Checkpoints are written to a hidden folder and renamed into place when complete,
and only `step-*` folders are looked at, so one still being written is never loaded; one that fails to load
(deleted meanwhile, damaged) is skipped and the old model kept.
"""

from __future__ import annotations

import ipaddress
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charlm.errors import CheckpointError, UsageError
from charlm.inference.engine import Engine, Served, load_served
from charlm.inference.sample import INT8_MIN_BATCH
from charlm.serve.protocol import Limits

WATCH_EVERY_S = 1.0
SWITCH_INTERVAL_S = 0.001


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class Options:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    watch: bool = False
    device: str = "auto"
    shutdown_wait: float = 10.0
    limits: Limits = Limits()


def load(checkpoint: Path | None, device: str = "auto") -> tuple[Served, Path]:
    """The model to serve (the best checkpoint of what was named, as `charlm sample` picks it) and its run folder."""
    from charlm import checkpoint as ckpt_io

    ck = ckpt_io.resolve(checkpoint, "best")
    run = ck.path.parent if ck.path.name.startswith("step-") else ck.path
    return load_served(ck, device, run.name), run


class Watcher:
    """Serves a run folder's best checkpoint whenever it changes, between requests."""

    def __init__(
        self, run: Path, engine: Engine, device: str, say: Callable[[str], None], limits: Limits | None = None
    ) -> None:
        self.run, self.engine, self.device, self.say = run, engine, device, say
        self.engine_limits = limits or Limits()
        self.stop = threading.Event()
        self.failed: set[Path] = set()
        self.thread = threading.Thread(target=self._loop, name="charlm-watch", daemon=True)

    def start(self) -> Watcher:
        self.thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)

    def check(self) -> bool:
        """Switch to the run's best checkpoint if it is another one; whether it switched."""
        from charlm import checkpoint as ckpt_io

        best = ckpt_io.best_of(ckpt_io.list_checkpoints(self.run))
        current = self.engine.served.checkpoint
        if best is None or current is not None and best.path == current.path or best.path in self.failed:
            return False
        try:
            served = load_served(best, self.device, self.run.name)
            _warm(served, self.engine_limits)
        except (CheckpointError, OSError) as e:
            self.failed.add(best.path)
            self.say(f"not switching to {best.path}: {e}")
            return False
        self.engine.swap(served)
        self.say(f"now serving {best.path} (validation {best.val_bpc:.4f} bits/char)")
        return True

    def _loop(self) -> None:
        while not self.stop.wait(WATCH_EVERY_S):
            try:
                self.check()
            except Exception as e:  # a run folder that vanished, a race with pruning: keep serving, try again
                self.say(f"watching {self.run}: {e}")


def _warm(served: Served, limits: Limits) -> None:
    """Load what the largest batch will need before the first request, not in the middle of serving."""
    warm = getattr(served.backend, "warm", None)
    if warm is not None and limits.max_streams >= INT8_MIN_BATCH:
        warm()


def serve(served: Served, run: Path, opts: Options, say: Callable[[str], None]) -> None:
    """Serve until SIGTERM or Ctrl-C; returns once the requests in flight have finished (or the wait is over)."""
    import uvicorn

    from charlm.serve.app import State, build

    # The engine's thread and the event loop's take turns at the interpreter lock: hand it over every 1 ms
    # instead of Python's 5, so a request's bytes are not held up behind a batch of steps (or the reverse).
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    _warm(served, opts.limits)
    engine = Engine(served, opts.limits.max_streams, opts.limits.max_queue).start()
    state = State(engine, opts.limits, opts.api_key or None)
    watcher = Watcher(run, engine, opts.device, say, opts.limits).start() if opts.watch else None
    config = uvicorn.Config(
        build(state),
        host=opts.host,
        port=opts.port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=opts.shutdown_wait,
        timeout_keep_alive=5,
    )
    server = _make_server_class()(config, served, say)
    try:
        server.run()
    except SystemExit:  # uvicorn exits when it cannot bind; it has said why on stderr
        raise UsageError(f"cannot listen on {opts.host}:{opts.port}") from None
    finally:
        if watcher is not None:
            watcher.close()
        engine.close()


def _make_server_class() -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server that says where it listens, and exits normally after a signal's graceful shutdown
        (uvicorn would raise the signal again once done, turning a clean stop into a status of 143)."""

        def __init__(self, config: Any, served: Served, say: Callable[[str], None]) -> None:
            super().__init__(config)
            self.served, self.say = served, say

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started:
                for srv in self.servers:
                    for sock in srv.sockets:
                        host, port = sock.getsockname()[:2]
                        shown = f"[{host}]" if ":" in host else host
                        ck = self.served.checkpoint
                        self.say(
                            f"serving {self.served.name} ({ck.path if ck else 'no checkpoint'}) "
                            f"at http://{shown}:{port}/ (Ctrl-C to stop)"
                        )

        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            captured = getattr(self, "_captured_signals", None)
            if isinstance(captured, list):
                captured.clear()

    return Server
