"""Architecture search: rejected shapes say why; known models land at or behind the found front."""

from __future__ import annotations

import pytest

from servewise.errors import InputError
from servewise.perf.catalog import get_catalog
from servewise.studies.nas import (
    NasTarget,
    chinchilla_loss,
    evaluate_shape,
    make_shape,
    parse_budget,
    parse_workload,
    search_front,
)

GENES = {
    "num_layers": 32,
    "hidden_size": 4096,
    "num_heads": 32,
    "num_kv_heads": 8,
    "ffn_ratio_x4": 14,
    "num_experts": 0,
    "experts_per_token": 1,
    "vocab_size": 128256,
}


def _target(gpu: str = "l4", budget: tuple[float, float] = (6, 9), **kw) -> NasTarget:  # type: ignore[no-untyped-def]
    return NasTarget.build(gpu=gpu, workload=(1024, 256, 32), budget_b=budget, **kw)


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        (
            {"num_kv_heads": 16, "num_heads": 24, "hidden_size": 3072},
            "num_kv_heads",
            "not a multiple of num_kv_heads",
        ),
        ({"num_heads": 28, "hidden_size": 4096}, "num_heads", "not divisible by num_heads"),
        ({"num_experts": 8, "experts_per_token": 16}, "experts_per_token", "exceeds num_experts"),
        ({"num_heads": 64, "hidden_size": 3072}, "num_heads", "head_dim 48 .* not one of the sizes"),
        ({"num_layers": 8, "hidden_size": 8192, "num_heads": 64}, "num_layers", "hidden_size/num_layers"),
    ],
)
def test_impossible_shapes_are_rejected_with_the_field(change: dict, field: str, words: str) -> None:
    with pytest.raises(InputError, match=words) as err:
        make_shape({**GENES, **change}, max_context=4096)
    assert err.value.field == field


def test_head_dim_gene_must_divide_the_hidden_size() -> None:
    genes = {k: v for k, v in GENES.items() if k != "num_heads"}
    assert make_shape({**genes, "head_dim": 128}, max_context=4096).num_heads == 32
    with pytest.raises(InputError, match="not divisible by head_dim 96") as err:
        make_shape({**genes, "head_dim": 96, "hidden_size": 4096}, max_context=4096)
    assert err.value.field == "head_dim"


def test_shapes_that_do_not_fit_or_break_tp_are_rejected_with_the_reason() -> None:
    shape = make_shape(GENES, max_context=1280)
    big = _target("l4", budget=(1, 100), weights="bf16")
    wide = make_shape({**GENES, "num_layers": 80, "hidden_size": 8192, "num_heads": 64}, max_context=1280)
    p = evaluate_shape(big, wide)
    assert not p.ok and "does not fit" in (p.reason or "") and "weights need" in (p.reason or "")
    tp8 = _target("h100-sxm", budget=(1, 100), tp=8)
    odd = make_shape({**GENES, "num_heads": 20, "num_kv_heads": 4, "hidden_size": 5120}, max_context=1280)
    q = evaluate_shape(tp8, odd)
    assert not q.ok and "tensor_parallel=8 does not divide" in (q.reason or "")
    small = evaluate_shape(_target("l4", budget=(20, 30)), shape)
    assert not small.ok and "outside the 20..30B budget" in (small.reason or "")
    assert evaluate_shape(_target("h100-sxm", budget=(1, 100)), shape).ok


def test_chinchilla_proxy_falls_with_parameters_toward_the_irreducible_loss() -> None:
    losses = [chinchilla_loss(n, 1.4e12) for n in (1e9, 7e9, 70e9, 1e15)]
    assert losses == sorted(losses, reverse=True)
    assert losses[-1] == pytest.approx(1.69 + 410.7 / 1.4e12**0.28, abs=0.01)


@pytest.mark.parametrize(("model_id", "gpu"), [("llama-3.1-8b", "l4"), ("qwen2.5-7b", "h100-sxm")])
def test_known_model_lands_at_or_behind_the_front(model_id: str, gpu: str) -> None:
    target = _target(gpu, budget=(6, 9))
    model = get_catalog().model(model_id).model_copy(update={"max_context": 1280})
    known = evaluate_shape(target, model)
    assert known.ok, known.reason
    result = search_front(target, generations=60, population=48, seed=1)
    assert len(result.front) >= 3 and result.rejected > 0
    assert not any(known.dominates(p, "tpot") for p in result.front)
    # the search found a shape at least as good on both objectives (the known model is behind the front)
    assert any(p.loss <= known.loss and p.tpot_ms <= known.tpot_ms for p in result.front)
    losses = [p.loss for p in result.front]
    tpots = [p.tpot_ms for p in result.front]
    assert losses == sorted(losses) and tpots == sorted(tpots, reverse=True)  # a proper trade-off curve


def test_cli_inputs_are_checked() -> None:
    assert parse_budget("6..9") == (6.0, 9.0) and parse_workload("1024:256:32") == (1024, 256, 32)
    for bad in ("9..6", "6-9", "a..b"):
        with pytest.raises(InputError, match="--params"):
            parse_budget(bad)
    with pytest.raises(InputError, match="--workload"):
        parse_workload("1024:256")
    with pytest.raises(InputError, match="--objective"):
        _target(objective="vibes")
    with pytest.raises(InputError, match="--tp.*power of two"):  # before the search, not after it
        _target(tp=3)
