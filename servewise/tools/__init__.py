"""Typed agent tools (pydantic in, pydantic out), registered in ``servewise.tools.registry.registry``.

Importing this package registers every tool. Plain-Python entry points for the workflow:
``analyze_fleet`` and ``optimize_deployment`` / ``optimize_fleet``.
"""

from servewise.tools import benchmarking, fleet_tools, predicting  # noqa: F401  (register tools)
from servewise.tools.analyzing import FleetAnalysis, analyze_fleet
from servewise.tools.placing import FleetPlan, optimize_fleet
from servewise.tools.proposing import DeploymentPlan, optimize_deployment
from servewise.tools.registry import registry

__all__ = [
    "DeploymentPlan",
    "FleetAnalysis",
    "FleetPlan",
    "optimize_fleet",
    "analyze_fleet",
    "optimize_deployment",
    "registry",
]
