"""Shared helpers for commands: JSON to stdout, tables and logs to stderr."""

from __future__ import annotations

import json
import sys
from typing import Any

from pydantic import BaseModel
from rich.console import Console

err_console = Console(stderr=True)
out_console = Console()


def _default(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def print_json(document: Any) -> None:
    """One JSON document on stdout (docs/json-output.md)."""
    if isinstance(document, BaseModel):
        document = document.model_dump(mode="json")
    sys.stdout.write(json.dumps(document, default=_default, indent=2) + "\n")
    sys.stdout.flush()
