"""The throwaway PostgreSQL cluster the chaos run restarts at will (``support.cluster``): the
machine's shared server is never restarted."""

from support.cluster import Cluster, ClusterUnavailable, throwaway_cluster

__all__ = ["Cluster", "ClusterUnavailable", "throwaway_cluster"]
