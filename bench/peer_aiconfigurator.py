"""Side-by-side with NVIDIA's aiconfigurator (a peer model built on kernels measured on real GPUs).

Run: `.venv/bin/pip install -e '.[bench]' && .venv/bin/python bench/peer_aiconfigurator.py`
Prints one row per configuration: servewise's closed-loop prediction (calibrated vLLM factors)
next to aiconfigurator's `cli_estimate` for the vLLM backend at the same batch (= concurrency).
aiconfigurator runs offline on the CPU with the model configs and perf database its wheel ships;
it covers NVIDIA H100/H200/B200/L40S (and A100 in bf16) only. Nothing here is fitted to it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import time

from rich.console import Console
from rich.table import Table

from servewise.domain import Engine, Quantization, ServingConfig
from servewise.perf.analytical import predict

# (our model id, aiconfigurator model path, our gpu, aiconfigurator system, tp, isl, osl, batch)
CASES = [
    ("llama-3.1-8b", "meta-llama/Meta-Llama-3.1-8B", "h100-sxm", "h100_sxm", 1, 1024, 256, 1),
    ("llama-3.1-8b", "meta-llama/Meta-Llama-3.1-8B", "h100-sxm", "h100_sxm", 1, 1024, 256, 32),
    ("llama-3.1-8b", "meta-llama/Meta-Llama-3.1-8B", "h100-sxm", "h100_sxm", 1, 1024, 256, 128),
    ("llama-3.1-8b", "meta-llama/Meta-Llama-3.1-8B", "h200", "h200_sxm", 1, 4096, 512, 64),
    ("llama-3.1-8b", "meta-llama/Meta-Llama-3.1-8B", "l40s", "l40s", 1, 1024, 256, 16),
    ("llama-3.1-70b", "meta-llama/Meta-Llama-3.1-70B", "h100-sxm", "h100_sxm", 4, 1024, 256, 1),
    ("llama-3.1-70b", "meta-llama/Meta-Llama-3.1-70B", "h100-sxm", "h100_sxm", 4, 1024, 256, 64),
    ("llama-3.1-70b", "meta-llama/Meta-Llama-3.1-70B", "h200", "h200_sxm", 8, 2048, 256, 128),
]


def aiconfigurator_estimate(
    path: str, system: str, tp: int, isl: int, osl: int, batch: int
) -> dict[str, float]:
    from aiconfigurator.cli import api

    with contextlib.redirect_stdout(io.StringIO()):
        r = api.cli_estimate(
            path, system, mode="agg", backend_name="vllm", isl=isl, osl=osl, batch_size=batch, tp_size=tp
        )
    return {
        "throughput_tok_s": float(r.tokens_per_second),
        "ttft_ms": float(r.ttft),
        "tpot_ms": float(r.tpot),
    }


def main() -> int:
    try:
        import aiconfigurator  # noqa: F401
    except ImportError:
        print("aiconfigurator is not installed: pip install -e '.[bench]'", file=sys.stderr)
        return 1
    logging.disable(logging.WARNING)
    table = Table(title="servewise (calibrated vLLM) vs aiconfigurator 0.12 (vLLM backend), same batch")
    for col in (
        "model",
        "GPU x TP",
        "in/out",
        "batch",
        "tok/s sw / aic",
        "TTFT ms sw / aic",
        "TPOT ms sw / aic",
    ):
        table.add_column(col, justify="right")
    diffs: dict[str, list[float]] = {"throughput_tok_s": [], "ttft_ms": [], "tpot_ms": []}
    started = time.perf_counter()
    for model, path, gpu, system, tp, isl, osl, batch in CASES:
        cfg = ServingConfig(
            model=model,
            gpu=gpu,
            tensor_parallel=tp,
            engine=Engine.VLLM,
            quantization=Quantization(),
            max_num_seqs=max(256, batch),
        )
        ours = predict(cfg, input_len=isl, output_len=osl, concurrency=batch)
        try:
            peer = aiconfigurator_estimate(path, system, tp, isl, osl, batch)
        except Exception as exc:  # noqa: BLE001 - a peer's failure is reported, not fatal
            table.add_row(model, f"{gpu} x{tp}", f"{isl}/{osl}", str(batch), f"error: {exc}"[:40], "", "")
            continue
        mine = {"throughput_tok_s": ours.throughput_tok_s, "ttft_ms": ours.ttft_ms, "tpot_ms": ours.tpot_ms}
        for k in diffs:
            diffs[k].append(abs(mine[k] - peer[k]) / peer[k] * 100.0)
        table.add_row(
            model,
            f"{gpu} x{tp}",
            f"{isl}/{osl}",
            str(batch),
            f"{mine['throughput_tok_s']:,.0f} / {peer['throughput_tok_s']:,.0f}",
            f"{mine['ttft_ms']:,.1f} / {peer['ttft_ms']:,.1f}",
            f"{mine['tpot_ms']:,.2f} / {peer['tpot_ms']:,.2f}",
        )
    console = Console()
    console.print(table)
    for k, v in diffs.items():
        if v:
            console.print(
                f"mean |servewise - aiconfigurator| / aiconfigurator, {k}: {sum(v) / len(v):.1f}% (n={len(v)})"
            )
    console.print(f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
