"""The benchmarks' one timing method, shared by `scripts/bench.py` and `scripts/peers.py` so
their figures compare like with like: one call per input (batch 1), after untimed warm-up
calls, each input timed `repeats` times and its best kept; the figures are the median and
p90 over the inputs, in milliseconds. Threads are the caller's to set (one, for the tables).
"""
from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np


def time_calls(call: Callable[[Any], Any], inputs: Sequence[Any], repeats: int, warmup: int) -> np.ndarray:
    """Milliseconds per call for each input: `call(x)` timed `repeats` times, the best kept,
    after `warmup` untimed calls on the first inputs."""
    for x in inputs[:warmup]:
        call(x)
    best = np.full(len(inputs), np.inf)
    for _ in range(repeats):
        for i, x in enumerate(inputs):
            start = time.perf_counter()
            call(x)
            best[i] = min(best[i], time.perf_counter() - start)
    return best * 1000.0


def summary(ms: np.ndarray) -> dict:
    """Median and p90 of per-input milliseconds, and the sentences per second they imply."""
    return {"ms_p50": float(np.median(ms)), "ms_p90": float(np.percentile(ms, 90)),
            "sentences_per_s": float(1000.0 / ms.mean())}
