"""Build the pydantic models behind command-line options; a bad value is an input error naming its flag."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from servewise.errors import InputError

M = TypeVar("M", bound=BaseModel)


def from_options(model: type[M], flags: Mapping[str, str], **values: Any) -> M:
    """``model(**values)``; a ValidationError becomes ``error: field '--flag': ...`` (exit 2), not a traceback.

    ``flags`` maps the model's field names to the options that set them (``verify_window_s`` ->
    ``--verify-window``); a field without a flag is named as it is.
    """
    try:
        return model(**values)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        name = str(err["loc"][0]) if err["loc"] else ""
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, InputError):  # a validator's own input error already says what was wrong
            raise InputError(
                cause.detail, source=cause.source, field=flags.get(name, name) or cause.field
            ) from exc
        msg = err["msg"].removeprefix("Value error, ")
        raise InputError(f"{msg}, got {err['input']!r}", field=flags.get(name, name) or None) from exc
