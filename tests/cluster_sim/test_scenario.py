from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from servewise.cluster.sim_scenario import DailyPattern, LoadSpec, load_scenario, scenario_names
from servewise.domain import LengthDistribution
from servewise.errors import InputError, UnknownIdError


def test_shipped_scenarios_load_with_the_promised_sizes() -> None:
    assert {"demo", "large", "edge"} <= set(scenario_names())
    demo = load_scenario("demo")
    assert 6 <= len(demo.deployments) <= 10
    large = load_scenario("large")
    assert len(large.deployments) >= 200
    assert sum(p.total_gpus for p in large.pools) >= 2000
    edge = load_scenario("edge")
    assert {p.location for p in edge.pools} == {"cloud", "edge"}


def test_large_is_generated_reproducibly() -> None:
    a, b = load_scenario("large"), load_scenario("large")
    assert a.fingerprint == b.fingerprint
    used = {p.name: 0 for p in a.pools}
    for d in a.deployments:
        used[d.pool] += a.serving_config(d).total_gpus
    assert all(used[p.name] <= p.total_gpus for p in a.pools)


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _base() -> dict:
    return {
        "name": "t",
        "pools": [{"name": "p", "gpu": "h100-sxm", "nodes": 1, "gpus_per_node": 8}],
        "deployments": [
            {
                "name": "d",
                "pool": "p",
                "config": {"model": "llama-3.1-8b"},
                "workload": {
                    "input_len": {"kind": "fixed", "mean": 100},
                    "output_len": {"kind": "fixed", "mean": 10},
                    "rate_per_s": 1.0,
                },
            }
        ],
    }


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d["deployments"][0].update(pool="nope"), "unknown pool"),
        (lambda d: d["pools"][0].update(gpu="tpu-v9"), "pools.0.gpu"),
        (lambda d: d["deployments"][0]["config"].update(tensor_parallel=3), "deployments.0.config"),
        (lambda d: d["deployments"][0]["config"].update(model="gpt-17"), "deployments.0.config"),
        (
            lambda d: d["deployments"][0]["workload"].update(rate_per_s=-1),
            "deployments.0.workload.rate_per_s",
        ),
        (lambda d: d["deployments"][0].update(colour="red"), "deployments.0.colour"),
        (lambda d: d["deployments"][0]["config"].update(model="llama-3.1-405b"), "does not fit"),
        # a misspelled objective would silently drop it
        (
            lambda d: d["deployments"][0].update(slo={"ttft_p99": 300}),
            "deployments.0.slo': unknown objective(s) ttft_p99",
        ),
        # more GPUs than a node holds: the deployment and the field are named
        (
            lambda d: d["deployments"][0]["config"].update(tensor_parallel=16),
            "field 'deployments.0.config': d: ",
        ),
    ],
)
def test_bad_scenarios_name_the_file_and_field(tmp_path: Path, mutate, field: str) -> None:  # type: ignore[no-untyped-def]
    data = _base()
    mutate(data)
    path = _write(tmp_path, data)
    with pytest.raises(InputError) as err:
        load_scenario(path)
    assert str(path) in str(err.value)
    assert field in str(err.value)
    assert "Value error" not in str(err.value)  # pydantic's wording stays out


def test_every_validation_error_is_shown_with_its_field(tmp_path: Path) -> None:
    data = _base()
    data["deployments"][0]["workload"]["rate_per_s"] = -1
    data["deployments"][0]["colour"] = "red"
    path = _write(tmp_path, data)
    with pytest.raises(InputError) as err:
        load_scenario(path)
    text = str(err.value)
    assert text.startswith(f"{path}, field 'deployments.0.")  # the first error's field, as before
    assert "(2 error(s))" in text
    assert "deployments.0.workload.rate_per_s" in text
    assert "deployments.0.colour" in text
    assert text.count("field '") == 2  # each error with its own field path
    assert "Value error" not in text


def test_every_config_error_is_shown_with_its_field(tmp_path: Path) -> None:
    data = _base()
    data["deployments"][0]["config"].update(max_num_seqs=0, tensor_parallel="two")
    path = _write(tmp_path, data)
    with pytest.raises(InputError) as err:
        load_scenario(path)
    text = str(err.value)
    assert "field 'deployments.0.config.max_num_seqs'" in text
    assert "field 'deployments.0.config.tensor_parallel'" in text
    assert "(2 error(s))" in text


def test_unknown_scenario_and_broken_yaml(tmp_path: Path) -> None:
    with pytest.raises(UnknownIdError, match="shipped scenarios: .*demo"):
        load_scenario("no-such-scenario")
    bad = tmp_path / "bad.yaml"
    bad.write_text("pools: [\n")
    with pytest.raises(InputError, match="bad.yaml.*not valid YAML"):
        load_scenario(bad)


def test_daily_pattern_and_bursts() -> None:
    daily = DailyPattern(peak_hour=14, peak=2.0, trough=0.5)
    assert daily.multiplier(14) == pytest.approx(2.0)
    assert daily.multiplier(2) == pytest.approx(0.5)
    load = LoadSpec(
        input_len=LengthDistribution.fixed(10),
        output_len=LengthDistribution.fixed(10),
        rate_per_s=1.0,
        bursts=[{"start_hour": 23.5, "duration_min": 60, "multiplier": 3.0}],  # type: ignore[list-item]
    )
    assert load.rate_at(23.75 * 3600) == pytest.approx(3.0)
    assert load.rate_at(0.25 * 3600) == pytest.approx(3.0)  # wraps past midnight
    assert load.rate_at(1.0 * 3600) == pytest.approx(1.0)
