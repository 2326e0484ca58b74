"""Fixtures shared by every test package."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty SERVEWISE_HOME and no LLM endpoint or test hooks from the caller's environment."""
    monkeypatch.setenv("SERVEWISE_HOME", str(tmp_path))
    for var in (
        "OPENAI_BASE_URL",
        "OPENAI_API_KEY",
        "SERVEWISE_MODEL",
        "SERVEWISE_CRASH_AT",
        "SERVEWISE_FAKE_FLEET",
    ):
        monkeypatch.delenv(var, raising=False)
    return tmp_path
