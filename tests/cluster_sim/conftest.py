from __future__ import annotations

from pathlib import Path

import pytest

from servewise.cluster.sim import SimCluster

START = 1763899200.0  # 2025-11-23T12:00:00Z: a fixed clock makes every run identical


@pytest.fixture
def demo(tmp_path: Path) -> SimCluster:
    return SimCluster.from_scenario("demo", state_dir=tmp_path, start=START, warmup_s=300)
