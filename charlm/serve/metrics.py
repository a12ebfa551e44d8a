"""What GET /metrics reports, in Prometheus's text exposition format (version 0.0.4).

Counters of requests by route and status and of characters generated; gauges of the samples in the batch
and the requests waiting; histograms of the time to a request's first character and of the time per
character (one batched step: every sample in the batch gets one character per step).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence

from charlm.inference.engine import Engine

FIRST_CHAR_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PER_CHAR_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Histogram:
    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets, self.counts, self.sum, self.count = tuple(buckets), [0] * len(buckets), 0.0, 0

    def observe(self, value: float, times: int = 1) -> None:
        for i, b in enumerate(self.buckets):
            if value <= b:
                self.counts[i] += times
        self.sum += value * times
        self.count += times

    def lines(self, name: str) -> list[str]:
        out = [f'{name}_bucket{{le="{b}"}} {c}' for b, c in zip(self.buckets, self.counts, strict=True)]
        return [
            *out,
            f'{name}_bucket{{le="+Inf"}} {self.count}',
            f"{name}_sum {self.sum:.6f}",
            f"{name}_count {self.count}",
        ]


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Request counts kept by the HTTP layer; the rest read from the engine when scraped."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, int]] = Counter()
        self.first_char = Histogram(FIRST_CHAR_BUCKETS)
        self.per_char = Histogram(PER_CHAR_BUCKETS)
        self._lock = threading.Lock()

    def watch(self, engine: Engine) -> None:
        """Observe the engine's first characters and steps from now on."""
        engine.stats.on_first_char = self._first_char
        engine.stats.on_step = self._step

    def _first_char(self, seconds: float) -> None:
        with self._lock:
            self.first_char.observe(seconds)

    def _step(self, seconds: float, rows: int) -> None:
        with self._lock:
            self.per_char.observe(seconds, rows)

    def count(self, route: str, status: int) -> None:
        with self._lock:
            self.requests[(route, status)] += 1

    def render(self, engine: Engine, model: str, checkpoint: str) -> str:
        with self._lock:
            requests = sorted(self.requests.items())
            first_char, per_char = (
                self.first_char.lines("charlm_time_to_first_character_seconds"),
                self.per_char.lines("charlm_time_per_character_seconds"),
            )
        out = [
            "# HELP charlm_requests_total HTTP requests answered, by route and status.",
            "# TYPE charlm_requests_total counter",
            *(f'charlm_requests_total{{route="{_label(r)}",status="{s}"}} {n}' for (r, s), n in requests),
            "# HELP charlm_generated_characters_total Characters generated.",
            "# TYPE charlm_generated_characters_total counter",
            f"charlm_generated_characters_total {engine.stats.chars}",
            "# HELP charlm_batch_streams Samples in the batch now.",
            "# TYPE charlm_batch_streams gauge",
            f"charlm_batch_streams {engine.stats.rows}",
            "# HELP charlm_queued_requests Requests waiting for a place in the batch.",
            "# TYPE charlm_queued_requests gauge",
            f"charlm_queued_requests {engine.stats.queued}",
            "# HELP charlm_time_to_first_character_seconds From a request's arrival to its first character.",
            "# TYPE charlm_time_to_first_character_seconds histogram",
            *first_char,
            "# HELP charlm_time_per_character_seconds One batched step (a character for each sample), per sample.",
            "# TYPE charlm_time_per_character_seconds histogram",
            *per_char,
            "# HELP charlm_model_info The model being served.",
            "# TYPE charlm_model_info gauge",
            f'charlm_model_info{{model="{_label(model)}",checkpoint="{_label(checkpoint)}"}} 1',
        ]
        return "\n".join(out) + "\n"
