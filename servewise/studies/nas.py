"""Hardware-aware architecture search: decoder-only shapes scored on a target GPU and workload.

A shape (layers, hidden size, heads, KV heads, FFN width, MoE experts and top-k, vocabulary) is
built as a ``ModelSpec`` and evaluated directly with the performance model's closed-loop steady
state (``servewise.perf.analytical.closed_loop``) and memory plan, so shapes that no catalog holds
can be scored. Quality is a *proxy*: the Chinchilla parametric loss (Hoffmann et al. 2022,
"Training Compute-Optimal Large Language Models", eq. 10 with the Approach-3 fit)
``L(N, D) = E + A / N^alpha + B / D^beta``, E = 1.69, A = 406.4, B = 410.7, alpha = 0.34,
beta = 0.28, N the parameter count (active parameters for MoE: a conservative reading) and D the
training tokens. NSGA-II (pymoo) searches for the Pareto front of proxy loss vs the speed objective.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from servewise.domain import HardwareSpec, ModelSpec, Quantization, ServingConfig
from servewise.domain.quantization import Dtype
from servewise.errors import InputError, ServewiseError
from servewise.perf.analytical import closed_loop
from servewise.perf.catalog import get_catalog
from servewise.perf.efficiency import Efficiency, efficiency_on
from servewise.perf.memory import plan_memory
from servewise.perf.shapes import estimate_params, ffn_params, replica_shape

CHINCHILLA = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
PROXY_NOTE = (
    "quality is a PROXY: Chinchilla loss L(N,D) = 1.69 + 406.4/N^0.34 + 410.7/D^0.28 "
    "(Hoffmann et al. 2022, eq. 10), not a measured benchmark score"
)
OBJECTIVES = ("tpot", "throughput", "cost")
# Head sizes vLLM's attention kernels are built for (FlashAttention backend).
SUPPORTED_HEAD_DIMS = (64, 80, 96, 112, 128, 192, 256)
# Kaplan et al. 2020 (Scaling Laws for Neural Language Models, fig. 5) found loss nearly independent
# of shape for width/depth up to ~200; wider-and-shallower shapes are outside what the proxy knows.
MAX_ASPECT = 200
# The search space: each gene picks one of these values.
GENES: dict[str, list[int]] = {
    "num_layers": list(range(8, 97, 2)),
    "hidden_size": list(range(1024, 8193, 256)),
    "head_dim": [64, 96, 128],  # num_heads = hidden_size / head_dim
    "num_kv_heads": [1, 2, 4, 8, 16],
    "ffn_ratio_x4": list(range(8, 17)),  # FFN width = ratio/4 * hidden, rounded to 256
    "num_experts": [0, 0, 0, 8, 16, 32, 64],  # dense is three times as likely a start
    "experts_per_token": [1, 2, 4, 8],
    "vocab_size": [32000, 32768, 50304, 65536, 128256, 151936],
}


def chinchilla_loss(n_params: float, train_tokens: float) -> float:
    c = CHINCHILLA
    return c["E"] + c["A"] / n_params ** c["alpha"] + c["B"] / train_tokens ** c["beta"]


def parse_budget(text: str) -> tuple[float, float]:
    lo, sep, hi = text.partition("..")
    try:
        budget = (float(lo), float(hi))
    except ValueError:
        raise InputError(
            f"expected MIN..MAX in billions (e.g. 6..9), got {text!r}", field="--params"
        ) from None
    if not sep or not 0 < budget[0] < budget[1]:
        raise InputError(f"expected 0 < MIN < MAX, got {text!r}", field="--params")
    return budget


def parse_workload(text: str) -> tuple[int, int, int]:
    parts = text.split(":")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 1:
        raise InputError(
            f"expected INPUT:OUTPUT:CONCURRENCY positive integers, got {text!r}", field="--workload"
        )
    return values[0], values[1], values[2]


@dataclass(frozen=True)
class NasTarget:
    hw: HardwareSpec
    input_len: int
    output_len: int
    concurrency: int
    budget_b: tuple[float, float]
    objective: str
    quantization: Quantization
    tp: int
    train_tokens: float
    efficiency: Efficiency

    @classmethod
    def build(
        cls,
        *,
        gpu: str,
        workload: tuple[int, int, int],
        budget_b: tuple[float, float],
        objective: str = "tpot",
        weights: str = "bf16",
        tp: int = 1,
        train_tokens: float = 15e12,
    ) -> NasTarget:
        if objective not in OBJECTIVES:
            raise InputError(
                f"unknown objective {objective!r}; expected one of {OBJECTIVES}", field="--objective"
            )
        try:
            quant = Quantization(weights=Dtype.parse(weights))
        except ValueError as exc:
            raise InputError(str(exc), field="--weights") from None
        if train_tokens <= 0:
            raise InputError("must be > 0", field="--train-tokens")
        if tp < 1 or tp & (tp - 1):  # else every shape is rejected, after the whole search
            raise InputError(f"must be a power of two (1, 2, 4, 8), got {tp}", field="--tp")
        hw = get_catalog().gpu(gpu)
        return cls(
            hw,
            *workload,
            budget_b,
            objective,
            quant,
            tp,
            train_tokens,
            efficiency_on("vllm", hw),
        )


@dataclass(frozen=True)
class NasPoint:
    shape: ModelSpec
    params_b: float
    active_b: float
    ok: bool
    reason: str | None = None
    loss: float = math.nan
    tpot_ms: float = math.nan
    throughput_tok_s: float = math.nan
    cost_per_1m: float = math.nan

    def score(self, objective: str) -> float:
        """The speed objective, smaller is better (throughput negated)."""
        return {"tpot": self.tpot_ms, "throughput": -self.throughput_tok_s, "cost": self.cost_per_1m}[
            objective
        ]

    def dominates(self, other: NasPoint, objective: str) -> bool:
        a, b = (self.loss, self.score(objective)), (other.loss, other.score(objective))
        return a[0] <= b[0] and a[1] <= b[1] and a != b

    def to_json(self, objective: str) -> dict[str, Any]:
        s = self.shape
        return {
            "num_layers": s.num_layers,
            "hidden_size": s.hidden_size,
            "num_heads": s.num_heads,
            "num_kv_heads": s.num_kv_heads,
            "head_dim": s.head_dim,
            "intermediate_size": s.intermediate_size,
            "num_experts": s.num_experts,
            "experts_per_token": s.experts_per_token,
            "vocab_size": s.vocab_size,
            "params_b": self.params_b,
            "active_params_b": self.active_b,
            "proxy_loss": self.loss,
            "tpot_ms": self.tpot_ms,
            "throughput_tok_s": self.throughput_tok_s,
            "cost_per_1m_output_tokens": self.cost_per_1m,
            "objective": self.score(objective),
        }


def make_shape(genes: dict[str, int], max_context: int) -> ModelSpec:
    """A ModelSpec from gene values; raises ``InputError`` naming the field for impossible shapes."""
    h, kv = genes["hidden_size"], genes["num_kv_heads"]
    if "num_heads" not in genes and h % genes["head_dim"]:
        raise InputError(
            f"hidden_size {h} is not divisible by head_dim {genes['head_dim']}", field="head_dim"
        )
    heads = genes.get("num_heads") or h // genes["head_dim"]
    if h % heads:
        raise InputError(f"hidden_size {h} is not divisible by num_heads {heads}", field="num_heads")
    if h // heads not in SUPPORTED_HEAD_DIMS:
        raise InputError(
            f"head_dim {h // heads} (hidden_size {h} / num_heads {heads}) is not one of the sizes attention "
            f"kernels support {SUPPORTED_HEAD_DIMS}",
            field="num_heads",
        )
    if heads % kv:
        raise InputError(f"num_heads {heads} is not a multiple of num_kv_heads {kv}", field="num_kv_heads")
    if h / genes["num_layers"] > MAX_ASPECT:
        raise InputError(
            f"hidden_size/num_layers = {h / genes['num_layers']:.0f} exceeds {MAX_ASPECT} (outside the shapes the "
            "scaling-law proxy was fitted on)",
            field="num_layers",
        )
    experts, topk = genes["num_experts"], genes["experts_per_token"] if genes["num_experts"] else 0
    if experts and topk > experts:
        raise InputError(f"experts_per_token {topk} exceeds num_experts {experts}", field="experts_per_token")
    ffn = max(256, int(round(genes["ffn_ratio_x4"] / 4.0 * h / 256.0)) * 256)
    if experts:  # keep the active FFN compute of a dense layer: expert width = ffn / top-k
        ffn = max(256, int(round(ffn / topk / 128.0)) * 128)
    return ModelSpec(
        id="nas-shape",
        name="searched shape",
        num_layers=genes["num_layers"],
        hidden_size=h,
        num_heads=heads,
        num_kv_heads=kv,
        head_dim=h // heads,
        intermediate_size=ffn,
        vocab_size=genes["vocab_size"],
        max_context=max_context,
        num_experts=experts,
        experts_per_token=topk,
        moe_intermediate_size=ffn if experts else 0,
    )


def evaluate_shape(target: NasTarget, shape: ModelSpec) -> NasPoint:
    """Score one shape on the target; a shape that cannot run comes back ``ok=False`` with the reason."""
    total = estimate_params(shape)
    _, ffn_active, _ = ffn_params(shape)
    ffn_total, _, _ = ffn_params(shape)
    active = total - ffn_total + ffn_active
    params_b, active_b = total / 1e9, active / 1e9
    lo, hi = target.budget_b
    if not lo <= params_b <= hi:
        return NasPoint(
            shape, params_b, active_b, False, f"{params_b:.2f}B parameters outside the {lo:g}..{hi:g}B budget"
        )
    i, o, c = target.input_len, target.output_len, target.concurrency
    try:
        config = ServingConfig(
            model=shape.id,
            gpu=target.hw.id,
            quantization=target.quantization,
            tensor_parallel=target.tp,
            max_model_len=i + o,
        )
        s = replica_shape(shape, target.hw, config)  # divisibility of heads/KV heads by TP
        mem = plan_memory(shape, target.hw, config, seq_len=i + o)
    except (ServewiseError, ValueError) as exc:
        return NasPoint(shape, params_b, active_b, False, str(exc))
    if not mem.fits:
        return NasPoint(shape, params_b, active_b, False, f"does not fit: {mem.reason}")
    cl = closed_loop(s, target.efficiency, config, mem.kv_capacity_tokens, i, o, c)
    price = target.hw.price_per_gpu_hour * config.gpus_per_replica
    return NasPoint(
        shape,
        params_b,
        active_b,
        True,
        None,
        loss=chinchilla_loss(active, target.train_tokens),
        tpot_ms=cl.tpot_s * 1e3,
        throughput_tok_s=cl.throughput_tok_s,
        cost_per_1m=price / (cl.throughput_tok_s * 3600.0) * 1e6,
    )


def pareto(points: list[NasPoint], objective: str) -> list[NasPoint]:
    ok = sorted((p for p in points if p.ok), key=lambda p: (p.loss, p.score(objective)))
    front: list[NasPoint] = []
    best = math.inf
    for p in ok:
        if p.score(objective) < best:
            front.append(p)
            best = p.score(objective)
    return front


@dataclass
class NasResult:
    target: NasTarget
    front: list[NasPoint]
    evaluated: int
    rejected: int
    reasons: Counter[str] = field(default_factory=Counter)
    proxy_note: str = PROXY_NOTE

    def to_json(self) -> dict[str, Any]:
        t = self.target
        return {
            "gpu": t.hw.id,
            "objective": t.objective,
            "budget_b": list(t.budget_b),
            "workload": {"input_len": t.input_len, "output_len": t.output_len, "concurrency": t.concurrency},
            "quality_proxy": self.proxy_note,
            "evaluated": self.evaluated,
            "rejected": self.rejected,
            "rejection_reasons": dict(self.reasons.most_common(5)),
            "front": [p.to_json(t.objective) for p in self.front],
        }


def search_front(
    target: NasTarget, *, generations: int = 40, population: int = 64, seed: int = 0
) -> NasResult:
    """NSGA-II over the genes; the front is taken over every feasible shape the search evaluated."""
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.core.problem import Problem
    from pymoo.optimize import minimize

    names = list(GENES)
    archive: dict[tuple[int, ...], NasPoint] = {}
    reasons: Counter[str] = Counter()
    max_context = target.input_len + target.output_len

    def decode(x: np.ndarray) -> dict[str, int]:
        return {
            n: GENES[n][min(int(v * len(GENES[n])), len(GENES[n]) - 1)] for n, v in zip(names, x, strict=True)
        }

    def score(x: np.ndarray) -> tuple[float, float, float]:
        genes = decode(x)
        key = tuple(genes.values())
        if key not in archive:
            try:
                archive[key] = evaluate_shape(target, make_shape(genes, max_context))
            except InputError as exc:
                archive[key] = NasPoint(_placeholder(), 0.0, 0.0, False, str(exc))
            if not archive[key].ok:
                reasons[re.sub(r"\d+(\.\d+)?", "#", archive[key].reason or "")[:80]] += 1
        p = archive[key]
        if p.ok:
            return p.loss, p.score(target.objective), 0.0
        lo, hi = target.budget_b
        miss = max(lo - p.params_b, p.params_b - hi, 0.0) / hi if p.params_b else 1.0
        return 10.0, 1e9, 1.0 + miss

    class ShapeProblem(Problem):
        def __init__(self) -> None:
            super().__init__(n_var=len(names), n_obj=2, n_ieq_constr=1, xl=0.0, xu=1.0 - 1e-9)

        def _evaluate(self, x: np.ndarray, out: dict[str, Any], *args: Any, **kwargs: Any) -> None:
            vals = np.array([score(row) for row in x])
            out["F"] = vals[:, :2]
            out["G"] = vals[:, 2:]

    minimize(ShapeProblem(), NSGA2(pop_size=population), ("n_gen", generations), seed=seed, verbose=False)
    points = list(archive.values())
    return NasResult(
        target, pareto(points, target.objective), len(points), sum(not p.ok for p in points), reasons
    )


def _placeholder() -> ModelSpec:
    return ModelSpec(
        id="nas-rejected",
        name="rejected",
        num_layers=1,
        hidden_size=1,
        num_heads=1,
        num_kv_heads=1,
        head_dim=1,
        intermediate_size=1,
        vocab_size=1,
        max_context=1,
    )


def write_front(result: NasResult, out: Path) -> None:
    """``front.csv``, ``front.json`` and ``front.png`` (proxy loss vs the objective) in ``out``."""
    import csv
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    doc = result.to_json()
    (out / "front.json").write_text(json.dumps(doc, indent=2) + "\n")
    with (out / "front.csv").open("w", newline="") as fh:
        if doc["front"]:
            writer = csv.DictWriter(fh, fieldnames=list(doc["front"][0]))
            writer.writeheader()
            writer.writerows(doc["front"])
    fig, ax = plt.subplots(figsize=(6, 4))
    obj = result.target.objective
    ax.plot([p.score(obj) for p in result.front], [p.loss for p in result.front], "o-")
    ax.set_xlabel(
        {"tpot": "TPOT (ms)", "throughput": "- throughput (tok/s)", "cost": "$ / 1M output tokens"}[obj]
    )
    ax.set_ylabel("Chinchilla loss (PROXY for quality)")
    ax.set_title(f"Architecture Pareto front on {result.target.hw.id}")
    fig.tight_layout()
    fig.savefig(out / "front.png", dpi=110)
    plt.close(fig)
