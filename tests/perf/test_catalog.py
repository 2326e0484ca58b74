"""Catalog contents, name resolution, custom chip files and physics sanity checks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from servewise.domain.quantization import Dtype, Quantization
from servewise.errors import InputError, UnknownIdError
from servewise.perf import catalog as catalog_mod
from servewise.perf.catalog import Catalog, estimate_params, get_catalog, quality_score

REPO = Path(__file__).resolve().parents[2]
HYPOTHETICAL = REPO / "data" / "hardware" / "hypothetical-2x-bandwidth.yaml"

GPU_IDS = ["a10g", "l4", "l40s", "a100-40gb", "a100-80gb", "h100-pcie", "h100-sxm", "h200", "mi300x", "b200"]
MODEL_IDS = [
    "llama-3.1-8b", "llama-3.1-70b", "llama-3.1-405b", "llama-3.2-1b", "llama-3.2-3b", "qwen2.5-7b",
    "qwen2.5-32b", "qwen2.5-72b", "mistral-7b", "mixtral-8x7b", "gemma-2-9b", "gemma-2-27b",
    "deepseek-v2-lite",
]  # fmt: skip


@pytest.fixture(scope="module")
def cat() -> Catalog:
    return Catalog.load()


def test_every_convention_id_resolves(cat: Catalog) -> None:
    assert sorted(g.id for g in cat.gpus()) == sorted(GPU_IDS)
    assert sorted(m.id for m in cat.models()) == sorted(MODEL_IDS)
    for gpu_id in GPU_IDS:
        assert cat.gpu(gpu_id).id == gpu_id
        assert cat.gpu(gpu_id.upper()).id == gpu_id
    for model_id in MODEL_IDS:
        assert cat.model(model_id).id == model_id


def test_every_entry_cites_sources(cat: Catalog) -> None:
    cited: list[tuple[str, list[str]]] = [(g.id, g.sources) for g in cat.gpus()]
    cited += [(m.id, m.sources) for m in cat.models()]
    for spec_id, sources in cited:
        assert sources and all(s.startswith("https://") for s in sources), spec_id
    for model in cat.models():
        assert model.quality, model.id
        assert len({q.benchmark for q in model.quality}) == 1, f"{model.id}: one benchmark per model"
        assert all(q.source.startswith("https://") for q in model.quality), model.id


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("NVIDIA-H100-80GB-HBM3", "h100-sxm"),
        ("NVIDIA-A100-SXM4-80GB", "a100-80gb"),
        ("NVIDIA-A100-SXM4-40GB", "a100-40gb"),
        ("NVIDIA-L4", "l4"),
        ("nvidia-l4", "l4"),
        ("NVIDIA-A10G", "a10g"),
        ("NVIDIA-L40S", "l40s"),
        ("NVIDIA-H100-PCIe", "h100-pcie"),
        ("NVIDIA-H200", "h200"),
        ("AMD_Instinct_MI300X_OAM", "mi300x"),
        ("NVIDIA-B200", "b200"),
        ("NVIDIA-A100-SXM4-40GB-SHARED", "a100-40gb"),
        ("g6e.12xlarge", "l40s"),
        ("g5.xlarge", "a10g"),
        ("g5.48xlarge", "a10g"),
        ("g6.xlarge", "l4"),
        ("p4d.24xlarge", "a100-40gb"),
        ("p4de.24xlarge", "a100-80gb"),
        ("p5.48xlarge", "h100-sxm"),
        ("p5e.48xlarge", "h200"),
        ("p5en.48xlarge", "h200"),
        ("a2-highgpu-8g", "a100-40gb"),
        ("a2-ultragpu-1g", "a100-80gb"),
        ("a3-highgpu-8g", "h100-sxm"),
        ("g2-standard-8", "l4"),
        ("Standard_ND96isr_H100_v5", "h100-sxm"),
        ("standard_nd96isr_h100_v5", "h100-sxm"),
    ],
)
def test_gpu_aliases(cat: Catalog, name: str, expected: str) -> None:
    assert cat.gpu(name).id == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("meta-llama/Llama-3.1-70B-Instruct", "llama-3.1-70b"),
        ("meta-llama/Meta-Llama-3.1-8B-Instruct", "llama-3.1-8b"),
        ("Llama-3.3-70B", "llama-3.1-70b"),
        ("meta-llama/Llama-3.3-70B-Instruct", "llama-3.1-70b"),
        ("Qwen/Qwen2.5-7B-Instruct", "qwen2.5-7b"),
        ("mistralai/Mixtral-8x7B-Instruct-v0.1", "mixtral-8x7b"),
        ("google/gemma-2-27b-it", "gemma-2-27b"),
        ("deepseek-ai/DeepSeek-V2-Lite-Chat", "deepseek-v2-lite"),
        ("LLAMA-3.1-8B", "llama-3.1-8b"),
    ],
)
def test_model_aliases(cat: Catalog, name: str, expected: str) -> None:
    spec, quant = cat.resolve_model(name)
    assert spec.id == expected
    assert quant is None


@pytest.mark.parametrize(
    ("repo", "model_id", "weights", "method", "kv"),
    [
        ("Qwen/Qwen2.5-32B-Instruct-AWQ", "qwen2.5-32b", Dtype.INT4, "awq", Dtype.BF16),
        ("Qwen/Qwen2.5-72B-Instruct-GPTQ-Int4", "qwen2.5-72b", Dtype.INT4, "gptq", Dtype.BF16),
        ("Qwen/Qwen2.5-7B-Instruct-GPTQ-Int8", "qwen2.5-7b", Dtype.INT8, "gptq", Dtype.BF16),
        ("neuralmagic/Meta-Llama-3.1-8B-Instruct-FP8", "llama-3.1-8b", Dtype.FP8, None, Dtype.BF16),
        ("RedHatAI/Meta-Llama-3.1-70B-Instruct-FP8-dynamic", "llama-3.1-70b", Dtype.FP8, None, Dtype.BF16),
        ("RedHatAI/Llama-3.3-70B-Instruct-quantized.w4a16", "llama-3.1-70b", Dtype.INT4, "w4a16", Dtype.BF16),
        ("RedHatAI/Meta-Llama-3.1-8B-Instruct-quantized.w8a8", "llama-3.1-8b", Dtype.INT8, None, Dtype.BF16),
        ("someorg/Mistral-7B-Instruct-v0.3-w4a16", "mistral-7b", Dtype.INT4, "w4a16", Dtype.BF16),
        ("neuralmagic/Mixtral-8x7B-Instruct-v0.1-FP8-KV", "mixtral-8x7b", Dtype.FP8, None, Dtype.FP8),
    ],
)
def test_quantized_repo_ids(
    cat: Catalog, repo: str, model_id: str, weights: Dtype, method: str | None, kv: Dtype
) -> None:
    spec, quant = cat.resolve_model(repo)
    assert spec.id == model_id
    assert quant == Quantization(weights=weights, method=method, kv_cache=kv)
    assert cat.model(repo).id == model_id  # model() accepts the same names


@pytest.mark.parametrize(
    ("field", "name", "suggestion"), [("gpu", "h10", "h100"), ("model", "llama-3.1-7b", "llama-3.1")]
)
def test_unknown_names_raise_with_suggestion(cat: Catalog, field: str, name: str, suggestion: str) -> None:
    lookup = cat.gpu if field == "gpu" else cat.model
    with pytest.raises(UnknownIdError) as info:
        lookup(name)
    assert info.value.field == field
    message = str(info.value)
    assert name in message and "did you mean" in message and suggestion in message


def test_unknown_quantized_repo_still_raises(cat: Catalog) -> None:
    with pytest.raises(UnknownIdError, match="model"):
        cat.resolve_model("acme/NotAModel-70B-AWQ")


def test_hypothetical_file_loads_and_scales(cat: Catalog) -> None:
    chips = {c.id: c for c in cat.load_hardware_file(HYPOTHETICAL)}
    base = cat.gpu("h100-sxm")
    h = chips["h100-2x-bw"]
    assert h.hypothetical
    assert h.memory_bandwidth_gbs == pytest.approx(2 * base.memory_bandwidth_gbs)
    assert h.memory_gb == pytest.approx(1.5 * base.memory_gb)
    assert h.tflops == base.tflops
    assert chips["h200-fast-nvlink"].price_per_gpu_hour == 11.0
    l4 = cat.gpu("l4")
    nxt = chips["l4-next"]
    assert nxt.tflops[Dtype.BF16] == pytest.approx(1.5 * l4.tflops[Dtype.BF16])
    assert nxt.tflops[Dtype.FP4] == 727.5 and nxt.name == "Hypothetical L4 successor"

    extended = cat.with_hardware(chips.values())
    assert extended.gpu("H100-2X-BW").id == "h100-2x-bw"
    assert extended.version != cat.version
    with pytest.raises(UnknownIdError):
        cat.gpu("h100-2x-bw")  # the original catalog is unchanged


def test_same_id_overrides_keep_aliases(cat: Catalog, tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text("hardware:\n  - {id: h100-sxm, base: h100-sxm, price_per_gpu_hour: 6.88}\n")
    repriced = cat.with_hardware(cat.load_hardware_file(path))
    h100 = repriced.gpu("p5.48xlarge")
    assert h100.id == "h100-sxm" and h100.price_per_gpu_hour == 6.88 and not h100.hypothetical
    assert h100.memory_bandwidth_gbs == cat.gpu("h100-sxm").memory_bandwidth_gbs
    assert cat.gpu("p5.48xlarge").price_per_gpu_hour != 6.88


def test_get_catalog_with_files_and_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(catalog_mod.HARDWARE_FILES_ENV, raising=False)
    default = get_catalog()
    assert get_catalog() is default  # cached
    with_file = get_catalog([HYPOTHETICAL])
    assert with_file.gpu("h100-2x-bw").hypothetical
    other = tmp_path / "chip.yaml"
    other.write_text("- {id: b200-cheap, base: b200, price_per_gpu_hour: 5}\n")
    monkeypatch.setenv(catalog_mod.HARDWARE_FILES_ENV, f"{HYPOTHETICAL}{os.pathsep}{other}")
    from_env = get_catalog()
    assert from_env.gpu("b200-cheap").price_per_gpu_hour == 5
    assert from_env.gpu("l4-next").edge


@pytest.mark.parametrize(
    ("text", "field", "fragment"),
    [
        (
            "- {id: x1, base: h100-sxm, scale: {memory_bandwidth_gbs: -2}}\n",
            "hardware[0].scale.memory_bandwidth_gbs",
            "positive",
        ),
        ("- {id: ok, base: l4}\n- {id: x2, base: h999}\n", "hardware[1].base", "h999"),
        ("- {id: x3, base: l4, scale: {interconnect: 2}}\n", "hardware[0].scale.interconnect", "not numeric"),
        ("- {id: x4, base: l4, scale: {colour: 2}}\n", "hardware[0].scale.colour", "unknown"),
        ("- {id: x5, base: l4, memory_gb: lots}\n", "hardware[0].memory_gb", "number"),
        ("- {id: BAD ID, base: l4}\n", "hardware[0].id", "pattern"),
        ("- {id: x6, name: new chip, memory_gb: 10}\n", "hardware[0].memory_bandwidth_gbs", "required"),
        ("hardware: {id: x7}\n", "hardware", "list"),
    ],
)
def test_broken_file_names_file_and_field(
    cat: Catalog, tmp_path: Path, text: str, field: str, fragment: str
) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        cat.load_hardware_file(path)
    assert info.value.source == str(path)
    assert info.value.field == field
    assert str(path) in str(info.value) and fragment.lower() in str(info.value).lower()


def test_invalid_yaml_and_missing_file(cat: Catalog, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("- {id: x, base: [unclosed\n")
    with pytest.raises(InputError, match="invalid YAML") as info:
        cat.load_hardware_file(bad)
    assert info.value.source == str(bad)
    with pytest.raises(InputError, match="cannot read"):
        cat.load_hardware_file(tmp_path / "nope.yaml")


def test_bandwidth_and_memory_ordering(cat: Catalog) -> None:
    bw = {g.id: g.memory_bandwidth_gbs for g in cat.gpus()}
    mem = {g.id: g.memory_gb for g in cat.gpus()}
    assert bw["b200"] > bw["mi300x"] > bw["h200"] > bw["h100-sxm"] > bw["a100-80gb"] > bw["a100-40gb"]
    assert bw["h100-sxm"] > bw["h100-pcie"] and bw["l40s"] > bw["a10g"] > bw["l4"]
    assert mem["mi300x"] > mem["b200"] > mem["h200"] > mem["h100-sxm"] == mem["a100-80gb"] > mem["l40s"]


def test_compute_ratios(cat: Catalog) -> None:
    for gpu_id in ("h100-sxm", "h100-pcie", "h200", "l4", "l40s", "mi300x", "b200"):
        t = cat.gpu(gpu_id).tflops
        assert t[Dtype.FP8] == pytest.approx(2 * t[Dtype.BF16], rel=0.02), gpu_id  # L40S sheet: 362 vs 733
    assert cat.gpu("b200").tflops[Dtype.FP4] == pytest.approx(2 * cat.gpu("b200").tflops[Dtype.FP8])
    for ampere in ("a10g", "a100-40gb", "a100-80gb"):
        assert not cat.gpu(ampere).supports(Dtype.FP8)  # no fp8 tensor cores before Ada/Hopper
    assert cat.gpu("h200").tflops == cat.gpu("h100-sxm").tflops  # same GH100 die
    nvlink = {g.id for g in cat.gpus() if g.interconnect.startswith(("nvlink", "infinity"))}
    pcie = {g.id for g in cat.gpus()} - nvlink
    assert min(cat.gpu(g).interconnect_gbs for g in nvlink) > 4 * max(
        cat.gpu(g).interconnect_gbs for g in pcie
    )


def test_edge_and_prices(cat: Catalog) -> None:
    assert {g.id for g in cat.gpus() if g.edge} == {"a10g", "l4"}
    price = {g.id: g.price_per_gpu_hour for g in cat.gpus()}
    assert price["l4"] < price["a10g"] < price["l40s"] < price["h100-sxm"] < price["b200"]


@pytest.mark.parametrize("model_id", MODEL_IDS)
def test_estimated_params_match_published(cat: Catalog, model_id: str) -> None:
    model = cat.model(model_id)
    assert model.params_b is not None
    assert estimate_params(model) == pytest.approx(model.params_b, rel=0.05)


def test_estimate_params_reacts_to_shapes(cat: Catalog) -> None:
    llama = cat.model("llama-3.2-1b")
    untied = llama.model_copy(update={"tie_embeddings": False})
    assert estimate_params(untied) - estimate_params(llama) == pytest.approx(128256 * 2048 / 1e9)
    lite = cat.model("deepseek-v2-lite")
    dense_first = lite.model_copy(update={"first_dense_layers": 0})
    assert estimate_params(dense_first) > estimate_params(lite) + 0.4  # one more MoE layer of 66 experts


def test_moe_and_mla_shapes(cat: Catalog) -> None:
    lite = cat.model("deepseek-v2-lite")
    assert lite.is_moe and lite.uses_mla
    assert (lite.kv_lora_rank, lite.rope_head_dim) == (512, 64)
    assert (lite.num_experts, lite.experts_per_token, lite.num_shared_experts) == (64, 6, 2)
    assert lite.first_dense_layers == 1 and lite.moe_intermediate_size == 1408
    mixtral = cat.model("mixtral-8x7b")
    assert mixtral.is_moe and not mixtral.uses_mla and mixtral.experts_per_token == 2


def test_quality_scores(cat: Catalog) -> None:
    llama = cat.model("llama-3.1-8b")
    bf16, _ = quality_score(llama, None)
    fp8, label = quality_score(llama, Quantization(weights=Dtype.FP8))
    assert label == "fp8" and fp8 is not None and bf16 is not None and fp8 < bf16
    awq, label = quality_score(llama, Quantization(weights=Dtype.INT4, method="awq"))
    assert label == "w4a16" and awq is not None and awq < bf16  # another int4 method, not bf16
    big, _ = quality_score(cat.model("llama-3.1-70b"), None)
    assert big is not None and big > bf16
    score, label = quality_score(cat.model("gemma-2-9b"), Quantization(weights=Dtype.FP8))
    assert label == "bf16" and score == cat.model("gemma-2-9b").quality_for("bf16")


def test_version_is_stable_hash(cat: Catalog) -> None:
    again = Catalog.load()
    assert again.version == cat.version and len(cat.version) == 12
