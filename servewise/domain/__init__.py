"""Pydantic types shared by every layer. Imports nothing else from servewise."""

from servewise.domain.config import Engine, ServingConfig
from servewise.domain.findings import Evidence, Finding, Impact, Proposal, Severity
from servewise.domain.fleet import (
    ApplyResult,
    BenchmarkRequest,
    BenchmarkResult,
    DeploymentRef,
    InferenceDeployment,
    NodePool,
    RolloutStatus,
    UnparsedWorkload,
)
from servewise.domain.hardware import HardwareSpec
from servewise.domain.model import ModelSpec, QualityScore
from servewise.domain.prediction import LatencyStats, MemoryPlan, PerfPrediction, SimulationResult
from servewise.domain.quantization import Dtype, Quantization
from servewise.domain.telemetry import (
    POD_PREFIX,
    SIGNALS,
    DeploymentTelemetry,
    SignalEvidence,
    TelemetrySnapshot,
)
from servewise.domain.workload import SLO, LengthDistribution, Workload

__all__ = [
    "POD_PREFIX",
    "SIGNALS",
    "SLO",
    "ApplyResult",
    "BenchmarkRequest",
    "BenchmarkResult",
    "DeploymentRef",
    "DeploymentTelemetry",
    "Dtype",
    "Engine",
    "Evidence",
    "Finding",
    "HardwareSpec",
    "Impact",
    "InferenceDeployment",
    "LatencyStats",
    "LengthDistribution",
    "MemoryPlan",
    "ModelSpec",
    "NodePool",
    "PerfPrediction",
    "Proposal",
    "QualityScore",
    "Quantization",
    "RolloutStatus",
    "ServingConfig",
    "Severity",
    "SignalEvidence",
    "SimulationResult",
    "TelemetrySnapshot",
    "UnparsedWorkload",
    "Workload",
]
