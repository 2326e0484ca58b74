"""Grid, random and Sobol samples: coverage, constraints, reproducibility, per-point seeds."""

from __future__ import annotations

import itertools

import numpy as np
from studies_helpers import make_study

from servewise.studies.sampling import make_space, point_seed, sample_codes


def _points(study):  # type: ignore[no-untyped-def]
    space = make_space(study)
    return [space.point(c) for c in sample_codes(study)]


def test_grid_visits_every_combination_once() -> None:
    study = make_study()
    points = _points(study)
    axes = study.spec.axes
    expected = set(itertools.product(*axes.values()))
    got = [tuple(p[a] for a in axes) for p in points]
    assert len(got) == len(expected) and set(got) == expected
    assert all(p["model"] == "llama-3.1-8b" for p in points)  # fixed values are carried on each point


def test_axis_constraints_filter_before_work() -> None:
    study = make_study(constraints=["max_num_seqs <= 32", "gpu != l4", "tpot_ms <= 40"])
    points = _points(study)
    assert points and all(p["max_num_seqs"] <= 32 and p["gpu"] != "l4" for p in points)
    assert len(points) == 3 * 2 * 2


def test_random_and_sobol_are_reproducible_and_stay_in_the_space() -> None:
    for method in ("random", "sobol"):
        a = _points(make_study(sampling={"method": method, "n": 20}))
        b = _points(make_study(sampling={"method": method, "n": 20}))
        c = _points(make_study(sampling={"method": method, "n": 20}, seed=99))
        assert a == b and a != c and len(a) == 20
        assert all(p["gpu"] in ("l4", "a10g", "l40s", "h100-sxm") for p in a)


def test_sobol_covers_each_axis_value_evenly() -> None:
    study = make_study(
        sampling={"method": "sobol", "n": 32},
        axes={"gpu": ["l4", "a10g", "l40s", "h100-sxm"], "max_num_seqs": [8, 16, 32, 64]},
    )
    counts = np.unique([p["gpu"] for p in _points(study)], return_counts=True)[1]
    assert counts.tolist() == [8, 8, 8, 8]  # a scrambled Sobol base-2 sample is balanced per axis


def test_point_seeds_depend_on_study_seed_and_index_only() -> None:
    seeds = [point_seed(7, i) for i in range(1000)]
    assert len(set(seeds)) == 1000
    assert seeds == [point_seed(7, i) for i in range(1000)]
    assert point_seed(8, 0) != seeds[0]
