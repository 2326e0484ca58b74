"""Analytical-model speed: configurations evaluated per second on one core.

Run: `.venv/bin/python bench/perf_speed.py` (prints a table). Target (issue "Foundation"):
>= 50,000 configurations/s vectorized. Scalar `predict()` (pydantic in/out) is shown for contrast.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from servewise.domain import Quantization, ServingConfig  # noqa: E402
from servewise.perf.analytical import predict  # noqa: E402
from servewise.perf.batch import predict_batch  # noqa: E402


def grid() -> list[ServingConfig]:
    models = ["llama-3.1-8b", "llama-3.1-70b", "qwen2.5-32b", "mixtral-8x7b"]
    gpus = ["l4", "l40s", "a100-80gb", "h100-sxm", "h200", "mi300x"]
    quants = [
        Quantization(),
        Quantization(weights="fp8", kv_cache="fp8"),
        Quantization(weights="int4", method="awq"),
    ]
    return [
        ServingConfig(
            model=m, gpu=g, tensor_parallel=tp, quantization=q, max_num_seqs=s, max_num_batched_tokens=b
        )
        for m, g, tp, q, s, b in itertools.product(
            models, gpus, [1, 2, 4, 8], quants, [64, 128, 256, 512], [2048, 8192]
        )
    ]


def main() -> None:
    configs = grid()
    n_target = 100_000
    reps = n_target // len(configs) + 1
    big = (configs * reps)[:n_target]
    rng = np.random.default_rng(0)
    conc = rng.integers(1, 256, len(big))
    inp = rng.integers(128, 4096, len(big))
    out = rng.integers(32, 1024, len(big))
    t0 = time.perf_counter()
    res = predict_batch(big, input_len=inp, output_len=out, concurrency=conc)
    vec_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    scalar_n = 0
    for cfg in configs[:400]:
        with contextlib.suppress(Exception):  # configurations that do not fit also cost time
            predict(cfg, input_len=1024, output_len=256, concurrency=32)
        scalar_n += 1
    scalar_s = time.perf_counter() - t0
    table = Table(title="Analytical model speed (one core)")
    for col in ("path", "configurations", "seconds", "configs/s", "fit"):
        table.add_column(col, justify="right")
    table.add_row(
        "predict_batch (vectorized)",
        f"{len(big):,}",
        f"{vec_s:.3f}",
        f"{len(big) / vec_s:,.0f}",
        f"{int(res.fits.sum()):,}",
    )
    table.add_row(
        "predict (scalar, pydantic)", f"{scalar_n:,}", f"{scalar_s:.3f}", f"{scalar_n / scalar_s:,.0f}", ""
    )
    Console().print(table)


if __name__ == "__main__":
    main()
