"""Cluster backends behind the ``ClusterBackend`` protocol."""

from servewise.cluster.backend import ClusterBackend

__all__ = ["ClusterBackend"]
