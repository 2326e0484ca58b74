"""One error tree for the whole product.

Adapters (Kubernetes, Prometheus, the LLM endpoint, files) translate library errors into these
classes with ``raise ... from exc`` so callers never import a third-party exception type.
``RetryableError`` subclasses are safe to retry (timeouts, 5xx, 409 conflicts, 429);
``PermanentError`` subclasses are not (bad input, 403, 404, a config that cannot fit).
"""

from __future__ import annotations


class ServewiseError(Exception):
    """Base of every error servewise raises on purpose."""


class RetryableError(ServewiseError):
    """The same call may succeed later (timeouts, 5xx, 429, 409 conflicts)."""


class PermanentError(ServewiseError):
    """Retrying the same call will fail the same way."""


class InputError(PermanentError, ValueError):
    """Bad user input: names the input (file, row, field) that is wrong."""

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None) -> None:
        self.source = source
        self.field = field
        self.detail = message  # without the input's name
        where = ", ".join(p for p in (source, f"field '{field}'" if field else None) if p)
        super().__init__(f"{where}: {message}" if where else message)


class UnknownIdError(InputError):
    """A model, GPU, scenario or deployment id that no catalog knows."""


class DoesNotFitError(PermanentError):
    """A serving configuration that cannot run (memory, parallelism) with the reason."""


class NotFoundError(PermanentError):
    """An object that does not exist in the cluster or telemetry backend."""


class ForbiddenError(PermanentError):
    """The backend refused the call; the message names the missing permission."""


class ConflictError(RetryableError):
    """Optimistic-concurrency conflict (HTTP 409); retry on a fresh read."""


class BackendUnavailableError(RetryableError):
    """Timeouts, connection errors and 5xx from an external system."""


class RolloutError(PermanentError):
    """A rollout that failed or stalled; carries the pod events that explain it."""

    def __init__(self, message: str, *, events: list[str] | None = None) -> None:
        self.events = list(events or [])
        detail = ("; events: " + " | ".join(self.events)) if self.events else ""
        super().__init__(message + detail)


class ApprovalRequiredError(PermanentError):
    """A mutation was attempted without a recorded approval."""


class LLMError(ServewiseError):
    """The LLM endpoint failed in a way the agent loop could not absorb."""
