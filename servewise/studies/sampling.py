"""Which points of a study's space get evaluated: full grid, random, Sobol (optuna lives in searching.py).

A point is a mapping axis -> value. The space is a mixed-radix grid, so point ``i`` of the grid is
decoded from ``i`` without materialising the product; random and Sobol samples pick per-axis value
indices from the study seed. Axis constraints (``tensor_parallel <= 4``) filter before any work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from servewise.studies.study_file import KNOWN_AXES, Constraint, Study


@dataclass(frozen=True)
class Space:
    names: list[str]
    values: list[list[Any]]
    fixed: dict[str, Any]

    @property
    def sizes(self) -> np.ndarray:
        return np.array([len(v) for v in self.values], dtype=np.int64)

    def point(self, codes: np.ndarray) -> dict[str, Any]:
        """The point with value index ``codes[k]`` on axis ``k``."""
        out = dict(self.fixed)
        for name, vals, code in zip(self.names, self.values, codes, strict=True):
            out[name] = vals[int(code)]
        return out


def make_space(study: Study) -> Space:
    spec = study.spec
    names = list(spec.axes)
    fixed = {k: v for k, v in spec.fixed.items() if k not in spec.axes}
    return Space(names=names, values=[list(spec.axes[n]) for n in names], fixed=fixed)


def grid_size(space: Space) -> int:
    return int(np.prod(space.sizes)) if space.names else 1


def axis_mask(space: Space, constraint: Constraint) -> np.ndarray:
    """Which values of the constrained axis satisfy ``constraint``."""
    vals = space.values[space.names.index(constraint.field)]
    return np.array([constraint.holds(v) for v in vals], dtype=bool)


def allowed_values(study: Study, space: Space) -> list[np.ndarray]:
    """Per axis, which of its values the axis constraints allow."""
    allowed = [np.ones(len(v), dtype=bool) for v in space.values]
    for c in study.parsed_constraints:
        if c.field in KNOWN_AXES and c.field in space.names:
            allowed[space.names.index(c.field)] &= axis_mask(space, c)
    return allowed


def decode(flat: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Mixed-radix digits (last axis fastest) of flat grid indices: shape (n, axes)."""
    codes = np.empty((flat.shape[0], sizes.shape[0]), dtype=np.int64)
    rest = flat.copy()
    for k in range(sizes.shape[0] - 1, -1, -1):
        codes[:, k] = rest % sizes[k]
        rest //= sizes[k]
    return codes


def sample_codes(study: Study) -> np.ndarray:
    """Value indices of every point to evaluate, in evaluation order: shape (points, axes)."""
    space = make_space(study)
    allowed = allowed_values(study, space)
    choices = [np.flatnonzero(a) for a in allowed]  # allowed value indices per axis
    sub_sizes = np.array([c.shape[0] for c in choices], dtype=np.int64)
    method, n = study.spec.sampling.method, study.spec.sampling.n
    if method == "grid" or method == "optuna":
        total = int(np.prod(sub_sizes))
        sub = decode(np.arange(total, dtype=np.int64), sub_sizes)
    elif method == "random":
        rng = np.random.default_rng(np.random.SeedSequence([study.spec.seed, 0x5A]))
        sub = np.stack([rng.integers(0, s, size=n or 1) for s in sub_sizes], axis=1)
    else:  # sobol: scrambled, low-discrepancy cover of the unit cube mapped onto value indices
        from scipy.stats import qmc

        sampler = qmc.Sobol(d=len(sub_sizes), scramble=True, seed=study.spec.seed)
        m = int(np.ceil(np.log2(max(n or 1, 2))))
        unit = sampler.random_base2(m)[: n or 1]
        sub = np.minimum((unit * sub_sizes).astype(np.int64), sub_sizes - 1)
    return np.stack([choices[k][sub[:, k]] for k in range(len(choices))], axis=1) if choices else sub


_MASK = (1 << 64) - 1


def point_seed(study_seed: int, index: int) -> int:
    """Seed of point ``index``: depends on the study seed and the index only, never on the backend.

    SplitMix64 (Steele et al. 2014) of the pair: cheap, and neighbouring indices get unrelated seeds.
    """
    z = (study_seed * 0x9E3779B97F4A7C15 + (index + 1) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return (z ^ (z >> 31)) >> 1  # 63 bits: fits Parquet's int64
