"""Environment-driven settings (README: SERVEWISE_HOME, OPENAI_*, SERVEWISE_MODEL)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SERVEWISE_", extra="ignore")

    home: Path = Field(default_factory=lambda: Path.home() / ".servewise")
    model: str | None = None

    def ensure_home(self) -> Path:
        self.home.mkdir(parents=True, exist_ok=True)
        return self.home


def get_settings() -> Settings:
    return Settings()
