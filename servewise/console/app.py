"""``create_app(ConsoleConfig)``: the FastAPI operator console (JSON API + HTML pages + static files).

Errors from the product's error tree become JSON answers: ``InputError`` -> 400 with the field it
names, ``NotFoundError`` -> 404, a backend that cannot be reached -> 503, other product errors
-> 500 with the message. Request bodies that do not validate answer FastAPI's 422 with the field.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from servewise.console import api, pages
from servewise.console.state import ConsoleConfig, ConsoleState
from servewise.errors import InputError, NotFoundError, RetryableError, ServewiseError

STATIC = Path(str(resources.files("servewise.console").joinpath("static")))
# The pages load only their own script and stylesheet: no inline script can run, no other site may
# frame the approve button (clickjacking). FastAPI's /docs loads Swagger UI from a CDN: left out.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
OPEN_PATHS = ("/docs", "/redoc")


async def _security_headers(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    response = await call_next(request)
    if not request.url.path.startswith(OPEN_PATHS):
        response.headers.update(SECURITY_HEADERS)
    return response


def _status_of(exc: ServewiseError) -> int:
    if isinstance(exc, InputError):
        return 400
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, RetryableError):
        return 503
    return 500


async def _servewise_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServewiseError)
    body: dict[str, object] = {"detail": str(exc), "error": type(exc).__name__}
    if isinstance(exc, InputError) and exc.field:
        body["field"] = exc.field
    return JSONResponse(body, status_code=_status_of(exc))


def create_app(config: ConsoleConfig | None = None, *, state: ConsoleState | None = None) -> FastAPI:
    """The console app; its ``ConsoleState`` opens at startup (or use ``state``) and closes at shutdown."""
    config = config or ConsoleConfig()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        opened = state or ConsoleState.open(config)
        app.state.console = opened
        try:
            yield
        finally:
            opened.close()

    app = FastAPI(
        title="servewise console",
        description="Fleet, findings, optimization runs and their approval gate, audit log, operator chat.",
        lifespan=lifespan,
    )
    app.add_exception_handler(ServewiseError, _servewise_error)
    app.middleware("http")(_security_headers)
    app.include_router(api.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
