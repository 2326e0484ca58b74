"""servewise.console: the FastAPI operator console (``servewise console serve``)."""

from servewise.console.app import create_app
from servewise.console.state import ConsoleConfig, ConsoleState

__all__ = ["ConsoleConfig", "ConsoleState", "create_app"]
