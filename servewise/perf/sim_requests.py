"""The requests a simulation serves: arrival times, prompt and output lengths, prefix-cache hits.

Everything here is drawn once, up front, from a seeded ``numpy.random.Generator`` so that the event
loop itself is deterministic and allocation-free. A closed loop (``Workload.concurrency``) has only
its first ``concurrency`` arrival times known in advance; the engine fills in the rest as requests
complete.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from servewise.domain import Workload
from servewise.errors import InputError

BLOCK_SIZE = 16  # tokens per KV block (vLLM default)
TRACE_COLUMNS = ("arrival_s", "input_len", "output_len")


@dataclass(frozen=True)
class RequestSet:
    """Per-request arrays, indexed by request id (arrival order).

    ``arrival_s`` is ``inf`` for closed-loop requests whose arrival depends on earlier completions.
    ``cached_len`` is the prompt prefix already in the prefix cache (full blocks only, and never the
    whole prompt: vLLM always recomputes the last prompt token). ``rejected`` marks prompts longer
    than the replica can ever hold; they are never scheduled.
    """

    arrival_s: np.ndarray
    input_len: np.ndarray
    output_len: np.ndarray
    cached_len: np.ndarray
    rejected: np.ndarray
    closed_loop_clients: int | None = None

    def __len__(self) -> int:
        return int(self.input_len.shape[0])


def read_trace(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a trace CSV with columns ``arrival_s,input_len,output_len`` (extra columns ignored).

    Rows are returned sorted by arrival time. Bad rows raise ``InputError`` naming file, row and field.
    """
    path = Path(path)
    try:
        handle = path.open(newline="")
    except OSError as exc:
        raise InputError(f"cannot read trace: {exc.strerror}", source=str(path)) from exc
    arrivals: list[float] = []
    inputs: list[int] = []
    outputs: list[int] = []
    with handle:
        reader = csv.DictReader(handle)
        missing = [c for c in TRACE_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"trace header lacks columns {missing}", source=str(path))
        for row_no, row in enumerate(reader, start=2):
            where = f"{path}:{row_no}"
            arrivals.append(_number(row["arrival_s"], float, where, "arrival_s", minimum=0.0))
            inputs.append(int(_number(row["input_len"], int, where, "input_len", minimum=1)))
            outputs.append(int(_number(row["output_len"], int, where, "output_len", minimum=1)))
    if not arrivals:
        raise InputError("trace has no rows", source=str(path))
    order = np.argsort(np.asarray(arrivals), kind="stable")
    return (
        np.asarray(arrivals, dtype=np.float64)[order],
        np.asarray(inputs, dtype=np.int64)[order],
        np.asarray(outputs, dtype=np.int64)[order],
    )


def _number(text: str | None, kind: type, where: str, field: str, *, minimum: float) -> float:
    try:
        value = kind(text.strip()) if text is not None else None
    except ValueError:
        value = None
    if value is None or not np.isfinite(value) or value < minimum:
        raise InputError(f"expected a number >= {minimum}, got {text!r}", source=where, field=field)
    return float(value)


def arrival_times(workload: Workload, n: int, rng: np.random.Generator) -> np.ndarray:
    """Open-loop arrival times (seconds, first request at 0) at ``workload.arrival_rate_per_s``."""
    rate = workload.arrival_rate_per_s
    if rate is None:
        raise InputError("open-loop arrivals need arrival_rate_per_s", field="arrival_rate_per_s")
    if workload.arrival == "poisson":
        gaps = rng.exponential(1.0 / rate, n)
    elif workload.arrival == "gamma":
        shape = workload.burstiness
        gaps = rng.gamma(shape, 1.0 / (rate * shape), n)
    else:  # evenly spaced
        gaps = np.full(n, 1.0 / rate)
    times = np.cumsum(gaps)
    return times - times[0]


def build_requests(
    workload: Workload,
    n: int,
    rng: np.random.Generator,
    *,
    prefix_caching: bool,
    max_model_len: int,
) -> RequestSet:
    """Draw ``n`` requests for ``workload`` (a trace supplies at most its own number of rows).

    ``max_model_len`` caps prompt + output as vLLM does: longer prompts are rejected, outputs are
    cut so the sequence ends at ``max_model_len`` (finish reason "length").
    """
    if n < 1:
        raise InputError(f"num_requests must be >= 1, got {n}", field="num_requests")
    clients: int | None = None
    if workload.trace is not None:
        arrivals, inputs, outputs = read_trace(workload.trace)
        arrivals, inputs, outputs = arrivals[:n] - arrivals[0], inputs[:n], outputs[:n]
    else:
        inputs = workload.input_len.sample(rng, n)
        outputs = workload.output_len.sample(rng, n)
        if workload.arrival_rate_per_s is not None:
            arrivals = arrival_times(workload, n, rng)
        else:
            clients = int(workload.concurrency or 1)
            arrivals = np.full(n, np.inf)
            arrivals[: min(clients, n)] = 0.0
    inputs = inputs.astype(np.int64)
    rejected = inputs > max_model_len
    outputs = np.minimum(outputs.astype(np.int64), np.maximum(max_model_len - inputs, 1))
    if prefix_caching and workload.prefix_share > 0:
        shared = np.floor(inputs * workload.prefix_share).astype(np.int64)
        cached = np.minimum((shared // BLOCK_SIZE) * BLOCK_SIZE, inputs - 1)
        cached = (cached // BLOCK_SIZE) * BLOCK_SIZE
    else:
        cached = np.zeros_like(inputs)
    return RequestSet(
        arrival_s=arrivals.astype(np.float64),
        input_len=inputs,
        output_len=outputs,
        cached_len=cached,
        rejected=rejected,
        closed_loop_clients=clients,
    )
