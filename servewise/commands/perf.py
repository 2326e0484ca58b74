"""`servewise perf ...`: predict one configuration, validate/calibrate/cross-validate against measurements."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from servewise.commands._output import err_console, out_console, output_file, print_json, writing

if TYPE_CHECKING:
    from servewise.domain import ServingConfig
    from servewise.perf.catalog import Catalog

perf_app = typer.Typer(
    help="Performance model: predict, validate, calibrate, simulate.", no_args_is_help=True
)


def _config(
    model: str,
    gpu: str,
    tp: int,
    pp: int,
    quant: str,
    kv: str,
    engine: str,
    max_num_seqs: int | None,
    max_batched_tokens: int | None,
    hardware_file: list[Path] | None,
) -> tuple[ServingConfig, Catalog]:
    from servewise.domain import Engine, Quantization, ServingConfig
    from servewise.domain.quantization import Dtype
    from servewise.errors import InputError
    from servewise.perf.catalog import get_catalog

    cat = get_catalog(tuple(hardware_file or ()))
    spec, named_quant = cat.resolve_model(model)
    hw = cat.gpu(gpu)
    try:
        weights = Dtype.parse(quant)
        kv_dtype = Dtype.parse(kv)
        engine_v = Engine(engine.lower())
    except ValueError as exc:
        raise InputError(str(exc), field="--quant/--kv-dtype/--engine") from None
    method = (
        quant.lower()
        if quant.lower() in ("awq", "gptq", "w4a16")
        else (named_quant.method if named_quant else None)
    )
    if named_quant and quant == "bf16":
        weights = named_quant.weights
    extra = {}
    if max_num_seqs:
        extra["max_num_seqs"] = max_num_seqs
    if max_batched_tokens:
        extra["max_num_batched_tokens"] = max_batched_tokens
    try:
        cfg = ServingConfig(
            model=spec.id,
            gpu=hw.id,
            tensor_parallel=tp,
            pipeline_parallel=pp,
            engine=engine_v,
            quantization=Quantization(weights=weights, kv_cache=kv_dtype, method=method),
            **extra,
        )
    except ValueError as exc:
        raise InputError(str(exc), field="configuration") from None
    return cfg, cat


def predict_cmd(
    model: Annotated[str, typer.Option(help="catalog id or Hugging Face repo id")],
    gpu: Annotated[str, typer.Option(help="catalog id, node label or instance type")],
    tp: Annotated[int, typer.Option("--tp", help="tensor parallel size")] = 1,
    pp: Annotated[int, typer.Option("--pp", help="pipeline parallel size")] = 1,
    quant: Annotated[str, typer.Option(help="weights: bf16, fp8, int8, int4/awq/gptq, fp4")] = "bf16",
    kv_dtype: Annotated[str, typer.Option("--kv-dtype", help="KV cache: bf16 or fp8")] = "bf16",
    input_len: Annotated[int, typer.Option(help="prompt tokens")] = 1024,
    output_len: Annotated[int, typer.Option(help="generated tokens")] = 256,
    concurrency: Annotated[int, typer.Option(help="requests in flight")] = 16,
    engine: Annotated[str, typer.Option(help="vllm, sglang, trtllm, tgi")] = "vllm",
    max_num_seqs: Annotated[int | None, typer.Option(help="override the engine default")] = None,
    max_num_batched_tokens: Annotated[int | None, typer.Option(help="override the engine default")] = None,
    hardware_file: Annotated[
        list[Path] | None, typer.Option(help="YAML with custom/hypothetical chips")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="one JSON document on stdout")] = False,
) -> None:
    """Predict throughput, TTFT, TPOT, KV capacity and cost of one replica at a fixed concurrency."""
    from servewise.perf.analytical import predict

    cfg, cat = _config(
        model, gpu, tp, pp, quant, kv_dtype, engine, max_num_seqs, max_num_batched_tokens, hardware_file
    )
    pred = predict(cfg, input_len=input_len, output_len=output_len, concurrency=concurrency, catalog=cat)
    doc = {**pred.model_dump(mode="json"), "config": cfg.model_dump(mode="json")}
    if json_out:
        print_json(doc)
        return
    table = Table(
        title=f"{cfg.model} on {cfg.tensor_parallel}x {cfg.gpu} ({cfg.quantization.label}, {cfg.engine})"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in [
        ("throughput (output tok/s)", f"{pred.throughput_tok_s:,.0f}"),
        ("TTFT (ms)", f"{pred.ttft_ms:,.1f}"),
        ("TPOT (ms)", f"{pred.tpot_ms:,.2f}"),
        ("requests/s", f"{pred.request_throughput_per_s:,.2f}"),
        ("decode step bound", pred.bound),
        ("weights / GPU (GiB)", f"{pred.memory.weights_gb:.1f}"),
        ("KV capacity (tokens)", f"{pred.memory.kv_capacity_tokens:,}"),
        ("$ / hour", f"{pred.cost_per_hour:.2f}"),
        ("$ / 1M output tokens", f"{pred.cost_per_1m_output_tokens:.3f}"),
    ]:
        table.add_row(name, value)
    out_console.print(table)
    for note in pred.notes:
        out_console.print(f"note: {note}")


def validate_cmd(
    file: Annotated[Path, typer.Argument(help="measurements CSV (columns: docs/performance-model.md)")],
    split: Annotated[str, typer.Option(help="all, train or holdout rows")] = "all",
    plot: Annotated[Path | None, typer.Option(help="write a predicted-vs-measured PNG here")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="one JSON document on stdout")] = False,
) -> None:
    """Predict every row of FILE; print per-row error and MAPE per metric."""
    from servewise.errors import InputError
    from servewise.perf.measurements import read_measurements
    from servewise.perf.validation import validate

    if split not in ("all", "train", "holdout"):
        raise InputError("must be all, train or holdout", field="--split")
    if plot is not None:
        output_file(plot, "--plot")  # refused before the rows are predicted, not after
    rows = read_measurements(file)
    report = validate(rows)
    if plot is not None:
        from servewise.perf.plots import plot_predicted_vs_measured

        title = f"servewise performance model vs {report.counts['predicted']} published measurements"
        with writing(plot, "--plot"):
            written = plot_predicted_vs_measured(report, plot, title=title)
        err_console.print(f"wrote {written}")
    if split != "all":
        kept = [r for r in report.rows if r.split == split]
        report = report.model_copy(update={"rows": kept, "mape": report.mape_by_split.get(split, {})})
    if json_out:
        print_json(report)
        return
    table = Table(title=f"{file}: {report.counts['predicted']}/{report.counts['rows']} rows predicted")
    for col in ("metric", "all rows", "train", "holdout"):
        table.add_column(col, justify="right")
    for metric in report.mape:
        table.add_row(
            metric,
            f"{report.mape[metric]:.1f}%",
            *(
                "-" if (v := report.mape_by_split[s].get(metric)) is None else f"{v:.1f}%"
                for s in ("train", "holdout")
            ),
        )
    out_console.print(table)
    for r in report.rows:
        if r.error:
            err_console.print(f"row {r.index}: {r.error}")


def calibrate_cmd(
    file: Annotated[Path, typer.Argument(help="measurements CSV to fit on")],
    split: Annotated[
        str, typer.Option(help="fit on 'train' rows (holdout kept for checking) or 'all'")
    ] = "train",
    write: Annotated[bool, typer.Option(help="write servewise/perf/data/calibration.json")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="one JSON document on stdout")] = False,
) -> None:
    """Fit the efficiency factors per engine (scipy least squares) and report train/holdout MAPE."""
    from servewise.perf.calibration import calibrate, write_calibration
    from servewise.perf.efficiency import reload_calibration
    from servewise.perf.measurements import read_measurements

    result = calibrate(read_measurements(file), split=split)
    result["fitted_on"] = str(file)
    if write:
        path = write_calibration(result)
        reload_calibration()
        err_console.print(f"wrote {path}")
    if json_out:
        print_json(result)
        return
    table = Table(title="MAPE after calibration")
    for col in ("split", "metric", "MAPE"):
        table.add_column(col)
    for split_name, by_metric in result["mape_by_split"].items():
        for metric, value in by_metric.items():
            table.add_row(split_name, metric, f"{value:.1f}%")
    out_console.print(table)


def simulate_cmd(
    model: Annotated[str, typer.Option(help="catalog id or Hugging Face repo id")],
    gpu: Annotated[str, typer.Option(help="catalog id, node label or instance type")],
    tp: Annotated[int, typer.Option("--tp", help="tensor parallel size")] = 1,
    quant: Annotated[str, typer.Option(help="weights: bf16, fp8, int8, int4/awq/gptq, fp4")] = "bf16",
    kv_dtype: Annotated[str, typer.Option("--kv-dtype", help="KV cache: bf16 or fp8")] = "bf16",
    input_len: Annotated[int, typer.Option(help="mean prompt tokens (lognormal, std = mean/2)")] = 1024,
    output_len: Annotated[int, typer.Option(help="mean generated tokens (lognormal, std = mean/2)")] = 256,
    rate: Annotated[float | None, typer.Option(help="Poisson arrivals per second (open loop)")] = None,
    concurrency: Annotated[int | None, typer.Option(help="closed-loop clients (instead of --rate)")] = None,
    num_requests: Annotated[int, typer.Option(help="requests to simulate")] = 2000,
    max_num_seqs: Annotated[int | None, typer.Option(help="override the engine default")] = None,
    max_num_batched_tokens: Annotated[int | None, typer.Option(help="override the engine default")] = None,
    ttft_p99_ms: Annotated[float | None, typer.Option(help="SLO for goodput")] = None,
    tpot_p99_ms: Annotated[float | None, typer.Option(help="SLO for goodput")] = None,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="one JSON document on stdout")] = False,
) -> None:
    """Discrete-event simulation of one replica under a load: latency percentiles, goodput, KV, cost."""
    from servewise.domain import SLO, LengthDistribution, Workload
    from servewise.errors import InputError
    from servewise.perf.simulator import simulate_config

    if (rate is None) == (concurrency is None):
        raise InputError("give exactly one of --rate or --concurrency", field="--rate/--concurrency")
    cfg, cat = _config(model, gpu, tp, 1, quant, kv_dtype, "vllm", max_num_seqs, max_num_batched_tokens, None)
    workload = Workload(
        input_len=LengthDistribution(
            kind="lognormal", mean=input_len, std=input_len / 2, max=max(input_len * 8, 16)
        ),
        output_len=LengthDistribution(
            kind="lognormal", mean=output_len, std=output_len / 2, max=max(output_len * 8, 16)
        ),
        arrival_rate_per_s=rate,
        concurrency=concurrency,
    )
    slo = SLO(ttft_p99_ms=ttft_p99_ms, tpot_p99_ms=tpot_p99_ms) if (ttft_p99_ms or tpot_p99_ms) else None
    result = simulate_config(cfg, workload, num_requests=num_requests, seed=seed, slo=slo, catalog=cat)
    if json_out:
        print_json({**result.model_dump(mode="json"), "config": cfg.model_dump(mode="json")})
        return
    table = Table(
        title=f"simulated {result.completed}/{result.num_requests} requests: {cfg.model} on "
        f"{cfg.tensor_parallel}x {cfg.gpu}"
    )
    for col in ("metric", "mean", "p50", "p90", "p99"):
        table.add_column(col, justify="right")
    for name, stats in (("TTFT ms", result.ttft_ms), ("TPOT ms", result.tpot_ms), ("e2e ms", result.e2e_ms)):
        table.add_row(name, *(f"{getattr(stats, k):,.1f}" for k in ("mean", "p50", "p90", "p99")))
    out_console.print(table)
    out_console.print(
        f"throughput {result.throughput_tok_s:,.0f} tok/s, {result.request_throughput_per_s:.2f} req/s, "
        f"KV peak {result.kv_usage_peak:.0%}, preemptions {result.preemptions}, "
        f"${result.cost_per_1m_output_tokens:.3f} per 1M output tokens"
        + (f", SLO attainment {result.slo_attainment:.1%}" if result.slo_attainment is not None else "")
    )


def crossval_cmd(
    file: Annotated[Path, typer.Argument(help="measurements CSV (columns: docs/performance-model.md)")],
    folds: Annotated[int, typer.Option(help="folds of whole configuration groups")] = 4,
    by: Annotated[
        str, typer.Option(help="'group' folds, or 'source': leave one public source out")
    ] = "group",
    split: Annotated[str, typer.Option(help="all or train rows (train: for model development)")] = "all",
    json_out: Annotated[bool, typer.Option("--json", help="one JSON document on stdout")] = False,
) -> None:
    """Cross-validate: predict every row with a calibration fitted without its fold; MAPE per metric."""
    from servewise.errors import InputError
    from servewise.perf.crossval import cross_validate
    from servewise.perf.measurements import read_measurements

    if by not in ("group", "source"):
        raise InputError("must be group or source", field="--by")
    if split not in ("all", "train"):
        raise InputError("must be all or train", field="--split")
    rows = [r for r in read_measurements(file) if split == "all" or r.split == "train"]
    result = cross_validate(rows, folds=folds, by=by)  # type: ignore[arg-type]
    if json_out:
        print_json(result)
        return
    table = Table(title=f"{file}: out-of-fold MAPE ({split} rows, {result.folds} folds by {by})")
    for col in ("metric", "rows", "MAPE"):
        table.add_column(col, justify="right")
    for metric, mape in result.mape.items():
        table.add_row(metric, str(result.rows[metric]), f"{mape:.1f}%")
    out_console.print(table)


def register(app: typer.Typer) -> None:
    perf_app.command("predict")(predict_cmd)
    perf_app.command("validate")(validate_cmd)
    perf_app.command("calibrate")(calibrate_cmd)
    perf_app.command("crossval")(crossval_cmd)
    perf_app.command("simulate")(simulate_cmd)
    app.add_typer(perf_app, name="perf")
